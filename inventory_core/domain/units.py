"""Units of measure and exact conversion to a material's base unit.

Mass and volume units convert within their dimension by exact factors; across
dimensions through the material's density (kg/L). Results are quantized to
QUANTUM (one millionth of the base unit), which is far below any plant
instrument's resolution, so book balances stay exact decimals.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from enum import StrEnum

from inventory_core.domain.errors import UnitConversionError, ValidationError

QUANTUM = Decimal("0.000001")
MAX_QUANTITY = Decimal("1e12")
MIN_EXPONENT = -30  # finer than any instrument; bounds the text form of a quantity
_FINEST = Decimal(1).scaleb(MIN_EXPONENT)
# A quantity typed as text: digits with at most one decimal point, optional exponent. Stricter
# than Decimal(), which also takes "1_000", surrounding blanks, "NaN" and "Infinity".
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WIDE = Context(prec=80)


class Dimension(StrEnum):
    MASS = "mass"
    VOLUME = "volume"


# unit -> (dimension, factor to the dimension's reference unit: kg or L)
_UNITS: dict[str, tuple[Dimension, Decimal]] = {
    "kg": (Dimension.MASS, Decimal(1)),
    "g": (Dimension.MASS, Decimal("0.001")),
    "t": (Dimension.MASS, Decimal(1000)),
    "L": (Dimension.VOLUME, Decimal(1)),
    "mL": (Dimension.VOLUME, Decimal("0.001")),
    "m3": (Dimension.VOLUME, Decimal(1000)),
}
_ALIASES = {"l": "L", "ml": "mL", "m³": "m3", "KGM": "kg", "GRM": "g", "TNE": "t", "LTR": "L"}

UNITS: tuple[str, ...] = tuple(_UNITS)


def canonical_uom(uom: str) -> str:
    """The canonical spelling of a unit (`l` -> `L`), or UnitConversionError."""
    name = _ALIASES.get(uom, uom)
    if name not in _UNITS:
        known = ", ".join(UNITS)
        raise UnitConversionError(f"unknown unit of measure {uom!r} (known: {known})")
    return name


def dimension(uom: str) -> Dimension:
    return _UNITS[canonical_uom(uom)][0]


def parse_quantity(value: object) -> Decimal:
    """A finite Decimal from a str/int/float/Decimal, or ValidationError.

    Floats (OPC UA Double, PLC values) are converted through their shortest
    repr, so 0.1 becomes Decimal('0.1'), not its binary expansion.
    """
    if isinstance(value, Decimal) and _within_bounds(value):
        return value  # the hot path: already a sane Decimal
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float):  # a binary approximation: round the sub-resolution tail
            result = Decimal(repr(value))
            if not _within_bounds(result) and result.is_finite() and abs(result) < 1:
                result = result.quantize(_FINEST, context=_WIDE)
        elif isinstance(value, str):
            if not _NUMBER.fullmatch(value):
                raise ValueError  # "1_000", " 1", "0x10", "1,5": a typo must not post
            result = Decimal(value)
        elif isinstance(value, int | Decimal):
            result = Decimal(value)
        else:
            raise TypeError
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(f"quantity {value!r} is not a number") from None
    if not result.is_finite():
        raise ValidationError(f"quantity {value!r} is not a finite number")
    if result.copy_abs() >= MAX_QUANTITY:  # copy_abs: no context, so 1e999999999 cannot overflow
        raise ValidationError(f"quantity {value!r} is out of range (|q| < 1e12)")
    if not _within_bounds(result):
        raise ValidationError(f"quantity {value!r} has more than {-MIN_EXPONENT} decimal places")
    return result


def _within_bounds(value: Decimal) -> bool:
    """Finite, below MAX_QUANTITY, and no finer than 10**MIN_EXPONENT (ignoring trailing 0s)."""
    if not value.is_finite() or value.copy_abs() >= MAX_QUANTITY:
        return False
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite values have an int exponent
    if exponent >= MIN_EXPONENT:  # the usual case: no digit below the resolution at all
        return True
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return value == 0 or exponent + trailing_zeros >= MIN_EXPONENT


def quantize(value: Decimal) -> Decimal:
    """Round to the ledger's resolution (QUANTUM)."""
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def convert(
    quantity: Decimal, from_uom: str, to_uom: str, density_kg_per_l: Decimal | None
) -> Decimal:
    """Convert `quantity` from one unit to another, through density across mass/volume."""
    src_dim, src_factor = _UNITS[canonical_uom(from_uom)]
    dst_dim, dst_factor = _UNITS[canonical_uom(to_uom)]
    reference = quantity * src_factor
    if src_dim is not dst_dim:
        if density_kg_per_l is None or density_kg_per_l <= 0:
            raise UnitConversionError(
                f"cannot convert {from_uom} to {to_uom}: the material has no density"
            )
        if src_dim is Dimension.VOLUME:
            reference = reference * density_kg_per_l
        else:
            reference = reference / density_kg_per_l
    return quantize(reference / dst_factor)


def format_decimal(value: Decimal) -> str:
    """Plain (never exponent) text form without trailing zeros: '1500', '0.25'.

    Exact: no context rounding (Decimal.normalize would round to 28 digits).
    """
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text

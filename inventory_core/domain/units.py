"""Units of measure and exact conversion to a material's base unit.

Mass and volume units convert within their dimension by exact factors; across
dimensions through the material's density (kg/L). Results are quantized to
QUANTUM (one millionth of the base unit), which is far below any plant
instrument's resolution, so book balances stay exact decimals.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum

from inventory_core.domain.errors import UnitConversionError, ValidationError

QUANTUM = Decimal("0.000001")
MAX_QUANTITY = Decimal("1e12")


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
    if isinstance(value, Decimal) and value.is_finite() and abs(value) < MAX_QUANTITY:
        return value
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, int | str | Decimal):
            result = Decimal(value)
        else:
            raise TypeError
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(f"quantity {value!r} is not a number") from None
    if not result.is_finite():
        raise ValidationError(f"quantity {value!r} is not a finite number")
    if abs(result) >= MAX_QUANTITY:
        raise ValidationError(f"quantity {value!r} is out of range (|q| < 1e12)")
    return result


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
    """Plain (never exponent) text form without trailing zeros: '1500', '0.25'."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text

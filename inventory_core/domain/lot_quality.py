"""Lot quality data: properties (assay, density at 15 °C, moisture, ...), the retest and
expiry dates, and the certificate of analysis a lot carries.

A lot's own density (property `density`, in kg/L or kg/m3) replaces its material's in
the conversions of that lot's postings; a released lot past its expiry becomes
`expired` by itself (`ExpireLots`, audited, source `system`); a lot past its retest
date is flagged (`retest_due`). Set from every interface with a `LotQualityRequest`
(all or nothing, audited old -> new) or with a B2MML MaterialLot announcement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Final

from inventory_core.domain.errors import ValidationError
from inventory_core.domain.model import Lot, LotId, LotProperty, LotQuality, Source
from inventory_core.domain.text import check_free_text, check_identifier

__all__ = [
    "DENSITY",
    "LOT_PREFIX",
    "MAX_DENSITY_KG_L",
    "MAX_PROPERTIES",
    "ExpireLots",
    "LotProperty",
    "LotQuality",
    "LotQualityRequest",
    "check_properties",
    "describe",
    "lot_density",
    "parse_property",
]

LOT_PREFIX: Final = "lot:"  # a change of a lot's quality data answers with this id
DENSITY: Final = "density"  # the property that replaces the material's density
MAX_PROPERTIES: Final = 64
MAX_DENSITY_KG_L: Final = Decimal(100)  # osmium is 22.6 kg/L
_DENSITY_UNITS: Final = {"kg/l": Decimal(1), "kg/L": Decimal(1), "kg/m3": Decimal("0.001"),
                         "g/ml": Decimal(1), "g/mL": Decimal(1), "g/cm3": Decimal(1)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LotQualityRequest:
    """Set a lot's quality data: `properties` replace the lot's (None: kept), `retest`,
    `expiry` and `certificate` are set where given (None: kept). Engineer role."""

    lot: LotId
    reason: str
    user: str = "system"
    source: Source = Source.MANUAL
    properties: tuple[LotProperty, ...] | None = None
    retest: date | None = None
    expiry: date | None = None
    certificate: str | None = None
    idempotency_key: str | None = None

    def check(self) -> None:
        check_identifier("lot", self.lot)
        check_identifier("user", self.user)
        check_free_text("reason", self.reason)
        if not self.reason.strip():
            raise ValidationError("a change of a lot's quality data needs a reason")
        if self.certificate is not None:
            check_free_text("certificate", self.certificate)
        if self.properties is not None:
            check_properties(self.properties)
        if (
            self.retest is None
            and self.expiry is None
            and self.certificate is None
            and self.properties is None
        ):
            raise ValidationError(
                "nothing to set: give properties, a retest or expiry date, or a certificate"
            )


@dataclass(frozen=True, slots=True)
class ExpireLots:
    """Released lots whose expiry date is before `today` become `expired` (the ledger's
    own change, source system, audited)."""

    today: date


def check_properties(properties: tuple[LotProperty, ...]) -> None:
    """At most MAX_PROPERTIES, names unique identifiers, values given, a density a
    positive number in a density unit."""
    if len(properties) > MAX_PROPERTIES:
        raise ValidationError(f"a lot carries at most {MAX_PROPERTIES} properties")
    names = [p.name for p in properties]
    if len(set(names)) != len(names):
        raise ValidationError(f"property names repeat: {', '.join(names)}")
    for p in properties:
        check_identifier("property", p.name)
        check_free_text("property value", p.value)
        check_free_text("property unit", p.unit)
        if not p.value.strip():
            raise ValidationError(f"property {p.name} has no value")
        if p.name == DENSITY:
            _density_of(p)


def parse_property(text: str) -> LotProperty:
    """`NAME=VALUE[ UNIT]` (e.g. `assay=99.6 %`, `density=0.8102 kg/L`, `appearance=clear`)."""
    name, equals, rest = text.partition("=")
    if not equals or not name.strip() or not rest.strip():
        raise ValidationError(f"property {text!r}: write NAME=VALUE or NAME=VALUE UNIT")
    value, _, unit = rest.strip().partition(" ")
    return LotProperty(name.strip(), value.strip(), unit.strip())


def _density_of(prop: LotProperty) -> Decimal:
    factor = _DENSITY_UNITS.get(prop.unit or "kg/L")
    try:
        value = Decimal(prop.value)
    except ArithmeticError:
        value = Decimal("NaN")
    if factor is None or not value.is_finite() or value <= 0:
        units = ", ".join(sorted({u.lower() for u in _DENSITY_UNITS}))
        raise ValidationError(
            f"property density {prop.value} {prop.unit}: a positive number in {units}"
        )
    if value * factor > MAX_DENSITY_KG_L:  # no material is; a typo would break conversions
        raise ValidationError(
            f"property density {prop.value} {prop.unit}: at most {MAX_DENSITY_KG_L} kg/L"
        )
    return value * factor


def lot_density(lot: Lot | None, material_density: Decimal | None) -> Decimal | None:
    """The density (kg/L) a posting of `lot` converts with: the lot's own, else the
    material's."""
    if lot is not None:
        for prop in lot.quality.properties:
            if prop.name == DENSITY:
                return _density_of(prop)
    return material_density


def describe(quality: LotQuality) -> str:
    parts = [f"{p.name}={p.value}{' ' + p.unit if p.unit else ''}" for p in quality.properties]
    if quality.retest:
        parts.append(f"retest {quality.retest.isoformat()}")
    if quality.certificate:
        parts.append(f"certificate {quality.certificate}")
    return ", ".join(parts) or "-"

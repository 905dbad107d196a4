"""The period mass balance of storage units: opening book + every movement = closing book.

One line per (unit, material): the book at the period's start (every movement before
it), the period's movements summed by what they did to the unit's book (signed: + in,
- out), the book at its end, and the last good measurement at or before the end next
to it (measured - closing = the variance an inventory controller explains or
adjusts). Pure: the ledger gives the movements and measurements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from inventory_core.domain.model import (
    MaterialId,
    Measurement,
    Movement,
    MovementKind,
    StorageUnitId,
)
from inventory_core.domain.units import format_decimal

# A movement's effect on a unit's book goes to one column, by kind and direction.
COLUMNS = (
    "receipts", "issues", "production_in", "production_out", "transfers_in", "transfers_out",
    "adjustments", "counts", "scrap", "reversals",
)  # fmt: skip
_ZERO = Decimal(0)


def column(movement: Movement, into: bool) -> str:
    """The column a leg of `movement` (into the unit or out of it) adds to."""
    kind = movement.kind
    if kind is MovementKind.PRODUCTION:
        return "production_in" if into else "production_out"
    if kind is MovementKind.TRANSFER:
        return "transfers_in" if into else "transfers_out"
    return {
        MovementKind.RECEIPT: "receipts",
        MovementKind.ISSUE: "issues",
        MovementKind.ADJUSTMENT: "adjustments",
        MovementKind.COUNT: "counts",
        MovementKind.SCRAP: "scrap",
        MovementKind.REVERSAL: "reversals",
    }.get(kind, "adjustments")


@dataclass(frozen=True, slots=True)
class BalanceLine:
    """One unit and material over the period, quantities in `uom` (the base unit)."""

    unit: StorageUnitId
    material: MaterialId
    uom: str
    opening: Decimal = _ZERO
    moved: Mapping[str, Decimal] = field(default_factory=dict)  # column -> signed sum
    measured: Decimal | None = None
    measured_at: str | None = None

    @property
    def closing(self) -> Decimal:
        return self.opening + sum(self.moved.values(), _ZERO)

    @property
    def variance(self) -> Decimal | None:
        """Measured at close minus the closing book (None without a measurement)."""
        return None if self.measured is None else self.measured - self.closing

    @property
    def variance_pct(self) -> Decimal | None:
        variance = self.variance
        if variance is None or self.closing == 0:
            return None
        return (variance * 100 / abs(self.closing)).quantize(Decimal("0.01"))

    def document(self) -> dict[str, object]:
        """JSON-ready: every quantity as an exact decimal string."""

        def text(value: Decimal | None) -> str | None:
            return None if value is None else format_decimal(value)

        return {
            "unit": self.unit,
            "material": self.material,
            "uom": self.uom,
            "opening": text(self.opening),
            **{name: text(self.moved.get(name, _ZERO)) for name in COLUMNS},
            "closing": text(self.closing),
            "measured": text(self.measured),
            "measured_at": self.measured_at,
            "variance": text(self.variance),
            "variance_pct": text(self.variance_pct),
        }


def mass_balance(
    movements: Iterable[Movement],
    start: str,
    measured: Mapping[StorageUnitId, Measurement],
    *,
    unit: str | None = None,
) -> list[BalanceLine]:
    """The lines of the period from `start` (a ledger timestamp) up to the last of
    `movements` (every movement before the period's end, oldest first). `measured`:
    the last good measurement of each unit at or before the end (in the unit's base
    unit). Sorted by unit, then material."""
    lines: dict[tuple[StorageUnitId, MaterialId], BalanceLine] = {}
    sums: dict[tuple[StorageUnitId, MaterialId], dict[str, Decimal]] = {}
    for movement in movements:
        for leg_unit, _lot, quantity in movement.legs():
            if unit is not None and leg_unit != unit:
                continue
            key = (leg_unit, movement.material)
            line = lines.setdefault(key, BalanceLine(leg_unit, movement.material, movement.uom))
            if movement.timestamp < start:
                lines[key] = replace(line, opening=line.opening + quantity)
                continue
            moved = sums.setdefault(key, {})
            name = column(movement, into=leg_unit == movement.to_unit)
            moved[name] = moved.get(name, _ZERO) + quantity
    result: list[BalanceLine] = []
    for key in sorted(lines):
        line = replace(lines[key], moved=sums.get(key, {}))
        found = measured.get(key[0])
        if found is not None and found.uom == line.uom:
            line = replace(line, measured=found.quantity, measured_at=found.timestamp)
        result.append(line)
    return result

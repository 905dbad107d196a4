"""The period mass balance of storage units: opening book + every movement = closing book.

One line per (unit, material): the book at the period's start (every movement before
it), the period's movements summed by what they did to the unit's book (signed: + in,
- out), the book at its end, and the last good measurement at or before the end next
to it (measured - closing = the variance an inventory controller explains or
adjusts). Where a unit has a flow meter, what it counted in the period is set against
what the level derived in the same direction (meter versus gauge). Pure: the ledger
gives the movements, measurements and meter flows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from inventory_core.domain.meter import MeterFlow
from inventory_core.domain.model import (
    MaterialId,
    Measurement,
    Movement,
    MovementKind,
    Source,
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
    # Meter versus gauge (a unit with a flow totalizer): what the meter counted in the
    # period (out of the unit, or into it) and what the level derived the same way.
    metered: Decimal | None = None
    metered_direction: str | None = None  # "out" or "in"
    gauged: Decimal | None = None

    @property
    def meter_vs_gauge(self) -> Decimal | None:
        """Metered minus level-derived (None without a meter)."""
        return None if self.metered is None or self.gauged is None else self.metered - self.gauged

    @property
    def meter_vs_gauge_pct(self) -> Decimal | None:
        difference = self.meter_vs_gauge
        if difference is None or not self.gauged:
            return None
        return (difference * 100 / self.gauged).quantize(Decimal("0.01"))

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
            "metered_direction": self.metered_direction,
            "metered": text(self.metered),
            "gauged": text(self.gauged),
            "meter_vs_gauge": text(self.meter_vs_gauge),
            "meter_vs_gauge_pct": text(self.meter_vs_gauge_pct),
        }


def mass_balance(
    movements: Iterable[Movement],
    start: str,
    measured: Mapping[StorageUnitId, Measurement],
    *,
    unit: str | None = None,
    metered: Iterable[MeterFlow] = (),
) -> list[BalanceLine]:
    """The lines of the period from `start` (a ledger timestamp) up to the last of
    `movements` (every movement before the period's end, oldest first). `measured`:
    the last good measurement of each unit at or before the end (in the unit's base
    unit). Sorted by unit, then material."""
    lines: dict[tuple[StorageUnitId, MaterialId], BalanceLine] = {}
    # What the level derived, by direction: every PLC movement into or out of the unit
    # (a meter on its inlet or outlet counts the same flow), drift at rest left out.
    plc_moved: dict[tuple[tuple[StorageUnitId, MaterialId], str], Decimal] = {}
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
            into = leg_unit == movement.to_unit
            name = column(movement, into=into)
            moved[name] = moved.get(name, _ZERO) + quantity
            if movement.source is Source.PLC and movement.details.get("drift") is not True:
                side = (key, "in" if into else "out")
                plc_moved[side] = plc_moved.get(side, _ZERO) + abs(quantity)
    meters: dict[StorageUnitId, tuple[str, str, Decimal]] = {}  # unit -> direction, uom, sum
    for flow in metered:
        direction, uom, total = meters.get(flow.unit, (str(flow.direction), flow.uom, _ZERO))
        meters[flow.unit] = (direction, uom, total + flow.quantity)
    result: list[BalanceLine] = []
    for key in sorted(lines):
        line = replace(lines[key], moved=sums.get(key, {}))
        found = measured.get(key[0])
        if found is not None and found.uom == line.uom:
            line = replace(line, measured=found.quantity, measured_at=found.timestamp)
        meter = meters.get(key[0])
        if meter is not None and meter[1] == line.uom:
            direction, _, total = meter
            gauged = plc_moved.get((key, direction), _ZERO)
            line = replace(line, metered=total, metered_direction=direction, gauged=gauged)
        result.append(line)
    return result

"""A unit's quantity signal -> the values it shows (level, volume, mass, quantity, fill).

Display values, not bookings: the ledger side converts every reading exactly
(Decimal, `MeasurementService`); here each unit's conversions are reduced once
to float factors and its strapping table to float points, because every unit
is converted on every poll (5,000 a second at 500 units and 100 ms).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from inventory_core.domain.quality import Quality
from inventory_core.domain.units import convert, dimension
from inventory_core.measurement_service import MeasuredUnit
from inventory_core.plant_view.state import Measured

__all__ = ["SignalDisplay"]

_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class SignalDisplay:
    """One unit's signal -> display conversions as floats (None: cannot be known)."""

    levels: tuple[float, ...] | None  # strapping table, if the signal is a level
    volumes: tuple[float, ...] | None
    to_base: float
    to_litres: float | None
    to_kg: float | None
    capacity: float | None  # in the material's base unit
    deadband: float  # in the material's base unit; 0 = every change

    @classmethod
    def of(
        cls, spec: MeasuredUnit, capacity: Decimal | None, deadband_fraction: float
    ) -> SignalDisplay:
        material = spec.material
        density = material.density_kg_per_l
        table = spec.strapping
        return cls(
            levels=None if table is None else tuple(float(p[0]) for p in table.points),
            volumes=None if table is None else tuple(float(p[1]) for p in table.points),
            to_base=float(convert(_ONE, spec.signal_uom, material.base_uom, density)),
            to_litres=_factor(spec.signal_uom, "L", density),
            to_kg=_factor(spec.signal_uom, "kg", density),
            capacity=float(capacity) if capacity else None,
            deadband=float(capacity) * deadband_fraction if capacity else 0.0,
        )

    def measured(self, raw: float, quality: Quality, at: datetime | None) -> Measured:
        """The values one reading shows (`quality` GOOD, or UNCERTAIN for a held one)."""
        level = None
        signal = raw
        if self.levels is not None and self.volumes is not None:
            level = raw
            signal = _interpolate(self.levels, self.volumes, raw)
        base = signal * self.to_base
        return Measured(
            quality,
            at,
            level=level,
            volume_l=None if self.to_litres is None else signal * self.to_litres,
            mass_kg=None if self.to_kg is None else signal * self.to_kg,
            quantity=base,
            fill_percent=None if self.capacity is None else base / self.capacity * 100,
        )


def _factor(uom: str, target: str, density: Decimal | None) -> float | None:
    """How many `target` one `uom` is, or None when it cannot be known (no density)."""
    if dimension(uom) is not dimension(target) and density is None:
        return None
    return float(convert(_ONE, uom, target, density))


def _interpolate(levels: tuple[float, ...], volumes: tuple[float, ...], level: float) -> float:
    """`StrappingTable.volume_at` in floats: piecewise linear, clamped to the table."""
    if level <= levels[0]:
        return volumes[0]
    if level >= levels[-1]:
        return volumes[-1]
    i = bisect_right(levels, level)
    level0, level1 = levels[i - 1], levels[i]
    volume0, volume1 = volumes[i - 1], volumes[i]
    return volume0 + (volume1 - volume0) * (level - level0) / (level1 - level0)

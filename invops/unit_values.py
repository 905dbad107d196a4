"""PLC samples -> the values a storage unit shows over OPC UA (level, volume, mass, fill).

Pure conversion from the unit's quantity tag through its strapping table and
the material's density; the ledger side (book quantity, lot, status) comes
from the OPC UA server's own ledger mirror.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from inventory_core.domain.model import StorageUnitId
from inventory_core.domain.quality import Quality
from inventory_core.domain.units import convert, dimension
from inventory_core.measurement_service import MeasuredUnit
from invops.plc_bridge import quantity_tags_per_plc, sample_quantity_tags
from opcua_server import UnitValues
from plc_connectors import Quality as PlcQuality
from plc_connectors import Sample


class UnitValuesBuilder:
    """Builds UnitValues for every quantity tag of a sample.

    Display values, not bookings: the ledger side converts every reading exactly
    (Decimal, `MeasurementService`); here each unit's conversions are reduced once
    to float factors and its strapping table to float points, because every unit
    is converted on every poll (5,000 a second at 500 units and 100 ms).

    `deadband_fraction` (of capacity, `[opcua] value_deadband_pct` / 100): a unit
    whose measured quantity moved less than that since the update last returned
    for it, with the same quality, gets no update at all (its level, volume, mass
    and fill all follow that one signal), so reading noise costs nothing
    downstream: no OPC UA writes, alarm checks or metric updates.
    """

    def __init__(
        self,
        units: list[MeasuredUnit],
        quantity_tags: dict[str, StorageUnitId],
        capacities: dict[StorageUnitId, Decimal],
        *,
        plc_tags: Mapping[str, Iterable[str]] | None = None,
        deadband_fraction: float = 0.0,
    ) -> None:
        self._tags = quantity_tags
        # PLC -> its quantity tags (plc_tags: PLC -> every tag it reads, as configured)
        self._per_plc = quantity_tags_per_plc(quantity_tags, plc_tags or {})
        self._units = {
            u.unit: _Display.of(u, capacities.get(u.unit), deadband_fraction) for u in units
        }
        self._shown: dict[StorageUnitId, tuple[Quality, float | None]] = {}

    def from_sample(self, sample: Sample) -> list[UnitValues]:
        updates = []
        for tag, unit in sample_quantity_tags(sample, self._per_plc, self._tags):
            display = self._units.get(unit)
            if display is None:
                continue
            raw, quality, source_time = sample.reading(tag)
            if quality is not PlcQuality.GOOD or raw is None:
                update = UnitValues(unit, source_time, Quality(quality))
            elif isinstance(raw, bool) or not math.isfinite(raw):
                # a flag or NaN where a quantity belongs: show it as a sensor problem
                update = UnitValues(unit, source_time, Quality.BAD_COMMUNICATION)
            else:
                update = display.values(unit, float(raw), source_time)
            shown = self._shown.get(unit)
            quantity = update.measured_quantity
            if (
                shown is not None
                and shown[0] is update.quality
                and (quantity is None) == (shown[1] is None)
                and (
                    quantity is None
                    or shown[1] is None
                    or abs(quantity - shown[1]) < display.deadband
                )
            ):
                continue  # nothing a client would see changed
            self._shown[unit] = (update.quality, quantity)
            updates.append(update)
        return updates


@dataclass(frozen=True, slots=True)
class _Display:
    """One unit's signal -> display conversions as floats (None: cannot be known)."""

    levels: tuple[float, ...] | None  # strapping table, if the signal is a level
    volumes: tuple[float, ...] | None
    to_base: float
    to_litres: float | None
    to_kg: float | None
    capacity: float | None  # in the material's base unit
    deadband: float  # in the material's base unit; 0 = every change

    @classmethod
    def of(cls, spec: MeasuredUnit, capacity: Decimal | None, deadband_fraction: float) -> _Display:
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

    def values(self, unit: StorageUnitId, raw: float, at: datetime) -> UnitValues:
        level = None
        signal = raw
        if self.levels is not None and self.volumes is not None:
            level = raw
            signal = _interpolate(self.levels, self.volumes, raw)
        base = signal * self.to_base
        return UnitValues(
            unit,
            at,
            Quality.GOOD,
            level=level,
            volume_l=None if self.to_litres is None else signal * self.to_litres,
            mass_kg=None if self.to_kg is None else signal * self.to_kg,
            fill_percent=None if self.capacity is None else base / self.capacity * 100,
            measured_quantity=base,
        )


_ONE = Decimal(1)


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

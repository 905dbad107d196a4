"""PLC samples -> the values a storage unit shows over OPC UA (level, volume, mass, fill).

Pure conversion from the unit's quantity tag through its strapping table and
the material's density; the ledger side (book quantity, lot, status) comes
from the OPC UA server's own ledger mirror.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from inventory_core.domain.errors import InventoryError
from inventory_core.domain.model import StorageUnitId
from inventory_core.domain.units import convert, dimension, parse_quantity
from inventory_core.measurements import MeasuredUnit
from opcua_server import UnitValues
from plc_connectors import Quality, Sample


class UnitValuesBuilder:
    """Builds UnitValues for every quantity tag of a sample."""

    def __init__(
        self,
        units: list[MeasuredUnit],
        quantity_tags: dict[str, StorageUnitId],
        capacities: dict[StorageUnitId, Decimal],
    ) -> None:
        self._units = {u.unit: u for u in units}
        self._tags = quantity_tags
        self._capacities = capacities  # in each material's base unit

    def from_sample(self, sample: Sample) -> list[UnitValues]:
        updates = []
        for tag, value in sample.values.items():
            unit = self._tags.get(tag)
            if unit is None or unit not in self._units:
                continue
            if value.quality is not Quality.GOOD or value.value is None:
                updates.append(UnitValues(unit, value.source_time, value.quality))
                continue
            try:
                updates.append(self._good(unit, float(value.value), value.source_time))
            except InventoryError:  # NaN or absurd raw value: show it as a sensor problem
                updates.append(UnitValues(unit, value.source_time, Quality.BAD_COMMUNICATION))
        return updates

    def _good(self, unit: StorageUnitId, raw: float, at: datetime) -> UnitValues:
        spec = self._units[unit]
        material = spec.material
        signal = parse_quantity(raw)
        level = None
        if spec.strapping is not None:
            level = raw
            signal, _clamped = spec.strapping.volume_at(signal)
        density = material.density_kg_per_l
        base = convert(signal, spec.signal_uom, material.base_uom, density)
        volume = _maybe(signal, spec.signal_uom, "L", density)
        mass = _maybe(signal, spec.signal_uom, "kg", density)
        capacity = self._capacities.get(unit)
        fill = None if not capacity else float(base / capacity * 100)
        return UnitValues(
            unit,
            at,
            Quality.GOOD,
            level=level,
            volume_l=volume,
            mass_kg=mass,
            fill_percent=fill,
            measured_quantity=float(base),
        )


def _maybe(value: Decimal, uom: str, target: str, density: Decimal | None) -> float | None:
    """`value` in `target` units, or None when it cannot be known (no density)."""
    if dimension(uom) is not dimension(target) and density is None:
        return None
    return float(convert(value, uom, target, density))

"""The simulators' view of a config: `plant_description(config)`.

The simulators must not know the pydantic config (they import no invops), so
invops converts it at once into their plain `PlantDescription`.
"""

from __future__ import annotations

from inventory_core.domain.derivation import StrappingTable
from invops.config import InvopsConfig, StorageUnitConfig, tag_of
from simulators.description import (
    LevelGauge,
    MaterialDescription,
    PlantDescription,
    TotalizerCounter,
    UnitDescription,
)

__all__ = ["plant_description"]


def plant_description(config: InvopsConfig) -> PlantDescription:
    """Every storage unit, material and PLC of a validated config, for the simulators."""
    return PlantDescription(
        # a unit with no PLC value (a drum store) is booked by hand: nothing to simulate
        units=tuple(_unit(u) for u in config.storage_units if u.level or u.weight or u.totalizer),
        materials=tuple(
            MaterialDescription(material.id, material.density_kg_per_l)
            for material in config.materials
        ),
        plcs=tuple(config.plc_settings()),
    )


def _unit(unit: StorageUnitConfig) -> UnitDescription:
    level = None
    if unit.level is not None and unit.strapping is not None:  # both or neither, once valid
        level = LevelGauge(
            tag_of(unit.id, "level", unit.level),
            StrappingTable.from_points(unit.strapping.points),
            unit.strapping.volume_uom,
        )
    totalizer = None
    if unit.totalizer is not None:
        tag = tag_of(unit.id, "totalizer", unit.totalizer)
        totalizer = TotalizerCounter(tag, unit.totalizer_max)
    return UnitDescription(
        id=unit.id,
        capacity=unit.capacity,
        capacity_uom=unit.capacity_uom,
        material=unit.material,
        settle_s=unit.settle_s,
        level=level,
        weight=None if unit.weight is None else tag_of(unit.id, "weight", unit.weight),
        totalizer=totalizer,
    )

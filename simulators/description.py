"""What the simulators simulate: a plain, frozen description of the plant.

The simulators take this instead of the pydantic config so that they depend on
nothing but `inventory_core` and `plc_connectors`: `invops.plant_description`
builds one from a validated config, and a test may write one by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from inventory_core.domain.derivation import StrappingTable
from plc_connectors import PlcSettings, Tag

__all__ = [
    "LevelGauge",
    "MaterialDescription",
    "PlantDescription",
    "TotalizerCounter",
    "UnitDescription",
]


@dataclass(frozen=True, slots=True)
class MaterialDescription:
    """A material the units hold; its density converts between litres and kilograms."""

    id: str
    density_kg_per_l: Decimal | None = None


@dataclass(frozen=True, slots=True)
class LevelGauge:
    """A level tag and the strapping table that turns its level into a volume."""

    tag: Tag
    strapping: StrappingTable
    volume_uom: str = "L"


@dataclass(frozen=True, slots=True)
class TotalizerCounter:
    """A counter of what left a unit, in the tag's unit; it rolls over after `max_count`
    (or the end of the tag's integer range, if that comes first)."""

    tag: Tag
    max_count: int = 2**32 - 1


@dataclass(frozen=True, slots=True)
class UnitDescription:
    """One simulated storage unit: measured by a level gauge or by weight (or neither).

    `capacity` is in `capacity_uom`; `settle_s` starts every pause between batches, so
    that the service sees each batch end in a steady spell it can settle on and book.
    """

    id: str
    capacity: Decimal
    capacity_uom: str
    material: str | None = None
    settle_s: float = 5.0
    level: LevelGauge | None = None
    weight: Tag | None = None
    totalizer: TotalizerCounter | None = None


@dataclass(frozen=True, slots=True)
class PlantDescription:
    """The simulated units, their materials, and the PLCs that serve their tags.

    Each PLC's `tags` are the units' tags placed on it (named `<unit>.<role>`).
    """

    units: tuple[UnitDescription, ...]
    materials: tuple[MaterialDescription, ...] = ()
    plcs: tuple[PlcSettings, ...] = ()

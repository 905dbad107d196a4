"""The live state of storage units and the change records the plant view sends.

Everything here is frozen: a subscriber may keep a record, hand it to another
task or thread, and compare it with the next one. Quantities are floats in the
material's base unit (display precision; the ledger books exact Decimals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from inventory_core.domain.level_alarm import AlarmTransition
from inventory_core.domain.model import Movement
from inventory_core.domain.quality import Quality

__all__ = [
    "Book",
    "Cause",
    "Measured",
    "MovementSeen",
    "PlantChange",
    "UnitChanged",
    "UnitInfo",
    "UnitState",
]


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """What never changes while the service runs: where a unit is and how big."""

    unit: str
    site: str
    area: str
    material: str  # "" when the unit holds no fixed material
    uom: str  # the material's base unit, else the capacity's unit
    capacity: float  # in `uom`
    has_level: bool = False  # measured by a level (tanks): shows Level


@dataclass(frozen=True, slots=True)
class Measured:
    """The PLC side of a unit, as shown: its quantity signal converted for display.

    `quality` and `source_time` belong to every value here. While a link retries
    (UNCERTAIN_LAST_USABLE) the values are the last good ones, held; when BAD_*
    they are None. `fill_percent` is measured / capacity x 100 (may exceed 100).
    """

    quality: Quality = Quality.BAD_WAITING
    source_time: datetime | None = None
    level: float | None = None  # in the level tag's unit (tanks with a strapping table)
    volume_l: float | None = None
    mass_kg: float | None = None
    quantity: float | None = None  # in the material's base unit
    fill_percent: float | None = None


@dataclass(frozen=True, slots=True)
class Book:
    """The ledger side of a unit: what the books say is in it."""

    quantity: float | None = None  # None: not read from the ledger yet
    material_id: str = ""
    lot_id: str = ""  # the current lot ("" when none)
    lots: tuple[str, ...] = ()  # every lot with stock in the unit, sorted
    lot_quantities: tuple[float, ...] = ()  # the book quantity of each of `lots`
    status: str = ""  # the current lot's status


@dataclass(frozen=True, slots=True)
class UnitState:
    """One unit, live: measured, book, their discrepancy, and its level alarm."""

    info: UnitInfo
    measured: Measured = Measured()
    book: Book = Book()
    # measured - book (inventory_core.domain.model.discrepancy), computed here once;
    # None when either side is unknown. Its quality is the measured quality.
    discrepancy: float | None = None
    alarm: AlarmTransition | None = None  # the alarm's last transition, if it has one

    @property
    def unit(self) -> str:
        return self.info.unit


class Cause(StrEnum):
    """What changed a unit's state."""

    MEASUREMENT = "measurement"  # a PLC sample (or a change of link quality)
    BOOK = "book"  # a ledger movement (this process's or another writer's)
    ALARM = "alarm"  # a level alarm transition


@dataclass(frozen=True, slots=True)
class UnitChanged:
    """A unit's new state and why it changed."""

    state: UnitState
    cause: Cause


@dataclass(frozen=True, slots=True)
class MovementSeen:
    """A movement committed to the ledger: `own` by this process (heard as it was
    posted), else by another writer (read from the ledger's tail)."""

    movement: Movement
    own: bool


PlantChange = UnitChanged | MovementSeen

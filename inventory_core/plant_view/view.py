"""The plant view: the one home of every storage unit's live state.

Between the PLCs and everything that shows values. It is updated once per
sample of a unit's quantity signal (`apply_reading`), once per ledger change of
a unit's book (`apply_book`, from `LedgerFollower`), and once per alarm
transition (`apply_alarm`); each update that changes what a unit shows replaces
its frozen `UnitState` and notifies every subscriber with a `UnitChanged`
record. Movements committed to the ledger pass through as `MovementSeen`.
OPC UA values, Prometheus metrics, level alarms and (later) the HTTP API and
MQTT subscribe; nothing else converts a reading, holds a last good value, or
computes a discrepancy.

Subscribers are called synchronously on the event loop, in subscription order:
they must be quick and must not raise (each one queues work of its own).
Reading `state()`/`states()` from another thread (a Prometheus scrape) is safe:
units are fixed at construction and each state is replaced whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from inventory_core.domain.level_alarm import AlarmTransition
from inventory_core.domain.model import (
    MaterialDefinition,
    Movement,
    StorageUnit,
    discrepancy,
)
from inventory_core.domain.quality import Quality
from inventory_core.domain.units import convert
from inventory_core.log import get_logger
from inventory_core.measurement_service import MeasuredUnit
from inventory_core.plant_view.display import SignalDisplay
from inventory_core.plant_view.state import (
    Book,
    Cause,
    Measured,
    MovementSeen,
    PlantChange,
    UnitChanged,
    UnitInfo,
    UnitState,
)

__all__ = ["PlantView", "Subscriber"]

log = get_logger(__name__)

Subscriber = Callable[[PlantChange], None]


class PlantView:
    """Live state per storage unit; see the module docstring."""

    def __init__(
        self,
        units: Sequence[StorageUnit],
        materials: Sequence[MaterialDefinition],
        measured: Sequence[MeasuredUnit] = (),
        *,
        deadband_fraction: float = 0.0,
    ) -> None:
        """`deadband_fraction` (of capacity, `[opcua] value_deadband_pct` / 100): a
        reading within it of the one shown, with the same quality, changes nothing,
        so reading noise costs nothing downstream (no writes, checks or points)."""
        by_id = {str(m.id): m for m in materials}
        signal = {str(m.unit): m for m in measured}
        self._states: dict[str, UnitState] = {}
        self._displays: dict[str, SignalDisplay] = {}
        for unit in units:
            material = by_id.get(str(unit.material)) if unit.material else None
            capacity = _capacity(unit, material)
            spec = signal.get(str(unit.id))
            info = UnitInfo(
                unit=str(unit.id),
                site=unit.site,
                area=unit.area,
                material="" if material is None else str(material.id),
                uom=unit.capacity_uom if material is None else material.base_uom,
                capacity=float(capacity),
                has_level=spec is not None and spec.strapping is not None,
            )
            self._states[info.unit] = UnitState(info)
            if spec is not None:
                self._displays[info.unit] = SignalDisplay.of(spec, capacity, deadband_fraction)
        self._subscribers: list[Subscriber] = []

    # --- reading ---------------------------------------------------------------------

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(self._states)

    def state(self, unit: str) -> UnitState | None:
        return self._states.get(unit)

    def states(self) -> tuple[UnitState, ...]:
        """Every unit's current state, in configuration order."""
        return tuple(self._states.values())

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber(change)` for every change from now on (see module docstring)."""
        self._subscribers.append(subscriber)

    # --- updates ---------------------------------------------------------------------

    def apply_reading(
        self, unit: str, value: float | bool | None, quality: Quality, source_time: datetime
    ) -> None:
        """One reading of `unit`'s quantity signal (engineering units, as polled):
        GOOD, held (UNCERTAIN_LAST_USABLE, the last good value) or BAD_* (no value)."""
        display = self._displays.get(unit)
        if display is None:
            return
        if not quality.usable:
            measured = Measured(quality, source_time)
        elif value is None:  # a held sample without this tag: never read
            measured = Measured(Quality.BAD_WAITING, source_time)
        elif isinstance(value, bool) or not math.isfinite(value):
            # a flag or NaN where a quantity belongs: show it as a sensor problem
            measured = Measured(Quality.BAD_COMMUNICATION, source_time)
        else:
            measured = display.measured(float(value), quality, source_time)
        state = self._states[unit]
        shown = state.measured
        if shown.quality is measured.quality and _within(
            shown.quantity, measured.quantity, display.deadband
        ):
            return  # nothing a client would see changed
        self._replace(replace(state, measured=measured), Cause.MEASUREMENT)

    def apply_book(self, unit: str, book: Book) -> None:
        """The unit's book as the ledger now has it (changes only are passed on)."""
        state = self._states.get(unit)
        if state is None or state.book == book:
            return
        self._replace(replace(state, book=book), Cause.BOOK)

    def apply_alarm(self, unit: str, transition: AlarmTransition) -> None:
        """A level alarm transition of `unit` (raised, cleared, acknowledged...)."""
        state = self._states.get(unit)
        if state is None:
            return
        new = replace(state, alarm=transition)
        self._states[unit] = new
        self._notify(UnitChanged(new, Cause.ALARM))

    def movement_seen(self, movement: Movement, *, own: bool) -> None:
        """A movement committed to the ledger (the book follows via `apply_book`)."""
        self._notify(MovementSeen(movement, own))

    def _replace(self, state: UnitState, cause: Cause) -> None:
        measured = state.measured.quantity if state.measured.quality.usable else None
        state = replace(state, discrepancy=discrepancy(measured, state.book.quantity))
        self._states[state.unit] = state
        self._notify(UnitChanged(state, cause))

    def _notify(self, change: PlantChange) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(change)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("plant_view_subscriber_failed", subscriber=repr(subscriber))


def _within(shown: float | None, new: float | None, deadband: float) -> bool:
    """Whether `new` shows nothing new next to `shown` (both unknown, or close)."""
    if shown is None or new is None:
        return shown is None and new is None
    return abs(new - shown) < deadband if deadband > 0 else new == shown


def _capacity(unit: StorageUnit, material: MaterialDefinition | None) -> Decimal:
    if material is None:
        return unit.capacity
    return convert(unit.capacity, unit.capacity_uom, material.base_uom, material.density_kg_per_l)

"""Plant physics behind the PLC simulators: quantities, activities, totalizers, readings.

Pure Python (no sockets, no clock): `PlantModel.step(dt)` advances simulated
time and `PlantModel.tag_values()` says what every PLC tag shows now, in
engineering units. The servers turn those values into registers and bytes.

Each storage unit holds a quantity in its own unit of measure: the strapping
table's volume unit for a level-measured tank (L in the demo), kg for a unit
measured by weight. Activities keep the plant lively and bounded:

* receipts (fills) and issues (draws) start at random after a pause, and
  transfers move material between units of the same material; a unit pauses
  for its `settle_s` (from the `PlantDescription`) plus 2-8 s between
  activities, so that every batch ends in a steady spell the service can
  settle on and book, as in a real plant (deliveries and draws are batches,
  not a continuous flow);
* a unit below `FILL_BELOW` of its capacity only starts fills, one above
  `DRAW_ABOVE` only draws, and every activity stops at `LOW_STOP` /
  `HIGH_STOP`, so a unit left alone stays between 10 % and 90 % forever;
* flow rates are a fraction of capacity per second, capped at
  `MAX_FLOW_L_PER_S` (well below the 1,000 L/s SPEC limit).

`to_state()` and `restore()` carry the plant's state across a restart
(`simulators.plant_state` keeps it in a file), so a resumed plant continues
from where it was instead of jumping to a fresh random state.

Material balance holds exactly: a unit's quantity is always its initial
quantity + receipts - issues + transfers in - transfers out, and what a
transfer takes out of one unit is what it puts into the other (converted
between the two units' units of measure through the material's density).
A totalizer counts what left a unit (issues and transfers out) in the
totalizer tag's unit and rolls over at the tag's range.
"""

from __future__ import annotations

import math
import random
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from inventory_core.domain.derivation import StrappingTable
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.units import canonical_uom, convert, dimension
from plc_connectors import DataType, Tag, from_engineering, integer_range
from simulators.description import PlantDescription, UnitDescription
from simulators.events import EventKind, PlantEvent

__all__ = [
    "DRAW_ABOVE",
    "FILL_BELOW",
    "HIGH_STOP",
    "LOW_STOP",
    "MAX_FLOW_L_PER_S",
    "STATE_FORMAT",
    "TRUCK_GAP_S",
    "Activity",
    "Operation",
    "PlantModel",
    "SimulatedUnit",
    "to_raw",
]

LOW_STOP: Final = 0.15  # every draw stops here (fraction of capacity)
HIGH_STOP: Final = 0.85  # every fill stops here
FILL_BELOW: Final = 0.25  # an idle unit below this only starts fills
DRAW_ABOVE: Final = 0.75  # an idle unit above this only starts draws
INITIAL_FILL: Final = (0.45, 0.55)  # start around half full
RATE: Final = (0.002, 0.006)  # flow, fraction of capacity per second
AMOUNT: Final = (0.02, 0.10)  # one activity moves this fraction of capacity
IDLE_S: Final = (2.0, 8.0)  # pause between activities, on top of the unit's settle_s
FIRST_START_S: Final = 1.0  # the first activity of each unit starts within this time
TRANSFER_SHARE: Final = 0.3  # chance that an activity is a transfer, when one is possible
TRANSFER_SOURCE_ABOVE: Final = 0.35
TRANSFER_DESTINATION_BELOW: Final = 0.65
MAX_FLOW_L_PER_S: Final = 400.0  # cap for every flow (solids without density: kg/s)
NOISE: Final = 0.0002  # reading noise: standard deviation as a fraction of capacity
MAX_SUBSTEP_S: Final = 1.0  # `step` advances in slices no longer than this
STATE_FORMAT: Final = "invops-plant-state/1"  # `to_state()["format"]`
# A truck starts only after its unit has rested this long: longer than a demo unit's
# max_interval_s plus settle_s, so the service books the previous batch as settled (and
# closes its advice) before the next truck's rise could be taken for more of it.
TRUCK_GAP_S: Final = 15.0
KNOWN_REFS: Final = 1000  # refs of started events remembered (see PlantModel.knows)
_EPSILON: Final = 1e-9
_FLOAT32_MAX: Final = 3.4028234663852886e38


class Activity(StrEnum):
    """What moves material into or out of a unit."""

    RECEIPT = "receipt"  # fill from outside the plant model
    ISSUE = "issue"  # draw to outside (through the outlet)
    TRANSFER = "transfer"  # from one unit to another of the same material


@dataclass(slots=True)
class Operation:
    """One running activity. `rate` and `remaining` are in the source unit's uom
    (the destination's for a receipt)."""

    activity: Activity
    rate: float  # per second
    remaining: float
    source: str | None = None
    destination: str | None = None
    factor: float = 1.0  # destination uom per source uom (transfers between unlike uoms)
    ref: str | None = None  # the scheduled event it runs (simulators.events), if any


@dataclass(slots=True)
class SimulatedUnit:
    """One storage unit's simulated state; `quantity` is in `uom`."""

    id: str
    material: str | None
    uom: str
    capacity: float
    quantity: float
    litres_per_uom: float | None  # None: no density to express the quantity in litres
    max_rate: float  # per second, in uom
    initial: float = 0.0
    received: float = 0.0
    issued: float = 0.0
    transferred_in: float = 0.0
    transferred_out: float = 0.0
    operation: Operation | None = None
    idle_until: float = 0.0
    idle_since: float = -1e9  # when its last activity ended (trucks keep TRUCK_GAP_S after)
    pause_s: tuple[float, float] = IDLE_S  # the pause after each activity (random in range)

    @property
    def fill_ratio(self) -> float:
        return self.quantity / self.capacity

    @property
    def outflow(self) -> float:
        """Everything that left through the outlet (issues and transfers out), in uom."""
        return self.issued + self.transferred_out

    @property
    def booked(self) -> float:
        """Initial quantity plus every movement: equals `quantity` (material balance)."""
        return (
            self.initial + self.received - self.issued + self.transferred_in - self.transferred_out
        )

    @property
    def flow(self) -> float:
        """Current net flow into the unit (negative: out of it), uom per second."""
        op = self.operation
        if op is None:
            return 0.0
        return op.rate * op.factor if op.destination == self.id else -op.rate


@dataclass(frozen=True, slots=True)
class _Level:
    unit: str
    tag: Tag
    strapping: StrappingTable
    volume_uom: str


@dataclass(frozen=True, slots=True)
class _Weight:
    unit: str
    tag: Tag
    factor: float  # unit uom -> tag unit


@dataclass(slots=True)
class _Totalizer:
    unit: str
    tag: Tag
    factor: float  # unit uom -> tag unit
    modulus: int  # counts roll over here (2**32 for uint32)
    jumped: int = 0  # counts added by fault injection


class PlantModel:
    """The simulated plant of one description. Deterministic for a given `seed`.

    `units` maps each storage unit id to its state (read it, do not assign to it).
    With `scheduled_receipts` no unit fills by itself: material arrives only with the
    deliveries scheduled on it (`schedule`), as in a plant whose receipts are trucks
    that ERP announces (the demo); draws and transfers still start at random.
    """

    def __init__(
        self, plant: PlantDescription, *, seed: int | None = None, scheduled_receipts: bool = False
    ) -> None:
        self.time_s = 0.0
        self.scheduled_receipts = scheduled_receipts
        self._events: dict[str, list[PlantEvent]] = {}
        self._started_refs: deque[str] = deque(maxlen=KNOWN_REFS)
        self._rng = random.Random(seed)
        self._levels: list[_Level] = []
        self._weights: list[_Weight] = []
        self._totalizers: dict[str, _Totalizer] = {}
        self._densities = {m.id: m.density_kg_per_l for m in plant.materials}
        self.units: dict[str, SimulatedUnit] = {}
        for description in plant.units:
            unit = self._build_unit(description)
            self.units[unit.id] = unit
            self._add_tags(description, unit)

    # ------------------------------------------------------------------ building

    def _build_unit(self, spec: UnitDescription) -> SimulatedUnit:
        density = self._densities.get(spec.material) if spec.material else None
        if spec.level is not None:
            uom = spec.level.volume_uom
        elif spec.weight is not None:
            uom = "kg"
        else:
            uom = spec.capacity_uom
        capacity = _factor(spec.capacity_uom, uom, density) * float(spec.capacity)
        litres = _factor_or_none(uom, "L", density)
        if litres is not None:
            max_rate = MAX_FLOW_L_PER_S / litres
        else:  # a solid without density: read the cap as kg/s
            max_rate = MAX_FLOW_L_PER_S * _factor("kg", uom, None)
        fill = self._rng.uniform(*INITIAL_FILL)
        settle = float(spec.settle_s)
        return SimulatedUnit(
            id=spec.id,
            material=spec.material,
            uom=uom,
            capacity=capacity,
            quantity=capacity * fill,
            initial=capacity * fill,
            litres_per_uom=litres,
            max_rate=max_rate,
            idle_until=self._rng.uniform(0.0, FIRST_START_S),
            pause_s=(settle + IDLE_S[0], settle + IDLE_S[1]),
        )

    def _add_tags(self, spec: UnitDescription, unit: SimulatedUnit) -> None:
        density = self._densities.get(spec.material) if spec.material else None
        if spec.level is not None:
            level = spec.level
            self._levels.append(_Level(spec.id, level.tag, level.strapping, unit.uom))
        if spec.weight is not None:
            tag = spec.weight
            self._weights.append(_Weight(spec.id, tag, _tag_factor(unit.uom, tag.unit, density)))
        if spec.totalizer is not None:
            tag = spec.totalizer.tag
            if tag.scale <= 0:
                raise ValueError(f"{tag.name}: a totalizer needs a positive scale")
            modulus = spec.totalizer.max_count + 1
            if tag.data_type in (DataType.UINT16, DataType.UINT32):
                modulus = min(modulus, integer_range(tag.data_type)[1] + 1)
            factor = _tag_factor(unit.uom, tag.unit, density)
            self._totalizers[tag.name] = _Totalizer(spec.id, tag, factor, modulus)

    # ------------------------------------------------------------------ queries

    @property
    def tag_names(self) -> list[str]:
        """Every tag this model produces a value for."""
        levels = [level.tag.name for level in self._levels]
        return [*levels, *(weight.tag.name for weight in self._weights), *self._totalizers]

    def totalizer_counts(self, tag_name: str) -> int:
        """The raw counter value a totalizer tag shows now (after rollover)."""
        total = self._totalizers[tag_name]
        outflow = self.units[total.unit].outflow * total.factor
        return (math.floor(outflow / total.tag.scale + _EPSILON) + total.jumped) % total.modulus

    def tag_values(self, noise_factors: Mapping[str, float] | None = None) -> dict[str, float]:
        """What each PLC tag shows now, in engineering units (scale/offset not applied
        in reverse: that is the server's job). Level and weight readings carry
        Gaussian noise (`NOISE` of capacity, times `noise_factors[tag]` if given);
        totalizers carry none."""
        factors = noise_factors or {}
        values: dict[str, float] = {}
        for level in self._levels:
            volume = self._reading(level.unit, factors.get(level.tag.name, 1.0))
            height, _clamped = level.strapping.level_at(Decimal(volume))
            values[level.tag.name] = float(height)
        for weight in self._weights:
            mass = self._reading(weight.unit, factors.get(weight.tag.name, 1.0))
            values[weight.tag.name] = mass * weight.factor
        for name, total in self._totalizers.items():
            values[name] = self.totalizer_counts(name) * total.tag.scale + total.tag.offset
        return values

    def _reading(self, unit_id: str, noise_factor: float) -> float:
        unit = self.units[unit_id]
        sigma = NOISE * unit.capacity * noise_factor
        return unit.quantity + (self._rng.gauss(0.0, sigma) if sigma > 0 else 0.0)

    # ------------------------------------------------------------------ faults and commands

    def jump_totalizer(self, tag_name: str, counts: int) -> None:
        """Add `counts` to a totalizer's counter (fault injection; no material moves)."""
        if tag_name not in self._totalizers:
            raise KeyError(f"{tag_name!r} is not a totalizer tag")
        self._totalizers[tag_name].jumped += counts

    def start_receipt(self, unit: str, amount: float, rate: float | None = None) -> Operation:
        """Start filling an idle unit now (`amount`, `rate` in its uom; rate capped)."""
        return self._start_single(Activity.RECEIPT, unit, amount, rate)

    def start_issue(self, unit: str, amount: float, rate: float | None = None) -> Operation:
        """Start drawing from an idle unit now (through its outlet: totalizers count it)."""
        return self._start_single(Activity.ISSUE, unit, amount, rate)

    def schedule(self, event: PlantEvent) -> PlantEvent:
        """Queue a delivery or shipment; it starts once its unit is idle and `at_s` has
        come (before any random activity). Returns it with `amount` in the unit's uom.
        ValueError for an unknown unit or a uom that does not convert."""
        unit = self.units.get(event.unit)
        if unit is None:
            known = ", ".join(sorted(self.units))
            raise ValueError(f"unknown storage unit {event.unit!r} (simulated: {known})")
        if event.uom is not None:
            density = self._densities.get(unit.material) if unit.material else None
            factor = _factor_or_none(event.uom, unit.uom, density)
            if factor is None:
                raise ValueError(f"{event.uom} does not convert to {unit.id}'s {unit.uom}")
            event = replace(event, amount=event.amount * factor, uom=unit.uom)
        self._events.setdefault(unit.id, []).append(event)
        return event

    def queued(self, unit: str) -> tuple[PlantEvent, ...]:
        """The unit's events that have not started yet."""
        return tuple(self._events.get(unit, ()))

    def knows(self, ref: str) -> bool:
        """Whether an event with this ref is queued, running or (lately) started."""
        return (
            ref in self._started_refs
            or any(e.ref == ref for events in self._events.values() for e in events)
            or any(u.operation is not None and u.operation.ref == ref for u in self.units.values())
        )

    def amount_in(self, unit_id: str, quantity: float, uom: str) -> float | None:
        """`quantity` of `uom` in the unit's simulated uom (None: it does not convert)."""
        unit = self.units[unit_id]
        density = self._densities.get(unit.material) if unit.material else None
        factor = _factor_or_none(uom, unit.uom, density)
        return None if factor is None else quantity * factor

    def stop_operation(self, unit: str) -> None:
        """End the unit's running activity now (both sides of a transfer)."""
        op = self.units[unit].operation
        if op is not None:
            self._finish(op, 0.0)

    def _start_single(
        self, activity: Activity, unit_id: str, amount: float, rate: float | None
    ) -> Operation:
        unit = self.units[unit_id]
        if unit.operation is not None:
            raise ValueError(f"cannot start a {activity} on {unit_id}: it is busy")
        if amount <= 0:
            raise ValueError(f"a {activity} amount must be positive")
        speed = min(rate or unit.max_rate, unit.max_rate)
        if activity is Activity.RECEIPT:
            op = Operation(activity, speed, amount, destination=unit_id)
        else:
            op = Operation(activity, speed, amount, source=unit_id)
        unit.operation = op
        return op

    def start_transfer(
        self, source: str, destination: str, amount: float, rate: float | None = None
    ) -> Operation:
        """Start a transfer now (both units must be idle and hold the same material).

        `amount` and `rate` are in the source's uom; the rate is capped at both
        units' maximum flow. Like every activity it stops at LOW_STOP/HIGH_STOP.
        """
        src, dst = self.units[source], self.units[destination]
        if source == destination or src.material is None or src.material != dst.material:
            raise ValueError(f"cannot transfer {source} -> {destination}: not the same material")
        if src.operation is not None or dst.operation is not None:
            raise ValueError(f"cannot transfer {source} -> {destination}: a unit is busy")
        if amount <= 0:
            raise ValueError("a transfer amount must be positive")
        factor = self._transfer_factor(src, dst)
        if factor is None:
            raise ValueError(f"cannot transfer {source} -> {destination}: units do not convert")
        cap = min(src.max_rate, dst.max_rate / factor)
        op = Operation(
            Activity.TRANSFER,
            min(rate or cap, cap),
            amount,
            source=source,
            destination=destination,
            factor=factor,
        )
        src.operation = dst.operation = op
        return op

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """The plant's state as JSON-ready data, for `restore` after a restart: every
        unit's quantity and material balance, the running activities, the remaining
        pause of idle units and the totalizers' injected jumps (not the randomness)."""
        units: dict[str, Any] = {}
        operations: list[dict[str, Any]] = []
        for unit in self.units.values():
            units[unit.id] = {
                "uom": unit.uom,
                "capacity": unit.capacity,
                "quantity": unit.quantity,
                "initial": unit.initial,
                "received": unit.received,
                "issued": unit.issued,
                "transferred_in": unit.transferred_in,
                "transferred_out": unit.transferred_out,
                "idle_s": max(0.0, unit.idle_until - self.time_s),
            }
            op = unit.operation
            if op is not None and (op.source or op.destination) == unit.id:  # a transfer once
                operations.append(
                    {
                        "activity": op.activity.value,
                        "rate": op.rate,
                        "remaining": op.remaining,
                        "source": op.source,
                        "destination": op.destination,
                        "ref": op.ref,
                    }
                )
        events = [
            {
                "kind": e.kind.value,
                "unit": e.unit,
                "amount": e.amount,
                "in_s": max(0.0, e.at_s - self.time_s),
                "duration_s": e.duration_s,
                "ref": e.ref,
            }
            for queued in self._events.values()
            for e in queued
        ]
        return {
            "format": STATE_FORMAT,
            "units": units,
            "operations": operations,
            "totalizers": {name: total.jumped for name, total in self._totalizers.items()},
            "events": events,
            "started_refs": list(self._started_refs),
        }

    def restore(self, state: Mapping[str, Any]) -> dict[str, str]:
        """Continue from a `to_state()` (of this or an earlier run of the same plant).

        A unit restores when the state has it with the same uom and capacity and
        consistent numbers (finite, within capacity, material balance holding);
        the others keep their fresh state: returned as unit id -> why. A running
        activity continues when all its units restored (an invalid one is
        dropped: its units resume idle). Raises ValueError (and changes nothing)
        when `state` is not a plant state at all.
        """
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"not a plant state (format {found!r}, expected {STATE_FORMAT!r})")
        units, operations, jumps = (
            state.get("units"),
            state.get("operations"),
            state.get("totalizers"),
        )
        if not isinstance(units, Mapping) or not isinstance(jumps, Mapping):
            raise ValueError("plant state lacks its units or totalizers")
        if not isinstance(operations, list):
            raise ValueError("plant state lacks its operations")
        restored: dict[str, dict[str, float]] = {}
        fresh: dict[str, str] = {}
        for unit in self.units.values():
            try:
                restored[unit.id] = _unit_state(unit, units.get(unit.id))
            except ValueError as exc:
                fresh[unit.id] = str(exc)
        running: dict[str, Operation] = {}
        for entry in operations:
            try:
                op = self._operation_state(entry, restored)
            except ValueError:
                continue
            ends = [unit_id for unit_id in (op.source, op.destination) if unit_id]
            if not set(ends) & set(running):
                running.update(dict.fromkeys(ends, op))
        for unit_id, values in restored.items():
            unit = self.units[unit_id]
            unit.quantity, unit.initial = values["quantity"], values["initial"]
            unit.received, unit.issued = values["received"], values["issued"]
            unit.transferred_in = values["transferred_in"]
            unit.transferred_out = values["transferred_out"]
            unit.operation = running.get(unit_id)
            unit.idle_until = self.time_s + min(values["idle_s"], unit.pause_s[1])
        for name, total in self._totalizers.items():
            counts = jumps.get(name)
            if total.unit in restored and type(counts) is int:
                total.jumped = counts
        self._restore_events(state, restored)
        return fresh

    def _restore_events(self, state: Mapping[str, Any], restored: Mapping[str, object]) -> None:
        """The queued events of restored units (before those scheduled already) and the
        refs already started (a state written before events existed has neither); an
        invalid entry is dropped."""
        scheduled, self._events = self._events, {}
        for entry in state.get("events") or []:
            if not isinstance(entry, Mapping) or entry.get("unit") not in restored:
                continue
            try:
                duration = entry.get("duration_s")
                ref = entry.get("ref")
                event = PlantEvent(
                    EventKind(str(entry.get("kind"))),
                    str(entry["unit"]),
                    _finite(entry, "amount"),
                    at_s=self.time_s + _finite(entry, "in_s"),
                    duration_s=None if duration is None else _finite(entry, "duration_s"),
                    ref=ref if isinstance(ref, str) else None,
                )
            except ValueError:
                continue
            self._events.setdefault(event.unit, []).append(event)
        for unit_id, events in scheduled.items():
            self._events.setdefault(unit_id, []).extend(events)
        refs = state.get("started_refs") or []
        self._started_refs.clear()
        self._started_refs.extend(ref for ref in refs if isinstance(ref, str))

    def _operation_state(self, entry: object, restored: Mapping[str, object]) -> Operation:
        """The operation a state entry describes; ValueError if it is invalid or one of
        its units did not restore."""
        if not isinstance(entry, Mapping):
            raise ValueError("an operation is not a table")
        activity = Activity(str(entry.get("activity")))
        rate, remaining = _finite(entry, "rate"), _finite(entry, "remaining")
        source, destination = entry.get("source"), entry.get("destination")
        if rate <= 0:
            raise ValueError(f"a {activity} needs a positive rate")
        ends = {
            Activity.RECEIPT: source is None and destination in restored,
            Activity.ISSUE: destination is None and source in restored,
            Activity.TRANSFER: source in restored and destination in restored,
        }
        if not ends[activity]:
            raise ValueError(f"a {activity} of units that did not restore")
        ref = entry.get("ref")
        ref = ref if isinstance(ref, str) else None
        if activity is not Activity.TRANSFER:
            unit = self.units[str(source or destination)]
            rate = min(rate, unit.max_rate)
            return Operation(activity, rate, remaining, source, destination, ref=ref)
        src, dst = self.units[str(source)], self.units[str(destination)]
        factor = self._transfer_factor(src, dst)
        if factor is None or src.material != dst.material or src is dst:
            raise ValueError(f"cannot transfer {src.id} -> {dst.id}")
        rate = min(rate, src.max_rate, dst.max_rate / factor)
        return Operation(activity, rate, remaining, src.id, dst.id, factor)

    # ------------------------------------------------------------------ time

    def step(self, dt: float) -> None:
        """Advance simulated time by `dt` seconds (in slices of at most MAX_SUBSTEP_S)."""
        if not math.isfinite(dt) or dt < 0:
            raise ValueError(f"dt must be a finite number >= 0 (got {dt})")
        remaining = dt
        while remaining > _EPSILON:
            h = min(remaining, MAX_SUBSTEP_S)
            self._start_due_activities()
            self._advance(h)
            self.time_s += h
            remaining -= h

    def _start_due_activities(self) -> None:
        for unit in self.units.values():
            idle = unit.operation is None and unit.idle_until <= self.time_s + _EPSILON
            if not idle or self._start_event(unit):
                continue
            if self._due_event(unit) is None:  # a due truck waits for its gap, not a batch
                self._plan(unit)

    def _due_event(self, unit: SimulatedUnit) -> PlantEvent | None:
        queued = self._events.get(unit.id, [])
        return next((e for e in queued if e.at_s <= self.time_s + _EPSILON), None)

    def _start_event(self, unit: SimulatedUnit) -> bool:
        """Start the unit's first due event, if it has one."""
        due = self._due_event(unit)
        if due is None or self.time_s < unit.idle_since + TRUCK_GAP_S:
            return False
        self._events[unit.id].remove(due)
        if due.duration_s is not None:
            rate = min(due.amount / due.duration_s, unit.max_rate)
        else:
            rate = min(self._rng.uniform(*RATE) * unit.capacity, unit.max_rate)
        if due.kind is EventKind.DELIVERY:
            op = Operation(Activity.RECEIPT, rate, due.amount, destination=unit.id, ref=due.ref)
        else:
            op = Operation(Activity.ISSUE, rate, due.amount, source=unit.id, ref=due.ref)
        unit.operation = op
        if due.ref is not None:
            self._started_refs.append(due.ref)
        return True

    def _plan(self, unit: SimulatedUnit) -> None:
        rng = self._rng
        ratio = unit.fill_ratio
        if ratio < FILL_BELOW:
            activity = Activity.RECEIPT
        elif ratio > DRAW_ABOVE:
            activity = Activity.ISSUE
        else:
            partners = self._transfer_partners(unit)
            if partners and rng.random() < TRANSFER_SHARE:
                partner = rng.choice(partners)
                amount = rng.uniform(*AMOUNT) * unit.capacity
                self.start_transfer(unit.id, partner.id, amount, rng.uniform(*RATE) * unit.capacity)
                return
            # The emptier the unit, the likelier a fill.
            activity = Activity.RECEIPT if rng.random() < 1.0 - ratio else Activity.ISSUE
        amount = rng.uniform(*AMOUNT) * unit.capacity
        rate = min(rng.uniform(*RATE) * unit.capacity, unit.max_rate)
        if activity is Activity.RECEIPT and self.scheduled_receipts:
            if ratio < FILL_BELOW:  # nothing to draw on: wait for a truck
                unit.idle_until = self.time_s + rng.uniform(*unit.pause_s)
                return
            activity = Activity.ISSUE  # receipts come by truck: keep the plant drawing
        if activity is Activity.RECEIPT:
            unit.operation = Operation(activity, rate, amount, destination=unit.id)
        else:
            unit.operation = Operation(activity, rate, amount, source=unit.id)

    def _transfer_partners(self, unit: SimulatedUnit) -> list[SimulatedUnit]:
        if unit.material is None or unit.fill_ratio <= TRANSFER_SOURCE_ABOVE:
            return []
        return [
            other
            for other in self.units.values()
            if other.id != unit.id
            and other.material == unit.material
            and other.operation is None
            and other.fill_ratio < TRANSFER_DESTINATION_BELOW
            and self._transfer_factor(unit, other) is not None
        ]

    def _transfer_factor(self, src: SimulatedUnit, dst: SimulatedUnit) -> float | None:
        density = self._densities.get(src.material) if src.material else None
        return _factor_or_none(src.uom, dst.uom, density)

    def _advance(self, h: float) -> None:
        seen: list[Operation] = []
        for unit in self.units.values():
            op = unit.operation
            if op is not None and all(op is not other for other in seen):
                seen.append(op)
        for op in seen:
            if self._move(op, h):
                self._finish(op, h)

    def _move(self, op: Operation, h: float) -> bool:
        """Move one slice of `op`; True when the operation is over."""
        wanted = min(op.rate * h, op.remaining)
        if op.activity is Activity.RECEIPT:
            dst = self.units[op.destination or ""]
            amount = max(0.0, min(wanted, HIGH_STOP * dst.capacity - dst.quantity))
            dst.quantity += amount
            dst.received += amount
        elif op.activity is Activity.ISSUE:
            src = self.units[op.source or ""]
            amount = max(0.0, min(wanted, src.quantity - LOW_STOP * src.capacity))
            src.quantity -= amount
            src.issued += amount
        else:
            src, dst = self.units[op.source or ""], self.units[op.destination or ""]
            room = (HIGH_STOP * dst.capacity - dst.quantity) / op.factor
            amount = max(0.0, min(wanted, src.quantity - LOW_STOP * src.capacity, room))
            src.quantity -= amount
            src.transferred_out += amount
            dst.quantity += amount * op.factor
            dst.transferred_in += amount * op.factor
        op.remaining -= amount
        hit_limit = amount < op.rate * h - _EPSILON and op.remaining > _EPSILON
        return hit_limit or op.remaining <= _EPSILON

    def _finish(self, op: Operation, h: float) -> None:
        for unit_id in {op.source, op.destination} - {None}:
            unit = self.units[unit_id or ""]
            unit.operation = None
            unit.idle_since = self.time_s + h
            unit.idle_until = self.time_s + h + self._rng.uniform(*unit.pause_s)


# ---------------------------------------------------------------------- state checks

_UNIT_NUMBERS: Final = (
    "quantity",
    "initial",
    "received",
    "issued",
    "transferred_in",
    "transferred_out",
    "idle_s",
)


def _finite(entry: Mapping[str, object], key: str) -> float:
    """`entry[key]` as a finite number >= 0; ValueError naming the key otherwise
    (booleans are not numbers here)."""
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{key} {number} is not a finite number >= 0")
    return number


def _unit_state(unit: SimulatedUnit, entry: object) -> dict[str, float]:
    """A unit's saved numbers if they fit this unit (same uom and capacity) and add up;
    ValueError saying why not."""
    if not isinstance(entry, Mapping):
        raise ValueError("not in the saved state")
    if entry.get("uom") != unit.uom:
        raise ValueError(f"saved in {entry.get('uom')!r}, now in {unit.uom!r}")
    capacity = _finite(entry, "capacity")
    if not math.isclose(capacity, unit.capacity, rel_tol=1e-9):
        raise ValueError(f"saved with capacity {capacity:g}, now {unit.capacity:g}")
    values = {key: _finite(entry, key) for key in _UNIT_NUMBERS}
    if values["quantity"] > unit.capacity:
        raise ValueError(f"quantity {values['quantity']:g} exceeds the capacity")
    balance = (
        values["initial"]
        + values["received"]
        - values["issued"]
        + values["transferred_in"]
        - values["transferred_out"]
    )
    if abs(balance - values["quantity"]) > 1e-6 * unit.capacity:
        raise ValueError("its material balance does not add up")
    return values


# ---------------------------------------------------------------------- conversions


def _factor(from_uom: str, to_uom: str, density: Decimal | None) -> float:
    """How many `to_uom` one `from_uom` is (through density across mass/volume)."""
    if canonical_uom(from_uom) == canonical_uom(to_uom):
        return 1.0
    scale = Decimal(1_000_000)  # convert() quantizes to 1e-6: keep 12 significant digits
    return float(convert(scale, from_uom, to_uom, density)) / 1_000_000


def _factor_or_none(from_uom: str, to_uom: str, density: Decimal | None) -> float | None:
    try:
        return _factor(from_uom, to_uom, density)
    except InventoryError:
        return None


def _tag_factor(uom: str, tag_unit: str, density: Decimal | None) -> float:
    """Quantity uom -> a tag's engineering unit; 1 when the tag names no mass/volume unit."""
    try:
        dimension(tag_unit)
    except (InventoryError, KeyError):
        return 1.0
    return _factor(uom, tag_unit, density)


def to_raw(tag: Tag, value: float | bool) -> int | float | bool:
    """Engineering value -> raw PLC value, saturating like a transmitter: a value
    outside the data type's range gives the range's end instead of an error."""
    try:
        return from_engineering(value, tag)
    except ValueError:
        pass
    raw = (float(value) - tag.offset) / tag.scale if tag.scale else math.nan
    if tag.data_type is DataType.FLOAT32:
        return math.copysign(_FLOAT32_MAX, raw)
    if tag.data_type is DataType.FLOAT64:
        return math.copysign(sys.float_info.max, raw)
    low, high = integer_range(tag.data_type)
    return high if raw > high else low

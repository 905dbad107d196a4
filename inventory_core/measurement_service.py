"""From measured quantities to ledger movements: the PLC side of the ledger.

`MeasurementService` holds one `MovementDeriver` per measured storage unit.
The PLC layer calls `feed(unit, value, good, timestamp)` with the engineering
value of the unit's level or weight tag; the service converts it to the
material's base unit (strapping table, density), lets the deriver decide
whether a movement happened, and posts it to the ledger with source `plc`,
a deterministic idempotency key and the measurement details.

Rules (SPEC section 5): on first start, the first good measurement of a unit
with no book stock is booked as an opening `count` into lot `<UNIT>-OPEN`;
after that, increases are receipts and decreases issues of the unit's current
lot. After a restart each deriver resumes from the last PLC-derived movement
in the ledger, so nothing is booked twice. Changes held for review (too large
after a communication gap) are audited, not booked.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from inventory_core.clock import format_timestamp, parse_timestamp
from inventory_core.domain.derivation import (
    DerivedMovement,
    DeriverConfig,
    HeldForReview,
    MovementDeriver,
    Reading,
    StrappingTable,
)
from inventory_core.domain.errors import InventoryError, LedgerUnavailable, WriterLeaseLost
from inventory_core.domain.model import (
    AuditEvent,
    LotId,
    MaterialDefinition,
    MovementKind,
    PostingRequest,
    Source,
    StorageUnitId,
    opening_lot,
)
from inventory_core.domain.units import convert, parse_quantity
from inventory_core.ledger import Ledger
from inventory_core.log import get_logger

log = get_logger(__name__)
PLC_USER = "plc"


@dataclass(frozen=True, slots=True)
class MeasuredUnit:
    """How one storage unit is measured and when a change becomes a movement.

    `signal_uom` is the unit the measured quantity arrives in: the strapping
    table's volume unit for a level, else the weight tag's unit (kg, g, t).
    """

    unit: StorageUnitId
    material: MaterialDefinition
    signal_uom: str
    deriver: DeriverConfig
    strapping: StrappingTable | None = None
    # False for a `booking = "manual"` unit: its postings are the book and its
    # measurement only feeds reconciliation, so nothing is derived from it.
    books: bool = True


class UnitReading(NamedTuple):
    """One reading of a unit's quantity tag (engineering value, as the PLC gave it)."""

    unit: StorageUnitId
    value: float | None
    good: bool
    timestamp: datetime
    raw: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class MeasuredQuantity:
    """The latest measurement of a unit, in the material's base unit."""

    quantity: Decimal | None
    uom: str
    timestamp: datetime
    good: bool
    clamped: bool = False  # outside the strapping table: Uncertain_EngineeringUnitsExceeded


@dataclass(frozen=True, slots=True)
class _Step:
    """What one reading derived, and what the ledger still has to take for it."""

    spec: MeasuredUnit
    derived: list[DerivedMovement | HeldForReview]
    before: MovementDeriver  # the deriver before the reading: restored if the ledger fails
    record: MeasuredQuantity | None  # the measurement to record, when one is due


class MeasurementService:
    """Derives and posts movements for every measured storage unit."""

    def __init__(
        self,
        ledger: Ledger,
        units: Sequence[MeasuredUnit],
        *,
        record_every: timedelta = timedelta(seconds=10),
    ) -> None:
        self._ledger = ledger
        self._units = {u.unit: u for u in units}
        self._derivers: dict[StorageUnitId, MovementDeriver] = {}
        self._recorded_at: dict[StorageUnitId, datetime] = {}
        self._record_every = record_every
        self._refused: dict[StorageUnitId, str] = {}  # unit -> why its last movement was refused
        self.latest: dict[StorageUnitId, MeasuredQuantity] = {}

    async def start(self) -> None:
        """Resume every deriver from the ledger's last PLC-derived movement of its unit."""
        for spec in self._units.values():
            last = await self._ledger.last_derived(spec.unit)
            if last is None:
                self._derivers[spec.unit] = MovementDeriver(spec.deriver)
                continue
            booked = parse_quantity(str(last.details["booked_after"]))
            at = parse_timestamp(str(last.details["window_end"]))
            self._derivers[spec.unit] = MovementDeriver.resume(spec.deriver, booked, at)

    def base_quantity(self, unit: StorageUnitId, value: float) -> tuple[Decimal, bool]:
        """A tag value (level or weight) as a quantity in the material's base unit."""
        spec = self._units[unit]
        signal = parse_quantity(value)
        clamped = False
        if spec.strapping is not None:
            signal, clamped = spec.strapping.volume_at(signal)
        material = spec.material
        quantity = convert(signal, spec.signal_uom, material.base_uom, material.density_kg_per_l)
        return quantity, clamped

    async def feed(
        self,
        unit: StorageUnitId,
        value: float | None,
        *,
        good: bool,
        timestamp: datetime,
        raw: dict[str, object] | None = None,
    ) -> list[DerivedMovement | HeldForReview]:
        """One measurement of `unit`; posts what it derives and returns it."""
        step = self._derive(UnitReading(unit, value, good, timestamp, raw))
        if step.derived or step.record:
            await self._settle(step)
        return step.derived

    async def feed_many(self, readings: Sequence[UnitReading]) -> list[BaseException | None]:
        """Readings of different units (one PLC poll). Each is derived at once; only the
        few with ledger work are awaited, together, so that their postings share
        commits. Returns, per reading, None or the exception that kept it from the
        ledger (its deriver then forgot it, so feeding it again books the same)."""
        steps = [self._derive(reading) for reading in readings]
        results: list[BaseException | None] = [None] * len(steps)
        work = [i for i, step in enumerate(steps) if step.derived or step.record]
        if len(work) == 1:  # the common case: no task for a lone posting
            try:
                await self._settle(steps[work[0]])
            except Exception as exc:
                results[work[0]] = exc
        elif work:
            outcomes = await asyncio.gather(
                *(self._settle(steps[i]) for i in work), return_exceptions=True
            )
            for i, outcome in zip(work, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    results[i] = outcome
        return results

    def _derive(self, reading: UnitReading) -> _Step:
        """The synchronous part of a reading: convert it, let the deriver decide."""
        unit, value, good, timestamp = reading.unit, reading.value, reading.good, reading.timestamp
        spec = self._units[unit]
        quantity: Decimal | None = None
        clamped = False
        if good and value is not None:
            try:
                quantity, clamped = self.base_quantity(unit, value)
            except InventoryError:
                good = False  # NaN/inf or absurd: a bad reading, never a movement
        good = good and quantity is not None
        latest = MeasuredQuantity(quantity, spec.material.base_uom, timestamp, good, clamped)
        self.latest[unit] = latest
        deriver = self._derivers[unit]
        before = copy.copy(deriver)  # all or nothing (its fields are immutable values)
        derived = (
            deriver.feed(Reading(timestamp, quantity, good=good, raw=reading.raw or {}))
            if spec.books
            else []
        )
        last = self._recorded_at.get(unit)
        record = good and (
            bool(derived) or last is None or timestamp - last >= self._record_every
        )  # keep the ledger's measured quantity fresh for reconciliation, not every sample
        return _Step(spec, derived, before, latest if record else None)

    async def _settle(self, step: _Step) -> None:
        """Post what a reading derived and record the measurement, in one commit (both go
        to the writer together: the unit's next reading waits for one commit, not two).
        If the ledger does not take it (away, or we are cancelled), the deriver forgets
        the reading, so feeding it again derives the same movements (same keys); a
        measurement recorded twice is harmless."""
        try:
            if step.derived and step.record:
                outcomes = await asyncio.gather(
                    self._book(step.spec, step.derived),
                    self._record(step.spec.unit, step.record),
                    return_exceptions=True,
                )
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
            elif step.derived:
                await self._book(step.spec, step.derived)
            elif step.record:
                await self._record(step.spec.unit, step.record)
        except BaseException:
            self._derivers[step.spec.unit] = step.before
            raise

    async def _book(
        self, spec: MeasuredUnit, derived: Sequence[DerivedMovement | HeldForReview]
    ) -> None:
        """Post (or hold) what a reading derived. A movement the ledger's rules refuse
        (e.g. the unit's current lot is of another material after a product change) is
        audited by the ledger and logged here, and stays unbooked: the measurement
        moves on, and reconciliation shows the difference until a count or receipt
        gives the unit a lot of its material. Only an unreachable ledger, and a writer
        lease lost to another process (this one must stop booking), are raised."""
        for item in derived:
            try:
                if isinstance(item, DerivedMovement):
                    await self._post(spec, item)
                else:
                    await self._hold(item)
            except (LedgerUnavailable, WriterLeaseLost):
                raise
            except InventoryError as exc:
                reason = type(exc).__name__
                if self._refused.get(spec.unit) != reason:  # once per unit and reason
                    log.warning("plc_movement_rejected", unit=spec.unit, reason=str(exc))
                self._refused[spec.unit] = reason
            else:
                if self._refused.pop(spec.unit, None) is not None:
                    log.warning("plc_movement_accepted_again", unit=spec.unit)

    async def _post(self, spec: MeasuredUnit, movement: DerivedMovement) -> None:
        details = movement.details()
        lot: LotId | None
        to_unit: StorageUnitId | None
        from_unit: StorageUnitId | None
        if movement.opening:
            if any(b.quantity != 0 for b in await self._ledger.balances(unit=spec.unit)):
                # The book already holds stock (manual postings came first): keep it,
                # reconciliation shows any difference. Nothing to open.
                log.info("opening_count_skipped", unit=spec.unit, reason="book stock exists")
                return
            lot = opening_lot(spec.unit)
            kind, to_unit, from_unit = MovementKind.COUNT, spec.unit, None
        else:
            lot = None  # the unit's current lot, resolved in the posting's transaction
            increase = movement.kind is MovementKind.RECEIPT
            kind = movement.kind
            to_unit, from_unit = (spec.unit, None) if increase else (None, spec.unit)
        request = PostingRequest(
            kind=kind,
            material=spec.material.id,
            lot=lot,
            quantity=movement.quantity,
            uom=spec.material.base_uom,
            from_unit=from_unit,
            to_unit=to_unit,
            idempotency_key=movement.idempotency_key,
            reason="opening count" if movement.opening else "measured change",
            user=PLC_USER,
            source=Source.PLC,
            details=details,
        )
        await self._ledger.post(request)

    async def _hold(self, item: HeldForReview) -> None:
        log.warning("measurement_held_for_review", unit=item.unit, reason=item.reason)
        await self._ledger.record_event(
            AuditEvent(
                user=PLC_USER,
                action="held-for-review",
                object_type="storage_unit",
                object_id=item.unit,
                reason=item.reason,
                details=item.details(),
            )
        )

    async def _record(self, unit: StorageUnitId, measured: MeasuredQuantity) -> None:
        assert measured.quantity is not None
        await self._ledger.record_measurement(
            unit, measured.quantity, measured.uom, timestamp=format_timestamp(measured.timestamp)
        )
        self._recorded_at[unit] = measured.timestamp

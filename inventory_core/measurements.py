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
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from inventory_core.clock import format_timestamp, parse_timestamp
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.measurement import (
    DerivedMovement,
    DeriverConfig,
    HeldForReview,
    MovementDeriver,
    Reading,
    StrappingTable,
)
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

log = logging.getLogger(__name__)
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


@dataclass(frozen=True, slots=True)
class MeasuredQuantity:
    """The latest measurement of a unit, in the material's base unit."""

    quantity: Decimal | None
    uom: str
    timestamp: datetime
    good: bool
    clamped: bool = False  # outside the strapping table: Uncertain_EngineeringUnitsExceeded


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
        spec = self._units[unit]
        quantity: Decimal | None = None
        clamped = False
        if good and value is not None:
            try:
                quantity, clamped = self.base_quantity(unit, value)
            except InventoryError:
                good = False  # NaN/inf or absurd: a bad reading, never a movement
        self.latest[unit] = MeasuredQuantity(
            quantity, spec.material.base_uom, timestamp, good and quantity is not None, clamped
        )
        deriver = self._derivers[unit]
        before = copy.copy(deriver)  # all or nothing (its fields are immutable values)
        derived = deriver.feed(
            Reading(timestamp, quantity, good=good and quantity is not None, raw=raw or {})
        )
        # The postings and the measurement record go to the writer together, so they
        # share one commit: the next reading of the unit waits for one commit, not two.
        outcomes = await asyncio.gather(
            self._book(spec, derived), self._maybe_record(spec, derived), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                # The ledger did not take it (away, or we are cancelled): forget the
                # reading so that feeding it again later derives the same movements
                # (same keys). A measurement recorded twice is harmless.
                self._derivers[unit] = before
                raise outcome
        return derived

    async def _book(
        self, spec: MeasuredUnit, derived: Sequence[DerivedMovement | HeldForReview]
    ) -> None:
        for item in derived:
            if isinstance(item, DerivedMovement):
                await self._post(spec, item)
            else:
                await self._hold(item)

    async def _post(self, spec: MeasuredUnit, movement: DerivedMovement) -> None:
        details = movement.details()
        lot: LotId | None
        to_unit: StorageUnitId | None
        from_unit: StorageUnitId | None
        if movement.opening:
            if any(b.quantity != 0 for b in await self._ledger.balances(unit=spec.unit)):
                # The book already holds stock (manual postings came first): keep it,
                # reconciliation shows any difference. Nothing to open.
                log.info("opening_count_skipped unit=%s reason=%s", spec.unit, "book stock exists")
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
        log.warning("measurement_held_for_review unit=%s reason=%s", item.unit, item.reason)
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

    async def _maybe_record(
        self, spec: MeasuredUnit, derived: Sequence[DerivedMovement | HeldForReview]
    ) -> None:
        """Keep the ledger's measured quantity fresh for reconciliation, not every sample."""
        latest = self.latest[spec.unit]
        if not latest.good or latest.quantity is None:
            return
        last = self._recorded_at.get(spec.unit)
        if derived or last is None or latest.timestamp - last >= self._record_every:
            await self._ledger.record_measurement(
                spec.unit,
                latest.quantity,
                latest.uom,
                timestamp=format_timestamp(latest.timestamp),
            )
            self._recorded_at[spec.unit] = latest.timestamp

"""The ledger service API used by the OPC UA server, the PLC pipeline and the CLI alike.

`open_ledger(url, ...)` yields a `Ledger`: writes go through one group-commit
writer (durable before they return), reads through a separate pool.
Requests are validated here (stateless checks) before they reach the writer,
where the stateful rules run under the database lock.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import TypeVar

from inventory_core.clock import Clock, SystemClock, format_timestamp, today
from inventory_core.domain.advices import ADVICE_PREFIX, Advice
from inventory_core.domain.audit import AuditRecord, canonical_json
from inventory_core.domain.errors import (
    InventoryError,
    LedgerUnavailable,
    UnknownAdvice,
    UnknownMovement,
    UnknownRequest,
    ValidationError,
)
from inventory_core.domain.genealogy import MassCheck, mass_checks
from inventory_core.domain.lease import WriterLease
from inventory_core.domain.lot_quality import ExpireLots, LotQualityRequest
from inventory_core.domain.mass_balance import BalanceLine, mass_balance
from inventory_core.domain.meter import MeterFlow
from inventory_core.domain.model import (
    DRAW_KINDS,
    QUANTITY_KINDS,
    AnnounceLots,
    AuditEvent,
    Balance,
    ExpireAdvices,
    GenealogyLink,
    Lot,
    LotStatusRequest,
    MasterDataUpdate,
    MaterialDefinition,
    Measurement,
    Movement,
    MovementKind,
    PostingRequest,
    PostingResult,
    ReconciliationLine,
    ReversalRequest,
    Source,
    StorageUnit,
    StorageUnitId,
    VerifyReport,
)
from inventory_core.domain.posting import DEFAULT_CAPACITY_MARGIN_PCT, payload_hash
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    ClosedPeriod,
    ClosePeriodRequest,
    PendingRequest,
    RequestState,
    SignaturePoliciesUpdate,
    SignaturePolicy,
    SignRequest,
    request_fingerprint,
)
from inventory_core.domain.signing_rules import SignOutcome
from inventory_core.domain.text import (
    ID_MAX,
    KEY_MAX,
    check_free_text,
    check_identifier,
    check_key,
)
from inventory_core.domain.units import canonical_uom, convert, parse_quantity
from inventory_core.log import get_logger
from inventory_core.store import LedgerStore

log = get_logger(__name__)
# Text rules: inventory_core/domain/text.py. Lengths follow the ledger's columns.
MAX_KEY_LENGTH = KEY_MAX
MASTER_ID_MAX = 64  # materials, storage units, sites, areas: VARCHAR(64)
UOM_MAX = 16  # as typed (aliases included); the canonical spelling is stored
EXPORT_SETTLE = timedelta(seconds=30)
REASON_REQUIRED = frozenset({MovementKind.ADJUSTMENT, MovementKind.SCRAP})
T = TypeVar("T")


class Ledger:
    """Post movements, change lot status, query balances, history, genealogy, audit."""

    def __init__(self, store: LedgerStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._listeners: list[Callable[[Movement], None]] = []
        self._advice_listeners: list[Callable[[Advice], None]] = []
        self._request_listeners: list[Callable[[str], None]] = []
        self._lot_listeners: list[Callable[[Lot], None]] = []

    def subscribe(self, listener: Callable[[Movement], None]) -> None:
        """Call `listener` with every movement this process posts, once it is durable
        (OPC UA events, metrics). Listeners must be quick and must not raise."""
        self._listeners.append(listener)

    def subscribe_advices(self, listener: Callable[[Advice], None]) -> None:
        """Call `listener` with each advice this process records, matches or closes, once
        durable (metrics). Quick, and must not raise, as a movement listener."""
        self._advice_listeners.append(listener)

    def subscribe_requests(self, listener: Callable[[str], None]) -> None:
        """Call `listener` with the id (`request:...`) of each request this process holds
        for signatures, signs or closes, once durable (OPC UA PendingRequests). Quick,
        and must not raise, as a movement listener."""
        self._request_listeners.append(listener)

    def subscribe_lots(self, listener: Callable[[Lot], None]) -> None:
        """Call `listener` with each lot whose data this process changes without a
        movement (quality data, a B2MML announcement), once durable (OPC UA lot nodes).
        Quick, and must not raise, as a movement listener."""
        self._lot_listeners.append(listener)

    def _posted(self, result: PostingResult) -> PostingResult:
        if result.movement_id.startswith(REQUEST_PREFIX) and not result.replayed:
            _notify(self._request_listeners, str(result.movement_id), "request")
        movements = result.movements or ((result.movement,) if result.movement else ())
        for movement in movements:
            _notify(self._listeners, movement, "movement")
        if result.advice is not None and not result.replayed:
            _notify(self._advice_listeners, result.advice, "advice")
        if result.lot is not None:
            _notify(self._lot_listeners, result.lot, "lot")
        return result

    @property
    def writer_id(self) -> str:
        return self._store.writer_id

    @property
    def writer_pid(self) -> int | None:
        """The process id of the ledger's writer process (`writer_process=True`), while it
        runs; None where the writer is a thread of this process."""
        return self._store.writer_pid

    async def keep_lease(self) -> None:
        """Renew this process's writer lease every heartbeat, until cancelled (a task of
        the service's TaskGroup). Raises WriterLeaseLost when another process took it
        over: the caller must stop; the writer already refuses every batch. While the
        ledger cannot be reached it keeps trying: nothing commits meanwhile anyway, and
        if no other process took the lease over, renewing it again resumes booking."""
        lease = self._store.lease
        if lease is None:
            raise LedgerUnavailable("this ledger was opened without a writer lease")
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(lease.heartbeat_s)
            try:
                async with asyncio.timeout(lease.duration_s / 2):
                    expires = await self._store.renew_lease()
            except (LedgerUnavailable, TimeoutError) as exc:
                if failing_since is None:  # once per episode; another instance may take
                    failing_since = loop.time()  # the lease over lease_s after the last renewal
                    log.warning(
                        "writer_lease_not_renewed",
                        writer=self.writer_id,
                        retry_s=lease.heartbeat_s,
                        lease_s=lease.duration_s,
                        error=str(exc) or type(exc).__name__,
                    )
                continue
            if failing_since is not None:
                log.warning(
                    "writer_lease_renewed_again",
                    writer=self.writer_id,
                    after_s=round(loop.time() - failing_since, 1),
                    expires=expires,
                )
                failing_since = None
            else:
                log.debug("writer_lease_renewed", writer=self.writer_id, expires=expires)

    # -- writes ----------------------------------------------------------------

    async def post(self, request: PostingRequest) -> PostingResult:
        """Post a movement; returns its id (the first one's id when the key was used before)."""
        request = validate_posting(request)
        result: PostingResult = await self._store.submit(request, payload_hash(request))
        return self._posted(result)

    async def reverse(self, request: ReversalRequest) -> PostingResult:
        check_identifier("movement id", request.movement_id)
        _require_reason(request.reason)
        check_identifier("user", request.user)
        _check_key(request.idempotency_key)
        result: PostingResult = await self._store.submit(request, payload_hash(request))
        return self._posted(result)

    async def set_lot_status(self, request: LotStatusRequest) -> PostingResult:
        check_identifier("lot", request.lot)
        _require_reason(request.reason)
        check_identifier("user", request.user)
        _check_key(request.idempotency_key)
        result: PostingResult = await self._store.submit(request, payload_hash(request))
        return self._posted(result)

    async def announce_lots(self, request: AnnounceLots) -> tuple[list[Lot], list[str]]:
        """Lots a business system announces (B2MML MaterialLot): new ones are created with
        their status and expiry, known ones change status; all or none, audited. Returns
        the lots as they are now and the `request:` ids of the changes signature policies
        hold (a status change, quality data of a known lot)."""
        for announced in request.lots:
            check_identifier("lot", announced.lot)
            check_identifier("material", announced.material)
        check_identifier("user", request.user)
        _require_reason(request.reason)
        outcome: tuple[list[Lot], list[PostingResult]] = await self._store.submit(request)
        lots, status_changes = outcome
        for result in status_changes:
            self._posted(result)
        for lot in lots:
            _notify(self._lot_listeners, lot, "lot")
        held = [
            str(r.movement_id) for r in status_changes if r.movement_id.startswith(REQUEST_PREFIX)
        ]
        return lots, held

    async def sync_master_data(
        self,
        materials: Sequence[MaterialDefinition],
        units: Sequence[StorageUnit],
        *,
        user: str = "system",
        reason: str = "configuration",
    ) -> int:
        """Create or update materials and storage units (the configuration's); returns
        how many changed."""
        update = self._master_data(materials, units, user, reason, Source.SYSTEM)
        changed: int = await self._store.submit(update)
        return changed

    async def define_materials(
        self, materials: Sequence[MaterialDefinition], *, user: str, reason: str, source: Source
    ) -> PendingRequest | None:
        """Material definitions from a business system (B2MML), audited: applied (None),
        or, where a `master-data` signature policy asks, held: the pending request."""
        if source is Source.SYSTEM:
            raise ValidationError("the configuration's master data is synced, not defined")
        update = self._master_data(materials, (), user, reason, source)
        outcome: int | PostingResult = await self._store.submit(update)
        if isinstance(outcome, int):
            return None
        self._posted(outcome)
        return await self.pending_request(outcome.movement_id)

    @staticmethod
    def _master_data(
        materials: Sequence[MaterialDefinition],
        units: Sequence[StorageUnit],
        user: str,
        reason: str,
        source: Source,
    ) -> MasterDataUpdate:
        validate_master_data(materials, units)
        check_key("user", user, max_length=ID_MAX)
        check_free_text("reason", reason)
        return MasterDataUpdate(tuple(materials), tuple(units), user, reason, source)

    async def record_measurement(
        self,
        unit: str,
        quantity: Decimal,
        uom: str,
        *,
        quality: str = "good",
        timestamp: str | None = None,
    ) -> None:
        """Store a measured quantity (base unit of the unit's material) for reconciliation."""
        measurement = Measurement(
            StorageUnitId(unit),
            parse_quantity(quantity),
            canonical_uom(uom),
            timestamp or format_timestamp(self._clock.now()),
            quality,
        )
        await self._store.submit(measurement)

    async def expire_advices(self) -> list[Advice]:
        """Close the open advices past their window (audited); returns those closed."""
        closed: list[Advice] = await self._store.submit(ExpireAdvices())
        for advice in closed:
            _notify(self._advice_listeners, advice, "advice")
        return closed

    async def keep_advices(self, every_s: float = 60.0) -> None:
        """Expire advices every `every_s` seconds, until cancelled (a service task). An
        unreachable ledger is retried next time: an advice past its window matches
        nothing meanwhile, so a late expiry changes no booking."""
        while True:
            await asyncio.sleep(every_s)
            try:
                closed = await self.expire_advices()
            except LedgerUnavailable as exc:
                log.warning("advice_expiry_failed", error=str(exc))
                continue
            for advice in closed:
                log.info(
                    "advice_closed",
                    advice=advice.id,
                    unit=advice.unit,
                    state=str(advice.state),
                    ref=advice.ref,
                )

    async def set_lot_quality(self, request: LotQualityRequest) -> PostingResult:
        """Set a lot's properties, retest and expiry dates and certificate (audited):
        `lot:<id>` with the lot as it is now, or `request:<id>` where a `master-data`
        signature policy holds the change (the lot is then unchanged)."""
        request.check()
        result: PostingResult = await self._store.submit(request)
        return self._posted(result)

    async def expire_lots(self, on: date | None = None) -> list[PostingResult]:
        """Released lots past their expiry become `expired` (source system, audited)."""
        results: list[PostingResult] = await self._store.submit(
            ExpireLots(on or today(self._clock))
        )
        for result in results:
            self._posted(result)
        return results

    async def keep_lots(self, every_s: float = 60.0) -> None:
        """Expire released lots past their expiry every `every_s` seconds, until
        cancelled (a service task): an expired lot is refused for issue at once anyway,
        this makes its status say so, within a minute."""
        while True:
            await asyncio.sleep(every_s)
            try:
                expired = await self.expire_lots()
            except LedgerUnavailable as exc:
                log.warning("lot_expiry_failed", error=str(exc))
                continue
            for result in expired:
                lot = result.movement.lot if result.movement else "?"
                log.info("lot_expired", lot=lot, movement=result.movement_id)

    async def record_event(self, event: AuditEvent) -> None:
        """Append a non-movement event (e.g. a denied method call) to the audit trail."""
        await self._store.submit(event)

    # -- reads -----------------------------------------------------------------

    async def balances(
        self,
        unit: str | None = None,
        lot: str | None = None,
        material: str | None = None,
        *,
        units: Collection[str] = (),
        lots: Collection[str] = (),
    ) -> list[Balance]:
        """Balances matching every filter given (`units`/`lots`: any of these)."""
        return await self._store.reader.balances(unit, lot, material, units=units, lots=lots)

    async def history(
        self,
        unit: str | None = None,
        lot: str | None = None,
        since: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        *,
        newest_first: bool = False,
    ) -> list[Movement]:
        """Movements in posting order (`newest_first`: the newest first, so that `limit`
        keeps the newest)."""
        return await self._store.reader.history(
            unit, lot, since, after_seq, limit, newest_first=newest_first
        )

    async def last_seq(self) -> int:
        """The cursor of the newest movement (every writer's); 0 for an empty ledger."""
        return await self._store.reader.last_seq()

    async def export(self, after_seq: int = 0, limit: int | None = None) -> list[Movement]:
        """Movements after cursor `after_seq`, never skipping one that commits later.

        With several writers (PostgreSQL), a movement can commit after one with a
        higher sequence number. The export stops before a sequence gap until the
        gap is older than EXPORT_SETTLE, so a consumer resuming from the last
        cursor it saw never misses a movement.
        """
        movements = await self._store.reader.history(after_seq=after_seq, limit=limit)
        horizon = format_timestamp(self._clock.now() - EXPORT_SETTLE)
        return settled_prefix(movements, after_seq, horizon)

    async def movement(self, movement_id: str) -> Movement:
        found = await self._store.reader.movement(movement_id)
        if found is None:
            raise UnknownMovement(f"movement {movement_id} does not exist")
        return found

    async def movements(self, ids: Collection[str]) -> list[Movement]:
        """The movements with these ids (unknown ones left out), in posting order."""
        return await self._store.reader.movements(ids)

    async def audit_records(
        self,
        object_type: str | None = None,
        object_id: str | None = None,
        since: int | None = None,
        user: str | None = None,
        limit: int | None = None,
        *,
        since_time: str | None = None,
        until_time: str | None = None,
        with_movements: bool = False,
    ) -> list[tuple[int, AuditRecord]]:
        """The audit records of one object (`object_type` as stored: lot, movement,
        advice, material, storage_unit, request, ...; `object_id` its id), or of all,
        the oldest first, each with its cursor: after cursor `since` (None: from the
        start), at or after the timestamp `since_time` and at or before `until_time`, by
        `user`, at most `limit`.
        `with_movements`: a lot's or storage unit's records include those of the
        movements booked to it (receipts, draws, status changes, reversals).

        A cursor is the record's position in the trail (the order records were
        appended). With several writers on one database, a record may commit after
        one with a higher cursor: a reader paging by cursor while writers write can
        pass it (the movements' export avoids that; the audit trail is for reading)."""
        found = await self._store.reader.audit_records(
            object_type,
            object_id,
            after=since or 0,
            since=since_time,
            until=until_time,
            user=user,
            limit=limit,
            with_movements=with_movements,
        )
        if object_type != "movement" or object_id is None:
            return found
        # A movement posted on signatures: its request's records (held, each signature,
        # posted) belong to it, so a reviewer sees who signed what with it.
        posted = await self._store.reader.movement(object_id)
        request = posted.details.get("request") if posted is not None else None
        if not isinstance(request, str):
            return found
        signed = await self._store.reader.audit_records(
            "request", request, after=since or 0, since=since_time, until=until_time, user=user
        )
        merged = sorted({cursor: record for cursor, record in [*found, *signed]}.items())
        return merged[:limit] if limit is not None else merged

    async def trace(self, lot: str, *, forward: bool) -> list[GenealogyLink]:
        return await self._store.reader.genealogy(lot, forward=forward)

    async def lot_links(self, lots: Collection[str] | None = None) -> list[GenealogyLink]:
        """The direct parent/child edges of `lots` (all edges when None), with quantities."""
        return await self._store.reader.lot_links(lots)

    async def mass_balance(self, links: Sequence[GenealogyLink]) -> list[MassCheck]:
        """For each movement of `links` that made a lot: all its inputs (not only those
        a trace reached) against the quantity it booked."""
        ids = sorted({link.movement_id for link in links})
        inputs = await self._store.reader.inputs_of(ids)
        made = [await self._store.reader.movement(movement_id) for movement_id in ids]
        return mass_checks(inputs, {m.id: m.quantity for m in made if m is not None})

    async def lots(self, lot: str | None = None, *, ids: Collection[str] = ()) -> list[Lot]:
        """Lots, all or `lot`, or those in `ids`."""
        return await self._store.reader.lots(lot, ids=ids)

    async def materials(self) -> list[MaterialDefinition]:
        return await self._store.reader.materials()

    async def storage_units(self) -> list[StorageUnit]:
        return await self._store.reader.storage_units()

    async def current_lot(self, unit: str) -> str | None:
        return await self._store.reader.current_lot(unit)

    async def current_lots(self) -> dict[str, str]:
        """`current_lot` of every storage unit that has one (unit -> lot), in one read."""
        return dict(await self._store.reader.current_lots())

    async def last_derived(self, unit: str) -> Movement | None:
        """The unit's last PLC-derived movement: where its measurement pipeline resumes."""
        return await self._store.reader.last_derived(unit)

    async def mass_balance_report(
        self, start: str, end: str, unit: str | None = None
    ) -> list[BalanceLine]:
        """The period mass balance from `start` up to (not including) `end`, ledger
        timestamps: per unit and material, opening, the movements by kind, closing, and
        the last good measurement at or before `end` (see domain.mass_balance). Reads
        every movement before `end` (of `unit` when given)."""
        if not start < end:
            raise ValidationError(f"the period must start before it ends ({start} to {end})")
        movements = await self._store.reader.history(unit, before=end)
        measured = await self._store.reader.latest_measurements(until=end, good=True)
        metered = await self._store.reader.meter_flows(since=start, until=end)
        return mass_balance(movements, start, measured, unit=unit, metered=metered)

    async def reconciliation(self) -> list[ReconciliationLine]:
        """Book quantity per storage unit next to the last measured quantity."""
        units = await self.storage_units()
        materials = {m.id: m for m in await self.materials()}
        book: dict[str, Decimal] = {}
        for b in await self.balances():
            book[b.unit] = book.get(b.unit, Decimal(0)) + b.quantity
        measured = await self._store.reader.latest_measurements()
        lines = []
        for unit in units:
            material = materials.get(unit.material) if unit.material else None
            uom = material.base_uom if material else unit.capacity_uom
            density = material.density_kg_per_l if material else None
            try:
                capacity = convert(unit.capacity, unit.capacity_uom, uom, density)
            except ValidationError:
                capacity = Decimal(0)
            m = measured.get(unit.id)
            lines.append(
                ReconciliationLine(
                    unit=unit.id,
                    material=unit.material,
                    uom=uom,
                    book=book.get(unit.id, Decimal(0)),
                    measured=None if m is None else m.quantity,
                    measured_at=None if m is None else m.timestamp,
                    capacity=capacity,
                )
            )
        return lines

    async def advices(
        self, *, state: str | None = None, unit: str | None = None, limit: int | None = None
    ) -> list[Advice]:
        """Advices (manual changes of measured units), the newest first."""
        return await self._store.reader.advices(state=state, unit=unit, limit=limit)

    async def advice(self, advice_id: str) -> Advice:
        found = await self._store.reader.advices(advice_id=advice_id.removeprefix(ADVICE_PREFIX))
        if not found:
            raise UnknownAdvice(f"advice {advice_id} does not exist")
        return found[0]

    async def set_signature_policies(
        self,
        policies: Sequence[SignaturePolicy],
        *,
        user: str = "system",
        reason: str = "configuration",
    ) -> bool:
        """Store the `[[signatures]]` policies every writer of this ledger holds requests
        by (the configuration's whole set; audited); returns whether they changed."""
        check_key("user", user, max_length=ID_MAX)
        check_free_text("reason", reason)
        changed: bool = await self._store.submit(
            SignaturePoliciesUpdate(tuple(policies), user, reason)
        )
        return changed

    async def request_period_close(
        self,
        start: str,
        end: str,
        *,
        user: str,
        reason: str,
        idempotency_key: str | None = None,
        source: Source = Source.MANUAL,
    ) -> PostingResult:
        """Ask to close the period [start, end) (ledger timestamps, the end passed): its
        balance report is computed now and its SHA-256 held for signing; returns the
        `request:` id. Signed (`approve ... --meaning reviewed`), the period is closed
        and nothing posts with a time inside it any more."""
        check_identifier("user", user)
        _require_reason(reason)
        _check_key(idempotency_key)
        report = await self.mass_balance_report(start, end)
        digest = hashlib.sha256(
            canonical_json([line.document() for line in report]).encode()
        ).hexdigest()
        request = ClosePeriodRequest(start, end, digest, reason, user, source, idempotency_key)
        result: PostingResult = await self._store.submit(request, request_fingerprint(request))
        return self._posted(result)

    async def record_meter_flow(self, flow: MeterFlow) -> None:
        """Keep what a unit's flow meter counted (meter versus gauge; not a movement)."""
        check_identifier("storage unit", flow.unit)
        if not flow.quantity.is_finite() or flow.quantity < 0:
            raise ValidationError(f"a meter flow is a quantity >= 0, not {flow.quantity}")
        await self._store.submit(flow)

    async def last_meter_flows(self) -> dict[StorageUnitId, MeterFlow]:
        return await self._store.reader.last_meter_flows()

    async def closed_periods(self) -> list[ClosedPeriod]:
        return await self._store.reader.closed_periods()

    async def sign(self, request: SignRequest) -> SignOutcome:
        """Record a re-authenticated signer's approval or rejection of a pending request
        (`inventory_core.signing` re-authenticates); the last approval posts it."""
        check_identifier("request", request.request_id.removeprefix(REQUEST_PREFIX))
        check_identifier("user", request.signer)
        check_free_text("reason", request.reason)
        check_free_text("meaning", request.meaning)
        outcome: SignOutcome = await self._store.submit(request)
        if outcome.posted is not None:
            self._posted(outcome.posted)
        _notify(self._request_listeners, outcome.request.request_id, "request")
        return outcome

    async def pending_requests(
        self, *, state: str | None = RequestState.PENDING, limit: int | None = None
    ) -> list[PendingRequest]:
        """Requests held for signatures (by default those still waiting), oldest first."""
        return await self._store.reader.pending_requests(state=state, limit=limit)

    async def pending_request(self, request_id: str) -> PendingRequest:
        found = await self._store.reader.pending_requests(
            request_id=request_id.removeprefix(REQUEST_PREFIX)
        )
        if not found:
            raise UnknownRequest(f"no pending request {request_id}")
        return found[0]

    async def verify(self) -> VerifyReport:
        return await self._store.reader.verify()

    async def chain_heads(self) -> dict[str, tuple[int, str]]:
        return await self._store.reader.chain_heads()


def _notify(listeners: Sequence[Callable[[T], None]], item: T, failure: str) -> None:
    """Hand `item` to each listener; `failure` names the kind in the log if one raises."""
    for listener in listeners:
        try:
            listener(item)
        except Exception:  # a broken listener must not fail an acknowledged posting
            log.exception("listener_failed", listener=failure, item=str(getattr(item, "id", item)))


def settled_prefix(movements: Sequence[Movement], after_seq: int, horizon: str) -> list[Movement]:
    """The movements up to the first sequence gap newer than `horizon` (a commit may
    still fill it); older gaps are rolled-back transactions and are passed."""
    settled: list[Movement] = []
    previous = after_seq
    for m in movements:
        if m.seq != previous + 1 and m.timestamp > horizon:
            break
        settled.append(m)
        previous = m.seq
    return settled


def validate_posting(request: PostingRequest) -> PostingRequest:
    """Stateless checks and normalisation of a posting; raises ValidationError."""
    if request.kind not in QUANTITY_KINDS:
        raise ValidationError(
            f"kind {request.kind!r} cannot be posted with a quantity "
            "(use reverse or lot-status for those)"
        )
    check_identifier("material", request.material, max_length=MASTER_ID_MAX)
    if request.lot is not None:
        check_identifier("lot", request.lot)
    elif request.kind not in DRAW_KINDS and (
        request.source is not Source.PLC or (request.from_unit is None) == (request.to_unit is None)
    ):
        raise ValidationError(
            f"{request.kind} needs a lot (only a draw, which the unit's lot handling "
            "allocates, or a PLC movement of one unit may omit it)"
        )
    check_identifier("user", request.user)
    _check_key(request.idempotency_key)
    check_free_text("reason", request.reason)
    quantity = parse_quantity(request.quantity)
    check_identifier("unit of measure", request.uom, max_length=UOM_MAX)
    uom = canonical_uom(request.uom)
    kind = request.kind
    units = {"from": request.from_unit, "to": request.to_unit}
    for label, unit in units.items():
        if unit is not None:
            check_identifier(f"{label} unit", unit, max_length=MASTER_ID_MAX)
    needs: dict[MovementKind, tuple[bool, bool]] = {
        MovementKind.RECEIPT: (False, True),
        MovementKind.PRODUCTION: (False, True),
        MovementKind.ISSUE: (True, False),
        MovementKind.SCRAP: (True, False),
        MovementKind.TRANSFER: (True, True),
        MovementKind.ADJUSTMENT: (False, True),
        MovementKind.COUNT: (False, True),
    }
    need_from, need_to = needs[kind]
    if need_from != (request.from_unit is not None):
        raise ValidationError(
            f"{kind} needs a source unit (from_unit)"
            if need_from
            else f"{kind} takes no source unit (from_unit)"
        )
    if need_to != (request.to_unit is not None):
        raise ValidationError(
            f"{kind} needs a target unit (to_unit)"
            if need_to
            else f"{kind} takes no target unit (to_unit)"
        )
    if kind is MovementKind.TRANSFER and request.from_unit == request.to_unit:
        raise ValidationError("transfer source and target units are the same")
    if kind is MovementKind.ADJUSTMENT:
        if quantity == 0:
            raise ValidationError("adjustment quantity must not be zero")
    elif kind is MovementKind.COUNT:
        if quantity < 0:
            raise ValidationError("counted quantity must not be negative")
    elif quantity <= 0:
        raise ValidationError(f"{kind} quantity must be positive, got {quantity}")
    if kind in REASON_REQUIRED and not request.reason.strip():
        raise ValidationError(f"{kind} needs a reason")
    try:
        canonical_json(request.details)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"details must be JSON values (text, numbers, lists): {exc}"
        ) from None
    if request.consumed_lots and kind is not MovementKind.PRODUCTION:
        raise ValidationError("consumed lots apply to production only")
    for lot in request.consumed_lots:
        check_identifier("consumed lot", lot)
    consumed = _check_consumption(request)
    if quantity is request.quantity and uom == request.uom and consumed is None:
        return request
    return replace(
        request,
        quantity=quantity,
        uom=uom,
        consumed_quantities=consumed or request.consumed_quantities,
    )


def _check_consumption(request: PostingRequest) -> tuple[Decimal, ...] | None:
    """A production's consumed quantities and units: one per consumed lot (or none at
    all), each quantity positive; the quantities normalised (None: nothing to do)."""
    lots, quantities, units = (
        request.consumed_lots,
        request.consumed_quantities,
        request.consumed_units,
    )
    if units and not quantities:
        raise ValidationError("consumed units need the consumed quantities")
    if not quantities:
        return None
    if len(quantities) != len(lots) or (units and len(units) != len(lots)):
        raise ValidationError(
            f"{len(lots)} consumed lots need as many consumed quantities (got "
            f"{len(quantities)}) and consumed units (got {len(units)}, or none)"
        )
    if len(set(zip(lots, units or (None,) * len(lots), strict=True))) != len(lots):
        raise ValidationError("a consumed lot is named twice for the same unit")
    parsed = []
    for lot, value in zip(lots, quantities, strict=True):
        number = parse_quantity(value)
        if number <= 0:
            raise ValidationError(f"consumed quantity of lot {lot} must be positive, got {number}")
        parsed.append(number)
    for unit in units:
        if unit is not None:
            check_identifier("consumed unit", unit, max_length=MASTER_ID_MAX)
    return tuple(parsed)


def validate_master_data(
    materials: Sequence[MaterialDefinition], units: Sequence[StorageUnit]
) -> None:
    """The text rules for master data (config, imports); raises InvalidText naming the
    object and the field."""
    for m in materials:
        check_identifier("material id", m.id, max_length=MASTER_ID_MAX)
        where = f"material {m.id}"
        check_free_text(f"{where}: description", m.description)
        check_identifier(f"{where}: base unit of measure", m.base_uom, max_length=UOM_MAX)
        if m.material_class is not None:
            check_key(f"{where}: class", m.material_class, max_length=MASTER_ID_MAX)
    for u in units:
        check_identifier("storage unit id", u.id, max_length=MASTER_ID_MAX)
        where = f"storage unit {u.id}"
        check_identifier(f"{where}: site", u.site, max_length=MASTER_ID_MAX)
        check_identifier(f"{where}: area", u.area, max_length=MASTER_ID_MAX)
        check_identifier(f"{where}: capacity unit", u.capacity_uom, max_length=UOM_MAX)
        if u.material is not None:
            check_identifier(f"{where}: material", u.material, max_length=MASTER_ID_MAX)
        check_free_text(f"{where}: description", u.description)


def _require_reason(reason: str) -> None:
    if not reason.strip():
        raise ValidationError("reason is missing")
    check_free_text("reason", reason)


def _check_key(key: str | None) -> None:
    if key is None:
        return
    check_key("idempotency key", key)
    if key.startswith("auto:"):
        raise ValidationError(
            "idempotency key must not start with 'auto:' (the ledger's own keys do)"
        )


@asynccontextmanager
async def open_ledger(
    url: str,
    *,
    writer_id: str,
    batch_max: int = 64,
    migrate: bool = False,
    clock: Clock | None = None,
    on_commit: Callable[[int, float], None] | None = None,
    capacity_margin_pct: Decimal = DEFAULT_CAPACITY_MARGIN_PCT,
    lease: WriterLease | None = None,
    writer_process: bool = False,
) -> AsyncIterator[Ledger]:
    """Open the ledger at `url` (migrating the schema when asked) and close it on exit.

    `capacity_margin_pct`: how far above its capacity a manual posting may bring a unit's
    book (CapacityExceeded beyond it; PLC-derived movements are never refused for it).

    With `lease` (a process that books PLC measurements), `writer_id` and the lease's
    measured units are claimed for this process first, or WriterIdInUse / UnitsOwned
    is raised naming the live holder; every batch then checks, in its transaction, that
    the lease is still this process's (run `Ledger.keep_lease` to renew it), and the
    lease is released on exit. On exit, every posting already submitted is committed
    before the writer stops.

    `writer_process` (a SQLite file; the service): the writer runs in a child process
    of its own (`inventory_core.store.writer_process`), so that serving clients and
    committing batches do not share one interpreter lock.
    """
    clock = clock or SystemClock()
    store = LedgerStore(
        url,
        writer_id=writer_id,
        batch_max=batch_max,
        now=lambda: format_timestamp(clock.now()),
        today=lambda: today(clock),
        on_commit=on_commit,
        create=migrate,
        capacity_margin_pct=capacity_margin_pct,
        lease=lease,
        writer_process=writer_process,
    )
    try:
        await store.open(migrate=migrate)
    except InventoryError:
        await store.close()
        raise
    try:
        yield Ledger(store, clock)
    finally:
        await store.close()

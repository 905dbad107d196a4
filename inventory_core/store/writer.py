"""The single writer: group commit of postings, with rules applied under lock.

Callers submit commands and await a future. One task drains the queue into
batches (up to `batch_max`) and hands each batch, as one synchronous unit of
work, to a `TransactionRunner` (SQLite: a dedicated thread; PostgreSQL: the
async connection via `run_sync`). Inside one transaction (SQLite: BEGIN
IMMEDIATE; PostgreSQL: row locks taken in a fixed order) it loads exactly the
rows the batch touches, lets the pure `Planner` apply the rules, writes every
change plus the audit chain and commits; only then are the futures resolved,
so an acknowledged posting is durable. A rejected command fails alone; a
conflict with another writer rolls the batch back and replays it; a batch the
database refuses (a value it cannot store, a constraint or trigger) is bisected
until the one request at fault fails alone, with RequestRefused; only an
unreachable database fails the batch with LedgerUnavailable.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import BindParameter, CursorResult, Select, Table, bindparam, select, tuple_, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from inventory_core.domain.advices import ADVICE_PREFIX, Advice
from inventory_core.domain.audit import GENESIS_HASH, make_record
from inventory_core.domain.errors import InventoryError, LedgerUnavailable, RequestRefused
from inventory_core.domain.lot_quality import ExpireLots, LotQualityRequest
from inventory_core.domain.meter import MeterFlow
from inventory_core.domain.model import (
    DRAW_KINDS,
    AnnounceLots,
    AuditEvent,
    Booking,
    ExpireAdvices,
    LotHandling,
    LotId,
    LotStatusRequest,
    MasterDataUpdate,
    MaterialDefinition,
    MaterialId,
    Measurement,
    MovementId,
    MovementKind,
    PostingRequest,
    ReversalRequest,
    Source,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.posting import (
    DEFAULT_CAPACITY_MARGIN_PCT,
    MOVEMENT_COLUMNS,
    Changes,
    LedgerState,
    Planner,
    current_lot,
)
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    AdviceVarianceReview,
    ClosedPeriod,
    ClosePeriodRequest,
    RequestState,
    Signature,
    SignaturePoliciesUpdate,
    SignaturePolicy,
    SignRequest,
    policies_from_json,
    policies_json,
)
from inventory_core.domain.text import shown
from inventory_core.domain.units import format_decimal
from inventory_core.log import get_logger
from inventory_core.store import lease as leases
from inventory_core.store import tables as t
from inventory_core.store.engine import TransactionRunner
from inventory_core.store.reader import current_lot_of
from inventory_core.store.rows import (
    advice_from_row,
    advice_to_row,
    audit_to_row,
    closed_period_from_row,
    closed_period_to_row,
    lot_from_row,
    lot_to_row,
    material_from_row,
    material_to_row,
    movement_from_row,
    pending_request_from_row,
    pending_request_to_row,
    quality_to_row,
    signature_from_row,
    signature_to_row,
    unit_from_row,
    unit_to_row,
)

log = get_logger(__name__)

Request = (
    AnnounceLots
    | PostingRequest
    | ReversalRequest
    | LotStatusRequest
    | MasterDataUpdate
    | Measurement
    | AuditEvent
    | ExpireAdvices
    | SignRequest
    | SignaturePoliciesUpdate
    | ClosePeriodRequest
    | LotQualityRequest
    | ExpireLots
    | MeterFlow
)
MAX_ATTEMPTS = 6
MASTER_REVISION = "master_revision"
SIGNATURE_POLICIES = "signature_policies"  # ledger_meta: the policies, JSON
_STOP = object()


# Requests a policy may hold that are not postings: the same one again while it waits
# for signatures is that request (LedgerState.waiting).
_HOLDABLE = (
    AnnounceLots, ClosePeriodRequest, LotQualityRequest, LotStatusRequest, MasterDataUpdate,
    ReversalRequest,
)  # fmt: skip


class _StaleHead(Exception):
    """This writer's chain head moved under us (another process shares the writer id)."""


@dataclass(slots=True)
class Command:
    request: Request
    digest: str
    future: asyncio.Future[Any] = field(repr=False)


class BatchWriter:
    """Owns the write connection and the writer's audit chain."""

    def __init__(
        self,
        runner: TransactionRunner,
        *,
        writer_id: str,
        batch_max: int,
        now: Callable[[], str],
        today: Callable[[], date],
        on_commit: Callable[[Sequence[Command], float], None] | None = None,
        capacity_margin_pct: Decimal = DEFAULT_CAPACITY_MARGIN_PCT,
    ) -> None:
        self._runner = runner
        # The `[[signatures]]` policies, stored in the ledger with the master data.
        self._signatures: tuple[SignaturePolicy, ...] = ()
        self._closed_periods: list[ClosedPeriod] = []  # with the master data, too
        self._writer_id = writer_id
        self._capacity_margin_pct = capacity_margin_pct
        self._batch_max = batch_max
        self._now = now
        self._today = today
        self._on_commit = on_commit
        self._queue: asyncio.Queue[Command | object] = asyncio.Queue()
        # Master data cached between batches, reloaded when its revision row changes.
        self._master_revision: str | None = None
        self._materials: dict[MaterialId, MaterialDefinition] = {}
        self._units: dict[StorageUnitId, StorageUnit] = {}
        # Head of this writer's audit chain as last committed; checked on update (optimistic).
        self._head: tuple[int, str] | None = None
        self._pending_head: tuple[int, str] | None = None
        # SQLite: each unit's book over all lots as last committed, for the capacity
        # check; kept while no other connection has written (PRAGMA data_version), and
        # updated from the batches this writer commits (never on PostgreSQL, where other
        # writers book into the same units).
        self._unit_totals: dict[StorageUnitId, Decimal] = {}
        self._pending_totals: dict[StorageUnitId, Decimal | None] | None = None
        self._data_version: object = None  # SQLite's PRAGMA data_version at the last batch
        # PostgreSQL: balance rows this transaction created only to lock them.
        self._placeholders: set[tuple[str, str]] = set()
        self._selects: dict[tuple[str, int], tuple[str, list[tuple[int, object]]]] = {}
        self._statements: dict[
            tuple[str, tuple[str, ...], tuple[str, ...]], tuple[str, tuple[str, ...]]
        ] = {}
        self._head_sql: str | None = None
        self._task: asyncio.Task[None] | None = None
        # The writer lease's instance (`fence_with`): checked first in every batch's
        # transaction, and a lease no longer ours fails the whole batch, nothing written.
        self._lease_instance: str | None = None
        self._postgres = runner.dialect.name == "postgresql"
        self._insert = _postgres_insert() if self._postgres else sqlite_insert

    # -- lifecycle -----------------------------------------------------------

    def fence_with(self, lease_instance: str) -> None:
        """From now on, every batch commits only while this writer id's lease is held by
        `lease_instance` (WriterLeaseLost otherwise)."""
        self._lease_instance = lease_instance

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def stop(self) -> None:
        """Finish every command already submitted, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None

    async def submit(self, request: Request, digest: str = "") -> Any:
        if self._task is None or self._task.done():
            raise LedgerUnavailable("the ledger writer is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Command(request, digest, future))
        return await future

    async def run_batch(self, commands: list[Command]) -> None:
        """Commit `commands` as one batch and settle their futures (the writer process
        drives batches so, instead of `start` and `submit`)."""
        await self._process(commands)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self._batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            commands = [c for c in batch if isinstance(c, Command)]
            await self._process(commands)

    # -- one batch -------------------------------------------------------------

    async def _process(self, batch: list[Command]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for attempt in range(MAX_ATTEMPTS):
            self._pending_head = self._pending_totals = None
            try:
                outcomes = await self._runner.run(lambda conn: self._apply(conn, batch))
            except _StaleHead:
                self._forget()  # another process appended to this chain: reread, replay
                continue
            except (IntegrityError, OperationalError, DBAPIError) as exc:
                self._forget()  # reread what is cached on the next attempt
                refused = _refused(exc)
                if not refused and attempt + 1 < MAX_ATTEMPTS and _retryable(exc):
                    log.info("ledger_batch_retry", attempt=attempt + 1, error=type(exc).__name__)
                    await asyncio.sleep(0.005 * 2**attempt)
                    continue
                if refused or isinstance(exc, IntegrityError):
                    # One request's values (or a conflict that outlived the retries), not
                    # an outage: the others commit, that one fails alone.
                    await self._isolate(batch, exc)
                    return
                error = LedgerUnavailable(f"ledger write failed: {_short(exc)}")
                for command in batch:
                    settle(command.future, error)
                return
            except UnicodeError as exc:  # a value the driver cannot encode: the request's
                self._forget()
                await self._isolate(batch, exc)
                return
            except OSError as exc:  # the database cannot be reached (e.g. connection refused)
                self._forget()
                error = LedgerUnavailable(f"ledger write failed: {exc}")
                for command in batch:
                    settle(command.future, error)
                return
            except Exception as exc:  # a bug, not a domain error: isolate it, keep the writer
                self._forget()
                if len(batch) > 1:
                    for command in batch:
                        await self._process([command])
                    return
                log.exception("ledger_write_failed", writer=self._writer_id)
                settle(batch[0].future, LedgerUnavailable(f"ledger write failed: {exc}"))
                return
            if self._pending_head is not None:
                self._head = self._pending_head
            if self._pending_totals is not None:
                for unit_id, total in self._pending_totals.items():
                    if total is None:
                        self._unit_totals.pop(unit_id, None)  # booked, not summed: read again
                    else:
                        self._unit_totals[unit_id] = total
            break
        else:
            for command in batch:
                settle(command.future, LedgerUnavailable("ledger write kept conflicting"))
            return
        for command, outcome in zip(batch, outcomes, strict=True):
            settle(command.future, outcome)
        if self._on_commit is not None:
            self._on_commit(batch, loop.time() - started)

    def _forget(self) -> None:
        """After a failed attempt: what this writer caches is read again."""
        self._head = self._master_revision = None
        self._unit_totals.clear()

    async def _isolate(self, batch: list[Command], exc: BaseException) -> None:
        """A batch the database refused: bisect it until the request at fault stands
        alone; the other halves commit as usual. That request alone fails, with
        RequestRefused (a user error, audited as a rejection); the ledger stays up."""
        if len(batch) > 1:
            middle = len(batch) // 2
            await self._process(batch[:middle])
            await self._process(batch[middle:])
            return
        command = batch[0]
        reason = shown(_short(exc))
        error = RequestRefused(f"the ledger database refused this request: {reason}")
        log.info(  # the caller gets the error and reports it (OPC UA, CLI, PLC bridge)
            "ledger_request_refused",
            writer=self._writer_id,
            request=type(command.request).__name__,
            error=reason,
        )
        await self._audit_refused(command.request, error)
        settle(command.future, error)

    async def _audit_refused(self, request: Request, error: RequestRefused) -> None:
        """Audit a request the database refused, as the planner audits one its rules
        reject (failures belong in the trail), in a transaction of its own."""
        if not isinstance(request, PostingRequest | ReversalRequest | LotStatusRequest):
            return

        def work(conn: Connection) -> None:
            self._placeholders = set()
            changes = Changes()
            stamp = self._now()
            planner = Planner(
                LedgerState(), changes, writer=self._writer_id, now=lambda: stamp, today=self._today
            )
            planner.rejected(request, error)
            self._write(conn, changes)

        for _ in range(2):  # once more if another process moved this chain's head
            self._pending_head = None
            try:
                await self._runner.run(work)
            except _StaleHead:
                self._head = None
                continue
            except Exception as exc:  # the refusal stands; only its audit record is missing
                self._head = None
                log.error(
                    "ledger_refusal_not_audited", writer=self._writer_id, error=shown(_short(exc))
                )
                return
            if self._pending_head is not None:
                self._head = self._pending_head
            return

    def _apply(self, conn: Connection, batch: list[Command]) -> list[object]:
        if self._lease_instance is not None:
            refused = leases.fence(conn, self._writer_id, self._lease_instance)
            if refused is not None:
                return [refused] * len(batch)
        state = self._load_state(conn, batch)
        changes = Changes()
        stamp = self._now()  # one commit, one timestamp; `seq` keeps the order within it
        planner = Planner(
            state,
            changes,
            writer=self._writer_id,
            now=lambda: stamp,
            today=self._today,
            capacity_margin_pct=self._capacity_margin_pct,
            signatures=self._signatures,
        )
        outcomes: list[object] = []
        for command in batch:
            request = command.request
            try:
                if isinstance(request, PostingRequest):
                    result: object = planner.post(request, command.digest)
                elif isinstance(request, ReversalRequest):
                    result = planner.reverse(request, command.digest)
                elif isinstance(request, LotStatusRequest):
                    result = planner.set_lot_status(request, command.digest)
                elif isinstance(request, MasterDataUpdate):
                    result = planner.master_data(request)
                elif isinstance(request, Measurement):
                    planner.measurement(request)
                    result = None
                elif isinstance(request, ExpireAdvices):
                    result = planner.expire_advices(request)
                elif isinstance(request, AnnounceLots):
                    result = planner.announce_lots(request)
                elif isinstance(request, SignRequest):
                    result = planner.sign(request)
                elif isinstance(request, SignaturePoliciesUpdate):
                    result = planner.signature_policies(request)
                elif isinstance(request, ClosePeriodRequest):
                    result = planner.close_period(request, command.digest)
                elif isinstance(request, LotQualityRequest):
                    result = planner.set_lot_quality(request)
                elif isinstance(request, ExpireLots):
                    result = planner.expire_lots(request)
                elif isinstance(request, MeterFlow):
                    planner.changes.meter_flows.append(request)
                    result = None
                else:
                    planner.audit_event(request)
                    result = None
            except InventoryError as exc:
                result = exc
                if isinstance(request, PostingRequest | ReversalRequest | LotStatusRequest):
                    planner.rejected(request, exc)
                elif isinstance(request, SignRequest):
                    planner.signature_refused(request, exc)
            outcomes.append(result)
        self._write(conn, changes)
        if not self._postgres:  # the units' totals after this batch, cached once it commits
            changed = {unit_id for unit_id, _lot in changes.balances} | set(state.unit_totals)
            self._pending_totals = {u: state.unit_totals.get(u) for u in changed}
        return outcomes

    def _load_state(self, conn: Connection, batch: list[Command]) -> LedgerState:
        """Read (and on PostgreSQL lock) every row the batch's rules depend on."""
        self._placeholders = set()
        self._refresh_master_data(conn)
        state = LedgerState(
            materials=dict(self._materials),
            units=dict(self._units),
            closed_periods=list(self._closed_periods),
        )

        requests = [c.request for c in batch]
        # A signature that completes a request posts it: its rows are read as for a
        # request of the batch.
        requests += self._load_requests(conn, requests, state)
        reversal_ids = [r.movement_id for r in requests if isinstance(r, ReversalRequest)]
        if reversal_ids:
            rows = conn.execute(select(t.movements).where(t.movements.c.id.in_(reversal_ids)))
            for row in rows.mappings():
                original = movement_from_row(row)
                state.movements[original.id] = original
            rows = conn.execute(
                select(t.movements.c.reverses).where(t.movements.c.reverses.in_(reversal_ids))
            )
            state.reversed_ids.update(MovementId(r) for (r,) in rows)

        current_units = {
            r.unit for r in requests if isinstance(r, PostingRequest) and r.lot is None
        }
        advices = self._load_advices(conn, requests, state)
        current_units.update(a.other_unit for a in advices if a.other_unit is not None)
        state.current_lots = self._current_lots(conn, sorted(u for u in current_units if u))

        # The lots present in a unit matter where a draw splits over them, the unit's
        # current lot is picked, or its lot handling (blend, single) looks at them; a
        # receipt of a named lot into a fifo/lifo/mixed unit needs none of them, so a
        # bin holding hundreds of lots costs its postings nothing.
        touched: set[StorageUnitId] = {u for u in current_units if u}
        for r in requests:
            if isinstance(r, PostingRequest):
                touched.update(u for u in (r.from_unit, *r.consumed_units) if u is not None)
                if r.to_unit is not None and (r.lot is None or self._sees_present(r.to_unit)):
                    touched.add(r.to_unit)
        touched.update(a.other_unit for a in advices if a.other_unit is not None)
        touched.update(u for a in advices for u in a.consumed_units if u is not None)
        for original in state.movements.values():
            touched.update(u for u in (original.from_unit, original.to_unit) if u is not None)
        self._load_present(conn, sorted(touched), state)

        lot_ids: set[str] = {lot for lots in state.present.values() for lot in lots}
        pairs: dict[tuple[StorageUnitId, LotId], str] = {}
        for r in requests:
            if isinstance(r, PostingRequest):
                lot_ids.update(r.consumed_lots)
                self._consumed_pairs(r.consumed_lots, r.consumed_units, state, pairs)
                if r.lot is None:  # lots present (loaded above) or the current one
                    unit = r.from_unit if r.kind in DRAW_KINDS else r.unit
                    assert unit is not None
                    lot_id = current_lot(state, unit)
                else:
                    lot_id = r.lot
                lot_ids.add(lot_id)
                for unit in (r.from_unit, r.to_unit):
                    if unit is not None:
                        pairs[(unit, lot_id)] = r.material
            elif isinstance(r, LotStatusRequest | LotQualityRequest):
                lot_ids.add(r.lot)
            elif isinstance(r, ExpireLots):
                lot_ids.update(self._expiring(conn, r))
            elif isinstance(r, AnnounceLots):
                lot_ids.update(a.lot for a in r.lots)
        for advice in advices:  # what a measured change matching it books
            lot_ids.update(advice.consumed_lots)
            self._consumed_pairs(advice.consumed_lots, advice.consumed_units, state, pairs)
            if advice.lot is not None:
                lot_ids.add(advice.lot)
                for unit in (advice.unit, advice.other_unit):
                    if unit is not None:
                        pairs[(unit, advice.lot)] = advice.material
        for original in state.movements.values():
            lot_ids.add(original.lot)
            for unit in (original.from_unit, original.to_unit):
                if unit is not None:
                    pairs[(unit, original.lot)] = original.material

        if lot_ids:
            rows = self._select_in(
                conn,
                "lots",
                lambda ids: select(t.lots).where(t.lots.c.id.in_(ids)).order_by(t.lots.c.id),
                sorted(lot_ids),
                lock=True,
            )
            for row in rows.mappings():
                lot = lot_from_row(row)
                state.lots[lot.id] = lot
        if pairs:
            ordered = sorted(pairs)
            if self._postgres:  # materialise missing rows so they can be locked too
                inserted = conn.execute(
                    _postgres_insert()(t.balances)
                    .on_conflict_do_nothing()
                    .returning(t.balances.c.unit, t.balances.c.lot),
                    [
                        {"unit": u, "lot": lot, "material": pairs[(u, lot)], "quantity": "0"}
                        for u, lot in ordered
                    ],
                )
                self._placeholders = {(u, lot) for u, lot in inserted}
            b = t.balances
            rows = self._select_in(
                conn,
                "balances",
                lambda p: (
                    select(b.c.unit, b.c.lot, b.c.quantity, b.c.entered)
                    .where(
                        tuple_(b.c.unit, b.c.lot).in_(
                            [tuple_(u, lot) for u, lot in zip(p[::2], p[1::2], strict=True)]
                        )
                    )
                    .order_by(b.c.unit, b.c.lot)
                ),
                [value for pair in ordered for value in pair],
                lock=True,
                arity=2,
            )
            for unit, lot, quantity, entered in rows:
                key = (StorageUnitId(unit), LotId(lot))
                state.balances[key] = Decimal(quantity)
                state.entered[key] = entered

        # Manual postings into a unit are checked against its capacity: its book over all lots.
        # Not locked beyond the posting's own rows: a guard against typos, not an invariant.
        filled = sorted(
            {
                r.to_unit
                for r in requests
                if isinstance(r, PostingRequest) and r.source is not Source.PLC and r.to_unit
            }
        )
        # On SQLite the totals are kept between batches (see _unit_totals): a unit's
        # balances are summed once, not at every receipt into a bin holding many lots.
        state.unit_totals = {u: self._unit_totals[u] for u in filled if u in self._unit_totals}
        unread = [u for u in filled if u not in state.unit_totals]
        if unread:
            state.unit_totals.update(dict.fromkeys(unread, Decimal(0)))
            rows = self._select_in(
                conn,
                "unit_totals",
                lambda ids: select(t.balances.c.unit, t.balances.c.quantity).where(
                    t.balances.c.unit.in_(ids), t.balances.c.quantity != "0"
                ),
                unread,
            )
            for unit, quantity in rows:
                state.unit_totals[StorageUnitId(unit)] += Decimal(quantity)
        self._load_measured(conn, requests, state)

        keys = [
            r.idempotency_key
            for r in requests
            if isinstance(
                r, PostingRequest | ReversalRequest | LotStatusRequest | ClosePeriodRequest
            )
            and r.idempotency_key
        ]
        if keys:
            m = t.movements
            rows = self._select_in(
                conn,
                "keys",
                lambda p: select(m.c.idempotency_key, m.c.id, m.c.payload_hash, m.c.details).where(
                    m.c.idempotency_key.in_(p)
                ),
                keys,
            )
            for key, movement_id, digest, details in rows:
                parts = json.loads(details).get("parts", ()) if '"parts"' in details else ()
                state.keys[key] = (MovementId(movement_id), digest, tuple(map(MovementId, parts)))
        manual_keys = [
            r.idempotency_key
            for r in requests
            if isinstance(r, PostingRequest) and r.source is not Source.PLC and r.idempotency_key
        ]  # only a manual posting can have become an advice
        if manual_keys:
            a = t.advices
            rows = self._select_in(
                conn,
                "advice_keys",
                lambda p: select(a.c.idempotency_key, a.c.id, a.c.payload_hash).where(
                    a.c.idempotency_key.in_(p)
                ),
                manual_keys,
            )
            for key, advice_id, digest in rows:
                state.keys[key] = (MovementId(f"{ADVICE_PREFIX}{advice_id}"), digest, ())
        if self._signatures and any(isinstance(r, _HOLDABLE) for r in requests):
            pr = t.pending_requests  # few: those waiting for signatures (ix_..._state)
            rows = conn.execute(
                select(pr.c.payload_hash, pr.c.requested_by, pr.c.id).where(pr.c.state == "pending")
            )
            state.waiting = {(digest, user): request_id for digest, user, request_id in rows}
        if keys:  # a key whose request was held for signatures: the request's id
            pr = t.pending_requests
            rows = self._select_in(
                conn,
                "request_keys",
                lambda p: select(pr.c.idempotency_key, pr.c.id, pr.c.payload_hash).where(
                    pr.c.idempotency_key.in_(p)
                ),
                keys,
            )
            for key, request_id, digest in rows:
                state.keys[key] = (MovementId(f"{REQUEST_PREFIX}{request_id}"), digest, ())
        return state

    def _expiring(self, conn: Connection, request: ExpireLots) -> list[str]:
        """Released lots whose expiry is before the request's day (at most 500 a batch:
        the rest expire on the next round)."""
        lots = t.lots
        query = (
            select(lots.c.id)
            .where(lots.c.status == "released", lots.c.expiry < request.today.isoformat())
            .order_by(lots.c.id)
            .limit(500)
        )
        return [lot for (lot,) in conn.execute(query)]

    def _load_requests(
        self, conn: Connection, requests: Sequence[Request], state: LedgerState
    ) -> list[Request]:
        """The pending requests the batch signs, with their signatures (locked on
        PostgreSQL); returns the requests they hold."""
        ids = sorted(
            {
                r.request_id.removeprefix(REQUEST_PREFIX)
                for r in requests
                if isinstance(r, SignRequest)
            }
        )
        if not ids:
            return []
        pr, sg = t.pending_requests, t.signatures
        rows = (
            self._select_in(
                conn,
                "requests",
                lambda p: select(pr).where(pr.c.id.in_(p)).order_by(pr.c.id),
                ids,
                lock=True,
            )
            .mappings()
            .all()
        )
        signed: dict[str, list[Signature]] = {}
        for row in conn.execute(
            select(sg).where(sg.c.request_id.in_(ids)).order_by(sg.c.request_id, sg.c.seq)
        ).mappings():
            signature = signature_from_row(row)
            signed.setdefault(signature.request_id, []).append(signature)
        held: list[Request] = []
        for row in rows:
            pending = pending_request_from_row(row, tuple(signed.get(row["id"], ())))
            state.requests[pending.id] = pending
            held_request = pending.request()
            if pending.state is RequestState.PENDING and not isinstance(
                held_request, AdviceVarianceReview
            ):  # (accepting a variance reads nothing more)
                held.append(held_request)
        return held

    @staticmethod
    def _load_measured(conn: Connection, requests: Sequence[Request], state: LedgerState) -> None:
        """The latest measurement of each measured unit a manual count or adjustment
        touches: they must not leave its book further from its gauge (Planner._check_gauge)."""
        m = t.measurements
        for unit_id in sorted(
            {
                r.to_unit
                for r in requests
                if isinstance(r, PostingRequest)
                and r.source is not Source.PLC
                and r.kind in (MovementKind.COUNT, MovementKind.ADJUSTMENT)
                and r.to_unit is not None
                and (unit := state.units.get(r.to_unit)) is not None
                and unit.booking is Booking.MEASURED
            }
        ):
            query = select(m.c.quantity).where(m.c.unit == unit_id).order_by(m.c.id.desc())
            row = conn.execute(query.limit(1)).first()
            if row is not None:
                state.measured[unit_id] = Decimal(row[0])

    @staticmethod
    def _consumed_pairs(
        lots: Sequence[LotId],
        units: Sequence[StorageUnitId | None],
        state: LedgerState,
        pairs: dict[tuple[StorageUnitId, LotId], str],
    ) -> None:
        """The balances a production's draws from its consumed units change (a unit
        without a material of its own: the row is read, never created for the wrong one)."""
        for lot, unit_id in zip(lots, units, strict=False):
            unit = state.units.get(unit_id) if unit_id is not None else None
            if unit is not None and unit.material is not None:
                pairs.setdefault((unit.id, lot), unit.material)

    def _load_advices(
        self, conn: Connection, requests: Sequence[Request], state: LedgerState
    ) -> list[Advice]:
        """The open advices (locked on PostgreSQL) of the measured units whose PLC
        movements the batch books, and, to expire them, every open one past its window."""
        units = sorted(
            {
                r.unit
                for r in requests
                if isinstance(r, PostingRequest)
                and r.source is Source.PLC
                and r.lot is None
                and r.unit is not None
                and (unit := state.units.get(r.unit)) is not None
                and unit.booking is Booking.MEASURED
            }
        )
        a = t.advices
        found: dict[str, Advice] = {}
        if units:
            rows = self._select_in(
                conn,
                "advices",
                lambda ids: (
                    select(a)
                    .where(a.c.unit.in_(ids), a.c.state == "open")
                    .order_by(a.c.created_at, a.c.id)
                ),
                units,
                lock=True,
            )
            found.update((row["id"], advice_from_row(row)) for row in rows.mappings())
        if any(isinstance(r, ExpireAdvices) for r in requests):
            query = (
                select(a)
                .where(a.c.state == "open", a.c.expires_at <= self._now())
                .order_by(a.c.created_at, a.c.id)
            )
            if self._postgres:
                query = query.with_for_update()
            found.update(
                (row["id"], advice_from_row(row)) for row in conn.execute(query).mappings()
            )
        advices = sorted(found.values(), key=lambda advice: (advice.created_at, advice.id))
        state.advices = {}
        for advice in advices:
            state.advices.setdefault(advice.unit, []).append(advice)
        return advices

    def _sees_present(self, unit_id: StorageUnitId) -> bool:
        unit = self._units.get(unit_id)
        return unit is None or unit.lot_handling in (LotHandling.BLEND, LotHandling.SINGLE)

    def _load_present(
        self, conn: Connection, units: Sequence[StorageUnitId], state: LedgerState
    ) -> None:
        """The lots with a non-zero book in each of `units` (locked on PostgreSQL): what a
        draw without a lot is split over, and what blend, single and empty rules see."""
        state.present = {unit: set() for unit in units}
        if not units:
            return
        b = t.balances
        rows = self._select_in(
            conn,
            "present",
            lambda ids: (
                select(b.c.unit, b.c.lot, b.c.quantity, b.c.entered)
                .where(b.c.unit.in_(ids), b.c.quantity != "0")
                .order_by(b.c.unit, b.c.lot)
            ),
            units,
            lock=True,
        )
        for unit, lot, quantity, entered in cast("Iterable[tuple[str, str, str, str]]", rows):
            key = (StorageUnitId(unit), LotId(lot))
            state.balances[key] = Decimal(quantity)
            state.entered[key] = entered
            state.present[key[0]].add(key[1])

    def _current_lots(
        self, conn: Connection, units: Sequence[StorageUnitId]
    ) -> dict[StorageUnitId, LotId]:
        """Each unit's current lot: the lot of its last receipt, production or count, in
        one statement (per unit one walk of ix_movements_to_unit from its newest entry)."""
        if not units:
            return {}
        storage = t.storage_units
        rows = self._select_in(
            conn,
            "current_lots",
            lambda ids: select(
                storage.c.id, current_lot_of(t.movements.c.to_unit == storage.c.id)
            ).where(storage.c.id.in_(ids)),
            units,
        )
        pairs = cast("Iterable[tuple[str, str | None]]", rows)
        return {StorageUnitId(unit): LotId(lot) for unit, lot in pairs if lot is not None}

    def _select_in(
        self,
        conn: Connection,
        name: str,
        build: Callable[[list[BindParameter[Any]]], Select[Any]],
        values: Sequence[object],
        *,
        lock: bool = False,
        arity: int = 1,
    ) -> CursorResult[Any]:
        """Run a SELECT whose IN-list holds `values`, compiled once per bucket of lengths.

        SQLAlchemy would re-render the expanding IN-list on every batch; this keeps
        the writer's per-batch reads at driver cost. The list is padded to its bucket
        (powers of two, then multiples of 1024) by repeating its last entry of `arity`
        values, which an IN ignores, so a list that grows by one per batch does not
        compile a statement per batch. Other parameters of the statement (constants
        such as a LIMIT) keep their compiled values. `lock` adds FOR UPDATE on
        PostgreSQL (SQLite's writer already holds the lock).
        """
        size = _bucket(len(values) // arity) * arity
        values = list(values)
        values += values[-arity:] * ((size - len(values)) // arity)
        key = (name, size)
        cached = self._selects.get(key)
        if cached is None:
            params: list[BindParameter[Any]] = [
                bindparam(f"p{i}", value="") for i in range(len(values))
            ]
            stmt = build(params)
            if lock and self._postgres:
                stmt = stmt.with_for_update()
            compiled = stmt.compile(
                dialect=self._runner.dialect, compile_kwargs={"render_postcompile": True}
            )
            constants = compiled.construct_params()
            index = {p.key: i for i, p in enumerate(params)}
            order = [
                (index[n], None) if n in index else (-1, constants[n])
                for n in compiled.positiontup or []
            ]
            cached = self._selects[key] = (str(compiled), order)
        sql, order = cached
        return conn.exec_driver_sql(
            sql, tuple(values[i] if i >= 0 else constant for i, constant in order)
        )

    def _refresh_master_data(self, conn: Connection) -> None:
        if not self._postgres:
            # SQLite bumps data_version only when another connection commits: while it
            # stands still, nothing but this writer changed the file and the cache holds.
            version = conn.exec_driver_sql("PRAGMA data_version").scalar()
            if version == self._data_version and self._master_revision is not None:
                return
            self._data_version = version
            self._unit_totals.clear()  # another connection may have booked
        query = select(t.ledger_meta.c.value).where(t.ledger_meta.c.key == MASTER_REVISION)
        if self._postgres:
            query = query.with_for_update(read=True)
        revision = (conn.execute(query)).scalar()
        if revision == self._master_revision and revision is not None:
            return
        rows = conn.execute(select(t.materials))
        self._materials = {m.id: m for m in map(material_from_row, rows.mappings())}
        rows = conn.execute(select(t.storage_units))
        self._units = {u.id: u for u in map(unit_from_row, rows.mappings())}
        query = select(t.ledger_meta.c.value).where(t.ledger_meta.c.key == SIGNATURE_POLICIES)
        self._signatures = policies_from_json(conn.execute(query).scalar())
        rows = conn.execute(select(t.closed_periods).order_by(t.closed_periods.c.start))
        self._closed_periods = [closed_period_from_row(r) for r in rows.mappings()]
        self._master_revision = revision

    def _write(self, conn: Connection, changes: Changes) -> None:
        if changes.materials:
            self._upsert(conn, t.materials, ["id"], [material_to_row(m) for m in changes.materials])
        if changes.units:
            self._upsert(conn, t.storage_units, ["id"], [unit_to_row(u) for u in changes.units])
        if changes.signature_policies is not None:
            text = policies_json(changes.signature_policies)
            self._upsert(conn, t.ledger_meta, ["key"], [{"key": SIGNATURE_POLICIES, "value": text}])
        if changes.closed_periods:
            self._insert_many(
                conn,
                t.closed_periods,
                [closed_period_to_row(p, writer=self._writer_id) for p in changes.closed_periods],
            )
        if (
            changes.materials
            or changes.units
            or changes.signature_policies is not None
            or changes.closed_periods
        ):
            self._upsert(
                conn,
                t.ledger_meta,
                ["key"],
                [{"key": MASTER_REVISION, "value": str(uuid.uuid4())}],
            )
            self._master_revision = None  # reload after commit, from what was committed
        if changes.new_lots:
            self._insert_many(conn, t.lots, [lot_to_row(lot) for lot in changes.new_lots])
        for lot in changes.lot_quality.values():
            conn.execute(
                update(t.lots)
                .where(t.lots.c.id == lot.id)
                .values(
                    expiry=lot.expiry.isoformat() if lot.expiry else None,
                    **quality_to_row(lot.quality),
                )
            )
        for lot_id, status in changes.lot_status.items():
            conn.execute(update(t.lots).where(t.lots.c.id == lot_id).values(status=str(status)))
        if changes.movements:
            self._insert_tuples(conn, t.movements, MOVEMENT_COLUMNS, changes.movements)
        if changes.links:
            self._insert_many(
                conn,
                t.lot_links,
                [
                    {
                        "parent": p,
                        "child": c,
                        "movement_id": m,
                        "quantity": None if q is None else format_decimal(q),
                    }
                    for p, c, m, q in dict.fromkeys(changes.links)
                ],
            )
        unused = self._placeholders - set(changes.balances)
        if unused:  # lock rows made for requests that were then rejected
            conn.execute(
                t.balances.delete().where(tuple_(t.balances.c.unit, t.balances.c.lot).in_(unused))
            )
        if changes.balances:
            self._upsert(
                conn,
                t.balances,
                ["unit", "lot"],
                [
                    {
                        "unit": u,
                        "lot": lot,
                        "material": material,
                        "quantity": format_decimal(q),
                        "entered": entered,
                    }
                    for (u, lot), (material, q, entered) in changes.balances.items()
                ],
            )
        if changes.advices:
            self._write_advices(conn, changes)
        if changes.requests:
            self._write_requests(conn, changes)
        if changes.meter_flows:
            self._insert_many(
                conn,
                t.meter_flows,
                [
                    {
                        "unit": f.unit,
                        "direction": str(f.direction),
                        "quantity": format_decimal(f.quantity),
                        "uom": f.uom,
                        "window_start": f.window_start,
                        "window_end": f.window_end,
                        "counter": f.counter,
                        "writer": self._writer_id,
                    }
                    for f in changes.meter_flows
                ],
            )
        if changes.measurements:
            self._insert_many(
                conn,
                t.measurements,
                [
                    {
                        "unit": m.unit,
                        "quantity": format_decimal(m.quantity),
                        "uom": m.uom,
                        "timestamp": m.timestamp,
                        "quality": m.quality,
                    }
                    for m in changes.measurements
                ],
            )
        if changes.audits:
            self._append_audit(conn, changes)

    def _write_advices(self, conn: Connection, changes: Changes) -> None:
        new = [
            advice_to_row(a, payload_hash=changes.new_advices[a.id], writer=self._writer_id)
            for a in changes.advices.values()
            if a.id in changes.new_advices
        ]
        if new:
            self._insert_many(conn, t.advices, new)
        a = t.advices
        for advice in changes.advices.values():
            if advice.id not in changes.new_advices:
                conn.execute(
                    update(a)
                    .where(a.c.id == advice.id)
                    .values(
                        state=str(advice.state),
                        matched=format_decimal(advice.matched),
                        matches=advice.matches,
                        closed_at=advice.closed_at,
                    )
                )

    def _write_requests(self, conn: Connection, changes: Changes) -> None:
        new = [
            pending_request_to_row(p, writer=self._writer_id)
            for p in changes.requests.values()
            if p.id in changes.new_requests
        ]
        if new:
            self._insert_many(conn, t.pending_requests, new)
        pr = t.pending_requests
        for pending in changes.requests.values():
            if pending.id not in changes.new_requests:
                conn.execute(
                    update(pr)
                    .where(pr.c.id == pending.id)
                    .values(
                        state=str(pending.state),
                        outcome=pending.outcome,
                        closed_at=pending.closed_at,
                    )
                )
        if changes.signatures:
            self._insert_many(conn, t.signatures, [signature_to_row(s) for s in changes.signatures])

    def _append_audit(self, conn: Connection, changes: Changes) -> None:
        heads = t.audit_heads
        if self._head is None:
            query = select(heads.c.seq, heads.c.hash).where(heads.c.writer == self._writer_id)
            row = (conn.execute(query)).first()
            self._head = (int(row[0]), row[1]) if row else (0, GENESIS_HASH)
        start_seq, start_hash = self._head
        seq, prev = start_seq, start_hash
        rows = []
        for pending in changes.audits:
            seq += 1
            record = make_record(
                writer=self._writer_id,
                seq=seq,
                timestamp=pending.timestamp,
                user=pending.user,
                action=pending.action,
                object_type=pending.object_type,
                object_id=pending.object_id,
                reason=pending.reason,
                old=pending.old,
                new=pending.new,
                prev_hash=prev,
            )
            prev = record.hash
            rows.append(audit_to_row(record))
        if start_seq == 0:  # a new chain: the insert fails if another process started it
            conn.execute(
                heads.insert(),
                {"writer": self._writer_id, "seq": seq, "hash": prev, "updated_at": self._now()},
            )
        else:  # compare-and-set: fails when another process appended to this chain meanwhile
            moved = conn.exec_driver_sql(
                self._head_update(), (seq, prev, self._now(), self._writer_id, start_seq)
            )
            if moved.rowcount != 1:
                raise _StaleHead
        self._insert_many(conn, t.audit, rows)
        self._pending_head = (seq, prev)

    def _head_update(self) -> str:
        """The compare-and-set of the audit head, compiled once: built and compiled per
        batch it cost a single-posting batch a tenth of its time."""
        if self._head_sql is None:
            heads = t.audit_heads
            stmt = (
                update(heads)
                .where(heads.c.writer == bindparam("w"), heads.c.seq == bindparam("s"))
                .values(seq=bindparam("n"), hash=bindparam("h"), updated_at=bindparam("u"))
            )
            compiled = stmt.compile(dialect=self._runner.dialect)
            assert tuple(compiled.positiontup or ()) == ("n", "h", "u", "w", "s")
            self._head_sql = str(compiled)
        return self._head_sql

    def _insert_many(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        self._execute_many(conn, table, (), rows)

    def _insert_tuples(
        self,
        conn: Connection,
        table: Table,
        columns: tuple[str, ...],
        rows: Sequence[tuple[object, ...]],
    ) -> None:
        """INSERT rows already in column order: no per-row dict on the hot path."""
        sql = self._compiled(table, (), columns)[0]
        conn.exec_driver_sql(sql, list(rows))

    def _upsert(
        self, conn: Connection, table: Table, keys: Iterable[str], rows: list[dict[str, Any]]
    ) -> None:
        self._execute_many(conn, table, tuple(keys), rows)

    def _execute_many(
        self,
        conn: Connection,
        table: Table,
        conflict_keys: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> None:
        """INSERT (or upsert on `conflict_keys`) many rows as one driver-level executemany.

        The statement is compiled once per shape and reused, so the hot path pays
        the driver's cost, not SQLAlchemy's per-row parameter processing.
        """
        sql, order = self._compiled(table, conflict_keys, tuple(rows[0]))
        conn.exec_driver_sql(sql, [tuple(row[n] for n in order) for row in rows])

    def _compiled(
        self, table: Table, conflict_keys: tuple[str, ...], names: tuple[str, ...]
    ) -> tuple[str, tuple[str, ...]]:
        """SQL text and bind order of an INSERT/upsert, compiled once per shape."""
        cache_key = (table.name, conflict_keys, names)
        cached = self._statements.get(cache_key)
        if cached is None:
            stmt = self._insert(table).values({n: bindparam(n) for n in names})
            if conflict_keys:
                stmt = stmt.on_conflict_do_update(
                    index_elements=list(conflict_keys),
                    set_={n: stmt.excluded[n] for n in names if n not in conflict_keys},
                )
            compiled = stmt.compile(dialect=self._runner.dialect)
            order = tuple(compiled.positiontup or ())
            assert order == names, f"bind order {order} differs from columns {names}"
            cached = (str(compiled), order)
            self._statements[cache_key] = cached
        return cached


def _retryable(exc: DBAPIError) -> bool:
    """Conflicts with a concurrent writer (lock timeouts, deadlocks, unique races)."""
    if isinstance(exc, IntegrityError):
        return True
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(
        marker in text
        for marker in ("database is locked", "deadlock", "could not serialize", "busy")
    )


# Constraint errors that mean "another writer got there first": retried, not refused.
_RACES = frozenset({"23505", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_SQLITE_REFUSALS = frozenset({"SQLITE_TOOBIG", "SQLITE_MISMATCH"})


def _refused(exc: DBAPIError) -> bool:
    """The database refused the batch's values: a data exception (PostgreSQL class 22:
    NUL byte, value too long, out of range), a CHECK, NOT NULL or foreign-key violation,
    a trigger's RAISE. One request's doing, not an outage and not a race to retry."""
    if exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):  # PostgreSQL (asyncpg)
        if sqlstate in _RACES:
            return False
        return sqlstate[:2] in ("22", "23") or sqlstate == "P0001"
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):  # SQLite (Python >= 3.11)
        if name in _RACES:
            return False
        return name.startswith("SQLITE_CONSTRAINT") or name in _SQLITE_REFUSALS
    return isinstance(exc, DataError)


def _short(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__]
    # asyncpg's errors, as SQLAlchemy adapts them, start with "<class '...'>: ".
    first = lines[0]
    return first.split(">: ", 1)[1] if first.startswith("<class '") and ">: " in first else first


def _bucket(length: int) -> int:
    """The IN-list length `length` entries are padded to (see `_select_in`)."""
    if length <= 1:
        return length
    return 1 << (length - 1).bit_length() if length <= 1024 else -(-length // 1024) * 1024


def settle(future: asyncio.Future[Any], outcome: object) -> None:
    """Resolve `future` with `outcome` (an exception is raised to its awaiter), unless it
    is done already (its caller gave up)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _postgres_insert() -> Callable[[Table], Any]:
    """PostgreSQL's INSERT construct; its dialect is imported only for a PostgreSQL ledger."""
    from sqlalchemy.dialects.postgresql import insert

    return insert

"""The single writer: group commit of postings, with rules applied under lock.

Callers submit commands and await a future. One task drains the queue into
batches (up to `batch_max`), loads exactly the rows the batch touches inside
one transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: row locks taken in a
fixed order), lets the pure `Planner` apply the rules, writes every change
plus the audit chain, commits, and only then resolves the futures: an
acknowledged posting is durable. A rejected command fails alone; a database
conflict with another writer (PostgreSQL) rolls the batch back and replays it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inventory_core.domain.audit import GENESIS_HASH, make_record
from inventory_core.domain.errors import InventoryError, LedgerUnavailable
from inventory_core.domain.model import (
    AuditEvent,
    LotId,
    LotStatusRequest,
    MasterDataUpdate,
    Measurement,
    MovementId,
    PostingRequest,
    ReversalRequest,
    StorageUnitId,
)
from inventory_core.domain.posting import Changes, LedgerState, Planner
from inventory_core.domain.units import format_decimal
from inventory_core.store import tables as t
from inventory_core.store.rows import (
    audit_to_row,
    lot_from_row,
    lot_to_row,
    material_from_row,
    material_to_row,
    movement_from_row,
    movement_to_row,
    unit_from_row,
    unit_to_row,
)

log = logging.getLogger(__name__)

Request = (
    PostingRequest
    | ReversalRequest
    | LotStatusRequest
    | MasterDataUpdate
    | Measurement
    | AuditEvent
)
MAX_ATTEMPTS = 6
_STOP = object()


@dataclass(slots=True)
class Command:
    request: Request
    digest: str
    future: asyncio.Future[Any] = field(repr=False)


class BatchWriter:
    """Owns the write connection and the writer's audit chain."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        writer_id: str,
        batch_max: int,
        now: Callable[[], str],
        today: Callable[[], date],
        on_commit: Callable[[Sequence[Command], float], None] | None = None,
    ) -> None:
        self._engine = engine
        self._writer_id = writer_id
        self._batch_max = batch_max
        self._now = now
        self._today = today
        self._on_commit = on_commit
        self._queue: asyncio.Queue[Command | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = pg_insert if self._postgres else sqlite_insert

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
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
            try:
                async with self._engine.begin() as conn:
                    outcomes = await self._apply(conn, batch)
            except (IntegrityError, OperationalError, DBAPIError) as exc:
                if attempt + 1 < MAX_ATTEMPTS and _retryable(exc):
                    log.info("ledger batch retry %d after %s", attempt + 1, type(exc).__name__)
                    await asyncio.sleep(0.005 * 2**attempt)
                    continue
                if len(batch) > 1 and isinstance(exc, IntegrityError):
                    for command in batch:  # isolate the command that keeps conflicting
                        await self._process([command])
                    return
                error = LedgerUnavailable(f"ledger write failed: {_short(exc)}")
                for command in batch:
                    _settle(command.future, error)
                return
            except Exception as exc:  # not a domain error: fail the batch, keep the writer
                log.exception("ledger batch failed")
                for command in batch:
                    _settle(command.future, LedgerUnavailable(f"ledger write failed: {exc}"))
                return
            break
        for command, outcome in zip(batch, outcomes, strict=True):
            _settle(command.future, outcome)
        if self._on_commit is not None:
            self._on_commit(batch, loop.time() - started)

    async def _apply(self, conn: AsyncConnection, batch: list[Command]) -> list[object]:
        state = await self._load_state(conn, batch)
        changes = Changes()
        planner = Planner(state, changes, writer=self._writer_id, now=self._now, today=self._today)
        outcomes: list[object] = []
        digests: dict[str, str] = {}
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
                else:
                    planner.audit_event(request)
                    result = None
            except InventoryError as exc:
                result = exc
            outcomes.append(result)
            digests[getattr(result, "movement_id", "")] = command.digest
        await self._write(conn, changes, digests)
        return outcomes

    async def _load_state(self, conn: AsyncConnection, batch: list[Command]) -> LedgerState:
        """Read (and on PostgreSQL lock) every row the batch's rules depend on."""
        state = LedgerState()
        for row in (await conn.execute(select(t.materials))).mappings():
            material = material_from_row(row)
            state.materials[material.id] = material
        for row in (await conn.execute(select(t.storage_units))).mappings():
            u = unit_from_row(row)
            state.units[u.id] = u

        requests = [c.request for c in batch]
        reversal_ids = [r.movement_id for r in requests if isinstance(r, ReversalRequest)]
        if reversal_ids:
            rows = await conn.execute(select(t.movements).where(t.movements.c.id.in_(reversal_ids)))
            for row in rows.mappings():
                original = movement_from_row(row)
                state.movements[original.id] = original
            rows = await conn.execute(
                select(t.movements.c.reverses).where(t.movements.c.reverses.in_(reversal_ids))
            )
            state.reversed_ids.update(MovementId(r) for (r,) in rows)

        lot_ids: set[str] = set()
        pairs: dict[tuple[StorageUnitId, LotId], str] = {}
        for r in requests:
            if isinstance(r, PostingRequest):
                lot_ids.add(r.lot)
                lot_ids.update(r.consumed_lots)
                for unit in (r.from_unit, r.to_unit):
                    if unit is not None:
                        pairs[(unit, r.lot)] = r.material
            elif isinstance(r, LotStatusRequest):
                lot_ids.add(r.lot)
        for original in state.movements.values():
            lot_ids.add(original.lot)
            for unit in (original.from_unit, original.to_unit):
                if unit is not None:
                    pairs[(unit, original.lot)] = original.material

        if lot_ids:
            query = select(t.lots).where(t.lots.c.id.in_(sorted(lot_ids))).order_by(t.lots.c.id)
            if self._postgres:
                query = query.with_for_update()
            for row in (await conn.execute(query)).mappings():
                lot = lot_from_row(row)
                state.lots[lot.id] = lot
        if pairs:
            ordered = sorted(pairs)
            if self._postgres:  # materialise missing rows so they can be locked too
                await conn.execute(
                    pg_insert(t.balances).on_conflict_do_nothing(),
                    [
                        {"unit": u, "lot": lot, "material": pairs[(u, lot)], "quantity": "0"}
                        for u, lot in ordered
                    ],
                )
            query = (
                select(t.balances.c.unit, t.balances.c.lot, t.balances.c.quantity)
                .where(tuple_(t.balances.c.unit, t.balances.c.lot).in_(ordered))
                .order_by(t.balances.c.unit, t.balances.c.lot)
            )
            if self._postgres:
                query = query.with_for_update()
            for unit, lot, quantity in await conn.execute(query):
                state.balances[(StorageUnitId(unit), LotId(lot))] = Decimal(quantity)

        keys = [
            r.idempotency_key
            for r in requests
            if isinstance(r, PostingRequest | ReversalRequest | LotStatusRequest)
            and r.idempotency_key
        ]
        if keys:
            rows = await conn.execute(
                select(
                    t.movements.c.idempotency_key, t.movements.c.id, t.movements.c.payload_hash
                ).where(t.movements.c.idempotency_key.in_(keys))
            )
            for key, movement_id, digest in rows:
                state.keys[key] = (MovementId(movement_id), digest)
        return state

    async def _write(
        self, conn: AsyncConnection, changes: Changes, digests: dict[str, str]
    ) -> None:
        if changes.materials:
            await self._upsert(
                conn, t.materials, ["id"], [material_to_row(m) for m in changes.materials]
            )
        if changes.units:
            await self._upsert(
                conn, t.storage_units, ["id"], [unit_to_row(u) for u in changes.units]
            )
        if changes.new_lots:
            await conn.execute(t.lots.insert(), [lot_to_row(lot) for lot in changes.new_lots])
        for lot_id, status in changes.lot_status.items():
            await conn.execute(
                update(t.lots).where(t.lots.c.id == lot_id).values(status=str(status))
            )
        if changes.movements:
            await conn.execute(
                t.movements.insert(),
                [movement_to_row(m, digests[m.id]) for m in changes.movements],
            )
        if changes.links:
            await conn.execute(
                t.lot_links.insert(),
                [{"parent": p, "child": c, "movement_id": m} for p, c, m in set(changes.links)],
            )
        if changes.balances:
            await self._upsert(
                conn,
                t.balances,
                ["unit", "lot"],
                [
                    {"unit": u, "lot": lot, "material": material, "quantity": format_decimal(q)}
                    for (u, lot), (material, q) in changes.balances.items()
                ],
            )
        if changes.measurements:
            await conn.execute(
                t.measurements.insert(),
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
            await self._append_audit(conn, changes)

    async def _append_audit(self, conn: AsyncConnection, changes: Changes) -> None:
        query = select(t.audit_heads.c.seq, t.audit_heads.c.hash).where(
            t.audit_heads.c.writer == self._writer_id
        )
        if self._postgres:
            query = query.with_for_update()
        head = (await conn.execute(query)).first()
        seq, prev = (int(head[0]), head[1]) if head else (0, GENESIS_HASH)
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
        await conn.execute(t.audit.insert(), rows)
        head_row = {"writer": self._writer_id, "seq": seq, "hash": prev, "updated_at": self._now()}
        await self._upsert(conn, t.audit_heads, ["writer"], [head_row])

    async def _upsert(
        self, conn: AsyncConnection, table: Any, keys: Iterable[str], rows: list[dict[str, Any]]
    ) -> None:
        stmt = self._insert(table)
        keys = list(keys)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
        )
        await conn.execute(stmt, rows)


def _retryable(exc: DBAPIError) -> bool:
    """Conflicts with a concurrent writer (lock timeouts, deadlocks, unique races)."""
    if isinstance(exc, IntegrityError):
        return True
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(
        marker in text
        for marker in ("database is locked", "deadlock", "could not serialize", "busy")
    )


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def _settle(future: asyncio.Future[Any], outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

"""Read-side queries: balances, history, genealogy, reconciliation input, verification."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inventory_core.domain.advices import Advice
from inventory_core.domain.audit import AuditRecord
from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.domain.meter import MeterDirection, MeterFlow
from inventory_core.domain.model import (
    CURRENT_LOT_KINDS,
    Balance,
    GenealogyLink,
    Lot,
    LotId,
    MaterialDefinition,
    MaterialId,
    Measurement,
    Movement,
    MovementId,
    StorageUnit,
    StorageUnitId,
    VerifyReport,
)
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    ClosedPeriod,
    PendingRequest,
    Signature,
)
from inventory_core.store import tables as t
from inventory_core.store.rows import (
    advice_from_row,
    audit_from_row,
    closed_period_from_row,
    lot_from_row,
    material_from_row,
    movement_from_row,
    pending_request_from_row,
    signature_from_row,
    unit_from_row,
)
from inventory_core.store.verify import verify_ledger

VERIFY_PAGE = 5000
MAX_TRACE_DEPTH = 100


class LedgerReader:
    """Queries on the reader engine; never takes the write lock."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A read connection; a database that cannot be reached is LedgerUnavailable."""
        try:
            async with self._engine.connect() as conn:
                yield conn
        except (DBAPIError, OSError) as exc:
            text = str(getattr(exc, "orig", None) or exc).splitlines()
            raise LedgerUnavailable(f"ledger read failed: {text[0] if text else exc}") from exc

    async def materials(self) -> list[MaterialDefinition]:
        async with self._connect() as conn:
            rows = await conn.execute(select(t.materials).order_by(t.materials.c.id))
            return [material_from_row(r) for r in rows.mappings()]

    async def storage_units(self) -> list[StorageUnit]:
        async with self._connect() as conn:
            rows = await conn.execute(select(t.storage_units).order_by(t.storage_units.c.id))
            return [unit_from_row(r) for r in rows.mappings()]

    async def lots(self, lot: str | None = None, *, ids: Collection[str] = ()) -> list[Lot]:
        query = select(t.lots).order_by(t.lots.c.id)
        if lot is not None:
            query = query.where(t.lots.c.id == lot)
        if ids:
            query = query.where(t.lots.c.id.in_(sorted(ids)))
        async with self._connect() as conn:
            return [lot_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def balances(
        self,
        unit: str | None = None,
        lot: str | None = None,
        material: str | None = None,
        *,
        units: Collection[str] = (),
        lots: Collection[str] = (),
    ) -> list[Balance]:
        b = t.balances
        query = (
            select(b.c.unit, b.c.lot, b.c.material, b.c.quantity, t.materials.c.base_uom)
            .join(t.materials, t.materials.c.id == b.c.material)
            .order_by(b.c.unit, b.c.lot)
        )
        if unit is not None:
            query = query.where(b.c.unit == unit)
        if lot is not None:
            query = query.where(b.c.lot == lot)
        if material is not None:
            query = query.where(b.c.material == material)
        if units:
            query = query.where(b.c.unit.in_(sorted(units)))
        if lots:
            query = query.where(b.c.lot.in_(sorted(lots)))
        async with self._connect() as conn:
            rows = await conn.execute(query)
            return [
                Balance(StorageUnitId(u), LotId(lo), MaterialId(m), Decimal(q), uom)
                for u, lo, m, q, uom in rows
            ]

    async def movement(self, movement_id: str) -> Movement | None:
        async with self._connect() as conn:
            rows = await conn.execute(select(t.movements).where(t.movements.c.id == movement_id))
            row = rows.mappings().first()
            return None if row is None else movement_from_row(row)

    async def movements(self, ids: Collection[str]) -> list[Movement]:
        """The movements with these ids (those that exist), in posting order."""
        if not ids:
            return []
        m = t.movements
        query = select(m).where(m.c.id.in_(sorted(set(ids)))).order_by(m.c.seq)
        async with self._connect() as conn:
            return [movement_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def history(
        self,
        unit: str | None = None,
        lot: str | None = None,
        since: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        *,
        newest_first: bool = False,
        before: str | None = None,
    ) -> list[Movement]:
        m = t.movements
        order = m.c.seq.desc() if newest_first else m.c.seq
        query = select(m).where(m.c.seq > after_seq).order_by(order)
        if unit is not None:
            query = query.where(or_(m.c.from_unit == unit, m.c.to_unit == unit))
        if lot is not None:
            query = query.where(m.c.lot == lot)
        if since is not None:
            query = query.where(m.c.timestamp >= since)
        if before is not None:
            query = query.where(m.c.timestamp < before)
        if limit is not None:
            query = query.limit(limit)
        async with self._connect() as conn:
            return [movement_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def last_seq(self) -> int:
        """The highest movement sequence number (0 for an empty ledger)."""
        async with self._connect() as conn:
            return int((await conn.execute(select(func.max(t.movements.c.seq)))).scalar() or 0)

    async def lot_links(self, lots: Collection[str] | None = None) -> list[GenealogyLink]:
        """Direct genealogy edges (depth 1) with a parent or child in `lots` (None: all)."""
        links = t.lot_links
        query = select(
            links.c.parent, links.c.child, links.c.movement_id, links.c.quantity
        ).order_by(links.c.parent, links.c.child, links.c.movement_id)
        if lots is not None:
            ids = sorted(set(lots))
            query = query.where(or_(links.c.parent.in_(ids), links.c.child.in_(ids)))
        async with self._connect() as conn:
            rows = await conn.execute(query)
            return [
                GenealogyLink(
                    LotId(parent),
                    LotId(child),
                    MovementId(movement_id),
                    1,
                    None if quantity is None else Decimal(quantity),
                )
                for parent, child, movement_id, quantity in rows
            ]

    async def genealogy(self, lot: str, *, forward: bool) -> list[GenealogyLink]:
        """Every edge reachable from `lot`: where-used (forward) or where-from (backward).

        Breadth-first, one query per generation, each lot visited once: rework
        cycles (A into B, B back into A) end instead of looping.
        """
        links = t.lot_links
        near, far = (links.c.parent, links.c.child) if forward else (links.c.child, links.c.parent)
        found: list[GenealogyLink] = []
        seen_edges: set[tuple[str, str, str]] = set()
        visited, frontier, depth = {lot}, [lot], 0
        async with self._connect() as conn:
            while frontier and depth < MAX_TRACE_DEPTH:
                depth += 1
                query = (
                    select(
                        links.c.parent, links.c.child, links.c.movement_id, far, links.c.quantity
                    )
                    .where(near.in_(frontier))
                    .order_by(links.c.parent, links.c.child, links.c.movement_id)
                )
                next_frontier: list[str] = []
                for parent, child, movement_id, other, quantity in await conn.execute(query):
                    if (parent, child, movement_id) in seen_edges:
                        continue
                    seen_edges.add((parent, child, movement_id))
                    found.append(
                        GenealogyLink(
                            LotId(parent),
                            LotId(child),
                            MovementId(movement_id),
                            depth,
                            None if quantity is None else Decimal(quantity),
                        )
                    )
                    if other not in visited:
                        visited.add(other)
                        next_frontier.append(other)
                frontier = next_frontier
        return found

    async def inputs_of(self, movement_ids: Collection[str]) -> list[GenealogyLink]:
        """Every genealogy link the given movements wrote (all inputs of each, depth 0)."""
        links = t.lot_links
        if not movement_ids:
            return []
        query = (
            select(links.c.parent, links.c.child, links.c.movement_id, links.c.quantity)
            .where(links.c.movement_id.in_(sorted(movement_ids)))
            .order_by(links.c.movement_id, links.c.parent)
        )
        async with self._connect() as conn:
            return [
                GenealogyLink(
                    LotId(parent), LotId(child), MovementId(movement_id), 0,
                    None if quantity is None else Decimal(quantity),
                )
                for parent, child, movement_id, quantity in await conn.execute(query)
            ]  # fmt: skip

    async def latest_measurements(
        self, *, until: str | None = None, good: bool = False
    ) -> dict[StorageUnitId, Measurement]:
        """Each unit's last measurement (at or before the timestamp `until`; `good`:
        of good quality only)."""
        m = t.measurements
        newest = select(m.c.unit, func.max(m.c.id).label("id"))
        if until is not None:
            newest = newest.where(m.c.timestamp <= until)
        if good:
            newest = newest.where(m.c.quality == "good")
        latest = newest.group_by(m.c.unit).subquery()
        query = select(m).join(latest, and_(m.c.id == latest.c.id))
        async with self._connect() as conn:
            rows = await conn.execute(query)
            return {
                StorageUnitId(r["unit"]): Measurement(
                    StorageUnitId(r["unit"]),
                    Decimal(r["quantity"]),
                    r["uom"],
                    r["timestamp"],
                    r["quality"],
                )
                for r in rows.mappings()
            }

    async def current_lot(self, unit: str) -> LotId | None:
        """The lot last received, produced or counted into `unit` (PLC movements book to it)."""
        async with self._connect() as conn:
            lot = (
                await conn.execute(select(current_lot_of(t.movements.c.to_unit == unit)))
            ).scalar()
            return None if lot is None else LotId(lot)

    async def current_lots(self) -> dict[str, LotId]:
        """`current_lot` of every unit that has one, in one query: per storage unit one
        walk of ix_movements_to_unit from its newest entry, so the cost follows the
        number of units, not the length of the ledger."""
        units = t.storage_units
        query = select(units.c.id, current_lot_of(t.movements.c.to_unit == units.c.id))
        async with self._connect() as conn:
            rows = await conn.execute(query)
            return {unit: LotId(lot) for unit, lot in rows if lot is not None}

    async def last_derived(self, unit: str) -> Movement | None:
        m = t.movements
        query = (
            select(m)
            .where(m.c.source == "plc", or_(m.c.to_unit == unit, m.c.from_unit == unit))
            .order_by(m.c.seq.desc())
            .limit(1)
        )
        async with self._connect() as conn:
            row = (await conn.execute(query)).mappings().first()
            return None if row is None else movement_from_row(row)

    async def advices(
        self,
        *,
        state: str | None = None,
        unit: str | None = None,
        advice_id: str | None = None,
        limit: int | None = None,
    ) -> list[Advice]:
        """Advices, the newest first, with every filter given."""
        a = t.advices
        query = select(a).order_by(a.c.created_at.desc(), a.c.id.desc())
        if state is not None:
            query = query.where(a.c.state == state)
        if unit is not None:
            query = query.where(a.c.unit == unit)
        if advice_id is not None:
            query = query.where(a.c.id == advice_id)
        if limit is not None:
            query = query.limit(limit)
        async with self._connect() as conn:
            return [advice_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def meter_flows(
        self, *, since: str | None = None, until: str | None = None
    ) -> list[MeterFlow]:
        """Meter flows whose window ends at or after `since` and before `until`."""
        f = t.meter_flows
        query = select(f).order_by(f.c.id)
        if since is not None:
            query = query.where(f.c.window_end >= since)
        if until is not None:
            query = query.where(f.c.window_end < until)
        async with self._connect() as conn:
            return [_meter_flow(r) for r in (await conn.execute(query)).mappings()]

    async def last_meter_flows(self) -> dict[StorageUnitId, MeterFlow]:
        """Each metered unit's last flow: where its counting resumes."""
        f = t.meter_flows
        latest = select(f.c.unit, func.max(f.c.id).label("id")).group_by(f.c.unit).subquery()
        query = select(f).join(latest, f.c.id == latest.c.id)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).mappings()
            return {StorageUnitId(r["unit"]): _meter_flow(r) for r in rows}

    async def closed_periods(self) -> list[ClosedPeriod]:
        """The periods closed with a signed balance report, the oldest first."""
        query = select(t.closed_periods).order_by(t.closed_periods.c.start)
        async with self._connect() as conn:
            return [closed_period_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def pending_requests(
        self,
        *,
        state: str | None = None,
        request_id: str | None = None,
        limit: int | None = None,
    ) -> list[PendingRequest]:
        """Requests held for signatures with their signatures, the oldest first."""
        pr, sg = t.pending_requests, t.signatures
        query = select(pr).order_by(pr.c.created_at, pr.c.id)
        if state is not None:
            query = query.where(pr.c.state == state)
        if request_id is not None:
            query = query.where(pr.c.id == request_id)
        if limit is not None:
            query = query.limit(limit)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            ids = [r["id"] for r in rows]
            signed: dict[str, list[Signature]] = {}
            for chunk in range(0, len(ids), 500):
                found = await conn.execute(
                    select(sg)
                    .where(sg.c.request_id.in_(ids[chunk : chunk + 500]))
                    .order_by(sg.c.request_id, sg.c.seq)
                )
                for row in found.mappings():
                    signature = signature_from_row(row)
                    signed.setdefault(signature.request_id, []).append(signature)
        return [pending_request_from_row(r, tuple(signed.get(r["id"], ()))) for r in rows]

    async def audit_records(
        self,
        object_type: str | None = None,
        object_id: str | None = None,
        *,
        after: int = 0,
        since: str | None = None,
        until: str | None = None,
        user: str | None = None,
        limit: int | None = None,
        with_movements: bool = False,
    ) -> list[tuple[int, AuditRecord]]:
        """(cursor, record) of the audit records after cursor `after` (the record's row
        id: the order they were appended in), the oldest first, with every filter given
        (`since`: a timestamp, records at or after it). `with_movements` adds, for a lot
        or storage unit, the records of the movements booked to it (ix_audit_object
        finds them by the movements' ids)."""
        a = t.audit
        query = select(a).where(a.c.id > after).order_by(a.c.id)
        if object_type is not None:
            query = query.where(self._audited_object(object_type, object_id, with_movements))
        elif object_id is not None:
            query = query.where(a.c.object_id == object_id)
        if since is not None:
            query = query.where(a.c.timestamp >= since)
        if until is not None:
            query = query.where(a.c.timestamp <= until)
        if user is not None:
            query = query.where(a.c.user == user)
        if limit is not None:
            query = query.limit(limit)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).mappings()
            return [(int(r["id"]), audit_from_row(r)) for r in rows]

    @staticmethod
    def _audited_object(
        object_type: str, object_id: str | None, with_movements: bool
    ) -> ColumnElement[bool]:
        a, m = t.audit, t.movements
        own = a.c.object_type == object_type
        if object_id is None:
            return own
        if object_type == "request":  # held requests are `request:<id>`; refusals their key
            bare = object_id.removeprefix(REQUEST_PREFIX)
            own = and_(own, a.c.object_id.in_({object_id, bare, f"{REQUEST_PREFIX}{bare}"}))
        else:
            own = and_(own, a.c.object_id == object_id)
        if not with_movements or object_type not in ("lot", "storage_unit"):
            return own
        booked = (
            m.c.lot == object_id
            if object_type == "lot"
            else or_(m.c.from_unit == object_id, m.c.to_unit == object_id)
        )
        movement_ids = select(m.c.id).where(booked)
        return or_(own, and_(a.c.object_type == "movement", a.c.object_id.in_(movement_ids)))

    async def chain_heads(self) -> dict[str, tuple[int, str]]:
        async with self._connect() as conn:
            rows = await conn.execute(
                select(t.audit_heads.c.writer, t.audit_heads.c.seq, t.audit_heads.c.hash)
            )
            return {w: (int(s), h) for w, s, h in rows}

    async def verify(self) -> VerifyReport:
        """Check the audit chains and every table against what they audited."""
        async with self._connect() as conn:
            return await verify_ledger(conn)


def current_lot_of(unit_matches: ColumnElement[bool]) -> ScalarSelect[Any]:
    """The lot of the newest receipt, production or count whose target unit matches."""
    m = t.movements
    return (
        select(m.c.lot)
        .where(unit_matches, m.c.kind.in_(sorted(str(k) for k in CURRENT_LOT_KINDS)))
        .order_by(m.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )


def _meter_flow(r: Any) -> MeterFlow:
    return MeterFlow(
        StorageUnitId(r["unit"]), MeterDirection(r["direction"]), Decimal(r["quantity"]),
        r["uom"], r["window_start"], r["window_end"], int(r["counter"]),
    )  # fmt: skip

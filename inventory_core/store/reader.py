"""Read-side queries: balances, history, genealogy, reconciliation input, verification."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, union
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inventory_core.domain.audit import GENESIS_HASH, check_record
from inventory_core.domain.model import (
    Balance,
    GenealogyLink,
    Lot,
    LotId,
    MaterialDefinition,
    MaterialId,
    Measurement,
    Movement,
    MovementId,
    MovementKind,
    StorageUnit,
    StorageUnitId,
    VerifyProblem,
    VerifyReport,
)
from inventory_core.domain.posting import movement_digest
from inventory_core.store import tables as t
from inventory_core.store.rows import (
    audit_from_row,
    lot_from_row,
    material_from_row,
    movement_from_row,
    unit_from_row,
)

VERIFY_PAGE = 5000
MAX_TRACE_DEPTH = 100


class LedgerReader:
    """Queries on the reader engine; never takes the write lock."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def materials(self) -> list[MaterialDefinition]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(t.materials).order_by(t.materials.c.id))
            return [material_from_row(r) for r in rows.mappings()]

    async def storage_units(self) -> list[StorageUnit]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(t.storage_units).order_by(t.storage_units.c.id))
            return [unit_from_row(r) for r in rows.mappings()]

    async def lots(self, lot: str | None = None) -> list[Lot]:
        query = select(t.lots).order_by(t.lots.c.id)
        if lot is not None:
            query = query.where(t.lots.c.id == lot)
        async with self._engine.connect() as conn:
            return [lot_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def balances(
        self, unit: str | None = None, lot: str | None = None, material: str | None = None
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
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [
                Balance(StorageUnitId(u), LotId(lo), MaterialId(m), Decimal(q), uom)
                for u, lo, m, q, uom in rows
            ]

    async def movement(self, movement_id: str) -> Movement | None:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(t.movements).where(t.movements.c.id == movement_id))
            row = rows.mappings().first()
            return None if row is None else movement_from_row(row)

    async def history(
        self,
        unit: str | None = None,
        lot: str | None = None,
        since: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[Movement]:
        m = t.movements
        query = select(m).where(m.c.seq > after_seq).order_by(m.c.seq)
        if unit is not None:
            query = query.where(or_(m.c.from_unit == unit, m.c.to_unit == unit))
        if lot is not None:
            query = query.where(m.c.lot == lot)
        if since is not None:
            query = query.where(m.c.timestamp >= since)
        if limit is not None:
            query = query.limit(limit)
        async with self._engine.connect() as conn:
            return [movement_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def genealogy(self, lot: str, *, forward: bool) -> list[GenealogyLink]:
        """Every edge reachable from `lot`: where-used (forward) or where-from (backward)."""
        links = t.lot_links
        near = links.c.parent if forward else links.c.child
        start = select(
            links.c.parent, links.c.child, links.c.movement_id, literal(1).label("depth")
        ).where(near == lot)
        tree = start.cte("tree", recursive=True)
        frontier = tree.c.child if forward else tree.c.parent
        step = (
            select(
                links.c.parent,
                links.c.child,
                links.c.movement_id,
                (tree.c.depth + 1).label("depth"),
            )
            .join(tree, near == frontier)
            .where(tree.c.depth < MAX_TRACE_DEPTH)
        )
        tree = tree.union(step)
        query = select(tree).order_by(tree.c.depth, tree.c.parent, tree.c.child)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [
                GenealogyLink(LotId(p), LotId(c), MovementId(mid), int(d)) for p, c, mid, d in rows
            ]

    async def latest_measurements(self) -> dict[StorageUnitId, Measurement]:
        m = t.measurements
        latest = select(m.c.unit, func.max(m.c.id).label("id")).group_by(m.c.unit).subquery()
        query = select(m).join(latest, and_(m.c.id == latest.c.id))
        async with self._engine.connect() as conn:
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
        m = t.movements
        kinds = [str(MovementKind.RECEIPT), str(MovementKind.PRODUCTION), str(MovementKind.COUNT)]
        query = (
            select(m.c.lot)
            .where(m.c.to_unit == unit, m.c.kind.in_(kinds))
            .order_by(m.c.seq.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            lot = (await conn.execute(query)).scalar()
            return None if lot is None else LotId(lot)

    async def chain_heads(self) -> dict[str, tuple[int, str]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(t.audit_heads.c.writer, t.audit_heads.c.seq, t.audit_heads.c.hash)
            )
            return {w: (int(s), h) for w, s, h in rows}

    async def verify(self) -> VerifyReport:
        """Check every audit chain, the movements against their audit records, and balances."""
        async with self._engine.connect() as conn:
            audited: dict[str, str] = {}
            chains: dict[str, int] = {}
            problems: list[VerifyProblem] = []
            writers = union(select(t.audit.c.writer), select(t.audit_heads.c.writer))
            heads = dict(
                ((w, (int(s), h)) for w, s, h in await conn.execute(
                    select(t.audit_heads.c.writer, t.audit_heads.c.seq, t.audit_heads.c.hash)
                ))
            )  # fmt: skip
            records = 0
            for (writer,) in (await conn.execute(writers)).all():
                expected_seq, prev = 1, GENESIS_HASH
                broken = False
                async for row in _pages(conn, writer):
                    records += 1
                    record = audit_from_row(row)
                    why = check_record(record, expected_seq, prev)
                    if why is not None and not broken:
                        problems.append(VerifyProblem(writer, record.seq, int(row["id"]), why))
                        broken = True
                    if record.object_type == "movement":
                        audited[record.object_id] = record.new
                    expected_seq, prev = record.seq + 1, record.hash
                chains[writer] = expected_seq - 1
                head = heads.get(writer)
                if not broken and head is not None and head != (expected_seq - 1, prev):
                    problems.append(
                        VerifyProblem(
                            writer, head[0], None,
                            f"chain ends at seq {expected_seq - 1} but its head says {head[0]}"
                            " (records at the end deleted, or head edited)",
                        )
                    )  # fmt: skip
            movements = 0
            book: dict[tuple[StorageUnitId, LotId], Decimal] = defaultdict(Decimal)
            rows = await conn.stream(select(t.movements).order_by(t.movements.c.seq))
            async for row in rows.mappings():
                movements += 1
                m = movement_from_row(row)
                for unit, lot, delta in m.legs():
                    book[(unit, lot)] += delta
                recorded = audited.pop(m.id, None)
                if recorded is None:
                    problems.append(
                        VerifyProblem(
                            "movements", m.seq, m.seq, f"movement {m.id} has no audit record"
                        )
                    )
                elif recorded != movement_digest(m):
                    problems.append(
                        VerifyProblem(
                            "movements", m.seq, m.seq,
                            f"movement {m.id} differs from its audit record (row edited)",
                        )
                    )  # fmt: skip
            for movement_id in audited:
                problems.append(
                    VerifyProblem("movements", None, None, f"movement {movement_id} was deleted")
                )
            for b_unit, b_lot, quantity in await conn.execute(
                select(t.balances.c.unit, t.balances.c.lot, t.balances.c.quantity)
            ):
                if Decimal(quantity) != book.pop((b_unit, b_lot), Decimal(0)):
                    problems.append(
                        VerifyProblem(
                            "balances", None, None,
                            f"balance of lot {b_lot} in {b_unit} ({quantity}) does not equal "
                            "the sum of its movements",
                        )
                    )  # fmt: skip
            for (unit, lot), quantity in book.items():
                if quantity != 0:
                    problems.append(
                        VerifyProblem(
                            "balances", None, None, f"balance of lot {lot} in {unit} is missing"
                        )
                    )
            return VerifyReport(chains, records, movements, tuple(problems))


async def _pages(conn: AsyncConnection, writer: str) -> AsyncIterator[Mapping[Any, Any]]:
    """Audit rows of one chain in sequence order, a page at a time."""
    last = -1
    while True:
        rows = (
            (
                await conn.execute(
                    select(t.audit)
                    .where(t.audit.c.writer == writer, t.audit.c.seq > last)
                    .order_by(t.audit.c.seq)
                    .limit(VERIFY_PAGE)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield row
        last = int(rows[-1]["seq"])

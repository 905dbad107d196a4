"""Value history in the ledger database (table `value_history`, revision 0002).

Samples arrive in batches (an OPC UA history buffer flushes about once a
second with hundreds of points): `append` writes one batch as one
transaction through the same kind of `TransactionRunner` the ledger writer
uses (SQLite: a dedicated thread, BEGIN IMMEDIATE; PostgreSQL: asyncpg), and
`read` queries the read engine. `prune` deletes old samples in small chunks
so that it never holds SQLite's write lock long enough to stall the ledger.

Stored text: times fixed-width UTC (`format_timestamp`, sorts like time on
both backends), values JSON (`12.5`, `"text"`), NULL for no value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from inventory_core.clock import Clock, SystemClock, format_timestamp
from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.domain.history_point import HistoryPoint, HistoryValue
from inventory_core.log import get_logger
from inventory_core.store import tables as t
from inventory_core.store.engine import create_read_engine, create_runner
from inventory_core.store.migrate import current_revision, head_revision, upgrade

__all__ = ["DEFAULT_RETENTION", "PRUNE_CHUNK", "HistoryStore"]

DEFAULT_RETENTION = timedelta(days=7)
PRUNE_CHUNK = 5000
log = get_logger(__name__)


class HistoryStore:
    """Append, read and prune value history at `url` (the ledger database).

    Use as `async with HistoryStore(url) as store:` or call `open()`/`close()`.
    `open` checks that the schema is at the newest revision (`migrate=True`
    upgrades it first).
    """

    def __init__(
        self,
        url: str,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Clock | None = None,
        create: bool = False,
    ) -> None:
        # Late import: the package __init__ imports this module's siblings.
        from inventory_core.store import _or_error, check_url

        if retention <= timedelta(0):
            raise ValueError(f"retention must be positive, got {retention}")
        check_url(url, create=create)
        self.url = url
        self.retention = retention
        self._clock = clock or SystemClock()
        self._read_engine = _or_error(create_read_engine, url)
        self._runner = _or_error(create_runner, url)
        self._insert = t.value_history.insert()

    async def __aenter__(self) -> HistoryStore:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def open(self, *, migrate: bool = False) -> None:
        try:
            if migrate:
                await upgrade(self._read_engine)
            revision = await current_revision(self._read_engine)
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"cannot open value history: {_first_line(exc)}") from exc
        if revision != head_revision():
            state = "has no ledger schema" if revision is None else f"is at schema {revision}"
            raise LedgerUnavailable(f"value history: the database {state}; run: invops db upgrade")

    async def close(self) -> None:
        await self._runner.close()
        await self._read_engine.dispose()

    async def append(self, points: Sequence[HistoryPoint]) -> int:
        """Store `points` in one transaction; returns how many were stored."""
        if not points:
            return 0
        rows = [_to_row(p) for p in points]

        def work(conn: Connection) -> None:
            conn.execute(self._insert, rows)

        try:
            await self._runner.run(work)
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"value history write failed: {_first_line(exc)}") from exc
        return len(rows)

    async def read(
        self,
        node: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        *,
        newest_first: bool = False,
    ) -> list[HistoryPoint]:
        """Samples of `node` with start <= source_time <= end (None = open), in time order
        (newest first when asked), at most `limit` of them."""
        h = t.value_history
        query = select(h.c.source_time, h.c.server_time, h.c.value, h.c.status).where(
            h.c.node == node
        )
        if start is not None:
            query = query.where(h.c.source_time >= format_timestamp(start))
        if end is not None:
            query = query.where(h.c.source_time <= format_timestamp(end))
        if newest_first:
            query = query.order_by(h.c.source_time.desc(), h.c.id.desc())
        else:
            query = query.order_by(h.c.source_time, h.c.id)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must not be negative, got {limit}")
            query = query.limit(limit)
        try:
            async with self._read_engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"value history read failed: {_first_line(exc)}") from exc
        return [
            HistoryPoint(
                node=node,
                source_time=_parse_time(source),
                server_time=None if server is None else _parse_time(server),
                value=_decode(value),
                status=int(status),
            )
            for source, server, value, status in rows
        ]

    async def nodes(self) -> list[str]:
        """Every series name with stored samples."""
        h = t.value_history
        try:
            async with self._read_engine.connect() as conn:
                rows = await conn.execute(select(h.c.node).distinct().order_by(h.c.node))
                return [name for (name,) in rows]
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"value history read failed: {_first_line(exc)}") from exc

    async def prune(self, older_than: datetime | None = None, *, node: str | None = None) -> int:
        """Delete samples with source_time < `older_than` (default: now - retention),
        of one series or all; returns how many. Runs in chunks of PRUNE_CHUNK rows,
        one short transaction each."""
        cutoff = older_than if older_than is not None else self._clock.now() - self.retention
        h = t.value_history
        condition = h.c.source_time < format_timestamp(cutoff)
        if node is not None:
            condition = condition & (h.c.node == node)
        chunk = select(h.c.id).where(condition).limit(PRUNE_CHUNK).scalar_subquery()
        statement = delete(h).where(h.c.id.in_(chunk))

        def work(conn: Connection) -> int:
            return int(conn.execute(statement).rowcount)

        deleted = 0
        try:
            while True:
                count = await self._runner.run(work)
                deleted += count
                if count < PRUNE_CHUNK:
                    break
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"value history prune failed: {_first_line(exc)}") from exc
        if deleted:
            log.info("value_history_pruned", samples=deleted, before=cutoff.isoformat())
        return deleted


def _to_row(point: HistoryPoint) -> dict[str, Any]:
    return {
        "node": point.node,
        "source_time": format_timestamp(point.source_time),
        "server_time": None if point.server_time is None else format_timestamp(point.server_time),
        "value": _encode(point.value),
        "status": point.status,
    }


def _encode(value: HistoryValue) -> str | None:
    return None if value is None else json.dumps(value)


def _decode(text: str | None) -> HistoryValue:
    if text is None:
        return None
    value = json.loads(text)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return value
    return text  # not written by this module: hand back the stored text as it is


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__

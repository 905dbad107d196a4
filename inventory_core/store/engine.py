"""Engines for the ledger: SQLite (WAL, synchronous=FULL) or PostgreSQL (asyncpg).

Reads use an async engine (aiosqlite / asyncpg). Writes go through a
`TransactionRunner` that runs one batch as a synchronous unit of work:
- SQLite: in one dedicated thread on SQLAlchemy's sync engine over the stdlib
  sqlite3 module (the module aiosqlite wraps). A batch then costs one thread
  hop instead of one per statement, and the batch's Python work and fsync run
  beside the event loop instead of stalling it between statements.
- PostgreSQL: on the asyncpg connection through `AsyncConnection.run_sync`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


class TransactionRunner(Protocol):
    """Runs a synchronous function inside one committed transaction."""

    @property
    def dialect(self) -> Dialect: ...

    async def run(self, work: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _configure_sqlite(engine: Engine, begin: str) -> None:
    """WAL so readers never block the writer; synchronous=FULL so a commit survives
    power loss; our own BEGIN (IMMEDIATE for the writer: its reads and writes then
    happen under one lock, so no other process can interleave a lost update)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # On the DB-API cursor: run as a statement through SQLAlchemy's execution
        # machinery, BEGIN took a tenth of a single-posting batch.
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute(begin)
        cursor.close()


def create_read_engine(url: str) -> AsyncEngine:
    """The async engine for queries and migrations."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_size=5, pool_pre_ping=True)
    path = sqlite_file(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_size=4)
    _configure_sqlite(engine.sync_engine, "BEGIN")
    return engine


def create_runner(url: str) -> TransactionRunner:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ThreadedSqliteRunner(parsed)
    # Custom plans: the writer's statements are prepared once, and a generic plan made
    # while a table was small (a sequential scan) would stay in use as it grows.
    settings = {"server_settings": {"plan_cache_mode": "force_custom_plan"}}
    return AsyncRunner(
        create_async_engine(url, pool_size=2, pool_pre_ping=True, connect_args=settings)
    )


class SqliteRunner:
    """Batches run one at a time in the calling thread on one sqlite3 connection (the
    ledger writer's own process runs them so; see `writer_process`)."""

    def __init__(self, url: URL) -> None:
        self._engine = sqlalchemy.create_engine(
            url.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0
        )
        _configure_sqlite(self._engine, "BEGIN IMMEDIATE")
        self._conn: Connection | None = None  # used in one thread only

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        # One connection kept between batches (no pool checkout and reset per batch);
        # after a failed batch a new one, as a fresh start.
        if self._conn is None:
            self._conn = self._engine.connect()
        try:
            with self._conn.begin():
                return work(self._conn)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    async def run(self, work: Callable[[Connection], T]) -> T:
        return self._in_transaction(work)

    def _dispose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()

    async def close(self) -> None:
        self._dispose()


class ThreadedSqliteRunner(SqliteRunner):
    """Batches run one at a time in a dedicated thread with its own sqlite3 connection."""

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")

    async def run(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._in_transaction, work)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._dispose)
        self._thread.shutdown(wait=True)


class AsyncRunner:
    """Batches run on an async engine's connection (PostgreSQL/asyncpg)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    async def run(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        await self._engine.dispose()

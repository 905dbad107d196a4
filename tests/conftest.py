"""Shared fixtures: ledger URLs for SQLite (a real file) and PostgreSQL (a fresh database).

PostgreSQL tests use INVOPS_TEST_PG_URL (default: the local server's `test`
database) and skip with the reason when nothing answers there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import structlog

from inventory_core import Ledger, open_ledger
from inventory_core.domain.model import (
    LotStatus,
    MaterialDefinition,
    MaterialId,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from invops.logs import NOISY_LOGGERS

PG_URL = os.environ.get("INVOPS_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(PG_URL), timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_pg_skip_reason: str | None = None


def pg_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when the server answers."""
    global _pg_skip_reason
    if _pg_skip_reason is None:
        try:
            asyncio.run(_pg_admin("SELECT 1"))
            _pg_skip_reason = ""
        except Exception as exc:  # any failure to connect means: skip, with the reason
            _pg_skip_reason = f"PostgreSQL not reachable at {PG_URL}: {exc}"
    return _pg_skip_reason or None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A freshly created, empty PostgreSQL database, dropped afterwards."""
    reason = pg_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"invops_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/ledger.db"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """The same test against both backends."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


MATERIALS = (
    MaterialDefinition(
        MaterialId("ETHANOL-96"), "Ethanol 96 %", "kg", Decimal("0.80"), LotStatus.RELEASED
    ),
    MaterialDefinition(MaterialId("GLYCOL"), "Glycol", "kg", Decimal("1.11"), LotStatus.QUARANTINE),
    MaterialDefinition(MaterialId("SUGAR"), "Sugar", "kg", None, LotStatus.RELEASED),
    MaterialDefinition(
        MaterialId("SYRUP"), "Sugar syrup", "kg", Decimal("1.3"), LotStatus.QUARANTINE
    ),
)


def _unit(
    uid: str, area: str, kind: StorageKind, cap: str, uom: str, mat: str | None
) -> StorageUnit:
    return StorageUnit(
        StorageUnitId(uid), "PLANT1", area, kind, Decimal(cap), uom,
        None if mat is None else MaterialId(mat),
    )  # fmt: skip


UNITS = (
    _unit("TK-101", "TANKFARM", StorageKind.TANK, "50000", "L", "ETHANOL-96"),
    _unit("TK-102", "TANKFARM", StorageKind.TANK, "30000", "L", "GLYCOL"),
    _unit("TK-103", "TANKFARM", StorageKind.TANK, "30000", "L", None),
    _unit("SI-201", "SILOS", StorageKind.SILO, "80", "t", "SUGAR"),
    _unit("SI-202", "SILOS", StorageKind.SILO, "80", "t", "SUGAR"),
    _unit("TK-301", "MIXING", StorageKind.TANK, "10000", "L", "SYRUP"),
)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    """An open ledger with the test plant's master data, on SQLite and on PostgreSQL."""
    async with open_ledger(ledger_url, writer_id="test-a", migrate=True) as opened:
        await opened.sync_master_data(MATERIALS, UNITS)
        yield opened


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)
    structlog.reset_defaults()

"""A request the database refuses fails alone, without failing the others of its group
commit and without taking the ledger down (issue 12, item 7's second fix).

Real SQLite files and real PostgreSQL databases. The database's refusal is injected as the
database itself would give it: a trigger (both backends) or a CHECK constraint (PostgreSQL)
that refuses one value, and a NUL byte handed to the store past the ledger's validation
(PostgreSQL refuses NUL in text: "invalid byte sequence for encoding UTF8: 0x00").
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.domain.derivation import DeriverConfig, StrappingTable
from inventory_core.domain.errors import LedgerUnavailable, RequestRefused
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    StorageUnitId,
)
from inventory_core.domain.posting import payload_hash
from inventory_core.measurement_service import MeasuredUnit, MeasurementService
from inventory_core.store import upgrade_schema
from invops.plc_bridge import LedgerBridge
from invops.reading_buffer import ReadingBuffer
from plc_connectors import Quality, Sample
from tests.conftest import MATERIALS, UNITS, _pg_dsn

ETHANOL = MaterialId("ETHANOL-96")
TK = StorageUnitId("TK-101")
POISON = "poison"  # the reason the injected trigger/constraint refuses


def receipt(lot: str, reason: str = "", **changes: Any) -> PostingRequest:
    request = PostingRequest(
        MovementKind.RECEIPT, ETHANOL, LotId(lot), Decimal(1), "kg", to_unit=TK, reason=reason
    )
    return replace(request, **changes)


# -- the database side -----------------------------------------------------------------


async def sql(url: str, statement: str, *, script: bool = False) -> list[tuple[Any, ...]]:
    """Run SQL on the ledger's database outside the ledger (stdlib sqlite3 or asyncpg):
    a query's rows, or (`script`) several statements."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        try:
            if script:
                conn.executescript(statement)
                return []
            return conn.execute(statement).fetchall()
        finally:
            conn.close()
    import asyncpg

    pg = await asyncpg.connect(_pg_dsn(url))
    try:
        if script:
            await pg.execute(statement)
            return []
        return [tuple(r) for r in await pg.fetch(statement)]
    finally:
        await pg.close()


SQLITE_TRIGGER = f"""
CREATE TRIGGER refuse_poison BEFORE INSERT ON movements
WHEN NEW.reason = '{POISON}' OR (NEW.source = 'plc' AND NEW.kind = 'receipt')
BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;
"""
PG_TRIGGER = f"""
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.reason = '{POISON}' OR (NEW.source = 'plc' AND NEW.kind = 'receipt') THEN
    RAISE EXCEPTION 'refused by the test trigger';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON movements
FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""
PG_CHECK = f"ALTER TABLE movements ADD CONSTRAINT refuse_poison CHECK (reason <> '{POISON}')"


@asynccontextmanager
async def refusing_ledger(
    url: str, injection: str, on_commit: Callable[[int, float], None] | None = None
) -> AsyncIterator[Ledger]:
    """A ledger whose database refuses what `injection` says (installed before the
    ledger opens, so no prepared statement predates it)."""
    await upgrade_schema(url)
    postgres = url.startswith("postgresql")
    if injection == "trigger":
        await sql(url, PG_TRIGGER if postgres else SQLITE_TRIGGER, script=True)
    elif injection == "check":
        await sql(url, PG_CHECK, script=True)
    async with open_ledger(url, writer_id="text-t", on_commit=on_commit) as ledger:
        await ledger.sync_master_data(MATERIALS, UNITS)
        yield ledger


def poisoned(injection: str) -> PostingRequest:
    return receipt("POISON-1", "a\x00b" if injection == "nul" else POISON)


async def submit(ledger: Ledger, request: PostingRequest, *, bypass: bool) -> object:
    """Post through the ledger, or (`bypass`) straight to its store, past validation: the
    only way left to hand the database a NUL byte."""
    if bypass:
        return await ledger._store.submit(request, payload_hash(request))
    return await ledger.post(request)


@pytest.fixture(
    params=[
        pytest.param(("sqlite_url", "trigger"), id="sqlite-trigger"),
        pytest.param(("pg_url", "trigger"), id="postgres-trigger"),
        pytest.param(("pg_url", "check"), id="postgres-check"),
        pytest.param(("pg_url", "nul"), id="postgres-nul-past-validation"),
    ]
)
def injected(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(ledger URL, how its database refuses one request)."""
    backend, injection = request.param
    return str(request.getfixturevalue(backend)), injection


async def test_a_request_the_database_refuses_fails_alone_in_its_group_commit(
    injected: tuple[str, str],
) -> None:
    url, injection = injected
    batches: list[int] = []
    async with refusing_ledger(url, injection, lambda size, _s: batches.append(size)) as ledger:
        innocent = [receipt(f"GOOD-{i}", "delivery") for i in range(19)]
        requests = [*innocent[:7], poisoned(injection), *innocent[7:]]
        bypass = injection == "nul"
        results = await asyncio.gather(
            *(submit(ledger, r, bypass=bypass) for r in requests), return_exceptions=True
        )

        refused = results.pop(7)
        assert [r for r in results if isinstance(r, BaseException)] == []  # innocent: posted
        assert isinstance(refused, RequestRefused), refused  # a user error, not an outage
        assert not isinstance(refused, LedgerUnavailable)
        assert str(refused).startswith("the ledger database refused this request: ")
        lots = [m.lot for m in await ledger.history()]
        assert sorted(lots) == sorted(r.lot for r in innocent)  # nothing of the poison
        assert max(batches) > 1  # the innocent shared a commit with it, and got through
        # The refusal is in the audit trail, as a rule's rejection would be; the chain holds.
        rows = await sql(url, "SELECT reason FROM audit WHERE action = 'rejected'")
        assert [r[0] for r in rows] == [f"RequestRefused: {refused}"]
        assert (await ledger.verify()).ok
        # The ledger is up: the next posting goes through.
        await ledger.post(receipt("AFTER-1", "delivery"))


async def test_a_plc_movement_the_database_refuses_does_not_mark_the_ledger_down(
    ledger_url: str, tmp_path: Path
) -> None:
    url = ledger_url
    ethanol = next(m for m in MATERIALS if m.id == ETHANOL)
    unit = MeasuredUnit(
        TK, ethanol, "L",
        DeriverConfig(TK, Decimal(40), timedelta(minutes=5), timedelta(0)),
        StrappingTable.from_points([(0, 0), (5000, 50000)]),
    )  # fmt: skip
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)

    def sample(second: int, level_mm: float) -> Sample:
        at = t0 + timedelta(seconds=second)
        return Sample("PLC", at, Quality.GOOD, at, {"TK-101.level": level_mm})

    async with refusing_ledger(url, "trigger") as ledger:  # refuses PLC receipts
        service = MeasurementService(ledger, [unit])
        await service.start()
        states: list[bool] = []
        buffer = ReadingBuffer(tmp_path / "buffer.db")
        bridge = LedgerBridge(
            service, {"TK-101.level": TK}, buffer=buffer,
            ledger_state=lambda up, error: states.append(up),
        )  # fmt: skip
        await bridge.feed(sample(0, 1000.0))  # opening count: stored
        await bridge.feed(sample(1, 1010.0))  # +80 kg receipt: the database refuses it
        await bridge.feed(sample(2, 1000.0))  # -80 kg issue: stored
        assert states == [] and not bridge.buffering and len(buffer) == 0
        kinds = [m.kind for m in await ledger.history(unit="TK-101")]
        assert kinds == [MovementKind.COUNT, MovementKind.ISSUE]
        buffer.close()

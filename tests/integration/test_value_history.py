"""Value history in the ledger database, on SQLite and PostgreSQL: append, read, prune."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inventory_core import HistoryPoint, HistoryStore, open_history
from inventory_core.domain.errors import LedgerUnavailable, ValidationError
from inventory_core.store import upgrade_schema

T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
BAD_COMMUNICATION = 0x80050000


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def store(ledger_url: str) -> AsyncIterator[HistoryStore]:
    await upgrade_schema(ledger_url)
    async with open_history(ledger_url) as opened:
        yield opened


async def test_points_read_back_in_time_order_with_inclusive_bounds(store: HistoryStore) -> None:
    # appended out of order, across two series
    await store.append(
        [HistoryPoint("TK-101.Level", _at(s), float(s)) for s in (3, 1, 4, 0, 2)]
        + [HistoryPoint("TK-102.Level", _at(s), -float(s)) for s in range(5)]
    )
    everything = await store.read("TK-101.Level")
    assert [p.value for p in everything] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(p.node == "TK-101.Level" for p in everything)
    assert [p.source_time for p in everything] == [_at(s) for s in range(5)]

    bounded = await store.read("TK-101.Level", _at(1), _at(3))
    assert [p.value for p in bounded] == [1.0, 2.0, 3.0]
    assert [p.value for p in await store.read("TK-101.Level", start=_at(3))] == [3.0, 4.0]
    assert [p.value for p in await store.read("TK-101.Level", end=_at(1))] == [0.0, 1.0]
    assert [p.value for p in await store.read("TK-101.Level", limit=2)] == [0.0, 1.0]
    newest = await store.read("TK-101.Level", end=_at(3), limit=2, newest_first=True)
    assert [p.value for p in newest] == [3.0, 2.0]
    assert await store.read("TK-999.Level") == []
    assert await store.nodes() == ["TK-101.Level", "TK-102.Level"]


async def test_values_status_and_timestamps_round_trip_exactly(store: HistoryStore) -> None:
    points = [
        HistoryPoint("TK-101.Level", _at(0.000001), 0.1 + 0.2, 0, _at(0.5)),
        HistoryPoint("TK-101.Level", _at(1), "released", 0),
        HistoryPoint("TK-101.Level", _at(2), None, BAD_COMMUNICATION),
        HistoryPoint("TK-101.Level", _at(3), 12345678.123456789, 0x40920000),
        HistoryPoint("TK-101.Level", _at(4), 7, 0),  # ints are stored as numbers
    ]
    await store.append(points)
    read = await store.read("TK-101.Level")
    assert read[:4] == points[:4]
    assert read[0].value == 0.1 + 0.2
    assert read[0].server_time == _at(0.5)
    assert read[2].status == BAD_COMMUNICATION
    assert read[4].value == 7.0 and isinstance(read[4].value, float)
    assert all(p.source_time.tzinfo is UTC for p in read)


async def test_a_batch_of_points_is_one_transaction(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = store._runner
    calls = []
    original = runner.run

    async def counting(work: Any) -> Any:
        calls.append(work)
        return await original(work)

    monkeypatch.setattr(runner, "run", counting)
    batch = [HistoryPoint(f"UNIT-{n % 500}.Level", _at(n // 500), float(n)) for n in range(1500)]
    assert await store.append(batch) == 1500
    assert len(calls) == 1
    assert await store.append([]) == 0
    assert len(calls) == 1
    assert len(await store.read("UNIT-7.Level")) == 3


async def test_prune_deletes_only_older_samples(store: HistoryStore) -> None:
    await store.append(
        [HistoryPoint(f"TK-10{u}.Level", _at(s), float(s)) for u in (1, 2) for s in range(10)]
    )
    assert await store.prune(_at(4), node="TK-101.Level") == 4
    assert [p.value for p in await store.read("TK-101.Level")] == [float(s) for s in range(4, 10)]
    assert len(await store.read("TK-102.Level")) == 10
    assert await store.prune(_at(8)) == 4 + 8
    assert [p.value for p in await store.read("TK-102.Level")] == [8.0, 9.0]


async def test_prune_by_default_keeps_the_retention_period(ledger_url: str) -> None:
    await upgrade_schema(ledger_url)
    clock = FakeClock(_at(0) + timedelta(days=7, hours=1, minutes=30))
    async with open_history(ledger_url, clock=clock) as store:
        assert store.retention == timedelta(days=7)
        await store.append(
            [HistoryPoint("TK-101.Level", _at(h * 3600), float(h)) for h in range(4)]
        )
        assert await store.prune() == 2  # hours 0 and 1 are older than 7 days
        assert [p.value for p in await store.read("TK-101.Level")] == [2.0, 3.0]


async def test_history_survives_reopening_the_database(ledger_url: str) -> None:
    await upgrade_schema(ledger_url)
    async with open_history(ledger_url) as store:
        await store.append([HistoryPoint("TK-101.Level", _at(1), 42.5)])
    async with open_history(ledger_url) as reopened:
        assert [p.value for p in await reopened.read("TK-101.Level")] == [42.5]


async def test_open_refuses_a_database_without_the_schema(sqlite_url: str, tmp_path: Path) -> None:
    with pytest.raises(LedgerUnavailable, match="does not exist"):
        async with open_history(sqlite_url):
            pass
    (tmp_path / "ledger.db").touch()
    with pytest.raises(LedgerUnavailable, match="empty file, not an invops ledger"):
        async with open_history(sqlite_url):
            pass
    async with open_history(sqlite_url, migrate=True) as store:
        assert await store.read("TK-101.Level") == []


def test_history_points_need_utc_aware_times_and_valid_values() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        HistoryPoint("TK-101.Level", datetime(2026, 1, 1), 1.0)
    with pytest.raises(ValidationError, match="series name"):
        HistoryPoint("", T0, 1.0)
    with pytest.raises(ValidationError, match="value"):
        HistoryPoint("TK-101.Level", T0, True)
    with pytest.raises(ValidationError, match="StatusCode"):
        HistoryPoint("TK-101.Level", T0, 1.0, status=-1)
    local = datetime(2026, 1, 1, 7, 0, tzinfo=UTC).astimezone()
    assert HistoryPoint("TK-101.Level", local, 1.0).source_time.tzinfo is UTC

"""The SQLite writer in a process of its own (`open_ledger(writer_process=True)`, as the
service runs it): the same results and errors as the in-thread writer, the parent's
clock, lease fencing and log records across the process boundary, and crashes on
either side losing no acknowledged posting and leaving no write lock behind.

Real SQLite files, real child processes, real signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.clock import format_timestamp
from inventory_core.domain.errors import (
    InsufficientStock,
    LedgerUnavailable,
    RequestRefused,
    WriterLeaseLost,
)
from inventory_core.domain.lease import WriterLease
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    StorageUnitId,
)
from tests.conftest import MATERIALS, UNITS
from tests.integration.test_balance_report import T0, Clock  # a fixed clock
from tests.integration.test_ledger_refusals import POISON, SQLITE_TRIGGER, sql

TK101 = StorageUnitId("TK-101")
ROOT = Path(__file__).resolve().parents[2]


def receipt(lot: str, key: str | None = None, reason: str = "delivery") -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT, MaterialId("ETHANOL-96"), LotId(lot), Decimal(1), "kg",
        to_unit=TK101, idempotency_key=key, reason=reason,
    )  # fmt: skip


def child_pid(ledger: Ledger) -> int:
    process = ledger._store._writer._process  # type: ignore[union-attr]
    assert process is not None, "no writer process"
    return int(process.pid)


def exited(pid: int) -> bool:
    """The process is gone (or a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def wait_exited(pid: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not exited(pid):
        assert time.monotonic() < deadline, f"writer process {pid} still running"
        await asyncio.sleep(0.05)


@pytest.fixture
async def ledger(sqlite_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(
        sqlite_url, writer_id="wp", migrate=True, writer_process=True, clock=Clock()
    ) as opened:
        await opened.sync_master_data(MATERIALS, UNITS)
        yield opened


async def test_postings_results_and_errors_cross_the_process_boundary(
    ledger: Ledger, sqlite_url: str
) -> None:
    pid = child_pid(ledger)
    assert pid != os.getpid() and not exited(pid)
    results = await asyncio.gather(*(ledger.post(receipt(f"L{n}", f"k{n}")) for n in range(40)))
    assert len({r.movement_id for r in results}) == 40
    again = await ledger.post(receipt("L7", "k7"))  # idempotent replay: the first result
    assert again.movement_id == results[7].movement_id
    with pytest.raises(InsufficientStock):  # a rule's error arrives as its own type
        await ledger.post(
            PostingRequest(MovementKind.ISSUE, MaterialId("ETHANOL-96"), LotId("L1"),
                           Decimal(5), "kg", from_unit=TK101)
        )  # fmt: skip
    moved = await ledger.history()
    assert sorted(m.lot for m in moved) == sorted(f"L{n}" for n in range(40))
    # booked at the parent's clock, not the child's
    assert {m.timestamp for m in moved} == {format_timestamp(T0)}
    assert (await ledger.verify()).ok


async def test_group_commits_are_reported_to_on_commit(sqlite_url: str) -> None:
    batches: list[int] = []
    async with open_ledger(
        sqlite_url, writer_id="wp", migrate=True, writer_process=True,
        on_commit=lambda size, seconds: batches.append(size),
    ) as ledger:  # fmt: skip
        await ledger.sync_master_data(MATERIALS, UNITS)
        batches.clear()
        await asyncio.gather(*(ledger.post(receipt(f"L{n}")) for n in range(30)))
        assert sum(batches) == 30
        assert max(batches) > 1  # concurrent postings share commits


async def test_close_commits_what_was_submitted_and_stops_the_child(sqlite_url: str) -> None:
    async with open_ledger(sqlite_url, writer_id="wp", migrate=True, writer_process=True) as ledger:
        await ledger.sync_master_data(MATERIALS, UNITS)
        pid = child_pid(ledger)
        posts = [asyncio.create_task(ledger.post(receipt(f"L{n}"))) for n in range(50)]
        await asyncio.sleep(0)  # submitted, not yet answered
    assert all(p.done() and p.exception() is None for p in posts)
    assert exited(pid)
    async with open_ledger(sqlite_url, writer_id="check") as reopened:
        assert len(await reopened.history()) == 50
        with pytest.raises(LedgerUnavailable, match="not running"):
            await ledger.post(receipt("LATE"))


async def test_signals_to_the_process_group_leave_the_child_to_its_parent(
    ledger: Ledger,
) -> None:
    pid = child_pid(ledger)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, number)
    await asyncio.sleep(0.2)
    await ledger.post(receipt("AFTER-SIGNALS"))
    assert child_pid(ledger) == pid and not exited(pid)


async def test_a_database_refusal_fails_alone_and_the_childs_log_reaches_the_parent(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_ledger(sqlite_url, writer_id="wp", migrate=True) as setup:
        await setup.sync_master_data(MATERIALS, UNITS)
    await sql(sqlite_url, SQLITE_TRIGGER, script=True)
    caplog.set_level(logging.INFO, logger="inventory_core")
    async with open_ledger(sqlite_url, writer_id="wp", writer_process=True) as ledger:
        results = await asyncio.gather(
            ledger.post(receipt("GOOD-1")), ledger.post(receipt("BAD", reason=POISON)),
            ledger.post(receipt("GOOD-2")), return_exceptions=True,
        )  # fmt: skip
        assert isinstance(results[1], RequestRefused), results
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
    refused = [r for r in caplog.records if r.getMessage().startswith("ledger_request_refused")]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]
    record = refused[0]
    assert record.name == "inventory_core.store.writer" and record.levelno == logging.INFO
    assert record.event_dict["request"] == "PostingRequest"  # type: ignore[attr-defined]
    assert record.process != os.getpid()  # logged by the child


class NotARequest:
    """What a bug could hand the writer: no rule knows it, so the planner fails on it."""


async def test_a_bug_in_the_child_fails_that_request_and_its_traceback_reaches_the_log(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(LedgerUnavailable, match="ledger write failed"):
        await ledger._store.submit(NotARequest())  # type: ignore[arg-type]
    [record] = [r for r in caplog.records if r.getMessage().startswith("ledger_write_failed")]
    assert record.levelno == logging.ERROR and record.process != os.getpid()
    assert record.exc_info is not None
    shown = str(record.exc_info[1])  # the child's traceback, as its text
    assert shown.startswith("Traceback") and "AttributeError" in shown, shown
    assert "WriterTraceback: Traceback" in logging.Formatter().format(record)
    await ledger.post(receipt("AFTER-BUG"))  # the writer goes on


async def test_a_killed_child_fails_what_was_in_flight_and_the_next_request_restarts_it(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    acked = await asyncio.gather(*(ledger.post(receipt(f"A{n}", f"a{n}")) for n in range(20)))
    pid = child_pid(ledger)
    os.kill(pid, signal.SIGSTOP)  # handed over, never answered
    posts = [asyncio.create_task(ledger.post(receipt(f"B{n}", f"b{n}"))) for n in range(30)]
    await asyncio.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    outcomes = await asyncio.gather(*posts, return_exceptions=True)
    assert all(isinstance(o, LedgerUnavailable) for o in outcomes), outcomes
    assert "retry it with the same idempotency key" in str(outcomes[0])
    assert any(r.getMessage().startswith("ledger_writer_process_exited") for r in caplog.records)
    # the next request starts a new child; the retries with their keys book each once
    retried = await asyncio.gather(*(ledger.post(receipt(f"B{n}", f"b{n}")) for n in range(30)))
    assert child_pid(ledger) != pid
    again = await asyncio.gather(*(ledger.post(receipt(f"A{n}", f"a{n}")) for n in range(20)))
    assert [r.movement_id for r in again] == [r.movement_id for r in acked]
    assert len(await ledger.history()) == 50 == len(acked) + len(retried)
    assert (await ledger.verify()).ok


async def test_a_relative_path_names_the_same_file_after_the_working_directory_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plant").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "plant")
    url = "sqlite+aiosqlite:///ledger.db"
    async with open_ledger(url, writer_id="wp", migrate=True, writer_process=True) as ledger:
        await ledger.sync_master_data(MATERIALS, UNITS)
        await ledger.post(receipt("FIRST"))
        monkeypatch.chdir(tmp_path / "elsewhere")
        os.kill(child_pid(ledger), signal.SIGKILL)
        await wait_exited(child_pid(ledger))
        await ledger.post(receipt("SECOND"))  # by a new child, started from elsewhere
    assert not (tmp_path / "elsewhere" / "ledger.db").exists()
    file = tmp_path / "plant" / "ledger.db"
    async with open_ledger(f"sqlite+aiosqlite:///{file}", writer_id="check") as reopened:
        assert sorted(m.lot for m in await reopened.history()) == ["FIRST", "SECOND"]


PARENT = r"""
import asyncio, sys
from inventory_core import open_ledger
from tests.conftest import MATERIALS, UNITS
from tests.integration.test_balance_report import T0, Clock  # a fixed clock
from tests.integration.test_writer_process import child_pid, receipt

async def main() -> None:
    url = sys.argv[1]
    async with open_ledger(url, writer_id="wp", migrate=True, writer_process=True) as ledger:
        await ledger.sync_master_data(MATERIALS, UNITS)
        for n in range(20):
            await ledger.post(receipt(f"ACK-{n}", f"ack-{n}"))
        late = [asyncio.create_task(ledger.post(receipt(f"LATE-{n}"))) for n in range(300)]
        await asyncio.sleep(0.01)  # handed over to the child
        print(child_pid(ledger), flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_kill_9_of_the_service_lets_the_child_finish_and_release_the_file(
    sqlite_url: str,
) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, sqlite_url, cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        pid = int(await asyncio.wait_for(parent.stdout.readline(), 60))
    finally:
        if parent.returncode is None:
            parent.kill()  # SIGKILL: no shutdown code runs in the service
        await parent.wait()
    await wait_exited(pid)  # the orphaned writer saw end of file, finished and went
    async with asyncio.timeout(20), open_ledger(sqlite_url, writer_id="after") as ledger:
        lots = [m.lot for m in await ledger.history()]
        assert {f"ACK-{n}" for n in range(20)} <= set(lots)  # every acknowledged posting
        assert len(lots) == len(set(lots))
        await ledger.post(receipt("NEXT"))  # no write lock left behind
        assert (await ledger.verify()).ok


async def test_the_writer_lease_fences_the_child_writer(sqlite_url: str) -> None:
    async with open_ledger(sqlite_url, writer_id="setup", migrate=True) as setup:
        await setup.sync_master_data(MATERIALS, UNITS)
    terms = {"duration_s": 1.0, "heartbeat_s": 0.5}
    stale = WriterLease.for_this_process([TK101], **terms)
    async with open_ledger(
        sqlite_url, writer_id="plant-a", lease=stale, writer_process=True
    ) as stalled:
        await stalled.post(receipt("L1", "before"))
        await asyncio.sleep(1.2)  # expired: nobody renewed it
        successor = WriterLease.for_this_process([TK101], **terms)
        async with open_ledger(sqlite_url, writer_id="plant-a", lease=successor) as new:
            with pytest.raises(WriterLeaseLost):
                await stalled.post(receipt("L1", "old"))
            await new.post(receipt("L1", "new"))
            keys = [m.idempotency_key for m in await new.history()]
            assert keys == ["before", "new"]

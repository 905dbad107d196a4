"""kill -9 a process that is posting: every posting it acknowledged is in the ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from inventory_core import open_ledger
from tests.conftest import MATERIALS, UNITS

WORKER = Path(__file__).with_name("ledger_worker.py")
ACKS_BEFORE_KILL = 300


async def _prepare(url: str) -> None:
    async with open_ledger(url, writer_id="setup", migrate=True) as ledger:
        await ledger.sync_master_data(MATERIALS, UNITS)


def test_acknowledged_postings_survive_kill_9(ledger_url: str) -> None:
    asyncio.run(_prepare(ledger_url))
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), ledger_url, "crashy", "stream", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        while len(acknowledged) < ACKS_BEFORE_KILL:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "worker ended"
            key, movement_id = line.split()
            acknowledged[key] = movement_id
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: a batch is usually in flight
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close() if proc.stdout else None
        proc.stderr.close() if proc.stderr else None

    async def check() -> None:
        async with open_ledger(ledger_url, writer_id="checker") as ledger:
            stored = {m.idempotency_key: m.id for m in await ledger.history(lot="CRASH")}
            missing = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
            assert not missing, f"{len(missing)} acknowledged postings lost"
            [balance] = await ledger.balances(lot="CRASH")
            assert balance.quantity == len(stored)
            report = await ledger.verify()
            assert report.ok, report.problems

    asyncio.run(check())

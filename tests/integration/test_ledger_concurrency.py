"""Several service instances (OS processes, own audit chains) posting to one ledger.

Run against one SQLite file and one PostgreSQL database: nothing may be lost,
duplicated or overdrawn, and every chain must verify.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from inventory_core import open_ledger
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    StorageUnitId,
)
from tests.conftest import MATERIALS, UNITS

WORKER = Path(__file__).with_name("ledger_worker.py")
INSTANCES = 4


async def _prepare(url: str, stock: int) -> None:
    async with open_ledger(url, writer_id="setup", migrate=True) as ledger:
        await ledger.sync_master_data(MATERIALS, UNITS)
        await ledger.post(
            PostingRequest(
                MovementKind.RECEIPT,
                MaterialId("ETHANOL-96"),
                LotId("SHARED"),
                Decimal(stock),
                "kg",
                to_unit=StorageUnitId("TK-101"),
            )
        )


def _run_instances(
    url: str, mode: str, count: int, writer: str | None = None
) -> list[dict[str, object]]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, writer or f"instance-{i}", mode, str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(INSTANCES)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_instances_never_overdraw_or_lose_postings(ledger_url: str) -> None:
    stock, per_instance = 150, 60  # 240 issues of 1 kg compete for 150 kg
    asyncio.run(_prepare(ledger_url, stock))
    results = _run_instances(ledger_url, "issue", per_instance)
    accepted = sum(int(r["accepted"]) for r in results)  # type: ignore[call-overload]
    rejected = sum(int(r["rejected"]) for r in results)  # type: ignore[call-overload]
    assert (accepted, rejected) == (stock, INSTANCES * per_instance - stock)

    async def check() -> None:
        async with open_ledger(ledger_url, writer_id="checker") as ledger:
            [balance] = await ledger.balances(unit="TK-101", lot="SHARED")
            assert balance.quantity == 0
            issues = [m for m in await ledger.history(lot="SHARED") if m.kind == "issue"]
            assert len(issues) == stock
            report = await ledger.verify()
            assert report.ok, report.problems
            # every instance audited its work, rejections included
            assert {f"instance-{i}" for i in range(INSTANCES)} <= set(report.chains)

    asyncio.run(check())


def test_instances_sharing_idempotency_keys_post_each_key_once(ledger_url: str) -> None:
    keys = 40
    asyncio.run(_prepare(ledger_url, 1))
    results = _run_instances(ledger_url, "keys", keys)
    for i in range(keys):  # every instance got the same movement id for the same key
        ids = {r["ids"][f"k-{i}"] for r in results}  # type: ignore[index]
        assert len(ids) == 1

    async def check() -> None:
        async with open_ledger(ledger_url, writer_id="checker") as ledger:
            keyed = await ledger.history(lot="KEYED")
            assert len(keyed) == keys
            [balance] = await ledger.balances(lot="KEYED")
            assert balance.quantity == keys
            assert (await ledger.verify()).ok

    asyncio.run(check())


def test_processes_sharing_one_writer_id_keep_one_contiguous_chain(ledger_url: str) -> None:
    """Like several `invops ledger post` commands at once: one chain, no gaps, no forks."""
    stock, per_instance = 100, 40
    asyncio.run(_prepare(ledger_url, stock))
    results = _run_instances(ledger_url, "issue", per_instance, writer="shared")
    assert sum(int(r["accepted"]) for r in results) == stock  # type: ignore[call-overload]

    async def check() -> None:
        async with open_ledger(ledger_url, writer_id="checker") as ledger:
            report = await ledger.verify()
            assert report.ok, report.problems
            # every issue, accepted or rejected, is one record of the shared chain
            assert report.chains["shared"] == INSTANCES * per_instance

    asyncio.run(check())

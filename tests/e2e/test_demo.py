"""`invops demo` as a newcomer runs it: endpoints, moving values, movements, clean stop, restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from prometheus_client.parser import text_string_to_metric_families

from inventory_core.domain.model import MovementKind, Source
from plc_connectors import ERROR_REASONS
from tests.polling import wait_until

INVOPS = [sys.executable, "-m", "invops.cli"]


def start_demo(data_dir: Path, stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOPS_")}
    args = ["demo", "--data-dir", str(data_dir), "--opcua-port", "0", "--metrics-port", "0",
            "--modbus-port", "0", "--s7-port", "0"]  # fmt: skip
    return subprocess.Popen(
        [*INVOPS, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )


def wait_for(path: Path, process: subprocess.Popen[str], within_s: float = 30.0) -> None:
    """Until `path` exists; fails at once, with the demo's stderr, if the demo exits first."""

    def appeared() -> bool:
        assert process.poll() is None, process.communicate()[1]
        return path.exists()

    wait_until(appeared, f"{path.name} from the demo", timeout_s=within_s)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    process = start_demo(tmp_path / "var")
    try:
        wait_for(tmp_path / "var" / "endpoints.json", process)
        yield process, tmp_path / "var"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def movements(data_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(data_dir / "invops.db") as db:
        return db.execute("SELECT idempotency_key, kind, to_unit FROM movements").fetchall()


async def read_level(endpoint: str) -> tuple[float, ua.StatusCode]:
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index("urn:invops:ua:plant")
        tns = await client.get_namespace_index("urn:invops:ua:types")
        node = await client.nodes.objects.get_child(
            [f"{ns}:Inventory", f"{ns}:PLANT1", f"{ns}:TANKFARM", f"{ns}:TK-101", f"{tns}:Level"]
        )
        value = await node.read_data_value()
        assert value.Value is not None and value.StatusCode is not None
        return float(value.Value.Value), value.StatusCode


async def read_level_history(endpoint: str) -> list[ua.DataValue]:
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index("urn:invops:ua:plant")
        tns = await client.get_namespace_index("urn:invops:ua:types")
        node = await client.nodes.objects.get_child(
            [f"{ns}:Inventory", f"{ns}:PLANT1", f"{ns}:TANKFARM", f"{ns}:TK-101", f"{tns}:Level"]
        )
        now = datetime.now(UTC)
        return list(await node.read_raw_history(now - timedelta(hours=1), now))


class Unhealthy(Exception):
    """/healthz answered 503 (with this body)."""


def counter_series(text: str, name: str, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[label] for label in labels): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_demo_serves_moving_values_books_movements_and_stops_cleanly(
    demo: tuple[subprocess.Popen[str], Path],
) -> None:
    process, data_dir = demo
    endpoints = json.loads((data_dir / "endpoints.json").read_text())
    assert endpoints["opcua"].startswith("opc.tcp://127.0.0.1:")

    # SPEC: within 10 s the ledger has movements
    wait_until(lambda: movements(data_dir), "a movement in the ledger", timeout_s=10)

    first, status = asyncio.run(read_level(endpoints["opcua"]))
    assert status.is_good() and 0 < first < 6000
    wait_until(
        lambda: asyncio.run(read_level(endpoints["opcua"]))[0] != first,
        "the TK-101 level to move",
        timeout_s=10,
        interval_s=0.3,
    )

    def healthy() -> bool:  # 200 once every PLC link and the ledger are up, 503 until then
        try:
            with urllib.request.urlopen(endpoints["healthz"], timeout=5) as response:
                assert json.load(response)["status"] == "ok"
                return True
        except urllib.error.HTTPError as exc:
            assert exc.code == 503, exc
            raise Unhealthy(json.load(exc)) from None

    wait_until(healthy, "/healthz 200", timeout_s=10, interval_s=0.2, ignoring=(Unhealthy,))
    with urllib.request.urlopen(endpoints["metrics"], timeout=5) as response:
        text = response.read().decode()
    for needle in (
        "invops_build_info{",
        'invops_plc_up{plc="PLC-MODBUS"} 1.0',
        'invops_plc_up{plc="PLC-S7"} 1.0',
        'invops_storage_fill_ratio{area="TANKFARM",site="PLANT1",unit="TK-101"}',
        'invops_ledger_postings_total{kind="count",source="plc"}',
        "invops_plc_poll_seconds_bucket",
        "invops_opcua_sessions",
    ):
        assert needle in text, needle
    # SPEC §6: labelled counters carry every known series, at 0 until counted.
    errors = counter_series(text, "invops_plc_errors_total", ("plc", "reason"))
    plcs = ("PLC-MODBUS", "PLC-S7")
    assert set(errors) == {(plc, reason) for plc in plcs for reason in ERROR_REASONS}
    assert {errors[plc, "config"] for plc in plcs} == {0.0}  # the demo's tags all work
    postings = counter_series(text, "invops_ledger_postings_total", ("kind", "source"))
    assert set(postings) == {(k.value, s.value) for k in MovementKind for s in Source}
    assert postings["count", "plc"] >= 1  # opening counts
    assert {postings[k.value, "opcua"] for k in MovementKind} == {0.0}  # no client posted
    if shutil.which("promtool"):
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

    history = asyncio.run(read_level_history(endpoints["opcua"]))
    assert len(history) >= 2  # HistoryRead from the ledger database
    assert all(value.SourceTimestamp is not None for value in history)

    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5  # SPEC: exit 0 within 5 s


def test_restart_continues_without_duplicate_postings(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    for _ in range(2):
        process = start_demo(data_dir)
        try:
            wait_for(data_dir / "endpoints.json", process)
            time.sleep(3)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
        (data_dir / "endpoints.json").unlink()
    rows = movements(data_dir)
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys))
    openings = [unit for _, kind, unit in rows if kind == "count"]
    assert len(openings) == len(set(openings)) == 8  # the restart did not reopen any unit
    verify = subprocess.run(
        [*INVOPS, "ledger", "verify", "--url", f"sqlite+aiosqlite:///{data_dir}/invops.db"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr

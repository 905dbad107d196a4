"""A freshly started service (the demo plant, against its simulators) already serves every
labelled counter whose label values are known at start, at 0 (SPEC §6): scraped over real
HTTP before the first poll and the first posting."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from inventory_core.domain.model import MovementKind, Source
from inventory_core.logins import LOGIN_REFUSALS
from invops.config import load_config
from invops.plant_description import plant_description
from invops.service import Endpoints, run_service
from opcua_server.limits import REFUSAL_REASONS
from plc_connectors import ERROR_REASONS
from simulators import Simulation

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"


def _series(text: str, name: str, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[label] for label in labels): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


async def _scrape_fresh_demo_service(tmp_path: Path) -> str:
    config = load_config(DEMO)
    ledger = config.ledger.model_copy(
        update={"url": f"sqlite+aiosqlite:///{tmp_path}/invops.db", "migrate_on_start": True}
    )
    config = config.model_copy(update={"ledger": ledger})
    stop = asyncio.Event()
    scraped: list[str] = []

    async def ready(started: Endpoints) -> None:
        # The service awaits `ready` before any poller task exists, serving HTTP on its
        # event loop meanwhile: the scrape sees the service exactly as it starts, before
        # any poll or posting can have happened.
        url = f"http://127.0.0.1:{started.metrics_port}/metrics"
        scraped.append(await asyncio.to_thread(_fetch, url))
        stop.set()

    async with Simulation(plant_description(config), ports={"PLC-MODBUS": 0, "PLC-S7": 0}) as sim:
        async with asyncio.timeout(60):
            await run_service(
                config,
                plc_ports=sim.ports,
                opcua_endpoint="opc.tcp://127.0.0.1:0/invops",
                pki_dir=tmp_path / "pki",
                buffer_path=tmp_path / "buffer.db",
                metrics_port=0,
                stop=stop,
                ready=ready,
            )
    [text] = scraped
    return text


def test_a_fresh_service_shows_every_labelled_counter_at_zero(tmp_path: Path) -> None:
    text = asyncio.run(_scrape_fresh_demo_service(tmp_path))

    errors = _series(text, "invops_plc_errors_total", ("plc", "reason"))
    plcs = ("PLC-MODBUS", "PLC-S7")  # examples/demo-plant.toml
    assert set(errors) == {(plc, reason) for plc in plcs for reason in ERROR_REASONS}
    assert set(errors.values()) == {0.0}

    postings = _series(text, "invops_ledger_postings_total", ("kind", "source"))
    assert set(postings) == {(k.value, s.value) for k in MovementKind for s in Source}
    assert set(postings.values()) == {0.0}

    logins = _series(text, "invops_opcua_login_failures_total", ("reason",))
    assert set(logins) == {(reason,) for reason in LOGIN_REFUSALS}
    lockouts = _series(text, "invops_opcua_lockouts_total", ("scope",))
    assert set(lockouts) == {("user",), ("source",)}
    assert set(logins.values()) | set(lockouts.values()) == {0.0}
    refusals = _series(text, "invops_opcua_refusals_total", ("reason",))
    assert set(refusals) == {(reason,) for reason in REFUSAL_REASONS}
    assert set(refusals.values()) == {0.0}

    # the ledger's writer is a process of its own (SQLite): its CPU and memory are shown
    writer = {
        name: _series(text, f"invops_ledger_writer_process_{name}", ())
        for name in ("resident_memory_bytes", "cpu_seconds_total", "start_time_seconds")
    }
    assert all(len(series) == 1 and next(iter(series.values())) > 0 for series in writer.values())

    promtool = shutil.which("promtool")
    if promtool is not None:  # .ci/run puts it on PATH; without it only this lint is skipped
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

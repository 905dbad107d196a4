"""Simulators with a state file, over real sockets: a restart continues the plant.

`Simulation(state_path=...)` in process, and `invops simulate --state FILE`
killed with SIGKILL (the file is then at most a periodic save old, and whole).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import snap7
from snap7.util import get_real

from invops.config import load_config
from invops.plant_description import plant_description
from simulators import (
    SAVE_EVERY_S,
    STATE_FORMAT,
    PlantDescription,
    PlantModel,
    Simulation,
    load_plant_state,
)
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-plant.toml"
HOST = "127.0.0.1"
PORTS = {"PLC-MODBUS": 0, "PLC-S7": 0}
SILO_FLOW_KG_S = 400.0  # the simulators' fastest flow (MAX_FLOW_L_PER_S, read as kg/s)
SILO_NOISE_KG = 5 * 0.0002 * 80_000  # 5 sigma of a silo reading
_ENDPOINT = re.compile(r"^(\S+)\s+(modbus|s7)\s+127\.0\.0\.1:(\d+)\s+(.*)$")


@pytest.fixture(scope="module")
def demo() -> PlantDescription:
    return plant_description(load_config(DEMO))


def _silos(port: int) -> tuple[float, float]:
    client = snap7.Client()
    try:
        client.connect(HOST, 0, 1, tcp_port=port)
        data = client.db_read(1, 0, 8)
        return get_real(data, 0), get_real(data, 4)
    finally:
        client.disconnect()


async def test_a_restarted_simulation_serves_the_plant_it_stopped_with(
    demo: PlantDescription, tmp_path: Path
) -> None:
    path = tmp_path / "plant-state.json"
    async with Simulation(demo, ports=PORTS, seed=1, tick_s=0.05, state_path=path) as first:
        await asyncio.sleep(1.0)
    stopped = {unit.id: unit.quantity for unit in first.model.units.values()}
    saved = json.loads(path.read_text())
    assert saved["format"] == STATE_FORMAT
    assert {u: s["quantity"] for u, s in saved["units"].items()} == stopped  # the exact stop

    started = time.monotonic()
    async with Simulation(demo, ports=PORTS, seed=2, tick_s=0.05, state_path=path) as second:
        si201, si202 = await asyncio.to_thread(_silos, second.ports["PLC-S7"])
        elapsed = time.monotonic() - started
    for served, unit in ((si201, "SI-201"), (si202, "SI-202")):
        assert abs(served - stopped[unit]) <= SILO_FLOW_KG_S * elapsed + SILO_NOISE_KG, unit


async def test_simulate_state_survives_sigkill_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "plant-state.json"
    args = ["simulate", "--config", str(DEMO), "--state", str(path)]
    args += ["--port", "PLC-MODBUS=0", "--port", "PLC-S7=0"]

    async def start() -> tuple[asyncio.subprocess.Process, int]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "invops.cli", *args, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert process.stdout is not None
        ports: dict[str, int] = {}
        async with asyncio.timeout(15):
            while len(ports) < 2:
                line = (await process.stdout.readline()).decode()
                assert line, "simulate ended before printing its endpoints"
                if match := _ENDPOINT.match(line.strip()):
                    ports[match[1]] = int(match[3])
        return process, ports["PLC-S7"]

    process, _ = await start()
    try:
        await eventually(path.exists, "the first periodic save", timeout_s=5, interval_s=0.05)
        await asyncio.sleep(3 * SAVE_EVERY_S)
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    killed_at = time.monotonic()
    saved = json.loads(path.read_text())  # whole: written by rename, never in place
    resumed = PlantModel(plant_description(load_config(DEMO)), seed=9)
    assert load_plant_state(resumed, path)

    process, s7_port = await start()
    try:
        si201, _ = await asyncio.to_thread(_silos, s7_port)
        elapsed = time.monotonic() - killed_at
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            assert await process.wait() == 0
        assert process.stderr is not None
        assert b"plant_resumed" in await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    quantity = saved["units"]["SI-201"]["quantity"]
    assert abs(si201 - quantity) <= SILO_FLOW_KG_S * elapsed + SILO_NOISE_KG
    assert json.loads(path.read_text())["saved_at"] > saved["saved_at"]  # kept again, at exit

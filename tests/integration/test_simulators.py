"""The PLC simulators over real sockets, checked with raw pymodbus/snap7 clients.

Values are decoded here with struct/snap7.util (not the invops codecs) so the
register/DB map of SPEC section 2 is checked independently.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import snap7
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse
from snap7.util import get_real

from invops.config import load_config
from invops.plant_description import plant_description
from simulators import PlantDescription, Simulation, SimulatorError
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-plant.toml"
HOST = "127.0.0.1"
UINT32 = 2**32


def _level_at(volume: float, points: list[tuple[float, float]]) -> float:
    """Inverse strapping, written out here (not the domain's StrappingTable)."""
    for (l0, v0), (l1, v1) in itertools.pairwise(points):
        if v0 <= volume <= v1:
            return l0 + (l1 - l0) * (volume - v0) / (v1 - v0)
    raise AssertionError(volume)


TK101 = [(0.0, 0.0), (300.0, 1500.0), (6000.0, 50000.0)]
TK102 = [(0.0, 0.0), (250.0, 900.0), (5000.0, 30000.0)]
TK101_BAND = (_level_at(5000, TK101), _level_at(45000, TK101))  # 10 %, 90 % of 50 000 L
TK102_BAND = (_level_at(3000, TK102), _level_at(27000, TK102))  # of 30 000 L


@pytest.fixture(scope="module")
def demo() -> PlantDescription:
    return plant_description(load_config(DEMO))


@pytest.fixture
async def sim(demo: PlantDescription) -> AsyncIterator[Simulation]:
    async with Simulation(demo, ports={"PLC-MODBUS": 0, "PLC-S7": 0}, seed=1, tick_s=0.05) as s:
        yield s


async def _modbus(sim: Simulation) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(HOST, port=sim.ports["PLC-MODBUS"], timeout=2, retries=0)
    assert await client.connect()
    return client


def _float(regs: Sequence[int]) -> float:
    value: float = struct.unpack(">f", struct.pack(">HH", *regs))[0]
    return value


def _uint32(regs: Sequence[int]) -> int:
    value: int = struct.unpack(">I", struct.pack(">HH", *regs))[0]
    return value


async def _read_modbus(client: AsyncModbusTcpClient) -> dict[str, float]:
    """The whole demo map in one read (hr:0-23, across the unmapped gaps)."""
    rr = await client.read_holding_registers(0, count=24, device_id=1)
    assert not rr.isError(), rr
    regs = rr.registers
    values = {"TK-101": _float(regs[0:2]), "TK-102": _float(regs[2:4])}
    values["TK-101.totalizer"] = _uint32(regs[10:12])
    for i, unit in enumerate(("BN-301", "BN-302", "BN-303", "BN-304")):
        values[unit] = regs[20 + i] / 10  # kg x 10
    return values


def _s7_read(port: int, rack: int = 0, slot: int = 1) -> tuple[float, float]:
    client = snap7.Client()
    try:
        client.connect(HOST, rack, slot, tcp_port=port)
        data = client.db_read(1, 0, 8)
        return get_real(data, 0), get_real(data, 4)
    finally:
        client.disconnect()


# --------------------------------------------------------------------------- register map


async def test_modbus_serves_demo_tanks_and_bins_within_their_bands(sim: Simulation) -> None:
    client = await _modbus(sim)
    try:
        values = await _read_modbus(client)
    finally:
        client.close()
    assert TK101_BAND[0] < values["TK-101"] < TK101_BAND[1]
    assert TK102_BAND[0] < values["TK-102"] < TK102_BAND[1]
    for unit in ("BN-301", "BN-302", "BN-303", "BN-304"):
        assert 100 < values[unit] < 900, unit
    # The registers hold what the model says (level through the strapping table).
    volume = sim.model.units["TK-101"].quantity
    assert values["TK-101"] == pytest.approx(_level_at(volume, TK101), abs=30)


async def test_modbus_answers_exception_02_outside_the_map_and_0b_for_other_units(
    sim: Simulation,
) -> None:
    client = await _modbus(sim)
    try:
        outside = await client.read_holding_registers(20, count=5, device_id=1)
        no_inputs = await client.read_input_registers(0, count=1, device_id=1)
        write = await client.write_register(0, 1, device_id=1)
        other_unit = await client.read_holding_registers(0, count=2, device_id=7)
    finally:
        client.close()
    for response in (outside, no_inputs, write):
        assert isinstance(response, ExceptionResponse) and response.exception_code == 2
    assert isinstance(other_unit, ExceptionResponse) and other_unit.exception_code == 0x0B


async def test_s7_serves_silo_weights_in_db1_within_their_bands(sim: Simulation) -> None:
    si201, si202 = await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"])
    assert 8_000 < si201 < 72_000
    assert 8_000 < si202 < 72_000
    assert si201 == pytest.approx(sim.model.units["SI-201"].quantity, abs=200)


async def test_s7_rejects_a_wrong_rack_or_slot(sim: Simulation) -> None:
    with pytest.raises(Exception, match=r"(?i)connect|closed|reset"):
        await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"], 0, 2)


async def test_values_change_over_time(sim: Simulation) -> None:
    client = await _modbus(sim)
    try:
        first = await _read_modbus(client)
        s7_first = await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"])
        await asyncio.sleep(1.5)
        second = await _read_modbus(client)
        s7_second = await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"])
    finally:
        client.close()
    for unit in ("TK-101", "TK-102", "BN-301", "BN-302", "BN-303", "BN-304"):
        assert first[unit] != second[unit], unit
    assert s7_first[0] != s7_second[0] and s7_first[1] != s7_second[1]
    # Far beyond noise: in 1.5 s the silos move hundreds of kg.
    assert abs(s7_first[0] - s7_second[0]) > 50 or abs(s7_first[1] - s7_second[1]) > 50


async def test_totalizer_counts_up_and_rolls_over_after_a_jump(sim: Simulation) -> None:
    sim.model.stop_operation("TK-101")
    sim.model.start_issue("TK-101", 5000.0, rate=100.0)
    client = await _modbus(sim)
    try:
        start = (await _read_modbus(client))["TK-101.totalizer"]

        async def counted_up() -> bool:
            return (await _read_modbus(client))["TK-101.totalizer"] > start + 20

        await eventually(counted_up, "the totalizer counting up", interval_s=0.05)
        now = int((await _read_modbus(client))["TK-101.totalizer"])
        sim.faults.set("TK-101.totalizer", totalizer_jump=UINT32 - 60 - now)
        seen: list[float] = []

        async def rolled_over() -> bool:
            seen.append((await _read_modbus(client))["TK-101.totalizer"])
            return seen[-1] < 1000 and any(v > UINT32 - 100 for v in seen)

        await eventually(rolled_over, "the totalizer rolling over", interval_s=0.05)
    finally:
        client.close()


# --------------------------------------------------------------------------- faults


async def test_refuse_closes_the_port_and_clearing_opens_it_again(sim: Simulation) -> None:
    existing = await _modbus(sim)
    sim.faults.set("PLC-MODBUS", refuse=True)
    sim.faults.set("PLC-S7", refuse=True)

    async def modbus_refused() -> bool:
        probe = AsyncModbusTcpClient(HOST, port=sim.ports["PLC-MODBUS"], timeout=0.5, retries=0)
        try:
            return not await probe.connect()
        finally:
            probe.close()

    await eventually(modbus_refused, "Modbus refusing connections", interval_s=0.05)
    assert not existing.connected
    with pytest.raises(Exception, match=r"(?i)connect|refused"):
        await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"])
    existing.close()

    sim.faults.clear("PLC-MODBUS")
    sim.faults.clear("PLC-S7")

    async def modbus_back() -> bool:
        return not await modbus_refused()

    await eventually(modbus_back, "Modbus accepting connections again", interval_s=0.05)
    client = await _modbus(sim)  # same port as before
    try:
        assert (await _read_modbus(client))["BN-301"] > 0
    finally:
        client.close()
    assert (await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"]))[0] > 0


async def test_exception_fault_answers_every_read_with_that_code(sim: Simulation) -> None:
    client = await _modbus(sim)
    try:
        sim.faults.set("PLC-MODBUS", exception=2)
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        assert isinstance(rr, ExceptionResponse) and rr.exception_code == 2
        sim.faults.set("PLC-MODBUS", exception=6)
        rr = await client.read_holding_registers(20, count=4, device_id=1)
        assert isinstance(rr, ExceptionResponse) and rr.exception_code == 6
        sim.faults.clear("PLC-MODBUS")
        assert not (await client.read_holding_registers(0, count=2, device_id=1)).isError()
    finally:
        client.close()


async def test_delay_fault_slows_every_answer(sim: Simulation) -> None:
    client = await _modbus(sim)
    try:
        sim.faults.set("PLC-MODBUS", delay_s=0.4)
        sim.faults.set("PLC-S7", delay_s=0.3)
        started = time.monotonic()
        async with asyncio.timeout(1.5):
            await _read_modbus(client)
        assert time.monotonic() - started >= 0.4
        started = time.monotonic()
        await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"])
        assert 0.3 <= time.monotonic() - started < 1.5
        sim.faults.clear()
        started = time.monotonic()
        await _read_modbus(client)
        assert time.monotonic() - started < 0.3
    finally:
        client.close()


async def test_freeze_stops_the_values_and_clearing_resumes_them(sim: Simulation) -> None:
    client = await _modbus(sim)
    try:
        sim.faults.set("PLC-MODBUS", freeze=True)
        sim.faults.set("PLC-S7", freeze=True)
        await asyncio.sleep(0.1)  # let a tick that started before the fault pass
        first = await _read_modbus(client)
        s7_first = await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"])
        await asyncio.sleep(0.6)
        assert await _read_modbus(client) == first
        assert await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"]) == s7_first
        sim.faults.clear()
        await asyncio.sleep(0.3)
        assert (await _read_modbus(client))["TK-101"] != first["TK-101"]
    finally:
        client.close()


async def test_drop_closes_connections_until_cleared(sim: Simulation) -> None:
    client = await _modbus(sim)
    s7 = snap7.Client()
    await asyncio.to_thread(s7.connect, HOST, 0, 1, sim.ports["PLC-S7"])
    try:
        sim.faults.set("PLC-MODBUS", drop=True)
        sim.faults.set("PLC-S7", drop=True)

        async def modbus_dropped() -> bool:
            return not client.connected

        await eventually(modbus_dropped, "the Modbus connection dropped", interval_s=0.05)
        with pytest.raises(ModbusException):
            await client.read_holding_registers(0, count=2, device_id=1)
        with pytest.raises(Exception, match=r"(?i)closed|reset|broken|connect"):
            await asyncio.to_thread(s7.db_read, 1, 0, 4)
        sim.faults.clear()
        again = await _modbus(sim)
        try:
            assert not (await again.read_holding_registers(0, count=2, device_id=1)).isError()
        finally:
            again.close()
        assert (await asyncio.to_thread(_s7_read, sim.ports["PLC-S7"]))[0] > 0
    finally:
        client.close()
        s7.disconnect()


async def test_a_port_in_use_fails_the_start_with_a_clear_error(
    sim: Simulation, demo: PlantDescription
) -> None:
    with pytest.raises(SimulatorError, match="PLC-MODBUS: cannot listen"):
        async with Simulation(demo, ports={"PLC-MODBUS": sim.ports["PLC-MODBUS"], "PLC-S7": 0}):
            pass
    # snap7.Server binds with SO_REUSEPORT: without a check it would share the port silently.
    with pytest.raises(SimulatorError, match="PLC-S7: cannot listen"):
        async with Simulation(demo, ports={"PLC-MODBUS": 0, "PLC-S7": sim.ports["PLC-S7"]}):
            pass


# --------------------------------------------------------------------------- command line

_CLI = (
    "import typer; from invops.simulate_cli import register; "
    "app = typer.Typer(); app.callback()(lambda: None); register(app); app()"
)
_ENDPOINT = re.compile(r"^(\S+)\s+(modbus|s7)\s+127\.0\.0\.1:(\d+)\s+(.*)$")


async def test_simulate_command_serves_every_plc_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLI, "simulate", "--config", str(DEMO),
        "--port", "PLC-MODBUS=0", "--port", "PLC-S7=0", "--seed", "3",
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        endpoints: dict[str, tuple[str, int, str]] = {}
        async with asyncio.timeout(15):
            while len(endpoints) < 2:
                line = (await process.stdout.readline()).decode()
                assert line, "simulate ended before printing its endpoints"
                if match := _ENDPOINT.match(line.strip()):
                    endpoints[match[1]] = (match[2], int(match[3]), match[4])
        assert endpoints["PLC-MODBUS"][0] == "modbus" and endpoints["PLC-MODBUS"][2] == "unit_id=1"
        assert endpoints["PLC-S7"][0] == "s7" and endpoints["PLC-S7"][2] == "rack=0 slot=1"

        client = AsyncModbusTcpClient(HOST, port=endpoints["PLC-MODBUS"][1], timeout=2, retries=0)
        assert await client.connect()
        try:
            assert 100 < (await _read_modbus(client))["BN-302"] < 900
        finally:
            client.close()
        si201, _ = await asyncio.to_thread(_s7_read, endpoints["PLC-S7"][1])
        assert 8_000 < si201 < 72_000

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

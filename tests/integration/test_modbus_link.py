"""ModbusLink against a real pymodbus TCP server on an ephemeral 127.0.0.1 port.

The server uses pymodbus 3.16's SimDevice/SimData datastore (0-based, REFERENCE 4.6);
the round-trip tests pin that mapping so an off-by-one shows up here, not in the plant.
`ModbusTestServer` is also used by test_poller.py.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from plc_connectors import (
    Address,
    Area,
    DataType,
    ModbusLink,
    PlcConnectError,
    PlcLink,
    PlcProtocol,
    PlcProtocolError,
    PlcSettings,
    PlcTimeout,
    Tag,
    WordOrder,
    encode_registers,
    error_reason,
    minimum_reads,
    plan_modbus,
    to_engineering,
    validate_tag,
)

UNIT_ID = 1
REGISTERS = 200  # hr/ir 0..199 mapped; anything above answers exception 02
BITS = 64  # coils/discrete inputs 0..63
_WRITE_FC = {Area.COIL: 1, Area.DISCRETE: 2, Area.HOLDING: 3, Area.INPUT: 4}


class ModbusTestServer:
    """A pymodbus TCP server with one unit (id 1): start/stop/restart on the same port,
    values written through the datastore (kept across restarts), and hooks for fault
    tests: `stall` holds every read until released (`stall_from`: from that read on,
    counted by `requests`), `delay_s` answers every read that late."""

    def __init__(self) -> None:
        self.port = 0
        self.requests = 0
        self.stall = False
        self.stall_from = 1
        self.delay_s = 0.0
        self.stalled = asyncio.Event()  # set when a read is being held
        self._release = asyncio.Event()
        self._server: ModbusTcpServer | None = None
        self._writes: list[tuple[Area, int, list[int] | list[bool]]] = []

    async def start(self) -> None:
        """Listen on `self.port` (0 the first time: pick a free one); ready on return."""
        device = SimDevice(
            id=UNIT_ID,
            simdata=(
                [SimData(address=0, values=[False] * BITS, datatype=SimType.BITS)],
                [SimData(address=0, values=[False] * BITS, datatype=SimType.BITS)],
                [SimData(address=0, values=[0] * REGISTERS, datatype=SimType.REGISTERS)],
                [SimData(address=0, values=[0] * REGISTERS, datatype=SimType.REGISTERS)],
            ),
            action=self._on_request,
        )
        self._release = asyncio.Event()
        server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)  # returns once listening
        self._server = server
        self.port = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]
        for area, address, values in self._writes:
            await self._apply(area, address, values)

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        self._release.set()
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def set(self, area: Area, address: int, values: list[int] | list[bool]) -> None:
        self._writes.append((area, address, values))
        if self._server is not None:
            await self._apply(area, address, values)

    async def _apply(self, area: Area, address: int, values: list[int] | list[bool]) -> None:
        assert self._server is not None
        await self._server.async_setValues(UNIT_ID, _WRITE_FC[area], address, values)

    async def _on_request(
        self,
        function_code: int,
        _start: int,
        _address: int,
        _count: int,
        _registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is None:
            self.requests += 1
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.stall and self.requests >= self.stall_from:
                self.stalled.set()
                await self._release.wait()
        return None


@pytest.fixture
async def server() -> AsyncIterator[ModbusTestServer]:
    srv = ModbusTestServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def settings(port: int, tags: list[Tag], *, timeout_s: float = 0.5) -> PlcSettings:
    for tag in tags:
        validate_tag(tag, "modbus")
    return PlcSettings(
        name="plc-m",
        protocol=PlcProtocol.MODBUS,
        host="127.0.0.1",
        port=port,
        tags=tuple(tags),
        unit_id=UNIT_ID,
        poll_interval_s=0.05,
        timeout_s=timeout_s,
    )


def tag(name: str, area: Area, index: int, dt: DataType, **kw: object) -> Tag:
    return Tag(name, Address(area, index), dt, **kw)  # type: ignore[arg-type]


async def test_mapping_is_zero_based_on_every_table(server: ModbusTestServer) -> None:
    await server.set(Area.HOLDING, 10, [0x1111])
    await server.set(Area.INPUT, 11, [0x2222])
    await server.set(Area.COIL, 12, [True])
    await server.set(Area.DISCRETE, 13, [True])
    raw = AsyncModbusTcpClient("127.0.0.1", port=server.port, retries=0, reconnect_delay=0)
    assert await raw.connect()
    try:
        hr = await raw.read_holding_registers(9, count=3, device_id=UNIT_ID)
        ir = await raw.read_input_registers(10, count=3, device_id=UNIT_ID)
        co = await raw.read_coils(11, count=3, device_id=UNIT_ID)
        di = await raw.read_discrete_inputs(12, count=3, device_id=UNIT_ID)
    finally:
        raw.close()
    assert list(hr.registers) == [0, 0x1111, 0]
    assert list(ir.registers) == [0, 0x2222, 0]
    assert list(co.bits[:3]) == [False, True, False]
    assert list(di.bits[:3]) == [False, True, False]

    tags = [
        tag("hr", Area.HOLDING, 10, DataType.UINT16),
        tag("ir", Area.INPUT, 11, DataType.UINT16),
        tag("co", Area.COIL, 12, DataType.BOOL),
        tag("di", Area.DISCRETE, 13, DataType.BOOL),
    ]
    async with ModbusLink(settings(server.port, tags)) as link:
        assert await link.read() == {"hr": 0x1111, "ir": 0x2222, "co": True, "di": True}


VALUES: dict[DataType, int | float] = {
    DataType.INT16: -12345,
    DataType.UINT16: 54321,
    DataType.INT32: -123456789,
    DataType.UINT32: 3_000_000_000,
    DataType.FLOAT32: 1234.5,
    DataType.FLOAT64: -9876.543210123,
}


async def test_every_type_and_word_order_decodes(server: ModbusTestServer) -> None:
    tags: list[Tag] = []
    expected: dict[str, float | bool] = {}
    index = 0
    for area in (Area.HOLDING, Area.INPUT):
        index = 0
        for dt, value in VALUES.items():
            for order in WordOrder:
                t = tag(f"{area.value}.{dt}.{order}", area, index, dt, word_order=order)
                regs = encode_registers(value, dt, order)
                await server.set(area, index, regs)
                tags.append(t)
                expected[t.name] = to_engineering(value, t)
                index += len(regs) + 1  # one unmapped register between tags
    async with ModbusLink(settings(server.port, tags)) as link:
        got = await link.read()
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == value, name


async def test_reads_per_poll_equals_the_plan_on_the_wire(server: ModbusTestServer) -> None:
    tags = [
        tag("a", Area.HOLDING, 0, DataType.FLOAT32),
        tag("b", Area.HOLDING, 4, DataType.UINT16),  # gap 2 <= 8: same block as a
        tag("c", Area.HOLDING, 60, DataType.UINT32),  # far: a block of its own
        tag("d", Area.HOLDING, 100, DataType.FLOAT64),
        tag("e", Area.HOLDING, 190, DataType.UINT16),  # 100..190 > 125: split
        tag("f", Area.INPUT, 0, DataType.INT16),
        tag("g", Area.COIL, 0, DataType.BOOL),
        tag("h", Area.COIL, 40, DataType.BOOL),  # bits: 40 > max_gap 8, own block
        tag("i", Area.DISCRETE, 7, DataType.BOOL),
    ]
    link = ModbusLink(settings(server.port, tags))
    planned = plan_modbus(tags)
    assert link.reads_per_poll == len(planned) == minimum_reads(tags) == 8
    async with link:
        before = server.requests
        values = await link.read()
        assert server.requests - before == link.reads_per_poll
    assert set(values) == {t.name for t in tags}


async def test_coils_and_discrete_inputs(server: ModbusTestServer) -> None:
    await server.set(Area.COIL, 0, [True, False, True])
    await server.set(Area.COIL, 17, [True])
    await server.set(Area.DISCRETE, 63, [True])
    tags = [
        tag("c0", Area.COIL, 0, DataType.BOOL),
        tag("c1", Area.COIL, 1, DataType.BOOL),
        tag("c2", Area.COIL, 2, DataType.BOOL),
        tag("c17", Area.COIL, 17, DataType.BOOL),
        tag("d62", Area.DISCRETE, 62, DataType.BOOL),
        tag("d63", Area.DISCRETE, 63, DataType.BOOL),
    ]
    async with ModbusLink(settings(server.port, tags)) as link:
        got = await link.read()
    assert got == {"c0": True, "c1": False, "c2": True, "c17": True, "d62": False, "d63": True}
    assert all(isinstance(v, bool) for v in got.values())


async def test_scale_and_offset_apply_after_decoding(server: ModbusTestServer) -> None:
    await server.set(Area.HOLDING, 20, encode_registers(1234, DataType.UINT16, WordOrder.ABCD))
    await server.set(Area.HOLDING, 22, encode_registers(-500, DataType.INT32, WordOrder.CDAB))
    tags = [
        tag("kg", Area.HOLDING, 20, DataType.UINT16, scale=0.1),
        tag("deg", Area.HOLDING, 22, DataType.INT32, word_order=WordOrder.CDAB,
            scale=0.01, offset=-273.15),
    ]  # fmt: skip
    async with ModbusLink(settings(server.port, tags)) as link:
        got = await link.read()
    assert math.isclose(float(got["kg"]), 123.4)
    assert math.isclose(float(got["deg"]), -278.15)


async def test_unmapped_range_is_exception_02_and_keeps_the_connection(
    server: ModbusTestServer,
) -> None:
    tags = [tag("ghost", Area.HOLDING, 500, DataType.UINT16)]
    async with ModbusLink(settings(server.port, tags)) as link:
        with pytest.raises(PlcProtocolError) as caught:
            await link.read()
        assert caught.value.exception_code == 2
        assert not caught.value.retryable  # configuration problem: no fast retry
        assert error_reason(caught.value) == "exception_02"
        assert "hr:500" in str(caught.value)
        assert link.connected  # the device answered: no reconnect needed


async def test_server_stop_fails_the_read_and_restart_reconnects(
    server: ModbusTestServer,
) -> None:
    await server.set(Area.HOLDING, 0, encode_registers(42.0, DataType.FLOAT32, WordOrder.ABCD))
    link: PlcLink = ModbusLink(
        settings(server.port, [tag("lvl", Area.HOLDING, 0, DataType.FLOAT32)])
    )
    try:
        await link.connect()
        assert await link.read() == {"lvl": 42.0}

        await server.stop()
        with pytest.raises((PlcConnectError, PlcTimeout)):
            await link.read()
        with pytest.raises(PlcConnectError) as refused:
            await link.connect()
        assert error_reason(refused.value) == "connect"

        await server.start()  # same port
        await link.connect()
        assert await link.read() == {"lvl": 42.0}
    finally:
        await link.close()


async def test_unanswered_request_times_out_and_drops_the_connection(
    server: ModbusTestServer,
) -> None:
    link = ModbusLink(settings(server.port, [tag("x", Area.HOLDING, 0, DataType.UINT16)],
                               timeout_s=0.2))  # fmt: skip
    async with link:
        server.stall = True
        started = time.monotonic()
        with pytest.raises(PlcTimeout) as caught:
            await link.read()
        assert time.monotonic() - started < 1.0
        assert isinstance(caught.value.__cause__, TimeoutError)
        assert not link.connected  # a timeout makes the connection suspect: dropped
        server.stall = False
        await link.connect()
        assert await link.read() == {"x": 0}


async def test_the_deadline_is_per_request_not_per_read(server: ModbusTestServer) -> None:
    """Each block has `timeout_s` to answer: a read of three slow blocks takes longer than
    that and still succeeds; a stall in the second block times out that block."""
    tags = [tag(f"x{i}", Area.HOLDING, 40 * i, DataType.UINT16) for i in range(3)]
    link = ModbusLink(settings(server.port, tags, timeout_s=0.3))
    assert link.reads_per_poll == 3
    async with link:
        server.delay_s = 0.15
        started = time.monotonic()
        assert await link.read() == {"x0": 0, "x1": 0, "x2": 0}
        assert time.monotonic() - started > 0.3  # longer than one deadline in all
        server.delay_s = 0.0
        server.requests, server.stall, server.stall_from = 0, True, 2
        started = time.monotonic()
        with pytest.raises(PlcTimeout, match=r"read hr:40\+1: no answer within 0.3 s") as caught:
            await link.read()
        assert 0.25 < time.monotonic() - started < 1.0
        assert isinstance(caught.value.__cause__, TimeoutError)
        assert not link.connected
        server.stall = False
        await link.connect()
        assert await link.read() == {"x0": 0, "x1": 0, "x2": 0}  # and the next read is fine


async def test_peer_closing_mid_request_fails_at_once(server: ModbusTestServer) -> None:
    link = ModbusLink(settings(server.port, [tag("x", Area.HOLDING, 0, DataType.UINT16)],
                               timeout_s=5.0))  # fmt: skip
    async with link:
        server.stall = True
        read = asyncio.ensure_future(link.read())
        try:
            await asyncio.wait_for(server.stalled.wait(), 2)
            started = time.monotonic()
            await server.stop()
            with pytest.raises(PlcConnectError):
                await asyncio.wait_for(read, 2)
            assert time.monotonic() - started < 1.0  # not the 5 s deadline
        finally:
            read.cancel()


async def test_nothing_listening_is_a_connect_error() -> None:
    # A port this test holds, bound but not listening: connects are refused, and no other
    # process can start listening on it meanwhile.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        link = ModbusLink(settings(port, [tag("x", Area.HOLDING, 0, DataType.UINT16)]))
        with pytest.raises(PlcConnectError):
            await link.connect()
        with pytest.raises(PlcConnectError):
            await link.read()  # never connected
        await link.close()


def test_link_plans_once_at_construction() -> None:
    tags = [tag("a", Area.HOLDING, 0, DataType.UINT16), tag("b", Area.HOLDING, 30, DataType.UINT16)]
    link = ModbusLink(settings(502, tags))
    assert link.reads_per_poll == 2  # 29-register gap > default max_gap 8
    wide = ModbusLink(
        PlcSettings("w", PlcProtocol.MODBUS, "127.0.0.1", 502, tuple(tags), max_gap=40)
    )
    assert wide.reads_per_poll == 1


def test_register_responses_keep_the_bytes_with_pymodbus_checks() -> None:
    from pymodbus.exceptions import ModbusIOException

    from plc_connectors.modbus import _HoldingRegisterBytes, _InputRegisterBytes

    for response_class, function_code in ((_HoldingRegisterBytes, 3), (_InputRegisterBytes, 4)):
        response = response_class()
        assert response.function_code == function_code
        response.decode(b"\x04\x12\x34\xab\xcd")
        assert response.wire == b"\x12\x34\xab\xcd"
        assert not response.isError()
        for garbled in (b"\x06\x12\x34", b"\x03\x12\x34\xab"):  # too long, odd byte count
            with pytest.raises(ModbusIOException):
                response_class().decode(garbled)

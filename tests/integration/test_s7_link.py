"""S7Link against a real python-snap7 3.3 server on an ephemeral 127.0.0.1 port.

snap7's Server is threaded (one thread per client). `stop()` only closes the listening
socket: open client connections keep being served until their 5 s receive timeout, so
"the PLC goes away" here also shuts the accepted sockets down (`kill()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import snap7
from snap7.type import SrvArea

from plc_connectors import (
    Address,
    Area,
    DataType,
    PlcConnectError,
    PlcLink,
    PlcProtocol,
    PlcProtocolError,
    PlcSettings,
    PlcTimeout,
    S7Link,
    Tag,
    encode_bytes,
    error_reason,
    plan_s7,
    to_engineering,
    validate_tag,
)


class S7TestServer(snap7.Server):
    """snap7.Server that remembers accepted sockets (to cut them) and can hold reads."""

    def __init__(self) -> None:
        super().__init__(log=False)
        self.sockets: list[socket.socket] = []
        self.hold = threading.Event()  # set: reads wait for `release`
        self.release = threading.Event()
        self.read_callback = self._on_read

    def _handle_client(self, client_socket: socket.socket, address: Any) -> None:
        self.sockets.append(client_socket)
        super()._handle_client(client_socket, address)

    def _on_read(self, _event: Any) -> None:
        if self.hold.is_set():
            self.release.wait(5.0)

    @property
    def bound_port(self) -> int:
        assert self.server_socket is not None
        return int(self.server_socket.getsockname()[1])

    def kill(self) -> None:
        """Drop every client connection and stop listening: the PLC is gone."""
        self.release.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()
        self.stop()


@pytest.fixture
def dbs() -> dict[int, bytearray]:
    """The server's live DB memory: write here, the next read sees it."""
    return {1: bytearray(64), 2: bytearray(8)}


@pytest.fixture
def s7_server(dbs: dict[int, bytearray]) -> Iterator[S7TestServer]:
    srv = S7TestServer()
    for number, memory in dbs.items():
        srv.register_area(SrvArea.DB, number, memory)
    srv.start_to("127.0.0.1", 0)  # port 0 works: the kernel picks, read it back
    try:
        yield srv
    finally:
        srv.kill()


def settings(port: int, tags: list[Tag], *, timeout_s: float = 0.5) -> PlcSettings:
    for tag in tags:
        validate_tag(tag, "s7")
    return PlcSettings(
        name="plc-s7",
        protocol=PlcProtocol.S7,
        host="127.0.0.1",
        port=port,
        tags=tuple(tags),
        rack=0,
        slot=1,
        poll_interval_s=0.05,
        timeout_s=timeout_s,
    )


def db_tag(name: str, db: int, byte: int, dt: DataType, *, bit: int | None = None,
           **kw: Any) -> Tag:  # fmt: skip
    width = {DataType.BOOL: 1, DataType.INT16: 2, DataType.UINT16: 2, DataType.FLOAT64: 8}
    return Tag(name, Address(Area.DB, byte, db=db, bit=bit, width=width.get(dt, 4)), dt, **kw)


LAYOUT: list[tuple[Tag, int | float | bool]] = [
    (db_tag("real", 1, 0, DataType.FLOAT32), 1234.5),
    (db_tag("int", 1, 4, DataType.INT16), -12345),
    (db_tag("word", 1, 6, DataType.UINT16), 54321),
    (db_tag("dint", 1, 8, DataType.INT32), -123456789),
    (db_tag("udint", 1, 12, DataType.UINT32), 3_000_000_000),
    (db_tag("lreal", 1, 16, DataType.FLOAT64), -9876.543210123),
    (db_tag("bit3", 1, 24, DataType.BOOL, bit=3), True),
    (db_tag("bit0", 1, 24, DataType.BOOL, bit=0), False),
    (db_tag("scaled", 1, 26, DataType.INT16, scale=0.1, offset=-5.0), 1000),
    (db_tag("other_db", 2, 0, DataType.FLOAT32), -0.25),
]


def _write(db: bytearray, tag: Tag, value: int | float | bool) -> None:
    data = encode_bytes(value, tag.data_type, tag.address.bit)
    start = tag.address.index
    if tag.data_type is DataType.BOOL:
        db[start] |= data[0]  # merge the bit into its byte
    else:
        db[start : start + len(data)] = data


@pytest.fixture
async def link(s7_server: S7TestServer) -> AsyncIterator[S7Link]:
    s7link = S7Link(settings(s7_server.bound_port, [t for t, _ in LAYOUT]))
    try:
        yield s7link
    finally:
        await s7link.close()


async def test_every_type_decodes(dbs: dict[int, bytearray], link: S7Link) -> None:
    for tag, value in LAYOUT:
        assert tag.address.db is not None
        _write(dbs[tag.address.db], tag, value)
    await link.connect()
    got = await link.read()
    for tag, value in LAYOUT:
        assert got[tag.name] == to_engineering(value, tag), tag.name
    assert got["bit3"] is True and got["bit0"] is False
    assert math.isclose(float(got["scaled"]), 95.0)


async def test_blocks_are_planned_for_the_negotiated_pdu(link: S7Link) -> None:
    await link.connect()
    assert link.pdu_length == 480  # the snap7 server caps the PDU at 480
    tags = [t for t, _ in LAYOUT]
    assert link.reads_per_poll == len(plan_s7(tags, max_bytes=480 - 18)) == 2  # DB1, DB2


async def test_value_changes_are_seen_on_the_next_read(
    dbs: dict[int, bytearray], link: S7Link
) -> None:
    await link.connect()
    real = LAYOUT[0][0]
    _write(dbs[1], real, 10.0)
    assert (await link.read())["real"] == 10.0
    _write(dbs[1], real, 20.5)
    assert (await link.read())["real"] == 20.5


async def test_missing_db_is_a_protocol_error_and_keeps_the_connection(
    s7_server: S7TestServer,
) -> None:
    link = S7Link(settings(s7_server.bound_port, [db_tag("ghost", 9, 0, DataType.FLOAT32)]))
    async with link:
        with pytest.raises(PlcProtocolError) as caught:
            await link.read()
        assert not caught.value.retryable
        assert error_reason(caught.value) == "protocol"
        assert "DB9" in str(caught.value)
        assert link.connected


async def test_range_past_the_db_end_is_a_protocol_error(s7_server: S7TestServer) -> None:
    link = S7Link(settings(s7_server.bound_port, [db_tag("past", 2, 6, DataType.FLOAT32)]))
    async with link:
        with pytest.raises(PlcProtocolError):
            await link.read()


async def test_server_gone_fails_the_read_and_restart_reconnects(
    s7_server: S7TestServer, dbs: dict[int, bytearray]
) -> None:
    _write(dbs[1], LAYOUT[0][0], 7.5)
    port = s7_server.bound_port
    link: PlcLink = S7Link(settings(port, [LAYOUT[0][0]]))
    try:
        await link.connect()
        assert await link.read() == {"real": 7.5}

        s7_server.kill()
        with pytest.raises((PlcConnectError, PlcTimeout)):
            await link.read()
        with pytest.raises(PlcConnectError) as refused:
            await link.connect()
        assert isinstance(refused.value.__cause__, Exception)

        s7_server.release.clear()
        s7_server.start_to("127.0.0.1", port)
        await link.connect()
        assert await link.read() == {"real": 7.5}
    finally:
        await link.close()


async def test_unanswered_read_times_out_and_drops_the_connection(
    s7_server: S7TestServer,
) -> None:
    link = S7Link(settings(s7_server.bound_port, [LAYOUT[0][0]], timeout_s=0.2))
    async with link:
        s7_server.hold.set()
        started = time.monotonic()
        with pytest.raises(PlcTimeout):
            await link.read()
        assert time.monotonic() - started < 1.0
        assert not link.connected
        s7_server.release.set()
        s7_server.hold.clear()
        await link.connect()
        assert await link.read() == {"real": 0.0}


async def test_silent_peer_is_a_connect_timeout() -> None:
    """A TCP listener that never answers the ISO handshake (a wrong device on the port)."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        link = S7Link(settings(port, [LAYOUT[0][0]], timeout_s=0.2))
        with pytest.raises(PlcConnectError, match="timed out"):
            await link.connect()
        assert not link.connected
        await link.close()
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

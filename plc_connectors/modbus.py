"""Modbus TCP link: planned block reads over pymodbus' asyncio client (REFERENCE 4).

We own retries, deadlines and reconnects (the poller decides when to try again), so the
pymodbus client runs with `retries=0` and `reconnect_delay=0` (no background reconnect
task), and every foreign failure is translated here into the PlcError family.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from plc_connectors.errors import PlcConnectError, PlcError, PlcProtocolError, PlcTimeout
from plc_connectors.model import Area, PlcSettings
from plc_connectors.planning import (
    MODBUS_MAX_GAP,
    BlockReader,
    ReadBlock,
    block_reader,
    plan_modbus,
)

# pymodbus' own response deadline sits behind ours, so `asyncio.timeout` always decides
# (a pymodbus timeout would surface as a vague ModbusIOException).
_LIBRARY_TIMEOUT_MARGIN_S = 1.0

_Request = Callable[..., Awaitable[ModbusPDU]]


class ModbusLink:
    """One Modbus TCP device (one unit id): connect, read every tag per poll, close.

    `connect()` is a no-op while connected; after any transport failure (timeout, reset,
    garbled reply) the connection is dropped, so the next `connect()` starts clean. An
    exception response leaves the connection up: the device answered.
    """

    def __init__(self, settings: PlcSettings) -> None:
        self.name = settings.name
        self._settings = settings
        gap = settings.max_gap if settings.max_gap is not None else MODBUS_MAX_GAP
        self._blocks: tuple[ReadBlock, ...] = tuple(plan_modbus(settings.tags, max_gap=gap))
        # per block, compiled once: its reader, whether it reads bits, and its name in errors
        self._plan: tuple[tuple[ReadBlock, BlockReader, bool, str], ...] = tuple(
            (
                block,
                block_reader(block, wire=True),  # register blocks: the bytes as read
                block.area in (Area.COIL, Area.DISCRETE),
                f"{self.name} read {block.area.value}:{block.start}+{block.count}",
            )
            for block in self._blocks
        )
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._in_flight = False
        # The answer deadline of the request in flight (event-loop time), kept by one
        # watchdog timer per link instead of one `asyncio.timeout` per request (each is
        # a Timeout, a timer handle pushed on and cancelled off the loop's heap).
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def reads_per_poll(self) -> int:
        """Requests one `read()` sends (the planned blocks)."""
        return len(self._blocks)

    @property
    def blocks(self) -> tuple[ReadBlock, ...]:
        return self._blocks

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Open the TCP connection (no-op when already up); PlcConnectError on failure."""
        async with self._lock:
            if self.connected:
                return
            self._drop()
            s = self._settings
            client = AsyncModbusTcpClient(
                s.host,
                port=s.port,
                name=s.name,
                timeout=s.timeout_s + _LIBRARY_TIMEOUT_MARGIN_S,
                retries=0,
                reconnect_delay=0,  # 0 disables pymodbus' background reconnect task
                trace_connect=self._on_connection_change,
            )
            client.register(_HoldingRegisterBytes)  # this client's decoder only
            client.register(_InputRegisterBytes)
            self._client = client
            try:
                async with asyncio.timeout(s.timeout_s):
                    ok = await client.connect()
            except TimeoutError as exc:
                self._drop()
                raise PlcConnectError(f"{self._where()}: connect timed out") from exc
            except OSError as exc:
                self._drop()
                raise PlcConnectError(f"{self._where()}: connect failed: {exc}") from exc
            if not ok:
                # pymodbus swallows the OSError (refused, unreachable) and returns False.
                self._drop()
                raise PlcConnectError(f"{self._where()}: connect failed (refused or unreachable)")

    async def read(self) -> dict[str, float | bool]:
        """Read every planned block once; tag name -> engineering value."""
        async with self._lock:
            values: dict[str, float | bool] = {}  # a fresh dict per read, filled by every block
            for block, read_into, bits, where in self._plan:
                await self._read_block(block, read_into, bits, where, values)
            return values

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------

    async def _read_block(
        self,
        block: ReadBlock,
        read_into: BlockReader,
        bits: bool,
        where: str,
        values: dict[str, float | bool],
    ) -> None:
        client = self._client
        if client is None:
            raise PlcConnectError(f"{where}: not connected")
        if not client.connected:
            self._drop()
            raise PlcConnectError(f"{where}: connection closed by the peer")
        request = _request_for(client, block.area)
        timeout_s = self._settings.timeout_s
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout_s
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._check_deadline, loop)
        self._in_flight = True
        try:
            response = await request(
                block.start, count=block.count, device_id=self._settings.unit_id
            )
        except _Unanswered:
            self._drop()  # a late answer would desync the stream: the connection is suspect
            message = f"{where}: no answer within {timeout_s} s"
            raise PlcTimeout(message) from TimeoutError(message)
        except TimeoutError as exc:
            self._drop()
            raise PlcTimeout(f"{where}: no answer within {timeout_s} s") from exc
        except (ConnectionException, OSError) as exc:
            self._drop()
            raise PlcConnectError(f"{where}: connection lost: {exc}") from exc
        except ModbusIOException as exc:
            self._drop()
            raise PlcProtocolError(f"{where}: bad response: {exc}", retryable=True) from exc
        except (ModbusException, ValueError) as exc:
            # Raised by pymodbus' own checks before anything is sent: the link is fine.
            raise PlcProtocolError(f"{where}: request rejected: {exc}") from exc
        except BaseException:
            self._drop()  # cancelled mid-request: a late reply would desync the stream
            raise
        finally:
            self._in_flight = False
        if response.isError():
            raise PlcProtocolError.from_modbus_exception(response.exception_code, where)
        try:
            # a response of another kind has no register bytes: a short read, as before
            read_into(response.bits if bits else getattr(response, "wire", b""), values)
        except PlcError:
            self._drop()
            raise
        except ValueError as exc:
            self._drop()
            raise PlcProtocolError(f"{where}: undecodable data: {exc}", retryable=True) from exc

    def _check_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        """The watchdog: fail the request in flight once its deadline has passed (pymodbus
        then raises from the await at once); while a later request's deadline lies ahead,
        wait for that; with nothing in flight, stop until the next request."""
        self._watchdog = None
        client = self._client
        if client is None or not self._in_flight:
            return
        if loop.time() < self._deadline:
            self._watchdog = loop.call_at(self._deadline, self._check_deadline, loop)
            return
        pending = client.ctx.response_future
        if not pending.done():
            pending.set_exception(_Unanswered())

    def _on_connection_change(self, up: bool) -> None:
        """pymodbus callback. When the peer closes or resets the socket, pymodbus leaves the
        pending request waiting for its timeout; fail it now so the poll reports the lost
        connection at once instead of a timeout later."""
        client = self._client
        if up or client is None or not self._in_flight:
            return
        pending = client.ctx.response_future
        if not pending.done():
            pending.set_exception(ConnectionException("connection closed by peer"))

    def _drop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _where(self) -> str:
        return f"{self.name} ({self._settings.host}:{self._settings.port})"


class _RegisterBytes:
    """A register-read response that keeps the register bytes as they came (`wire`) for
    the block reader to unpack in one go. pymodbus' own response decodes them into a list
    of ints, one `struct.unpack` each, which the reader would only pack back into bytes
    (and every response is formatted, registers included, for a debug log line)."""

    function_code: int
    registers: Sequence[int]
    wire: bytes

    def decode(self, data: bytes) -> None:
        """As pymodbus' decode (same checks), keeping the bytes instead of a list."""
        self.registers = []
        if (data_len := int(data[0])) >= len(data):
            raise ModbusIOException(
                f"byte_count {data_len} > length of packet {len(data)}",
                function_code=self.function_code,
            )
        if data_len % 2:  # pymodbus fails to unpack the odd last byte (struct.error)
            raise ModbusIOException(f"odd byte_count {data_len}", function_code=self.function_code)
        self.wire = data[1 : 1 + data_len]


class _HoldingRegisterBytes(_RegisterBytes, ReadHoldingRegistersResponse):
    pass


class _InputRegisterBytes(_RegisterBytes, ReadInputRegistersResponse):
    pass


class _Unanswered(Exception):
    """Set on pymodbus' pending response by the watchdog: no answer by the deadline. Not a
    TimeoutError, which pymodbus would take for its own timeout and retry or log."""


def _request_for(client: AsyncModbusTcpClient, area: Area) -> _Request:
    if area is Area.HOLDING:
        return client.read_holding_registers
    if area is Area.INPUT:
        return client.read_input_registers
    if area is Area.COIL:
        return client.read_coils
    if area is Area.DISCRETE:
        return client.read_discrete_inputs
    raise PlcProtocolError(f"{area} is not a Modbus table")  # planning rejects this earlier

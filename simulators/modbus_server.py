"""One simulated Modbus TCP PLC, served with pymodbus 3.16's asyncio server.

The register map comes from the PLC's tags (0-based `hr:N` etc. as in the
config). Each table (coils, discrete inputs, holding and input registers)
serves one contiguous block from its lowest to its highest tagged address, so
a client may read across the gaps between tags (the invops poller bridges
small gaps); addresses outside a block answer exception 02. Tags are
read-only: writes answer exception 02.

pymodbus 3.16 notes (REFERENCE 4.6):

* the classic `ModbusDeviceContext`/`ModbusSequentialDataBlock` datastore is
  deprecated and is only a wrapper around `pymodbus.simulator.SimDevice`, so
  this module uses `SimDevice`/`SimData` directly (0-based addresses, no
  off-by-one);
* there is no public way to write a running server's registers; instead the
  device's async `action` hook, called on every request before the answer is
  built, copies this server's current image into the registers it is handed.
  The same hook injects delays and exception responses;
* a request for another unit id would make pymodbus fail with an internal
  error (exception 04); a catch-all device (id 0) answers it with exception
  0B "gateway target device failed to respond", as a gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimDataType
from pymodbus.simulator import SimData, SimDevice

from inventory_core.log import get_logger
from plc_connectors import Area, PlcProtocol, PlcSettings, Tag, encode_registers
from plc_connectors.codecs import register_count
from simulators.faults import Faults, ListenError, SimulatorError, follow_faults
from simulators.plant import to_raw

__all__ = ["ModbusPlcServer"]

log = get_logger(__name__)

_BIT_AREAS: Final = (Area.COIL, Area.DISCRETE)
_AREAS: Final = (Area.COIL, Area.DISCRETE, Area.HOLDING, Area.INPUT)
# Function code -> table (read, write single/multiple, mask write, read/write multiple).
_TABLE_OF: Final[Mapping[int, Area]] = {
    1: Area.COIL,
    5: Area.COIL,
    15: Area.COIL,
    2: Area.DISCRETE,
    3: Area.HOLDING,
    6: Area.HOLDING,
    16: Area.HOLDING,
    22: Area.HOLDING,
    23: Area.HOLDING,
    4: Area.INPUT,
}
_RETRY_LISTEN_S: Final = 0.5


@dataclass(slots=True)
class _Table:
    """One Modbus table's served block: addresses [low, high) and its register image.

    Bit tables keep their bits packed 16 to a register, bit 0 first, starting at
    register low // 16 (pymodbus' layout for non-shared bit blocks)."""

    area: Area
    low: int
    high: int
    image: list[int]

    @property
    def empty(self) -> bool:
        return self.high <= self.low


def _check_bindable(host: str, port: int) -> None:
    """The OSError (with its errno: in use, permission denied, ...) that binding host:port
    raises; pymodbus reports a failed bind only as a RuntimeError and a log line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listener
        probe.bind((host, port))


class ModbusPlcServer:
    """Serves one Modbus PLC on `host:port` (port 0: any free port, see `port`)."""

    def __init__(
        self,
        settings: PlcSettings,
        faults: Faults,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        if settings.protocol is not PlcProtocol.MODBUS:
            raise SimulatorError(f"{settings.name}: not a Modbus PLC ({settings.protocol})")
        self.settings = settings
        self.name = settings.name
        self.host = host
        self._faults = faults
        self._requested_port = settings.port if port is None else port
        self._bound_port: int | None = None
        self._server: ModbusTcpServer | None = None
        self._tags = [tag for tag in settings.tags if tag.address.area in _AREAS]
        self._tables = {area: _table(area, self._tags) for area in _AREAS}
        self._closing = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The TCP port served (the bound one when started with port 0)."""
        if self._bound_port is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._bound_port

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Bind and listen (unless the `refuse` fault is set); SimulatorError if it cannot."""
        self._closing.clear()
        try:
            await self._listen()  # even when refusing: binding once fixes the port
        except OSError as exc:
            port = self._bound_port or self._requested_port
            raise ListenError(self.name, self.host, port, exc) from exc
        if self._faults.plc(self.name).refuse:
            await self._unlisten()

    async def serve(self) -> None:
        """Follow fault changes (refuse, drop) until cancelled."""
        await follow_faults(self._faults, self._apply_faults, _RETRY_LISTEN_S)

    async def stop(self) -> None:
        """Close the listener and every connection."""
        self._closing.set()
        await self._unlisten()

    async def __aenter__(self) -> ModbusPlcServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ values

    def update(self, values: Mapping[str, float | bool]) -> None:
        """Show these engineering values (by tag name) from now on, unless frozen."""
        if self._faults.plc(self.name).freeze:
            return
        for tag in self._tags:
            value = values.get(tag.name)
            if value is not None:
                self._write(tag, value)

    def _write(self, tag: Tag, value: float | bool) -> None:
        table = self._tables[tag.address.area]
        index = tag.address.index
        if table.area in _BIT_AREAS:
            register, bit = index // 16 - table.low // 16, index % 16
            if to_raw(tag, value):
                table.image[register] |= 1 << bit
            else:
                table.image[register] &= ~(1 << bit)
            return
        registers = encode_registers(to_raw(tag, value), tag.data_type, tag.word_order)
        offset = index - table.low
        table.image[offset : offset + len(registers)] = registers

    # ------------------------------------------------------------------ serving

    async def _listen(self) -> None:
        port = self._bound_port if self._bound_port is not None else self._requested_port
        _check_bindable(self.host, port)
        server = ModbusTcpServer(self._devices(), address=(self.host, port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind as RuntimeError
            await _shutdown(server)
            raise OSError(f"address in use or not available ({exc})") from exc
        listener = server.transport
        sockets = getattr(listener, "sockets", None) or ()
        if sockets:
            self._bound_port = int(sockets[0].getsockname()[1])
        self._server = server
        log.info("modbus_listening", plc=self.name, port=self._bound_port)

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        listener = server.transport
        await _shutdown(server)  # closes the listener and every connection
        if isinstance(listener, asyncio.Server):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await listener.wait_closed()

    async def _apply_faults(self) -> bool:
        """Make the listener match the faults; True when a re-listen must be retried."""
        state = self._faults.plc(self.name)
        if state.refuse:
            await self._unlisten()
            return False
        if self._server is None and not self._closing.is_set():
            try:
                await self._listen()
            except OSError as exc:
                log.warning("modbus_relisten_failed", plc=self.name, error=str(exc))
                return True
        if state.drop:
            self._drop_connections()
        return False

    def _drop_connections(self) -> None:
        if self._server is not None:
            for connection in list(self._server.active_connections.values()):
                connection.close()

    def _devices(self) -> list[SimDevice]:
        simdata = self._simdata()
        devices = [SimDevice(id=self.settings.unit_id, simdata=simdata, action=self._action)]
        if self.settings.unit_id != 0:
            # pymodbus: id 0 catches every other unit id.
            devices.append(SimDevice(id=0, simdata=self._simdata(), action=_wrong_unit))
        return devices

    def _simdata(
        self,
    ) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        blocks = tuple(_block(self._tables[area]) for area in _AREAS)
        return blocks[0], blocks[1], blocks[2], blocks[3]

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every request of our unit id, before it answers."""
        state = self._faults.plc(self.name)
        if state.drop:
            self._drop_connections()
            raise asyncio.CancelledError  # unanswered: the connection is gone
        if state.delay_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(state.delay_s):
                    await self._closing.wait()
            if self._closing.is_set():
                # Stopping: the connection is gone, so this request ends unanswered
                # (answering would only make pymodbus log a failed send).
                raise asyncio.CancelledError
        if state.exception is not None:
            return ExcCodes(state.exception)
        area = _TABLE_OF.get(function_code)
        if area is None:
            return ExcCodes.ILLEGAL_FUNCTION
        table = self._tables[area]
        if table.empty or not table.low <= address < table.high:
            return ExcCodes.ILLEGAL_ADDRESS
        registers[: len(table.image)] = table.image
        return None


async def _shutdown(server: ModbusTcpServer) -> None:
    shutdown: Callable[[], Awaitable[None]] = server.shutdown  # untyped in pymodbus
    await shutdown()


async def _wrong_unit(
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE


def _table(area: Area, tags: list[Tag]) -> _Table:
    spans = [
        (tag.address.index, tag.address.index + register_count(tag.data_type))
        for tag in tags
        if tag.address.area is area
    ]
    if not spans:
        return _Table(area, 0, 0, [])
    low, high = min(s[0] for s in spans), max(s[1] for s in spans)
    size = (high - 1) // 16 - low // 16 + 1 if area in _BIT_AREAS else high - low
    return _Table(area, low, high, [0] * size)


def _block(table: _Table) -> list[SimData]:
    """The SimData of one table (pymodbus needs at least one entry per table)."""
    if table.area in _BIT_AREAS:
        if table.empty:  # bit tables must be BITS; the action refuses every request
            return [SimData(address=0, count=16, values=False, datatype=SimDataType.BITS)]
        first = table.low // 16 * 16
        bits = 16 * len(table.image)
        return [
            SimData(address=first, values=[False] * bits, datatype=SimDataType.BITS, readonly=True)
        ]
    if table.empty:
        return [SimData(address=0, count=1, datatype=SimDataType.INVALID)]
    return [
        SimData(
            address=table.low,
            count=table.high - table.low,
            values=0,
            datatype=SimDataType.REGISTERS,
            readonly=True,
        )
    ]

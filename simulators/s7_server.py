"""One simulated Siemens S7 PLC, served with python-snap7 3.3's pure-Python `snap7.Server`.

Each data block the PLC's tags use is registered as a live bytearray sized
to the tags (the highest tagged byte + 1); `update` encodes the values with
the invops codecs (big-endian, as S7 is) and swaps them in under the area
lock, so a client never reads half an update. Reads past a DB's end answer
"invalid address" (0x05), reads of an unknown DB "object does not exist" (0x0A).

`snap7.Server` runs its listener and one thread per client. What this module
adds through a small subclass (the library has no hooks for it):

* **rack/slot**: the library accepts any rack and slot; the subclass peeks at
  the COTP connection request and closes connections whose called TSAP names
  another rack/slot, as a real CPU rejects them;
* **port in use**: the library binds with SO_REUSEPORT, so on Linux a second
  server on a busy port would start and silently share it; an exclusive probe
  bind first makes a busy port an error;
* **stop**: `Server.stop()` closes only the listener; connected clients keep
  being served until they disconnect (and `stop()` waits up to 1 s per
  client). The subclass tracks client sockets and shuts them down first;
* **faults**: `delay_s` sleeps in the client's thread before answering,
  `drop` shuts client sockets down (new ones at their first request),
  `refuse` stops the server and restarts it on the same port when cleared,
  `freeze` stops `update`. `exception` is Modbus-only and ignored here.

Writes from clients (`db_write`) are accepted by the library and are
overwritten by the next update.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Final

import snap7
from snap7.error import S7ConnectionError
from snap7.type import SrvArea

from inventory_core.log import get_logger
from plc_connectors import Area, DataType, PlcProtocol, PlcSettings, Tag, byte_size, encode_bytes
from simulators.faults import Faults, ListenError, SimulatorError, follow_faults
from simulators.plant import to_raw

__all__ = ["S7PlcServer"]

log = get_logger(__name__)

_RETRY_LISTEN_S: Final = 0.5
_PEEK_TIMEOUT_S: Final = 2.0
_COTP_CR: Final = 0xE0
_COTP_CALLED_TSAP: Final = 0xC2


class _S7Device(snap7.Server):
    """snap7.Server with client-socket tracking, rack/slot check and fault hooks."""

    def __init__(self, name: str, faults: Faults, rack: int, slot: int) -> None:
        super().__init__(log=False)
        self._sim_name = name
        self._sim_faults = faults
        self._sim_tsap = (rack << 5) | slot
        self._sim_sockets: dict[tuple[str, int], socket.socket] = {}
        self._sim_lock = threading.Lock()
        self.wake = threading.Event()  # set on stop: cuts injected delays short

    def start(self, tcp_port: int = 102) -> int:
        self.wake.clear()
        return super().start(tcp_port=tcp_port)

    def stop(self) -> int:
        self.wake.set()
        self.shutdown_clients()
        return super().stop()

    def shutdown_clients(self) -> None:
        """Shut every client connection down; its thread then ends on its own."""
        with self._sim_lock:
            sockets = list(self._sim_sockets.values())
        for sock in sockets:
            _shutdown(sock)

    def _handle_client(self, client_socket: socket.socket, address: tuple[str, int]) -> None:
        with self._sim_lock:
            self._sim_sockets[address] = client_socket
        try:
            state = self._sim_faults.plc(self._sim_name)
            if state.drop or state.refuse or not self._rack_slot_ok(client_socket, address):
                # The library's handler then sees the peer gone and cleans up as usual.
                _reject(client_socket)
            super()._handle_client(client_socket, address)
        finally:
            with self._sim_lock:
                self._sim_sockets.pop(address, None)

    def _process_request(
        self, request_data: bytes, client_address: tuple[str, int]
    ) -> bytes | None:
        state = self._sim_faults.plc(self._sim_name)
        if state.drop:
            with self._sim_lock:
                sock = self._sim_sockets.get(client_address)
            if sock is not None:
                _shutdown(sock)
            return None
        if state.delay_s > 0 and self.wake.wait(state.delay_s):
            return None  # woken by stop: the connection is being shut down
        response: bytes | None = super()._process_request(request_data, client_address)
        return response

    def _rack_slot_ok(self, sock: socket.socket, address: tuple[str, int]) -> bool:
        """Peek (without consuming) at the COTP connection request's called TSAP."""
        called = _peek_called_tsap(sock)
        if called is None or len(called) != 2 or called[1] == self._sim_tsap:
            return True
        rack, slot = called[1] >> 5, called[1] & 0x1F
        log.info("s7_wrong_rack_slot", plc=self._sim_name, peer=str(address), rack=rack, slot=slot)
        return False


def _check_port_free(host: str, port: int) -> None:
    """OSError if something listens on host:port. snap7.Server binds with SO_REUSEPORT,
    so on Linux a second simulator would silently share the port with the first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        probe.bind((host, port))


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _reject(sock: socket.socket) -> None:
    """Discard what the peer sent (the library would answer it) and shut the socket down."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        while sock.recv(4096):
            pass
    _shutdown(sock)


def _peek_called_tsap(sock: socket.socket) -> bytes | None:
    """The called TSAP of the COTP CR waiting on `sock`, or None if it cannot be seen."""
    deadline = time.monotonic() + _PEEK_TIMEOUT_S
    data = b""
    try:
        sock.settimeout(_PEEK_TIMEOUT_S)
        while time.monotonic() < deadline:
            data = sock.recv(512, socket.MSG_PEEK)
            if not data or (len(data) >= 4 and len(data) >= int.from_bytes(data[2:4], "big")):
                break
            time.sleep(0.005)  # partial frame: peeking again returns at once
    except OSError:
        return None  # timeout or reset: the library's handler deals with it
    if len(data) < 4 + 7 or data[0] != 3 or data[5] != _COTP_CR:
        return None
    end = min(len(data), 4 + 1 + data[4])  # TPKT header + COTP length indicator
    offset = 4 + 7
    while offset + 2 <= end:
        code, size = data[offset], data[offset + 1]
        if code == _COTP_CALLED_TSAP:
            return bytes(data[offset + 2 : offset + 2 + size])
        offset += 2 + size
    return None


class S7PlcServer:
    """Serves one S7 PLC on `host:port` (port 0: any free port, see `port`)."""

    def __init__(
        self,
        settings: PlcSettings,
        faults: Faults,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        if settings.protocol is not PlcProtocol.S7:
            raise SimulatorError(f"{settings.name}: not an S7 PLC ({settings.protocol})")
        self.settings = settings
        self.name = settings.name
        self.host = host
        self._faults = faults
        self._requested_port = settings.port if port is None else port
        self._bound_port: int | None = None
        self._tags = [tag for tag in settings.tags if tag.address.area is Area.DB]
        sizes: dict[int, int] = {}
        for tag in self._tags:
            db = tag.address.db or 0
            sizes[db] = max(sizes.get(db, 0), tag.address.index + byte_size(tag.data_type))
        self._memory = {db: bytearray(size) for db, size in sorted(sizes.items())}
        self._staging = {db: bytearray(size) for db, size in self._memory.items()}
        self._device = _S7Device(self.name, faults, settings.rack, settings.slot)
        for db, memory in self._memory.items():
            self._device.register_area(SrvArea.DB, db, memory)
        self._running = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The TCP port served (the bound one when started with port 0)."""
        if self._bound_port is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._bound_port

    @property
    def listening(self) -> bool:
        return self._running

    @property
    def data_blocks(self) -> dict[int, int]:
        """Served DB numbers and their sizes in bytes."""
        return {db: len(memory) for db, memory in self._memory.items()}

    async def start(self) -> None:
        """Bind and listen (unless the `refuse` fault is set); SimulatorError if it cannot."""
        self._closing = False
        try:
            self._listen()  # even when refusing: binding once fixes the port
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
        self._closing = True
        await self._unlisten()

    async def __aenter__(self) -> S7PlcServer:
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
        touched: set[int] = set()
        for tag in self._tags:
            value = values.get(tag.name)
            if value is not None:
                self._encode(tag, value)
                touched.add(tag.address.db or 0)
        for db in touched:
            self._device.lock_area(SrvArea.DB, db)
            try:
                self._memory[db][:] = self._staging[db]
            finally:
                self._device.unlock_area(SrvArea.DB, db)

    def _encode(self, tag: Tag, value: float | bool) -> None:
        staging = self._staging[tag.address.db or 0]
        index = tag.address.index
        if tag.data_type is DataType.BOOL:
            bit = tag.address.bit or 0
            merged = (
                staging[index] & ~(1 << bit)
                | encode_bytes(to_raw(tag, value), tag.data_type, bit)[0]
            )
            staging[index] = merged
            return
        data = encode_bytes(to_raw(tag, value), tag.data_type)
        staging[index : index + len(data)] = data

    # ------------------------------------------------------------------ serving

    def _listen(self) -> None:
        port = self._bound_port if self._bound_port is not None else self._requested_port
        _check_port_free(self.host, port)  # port 0 too: a foreign host fails with its errno
        self._device.host = self.host
        try:
            self._device.start(tcp_port=port)
        except S7ConnectionError as exc:
            raise OSError(str(exc)) from exc
        listener = self._device.server_socket
        if listener is not None:
            self._bound_port = int(listener.getsockname()[1])
        self._running = True
        log.info("s7_listening", plc=self.name, port=self._bound_port)

    async def _unlisten(self) -> None:
        if not self._running:
            return
        self._running = False
        await asyncio.to_thread(self._device.stop)  # joins the library's threads

    async def _apply_faults(self) -> bool:
        """Make the listener match the faults; True when a re-listen must be retried."""
        state = self._faults.plc(self.name)
        if state.refuse:
            await self._unlisten()
            return False
        if not self._running and not self._closing:
            try:
                self._listen()
            except OSError as exc:
                log.warning("s7_relisten_failed", plc=self.name, error=str(exc))
                return True
        if state.drop:
            self._device.shutdown_clients()
        return False

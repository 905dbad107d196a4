"""The SQLite ledger writer in a process of its own.

Why: in one process, the batch writer's thread and the event loop share one
interpreter lock, so every request the loop serves (HTTP, OPC UA, PLC polling)
slows the writer and the writer slows them. Here the `BatchWriter` runs in a
child process on the other core, with its own sqlite3 connection, and the
service's loop only hands requests over.

The two talk over a socketpair in frames (4-byte length, then a pickled list of
messages): everything the parent submits in one loop round leaves in one frame,
and the child answers each batch in one frame. The child commits a batch before
it answers, so an acknowledged posting is durable. Postings carry the parent's
clock (the child books a batch at the latest time it was handed), so the
service's clock stays the ledger's.

Crash behaviour: when the parent dies (even `kill -9`), the child reads end of
file, commits what it was already handed (never acknowledged, so a client retries
it with its idempotency key), closes the database and exits, releasing SQLite's
write lock. It ignores SIGINT, SIGTERM and SIGHUP: a Ctrl-C, a closed terminal or a
stop sent to the whole process group reaches the parent too, which drains and stops
the child in order (or dies, and the child sees end of file). When the child
dies, whatever was in flight fails with LedgerUnavailable (it may have committed:
the caller retries with the same key) and the next request starts a new child.
The child's log records are forwarded to the parent's logging.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import make_url

from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.log import get_logger
from inventory_core.store.engine import SqliteRunner
from inventory_core.store.writer import BatchWriter, Command, Request, settle

log = get_logger(__name__)

_HEADER = 4  # bytes of a frame's length
START_TIMEOUT_S = 60  # a loaded machine may take seconds to import the writer


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """What the child needs to open its writer (the first message it receives)."""

    url: str
    writer_id: str
    batch_max: int
    capacity_margin_pct: Decimal
    lease_instance: str | None  # the writer lease's, checked in every batch (`fence_with`)
    log_level: int


def _frame(messages: list[Any]) -> bytes:
    try:
        payload = pickle.dumps(messages, pickle.HIGHEST_PROTOCOL)
    except Exception:  # one unpicklable outcome must not lose the others
        payload = pickle.dumps([_picklable(m) for m in messages], pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(_HEADER, "big") + payload


def _picklable(message: Any) -> Any:
    try:
        pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        if message[0] == "done":
            return ("done", message[1], LedgerUnavailable(f"ledger writer: {exc}"))
        return ("dropped", repr(exc))
    return message


def _take_frames(buffer: bytearray) -> list[Any]:
    """The messages of every complete frame at the start of `buffer` (removed from it)."""
    messages: list[Any] = []
    offset = 0
    while len(buffer) - offset >= _HEADER:
        size = int.from_bytes(buffer[offset : offset + _HEADER], "big")
        end = offset + _HEADER + size
        if len(buffer) < end:
            break
        messages.extend(pickle.loads(buffer[offset + _HEADER : end]))
        offset = end
    del buffer[:offset]
    return messages


class _Link(asyncio.Protocol):
    """One end of the socketpair: frames in to `received`, an outbox flushed once a round."""

    def __init__(self, received: Callable[[Any], None], lost: Callable[[], None]) -> None:
        self._received = received
        self._lost = lost
        self._buffer = bytearray()
        self._outbox: list[Any] = []
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        for message in _take_frames(self._buffer):
            self._received(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost()

    def send(self, message: Any) -> None:
        """Queue `message`; everything queued in this loop round leaves in one frame."""
        if self.closed:
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self.flush)
        self._outbox.append(message)

    def flush(self) -> None:
        if self._outbox and self._transport is not None and not self.closed:
            self._transport.write(_frame(self._outbox))
        self._outbox = []

    def close(self) -> None:
        self.flush()
        if self._transport is not None:
            self._transport.close()


# -- the parent's side -----------------------------------------------------------


class WriterProcess:
    """The service's handle on the child writer: `submit` as on `BatchWriter`."""

    def __init__(
        self,
        settings: WriterSettings,
        *,
        now: Callable[[], str],
        today: Callable[[], date],
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self._now = now
        self._today = today
        self._on_commit = on_commit
        self._process: asyncio.subprocess.Process | None = None
        self._link: _Link | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._next_id = 0
        self._starting = asyncio.Lock()
        self._stopping = False

    def fence_with(self, lease_instance: str) -> None:
        """As `BatchWriter.fence_with`, for the child (started after the lease is taken)."""
        self.settings = replace(self.settings, lease_instance=lease_instance)

    @property
    def running(self) -> bool:
        return self._link is not None and not self._link.closed

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        return self._process.pid if self._process is not None and self.running else None

    async def start(self) -> None:
        """Start the child and wait until its writer is open (LedgerUnavailable if not)."""
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _child_code(), str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            mine.close()
            raise LedgerUnavailable(f"cannot start the ledger writer process: {exc}") from exc
        finally:
            theirs.close()
        self._ready = loop.create_future()
        link = _Link(self._received, self._lost)
        await loop.create_unix_connection(lambda: link, sock=mine)
        self._link = link
        link.send(("settings", self.settings))
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await self._ready
        except TimeoutError:
            self._process.kill()
            await self._reap()
            raise LedgerUnavailable(
                f"the ledger writer process did not start within {START_TIMEOUT_S} s"
            ) from None
        log.info(
            "ledger_writer_process_started", writer=self.settings.writer_id, pid=self._process.pid
        )

    async def submit(self, request: Request, digest: str = "") -> Any:
        if self._stopping:
            raise LedgerUnavailable("the ledger writer is not running")
        if not self.running:
            await self._restart()
        assert self._link is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._next_id += 1
        self._pending[self._next_id] = future
        self._link.send(("post", self._next_id, request, digest, self._now(), self._today()))
        return await future

    async def _restart(self) -> None:
        async with self._starting:
            if self.running:
                return
            await self._reap()
            await self.start()

    def _received(self, message: Any) -> None:
        kind = message[0]
        if kind == "done":
            future = self._pending.pop(message[1], None)
            if future is not None:
                settle(future, message[2])
        elif kind == "commit":
            if self._on_commit is not None:
                self._on_commit(message[1], message[2])
        elif kind == "log":
            _log_record(message[1])
        elif kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif kind == "dropped":
            log.error("ledger_writer_message_dropped", error=message[1])

    def _lost(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(LedgerUnavailable("the ledger writer process did not start"))
        pending, self._pending = self._pending, {}
        if not self._stopping:
            log.error(
                "ledger_writer_process_exited",
                writer=self.settings.writer_id,
                in_flight=len(pending),
            )
        error = LedgerUnavailable(
            "the ledger writer process exited; a request in flight may have been booked: "
            "retry it with the same idempotency key"
        )
        for future in pending.values():
            settle(future, error)

    async def stop(self) -> None:
        """Let the child finish every request already handed over, then wait for it."""
        self._stopping = True
        if self._link is not None and not self._link.closed:
            self._link.send(("stop",))
            self._link.flush()
        await self._reap()

    async def _reap(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await process.wait()
        if self._link is not None:
            self._link.close()
            self._link = None


def _child_code() -> str:
    """The child's program: this process's import path (so that it runs this very
    inventory_core, however the service was started), then `main`."""
    return f"import sys; sys.path[:] = {sys.path!r}; from {__name__} import main; main()"


class WriterTraceback(Exception):
    """An exception logged in the writer process, as its traceback's text (a traceback
    does not cross processes); the service's log shows it as the writer's traceback."""


def _log_record(fields: dict[str, Any]) -> None:
    record = logging.makeLogRecord(fields)
    if record.exc_text:  # rendered again from exc_info by every formatter, structlog's too
        record.exc_info = (WriterTraceback, WriterTraceback(record.exc_text), None)
        record.exc_text = None
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


# -- the child's side ------------------------------------------------------------


class _Forward(logging.Handler):
    """The child's log records, sent to the parent as their attributes."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        if self._link.closed:  # the service is gone: stderr is all that is left
            if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)
            return
        fields = dict(record.__dict__)
        fields["msg"], fields["args"] = record.getMessage(), None
        if record.exc_info:  # a traceback does not pickle: its text does
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        try:
            pickle.dumps(fields)
        except Exception:
            shown = {name: str(value) for name, value in fields.get("event_dict", {}).items()}
            fields["event_dict"] = shown
        self._link.send(("log", fields))


class _Child:
    """Receives settings and postings; the batches run in `serve`."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.settings: asyncio.Future[WriterSettings] = loop.create_future()
        self.queue: deque[tuple[int, Command]] = deque()
        self.stamp, self.today = "", date.min
        self.stopping = False
        self.wake = asyncio.Event()
        self.link = _Link(self._received, self._lost)

    def _received(self, message: Any) -> None:
        kind = message[0]
        if kind == "post":
            _, ident, request, digest, self.stamp, self.today = message
            future = asyncio.get_running_loop().create_future()
            self.queue.append((ident, Command(request, digest, future)))
        elif kind == "settings" and not self.settings.done():
            self.settings.set_result(message[1])
        elif kind == "stop":
            self.stopping = True
        self.wake.set()

    def _lost(self) -> None:  # the parent is gone: finish what was handed over, then exit
        self.stopping = True
        if not self.settings.done():
            self.settings.set_exception(ConnectionError("the service closed the writer link"))
        self.wake.set()


async def serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    child = _Child()
    await loop.create_unix_connection(lambda: child.link, sock=sock)
    try:
        settings = await child.settings
    except ConnectionError:
        return
    logging.getLogger().addHandler(_Forward(child.link))
    logging.getLogger().setLevel(settings.log_level)
    runner = SqliteRunner(make_url(settings.url))
    try:
        writer = BatchWriter(
            runner,
            writer_id=settings.writer_id,
            batch_max=settings.batch_max,
            now=lambda: child.stamp,
            today=lambda: child.today,
            on_commit=lambda batch, seconds: child.link.send(("commit", len(batch), seconds)),
            capacity_margin_pct=settings.capacity_margin_pct,
        )
        if settings.lease_instance is not None:
            writer.fence_with(settings.lease_instance)
        child.link.send(("ready",))
        while child.queue or not child.stopping:
            if not child.queue:
                child.wake.clear()
                await child.wake.wait()
                continue
            await asyncio.sleep(0)  # take in what else has arrived: a bigger batch
            size = min(settings.batch_max, len(child.queue))
            batch = [child.queue.popleft() for _ in range(size)]
            await writer.run_batch([command for _, command in batch])
            for ident, command in batch:
                child.link.send(("done", ident, _outcome(command.future)))
            child.link.flush()
    finally:
        await runner.close()
        child.link.close()


def _outcome(future: asyncio.Future[Any]) -> object:
    if not future.done():
        return LedgerUnavailable("the ledger writer left a request unanswered")
    return future.exception() or future.result()


def main() -> None:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the link decides
        signal.signal(number, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    asyncio.run(serve(sock))

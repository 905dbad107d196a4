"""One HTTP listener for an ASGI app: uvicorn on the service's event loop, with limits.

`HttpServer(app, host, port, name=..., limits=HttpLimits(...))` serves any ASGI
app (the metrics/health router of `invops.http`; the Level-4 API of SPEC §8 on
`[api] listen` is meant to be a second `HttpServer` with its own limits, so a
flood on one listener never takes the other's connections).

What a hostile or careless client can hold, and for how long:

- **listen backlog** (`backlog`, default 2048, capped by the kernel's
  `net.core.somaxconn`): connections the kernel completes before they are accepted;
- **open connections** (`max_connections`, default 512): a connection beyond the
  cap is answered `503` (`Retry-After: 1`, `Connection: close`) as soon as its
  request has been read, within 1 s, and closed, so a flood cannot use up the
  process's file descriptors (which the PLC links, the ledger and OPC UA need too):
  at most another `max_connections` refused ones linger, beyond that they are
  closed at once. uvicorn's own `limit_concurrency` is not used: it keeps every
  connection open and only answers the requests on them with 503;
- **request head** (`header_timeout_s`, default 5 s): a new connection, or the
  next request on a kept-alive one from its first byte, must deliver its complete
  request line and headers within this time, however it trickles them (an absolute
  deadline, not an idle timer), or it is answered `408` and closed. uvicorn arms no
  timer before the first response of a connection, and re-arms none while bytes
  trickle in: a slowloris client would otherwise hold its connection for ever.
  The head (request line and headers) is at most `max_header_bytes` (16 KiB; more
  is a `431` and the connection is closed);
- **idle keep-alive** (`keep_alive_s`, default 5 s): uvicorn's `timeout_keep_alive`;
- **shutdown** (`shutdown_timeout_s`, default 5 s): on stop the socket closes,
  idle connections close, requests in progress get this long to finish (uvicorn's
  `timeout_graceful_shutdown`), then whatever is left is aborted.

No thread per connection: every connection is a protocol object on the event
loop. Request bodies are buffered by uvicorn only up to its flow-control mark
(64 KiB) until the app reads them; an app that reads bodies (the API) bounds
the time and size it waits for one itself.

Lifecycle: the socket is bound in the caller's step (`bind()`, the first step of
`serve()` and of `async with`), so a port in use is an `HttpServerError` naming
the address before anything else starts; port 0 picks a free port (`port`).
`serve()` is a TaskGroup task that serves until cancelled; `async with` serves
in a task the server owns until the block exits; `start()`/`stop()` serve from a
thread with an event loop of its own, for callers without one (tests, tools).
Signals stay the service's: uvicorn's `Server.serve()` (which installs its own
SIGINT/SIGTERM handlers) is not used, only its `startup`, `main_loop` and
`shutdown`.

Logging: `<name>_listening url=...` and `<name>_stopped` at INFO; refused
connections as one WARNING per minute at most; uvicorn's loggers (`uvicorn.error`,
`uvicorn.access`: one line per request) go through the project's logging like
other libraries' (`invops.logs`: WARNING and above unless the level is DEBUG).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inventory_core.log import get_logger

__all__ = ["HttpLimits", "HttpServer", "HttpServerError"]

log = get_logger(__name__)

_BUSY_WARNING_INTERVAL_S: Final = 60.0
_REFUSAL_LINGER_S: Final = 1.0
_THREAD_START_TIMEOUT_S: Final = 10.0


class HttpServerError(Exception):
    """Raised when an HTTP listener cannot bind its address."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one HTTP listener tolerates (see the module docstring)."""

    backlog: int = 2048
    max_connections: int = 512
    header_timeout_s: float = 5.0
    keep_alive_s: float = 5.0
    shutdown_timeout_s: float = 5.0
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("backlog", "max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("header_timeout_s", "keep_alive_s", "shutdown_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


# --------------------------------------------------------------------------- protocol


def _plain_response(status: str, text: str, *extra: str) -> bytes:
    """A complete `Connection: close` response, written before or instead of uvicorn's."""
    body = text.encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
        "connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class _Guard:
    """The limits of one listener, shared by its connections, and its refusal log."""

    def __init__(self, name: str, limits: HttpLimits) -> None:
        self.name = name
        self.limits = limits
        self.busy = _plain_response(
            "503 Service Unavailable", "too many connections, retry later\n", "retry-after: 1"
        )
        self.slow = _plain_response(
            "408 Request Timeout",
            f"request head not received within {limits.header_timeout_s:g} s\n",
        )
        self.too_large = _plain_response(
            "431 Request Header Fields Too Large",
            f"request head over {limits.max_header_bytes} bytes\n",
        )
        self.lingering: set[_GuardedProtocol] = set()  # refused, reading their request
        self._refused = 0
        self._warned_at: float | None = None

    def refused(self, connection: _GuardedProtocol) -> bool:
        """Count a refusal; True when it may linger (until its request is read)."""
        self._refused += 1
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= _BUSY_WARNING_INTERVAL_S:
            log.warning(
                "http_busy",
                server=self.name,
                max_connections=self.limits.max_connections,
                refused=self._refused,
            )
            self._warned_at, self._refused = now, 0
        if len(self.lingering) >= self.limits.max_connections:
            return False
        self.lingering.add(connection)
        return True


class _HeadTooLarge(Exception):
    """Raised from a parser callback (httptools reports it as a parser error): the
    request head is over `max_header_bytes`."""


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser: a quarter of the loop's time per request
    less than its pure-Python h11 one) plus the connection cap, the request-head deadline
    and the head's size cap (httptools has none of its own)."""

    guard: ClassVar[_Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._refusal_timer: asyncio.TimerHandle | None = None
        # The head being parsed and its bytes so far: of the chunk it began in, what the
        # parser handed over (the URL, complete headers: not the request before it);
        # each later chunk whole while the head is still open. Once complete, its size
        # is that of the URL and headers parsed.
        self._in_head = False
        self._head_bytes = 0
        self._heads_begun = 0  # heads begun on this connection
        self._chunk_heads = 0  # ... before the chunk being parsed
        self._oversized = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) <= self.guard.limits.max_connections:
            self._arm_head_deadline()
            return
        # Refused. The 503 goes out once the request has been read (closing on unread
        # bytes would reset the connection, and the client would never see the 503),
        # or after _REFUSAL_LINGER_S; at once while too many refusals are lingering.
        self.connections.discard(self)
        self._refused = True
        if self.guard.refused(self):
            self._refusal_timer = self.loop.call_later(_REFUSAL_LINGER_S, self._refuse)
        else:
            self._refuse()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._refuse()
            return
        if not self._request_in_progress():
            self._arm_head_deadline()  # the first byte of the next request starts its clock
        in_head, self._chunk_heads = self._in_head, self._heads_begun
        super().data_received(data)  # answers a request it cannot parse (send_400_response)
        if self.transport.is_closing():
            return
        if in_head and self._in_head and self._chunk_heads == self._heads_begun:
            self._head_bytes += len(data)  # all of it belongs to the head still open
        if self._in_head and self._head_bytes > self.guard.limits.max_header_bytes:
            self._head_too_large()
            return
        if self._request_in_progress():
            self._cancel_head_deadline()

    # httptools' callbacks, which uvicorn's protocol implements: the head's size.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._heads_begun += 1

    def on_url(self, url: bytes) -> None:
        if self._heads_begun != self._chunk_heads:  # the head began in this chunk
            self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._heads_begun != self._chunk_heads:
            self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.guard.limits.max_header_bytes:
            self._oversized = True
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._oversized:
            self._head_too_large()
        else:
            super().send_400_response(msg)

    def _head_too_large(self) -> None:
        self._in_head = False
        self._cancel_head_deadline()
        log.debug("http_head_too_large", server=self.guard.name, client=str(self.client))
        if not self.transport.is_closing():
            self.transport.write(self.guard.too_large)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer, runs pipelined requests
        if self._request_in_progress() or self.transport.is_closing():
            self._cancel_head_deadline()

    def eof_received(self) -> None:
        if self._refused:
            self._refuse()
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
            self._refusal_timer = None
        self.guard.lingering.discard(self)
        super().connection_lost(exc)

    def _refuse(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(self.guard.busy)
            self.transport.close()

    def _request_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(
                self.guard.limits.header_timeout_s, self._head_timed_out
            )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._request_in_progress() or self.transport.is_closing():
            return
        log.debug("http_head_timeout", server=self.guard.name, client=str(self.client))
        self.transport.write(self.guard.slow)
        self.transport.close()


# --------------------------------------------------------------------------- server


class HttpServer:
    """An ASGI app on `host:port` (port 0: a free port, see `port`), within `limits`."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        name: str = "http",
        limits: HttpLimits | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._name = name
        # Events named after the server: metrics_listening, metrics_stopped.
        self._listening_event, self._stopped_event = f"{name}_listening", f"{name}_stopped"
        self._limits = limits or HttpLimits()
        self._socket: socket.socket | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._guard: _Guard | None = None

    @property
    def limits(self) -> HttpLimits:
        return self._limits

    @property
    def port(self) -> int:
        """The bound port once bound (the configured one before)."""
        if self._socket is not None:
            return int(self._socket.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9840 or http://[::1]:9840."""
        host = f"[{self._host}]" if ":" in self._host else self._host or "0.0.0.0"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True from `bind()` until the socket is closed again."""
        return self._socket is not None

    def bind(self) -> None:
        """Bind and listen now (connections queue until serving starts); idempotent."""
        if self._socket is not None:
            return
        try:
            infos = socket.getaddrinfo(
                self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise self._error(exc) from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(self._limits.backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise self._error(exc) from exc
        self._socket = sock

    def _error(self, exc: OSError) -> HttpServerError:
        return HttpServerError(f"{self._name}: cannot listen on {self._host}:{self._port}: {exc}")

    # ------------------------------------------------------------------ on the running loop

    async def serve(self) -> None:
        """Serve until cancelled (a TaskGroup task) or `stop()`; binds in its first step."""
        server, sock = self._prepare()
        try:
            await server.startup(sockets=[sock])
            self._log_listening()
            await server.main_loop()
        finally:
            await self._shutdown(server, sock)

    async def __aenter__(self) -> HttpServer:
        server, sock = self._prepare()
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            await self._shutdown(server, sock)
            raise
        self._log_listening()
        self._task = asyncio.get_running_loop().create_task(
            self._serve_started(server, sock), name=f"http-{self._name}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        server = self._uvicorn
        if server is not None:
            server.should_exit = True  # graceful: main_loop returns within 0.1 s
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _serve_started(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            await server.main_loop()
        finally:
            await self._shutdown(server, sock)

    def _prepare(self) -> tuple[uvicorn.Server, socket.socket]:
        if self._uvicorn is not None:
            raise RuntimeError(f"{self._name}: already serving")
        self.bind()
        assert self._socket is not None
        server = uvicorn.Server(self._config())
        server.config.load()
        # What Server.serve() would do before startup(); serve() itself also
        # captures SIGINT/SIGTERM, which belong to the service.
        server.lifespan = server.config.lifespan_class(server.config)
        self._uvicorn = server
        return server, self._socket

    def _config(self) -> uvicorn.Config:
        limits = self._limits
        self._guard = _Guard(self._name, limits)
        protocol = type("GuardedProtocol", (_GuardedProtocol,), {"guard": self._guard})
        return uvicorn.Config(
            self._app,
            http=protocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,  # the CLI configures logging; uvicorn's loggers propagate
            access_log=True,  # at INFO on uvicorn.access: seen only at DEBUG (invops.logs)
            proxy_headers=False,
            server_header=False,
            backlog=limits.backlog,
            timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # a float works
            timeout_graceful_shutdown=limits.shutdown_timeout_s,  # type: ignore[arg-type]
        )

    async def _shutdown(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            if server.started:
                await server.shutdown(sockets=[sock])
        finally:
            sock.close()
            refused = list(self._guard.lingering) if self._guard is not None else []
            for connection in [*server.server_state.connections, *refused]:
                connection.transport.abort()  # still open after the graceful period, or refused
            self._socket = self._uvicorn = None
            log.info(self._stopped_event, server=self._name)

    def _log_listening(self) -> None:
        log.info(self._listening_event, server=self._name, url=self.url)

    # ------------------------------------------------------------------ from a thread

    def start(self) -> None:
        """Bind here, then serve from a thread with its own event loop; returns once serving."""
        if self._thread is not None:
            return
        server, sock = self._prepare()
        started = threading.Event()
        failed: list[BaseException] = []

        async def run() -> None:
            try:
                await server.startup(sockets=[sock])
            except BaseException as exc:
                failed.append(exc)
                await self._shutdown(server, sock)
                return
            finally:
                started.set()
            self._log_listening()
            await self._serve_started(server, sock)

        thread = threading.Thread(
            target=asyncio.run, args=(run(),), name=f"invops-http-{self._name}", daemon=True
        )
        self._thread = thread
        thread.start()
        started.wait(_THREAD_START_TIMEOUT_S)
        if failed:
            thread.join()
            self._thread = None
            raise failed[0]

    def stop(self) -> None:
        """Shut a `start()`ed server down (graceful, bounded); idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        server = self._uvicorn  # set to None by the serving thread when it is done
        if server is not None:
            server.should_exit = True
        thread.join(self._limits.shutdown_timeout_s + 5)

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

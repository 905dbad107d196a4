"""The HTTP side of observability: `/metrics` (Prometheus) and `/healthz` (SPEC §2).

A small WSGI dispatcher in front of prometheus_client's `make_wsgi_app`,
served by prometheus_client's `ThreadingWSGIServer` (wsgiref, one daemon
thread per request) from a daemon thread. Scrapes never touch the event loop:

- `/metrics` collects the registry (thread-safe metric objects, and custom
  collectors that read in-memory snapshots),
- `/healthz` calls the `health` callable, which must be thread-safe and quick;
  `HealthBoard.current` is: the event loop builds a new frozen `Health` on each
  change and swaps it in with one attribute assignment, the HTTP thread reads
  whichever object is current. Nothing is ever mutated in place.

`/healthz` answers 200 with `{"status": "ok", ...}` when every PLC link and the
ledger are up, else 503 with `"status": "degraded"` and the JSON naming what is
down (`plcs.<name>.up`/`error`, `ledger.up`/`error`, and the list `down`).
Any other path is 404.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = [
    "ComponentHealth",
    "Health",
    "HealthBoard",
    "HttpEndpoint",
    "HttpEndpointError",
    "make_app",
    "watch_ledger",
]

log = logging.getLogger(__name__)

METRICS_PATH: Final = "/metrics"
HEALTH_PATH: Final = "/healthz"
WAITING_FOR_POLL: Final = "no poll yet"
LEDGER_NOT_OPEN: Final = "ledger not open yet"
_POLL_INTERVAL_S: Final = 0.1  # how quickly serve_forever notices stop()
_JSON: Final = "application/json"


class HttpEndpointError(Exception):
    """Raised when the metrics/health listener cannot bind its address."""


# --------------------------------------------------------------------------- health model


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """One thing /healthz reports on: up, or down with the reason."""

    up: bool
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"up": self.up, "error": self.error}


@dataclass(frozen=True, slots=True)
class Health:
    """Everything /healthz reports, as of one moment (immutable)."""

    plcs: Mapping[str, ComponentHealth] = field(default_factory=dict)
    ledger: ComponentHealth = ComponentHealth(False, LEDGER_NOT_OPEN)

    @property
    def ok(self) -> bool:
        return self.ledger.up and all(plc.up for plc in self.plcs.values())

    def down(self) -> list[str]:
        """What is down: `ledger` and `plc:<name>`, for the 503 body and logs."""
        names = [] if self.ledger.up else ["ledger"]
        names.extend(f"plc:{name}" for name, plc in sorted(self.plcs.items()) if not plc.up)
        return names

    def to_json(self) -> dict[str, object]:
        return {
            "status": "ok" if self.ok else "degraded",
            "plcs": {name: plc.to_json() for name, plc in sorted(self.plcs.items())},
            "ledger": self.ledger.to_json(),
            "down": self.down(),
        }


class HealthBoard:
    """The current `Health`, replaced atomically on every change.

    Setters may be called from any thread (they are serialised by a lock; in
    invops they run on the event loop: `MetricsSink` calls `set_plc` on link
    transitions, wiring calls `set_ledger`). `current()` never blocks and is safe
    from the HTTP thread. PLCs named at construction start down ("no poll yet"),
    so /healthz is 503 until every link has had a good poll.
    """

    def __init__(self, plcs: Iterable[str] = (), *, ledger: ComponentHealth | None = None) -> None:
        self._lock = threading.Lock()
        self._health = Health(
            MappingProxyType({name: ComponentHealth(False, WAITING_FOR_POLL) for name in plcs}),
            ledger if ledger is not None else ComponentHealth(False, LEDGER_NOT_OPEN),
        )

    def current(self) -> Health:
        return self._health

    def set_plc(self, plc: str, up: bool, error: str | None = None) -> None:
        state = ComponentHealth(up, None if up else error or "down")
        with self._lock:
            health = self._health
            if health.plcs.get(plc) != state:
                plcs = MappingProxyType({**health.plcs, plc: state})
                self._health = Health(plcs, health.ledger)

    def set_ledger(self, up: bool, error: str | None = None) -> None:
        state = ComponentHealth(up, None if up else error or "down")
        with self._lock:
            health = self._health
            if health.ledger != state:
                self._health = Health(health.plcs, state)


async def watch_ledger(
    board: HealthBoard,
    probe: Callable[[], Awaitable[object]],
    *,
    interval_s: float = 10.0,
    timeout_s: float = 5.0,
) -> None:
    """Probe the ledger every `interval_s` (e.g. `ledger.chain_heads`, one small read)
    and record the result on `board`, until cancelled. Run it as a TaskGroup task:
    the probe runs on the event loop, never during a scrape."""
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                await probe()
        except TimeoutError:
            _ledger_down(board, f"ledger probe timed out after {timeout_s:g} s")
        except Exception as exc:  # any failure of the probe means: the ledger is down
            _ledger_down(board, f"{type(exc).__name__}: {exc}")
        else:
            if not board.current().ledger.up:
                log.info("ledger_up")
            board.set_ledger(True)
        await asyncio.sleep(interval_s)


def _ledger_down(board: HealthBoard, error: str) -> None:
    if board.current().ledger.up:
        log.warning("ledger_down error=%s", error)
    board.set_ledger(False, error)


# --------------------------------------------------------------------------- WSGI app


def make_app(registry: CollectorRegistry, health: Callable[[], Health]) -> WSGIApplication:
    """`/metrics` -> prometheus_client's app, `/healthz` -> JSON health, else 404."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result
        if path == HEALTH_PATH:
            return _health(environ, start_response, health)
        return _plain(start_response, "404 Not Found", f"not found: try {METRICS_PATH}\n")

    return app


def _health(
    environ: WSGIEnvironment, start_response: StartResponse, health: Callable[[], Health]
) -> list[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        return _plain(
            start_response, "405 Method Not Allowed", "use GET\n", [("Allow", "GET, HEAD")]
        )
    try:
        current = health()
        status = "200 OK" if current.ok else "503 Service Unavailable"
        body = json.dumps(current.to_json(), sort_keys=True).encode()
    except Exception:  # a bug in the health source: say so, keep serving
        log.exception("health check failed")
        status = "500 Internal Server Error"
        body = json.dumps({"status": "error", "error": "health check failed"}).encode()
    start_response(
        status,
        [
            ("Content-Type", _JSON),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [b"" if method == "HEAD" else body]


def _plain(
    start_response: StartResponse,
    status: str,
    text: str,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ],
    )
    return [body]


# --------------------------------------------------------------------------- server


class _Handler(WSGIRequestHandler):
    """Request logging goes to `logging` at DEBUG, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.address_string(), *args)


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server without the reverse DNS lookup
    (`socket.getfqdn`) that HTTPServer.server_bind does; it can stall start-up."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class HttpEndpoint:
    """`/metrics` and `/healthz` on `host:port` (port 0: a free port, see `port`).

    `start()` binds and starts the server thread, `stop()` shuts it down and
    closes the socket; both return within ~0.1 s and are safe to call from the
    event loop. For a TaskGroup use `serve()`; for an AsyncExitStack, `async with`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], Health],
    ) -> None:
        self._host = host
        self._port = port
        self._app = make_app(registry, health)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._server.server_port if self._server is not None else self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9840 (append /metrics or /healthz)."""
        host = f"[{self._host}]" if ":" in self._host else self._host or "0.0.0.0"
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            return
        try:
            infos = socket.getaddrinfo(
                self._host or None,
                self._port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
            family, _, _, _, sockaddr = infos[0]
            server_class = type("_BoundServer", (_Server,), {"address_family": family})
            server: _Server = server_class((sockaddr[0], self._port), _Handler)
        except OSError as exc:
            raise HttpEndpointError(
                f"metrics: cannot listen on {self._host}:{self._port}: {exc}"
            ) from exc
        server.set_app(self._app)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name=f"invops-http-{server.server_port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        log.info("metrics_listening url=%s", self.url)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        self._server = self._thread = None
        log.info("metrics_stopped")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def serve(self) -> None:
        """Serve until cancelled (a TaskGroup task); stops the server on the way out."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            self.stop()

    async def __aenter__(self) -> HttpEndpoint:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> HttpEndpoint:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

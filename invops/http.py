"""The HTTP side of observability: `/metrics` (Prometheus) and `/healthz` (SPEC §2).

A Starlette router (`make_app`) served by `invops.http_server.HttpServer` (uvicorn
on the service's event loop, with a connection cap, a request-head deadline
against slowloris clients, keep-alive and shutdown timeouts, a 2048 backlog).
Scrapes never do I/O and never run on the event loop:

- `/metrics` renders the registry (thread-safe metric objects, and custom
  collectors that read in-memory snapshots) in one worker thread of its own
  (`Scrapes`), one collection at a time; scrapes that arrive while a collection
  waits to start share it, so a flood of scrapes costs a few collections, the
  event loop (PLC polls, OPC UA) none, and the shared default executor (snap7) none;
- `/healthz` calls the `health` callable on the event loop, which must be quick
  and never block; `HealthBoard.current` is: the event loop builds a new frozen
  `Health` on each change and swaps it in with one attribute assignment, readers
  get whichever object is current. Nothing is ever mutated in place.

`/healthz` answers 200 with `{"status": "ok", ...}` when every PLC link and the
ledger are up, else 503 with `"status": "degraded"` and the JSON naming what is
down (`plcs.<name>.up`/`error`, `ledger.up`/`error`, and the list `down`); GET and
HEAD, other methods 405. `/metrics` is prometheus_client's exposition (content
negotiation for OpenMetrics, gzip, `name[]` filters): GET, OPTIONS 200, other
methods 405. Any other path is 404.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Final
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from inventory_core.log import get_logger
from invops.http_server import HttpLimits, HttpServer, HttpServerError

__all__ = [
    "ComponentHealth",
    "Health",
    "HealthBoard",
    "HttpEndpoint",
    "HttpEndpointError",
    "Scrapes",
    "make_app",
    "watch_ledger",
]

log = get_logger(__name__)

METRICS_PATH: Final = "/metrics"
HEALTH_PATH: Final = "/healthz"
WAITING_FOR_POLL: Final = "no poll yet"
LEDGER_NOT_OPEN: Final = "ledger not open yet"
_JSON: Final = "application/json"
_METRICS_ALLOW: Final = "OPTIONS,GET"

HttpEndpointError = HttpServerError
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
        log.warning("ledger_down", error=error)
    board.set_ledger(False, error)


# --------------------------------------------------------------------------- ASGI app


def make_app(scrapes: Scrapes, health: Callable[[], Health]) -> ASGIApp:
    """`/metrics` -> the registry, `/healthz` -> JSON health, else 404 (every method)."""
    return Router(
        routes=[
            Route(METRICS_PATH, _MetricsRoute(scrapes)),
            Route(HEALTH_PATH, _HealthRoute(health)),
        ],
        redirect_slashes=False,  # /metrics/ is a 404, as it always was
        default=PlainTextResponse(f"not found: try {METRICS_PATH}\n", 404),
    )


_ScrapeKey = tuple[str, tuple[str, ...], bool]  # content type, name[] filter, gzip


class Scrapes:
    """Renders the registry in one worker thread, off the event loop.

    Collections run one at a time. A scrape joins the collection that is queued
    and not yet started for the same output (format, `name[]` filter, gzip), or
    queues a new one: every answer comes from a collection that started after the
    scrape arrived, and N concurrent scrapes cost at most two collections each.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._queued: dict[_ScrapeKey, Future[bytes]] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def render(self, accept: str, accept_encoding: str, names: Iterable[str]) -> Response:
        encoder, content_type = choose_encoder(accept)
        key: _ScrapeKey = (content_type, tuple(sorted(set(names))), gzip_accepted(accept_encoding))
        with self._lock:
            future = self._queued.get(key)
            if future is None:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="invops-scrape")
                future = self._executor.submit(self._collect, key, encoder)
                self._queued[key] = future
        # shield: a scrape that goes away must not cancel a collection others wait for
        body = await asyncio.shield(asyncio.wrap_future(future))
        headers = {"Content-Type": content_type}
        if key[2]:
            headers["Content-Encoding"] = "gzip"
        return Response(body, 200, headers)

    def _collect(self, key: _ScrapeKey, encoder: Callable[[Collector], bytes]) -> bytes:
        with self._lock:
            if self._queued.get(key) is not None:
                del self._queued[key]  # started: later scrapes queue the next collection
        _content_type, names, compress = key
        registry = self._registry.restricted_registry(list(names)) if names else self._registry
        output = encoder(registry)
        return gzip.compress(output) if compress else output

    def close(self) -> None:
        """Stop the worker thread (after the collection it runs, if any)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class _MetricsRoute:
    """prometheus_client's exposition, as its WSGI app answers it, rendered by `Scrapes`."""

    def __init__(self, scrapes: Scrapes) -> None:
        self._scrapes = scrapes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            response = Response(headers={"Allow": _METRICS_ALLOW})
        elif method != "GET":
            response = Response(
                f"# HTTP 405 Method Not Allowed: {method}; use OPTIONS or GET\n",
                405,
                {"Allow": _METRICS_ALLOW},
            )
        else:
            headers = Headers(scope=scope)
            params = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))
            try:
                response = await self._scrapes.render(
                    ",".join(headers.getlist("accept")),
                    ",".join(headers.getlist("accept-encoding")),
                    params.get("name[]", ()),
                )
            except Exception:  # a bug in a collector: say so, keep serving
                log.exception("metrics_collection_failed")
                response = PlainTextResponse("metrics collection failed\n", 500)
        await response(scope, receive, send)


class _HealthRoute:
    def __init__(self, health: Callable[[], Health]) -> None:
        self._health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if scope["method"] not in ("GET", "HEAD"):
            response = PlainTextResponse("use GET\n", 405, {"Allow": "GET, HEAD"})
        else:
            try:
                current = self._health()
                status = 200 if current.ok else 503
                body = json.dumps(current.to_json(), sort_keys=True).encode()
            except Exception:  # a bug in the health source: say so, keep serving
                log.exception("health_check_failed")
                status = 500
                body = json.dumps({"status": "error", "error": "health check failed"}).encode()
            response = Response(body, status, {"Content-Type": _JSON, "Cache-Control": "no-store"})
        await response(scope, receive, send)


# --------------------------------------------------------------------------- endpoint


class HttpEndpoint:
    """`/metrics` and `/healthz` on `host:port` (port 0: a free port, see `port`).

    An `HttpServer` named "metrics" (errors read `metrics: cannot listen on ...`)
    within `limits`. On the service's loop: `async with` (binds in its first step,
    serves until the block exits, so /healthz answers during start-up and /metrics
    until the rest has shut down), or `serve()` as a TaskGroup task. Without a
    loop: `start()`/`stop()` or `with`, serving from a thread.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], Health],
        *,
        limits: HttpLimits | None = None,
    ) -> None:
        self._scrapes = Scrapes(registry)
        self._server = HttpServer(
            make_app(self._scrapes, health), host, port, name="metrics", limits=limits
        )

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9840 (append /metrics or /healthz)."""
        return self._server.url

    @property
    def limits(self) -> HttpLimits:
        return self._server.limits

    @property
    def running(self) -> bool:
        return self._server.running

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
        self._scrapes.close()

    async def serve(self) -> None:
        """Serve until cancelled (a TaskGroup task); stops the server on the way out."""
        try:
            await self._server.serve()
        finally:
            self._scrapes.close()

    async def __aenter__(self) -> HttpEndpoint:
        await self._server.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._server.__aexit__(exc_type, exc, tb)
        finally:
            self._scrapes.close()

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

"""invops.http: real HTTP on 127.0.0.1 port 0 — /metrics, /healthz, 404, clean stop, promtool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Final

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from inventory_core.domain.model import MovementKind, Source
from invops.http import (
    ComponentHealth,
    Health,
    HealthBoard,
    HttpEndpoint,
    HttpEndpointError,
    watch_ledger,
)
from invops.http_server import HttpLimits
from invops.logs import configure_logging
from invops.metrics import Metrics, MetricsSink, StorageSample
from plc_connectors import PlcConnectError, PlcError, Sample

PLCS = ("PLC-MB", "PLC-S7")


class _NullSink:
    def publish(self, sample: Sample) -> None: ...

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None: ...

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None: ...


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    metrics = Metrics(registry, version="0.1.0", plcs=PLCS)
    tank = StorageSample(
        "PLANT1", "TANKFARM", "TK-101", "ETHANOL-96", "kg", 40_000.0,
        book=19_500.0, measured=20_000.0, fill_ratio=0.5, discrepancy=500.0,
    )  # fmt: skip
    metrics.register_storage(lambda: [tank])
    metrics.posting(MovementKind.RECEIPT, Source.PLC)
    metrics.posting_committed(2, 0.003)
    metrics.poll("PLC-MB", 0.004, None)
    metrics.poll("PLC-S7", 1.5, "timeout")
    metrics.plc_up("PLC-MB", True)
    metrics.set_opcua_sessions(lambda: 1)
    return metrics


@pytest.fixture
def board() -> HealthBoard:
    return HealthBoard(PLCS)


@pytest.fixture
def endpoint(
    registry: CollectorRegistry, metrics: Metrics, board: HealthBoard
) -> Iterator[HttpEndpoint]:
    endpoint = HttpEndpoint("127.0.0.1", 0, registry, board.current)
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def _get(endpoint: HttpEndpoint, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(endpoint.url + path, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _all_up(board: HealthBoard) -> None:
    board.set_ledger(True)
    for plc in PLCS:
        board.set_plc(plc, True)


# --------------------------------------------------------------------------- /metrics


def test_metrics_serves_the_registry_as_prometheus_text(endpoint: HttpEndpoint) -> None:
    assert endpoint.port > 0
    status, content_type, body = _get(endpoint, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(body)}
    assert {"invops_build_info", "invops_plc_up", "invops_storage_quantity"} <= names
    assert 'invops_build_info{python="' in body


def test_promtool_accepts_the_scraped_metrics(endpoint: HttpEndpoint) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (apt-get install prometheus, or a Prometheus release)")
    _status, _type, body = _get(endpoint, "/metrics")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


# --------------------------------------------------------------------------- /healthz


def test_healthz_is_503_naming_everything_down_at_start(endpoint: HttpEndpoint) -> None:
    status, content_type, body = _get(endpoint, "/healthz")
    assert status == 503
    assert content_type == "application/json"
    health = json.loads(body)
    assert health["status"] == "degraded"
    assert health["ledger"] == {"up": False, "error": "ledger not open yet"}
    assert health["plcs"] == {plc: {"up": False, "error": "no poll yet"} for plc in PLCS}
    assert health["down"] == ["ledger", "plc:PLC-MB", "plc:PLC-S7"]


def test_healthz_is_200_when_every_plc_and_the_ledger_are_up(
    endpoint: HttpEndpoint, board: HealthBoard
) -> None:
    _all_up(board)
    status, _type, body = _get(endpoint, "/healthz")
    assert status == 200
    assert json.loads(body) == {
        "status": "ok",
        "plcs": {plc: {"up": True, "error": None} for plc in PLCS},
        "ledger": {"up": True, "error": None},
        "down": [],
    }


def test_healthz_names_the_plc_that_went_down(
    endpoint: HttpEndpoint, board: HealthBoard, metrics: Metrics
) -> None:
    _all_up(board)
    sink = MetricsSink(_NullSink(), metrics, health=board)
    sink.link_state("PLC-S7", False, PlcConnectError("PLC-S7: connect to 127.0.0.1:1102 refused"))
    status, _type, body = _get(endpoint, "/healthz")
    assert status == 503
    health = json.loads(body)
    assert health["down"] == ["plc:PLC-S7"]
    assert health["plcs"]["PLC-S7"] == {
        "up": False,
        "error": "PLC-S7: connect to 127.0.0.1:1102 refused",
    }
    assert health["plcs"]["PLC-MB"]["up"] is True and health["ledger"]["up"] is True


def test_healthz_names_the_ledger_when_it_is_down(
    endpoint: HttpEndpoint, board: HealthBoard
) -> None:
    _all_up(board)
    board.set_ledger(False, "LedgerUnavailable: database is locked")
    status, _type, body = _get(endpoint, "/healthz")
    assert status == 503
    assert json.loads(body)["ledger"] == {
        "up": False,
        "error": "LedgerUnavailable: database is locked",
    }


def test_other_paths_are_404(endpoint: HttpEndpoint) -> None:
    for path in ("/", "/metrics/", "/health", "/favicon.ico"):
        status, _type, _body = _get(endpoint, path)
        assert status == 404, path


def test_healthz_refuses_post(endpoint: HttpEndpoint) -> None:
    request = urllib.request.Request(endpoint.url + "/healthz", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    caught.value.close()
    assert caught.value.code == 405


def test_a_broken_health_source_gives_500_and_the_server_keeps_serving(
    registry: CollectorRegistry,
) -> None:
    def broken() -> Health:
        raise RuntimeError("bug")

    with HttpEndpoint("127.0.0.1", 0, registry, broken) as endpoint:
        status, _type, body = _get(endpoint, "/healthz")
        assert status == 500 and json.loads(body)["status"] == "error"
        assert _get(endpoint, "/metrics")[0] == 200


# --------------------------------------------------------------------------- lifecycle


def test_stop_closes_the_port_and_ends_the_thread(registry: CollectorRegistry) -> None:
    endpoint = HttpEndpoint("127.0.0.1", 0, registry, HealthBoard().current)
    endpoint.start()
    port = endpoint.port
    assert endpoint.running
    endpoint.stop()
    assert not endpoint.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    endpoint.stop()  # idempotent


def test_a_port_in_use_is_a_clear_error(registry: CollectorRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = HttpEndpoint("127.0.0.1", port, registry, HealthBoard().current)
        with pytest.raises(HttpEndpointError, match=f"127.0.0.1:{port}"):
            endpoint.start()


async def test_serve_runs_in_a_task_group_and_stops_on_cancel(
    registry: CollectorRegistry,
) -> None:
    endpoint = HttpEndpoint("127.0.0.1", 0, registry, HealthBoard().current)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(endpoint.serve())
        await asyncio.sleep(0)  # serve() binds synchronously in its first step
        assert endpoint.running
        status, _type, _body = await asyncio.to_thread(_get, endpoint, "/metrics")
        assert status == 200
        task.cancel()
    assert not endpoint.running


async def test_serving_leaves_the_signal_handlers_to_the_service(
    registry: CollectorRegistry,
) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with HttpEndpoint("127.0.0.1", 0, registry, HealthBoard().current):
        await asyncio.sleep(0.2)  # a few turns of uvicorn's main loop
        during = {sig: signal.getsignal(sig) for sig in before}
    assert during == before


async def test_async_with_starts_and_stops(registry: CollectorRegistry) -> None:
    async with HttpEndpoint("127.0.0.1", 0, registry, HealthBoard().current) as endpoint:
        assert endpoint.running
        status, _type, _body = await asyncio.to_thread(_get, endpoint, "/healthz")
        assert status == 503
    assert not endpoint.running


# --------------------------------------------------------------------------- health board


def test_health_board_replaces_the_snapshot_instead_of_mutating_it() -> None:
    board = HealthBoard(["PLC-MB"])
    before = board.current()
    board.set_plc("PLC-MB", True)
    board.set_ledger(True)
    after = board.current()
    assert before is not after
    assert before.plcs["PLC-MB"] == ComponentHealth(False, "no poll yet")
    assert after.ok and not before.ok


async def test_watch_ledger_records_probe_failures_timeouts_and_recovery() -> None:
    board = HealthBoard()
    outcomes: list[str] = ["ok", "fail", "ok", "hang", "ok"]
    seen: list[ComponentHealth] = []  # the ledger state each probe finds: the last result
    done = asyncio.Event()

    async def probe() -> None:
        seen.append(board.current().ledger)
        if not outcomes:
            done.set()
            await asyncio.Event().wait()
        outcome = outcomes.pop(0)
        if outcome == "fail":
            raise RuntimeError("database is locked")
        if outcome == "hang":
            await asyncio.sleep(10)

    task = asyncio.create_task(watch_ledger(board, probe, interval_s=0, timeout_s=0.05))
    try:
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen == [
        ComponentHealth(False, "ledger not open yet"),
        ComponentHealth(True),
        ComponentHealth(False, "RuntimeError: database is locked"),
        ComponentHealth(True),
        ComponentHealth(False, "ledger probe timed out after 0.05 s"),
        ComponentHealth(True),
    ]


# --------------------------------------------------------------------------- hostile clients
# Raw asyncio sockets on 127.0.0.1, the server on the same loop as in the service;
# every test is bounded in connections and seconds, and closes what it opens.

_SCRAPE: Final = b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
_HEALTH_KEEP_ALIVE: Final = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
_HALF_HEAD: Final = b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Slow: "


def _status(answer: bytes) -> int:
    """The status code of a raw answer (HTTP/1.0 or 1.1), 0 for none."""
    parts = answer.split(b"\r\n", 1)[0].split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _complete(answer: bytes) -> bool:
    """The body is as long as Content-Length says."""
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) == int(value)
    return False


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes; a reset ends it too."""
    try:
        return await reader.read()
    except (ConnectionResetError, BrokenPipeError):
        return b"<reset>"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _exchange(port: int, request: bytes, *, timeout_s: float = 5.0) -> bytes:
    """One raw request on a fresh connection; the answer up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(timeout_s):
            return await _until_closed(reader)
    finally:
        await _close(writer)


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """One response on a kept-alive connection (Content-Length framed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def _half_sent(
    port: int, count: int, *, trickle: bool = False
) -> AsyncIterator[list[asyncio.StreamReader]]:
    """`count` slowloris connections: a request head that never ends. With `trickle`,
    every other one keeps sending a header line every 0.2 s for as long as it can."""
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    tasks: list[asyncio.Task[None]] = []

    async def dribble(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while not writer.is_closing():
                await asyncio.sleep(0.2)
                writer.write(b"x\r\nX-Slow: ")
                await writer.drain()

    try:
        for number in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            connections.append((reader, writer))
            writer.write(_HALF_HEAD)
            if trickle and number % 2:
                tasks.append(asyncio.create_task(dribble(writer)))
        yield [reader for reader, _ in connections]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(_close(writer) for _, writer in connections))


async def test_300_concurrent_scrapes_are_all_answered(
    registry: CollectorRegistry, metrics: Metrics, board: HealthBoard
) -> None:
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current) as endpoint:
        async with asyncio.timeout(30):
            answers = await asyncio.gather(
                *(_exchange(endpoint.port, _SCRAPE) for _ in range(300)), return_exceptions=True
            )
    failed = [
        repr(a)[:80]
        for a in answers
        if isinstance(a, BaseException) or _status(a) != 200 or not _complete(a)
    ]
    assert failed == [], f"{len(failed)} of 300 not answered: {failed[:3]}"


async def test_slowloris_connections_hold_no_thread_and_a_scrape_still_succeeds(
    registry: CollectorRegistry, metrics: Metrics, board: HealthBoard
) -> None:
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current) as endpoint:
        threads = threading.active_count()
        async with _half_sent(endpoint.port, 200):
            started = time.monotonic()
            # accepted after the 200 (the accept queue is FIFO): all of them are in by now
            answer = await _exchange(endpoint.port, _SCRAPE)
            took = time.monotonic() - started
            extra_threads = threading.active_count() - threads
    assert _status(answer) == 200 and _complete(answer)
    # Answered while the 200 were still held: before the first of them could time out
    # and free anything (a bound on waiting, not a speed figure: the benchmarks time).
    assert took < HttpLimits().header_timeout_s
    assert extra_threads < 10, f"{extra_threads} threads for 200 half-sent requests"


async def test_slowloris_connections_are_closed_after_the_header_timeout(
    registry: CollectorRegistry, metrics: Metrics, board: HealthBoard
) -> None:
    limits = HttpLimits(header_timeout_s=1.0)
    endpoint = HttpEndpoint("127.0.0.1", 0, registry, board.current, limits=limits)
    async with endpoint, _half_sent(endpoint.port, 200, trickle=True) as slow:
        opened = time.monotonic()
        scrape = await _exchange(endpoint.port, _SCRAPE)
        scraped_after = time.monotonic() - opened
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*(_until_closed(reader) for reader in slow))
        closed_after = time.monotonic() - opened
    assert _status(scrape) == 200 and scraped_after < 1.0
    # the dribbling half may see its 408 or, writing on, a reset: closed either way
    assert all(_status(a) == 408 or a == b"<reset>" for a in answers), answers[:3]
    assert all(_status(a) == 408 for a in answers[::2])  # the silent half read the 408
    assert 0.9 <= closed_after < 3.0, closed_after


async def test_the_next_request_on_a_kept_alive_connection_has_the_same_head_deadline(
    registry: CollectorRegistry, board: HealthBoard
) -> None:
    limits = HttpLimits(header_timeout_s=0.5, keep_alive_s=10)
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current, limits=limits) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            async with asyncio.timeout(5):
                for _ in range(2):  # kept alive: two requests on one connection
                    writer.write(_HEALTH_KEEP_ALIVE)
                    assert _status(await _read_response(reader)) == 503
                writer.write(_HALF_HEAD)
                started = time.monotonic()
                answer = await _until_closed(reader)
            assert _status(answer) == 408
            assert 0.4 <= time.monotonic() - started < 2.0
        finally:
            await _close(writer)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, piece: int) -> None:
    """Send `data` in `piece`-byte writes, each its own segment (a pause between)."""
    with contextlib.suppress(OSError):
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
            await writer.drain()
            await asyncio.sleep(0.01)


async def test_a_request_head_over_max_header_bytes_is_refused_with_431(
    registry: CollectorRegistry, board: HealthBoard
) -> None:
    limits = HttpLimits(max_header_bytes=2048, header_timeout_s=10)
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current, limits=limits) as endpoint:
        big = b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
        answer = await _exchange(endpoint.port, big)
        assert _status(answer) == 431 and b"over 2048 bytes" in answer
        # A head that never ends is refused as it grows past the cap, long before the
        # head deadline, whether it comes as one header line or as many.
        for filler in (b"b" * 200, b"b\r\nX-More: "):
            reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
            try:
                started = time.monotonic()
                endless = _HALF_HEAD + filler * (8192 // len(filler))  # 8 KiB and more
                sending = asyncio.create_task(_trickle(writer, endless, 200))
                async with asyncio.timeout(5):
                    answer = await _until_closed(reader)
                sending.cancel()
                assert _status(answer) == 431 or answer == b"<reset>", answer[:80]
                assert time.monotonic() - started < limits.header_timeout_s / 2
            finally:
                await _close(writer)
        # Just under the cap, in many small segments: served (each byte counted once).
        lines = b"".join(b"X-Pad-%02d: %s\r\n" % (n, b"p" * 100) for n in range(17))
        head = b"GET /metrics HTTP/1.1\r\nHost: test\r\n" + lines + b"Connection: close\r\n\r\n"
        assert 1900 < len(head) < 2048
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            await _trickle(writer, head, 50)
            async with asyncio.timeout(5):
                answer = await _until_closed(reader)
        finally:
            await _close(writer)
        assert _status(answer) == 200 and _complete(answer)


async def test_pipelined_requests_are_answered_in_order_each_head_capped_alone(
    registry: CollectorRegistry, board: HealthBoard
) -> None:
    limits = HttpLimits(max_header_bytes=2048)
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current, limits=limits) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            # Three heads of 1.5 KiB in one segment: 4.5 KiB together, each under the cap.
            pad = b"X-Pad: " + b"p" * 1500 + b"\r\n"
            one = b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + pad + b"\r\n"
            writer.write(one * 3)
            async with asyncio.timeout(5):
                answers = [await _read_response(reader) for _ in range(3)]
                assert [_status(a) for a in answers] == [503, 503, 503]
                # The next head alone over the cap: 431, and the connection closes.
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + pad * 2 + b"\r\n")
                assert _status(await _until_closed(reader)) == 431
        finally:
            await _close(writer)


async def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_s(
    registry: CollectorRegistry, board: HealthBoard
) -> None:
    limits = HttpLimits(keep_alive_s=0.5)
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current, limits=limits) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            async with asyncio.timeout(5):
                writer.write(_HEALTH_KEEP_ALIVE)
                assert _status(await _read_response(reader)) == 503
                started = time.monotonic()
                assert await _until_closed(reader) == b""
            assert 0.4 <= time.monotonic() - started < 2.0
        finally:
            await _close(writer)


async def test_connections_beyond_max_connections_are_refused_at_once_with_503(
    registry: CollectorRegistry, metrics: Metrics, board: HealthBoard
) -> None:
    limits = HttpLimits(max_connections=20, header_timeout_s=1.0)
    endpoint = HttpEndpoint("127.0.0.1", 0, registry, board.current, limits=limits)
    async with endpoint, _half_sent(endpoint.port, 20) as slow:
        started = time.monotonic()
        refused = await _exchange(endpoint.port, _SCRAPE)
        refused_after = time.monotonic() - started
        started = time.monotonic()
        silent = await _exchange(endpoint.port, b"")  # refused too, within a second
        silent_after = time.monotonic() - started
        async with asyncio.timeout(5):  # the header timeout frees the slots
            await asyncio.gather(*(_until_closed(reader) for reader in slow))
        answer = await _exchange(endpoint.port, _SCRAPE)
    assert _status(refused) == 503 and b"retry-after: 1" in refused.lower()
    assert refused_after < 0.5
    assert _status(silent) == 503 and 0.9 <= silent_after < 2.0
    assert _status(answer) == 200


async def test_stopping_closes_half_sent_and_idle_connections_promptly(
    registry: CollectorRegistry, board: HealthBoard
) -> None:
    limits = HttpLimits(header_timeout_s=30, keep_alive_s=30)
    endpoint = HttpEndpoint("127.0.0.1", 0, registry, board.current, limits=limits)
    async with contextlib.AsyncExitStack() as clients:
        async with endpoint:
            port = endpoint.port
            slow = await clients.enter_async_context(_half_sent(port, 50))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            clients.push_async_callback(_close, writer)
            writer.write(_HEALTH_KEEP_ALIVE)
            await _read_response(reader)  # kept alive, idle from now on
            started = time.monotonic()
        stopped_after = time.monotonic() - started
        async with asyncio.timeout(2):
            answers = await asyncio.gather(*(_until_closed(r) for r in [*slow, reader]))
    assert stopped_after < 2.0
    assert all(a in (b"", b"<reset>") for a in answers)
    assert not endpoint.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_an_ipv6_listen_address_is_served_and_bracketed_in_the_url(
    registry: CollectorRegistry, board: HealthBoard
) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with HttpEndpoint("::1", 0, registry, board.current) as endpoint:
        assert endpoint.url == f"http://[::1]:{endpoint.port}"
        status, content_type, _body = _get(endpoint, "/healthz")
    assert (status, content_type) == (503, "application/json")


# --------------------------------------------------------------------------- logging


def _log_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
async def test_requests_and_bad_requests_write_no_log_line_at_info(
    registry: CollectorRegistry, board: HealthBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "INFO")
    upgrade = (
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade, close\r\nUpgrade: websocket\r\n\r\n"
    )
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current) as endpoint:
        url = endpoint.url
        for request in (_SCRAPE, b"garbage\r\n\r\n", upgrade):
            assert _status(await _exchange(endpoint.port, request)) in (200, 400, 404)
    events = _log_lines(capsys.readouterr().err)
    assert [(e["logger"], e["event"]) for e in events] == [
        ("invops.http_server", "metrics_listening"),
        ("invops.http_server", "metrics_stopped"),
    ]
    assert events[0]["url"] == url

    configure_logging("json", "DEBUG")
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current) as endpoint:
        await _exchange(endpoint.port, _SCRAPE)
    access = [e for e in _log_lines(capsys.readouterr().err) if e["logger"] == "uvicorn.access"]
    assert len(access) == 1 and '"GET /metrics HTTP/1.1" 200' in str(access[0]["event"])


# --------------------------------------------------------------------------- scrapes


class _SlowCollector(Collector):
    """Counts its collections; each takes `seconds` (in the scrape thread)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.collections = 0
        self.threads: set[str] = set()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.collections += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        yield GaugeMetricFamily("invops_test_collections", "Collections so far.", self.collections)


async def test_scrapes_run_off_the_event_loop_and_concurrent_ones_share_a_collection(
    registry: CollectorRegistry, board: HealthBoard
) -> None:
    slow = _SlowCollector(0.2)
    registry.register(slow)
    async with HttpEndpoint("127.0.0.1", 0, registry, board.current) as endpoint:
        lag = 0.0

        async def ticker() -> None:
            nonlocal lag
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lag = max(lag, time.monotonic() - before - 0.01)

        tick = asyncio.create_task(ticker())
        try:
            async with asyncio.timeout(10):
                first = asyncio.create_task(_exchange(endpoint.port, _SCRAPE))
                await asyncio.sleep(0.05)  # the first collection is running now
                answers = await asyncio.gather(
                    first, *(_exchange(endpoint.port, _SCRAPE) for _ in range(50))
                )
        finally:
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
        during = slow.collections
        after = await _exchange(endpoint.port, _SCRAPE)
    assert all(_status(a) == 200 for a in answers)
    assert during <= 3  # the first; the 50 others together (two batches on a busy machine)
    assert f"invops_test_collections {during + 1}.0".encode() in after  # a new one for later
    assert lag < 0.1  # the loop kept running through the collections
    assert all(name.startswith("invops-scrape") for name in slow.threads)

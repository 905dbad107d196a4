"""invops.http: real HTTP on 127.0.0.1 port 0 — /metrics, /healthz, 404, clean stop, promtool."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from inventory_core.domain.model import MovementKind, Source
from invops.http import (
    ComponentHealth,
    Health,
    HealthBoard,
    HttpEndpoint,
    HttpEndpointError,
    watch_ledger,
)
from invops.metrics import Metrics, MetricsSink, StorageSample, StorageSnapshot
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
    snapshot = StorageSnapshot(
        [StorageSample("PLANT1", "TANKFARM", "TK-101", "ETHANOL-96", "kg", 40_000.0)]
    )
    metrics.register_storage(snapshot.samples)
    snapshot.set_book("TK-101", 19_500.0)
    snapshot.set_measured("TK-101", 20_000.0)
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

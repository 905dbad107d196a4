"""OPC UA server: N storage-unit values updated at 1 Hz, one subscriber, vs a naive asyncua server.

Prints one JSON line per case (SPEC section 7). The server runs in a child process
(this script with `--serve`), so the CPU and RSS reported are the server's alone;
the client runs here. Cases:

- `values`: an InvopsOpcUaServer built from a config of N/6 tanks (each has six
  PLC-backed variables: Level, Volume, Mass, FillPercent, MeasuredQuantity and the
  derived Discrepancy) spread over areas of 200, with a real SQLite ledger and
  `value_deadband_pct = 0` (every update is a change the client must get); every
  second the child hands the plant view a new level reading for every tank, whose
  SourceTimestamp is the update time, in `--update-groups` groups (default 10) spread
  evenly over the second, the way staggered PLC polls deliver them (the service
  spreads PLCs sharing an interval over it); `--update-groups 1` updates every value
  at the same instant. One asyncua client subscribes to all N
  variables (100 ms publishing, queue size 1) and takes latency = arrival of the
  notification - SourceTimestamp (same host clock). Reported: p50/p99 over the
  notifications received, notifications/s, lost (updates inside the window never
  notified, e.g. after the client gave up the connection), server CPU and RSS,
  `cpu_s_per_1000_values` (server process CPU seconds over the window per 1,000
  values the subscriber received with a SourceTimestamp inside it: the cost of a
  delivered value, lost ones delivering nothing), the time
  `start()` takes (asyncua init + address space + ledger read), and
  `max_values_p99_300ms`: the largest N of the grid whose p99 stays < 300 ms, a lost
  update counting as infinitely late (searched upwards from the smallest N, skipping
  larger N once one fails; N at or below a passing N are taken as passing).
  The baseline is the naive asyncua way on the same work: N variables under one
  folder (`Node.add_variable`, the build capped by `--baseline-build-cap`, reporting
  what it reached), updated by one `await node.write_value(DataValue)` loop per
  update group (the same groups; SourceTimestamp = the update time, as on the invops
  side), no yielding, no `gc.freeze()`; `ratio` = baseline p99 / invops p99 (higher
  is better), and the baseline's own `baseline_cpu_s_per_1000_values` (its server
  process, counted the same way; compare the two, lower is better). stderr
  also shows, per run, how long the server took from an update to having written every
  value, and the host load.
- `post_receipt`: 8 concurrent client sessions calling `Ledger.PostReceipt` in a loop
  against an invops server with a small plant (durable SQLite postings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import Client, Node, Server, ua
from asyncua.common.subscription import Subscription

# This script shares its name with the `opcua_server` package: keep its own directory
# off the import path, so that `import opcua_server` (below, in functions) finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

BENCH = "opcua_server"
HOST = "127.0.0.1"
VARIABLES_PER_TANK = 6  # Level, Volume, Mass, FillPercent, MeasuredQuantity, Discrepancy
PLC_VARIABLES = ("Level", "Volume", "Mass", "FillPercent", "MeasuredQuantity", "Discrepancy")
UNITS_PER_AREA = 200
MONITOR_CHUNK = 1000
P99_LIMIT_MS = 300.0
METHOD_TANKS = 8
DEFAULT_GRID = "1000,2000,5000,10000"


def log(message: str) -> None:
    print(f"{BENCH}: {message}", file=sys.stderr, flush=True)


def _quiet_logs(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    if not verbose:  # asyncua warns about every slow or dropped request: keep stderr short
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child side: the servers ----------------------------------------------------------


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def bench_config(tanks: int) -> Any:
    """A plant of `tanks` tanks of one material in areas of UNITS_PER_AREA, port 0."""
    from invops.config import parse_config

    areas = [f"A{i:02d}" for i in range(max(1, math.ceil(tanks / UNITS_PER_AREA)))]
    data = {
        "site": {"enterprise": "BENCH", "name": "PLANT1", "areas": areas},
        # deadband 0: every update of every value is a change the client must get
        "opcua": {
            "endpoint": f"opc.tcp://{HOST}:0/invops",
            "allow_security_none": True,
            "value_deadband_pct": 0,
            # this measures delivery, not the limits: one anonymous session holds every item
            "max_monitored_items_per_session": 100_000,
            "max_anonymous_monitored_items": 100_000,
        },
        "materials": [
            {
                "id": "BENCH",
                "base_uom": "kg",
                "density_kg_per_l": 0.8,
                "default_lot_status": "released",
            }
        ],
        # one level tag per tank: the plant view converts each reading, as in the service
        "plcs": [{"name": "PLC-BENCH", "protocol": "modbus", "port": 5020}],
        "storage_units": [
            {
                "id": f"TK-{i:05d}",
                "area": areas[i // UNITS_PER_AREA],
                "kind": "tank",
                "capacity": 50000,
                "capacity_uom": "L",
                "material": "BENCH",
                "level": {
                    "plc": "PLC-BENCH",
                    "address": f"hr:{2 * i}",
                    "data_type": "float32",
                    "unit": "mm",
                },
                "strapping": {"volume_uom": "L", "points": [[0, 0], [6000, 50000]]},
            }
            for i in range(tanks)
        ],
    }
    return parse_config(data)


class Ticker:
    """Calls `update(k, group, now)` on an absolute cadence: every interval, each of
    `groups` groups once, the groups spread evenly over the interval (as staggered PLC
    polls deliver them). `update` returns how many values it changed; the ticker keeps
    each call's time and count."""

    def __init__(
        self, interval_s: float, groups: int, update: Callable[[int, int, datetime], Any]
    ) -> None:
        self.step_s = interval_s / groups
        self.groups = groups
        self.update = update
        self.ticks: list[float] = []
        self.counts: list[int] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        call = 0
        while True:
            k, group = divmod(call, self.groups)
            call += 1
            now = datetime.now(UTC)
            result = self.update(k + 1, group, now)
            if asyncio.iscoroutine(result):
                result = await result
            self.ticks.append(now.timestamp())
            self.counts.append(int(result))
            deadline += self.step_s
            await asyncio.sleep(max(0.0, deadline - loop.time()))


def _group(items: list[Any], groups: int, group: int) -> list[Any]:
    """The `group`-th of `groups` nearly equal slices of `items`."""
    size = math.ceil(len(items) / groups)
    return items[group * size : (group + 1) * size]


@asynccontextmanager
async def invops_server(tanks: int, tmp: str) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    from inventory_core import open_ledger
    from inventory_core.plant_view import Book, PlantView
    from invops.wiring import measured_units, opcua_settings
    from opcua_server import InvopsOpcUaServer

    config = bench_config(tanks)
    async with open_ledger(
        f"sqlite+aiosqlite:///{tmp}/ledger.db", writer_id="bench", migrate=True
    ) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        view = PlantView(
            config.storage_unit_definitions(),
            config.material_definitions(),
            measured_units(config),
        )
        for unit in view.units:  # a known book, so that Discrepancy follows every reading
            view.apply_book(unit, Book(quantity=0.0))
        server = InvopsOpcUaServer(opcua_settings(config), ledger, view=view)
        started = time.perf_counter()
        await server.start()
        build_ms = (time.perf_counter() - started) * 1000
        try:
            space = server.address_space
            nodes = [
                space.units[u.id].variables[name].to_string()
                for u in config.storage_units
                for name in PLC_VARIABLES
            ]
            ledger_id = space.ledger_id
            info = {
                "endpoint": server.endpoint_url,
                "nodes": nodes,
                "build_ms": round(build_ms, 1),
                "built": len(nodes),
                "ledger": ledger_id.to_string(),
                "post_receipt": space.ledger_methods["PostReceipt"].to_string(),
                "units": [u.id for u in config.storage_units],
                "view": view,
            }
            yield server, info
        finally:
            await server.stop()


async def serve_invops(
    tanks: int, interval_s: float, groups: int, tmp: str, channel: _Channel
) -> None:
    from inventory_core.domain.quality import Quality

    async with invops_server(tanks, tmp) as (server, info):
        units = info.pop("units")
        view = info.pop("view")
        write_s: list[float] = []  # per tick: plant view reading -> every value written
        tasks: set[asyncio.Task[None]] = set()

        async def written(started: float) -> None:
            await server.flush()
            write_s.append(time.perf_counter() - started)

        def update(k: int, group: int, now: datetime) -> int:
            # every value changes every cycle, so every update must reach the client
            tasks.add(task := asyncio.create_task(written(time.perf_counter())))
            task.add_done_callback(tasks.discard)
            mine = _group(units, groups, group)
            level = 1000.0 + (k % 4000) + 0.5  # every value changes every cycle
            for unit in mine:
                view.apply_reading(unit, level, Quality.GOOD, now)
            return len(mine) * VARIABLES_PER_TANK

        await channel.serve(info, Ticker(interval_s, groups, update), write_s)


async def serve_naive(
    n: int, interval_s: float, groups: int, build_cap_s: float, channel: _Channel
) -> None:
    """What a first asyncua server looks like: one folder, Node.write_value in one loop."""
    port = _free_port()
    server = Server()
    started = time.perf_counter()
    await server.init()
    server.set_endpoint(f"opc.tcp://{HOST}:{port}/naive")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:bench:naive")
    folder = await server.nodes.objects.add_folder(idx, "Values")
    nodes: list[Node] = []
    for i in range(n):
        nodes.append(await folder.add_variable(idx, f"v{i:05d}", 0.0))
        if time.perf_counter() - started > build_cap_s:
            log(f"naive build capped after {build_cap_s:g} s: {len(nodes)} of {n} variables")
            break
    await server.start()
    build_ms = (time.perf_counter() - started) * 1000
    try:
        write_s: list[float] = []

        async def update(k: int, group: int, now: datetime) -> int:
            started = time.perf_counter()
            mine = _group(nodes, groups, group)
            for i, node in enumerate(mine):
                # SourceTimestamp = the update time, as on the invops side
                await node.write_value(
                    ua.DataValue(
                        ua.Variant(float(k + i), ua.VariantType.Double), SourceTimestamp=now
                    )
                )
            write_s.append(time.perf_counter() - started)
            return len(mine)

        info = {
            "endpoint": f"opc.tcp://{HOST}:{port}/naive",
            "nodes": [node.nodeid.to_string() for node in nodes],
            "build_ms": round(build_ms, 1),
            "built": len(nodes),
        }
        await channel.serve(info, Ticker(interval_s, groups, update), write_s)
    finally:
        await server.stop()


async def serve_methods(tmp: str, channel: _Channel) -> None:
    async with invops_server(METHOD_TANKS, tmp) as (_server, info):
        info.pop("view")  # the plant view stays in this process: only JSON goes back
        info["nodes"] = []
        await channel.serve(info, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class _Channel:
    """The child's side of the control pipe: `start`, `mark`, `ticks`; EOF stops it."""

    async def serve(
        self, info: dict[str, Any], ticker: Ticker | None, write_s: list[float] | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        _reply(info)
        task: asyncio.Task[None] | None = None
        try:
            while line := (await reader.readline()).decode().strip():
                if line == "start" and ticker is not None and task is None:
                    task = asyncio.create_task(ticker.run())
                    _reply({"ok": True})
                elif line == "mark":
                    if task is not None and task.done():
                        task.result()  # a failed ticker fails the run
                    _reply({"cpu_s": time.process_time(), "rss_mb": _rss_mb()})
                elif line == "ticks":
                    ticks = [] if ticker is None else ticker.ticks
                    counts = [] if ticker is None else ticker.counts
                    _reply({"ticks": ticks, "counts": counts, "write_s": write_s or []})
                else:
                    _reply({"error": f"unknown command {line!r}"})
        finally:
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task


def serve(spec: str, args: argparse.Namespace) -> None:
    """Child mode: `invops:N`, `naive:N` or `methods`; run until stdin closes."""
    _quiet_logs(args.verbose)
    kind, _, count = spec.partition(":")
    interval_s = args.interval_ms / 1000
    channel = _Channel()
    try:
        with tempfile.TemporaryDirectory(prefix="invops-bench-") as tmp:
            if kind == "invops":
                tanks = math.ceil(int(count) / VARIABLES_PER_TANK)
                asyncio.run(serve_invops(tanks, interval_s, args.update_groups, tmp, channel))
            elif kind == "naive":
                asyncio.run(
                    serve_naive(
                        int(count),
                        interval_s,
                        args.update_groups,
                        args.baseline_build_cap,
                        channel,
                    )
                )
            elif kind == "methods":
                asyncio.run(serve_methods(tmp, channel))
            else:
                raise SystemExit(f"unknown server kind {kind!r}")
    except KeyboardInterrupt:
        pass


# -- parent side: the client ----------------------------------------------------------


class ServerProcess:
    """One server child; always stopped on the way out (EOF, then kill after 10 s)."""

    def __init__(self, spec: str, args: argparse.Namespace) -> None:
        self._argv = [
            sys.executable,
            __file__,
            "--serve",
            spec,
            "--interval-ms",
            str(args.interval_ms),
            "--update-groups",
            str(args.update_groups),
            "--baseline-build-cap",
            str(args.baseline_build_cap),
            *(["--verbose"] if args.verbose else []),
        ]
        self._proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    async def __aenter__(self) -> ServerProcess:
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # the ready line lists every NodeId
        )
        try:
            self.info = await self._ask(None, wait_s=300)
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def ask(self, command: str) -> dict[str, Any]:
        return await self._ask(command, wait_s=30)

    async def _ask(self, command: str | None, wait_s: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        if command is not None:
            proc.stdin.write(command.encode() + b"\n")
            await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), wait_s)
        if not line:
            raise RuntimeError(f"server process exited (rc={await proc.wait()})")
        answer = cast(dict[str, Any], json.loads(line))
        if "error" in answer:
            raise RuntimeError(f"server process: {answer['error']}")
        return answer

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # EOF: the child stops its server and exits
        except OSError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()


class LatencySubscription(Subscription):
    """Takes one arrival time per PublishResponse and the SourceTimestamp of each item,
    instead of asyncua's per-notification handler tasks (which would cost the client
    more than the measurement)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record_from = math.inf
        self.samples: list[tuple[float, float]] = []  # (source time, latency s)

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        arrived = time.time()
        self.last_publish_at = time.monotonic()
        message = publish_result.NotificationMessage
        if message.NotificationData is None:
            return
        self.last_sequence_number = int(message.SequenceNumber)
        start, samples = self.record_from, self.samples
        for data in message.NotificationData:
            if not isinstance(data, ua.DataChangeNotification):
                continue
            for item in data.MonitoredItems:
                source = item.Value.SourceTimestamp if item.Value is not None else None
                if source is None:
                    continue
                t = source.timestamp()
                if t >= start:
                    samples.append((t, arrived - t))


@dataclass
class ValuesRun:
    impl: str
    requested: int
    values: int
    build_ms: float
    window_s: float
    expected: int
    latencies_ms: list[float]
    server_cpu_s: float
    server_pct_cpu: float
    server_rss_mb: float
    client_pct_cpu: float
    connection_lost: int
    ticks_in_window: int
    tick_span_s: float  # first tick in the window to one interval past the last
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def received(self) -> int:
        return len(self.latencies_ms)

    def notifications_per_s(self) -> float:
        """Over the updates of the window: no boundary effect from where it cuts a tick."""
        return round(self.received / self.tick_span_s, 1) if self.tick_span_s else 0.0

    def cpu_s_per_1000_values(self) -> float | None:
        """Server CPU seconds in the window per 1,000 values delivered; None if none was."""
        return round(1000 * self.server_cpu_s / self.received, 4) if self.received else None

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def p(self, q: float) -> float | None:
        return _percentile(self.latencies_ms, q)

    def p99_with_lost_ms(self) -> float:
        """p99 over every expected update, a lost one counting as infinitely late."""
        if self.expected == 0:
            return math.inf
        padded = sorted(self.latencies_ms) + [math.inf] * self.lost
        return padded[max(0, math.ceil(0.99 * len(padded)) - 1)]

    def passes(self) -> bool:
        return self.values >= self.requested and self.p99_with_lost_ms() < P99_LIMIT_MS


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or math.isinf(value) else round(value, digits)


async def _subscribe(
    client: Client, node_ids: list[str], publishing_ms: float
) -> LatencySubscription:
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = publishing_ms
    params.RequestedLifetimeCount = 10000
    params.RequestedMaxKeepAliveCount = client.get_keepalive_count(publishing_ms)
    params.MaxNotificationsPerPublish = 0  # no limit
    params.PublishingEnabled = True
    params.Priority = 0
    sub = LatencySubscription(client.uaclient.session, params, None)
    await sub.init()
    for i in range(0, len(node_ids), MONITOR_CHUNK):
        nodes = [client.get_node(ua.NodeId.from_string(n)) for n in node_ids[i : i + MONITOR_CHUNK]]
        handles = await sub.subscribe_data_change(nodes, queuesize=1)
        bad = [h for h in handles if not isinstance(h, int)]
        if bad:
            raise RuntimeError(f"{len(bad)} monitored items refused: {bad[0]}")
    return sub


async def measure_values(
    impl: str,
    n: int,
    warmup_s: float,
    window_s: float,
    args: argparse.Namespace,
    profile: str | None = None,
) -> ValuesRun:
    spec = f"{'invops' if impl == 'invops' else 'naive'}:{n}"
    log(f"{impl} {n} values: building the server")
    async with ServerProcess(spec, args) as proc:
        info = proc.info
        built = int(info["built"])
        log(f"{impl} {n} values: built {built} in {info['build_ms'] / 1000:.1f} s; subscribing")
        lost_connection = 0

        async def on_lost(exc: Exception) -> None:
            nonlocal lost_connection
            lost_connection += 1
            log(f"{impl} {n} values: client lost the connection ({exc!r})")

        client = Client(info["endpoint"], timeout=10)
        client.connection_lost_callback = on_lost
        await client.connect()
        spy: subprocess.Popen[bytes] | None = None
        try:
            started = time.perf_counter()
            sub = await _subscribe(client, info["nodes"], args.publishing_ms)
            log(
                f"{impl} {n} values: {built} monitored items in "
                f"{time.perf_counter() - started:.1f} s; {warmup_s:g} s warm-up + {window_s:g} s"
            )
            await proc.ask("start")
            await asyncio.sleep(warmup_s)
            sub.record_from = time.time()
            mark0 = await proc.ask("mark")
            t0, c0 = time.time(), time.process_time()
            if profile:
                spy = _start_profile(proc.pid, window_s, profile)
            await asyncio.sleep(window_s)
            mark1 = await proc.ask("mark")
            t1, c1 = time.time(), time.process_time()
            await asyncio.sleep(args.grace)  # notifications of the last updates in flight
            answer = await proc.ask("ticks")
            in_window = [
                (t, c)
                for t, c in zip(answer["ticks"], answer["counts"], strict=True)
                if t0 <= t < t1
            ]
            ticks = [t for t, _ in in_window]
            # write_s lags ticks by the updates still being written: pair from the start
            paired = zip(answer["ticks"], answer["write_s"], strict=False)
            writes = [w * 1000 for t, w in paired if t0 <= t < t1]
            if spy is not None:
                await asyncio.to_thread(spy.wait, 30)
        finally:
            if spy is not None and spy.poll() is None:
                spy.terminate()
                spy.wait()
            try:
                await asyncio.wait_for(client.disconnect(), 10)
            except Exception as exc:  # a server the client gave up on may not answer
                log(f"{impl} {n} values: disconnect failed ({exc!r})")
    latencies = [lat * 1000 for t, lat in sub.samples if t0 <= t < t1]
    span = t1 - t0
    server_cpu_s = mark1["cpu_s"] - mark0["cpu_s"]
    return ValuesRun(
        impl=impl,
        requested=n,
        values=built,
        build_ms=float(info["build_ms"]),
        window_s=round(span, 2),
        expected=sum(c for _, c in in_window),
        latencies_ms=latencies,
        server_cpu_s=server_cpu_s,
        server_pct_cpu=100 * server_cpu_s / span,
        server_rss_mb=float(mark1["rss_mb"]),
        client_pct_cpu=100 * (c1 - c0) / span,
        connection_lost=lost_connection,
        ticks_in_window=len(ticks),
        tick_span_s=(
            ticks[-1] - ticks[0] + args.interval_ms / 1000 / args.update_groups if ticks else 0.0
        ),
        extra={"write_ms": writes, "load_1m": os.getloadavg()[0]},
    )


def _start_profile(pid: int, seconds: float, out: str) -> subprocess.Popen[bytes]:
    """py-spy on the server child for the window (needs ptrace rights), in the background;
    its messages go to stderr, stdout stays JSON lines only."""
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-o", out, "-r", "200"]
    kind = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(out).suffix, "raw")
    argv += ["-f", kind, "--nonblocking"]
    log(f"profiling the server: {' '.join(argv)}")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())


def _ms(values: list[float], q: float) -> str:
    found = _percentile(values, q)
    return "?" if found is None else f"{found:.0f}"


def _summary(run: ValuesRun) -> str:
    p50, p99 = run.p(0.5), run.p(0.99)
    writes = run.extra["write_ms"]
    return (
        f"{run.impl} {run.values} values: p50 {p50 if p50 is None else round(p50)} ms, "
        f"p99 {p99 if p99 is None else round(p99)} ms, lost {run.lost}/{run.expected}, "
        f"server {run.server_pct_cpu:.0f} % CPU, {run.server_rss_mb:.0f} MB, "
        f"build {run.build_ms / 1000:.1f} s, update -> all written p50 {_ms(writes, 0.5)} "
        f"max {_ms(writes, 1.0)} ms, host load {run.extra['load_1m']:.1f} "
        f"-> {'pass' if run.passes() else 'FAIL'}"
    )


async def max_values(
    impl: str, grid: list[int], main: ValuesRun, args: argparse.Namespace
) -> tuple[int | None, list[dict[str, Any]]]:
    """Largest grid N with p99 (lost = infinitely late) < 300 ms: upwards from the
    smallest, stopping at the first failure; the main run decides for its own N, and
    (monotony) a passing main run passes every smaller N, a failing one every larger."""
    best: int | None = None
    tried: list[dict[str, Any]] = []
    for n in sorted(grid):
        if n == main.requested or (main.passes() and n < main.requested):
            ok = main.passes() if n == main.requested else True
        elif not main.passes() and n > main.requested:
            break
        else:
            run = await measure_values(impl, n, args.search_warmup, args.search_window, args)
            log(_summary(run))
            ok = run.passes()
            tried.append({"values": n, "p99_ms": _round(run.p(0.99)), "lost": run.lost})
        if not ok:
            break
        best = n
    return best, tried


async def run_values(args: argparse.Namespace) -> dict[str, Any]:
    grid = sorted({int(v) for v in args.grid.split(",") if v.strip()})
    n = args.values
    ours = await measure_values("invops", n, args.warmup, args.window, args, args.profile)
    log(_summary(ours))
    ours_max, ours_tried = await max_values("invops", grid, ours, args)
    if args.no_baseline:
        return _line(args, ours, ours_max, None, None)
    base = await measure_values("naive", n, args.warmup, args.window, args)
    log(_summary(base))
    base_max, base_tried = await max_values("naive", grid, base, args)
    log(f"max search: invops {ours_tried}, naive {base_tried}")
    return _line(args, ours, ours_max, base, base_max)


def _line(
    args: argparse.Namespace,
    ours: ValuesRun,
    ours_max: int | None,
    base: ValuesRun | None,
    base_max: int | None,
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "bench": BENCH,
        "case": "values",
        "impl": "invops",
        "values": ours.values,
        "interval_ms": args.interval_ms,
        "update_groups": args.update_groups,
        "publishing_ms": args.publishing_ms,
        "window_s": ours.window_s,
        "p50_ms": _round(ours.p(0.5)),
        "p99_ms": _round(ours.p(0.99)),
        "notifications_per_s": ours.notifications_per_s(),
        "lost": ours.lost,
        "server_pct_cpu": round(ours.server_pct_cpu, 1),
        "server_rss_mb": round(ours.server_rss_mb, 1),
        "client_pct_cpu": round(ours.client_pct_cpu, 1),
        "build_ms": round(ours.build_ms, 1),
        "max_values_p99_300ms": ours_max,
    }
    if (cost := ours.cpu_s_per_1000_values()) is not None:  # nothing delivered: no cost
        line["cpu_s_per_1000_values"] = cost
    if base is None:
        return line
    ours_p99, base_p99 = ours.p(0.99), base.p(0.99)
    line |= {
        "baseline_values": base.values,
        "baseline_p50_ms": _round(base.p(0.5)),
        "baseline_p99_ms": _round(base_p99),
        "baseline_notifications_per_s": base.notifications_per_s(),
        "baseline_lost": base.lost,
        "baseline_connection_lost": base.connection_lost,
        "baseline_server_pct_cpu": round(base.server_pct_cpu, 1),
        "baseline_server_rss_mb": round(base.server_rss_mb, 1),
        "baseline_build_ms": round(base.build_ms, 1),
        "baseline_max_values_p99_300ms": base_max,
    }
    if (cost := base.cpu_s_per_1000_values()) is not None:
        line["baseline_cpu_s_per_1000_values"] = cost
    line["ratio"] = None if not ours_p99 or base_p99 is None else round(base_p99 / ours_p99, 3)
    return line


async def run_post_receipt(args: argparse.Namespace) -> dict[str, Any]:
    sessions = args.sessions
    warmup, window = args.call_warmup, args.call_window
    log(f"post_receipt: {sessions} sessions, {warmup:g} s warm-up + {window:g} s")
    async with ServerProcess("methods", args) as proc:
        info = proc.info
        ledger = ua.NodeId.from_string(info["ledger"])
        method = ua.NodeId.from_string(info["post_receipt"])
        clients = [Client(info["endpoint"], timeout=10) for _ in range(sessions)]
        tasks: list[asyncio.Task[None]] = []
        latencies: list[float] = []
        errors = 0
        recording = False
        stop = False

        async def caller(s: int, client: Client) -> None:
            nonlocal errors
            i = 0
            while not stop:
                i += 1
                request = ua.CallMethodRequest(
                    ObjectId=ledger,
                    MethodId=method,
                    InputArguments=[
                        ua.Variant("BENCH", ua.VariantType.String),
                        ua.Variant(f"LOT-{s:02d}", ua.VariantType.String),
                        ua.Variant(1.5, ua.VariantType.Double),
                        ua.Variant("kg", ua.VariantType.String),
                        ua.Variant(f"TK-{s % METHOD_TANKS:05d}", ua.VariantType.String),
                        ua.Variant(f"bench-{s}-{i}", ua.VariantType.String),
                        ua.Variant("benchmark", ua.VariantType.String),
                    ],
                )
                started = time.perf_counter()
                (result,) = await client.uaclient.call([request])
                elapsed = time.perf_counter() - started
                if not result.StatusCode.is_good():
                    errors += 1
                    if errors == 1:
                        log(f"post_receipt: call failed: {result.StatusCode}")
                elif recording:
                    latencies.append(elapsed * 1000)

        try:
            await asyncio.gather(*(c.connect() for c in clients))
            tasks = [asyncio.create_task(caller(s, c)) for s, c in enumerate(clients)]
            await asyncio.sleep(args.call_warmup)
            mark0 = await proc.ask("mark")
            recording, t0 = True, time.perf_counter()
            await asyncio.sleep(args.call_window)
            recording, t1 = False, time.perf_counter()
            mark1 = await proc.ask("mark")
            stop = True
            await asyncio.gather(*tasks)
        finally:
            stop = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    span = t1 - t0
    line = {
        "bench": BENCH,
        "case": "post_receipt",
        "sessions": sessions,
        "window_s": round(span, 2),
        "calls_per_s": round(len(latencies) / span, 1),
        "p50_ms": _round(_percentile(latencies, 0.5), 2),
        "p99_ms": _round(_percentile(latencies, 0.99), 2),
        "errors": errors,
        "server_pct_cpu": round(100 * (mark1["cpu_s"] - mark0["cpu_s"]) / span, 1),
    }
    log(f"post_receipt: {line['calls_per_s']} calls/s, p99 {line['p99_ms']} ms, {errors} errors")
    return line


async def run(args: argparse.Namespace) -> None:
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if "values" in cases:
        print(json.dumps(await run_values(args)), flush=True)
    if "post_receipt" in cases:
        print(json.dumps(await run_post_receipt(args)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", default="values,post_receipt", help="comma-separated: values, post_receipt"
    )
    parser.add_argument("--values", type=int, default=10000, help="values N of the main case")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds (main case)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--grid", default=DEFAULT_GRID, help=f"N tried for max_values_p99_300ms ({DEFAULT_GRID})"
    )
    parser.add_argument(
        "--search-window", type=float, default=6.0, help="measured seconds per search run"
    )
    parser.add_argument("--search-warmup", type=float, default=2.0, help="warm-up per search run")
    parser.add_argument(
        "--grace", type=float, default=1.5, help="seconds to wait for late notifications"
    )
    parser.add_argument("--interval-ms", type=int, default=1000, help="update interval (ms)")
    parser.add_argument(
        "--update-groups",
        type=int,
        default=10,
        help="each interval's updates come in this many groups spread evenly over it, as "
        "staggered PLC polls deliver them (1: every value at the same instant)",
    )
    parser.add_argument("--publishing-ms", type=int, default=100, help="publishing interval")
    parser.add_argument(
        "--baseline-build-cap",
        type=float,
        default=45.0,
        help="seconds the naive server may spend creating variables (it reports what it reached)",
    )
    parser.add_argument("--sessions", type=int, default=8, help="concurrent PostReceipt sessions")
    parser.add_argument("--call-window", type=float, default=5.0, help="measured PostReceipt s")
    parser.add_argument("--call-warmup", type=float, default=1.0, help="PostReceipt warm-up s")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy record the invops server during the main window "
        "(.svg flamegraph, .json speedscope, else collapsed stacks)",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="measure invops only (quicker, no ratio)"
    )
    parser.add_argument("--verbose", action="store_true", help="asyncua and invops logs")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # child mode: one server
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args)
        return
    if args.values < 1 or args.window <= 0 or args.sessions < 1:
        parser.error("need --values >= 1, --window > 0 and --sessions >= 1")
    _quiet_logs(args.verbose)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        log("interrupted")  # every server child was stopped on the way out
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

"""OPC UA connection flood: PLC polls missed and fresh-client latency while idle sockets are held.

Prints one JSON line (SPEC section 7). Three processes, so that each one's CPU is its own:

* the service: `invops demo` (simulators + service, SQLite ledger in a temporary
  directory, every port 0), with the `[opcua]` limits of the demo config (defaults:
  100 connections, 5 s handshake timeout);
* the attacker (this script with `--hold`): keeps `--sockets` (default 1,000) TCP
  connections to the OPC UA port open that never send a byte; a connection the server
  closes is opened again `--reopen-s` later (default 1 s), so the attacker holds as many
  as the server lets it, all the time;
* this process: a fresh client after another (connect over policy None as the demo
  user `operator`, read TK-101 `Level`, disconnect), back to back, as an operator
  opening a screen.

Cases (`--cases`): `idle_sockets`, the attacker holds idle sockets (above);
`monitored_items`, the attacker (this script with `--flood-items`) opens `--clients`
(default 50) anonymous sessions at once, each asking for `--items` (default 1,000)
monitored items on TK-101 `Level` in one request (issue 12: 50 x 1,000 took a PLC link
down), and keeps what it got.

Two windows of `--window` seconds each: first quiet (the baseline), then with the
attacker holding its sockets (after `--ramp` seconds for it to open them). Per window:
PLC polls missed (polls the two demo PLCs should have made at their 0.5 s interval
minus the good polls counted by `invops_plc_poll_seconds_count` and
`invops_plc_errors_total`), fresh-client connect and read p50/p99 and failures; for the
flood window also what the server refused or closed (`invops_opcua_refusals_total`
deltas) and how many connections the attacker opened per second. `baseline_…` keys are
the quiet window's; `p99_ratio` = baseline read p99 / flood read p99 (1 = the flood
costs the operator nothing; higher is better).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# benchmarks/ holds scripts, not modules: keep this directory off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

BENCH = "opcua_connections"
HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.5  # both PLCs of examples/demo-plant.toml
OPERATOR = "operator"
UNIT_PATH = ("Inventory", "PLANT1", "TANKFARM", "TK-101")  # Level: types namespace


def log(message: str) -> None:
    print(f"{BENCH}: {message}", file=sys.stderr, flush=True)


# -- the attacker --------------------------------------------------------------------------


async def hold(port: int, sockets: int, reopen_s: float) -> None:
    """Hold `sockets` idle connections until stdin closes, then print what was done."""
    opened = 0
    closed_by_server = 0
    refused = 0
    stop = asyncio.Event()

    async def slot() -> None:
        nonlocal opened, closed_by_server, refused
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                refused += 1
                await asyncio.sleep(reopen_s)
                continue
            opened += 1
            try:
                read = asyncio.ensure_future(reader.read(1))
                halt = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({read, halt}, return_when=asyncio.FIRST_COMPLETED)
                if read in done:
                    closed_by_server += 1
                for task in (read, halt):
                    task.cancel()
            except OSError:
                closed_by_server += 1
            finally:
                writer.close()
            if not stop.is_set():
                await asyncio.sleep(reopen_s)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    started = time.monotonic()
    tasks = [asyncio.create_task(slot()) for _ in range(sockets)]
    await reader.read()  # the parent closes our stdin to stop us
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "opened": opened,
                "closed_by_server": closed_by_server,
                "refused": refused,
                "seconds": seconds,
            }
        ),
        flush=True,
    )


# -- the service ------------------------------------------------------------------------------


class Demo:
    """`invops demo` in a child process, every port 0."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, str] = {}

    async def __aenter__(self) -> Demo:
        invops = Path(sys.executable).with_name("invops")
        command = [str(invops), "demo", "--data-dir", str(self._tmp)]
        for option in (
            "--opcua-port",
            "--metrics-port",
            "--modbus-port",
            "--s7-port",
            "--api-port",
        ):
            command += [option, "0"]
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._tmp
        )
        path = self._tmp / "endpoints.json"
        async with asyncio.timeout(120):
            while not path.exists():
                if self._proc.poll() is not None:
                    raise RuntimeError(f"invops demo exited with {self._proc.returncode}")
                await asyncio.sleep(0.1)
        self.endpoints = json.loads(path.read_text())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self._proc.wait, 30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)

    def cpu_s(self) -> float:
        """CPU seconds the service process has used (user + system)."""
        assert self._proc is not None
        with open(f"/proc/{self._proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.endpoints["metrics"], timeout=10) as response:
            text = response.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def _sum(metrics: dict[tuple[str, Any], float], name: str) -> float:
    return sum(v for (n, _labels), v in metrics.items() if n == name)


def _by_label(metrics: dict[tuple[str, Any], float], name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in metrics.items() if n == name}


# -- the fresh clients ----------------------------------------------------------------------


@dataclass
class Window:
    connect_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    failures: int = 0
    polls_expected: int = 0
    polls_good: int = 0
    server_cpu_pct: float = 0.0
    refusals: dict[str, float] = field(default_factory=dict)

    @property
    def polls_missed(self) -> int:
        return max(0, self.polls_expected - self.polls_good)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)


async def _level_node_id(url: str) -> Any:
    from asyncua import Client

    async with Client(url, timeout=10) as client:
        ns = await client.get_namespace_index("urn:invops:ua:plant")
        types = await client.get_namespace_index("urn:invops:ua:types")
        path = [f"{ns}:{name}" for name in UNIT_PATH]
        node = await client.nodes.objects.get_child([*path, f"{types}:Level"])
        return node.nodeid


async def fresh_clients(url: str, node_id: Any, seconds: float, window: Window) -> None:
    from asyncua import Client

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        client = Client(url, timeout=5)
        client.set_user(OPERATOR)  # a demo user (the password is the name)
        client.set_password(OPERATOR)
        started = time.perf_counter()
        try:
            await client.connect()
        except Exception as exc:  # refused or timed out: what the operator would see
            window.failures += 1
            log(f"fresh client failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            await asyncio.sleep(0.1)
            continue
        connected = time.perf_counter()
        try:
            await client.get_node(node_id).read_value()
            window.read_ms.append((time.perf_counter() - connected) * 1000)
            window.connect_ms.append((connected - started) * 1000)
        except Exception:
            window.failures += 1
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()
        await asyncio.sleep(0.02)


async def measure(demo: Demo, url: str, node_id: Any, seconds: float) -> Window:
    window = Window()
    before = demo.scrape()
    started, cpu = time.monotonic(), demo.cpu_s()
    await fresh_clients(url, node_id, seconds, window)
    elapsed = time.monotonic() - started
    window.server_cpu_pct = round(100 * (demo.cpu_s() - cpu) / elapsed, 1)
    after = demo.scrape()
    plcs = _by_label(after, "invops_plc_up", "plc")
    window.polls_expected = len(plcs) * int(elapsed / POLL_INTERVAL_S)
    polls = _sum(after, "invops_plc_poll_seconds_count") - _sum(
        before, "invops_plc_poll_seconds_count"
    )
    errors = _sum(after, "invops_plc_errors_total") - _sum(before, "invops_plc_errors_total")
    window.polls_good = int(polls - errors)
    name = "invops_opcua_refusals_total"
    was = _by_label(before, name, "reason")
    window.refusals = {r: v - was.get(r, 0.0) for r, v in _by_label(after, name, "reason").items()}
    return window


async def _attack(args: argparse.Namespace, case: str, port: int, url: str, node: Any) -> Any:
    if case == "idle_sockets":
        how = ["--hold", str(port), "--sockets", str(args.sockets)]
        how += ["--reopen-s", str(args.reopen_s)]
        log(f"holding {args.sockets} idle sockets ({args.ramp:g} s ramp)")
    else:
        how = ["--flood-items", url, "--node", node.to_string()]
        how += ["--clients", str(args.clients), "--items", str(args.items)]
        log(f"{args.clients} anonymous clients x {args.items} monitored items")
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *how, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="invops-bench-") as tmp:
        async with Demo(Path(tmp)) as demo:
            url = demo.endpoints["opcua"]
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            node_id = await _level_node_id(url)
            await asyncio.sleep(args.warmup)
            log(f"quiet window {args.window:g} s")
            quiet = await measure(demo, url, node_id, args.window)
            for case in args.cases.split(","):
                attacker = await _attack(args, case, port, url, node_id)
                try:
                    await asyncio.sleep(args.ramp)
                    flood = await measure(demo, url, node_id, args.window)
                finally:
                    assert attacker.stdin is not None
                    attacker.stdin.close()
                    out, _ = await attacker.communicate()
                done = json.loads(out.decode().strip().splitlines()[-1])
                print(json.dumps(_line(args, case, quiet, flood, done)), flush=True)
                await asyncio.sleep(args.warmup)  # the server lets go of the attacker


def _line(
    args: argparse.Namespace, case: str, quiet: Window, flood: Window, attacker: dict[str, Any]
) -> dict[str, Any]:
    p99, base_p99 = _percentile(flood.read_ms, 0.99), _percentile(quiet.read_ms, 0.99)
    line: dict[str, Any] = {"bench": BENCH, "case": case}
    if case == "idle_sockets":
        line |= {"sockets": args.sockets, "reopen_s": args.reopen_s}
    else:
        line |= {"clients": args.clients, "items_per_client": args.items}
    line |= {
        "window_s": args.window,
        "polls_expected": flood.polls_expected,
        "polls_missed": flood.polls_missed,
        "fresh_clients": len(flood.read_ms),
        "fresh_client_failures": flood.failures,
        "connect_p50_ms": _percentile(flood.connect_ms, 0.5),
        "connect_p99_ms": _percentile(flood.connect_ms, 0.99),
        "read_p50_ms": _percentile(flood.read_ms, 0.5),
        "read_p99_ms": p99,
        "server_pct_cpu": flood.server_cpu_pct,
    }
    if case == "idle_sockets":
        line["attacker_connections_per_s"] = round(attacker["opened"] / attacker["seconds"], 1)
    else:
        line |= {f"attacker_{k}": v for k, v in attacker.items()}
    line |= {f"refused_{k}": int(v) for k, v in sorted(flood.refusals.items()) if v}
    line |= {
        "baseline_polls_missed": quiet.polls_missed,
        "baseline_fresh_client_failures": quiet.failures,
        "baseline_connect_p99_ms": _percentile(quiet.connect_ms, 0.99),
        "baseline_read_p99_ms": base_p99,
        "baseline_server_pct_cpu": quiet.server_cpu_pct,
        "p99_ratio": round(base_p99 / p99, 2) if p99 and base_p99 else None,
    }
    return line


async def flood_items(url: str, node: str, clients: int, items: int) -> None:
    """`clients` anonymous sessions, each asking for `items` monitored items on `node`,
    kept until stdin closes; prints what the server granted."""
    from asyncua import Client, ua

    node_id = ua.NodeId.from_string(node)
    counts = {"sessions": 0, "sessions_refused": 0, "items": 0, "items_refused": 0}
    connected: list[Client] = []

    async def one(handle_base: int) -> None:
        client = Client(url, timeout=30)
        try:
            await client.connect()
        except Exception:
            counts["sessions_refused"] += 1
            return
        connected.append(client)
        counts["sessions"] += 1
        try:
            sub = await client.create_subscription(100, _Ignore())
            requests = []
            for handle in range(handle_base, handle_base + items):
                request = ua.MonitoredItemCreateRequest()
                request.ItemToMonitor = ua.ReadValueId(
                    NodeId=node_id, AttributeId=ua.AttributeIds.Value
                )
                request.MonitoringMode = ua.MonitoringMode.Reporting
                request.RequestedParameters = ua.MonitoringParameters(
                    ClientHandle=handle, SamplingInterval=0, QueueSize=1, DiscardOldest=True
                )
                requests.append(request)
            params = ua.CreateMonitoredItemsParameters(
                SubscriptionId=sub.subscription_id,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                ItemsToCreate=requests,
            )
            for result in await client.uaclient.create_monitored_items(params):
                counts["items" if result.StatusCode.is_good() else "items_refused"] += 1
        except Exception as exc:
            counts["items_refused"] += items
            log(f"monitored items failed: {type(exc).__name__}: {exc}")

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await asyncio.gather(*(one(i * items) for i in range(clients)))
    await reader.read()  # the parent closes our stdin to stop us
    for client in connected:
        with contextlib.suppress(Exception):
            await client.disconnect()
    print(json.dumps(counts), flush=True)


class _Ignore:
    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000, help="idle sockets to hold")
    parser.add_argument("--reopen-s", type=float, default=1.0, help="delay before reopening")
    parser.add_argument("--window", type=float, default=15.0, help="seconds per window")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after start")
    parser.add_argument("--clients", type=int, default=50, help="anonymous item flooders")
    parser.add_argument("--items", type=int, default=1000, help="monitored items per flooder")
    parser.add_argument(
        "--cases", default="idle_sockets,monitored_items", help="comma-separated cases"
    )
    parser.add_argument("--hold", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--flood-items", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    if args.hold is not None:
        asyncio.run(hold(args.hold, args.sockets, args.reopen_s))
        return
    if args.flood_items is not None:
        asyncio.run(flood_items(args.flood_items, args.node, args.clients, args.items))
        return
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

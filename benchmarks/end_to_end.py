"""The whole service on the demo plant scaled up: PLC change -> OPC UA notification / posting.

Prints one JSON line (SPEC section 7). The plant is the demo's, scaled to `--units`
storage units over `--plcs` simulated PLCs (one in five S7 with silos, the rest Modbus
with tanks measured by level + strapping table and bins by weight), polled every
`--poll-ms`; tanks, silos and bins fill, draw and transfer as in `invops demo`, with
reading noise, so every value moves on every poll and movements are booked all along
(deadband as in the demo, `--settle-s`, `--max-interval-s`). Three processes, so each
one's CPU is its own:

* the simulated PLCs (this script with `--serve plcs`): the simulators' plant model and
  Modbus / S7 servers, plus one *probe* unit per PLC (a tank on Modbus, a silo on S7,
  without noise or activities; settle_s 0): at random times, every `--probe-ms` on
  average, one probe steps between 40 % and 60 % of its capacity; the wall time when
  the PLC serves the new value is recorded;
* the service (this script with `--serve service`): `invops.service.run_service` with an
  SQLite ledger in a temporary directory; a `Ledger.subscribe` listener notes the wall
  time each movement is durable (listeners run after the commit);
* this process: an asyncua client with one 100 ms subscription to the Level (tanks) or
  Mass (silos, bins) of every unit (`--watch probes`: the probes only), as a SCADA
  would; it measures the service's CPU (/proc/PID/stat) and peak RSS (VmHWM), its ledger
  writer process (a child of it) included.

Per probe step inside the `--window`: latency to the first notification carrying the
new value, and to the durable posting of the movement it causes (receipt up, issue
down). `*_missed` counts steps without one before the run ends (`--grace` s later).
`cpu_s_per_1000_values`: the service's CPU seconds in the window per 1,000 values
(data-change notifications) the client received in it; the service's whole work
(polling, ledger, OPC UA) is charged to what the subscriber gets, so with `--watch
probes` the figure is far higher and not comparable with `--watch all`. There is no
baseline in this run, so no `baseline_…` keys (`opcua_server` has the naive asyncua
server's figure, for OPC UA alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

# benchmarks/ holds scripts, not modules: off the import path, so that `import opcua_server`
# (in functions below) finds the package and not benchmarks/opcua_server.py.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

BENCH = "end_to_end"
HOST = "127.0.0.1"
SITE = "PLANT1"
PROBE_LOW, PROBE_HIGH = 0.4, 0.6  # probe steps between these fractions of capacity
START_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 30.0

# Materials as in the demo, plus one per probe kind (no transfers with the plant's units).
MATERIALS: list[dict[str, Any]] = [
    {"id": "ETHANOL-96", "base_uom": "kg", "density_kg_per_l": 0.8},
    {"id": "GLYCOL", "base_uom": "kg", "density_kg_per_l": 1.11},
    {"id": "SUGAR", "base_uom": "kg"},
    {"id": "FLOUR", "base_uom": "kg"},
    {"id": "CAPS", "base_uom": "kg"},
    {"id": "LABELS", "base_uom": "kg"},
    {"id": "PREFORMS", "base_uom": "kg"},
    {"id": "CARTONS", "base_uom": "kg"},
    {"id": "PROBE-LIQUID", "base_uom": "kg", "density_kg_per_l": 1.0},
    {"id": "PROBE-SOLID", "base_uom": "kg"},
]
# (material, capacity L, strapping points, deadband kg): TK-101 and TK-102 of the demo
TANKS = (
    ("ETHANOL-96", 50000, [[0, 0], [300, 1500], [6000, 50000]], 40),
    ("GLYCOL", 30000, [[0, 0], [250, 900], [5000, 30000]], 30),
)
BINS = ("CAPS", "LABELS", "PREFORMS", "CARTONS")
SILOS = ("SUGAR", "FLOUR")
ALARMS = {"high": 90, "low": 10}


def log(message: str) -> None:
    print(f"{BENCH}: {message}", file=sys.stderr, flush=True)


# -- the plant -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plant:
    units: int
    plcs: int
    poll_ms: int
    settle_s: float
    max_interval_s: float
    seed: int

    @property
    def s7_plcs(self) -> int:
        return self.plcs // 5

    def plc_name(self, p: int) -> str:
        return f"S7-{p:02d}" if p >= self.plcs - self.s7_plcs else f"MB-{p:02d}"


@dataclass(frozen=True)
class Probe:
    unit: str
    area: str
    variable: str  # what the client watches: Level (tank) or Mass (silo)
    tag: str


def plant_data(plant: Plant, data_dir: Path) -> dict[str, Any]:
    """The plant as parsed TOML: unit i on PLC i % plcs, the first unit of each PLC its probe."""
    plcs = []
    for p in range(plant.plcs):
        name = plant.plc_name(p)
        entry: dict[str, Any] = {"name": name, "host": HOST, "port": 1}  # real ports come later
        entry |= {"poll_interval_s": plant.poll_ms / 1000, "timeout_s": 1.0}
        entry |= {"protocol": "s7", "rack": 0, "slot": 1} if name[:2] == "S7" else {}
        entry |= {"protocol": "modbus", "unit_id": 1} if name[:2] == "MB" else {}
        plcs.append(entry)
    timing = {"settle_s": plant.settle_s, "max_interval_s": plant.max_interval_s}
    units = []
    for i in range(plant.units):
        p, slot = i % plant.plcs, i // plant.plcs
        plc = plant.plc_name(p)
        probe = slot == 0
        if plc[:2] == "S7":  # silos: weight float32, DB1.DBD<4 * slot>
            tag = {"plc": plc, "address": f"DB1.DBD{4 * slot}", "data_type": "float32"}
            unit = {
                "id": f"PR-SI-{p:02d}" if probe else f"SI-{p:02d}-{slot:03d}",
                "area": "SILOS",
                "kind": "silo",
                "capacity": 80,
                "capacity_uom": "t",
                "material": "PROBE-SOLID" if probe else SILOS[slot % len(SILOS)],
                "deadband": 50,
                "weight": tag | {"unit": "kg"},
            }
        elif probe or slot % 2 == 0:  # tanks: level float32 at hr:4*slot, some totalizers
            material, capacity, points, deadband = TANKS[(slot // 2) % len(TANKS)]
            unit = {
                "id": f"PR-TK-{p:02d}" if probe else f"TK-{p:02d}-{slot:03d}",
                "area": "TANKFARM",
                "kind": "tank",
                "capacity": capacity,
                "capacity_uom": "L",
                "material": "PROBE-LIQUID" if probe else material,
                "deadband": deadband,
                "level": {
                    "plc": plc,
                    "address": f"hr:{4 * slot}",
                    "data_type": "float32",
                    "unit": "mm",
                },
                "strapping": {"volume_uom": "L", "points": points},
            }
            if slot % 6 == 2:
                unit["totalizer"] = {
                    "plc": plc,
                    "address": f"hr:{4 * slot + 2}",
                    "data_type": "uint32",
                    "unit": "L",
                }
        else:  # bins: weight uint16 in 0.1 kg at hr:4*slot
            unit = {
                "id": f"BN-{p:02d}-{slot:03d}",
                "area": "WAREHOUSE",
                "kind": "bin",
                "capacity": 1000,
                "capacity_uom": "kg",
                "material": BINS[(slot // 2) % len(BINS)],
                "deadband": 2,
                "weight": {
                    "plc": plc,
                    "address": f"hr:{4 * slot}",
                    "data_type": "uint16",
                    "scale": 0.1,
                    "unit": "kg",
                },
            }
        unit |= {"settle_s": 0, "max_interval_s": 60} if probe else timing
        units.append(unit | {"alarms": ALARMS})
    return {
        "site": {"enterprise": "ACME", "name": SITE, "areas": ["TANKFARM", "SILOS", "WAREHOUSE"]},
        "ledger": {
            "url": f"sqlite+aiosqlite:///{data_dir / 'ledger.db'}",
            "batch_max": 64,
            "buffer_path": str(data_dir / "buffer.db"),  # readings kept while the ledger is away
            "migrate_on_start": True,
        },
        "opcua": {
            "endpoint": f"opc.tcp://{HOST}:0/invops",
            "allow_security_none": True,
            "anonymous": "read",
            "certificate_dir": str(data_dir / "pki"),
        },
        "metrics": {"listen": f"{HOST}:0"},
        "materials": [m | {"default_lot_status": "released"} for m in MATERIALS],
        "plcs": plcs,
        "storage_units": units,
    }


def probes_of(data: dict[str, Any]) -> list[Probe]:
    found = []
    for unit in data["storage_units"]:
        if unit["id"].startswith("PR-"):
            role = "level" if "level" in unit else "weight"
            variable = "Level" if role == "level" else "Mass"
            found.append(Probe(unit["id"], unit["area"], variable, f"{unit['id']}.{role}"))
    return found


def load_plant(plant: Plant, data_dir: Path) -> tuple[Any, list[Probe]]:
    from invops.config import parse_config

    data = plant_data(plant, data_dir)
    return parse_config(data, environ={}), probes_of(data)


# -- child processes: the protocol -------------------------------------------------------


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _commands() -> asyncio.StreamReader:
    """stdin as a stream: one command per line, EOF = stop (also when the parent dies)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _serve_commands(
    answers: dict[str, Callable[[], dict[str, Any]]], crashed: asyncio.Task[Any]
) -> None:
    """Answer commands until EOF; a crash of `crashed` ends the loop (and is raised)."""
    reader = await _commands()
    while True:
        line = asyncio.ensure_future(reader.readline())
        await asyncio.wait({line, crashed}, return_when=asyncio.FIRST_COMPLETED)
        if crashed.done():
            line.cancel()
            crashed.result()
            raise RuntimeError("ended before it was asked to stop")
        command = line.result().decode().strip()
        if not command:
            return
        _reply(answers[command]())


def _child_setup() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (stdin EOF)


# -- the simulated PLCs (child process) --------------------------------------------------


async def serve_plcs(plant: Plant, probe_s: float, tick_s: float = 0.1) -> None:
    """`simulators` servers and plant model (as `run_simulators` drives them), plus probes."""
    from invops.plant_description import plant_description
    from simulators import Faults, PlantModel, build_servers
    from simulators.runner import drive_plant

    with tempfile.TemporaryDirectory() as tmp:
        config, probes = load_plant(plant, Path(tmp))
    model = PlantModel(plant_description(config), seed=plant.seed)
    quiet = {probe.tag: 0.0 for probe in probes}  # probes: no reading noise ...
    for probe in probes:
        model.units[probe.unit].idle_until = math.inf  # ... and no activities
    settings = config.plc_settings()
    servers = build_servers(settings, Faults(), ports={s.name: 0 for s in settings})
    server_of = {tag.name: server for server in servers for tag in server.settings.tags}
    changes: list[tuple[float, str, float]] = []

    def publish() -> None:
        values = model.tag_values(quiet)
        for server in servers:
            server.update(values)

    async def step_probes() -> None:
        rng = random.Random(plant.seed)
        up = dict.fromkeys((p.unit for p in probes), True)
        n = 0
        while True:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * probe_s)
            probe = probes[n % len(probes)]
            n += 1
            unit = model.units[probe.unit]
            unit.quantity = unit.capacity * (PROBE_HIGH if up[probe.unit] else PROBE_LOW)
            up[probe.unit] = not up[probe.unit]
            value = model.tag_values(quiet)[probe.tag]
            server_of[probe.tag].update({probe.tag: value})
            changes.append((time.time(), probe.unit, value))  # served from now on

    publish()
    try:
        for server in servers:
            await server.start()
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(drive_plant(model, tick_s, publish)),
                group.create_task(step_probes()),
            ]
            tasks += [group.create_task(server.serve()) for server in servers]
            running = group.create_task(_forever(tasks))
            _reply({"ports": {server.name: server.port for server in servers}})
            await _serve_commands({"changes": lambda: {"changes": changes}}, running)
            for task in tasks:
                task.cancel()
            running.cancel()
    finally:
        for server in servers:
            await server.stop()


async def _forever(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Raises as soon as one of `tasks` fails (they only end by cancellation)."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise cast(BaseException, task.exception())


# -- the service (child process) ---------------------------------------------------------


async def serve_service(plant: Plant, data_dir: Path, ports: dict[str, int]) -> None:
    """`run_service` as `invops run` runs it; movement times noted by a ledger listener."""
    from inventory_core.domain.model import Movement
    from invops.service import Endpoints, run_service

    config, probes = load_plant(plant, data_dir)
    probe_units = {probe.unit for probe in probes}
    posted: list[float] = []
    probe_postings: list[tuple[float, str, str]] = []
    stop = asyncio.Event()
    ready: asyncio.Future[Endpoints] = asyncio.get_running_loop().create_future()

    def on_movement(movement: Movement) -> None:  # called once the movement is durable
        now = time.time()
        posted.append(now)
        unit = movement.to_unit or movement.from_unit
        if unit in probe_units:
            probe_postings.append((now, str(unit), str(movement.kind)))

    def on_ready(endpoints: Endpoints) -> None:
        endpoints.ledger.subscribe(on_movement)
        ready.set_result(endpoints)

    service = asyncio.create_task(
        run_service(
            config,
            plc_ports=ports,
            opcua_endpoint=config.opcua.endpoint,
            pki_dir=data_dir / "pki",
            metrics_port=0,
            stop=stop,
            ready=on_ready,
        )
    )
    try:
        await asyncio.wait({ready, service}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            service.result()
            raise RuntimeError("the service ended before it was ready")
        started = ready.result()
        _reply({"opcua": started.opcua, "metrics_port": started.metrics_port})
        answers = {"postings": lambda: {"posted": posted, "probes": probe_postings}}
        await _serve_commands(answers, service)
    finally:
        stop.set()
        await service


# -- this process: the client and the measurements ----------------------------------------


class Child:
    """A child process of this script (`--serve WHAT`); always stopped on the way out."""

    def __init__(self, what: str, argv: list[str]) -> None:
        self.what = what
        self._argv = [sys.executable, __file__, "--serve", what, *argv]
        self._proc: subprocess.Popen[str] | None = None
        self.hello: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> Child:
        self._proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            self.hello = self._answer(START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def ask(self, command: str) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return self._answer(ANSWER_TIMEOUT_S)

    def _answer(self, timeout: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            state = "no answer" if proc.poll() is None else f"exited (rc={proc.returncode})"
            raise RuntimeError(f"{self.what} process: {state}")
        return cast(dict[str, Any], json.loads(line))

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # EOF: the child stops its servers / the service and exits
        except OSError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"{self.what} process did not stop in time: killed")
            proc.kill()
            proc.wait()


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the service's ledger writer is a child process)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue  # gone meanwhile
    tree = [pid]
    for member in tree:
        tree += [child for child, parent in parents.items() if parent == member]
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (all their threads) from /proc."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> tuple[float, float]:
    """(peak RSS, current RSS) in MiB of a process and its descendants (the sum of each
    one's peak: an upper bound of the tree's)."""
    peak = current = 0
    for member in process_tree(pid):
        status = {}
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                status[key] = value.split()
        except OSError:
            continue
        peak += int(status["VmHWM"][0])
        current += int(status["VmRSS"][0])
    return peak / 1024, current / 1024


@dataclass
class Observation:
    started: float = 0.0
    ended: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU s in the window
    metrics: dict[str, float] = field(default_factory=dict)  # service counters in the window
    notifications: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    received: list[float] = field(default_factory=list)  # arrival time of every notification


class Watcher:
    """asyncua subscription handler: notes when each notification arrives."""

    def __init__(self, probe_nodes: dict[str, str], observation: Observation) -> None:
        self._probes = probe_nodes  # NodeId string -> probe unit
        self._seen = observation

    def datachange_notification(self, node: Any, value: Any, _data: Any) -> None:
        now = time.time()
        self._seen.received.append(now)
        unit = self._probes.get(node.nodeid.Identifier)
        if unit is not None and isinstance(value, float):
            self._seen.notifications.setdefault(unit, []).append((now, value))

    def status_change_notification(self, status: Any) -> None:
        log(f"subscription status changed: {status}")


async def observe(
    endpoint: str,
    data: dict[str, Any],
    probes: list[Probe],
    pids: dict[str, int],
    metrics_port: int,
    args: argparse.Namespace,
) -> Observation:
    """Subscribe as a SCADA client would, then measure CPU over the window."""
    from asyncua import Client, ua

    from information_model import INSTANCES_NAMESPACE
    from opcua_server import node_id_text

    seen = Observation()
    watched: list[tuple[str, str, str]] = [(p.unit, p.area, p.variable) for p in probes]
    if args.watch == "all":
        watched += [
            (u["id"], u["area"], "Level" if "level" in u else "Mass")
            for u in data["storage_units"]
            if not u["id"].startswith("PR-")
        ]
    async with Client(endpoint, timeout=30) as client:
        ns = await client.get_namespace_index(INSTANCES_NAMESPACE)
        ids = {
            unit: node_id_text("Inventory", SITE, area, unit, variable)
            for unit, area, variable in watched
        }
        probe_nodes = {ids[p.unit]: p.unit for p in probes}
        subscription = await client.create_subscription(args.publish_ms, Watcher(probe_nodes, seen))
        nodes = [client.get_node(ua.NodeId(text, ns)) for text in ids.values()]
        await subscription.subscribe_data_change(nodes)
        log(f"watching {len(nodes)} variables; {args.warmup:g} s warm-up")
        await asyncio.sleep(args.warmup)
        log(f"measuring {args.window:g} s")
        counters = await asyncio.to_thread(scrape, metrics_port)
        before = {what: cpu_seconds(pid) for what, pid in pids.items()}
        client_cpu = time.process_time()
        seen.started = time.time()
        await asyncio.sleep(args.window)
        seen.ended = time.time()
        seen.cpu = {what: cpu_seconds(pid) - before[what] for what, pid in pids.items()}
        seen.cpu["client"] = time.process_time() - client_cpu
        after = await asyncio.to_thread(scrape, metrics_port)
        seen.metrics = {name: after[name] - counters[name] for name in after}
        await asyncio.sleep(args.grace)  # late notifications and postings of the window's steps
        await subscription.delete()
    return seen


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def latencies(
    changes: list[tuple[float, str, float]],
    notifications: dict[str, list[tuple[float, float]]],
    postings: list[tuple[float, str, str]],
    window: tuple[float, float],
) -> tuple[list[float], int, list[float], int]:
    """Per probe step inside the window: first notification with the new value, first
    posting of that unit in the step's direction (receipt up, issue down) after it."""
    notify: list[float] = []
    posting: list[float] = []
    notify_missed = posting_missed = 0
    previous: dict[str, float] = {}
    for at, unit, value in changes:
        went_up = unit not in previous or value > previous[unit]
        previous[unit] = value
        if not window[0] <= at < window[1]:
            continue
        tolerance = 1e-6 * max(1.0, abs(value))
        arrived = [
            t for t, v in notifications.get(unit, []) if t >= at and abs(v - value) <= tolerance
        ]
        if arrived:
            notify.append(arrived[0] - at)
        else:
            notify_missed += 1
        kind = "receipt" if went_up else "issue"
        booked = [t for t, u, k in postings if u == unit and k == kind and t >= at]
        if booked:
            posting.append(booked[0] - at)
        else:
            posting_missed += 1
    return notify, notify_missed, posting, posting_missed


def scrape(port: int) -> dict[str, float]:
    """Sums of a few service metrics over their labels."""
    wanted = ("invops_plc_poll_seconds_count", "invops_plc_errors_total")
    totals = dict.fromkeys(wanted, 0.0)
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in totals:
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def run(args: argparse.Namespace) -> dict[str, Any]:
    plant = Plant(
        args.units, args.plcs, args.poll_ms, args.settle_s, args.max_interval_s, args.seed
    )
    common = ["--units", str(plant.units), "--plcs", str(plant.plcs)]
    common += ["--poll-ms", str(plant.poll_ms), "--settle-s", str(plant.settle_s)]
    common += ["--max-interval-s", str(plant.max_interval_s), "--seed", str(plant.seed)]
    with tempfile.TemporaryDirectory(prefix="invops-e2e-") as tmp:
        data = plant_data(plant, Path(tmp))
        probes = probes_of(data)
        log(
            f"{plant.units} units on {plant.plcs} PLCs ({plant.s7_plcs} S7), "
            f"{len(probes)} probes; starting the simulated PLCs"
        )
        plcs_argv = [*common, "--probe-ms", str(args.probe_ms)]
        with Child("plcs", plcs_argv) as plcs:
            ports = json.dumps(plcs.hello["ports"])
            log("starting the service")
            started = time.monotonic()
            service_argv = [*common, "--data-dir", tmp, "--ports", ports]
            with Child("service", service_argv) as service:
                log(f"service ready after {time.monotonic() - started:.1f} s")
                ready_mb = memory_mb(service.pid)[1]
                pids = {"service": service.pid, "plcs": plcs.pid}
                endpoint, port = service.hello["opcua"], service.hello["metrics_port"]
                seen = asyncio.run(observe(endpoint, data, probes, pids, port, args))
                peak_mb, rss_mb = memory_mb(service.pid)
                answer = service.ask("postings")
                changes = [tuple(c) for c in plcs.ask("changes")["changes"]]
            log("stopped")
    window = (seen.started, seen.ended)
    span = seen.ended - seen.started
    notify, notify_missed, posting, posting_missed = latencies(
        cast(list[tuple[float, str, float]], changes),
        seen.notifications,
        [(t, u, k) for t, u, k in answer["probes"]],
        window,
    )
    movements = sum(1 for t in answer["posted"] if window[0] <= t < window[1])
    received = sum(1 for t in seen.received if window[0] <= t < window[1])
    polls = seen.metrics
    # service CPU per 1,000 values delivered; nothing delivered: no figure
    cost = (
        {"cpu_s_per_1000_values": round(1000 * seen.cpu["service"] / received, 4)}
        if received
        else {}
    )
    return {
        "bench": BENCH,
        "units": plant.units,
        "plcs": plant.plcs,
        "s7_plcs": plant.s7_plcs,
        "poll_ms": plant.poll_ms,
        "publish_ms": args.publish_ms,
        "watch": args.watch,
        "window_s": args.window,
        "probe_steps": len(notify) + notify_missed,
        "notify_p50_ms": _ms(_percentile(notify, 0.50)),
        "notify_p99_ms": _ms(_percentile(notify, 0.99)),
        "notify_max_ms": _ms(max(notify, default=None)),
        "notify_missed": notify_missed,
        "posting_p50_ms": _ms(_percentile(posting, 0.50)),
        "posting_p99_ms": _ms(_percentile(posting, 0.99)),
        "posting_max_ms": _ms(max(posting, default=None)),
        "posting_missed": posting_missed,
        "movements": movements,
        "movements_per_s": round(movements / span, 1),
        "notifications_per_s": round(received / span, 1),
        "polls_per_s": round(polls["invops_plc_poll_seconds_count"] / span, 1),
        "poll_errors": int(polls["invops_plc_errors_total"]),
        "service_pct_cpu": round(100 * seen.cpu["service"] / span, 1),
        **cost,
        "service_rss_mb": round(peak_mb, 1),
        "service_rss_end_mb": round(rss_mb, 1),
        "service_rss_ready_mb": round(ready_mb, 1),
        "plcs_pct_cpu": round(100 * seen.cpu["plcs"] / span, 1),
        "client_pct_cpu": round(100 * seen.cpu["client"] / span, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=500, help="storage units (>= --plcs)")
    parser.add_argument("--plcs", type=int, default=20, help="simulated PLCs (1 in 5 is S7)")
    parser.add_argument("--poll-ms", type=int, default=100, help="PLC poll interval (ms)")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument(
        "--grace", type=float, default=3.0, help="seconds after the window for late arrivals"
    )
    parser.add_argument(
        "--probe-ms", type=int, default=250, help="mean time between two probe steps (ms)"
    )
    parser.add_argument(
        "--publish-ms", type=int, default=100, help="the client's publishing interval (ms)"
    )
    parser.add_argument(
        "--watch",
        choices=("all", "probes"),
        default="all",
        help="subscribe to every unit's Level/Mass (default) or the probes' only",
    )
    parser.add_argument(
        "--settle-s", type=float, default=1.0, help="settle_s of the plant's units (probes: 0)"
    )
    parser.add_argument(
        "--max-interval-s", type=float, default=5.0, help="max_interval_s of the plant's units"
    )
    parser.add_argument("--seed", type=int, default=1, help="plant model and probe seed")
    parser.add_argument("--serve", choices=("plcs", "service"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plcs < 1 or args.units < args.plcs:
        parser.error("need --plcs >= 1 and --units >= --plcs")
    if args.window <= 0 or args.poll_ms < 10 or args.probe_ms < 10:
        parser.error("need --window > 0, --poll-ms >= 10 and --probe-ms >= 10")
    if args.serve:
        plant = Plant(
            args.units, args.plcs, args.poll_ms, args.settle_s, args.max_interval_s, args.seed
        )
        _child_setup()
        if args.serve == "plcs":
            asyncio.run(serve_plcs(plant, args.probe_ms / 1000))
        else:
            asyncio.run(serve_service(plant, args.data_dir, json.loads(args.ports)))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: children are stopped
    try:
        print(json.dumps(run(args)), flush=True)
    except KeyboardInterrupt:
        log("interrupted")  # the child processes were stopped on the way out
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

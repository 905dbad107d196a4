"""Simulated PLCs polled through the invops connectors every 100 ms, against raw clients.

Prints one JSON line per case (SPEC section 7): protocol and number of PLCs, each with
100 tags of mixed types and word orders laid out with gaps (small ones that coalescing
bridges, large ones and the request size limit that force a split). The PLCs are
pymodbus / python-snap7 servers in a child process (this script with `--serve`), so the
process CPU measured here is the client side only. Per case: achieved polls/s per PLC,
block reads per poll counted on the server vs `minimum_reads`, p50/p99 poll duration,
client CPU, and the baseline: raw `AsyncModbusTcpClient` / `snap7.AsyncClient` reading
the same blocks at the same cadence without decoding (`ratio` = baseline CPU per read
divided by invops CPU per read, higher is better; `p99_over_baseline_ms` = invops p99
minus `baseline_p99_ms`, the poll latency invops adds to the library's on the same
machine in the same run, lower is better). "Without decoding" means without invops'
decoding: the raw Modbus client still turns every register response into a list of
ints, as pymodbus does, while invops' link keeps the register bytes as they came
(a response class registered on its own client) and unpacks them once per block, so
a `ratio` near or above 1 is possible. `start`: "staggered" (the default,
what the service does: `plc_connectors.start_offsets` spreads PLCs sharing an interval
evenly over it); "aligned" (`--cases modbus:50:aligned`, not in the default set)
starts every poller at once, to show the bursts that causes (the cadence is absolute,
so pollers started together stay in step: 50 Modbus PLCs then see p99 ~35 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from plc_connectors import (
    Address,
    Area,
    DataType,
    ModbusLink,
    PlcError,
    PlcPoller,
    PlcProtocol,
    PlcSettings,
    ReadBlock,
    S7Link,
    Sample,
    Tag,
    WordOrder,
    byte_size,
    encode_bytes,
    encode_registers,
    integer_range,
    minimum_reads,
    register_count,
    start_offsets,
    tag_span,
    to_engineering,
    validate_tag,
)
from plc_connectors.planning import MODBUS_MAX_GAP, S7_MAX_GAP

BENCH = "plc_poll"
HOST = "127.0.0.1"
UNIT_ID = 1
HR_REGISTERS = 1024  # mapped on every simulated Modbus PLC
IR_REGISTERS = 512
COILS = 256
DB_BYTES = 1024  # DB1 and DB2 on every simulated S7 PLC
S7_DBS = (1, 2)
NUMERIC = (
    DataType.INT16,
    DataType.UINT16,
    DataType.INT32,
    DataType.UINT32,
    DataType.FLOAT32,
    DataType.FLOAT64,
)
DEFAULT_CASES = "modbus:10:staggered,modbus:50:staggered,s7:10:staggered"


def log(message: str) -> None:
    print(f"{BENCH}: {message}", file=sys.stderr, flush=True)


# -- tag layouts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """One PLC's tags and the raw value each holds on the simulated PLC."""

    tags: tuple[Tag, ...]
    raw: dict[str, int | float | bool]

    def expected(self) -> dict[str, float | bool]:
        return {t.name: to_engineering(self.raw[t.name], t) for t in self.tags}


def _raw_value(rng: random.Random, dt: DataType) -> int | float | bool:
    if dt is DataType.BOOL:
        return rng.random() < 0.5
    if dt is DataType.FLOAT32:  # exactly representable, so the read-back compares equal
        return cast(float, struct.unpack(">f", struct.pack(">f", rng.uniform(-1e4, 1e4)))[0])
    if dt is DataType.FLOAT64:
        return rng.uniform(-1e6, 1e6)
    lo, hi = integer_range(dt)
    return rng.randint(lo, hi)


def _scaling(rng: random.Random, dt: DataType) -> tuple[float, float]:
    if dt is DataType.BOOL or dt in (DataType.FLOAT32, DataType.FLOAT64):
        return 1.0, 0.0
    return rng.choice((1.0, 1.0, 0.1, 0.01)), rng.choice((0.0, 0.0, -273.15))


def _split(n_tags: int, shares: Sequence[float]) -> list[int]:
    """`n_tags` split into segments by `shares` (the last takes the rest)."""
    counts = [max(1, int(n_tags * s)) for s in shares[:-1]]
    return [*counts, n_tags - sum(counts)]


def modbus_layout(seed: int, plc: int, n_tags: int) -> Layout:
    """Holding registers in two segments (the first longer than one 125-register read),
    input registers in one, coils in two; a gap larger than MODBUS_MAX_GAP between the
    segments of one table, gaps of 0..MODBUS_MAX_GAP (bridged) between tags inside one."""
    rng = random.Random(f"modbus/{seed}/{plc}")
    hr_a, hr_b, ir, co_a, co_b = _split(n_tags, (0.42, 0.28, 0.2, 0.05, 0.05))
    segments = [
        (Area.HOLDING, hr_a),
        (Area.HOLDING, hr_b),
        (Area.INPUT, ir),
        (Area.COIL, co_a),
        (Area.COIL, co_b),
    ]
    size = {Area.HOLDING: HR_REGISTERS, Area.INPUT: IR_REGISTERS, Area.COIL: COILS}
    cursor: dict[Area, int] = {}
    tags: list[Tag] = []
    raw: dict[str, int | float | bool] = {}
    for area, count in segments:
        if area in cursor:
            cursor[area] += rng.randint(MODBUS_MAX_GAP + 2, 6 * MODBUS_MAX_GAP)
        else:
            cursor[area] = rng.randint(0, 16)
        for i in range(count):
            if i and rng.random() < 0.6:
                cursor[area] += rng.randint(1, MODBUS_MAX_GAP)
            dt = DataType.BOOL if area is Area.COIL else rng.choice(NUMERIC)
            if dt is DataType.BOOL:
                order = WordOrder.ABCD
            elif register_count(dt) == 1:
                order = rng.choice((WordOrder.ABCD, WordOrder.BADC))
            else:
                order = rng.choice(tuple(WordOrder))
            scale, offset = _scaling(rng, dt)
            name = f"t{len(tags):03d}_{area.value}{cursor[area]}_{dt.value}_{order.value}"
            tag = Tag(name, Address(area, cursor[area]), dt, order, scale, offset)
            validate_tag(tag, "modbus")
            tags.append(tag)
            raw[name] = _raw_value(rng, dt)
            cursor[area] = tag_span(tag)[1]
            if cursor[area] > size[area]:
                raise AssertionError(f"layout runs past {area.value}:{size[area]}")
    return Layout(tuple(tags), raw)


def s7_layout(seed: int, plc: int, n_tags: int) -> Layout:
    """DB1 in two segments (a gap larger than S7_MAX_GAP between them), DB2 in one;
    DBX bits share bytes, DBW/DBD/LREAL on even offsets, gaps of up to 12 bytes inside."""
    rng = random.Random(f"s7/{seed}/{plc}")
    db1_a, db1_b, db2 = _split(n_tags, (0.6, 0.25, 0.15))
    segments = [(1, db1_a), (1, db1_b), (2, db2)]
    kinds = (DataType.BOOL, DataType.BOOL, *NUMERIC)
    cursor: dict[int, int] = {}
    tags: list[Tag] = []
    raw: dict[str, int | float | bool] = {}
    for db, count in segments:
        if db in cursor:
            cursor[db] += rng.randint(S7_MAX_GAP + 8, 4 * S7_MAX_GAP)
        else:
            cursor[db] = rng.randrange(0, 32, 2)
        bit_byte, next_bit = -1, 8  # DBX bits fill a byte before the next one starts
        for i in range(count):
            if i and rng.random() < 0.6:
                cursor[db] += rng.randint(1, 12)
            dt = rng.choice(kinds)
            if dt is DataType.BOOL:
                if next_bit < 8 and cursor[db] == bit_byte + 1:
                    address = Address(Area.DB, bit_byte, db=db, bit=next_bit, width=1)
                else:
                    bit_byte, next_bit = cursor[db], rng.randint(0, 3)
                    address = Address(Area.DB, bit_byte, db=db, bit=next_bit, width=1)
                next_bit += rng.randint(1, 3)
            else:
                cursor[db] += cursor[db] % 2  # words on even offsets
                width = byte_size(dt)
                address = Address(Area.DB, cursor[db], db=db, width=width)
                next_bit = 8
            scale, offset = _scaling(rng, dt)
            name = f"t{len(tags):03d}_db{db}_{address.index}_{address.bit}_{dt.value}"
            tag = Tag(name, address, dt, WordOrder.ABCD, scale, offset)
            validate_tag(tag, "s7")
            tags.append(tag)
            raw[name] = _raw_value(rng, dt)
            cursor[db] = max(cursor[db], tag_span(tag)[1])
            if cursor[db] > DB_BYTES:
                raise AssertionError(f"layout runs past DB{db}.DBB{DB_BYTES}")
    return Layout(tuple(tags), raw)


def layouts(protocol: PlcProtocol, plcs: int, seed: int, n_tags: int) -> list[Layout]:
    make = modbus_layout if protocol is PlcProtocol.MODBUS else s7_layout
    return [make(seed, i, n_tags) for i in range(plcs)]


# -- the simulated PLCs (child process) ------------------------------------------------


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _serve_modbus(plant: list[Layout]) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType as SimType
    from pymodbus.simulator import SimData, SimDevice

    reads = [0] * len(plant)
    servers: list[ModbusTcpServer] = []

    def counter(i: int) -> Callable[..., Awaitable[None]]:
        async def on_request(*args: Any) -> None:
            if args[5] is None:  # set_values: None for reads
                reads[i] += 1

        return on_request

    for i, layout in enumerate(plant):
        hr, ir, co = [0] * HR_REGISTERS, [0] * IR_REGISTERS, [False] * COILS
        for tag in layout.tags:
            value = layout.raw[tag.name]
            at = tag.address.index
            if tag.address.area is Area.COIL:
                co[at] = bool(value)
            else:
                regs = encode_registers(value, tag.data_type, tag.word_order)
                table = hr if tag.address.area is Area.HOLDING else ir
                table[at : at + len(regs)] = regs
        device = SimDevice(
            id=UNIT_ID,
            simdata=(
                [SimData(address=0, values=co, datatype=SimType.BITS)],
                [SimData(address=0, values=[False] * 16, datatype=SimType.BITS)],
                [SimData(address=0, values=hr, datatype=SimType.REGISTERS)],
                [SimData(address=0, values=ir, datatype=SimType.REGISTERS)],
            ),
            action=counter(i),
        )
        server = ModbusTcpServer(device, address=(HOST, 0))
        await server.serve_forever(background=True)
        servers.append(server)
    ports = [cast(asyncio.Server, s.transport).sockets[0].getsockname()[1] for s in servers]
    _reply({"ports": ports})
    try:
        while (await asyncio.to_thread(sys.stdin.readline)).strip() == "count":
            _reply({"reads": reads, "cpu_s": time.process_time()})
    finally:
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]


def _serve_s7(plant: list[Layout]) -> None:
    import snap7
    from snap7.type import SrvArea

    reads = [0] * len(plant)
    servers: list[snap7.Server] = []

    def counter(i: int) -> Callable[[object], None]:
        def on_read(_event: object) -> None:
            reads[i] += 1  # one client thread per server: no race

        return on_read

    for i, layout in enumerate(plant):
        memory = {db: bytearray(DB_BYTES) for db in S7_DBS}
        for tag in layout.tags:
            data = encode_bytes(layout.raw[tag.name], tag.data_type, tag.address.bit)
            assert tag.address.db is not None
            db, at = memory[tag.address.db], tag.address.index
            if tag.data_type is DataType.BOOL:
                db[at] |= data[0]
            else:
                db[at : at + len(data)] = data
        server = snap7.Server(log=False)
        for number, area in memory.items():
            server.register_area(SrvArea.DB, number, area)
        server.read_callback = counter(i)
        server.start_to(HOST, 0)
        servers.append(server)
    ports = [s.server_socket.getsockname()[1] for s in servers if s.server_socket is not None]
    _reply({"ports": ports})
    try:
        while sys.stdin.readline().strip() == "count":
            _reply({"reads": reads, "cpu_s": time.process_time()})
    finally:
        for server in servers:
            server.stop()


def serve(spec: str, seed: int, n_tags: int) -> None:
    """Child mode: run the PLCs, print their ports, answer `count` until stdin closes."""
    protocol, plcs, _ = _parse_case(spec)
    plant = layouts(protocol, plcs, seed, n_tags)
    try:
        if protocol is PlcProtocol.MODBUS:
            asyncio.run(_serve_modbus(plant))
        else:
            _serve_s7(plant)
    except KeyboardInterrupt:
        pass


class PlantProcess:
    """The child process holding the simulated PLCs; always stopped on the way out."""

    def __init__(self, spec: str, seed: int, n_tags: int) -> None:
        self._argv = [
            sys.executable,
            __file__,
            "--serve",
            spec,
            "--seed",
            str(seed),
            "--tags",
            str(n_tags),
        ]
        self._proc: subprocess.Popen[str] | None = None
        self.ports: list[int] = []

    def __enter__(self) -> PlantProcess:
        self._proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            self.ports = list(self._ask(None)["ports"])
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop()

    def reads(self) -> tuple[list[int], float]:
        """Read requests each PLC has answered so far, and the process' CPU seconds."""
        answer = self._ask("count")
        return list(answer["reads"]), float(answer["cpu_s"])

    def _ask(self, command: str | None) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        if command is not None:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"PLC process exited (rc={proc.poll()})")
        return cast(dict[str, Any], json.loads(line))

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # EOF: the child shuts its servers down and exits
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- measurement (parent process: the client side only) --------------------------------


@dataclass
class Window:
    started: float = 0.0
    ended: float = 0.0
    cpu_s: float = 0.0


@dataclass
class PlcRun:
    """Per PLC: (finished_at, seconds) of every good poll, and the failures."""

    polls: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    first: dict[str, float | bool] | None = None


@dataclass
class Run:
    window: Window
    plcs: dict[str, PlcRun]


class BenchSink:
    """SampleSink recording poll durations; once `stopping`, cancels each poller right
    after its current poll, so every poll that started also finished (exact counts)."""

    def __init__(self, names: list[str]) -> None:
        self.runs = {name: PlcRun() for name in names}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = False

    def publish(self, sample: Sample) -> None:
        run = self.runs[sample.plc]
        if run.first is None:
            run.first = dict(sample.values)

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        if not up:
            log(f"{plc} down: {error}")

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        run = self.runs[plc]
        if error_reason is None:
            run.polls.append((time.monotonic(), seconds))
        else:
            run.errors += 1
        if self.stopping:
            self.tasks[plc].cancel()  # delivered at the poller's next await: its sleep


async def _measure(warmup_s: float, window_s: float) -> Window:
    await asyncio.sleep(warmup_s)
    window = Window(time.monotonic())
    cpu = time.process_time()
    await asyncio.sleep(window_s)
    window.cpu_s = time.process_time() - cpu
    window.ended = time.monotonic()
    return window


async def run_invops(
    settings: list[PlcSettings], staggered: bool, window_s: float, warmup_s: float
) -> Run:
    """One PlcPoller per PLC, as a service would run them; stopped after the window."""
    sink = BenchSink([s.name for s in settings])
    offsets = start_offsets(settings) if staggered else {}
    for s in settings:
        link = ModbusLink(s) if s.protocol is PlcProtocol.MODBUS else S7Link(s)
        poller = PlcPoller(link, s, sink, start_offset_s=offsets.get(s.name, 0.0))
        sink.tasks[s.name] = asyncio.create_task(poller.run(), name=s.name)
    window = await _measure(warmup_s, window_s)
    sink.stopping = True
    _, pending = await asyncio.wait(sink.tasks.values(), timeout=5)
    for task in pending:
        task.cancel()
    await asyncio.gather(*sink.tasks.values(), return_exceptions=True)
    return Run(window, sink.runs)


async def run_raw(
    settings: list[PlcSettings],
    blocks: list[tuple[ReadBlock, ...]],
    staggered: bool,
    window_s: float,
    warmup_s: float,
) -> Run:
    """The baseline: the library clients alone, the same blocks at the same cadence."""
    runs = {s.name: PlcRun() for s in settings}
    stop = asyncio.Event()
    closers: list[Callable[[], Awaitable[object]]] = []

    async def modbus_reader(s: PlcSettings, plan: tuple[ReadBlock, ...]) -> Callable[[], Any]:
        from pymodbus.client import AsyncModbusTcpClient

        client = AsyncModbusTcpClient(
            s.host, port=s.port, name=s.name, timeout=s.timeout_s + 1, retries=0,
            reconnect_delay=0,
        )  # fmt: skip
        if not await client.connect():
            raise RuntimeError(f"{s.name}: connect failed")

        async def close() -> None:
            client.close()

        closers.append(close)
        fn = {
            Area.HOLDING: client.read_holding_registers,
            Area.INPUT: client.read_input_registers,
            Area.COIL: client.read_coils,
            Area.DISCRETE: client.read_discrete_inputs,
        }
        requests = [(fn[b.area], b.start, b.count) for b in plan]

        async def poll() -> int:
            errors = 0
            for request, start, count in requests:
                rr = await request(start, count=count, device_id=s.unit_id)
                errors += rr.isError()
            return errors

        return poll

    async def s7_reader(s: PlcSettings, plan: tuple[ReadBlock, ...]) -> Callable[[], Any]:
        import snap7

        client = snap7.AsyncClient()
        await client.connect(s.host, s.rack, s.slot, tcp_port=s.port)
        closers.append(client.disconnect)
        requests = [(b.db or 0, b.start, b.count) for b in plan]

        async def poll() -> int:
            for db, start, count in requests:
                await client.db_read(db, start, count)
            return 0

        return poll

    async def loop(s: PlcSettings, poll: Callable[[], Awaitable[int]]) -> None:
        run, interval = runs[s.name], s.poll_interval_s
        next_tick = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            errors = await poll()
            finished = time.monotonic()
            if errors:
                run.errors += 1
            else:
                run.polls.append((finished, finished - started))
            next_tick += interval
            if next_tick <= finished:
                next_tick += (math.floor((finished - next_tick) / interval) + 1) * interval
            await asyncio.sleep(next_tick - time.monotonic())

    tasks = []
    try:
        for s, plan in zip(settings, blocks, strict=True):
            make = modbus_reader if s.protocol is PlcProtocol.MODBUS else s7_reader
            poll = await make(s, plan)
            tasks.append(asyncio.create_task(loop(s, poll)))
            if staggered:
                await asyncio.sleep(s.poll_interval_s / len(settings))
        window = await _measure(warmup_s, window_s)
        stop.set()  # each loop ends after its current poll and sleep
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for close in closers:
            await close()
    return Run(window, runs)


# -- one case ------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _summary(runs: list[tuple[Run, list[int]]], names: list[str]) -> dict[str, float]:
    """Rates, latency and CPU per read over the rounds of one side. With each run comes
    the requests every PLC answered during the whole run: every poll that started also
    finished, so wire reads / polls is exact."""
    rates: dict[str, list[float]] = {name: [] for name in names}
    latencies: list[float] = []
    reads: dict[str, int] = dict.fromkeys(names, 0)
    polls: dict[str, int] = dict.fromkeys(names, 0)
    window_polls: dict[str, int] = dict.fromkeys(names, 0)
    cpu_s = span_s = 0.0
    for run, wire_reads in runs:
        w = run.window
        cpu_s += w.cpu_s
        span_s += w.ended - w.started
        for name, answered in zip(names, wire_reads, strict=True):
            inside = [(at, s) for at, s in run.plcs[name].polls if w.started <= at <= w.ended]
            if len(inside) < 2:
                raise SystemExit(f"{BENCH}: {name} polled {len(inside)} times in the window")
            # polls per second from the first to the last poll inside the window: no
            # boundary effect from where the window cuts the cadence
            rates[name].append((len(inside) - 1) / (inside[-1][0] - inside[0][0]))
            latencies.extend(s for _, s in inside)
            reads[name] += answered
            polls[name] += len(run.plcs[name].polls)
            window_polls[name] += len(inside)
    per_poll = {name: reads[name] / polls[name] for name in names}
    reads_in_windows = sum(window_polls[name] * per_poll[name] for name in names)
    per_plc_rate = [min(r) for r in rates.values()]
    return {
        "rate_min": min(per_plc_rate),
        "rate_mean": sum(sum(r) / len(r) for r in rates.values()) / len(names),
        "reads_per_poll": sum(per_poll.values()) / len(names),
        "exact": float(all(p == round(p) for p in per_poll.values())),
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "pct_cpu": 100 * cpu_s / span_s,
        "cpu_per_read_us": 1e6 * cpu_s / reads_in_windows,
        "errors": sum(run.plcs[n].errors for run, _ in runs for n in names),
    }


def run_case(
    protocol: PlcProtocol, plcs: int, staggered: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """Aligned: every poller starts at once (and so polls in the same instant each cycle,
    the poller keeps an absolute cadence); staggered: starts spread over one interval."""
    spec = f"{protocol.value}:{plcs}"
    start = "staggered" if staggered else "aligned"
    plant = layouts(protocol, plcs, args.seed, args.tags)
    interval = args.interval_ms / 1000
    with PlantProcess(spec, args.seed, args.tags) as process:
        settings = [
            PlcSettings(
                name=f"{protocol.value}-{i:02d}",
                protocol=protocol,
                host=HOST,
                port=port,
                tags=layout.tags,
                unit_id=UNIT_ID,
                poll_interval_s=interval,
                timeout_s=1.0,
            )
            for i, (layout, port) in enumerate(zip(plant, process.ports, strict=True))
        ]
        names = [s.name for s in settings]
        minimum = [minimum_reads(layout.tags) for layout in plant]

        # the blocks the links plan (S7: for the 480-byte PDU the simulated CPUs negotiate)
        blocks = [
            ModbusLink(s).blocks if protocol is PlcProtocol.MODBUS else S7Link(s).blocks
            for s in settings
        ]
        window_s = args.window / args.rounds

        def measured(what: str, run: Callable[[], Run]) -> tuple[Run, list[int]]:
            reads_before, sim_cpu = process.reads()
            started = time.monotonic()
            result = run()
            reads_after, sim_cpu_after = process.reads()
            sim_pct = 100 * (sim_cpu_after - sim_cpu) / (time.monotonic() - started)
            log(f"{spec}: {what}: simulated PLCs used {sim_pct:.0f} % CPU")
            return result, [b - a for a, b in zip(reads_before, reads_after, strict=True)]

        # invops and the baseline take turns, so a neighbour's load hits both alike
        invops: list[tuple[Run, list[int]]] = []
        raw: list[tuple[Run, list[int]]] = []
        for r in range(1, args.rounds + 1):
            log(f"{spec}: round {r}/{args.rounds}: {args.warmup:g} s warm-up + {window_s:g} s each")
            invops.append(
                measured(
                    "invops pollers",
                    lambda: asyncio.run(run_invops(settings, staggered, window_s, args.warmup)),
                )
            )
            for layout, name in zip(plant, names, strict=True):
                if invops[-1][0].plcs[name].first != layout.expected():
                    raise SystemExit(f"{BENCH}: {name} read values differ from the simulated PLC")
            raw.append(
                measured(
                    "raw client baseline",
                    lambda: asyncio.run(
                        run_raw(settings, blocks, staggered, window_s, args.warmup)
                    ),
                )
            )

    ours = _summary(invops, names)
    base = _summary(raw, names)
    if ours["errors"] or base["errors"]:
        log(f"{spec}: failed polls: invops {ours['errors']}, baseline {base['errors']}")
    line: dict[str, Any] = {
        "bench": BENCH,
        "protocol": protocol.value,
        "plcs": plcs,
        "start": start,
        "tags_per_plc": args.tags,
        "interval_ms": args.interval_ms,
        "window_s": args.window,
        "rounds": args.rounds,
        "polls_per_s_per_plc_min": round(ours["rate_min"], 2),
        "polls_per_s_per_plc_mean": round(ours["rate_mean"], 2),
        "reads_per_cycle": round(ours["reads_per_poll"], 2),
        "min_reads_per_cycle": round(sum(minimum) / len(minimum), 2),
        "p50_ms": round(ours["p50_ms"], 3),
        "p99_ms": round(ours["p99_ms"], 3),
        "poll_errors": ours["errors"],
        "client_pct_cpu": round(ours["pct_cpu"], 1),
        "cpu_per_read_us": round(ours["cpu_per_read_us"], 1),
        "baseline_polls_per_s_per_plc_min": round(base["rate_min"], 2),
        "baseline_p50_ms": round(base["p50_ms"], 3),
        "baseline_p99_ms": round(base["p99_ms"], 3),
        "baseline_client_pct_cpu": round(base["pct_cpu"], 1),
        "baseline_cpu_per_read_us": round(base["cpu_per_read_us"], 1),
        "ratio": round(base["cpu_per_read_us"] / ours["cpu_per_read_us"], 3),
        "p99_over_baseline_ms": round(ours["p99_ms"] - base["p99_ms"], 3),
    }
    if not ours["exact"]:
        log(f"{spec}: reads per poll differ between polls of one PLC")
    return line


def _parse_case(text: str) -> tuple[PlcProtocol, int, bool]:
    """`modbus:50` or `s7:10`, optionally `:staggered` (or `:aligned`, the default)."""
    parts = [p.strip().lower() for p in text.split(":")]
    try:
        if len(parts) not in (2, 3) or parts[2:] not in ([], ["aligned"], ["staggered"]):
            raise ValueError(text)
        plcs = int(parts[1])
        if plcs < 1:
            raise ValueError(text)
        return PlcProtocol(parts[0]), plcs, parts[2:] == ["staggered"]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad case {text!r}: expected modbus:N or s7:N, optionally :staggered"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help="comma-separated protocol:plcs[:staggered|:aligned]; staggered (what the "
        "service does) spreads the pollers over one interval, aligned starts them all at "
        f"once; a case without the suffix is aligned (default {DEFAULT_CASES})",
    )
    parser.add_argument(
        "--window", type=float, default=10.0, help="measured seconds per case and side"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="invops and baseline take turns this many times, splitting the window",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--interval-ms", type=int, default=100, help="poll interval (ms)")
    parser.add_argument("--tags", type=int, default=100, help="tags per PLC (>= 20)")
    parser.add_argument("--seed", type=int, default=1, help="tag layout seed")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # child mode: the simulated PLCs
    args = parser.parse_args()
    if args.tags < 20:
        parser.error("--tags must be >= 20")
    if args.rounds < 1 or args.window <= 0:
        parser.error("need --rounds >= 1 and --window > 0")
    if args.serve:
        serve(args.serve, args.seed, args.tags)
        return
    try:
        cases = [_parse_case(c) for c in args.cases.split(",") if c.strip()]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    try:
        for protocol, plcs, staggered in cases:
            print(json.dumps(run_case(protocol, plcs, staggered, args)), flush=True)
    except KeyboardInterrupt:
        log("interrupted")  # the simulated PLCs were stopped on the way out
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

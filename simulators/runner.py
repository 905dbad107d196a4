"""Run the plant model and every PLC server of a plant description, under one TaskGroup.

`run_simulators` is what `invops simulate` and `invops demo` run until
cancelled; `Simulation` wraps it as an async context manager for tests and
benchmarks (`invops.plant_description` builds the description from a config):

    async with Simulation(plant, ports={"PLC-MODBUS": 0, "PLC-S7": 0}) as sim:
        sim.ports["PLC-MODBUS"], sim.faults.set("PLC-S7", refuse=True), sim.model.units

With `state_path` the plant resumes from that file and keeps its state there
(`simulators.plant_state`), so a restarted plant continues where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from plc_connectors import PlcProtocol, PlcSettings
from simulators.description import PlantDescription
from simulators.faults import Faults, SimulatorError
from simulators.modbus_server import ModbusPlcServer
from simulators.plant import PlantModel
from simulators.plant_state import keep_plant_state, load_plant_state
from simulators.s7_server import S7PlcServer

__all__ = [
    "PlcServer",
    "Simulation",
    "build_servers",
    "check_fault_targets",
    "run_simulators",
]

DEFAULT_HOST = "127.0.0.1"


class PlcServer(Protocol):
    """What the runner needs of a simulated PLC (Modbus and S7 servers implement it)."""

    name: str
    settings: PlcSettings

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def serve(self) -> None: ...

    async def stop(self) -> None: ...

    def update(self, values: Mapping[str, float | bool]) -> None: ...


def build_servers(
    settings: Sequence[PlcSettings],
    faults: Faults,
    *,
    ports: Mapping[str, int] | None = None,
    host: str = DEFAULT_HOST,
) -> list[PlcServer]:
    """One server per PLC; `ports` overrides the configured port by PLC name (0 = any free)."""
    ports = dict(ports or {})
    unknown = sorted(set(ports) - {plc.name for plc in settings})
    if unknown:
        raise SimulatorError(f"--port names unknown PLC {', '.join(map(repr, unknown))}")
    servers: list[PlcServer] = []
    for plc in settings:
        port = ports.get(plc.name)
        if plc.protocol is PlcProtocol.MODBUS:
            servers.append(ModbusPlcServer(plc, faults, host=host, port=port))
        else:
            servers.append(S7PlcServer(plc, faults, host=host, port=port))
    return servers


async def run_simulators(
    plant: PlantDescription,
    *,
    ports: dict[str, int] | None = None,
    faults: Faults | None = None,
    seed: int | None = None,
    tick_s: float = 0.1,
    ready: Callable[[dict[str, int]], None] | None = None,
    model: PlantModel | None = None,
    host: str = DEFAULT_HOST,
    state_path: Path | None = None,
) -> None:
    """Serve every PLC of `plant` from one plant model on `host` until cancelled.

    `ready` is called once every server listens, with the bound port per PLC
    name. On cancellation every server closes its listener and connections.
    With `state_path` the plant first resumes from that file (if it holds a
    usable state) and saves its state there periodically and on cancellation.
    Raises SimulatorError when a port cannot be bound or a fault names
    something the plant does not have.
    """
    if not tick_s > 0:
        raise SimulatorError(f"tick_s must be positive (got {tick_s})")
    faults = faults if faults is not None else Faults()
    model = model if model is not None else PlantModel(plant, seed=seed)
    check_fault_targets(plant, faults)
    servers = build_servers(plant.plcs, faults, ports=ports, host=host)
    if state_path is not None:
        load_plant_state(model, state_path)
    _publish(model, servers, faults)
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await server.start()
            stack.push_async_callback(server.stop)
        if ready is not None:
            ready({server.name: server.port for server in servers})
        async with asyncio.TaskGroup() as group:
            group.create_task(_drive(model, servers, faults, tick_s), name="plant")
            if state_path is not None:
                group.create_task(keep_plant_state(model, state_path), name="plant state")
            for server in servers:
                group.create_task(server.serve(), name=f"serve {server.name}")


def check_fault_targets(plant: PlantDescription, faults: Faults) -> None:
    """FaultError naming every faulted PLC or tag that the plant does not have."""
    tags = {tag.name for plc in plant.plcs for tag in plc.tags}
    totalizers = {unit.totalizer.tag.name for unit in plant.units if unit.totalizer}
    faults.check_targets((plc.name for plc in plant.plcs), tags, totalizers)


async def _drive(
    model: PlantModel, servers: Sequence[PlcServer], faults: Faults, tick_s: float
) -> None:
    """Advance the plant in real time and publish its values every `tick_s`."""
    await drive_plant(model, tick_s, lambda: _publish(model, servers, faults))


async def drive_plant(model: PlantModel, tick_s: float, publish: Callable[[], None]) -> None:
    """Advance `model` in real time, calling `publish` after each step of `tick_s`."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    next_tick = last + tick_s
    while True:
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        now = loop.time()
        model.step(now - last)
        last = now
        next_tick = max(next_tick + tick_s, now)  # no catch-up burst after a stall
        publish()


def _publish(model: PlantModel, servers: Sequence[PlcServer], faults: Faults) -> None:
    for tag, counts in faults.take_jumps().items():
        model.jump_totalizer(tag, counts)
    values = model.tag_values(faults.spike_factors())
    for server in servers:
        server.update(values)


class Simulation:
    """The simulators as an async context manager (tests, benchmarks, the demo).

    `ports` (bound ports by PLC name), `faults` and `model` are live while
    inside (`model.schedule` queues deliveries and shipments); `state_path`: see
    `run_simulators`; `scheduled_receipts`: see `PlantModel`. Startup failures (port in
    use, bad fault) raise from `async with`; a crash while running is raised
    on exit.
    """

    def __init__(
        self,
        plant: PlantDescription,
        *,
        ports: dict[str, int] | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        tick_s: float = 0.1,
        state_path: Path | None = None,
        scheduled_receipts: bool = False,
    ) -> None:
        self.plant = plant
        self.faults = faults if faults is not None else Faults()
        self.model = PlantModel(plant, seed=seed, scheduled_receipts=scheduled_receipts)
        self.ports: dict[str, int] = {}
        self._requested_ports = ports
        self._tick_s = tick_s
        self._state_path = state_path
        self._task: asyncio.Task[None] | None = None

    def endpoint(self, plc: str) -> tuple[str, int]:
        """(host, port) a client connects to for one PLC."""
        return DEFAULT_HOST, self.ports[plc]

    async def __aenter__(self) -> Simulation:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_ready(ports: dict[str, int]) -> None:
            self.ports = dict(ports)
            if not started.done():
                started.set_result(None)

        self._task = asyncio.create_task(
            run_simulators(
                self.plant,
                ports=self._requested_ports,
                faults=self.faults,
                tick_s=self._tick_s,
                ready=on_ready,
                model=self.model,
                state_path=self._state_path,
            ),
            name="simulators",
        )
        try:
            await asyncio.wait({started, self._task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._cancel()
            raise
        if not started.done():
            started.cancel()
            task, self._task = self._task, None
            task.result()  # raises what stopped it
            raise SimulatorError("simulators ended before they were ready")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._cancel()

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if task.done():
            task.result()
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves: pass it on

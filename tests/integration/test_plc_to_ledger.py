"""The whole Level-2 path: simulated plant -> PLC links and pollers -> movements in the ledger.

Real Modbus and S7 servers (the invops simulators) on ephemeral ports, real
pollers, a real SQLite ledger. Faults on the simulated PLCs must turn values
bad and must never invent a movement.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.cancel import cancel_and_wait
from inventory_core.domain.model import MovementKind, Source
from inventory_core.measurement_service import MeasurementService
from invops.config import InvopsConfig, load_config
from invops.plant_description import plant_description
from invops.plc_bridge import LedgerBridge
from invops.wiring import make_link, measured_units, quantity_tags
from plc_connectors import PlcError, PlcPoller, Quality, Sample
from simulators import Simulation
from tests.polling import eventually

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
POLL_S = 0.1
PLANT_S = 20.0  # the simulated plant opens every unit and starts fills and draws within seconds


@dataclasses.dataclass
class Plant:
    ledger: Ledger
    watch: Watch
    sim: Simulation


class Watch:
    """The pollers' sink here: remembers each PLC's newest sample and link state, and
    hands every sample to the ledger bridge."""

    def __init__(self, bridge: LedgerBridge) -> None:
        self.bridge = bridge
        self.latest: dict[str, Sample] = {}
        self.up: dict[str, bool] = {}

    def publish(self, sample: Sample) -> None:
        self.latest[sample.plc] = sample
        self.bridge.publish(sample)

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        self.up[plc] = up

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        pass


@asynccontextmanager
async def running_plant(url: str) -> AsyncIterator[Plant]:
    config: InvopsConfig = load_config(DEMO, environ={})
    async with (
        Simulation(plant_description(config), ports={"PLC-MODBUS": 0, "PLC-S7": 0}, seed=7) as sim,
        open_ledger(url, writer_id="plc-test", migrate=True) as ledger,
    ):
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        service = MeasurementService(ledger, measured_units(config))
        await service.start()
        plc_tags = {plc.name: [tag.name for tag in plc.tags] for plc in config.plc_settings()}
        bridge = LedgerBridge(service, quantity_tags(config), plc_tags=plc_tags)
        watch = Watch(bridge)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(bridge.run())]
            for settings in config.plc_settings():
                local = dataclasses.replace(
                    settings, port=sim.ports[settings.name], poll_interval_s=POLL_S, timeout_s=0.5
                )
                poller = PlcPoller(
                    make_link(local), local, watch, backoff_min_s=0.1, backoff_max_s=0.5
                )
                tasks.append(group.create_task(poller.run()))
            try:
                yield Plant(ledger, watch, sim)
            finally:
                await cancel_and_wait(tasks, give_up_s=10)


async def test_simulated_plant_activity_becomes_ledger_movements(sqlite_url: str) -> None:
    async with running_plant(sqlite_url) as plant:
        units = {"TK-101", "TK-102", "SI-201", "SI-202", "BN-301", "BN-302", "BN-303", "BN-304"}

        async def opened() -> bool:
            counts = {
                m.to_unit for m in await plant.ledger.history() if m.kind is MovementKind.COUNT
            }
            return counts >= units

        async def moved() -> bool:
            kinds = {m.kind for m in await plant.ledger.history()}
            return {MovementKind.RECEIPT, MovementKind.ISSUE} <= kinds

        await eventually(opened, "every unit opened", timeout_s=PLANT_S)  # by its first reading
        await eventually(moved, "a receipt and an issue", timeout_s=PLANT_S)  # within seconds
        movements = await plant.ledger.history()
        assert all(m.source is Source.PLC for m in movements)
        assert len({m.idempotency_key for m in movements}) == len(movements)
        assert (await plant.ledger.verify()).ok


async def test_a_refused_plc_goes_bad_and_invents_no_movement(sqlite_url: str) -> None:
    async with running_plant(sqlite_url) as plant:
        s7_units = {"SI-201", "SI-202"}

        async def silos_opened() -> bool:
            return {m.to_unit for m in await plant.ledger.history()} >= s7_units

        await eventually(silos_opened, "both silos opened", timeout_s=PLANT_S)
        plant.sim.faults.set("PLC-S7", refuse=True, drop=True)

        def s7_bad() -> bool:
            sample = plant.watch.latest.get("PLC-S7")
            return sample is not None and sample.quality in (
                Quality.BAD_COMMUNICATION,
                Quality.BAD_NO_COMMUNICATION,
            )

        # within a few poll intervals (backoff included)
        await eventually(s7_bad, "PLC-S7 values bad", timeout_s=5)
        before = [m.id for m in await plant.ledger.history() if m.unit in s7_units]
        await asyncio.sleep(1.0)  # the silos keep moving in the simulator meanwhile
        during = [m.id for m in await plant.ledger.history() if m.unit in s7_units]
        assert during == before  # communication loss never invents a movement
        assert plant.watch.up["PLC-S7"] is False

        plant.sim.faults.clear("PLC-S7")

        def s7_good() -> bool:
            sample = plant.watch.latest.get("PLC-S7")
            return sample is not None and sample.quality is Quality.GOOD

        await eventually(s7_good, "PLC-S7 values good again", timeout_s=PLANT_S)
        assert plant.watch.up["PLC-S7"] is True
        assert (await plant.ledger.verify()).ok


BAD = (Quality.BAD_COMMUNICATION, Quality.BAD_NO_COMMUNICATION)
MODBUS_UNITS = {"TK-101", "TK-102", "BN-301", "BN-302", "BN-303", "BN-304"}


def plc_quality(plant: Plant, plc: str) -> set[Quality]:
    sample = plant.watch.latest.get(plc)
    return set() if sample is None else {sample.quality}


@pytest.mark.parametrize(
    "fault",
    [{"refuse": True, "drop": True}, {"drop": True}, {"delay_s": 1.0}, {"exception": 4}],
    ids=["refuse", "drop", "delay", "exception-04"],
)
async def test_modbus_faults_turn_values_bad_then_recover_without_invented_movements(
    sqlite_url: str, fault: dict[str, object]
) -> None:
    async with running_plant(sqlite_url) as plant:

        async def opened() -> bool:
            return {m.to_unit for m in await plant.ledger.history()} >= MODBUS_UNITS

        await eventually(opened, "every Modbus unit opened", timeout_s=PLANT_S)
        plant.sim.faults.set("PLC-MODBUS", **fault)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await eventually(
            lambda: (
                plc_quality(plant, "PLC-MODBUS") <= set(BAD) and plc_quality(plant, "PLC-MODBUS")
            ),
            "PLC-MODBUS values bad",
            timeout_s=5,
        )
        # bad within two poll intervals of the first failed request (which may wait for
        # its 0.5 s timeout), plus scheduling slack
        assert loop.time() - started < 0.5 + 2 * POLL_S + 0.5
        before = {m.id for m in await plant.ledger.history() if m.unit in MODBUS_UNITS}
        await asyncio.sleep(1.0)
        during = {m.id for m in await plant.ledger.history() if m.unit in MODBUS_UNITS}
        assert during == before  # nothing booked while the values are bad
        plant.sim.faults.clear("PLC-MODBUS")
        await eventually(
            lambda: plc_quality(plant, "PLC-MODBUS") == {Quality.GOOD},
            "PLC-MODBUS values good again",
            timeout_s=PLANT_S,
        )
        assert (await plant.ledger.verify()).ok

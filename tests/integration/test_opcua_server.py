"""The OPC UA server against a real asyncua client over TCP and a real SQLite ledger.

One server for the module (asyncua's standard address space takes ~1 s to
load); tests keep to their own lots and units so that their order does not
matter: values on TK-101/TK-102/SI-201/BN-30x, method postings on TK-101/TK-103,
rejections on TK-101/TK-102/SI-201, events on SI-201, lots on SI-202, lot lists and
genealogy on BN-301/BN-303, advice events on TK-105/TK-106.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import tomllib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua

from information_model import INSTANCES_NAMESPACE, TYPE_MODEL, TYPES_NAMESPACE
from inventory_core import Ledger, open_ledger
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageUnitId,
)
from inventory_core.domain.quality import Quality
from inventory_core.plant_view import LedgerFollower, PlantView
from invops.config import InvopsConfig, parse_config
from invops.wiring import measured_units, opcua_settings
from opcua_server import InvopsOpcUaServer, OpcuaServerError, node_id_text
from tests.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

PLANT = """
[site]
enterprise = "ACME"
name = "PLANT1"
areas = ["TANKFARM", "SILOS", "WAREHOUSE"]

[opcua]
endpoint = "opc.tcp://127.0.0.1:0/invops"
allow_security_none = true

[[materials]]
id = "ETHANOL-96"
base_uom = "kg"
density_kg_per_l = 0.80
default_lot_status = "released"

[[materials]]
id = "GLYCOL"
base_uom = "kg"
density_kg_per_l = 1.11
default_lot_status = "quarantine"

[[materials]]
id = "SUGAR"
base_uom = "kg"
default_lot_status = "released"

[[plcs]]
name = "PLC-MODBUS"
protocol = "modbus"
port = 5020

[[storage_units]]
id = "TK-101"
booking = "manual"  # posted by the methods under test
area = "TANKFARM"
kind = "tank"
capacity = 50000
capacity_uom = "L"
material = "ETHANOL-96"
level = { plc = "PLC-MODBUS", address = "hr:0", data_type = "float32", unit = "mm" }
strapping = { volume_uom = "L", points = [[0, 0], [300, 1500], [6000, 50000]] }

[[storage_units]]
id = "TK-102"
booking = "manual"  # posted by the methods under test
area = "TANKFARM"
kind = "tank"
capacity = 30000
capacity_uom = "L"
material = "GLYCOL"
level = { plc = "PLC-MODBUS", address = "hr:2", data_type = "float32", unit = "mm" }
strapping = { volume_uom = "L", points = [[0, 0], [5000, 30000]] }

[[storage_units]]
id = "TK-104"
area = "TANKFARM"
kind = "tank"
capacity = 20000
capacity_uom = "L"
material = "ETHANOL-96"
level = { plc = "PLC-MODBUS", address = "hr:4", data_type = "float32", unit = "mm" }
strapping = { volume_uom = "L", points = [[0, 0], [5000, 20000]] }

[[storage_units]]
id = "TK-105"  # measured: advices matched by a posted gauge movement
area = "TANKFARM"
kind = "tank"
capacity = 20000
capacity_uom = "L"
material = "ETHANOL-96"
level = { plc = "PLC-MODBUS", address = "hr:6", data_type = "float32", unit = "mm" }
strapping = { volume_uom = "L", points = [[0, 0], [5000, 20000]] }

[[storage_units]]
id = "TK-106"  # measured, with a one-second advice window: advices that expire
area = "TANKFARM"
kind = "tank"
capacity = 20000
capacity_uom = "L"
material = "ETHANOL-96"
advice_window_s = 1
level = { plc = "PLC-MODBUS", address = "hr:8", data_type = "float32", unit = "mm" }
strapping = { volume_uom = "L", points = [[0, 0], [5000, 20000]] }

[[storage_units]]
id = "TK-103"
area = "TANKFARM"
kind = "tank"
capacity = 20000
capacity_uom = "L"
material = "ETHANOL-96"

[[storage_units]]
id = "SI-201"
booking = "manual"  # posted by the methods under test
area = "SILOS"
kind = "silo"
capacity = 80
capacity_uom = "t"
material = "SUGAR"
weight = { plc = "PLC-MODBUS", address = "hr:10", data_type = "float32", unit = "kg" }

[[storage_units]]
id = "SI-202"
area = "SILOS"
kind = "silo"
capacity = 80
capacity_uom = "t"
material = "SUGAR"

[[storage_units]]
id = "BN-301"
area = "WAREHOUSE"
kind = "bin"
capacity = 1000
capacity_uom = "kg"

[[storage_units]]
id = "BN-302"
area = "WAREHOUSE"
kind = "bin"
capacity = 1000
capacity_uom = "kg"

[[storage_units]]
id = "BN-303"
area = "WAREHOUSE"
kind = "bin"
capacity = 1000
capacity_uom = "kg"
"""

TIMEOUT_S = 5.0


class Caller:
    """The `current_user` hook: who the server believes is calling (security stand-in)."""

    def __init__(self) -> None:
        self.name, self.role = "tester", "admin"

    def __call__(self) -> tuple[str, str]:
        return self.name, self.role


@dataclass
class Plant:
    config: InvopsConfig
    ledger: Ledger
    server: InvopsOpcUaServer
    view: PlantView
    client: Client
    caller: Caller
    db: Path
    ns: int  # instances namespace, as the client sees it
    tns: int  # types namespace

    def node(self, *path: str) -> Awaitable[Node]:
        """Objects/<path...>, every segment in the instances namespace."""
        return self.client.nodes.objects.get_child([f"{self.ns}:{p}" for p in path])

    async def unit_variable(self, unit: str, name: str) -> Node:
        area = {"TK": "TANKFARM", "SI": "SILOS", "BN": "WAREHOUSE"}[unit[:2]]
        return await (await self.node("Inventory", "PLANT1", area, unit)).get_child(
            f"{self.tns}:{name}"
        )

    async def ledger_node(self) -> Node:
        return await self.node("Inventory", "Ledger")

    async def call(self, method: str, *arguments: Any) -> Any:
        """The high-level client call: returns the output, raises on a Bad StatusCode."""
        ledger = await self.ledger_node()
        return await ledger.call_method(f"{self.tns}:{method}", *arguments)

    async def call_raw(self, method: str, *arguments: ua.Variant) -> ua.CallMethodResult:
        """The whole CallMethodResult (InputArgumentResults, diagnostics)."""
        ledger = await self.ledger_node()
        method_node = await ledger.get_child(f"{self.tns}:{method}")
        request = ua.CallMethodRequest(
            ObjectId=ledger.nodeid, MethodId=method_node.nodeid, InputArguments=list(arguments)
        )
        (result,) = await self.client.uaclient.call([request])
        return result

    async def movement_count(self) -> int:
        return len(await self.ledger.history())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plant]:
    config = parse_config(tomllib.loads(PLANT))
    db = tmp_path_factory.mktemp("opcua") / "ledger.db"
    caller = Caller()
    async with open_ledger(
        f"sqlite+aiosqlite:///{db}", writer_id="opcua-t", migrate=True
    ) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        view = PlantView(
            config.storage_unit_definitions(), config.material_definitions(), measured_units(config)
        )
        follower = LedgerFollower(ledger, view, debounce_s=0.05)
        await follower.start()
        books = asyncio.create_task(follower.run())
        server = InvopsOpcUaServer(
            opcua_settings(config), ledger, view=view, current_user=caller, refresh_debounce_s=0.05
        )
        try:
            async with server, Client(server.endpoint_url, timeout=TIMEOUT_S) as client:
                ns = await client.get_namespace_index(INSTANCES_NAMESPACE)
                tns = await client.get_namespace_index(TYPES_NAMESPACE)
                yield Plant(config, ledger, server, view, client, caller, db, ns, tns)
        finally:
            books.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await books


@pytest.fixture(autouse=True)
def _admin_caller(plant: Plant) -> None:
    plant.caller.name, plant.caller.role = "tester", "admin"


def double(value: float) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Double)


def text(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


# --- address space ---------------------------------------------------------------------


async def test_spec_browse_paths_resolve_to_typed_objects(plant: Plant) -> None:
    type_ids = TYPE_MODEL.node_ids()
    expected = {
        ("Inventory", "PLANT1", "TANKFARM", "TK-101"): "TankType",
        ("Inventory", "PLANT1", "SILOS", "SI-201"): "SiloType",
        ("Inventory", "PLANT1", "WAREHOUSE", "BN-301"): "BinType",
        ("Inventory", "Materials", "ETHANOL-96"): "MaterialDefinitionType",
        ("Inventory", "Ledger"): "LedgerType",
    }
    for path, type_name in expected.items():
        node = await plant.node(*path)
        assert await node.read_type_definition() == ua.NodeId(type_ids[type_name], plant.tns)
        assert await node.read_browse_name() == ua.QualifiedName(path[-1], plant.ns)
        # NodeIds spell the browse path: stable across restarts.
        assert node.nodeid == ua.NodeId(".".join(path), plant.ns)
    tank = await plant.node("Inventory", "PLANT1", "TANKFARM", "TK-101")
    names = {(await c.read_browse_name()).Name for c in await tank.get_children()}
    assert names == {v.browse_name for v in TYPE_MODEL.all_variables("TankType")}
    silo = await plant.node("Inventory", "PLANT1", "SILOS", "SI-201")
    assert "Level" not in {(await c.read_browse_name()).Name for c in await silo.get_children()}
    level = await (await plant.unit_variable("TK-101", "EquipmentLevel")).read_value()
    assert level == 9
    ledger = await plant.ledger_node()
    assert await ledger.read_event_notifier() == {ua.EventNotifier.SubscribeToEvents}
    for method in TYPE_MODEL.object_type("LedgerType").methods:
        method_node = await ledger.get_child(f"{plant.tns}:{method.browse_name}")
        inputs = await (await method_node.get_child("0:InputArguments")).read_value()
        assert [(a.Name, a.DataType) for a in inputs] == [
            (a.name, ua.NodeId(getattr(ua.ObjectIds, a.data_type))) for a in method.inputs
        ]


async def test_endpoint_reports_the_bound_port_and_application_uri(plant: Plant) -> None:
    url = plant.server.endpoint_url
    assert url.startswith("opc.tcp://127.0.0.1:") and url.endswith("/invops")
    assert not url.startswith("opc.tcp://127.0.0.1:0/")
    endpoints = await plant.client.get_endpoints()
    assert {e.EndpointUrl for e in endpoints} == {url}
    assert {e.Server.ApplicationUri for e in endpoints} == {"urn:invops:server"}
    assert {e.SecurityPolicyUri for e in endpoints} == {
        "http://opcfoundation.org/UA/SecurityPolicy#None"
    }
    assert plant.server.application_uri == "urn:invops:server"


async def test_node_id_text_escapes_separators() -> None:
    assert node_id_text("Inventory", "Lots", "A.B") == "Inventory.Lots.A%2EB"
    assert node_id_text("Inventory", "Lots", "A%2EB") == "Inventory.Lots.A%252EB"


async def test_analog_items_carry_unece_units_and_ranges(plant: Plant) -> None:
    async def units_and_range(unit: str, name: str) -> tuple[int, str, ua.Range | None]:
        variable = await plant.unit_variable(unit, name)
        assert await variable.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
        units = await (await variable.get_child("0:EngineeringUnits")).read_value()
        assert units.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
        eu_range = await (await variable.get_child("0:EURange")).read_value()
        return units.UnitId, units.DisplayName.Text, eu_range

    assert await units_and_range("TK-101", "Level") == (5066068, "mm", ua.Range(0.0, 6000.0))
    assert await units_and_range("TK-101", "Volume") == (5002322, "l", ua.Range(0.0, 50000.0))
    assert await units_and_range("TK-101", "Mass") == (4933453, "kg", ua.Range(0.0, 40000.0))
    assert await units_and_range("TK-101", "FillPercent") == (20529, "%", ua.Range(0.0, 100.0))
    assert await units_and_range("TK-101", "BookQuantity") == (
        4933453,
        "kg",
        ua.Range(0.0, 40000.0),
    )
    assert await units_and_range("TK-101", "Discrepancy") == (
        4933453,
        "kg",
        ua.Range(-40000.0, 40000.0),
    )
    assert await units_and_range("TK-101", "Capacity") == (5002322, "l", ua.Range(0.0, 50000.0))
    assert await units_and_range("SI-201", "Mass") == (4933453, "kg", ua.Range(0.0, 80000.0))
    assert await units_and_range("SI-201", "Capacity") == (5525061, "t", ua.Range(0.0, 80.0))
    # 80 t of sugar has no volume without a density: the range is left null, not invented.
    assert await units_and_range("SI-201", "Volume") == (5002322, "l", None)


# --- values ----------------------------------------------------------------------------


async def test_values_carry_the_plc_time_and_an_honest_status(plant: Plant) -> None:
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    level = await plant.unit_variable("TK-102", "Level")
    volume = await plant.unit_variable("TK-102", "Volume")
    untouched = await (await plant.unit_variable("BN-302", "Mass")).read_data_value(False)
    assert untouched.StatusCode == ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
    assert untouched.Value.Value is None

    plant.view.apply_reading("TK-102", 2500.0, Quality.GOOD, t0)
    await plant.server.flush()
    good = await level.read_data_value()
    assert (good.Value.Value, good.StatusCode.is_good(), good.SourceTimestamp) == (2500.0, True, t0)
    assert good.ServerTimestamp is not None and good.ServerTimestamp > t0
    shown_volume = (await volume.read_data_value()).Value.Value
    assert shown_volume == plant.view.state("TK-102").measured.volume_l  # type: ignore[union-attr]

    t1 = t0 + timedelta(seconds=1)
    plant.view.apply_reading("TK-102", 2500.0, Quality.UNCERTAIN_LAST_USABLE, t1)  # held
    await plant.server.flush()
    for variable, value in ((level, 2500.0), (volume, shown_volume)):  # last value, stale
        stale = await variable.read_data_value(False)
        assert stale.StatusCode == ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)
        assert (stale.Value.Value, stale.SourceTimestamp) == (value, t1)

    for quality, code in (
        (Quality.BAD_COMMUNICATION, ua.StatusCodes.BadCommunicationError),
        (Quality.BAD_NO_COMMUNICATION, ua.StatusCodes.BadNoCommunication),
    ):
        plant.view.apply_reading("TK-102", None, quality, t1)
        await plant.server.flush()
        bad = await level.read_data_value(False)
        assert bad.StatusCode == ua.StatusCode(code)
        assert bad.Value.Value is None

    plant.view.apply_reading("TK-102", 2600.0, Quality.GOOD, t1)
    await plant.server.flush()
    assert (await level.read_data_value()).Value.Value == 2600.0


async def test_discrepancy_is_measured_minus_book(plant: Plant) -> None:
    now = datetime.now(UTC)
    plant.view.apply_reading("SI-201", 412.5, Quality.GOOD, now)  # a silo with no stock booked
    await plant.server.flush()
    book = await (await plant.unit_variable("SI-201", "BookQuantity")).read_value()
    discrepancy = await (await plant.unit_variable("SI-201", "Discrepancy")).read_data_value()
    assert book == 0.0
    assert discrepancy.Value.Value == 412.5 and discrepancy.SourceTimestamp == now


async def test_subscribers_see_data_changes(plant: Plant) -> None:
    changes: asyncio.Queue[tuple[float | None, ua.DataValue]] = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
            changes.put_nowait((value, data.monitored_item.Value))

    fill = await plant.unit_variable("SI-201", "FillPercent")
    subscription = await plant.client.create_subscription(50, Handler())
    try:
        await subscription.subscribe_data_change(fill)
        await asyncio.wait_for(changes.get(), TIMEOUT_S)  # the initial value
        for percent in (41.0, 42.5):
            capacity = plant.view.state("SI-201").info.capacity  # type: ignore[union-attr]
            plant.view.apply_reading("SI-201", capacity * percent / 100, Quality.GOOD,
                                     datetime.now(UTC))  # fmt: skip
            value, data_value = await asyncio.wait_for(changes.get(), TIMEOUT_S)
            assert value == pytest.approx(percent) and data_value.StatusCode.is_good()
    finally:
        await subscription.delete()


async def test_client_writes_are_refused_not_writable(plant: Plant) -> None:
    plant.view.apply_reading("TK-101", 1000.0, Quality.GOOD, datetime.now(UTC))
    await plant.server.flush()
    targets = [
        await plant.unit_variable("TK-101", "Level"),
        await plant.unit_variable("TK-101", "BookQuantity"),
        await plant.unit_variable("TK-101", "LotID"),
        await (await plant.unit_variable("TK-101", "Level")).get_child("0:EURange"),
    ]
    for node in targets:
        with pytest.raises(ua.uaerrors.BadNotWritable):
            await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
    with pytest.raises(ua.uaerrors.BadNotWritable):
        await targets[0].write_attribute(
            ua.AttributeIds.DisplayName, ua.DataValue(ua.Variant(ua.LocalizedText("x")))
        )
    assert await targets[0].read_value() == 1000.0


# --- methods ---------------------------------------------------------------------------


async def test_a_receipt_into_a_measured_tank_returns_an_advice_and_posts_nothing(
    plant: Plant,
) -> None:
    plant.caller.name = "olivia"
    before = await plant.movement_count()
    advised = await plant.call(
        "PostReceipt", "ETHANOL-96", "ETH-A1", 1000.0, "L", "TK-104", "dn-1", "delivery"
    )
    assert isinstance(advised, str) and advised.startswith("advice:")
    assert await plant.movement_count() == before
    advice = await plant.ledger.advice(advised)
    assert (advice.unit, advice.lot, advice.expected) == ("TK-104", "ETH-A1", Decimal(800))
    assert (advice.user, advice.source) == ("olivia", Source.OPCUA)
    again = await plant.call(
        "PostReceipt", "ETHANOL-96", "ETH-A1", 1000.0, "L", "TK-104", "dn-1", "delivery"
    )
    assert again == advised


async def test_every_ledger_method_posts_and_returns_the_movement_id(plant: Plant) -> None:
    plant.caller.name = "olivia"
    receipt = await plant.call(
        "PostReceipt", "ETHANOL-96", "ETH-M1", 1000.0, "L", "TK-101", "po-1", "delivery"
    )
    issue = await plant.call("PostIssue", "ETHANOL-96", "ETH-M1", 80.0, "kg", "TK-101", "", "")
    transfer = await plant.call(
        "PostTransfer", "ETHANOL-96", "ETH-M1", 100.0, "kg", "TK-101", "TK-103", "", "rebalance"
    )
    adjustment = await plant.call(
        "PostAdjustment", "TK-103", "ETH-M1", -0.5, "kg", "EVAPORATION", "", "summer"
    )
    count = await plant.call("RecordCount", "TK-101", "ETH-M1", 615.0, "kg", "count-1")
    scrap = await plant.call("PostScrap", "TK-101", "ETH-M1", 5.0, "kg", "SPILL", "", "hose")
    status = await plant.call("SetLotStatus", "ETH-M1", "hold", "lab check")
    reversal = await plant.call("ReverseMovement", adjustment, "wrong tank")

    expected = [
        (receipt, MovementKind.RECEIPT, Decimal("800"), None, "TK-101"),
        (issue, MovementKind.ISSUE, Decimal("80"), "TK-101", None),
        (transfer, MovementKind.TRANSFER, Decimal("100"), "TK-101", "TK-103"),
        (adjustment, MovementKind.ADJUSTMENT, Decimal("-0.5"), None, "TK-103"),
        (count, MovementKind.COUNT, Decimal("-5"), None, "TK-101"),  # 615 counted, 620 booked
        (scrap, MovementKind.SCRAP, Decimal("5"), "TK-101", None),
        (status, MovementKind.LOT_STATUS, Decimal("0"), None, None),
        (reversal, MovementKind.REVERSAL, Decimal("-0.5"), "TK-103", None),
    ]
    for movement_id, kind, quantity, from_unit, to_unit in expected:
        assert isinstance(movement_id, str)
        movement = await plant.ledger.movement(movement_id)
        assert (movement.kind, movement.quantity) == (kind, quantity)
        assert (movement.from_unit, movement.to_unit) == (from_unit, to_unit)
        assert (movement.user, movement.source) == ("olivia", Source.OPCUA)
    adjusted = await plant.ledger.movement(adjustment)
    assert adjusted.reason == "EVAPORATION: summer"
    scrapped = await plant.ledger.movement(scrap)
    assert (scrapped.reason, scrapped.details["reason_code"]) == ("SPILL: hose", "SPILL")
    assert {b.lot: b.quantity for b in await plant.ledger.balances(unit="TK-101")} == {
        LotId("ETH-M1"): Decimal(610)
    }
    assert (await plant.ledger.lots("ETH-M1"))[0].status == "hold"
    # The same idempotency key returns the first movement's id, posting nothing new.
    before = await plant.movement_count()
    again = await plant.call(
        "PostReceipt", "ETHANOL-96", "ETH-M1", 1000.0, "L", "TK-101", "po-1", "delivery"
    )
    assert again == receipt and await plant.movement_count() == before


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stock(plant: Plant) -> None:
    """Stock the rejection cases need: released ethanol, quarantined glycol."""
    await plant.call("PostReceipt", "ETHANOL-96", "ETH-R1", 500.0, "kg", "TK-101", "", "")
    await plant.call("PostReceipt", "GLYCOL", "GLY-Q1", 500.0, "kg", "TK-102", "", "")
    await plant.call("PostReceipt", "ETHANOL-96", "ETH-R2", 1.0, "kg", "TK-101", "key-r2", "")


ETH = ("ETHANOL-96", "ETH-R1")
BAD_CALLS: list[tuple[str, str, list[ua.Variant], str | None]] = [
    # (case, method, arguments, name of the argument at fault)
    ("unknown material", "PostReceipt",
     [text("NOPE"), text("X-1"), double(1), text("kg"), text("TK-101"), text(""), text("")],
     "MaterialDefinitionID"),
    ("empty material", "PostReceipt",
     [text(""), text("X-1"), double(1), text("kg"), text("TK-101"), text(""), text("")],
     "MaterialDefinitionID"),
    ("zero quantity", "PostReceipt",
     [text(ETH[0]), text("X-1"), double(0), text("kg"), text("TK-101"), text(""), text("")],
     "Quantity"),
    ("negative quantity", "PostReceipt",
     [text(ETH[0]), text("X-1"), double(-5), text("kg"), text("TK-101"), text(""), text("")],
     "Quantity"),
    ("NaN quantity", "PostReceipt",
     [text(ETH[0]), text("X-1"), double(math.nan), text("kg"), text("TK-101"), text(""), text("")],
     "Quantity"),
    ("unknown unit of measure", "PostReceipt",
     [text(ETH[0]), text("X-1"), double(1), text("furlong"), text("TK-101"), text(""), text("")],
     "UnitOfMeasure"),
    ("unknown storage unit", "PostReceipt",
     [text(ETH[0]), text("X-1"), double(1), text("kg"), text("TK-999"), text(""), text("")],
     "ToUnit"),
    ("idempotency key reused with another payload", "PostReceipt",
     [text(ETH[0]), text("ETH-R2"), double(2), text("kg"), text("TK-101"), text("key-r2"),
      text("")],
     "IdempotencyKey"),
    ("quantity as a string", "PostReceipt",
     [text(ETH[0]), text("X-1"), text("1"), text("kg"), text("TK-101"), text(""), text("")],
     "Quantity"),
    ("issue beyond stock", "PostIssue",
     [text(ETH[0]), text(ETH[1]), double(10**6), text("kg"), text("TK-101"), text(""), text("")],
     "Quantity"),
    ("issue of a lot in quarantine", "PostIssue",
     [text("GLYCOL"), text("GLY-Q1"), double(1), text("kg"), text("TK-102"), text(""), text("")],
     "LotID"),
    ("issue of an unknown lot", "PostIssue",
     [text(ETH[0]), text("NO-LOT"), double(1), text("kg"), text("TK-101"), text(""), text("")],
     "LotID"),
    ("transfer to the same unit", "PostTransfer",
     [text(ETH[0]), text(ETH[1]), double(1), text("kg"), text("TK-101"), text("TK-101"),
      text(""), text("")],
     "ToUnit"),
    ("adjustment without reason code", "PostAdjustment",
     [text("TK-101"), text(ETH[1]), double(-1), text("kg"), text(""), text(""), text("")],
     "ReasonCode"),
    ("adjustment of zero", "PostAdjustment",
     [text("TK-101"), text(ETH[1]), double(0), text("kg"), text("SPILL"), text(""), text("")],
     "DeltaQuantity"),
    ("negative count", "RecordCount",
     [text("TK-101"), text(ETH[1]), double(-1), text("kg"), text("")],
     "CountedQuantity"),
    ("count in an unknown unit", "RecordCount",
     [text("TK-999"), text("NEW-LOT"), double(1), text("kg"), text("")],
     "Unit"),
    ("unknown lot status", "SetLotStatus",
     [text(ETH[1]), text("sold"), text("why")], "Status"),
    ("status of an unknown lot", "SetLotStatus",
     [text("NO-LOT"), text("hold"), text("why")], "LotID"),
    ("status change without reason", "SetLotStatus",
     [text(ETH[1]), text("hold"), text("")], "Reason"),
    ("reversal of an unknown movement", "ReverseMovement",
     [text("00000000-0000-0000-0000-000000000000"), text("why")], "MovementID"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "arguments", "at_fault"),
    [pytest.param(m, a, f, id=case) for case, m, a, f in BAD_CALLS],
)
async def test_bad_arguments_are_rejected_and_post_nothing(
    plant: Plant, stock: None, method: str, arguments: list[ua.Variant], at_fault: str | None
) -> None:
    before = await plant.movement_count()
    result = await plant.call_raw(method, *arguments)
    assert result.StatusCode == ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
    assert result.OutputArguments == []
    names = [a.name for a in TYPE_MODEL.object_type("LedgerType").method(method).inputs]
    bad = [names[i] for i, code in enumerate(result.InputArgumentResults) if not code.is_good()]
    assert bad == ([] if at_fault is None else [at_fault])
    carriers = [i for i, d in enumerate(result.InputArgumentDiagnosticInfos) if d.AdditionalInfo]
    # the reason travels with the refusal, once: on the argument at fault (else the first)
    assert carriers == [0 if at_fault is None else names.index(at_fault)]
    assert await plant.movement_count() == before


async def test_client_sees_bad_invalid_argument_with_the_reason(plant: Plant, stock: None) -> None:
    with pytest.raises(ua.uaerrors.BadInvalidArgument):
        await plant.call("PostIssue", "GLYCOL", "GLY-Q1", 1.0, "kg", "TK-102", "", "")
    result = await plant.call_raw(
        "PostIssue", text("GLYCOL"), text("GLY-Q1"), double(1), text("kg"), text("TK-102"),
        text(""), text(""),
    )  # fmt: skip
    assert "GLY-Q1" in result.InputArgumentDiagnosticInfos[1].AdditionalInfo
    assert "quarantine" in result.InputArgumentDiagnosticInfos[1].AdditionalInfo


async def test_wrong_argument_count_is_refused(plant: Plant) -> None:
    before = await plant.movement_count()
    missing = await plant.call_raw("SetLotStatus", text("ETH-R1"), text("hold"))
    assert missing.StatusCode == ua.StatusCode(ua.StatusCodes.BadArgumentsMissing)
    extra = await plant.call_raw("ReverseMovement", text("a"), text("b"), text("c"))
    assert extra.StatusCode == ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
    assert await plant.movement_count() == before


def _audit_rows(db: Path, action: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            'SELECT "user", object_id, reason FROM audit WHERE action = ? ORDER BY id', (action,)
        ).fetchall()


async def test_a_role_too_low_is_denied_audited_and_posts_nothing(plant: Plant) -> None:
    before = await plant.movement_count()
    plant.caller.name, plant.caller.role = "vera", "viewer"
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        await plant.call("PostReceipt", "SUGAR", "SUG-V1", 1.0, "kg", "SI-201", "", "")
    plant.caller.name, plant.caller.role = "otto", "operator"
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        await plant.call("SetLotStatus", "ETH-R1", "hold", "not mine to change")
    plant.caller.role = "superuser"  # unknown roles grant nothing
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        await plant.call("ReverseMovement", "x", "y")
    assert await plant.movement_count() == before
    denied = _audit_rows(plant.db, "denied")
    assert [(user, method) for user, method, _ in denied[-3:]] == [
        ("vera", "PostReceipt"),
        ("otto", "SetLotStatus"),
        ("otto", "ReverseMovement"),
    ]
    # An operator may post receipts, an engineer may change lot status.
    plant.caller.role = "operator"
    await plant.call("PostReceipt", "SUGAR", "SUG-O1", 1.0, "kg", "SI-201", "", "")
    plant.caller.name, plant.caller.role = "erin", "engineer"
    await plant.call("SetLotStatus", "SUG-O1", "hold", "sampling")


# --- events and lots -------------------------------------------------------------------


class EventInbox:
    """Subscription handler collecting events; `next_for(movement_id)` waits for one."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._arrived = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.events.append(event)
        self._arrived.set()

    async def next_for(self, movement_id: str) -> Any:
        async def find() -> Any:
            while True:
                for event in self.events:
                    if getattr(event, "MovementId", None) == movement_id:
                        return event
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(find(), TIMEOUT_S)


async def test_movement_events_reach_ledger_and_server_subscribers(plant: Plant) -> None:
    event_type = await plant.client.nodes.base_event_type.get_child(
        f"{plant.tns}:InventoryMovementEventType"
    )
    on_ledger, on_server = EventInbox(), EventInbox()
    ledger_subscription = await plant.client.create_subscription(50, on_ledger)
    server_subscription = await plant.client.create_subscription(50, on_server)
    try:
        await ledger_subscription.subscribe_events(await plant.ledger_node(), event_type)
        await server_subscription.subscribe_events(plant.client.nodes.server, event_type)

        plant.caller.name = "mia"
        by_method = await plant.call("PostReceipt", "SUGAR", "SUG-E1", 2.5, "t", "SI-201", "", "")
        event = await on_ledger.next_for(by_method)
        assert (event.Kind, event.MaterialDefinitionID, event.LotID) == (
            "receipt",
            "SUGAR",
            "SUG-E1",
        )
        assert (event.FromUnit, event.ToUnit, event.Quantity, event.UnitOfMeasure) == (
            "", "SI-201", 2500.0, "kg",
        )  # fmt: skip
        assert (event.User, event.Source) == ("mia", "opcua")
        assert event.EventType == event_type.nodeid
        assert event.SourceName == "SI-201" and event.Severity == 100
        assert "receipt" in event.Message.Text
        server_event = await on_server.next_for(by_method)
        assert server_event.EventId == event.EventId  # one event, two notifiers

        direct = await plant.ledger.post(
            PostingRequest(
                kind=MovementKind.ISSUE,
                material=MaterialId("SUGAR"),
                lot=LotId("SUG-E1"),
                quantity=Decimal("500"),
                uom="kg",
                from_unit=StorageUnitId("SI-201"),
                user="cli-user",
                source=Source.CLI,
            )
        )
        event = await on_ledger.next_for(direct.movement_id)
        assert (event.Kind, event.FromUnit, event.Quantity) == ("issue", "SI-201", 500.0)
        assert (event.User, event.Source) == ("cli-user", "cli")
        await on_server.next_for(direct.movement_id)
    finally:
        await ledger_subscription.delete()
        await server_subscription.delete()


async def test_lot_nodes_appear_and_follow_the_ledger(plant: Plant) -> None:
    movement = await plant.call("PostReceipt", "SUGAR", "SUG-L1", 1200.0, "kg", "SI-202", "", "")
    assert movement

    async def lot_exists() -> bool:
        try:
            await plant.node("Inventory", "Lots", "SUG-L1")
        except ua.uaerrors.BadNoMatch:
            return False
        return True

    await eventually(lot_exists, "the lot node SUG-L1", timeout_s=TIMEOUT_S)
    lot = await plant.node("Inventory", "Lots", "SUG-L1")
    assert await lot.read_type_definition() == ua.NodeId(
        TYPE_MODEL.node_ids()["MaterialLotType"], plant.tns
    )

    async def lot_value(name: str) -> Any:
        return await (await lot.get_child(f"{plant.tns}:{name}")).read_value()

    assert await lot_value("MaterialDefinitionID") == "SUGAR"
    assert await lot_value("Status") == "released"
    assert await lot_value("Quantity") == 1200.0
    assert await lot_value("QuantityUnitOfMeasure") == "kg"
    assert await lot_value("StorageLocation") == "SI-202"

    async def unit_value(name: str) -> Any:
        return await (await plant.unit_variable("SI-202", name)).read_value()

    async def unit_shows(name: str, value: Any) -> bool:
        return bool(await unit_value(name) == value)

    await eventually(
        lambda: unit_shows("BookQuantity", 1200.0), "SI-202 BookQuantity 1200", timeout_s=TIMEOUT_S
    )
    assert await unit_value("LotID") == "SUG-L1"
    assert await unit_value("Status") == "released"
    assert await unit_value("MaterialDefinitionID") == "SUGAR"

    await plant.call("SetLotStatus", "SUG-L1", "hold", "QA sample")

    async def lot_on_hold() -> bool:
        return bool(await lot_value("Status") == "hold")

    await eventually(lot_on_hold, "the lot's Status hold", timeout_s=TIMEOUT_S)
    await eventually(
        lambda: unit_shows("Status", "hold"), "SI-202 Status hold", timeout_s=TIMEOUT_S
    )

    await plant.call("PostTransfer", "SUGAR", "SUG-L1", 200.0, "kg", "SI-202", "SI-201", "", "")

    async def moved() -> bool:
        return bool(await lot_value("StorageLocation") == "SI-201,SI-202")

    await eventually(moved, "the lot in SI-201 and SI-202", timeout_s=TIMEOUT_S)
    assert await lot_value("Quantity") == 1200.0
    await eventually(
        lambda: unit_shows("BookQuantity", 1000.0), "SI-202 BookQuantity 1000", timeout_s=TIMEOUT_S
    )


async def test_postings_of_another_process_show_within_seconds(plant: Plant) -> None:
    """The CLI or another instance writes the same ledger: the mirror follows its new
    movements every second, long before the full re-read (every 60 s)."""
    url = f"sqlite+aiosqlite:///{plant.db}"
    async with open_ledger(url, writer_id="another-process") as other:
        await other.post(
            PostingRequest(
                MovementKind.RECEIPT, MaterialId("SUGAR"), LotId("EXT-L1"), Decimal(300), "kg",
                to_unit=StorageUnitId("SI-201"), user="cli",
            )
        )  # fmt: skip

    async def shows(unit: str, name: str, value: Any) -> bool:
        return bool(await (await plant.unit_variable(unit, name)).read_value() == value)

    await eventually(  # the unit's current lot
        lambda: shows("SI-201", "LotID", "EXT-L1"), "SI-201 LotID EXT-L1", timeout_s=TIMEOUT_S
    )

    async def lot_quantity() -> object:  # the lot node: the mirror's own loop, as quick
        lot = await plant.node("Inventory", "Lots", "EXT-L1")
        return await (await lot.get_child(f"{plant.tns}:Quantity")).read_value()

    assert await eventually(
        lot_quantity, "the lot node EXT-L1", timeout_s=TIMEOUT_S,
        ignoring=(ua.uaerrors.BadNoMatch,),
    ) == 300.0  # fmt: skip


# --- start-up ----------------------------------------------------------------------------


async def test_security_none_needs_the_config_to_allow_it(plant: Plant) -> None:
    strict = plant.config.model_copy(
        update={"opcua": plant.config.opcua.model_copy(update={"allow_security_none": False})}
    )
    server = InvopsOpcUaServer(opcua_settings(strict), plant.ledger)
    with pytest.raises(OpcuaServerError, match="allow_security_none"):
        await server.start()
    forced = InvopsOpcUaServer(
        opcua_settings(strict), plant.ledger, security_policies=[ua.SecurityPolicyType.NoSecurity]
    )
    with pytest.raises(OpcuaServerError, match="allow_security_none"):
        await forced.start()


def strings(*values: str) -> ua.Variant:
    return ua.Variant(list(values), ua.VariantType.String, is_array=True)


def doubles(*values: float) -> ua.Variant:
    return ua.Variant(list(values), ua.VariantType.Double, is_array=True)


async def test_post_production_draws_consumed_lots_and_links_their_quantities(
    plant: Plant,
) -> None:
    plant.caller.name = "mes"
    await plant.call("PostReceipt", "ETHANOL-96", "ETH-IN1", 500.0, "kg", "TK-101", "", "in")
    await plant.call("PostReceipt", "ETHANOL-96", "ETH-IN2", 100.0, "kg", "TK-103", "", "in")
    produced = await plant.call(
        "PostProduction", "ETHANOL-96", "ETH-OUT1", 250.0, "kg", "TK-103",
        strings("ETH-IN1", "ETH-IN2"), doubles(200.0, 50.0), strings("TK-101", "TK-103"),
        "batch-7", "batch 7",
    )  # fmt: skip
    movement = await plant.ledger.movement(produced)
    assert (movement.kind, movement.lot, movement.to_unit) == (
        MovementKind.PRODUCTION,
        "ETH-OUT1",
        "TK-103",
    )
    balances = {(b.unit, b.lot): b.quantity for b in await plant.ledger.balances()}
    assert balances[("TK-101", "ETH-IN1")] == Decimal(300)  # drawn in the same posting
    assert balances[("TK-103", "ETH-IN2")] == Decimal(50)
    links = await plant.ledger.trace("ETH-OUT1", forward=False)
    assert {(link.parent, link.quantity) for link in links} == {
        ("ETH-IN1", Decimal(200)),
        ("ETH-IN2", Decimal(50)),
    }
    again = await plant.call(
        "PostProduction", "ETHANOL-96", "ETH-OUT1", 250.0, "kg", "TK-103",
        strings("ETH-IN1", "ETH-IN2"), doubles(200.0, 50.0), strings("TK-101", "TK-103"),
        "batch-7", "batch 7",
    )  # fmt: skip
    assert again == produced
    genealogy_only = await plant.call(
        "PostProduction", "ETHANOL-96", "ETH-OUT2", 10.0, "kg", "TK-103",
        strings("ETH-OUT1"), doubles(10.0), strings(""), "", "",
    )  # fmt: skip
    assert (await plant.ledger.movement(genealogy_only)).lot == "ETH-OUT2"


@pytest.mark.parametrize(
    ("arrays", "at_fault"),
    [
        ((strings("ETH-IN1"), doubles(1.0, 2.0), strings("TK-101")), "ConsumedQuantities"),
        ((strings("ETH-IN1"), doubles(-1.0), strings("TK-101")), "ConsumedQuantities"),
        ((strings("NO-SUCH-LOT"), doubles(1.0), strings("TK-101")), "ConsumedLots"),
        ((strings(""), doubles(1.0), strings("TK-101")), "ConsumedLots"),
        ((strings("ETH-IN1"), doubles(99999.0), strings("TK-101")), "ConsumedQuantities"),
        ((text("ETH-IN1"), doubles(1.0), strings("TK-101")), "ConsumedLots"),  # a scalar
        ((strings("ETH-IN1"), strings("1"), strings("TK-101")), "ConsumedQuantities"),
    ],
)
async def test_bad_post_production_arrays_are_refused_and_post_nothing(
    plant: Plant, arrays: tuple[ua.Variant, ua.Variant, ua.Variant], at_fault: str | None
) -> None:
    await plant.call("PostReceipt", "ETHANOL-96", "ETH-IN1", 1.0, "kg", "TK-101", "in-1b", "in")
    before = await plant.movement_count()
    result = await plant.call_raw(
        "PostProduction", text("ETHANOL-96"), text("ETH-BAD"), double(1), text("kg"),
        text("TK-103"), *arrays, text(""), text(""),
    )  # fmt: skip
    assert result.StatusCode == ua.StatusCode(ua.StatusCodes.BadInvalidArgument), result
    names = [a.name for a in TYPE_MODEL.object_type("LedgerType").method("PostProduction").inputs]
    bad = [names[i] for i, code in enumerate(result.InputArgumentResults) if not code.is_good()]
    assert bad == ([] if at_fault is None else [at_fault])
    assert await plant.movement_count() == before


async def test_post_production_declares_its_array_arguments(plant: Plant) -> None:
    ledger = await plant.ledger_node()
    method = await ledger.get_child(f"{plant.tns}:PostProduction")
    inputs = await (await method.get_child("0:InputArguments")).read_value()
    ranks = {argument.Name: argument.ValueRank for argument in inputs}
    assert {name for name, rank in ranks.items() if rank == 1} == {
        "ConsumedLots",
        "ConsumedQuantities",
        "ConsumedUnits",
    }
    assert {rank for name, rank in ranks.items() if not name.startswith("Consumed")} == {-1}


async def test_a_draw_with_an_empty_lot_id_takes_the_lots_the_unit_picks(plant: Plant) -> None:
    plant.caller.name = "olivia"
    await plant.call("PostReceipt", "SUGAR", "SUG-F1", 100.0, "kg", "BN-302", "", "first")
    await plant.call("PostReceipt", "SUGAR", "SUG-F2", 100.0, "kg", "BN-302", "", "second")
    issued = await plant.call("PostIssue", "SUGAR", "", 150.0, "kg", "BN-302", "", "")
    scrapped = await plant.call("PostScrap", "BN-302", "", 10.0, "kg", "SPILL", "", "")
    first = await plant.ledger.movement(issued)
    assert first.kind is MovementKind.ISSUE and first.from_unit == "BN-302"
    assert (await plant.ledger.movement(scrapped)).kind is MovementKind.SCRAP
    left = {b.lot: b.quantity for b in await plant.ledger.balances(unit="BN-302") if b.quantity}
    assert sum(left.values()) == Decimal(40)  # 200 in, 150 issued, 10 scrapped
    with pytest.raises(ua.uaerrors.BadInvalidArgument):  # a receipt must name its lot
        await plant.call("PostReceipt", "SUGAR", "", 1.0, "kg", "BN-302", "", "")


async def _eventually_reads(node: Node, expected: Any, what: str) -> None:
    async def shows() -> bool:
        return bool(await node.read_value() == expected)

    await eventually(shows, what, timeout_s=TIMEOUT_S)


async def test_units_list_their_lots_and_lots_their_units_parents_and_children(
    plant: Plant,
) -> None:
    await plant.call("PostReceipt", "SUGAR", "SUG-P1", 100.0, "kg", "BN-301", "", "")
    await plant.call("PostReceipt", "SUGAR", "SUG-P2", 50.0, "kg", "BN-301", "", "")
    lot_ids = await plant.unit_variable("BN-301", "LotIDs")
    quantities = await plant.unit_variable("BN-301", "LotQuantities")
    assert (await lot_ids.read_value_rank(), await quantities.read_value_rank()) == (1, 1)
    await _eventually_reads(lot_ids, ["SUG-P1", "SUG-P2"], "BN-301 lists both lots")
    assert await quantities.read_value() == [100.0, 50.0]

    await plant.call(
        "PostProduction", "SUGAR", "SUG-MIX1", 140.0, "kg", "BN-303",
        strings("SUG-P1", "SUG-P2"), doubles(90.0, 50.0), strings("BN-301", "BN-301"), "", "",
    )  # fmt: skip
    await _eventually_reads(lot_ids, ["SUG-P1"], "BN-301 without the used-up SUG-P2")
    assert await quantities.read_value() == [10.0]
    await _eventually_reads(
        await plant.unit_variable("BN-303", "LotIDs"), ["SUG-MIX1"], "BN-303 lists SUG-MIX1"
    )
    assert await (await plant.unit_variable("BN-303", "LotQuantities")).read_value() == [140.0]

    async def lot_value(lot: str, name: str) -> Any:
        node = await plant.node("Inventory", "Lots", lot)
        return await (await node.get_child(f"{plant.tns}:{name}")).read_value()

    async def parents_shown() -> bool:
        try:
            return bool(await lot_value("SUG-P2", "ChildLotIDs") == ["SUG-MIX1"])
        except ua.uaerrors.BadNoMatch:
            return False

    await eventually(parents_shown, "SUG-P2 names its child SUG-MIX1", timeout_s=TIMEOUT_S)
    assert await lot_value("SUG-MIX1", "ParentLotIDs") == ["SUG-P1", "SUG-P2"]
    assert await lot_value("SUG-MIX1", "ParentQuantities") == [90.0, 50.0]
    assert await lot_value("SUG-MIX1", "ChildLotIDs") == []
    assert await lot_value("SUG-MIX1", "StorageUnits") == ["BN-303"]
    assert await lot_value("SUG-MIX1", "StorageUnitQuantities") == [140.0]
    assert await lot_value("SUG-P1", "ChildLotIDs") == ["SUG-MIX1"]
    assert await lot_value("SUG-P1", "ChildQuantities") == [90.0]
    assert await lot_value("SUG-P1", "StorageUnits") == ["BN-301"]
    assert await lot_value("SUG-P1", "StorageUnitQuantities") == [10.0]
    assert await lot_value("SUG-P2", "StorageUnits") == []  # used up: held nowhere
    assert await lot_value("SUG-P1", "ParentLotIDs") == []


class AdviceInbox(EventInbox):
    async def next_advice(self, advice_id: str, state: str) -> Any:
        async def find() -> Any:
            while True:
                for event in self.events:
                    if (event.AdviceId, event.State) == (advice_id, state):
                        return event
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(find(), TIMEOUT_S)


def _gauge_receipt(unit: str, kg: str, key: str) -> PostingRequest:
    """A settled rise of a measured unit, as the measurement service posts it."""
    return PostingRequest(
        MovementKind.RECEIPT, MaterialId("ETHANOL-96"), None, Decimal(kg), "kg",
        to_unit=StorageUnitId(unit), idempotency_key=key, user="plc", source=Source.PLC,
        reason="measured change", details={"derived_from": "plc", "settled": True},
    )  # fmt: skip


async def test_advices_raise_events_when_recorded_matched_and_expired(plant: Plant) -> None:
    event_type = await plant.client.nodes.base_event_type.get_child(f"{plant.tns}:AdviceEventType")
    on_ledger, on_server = AdviceInbox(), AdviceInbox()
    ledger_subscription = await plant.client.create_subscription(50, on_ledger)
    server_subscription = await plant.client.create_subscription(50, on_server)
    open_advices = await (await plant.ledger_node()).get_child(f"{plant.tns}:OpenAdvices")
    try:
        await ledger_subscription.subscribe_events(await plant.ledger_node(), event_type)
        await server_subscription.subscribe_events(plant.client.nodes.server, event_type)
        plant.caller.name = "nora"
        advised = await plant.call(
            "PostReceipt", "ETHANOL-96", "ETH-V1", 1000.0, "L", "TK-105", "", "truck"
        )
        advice_id = advised.removeprefix("advice:")
        recorded = await on_ledger.next_advice(advice_id, "open")
        assert (recorded.Unit, recorded.LotID, recorded.AdvisedQuantity) == (
            "TK-105", "ETH-V1", 800.0,
        )  # fmt: skip
        assert (recorded.Kind, recorded.User, recorded.UnitOfMeasure) == ("receipt", "nora", "kg")
        assert recorded.SourceName == "TK-105"
        assert advice_id in await open_advices.read_value()

        await plant.ledger.post(_gauge_receipt("TK-105", "780", "plc:tk105:1"))
        matched = await on_ledger.next_advice(advice_id, "matched")
        assert (matched.BookedQuantity, matched.Variance, matched.VariancePercent) == (
            780.0, -20.0, -2.5,
        )  # fmt: skip
        assert "variance -20" in matched.Message.Text
        assert (await on_server.next_advice(advice_id, "matched")).EventId == matched.EventId
        await _eventually_reads_without(open_advices, advice_id)

        late = await plant.call(
            "PostReceipt", "ETHANOL-96", "ETH-X1", 100.0, "kg", "TK-106", "", "never came"
        )
        late_id = late.removeprefix("advice:")
        await on_ledger.next_advice(late_id, "open")
        await asyncio.sleep(1.1)  # past TK-106's one-second advice window
        assert [a.id for a in await plant.ledger.expire_advices()] == [late_id]
        expired = await on_ledger.next_advice(late_id, "expired")
        assert (expired.BookedQuantity, expired.Variance, expired.Severity) == (0.0, 0.0, 300)
        await _eventually_reads_without(open_advices, late_id)
    finally:
        await ledger_subscription.delete()
        await server_subscription.delete()


async def _eventually_reads_without(node: Node, item: str) -> None:
    async def gone() -> bool:
        return item not in await node.read_value()

    await eventually(gone, f"{item} gone from {node}", timeout_s=TIMEOUT_S)

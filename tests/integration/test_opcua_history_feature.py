"""The service's value history: plant view changes -> HistoryFeature -> ledger database ->
OPC UA HistoryRead, through a real InvopsOpcUaServer and asyncua client."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua

from information_model import INSTANCES_NAMESPACE, TYPES_NAMESPACE
from inventory_core import open_history, open_ledger
from inventory_core.domain.quality import Quality
from inventory_core.plant_view import Book, PlantView
from invops.config import parse_config
from invops.wiring import measured_units, opcua_settings
from opcua_server import InvopsOpcUaServer
from opcua_server.features import HistoryFeature
from tests.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="function")

PLANT = """
[site]
enterprise = "ACME"
name = "PLANT1"
areas = ["SILOS"]

[opcua]
endpoint = "opc.tcp://127.0.0.1:0/invops"
allow_security_none = true

[[materials]]
id = "SUGAR"
base_uom = "kg"
default_lot_status = "released"

[[plcs]]
name = "PLC-MODBUS"
protocol = "modbus"
port = 5020

[[storage_units]]
id = "SI-201"
area = "SILOS"
kind = "silo"
capacity = 80
capacity_uom = "t"
material = "SUGAR"
weight = { plc = "PLC-MODBUS", address = "hr:0", data_type = "float32", unit = "kg" }
"""


async def test_measured_and_book_values_reach_history_read(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(PLANT))
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    async with open_ledger(url, writer_id="history-t", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        view = PlantView(
            config.storage_unit_definitions(), config.material_definitions(), measured_units(config)
        )
        async with open_history(url) as store:
            history = HistoryFeature(store, view)
            server = InvopsOpcUaServer(
                opcua_settings(config), ledger, view=view, features=[history], freeze_gc=False
            )
            async with server, Client(server.endpoint_url) as client:
                for seconds, kg in ((0, 1000.0), (5, 1500.0), (10, 2000.0)):
                    view.apply_reading("SI-201", kg, Quality.GOOD, t0 + timedelta(seconds=seconds))
                down = t0 + timedelta(seconds=15)
                view.apply_reading("SI-201", None, Quality.BAD_NO_COMMUNICATION, down)
                view.apply_book("SI-201", Book(quantity=1900.0, material_id="SUGAR"))
                ns = await client.get_namespace_index(INSTANCES_NAMESPACE)
                tns = await client.get_namespace_index(TYPES_NAMESPACE)
                silo = await client.nodes.objects.get_child(
                    [f"{ns}:Inventory", f"{ns}:PLANT1", f"{ns}:SILOS", f"{ns}:SI-201"]
                )
                mass = await silo.get_child(f"{tns}:Mass")
                book = await silo.get_child(f"{tns}:BookQuantity")
                end = datetime.now(UTC) + timedelta(minutes=1)

                async def stored(node: ua.Node, count: int) -> list[ua.DataValue] | None:
                    values = await node.read_raw_history(t0 - timedelta(seconds=1), end)
                    return values if len(values) >= count else None

                masses = await eventually(lambda: stored(mass, 5), "the start and 4 Mass points")
                books = await eventually(lambda: stored(book, 1), "a BookQuantity point")
    points = {v.SourceTimestamp: v for v in masses}
    readings = [(v.Value.Value, v.SourceTimestamp) for v in masses if v.StatusCode.is_good()]
    assert readings == [
        (1000.0, t0),
        (1500.0, t0 + timedelta(seconds=5)),
        (2000.0, t0 + timedelta(seconds=10)),
    ]
    assert points[down].StatusCode == ua.StatusCode(ua.StatusCodes.BadNoCommunication)
    assert points[down].Value.Value is None
    assert books[-1].Value.Value == 1900.0

"""Another asyncua release installed (the patches not applied): invops' address space and
level alarms still build and serve on asyncua's own code, and the invops OPC UA server
refuses to start (the version policy of `opcua_server.asyncua_patches`)."""

from __future__ import annotations

import asyncio
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Client, Node, Server, ua
from asyncua.server.address_space import NodeManagementService

from inventory_core import open_ledger
from inventory_core.domain.level_alarm import LevelAlarm, LevelLimits
from invops.config import load_config, parse_config
from invops.wiring import opcua_settings
from opcua_server import InvopsOpcUaServer, asyncua_patches, build_address_space
from opcua_server.alarms import AlarmPublisher
from opcua_server.asyncua_patches import nodes
from tests.asyncua_versions import other_asyncua_release

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
DEADLINE_S = 5.0
PLANT = """
[site]
enterprise = "ACME"
name = "PLANT1"
areas = ["TANKFARM"]

[opcua]
endpoint = "opc.tcp://127.0.0.1:0/invops"
allow_security_none = true

[[materials]]
id = "ETHANOL-96"
base_uom = "kg"
density_kg_per_l = 0.80
default_lot_status = "released"

[[storage_units]]
id = "TK-103"
area = "TANKFARM"
kind = "tank"
capacity = 20000
capacity_uom = "L"
material = "ETHANOL-96"
"""


class Changes:
    """Subscription handler: every data change notification's value, in order."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[object] = asyncio.Queue()

    def datachange_notification(self, node: Node, value: object, data: object) -> None:
        self.values.put_nowait(value)

    async def next(self) -> object:
        async with asyncio.timeout(DEADLINE_S):
            return await self.values.get()


async def test_the_address_space_and_alarms_serve_on_asyncuas_own_code() -> None:
    with other_asyncua_release():
        assert NodeManagementService._add_node is nodes.ORIGINALS["_add_node"]
        server = Server()
        server.iserver.disabled_clock = True
        await server.init()
        config = load_config(DEMO, environ={})
        settings = opcua_settings(config)
        space = await build_address_space(server, settings, settings.materials)
        unit = space.units["TK-101"]
        publisher = AlarmPublisher(
            server,
            server.get_node(unit.object_id),
            LevelAlarm("TK-101", LevelLimits(95.0, 90.0, 10.0, 5.0), hysteresis_pct=1.0),
            input_node=server.get_node(unit.variables["FillPercent"]),
        )
        await publisher.init()
        fill = unit.variables["FillPercent"]
        attributes = server.iserver.aspace.get(fill).attributes
        other = server.iserver.aspace.get(space.units["TK-102"].variables["FillPercent"])
        assert not isinstance(attributes[ua.AttributeIds.AccessLevel], nodes._SharedAttributeValue)
        assert (
            attributes[ua.AttributeIds.AccessLevel]
            is not other.attributes[ua.AttributeIds.AccessLevel]
        )
        server.set_endpoint("opc.tcp://127.0.0.1:0")
        await server.start()
        try:
            port = server.bserver.port  # type: ignore[union-attr]
            async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
                changes = Changes()
                subscription = await client.create_subscription(20, changes)
                await subscription.subscribe_data_change(client.get_node(fill))
                await changes.next()  # the value at subscription time
                await server.write_attribute_value(
                    fill, ua.DataValue(ua.Variant(97.0, ua.VariantType.Double))
                )
                assert await changes.next() == 97.0
                transition = await publisher.update(97.0, True, datetime.now(UTC))
                assert transition is not None and transition.active
        finally:
            await server.stop()


async def test_the_invops_server_refuses_to_start(sqlite_url: str) -> None:
    config = parse_config(tomllib.loads(PLANT))
    async with open_ledger(sqlite_url, writer_id="unpatched-t", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        server = InvopsOpcUaServer(opcua_settings(config), ledger, freeze_gc=False)
        with other_asyncua_release("2.2.0"):
            refused = pytest.raises(asyncua_patches.UnpatchedAsyncua, match=r"asyncua 2\.2\.0 ")
            with refused:
                await server.start()
            assert not asyncua_patches.applied()
        await server.stop()  # nothing to stop, nothing listening
        assert server.endpoint_url == "opc.tcp://127.0.0.1:0/invops"  # no port was bound

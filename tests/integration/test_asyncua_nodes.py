"""Shared-attribute node storage: the same address space as asyncua builds, copy-on-write."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from asyncua import Client, Node, Server, ua
from asyncua.server.address_space import AddressSpace, NodeManagementService

from inventory_core.domain.level_alarm import LevelAlarm, LevelLimits
from invops.config import load_config
from opcua_server.address_space import build_address_space
from opcua_server.alarms import AlarmPublisher
from opcua_server.asyncua_patches import nodes as asyncua_nodes

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
PATCHED = tuple(asyncua_nodes.ORIGINALS)


@asynccontextmanager
async def plant_server(*, shared: bool) -> AsyncIterator[Server]:
    """The demo plant's address space plus one level alarm, built with asyncua's own
    attribute code (`shared=False`) or with the shared storage."""
    saved = {name: getattr(NodeManagementService, name) for name in PATCHED}
    if shared:
        asyncua_nodes.apply()
    else:
        for name in PATCHED:
            setattr(NodeManagementService, name, asyncua_nodes.ORIGINALS[name])
    try:
        server = Server()
        server.iserver.disabled_clock = True
        await server.init()
        config = load_config(DEMO, environ={})
        space = await build_address_space(server, config, config.material_definitions())
        unit = space.units["TK-101"]
        publisher = AlarmPublisher(
            server,
            server.get_node(unit.object_id),
            LevelAlarm("TK-101", LevelLimits(95.0, 90.0, 10.0, 5.0), hysteresis_pct=1.0),
            input_node=server.get_node(unit.variables["FillPercent"]),
        )
        await publisher.init()
    finally:
        for name, method in saved.items():
            setattr(NodeManagementService, name, method)
    yield server


def _nodes(server: Server) -> dict[ua.NodeId, object]:
    return server.iserver.aspace._nodes  # type: ignore[no-any-return]


def _attribute(value: object) -> tuple[object, ...]:
    """What a client can read of an attribute; clock readings (server start time, build
    date, an alarm's last event time) are taken when each server is built, so only
    their type counts."""
    dv = value.value  # type: ignore[attr-defined]
    if dv is None:
        return (None,)
    return (
        _timeless(dv.Value),
        dv.StatusCode,
        dv.SourceTimestamp is None,
        dv.ServerTimestamp is None,
    )


def _timeless(value: object) -> object:
    if isinstance(value, datetime):
        return datetime
    if isinstance(value, ua.Variant):
        return (value.VariantType, value.is_array, _timeless(value.Value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(_timeless(getattr(value, f.name)) for f in dataclasses.fields(value))
    return value


async def test_shared_storage_builds_the_same_nodes_as_asyncua() -> None:
    async with plant_server(shared=False) as plain, plant_server(shared=True) as shared:
        ours, theirs = _nodes(shared), _nodes(plain)
        assert len(ours) == len(theirs) > 6000
        differences = []
        for node_id, expected in theirs.items():
            got = ours[node_id]
            want_attrs = expected.attributes  # type: ignore[attr-defined]
            got_attrs = got.attributes  # type: ignore[attr-defined]
            if list(got_attrs) != list(want_attrs):
                differences.append((node_id, "attribute ids", list(got_attrs)))
            for attr, value in want_attrs.items():
                if _attribute(got_attrs[attr]) != _attribute(value):
                    differences.append((node_id, attr, _attribute(got_attrs[attr])))
            if got.references != expected.references:  # type: ignore[attr-defined]
                differences.append((node_id, "references", None))
        assert differences == []


async def test_constant_attributes_are_shared_between_nodes() -> None:
    async with plant_server(shared=True) as server:
        space = server.iserver.aspace
        level_101 = _level(server, "TK-101")
        level_102 = _level(server, "TK-102")
        first = space.get(level_101).attributes
        second = space.get(level_102).attributes
        assert first[ua.AttributeIds.AccessLevel] is second[ua.AttributeIds.AccessLevel]
        assert first[ua.AttributeIds.DisplayName] is second[ua.AttributeIds.DisplayName]
        assert first[ua.AttributeIds.Value] is not second[ua.AttributeIds.Value]
        assert first[ua.AttributeIds.NodeId] is not second[ua.AttributeIds.NodeId]


async def test_changing_a_shared_attribute_changes_that_node_only() -> None:
    async with plant_server(shared=True) as server:
        one, other = (
            server.get_node(_level(server, "TK-101")),
            server.get_node(_level(server, "TK-102")),
        )
        await one.set_writable(True)
        assert await one.get_access_level() != await other.get_access_level()
        await one.write_attribute(
            ua.AttributeIds.DisplayName, ua.DataValue(ua.Variant(ua.LocalizedText("Renamed")))
        )
        assert (await one.read_display_name()).Text == "Renamed"
        assert (await other.read_display_name()).Text == "Level"
        space: AddressSpace = server.iserver.aspace
        status, handle = space.add_datachange_callback(
            other.nodeid, ua.AttributeIds.Description, lambda *_: None
        )
        assert status.is_good()
        callbacks = space.get(one.nodeid).attributes[ua.AttributeIds.Description]
        assert handle not in callbacks.datachange_callbacks
        space.delete_datachange_callback(handle)


async def test_a_client_browses_and_monitors_shared_attributes() -> None:
    async with plant_server(shared=True) as server:
        server.set_endpoint("opc.tcp://127.0.0.1:0")
        await server.start()
        try:
            port = server.bserver.port  # type: ignore[union-attr]
            async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
                level: Node = client.get_node(_level(server, "TK-101"))
                assert (await level.read_display_name()).Text == "Level"
                assert await level.read_attribute(ua.AttributeIds.AccessLevel) is not None
                subscription = await client.create_subscription(50, None)
                handle = await subscription.subscribe_data_change(
                    level, attr=ua.AttributeIds.DisplayName
                )
                await subscription.unsubscribe(handle)
                await subscription.delete()
        finally:
            await server.stop()


def _level(server: Server, unit: str) -> ua.NodeId:
    for node_id in _nodes(server):
        if isinstance(node_id.Identifier, str) and node_id.Identifier.endswith(f"{unit}.Level"):
            return node_id
    pytest.fail(f"no Level node for {unit}")

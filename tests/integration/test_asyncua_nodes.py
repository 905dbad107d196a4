"""Shared-attribute node storage: the same address space as asyncua builds, copy-on-write."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AddressSpace, NodeManagementService
from asyncua.ua.status_codes import StatusCodes

from inventory_core.domain.level_alarm import LevelAlarm, LevelLimits
from invops.config import load_config
from invops.wiring import opcua_settings
from opcua_server.address_space import build_address_space
from opcua_server.alarms import AlarmPublisher
from opcua_server.asyncua_patches import nodes as asyncua_nodes

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
PATCHED = tuple(asyncua_nodes.ORIGINALS)
NOTIFICATION_S = 5.0


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


class Changes:
    """Subscription handler: every data change notification's value, in order."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[object] = asyncio.Queue()

    def datachange_notification(self, node: Node, value: object, data: object) -> None:
        self.values.put_nowait(value)

    async def next(self) -> object:
        """The next notification's value; fails the test if none comes in time."""
        try:
            async with asyncio.timeout(NOTIFICATION_S):
                return await self.values.get()
        except TimeoutError:
            pytest.fail(f"no data change notification within {NOTIFICATION_S} s")


async def test_a_client_browses_and_monitors_shared_attributes() -> None:
    """A client monitoring a shared attribute (DisplayName) is notified when that node's
    attribute changes, and not when a node that shared it changes."""
    async with plant_server(shared=True) as server:
        server.set_endpoint("opc.tcp://127.0.0.1:0")
        await server.start()
        try:
            port = server.bserver.port  # type: ignore[union-attr]
            async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
                level: Node = client.get_node(_level(server, "TK-101"))
                assert (await level.read_display_name()).Text == "Level"
                assert await level.read_attribute(ua.AttributeIds.AccessLevel) is not None
                changes = Changes()
                subscription = await client.create_subscription(20, changes)
                await subscription.subscribe_data_change(level, attr=ua.AttributeIds.DisplayName)
                first = await changes.next()  # the value at subscription time
                assert isinstance(first, ua.LocalizedText) and first.Text == "Level"
                await server.write_attribute_value(  # the other tank's, shared at build
                    _level(server, "TK-102"),
                    ua.DataValue(ua.Variant(ua.LocalizedText("Other"))),
                    ua.AttributeIds.DisplayName,
                )
                await server.write_attribute_value(
                    level.nodeid,
                    ua.DataValue(ua.Variant(ua.LocalizedText("Renamed"))),
                    ua.AttributeIds.DisplayName,
                )
                renamed = await changes.next()
                assert isinstance(renamed, ua.LocalizedText) and renamed.Text == "Renamed"
                assert changes.values.empty()  # no notification for TK-102's change
                await subscription.delete()
        finally:
            await server.stop()


# --- two servers in one process ------------------------------------------------------


def _held(server: Server) -> tuple[set[int], set[int]]:
    """The ids of every AttributeValue and ReferenceDescription the server's nodes hold."""
    values: set[int] = set()
    references: set[int] = set()
    for node in _nodes(server).values():
        values.update(id(v) for v in node.attributes.values())  # type: ignore[attr-defined]
        references.update(id(r) for r in node.references)  # type: ignore[attr-defined]
    return values, references


async def test_two_servers_in_one_process_share_nothing() -> None:
    async with plant_server(shared=True) as one, plant_server(shared=True) as other:
        one_values, one_references = _held(one)
        other_values, other_references = _held(other)
        assert len(one_values) < sum(len(n.attributes) for n in _nodes(one).values())  # type: ignore[attr-defined]
        assert one_values.isdisjoint(other_values)
        assert one_references.isdisjoint(other_references)
        caches = asyncua_nodes.caches_of(one.iserver.aspace)
        assert caches is not asyncua_nodes.caches_of(other.iserver.aspace)
        assert caches.interned and caches.references
        spaces = [weakref.ref(one.iserver.aspace), weakref.ref(other.iserver.aspace)]
    del one, other, caches
    gc.collect()
    assert [space() for space in spaces] == [None, None]  # the caches keep no space alive


# --- the copied `_add_node` against upstream's, request by request ----------------------

ADMIN = User(role=UserRole.Admin)
ns0 = ua.NodeId  # ns0 numeric ids: ns0(ua.ObjectIds.Organizes)


def _id(name: str) -> ua.NodeId:
    return ua.NodeId(name, 2)


def _item(
    node_id: ua.NodeId,
    name: str,
    parent: ua.NodeId,
    *,
    reference: int = ua.ObjectIds.HasComponent,
    type_definition: ua.NodeId | None = None,
    node_class: ua.NodeClass = ua.NodeClass.Object,
    value: ua.Variant | None = None,
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id
    item.BrowseName = ua.QualifiedName(name, node_id.NamespaceIndex)
    item.ParentNodeId = parent
    item.ReferenceTypeId = ns0(reference)
    item.TypeDefinition = type_definition or ua.NodeId()
    item.NodeClass = node_class
    if node_class == ua.NodeClass.Variable:
        attributes: Any = ua.VariableAttributes()
        attributes.Value = value or ua.Variant(0.0, ua.VariantType.Double)
        attributes.DataType = ns0(ua.ObjectIds.Double)
        attributes.ValueRank = -1
        attributes.AccessLevel = attributes.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    elif node_class == ua.NodeClass.ObjectType:
        attributes = ua.ObjectTypeAttributes()
    else:
        attributes = ua.ObjectAttributes()
    attributes.DisplayName = ua.LocalizedText(name)
    attributes.Description = ua.LocalizedText(f"the {name}")
    item.NodeAttributes = attributes
    return item


_OBJECTS = ns0(ua.ObjectIds.ObjectsFolder)
_BASE_TYPE = ns0(ua.ObjectIds.BaseObjectType)
_TANK = _id("Tank")
# (request, user, check, expected status): a small address space built up, then every
# refusal branch of `_add_node`, the order of its checks, and the success paths around
# them (generated NodeIds, a duplicated component name is allowed, a sibling that makes
# the same reference descriptions, a root without parent when not checked).
_REQUESTS: list[tuple[Callable[[], ua.AddNodesItem], User, bool, int]] = [
    (
        lambda: _item(
            _BASE_TYPE, "BaseObjectType", ua.NodeId(), node_class=ua.NodeClass.ObjectType
        ),
        ADMIN,
        False,
        StatusCodes.Good,
    ),
    (
        lambda: _item(_OBJECTS, "Objects", ua.NodeId(), type_definition=_BASE_TYPE),
        ADMIN,
        False,
        StatusCodes.Good,
    ),
    (
        lambda: _item(
            _TANK, "Tank", _OBJECTS, reference=ua.ObjectIds.Organizes, type_definition=_BASE_TYPE
        ),
        ADMIN,
        True,
        StatusCodes.Good,
    ),
    (
        lambda: _item(_id("Tank.Level"), "Level", _TANK, node_class=ua.NodeClass.Variable),
        ADMIN,
        True,
        StatusCodes.Good,
    ),
    (
        lambda: _item(
            _id("Tank.Capacity"),
            "Capacity",
            _TANK,
            reference=ua.ObjectIds.HasProperty,
            node_class=ua.NodeClass.Variable,
            value=ua.Variant(50000.0, ua.VariantType.Double),
        ),
        ADMIN,
        True,
        StatusCodes.Good,
    ),
    (
        lambda: _item(
            _id("Tank2"),
            "Tank2",
            _OBJECTS,
            reference=ua.ObjectIds.Organizes,
            type_definition=_BASE_TYPE,
        ),
        ADMIN,
        True,
        StatusCodes.Good,
    ),
    (
        lambda: _item(ua.NodeId(0, 2), "Generated", _OBJECTS, type_definition=_BASE_TYPE),
        ADMIN,
        True,
        StatusCodes.Good,
    ),
    (lambda: _item(ua.NodeId(0, 2), "Generated2", _TANK), ADMIN, True, StatusCodes.Good),
    # a second component named "Level" (with another NodeId): only properties are checked
    (
        lambda: _item(_id("Tank.Level2"), "Level", _TANK, node_class=ua.NodeClass.Variable),
        ADMIN,
        True,
        StatusCodes.Good,
    ),
    # refusals
    (
        lambda: _item(_id("Intruder"), "Intruder", _OBJECTS),
        User(role=UserRole.User),
        True,
        StatusCodes.BadUserAccessDenied,
    ),
    (
        lambda: _item(ua.NodeId(0, 2), "Anon", _OBJECTS),
        User(role=UserRole.Anonymous),
        True,
        StatusCodes.BadUserAccessDenied,
    ),
    (lambda: _item(_TANK, "Tank", _OBJECTS), ADMIN, True, StatusCodes.BadNodeIdExists),
    (lambda: _item(_TANK, "Tank", _id("Nowhere")), ADMIN, True, StatusCodes.BadNodeIdExists),
    (
        lambda: _item(_id("Orphan"), "Orphan", ua.NodeId()),
        ADMIN,
        True,
        StatusCodes.BadParentNodeIdInvalid,
    ),
    (
        lambda: _item(_id("Lost"), "Lost", _id("Nowhere")),
        ADMIN,
        True,
        StatusCodes.BadParentNodeIdInvalid,
    ),
    (
        lambda: _item(_id("Lost2"), "Lost2", _id("Nowhere")),
        ADMIN,
        False,
        StatusCodes.BadParentNodeIdInvalid,
    ),
    (
        lambda: _item(_id("Tank.Capacity2"), "Capacity", _TANK, node_class=ua.NodeClass.Variable),
        ADMIN,
        True,
        StatusCodes.BadBrowseNameDuplicated,
    ),
    (
        lambda: _item(_id("Tank.Capacity3"), "Capacity", _TANK, type_definition=_id("NoSuchType")),
        ADMIN,
        True,
        StatusCodes.BadBrowseNameDuplicated,
    ),
    (
        lambda: _item(_id("Untyped"), "Untyped", _OBJECTS, type_definition=_id("NoSuchType")),
        ADMIN,
        True,
        StatusCodes.BadTypeDefinitionInvalid,
    ),
    (
        lambda: _item(ua.NodeId(0, 2), "Untyped2", _TANK, type_definition=_id("NoSuchType")),
        ADMIN,
        True,
        StatusCodes.BadTypeDefinitionInvalid,
    ),
    # and the space still takes nodes after the refusals
    (lambda: _item(ua.NodeId(0, 2), "After", _TANK), ADMIN, True, StatusCodes.Good),
]


def _run_requests(*, patched: bool) -> tuple[list[tuple[int, ua.NodeId]], list[object]]:
    """Every request through a new address space's NodeManagementService, with asyncua's
    own node code (`patched=False`) or the copied one: the results, and the space after
    each request (attributes as a client reads them, references)."""
    saved = {name: getattr(NodeManagementService, name) for name in PATCHED}
    if patched:
        asyncua_nodes.apply()
    else:
        for name in PATCHED:
            setattr(NodeManagementService, name, asyncua_nodes.ORIGINALS[name])
    try:
        space = AddressSpace()
        service = NodeManagementService(space)
        results: list[tuple[int, ua.NodeId]] = []
        states: list[object] = []
        for make, user, check, _ in _REQUESTS:
            result = service._add_node(make(), user, check=check)
            results.append((result.StatusCode.value, result.AddedNodeId))
            states.append(_space_state(space))
        return results, states
    finally:
        for name, method in saved.items():
            setattr(NodeManagementService, name, method)


def _space_state(space: AddressSpace) -> object:
    return [
        (
            node_id,
            [(attr, _attribute(value)) for attr, value in node.attributes.items()],
            list(node.references),
        )
        for node_id, node in space._nodes.items()
    ]


def test_the_copied_add_node_answers_every_request_as_asyncuas_own() -> None:
    theirs, their_states = _run_requests(patched=False)
    ours, our_states = _run_requests(patched=True)
    assert [status for status, _ in theirs] == [expected for *_, expected in _REQUESTS]
    assert ours == theirs
    for step, (got, want) in enumerate(zip(our_states, their_states, strict=True)):
        assert got == want, f"the address space differs after request {step}"


def _level(server: Server, unit: str) -> ua.NodeId:
    for node_id in _nodes(server):
        if isinstance(node_id.Identifier, str) and node_id.Identifier.endswith(f"{unit}.Level"):
            return node_id
    pytest.fail(f"no Level node for {unit}")

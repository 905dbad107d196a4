"""The OPC UA value deadband: noise costs no write, real changes and status changes go out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asyncua import Server, ua
from asyncua.ua.status_codes import StatusCodes

from opcua_server.address_space import NodeWriter


@pytest.fixture
async def level() -> AsyncIterator[tuple[NodeWriter, Server, ua.NodeId]]:
    server = Server()
    server.iserver.disabled_clock = True
    await server.init()
    idx = await server.register_namespace("urn:test")
    node = await server.nodes.objects.add_variable(idx, "Level", 0.0)
    yield NodeWriter(server), server, node.nodeid


def _double(value: float) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Double)


async def test_changes_within_the_deadband_are_not_written(
    level: tuple[NodeWriter, Server, ua.NodeId],
) -> None:
    writer, server, node_id = level
    writer.set_deadband(node_id, 0.5)
    seen: list[float] = []
    writer.observe(node_id, lambda _node, dv: seen.append(dv.Value.Value))

    assert await writer.write(node_id, _double(10.0))
    assert not await writer.write(node_id, _double(10.4))  # noise
    assert not await writer.write(node_id, _double(9.6))
    assert await writer.write(node_id, _double(10.6))  # a real change
    assert (await server.get_node(node_id).read_value()) == 10.6
    uncertain = StatusCodes.UncertainLastUsableValue
    assert await writer.write(node_id, _double(10.6), uncertain)  # status: always
    assert await writer.write(node_id, _double(10.7), StatusCodes.Good)
    assert seen == [10.0, 10.6, 10.6, 10.7]


async def test_without_a_deadband_every_change_is_written(
    level: tuple[NodeWriter, Server, ua.NodeId],
) -> None:
    writer, _server, node_id = level
    writer.set_deadband(node_id, 0.5)
    writer.set_deadband(node_id, 0)  # off again
    assert await writer.write(node_id, _double(10.0))
    assert await writer.write(node_id, _double(10.01))
    assert not await writer.write(node_id, _double(10.01))  # unchanged: never written

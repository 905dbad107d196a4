"""Level alarms as OPC UA ExclusiveLevelAlarmType conditions, seen by a real asyncua client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncua import Client, Node, Server, ua
from asyncua.common.events import Event

from inventory_core.domain.level_alarm import (
    AlarmTransition,
    LevelAlarm,
    LevelLimits,
    TransitionKind,
)
from opcua_server.alarms import AlarmPublisher

DEADLINE_S = 5
LIMITS = LevelLimits(high_high=95.0, high=90.0, low=10.0, low_low=5.0)
T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
ACKNOWLEDGE = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)


@dataclass
class Plant:
    server: Server
    publisher: AlarmPublisher
    tank: Node
    url: str
    told: list[AlarmTransition]  # what `on_transition` (the plant view) was told


class Events:
    """Subscription handler: every event notification into a queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def event_notification(self, event: Event) -> None:
        self.queue.put_nowait(event)

    async def next(self) -> Event:
        async with asyncio.timeout(DEADLINE_S):
            return await self.queue.get()


def field(event: Event, name: str) -> Any:
    return getattr(event, name)


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    server = Server()
    server.iserver.disabled_clock = True  # no CurrentTime task: stop() returns at once
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0")
    idx = await server.register_namespace("urn:invops:ua:plant")
    tank = await server.nodes.objects.add_object(
        ua.NodeId("PLANT1.TANKFARM.TK-101", idx), ua.QualifiedName("TK-101", idx)
    )
    fill = await tank.add_variable(
        ua.NodeId("PLANT1.TANKFARM.TK-101.FillPercent", idx),
        ua.QualifiedName("FillPercent", idx),
        50.0,
    )
    told: list[AlarmTransition] = []
    publisher = AlarmPublisher(
        server,
        tank,
        LevelAlarm("TK-101", LIMITS, hysteresis_pct=1.0),
        input_node=fill,
        current_user=lambda: ("alice", "operator"),
        on_transition=told.append,
    )
    await publisher.init()
    await server.start()
    try:
        port = server.bserver.port  # type: ignore[union-attr]
        yield Plant(server, publisher, tank, f"opc.tcp://127.0.0.1:{port}", told)
    finally:
        await publisher.close()
        await server.stop()


async def test_alarm_fires_above_high_clears_below_high_minus_hysteresis_and_is_acknowledged(
    plant: Plant,
) -> None:
    events = Events()
    async with Client(plant.url) as client, asyncio.timeout(4 * DEADLINE_S):
        subscription = await client.create_subscription(20, events)
        tank = client.get_node(plant.tank.nodeid)
        await subscription.subscribe_events(tank, ua.ObjectIds.ExclusiveLevelAlarmType)
        condition = client.get_node(plant.publisher.condition_node.nodeid)

        assert await plant.publisher.update(85.0, True, _at(0)) is None
        assert await plant.publisher.update(91.0, True, _at(1)) is not None
        fired = await events.next()
        assert fired.EventType == ua.NodeId(ua.ObjectIds.ExclusiveLevelAlarmType)
        assert fired.SourceNode == plant.tank.nodeid
        assert fired.SourceName == "TK-101"
        assert fired.NodeId == condition.nodeid  # the ConditionId
        assert fired.ConditionName == "LevelAlarm"
        assert fired.Time == _at(1)
        assert fired.Severity == 500
        assert "High" in fired.Message.Text
        assert fired.Retain is True
        assert field(fired, "ActiveState/Id") is True
        assert field(fired, "ActiveState").Text == "Active"
        assert field(fired, "AckedState/Id") is False
        assert field(fired, "ConfirmedState/Id") is False
        assert field(fired, "LimitState/CurrentState").Text == "High"
        assert field(fired, "LimitState/CurrentState/Id") == ua.NodeId(
            ua.ObjectIds.ExclusiveLimitStateMachineType_High
        )
        assert fired.HighLimit == 90.0 and fired.LowLowLimit == 5.0

        # Inside the hysteresis nothing happens; below High - 1 % the alarm clears.
        assert await plant.publisher.update(89.5, True, _at(2)) is None
        assert await plant.publisher.update(92.0, False, _at(3)) is None  # bad quality
        assert await plant.publisher.update(88.5, True, _at(4)) is not None
        cleared = await events.next()  # the very next event: nothing in between
        assert cleared.Time == _at(4)
        assert field(cleared, "ActiveState/Id") is False
        assert field(cleared, "LimitState/CurrentState") is None
        assert cleared.Retain is True  # not yet acknowledged

        # Acknowledge through the type's method with the ConditionId (OPC UA Part 9).
        with pytest.raises(ua.UaStatusCodeError) as unknown:
            await condition.call_method(ACKNOWLEDGE, b"no-such-event", ua.LocalizedText("x"))
        assert unknown.value.code == ua.StatusCodes.BadEventIdUnknown
        await condition.call_method(ACKNOWLEDGE, cleared.EventId, ua.LocalizedText("seen it"))
        acked = await events.next()
        assert field(acked, "AckedState/Id") is True
        assert field(acked, "ConfirmedState/Id") is False
        assert acked.Retain is True
        assert acked.Comment.Text == "seen it"
        assert acked.ClientUserId == "alice"
        with pytest.raises(ua.UaStatusCodeError) as again:
            await condition.call_method(ACKNOWLEDGE, acked.EventId, ua.LocalizedText("again"))
        assert again.value.code == ua.StatusCodes.BadConditionBranchAlreadyAcked

        # Confirm through the condition instance's own method: the condition is done.
        confirm = await condition.get_child("0:Confirm")
        await condition.call_method(confirm, acked.EventId, ua.LocalizedText("level ok"))
        confirmed = await events.next()
        assert field(confirmed, "ConfirmedState/Id") is True
        assert confirmed.Retain is False
        # Every transition, the client's Acknowledge and Confirm too, reached on_transition.
        assert [t.kind for t in plant.told] == [
            TransitionKind.ACTIVATED,
            TransitionKind.CLEARED,
            TransitionKind.ACKNOWLEDGED,
            TransitionKind.CONFIRMED,
        ]
        assert plant.told[2].user == "alice"

        # The condition node's variables carry the same state.
        acked_id = await condition.get_child(["0:AckedState", "0:Id"])
        assert await acked_id.read_value() is True
        active_id = await condition.get_child(["0:ActiveState", "0:Id"])
        assert await active_id.read_value() is False
        assert await (await condition.get_child("0:Retain")).read_value() is False
        assert await (await condition.get_child("0:HighLimit")).read_value() == 90.0
        limit_state = await condition.get_child(["0:LimitState", "0:CurrentState"])
        assert (await limit_state.read_value()).Text is None  # empty while inactive
        await subscription.delete()


async def test_high_high_and_condition_refresh_on_the_server_object(plant: Plant) -> None:
    await plant.publisher.update(97.0, True, _at(0))  # before anyone subscribed
    events = Events()
    async with Client(plant.url) as client, asyncio.timeout(4 * DEADLINE_S):
        subscription = await client.create_subscription(20, events)
        await subscription.subscribe_events(
            client.nodes.server, ua.ObjectIds.ExclusiveLevelAlarmType
        )
        await client.nodes.server.call_method(
            ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
            ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
        )
        replayed = await events.next()  # the retained HighHigh condition
        assert replayed.SourceNode == plant.tank.nodeid
        assert field(replayed, "LimitState/CurrentState").Text == "HighHigh"
        assert replayed.Severity == 800
        assert replayed.Retain is True

        # Live events reach Server subscribers too: HighHigh eases to High.
        await plant.publisher.update(93.0, True, _at(1))
        eased = await events.next()
        assert field(eased, "LimitState/CurrentState").Text == "High"
        assert eased.Severity == 500
        assert eased.LastSeverity == 800
        assert field(eased, "ActiveState/Id") is True

        # In-process acknowledgement (e.g. from an operator screen) records the user.
        acked = await plant.publisher.acknowledge("on it", "bob")
        assert acked.acked is True
        event = await events.next()
        assert event.ClientUserId == "bob"
        assert field(event, "AckedState/Id") is True
        await subscription.delete()

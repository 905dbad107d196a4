"""Features the OPC UA server is built with: value history and level alarms.

Each is passed to `InvopsOpcUaServer(features=...)`, which calls `setup(server)`
once the address space exists (before clients connect and before gc.freeze),
runs `run()` as one of its tasks and awaits `close()` before asyncua stops:

- `HistoryFeature`: Level, Mass, FillPercent, BookQuantity and
  MeasuredQuantity of every unit are historized into the ledger database
  (HistoryRead for at least the last 24 h; kept 7 days).
- `AlarmFeature`: one exclusive level alarm per unit with limits, a plant view
  subscriber evaluated from every measurement change (off the value writer's
  path); each transition goes back to the view, which holds the alarm state.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from inventory_core.domain.level_alarm import LevelAlarm, LevelLimits
from inventory_core.domain.quality import Quality
from inventory_core.log import get_logger
from inventory_core.plant_view import Cause, PlantChange, PlantView, UnitChanged, UnitState
from inventory_core.store.history_store import HistoryStore
from opcua_server.alarms import AlarmPublisher
from opcua_server.history_read import LedgerHistoryStorage
from opcua_server.security import current_user
from opcua_server.values import QUALITY_STATUS, data_value

if TYPE_CHECKING:
    from opcua_server.server import InvopsOpcUaServer

log = get_logger(__name__)
HISTORIZED = ("Level", "Mass", "FillPercent", "BookQuantity", "MeasuredQuantity")
HISTORY_MIN_INTERVAL = timedelta(seconds=1)
HISTORY_PERIOD = timedelta(days=7)


class HistoryFeature:
    """Historizes every unit's quantities into the ledger database: a plant view
    subscriber, so history holds what the view holds (the storage keeps about one
    point per second and series)."""

    def __init__(self, store: HistoryStore, view: PlantView) -> None:
        # a trend needs about one point per second, not one per 100 ms poll
        self.storage = LedgerHistoryStorage(store, min_interval=HISTORY_MIN_INTERVAL)
        self._view = view
        self._nodes: dict[str, dict[str, ua.NodeId]] = {}  # unit -> name -> historized node
        self._kept: dict[str, tuple[datetime, Quality]] = {}  # unit -> last measured kept

    async def setup(self, server: InvopsOpcUaServer) -> None:
        """What `historize_node_data_change` does (Historizing, the HistoryRead access
        bits, the storage's period), but values reach the storage from the server's own
        writer: asyncua's internal subscription would cost a task per value."""
        ua_server = server.ua_server
        ua_server.iserver.history_manager.set_storage(self.storage)
        await self.storage.init()
        for unit, nodes in server.address_space.units.items():
            for name in HISTORIZED:
                node_id = nodes.variables.get(name)
                if node_id is None:
                    continue
                self.storage.register(node_id, f"{unit}.{name}")
                node = ua_server.get_node(node_id)
                await node.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(True))
                for access in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
                    await node.set_attr_bit(access, ua.AccessLevel.HistoryRead)
                await self.storage.new_historized_node(node_id, HISTORY_PERIOD)
                # the value it holds now, as a subscription's first notification would
                self.storage.record(node_id, await node.read_data_value(raise_on_bad_status=False))
                self._nodes.setdefault(unit, {})[name] = node_id
        self._view.subscribe(self._listen)

    def _listen(self, change: PlantChange) -> None:
        """Plant view subscriber: the measured values after a measurement change, the
        book quantity after a book change."""
        if not isinstance(change, UnitChanged) or change.cause is Cause.ALARM:
            return
        nodes = self._nodes.get(change.state.unit)
        if nodes is None:
            return
        state = change.state
        now = datetime.now(UTC)
        if change.cause is Cause.BOOK:
            node_id = nodes.get("BookQuantity")
            if node_id is not None and state.book.quantity is not None:
                self.storage.record(
                    node_id, data_value(_double(state.book.quantity), StatusCodes.Good, now, now)
                )
            return
        measured = state.measured
        at = measured.source_time
        kept = self._kept.get(state.unit)
        if (
            at is not None
            and kept is not None
            and kept[1] is measured.quality
            and timedelta(0) <= at - kept[0] < HISTORY_MIN_INTERVAL
        ):
            return  # one point per series and interval: decided before building any
        if at is not None:
            self._kept[state.unit] = (at, measured.quality)
        code = QUALITY_STATUS[measured.quality]
        for name, field_name in _MEASURED_SERIES.items():
            node_id = nodes.get(name)
            if node_id is None:
                continue
            number = getattr(measured, field_name) if measured.quality.usable else None
            value = ua.Variant() if number is None else _double(number)
            self.storage.record(node_id, data_value(value, code, measured.source_time, now))

    async def run(self) -> None:
        """Nothing to run: the storage flushes on a task of its own."""

    async def close(self) -> None:
        await self.storage.stop()


_MEASURED_SERIES: Final = {
    "Level": "level",
    "Mass": "mass_kg",
    "FillPercent": "fill_percent",
    "MeasuredQuantity": "quantity",
}


def _double(number: float) -> ua.Variant:
    return ua.Variant(float(number), ua.VariantType.Double)


class AlarmFeature:
    """Level alarms per unit, fed from the values the server writes."""

    def __init__(self, limits: Mapping[str, LevelLimits], view: PlantView) -> None:
        self._view = view
        self._limits = dict(limits)
        self._publishers: dict[str, AlarmPublisher] = {}
        self._queue: asyncio.Queue[UnitState] = asyncio.Queue(10_000)

    async def setup(self, server: InvopsOpcUaServer) -> None:
        for unit, limits in self._limits.items():
            nodes = server.address_space.units.get(unit)
            if nodes is None:
                continue
            ua_server = server.ua_server
            publisher = AlarmPublisher(
                ua_server,
                ua_server.get_node(nodes.object_id),
                LevelAlarm(unit, limits),
                input_node=(
                    ua_server.get_node(nodes.variables["FillPercent"])
                    if "FillPercent" in nodes.variables
                    else None
                ),
                current_user=current_user,
                on_transition=functools.partial(self._view.apply_alarm, unit),
            )
            await publisher.init()
            self._publishers[unit] = publisher
        self._view.subscribe(self._listen)

    def _listen(self, change: PlantChange) -> None:
        """Plant view subscriber: queue measurement changes of units with an alarm."""
        if (
            isinstance(change, UnitChanged)
            and change.cause is Cause.MEASUREMENT
            and change.state.unit in self._publishers
        ):
            try:
                self._queue.put_nowait(change.state)
            except asyncio.QueueFull:
                log.warning("alarm_queue_full_update_skipped", unit=change.state.unit)

    async def run(self) -> None:
        """Evaluate queued fill updates until cancelled; every transition (also an
        Acknowledge or Confirm from a client) goes back to the view, which holds it."""
        while True:
            state = await self._queue.get()
            publisher = self._publishers[state.unit]
            measured = state.measured
            at = measured.source_time or datetime.now(UTC)
            good = measured.quality is Quality.GOOD
            await publisher.update(measured.fill_percent, good, at)

    async def close(self) -> None:
        for publisher in self._publishers.values():
            await publisher.close()

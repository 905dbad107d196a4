"""Level alarms over OPC UA: an `ExclusiveLevelAlarmType` condition per storage unit.

`AlarmPublisher` keeps a condition instance under the storage unit's node in
step with a pure `inventory_core.domain.level_alarm.LevelAlarm`. asyncua 2.1
has no condition state machine: the state lives in `LevelAlarm` and the
publisher writes the condition's variables and event fields itself
(ActiveState, AckedState, ConfirmedState, Retain, Severity, Message,
SourceNode, LimitState/CurrentState, the limits), binds the Acknowledge and
Confirm methods (on the instance and on the AcknowledgeableConditionType
method nodes, dispatched by ConditionId) and turns on asyncua's
ConditionRefresh, which replays retained conditions from its own cache.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from inventory_core.domain.level_alarm import (
    AlarmTransition,
    AlreadyAcknowledged,
    AlreadyConfirmed,
    LevelAlarm,
    LimitState,
    NotAcknowledged,
    TransitionKind,
)
from opcua_server.asyncua_patches import instantiate_declaration

__all__ = ["AlarmPublisher"]

OPCUA_CALLER = "opcua-client"  # asyncua passes no session to method handlers
RECENT_EVENT_IDS = 32
_LIMIT_STATE_IDS = {
    LimitState.HIGH_HIGH: ObjectIds.ExclusiveLimitStateMachineType_HighHigh,
    LimitState.HIGH: ObjectIds.ExclusiveLimitStateMachineType_High,
    LimitState.LOW: ObjectIds.ExclusiveLimitStateMachineType_Low,
    LimitState.LOW_LOW: ObjectIds.ExclusiveLimitStateMachineType_LowLow,
}
_LIMIT_PROPERTIES = {
    "HighHighLimit": LimitState.HIGH_HIGH,
    "HighLimit": LimitState.HIGH,
    "LowLimit": LimitState.LOW,
    "LowLowLimit": LimitState.LOW_LOW,
}
# Optional children of the type that asyncua would only create with all ~80 others.
_OPTIONAL_CHILDREN = {
    ObjectIds.AcknowledgeableConditionType: ("ConfirmedState", "Confirm"),
    ObjectIds.LimitAlarmType: tuple(_LIMIT_PROPERTIES),
}
# Condition variables mirrored on the instance node: browse path -> variant type.
_MIRRORED = {
    "EventId": ua.VariantType.ByteString,
    "Time": ua.VariantType.DateTime,
    "Message": ua.VariantType.LocalizedText,
    "Severity": ua.VariantType.UInt16,
    "LastSeverity": ua.VariantType.UInt16,
    "Retain": ua.VariantType.Boolean,
    "Quality": ua.VariantType.StatusCode,
    "Comment": ua.VariantType.LocalizedText,
    "ClientUserId": ua.VariantType.String,
    "EnabledState": ua.VariantType.LocalizedText,
    "EnabledState/Id": ua.VariantType.Boolean,
    "ActiveState": ua.VariantType.LocalizedText,
    "ActiveState/Id": ua.VariantType.Boolean,
    "AckedState": ua.VariantType.LocalizedText,
    "AckedState/Id": ua.VariantType.Boolean,
    "ConfirmedState": ua.VariantType.LocalizedText,
    "ConfirmedState/Id": ua.VariantType.Boolean,
    "LimitState/CurrentState": ua.VariantType.LocalizedText,
    "LimitState/CurrentState/Id": ua.VariantType.NodeId,
    "ConditionName": ua.VariantType.String,
    "SourceNode": ua.VariantType.NodeId,
    "SourceName": ua.VariantType.String,
    **{name: ua.VariantType.Double for name in _LIMIT_PROPERTIES},
}
MethodHandler = Callable[..., Awaitable[Any]]


class _ConditionMethodRouter:
    """Bound to a type-level method node (Acknowledge, Confirm): clients may call
    it with the ConditionId as ObjectId; the call goes to that condition's handler."""

    def __init__(self) -> None:
        self.handlers: dict[ua.NodeId, MethodHandler] = {}

    async def dispatch(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        handler = self.handlers.get(parent)
        if handler is None:
            return _status(StatusCodes.BadNodeIdInvalid)
        return await handler(parent, *args)


class AlarmPublisher:
    """An ExclusiveLevelAlarmType condition on `source_node`, driven by `alarm`.

    Call `await init()` once the server is initialised (before or after start),
    then `update(...)` with every fill-percent sample; `acknowledge`/`confirm`
    serve in-process callers, the condition's Acknowledge/Confirm methods serve
    OPC UA clients. Events go to subscribers of the source node and (with
    `notify_server`) of the Server object. asyncua hands method handlers no
    session: `current_user` (the same (user, role) hook the Ledger methods use)
    names the caller in ClientUserId, else it reads OPCUA_CALLER.
    """

    def __init__(
        self,
        server: Server,
        source_node: Node,
        alarm: LevelAlarm,
        *,
        input_node: Node | None = None,
        name: str = "LevelAlarm",
        notify_server: bool = True,
        current_user: Callable[[], tuple[str, str]] | None = None,
        on_transition: Callable[[AlarmTransition], None] | None = None,
    ) -> None:
        """`on_transition` is told of every transition published (raised, cleared,
        acknowledged, confirmed): e.g. the plant view, which holds the alarm state."""
        self._server = server
        self._on_transition = on_transition
        self._source = source_node
        self.alarm = alarm
        self._input = input_node
        self._name = name
        self._notify_server = notify_server
        self._current_user = current_user
        self._condition: Node | None = None
        self._generator: EventGenerator | None = None
        self._children: dict[str, ua.NodeId] = {}
        self._event_ids: deque[bytes] = deque(maxlen=RECENT_EVENT_IDS)
        self._routers: list[_ConditionMethodRouter] = []
        self._last_severity = alarm.severity
        self._times: dict[str, datetime] = {}

    @property
    def condition_node(self) -> Node:
        if self._condition is None:
            raise RuntimeError("AlarmPublisher.init() has not run")
        return self._condition

    async def init(self) -> None:
        """Create the condition node, its event generator and method bindings."""
        source_id = self._source.nodeid
        idx = source_id.NamespaceIndex
        condition = await self._source.add_object(
            _child_id(source_id, self._name),
            ua.QualifiedName(self._name, idx),
            objecttype=ObjectIds.ExclusiveLevelAlarmType,
            instantiate_optional=False,
        )
        self._condition = condition
        await _add_optional_children(self._server, condition)
        await self._source.add_reference(condition.nodeid, ObjectIds.HasCondition)
        for path in _MIRRORED:
            child = await condition.get_child([ua.QualifiedName(p, 0) for p in path.split("/")])
            self._children[path] = child.nodeid

        notifier = await self._source.read_event_notifier()
        self._generator = await self._server.get_event_generator(
            ObjectIds.ExclusiveLevelAlarmType, source_id
        )
        await self._source.set_event_notifier(
            notifier | {ua.EventNotifier.SubscribeToEvents}
        )  # keep a HistoryRead bit someone else set
        await self._prepare_event(await self._source.read_browse_name())
        await self._write_static()
        await self._bind_methods()
        await self._mirror(self._snapshot(datetime.now(UTC)), self._last_severity)

    async def close(self) -> None:
        """Unbind this condition's method handlers (the nodes stay)."""
        if self._condition is not None:
            for router in self._routers:
                router.handlers.pop(self._condition.nodeid, None)
        self._routers.clear()

    # -- inputs ----------------------------------------------------------------

    async def update(
        self, fill_percent: float | None, quality_good: bool, at: datetime
    ) -> AlarmTransition | None:
        transition = self.alarm.update(fill_percent, quality_good, at)
        if transition is not None:
            await self.publish(transition)
        return transition

    async def acknowledge(
        self, comment: str, user: str, at: datetime | None = None
    ) -> AlarmTransition:
        transition = self.alarm.acknowledge(comment, user, at)
        await self.publish(transition)
        return transition

    async def confirm(self, comment: str, user: str, at: datetime | None = None) -> AlarmTransition:
        transition = self.alarm.confirm(comment, user, at)
        await self.publish(transition)
        return transition

    # -- events ----------------------------------------------------------------

    async def publish(self, transition: AlarmTransition) -> None:
        """Fire the condition event for `transition` and mirror it on the node."""
        if self._generator is None:
            raise RuntimeError("AlarmPublisher.init() has not run")
        event = self._generator.event
        last_severity, self._last_severity = self._last_severity, transition.severity
        self._fill_event(event, transition, last_severity)
        self._event_ids.append(event.EventId)
        service = self._server.iserver.isession.subscription_service
        # asyncua caches the last triggered object for ConditionRefresh, and its emitting
        # node decides who gets the replay: the Server object last, where alarm clients
        # subscribe and refresh.
        emitters = [self._source.nodeid]
        if self._notify_server:
            emitters.append(_ns0(ObjectIds.Server))
        for emitter in emitters:
            event.emitting_node = emitter
            await service.trigger_event(event)
        await self._mirror(transition, last_severity)
        if self._on_transition is not None:
            self._on_transition(transition)

    def _snapshot(self, at: datetime) -> AlarmTransition:
        alarm = self.alarm
        return AlarmTransition(
            unit=alarm.unit,
            kind=TransitionKind.CHANGED,
            previous=alarm.state,
            state=alarm.state,
            active=alarm.active,
            acked=alarm.acked,
            confirmed=alarm.confirmed,
            retain=alarm.retain,
            severity=alarm.severity,
            message=f"{alarm.unit}: level alarm {alarm.state}",
            at=at,
            value=alarm.value,
            limit=alarm.limits.limit(alarm.state),
        )

    async def _prepare_event(self, source_name: ua.QualifiedName) -> None:
        assert self._generator is not None and self._condition is not None
        event = self._generator.event
        for name, datatype in list(event.data_types.items()):
            if isinstance(datatype, ua.NodeId):  # asyncua types these by DataType NodeId
                simple = (
                    ua.VariantType.DateTime
                    if datatype == _ns0(ObjectIds.UtcTime)
                    else ua.VariantType.Double
                    if datatype == _ns0(ObjectIds.Duration)
                    else None
                )
                if simple is not None:
                    event.data_types[name] = simple
        event.add_property("LimitState/CurrentState", None, ua.VariantType.LocalizedText)
        event.add_property("LimitState/CurrentState/Id", None, ua.VariantType.NodeId)
        event.NodeId = self._condition.nodeid
        event.SourceNode = self._source.nodeid
        event.SourceName = source_name.Name
        event.ConditionName = self._name
        event.ConditionClassId = _ns0(ObjectIds.ProcessConditionClassType)
        event.ConditionClassName = ua.LocalizedText("Process")
        event.BranchId = ua.NodeId()
        event.SuppressedOrShelved = False
        event.InputNode = None if self._input is None else self._input.nodeid
        _set(event, "EnabledState", ua.LocalizedText("Enabled"))
        _set(event, "EnabledState/Id", True)
        limits = self.alarm.limits
        for prop, state in _LIMIT_PROPERTIES.items():
            _set(event, prop, limits.limit(state))

    def _fill_event(self, event: Any, transition: AlarmTransition, last_severity: int) -> None:
        now = datetime.now(UTC)
        at = transition.at
        if transition.kind in (TransitionKind.ACTIVATED, TransitionKind.CLEARED):
            self._times["ActiveState"] = at
        if transition.kind in (TransitionKind.ACTIVATED, TransitionKind.ACKNOWLEDGED):
            self._times["AckedState"] = at
        if transition.kind in (TransitionKind.ACTIVATED, TransitionKind.CONFIRMED):
            self._times["ConfirmedState"] = at
        event.EventId = uuid.uuid4().bytes
        event.Time = at
        event.ReceiveTime = now
        event.Message = ua.LocalizedText(transition.message)
        event.Severity = transition.severity
        event.LastSeverity = last_severity
        event.Retain = transition.retain
        event.Quality = _status(StatusCodes.Good if self.alarm.quality_good else StatusCodes.Bad)
        event.Comment = ua.LocalizedText(transition.comment)
        event.ClientUserId = transition.user
        _set(event, "ActiveState", _two_state(transition.active, "Active", "Inactive"))
        _set(event, "ActiveState/Id", transition.active)
        _set(event, "AckedState", _two_state(transition.acked, "Acknowledged", "Unacknowledged"))
        _set(event, "AckedState/Id", transition.acked)
        _set(event, "ConfirmedState", _two_state(transition.confirmed, "Confirmed", "Unconfirmed"))
        _set(event, "ConfirmedState/Id", transition.confirmed)
        for name, moment in self._times.items():
            _set(event, f"{name}/TransitionTime", moment)
        if transition.active:
            _set(event, "LimitState/CurrentState", ua.LocalizedText(str(transition.state)))
            _set(event, "LimitState/CurrentState/Id", _ns0(_LIMIT_STATE_IDS[transition.state]))
        else:  # the LimitState machine is inactive while the alarm is
            _set(event, "LimitState/CurrentState", None)
            _set(event, "LimitState/CurrentState/Id", None)

    async def _write_static(self) -> None:
        await self._write("ConditionName", self._name)
        await self._write("SourceNode", self._source.nodeid)
        await self._write("SourceName", (await self._source.read_browse_name()).Name)
        for prop, state in _LIMIT_PROPERTIES.items():
            await self._write(prop, self.alarm.limits.limit(state))

    async def _mirror(self, transition: AlarmTransition, last_severity: int) -> None:
        """Write the condition's current state into its instance variables."""
        values: dict[str, Any] = {
            "Time": transition.at,
            "Message": ua.LocalizedText(transition.message),
            "Severity": transition.severity,
            "LastSeverity": last_severity,
            "Retain": transition.retain,
            "Quality": _status(StatusCodes.Good if self.alarm.quality_good else StatusCodes.Bad),
            "Comment": ua.LocalizedText(transition.comment),
            "ClientUserId": transition.user,
            "EnabledState": ua.LocalizedText("Enabled"),
            "EnabledState/Id": True,
            "ActiveState": _two_state(transition.active, "Active", "Inactive"),
            "ActiveState/Id": transition.active,
            "AckedState": _two_state(transition.acked, "Acknowledged", "Unacknowledged"),
            "AckedState/Id": transition.acked,
            "ConfirmedState": _two_state(transition.confirmed, "Confirmed", "Unconfirmed"),
            "ConfirmedState/Id": transition.confirmed,
            # the LimitState machine is empty while the alarm is inactive
            "LimitState/CurrentState": (
                ua.LocalizedText(str(transition.state)) if transition.active else ua.LocalizedText()
            ),
            "LimitState/CurrentState/Id": (
                _ns0(_LIMIT_STATE_IDS[transition.state]) if transition.active else ua.NodeId()
            ),
        }
        if self._event_ids:
            values["EventId"] = self._event_ids[-1]
        for path, value in values.items():
            await self._write(path, value)

    async def _write(self, path: str, value: Any) -> None:
        if value is None:  # e.g. a limit not configured: the variable stays empty
            return
        variant = ua.Variant(value, _MIRRORED[path])
        await self._server.write_attribute_value(self._children[path], ua.DataValue(variant))

    # -- methods ---------------------------------------------------------------

    async def _bind_methods(self) -> None:
        assert self._condition is not None
        iserver = self._server.iserver
        if ObjectIds.RefreshStartEventType not in iserver.subscription_service.standard_events:
            await iserver.setup_condition_methods()  # ConditionRefresh(2) from asyncua's cache
        for name, handler, type_method in (
            (
                "Acknowledge",
                self._on_acknowledge,
                ObjectIds.AcknowledgeableConditionType_Acknowledge,
            ),
            ("Confirm", self._on_confirm, ObjectIds.AcknowledgeableConditionType_Confirm),
        ):
            instance = await self._condition.get_child(ua.QualifiedName(name, 0))
            self._server.link_method(instance, handler)
            router = _router(self._server, _ns0(type_method))
            router.handlers[self._condition.nodeid] = handler
            self._routers.append(router)

    async def _on_acknowledge(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._on_method(parent, args, self.alarm.acknowledge)

    async def _on_confirm(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._on_method(parent, args, self.alarm.confirm)

    async def _on_method(
        self,
        parent: ua.NodeId,
        args: tuple[ua.Variant, ...],
        action: Callable[[str, str, datetime | None], AlarmTransition],
    ) -> Any:
        if self._condition is None or parent != self._condition.nodeid:
            return _status(StatusCodes.BadNodeIdInvalid)
        if len(args) < 2:
            return _status(StatusCodes.BadArgumentsMissing)
        if len(args) > 2:
            return _status(StatusCodes.BadTooManyArguments)
        event_id, comment = (a.Value if isinstance(a, ua.Variant) else a for a in args)
        if not isinstance(event_id, bytes) or event_id not in self._event_ids:
            return _status(StatusCodes.BadEventIdUnknown)
        text = comment.Text if isinstance(comment, ua.LocalizedText) else comment
        try:
            user = OPCUA_CALLER if self._current_user is None else self._current_user()[0]
            transition = action(text or "", user, None)
        except AlreadyAcknowledged:
            return _status(StatusCodes.BadConditionBranchAlreadyAcked)
        except AlreadyConfirmed:
            return _status(StatusCodes.BadConditionBranchAlreadyConfirmed)
        except NotAcknowledged:
            return _status(StatusCodes.BadInvalidState)
        await self.publish(transition)
        return []


async def _add_optional_children(server: Server, condition: Node) -> None:
    """Instantiate the few optional declarations a level alarm needs (ConfirmedState,
    Confirm, the four limits) exactly as the type declares them."""
    for type_id, names in _OPTIONAL_CHILDREN.items():
        declarations = await server.get_node(_ns0(type_id)).get_children_descriptions()
        for rdesc in declarations:
            name = rdesc.BrowseName.Name
            if name not in names:
                continue
            await instantiate_declaration(
                server, rdesc, condition.nodeid, _child_id(condition.nodeid, name)
            )


def _router(server: Server, method_id: ua.NodeId) -> _ConditionMethodRouter:
    """The router bound to a type-level method node, installed on first use."""
    node = server.iserver.aspace[method_id]
    current = getattr(node.call, "__self__", None)
    if isinstance(current, _ConditionMethodRouter):
        return current
    router = _ConditionMethodRouter()
    server.iserver.isession.add_method_callback(method_id, router.dispatch)
    return router


def _child_id(parent: ua.NodeId, name: str) -> ua.NodeId:
    """A string NodeId under a string parent ("<parent>.<name>", as asyncua names
    instantiated children), else the next numeric one in the parent's namespace."""
    if parent.NodeIdType is ua.NodeIdType.String:
        return ua.NodeId(ua.String(f"{cast(str, parent.Identifier)}.{name}"), parent.NamespaceIndex)
    return ua.NodeId(NamespaceIndex=parent.NamespaceIndex)


def _ns0(identifier: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(identifier))


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _two_state(value: bool, true: str, false: str) -> ua.LocalizedText:
    return ua.LocalizedText(true if value else false)


def _set(event: Any, name: str, value: Any) -> None:
    """Set an event field whose name is a browse path ("ActiveState/Id")."""
    setattr(event, name, value)

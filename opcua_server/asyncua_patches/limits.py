"""Connection and session limits.

`install_limits(server, limits, refused)` bounds what clients without credentials can
take (see opcua_server.limits for the rules). asyncua 2.1's own knobs are used where
they exist (max_connections, session timeout clamps, max_subscriptions, TransportLimits);
these patches add what it lacks, and act only on servers given limits (others keep
asyncua's behaviour):

- `OPCUAProtocol.connection_made`: at max_connections asyncua refuses every newcomer,
  so 1,000 idle sockets lock everybody out. Now a newcomer closes the connection
  without activated session that got least far (sent nothing, before no channel yet,
  before a channel, before a created session; oldest first) and takes its slot, so
  idle sockets never push out a client that is logging in;
  a timer per connection closes it when Hello + OpenSecureChannel are not done within
  handshake_timeout_s, or when it has had no activated session for
  activation_timeout_s (asyncua's own watchdog looks once, 30 s after connecting, so a
  connection whose session expired or was closed stayed open for ever; it is turned off).
- `OPCUAProtocol.data_received` (a copy with two additions): asyncua buffered a chunk
  until its announced size had arrived (a Hello announcing 4 GiB buffered whatever was
  sent) and checked sizes only once a chunk was complete. Now a header announcing more
  than the connection's receive buffer size (the configured max_chunk_size before Hello,
  the negotiated one after) is answered with Bad_TcpMessageTooLarge and the connection
  closed before its body is read. And reading pauses while more than max_message_size
  bytes of chunks wait for the connection's task (`_process_one_msg` resumes it), so a
  busy connection's queue is bounded in bytes, not only in count.
- `InternalSession.activate_session`: the first activation of a session is refused with
  Bad_TooManySessions at max_sessions activated sessions, and an anonymous one at
  max_anonymous_sessions (asyncua's own cap counts across every server in the process).
- `UaProcessor._process_message` (the CreateSession wrapper in `sessions`): a CreateSession on a
  connection whose previous session was never activated closes that one; asyncua kept it
  registered for ever (no timeout runs before activation).
- `InternalSession.create_subscription` / `create_monitored_items`: per-session limits;
  items are created in batches with a yield to the event loop between batches (asyncua
  created 1,000 items in one step of ~65 ms), only on a subscription of the calling
  session (asyncua let any session add items to any session's subscription).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from weakref import WeakKeyDictionary, WeakSet

from asyncua import ua
from asyncua.common.connection import SecureConnection, TransportLimits
from asyncua.common.utils import Buffer, NotEnoughData, ServiceError
from asyncua.server import binary_server_asyncio
from asyncua.server.binary_server_asyncio import OPCUAProtocol
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import header_from_binary, uatcp_to_binary

from inventory_core.log import get_logger
from opcua_server.limits import CREATE_BATCH, RefusalListener, ServerLimits

log = get_logger(__name__)
_logger_of_protocol = logging.getLogger(binary_server_asyncio.__name__)  # asyncua's messages

_original_connection_made = OPCUAProtocol.connection_made
_original_connection_lost = OPCUAProtocol.connection_lost
_original_data_received = OPCUAProtocol.data_received
_original_process_one_msg = OPCUAProtocol._process_one_msg
_original_session_create_subscription = InternalSession.create_subscription
_original_session_create_monitored_items = InternalSession.create_monitored_items
_original_activate_session = InternalSession.activate_session

# What this module copies, wraps or relies on (fingerprinted: tests/unit/test_asyncua_patches.py):
# `data_received` is a copy with two additions; the others are wrapped and rely on what
# the originals do (connection_made refuses at max_connections and sets `transport` only
# when it accepts; activate_session's first activation is the one from
# SessionState.Created; the create functions take the session's parameters as they are;
# the transport limits' checks are the two size checks SecureConnection._receive calls).
UPSTREAM: Final = (
    (_original_connection_made, "wrapped"),
    (_original_connection_lost, "wrapped"),
    (_original_data_received, "copied"),
    (_original_process_one_msg, "wrapped"),
    (_original_activate_session, "wrapped"),
    (_original_session_create_subscription, "wrapped"),
    (_original_session_create_monitored_items, "wrapped"),
    (TransportLimits.is_msg_size_within_limit, "wrapped"),
    (TransportLimits.is_chunk_count_within_limit, "wrapped"),
    (SecureConnection._receive, "relied on"),
)
_SUMMARY_S: Final = 60.0  # at most one refusal log line per reason and minute
_INTERNAL_SUBSCRIPTION_HEADROOM: Final = 100  # server-side (internal session) subscriptions
_IDENTIFIED_TOKENS: Final = (ua.UserNameIdentityToken, ua.X509IdentityToken, ua.IssuedIdentityToken)


class _Guard:
    """The limits of one server and where its refusals go.

    Refusals are logged per reason as one WARNING at the first one and then at most one
    per `_SUMMARY_S` with the count since the previous line (a flood must not flood the
    log too; the metric counts each one); single refusals are at DEBUG."""

    __slots__ = (
        "__weakref__",
        "anonymous_reserved",
        "limits",
        "listener",
        "logged_at",
        "silent",
        "unlogged",
    )

    def __init__(self, limits: ServerLimits, listener: RefusalListener) -> None:
        self.limits = limits
        self.listener = listener
        # Connections that have not sent a byte yet, oldest first: the first to go when
        # a newcomer needs a slot (a flood of idle sockets costs O(1) per connection).
        self.silent: dict[OPCUAProtocol, None] = {}
        self.anonymous_reserved = 0  # anonymous sessions' items being created
        self.unlogged: dict[str, int] = {}
        self.logged_at: dict[str, float] = {}

    def refused(self, reason: str, count: int = 1) -> None:
        try:
            self.listener(reason, count)
        except Exception:  # metrics must never break a connection
            log.exception("opcua_refusal_listener_failed", reason=reason)
        self.unlogged[reason] = self.unlogged.get(reason, 0) + count
        now = time.monotonic()
        if now - self.logged_at.get(reason, -_SUMMARY_S) >= _SUMMARY_S:
            self.logged_at[reason] = now
            log.warning(
                "opcua_limit_refusals",
                reason=reason,
                count=self.unlogged.pop(reason),
                metric="invops_opcua_refusals_total",
            )


@dataclass(slots=True, eq=False)
class _Connection:
    """What the limits track per TCP connection."""

    guard: _Guard
    connected_at: float
    # Since when the connection has had no activated session (None: it has one now).
    sessionless_since: float | None
    timer: asyncio.TimerHandle | None = None
    received: bool = False  # any byte at all (a Hello, normally)
    queued_bytes: int = 0
    paused: bool = False


_GUARDS: WeakKeyDictionary[Any, _Guard] = WeakKeyDictionary()  # InternalServer -> guard
_CONNECTIONS: WeakKeyDictionary[Any, _Connection] = WeakKeyDictionary()  # OPCUAProtocol
_ANONYMOUS_SESSIONS: WeakSet[Any] = WeakSet()  # InternalSessions activated anonymously
_RESERVED_ITEMS: WeakKeyDictionary[Any, int] = WeakKeyDictionary()  # session -> items in flight


class _CountedTransportLimits(TransportLimits):
    """asyncua's message size and chunk count checks, reporting each refusal.

    Each connection works on a deep copy of the server's limits; `report` is a plain
    function (deepcopy keeps functions as they are), so every copy reports to it."""

    def __init__(self, limits: ServerLimits, report: Callable[[], None]) -> None:
        super().__init__(
            max_recv_buffer=limits.max_chunk_size,
            # asyncua's Acknowledge has ReceiveBufferSize and SendBufferSize swapped (Part 6,
            # 7.1.2.4); equal sizes make that harmless: a client following the spec never
            # sends a chunk above max_chunk_size.
            max_send_buffer=limits.max_chunk_size,
            max_chunk_count=limits.max_chunk_count,
            max_message_size=limits.max_message_size,
        )
        self.report = report

    def __deepcopy__(self, memo: dict[int, Any]) -> _CountedTransportLimits:
        # Every field is an int or the report function: a shallow copy is a deep one,
        # at a fraction of the generic deepcopy's cost (one per connection).
        return copy.copy(self)

    def is_msg_size_within_limit(self, sz: int) -> bool:
        within = super().is_msg_size_within_limit(sz)
        if not within:
            self.report()
        return within

    def is_chunk_count_within_limit(self, sz: int) -> bool:
        within = super().is_chunk_count_within_limit(sz)
        if not within:
            self.report()
        return within


def install(server: Server, limits: ServerLimits, listener: RefusalListener) -> None:
    """Bound `server` (before `server.start()`); refusals go to `listener(reason, count)`.
    The patches must be applied (`opcua_server.asyncua_patches.install_limits` sees to it)."""
    guard = _Guard(limits, listener)
    iserver = server.iserver
    iserver.max_connections = limits.max_connections
    iserver.max_pending_activation_seconds = 0  # replaced by the per-connection timer
    iserver.min_session_timeout_ms = limits.min_session_timeout_s * 1000
    iserver.max_session_timeout_ms = limits.max_session_timeout_s * 1000
    iserver.max_subscriptions = (
        limits.max_sessions * limits.max_subscriptions_per_session + _INTERNAL_SUBSCRIPTION_HEADROOM
    )

    def too_large() -> None:
        guard.refused("message_too_large")

    server.limits = _CountedTransportLimits(limits, too_large)
    _GUARDS[iserver] = guard


def _connection_made(self: OPCUAProtocol, transport: asyncio.BaseTransport) -> None:
    guard = _GUARDS.get(self.iserver)
    if guard is None:
        _original_connection_made(self, transport)
        return
    if len(self.clients) >= self.iserver.max_connections:
        victim = _eviction_candidate(guard, self.clients)
        if victim is None:
            guard.refused("connection_limit")  # asyncua refuses it below
        else:
            guard.refused("connection_evicted")
            log.debug("opcua_connection_evicted", peer=victim.peer_name)
            self.clients.remove(victim)  # its connection_lost comes later
            guard.silent.pop(victim, None)
            if victim.transport is not None:
                victim.transport.close()
    _original_connection_made(self, transport)
    if self.transport is None:  # refused
        return
    now = time.monotonic()
    connection = _Connection(guard, connected_at=now, sessionless_since=now)
    _CONNECTIONS[self] = connection
    guard.silent[self] = None
    connection.timer = asyncio.get_running_loop().call_later(
        guard.limits.handshake_timeout_s, _check_connection, self
    )


def _progress(protocol: OPCUAProtocol) -> int | None:
    """How far a connection got: 0 nothing received, 1 no secure channel yet, 2 channel,
    3 session created; None when it has an activated session (never evicted)."""
    processor = protocol.processor
    if processor is None:
        return 0
    session = processor.session
    if session is not None and session.is_activated():
        return None
    if session is not None:
        return 3
    if processor._connection.is_open():
        return 2
    connection = _CONNECTIONS.get(protocol)
    return 1 if connection is not None and connection.received else 0


def _eviction_candidate(guard: _Guard, clients: list[OPCUAProtocol]) -> OPCUAProtocol | None:
    for protocol in guard.silent:  # the oldest connection that never sent a byte
        return protocol
    best: OPCUAProtocol | None = None
    best_key: tuple[int, float] | None = None
    for protocol in clients:
        progress = _progress(protocol)
        if progress is None:
            continue
        connection = _CONNECTIONS.get(protocol)
        key = (progress, connection.connected_at if connection is not None else 0.0)
        if best_key is None or key < best_key:
            best, best_key = protocol, key
    return best


def _check_connection(protocol: OPCUAProtocol) -> None:
    """Timer callback: close a connection past its handshake or activation deadline,
    else look again at the next deadline."""
    connection = _CONNECTIONS.get(protocol)
    transport = protocol.transport
    if connection is None or transport is None or transport.is_closing():
        return
    limits = connection.guard.limits
    now = time.monotonic()
    processor = protocol.processor
    if processor is None or not processor._connection.is_open():
        due = connection.connected_at + limits.handshake_timeout_s
        reason = "handshake_timeout"
    else:
        session = processor.session
        if session is not None and session.is_activated():
            connection.sessionless_since = None
            due, reason = now + limits.activation_timeout_s, ""
        else:
            if connection.sessionless_since is None:  # its session ended since the last look
                connection.sessionless_since = now
            due = connection.sessionless_since + limits.activation_timeout_s
            reason = "activation_timeout"
    if reason and now >= due:
        connection.guard.refused(reason)
        log.debug("opcua_connection_closed", peer=protocol.peer_name, reason=reason)
        transport.close()
        return
    connection.timer = asyncio.get_running_loop().call_later(
        max(due - now, 0.01), _check_connection, protocol
    )


def _connection_lost(self: OPCUAProtocol, ex: BaseException | None) -> None:
    connection = _CONNECTIONS.pop(self, None)
    if connection is not None:
        connection.guard.silent.pop(self, None)
        if connection.timer is not None:
            connection.timer.cancel()
    _original_connection_lost(self, ex)


def _data_received(self: OPCUAProtocol, data: bytes) -> None:
    """asyncua's `data_received`, plus the chunk size check on the header and the
    byte bound on the queue (see the section comment)."""
    connection = _CONNECTIONS.get(self)
    if connection is None or self.processor is None:
        _original_data_received(self, data)
        return
    if not connection.received:
        connection.received = True
        connection.guard.silent.pop(self, None)
    self._buffer += data
    # try to parse the incoming data
    while self._buffer:
        try:
            buf = Buffer(self._buffer)
            try:
                header = header_from_binary(buf)
            except NotEnoughData:
                return
            limit = self.processor._limits.max_recv_buffer
            if header.packet_size > limit:
                _refuse_chunk(self, connection, header.packet_size, limit)
                return
            if header.header_size + header.body_size <= header.header_size:
                # malformed header prevent invalid access of your buffer
                _logger_of_protocol.error("Got malformed header %s", header)
                if self.transport is not None:
                    self.transport.close()
                return
            if len(buf) < header.body_size:
                return
            # we have a complete message
            try:
                self.messages.put_nowait((header, buf))
            except asyncio.QueueFull:
                _logger_of_protocol.warning(
                    "Inbound queue full for %s (max=%s); closing connection",
                    self.peer_name,
                    self.messages.maxsize,
                )
                if self.transport is not None:
                    self.transport.close()
                return
            self._buffer = self._buffer[(header.header_size + header.body_size) :]
            connection.queued_bytes += header.packet_size
            if (
                connection.queued_bytes > connection.guard.limits.max_message_size
                and not connection.paused
                and self.transport is not None
            ):
                connection.paused = True
                self.transport.pause_reading()
        except Exception:
            _logger_of_protocol.exception("Exception raised while parsing message from client")
            return


def _refuse_chunk(protocol: OPCUAProtocol, connection: _Connection, size: int, limit: int) -> None:
    connection.guard.refused("message_too_large")
    log.debug("opcua_chunk_refused", peer=protocol.peer_name, size=size, limit=limit)
    protocol._buffer = b""
    if protocol.transport is not None:
        error = ua.ErrorMessage(
            ua.StatusCode(ua.StatusCodes.BadTcpMessageTooLarge),
            f"chunk of {size} bytes exceeds the receive buffer size of {limit} bytes",
        )
        protocol.transport.write(uatcp_to_binary(ua.MessageType.Error, error))
        protocol.transport.close()


async def _process_one_msg(self: OPCUAProtocol, header: Any, buf: Buffer) -> bool:
    try:
        return await _original_process_one_msg(self, header, buf)
    finally:
        connection = _CONNECTIONS.get(self)
        if connection is not None:
            connection.queued_bytes = max(0, connection.queued_bytes - header.packet_size)
            low_water = connection.guard.limits.max_message_size // 2
            if connection.paused and connection.queued_bytes <= low_water:
                connection.paused = False
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.resume_reading()


def _activate_session(
    self: InternalSession, params: ua.ActivateSessionParameters, peer_certificate: bytes | None
) -> ua.ActivateSessionResult:
    guard = _GUARDS.get(self.iserver) if self.external else None
    anonymous = not isinstance(params.UserIdentityToken, _IDENTIFIED_TOKENS)
    if guard is not None:
        first = self.state == SessionState.Created
        if first or (anonymous and self not in _ANONYMOUS_SESSIONS):
            _check_session_room(self, guard, first=first, anonymous=anonymous)
    result = _original_activate_session(self, params, peer_certificate)
    if anonymous:
        _ANONYMOUS_SESSIONS.add(self)
    else:
        _ANONYMOUS_SESSIONS.discard(self)
    return result


def _check_session_room(
    session: InternalSession, guard: _Guard, *, first: bool, anonymous: bool
) -> None:
    limits = guard.limits
    active = [
        s
        for s in list(session.iserver._external_sessions.values())
        if s is not session and s.is_activated()
    ]
    if first and len(active) >= limits.max_sessions:
        guard.refused("session_limit")
        log.debug("opcua_session_refused", reason="session_limit", limit=limits.max_sessions)
        raise ServiceError(ua.StatusCodes.BadTooManySessions)
    if anonymous and sum(1 for s in active if s in _ANONYMOUS_SESSIONS) >= (
        limits.max_anonymous_sessions
    ):
        guard.refused("anonymous_session_limit")
        log.debug(
            "opcua_session_refused",
            reason="anonymous_session_limit",
            limit=limits.max_anonymous_sessions,
        )
        raise ServiceError(ua.StatusCodes.BadTooManySessions)


async def drop_unactivated_session(processor: UaProcessor) -> None:
    """Before a CreateSession: close the connection's session that was never activated."""
    session = processor.session
    if session is None or session.state != SessionState.Created:
        return
    if _GUARDS.get(processor.iserver) is not None:
        await session.close_session(True)


def _subscriptions_of(session: InternalSession) -> list[Any]:
    subscriptions = session.subscription_service.subscriptions
    return [sub for sub in list(subscriptions.values()) if sub.session_id == session.session_id]


async def _create_subscription(
    self: InternalSession,
    params: ua.CreateSubscriptionParameters,
    callback: Callable[..., Any],
    request_callback: Callable[..., Any] | None = None,
) -> ua.CreateSubscriptionResult:
    guard = _GUARDS.get(self.iserver) if self.external else None
    if guard is not None:
        limit = guard.limits.max_subscriptions_per_session
        if len(_subscriptions_of(self)) >= limit:
            guard.refused("subscription_limit")
            log.debug("opcua_subscription_refused", session=self.name, limit=limit)
            raise ServiceError(ua.StatusCodes.BadTooManySubscriptions)
    return await _original_session_create_subscription(
        self, params, callback, request_callback=request_callback
    )


async def _create_monitored_items(
    self: InternalSession, params: ua.CreateMonitoredItemsParameters
) -> list[ua.MonitoredItemCreateResult]:
    guard = _GUARDS.get(self.iserver) if self.external else None
    if guard is None:
        return await _original_session_create_monitored_items(self, params)
    subscription = self.subscription_service.subscriptions.get(params.SubscriptionId)
    if subscription is None or subscription.session_id != self.session_id:
        raise ServiceError(ua.StatusCodes.BadSubscriptionIdInvalid)
    items = list(params.ItemsToCreate or [])
    limits = guard.limits
    existing = sum(len(sub.monitored_item_srv._monitored_items) for sub in _subscriptions_of(self))
    room = max(0, limits.max_monitored_items_per_session - existing - _RESERVED_ITEMS.get(self, 0))
    anonymous = self in _ANONYMOUS_SESSIONS
    reason = "monitored_item_limit"
    if anonymous:
        pool = limits.max_anonymous_monitored_items - _anonymous_items(self)
        pool = max(0, pool - guard.anonymous_reserved)
        if pool < min(room, len(items)):
            room, reason = pool, "anonymous_monitored_item_limit"
    allowed, excess = items[:room], items[room:]
    # Items not created yet are reserved, so that concurrent requests (other anonymous
    # sessions, between the batches) see them; a created item counts as itself.
    pending = len(allowed)
    _reserve(self, guard, anonymous, pending)
    results: list[ua.MonitoredItemCreateResult] = []
    try:
        for start in range(0, len(allowed), CREATE_BATCH):
            if start:
                await asyncio.sleep(0)  # let the PLC pollers and other clients run
            batch = ua.CreateMonitoredItemsParameters(
                SubscriptionId=params.SubscriptionId,
                TimestampsToReturn=params.TimestampsToReturn,
                ItemsToCreate=allowed[start : start + CREATE_BATCH],
            )
            results += await _original_session_create_monitored_items(self, batch)
            _reserve(self, guard, anonymous, -len(batch.ItemsToCreate))
            pending -= len(batch.ItemsToCreate)
    finally:
        _reserve(self, guard, anonymous, -pending)
    if excess:
        guard.refused(reason, len(excess))
        log.debug(
            "opcua_monitored_items_refused", session=self.name, count=len(excess), reason=reason
        )
        for _ in excess:
            result = ua.MonitoredItemCreateResult()
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems)
            results.append(result)
    return results


def _reserve(session: InternalSession, guard: _Guard, anonymous: bool, count: int) -> None:
    _RESERVED_ITEMS[session] = _RESERVED_ITEMS.get(session, 0) + count
    if anonymous:
        guard.anonymous_reserved += count


def _anonymous_items(session: InternalSession) -> int:
    """Monitored items of every activated anonymous session of the session's server."""
    ids = {
        s.session_id
        for s in list(session.iserver._external_sessions.values())
        if s in _ANONYMOUS_SESSIONS and s.is_activated()
    }
    subscriptions = list(session.subscription_service.subscriptions.values())
    return sum(
        len(s.monitored_item_srv._monitored_items) for s in subscriptions if s.session_id in ids
    )


def _replacements() -> tuple[tuple[type, str, object, object], ...]:
    """(class, attribute, patched, original) of every method this module replaces."""
    return (
        (OPCUAProtocol, "connection_made", _connection_made, _original_connection_made),
        (OPCUAProtocol, "connection_lost", _connection_lost, _original_connection_lost),
        (OPCUAProtocol, "data_received", _data_received, _original_data_received),
        (OPCUAProtocol, "_process_one_msg", _process_one_msg, _original_process_one_msg),
        (InternalSession, "activate_session", _activate_session, _original_activate_session),
        (InternalSession, "create_subscription", _create_subscription,
         _original_session_create_subscription),
        (InternalSession, "create_monitored_items", _create_monitored_items,
         _original_session_create_monitored_items),
    )  # fmt: skip


def apply() -> None:
    for owner, name, patched, _original in _replacements():
        setattr(owner, name, patched)


def restore() -> None:
    for owner, name, _patched, original in _replacements():
        setattr(owner, name, original)

"""Resource limits of the OPC UA server against hostile or careless clients (`[opcua]`).

Connections, sessions, messages and subscriptions are bounded so that no client
without credentials can exhaust what an operator needs (issue 12), and so that a
subscription flood cannot starve the PLC pollers sharing the event loop:

- TCP connections: at most `max_connections`. One that has not completed Hello and
  OpenSecureChannel within `handshake_timeout_s` is closed, and so is one that has
  had no activated session for `activation_timeout_s` (before its first session, or
  after its session was closed or expired). When every slot is taken, a new
  connection closes the connection without an activated session that has got least
  far (nothing received, before no secure channel yet, before a channel, before a
  created session), the oldest first, so idle sockets never push out a client that
  is logging in.
- Sessions: at most `max_sessions` activated (below `max_connections`), of which at
  most `max_anonymous_sessions` anonymous: the difference is reserved for users who
  log in. ActivateSession beyond either is refused with Bad_TooManySessions.
  Session timeouts are clamped to [`min_session_timeout_s`, `max_session_timeout_s`]:
  a session without requests for its timeout expires, and then its connection.
- Messages: a chunk larger than `max_chunk_size` is refused from its header on
  (before and after Hello, before any of its body is buffered) with
  Bad_TcpMessageTooLarge and the connection closed; a message larger than
  `max_message_size` (or made of too many chunks) with Bad_RequestTooLarge.
- Subscriptions: at most `max_subscriptions_per_session` per session
  (Bad_TooManySubscriptions) and `max_monitored_items_per_session` monitored items
  per session, and `max_anonymous_monitored_items` for all anonymous sessions
  together (each item beyond: Bad_TooManyMonitoredItems). Every item on a changing
  value costs server CPU on every change, so the anonymous pool bounds what a client
  without credentials can make the server do. Monitored items are created in batches
  of `CREATE_BATCH`, yielding to the event loop between them.

Every refusal is reported once with one of `REFUSAL_REASONS` (metrics count them).
The enforcement is in `asyncua_patches.limits`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CREATE_BATCH",
    "MIN_CHUNK_SIZE",
    "REFUSAL_REASONS",
    "RefusalListener",
    "ServerLimits",
]

# Bounded label values of `invops_opcua_refusals_total{reason}`.
REFUSAL_REASONS: Final = (
    "connection_limit",  # a new connection refused: every slot holds an activated session
    "connection_evicted",  # a connection without activated session closed for a new one
    "handshake_timeout",  # no Hello + OpenSecureChannel within handshake_timeout_s
    "activation_timeout",  # no activated session for activation_timeout_s
    "session_limit",  # ActivateSession refused: max_sessions activated
    "anonymous_session_limit",  # ActivateSession refused: max_anonymous_sessions activated
    "message_too_large",  # a chunk or message above max_chunk_size / max_message_size
    "subscription_limit",  # CreateSubscription refused: max_subscriptions_per_session
    "monitored_item_limit",  # one per monitored item refused: max_monitored_items_per_session
    "anonymous_monitored_item_limit",  # one per item refused: max_anonymous_monitored_items
)
MIN_CHUNK_SIZE: Final = 8192  # OPC UA Part 6: buffers are at least 8,192 bytes
CREATE_BATCH: Final = 100  # monitored items created per event-loop step (~65 us each)

RefusalListener = Callable[[str, int], None]
"""Called as `listener(reason, count)` on the event loop, `reason` in REFUSAL_REASONS."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The limits of one server; the defaults are those of `[opcua]`."""

    max_connections: int = 100
    max_sessions: int = 50
    max_anonymous_sessions: int = 10
    handshake_timeout_s: float = 5.0
    activation_timeout_s: float = 10.0
    min_session_timeout_s: float = 5.0
    max_session_timeout_s: float = 300.0
    max_chunk_size: int = 65535
    max_message_size: int = 2 * 1024 * 1024
    max_subscriptions_per_session: int = 20
    max_monitored_items_per_session: int = 10_000
    max_anonymous_monitored_items: int = 2000

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why these limits cannot work together (None: they can)."""
        if self.max_connections < 1 or self.max_sessions < 1 or self.max_anonymous_sessions < 0:
            return "max_connections and max_sessions must be at least 1"
        if self.max_sessions >= self.max_connections:
            return "max_sessions must be below max_connections"
        if self.max_anonymous_sessions >= self.max_sessions:
            return "max_anonymous_sessions must be below max_sessions"
        if not 0 < self.min_session_timeout_s <= self.max_session_timeout_s:
            return "min_session_timeout_s must be above 0 and at most max_session_timeout_s"
        if not 0 < self.handshake_timeout_s <= self.activation_timeout_s:
            return "handshake_timeout_s must be above 0 and at most activation_timeout_s"
        if self.max_chunk_size < MIN_CHUNK_SIZE or self.max_message_size < self.max_chunk_size:
            return "max_chunk_size must be at least 8192 and at most max_message_size"
        if self.max_subscriptions_per_session < 1 or self.max_monitored_items_per_session < 1:
            return "the subscription and monitored item limits must be at least 1"
        if self.max_anonymous_monitored_items < 0:
            return "max_anonymous_monitored_items must be at least 0"
        return None

    @property
    def max_chunk_count(self) -> int:
        """Chunks one message may have: enough for `max_message_size` sent in chunks of
        the smallest buffer size a client may negotiate."""
        return math.ceil(self.max_message_size / MIN_CHUNK_SIZE) + 1

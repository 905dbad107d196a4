"""Denied method calls in the audit trail, attributable but bounded (issue 12, item 4).

Every denied call counts (`on_denied`, the metric), but the permanent trail gets,
per caller and window of `window_s` seconds (default 60) from the caller's first
denial:

- the first denial in full (the record `LedgerMethods` builds: user, role, method,
  arguments; plus the session and client address), written before the call is
  answered, as before;
- at the end of the window, if more followed, one summary record: action
  `denied_summary`, object `opcua_session:<session id>`, with the count, the
  denials per method and the times of the first and last of those denials
  (`first_at`, `last_at`). The summaries still open are written when the server
  stops (`close`); a session that closes gets its summary at its window's end.

A caller is (client address, session, user, role). One address gets at most
`max_sessions_per_source` callers per window; the denials of further sessions from
it share one caller (session `*`), and beyond `max_callers` in all, every new caller
shares one (`*` everywhere). So a flood of denied calls costs at most two records
per session and window, and a flood of new sessions at most
2 x (`max_sessions_per_source` + 1) records per address and window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

from inventory_core.domain.errors import InventoryError
from inventory_core.domain.model import AuditEvent
from inventory_core.log import get_logger

__all__ = ["DeniedCallAudit"]

log = get_logger(__name__)

AuditSink = Callable[[AuditEvent], Awaitable[None]]
CallerSession = Callable[[], tuple[str, str]]
"""(session id, client address) of the request being served (`security.current_session`)."""

SUMMARY_ACTION: Final = "denied_summary"
ANY: Final = "*"
_MAX_SESSIONS_NAMED: Final = 100  # sessions a shared caller's summary lists


def _no_session() -> tuple[str, str]:
    return ("", "")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Caller:
    source: str
    session: str
    user: str
    role: str


@dataclass(slots=True)
class _Window:
    started: float
    count: int = 0  # denials after the first, not yet written
    methods: Counter[str] = field(default_factory=Counter)
    first_at: datetime | None = None
    last_at: datetime | None = None
    sessions: set[str] = field(default_factory=set)


class DeniedCallAudit:
    """Writes denied calls to the audit trail: the first per caller and window in full,
    the rest as one summary at the window's end (see the module docstring)."""

    def __init__(
        self,
        record: AuditSink,
        *,
        window_s: float = 60.0,
        session: CallerSession = _no_session,
        on_denied: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        max_sessions_per_source: int = 16,
        max_callers: int = 4096,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._record = record
        self._window_s = window_s
        self._session = session
        self._on_denied = on_denied
        self._clock = clock
        self._now = now
        self._per_source = max_sessions_per_source
        self._max_callers = max_callers
        self._windows: dict[_Caller, _Window] = {}
        self._timer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def window_s(self) -> float:
        return self._window_s

    async def denied(self, event: AuditEvent, *, role: str) -> bool:
        """Count one denied call (`event`: its full record); True when it was written in
        full (the caller's first in this window), False when it waits for the summary."""
        if self._on_denied is not None:
            self._on_denied()
        session, source = self._session()
        now = self._clock()
        caller = self._caller(_Caller(source, session, event.user, role), now)
        window = self._windows.get(caller)
        if window is not None and now - window.started >= self._window_s:
            await self._summarise(caller, self._windows.pop(caller))
            window = None
        if window is None:
            self._windows[caller] = _Window(started=now)
            details = {**event.details, "session": session, "source": source}
            if caller.session == ANY:
                details["shared_window"] = True  # further denials of this address: one summary
            await self._write(replace(event, details=details))
            return True
        window.count += 1
        window.methods[event.object_id] += 1
        stamp = self._now()
        window.first_at = window.first_at or stamp
        window.last_at = stamp
        if len(window.sessions) < _MAX_SESSIONS_NAMED:
            window.sessions.add(session)
        self._schedule()
        return False

    async def flush_due(self) -> None:
        """Write the summaries of every window that has ended (the timer calls this)."""
        now = self._clock()
        due = [c for c, w in self._windows.items() if now - w.started >= self._window_s]
        for caller in due:
            window = self._windows.get(caller)
            # A denial may have ended and replaced this window while a summary was written.
            if window is not None and now - window.started >= self._window_s:
                del self._windows[caller]
                await self._summarise(caller, window)

    async def close(self) -> None:
        """Write every open summary now and stop the timer (server stop)."""
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        windows, self._windows = self._windows, {}
        for caller, window in windows.items():
            await self._summarise(caller, window)

    # -- pieces ---------------------------------------------------------------------

    def _caller(self, caller: _Caller, now: float) -> _Caller:
        """The caller this denial counts for: itself, or a shared one when too many.
        Ended windows with nothing to summarise are dropped here (the timer writes the
        others), so the table holds only windows still open or awaiting their summary."""
        if caller in self._windows:
            return caller
        open_callers = same_source = 0
        for other, window in list(self._windows.items()):
            if now - window.started >= self._window_s:
                if not window.count:
                    del self._windows[other]
                continue
            open_callers += 1
            if other.source == caller.source and other.session != ANY:
                same_source += 1
        if open_callers >= self._max_callers:
            return _Caller(ANY, ANY, ANY, ANY)
        if same_source >= self._per_source:
            return _Caller(caller.source, ANY, ANY, ANY)
        return caller

    def _schedule(self) -> None:
        if self._closed or (self._timer is not None and not self._timer.done()):
            return
        self._timer = asyncio.get_running_loop().create_task(
            self._flush_when_due(), name="opcua-denied-call-summaries"
        )

    async def _flush_when_due(self) -> None:
        while any(w.count for w in self._windows.values()):
            earliest = min(w.started for w in self._windows.values() if w.count)
            await asyncio.sleep(max(0.0, earliest + self._window_s - self._clock()))
            await self.flush_due()

    async def _summarise(self, caller: _Caller, window: _Window) -> None:
        if not window.count:
            return
        details: dict[str, object] = {
            "count": window.count,
            "methods": dict(sorted(window.methods.items())),
            "role": caller.role,
            "session": caller.session,
            "source": caller.source,
            "first_at": window.first_at.isoformat() if window.first_at else None,
            "last_at": window.last_at.isoformat() if window.last_at else None,
            "window_s": self._window_s,
        }
        if caller.session == ANY:
            details["sessions"] = len(window.sessions)
        event = AuditEvent(
            user=caller.user,
            action=SUMMARY_ACTION,
            object_type="opcua_session",
            object_id=caller.session or "-",
            reason=f"{window.count} more denied calls within {self._window_s:g} s of the "
            "first (audited in full)",
            details=details,
        )
        log.warning(
            "opcua_denied_calls_summary",
            user=caller.user,
            session=caller.session or "-",
            source=caller.source or "-",
            count=window.count,
        )
        await self._write(event)

    async def _write(self, event: AuditEvent) -> None:
        try:
            await self._record(event)
        except InventoryError as exc:  # the refusal stands even if the audit store is down
            log.error(
                "opcua_denied_call_not_audited",
                action=event.action,
                object_type=event.object_type,
                object_id=event.object_id,
                user=event.user,
                error=str(exc),
            )

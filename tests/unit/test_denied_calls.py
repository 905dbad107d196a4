"""opcua_server.denied_calls: per caller and window, the first denial in full, then one
summary with the count; bounded however many sessions deny (no sockets, a manual clock)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.domain.model import AuditEvent
from opcua_server.denied_calls import DeniedCallAudit
from tests.polling import eventually


class ManualClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Trail:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.down = False

    async def record(self, event: AuditEvent) -> None:
        if self.down:
            raise LedgerUnavailable("ledger down")
        self.events.append(event)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]


class Sessions:
    def __init__(self) -> None:
        self.current = ("i=10", "10.0.0.1")

    def __call__(self) -> tuple[str, str]:
        return self.current


def _event(method: str = "PostReceipt", user: str = "anonymous") -> AuditEvent:
    return AuditEvent(
        user=user,
        action="denied",
        object_type="opcua_method",
        object_id=method,
        reason="role viewer lacks operator",
        details={"method": method, "role": "viewer"},
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def trail() -> Trail:
    return Trail()


@pytest.fixture
def sessions() -> Sessions:
    return Sessions()


@pytest.fixture
def audit(trail: Trail, clock: ManualClock, sessions: Sessions) -> DeniedCallAudit:
    counted: list[None] = []
    audit = DeniedCallAudit(
        trail.record,
        window_s=60.0,
        session=sessions,
        on_denied=lambda: counted.append(None),
        clock=clock,
        now=lambda: datetime(2026, 1, 5, 6, 0, tzinfo=UTC),
        max_sessions_per_source=3,
        max_callers=5,
    )
    audit.counted = counted  # type: ignore[attr-defined]
    return audit


async def test_one_full_record_then_one_summary_with_the_count_per_window(
    audit: DeniedCallAudit, trail: Trail, clock: ManualClock
) -> None:
    firsts = [await audit.denied(_event(), role="viewer") for _ in range(40)]
    assert firsts == [True] + [False] * 39
    await audit.denied(_event("SetLotStatus"), role="viewer")
    assert trail.actions() == ["denied"]
    assert trail.events[0].details["session"] == "i=10"
    assert trail.events[0].details["source"] == "10.0.0.1"
    clock.now += 59.9
    await audit.flush_due()
    assert trail.actions() == ["denied"]
    clock.now += 0.1
    await audit.flush_due()
    assert trail.actions() == ["denied", "denied_summary"]
    summary = trail.events[1]
    assert summary.details["count"] == 40
    assert summary.details["methods"] == {"PostReceipt": 39, "SetLotStatus": 1}
    assert (summary.user, summary.object_type, summary.object_id) == (
        "anonymous",
        "opcua_session",
        "i=10",
    )
    assert len(audit.counted) == 41  # type: ignore[attr-defined]
    # the next window starts with a full record again
    assert await audit.denied(_event(), role="viewer") is True
    await audit.close()
    assert trail.actions() == ["denied", "denied_summary", "denied"]


async def test_a_lone_denial_gets_no_summary(
    audit: DeniedCallAudit, trail: Trail, clock: ManualClock
) -> None:
    await audit.denied(_event(), role="viewer")
    clock.now += 61
    await audit.flush_due()
    await audit.close()
    assert trail.actions() == ["denied"]


async def test_sessions_users_and_roles_are_separate_callers(
    audit: DeniedCallAudit, trail: Trail, sessions: Sessions
) -> None:
    await audit.denied(_event(), role="viewer")
    sessions.current = ("i=11", "10.0.0.1")
    await audit.denied(_event(), role="viewer")
    await audit.denied(_event(user="otto"), role="operator")
    await audit.denied(_event(user="otto"), role="viewer")
    assert trail.actions() == ["denied"] * 4


async def test_open_summaries_are_written_at_close(audit: DeniedCallAudit, trail: Trail) -> None:
    for _ in range(3):
        await audit.denied(_event(), role="viewer")
    await audit.close()
    assert trail.actions() == ["denied", "denied_summary"]
    assert trail.events[1].details["count"] == 2


async def test_many_sessions_from_one_address_share_one_window_beyond_the_limit(
    audit: DeniedCallAudit, trail: Trail, sessions: Sessions
) -> None:
    for n in range(20):  # a client opening a new session per denied call
        sessions.current = (f"i={100 + n}", "10.0.0.1")
        await audit.denied(_event(), role="viewer")
    await audit.close()
    # 3 sessions on their own (full record each), then one shared window: its first
    # denial in full, the other 16 in its summary
    assert trail.actions() == ["denied"] * 4 + ["denied_summary"]
    shared = trail.events[-1]
    assert (shared.object_id, shared.details["count"], shared.details["sessions"]) == (
        "*",
        16,
        16,
    )


async def test_callers_beyond_the_table_limit_share_one_window(
    audit: DeniedCallAudit, trail: Trail, sessions: Sessions
) -> None:
    for n in range(30):  # every denial from another address
        sessions.current = (f"i={n}", f"10.0.1.{n}")
        await audit.denied(_event(), role="viewer")
    await audit.close()
    assert trail.actions() == ["denied"] * 6 + ["denied_summary"]
    assert trail.events[-1].details["count"] == 24


async def test_a_denial_is_still_refused_when_the_audit_store_is_down(
    audit: DeniedCallAudit, trail: Trail
) -> None:
    trail.down = True
    assert await audit.denied(_event(), role="viewer") is True  # logged, not raised
    assert trail.events == []


async def test_the_summary_is_written_by_the_timer_when_the_window_ends(
    audit: DeniedCallAudit, trail: Trail, clock: ManualClock
) -> None:
    await audit.denied(_event(), role="viewer")
    clock.now += 59.99  # the timer starts with the first repeat, 10 ms before the end
    await audit.denied(_event(), role="viewer")
    await asyncio.sleep(0.05)
    assert trail.actions() == ["denied"]  # not due yet on the window's own clock
    clock.now += 0.02
    await eventually(
        lambda: trail.actions() == ["denied", "denied_summary"],
        "the timer's summary",
        timeout_s=5,
        interval_s=0.01,
    )
    assert trail.events[1].details["count"] == 1
    await audit.close()
    assert trail.actions() == ["denied", "denied_summary"]

"""Time as an injected dependency, so tests and simulators can drive it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Protocol

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class Clock(Protocol):
    def now(self) -> datetime:
        """Current UTC time (timezone-aware)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """Fixed-width UTC text ('2026-11-26T06:09:24.123456Z'): sorts like time on every backend."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Accept ISO 8601 (date, or date-time with or without zone; naive means UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def today(clock: Clock) -> date:
    return clock.now().astimezone(UTC).date()

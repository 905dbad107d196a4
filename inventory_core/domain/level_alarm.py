"""High/low level alarms as a pure exclusive-limit state machine (no OPC UA).

`LevelAlarm` is an exclusive limit alarm on a fill percentage (REFERENCE.md
section 3.5). One limit state at a time: Normal, Low, LowLow, High, HighHigh.
A limit fires when the value reaches it (>= for high limits, <= for low ones);
the state falls back to a less severe one only after the value moved past that
limit by `hysteresis_pct`, so noise around a limit does not chatter. A
bad-quality or missing value never changes the state. Each activation (Normal
to active, a more severe state, or the other side) needs a new acknowledgement
and confirmation; the condition is retained while it is active, unacknowledged
or unconfirmed. The plant view owns one per unit with limits; adapters
(`opcua_server.alarms`) publish its transitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise

__all__ = [
    "DEFAULT_SEVERITIES",
    "AlarmError",
    "AlarmTransition",
    "AlreadyAcknowledged",
    "AlreadyConfirmed",
    "LevelAlarm",
    "LevelLimits",
    "LimitState",
    "NotAcknowledged",
    "TransitionKind",
]


class LimitState(StrEnum):
    """Exclusive limit states; the values are the OPC UA state names."""

    NORMAL = "Normal"
    LOW_LOW = "LowLow"
    LOW = "Low"
    HIGH = "High"
    HIGH_HIGH = "HighHigh"


class TransitionKind(StrEnum):
    ACTIVATED = "activated"  # into a limit state that needs a new acknowledgement
    CHANGED = "changed"  # to a less severe limit state on the same side (still active)
    CLEARED = "cleared"  # back to Normal
    ACKNOWLEDGED = "acknowledged"
    CONFIRMED = "confirmed"


class AlarmError(Exception):
    """An acknowledge or confirm that the alarm's state does not allow."""


class AlreadyAcknowledged(AlarmError):
    """Acknowledge on an alarm that is already acknowledged."""


class AlreadyConfirmed(AlarmError):
    """Confirm on an alarm that is already confirmed."""


class NotAcknowledged(AlarmError):
    """Confirm before the alarm was acknowledged."""


_RANK = {
    LimitState.LOW_LOW: -2,
    LimitState.LOW: -1,
    LimitState.NORMAL: 0,
    LimitState.HIGH: 1,
    LimitState.HIGH_HIGH: 2,
}
_BY_RANK = {rank: state for state, rank in _RANK.items()}
DEFAULT_SEVERITIES = {
    LimitState.HIGH_HIGH: 800,
    LimitState.HIGH: 500,
    LimitState.LOW: 500,
    LimitState.LOW_LOW: 800,
}


@dataclass(frozen=True, slots=True)
class LevelLimits:
    """Limits in percent of capacity; any may be None (not monitored).

    The limits that are set must increase: low_low < low < high < high_high.
    """

    high_high: float | None = None
    high: float | None = None
    low: float | None = None
    low_low: float | None = None

    def __post_init__(self) -> None:
        ordered = [
            (name, value)
            for name, value in (
                ("low_low", self.low_low),
                ("low", self.low),
                ("high", self.high),
                ("high_high", self.high_high),
            )
            if value is not None
        ]
        for name, value in ordered:
            if not math.isfinite(value):
                raise ValueError(f"level limit {name} must be a finite number, got {value}")
        for (lower_name, lower), (upper_name, upper) in pairwise(ordered):
            if not lower < upper:
                raise ValueError(
                    f"level limit {lower_name} ({lower}) must be below {upper_name} ({upper})"
                )

    def limit(self, state: LimitState) -> float | None:
        return {
            LimitState.HIGH_HIGH: self.high_high,
            LimitState.HIGH: self.high,
            LimitState.LOW: self.low,
            LimitState.LOW_LOW: self.low_low,
        }.get(state)


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One change of a level alarm, with the condition's state after it."""

    unit: str
    kind: TransitionKind
    previous: LimitState
    state: LimitState
    active: bool
    acked: bool
    confirmed: bool
    retain: bool
    severity: int
    message: str
    at: datetime
    value: float | None
    limit: float | None  # the limit of `state` (of `previous` when cleared)
    comment: str = ""
    user: str = ""


class LevelAlarm:
    """Exclusive level alarm of one storage unit (pure; time comes in with each call)."""

    def __init__(
        self,
        unit: str,
        limits: LevelLimits,
        hysteresis_pct: float = 1.0,
        severities: dict[LimitState, int] | None = None,
    ) -> None:
        if not math.isfinite(hysteresis_pct) or hysteresis_pct < 0:
            raise ValueError(f"hysteresis must be a non-negative number, got {hysteresis_pct}")
        self.unit = unit
        self.limits = limits
        self.hysteresis_pct = hysteresis_pct
        self.severities = dict(DEFAULT_SEVERITIES)
        if severities:
            self.severities.update(severities)
        for state, severity in self.severities.items():
            if not 1 <= severity <= 1000:
                raise ValueError(f"severity of {state} must be 1..1000, got {severity}")
        self._state = LimitState.NORMAL
        self._acked = True
        self._confirmed = True
        self._severity = min(self.severities.values())
        self._value: float | None = None
        self._quality_good = True
        self._changed_at: datetime | None = None

    # -- state -----------------------------------------------------------------

    @property
    def state(self) -> LimitState:
        return self._state

    @property
    def active(self) -> bool:
        return self._state is not LimitState.NORMAL

    @property
    def acked(self) -> bool:
        return self._acked

    @property
    def confirmed(self) -> bool:
        return self._confirmed

    @property
    def retain(self) -> bool:
        return self.active or not self._acked or not self._confirmed

    @property
    def severity(self) -> int:
        return self._severity

    @property
    def value(self) -> float | None:
        """The last good value seen."""
        return self._value

    @property
    def quality_good(self) -> bool:
        return self._quality_good

    @property
    def changed_at(self) -> datetime | None:
        return self._changed_at

    # -- inputs ----------------------------------------------------------------

    def update(
        self, fill_percent: float | None, quality_good: bool, at: datetime
    ) -> AlarmTransition | None:
        """Feed one sample; returns the transition it caused, if any."""
        at = _utc(at)
        if fill_percent is None or not quality_good or not math.isfinite(fill_percent):
            self._quality_good = False
            return None
        self._quality_good = True
        self._value = fill_percent
        previous = self._state
        target = self._target(fill_percent)
        if target is previous:
            return None
        old, new = _RANK[previous], _RANK[target]
        self._state = target
        self._changed_at = at
        if new == 0:
            kind = TransitionKind.CLEARED
            limit = self.limits.limit(previous)
            message = f"{self.unit}: level {fill_percent:.1f} % back within limits"
        else:
            limit = self.limits.limit(target)
            self._severity = self.severities[target]
            message = f"{self.unit}: level {fill_percent:.1f} % reached {target} limit {limit:g} %"
            if old == 0 or old * new < 0 or abs(new) > abs(old):
                kind = TransitionKind.ACTIVATED
                self._acked = False
                self._confirmed = False
            else:
                kind = TransitionKind.CHANGED
        return self._transition(kind, previous, at, limit, message)

    def acknowledge(self, comment: str, user: str, at: datetime | None = None) -> AlarmTransition:
        """The operator saw the alarm. Raises AlreadyAcknowledged."""
        if self._acked:
            raise AlreadyAcknowledged(f"{self.unit}: level alarm is already acknowledged")
        self._acked = True
        return self._transition(
            TransitionKind.ACKNOWLEDGED,
            self._state,
            _utc(at or datetime.now(UTC)),
            self.limits.limit(self._state),
            f"{self.unit}: level alarm acknowledged by {user}",
            comment,
            user,
        )

    def confirm(self, comment: str, user: str, at: datetime | None = None) -> AlarmTransition:
        """The operator took the corrective action. Raises NotAcknowledged, AlreadyConfirmed."""
        if self._confirmed:
            raise AlreadyConfirmed(f"{self.unit}: level alarm is already confirmed")
        if not self._acked:
            raise NotAcknowledged(f"{self.unit}: acknowledge the level alarm before confirming")
        self._confirmed = True
        return self._transition(
            TransitionKind.CONFIRMED,
            self._state,
            _utc(at or datetime.now(UTC)),
            self.limits.limit(self._state),
            f"{self.unit}: level alarm confirmed by {user}",
            comment,
            user,
        )

    # -- rules -----------------------------------------------------------------

    def _target(self, value: float) -> LimitState:
        current = _RANK[self._state]
        raw = self._high_rank(value, 0.0) or self._low_rank(value, 0.0)
        if current == 0 or raw * current < 0 or abs(raw) >= abs(current):
            return _BY_RANK[raw]  # escalate (or cross to the other side) at once
        # Less severe on the same side: hold each limit until passed by the hysteresis.
        if current > 0:
            return _BY_RANK[min(self._high_rank(value, self.hysteresis_pct), current)]
        return _BY_RANK[max(self._low_rank(value, self.hysteresis_pct), current)]

    def _high_rank(self, value: float, slack: float) -> int:
        if self.limits.high_high is not None and value >= self.limits.high_high - slack:
            return 2
        if self.limits.high is not None and value >= self.limits.high - slack:
            return 1
        return 0

    def _low_rank(self, value: float, slack: float) -> int:
        if self.limits.low_low is not None and value <= self.limits.low_low + slack:
            return -2
        if self.limits.low is not None and value <= self.limits.low + slack:
            return -1
        return 0

    def _transition(
        self,
        kind: TransitionKind,
        previous: LimitState,
        at: datetime,
        limit: float | None,
        message: str,
        comment: str = "",
        user: str = "",
    ) -> AlarmTransition:
        return AlarmTransition(
            unit=self.unit,
            kind=kind,
            previous=previous,
            state=self._state,
            active=self.active,
            acked=self._acked,
            confirmed=self._confirmed,
            retain=self.retain,
            severity=self._severity,
            message=message,
            at=at,
            value=self._value,
            limit=limit,
            comment=comment,
            user=user,
        )


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamp {moment.isoformat()} has no time zone (expected UTC)")
    return moment.astimezone(UTC)

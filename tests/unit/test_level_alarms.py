"""The exclusive level alarm state machine: limits, hysteresis, quality, ack/confirm/retain."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from inventory_core.domain.level_alarm import (
    AlreadyAcknowledged,
    AlreadyConfirmed,
    LevelAlarm,
    LevelLimits,
    LimitState,
    NotAcknowledged,
    TransitionKind,
)

T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
LIMITS = LevelLimits(high_high=95.0, high=90.0, low=10.0, low_low=5.0)


def _at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


def _alarm(hysteresis: float = 1.0) -> LevelAlarm:
    return LevelAlarm("TK-101", LIMITS, hysteresis_pct=hysteresis)


def test_alarm_starts_normal_and_not_retained() -> None:
    alarm = _alarm()
    assert alarm.state is LimitState.NORMAL
    assert (alarm.active, alarm.acked, alarm.confirmed, alarm.retain) == (False, True, True, False)
    assert alarm.update(50.0, True, _at(0)) is None


def test_high_fires_on_reaching_the_limit_and_clears_only_past_the_hysteresis() -> None:
    alarm = _alarm(hysteresis=1.0)
    assert alarm.update(89.9, True, _at(0)) is None
    fired = alarm.update(90.0, True, _at(1))
    assert fired is not None
    assert fired.kind is TransitionKind.ACTIVATED
    assert (fired.previous, fired.state) == (LimitState.NORMAL, LimitState.HIGH)
    assert (fired.active, fired.acked, fired.confirmed, fired.retain) == (True, False, False, True)
    assert fired.severity == 500
    assert fired.limit == 90.0
    assert fired.at == _at(1)
    assert "TK-101" in fired.message and "High" in fired.message

    assert alarm.update(89.5, True, _at(2)) is None  # below High, inside the hysteresis
    assert alarm.update(89.0, True, _at(3)) is None  # exactly High - hysteresis: still held
    cleared = alarm.update(88.9, True, _at(4))
    assert cleared is not None
    assert cleared.kind is TransitionKind.CLEARED
    assert (cleared.previous, cleared.state) == (LimitState.HIGH, LimitState.NORMAL)
    assert cleared.active is False
    assert cleared.retain is True  # still unacknowledged and unconfirmed
    assert cleared.limit == 90.0


def test_low_and_low_low_mirror_the_high_side() -> None:
    alarm = _alarm(hysteresis=2.0)
    low = alarm.update(10.0, True, _at(0))
    assert low is not None and low.state is LimitState.LOW and low.severity == 500
    low_low = alarm.update(4.0, True, _at(1))
    assert low_low is not None and low_low.state is LimitState.LOW_LOW
    assert low_low.kind is TransitionKind.ACTIVATED and low_low.severity == 800
    assert alarm.update(6.5, True, _at(2)) is None  # above LowLow, inside its hysteresis
    back_to_low = alarm.update(7.5, True, _at(3))
    assert back_to_low is not None and back_to_low.state is LimitState.LOW
    assert back_to_low.kind is TransitionKind.CHANGED
    assert alarm.update(11.5, True, _at(4)) is None
    cleared = alarm.update(12.5, True, _at(5))
    assert cleared is not None and cleared.state is LimitState.NORMAL


def test_noise_around_a_limit_fires_once_and_clears_once() -> None:
    alarm = _alarm(hysteresis=1.0)
    rng = random.Random(7)
    transitions = []
    for second in range(500):  # ±0.4 % of noise around the High limit
        transition = alarm.update(90.0 + rng.uniform(-0.4, 0.4), True, _at(second))
        if transition is not None:
            transitions.append(transition)
    for second in range(500, 1000):  # noise around High - hysteresis/2: still held
        transition = alarm.update(89.5 + rng.uniform(-0.4, 0.4), True, _at(second))
        if transition is not None:
            transitions.append(transition)
    assert [t.kind for t in transitions] == [TransitionKind.ACTIVATED]
    cleared = alarm.update(85.0, True, _at(1000))
    assert cleared is not None and cleared.kind is TransitionKind.CLEARED
    for second in range(1001, 1500):  # noise just under the clear point never refires
        assert alarm.update(88.5 + rng.uniform(-0.4, 0.4), True, _at(second)) is None


def test_bad_quality_or_missing_values_hold_the_state() -> None:
    alarm = _alarm()
    assert alarm.update(92.0, True, _at(0)) is not None
    assert alarm.update(10.0, False, _at(1)) is None  # bad quality: ignored
    assert alarm.update(None, True, _at(2)) is None
    assert alarm.update(float("nan"), True, _at(3)) is None
    assert alarm.state is LimitState.HIGH
    assert alarm.quality_good is False
    assert alarm.value == 92.0  # the last good value
    assert alarm.update(91.0, True, _at(4)) is None
    assert alarm.quality_good is True
    normal = _alarm()
    assert normal.update(99.0, False, _at(0)) is None
    assert normal.state is LimitState.NORMAL


def test_high_high_supersedes_high_exclusively() -> None:
    alarm = _alarm(hysteresis=1.0)
    straight_up = alarm.update(97.0, True, _at(0))  # past both limits: one state, HighHigh
    assert straight_up is not None
    assert (straight_up.state, straight_up.severity) == (LimitState.HIGH_HIGH, 800)
    assert alarm.state is LimitState.HIGH_HIGH
    assert alarm.update(94.5, True, _at(1)) is None  # HighHigh held inside its hysteresis
    down = alarm.update(93.0, True, _at(2))
    assert down is not None
    assert (down.previous, down.state, down.kind) == (
        LimitState.HIGH_HIGH,
        LimitState.HIGH,
        TransitionKind.CHANGED,
    )
    assert down.severity == 500
    up = alarm.update(95.0, True, _at(3))
    assert up is not None and up.state is LimitState.HIGH_HIGH
    assert up.kind is TransitionKind.ACTIVATED


def test_crossing_to_the_other_side_is_immediate() -> None:
    alarm = _alarm(hysteresis=1.0)
    alarm.update(91.0, True, _at(0))
    crossed = alarm.update(3.0, True, _at(1))
    assert crossed is not None
    assert (crossed.previous, crossed.state) == (LimitState.HIGH, LimitState.LOW_LOW)
    assert crossed.kind is TransitionKind.ACTIVATED


def test_acknowledge_then_confirm_ends_retain_once_inactive() -> None:
    alarm = _alarm()
    alarm.update(92.0, True, _at(0))
    acked = alarm.acknowledge("seen", "alice", _at(1))
    assert acked.kind is TransitionKind.ACKNOWLEDGED
    assert (acked.active, acked.acked, acked.confirmed, acked.retain) == (True, True, False, True)
    assert (acked.comment, acked.user) == ("seen", "alice")
    with pytest.raises(AlreadyAcknowledged):
        alarm.acknowledge("again", "alice", _at(2))
    confirmed = alarm.confirm("valve closed", "bob", _at(3))
    assert (confirmed.acked, confirmed.confirmed) == (True, True)
    assert confirmed.retain is True  # still active
    with pytest.raises(AlreadyConfirmed):
        alarm.confirm("again", "bob", _at(4))
    cleared = alarm.update(80.0, True, _at(5))
    assert cleared is not None
    assert (cleared.active, cleared.retain) == (False, False)
    assert alarm.retain is False


def test_retain_ends_with_the_last_of_clear_ack_confirm() -> None:
    alarm = _alarm()
    alarm.update(92.0, True, _at(0))
    cleared = alarm.update(50.0, True, _at(1))
    assert cleared is not None and cleared.retain is True
    assert alarm.acknowledge("", "alice", _at(2)).retain is True
    assert alarm.confirm("", "alice", _at(3)).retain is False


def test_confirm_needs_acknowledge_first() -> None:
    alarm = _alarm()
    alarm.update(92.0, True, _at(0))
    with pytest.raises(NotAcknowledged):
        alarm.confirm("", "bob", _at(1))
    with pytest.raises(AlreadyAcknowledged):
        _alarm().acknowledge("", "bob", _at(1))  # nothing to acknowledge


def test_every_activation_needs_a_new_acknowledgement() -> None:
    alarm = _alarm()
    alarm.update(92.0, True, _at(0))
    alarm.acknowledge("", "alice", _at(1))
    alarm.confirm("", "alice", _at(2))
    escalated = alarm.update(96.0, True, _at(3))
    assert escalated is not None
    assert (escalated.acked, escalated.confirmed, escalated.retain) == (False, False, True)
    alarm.acknowledge("", "alice", _at(4))
    eased = alarm.update(92.0, True, _at(5))  # HighHigh -> High keeps the acknowledgement
    assert eased is not None and eased.acked is True
    alarm.update(50.0, True, _at(6))
    again = alarm.update(91.0, True, _at(7))
    assert again is not None and again.kind is TransitionKind.ACTIVATED
    assert again.acked is False


def test_limits_may_be_partial() -> None:
    alarm = LevelAlarm("SI-201", LevelLimits(high_high=98.0), hysteresis_pct=0.5)
    assert alarm.update(97.9, True, _at(0)) is None
    fired = alarm.update(98.0, True, _at(1))
    assert fired is not None and fired.state is LimitState.HIGH_HIGH
    assert alarm.update(97.6, True, _at(2)) is None
    assert alarm.update(0.0, True, _at(3)) is not None  # cleared; no low limits
    assert alarm.state is LimitState.NORMAL


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="low"):
        LevelLimits(high=90.0, low=95.0)
    with pytest.raises(ValueError, match="finite"):
        LevelLimits(high=float("inf"))
    with pytest.raises(ValueError, match="hysteresis"):
        LevelAlarm("TK-101", LIMITS, hysteresis_pct=-1.0)
    with pytest.raises(ValueError, match="time zone"):
        _alarm().update(50.0, True, datetime(2026, 1, 1))

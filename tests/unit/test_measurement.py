"""Measurement to movement: strapping, totalizer rollover, deadband batching, gaps, replay."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory_core.domain.derivation import (
    UINT32_MAX,
    Derived,
    DerivedMovement,
    DeriverConfig,
    HeldForReview,
    MovementDeriver,
    Reading,
    StrappingTable,
    TotalizerConfig,
    TotalizerDeriver,
    plc_idempotency_key,
    totalizer_delta,
)
from inventory_core.domain.errors import ValidationError
from inventory_core.domain.model import MovementKind
from inventory_core.domain.units import QUANTUM

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
D = Decimal


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def good(seconds: float, quantity: str | int | Decimal, **raw: object) -> Reading:
    return Reading(at(seconds), D(quantity), True, dict(raw))


def bad(seconds: float) -> Reading:
    return Reading(at(seconds), None, False)


def config(**overrides: object) -> DeriverConfig:
    values: dict[str, object] = {
        "unit": "TK-101",
        "deadband": D(10),
        "max_interval": timedelta(minutes=15),
        "settle": timedelta(seconds=30),
        "plausibility_limit": None,
    }
    values.update(overrides)
    return DeriverConfig(**values)  # type: ignore[arg-type]


def run(deriver: MovementDeriver, readings: Sequence[Reading]) -> list[Derived]:
    out: list[Derived] = []
    for reading in readings:
        out.extend(deriver.feed(reading))
    return out


def movements(items: Sequence[Derived]) -> list[DerivedMovement]:
    return [item for item in items if isinstance(item, DerivedMovement)]


def opened(quantity: str = "1000", **overrides: object) -> MovementDeriver:
    deriver = MovementDeriver(config(**overrides))
    assert len(deriver.feed(good(0, quantity))) == 1
    return deriver


# -- strapping -----------------------------------------------------------------

TABLE = StrappingTable.from_points([(0, 0), (100, 50), (1000, 950), (2000, 2000)])


@pytest.mark.parametrize(
    ("level", "volume"),
    [("0", "0"), ("50", "25"), ("100", "50"), ("550", "500"), ("1500", "1475"), ("2000", "2000")],
)
def test_strapping_interpolates_linearly_and_is_exact_at_points(level: str, volume: str) -> None:
    assert TABLE.volume_at(D(level)) == (D(volume), False)


def test_strapping_clamps_outside_the_table_and_flags_it() -> None:
    assert TABLE.volume_at(D("-0.1")) == (D(0), True)
    assert TABLE.volume_at(D("2000.5")) == (D(2000), True)


def test_strapping_result_is_quantized_to_ledger_resolution() -> None:
    table = StrappingTable.from_points([(0, 0), (3, 1)])
    assert table.volume_at(D(1)) == (D("0.333333"), False)


def test_strapping_from_points_accepts_text_and_floats() -> None:
    table = StrappingTable.from_points([("0", 0.0), (10.5, "21")])
    assert table.points == ((D(0), D(0)), (D("10.5"), D(21)))


def test_strapping_needs_two_points() -> None:
    with pytest.raises(ValidationError, match="at least 2 points, got 1"):
        StrappingTable.from_points([(0, 0)])


def test_strapping_rejects_a_level_that_does_not_increase_naming_the_point() -> None:
    with pytest.raises(ValidationError, match="strapping point 2: level 100 must be greater"):
        StrappingTable.from_points([(0, 0), (100, 10), (100, 20)])


def test_strapping_rejects_a_falling_volume_naming_the_point() -> None:
    with pytest.raises(ValidationError, match="strapping point 3: volume 15 is below"):
        StrappingTable.from_points([(0, 0), (100, 10), (200, 20), (300, 15)])


def test_strapping_rejects_a_non_number_naming_the_point() -> None:
    with pytest.raises(ValidationError, match="strapping point 1: quantity 'x'"):
        StrappingTable.from_points([(0, 0), ("x", 10)])


def test_strapping_allows_a_flat_stretch_and_inverts_to_its_lowest_level() -> None:
    table = StrappingTable.from_points([(0, 0), (100, 0), (200, 100)])
    assert table.volume_at(D(50)) == (D(0), False)
    assert table.level_at(D(0)) == (D(0), False)
    assert table.level_at(D(50)) == (D(150), False)


def test_level_at_inverts_and_clamps() -> None:
    assert TABLE.level_at(D(500)) == (D(550), False)
    assert TABLE.level_at(D(-1)) == (D(0), True)
    assert TABLE.level_at(D(2001)) == (D(2000), True)


strapping_tables = st.lists(
    st.tuples(
        st.decimals(min_value=D("0.001"), max_value=D(500), places=3),
        st.decimals(min_value=D(0), max_value=D(500), places=3),
    ),
    min_size=1,
    max_size=8,
).map(
    lambda steps: StrappingTable(
        tuple(
            (sum((s[0] for s in steps[:i]), D(0)), sum((s[1] for s in steps[:i]), D(0)))
            for i in range(len(steps) + 1)
        )
    )
)


@given(strapping_tables, st.lists(st.decimals(min_value=-10, max_value=5000, places=4)))
def test_strapping_volume_is_monotonic_and_exact_at_points(
    table: StrappingTable, levels: list[Decimal]
) -> None:
    for level, volume in table.points:
        assert table.volume_at(level) == (volume, False)
    volumes = [table.volume_at(level)[0] for level in sorted(levels)]
    assert volumes == sorted(volumes)


@given(strapping_tables, st.data())
def test_level_at_inverts_volume_at_when_volume_strictly_increases(
    table: StrappingTable, data: st.DataObject
) -> None:
    pairs = list(zip(table.points, table.points[1:], strict=False))
    if any(v1 == v0 for (_, v0), (_, v1) in pairs):
        return
    first, last = table.points[0][0], table.points[-1][0]
    level = data.draw(st.decimals(min_value=first, max_value=last, places=4))
    volume, clamped = table.volume_at(level)
    back, back_clamped = table.level_at(volume)
    steepest = max((l1 - l0) / (v1 - v0) for (l0, v0), (l1, v1) in pairs)
    assert not clamped and not back_clamped
    assert abs(back - level) <= QUANTUM * (1 + steepest)


# -- totalizer_delta -----------------------------------------------------------


def test_totalizer_counts_forward() -> None:
    step = totalizer_delta(1000, 1750)
    assert (step.delta, step.rolled_over, step.reset) == (750, False, False)
    assert totalizer_delta(5, 5).delta == 0


def test_totalizer_rolls_over_from_the_top_of_the_range() -> None:
    step = totalizer_delta(UINT32_MAX - 9, 20)
    assert (step.delta, step.rolled_over, step.reset) == (30, True, False)
    assert totalizer_delta(UINT32_MAX, 0).delta == 1


def test_totalizer_drop_from_the_lower_half_is_a_reset() -> None:
    step = totalizer_delta(1_000_000, 250)
    assert (step.delta, step.rolled_over, step.reset) == (250, False, True)


def test_totalizer_reset_threshold_is_half_the_range_by_default() -> None:
    half = (UINT32_MAX + 1) // 2
    assert totalizer_delta(half, 10).rolled_over
    assert totalizer_delta(half - 1, 10).reset


def test_totalizer_reset_threshold_zero_makes_every_drop_a_rollover() -> None:
    step = totalizer_delta(100, 40, reset_threshold=0)
    assert (step.delta, step.rolled_over) == (UINT32_MAX + 1 - 60, True)


def test_totalizer_with_a_configured_maximum() -> None:
    assert totalizer_delta(65_530, 4, maximum=65_535).delta == 10


@pytest.mark.parametrize(("previous", "current"), [(-1, 0), (0, UINT32_MAX + 1)])
def test_totalizer_rejects_values_outside_the_counter_range(previous: int, current: int) -> None:
    with pytest.raises(ValidationError, match=r"outside 0\.\.4294967295"):
        totalizer_delta(previous, current)


def _wrapped_sum(start: int, increments: list[int], maximum: int, **kwargs: int) -> int:
    total, counter = 0, start
    for increment in increments:
        current = (counter + increment) % (maximum + 1)
        total += totalizer_delta(counter, current, maximum=maximum, **kwargs).delta
        counter = current
    return total


@given(st.data(), st.sampled_from([UINT32_MAX, 65_535, 999_999, 7]))
def test_totalizer_deltas_sum_to_the_increments_without_reset_detection(
    data: st.DataObject, maximum: int
) -> None:
    start = data.draw(st.integers(0, maximum))
    increments = data.draw(st.lists(st.integers(0, maximum)))
    assert _wrapped_sum(start, increments, maximum, reset_threshold=0) == sum(increments)


@given(st.data(), st.sampled_from([UINT32_MAX, 65_535, 999_999, 7]))
def test_totalizer_deltas_sum_to_the_increments_below_half_the_range(
    data: st.DataObject, maximum: int
) -> None:
    start = data.draw(st.integers(0, maximum))
    increments = data.draw(st.lists(st.integers(0, (maximum + 1) // 2 - 1)))
    assert _wrapped_sum(start, increments, maximum) == sum(increments)


# -- MovementDeriver: opening and deadband ---------------------------------------


def test_first_good_reading_books_an_opening_count_of_the_whole_quantity() -> None:
    deriver = MovementDeriver(config())
    [opening] = movements(deriver.feed(good(0, "1234.5", level_mm=812)))
    assert opening.opening and opening.kind is MovementKind.COUNT
    assert (opening.quantity, opening.booked_before, opening.booked_after) == (
        D("1234.5"),
        None,
        D("1234.5"),
    )
    assert opening.window_start == opening.window_end == at(0)
    assert opening.raw == {"level_mm": 812}
    assert deriver.booked == D("1234.5")


def test_bad_readings_before_the_first_good_one_do_not_make_the_opening_span_a_gap() -> None:
    deriver = MovementDeriver(config())
    [opening] = movements(run(deriver, [bad(0), bad(1), good(2, "50")]))
    assert opening.opening and not opening.spans_gap
    assert not deriver.in_gap


def test_change_below_deadband_is_not_booked_before_max_interval() -> None:
    deriver = opened()
    assert run(deriver, [good(60, "1009.9"), good(600, "1009.9"), good(899, "1009.9")]) == []
    assert deriver.booked == D(1000)


def test_change_below_deadband_is_booked_once_max_interval_has_passed() -> None:
    deriver = opened()
    [m] = movements(run(deriver, [good(60, "1003"), good(900, "1003")]))
    assert (m.kind, m.quantity, m.window_start, m.window_end) == (
        MovementKind.RECEIPT,
        D(3),
        at(0),
        at(900),
    )


def test_no_change_is_never_booked_even_after_max_interval() -> None:
    deriver = opened()
    assert run(deriver, [good(900, "1000"), good(5000, "1000.0000001")]) == []


def test_epsilon_suppresses_tiny_changes_at_max_interval() -> None:
    deriver = opened(epsilon=D("0.5"))
    assert run(deriver, [good(900, "1000.5")]) == []
    [m] = movements(deriver.feed(good(901, "1000.6")))
    assert m.quantity == D("0.6")


def test_slow_drift_accumulates_against_the_booked_value() -> None:
    deriver = opened()
    # +3 every 20 s: each step is far below the deadband and below deadband/2.
    drift = [good(20 * i, 1000 + 3 * i) for i in range(1, 5)]  # ... 1012 at 80 s
    held_still = [good(90, "1012"), good(110, "1012")]
    [m] = movements(run(deriver, drift + held_still))
    assert (m.quantity, m.window_end) == (D(12), at(110))  # anchor moved at 80 s (1012 vs 1006)


def test_jump_beyond_deadband_waits_for_the_settle_time() -> None:
    deriver = opened()
    assert run(deriver, [good(10, "1100"), good(20, "1101"), good(39, "1100.5")]) == []
    [m] = movements(deriver.feed(good(40, "1100.2")))
    assert (m.kind, m.quantity, m.booked_before, m.booked_after) == (
        MovementKind.RECEIPT,
        D("100.2"),
        D(1000),
        D("1100.2"),
    )


def test_a_ramp_is_not_stable_and_books_only_when_it_stops() -> None:
    deriver = opened()
    ramp = [good(10 * i, 1000 - 6 * i) for i in range(1, 11)]  # -6 per 10 s down to 940
    assert run(deriver, ramp) == []
    [m] = movements(run(deriver, [good(110, "940"), good(130, "940"), good(140, "940")]))
    assert (m.kind, m.quantity, m.window_end) == (MovementKind.ISSUE, D(60), at(130))


def test_noise_below_half_the_deadband_does_not_restart_the_settle_time() -> None:
    deriver = opened()
    noisy = [good(5, "1050"), good(15, "1053"), good(25, "1047.5"), good(35, "1051")]
    [m] = movements(run(deriver, noisy))
    assert (m.quantity, m.window_end) == (D(51), at(35))


def test_zero_settle_books_as_soon_as_the_deadband_is_crossed() -> None:
    deriver = opened(settle=timedelta(0))
    [m] = movements(deriver.feed(good(1, "990")))
    assert (m.kind, m.quantity) == (MovementKind.ISSUE, D(10))


def test_max_interval_books_during_a_continuous_ramp() -> None:
    deriver = opened(max_interval=timedelta(seconds=60))
    ramp = [good(10 * i, 1000 + 8 * i) for i in range(1, 13)]
    booked = movements(run(deriver, ramp))
    assert [(m.window_start, m.window_end, m.quantity) for m in booked] == [
        (at(0), at(60), D(48)),
        (at(60), at(120), D(48)),
    ]


def test_a_booking_says_whether_the_flow_had_stopped() -> None:
    """Ramp bookings (max_interval) are not settled; the one after the signal came to
    rest is: that closes the advice the movements matched."""
    deriver = opened(max_interval=timedelta(seconds=60))
    ramp = [good(10 * i, 1000 + 8 * i) for i in range(1, 9)]  # rising until 80 s
    rest = [good(80 + 10 * i, 1064) for i in range(1, 5)]  # steady for 40 s > settle
    booked = movements(run(deriver, [*ramp, *rest]))
    assert [(m.quantity, m.settled, m.details()["settled"]) for m in booked] == [
        (D(48), False, False),
        (D(16), True, True),
    ]


def test_a_noisy_rest_is_settled_at_the_next_overdue_booking() -> None:
    """Noise above half the deadband keeps moving the stability anchor, so the signal
    never looks stable for `settle`; but an overdue booking of less than the deadband
    means it stayed at rest for max_interval: the flow stopped (the advice closes)."""
    deriver = opened(max_interval=timedelta(seconds=60))
    ramp = [good(10 * i, 1000 + 8 * i) for i in range(1, 7)]  # + 48 by 60 s: a ramp booking
    noisy = [good(60 + 10 * i, 1048 + (6 if i % 2 else -1)) for i in range(1, 7)]
    booked = movements(run(deriver, [*ramp, *noisy]))
    assert [(m.quantity, m.settled, m.drift) for m in booked] == [
        (D(48), False, False),
        (D(1), True, True),  # drift at rest: books no delivery, closes the one that came
    ]


def test_quantities_are_quantized_and_positive() -> None:
    deriver = opened(settle=timedelta(0))
    [m] = movements(deriver.feed(good(1, "979.12345678")))
    assert (m.kind, m.quantity, m.booked_after) == (
        MovementKind.ISSUE,
        D("20.876543"),
        D("979.123457"),
    )


# -- gaps, plausibility, review ------------------------------------------------


def test_bad_readings_book_nothing_and_open_a_gap() -> None:
    deriver = opened()
    assert run(deriver, [bad(10), Reading(at(11), D(5000), good=False), bad(5000)]) == []
    assert deriver.in_gap and deriver.booked == D(1000)


def test_first_good_reading_after_a_gap_books_the_whole_change_once() -> None:
    deriver = opened()
    run(deriver, [good(10, "1004")])  # pending, below deadband
    [m] = movements(run(deriver, [bad(20), bad(30), good(40, "1002", level_mm=700)]))
    assert (m.kind, m.quantity, m.spans_gap, m.gap_start, m.gap_end) == (
        MovementKind.RECEIPT,
        D(2),
        True,
        at(20),
        at(40),
    )
    assert (m.window_start, m.window_end, m.raw) == (at(0), at(40), {"level_mm": 700})
    assert run(deriver, [good(50, "1002"), good(100, "1002")]) == []


def test_gap_with_no_change_books_nothing_and_closes() -> None:
    deriver = opened()
    assert run(deriver, [bad(10), good(20, "1000")]) == []
    assert not deriver.in_gap


def test_the_movement_after_a_gap_that_showed_no_change_is_flagged_with_that_gap() -> None:
    deriver = opened(settle=timedelta(0))
    assert run(deriver, [bad(10), good(20, "1000"), bad(30), good(40, "1000")]) == []
    [m] = movements(run(deriver, [good(50, "1030")]))
    assert (m.window_start, m.spans_gap, m.gap_start, m.gap_end) == (at(0), True, at(10), at(40))
    [later] = movements(run(deriver, [good(60, "1060")]))
    assert (later.window_start, later.spans_gap, later.gap_start) == (at(50), False, None)


def test_implausible_change_across_a_gap_is_held_and_the_baseline_stays() -> None:
    deriver = opened(plausibility_limit=D(500))
    [held] = run(deriver, [bad(10), good(20, "1600", level_mm=1900)])
    assert isinstance(held, HeldForReview)
    assert (held.booked_quantity, held.measured_quantity, held.change) == (
        D(1000),
        D(1600),
        D(600),
    )
    assert (held.gap_start, held.gap_end, held.raw) == (at(10), at(20), {"level_mm": 1900})
    assert "plausibility limit 500" in held.reason
    assert deriver.booked == D(1000) and deriver.held == held
    # Nothing more is booked for the unit until an engineer rebases it.
    assert run(deriver, [good(30, "1600"), good(5000, "1700"), bad(5001), good(5002, "1")]) == []


def test_accept_measurement_rebases_after_review() -> None:
    deriver = opened(plausibility_limit=D(500))
    run(deriver, [bad(10), good(20, "1600")])
    deriver.accept_measurement(D(1600), at(25))
    assert (deriver.held, deriver.booked, deriver.booked_at) == (None, D(1600), at(25))
    assert run(deriver, [good(24, "0")]) == []  # before the rebase: ignored
    [m] = movements(run(deriver, [good(30, "1650"), good(60, "1650")]))
    assert (m.quantity, m.booked_before, m.window_start) == (D(50), D(1600), at(25))


def test_plausible_change_across_a_gap_books_regardless_of_deadband() -> None:
    deriver = opened(plausibility_limit=D(500))
    [m] = movements(run(deriver, [bad(10), good(11, "999.5")]))
    assert (m.kind, m.quantity, m.spans_gap) == (MovementKind.ISSUE, D("0.5"), True)


def test_plausibility_limit_applies_to_gaps_only() -> None:
    deriver = opened(plausibility_limit=D(500))
    [m] = movements(run(deriver, [good(10, "2000"), good(40, "2000")]))
    assert (m.quantity, m.spans_gap) == (D(1000), False)


def test_non_finite_quantity_is_a_bad_reading() -> None:
    deriver = opened()
    assert deriver.feed(Reading(at(10), D("NaN"))) == []
    assert deriver.in_gap


# -- keys, details, restart ----------------------------------------------------


def test_idempotency_key_is_unit_and_window_end_in_utc_with_microseconds() -> None:
    deriver = opened(settle=timedelta(0))
    cet = timezone(timedelta(hours=1))
    [m] = movements(deriver.feed(Reading(datetime(2026, 3, 1, 7, 0, 5, 250, tzinfo=cet), D(1))))
    assert m.idempotency_key == "plc:TK-101:2026-03-01T06:00:05.000250Z"
    assert m.idempotency_key == plc_idempotency_key("TK-101", m.window_end)


def test_details_are_json_ready() -> None:
    deriver = opened()
    raw: dict[str, object] = {"level_mm": D("812.5"), "status": 0, "read_at": at(40), "w": [1.5]}
    [m] = movements(run(deriver, [bad(10), Reading(at(40), D("1020"), raw=raw)]))
    details = m.details()
    assert json.loads(json.dumps(details)) == details
    assert details == {
        "derived_from": "plc",
        "unit": "TK-101",
        "opening": False,
        "booked_before": "1000",
        "booked_after": "1020",
        "window_start": "2026-03-01T06:00:00.000000Z",
        "window_end": "2026-03-01T06:00:40.000000Z",
        "spans_gap": True,
        "gap_start": "2026-03-01T06:00:10.000000Z",
        "gap_end": "2026-03-01T06:00:40.000000Z",
        "settled": False,
        "drift": False,
        "raw": {
            "level_mm": "812.5",
            "status": 0,
            "read_at": "2026-03-01T06:00:40.000000Z",
            "w": [1.5],
        },
    }


def test_held_details_are_json_ready() -> None:
    deriver = opened(plausibility_limit=D(1))
    [held] = run(deriver, [bad(10), good(20, "1002")])
    assert isinstance(held, HeldForReview)
    details = held.details()
    assert json.loads(json.dumps(details)) == details
    assert details["change"] == "2"


def test_readings_not_after_the_last_one_are_ignored() -> None:
    deriver = opened(settle=timedelta(0))
    assert len(deriver.feed(good(10, "1100"))) == 1
    assert run(deriver, [good(10, "5000"), good(5, "0"), bad(10)]) == []
    assert deriver.booked == D(1100) and not deriver.in_gap


def test_resume_continues_without_an_opening_and_treats_downtime_as_a_gap() -> None:
    deriver = MovementDeriver.resume(config(), D(1000), at(100))
    assert (deriver.booked, deriver.booked_at, deriver.in_gap) == (D(1000), at(100), True)
    assert deriver.feed(good(100, "1500")) == []  # already booked before the restart
    [m] = movements(deriver.feed(good(160, "1003")))
    assert (m.opening, m.spans_gap, m.gap_start, m.quantity, m.window_start) == (
        False,
        True,
        at(100),
        D(3),
        at(100),
    )


def test_after_a_resume_that_found_no_change_the_next_window_still_spans_the_downtime() -> None:
    deriver = MovementDeriver.resume(config(settle=timedelta(0)), D(1000), at(100))
    assert deriver.feed(good(160, "1000")) == []  # the plant stood still while invops was down
    [m] = movements(deriver.feed(good(170, "1020")))
    assert (m.window_start, m.spans_gap, m.gap_start, m.gap_end) == (
        at(100),
        True,
        at(100),
        at(160),
    )


def test_resume_holds_an_implausible_change_during_downtime() -> None:
    deriver = MovementDeriver.resume(config(plausibility_limit=D(100)), D(1000), at(0))
    [held] = deriver.feed(good(3600, "10"))
    assert isinstance(held, HeldForReview) and deriver.booked == D(1000)


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError, match="has no time zone"):
        Reading(datetime(2026, 3, 1), D(1))
    with pytest.raises(ValidationError, match="has no time zone"):
        MovementDeriver.resume(config(), D(1), datetime(2026, 3, 1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"deadband": D(0)}, "deadband 0 must be positive"),
        ({"unit": " "}, "unit must not be empty"),
        ({"max_interval": timedelta(0)}, "max_interval must be positive"),
        ({"settle": timedelta(seconds=-1)}, "settle must not be negative"),
        ({"plausibility_limit": D(0)}, "plausibility_limit must be positive"),
        ({"epsilon": D(10)}, "epsilon 10 must be in 0..deadband"),
    ],
)
def test_deriver_config_is_validated(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**overrides)


# -- MovementDeriver properties ------------------------------------------------

quantities = st.decimals(min_value=0, max_value=10_000, places=3)
deriver_configs = st.builds(
    config,
    deadband=st.decimals(min_value=D("0.5"), max_value=500, places=1),
    max_interval=st.integers(60, 3600).map(lambda s: timedelta(seconds=s)),
    settle=st.integers(0, 300).map(lambda s: timedelta(seconds=s)),
)
good_timelines = st.lists(st.tuples(st.integers(1, 600), quantities), min_size=1, max_size=40)


def _timeline(steps: list[tuple[int, Decimal]]) -> list[Reading]:
    readings, seconds = [], 0
    for step, quantity in steps:
        seconds += step
        readings.append(good(seconds, quantity, value=str(quantity)))
    return readings


@settings(max_examples=300)
@given(deriver_configs, good_timelines)
def test_movements_add_up_to_the_booked_quantity_and_track_the_measurement(
    cfg: DeriverConfig, steps: list[tuple[int, Decimal]]
) -> None:
    deriver = MovementDeriver(cfg)
    booked: list[DerivedMovement] = []
    for reading in _timeline(steps):
        before, before_at = deriver.booked, deriver.booked_at
        out = movements(deriver.feed(reading))
        assert len(out) <= 1
        booked += out
        assert sum((m.signed_quantity for m in booked), D(0)) == deriver.booked
        if not out:
            assert before is not None and before_at is not None
            overdue = reading.timestamp - before_at >= cfg.max_interval
            assert reading.quantity == before or not overdue
            continue
        [m] = out
        assert m.booked_after == reading.quantity and m.booked_before == before
        assert m.quantity > 0 or m.opening
        if not m.opening and m.quantity < cfg.deadband:
            assert m.window_end - m.window_start >= cfg.max_interval
    assert booked[0].opening and not any(m.opening for m in booked[1:])
    # Once the signal has stood still for the settle time, what is left is under the deadband,
    last = _timeline(steps)[-1]
    assert last.quantity is not None and deriver.booked is not None
    tail = last.timestamp + cfg.settle
    deriver.feed(Reading(tail + timedelta(seconds=1), last.quantity))
    assert abs(last.quantity - deriver.booked) < cfg.deadband
    # ... and after max_interval nothing is left at all.
    deriver.feed(Reading(tail + cfg.max_interval + timedelta(seconds=2), last.quantity))
    assert deriver.booked == last.quantity


@settings(max_examples=300)
@given(deriver_configs, good_timelines, st.lists(st.integers(0, 5), min_size=40, max_size=40))
def test_bad_readings_never_book_and_a_gap_books_at_most_once(
    cfg: DeriverConfig, steps: list[tuple[int, Decimal]], bad_runs: list[int]
) -> None:
    deriver = MovementDeriver(cfg)
    readings: list[Reading] = []
    for reading, run_length in zip(_timeline(steps), bad_runs, strict=False):
        start = reading.timestamp - timedelta(milliseconds=100 * (run_length + 1))
        readings += [
            Reading(start + timedelta(milliseconds=100 * i), None, False) for i in range(run_length)
        ]
        readings.append(reading)
    gap_open = False
    for reading in readings:
        before = deriver.booked
        out = movements(deriver.feed(reading))
        if reading.quantity is None:
            assert out == [] and deriver.booked == before
            gap_open = gap_open or before is not None
            continue
        recovering, gap_open = gap_open, False
        if recovering:
            assert before is not None
            assert len(out) == (0 if reading.quantity == before else 1)
            assert all(m.spans_gap and m.gap_end == reading.timestamp for m in out)
        for m in out:  # flagged exactly when its window holds unobserved time
            unobserved = [r.timestamp for r in readings if r.quantity is None]
            inside = [t for t in unobserved if m.window_start < t < m.window_end]
            assert m.spans_gap == bool(inside), m
            if inside:
                assert m.gap_start == inside[0]
                assert m.gap_end is not None and inside[-1] < m.gap_end <= m.window_end


@given(deriver_configs, good_timelines, st.sets(st.integers(0, 39)))
def test_replaying_the_same_readings_gives_the_same_movements_and_keys(
    cfg: DeriverConfig, steps: list[tuple[int, Decimal]], bad_positions: set[int]
) -> None:
    readings = [
        Reading(r.timestamp, None, False) if i in bad_positions else r
        for i, r in enumerate(_timeline(steps))
    ]
    first = run(MovementDeriver(cfg), readings)
    second = run(MovementDeriver(cfg), readings)
    assert first == second
    keys = [m.idempotency_key for m in movements(first)]
    assert len(set(keys)) == len(keys)
    assert all(key.startswith(f"plc:{cfg.unit}:") for key in keys)


# -- TotalizerDeriver ----------------------------------------------------------


def totalizer(**overrides: object) -> TotalizerDeriver:
    values: dict[str, object] = {
        "unit": "TK-101",
        "kind": MovementKind.ISSUE,
        "max_gap": timedelta(minutes=10),
        "max_interval": timedelta(minutes=5),
        "deadband": D(100),
        "scale": D("0.5"),
    }
    values.update(overrides)
    return TotalizerDeriver(TotalizerConfig(**values))  # type: ignore[arg-type]


def feed_counters(
    deriver: TotalizerDeriver, counters: Sequence[tuple[float, int | None]]
) -> list[Derived]:
    out: list[Derived] = []
    for seconds, counter in counters:
        out.extend(deriver.feed(counter, at(seconds)))
    return out


def test_totalizer_first_counter_is_only_a_baseline() -> None:
    deriver = totalizer()
    assert deriver.feed(123_456, at(0)) == []
    assert (deriver.total, deriver.pending) == (D(0), D(0))


def test_totalizer_books_once_the_deadband_has_accumulated() -> None:
    deriver = totalizer()
    assert feed_counters(deriver, [(0, 1000), (10, 1100), (20, 1199)]) == []
    assert deriver.pending == D("99.5")
    [m] = movements(deriver.feed(1200, at(30)))
    assert (m.kind, m.quantity, m.booked_before, m.booked_after) == (
        MovementKind.ISSUE,
        D(100),
        D(0),
        D(100),
    )
    assert (m.window_start, m.window_end) == (at(0), at(30))
    assert m.idempotency_key == "plc:TK-101:totalizer:2026-03-01T06:00:30.000000Z"
    assert m.raw == {"counter": 1200, "rollovers": 0, "resets": 0}


def test_totalizer_books_a_small_flow_after_max_interval() -> None:
    deriver = totalizer()
    [m] = movements(feed_counters(deriver, [(0, 10), (60, 12), (300, 14)]))
    assert (m.quantity, m.window_end) == (D(2), at(300))


def test_totalizer_bridges_a_rollover() -> None:
    deriver = totalizer(scale=D(1))
    [m] = movements(feed_counters(deriver, [(0, UINT32_MAX - 49), (10, 50)]))
    assert (m.quantity, m.raw["rollovers"]) == (D(100), 1)


def test_totalizer_counts_from_zero_after_a_reset() -> None:
    deriver = totalizer(scale=D(1))
    [m] = movements(feed_counters(deriver, [(0, 5000), (10, 150)]))
    assert (m.quantity, m.raw["resets"]) == (D(150), 1)


def test_totalizer_bridges_a_short_gap_and_flags_it() -> None:
    deriver = totalizer(scale=D(1))
    [m] = movements(feed_counters(deriver, [(0, 0), (10, None), (20, None), (30, 300)]))
    assert (m.quantity, m.spans_gap, m.gap_start, m.gap_end) == (D(300), True, at(10), at(30))


def test_totalizer_holds_a_gap_longer_than_max_gap_and_counts_on() -> None:
    deriver = totalizer(scale=D(1))
    out = feed_counters(deriver, [(0, 0), (10, 40), (20, None), (700, 9_000_000)])
    [held] = out
    assert isinstance(held, HeldForReview)
    assert (held.measured_quantity, held.change, held.gap_start, held.gap_end) == (
        None,
        None,
        at(10),
        at(700),
    )
    assert held.raw == {"counter_before": 40, "counter_after": 9_000_000}
    assert deriver.pending == D(40)
    [m] = movements(deriver.feed(9_000_060, at(710)))
    assert m.quantity == D(100)


def test_totalizer_resume_treats_long_downtime_as_unknown_flow() -> None:
    deriver = TotalizerDeriver.resume(totalizer().config, 500, at(0), total=D(7))
    assert deriver.feed(400, at(0)) == []
    [held] = deriver.feed(900, at(3600))
    assert isinstance(held, HeldForReview) and held.booked_quantity == D(7)


def test_totalizer_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="kind must be receipt or issue"):
        totalizer(kind=MovementKind.COUNT)
    with pytest.raises(ValidationError, match=r"outside 0\.\.65535"):
        totalizer(maximum=65_535).feed(70_000, at(0))

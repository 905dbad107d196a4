"""PLC measurements to ledger movements: strapping, totalizers, deadband batching.

Pure values and small state machines (no I/O, no clock): a PLC poller feeds
timestamped readings and posts what comes back. The rules follow REFERENCE.md
section 6 and SPEC.md section 5:

* a change is measured against the last *booked* quantity, not the last
  sample, so a slow drift accumulates into a movement instead of hiding
  under the deadband;
* a bad reading never books anything; the first good reading after a gap
  books the whole change as one movement, or holds it for review when it is
  implausibly large;
* idempotency keys depend only on (unit, window end), so the same readings
  replayed after a restart give the same keys and the ledger de-duplicates.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory_core.domain.errors import ValidationError
from inventory_core.domain.model import MovementKind
from inventory_core.domain.units import format_decimal, parse_quantity, quantize

__all__ = [
    "UINT32_MAX",
    "Derived",
    "DerivedMovement",
    "DeriverConfig",
    "HeldForReview",
    "MovementDeriver",
    "Reading",
    "StrappingTable",
    "TotalizerConfig",
    "TotalizerDelta",
    "TotalizerDeriver",
    "format_utc",
    "plc_idempotency_key",
    "totalizer_delta",
]

UINT32_MAX = 2**32 - 1
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ZERO = Decimal(0)


# -- time and keys -------------------------------------------------------------


def _utc(moment: datetime, what: str = "timestamp") -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError(f"{what} {moment.isoformat()} has no time zone (expected UTC)")
    return moment.astimezone(UTC)


def format_utc(moment: datetime) -> str:
    """Fixed-width UTC text with microseconds, the ledger's timestamp form."""
    return _utc(moment).strftime(_TIME_FORMAT)


def plc_idempotency_key(unit: str, window_end: datetime, stream: str | None = None) -> str:
    """`plc:<unit>:<window end>` (or `plc:<unit>:<stream>:<window end>`).

    Only the unit and the reading that closed the window go in, so replaying
    the same readings after a restart yields the same key and the ledger
    returns the first movement instead of booking twice.
    """
    prefix = f"plc:{unit}" if stream is None else f"plc:{unit}:{stream}"
    return f"{prefix}:{format_utc(window_end)}"


def _json_ready(value: object) -> object:
    """Raw PLC values as JSON values: decimals and times as text, containers recursively."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Decimal):
        return format_decimal(value) if value.is_finite() else str(value)
    if isinstance(value, datetime):
        return format_utc(value) if value.tzinfo else value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return str(value)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def _time_text(value: datetime | None) -> str | None:
    return None if value is None else format_utc(value)


# -- strapping -----------------------------------------------------------------


def _level(point: tuple[Decimal, Decimal]) -> Decimal:
    return point[0]


def _volume(point: tuple[Decimal, Decimal]) -> Decimal:
    return point[1]


@dataclass(frozen=True, slots=True)
class StrappingTable:
    """A tank's level-to-volume calibration, piecewise-linear between points.

    Levels strictly increase (one level, one volume); volumes may stay flat
    (a dead zone such as a sump) but never fall. Points and results are
    quantized to the ledger's resolution, so every value is on one grid.
    """

    points: tuple[tuple[Decimal, Decimal], ...]

    def __post_init__(self) -> None:
        points = tuple(_parse_point(i, point) for i, point in enumerate(self.points))
        if len(points) < 2:
            raise ValidationError(f"a strapping table needs at least 2 points, got {len(points)}")
        for i in range(1, len(points)):
            (level0, volume0), (level, volume) = points[i - 1], points[i]
            if level <= level0:
                raise ValidationError(
                    f"strapping point {i}: level {format_decimal(level)} must be greater than "
                    f"point {i - 1}'s level {format_decimal(level0)}"
                )
            if volume < volume0:
                raise ValidationError(
                    f"strapping point {i}: volume {format_decimal(volume)} is below "
                    f"point {i - 1}'s volume {format_decimal(volume0)}"
                )
        object.__setattr__(self, "points", points)

    @classmethod
    def from_points(cls, points: Iterable[tuple[object, object]]) -> StrappingTable:
        """Build from (level, volume) pairs given as numbers or text (config values)."""
        return cls(tuple(_parse_point(i, point) for i, point in enumerate(points)))

    def volume_at(self, level: Decimal) -> tuple[Decimal, bool]:
        """Volume at `level`, and whether it was clamped to the table's range.

        A clamped value is still usable but must be marked
        Uncertain_EngineeringUnitsExceeded by the caller.
        """
        first, last = self.points[0], self.points[-1]
        if level < first[0]:
            return first[1], True
        if level > last[0]:
            return last[1], True
        i = bisect_right(self.points, level, key=_level)  # first point above `level`
        if i == len(self.points):
            return last[1], False
        (level0, volume0), (level1, volume1) = self.points[i - 1], self.points[i]
        return quantize(volume0 + (volume1 - volume0) * (level - level0) / (level1 - level0)), False

    def level_at(self, volume: Decimal) -> tuple[Decimal, bool]:
        """The inverse of `volume_at` (simulators write a level from a volume).

        On a flat stretch the lowest level with that volume is returned.
        """
        first, last = self.points[0], self.points[-1]
        if volume < first[1]:
            return first[0], True
        if volume > last[1]:
            return last[0], True
        i = bisect_left(self.points, volume, key=_volume)  # first point at or above `volume`
        level1, volume1 = self.points[i]
        if volume1 == volume:
            return level1, False
        level0, volume0 = self.points[i - 1]
        return quantize(
            level0 + (level1 - level0) * (volume - volume0) / (volume1 - volume0)
        ), False


def _parse_point(index: int, point: object) -> tuple[Decimal, Decimal]:
    if not isinstance(point, tuple | list) or len(point) != 2:
        raise ValidationError(f"strapping point {index}: expected (level, volume), got {point!r}")
    try:
        return quantize(parse_quantity(point[0])), quantize(parse_quantity(point[1]))
    except ValidationError as exc:
        raise ValidationError(f"strapping point {index}: {exc}") from None


# -- totalizers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotalizerDelta:
    """Counts between two totalizer readings, and how the counter got there."""

    delta: int
    rolled_over: bool = False
    reset: bool = False


def totalizer_delta(
    previous: int,
    current: int,
    *,
    maximum: int = UINT32_MAX,
    reset_threshold: int | None = None,
) -> TotalizerDelta:
    """Counts between two readings of an unsigned counter that wraps after `maximum`.

    Rule for a drop (current < previous):
    - previous >= reset_threshold: a rollover, delta = (maximum + 1 - previous) + current;
    - previous < reset_threshold: a PLC counter reset, delta = current (it counted from 0).
    A wrap from below the threshold would mean more than `maximum + 1 - threshold`
    counts between two reads; with the default threshold, (maximum + 1) // 2, that
    is more than half the range, which a sensibly polled counter never does.
    Pass reset_threshold=0 for a counter that cannot be reset (every drop wraps).
    """
    if maximum < 1:
        raise ValidationError(f"totalizer maximum {maximum} must be at least 1")
    threshold = (maximum + 1) // 2 if reset_threshold is None else reset_threshold
    if not 0 <= threshold <= maximum + 1:
        raise ValidationError(f"reset threshold {threshold} is outside 0..{maximum + 1}")
    for name, value in (("previous", previous), ("current", current)):
        _check_counter(name, value, maximum)
    if current >= previous:
        return TotalizerDelta(current - previous)
    if previous < threshold:
        return TotalizerDelta(current, reset=True)
    return TotalizerDelta(maximum + 1 - previous + current, rolled_over=True)


def _check_counter(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValidationError(f"totalizer {name} value {value} is outside 0..{maximum}")


# -- what derivers return ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of a storage unit's quantity, already in its material's base unit.

    `good=False` or a missing/non-finite quantity is a bad sample (communication
    loss, bad status): it never books anything and opens a gap.
    """

    timestamp: datetime
    quantity: Decimal | None
    good: bool = True
    raw: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _utc(self.timestamp, "reading timestamp")

    @property
    def usable_quantity(self) -> Decimal | None:
        """The quantity at ledger resolution, or None for a bad sample."""
        if not self.good or self.quantity is None or not self.quantity.is_finite():
            return None
        return quantize(self.quantity)


@dataclass(frozen=True, slots=True)
class DerivedMovement:
    """A movement derived from measurements, ready to post with source `plc`.

    `quantity` is positive for receipts and issues; for the opening count it is
    the measured quantity itself. `booked_before`/`booked_after` are the
    deriver's booked quantity around the movement (None before the opening).
    """

    unit: str
    kind: MovementKind
    quantity: Decimal
    booked_before: Decimal | None
    booked_after: Decimal
    window_start: datetime
    window_end: datetime
    idempotency_key: str
    spans_gap: bool = False
    gap_start: datetime | None = None
    gap_end: datetime | None = None
    opening: bool = False
    # The signal had come to rest when this was booked (not a ramp's periodic booking):
    # the flow stopped, which closes the advice the movement matched.
    settled: bool = False
    # Less than the deadband, booked because max_interval passed: the signal drifting at
    # rest (noise, evaporation), not a flow; it matches no advice.
    drift: bool = False
    raw: dict[str, object] = field(default_factory=dict)

    @property
    def signed_quantity(self) -> Decimal:
        """Effect on the unit's stock: + receipt, - issue, + the opening count."""
        return -self.quantity if self.kind is MovementKind.ISSUE else self.quantity

    def details(self) -> dict[str, object]:
        """JSON-ready movement details for the ledger (REFERENCE 6.2: what to store)."""
        return {
            "derived_from": "plc",
            "unit": self.unit,
            "opening": self.opening,
            "booked_before": _text(self.booked_before),
            "booked_after": format_decimal(self.booked_after),
            "window_start": format_utc(self.window_start),
            "window_end": format_utc(self.window_end),
            "spans_gap": self.spans_gap,
            "gap_start": _time_text(self.gap_start),
            "gap_end": _time_text(self.gap_end),
            "settled": self.settled,
            "drift": self.drift,
            "raw": _json_ready(self.raw),
        }


@dataclass(frozen=True, slots=True)
class HeldForReview:
    """A change a deriver refuses to book; an engineer has to count the unit.

    `measured_quantity` is None when the change cannot be known at all (a
    totalizer that may have rolled over more than once).
    """

    unit: str
    reason: str
    booked_quantity: Decimal
    measured_quantity: Decimal | None
    gap_start: datetime
    gap_end: datetime
    raw: dict[str, object] = field(default_factory=dict)

    @property
    def change(self) -> Decimal | None:
        if self.measured_quantity is None:
            return None
        return self.measured_quantity - self.booked_quantity

    def details(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "reason": self.reason,
            "booked_quantity": format_decimal(self.booked_quantity),
            "measured_quantity": _text(self.measured_quantity),
            "change": _text(self.change),
            "gap_start": format_utc(self.gap_start),
            "gap_end": format_utc(self.gap_end),
            "raw": _json_ready(self.raw),
        }


Derived = DerivedMovement | HeldForReview


# -- level/weight deriver ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeriverConfig:
    """Batching rules for one storage unit; quantities in the material's base unit.

    `epsilon`: a change with |change| <= epsilon is no change (readings are
    first quantized to the ledger's resolution, so 0 means "any change of at
    least one quantum").
    """

    unit: str
    deadband: Decimal
    max_interval: timedelta
    settle: timedelta
    plausibility_limit: Decimal | None = None
    epsilon: Decimal = _ZERO

    def __post_init__(self) -> None:
        where = f"deriver for {self.unit!r}"
        if not self.unit.strip():
            raise ValidationError("deriver unit must not be empty")
        if not self.deadband > 0:
            raise ValidationError(f"{where}: deadband {self.deadband} must be positive")
        if not 0 <= self.epsilon < self.deadband:
            raise ValidationError(f"{where}: epsilon {self.epsilon} must be in 0..deadband")
        if self.max_interval <= timedelta(0):
            raise ValidationError(f"{where}: max_interval must be positive")
        if self.settle < timedelta(0):
            raise ValidationError(f"{where}: settle must not be negative")
        if self.plausibility_limit is not None and not self.plausibility_limit > 0:
            raise ValidationError(f"{where}: plausibility_limit must be positive")


@dataclass(frozen=True, slots=True)
class _Booking:
    quantity: Decimal
    at: datetime


class MovementDeriver:
    """Turns one storage unit's measured quantity (level, weight) into movements.

    Rules, in the order `feed` applies them:
    1. A reading not later than the last one seen is ignored (a replay after
       `resume` must not book again).
    2. While a review is held, nothing is booked until `accept_measurement`.
    3. A bad reading books nothing; the first one opens a gap.
    4. The first good reading ever books an opening count of the whole quantity.
    5. The first good reading after a gap books the whole change since the last
       booking as ONE movement flagged `spans_gap`, whatever the deadband and
       settle time, unless |change| > plausibility_limit: then a HeldForReview
       is returned and the booked baseline stays put. A gap that shows no
       change books nothing, but the window of the next movement still holds
       the unobserved stretch, so that movement is flagged `spans_gap` too.
    6. Otherwise the change since the last booking is booked when
       (a) |change| >= deadband and the signal is stable, or
       (b) max_interval has passed since the last booking,
       provided |change| > epsilon. Increase: receipt; decrease: issue.

    Stable: the signal has not moved by deadband/2 or more from its anchor (the
    reading where it last did) for at least `settle`. The anchor is not
    dragged along by each sample, so a slow ramp keeps moving it and is never
    stable, while noise below deadband/2 does not restart the settle time.
    """

    def __init__(self, config: DeriverConfig) -> None:
        self.config = config
        self._booking: _Booking | None = None
        self._last_seen: datetime | None = None
        self._anchor: Decimal = _ZERO
        self._stable_since: datetime | None = None
        self._gap_start: datetime | None = None
        # (first gap start, last gap end) inside the open window: set by a gap that
        # booked nothing, flagged on the window's movement
        self._window_gap: tuple[datetime, datetime] | None = None
        self._held: HeldForReview | None = None

    def __copy__(self) -> MovementDeriver:
        """A snapshot (every field is an immutable value): taken before each reading."""
        clone = MovementDeriver.__new__(MovementDeriver)
        clone.__dict__.update(self.__dict__)
        return clone

    @classmethod
    def resume(
        cls, config: DeriverConfig, booked_quantity: Decimal, booked_at: datetime
    ) -> MovementDeriver:
        """Continue from the ledger's last PLC-derived state, without an opening.

        The time since `booked_at` was not observed, so it is handled as a gap:
        the first good reading books the whole change as one `spans_gap`
        movement (or holds it when implausible). Readings up to `booked_at`
        are ignored, so replaying a buffer never books them twice.
        """
        deriver = cls(config)
        deriver._rebase(parse_quantity(booked_quantity), booked_at)
        deriver._gap_start = deriver._last_seen
        return deriver

    @property
    def booked(self) -> Decimal | None:
        """The last booked quantity (None before the opening)."""
        return None if self._booking is None else self._booking.quantity

    @property
    def booked_at(self) -> datetime | None:
        return None if self._booking is None else self._booking.at

    @property
    def in_gap(self) -> bool:
        return self._gap_start is not None

    @property
    def held(self) -> HeldForReview | None:
        """The review item blocking this unit, if any."""
        return self._held

    def accept_measurement(self, quantity: Decimal, timestamp: datetime) -> None:
        """Rebase on a quantity an engineer confirmed (after posting a count).

        Clears a held review and any gap; later readings are compared with
        `quantity` and readings up to `timestamp` are ignored. Books nothing:
        the engineer's count is the ledger's record.
        """
        self._rebase(parse_quantity(quantity), timestamp)

    def feed(self, reading: Reading) -> list[Derived]:
        """Process one reading; returns at most one movement or review item."""
        at = _utc(reading.timestamp)
        if self._last_seen is not None and at <= self._last_seen:
            return []
        self._last_seen = at
        if self._held is not None:
            return []
        quantity = reading.usable_quantity
        if quantity is None:
            if self._gap_start is None:
                self._gap_start = at
            return []
        if self._booking is None:
            return [self._open(quantity, at, reading)]
        if self._gap_start is not None:
            return self._recover(self._booking, self._gap_start, quantity, at, reading)
        return self._track(self._booking, quantity, at, reading)

    # -- rules -----------------------------------------------------------------

    def _open(self, quantity: Decimal, at: datetime, reading: Reading) -> DerivedMovement:
        self._rebase(quantity, at)
        return DerivedMovement(
            unit=self.config.unit,
            kind=MovementKind.COUNT,
            quantity=quantity,
            booked_before=None,
            booked_after=quantity,
            window_start=at,
            window_end=at,
            idempotency_key=plc_idempotency_key(self.config.unit, at),
            opening=True,
            raw=dict(reading.raw),
        )

    def _recover(
        self,
        booking: _Booking,
        gap_start: datetime,
        quantity: Decimal,
        at: datetime,
        reading: Reading,
    ) -> list[Derived]:
        self._gap_start = None
        self._move_anchor(quantity, at)
        gap = (gap_start if self._window_gap is None else self._window_gap[0], at)
        change = quantity - booking.quantity
        if abs(change) <= self.config.epsilon:
            self._window_gap = gap
            return []
        limit = self.config.plausibility_limit
        if limit is not None and abs(change) > limit:
            self._held = HeldForReview(
                unit=self.config.unit,
                reason=(
                    f"change of {format_decimal(change)} across a gap exceeds the "
                    f"plausibility limit {format_decimal(limit)}"
                ),
                booked_quantity=booking.quantity,
                measured_quantity=quantity,
                gap_start=gap[0],
                gap_end=at,
                raw=dict(reading.raw),
            )
            return [self._held]
        return [self._book(booking, quantity, at, reading, gap)]

    def _track(
        self, booking: _Booking, quantity: Decimal, at: datetime, reading: Reading
    ) -> list[Derived]:
        if abs(quantity - self._anchor) >= self.config.deadband / 2:
            self._move_anchor(quantity, at)
        change = abs(quantity - booking.quantity)
        if change <= self.config.epsilon:
            return []
        stable = self._stable_since is not None and at - self._stable_since >= self.config.settle
        settled = change >= self.config.deadband and stable
        overdue = at - booking.at >= self.config.max_interval
        if settled or overdue:
            # An overdue booking of less than the deadband is the signal at rest too: it
            # stayed within the deadband of the last booking for max_interval (and at least
            # settle), even where reading noise kept moving the stability anchor.
            drift = change < self.config.deadband
            quiet = drift and at - booking.at >= self.config.settle
            at_rest = stable or quiet
            gap = self._window_gap
            booked = self._book(booking, quantity, at, reading, gap, settled=at_rest)
            return [replace(booked, drift=drift)]
        return []

    def _book(
        self,
        booking: _Booking,
        quantity: Decimal,
        at: datetime,
        reading: Reading,
        gap: tuple[datetime, datetime] | None,
        *,
        settled: bool = False,
    ) -> DerivedMovement:
        self._booking = _Booking(quantity, at)
        self._window_gap = None
        increase = quantity > booking.quantity
        return DerivedMovement(
            unit=self.config.unit,
            kind=MovementKind.RECEIPT if increase else MovementKind.ISSUE,
            quantity=abs(quantity - booking.quantity),
            booked_before=booking.quantity,
            booked_after=quantity,
            window_start=booking.at,
            window_end=at,
            idempotency_key=plc_idempotency_key(self.config.unit, at),
            spans_gap=gap is not None,
            gap_start=None if gap is None else gap[0],
            gap_end=None if gap is None else gap[1],
            settled=settled,
            raw=dict(reading.raw),
        )

    def _move_anchor(self, quantity: Decimal, at: datetime) -> None:
        self._anchor = quantity
        self._stable_since = at

    def _rebase(self, quantity: Decimal, timestamp: datetime) -> None:
        at = _utc(timestamp)
        quantity = quantize(quantity)
        self._booking = _Booking(quantity, at)
        self._held = None
        self._gap_start = self._window_gap = None
        self._move_anchor(quantity, at)
        if self._last_seen is None or at > self._last_seen:
            self._last_seen = at


# -- flow totalizer deriver ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotalizerConfig:
    """A flow totalizer on a unit's inlet (receipt) or outlet (issue).

    `max_gap` must be shorter than the time the counter needs to roll over at
    full flow: after a longer unobserved stretch the delta cannot be known.
    `scale` is the base-unit quantity per count. What accumulated is booked
    once it reaches `deadband`, or at least every `max_interval`.
    """

    unit: str
    kind: MovementKind
    max_gap: timedelta
    max_interval: timedelta
    deadband: Decimal = _ZERO
    scale: Decimal = Decimal(1)
    maximum: int = UINT32_MAX
    reset_threshold: int | None = None
    name: str = "totalizer"

    def __post_init__(self) -> None:
        where = f"totalizer {self.name!r} of {self.unit!r}"
        if not self.unit.strip() or not self.name.strip():
            raise ValidationError("totalizer unit and name must not be empty")
        if self.kind not in (MovementKind.RECEIPT, MovementKind.ISSUE):
            raise ValidationError(f"{where}: kind must be receipt or issue, not {self.kind}")
        if self.max_gap <= timedelta(0) or self.max_interval <= timedelta(0):
            raise ValidationError(f"{where}: max_gap and max_interval must be positive")
        if self.deadband < 0 or not self.scale > 0 or self.maximum < 1:
            raise ValidationError(f"{where}: needs deadband >= 0, scale > 0, maximum >= 1")


class TotalizerDeriver:
    """Turns a flow totalizer's counter into receipt or issue movements.

    The first counter value is only a baseline (a counter value alone says
    nothing about flow). Deltas (`totalizer_delta`: rollover and reset aware)
    accumulate and are booked once they reach the deadband or max_interval
    has passed since the last booking. Short gaps are bridged by the counter
    itself (the movement is flagged `spans_gap`); after more than `max_gap`
    without a good counter, the counter may have rolled over more than once:
    nothing is booked for that stretch, a HeldForReview is returned and
    counting continues from the new value.
    """

    def __init__(self, config: TotalizerConfig) -> None:
        self.config = config
        self._last: tuple[int, datetime] | None = None
        self._last_seen: datetime | None = None
        self._window_start: datetime | None = None
        self._pending = _ZERO
        self._total = _ZERO
        self._gap_start: datetime | None = None
        self._window_gap: tuple[datetime, datetime] | None = None
        self._rollovers = 0
        self._resets = 0

    @classmethod
    def resume(
        cls,
        config: TotalizerConfig,
        counter: int,
        counter_at: datetime,
        total: Decimal = _ZERO,
    ) -> TotalizerDeriver:
        """Continue from the counter value of the last booking (kept in its raw details)."""
        _check_counter("resume", counter, config.maximum)
        deriver = cls(config)
        at = _utc(counter_at)
        deriver._last = (counter, at)
        deriver._last_seen = deriver._window_start = at
        deriver._total = quantize(total)
        return deriver

    @property
    def total(self) -> Decimal:
        """Quantity booked through this deriver since it started."""
        return self._total

    @property
    def pending(self) -> Decimal:
        """Quantity counted but not yet booked."""
        return self._pending

    def feed(self, counter: int | None, timestamp: datetime) -> list[Derived]:
        """Process one counter reading (None = bad); returns at most one item."""
        at = _utc(timestamp)
        if self._last_seen is not None and at <= self._last_seen:
            return []
        self._last_seen = at
        if counter is None:
            if self._gap_start is None:
                self._gap_start = at
            return []
        _check_counter("current", counter, self.config.maximum)
        last, self._last = self._last, (counter, at)
        if self._gap_start is not None:
            start = self._gap_start if self._window_gap is None else self._window_gap[0]
            self._window_gap = (start, at)
            self._gap_start = None
        if last is None:
            self._window_start, self._window_gap = at, None
            return []
        previous, previous_at = last
        if at - previous_at > self.config.max_gap:
            return [self._hold(previous, previous_at, counter, at)]
        step = totalizer_delta(
            previous,
            counter,
            maximum=self.config.maximum,
            reset_threshold=self.config.reset_threshold,
        )
        self._pending += quantize(Decimal(step.delta) * self.config.scale)
        self._rollovers += step.rolled_over
        self._resets += step.reset
        window_start = self._window_start or previous_at
        due = self._pending >= self.config.deadband or at - window_start >= self.config.max_interval
        if self._pending > 0 and due:
            return [self._book(window_start, counter, at)]
        return []

    def _hold(self, previous: int, previous_at: datetime, counter: int, at: datetime) -> Derived:
        return HeldForReview(
            unit=self.config.unit,
            reason=(
                f"{self.config.name} unobserved for {at - previous_at} (max_gap "
                f"{self.config.max_gap}): it may have rolled over more than once"
            ),
            booked_quantity=self._total,
            measured_quantity=None,
            gap_start=previous_at,
            gap_end=at,
            raw={"counter_before": previous, "counter_after": counter},
        )

    def _book(self, window_start: datetime, counter: int, at: datetime) -> DerivedMovement:
        gap = self._window_gap
        movement = DerivedMovement(
            unit=self.config.unit,
            kind=self.config.kind,
            quantity=self._pending,
            booked_before=self._total,
            booked_after=self._total + self._pending,
            window_start=window_start,
            window_end=at,
            idempotency_key=plc_idempotency_key(self.config.unit, at, self.config.name),
            spans_gap=gap is not None,
            gap_start=None if gap is None else gap[0],
            gap_end=None if gap is None else gap[1],
            raw={"counter": counter, "rollovers": self._rollovers, "resets": self._resets},
        )
        self._total += self._pending
        self._pending = _ZERO
        self._window_start = at
        self._window_gap = None
        self._rollovers = self._resets = 0
        return movement

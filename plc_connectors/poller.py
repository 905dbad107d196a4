"""One PLC's poll loop: fixed cadence, quality degradation on failure, backoff reconnects.

The poller is the only place that decides what a failure means for the values: the
first failed poll holds the last good values as UNCERTAIN_LAST_USABLE, and once the
failure has lasted `bad_after_s` they turn BAD (REFERENCE 3.4, 6.3). Links only
connect, read and translate errors; sinks only receive samples and state changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Protocol

from plc_connectors.errors import (
    MODBUS_EXCEPTION_NAMES,
    PlcConnectError,
    PlcError,
    PlcProtocolError,
    PlcTimeout,
    TagConfigError,
)
from plc_connectors.model import PlcLink, PlcSettings, Quality, Sample

log = logging.getLogger(__name__)

JITTER = (0.8, 1.2)


class SampleSink(Protocol):
    """Where a poller reports (the ledger bridge, metrics, health)."""

    def publish(self, sample: Sample) -> None:
        """Every good poll, and each change of quality while the link fails."""
        ...

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        """Transitions only: first good poll after a failure (or at start), first failure."""
        ...

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        """Every attempt (connect and/or read), for metrics; `error_reason` is a bounded
        label from `error_reason()`, None for a good poll."""
        ...


class Clock(Protocol):
    """Time for the poller: monotonic for scheduling, aware UTC for timestamps."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic`, UTC wall time, `asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def _exception_reason(code: int) -> str:
    return f"exception_{code:02x}"


# Every label `error_reason()` can return, in a fixed order: a closed set, so that metrics
# can show each (PLC, reason) series at 0 from the start. Modbus exception codes come from
# MODBUS_EXCEPTION_NAMES (the codes the Modbus spec defines: 01-08, 0a, 0b); a code outside
# it is counted as "protocol". 16 reasons.
ERROR_REASONS: Final[tuple[str, ...]] = (
    "timeout",
    "connect",
    *(_exception_reason(code) for code in sorted(MODBUS_EXCEPTION_NAMES)),
    "decode",
    "protocol",
    "config",
    "other",
)


def error_reason(exc: PlcError) -> str:
    """Metric label for a failure, one of `ERROR_REASONS`: timeout, connect, exception_XX
    (Modbus exception response with a code the spec defines, hex), decode (short or garbled
    reply), protocol (the PLC refused the request: an S7 item error, a Modbus exception code
    outside the spec), config (a tag that cannot work), other."""
    if isinstance(exc, PlcTimeout):
        return "timeout"
    if isinstance(exc, PlcConnectError):
        return "connect"
    if isinstance(exc, PlcProtocolError):
        code = exc.exception_code
        if code is not None:
            return _exception_reason(code) if code in MODBUS_EXCEPTION_NAMES else "protocol"
        return "decode" if exc.retryable else "protocol"
    if isinstance(exc, TagConfigError):
        return "config"
    return "other"


class _Phase(StrEnum):
    CONNECT = "connect"
    READ = "read"


class PlcPoller:
    """Polls one PLC forever: connect, read on a fixed cadence, publish samples.

    Polls never overlap (one loop). A failed attempt is retried after a capped,
    jittered exponential backoff that resets after a good poll; meanwhile the values
    go UNCERTAIN_LAST_USABLE, and BAD_COMMUNICATION (reads failing) or
    BAD_NO_COMMUNICATION (cannot connect) once the failure is `bad_after_s` old
    (default two poll intervals, counted from the start of the first failed attempt).
    Before the first good read they are BAD_WAITING until that same deadline.
    """

    def __init__(
        self,
        link: PlcLink,
        settings: PlcSettings,
        sink: SampleSink,
        clock: Clock | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        *,
        bad_after_s: float | None = None,
        rng: random.Random | None = None,
        start_offset_s: float = 0.0,
    ) -> None:
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if settings.poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be > 0")
        self._link = link
        self._start_offset_s = start_offset_s
        self._settings = settings
        self._sink = sink
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._bad_after = bad_after_s if bad_after_s is not None else 2 * settings.poll_interval_s
        self._rng = rng if rng is not None else random.Random()
        # the last good read (the link's dict) and when it was read
        self._last_good: tuple[dict[str, float | bool], datetime] | None = None
        self._up: bool | None = None  # None: nothing known yet
        self._failing_since: float | None = None  # monotonic start of the first failed attempt
        self._failed_phase = _Phase.CONNECT
        self._published: Quality | None = None  # degraded quality last published
        self._backoff = backoff_min_s

    @property
    def plc(self) -> str:
        return self._settings.name

    async def run(self) -> None:
        """Poll until cancelled; the link is closed on the way out."""
        try:
            await self._loop()
        finally:
            await self._link.close()

    async def _loop(self) -> None:
        clock = self._clock
        interval = self._settings.poll_interval_s
        connected = False
        if self._start_offset_s > 0:  # spread PLCs over the interval: no bursts
            await clock.sleep(self._start_offset_s)
        next_tick = clock.monotonic()
        while True:
            started = clock.monotonic()
            phase = _Phase.CONNECT
            try:
                if not connected:
                    await self._link.connect()
                    connected = True
                phase = _Phase.READ
                raw = await self._link.read()
            except PlcError as exc:
                self._sink.poll_finished(self.plc, clock.monotonic() - started, error_reason(exc))
                self._on_failure(exc, phase, started)
                if not _device_answered(exc):
                    connected = False
                    await self._link.close()
                retry_at = clock.monotonic() + self._next_backoff()
                await self._wait_degraded(retry_at)
                continue
            read_at = clock.now()
            finished = clock.monotonic()
            self._sink.poll_finished(self.plc, finished - started, None)
            recovered = self._failing_since is not None
            self._on_success(raw, read_at)
            if recovered:
                next_tick = started  # re-align the cadence on the first good poll
            next_tick += interval
            if next_tick <= finished:  # overran: skip the ticks already missed
                missed = math.floor((finished - next_tick) / interval) + 1
                log.debug("plc_poll_overrun plc=%s missed=%d", self.plc, missed)
                next_tick += missed * interval
            await clock.sleep(next_tick - clock.monotonic())

    # -- state ----------------------------------------------------------------------

    def _on_success(self, raw: dict[str, float | bool], read_at: datetime) -> None:
        self._last_good = (raw, read_at)  # the link's fresh dict: no per-tag copy
        self._failing_since = None
        self._published = None
        self._backoff = self._backoff_min
        if self._up is not True:
            self._up = True
            log.info("plc_up plc=%s", self.plc)
            self._sink.link_state(self.plc, True, None)
        self._sink.publish(Sample(self.plc, read_at, Quality.GOOD, read_at, raw))

    def _on_failure(self, exc: PlcError, phase: _Phase, started: float) -> None:
        if self._failing_since is None:
            self._failing_since = started
        self._failed_phase = phase
        if self._up is not False:
            self._up = False
            log.warning("plc_down plc=%s phase=%s error=%s", self.plc, phase, exc)
            self._sink.link_state(self.plc, False, exc)
        else:
            log.debug("plc_still_down plc=%s phase=%s error=%s", self.plc, phase, exc)
        self._publish_degraded()

    def _next_backoff(self) -> float:
        delay = self._backoff * self._rng.uniform(*JITTER)
        self._backoff = min(self._backoff * 2, self._backoff_max)
        return delay

    async def _wait_degraded(self, until: float) -> None:
        """Sleep until `until`, waking at the BAD deadline if it falls inside, so values
        go bad on time even while the next retry is far off."""
        clock = self._clock
        not_bad_yet = self._published in (Quality.UNCERTAIN_LAST_USABLE, Quality.BAD_WAITING)
        if self._failing_since is not None and not_bad_yet:
            bad_at = self._failing_since + self._bad_after
            if bad_at < until:
                await clock.sleep(bad_at - clock.monotonic())
                self._publish_degraded(at=max(bad_at, clock.monotonic()))
        await clock.sleep(until - clock.monotonic())

    def _degraded_quality(self, at: float) -> Quality:
        since = self._failing_since
        if since is not None and at - since < self._bad_after:
            if self._last_good is None:
                return Quality.BAD_WAITING
            return Quality.UNCERTAIN_LAST_USABLE
        if self._failed_phase is _Phase.CONNECT:
            return Quality.BAD_NO_COMMUNICATION
        return Quality.BAD_COMMUNICATION

    def _publish_degraded(self, at: float | None = None) -> None:
        """Publish the failure's quality (as of monotonic `at`, default now), once per
        change: the held values while UNCERTAIN_LAST_USABLE, none when BAD. Timers may
        fire a hair early, hence `at` for the BAD deadline."""
        quality = self._degraded_quality(self._clock.monotonic() if at is None else at)
        if quality is self._published:
            return
        self._published = quality
        now = self._clock.now()
        if quality is Quality.UNCERTAIN_LAST_USABLE and self._last_good is not None:
            held, read_at = self._last_good
            sample = Sample(self.plc, now, quality, read_at, held)
        else:
            sample = Sample(self.plc, now, quality, now, {})
        log.debug("plc_quality plc=%s quality=%s", self.plc, quality)
        self._sink.publish(sample)


def _device_answered(exc: PlcError) -> bool:
    """The PLC refused the request (Modbus exception response, S7 item error): the
    connection is fine, keep it. Anything else (timeouts, resets, garbled replies) means
    the connection is suspect and is closed before the next attempt."""
    if not isinstance(exc, PlcProtocolError):
        return False
    return exc.exception_code is not None or not exc.retryable


def start_offsets(settings: Sequence[PlcSettings]) -> dict[str, float]:
    """Start offset per PLC: PLCs sharing a poll interval are spread evenly over it.

    The poller keeps an absolute cadence, so PLCs started together would poll in
    bursts forever (one event loop decoding every PLC at once); spread, each poll
    finds the loop idle.
    """
    groups: dict[float, list[str]] = {}
    for plc in settings:
        groups.setdefault(plc.poll_interval_s, []).append(plc.name)
    return {
        name: interval * index / len(names)
        for interval, names in groups.items()
        for index, name in enumerate(names)
    }

"""PlcPoller: against a real Modbus server (quality through an outage and back), and with
a fake clock and a scripted link for the exact schedule (cadence, backoff, deadlines).

Timing assertions use the samples' own timestamps; waits are bounded waits for a
condition the recording sink signals, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inventory_core.cancel import cancel_and_wait
from plc_connectors import (
    Address,
    Area,
    DataType,
    ModbusLink,
    PlcConnectError,
    PlcError,
    PlcPoller,
    PlcProtocol,
    PlcProtocolError,
    PlcSettings,
    PlcTimeout,
    Quality,
    Sample,
    Tag,
    WordOrder,
    encode_registers,
)
from tests.integration.test_modbus_link import ModbusTestServer
from tests.polling import eventually

INTERVAL = 0.05
BAD = {Quality.BAD_COMMUNICATION, Quality.BAD_NO_COMMUNICATION}


@dataclass
class Poll:
    at: float  # time.monotonic() when reported
    seconds: float
    reason: str | None


@dataclass
class RecordingSink:
    """Records everything the poller reports."""

    samples: list[Sample] = field(default_factory=list)
    states: list[tuple[str, bool, PlcError | None]] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)

    def publish(self, sample: Sample) -> None:
        self.samples.append(sample)

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        self.states.append((plc, up, error))

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        self.polls.append(Poll(time.monotonic(), seconds, error_reason))

    def qualities(self, sample: Sample) -> set[Quality]:
        return {sample.quality}

    def good(self) -> list[Sample]:
        return [s for s in self.samples if self.qualities(s) == {Quality.GOOD}]

    def failures(self) -> list[Poll]:
        return [p for p in self.polls if p.reason is not None]


@contextlib.asynccontextmanager
async def running(poller: PlcPoller) -> AsyncIterator[asyncio.Task[None]]:
    """Run the poller as a task; always cancel it and wait until it has ended (again and
    again: Python 3.11 can lose a cancellation that meets a timing-out read)."""
    task = asyncio.create_task(poller.run())
    try:
        yield task
    finally:
        await cancel_and_wait([task], give_up_s=10)
        assert task.done(), "the poller did not stop"


@pytest.fixture
async def modbus() -> AsyncIterator[ModbusTestServer]:
    srv = ModbusTestServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def modbus_settings(port: int, tags: list[Tag]) -> PlcSettings:
    return PlcSettings(
        name="plc1",
        protocol=PlcProtocol.MODBUS,
        host="127.0.0.1",
        port=port,
        tags=tuple(tags),
        poll_interval_s=INTERVAL,
        timeout_s=0.2,
    )


TAGS = [
    Tag("level", Address(Area.HOLDING, 0), DataType.FLOAT32),
    Tag("total", Address(Area.HOLDING, 10), DataType.UINT32),
    Tag("pump", Address(Area.COIL, 0), DataType.BOOL),
]


async def _set_level(server: ModbusTestServer, value: float) -> None:
    await server.set(Area.HOLDING, 0, encode_registers(value, DataType.FLOAT32, WordOrder.ABCD))


async def test_outage_goes_uncertain_then_bad_and_recovers(modbus: ModbusTestServer) -> None:
    await _set_level(modbus, 42.0)
    await modbus.set(Area.HOLDING, 10, encode_registers(70_000, DataType.UINT32, WordOrder.ABCD))
    await modbus.set(Area.COIL, 0, [True])
    settings = modbus_settings(modbus.port, TAGS)
    sink = RecordingSink()
    poller = PlcPoller(ModbusLink(settings), settings, sink, backoff_min_s=0.05, backoff_max_s=0.4)
    async with running(poller):
        # -- good polls: every tag GOOD, source time = read time (aware UTC) ----------
        await eventually(lambda: len(sink.good()) >= 3, "three good polls")
        first = sink.good()[0]
        assert first.plc == "plc1"
        assert first.quality is Quality.GOOD
        assert first.values == {
            "level": 42.0,
            "total": 70_000.0,
            "pump": True,
        }
        assert first.source_time == first.read_at
        assert first.read_at.tzinfo is not None
        assert abs(datetime.now(UTC) - first.read_at) < timedelta(seconds=5)
        assert sink.states == [("plc1", True, None)]

        await _set_level(modbus, 43.0)
        await eventually(lambda: sink.good()[-1].values["level"] == 43.0, "the new level")
        last_good = sink.good()[-1]

        # -- outage: UNCERTAIN (last value, old source time), then BAD in 2 intervals ---
        await modbus.stop()
        await eventually(
            lambda: any(sink.qualities(s) == {Quality.BAD_NO_COMMUNICATION} for s in sink.samples),
            "a BAD_NO_COMMUNICATION sample",
        )
        degraded = sink.samples[sink.samples.index(last_good) + 1 :]
        uncertain = degraded[0]
        assert sink.qualities(uncertain) == {Quality.UNCERTAIN_LAST_USABLE}
        assert uncertain.values == last_good.values  # held as read, every tag
        assert uncertain.source_time == last_good.read_at < uncertain.read_at
        bad = next(s for s in degraded if sink.qualities(s) <= BAD)
        assert bad.values == {}
        assert bad.source_time == bad.read_at
        went_bad_after = (bad.read_at - uncertain.read_at).total_seconds()
        assert INTERVAL <= went_bad_after <= 2 * INTERVAL + 0.05
        assert [(plc, up) for plc, up, _ in sink.states] == [("plc1", True), ("plc1", False)]
        assert isinstance(sink.states[1][2], PlcConnectError | PlcTimeout)

        # -- let the backoff grow (0.05, 0.1, 0.2, 0.4), then restart: GOOD again ------
        outage_start = len(sink.polls)
        await eventually(lambda: len(sink.failures()) >= 4, "four failed polls")
        await modbus.start()  # same port
        await eventually(lambda: sink.good()[-1] is not last_good, "a good poll after the outage")
        recovered = sink.good()[-1]
        assert recovered.values["level"] == 43.0
        assert [up for _, up, _ in sink.states] == [True, False, True]

        # -- backoff was reset by the good poll: the next outage retries fast ----------
        await eventually(
            lambda: len(sink.good()) >= sink.good().index(recovered) + 3, "3 more good polls"
        )
        second_outage = len(sink.polls)
        await modbus.stop()
        await eventually(lambda: len(sink.polls) >= second_outage + 2
                         and sink.polls[-1].reason is not None
                         and sink.polls[-2].reason is not None,
                         "two failed polls in the second outage")  # fmt: skip
        fails = [p for p in sink.polls[second_outage:] if p.reason is not None]
        assert fails[1].at - fails[0].at < 0.05 * 1.2 + 0.05  # not the grown 0.4 s
        await modbus.start()
        await eventually(
            lambda: [up for _, up, _ in sink.states] == [True, False] * 2 + [True],
            "the link up again after the second outage",
        )

    # -- metrics: every attempt reported once, failures with bounded reasons ------------
    reasons = Counter(p.reason for p in sink.polls)
    assert reasons[None] == len(sink.good())
    assert reasons["connect"] >= 4
    assert set(reasons) <= {None, "connect", "timeout"}
    assert len(sink.polls[outage_start:]) > 0


async def test_exception_response_goes_bad_without_reconnecting(
    modbus: ModbusTestServer,
) -> None:
    tags = [Tag("ghost", Address(Area.HOLDING, 500), DataType.UINT16)]
    settings = modbus_settings(modbus.port, tags)
    sink = RecordingSink()
    link = ModbusLink(settings)
    poller = PlcPoller(link, settings, sink, backoff_min_s=0.05, backoff_max_s=0.1)
    async with running(poller):
        await eventually(
            lambda: len(sink.samples) >= 2 and len(sink.failures()) >= 3,
            "two samples and three failed reads",
        )
        assert link.connected  # the device answers: the connection is kept
    assert [sink.qualities(s) for s in sink.samples[:2]] == [
        {Quality.BAD_WAITING},  # never read: waiting for initial data
        {Quality.BAD_COMMUNICATION},  # reads keep failing
    ]
    assert {p.reason for p in sink.polls} == {"exception_02"}
    assert len(sink.states) == 1
    _, up, error = sink.states[0]
    assert not up and isinstance(error, PlcProtocolError) and error.exception_code == 2


async def test_poller_never_blocks_another_plc(modbus: ModbusTestServer) -> None:
    """One PLC timing out (a server that never answers) does not delay another PLC:
    each poller is its own task."""
    stalled = ModbusTestServer()
    await stalled.start()
    try:
        stalled.stall = True
        slow = modbus_settings(stalled.port, TAGS[:1])
        fast = modbus_settings(modbus.port, TAGS[:1])
        slow_sink, fast_sink = RecordingSink(), RecordingSink()
        pollers = [
            PlcPoller(ModbusLink(slow), slow, slow_sink, backoff_min_s=0.05),
            PlcPoller(ModbusLink(fast), fast, fast_sink, backoff_min_s=0.05),
        ]
        async with running(pollers[0]), running(pollers[1]):
            await eventually(lambda: slow_sink.failures(), "a timeout of the stalled PLC")
            await eventually(lambda: len(fast_sink.good()) >= 6, "six good polls of the other PLC")
        assert {p.reason for p in slow_sink.failures()} == {"timeout"}
        assert fast_sink.failures() == []
    finally:
        await stalled.stop()


# -- exact schedule with a fake clock and a scripted link --------------------------------


class FakeClock:
    """Monotonic time that moves only when the poller sleeps (or a fake read takes time).
    Past `horizon` the sleep never returns, and `done` is set: the run is over."""

    def __init__(self, horizon: float) -> None:
        self.t = 0.0
        self.horizon = horizon
        self.done = asyncio.Event()
        self.epoch = datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        target = self.t + max(0.0, seconds)
        if target > self.horizon:
            self.done.set()
            await asyncio.Event().wait()
        self.t = target
        await asyncio.sleep(0)

    def at(self, moment: datetime) -> float:
        return round((moment - self.epoch).total_seconds(), 6)


@dataclass
class ScriptedLink:
    """A PlcLink whose connects/reads fail or succeed as scripted (then succeed)."""

    clock: FakeClock
    connects: list[PlcError | None] = field(default_factory=list)
    reads: list[PlcError | None] = field(default_factory=list)
    read_takes: float = 0.0
    name: str = "fake"
    calls: list[tuple[str, float]] = field(default_factory=list)

    async def connect(self) -> None:
        self.calls.append(("connect", self.clock.t))
        if self.connects and (exc := self.connects.pop(0)) is not None:
            raise exc

    async def read(self) -> dict[str, float | bool]:
        self.calls.append(("read", self.clock.t))
        self.clock.t += self.read_takes
        if self.reads and (exc := self.reads.pop(0)) is not None:
            raise exc
        return {"x": 1.0}

    async def close(self) -> None:
        self.calls.append(("close", self.clock.t))


class MidJitter:
    """rng stand-in: jitter factor exactly 1.0 so backoff delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def fake_settings(interval: float) -> PlcSettings:
    tag = Tag("x", Address(Area.HOLDING, 0), DataType.UINT16)
    return PlcSettings("fake", PlcProtocol.MODBUS, "-", 0, (tag,), poll_interval_s=interval)


async def run_fake(
    link: ScriptedLink, interval: float, **kw: Any
) -> tuple[RecordingSink, FakeClock]:
    sink = RecordingSink()
    poller = PlcPoller(link, fake_settings(interval), sink, link.clock, rng=MidJitter(), **kw)  # type: ignore[arg-type]
    async with running(poller):
        await asyncio.wait_for(link.clock.done.wait(), 5)
    return sink, link.clock


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    yield FakeClock(horizon=1.0)


async def test_cadence_is_fixed_not_interval_after_work(clock: FakeClock) -> None:
    link = ScriptedLink(clock, read_takes=0.03)
    sink, _ = await run_fake(link, 0.1)
    starts = [t for kind, t in link.calls if kind == "read"]
    assert starts == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert [clock.at(s.read_at) for s in sink.samples[:3]] == pytest.approx([0.03, 0.13, 0.23])


async def test_overrun_skips_missed_ticks(clock: FakeClock) -> None:
    link = ScriptedLink(clock, read_takes=0.25)
    await run_fake(link, 0.1)
    starts = [t for kind, t in link.calls if kind == "read"]
    assert starts == pytest.approx([0.0, 0.3, 0.6, 0.9])


async def test_backoff_doubles_caps_jitters_and_resets() -> None:
    clock = FakeClock(horizon=9.0)
    down = PlcConnectError("refused")
    link = ScriptedLink(clock, connects=[down] * 5, reads=[None, None, PlcTimeout("t")])
    sink, _ = await run_fake(link, 0.1, backoff_min_s=0.5, backoff_max_s=2.0)
    connects = [t for kind, t in link.calls if kind == "connect"]
    # delays 0.5, 1, 2, 2 (capped), 2; good polls at 7.5 and 7.6; read timeout at 7.7;
    # the reset backoff retries at 7.7 + 0.5
    assert connects[:7] == pytest.approx([0.0, 0.5, 1.5, 3.5, 5.5, 7.5, 8.2])
    assert [p.reason for p in sink.polls[:9]] == ["connect"] * 5 + [None, None, "timeout", None]
    assert [up for _, up, _ in sink.states] == [False, True, False, True]


async def test_jitter_stays_within_20_percent() -> None:
    clock = FakeClock(horizon=60.0)
    link = ScriptedLink(clock, connects=[PlcConnectError("refused")] * 1000)
    sink = RecordingSink()
    poller = PlcPoller(link, fake_settings(1.0), sink, clock, backoff_min_s=1.0, backoff_max_s=1.0)
    async with running(poller):
        await asyncio.wait_for(clock.done.wait(), 5)
    connects = [t for kind, t in link.calls if kind == "connect"]
    gaps = [b - a for a, b in itertools.pairwise(connects)]
    assert len(gaps) > 40
    assert all(0.8 - 1e-9 <= g <= 1.2 + 1e-9 for g in gaps)
    assert max(gaps) - min(gaps) > 0.05  # actually jittered


async def test_before_first_read_waiting_then_no_communication_on_time() -> None:
    """The BAD deadline fires inside a long backoff sleep, not at the next retry."""
    clock = FakeClock(horizon=20.0)
    link = ScriptedLink(clock, connects=[PlcConnectError("refused")] * 100)
    sink, _ = await run_fake(link, 1.0, backoff_min_s=5.0, backoff_max_s=10.0)
    assert [(clock.at(s.read_at), sink.qualities(s)) for s in sink.samples] == [
        (0.0, {Quality.BAD_WAITING}),
        (2.0, {Quality.BAD_NO_COMMUNICATION}),  # 2 x poll interval, mid-backoff
    ]
    assert all(s.values == {} and s.source_time == s.read_at for s in sink.samples)
    assert [s.reading("x")[:2] for s in sink.samples] == [
        (None, Quality.BAD_WAITING),
        (None, Quality.BAD_NO_COMMUNICATION),
    ]
    assert len(sink.states) == 1  # one transition, however many failed retries


async def test_read_failure_holds_last_value_then_bad_communication() -> None:
    clock = FakeClock(horizon=3.5)
    link = ScriptedLink(clock, reads=[None] + [PlcTimeout("t")] * 10)
    sink, _ = await run_fake(link, 1.0, backoff_min_s=0.5, backoff_max_s=0.5)
    summary = [(clock.at(s.read_at), sink.qualities(s), s.values.get("x")) for s in sink.samples]
    assert summary == [
        (0.0, {Quality.GOOD}, 1.0),
        (1.0, {Quality.UNCERTAIN_LAST_USABLE}, 1.0),  # held, still the t=0 source time
        (3.0, {Quality.BAD_COMMUNICATION}, None),  # 2 s after the first failed poll began
    ]
    assert sink.samples[1].source_time == clock.epoch
    assert sink.samples[1].values is sink.samples[0].values  # the read's dict, held as-is


async def test_refusals_keep_the_connection_suspect_replies_close_it() -> None:
    clock = FakeClock(horizon=2.0)
    refused = PlcProtocolError.from_modbus_exception(2, "fake read hr:0")
    item_error = PlcProtocolError("fake read DB9.DBB0+4: object does not exist")
    garbled = PlcProtocolError("fake read hr:0: short read", retryable=True)
    link = ScriptedLink(clock, reads=[refused, item_error, garbled, PlcTimeout("t")])
    await run_fake(link, 0.1, backoff_min_s=0.1, backoff_max_s=0.1)
    kinds = [kind for kind, _ in link.calls]
    # the PLC answered twice (exception response, S7-style item error): same connection;
    # a garbled reply and a timeout each close it and reconnect
    assert kinds[:10] == [
        "connect", "read", "read", "read", "close", "connect", "read", "close", "connect", "read",
    ]  # fmt: skip
    assert kinds[-1] == "close"  # run() closes the link when cancelled

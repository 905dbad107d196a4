"""Flow totalizer counts -> meter flows in the ledger (meter versus gauge, domain.meter).

`feed` is called on every poll with the unit's counter (None when the reading is not
good): cheap and synchronous, it runs the unit's `TotalizerDeriver` (rollover and reset
aware) and queues what it books; `run` writes the queue to the ledger, in order, off
the poll loop, retrying while the ledger is unreachable (the queue is bounded: the
oldest flows are dropped first, and said so). At start each unit resumes from the
counter its last meter flow ended at, so the flow while the service was down is
counted, unless the gap is longer than the meter's `max_gap` (then it may have rolled
over more than once: nothing is counted for it, and that is logged).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from inventory_core.clock import format_timestamp, parse_timestamp
from inventory_core.domain.derivation import (
    DerivedMovement,
    HeldForReview,
    TotalizerConfig,
    TotalizerDeriver,
)
from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.domain.meter import MeterDirection, MeterFlow
from inventory_core.domain.model import StorageUnitId
from inventory_core.ledger import Ledger
from inventory_core.log import get_logger

__all__ = ["MeterService", "MeteredUnit"]

log = get_logger(__name__)
QUEUE_MAX = 10_000
RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class MeteredUnit:
    """A unit's flow totalizer: its deriver settings (scale = base units per count), and
    how the polled value is the raw counter again (value = counter * tag_scale + offset)."""

    unit: StorageUnitId
    direction: MeterDirection
    uom: str
    config: TotalizerConfig
    tag_scale: float = 1.0
    tag_offset: float = 0.0

    def counter(self, value: float) -> int:
        return round((value - self.tag_offset) / self.tag_scale)


class MeterService:
    def __init__(self, ledger: Ledger, units: Sequence[MeteredUnit]) -> None:
        self._ledger = ledger
        self._units = {u.unit: u for u in units}
        self._derivers = {u.unit: TotalizerDeriver(u.config) for u in units}
        self._queue: deque[MeterFlow] = deque(maxlen=QUEUE_MAX)
        self._ready = asyncio.Event()

    @property
    def units(self) -> tuple[StorageUnitId, ...]:
        return tuple(self._units)

    async def start(self) -> None:
        """Resume each unit's counting from its last meter flow."""
        last = await self._ledger.last_meter_flows()
        for unit_id, spec in self._units.items():
            flow = last.get(unit_id)
            if flow is not None:
                at = parse_timestamp(flow.window_end)
                self._derivers[unit_id] = TotalizerDeriver.resume(spec.config, flow.counter, at)

    def feed_value(self, unit: StorageUnitId, value: float | None, at: datetime) -> None:
        """One polled value of `unit`'s totalizer tag (None: not good)."""
        spec = self._units.get(unit)
        if spec is not None:
            self.feed(unit, None if value is None else spec.counter(value), at)

    def feed(self, unit: StorageUnitId, counter: int | None, at: datetime) -> None:
        """One reading of `unit`'s counter (None: not good)."""
        spec = self._units.get(unit)
        if spec is None:
            return
        if counter is not None and not 0 <= counter <= spec.config.maximum:
            log.warning("meter_counter_out_of_range", unit=unit, counter=counter)
            counter = None
        for item in self._derivers[unit].feed(counter, at):
            if isinstance(item, DerivedMovement):
                self._put(
                    MeterFlow(
                        unit,
                        spec.direction,
                        item.quantity,
                        spec.uom,
                        format_timestamp(item.window_start),
                        format_timestamp(item.window_end),
                        int(str(item.raw["counter"])),
                    )
                )
            elif isinstance(item, HeldForReview):
                log.warning("meter_gap_not_counted", unit=unit, reason=item.reason)

    def _put(self, flow: MeterFlow) -> None:
        if len(self._queue) == self._queue.maxlen:
            log.warning("meter_flow_dropped", unit=self._queue[0].unit, reason="queue full")
        self._queue.append(flow)
        self._ready.set()

    async def run(self) -> None:
        """Write the queued flows to the ledger, in order, until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                flow = self._queue[0]
                try:
                    await self._ledger.record_meter_flow(flow)
                except LedgerUnavailable as exc:
                    log.info("meter_flow_retry", unit=flow.unit, error=str(exc))
                    await asyncio.sleep(RETRY_S)
                    continue
                self._queue.popleft()

    async def drain(self) -> None:
        """Write what is queued now (tests, shutdown)."""
        while self._queue:
            await self._ledger.record_meter_flow(self._queue.popleft())

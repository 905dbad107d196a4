"""The PLC side feeding the ledger: poller samples -> MeasurementService, off the poll loop.

Pollers call `publish` synchronously on every poll; the bridge queues the
sample and one task feeds the measurement service in order, so a slow ledger
commit never delays a poll. Tags are named `<unit>.<role>`; the unit's level
or weight tag is its quantity signal. A value that is not GOOD (a link
retrying or down) is a bad reading: it never becomes a movement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from inventory_core.domain.model import StorageUnitId
from inventory_core.measurements import MeasurementService
from plc_connectors import PlcError, Quality, Sample

log = logging.getLogger(__name__)
QUEUE_LIMIT = 10_000


@dataclass(slots=True)
class LinkStatus:
    """What the service knows about one PLC link (for health and metrics)."""

    up: bool = False
    last_error: str | None = None
    polls: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class LedgerBridge:
    """A poller sink that turns samples of quantity tags into measurements."""

    def __init__(
        self, service: MeasurementService, quantity_tags: Mapping[str, StorageUnitId]
    ) -> None:
        self._service = service
        self._quantity_tags = dict(quantity_tags)
        self._queue: asyncio.Queue[Sample] = asyncio.Queue(QUEUE_LIMIT)
        self.links: dict[str, LinkStatus] = {}
        self.latest: dict[str, Sample] = {}
        self.dropped = 0

    # -- SampleSink -----------------------------------------------------------

    def publish(self, sample: Sample) -> None:
        self.latest[sample.plc] = sample
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.dropped += 1  # the ledger is far behind; the next sample carries the state
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("measurement queue full: %d samples dropped", self.dropped)

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        status = self.links.setdefault(plc, LinkStatus())
        status.up = up
        status.last_error = None if error is None else str(error)

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        status = self.links.setdefault(plc, LinkStatus())
        status.polls += 1
        if error_reason is not None:
            status.errors[error_reason] = status.errors.get(error_reason, 0) + 1

    # -- feeding the ledger -----------------------------------------------------

    async def run(self) -> None:
        """Feed queued samples to the measurement service until cancelled."""
        while True:
            sample = await self._queue.get()
            await self.feed(sample)

    async def drain(self) -> None:
        """Feed whatever is queued (at shutdown, or in tests)."""
        while not self._queue.empty():
            await self.feed(self._queue.get_nowait())

    async def feed(self, sample: Sample) -> None:
        for tag, value in sample.values.items():
            unit = self._quantity_tags.get(tag)
            if unit is None:
                continue
            good = value.quality is Quality.GOOD and not isinstance(value.value, bool)
            reading = float(value.value) if good and value.value is not None else None
            await self._service.feed(
                unit,
                reading,
                good=good,
                timestamp=value.source_time if good else sample.read_at,
                raw={"tag": tag, "value": value.value, "quality": str(value.quality)},
            )

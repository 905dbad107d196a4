"""The PLC side feeding the ledger: poller samples -> MeasurementService, off the poll loop.

Pollers call `publish` synchronously on every poll; the bridge keeps the newest
sample per PLC and one feeder task per PLC feeds the measurement service in
order, so a slow ledger commit never delays a poll or another PLC. Tags are
named `<unit>.<role>`; the unit's level or weight tag is its quantity signal.
A value that is not GOOD (a link retrying or down) is a bad reading: it never
becomes a movement.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping

from inventory_core.cancel import cancel_and_wait
from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.domain.model import StorageUnitId
from inventory_core.log import get_logger
from inventory_core.measurement_service import MeasurementService, UnitReading
from invops.reading_buffer import ReadingBuffer
from plc_connectors import Quality, Sample

log = get_logger(__name__)
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0

QuantityTags = tuple[tuple[str, StorageUnitId], ...]  # (tag, unit) pairs of one PLC


def quantity_tags_per_plc(
    quantity_tags: Mapping[str, StorageUnitId], plc_tags: Mapping[str, Iterable[str]]
) -> dict[str, QuantityTags]:
    """PLC -> the (tag, unit) pairs of its quantity tags, in the PLC's tag order: what a
    sample of that PLC is looked up for (its other tags are never touched)."""
    return {
        plc: tuple((tag, quantity_tags[tag]) for tag in tags if tag in quantity_tags)
        for plc, tags in plc_tags.items()
    }


def sample_quantity_tags(
    sample: Sample, per_plc: Mapping[str, QuantityTags], quantity_tags: Mapping[str, StorageUnitId]
) -> QuantityTags:
    """The quantity tags to look up in `sample`: its PLC's, precomputed; for a PLC not
    configured, those present in its values (a BAD sample of such a PLC has none)."""
    found = per_plc.get(sample.plc)
    if found is not None:
        return found
    return tuple((tag, quantity_tags[tag]) for tag in sample.values if tag in quantity_tags)


class LedgerBridge:
    """Turns samples of quantity tags into measurements (`PlantFeed` hands it every
    poller's samples; link state and poll metrics go elsewhere)."""

    def __init__(
        self,
        service: MeasurementService,
        quantity_tags: Mapping[str, StorageUnitId],
        *,
        plc_tags: Mapping[str, Iterable[str]] | None = None,
        buffer: ReadingBuffer | None = None,
        ledger_state: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self._service = service
        self._quantity_tags = dict(quantity_tags)
        # PLC -> its quantity tags (plc_tags: PLC -> every tag it reads, as configured)
        self._per_plc = quantity_tags_per_plc(self._quantity_tags, plc_tags or {})
        # Newest unfed sample per PLC: when the ledger side falls behind, older samples
        # are skipped (movements are derived against the last booked quantity, so the
        # next sample still carries the whole change) and the lag stays bounded.
        self._pending: dict[str, Sample] = {}
        self._feeders: dict[str, asyncio.Task[None]] = {}
        self._failure: Exception | None = None
        self._wakeup = asyncio.Event()
        self._buffer = buffer
        self._ledger_state = ledger_state or (lambda up, error: None)
        self._retry_at = 0.0
        self._backoff = RETRY_MIN_S
        self.coalesced = 0

    def publish(self, sample: Sample) -> None:
        """Queue a poller's sample (sync, never blocks: the newest per PLC is kept)."""
        if sample.plc in self._pending:
            self.coalesced += 1
            if self.coalesced == 1 or self.coalesced % 10_000 == 0:
                log.warning("measurements_behind_polling", coalesced=self.coalesced)
        self._pending[sample.plc] = sample
        self._wakeup.set()

    # -- feeding the ledger -----------------------------------------------------

    async def run(self) -> None:
        """Feed queued samples to the measurement service until cancelled: one feeder
        task per PLC, so a PLC whose movements wait on a commit never holds back the
        others. While the ledger is away, buffer readings and retry with backoff."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_MIN_S):
                        await self._wakeup.wait()
                self._wakeup.clear()
                if self._failure is not None:
                    raise self._failure
                for plc in list(self._pending):
                    if plc not in self._feeders:
                        self._feeders[plc] = loop.create_task(self._feed_plc(plc))
                if self.buffering and not self._feeders and loop.time() >= self._retry_at:
                    await self.replay()
        finally:
            await cancel_and_wait(list(self._feeders.values()))

    async def _feed_plc(self, plc: str) -> None:
        try:
            while (sample := self._pending.pop(plc, None)) is not None:
                await self.feed(sample)
        except Exception as exc:  # surfaces in run(), which fails the service
            self._failure = exc
        finally:
            del self._feeders[plc]
            self._wakeup.set()

    async def drain(self) -> None:
        """Feed every pending sample (one per PLC, concurrently): at shutdown, after
        `run` has stopped."""
        samples, self._pending = list(self._pending.values()), {}
        if samples:
            await asyncio.gather(*(self.feed(sample) for sample in samples))

    @property
    def buffering(self) -> bool:
        """Whether readings are waiting on disk for the ledger to come back."""
        return self._buffer is not None and len(self._buffer) > 0

    async def feed(self, sample: Sample) -> None:
        """Feed one sample: its units together (each appears once per sample, and their
        postings then share ledger commits); the next sample waits for this one."""
        readings = []
        for tag, unit in sample_quantity_tags(sample, self._per_plc, self._quantity_tags):
            value, quality, source_time = sample.reading(tag)
            good = quality is Quality.GOOD and not isinstance(value, bool)
            reading = float(value) if good and value is not None else None
            at = source_time if good else sample.read_at
            raw: dict[str, object] = {"tag": tag, "value": value, "quality": str(quality)}
            readings.append(UnitReading(unit, reading, good, at, raw))
        if self.buffering:
            assert self._buffer is not None
            for unit_reading in readings:
                self._buffer.append(*unit_reading)  # keep the order behind what waits
            return
        results = await self._service.feed_many(readings)
        for unit_reading, result in zip(readings, results, strict=True):
            if result is None:
                continue
            if not isinstance(result, LedgerUnavailable) or self._buffer is None:
                raise result
            self._went_down(result)
            self._buffer.append(*unit_reading)

    async def replay(self) -> None:
        """Feed buffered readings, oldest first, until the buffer is empty or the ledger
        fails again (then back off)."""
        assert self._buffer is not None
        while batch := self._buffer.oldest():
            done = None
            try:
                for item in batch:
                    await self._service.feed(
                        StorageUnitId(item.unit),
                        item.value,
                        good=item.good,
                        timestamp=item.timestamp,
                        raw=item.raw,
                    )
                    done = item.id
            except LedgerUnavailable as exc:
                if done is not None:
                    self._buffer.remove_through(done)
                self._went_down(exc)
                return
            self._buffer.remove_through(batch[-1].id)
        self._backoff = RETRY_MIN_S
        log.warning("ledger_back_buffer_replayed")
        self._ledger_state(True, None)

    def _went_down(self, exc: Exception) -> None:
        if self._backoff == RETRY_MIN_S:
            log.warning("ledger_unavailable_buffering_readings", error=str(exc))
        self._ledger_state(False, str(exc))
        loop = asyncio.get_running_loop()
        self._retry_at = loop.time() + self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2, RETRY_MAX_S)

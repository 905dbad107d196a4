"""OPC UA HistoryRead of values, stored in the ledger database (`value_history`).

`LedgerHistoryStorage` implements asyncua's `HistoryStorageInterface` on an
`inventory_core` `HistoryStore`:

* the server registers each historized variable under a series name
  (`register(nodeid, "TK-101.Level")`), so stored history survives restarts
  and address-space rebuilds whatever NodeIds are assigned;
* `save_node_value` only buffers; a task owned by the storage flushes the
  buffer about once a second as one `append` (one transaction), and prunes
  each series by its historizing period (or the store's retention) hourly;
* `read_node_history` flushes first (a read sees every value saved before
  it), then serves raw reads with the stored source timestamps and status.

Wiring: `server.iserver.history_manager.set_storage(storage)` before
`await server.init()` (asyncua then calls `init()`; otherwise await it
yourself), then `await server.historize_node_data_change(node, period=...)`.
`server.stop()` calls `stop()`, which flushes what is buffered. The
`HistoryStore` belongs to the caller, who closes it after the server stops.
Event history is not stored here (the ledger is the record of movements).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

from asyncua import ua
from asyncua.server.history import HistoryStorageInterface
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from inventory_core.clock import Clock, SystemClock
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.history_point import HistoryPoint, HistoryValue
from inventory_core.log import get_logger
from inventory_core.store import HistoryStore

if TYPE_CHECKING:
    from asyncua.common.events import Event
    from asyncua.common.node import Node

__all__ = ["LedgerHistoryStorage"]

log = get_logger(__name__)

FLUSH_INTERVAL_S = 1.0
MIN_INTERVAL = timedelta(0)  # store every change unless the owner asks for less
PRUNE_INTERVAL = timedelta(hours=1)
MAX_BUFFERED = 200_000
_INTEGER_TYPES = {
    ua.VariantType.SByte,
    ua.VariantType.Byte,
    ua.VariantType.Int16,
    ua.VariantType.UInt16,
    ua.VariantType.Int32,
    ua.VariantType.UInt32,
    ua.VariantType.Int64,
    ua.VariantType.UInt64,
}


class LedgerHistoryStorage(HistoryStorageInterface):
    """asyncua history storage backed by the ledger database's value history."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        prune_interval: timedelta = PRUNE_INTERVAL,
        max_buffered: int = MAX_BUFFERED,
        max_history_data_response_size: int = 10000,
        clock: Clock | None = None,
        min_interval: timedelta = MIN_INTERVAL,
    ) -> None:
        super().__init__(max_history_data_response_size)
        self._min_interval = min_interval
        self._last_kept: dict[ua.NodeId, tuple[datetime, int]] = {}
        self._store = store
        self._flush_interval_s = flush_interval_s
        self._prune_interval = prune_interval
        self._clock = clock or SystemClock()
        self._series: dict[ua.NodeId, str] = {}
        self._types: dict[ua.NodeId, ua.VariantType] = {}
        self._periods: dict[str, timedelta | None] = {}
        self._buffer: deque[HistoryPoint] = deque(maxlen=max_buffered)
        self._dropped = 0
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- registry ----------------------------------------------------------------

    def register(
        self, node_id: ua.NodeId, series: str, variant_type: ua.VariantType | None = None
    ) -> None:
        """Store values of `node_id` as series `series` ("TK-101.Level"). `variant_type`
        is the type history reads return (default: Double for numbers, String for text)."""
        self._series[node_id] = series
        if variant_type is not None:
            self._types[node_id] = variant_type

    def series_of(self, node_id: ua.NodeId) -> str:
        """The series name of a node; unregistered nodes use their NodeId string."""
        return self._series.get(node_id) or node_id.to_string()

    # -- lifecycle -----------------------------------------------------------------

    async def init(self) -> None:
        """Start the flush task (idempotent)."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="opcua-history-flush"
            )

    async def stop(self) -> None:
        """Let the flush task finish its round, then write what is still buffered."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task
        try:
            await self.flush()
        except InventoryError as exc:
            log.warning("value_history_lost_at_shutdown", points=len(self._buffer), error=str(exc))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self._flush_interval_s)
                return
            except TimeoutError:
                pass
            try:
                await self.flush()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + self._prune_interval.total_seconds()
                    await self.prune()
            except InventoryError as exc:  # the database is away: keep buffering, retry
                log.warning(
                    "value_history_flush_failed", buffered=len(self._buffer), error=str(exc)
                )

    # -- writes ----------------------------------------------------------------------

    async def new_historized_node(
        self, node_id: ua.NodeId, period: timedelta | None, count: int = 0
    ) -> None:
        """Remember the node's retention period (`count` is not supported: ignored)."""
        self._periods[self.series_of(node_id)] = period

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        self.record(node_id, datavalue)

    def record(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        """`save_node_value` without the coroutine: a writer calls it for every value it
        writes (`NodeWriter.observe`), instead of an internal OPC UA subscription."""
        if self._min_interval:
            status = datavalue.StatusCode.value if datavalue.StatusCode is not None else 0
            source = datavalue.SourceTimestamp or datavalue.ServerTimestamp
            last = self._last_kept.get(node_id)
            if (
                source is not None
                and last is not None
                and status == last[1]
                and timedelta(0) <= _aware(source) - last[0] < self._min_interval
            ):
                return  # a trend needs one point per interval, not every 100 ms poll
        point = self._to_point(node_id, datavalue)
        if point is None:
            return
        if self._min_interval:
            self._last_kept[node_id] = (point.source_time, point.status)
        if len(self._buffer) == self._buffer.maxlen:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 10_000 == 0:
                log.warning("value_history_buffer_full", dropped=self._dropped)
        self._buffer.append(point)

    async def flush(self) -> int:
        """Append every buffered point in one transaction; returns how many."""
        async with self._lock:
            if not self._buffer:
                return 0
            batch = list(self._buffer)
            self._buffer.clear()
            try:
                return await self._store.append(batch)
            except InventoryError:  # not committed: keep them for the next attempt
                self._buffer.extendleft(reversed(batch))
                raise

    async def prune(self) -> int:
        """Delete samples older than each series' period (the store's retention if none)."""
        now = self._clock.now()
        deleted = 0
        for series in sorted(set(self._series.values()) | set(self._periods)):
            period = self._periods.get(series) or self._store.retention
            deleted += await self._store.prune(now - period, node=series)
        return deleted

    def _to_point(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> HistoryPoint | None:
        variant = datavalue.Value
        raw = None if variant is None else variant.Value
        value: HistoryValue
        if raw is None or isinstance(raw, str):
            value = raw
        elif isinstance(raw, bool):
            value = 1.0 if raw else 0.0
        elif isinstance(raw, int | float):
            value = float(raw)
        else:
            log.debug("value_history_value_not_stored", node=str(node_id), type=type(raw).__name__)
            return None
        if variant is not None and node_id not in self._types and raw is not None:
            self._types[node_id] = variant.VariantType
        source = datavalue.SourceTimestamp or datavalue.ServerTimestamp or self._clock.now()
        status = datavalue.StatusCode.value if datavalue.StatusCode is not None else 0
        return HistoryPoint(
            node=self.series_of(node_id),
            source_time=_aware(source),
            server_time=None
            if datavalue.ServerTimestamp is None
            else _aware(datavalue.ServerTimestamp),
            value=value,
            status=int(status),
        )

    # -- reads ---------------------------------------------------------------------

    async def read_node_history(
        self,
        node_id: ua.NodeId,
        start: datetime | None,
        end: datetime | None,
        nb_values: int,
    ) -> tuple[list[ua.DataValue], datetime | None]:
        """Raw read, start and end inclusive (OPC UA Part 11 6.4.3): start > end or no
        start reads newest first; `nb_values` (0 = all) and the response size limit
        cut the result, with the next source timestamp as continuation point.
        A database outage answers BadResourceUnavailable."""
        try:
            await self.flush()
        except InventoryError as exc:  # still serve what is stored
            log.warning("value_history_flush_before_read_failed", error=str(exc))
        epoch = ua.get_win_epoch()
        start = None if start is None or _aware(start) <= epoch else _aware(start)
        end = None if end is None or _aware(end) <= epoch else _aware(end)
        newest_first = start is None or (end is not None and start > end)
        reverse_range = start is not None and end is not None and start > end
        low, high = (end, start) if reverse_range else (start, end)
        page = self.max_history_data_response_size
        take = min(nb_values, page) if nb_values > 0 else page
        try:
            points = await self._store.read(
                self.series_of(node_id), low, high, take + 1, newest_first=newest_first
            )
        except InventoryError as exc:
            log.warning("value_history_read_failed", node=str(node_id), error=str(exc))
            raise UaStatusCodeError(StatusCodes.BadResourceUnavailable) from exc  # type: ignore[no-untyped-call]
        continuation = None
        if len(points) > take:
            # Resuming from this source time works for bounded reads; an open-start
            # (newest first) read is answered with its first page only.
            if start is not None:
                continuation = points[take].source_time
            points = points[:take]
        vtype = self._types.get(node_id)
        return [_to_datavalue(p, vtype) for p in points], continuation

    # -- events: not historized here -------------------------------------------------

    async def new_historized_event(
        self,
        source_id: ua.NodeId,
        evtypes: list[Node],
        period: timedelta | None,
        count: int = 0,
    ) -> None:
        log.info(
            "event_history_not_stored", source=str(source_id), reason="the ledger records movements"
        )

    async def save_event(self, event: Event) -> None:
        return None

    async def read_event_history(
        self,
        source_id: ua.NodeId,
        start: datetime | None,
        end: datetime | None,
        nb_values: int,
        evfilter: ua.EventFilter,
    ) -> tuple[list[Event], datetime | None]:
        return [], None


def _aware(moment: datetime) -> datetime:
    """asyncua hands out UTC datetimes, naive or aware: make them aware UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _to_datavalue(point: HistoryPoint, vtype: ua.VariantType | None) -> ua.DataValue:
    return ua.DataValue(
        Value=_to_variant(point.value, vtype),
        StatusCode=ua.StatusCode(ua.UInt32(point.status)),
        # asyncua annotates its own datetime subclass but encodes any datetime
        SourceTimestamp=cast(ua.DateTime, point.source_time),
        ServerTimestamp=cast(ua.DateTime | None, point.server_time),
    )


def _to_variant(value: HistoryValue, vtype: ua.VariantType | None) -> ua.Variant:
    if value is None:
        return ua.Variant(None)
    if isinstance(value, str):
        return ua.Variant(value, ua.VariantType.String)
    if vtype is ua.VariantType.Boolean:
        return ua.Variant(value != 0.0, vtype)
    if vtype in _INTEGER_TYPES and math.isfinite(value):
        return ua.Variant(int(value), vtype)
    if vtype is ua.VariantType.Float:
        return ua.Variant(value, vtype)
    return ua.Variant(value, ua.VariantType.Double)

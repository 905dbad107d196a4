"""The one sink every PLC poller reports to: the ledger bridge and the plant view.

A sample goes two ways, once each: the bridge turns readings of quantity tags
into ledger movements (exact Decimals, off the poll loop), and the plant view
takes the same readings for everything that shows live values (OPC UA,
metrics, alarms). Flow totalizers go to the meter service (meter versus gauge).
Only the PLC's quantity and totalizer tags are looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from inventory_core.domain.model import StorageUnitId
from inventory_core.domain.quality import Quality
from inventory_core.meter_service import MeterService
from inventory_core.plant_view import PlantView
from invops.plc_bridge import LedgerBridge, quantity_tags_per_plc, sample_quantity_tags
from plc_connectors import PlcError, Sample
from plc_connectors import Quality as PlcQuality

# The poller's link quality -> the domain's value quality (same names, one each).
QUALITY: Final[Mapping[PlcQuality, Quality]] = MappingProxyType(
    {q: Quality(q.value) for q in PlcQuality}
)


class PlantFeed:
    """A `SampleSink`: forwards samples to the ledger bridge and the plant view."""

    def __init__(
        self,
        bridge: LedgerBridge,
        view: PlantView,
        quantity_tags: Mapping[str, StorageUnitId],
        plc_tags: Mapping[str, Iterable[str]],
        *,
        meters: MeterService | None = None,
        meter_tags: Mapping[str, StorageUnitId] | None = None,
    ) -> None:
        """`plc_tags`: PLC -> every tag it reads, as configured (only its quantity tags,
        and its flow totalizers for `meters`, are looked up in its samples)."""
        self._bridge = bridge
        self._view = view
        self._quantity_tags = dict(quantity_tags)
        self._per_plc = quantity_tags_per_plc(self._quantity_tags, plc_tags)
        self._meters = meters
        self._meter_tags = dict(meter_tags or {}) if meters is not None else {}
        self._meters_per_plc = quantity_tags_per_plc(self._meter_tags, plc_tags)

    def publish(self, sample: Sample) -> None:
        self._bridge.publish(sample)
        apply = self._view.apply_reading
        for tag, unit in sample_quantity_tags(sample, self._per_plc, self._quantity_tags):
            value, quality, source_time = sample.reading(tag)
            apply(unit, value, QUALITY[quality], source_time)
        if self._meters is not None and self._meter_tags:
            for tag, unit in sample_quantity_tags(sample, self._meters_per_plc, self._meter_tags):
                value, quality, source_time = sample.reading(tag)
                counted = (
                    float(value)
                    if quality is PlcQuality.GOOD and isinstance(value, int | float)
                    else None
                )
                self._meters.feed_value(unit, counted, source_time)

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        """Nothing here: `MetricsSink` records it (metrics, health); the poller logs it."""

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        """Nothing here: `MetricsSink` records it."""

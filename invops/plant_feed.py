"""The one sink every PLC poller reports to: the ledger bridge and the plant view.

A sample goes two ways, once each: the bridge turns readings of quantity tags
into ledger movements (exact Decimals, off the poll loop), and the plant view
takes the same readings for everything that shows live values (OPC UA,
metrics, alarms). Only the PLC's quantity tags are looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from inventory_core.domain.model import StorageUnitId
from inventory_core.domain.quality import Quality
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
    ) -> None:
        """`plc_tags`: PLC -> every tag it reads, as configured (only its quantity tags
        are looked up in its samples)."""
        self._bridge = bridge
        self._view = view
        self._quantity_tags = dict(quantity_tags)
        self._per_plc = quantity_tags_per_plc(self._quantity_tags, plc_tags)

    def publish(self, sample: Sample) -> None:
        self._bridge.publish(sample)
        apply = self._view.apply_reading
        for tag, unit in sample_quantity_tags(sample, self._per_plc, self._quantity_tags):
            value, quality, source_time = sample.reading(tag)
            apply(unit, value, QUALITY[quality], source_time)

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        """Nothing here: `MetricsSink` records it (metrics, health); the poller logs it."""

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        """Nothing here: `MetricsSink` records it."""

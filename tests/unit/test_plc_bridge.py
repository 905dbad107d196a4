"""LedgerBridge.feed: one reading per quantity tag of the sample's PLC, whatever its quality."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from inventory_core.domain.model import StorageUnitId
from inventory_core.measurement_service import MeasurementService, UnitReading
from invops.plc_bridge import LedgerBridge
from plc_connectors import Quality, Sample

AT = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
HELD = datetime(2026, 12, 1, 5, 59, tzinfo=UTC)
TK1, TK2, TK3 = StorageUnitId("TK-1"), StorageUnitId("TK-2"), StorageUnitId("TK-3")


class _Service:
    def __init__(self) -> None:
        self.fed: list[list[UnitReading]] = []

    async def feed_many(self, readings: Sequence[UnitReading]) -> list[BaseException | None]:
        self.fed.append(list(readings))
        return [None] * len(readings)


def _bridge() -> tuple[LedgerBridge, _Service]:
    service = _Service()
    bridge = LedgerBridge(
        cast(MeasurementService, service),
        {"TK-1.level": TK1, "TK-2.level": TK2, "TK-3.level": TK3},
        plc_tags={"PLC-A": ["TK-1.level", "TK-1.pump", "TK-2.level"], "PLC-B": ["TK-3.level"]},
    )
    return bridge, service


def _raw(tag: str, value: object, quality: Quality) -> dict[str, object]:
    return {"tag": tag, "value": value, "quality": str(quality)}


async def test_good_sample_feeds_the_plc_quantity_tags_absent_ones_bad() -> None:
    bridge, service = _bridge()
    await bridge.feed(Sample("PLC-A", AT, Quality.GOOD, AT, {"TK-1.level": 5.0, "TK-1.pump": 1}))
    waiting = Quality.BAD_WAITING
    assert service.fed == [
        [
            UnitReading(TK1, 5.0, True, AT, _raw("TK-1.level", 5.0, Quality.GOOD)),
            UnitReading(TK2, None, False, AT, _raw("TK-2.level", None, waiting)),
        ]
    ]


async def test_held_and_bad_samples_give_bad_readings_stamped_read_at() -> None:
    bridge, service = _bridge()
    held = Quality.UNCERTAIN_LAST_USABLE
    values = {"TK-1.level": 5.0, "TK-2.level": 6.0}
    await bridge.feed(Sample("PLC-A", AT, held, HELD, values))
    await bridge.feed(Sample("PLC-B", AT, Quality.BAD_NO_COMMUNICATION, AT, {}))
    assert service.fed == [
        [
            UnitReading(TK1, None, False, AT, _raw("TK-1.level", 5.0, held)),
            UnitReading(TK2, None, False, AT, _raw("TK-2.level", 6.0, held)),
        ],
        [UnitReading(TK3, None, False, AT, _raw("TK-3.level", None, Quality.BAD_NO_COMMUNICATION))],
    ]


async def test_a_flag_where_a_quantity_belongs_is_a_bad_reading() -> None:
    bridge, service = _bridge()
    await bridge.feed(Sample("PLC-B", AT, Quality.GOOD, AT, {"TK-3.level": True}))
    assert service.fed == [
        [UnitReading(TK3, None, False, AT, _raw("TK-3.level", True, Quality.GOOD))]
    ]


async def test_a_plc_not_configured_feeds_the_quantity_tags_in_its_values() -> None:
    bridge, service = _bridge()
    await bridge.feed(Sample("PLC-X", AT, Quality.GOOD, AT, {"TK-2.level": 7.0, "other": 1.0}))
    assert service.fed == [[UnitReading(TK2, 7.0, True, AT, _raw("TK-2.level", 7.0, Quality.GOOD))]]

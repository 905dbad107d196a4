"""Meter versus gauge (SQLite and PostgreSQL): a tank's outlet totalizer counted through
the MeterService into meter flows, rollover included, resumed after a restart; the
period mass balance sets the metered outflow against the issues the level derived."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory_core import open_ledger
from inventory_core.clock import format_timestamp
from inventory_core.domain.derivation import TotalizerConfig
from inventory_core.domain.meter import MeterDirection
from inventory_core.domain.model import (
    Booking,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.meter_service import MeteredUnit, MeterService

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal("0.8"), LotStatus.RELEASED)
TANK = StorageUnit(
    StorageUnitId("TK-1"),
    "P",
    "A",
    StorageKind.TANK,
    Decimal(50000),
    "L",
    OIL.id,
    booking=Booking.MEASURED,
)
T0 = datetime(2026, 12, 1, 6, tzinfo=UTC)
MAXIMUM = 65535  # a uint16 counter, so the test rolls it over
METER = MeteredUnit(
    TANK.id,
    MeterDirection.OUT,
    "kg",
    TotalizerConfig(
        TANK.id,
        MovementKind.ISSUE,
        max_gap=timedelta(hours=1),
        max_interval=timedelta(seconds=10),
        scale=Decimal("0.8"),
        maximum=MAXIMUM,
    ),
)


@dataclass
class StepClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


def gauge_issue(kg: str) -> PostingRequest:
    """What the level pipeline books for a fall of the tank (source plc)."""
    return PostingRequest(
        MovementKind.ISSUE,
        OIL.id,
        None,
        Decimal(kg),
        "kg",
        from_unit=TANK.id,
        user="plc",
        source=Source.PLC,
    )


async def test_the_metered_outflow_is_set_against_the_level_derived_issues(
    ledger_url: str,
) -> None:
    clock = StepClock(T0)
    async with open_ledger(ledger_url, writer_id="m", migrate=True, clock=clock) as ledger:
        await ledger.sync_master_data((OIL,), (TANK,))
        await ledger.post(
            PostingRequest(
                MovementKind.RECEIPT,
                OIL.id,
                LotId("L1"),
                Decimal(10000),
                "kg",
                to_unit=TANK.id,
                user="plc",
                source=Source.PLC,
            )
        )
        meter = MeterService(ledger, [METER])
        await meter.start()
        # 65000 -> 65535 -> rolls over to 0 -> 464: 1000 counts of 1 L = 800 kg out
        for seconds, counter in ((0, 65000), (5, 65400), (12, 464)):
            meter.feed(TANK.id, counter, T0 + timedelta(seconds=seconds))
        meter.feed(TANK.id, None, T0 + timedelta(seconds=13))  # a bad reading counts nothing
        await meter.drain()
        clock.at = T0 + timedelta(minutes=1)
        await ledger.post(gauge_issue("780"))  # the level saw 780 kg leave
        await meter.drain()
    report = await _report(ledger_url)
    [line] = report
    assert (line.metered_direction, line.metered, line.gauged) == ("out", Decimal(800), 780)
    assert line.meter_vs_gauge == 20 and line.meter_vs_gauge_pct == Decimal("2.56")
    document = line.document()
    assert (document["metered"], document["meter_vs_gauge_pct"]) == ("800", "2.56")


async def test_counting_resumes_after_a_restart_from_the_last_flow(ledger_url: str) -> None:
    clock = StepClock(T0)
    async with open_ledger(ledger_url, writer_id="m", migrate=True, clock=clock) as ledger:
        await ledger.sync_master_data((OIL,), (TANK,))
        first = MeterService(ledger, [METER])
        await first.start()
        first.feed(TANK.id, 100, T0)
        first.feed(TANK.id, 200, T0 + timedelta(seconds=11))
        await first.drain()
        # the service stops; the meter counts on; a new process resumes at 200
        second = MeterService(ledger, [METER])
        await second.start()
        second.feed(TANK.id, 350, T0 + timedelta(minutes=5))
        await second.drain()
        flows = await ledger.last_meter_flows()
        assert flows[TANK.id].counter == 350
    [line] = await _report(ledger_url, with_receipt=True)
    assert line.metered == Decimal(200), "100 + 150 counts while it was down, x 0.8 kg"


async def _report(ledger_url: str, *, with_receipt: bool = False) -> list[object]:
    async with open_ledger(ledger_url, writer_id="r") as ledger:
        if with_receipt:  # a line for the unit: the report lists units with movements
            await ledger.post(
                PostingRequest(
                    MovementKind.RECEIPT,
                    OIL.id,
                    LotId("L9"),
                    Decimal(1),
                    "kg",
                    to_unit=TANK.id,
                    user="plc",
                    source=Source.PLC,
                )
            )
        start = format_timestamp(T0 - timedelta(hours=1))
        end = format_timestamp(datetime.now(UTC) + timedelta(days=1))
        return list(await ledger.mass_balance_report(start, end))

"""Measured quantities become ledger movements (opening, receipts, issues, gaps, restart)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory_core import Ledger
from inventory_core.domain.derivation import DeriverConfig, StrappingTable
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageUnitId,
)
from inventory_core.measurement_service import MeasuredUnit, MeasurementService, UnitReading
from tests.conftest import MATERIALS, UNITS
from tests.log_events import events

TK = StorageUnitId("TK-101")
T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
ETHANOL = next(m for m in MATERIALS if m.id == "ETHANOL-96")  # 0.80 kg/L


def spec(plausibility: str | None = None) -> MeasuredUnit:
    return MeasuredUnit(
        unit=TK,
        material=ETHANOL,
        signal_uom="L",
        strapping=StrappingTable.from_points([(0, 0), (5000, 50000)]),  # 10 L per mm
        deriver=DeriverConfig(
            unit=TK,
            deadband=Decimal(40),
            max_interval=timedelta(minutes=5),
            settle=timedelta(seconds=0),
            plausibility_limit=None if plausibility is None else Decimal(plausibility),
        ),
    )


async def feed(service: MeasurementService, second: int, level_mm: float | None) -> None:
    await service.feed(
        TK, level_mm, good=level_mm is not None, timestamp=T0 + timedelta(seconds=second)
    )


async def started(ledger: Ledger, plausibility: str | None = None) -> MeasurementService:
    service = MeasurementService(ledger, [spec(plausibility)])
    await service.start()
    return service


async def test_first_reading_opens_the_unit_with_a_count_into_the_opening_lot(
    ledger: Ledger,
) -> None:
    service = await started(ledger)
    await feed(service, 0, 1000.0)  # 1000 mm -> 10,000 L -> 8,000 kg
    [movement] = await ledger.history(unit="TK-101")
    assert (movement.kind, movement.lot, movement.quantity) == (
        MovementKind.COUNT,
        "TK-101-OPEN",
        Decimal(8000),
    )
    assert movement.source is Source.PLC and movement.details["opening"] is True
    [balance] = await ledger.balances(unit="TK-101")
    assert balance.quantity == Decimal(8000)


async def test_changes_beyond_the_deadband_become_receipts_and_issues(ledger: Ledger) -> None:
    service = await started(ledger)
    await feed(service, 0, 1000.0)
    await feed(service, 1, 1003.0)  # +240 kg? no: +30 L = +24 kg < deadband 40 kg
    await feed(service, 2, 1010.0)  # +100 L = +80 kg since booked
    await feed(service, 3, 990.0)  # -200 L = -160 kg
    kinds = [(m.kind, m.quantity) for m in await ledger.history(unit="TK-101")]
    assert kinds == [
        (MovementKind.COUNT, Decimal(8000)),
        (MovementKind.RECEIPT, Decimal(80)),
        (MovementKind.ISSUE, Decimal(160)),
    ]
    [balance] = await ledger.balances(unit="TK-101")
    assert balance.quantity == Decimal(7920)  # 990 mm -> 9,900 L -> 7,920 kg
    assert (await ledger.verify()).ok


async def test_bad_readings_post_nothing_and_the_gap_books_one_movement(ledger: Ledger) -> None:
    service = await started(ledger)
    await feed(service, 0, 1000.0)
    for second in range(1, 5):
        await feed(service, second, None)  # link down
    assert len(await ledger.history(unit="TK-101")) == 1
    await feed(service, 5, 1001.0)  # +8 kg: below the deadband, but it spans the gap
    movements = await ledger.history(unit="TK-101")
    assert len(movements) == 2
    assert movements[-1].details["spans_gap"] is True
    assert movements[-1].quantity == Decimal(8)


async def test_restart_resumes_without_reopening_or_double_posting(ledger: Ledger) -> None:
    first = await started(ledger)
    await feed(first, 0, 1000.0)
    await feed(first, 1, 1010.0)
    second = await started(ledger)  # a new process: state comes from the ledger
    await feed(second, 1, 1010.0)  # replayed reading: ignored
    await feed(second, 2, 1020.0)  # +80 kg since the last booking
    kinds = [(m.kind, m.quantity) for m in await ledger.history(unit="TK-101")]
    assert kinds == [
        (MovementKind.COUNT, Decimal(8000)),
        (MovementKind.RECEIPT, Decimal(80)),
        (MovementKind.RECEIPT, Decimal(80)),
    ]


async def test_opening_is_skipped_when_the_book_already_holds_stock(ledger: Ledger) -> None:
    await ledger.post(
        PostingRequest(
            MovementKind.RECEIPT, MaterialId("ETHANOL-96"), LotId("E1"), Decimal(100), "kg",
            to_unit=TK,
        )
    )  # fmt: skip
    service = await started(ledger)
    await feed(service, 0, 1000.0)
    await feed(service, 1, 1010.0)  # +80 kg: booked against the current lot E1
    movements = await ledger.history(unit="TK-101")
    assert [(m.kind, m.lot) for m in movements] == [
        (MovementKind.RECEIPT, "E1"),
        (MovementKind.RECEIPT, "E1"),
    ]


async def test_implausible_change_after_a_gap_is_held_for_review_not_booked(
    ledger: Ledger,
) -> None:
    service = await started(ledger, plausibility="1000")
    await feed(service, 0, 1000.0)
    await feed(service, 1, None)
    [(seq_before, _)] = (await ledger.chain_heads()).values()
    await feed(service, 2, 3000.0)  # +16,000 kg after a gap: implausible
    assert len(await ledger.history(unit="TK-101")) == 1
    [(seq_after, _)] = (await ledger.chain_heads()).values()
    assert seq_after == seq_before + 1  # the review item was audited, nothing booked
    assert (await ledger.verify()).ok


async def test_measurements_are_recorded_for_reconciliation(ledger: Ledger) -> None:
    service = await started(ledger)
    await feed(service, 0, 1000.0)
    [line] = [x for x in await ledger.reconciliation() if x.unit == "TK-101"]
    assert (line.book, line.measured, line.discrepancy) == (Decimal(8000), Decimal(8000), 0)


async def test_feed_many_books_only_the_units_that_changed(ledger: Ledger) -> None:
    glycol = next(m for m in MATERIALS if m.id == "GLYCOL")  # 1.11 kg/L
    tk102 = StorageUnitId("TK-102")
    other = MeasuredUnit(
        unit=tk102,
        material=glycol,
        signal_uom="L",
        strapping=StrappingTable.from_points([(0, 0), (5000, 50000)]),
        deriver=DeriverConfig(
            unit=tk102, deadband=Decimal(40), max_interval=timedelta(minutes=5),
            settle=timedelta(seconds=0),
        ),
    )  # fmt: skip
    service = MeasurementService(ledger, [spec(), other])
    await service.start()

    def poll(second: int, tk101: float, tk102_mm: float) -> list[UnitReading]:
        at = T0 + timedelta(seconds=second)
        return [UnitReading(TK, tk101, True, at), UnitReading(tk102, tk102_mm, True, at)]

    assert await service.feed_many(poll(0, 1000.0, 2000.0)) == [None, None]  # two openings
    assert await service.feed_many(poll(1, 1010.0, 2001.0)) == [None, None]  # TK-101 +80 kg
    history = [(m.kind, m.lot, m.quantity) for m in await ledger.history()]
    # the two openings are posted together: either may commit first
    assert set(history[:2]) == {
        (MovementKind.COUNT, "TK-101-OPEN", Decimal(8000)),
        (MovementKind.COUNT, "TK-102-OPEN", Decimal(22200)),
    }
    assert history[2:] == [(MovementKind.RECEIPT, "TK-101-OPEN", Decimal(80))]
    lines = {x.unit: x.measured for x in await ledger.reconciliation()}
    # recorded with each posting, and otherwise every 10 s: TK-102's +1 mm is not yet
    assert (lines["TK-101"], lines["TK-102"]) == (Decimal(8080), Decimal(22200))


async def test_a_refused_movement_is_logged_once_and_never_stops_the_feed(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    # TK-101 holds ethanol lot E1; then the plant switches the tank to glycol (config).
    await ledger.post(
        PostingRequest(
            MovementKind.RECEIPT, MaterialId("ETHANOL-96"), LotId("E1"), Decimal(8000), "kg",
            to_unit=TK,
        )
    )  # fmt: skip
    glycol = next(m for m in MATERIALS if m.id == "GLYCOL")
    units = [replace(u, material=glycol.id) if u.id == TK else u for u in UNITS]
    await ledger.sync_master_data(MATERIALS, units)
    service = MeasurementService(ledger, [replace(spec(), material=glycol)])
    await service.start()
    await feed(service, 0, 1000.0)  # book stock exists: no opening count
    with caplog.at_level(logging.WARNING, logger="inventory_core.measurement_service"):
        await feed(service, 1, 1010.0)  # a receipt into the current lot E1 (ethanol): refused
        await feed(service, 2, 1020.0)  # refused again: not logged again
    assert [m.lot for m in await ledger.history(unit="TK-101")] == ["E1"]
    refusals = [e for e in events(caplog.records) if e["event"].startswith("plc_movement")]
    assert [(e["event"], e["unit"]) for e in refusals] == [("plc_movement_rejected", TK)]
    assert "lot E1 is material ETHANOL-96" in refusals[0]["reason"], refusals

    # a count of glycol gives the tank a lot of its material: PLC movements book again
    await ledger.post(
        PostingRequest(
            MovementKind.COUNT, glycol.id, LotId("G1"), Decimal(22422), "kg", to_unit=TK,
        )
    )  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inventory_core.measurement_service"):
        await feed(service, 3, 1030.0)
    last = (await ledger.history(unit="TK-101"))[-1]
    assert (last.kind, last.lot, last.source) == (MovementKind.RECEIPT, "G1", Source.PLC)
    assert events(caplog.records, event="plc_movement_accepted_again") == [
        {"event": "plc_movement_accepted_again", "unit": TK}
    ]

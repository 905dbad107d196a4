"""Lot quality data in a real ledger (SQLite and PostgreSQL): properties, retest date,
certificate and expiry set and audited; a lot's own density converts its postings; a
released lot past its expiry becomes expired by itself; verify follows every change and
sees an edit made behind the ledger's back."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import LotNotReleased, UnknownLot, ValidationError
from inventory_core.domain.lot_quality import LotQualityRequest, parse_property
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

ETHANOL = MaterialDefinition(
    MaterialId("ETH"), "Ethanol", "kg", Decimal("0.80"), LotStatus.RELEASED
)
TANK = StorageUnit(
    StorageUnitId("TK-1"),
    "P",
    "A",
    StorageKind.TANK,
    Decimal(10000),
    "L",
    ETHANOL.id,
    booking=Booking.MANUAL,
)
DAY = date(2026, 12, 1)


@dataclass
class StepClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


@pytest.fixture
async def setup(ledger_url: str) -> AsyncIterator[tuple[Ledger, StepClock]]:
    clock = StepClock(datetime(2026, 12, 1, 8, tzinfo=UTC))
    async with open_ledger(ledger_url, writer_id="q", migrate=True, clock=clock) as ledger:
        await ledger.sync_master_data((ETHANOL,), (TANK,))
        yield ledger, clock


def receipt(lot: str, litres: int, expiry: date | None = None) -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT,
        ETHANOL.id,
        LotId(lot),
        Decimal(litres),
        "L",
        to_unit=TANK.id,
        user="op1",
        expiry=expiry,
    )


def quality(lot: str, **fields: object) -> LotQualityRequest:
    return LotQualityRequest(LotId(lot), "CoA received", "qa1", Source.CLI, **fields)  # type: ignore[arg-type]


async def test_quality_data_is_set_audited_and_converts_with_the_lots_density(
    setup: tuple[Ledger, StepClock],
) -> None:
    ledger, _ = setup
    await ledger.post(receipt("L1", 1000))
    props = tuple(map(parse_property, ("assay=99.6 %", "density=0.7900 kg/L", "appearance=clear")))
    result = await ledger.set_lot_quality(
        quality("L1", properties=props, retest=DAY + timedelta(days=90), certificate="CoA-4711")
    )
    lot = result.lot
    assert result.movement_id == "lot:L1" and lot is not None
    assert [p.name for p in lot.quality.properties] == ["assay", "density", "appearance"]
    assert (lot.quality.retest, lot.quality.certificate) == (DAY + timedelta(days=90), "CoA-4711")
    [stored] = await ledger.lots("L1")
    assert stored.quality == lot.quality
    assert not stored.retest_due(DAY) and stored.retest_due(DAY + timedelta(days=91))

    same = await ledger.set_lot_quality(quality("L1", certificate="CoA-4711"))
    assert same.lot == stored, "nothing changed: nothing audited"
    records = [r for _, r in await ledger.audit_records("lot", "L1") if r.action == "quality"]
    assert len(records) == 1 and '"CoA-4711"' in records[0].new and records[0].user == "qa1"

    issue = PostingRequest(
        MovementKind.ISSUE,
        ETHANOL.id,
        LotId("L1"),
        Decimal(100),
        "L",
        from_unit=TANK.id,
        user="op1",
    )
    moved = await ledger.movement((await ledger.post(issue)).movement_id)
    assert moved.quantity == Decimal("79.0"), "100 L at the lot's 0.79 kg/L, not 0.80"
    assert (await ledger.verify()).ok


async def test_bad_quality_data_is_refused_and_changes_nothing(
    setup: tuple[Ledger, StepClock],
) -> None:
    ledger, _ = setup
    await ledger.post(receipt("L1", 10))
    with pytest.raises(ValidationError, match="density"):
        await ledger.set_lot_quality(quality("L1", properties=(parse_property("density=-1 kg/L"),)))
    with pytest.raises(ValidationError, match="at most 100 kg/L"):  # 1e30 would break maths
        await ledger.set_lot_quality(quality("L1", properties=(parse_property("density=1e30"),)))
    with pytest.raises(ValidationError, match="repeat"):
        twice = (parse_property("assay=99"), parse_property("assay=98"))
        await ledger.set_lot_quality(quality("L1", properties=twice))
    with pytest.raises(ValidationError, match="nothing to set"):
        await ledger.set_lot_quality(quality("L1"))
    with pytest.raises(UnknownLot):
        await ledger.set_lot_quality(quality("NOPE", certificate="x"))
    with pytest.raises(ValidationError, match="NAME=VALUE"):
        parse_property("assay")
    [lot] = await ledger.lots("L1")
    assert lot.quality.is_empty()


async def test_a_released_lot_past_its_expiry_expires_by_itself(
    setup: tuple[Ledger, StepClock],
) -> None:
    ledger, clock = setup
    await ledger.post(receipt("OLD", 10, expiry=DAY + timedelta(days=1)))
    await ledger.post(receipt("NEW", 10, expiry=DAY + timedelta(days=30)))
    assert await ledger.expire_lots() == []
    clock.at += timedelta(days=2)
    [expired] = await ledger.expire_lots()
    assert expired.movement is not None and expired.movement.lot == "OLD"
    assert expired.movement.source is Source.SYSTEM and expired.movement.user == "system"
    statuses = {lot.id: lot.status for lot in await ledger.lots()}
    assert statuses == {"OLD": LotStatus.EXPIRED, "NEW": LotStatus.RELEASED}
    assert await ledger.expire_lots() == [], "once"
    issue = PostingRequest(
        MovementKind.ISSUE, ETHANOL.id, LotId("OLD"), Decimal(1), "L", from_unit=TANK.id, user="op1"
    )
    with pytest.raises(LotNotReleased, match="expired"):
        await ledger.post(issue)
    assert (await ledger.verify()).ok


async def test_verify_sees_quality_data_edited_behind_the_ledgers_back(sqlite_url: str) -> None:
    async with open_ledger(sqlite_url, writer_id="q", migrate=True) as ledger:
        await ledger.sync_master_data((ETHANOL,), (TANK,))
        await ledger.post(receipt("L1", 10))
        await ledger.set_lot_quality(quality("L1", properties=(parse_property("assay=99.6 %"),)))
        assert (await ledger.verify()).ok
    with sqlite3.connect(sqlite_url.removeprefix("sqlite+aiosqlite:///")) as db:
        db.execute("UPDATE lots SET properties = replace(properties, '99.6', '99.9')")
    async with open_ledger(sqlite_url, writer_id="check") as ledger:
        report = await ledger.verify()
    assert not report.ok and any("L1" in p.message for p in report.problems)

"""The period mass balance from a real ledger (SQLite and PostgreSQL): postings of every
kind at known times, reported per period; opening + movements = closing, the closing book
is the ledger's balance at the end, and the last good measurement gives the variance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.clock import format_timestamp
from inventory_core.domain.errors import ValidationError
from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    ReversalRequest,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)

K = MovementKind
OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal(1), LotStatus.RELEASED)
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def unit(uid: str) -> StorageUnit:
    return StorageUnit(
        StorageUnitId(uid), "P", "A", StorageKind.TANK, Decimal(100000), "kg", OIL.id,
        lot_handling=LotHandling.FIFO, booking=Booking.MANUAL, zero_lot_threshold=Decimal(0),
    )  # fmt: skip


@dataclass
class Clock:
    moment: datetime = T0

    def now(self) -> datetime:
        return self.moment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(ledger_url: str, clock: Clock) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url, writer_id="mb", migrate=True, clock=clock) as opened:
        await opened.sync_master_data((OIL,), (unit("T1"), unit("T2")))
        yield opened


def post(
    kind: MovementKind, lot: str, qty: str, *, src: str | None = None, dst: str | None = None,
    consumed: tuple[str, ...] = (),
) -> PostingRequest:  # fmt: skip
    return PostingRequest(
        kind, OIL.id, LotId(lot), Decimal(qty), "kg",
        from_unit=None if src is None else StorageUnitId(src),
        to_unit=None if dst is None else StorageUnitId(dst), user="u", reason="test",
        consumed_lots=tuple(LotId(c) for c in consumed),
        consumed_quantities=tuple(Decimal(5) for _ in consumed),
        consumed_units=tuple(StorageUnitId("T1") for _ in consumed),
    )  # fmt: skip


def hour(n: float) -> str:
    return format_timestamp(T0 + timedelta(hours=n))


async def test_a_period_closes_and_chains_with_the_next(ledger: Ledger, clock: Clock) -> None:
    async def at(n: float, request: PostingRequest) -> str:
        clock.moment = T0 + timedelta(hours=n)
        return (await ledger.post(request)).movement_id

    await at(0.5, post(K.RECEIPT, "A", "1000", dst="T1"))  # before the period: opening
    await at(1.5, post(K.RECEIPT, "B", "300", dst="T1"))
    await at(2.0, post(K.ISSUE, "A", "100", src="T1"))
    await at(2.5, post(K.TRANSFER, "A", "200", src="T1", dst="T2"))
    await at(3.0, post(K.PRODUCTION, "P", "5", dst="T2", consumed=("B",)))
    adjustment = await at(3.5, post(K.ADJUSTMENT, "A", "-4", dst="T1"))
    await at(4.0, post(K.COUNT, "A", "690", dst="T1"))
    await at(4.5, post(K.SCRAP, "A", "10", src="T1"))
    clock.moment = T0 + timedelta(hours=5)
    await ledger.reverse(ReversalRequest(adjustment, "wrong", user="u"))
    await ledger.record_measurement("T1", Decimal("975"), "kg", timestamp=hour(5.5))
    await ledger.record_measurement("T1", Decimal("1"), "kg", quality="bad", timestamp=hour(5.6))
    await at(7.0, post(K.RECEIPT, "C", "50", dst="T1"))  # after the period

    lines = await ledger.mass_balance_report(hour(1), hour(6))
    t1 = next(line for line in lines if line.unit == "T1")
    moved = {name: q for name, q in t1.moved.items() if q}
    assert t1.opening == 1000
    # the count found 690 of lot A where its book said 1000 - 100 - 200 - 4 = 696
    assert moved == {
        "receipts": 300, "issues": -100, "transfers_out": -200, "production_out": -5,
        "adjustments": -4, "counts": -6, "scrap": -10, "reversals": 4,
    }  # fmt: skip
    assert t1.closing == t1.opening + sum(t1.moved.values(), Decimal(0)) == 979
    book_at_6 = t1.closing
    assert (t1.measured, t1.measured_at) == (Decimal(975), hour(5.5))  # the bad one is skipped
    assert t1.variance == 975 - t1.closing
    t2 = next(line for line in lines if line.unit == "T2")
    assert (t2.opening, t2.moved["transfers_in"], t2.moved["production_in"]) == (0, 200, 5)
    assert t2.measured is None and t2.variance is None

    # the closing book at the end of everything is the ledger's balance
    whole = await ledger.mass_balance_report(hour(0), hour(8))
    balances: dict[str, Decimal] = {}
    for balance in await ledger.balances():
        balances[balance.unit] = balances.get(balance.unit, Decimal(0)) + balance.quantity
    assert {line.unit: line.closing for line in whole} == balances
    # periods chain: the next one opens at this one's close
    after = await ledger.mass_balance_report(hour(6), hour(8), "T1")
    assert [(line.unit, line.opening, line.moved["receipts"]) for line in after] == [
        ("T1", book_at_6, 50)
    ]


async def test_a_period_must_start_before_it_ends(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="start before it ends"):
        await ledger.mass_balance_report(hour(2), hour(1))

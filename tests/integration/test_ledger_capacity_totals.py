"""The capacity check's unit totals, which the SQLite writer keeps between batches
instead of summing a unit's balances at every receipt: they must refuse exactly what a
fresh sum would, after draws, PLC movements, refused postings, batches of many
postings, and bookings by another writer on the same file.

TK-101: 50,000 L of ethanol at 0.80 kg/L = 40,000 kg; with the default 10 % margin a
manual posting may bring its book to 44,000 kg. Real SQLite files and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import CapacityExceeded
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageUnitId,
)
from tests.conftest import MATERIALS, UNITS

ETHANOL = MaterialId("ETHANOL-96")
TANK, OTHER = StorageUnitId("TK-101"), StorageUnitId("TK-103")
LIMIT = Decimal(44000)  # kg


def receipt(lot: str, kg: str | int, *, source: Source = Source.MANUAL) -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT, ETHANOL, LotId(lot), Decimal(kg), "kg", to_unit=TANK,
        user="tester", source=source,
    )  # fmt: skip


def issue(lot: str, kg: str | int) -> PostingRequest:
    return PostingRequest(
        MovementKind.ISSUE, ETHANOL, LotId(lot), Decimal(kg), "kg", from_unit=TANK, user="tester"
    )


async def book(ledger: Ledger) -> Decimal:
    return sum((b.quantity for b in await ledger.balances(TANK)), Decimal(0))


async def refused(ledger: Ledger, request: PostingRequest) -> bool:
    try:
        await ledger.post(request)
    except CapacityExceeded:
        return True
    return False


async def test_draws_and_plc_movements_between_receipts_move_the_limit(ledger: Ledger) -> None:
    await ledger.post(receipt("A", 40000))
    assert await refused(ledger, receipt("B", 4001))  # 44,001: 1 kg over
    await ledger.post(issue("A", 5000))  # 35,000: the draw frees room
    assert not await refused(ledger, receipt("B", 9000))  # 44,000: exactly the limit
    assert await refused(ledger, receipt("C", "0.001"))
    await ledger.post(receipt("C", 500, source=Source.PLC))  # physics: never refused
    await ledger.post(issue("A", 600))  # 43,900
    assert await refused(ledger, receipt("D", 101))
    assert not await refused(ledger, receipt("D", 100))
    assert await book(ledger) == LIMIT


async def test_a_batch_of_receipts_stops_at_the_limit_and_the_next_batch_knows(
    ledger: Ledger,
) -> None:
    # Submitted together, the writer books them in one or a few batches, in order:
    # the first 44 fit (44,000 kg), every later one is over.
    results = await asyncio.gather(
        *(refused(ledger, receipt(f"L{n:02d}", 1000)) for n in range(48))
    )
    assert results == [False] * 44 + [True] * 4
    assert await book(ledger) == LIMIT
    assert await refused(ledger, receipt("OVER", "0.001"))
    await ledger.post(issue("L00", 500))
    assert not await refused(ledger, receipt("LAST", 500))
    assert await refused(ledger, receipt("OVER", "0.001"))


async def test_a_transfer_out_frees_room_in_the_source(ledger: Ledger) -> None:
    await ledger.post(receipt("T", 44000))
    transfer = PostingRequest(
        MovementKind.TRANSFER, ETHANOL, LotId("T"), Decimal(20000), "kg",
        from_unit=TANK, to_unit=OTHER, user="tester",
    )  # fmt: skip
    await ledger.post(transfer)
    assert not await refused(ledger, receipt("U", 20000))
    assert await refused(ledger, receipt("V", 1))


def test_bookings_by_another_writer_on_the_same_file_count(sqlite_url: str) -> None:
    """A second writer on the same SQLite file books into the tank between this
    writer's receipts: the total this writer kept is stale and must not be used."""

    async def scenario() -> None:
        async with open_ledger(sqlite_url, writer_id="one", migrate=True) as one:
            await one.sync_master_data(MATERIALS, UNITS)
            await one.post(receipt("A", 40000))  # `one` has seen 40,000 kg
            async with open_ledger(sqlite_url, writer_id="two") as two:
                await two.post(receipt("B", 3000))  # 43,000 kg
                assert await refused(one, receipt("C", 1001))  # 44,001
                assert not await refused(one, receipt("C", 1000))
                assert await refused(two, receipt("D", 1))
                await two.post(issue("B", 3000))  # 41,000
            assert not await refused(one, receipt("E", 3000))
            assert await refused(one, receipt("F", 1))
            assert await book(one) == LIMIT

    asyncio.run(scenario())


@pytest.mark.parametrize("lots", [1, 400])
async def test_the_limit_holds_however_many_lots_the_tank_holds(ledger: Ledger, lots: int) -> None:
    """Many small lots (what a fresh sum adds up) or one big one: the same limit."""
    share = Decimal(40000) / lots
    for first in range(0, lots, 50):
        chunk = range(first, min(lots, first + 50))
        await asyncio.gather(*(ledger.post(receipt(f"M{n}", share)) for n in chunk))
    assert await book(ledger) == 40000
    assert await refused(ledger, receipt("N", 4001))
    assert not await refused(ledger, receipt("N", 4000))

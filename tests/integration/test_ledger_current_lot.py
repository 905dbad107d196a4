"""Postings without a lot (`lot=None`), resolved in the posting transaction: a PLC rise
books to the newest lot in the unit (else the unit's opening lot), a draw takes the
lots the unit's lot handling picks (the test plant's units are `fifo`: oldest first).
On SQLite and PostgreSQL, alone and sharing a commit batch with the receipts that
change what the unit holds. The rules themselves: test_lot_handling."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from inventory_core import Ledger
from inventory_core.domain.errors import MaterialMismatch, ValidationError
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    PostingResult,
    Source,
    StorageUnitId,
)

K = MovementKind
ETHANOL = MaterialId("ETHANOL-96")
TANKS = (StorageUnitId("TK-101"), StorageUnitId("TK-103"))


def manual(kind: MovementKind, lot: str, qty: str, unit: str = "TK-101") -> PostingRequest:
    target = {"from_unit": StorageUnitId(unit)} if kind is K.ISSUE else {}
    target = target or {"to_unit": StorageUnitId(unit)}
    return PostingRequest(kind, ETHANOL, LotId(lot), Decimal(qty), "kg", **target)


def plc(
    kind: MovementKind, qty: str, unit: str = "TK-101", key: str | None = None
) -> PostingRequest:
    target = {"from_unit": StorageUnitId(unit)} if kind is K.ISSUE else {}
    target = target or {"to_unit": StorageUnitId(unit)}
    return PostingRequest(
        kind, ETHANOL, None, Decimal(qty), "kg", idempotency_key=key, user="plc",
        source=Source.PLC, reason="measured change", **target,
    )  # fmt: skip


async def lot_of(ledger: Ledger, result: PostingResult) -> str:
    return str((await ledger.movement(result.movement_id)).lot)


async def test_without_a_current_lot_a_plc_receipt_opens_the_units_opening_lot(
    ledger: Ledger,
) -> None:
    result = await ledger.post(plc(K.RECEIPT, "12"))
    assert await lot_of(ledger, result) == "TK-101-OPEN"
    [balance] = await ledger.balances(unit="TK-101")
    assert (balance.lot, balance.quantity) == ("TK-101-OPEN", Decimal(12))
    assert await ledger.current_lot("TK-101") == "TK-101-OPEN"


async def test_plc_rises_book_to_the_newest_lot_and_draws_to_the_oldest(ledger: Ledger) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    assert await lot_of(ledger, await ledger.post(plc(K.ISSUE, "10"))) == "E1"
    await ledger.post(manual(K.RECEIPT, "E2", "50"))
    assert await lot_of(ledger, await ledger.post(plc(K.ISSUE, "5"))) == "E1"  # fifo
    assert await lot_of(ledger, await ledger.post(plc(K.RECEIPT, "1"))) == "E2"  # newest
    await ledger.post(manual(K.ISSUE, "E1", "85"))  # E1 is empty: E2 is all that is left
    assert await lot_of(ledger, await ledger.post(plc(K.ISSUE, "1"))) == "E2"
    books = {b.lot: b.quantity for b in await ledger.balances(unit="TK-101")}
    assert books == {"E1": Decimal(0), "E2": Decimal(50)}


async def test_a_receipt_earlier_in_the_same_commit_is_the_newest_lot(ledger: Ledger) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    receipt, rise = await asyncio.gather(
        ledger.post(manual(K.RECEIPT, "E2", "50")), ledger.post(plc(K.RECEIPT, "5"))
    )
    first, second = [await ledger.movement(r.movement_id) for r in (receipt, rise)]
    assert first.timestamp == second.timestamp  # one batch: one commit, one timestamp
    assert second.lot == "E2"


async def test_a_rejected_receipt_in_the_same_commit_changes_no_current_lot(
    ledger: Ledger,
) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    await ledger.post(
        PostingRequest(
            K.RECEIPT, MaterialId("SUGAR"), LotId("S1"), Decimal(1), "kg",
            to_unit=StorageUnitId("SI-201"),
        )
    )  # fmt: skip
    rejected, issue = await asyncio.gather(
        ledger.post(manual(K.RECEIPT, "S1", "5")),  # S1 is a sugar lot: rejected
        ledger.post(plc(K.ISSUE, "5")),
        return_exceptions=True,
    )
    assert isinstance(rejected, MaterialMismatch)
    assert isinstance(issue, PostingResult)
    assert await lot_of(ledger, issue) == "E1"


async def test_a_replayed_key_is_the_first_movement_even_after_the_current_lot_changed(
    ledger: Ledger,
) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    first = await ledger.post(plc(K.ISSUE, "5", key="plc:TK-101:1"))
    await ledger.post(manual(K.RECEIPT, "E2", "50"))
    again = await ledger.post(plc(K.ISSUE, "5", key="plc:TK-101:1"))
    assert (again.movement_id, again.replayed) == (first.movement_id, True)
    assert await lot_of(ledger, again) == "E1"


@pytest.mark.parametrize("kind", [K.RECEIPT, K.PRODUCTION, K.ADJUSTMENT, K.COUNT])
async def test_only_a_draw_or_a_plc_posting_of_one_unit_may_omit_the_lot(
    ledger: Ledger, kind: MovementKind
) -> None:
    request = PostingRequest(kind, ETHANOL, None, Decimal(1), "kg", to_unit=TANKS[0], reason="r")
    with pytest.raises(ValidationError, match=f"{kind} needs a lot"):
        await ledger.post(request)
    assert await ledger.history() == []

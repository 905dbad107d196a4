"""Posting through the ledger API on real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

import pytest

from inventory_core import Ledger
from inventory_core.domain.errors import (
    IdempotencyConflict,
    InsufficientStock,
    LotNotReleased,
    UnknownLot,
)
from inventory_core.domain.model import (
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialId,
    MovementKind,
    PostingRequest,
    ReversalRequest,
    StorageUnitId,
)


def receipt(qty: str, uom: str = "kg", lot: str = "L1", key: str | None = None) -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT,
        MaterialId("ETHANOL-96"),
        LotId(lot),
        Decimal(qty),
        uom,
        to_unit=StorageUnitId("TK-101"),
        idempotency_key=key,
    )


def issue(qty: str, lot: str = "L1") -> PostingRequest:
    return PostingRequest(
        MovementKind.ISSUE,
        MaterialId("ETHANOL-96"),
        LotId(lot),
        Decimal(qty),
        "kg",
        from_unit=StorageUnitId("TK-101"),
    )


async def test_receipt_in_litres_is_booked_in_kg_through_density(ledger: Ledger) -> None:
    await ledger.post(receipt("1000", "L"))
    [balance] = await ledger.balances(unit="TK-101")
    assert balance.quantity == Decimal("800")
    assert balance.uom == "kg"
    [movement] = await ledger.history(lot="L1")
    assert (movement.posted_quantity, movement.posted_uom) == (Decimal("1000"), "L")


async def test_same_key_returns_first_movement_and_changes_nothing(ledger: Ledger) -> None:
    first = await ledger.post(receipt("10", key="r-1"))
    again = await ledger.post(receipt("10", key="r-1"))
    assert again.movement_id == first.movement_id and again.replayed
    assert [b.quantity for b in await ledger.balances()] == [Decimal("10")]
    assert len(await ledger.history()) == 1


async def test_same_key_with_other_payload_is_a_conflict(ledger: Ledger) -> None:
    await ledger.post(receipt("10", key="r-1"))
    with pytest.raises(IdempotencyConflict, match="r-1"):
        await ledger.post(receipt("11", key="r-1"))


async def test_issue_beyond_book_balance_is_rejected_and_posts_nothing(ledger: Ledger) -> None:
    await ledger.post(receipt("100"))
    with pytest.raises(InsufficientStock, match="book balance of 100 kg"):
        await ledger.post(issue("100.5"))
    assert len(await ledger.history()) == 1


async def test_issue_of_quarantined_lot_is_rejected(ledger: Ledger) -> None:
    await ledger.post(receipt("100"))
    await ledger.set_lot_status(LotStatusRequest(LotId("L1"), LotStatus.HOLD, "QA check"))
    with pytest.raises(LotNotReleased, match="hold"):
        await ledger.post(issue("1"))


async def test_issue_of_unknown_lot_is_rejected(ledger: Ledger) -> None:
    with pytest.raises(UnknownLot):
        await ledger.post(issue("1", lot="NOPE"))


async def test_reversal_restores_balance(ledger: Ledger) -> None:
    await ledger.post(receipt("100"))
    out = await ledger.post(issue("40"))
    await ledger.reverse(ReversalRequest(out.movement_id, "wrong tank"))
    [balance] = await ledger.balances(unit="TK-101")
    assert balance.quantity == Decimal("100")
    assert (await ledger.verify()).ok


async def test_concurrent_issues_never_overdraw(ledger: Ledger) -> None:
    await ledger.post(receipt("50"))
    results = await asyncio.gather(
        *(ledger.post(issue("1")) for _ in range(80)), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    rejected = [r for r in results if isinstance(r, InsufficientStock)]
    assert len(accepted) == 50 and len(rejected) == 30
    [balance] = await ledger.balances(unit="TK-101")
    assert balance.quantity == 0


async def test_listeners_hear_each_new_movement_once_not_replays(ledger: Ledger) -> None:
    heard: list[str] = []
    ledger.subscribe(lambda movement: heard.append(movement.id))
    first = await ledger.post(receipt("10", key="r-1"))
    await ledger.post(receipt("10", key="r-1"))  # replay: no new movement
    reversal = await ledger.reverse(ReversalRequest(first.movement_id, "typo"))
    assert heard == [first.movement_id, reversal.movement_id]


async def test_verify_reports_an_audit_record_edited_into_invalid_json(
    ledger: Ledger, ledger_url: str
) -> None:
    """Found by hypothesis in CI: a lot record's JSON broken by an edit must be a finding,
    not a crash of verify."""
    if not ledger_url.startswith("sqlite"):
        return  # the edit is made directly in the SQLite file
    await ledger.post(receipt("10"))
    path = ledger_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE audit SET new = substr(new, 1, 10) WHERE object_type = 'lot'")
    db.close()
    report = await ledger.verify()
    assert not report.ok
    assert "hash mismatch" in report.problems[0].message


async def test_last_seq_is_the_cursor_of_the_newest_movement(ledger: Ledger) -> None:
    assert await ledger.last_seq() == 0
    await ledger.post(receipt("10"))
    await ledger.post(receipt("5", lot="L2"))
    history = await ledger.history()
    assert await ledger.last_seq() == history[-1].seq > history[0].seq
    assert await ledger.history(after_seq=await ledger.last_seq()) == []

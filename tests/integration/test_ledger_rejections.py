"""Every way the ledger refuses a request (and that a refusal posts nothing), plus the
good paths around lots, genealogy, counts, measurements, master data and PLC postings.

Runs on a real SQLite file and a real PostgreSQL database (`ledger` fixture).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

import pytest

from inventory_core import Ledger
from inventory_core.domain.errors import (
    AlreadyReversed,
    CapacityExceeded,
    IdempotencyConflict,
    InsufficientStock,
    InventoryError,
    LotExpired,
    LotNotReleased,
    LotStatusTransitionError,
    MaterialMismatch,
    UnitConversionError,
    UnknownLot,
    UnknownMaterial,
    UnknownMovement,
    UnknownStorageUnit,
    ValidationError,
)
from inventory_core.domain.lots import ALLOWED_TRANSITIONS
from inventory_core.domain.model import (
    Balance,
    GenealogyLink,
    Lot,
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialDefinition,
    MaterialId,
    MovementId,
    MovementKind,
    PostingRequest,
    ReversalRequest,
    Source,
    StorageUnitId,
)
from tests.conftest import MATERIALS, UNITS

ETHANOL, GLYCOL, SUGAR, SYRUP = (
    MaterialId("ETHANOL-96"),
    MaterialId("GLYCOL"),
    MaterialId("SUGAR"),
    MaterialId("SYRUP"),
)
K = MovementKind


def req(
    kind: MovementKind,
    material: str,
    lot: str,
    quantity: str,
    uom: str = "kg",
    *,
    frm: str | None = None,
    to: str | None = None,
    **kwargs: object,
) -> PostingRequest:
    return PostingRequest(
        kind,
        MaterialId(material),
        LotId(lot),
        Decimal(quantity),
        uom,
        from_unit=None if frm is None else StorageUnitId(frm),
        to_unit=None if to is None else StorageUnitId(to),
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Stock:
    """What `stock` posted: released ethanol, quarantined glycol, released sugar."""

    ethanol_receipt: MovementId
    glycol_receipt: MovementId
    sugar_receipt: MovementId


async def stock(ledger: Ledger) -> Stock:
    e = await ledger.post(req(K.RECEIPT, ETHANOL, "E1", "100", to="TK-101"))
    g = await ledger.post(req(K.RECEIPT, GLYCOL, "G1", "50", to="TK-102"))
    s = await ledger.post(req(K.RECEIPT, SUGAR, "S1", "1000", to="SI-201"))
    return Stock(e.movement_id, g.movement_id, s.movement_id)


Snapshot = tuple[list[MovementId], list[Balance], list[Lot]]


async def snapshot(ledger: Ledger) -> Snapshot:
    """Movements, non-zero book balances and lots.

    Zero balances are left out: on PostgreSQL a rejected request leaves empty balance
    rows behind (see test_rejected_posting_leaves_no_empty_balance_rows).
    """
    balances = [b for b in await ledger.balances() if b.quantity != 0]
    return [m.id for m in await ledger.history()], balances, await ledger.lots()


async def assert_rejected(
    ledger: Ledger, call: Awaitable[object], error: type[Exception], match: str, case: str = ""
) -> None:
    """The call fails with `error` (message matching) and nothing is posted."""
    before = await snapshot(ledger)
    try:
        await call
    except error as exc:
        assert re.search(match, str(exc)), f"{case}: {str(exc)!r} does not match {match!r}"
    except Exception as exc:
        pytest.fail(f"{case}: raised {exc!r}, expected {error.__name__}")
    else:
        pytest.fail(f"{case}: accepted, expected {error.__name__}")
    assert await snapshot(ledger) == before, f"{case}: the rejected request changed the ledger"


# -- postings the rules refuse --------------------------------------------------

# Rejected postings by family: each case runs on the same stocked ledger (a rejection
# changes nothing, which every case checks, so the cases cannot affect each other).
Rejection = tuple[PostingRequest, type[Exception], str]
POSTING_REJECTIONS: dict[str, dict[str, Rejection]] = {
    "unknown references": {
        "unknown material": (
            req(K.RECEIPT, "UNOBTAINIUM", "X1", "1", to="TK-103"),
            UnknownMaterial,
            "material UNOBTAINIUM is not defined",
        ),
        "unknown target unit": (
            req(K.RECEIPT, ETHANOL, "E1", "1", to="TK-999"),
            UnknownStorageUnit,
            "storage unit TK-999 is not defined",
        ),
        "unknown source unit": (
            req(K.ISSUE, ETHANOL, "E1", "1", frm="TK-999"),
            UnknownStorageUnit,
            "storage unit TK-999 is not defined",
        ),
        "issue of an unknown lot": (
            req(K.ISSUE, ETHANOL, "NOPE", "1", frm="TK-101"),
            UnknownLot,
            r"lot NOPE does not exist \(receive or produce it first\)",
        ),
        "transfer of an unknown lot": (
            req(K.TRANSFER, ETHANOL, "NOPE", "1", frm="TK-101", to="TK-103"),
            UnknownLot,
            r"lot NOPE does not exist \(receive or produce it first\)",
        ),
        "scrap of an unknown lot": (
            req(K.SCRAP, ETHANOL, "NOPE", "1", frm="TK-101", reason="spill"),
            UnknownLot,
            r"lot NOPE does not exist \(receive or produce it first\)",
        ),
        "adjustment of an unknown lot": (
            req(K.ADJUSTMENT, ETHANOL, "NOPE", "1", to="TK-101", reason="found"),
            UnknownLot,
            r"lot NOPE does not exist \(receive or produce it first\)",
        ),
        "production consuming an unknown lot": (
            req(K.PRODUCTION, SYRUP, "P1", "10", to="TK-301", consumed_lots=(LotId("NOPE"),)),
            UnknownLot,
            "consumed lot NOPE does not exist",
        ),
    },
    "material mismatch": {
        "receipt into a unit of another material": (
            req(K.RECEIPT, ETHANOL, "E2", "1", to="TK-102"),
            MaterialMismatch,
            "storage unit TK-102 holds material GLYCOL, not ETHANOL-96",
        ),
        "transfer into a unit of another material": (
            req(K.TRANSFER, ETHANOL, "E1", "1", frm="TK-101", to="SI-201"),
            MaterialMismatch,
            "storage unit SI-201 holds material SUGAR, not ETHANOL-96",
        ),
        "lot of another material": (
            req(K.RECEIPT, GLYCOL, "E1", "1", to="TK-103"),
            MaterialMismatch,
            "lot E1 is material ETHANOL-96, not GLYCOL",
        ),
    },
    "insufficient stock": {
        "issue from a unit without that lot": (
            req(K.ISSUE, ETHANOL, "E1", "1", frm="TK-103"),
            InsufficientStock,
            r"issue of 1 kg of lot E1 from TK-103 exceeds the book balance of 0 kg",
        ),
        "transfer beyond book": (
            req(K.TRANSFER, ETHANOL, "E1", "150", frm="TK-101", to="TK-103"),
            InsufficientStock,
            r"transfer of 150 kg of lot E1 from TK-101 exceeds the book balance of 100 kg",
        ),
        "transfer beyond book in litres": (
            req(K.TRANSFER, ETHANOL, "E1", "125.5", "L", frm="TK-101", to="TK-103"),
            InsufficientStock,
            r"transfer of 100.4 kg of lot E1 from TK-101 exceeds the book balance of 100 kg",
        ),
        "scrap beyond book": (
            req(K.SCRAP, ETHANOL, "E1", "101", frm="TK-101", reason="spill"),
            InsufficientStock,
            r"scrap of 101 kg of lot E1 from TK-101 exceeds the book balance of 100 kg",
        ),
        "negative adjustment beyond book": (
            req(K.ADJUSTMENT, ETHANOL, "E1", "-100.000001", to="TK-101", reason="leak"),
            InsufficientStock,
            r"adjustment of 100.000001 kg of lot E1 from TK-101 exceeds the book balance of 100 kg",
        ),
    },
    "quantities": {
        "zero receipt": (
            req(K.RECEIPT, ETHANOL, "E1", "0", to="TK-101"),
            ValidationError,
            "receipt quantity must be positive, got 0",
        ),
        "negative receipt": (
            req(K.RECEIPT, ETHANOL, "E1", "-5", to="TK-101"),
            ValidationError,
            "receipt quantity must be positive, got -5",
        ),
        "negative issue": (
            req(K.ISSUE, ETHANOL, "E1", "-1", frm="TK-101"),
            ValidationError,
            "issue quantity must be positive, got -1",
        ),
        "zero transfer": (
            req(K.TRANSFER, ETHANOL, "E1", "0", frm="TK-101", to="TK-103"),
            ValidationError,
            "transfer quantity must be positive, got 0",
        ),
        "negative production": (
            req(K.PRODUCTION, SYRUP, "P1", "-2", to="TK-301"),
            ValidationError,
            "production quantity must be positive, got -2",
        ),
        "zero scrap": (
            req(K.SCRAP, ETHANOL, "E1", "0", frm="TK-101", reason="spill"),
            ValidationError,
            "scrap quantity must be positive, got 0",
        ),
        "zero adjustment": (
            req(K.ADJUSTMENT, ETHANOL, "E1", "0", to="TK-101", reason="fix"),
            ValidationError,
            "adjustment quantity must not be zero",
        ),
        "negative count": (
            req(K.COUNT, ETHANOL, "E1", "-1", to="TK-101"),
            ValidationError,
            "counted quantity must not be negative",
        ),
        "quantity below the ledger resolution": (
            req(K.RECEIPT, ETHANOL, "E1", "0.0000004", to="TK-101"),
            ValidationError,
            "resolution",
        ),
    },
    "missing reasons": {
        "adjustment without reason": (
            req(K.ADJUSTMENT, ETHANOL, "E1", "5", to="TK-101"),
            ValidationError,
            "adjustment needs a reason",
        ),
        "adjustment with a blank reason": (
            req(K.ADJUSTMENT, ETHANOL, "E1", "-5", to="TK-101", reason="   "),
            ValidationError,
            "adjustment needs a reason",
        ),
        "scrap without reason": (
            req(K.SCRAP, ETHANOL, "E1", "5", frm="TK-101"),
            ValidationError,
            "scrap needs a reason",
        ),
    },
    "request shape": {
        "transfer to the same unit": (
            req(K.TRANSFER, ETHANOL, "E1", "1", frm="TK-101", to="TK-101"),
            ValidationError,
            "transfer source and target units are the same",
        ),
        "consumed lots on a receipt": (
            req(K.RECEIPT, ETHANOL, "E2", "10", to="TK-101", consumed_lots=(LotId("E1"),)),
            ValidationError,
            "consumed lots apply to production only",
        ),
        "consumed lots on an issue": (
            req(K.ISSUE, ETHANOL, "E1", "10", frm="TK-101", consumed_lots=(LotId("S1"),)),
            ValidationError,
            "consumed lots apply to production only",
        ),
        "issue without a source unit": (
            req(K.ISSUE, ETHANOL, "E1", "1"),
            ValidationError,
            r"issue needs a source unit \(from_unit\)",
        ),
        "receipt with a source unit": (
            req(K.RECEIPT, ETHANOL, "E1", "1", frm="TK-101", to="TK-103"),
            ValidationError,
            r"receipt takes no source unit \(from_unit\)",
        ),
        "receipt without a target unit": (
            req(K.RECEIPT, ETHANOL, "E1", "1"),
            ValidationError,
            r"receipt needs a target unit \(to_unit\)",
        ),
    },
    "units of measure": {
        "volume of a material without density": (
            req(K.RECEIPT, SUGAR, "S2", "100", "L", to="SI-202"),
            UnitConversionError,
            "cannot convert L to kg: the material has no density",
        ),
        "unknown unit of measure": (
            req(K.RECEIPT, ETHANOL, "E1", "100", "lb", to="TK-101"),
            UnitConversionError,
            "unknown unit of measure 'lb'",
        ),
    },
}


@pytest.mark.parametrize("family", list(POSTING_REJECTIONS))
async def test_posting_rejected_with_clear_message_and_nothing_posted(
    ledger: Ledger, family: str
) -> None:
    await stock(ledger)
    for case, (request_, error, match) in POSTING_REJECTIONS[family].items():
        await assert_rejected(ledger, ledger.post(request_), error, match, case=case)


async def test_manual_posting_far_above_capacity_is_refused_plc_records_physics(
    ledger: Ledger,
) -> None:
    # TK-102: 30,000 L of glycol at 1.11 kg/L = 33,300 kg; with the 10 % margin 36,630 kg.
    await ledger.post(req(K.RECEIPT, GLYCOL, "G-CAP", "30000", to="TK-102"))
    huge = req(K.RECEIPT, GLYCOL, "G-CAP2", "999999999999", to="TK-102")
    message = r"into TK-102 would bring its book to 1000000029999 kg, .* 33300 kg"
    await assert_rejected(ledger, ledger.post(huge), CapacityExceeded, message, case="receipt")
    over = req(K.RECEIPT, GLYCOL, "G-CAP2", "6631", to="TK-102")  # 36,631 kg: 1 kg over
    await assert_rejected(ledger, ledger.post(over), CapacityExceeded, "110 %", case="1 kg over")
    count = req(K.COUNT, GLYCOL, "G-CAP", "1e9", to="TK-102")
    await assert_rejected(ledger, ledger.post(count), CapacityExceeded, "TK-102", case="count")
    litres = req(K.RECEIPT, GLYCOL, "G-CAP3", "10000", "L", to="TK-102")  # 11,100 kg
    await assert_rejected(ledger, ledger.post(litres), CapacityExceeded, "TK-102", case="in L")

    await ledger.post(req(K.RECEIPT, GLYCOL, "G-CAP2", "6630", to="TK-102"))  # up to the margin
    plc = req(K.RECEIPT, GLYCOL, "G-CAP2", "50000", to="TK-102", source=Source.PLC)
    await ledger.post(plc)  # a PLC-derived movement records what was measured
    balances = {b.lot: b.quantity for b in await ledger.balances(StorageUnitId("TK-102"))}
    assert balances == {"G-CAP": Decimal(30000), "G-CAP2": Decimal(56630)}


async def test_issue_rejected_when_lot_not_released(ledger: Ledger) -> None:
    not_released = [s for s in LotStatus if s is not LotStatus.RELEASED]
    assert len(not_released) == 4
    for status in not_released:
        lot = f"LOT-{status}"
        material = await _lot_in(ledger, lot, status)  # 1 kg in TK-103
        await assert_rejected(
            ledger,
            ledger.post(req(K.ISSUE, material, lot, "1", frm="TK-103")),
            LotNotReleased,
            f"lot {lot} is {status}; only released lots can be issued",
            case=str(status),
        )


async def test_issue_rejected_when_lot_expiry_date_has_passed(ledger: Ledger) -> None:
    await ledger.post(req(K.RECEIPT, ETHANOL, "OLD", "10", to="TK-101", expiry=date(2000, 1, 31)))
    [lot] = await ledger.lots("OLD")
    assert (lot.status, lot.expiry) == (LotStatus.RELEASED, date(2000, 1, 31))
    await assert_rejected(
        ledger,
        ledger.post(req(K.ISSUE, ETHANOL, "OLD", "1", frm="TK-101")),
        LotExpired,
        "lot OLD expired on 2000-01-31",
    )


async def test_issue_of_lot_with_future_expiry_is_accepted(ledger: Ledger) -> None:
    await ledger.post(req(K.RECEIPT, ETHANOL, "NEW", "10", to="TK-101", expiry=date(2999, 1, 1)))
    await ledger.post(req(K.ISSUE, ETHANOL, "NEW", "4", frm="TK-101"))
    [balance] = await ledger.balances(lot="NEW")
    assert balance.quantity == Decimal(6)


async def test_reversal_of_receipt_rejected_after_part_was_issued(ledger: Ledger) -> None:
    posted = await stock(ledger)
    await ledger.post(req(K.ISSUE, ETHANOL, "E1", "30", frm="TK-101"))
    await assert_rejected(
        ledger,
        ledger.reverse(ReversalRequest(posted.ethanol_receipt, "wrong lot")),
        InsufficientStock,
        r"reversal of 100 kg of lot E1 from TK-101 exceeds the book balance of 70 kg",
    )


async def test_reversing_a_reversal_is_rejected(ledger: Ledger) -> None:
    await stock(ledger)
    issue = await ledger.post(req(K.ISSUE, ETHANOL, "E1", "30", frm="TK-101"))
    reversal = await ledger.reverse(ReversalRequest(issue.movement_id, "wrong tank"))
    await assert_rejected(
        ledger,
        ledger.reverse(ReversalRequest(reversal.movement_id, "undo the undo")),
        ValidationError,
        f"movement {reversal.movement_id} is a reversal; it cannot be reversed",
    )


async def test_reversing_a_lot_status_change_is_rejected(ledger: Ledger) -> None:
    await stock(ledger)
    change = await ledger.set_lot_status(LotStatusRequest(LotId("E1"), LotStatus.HOLD, "QA"))
    await assert_rejected(
        ledger,
        ledger.reverse(ReversalRequest(change.movement_id, "oops")),
        ValidationError,
        r"is a lot-status; it cannot be reversed \(set the lot status instead\)",
    )


async def test_reversing_a_movement_twice_is_rejected(ledger: Ledger) -> None:
    await stock(ledger)
    issue = await ledger.post(req(K.ISSUE, ETHANOL, "E1", "30", frm="TK-101"))
    await ledger.reverse(ReversalRequest(issue.movement_id, "wrong tank"))
    await assert_rejected(
        ledger,
        ledger.reverse(ReversalRequest(issue.movement_id, "again")),
        AlreadyReversed,
        f"movement {issue.movement_id} was already reversed",
    )


async def test_reversing_an_unknown_movement_is_rejected(ledger: Ledger) -> None:
    await stock(ledger)
    missing = "00000000-0000-0000-0000-000000000000"
    await assert_rejected(
        ledger,
        ledger.reverse(ReversalRequest(MovementId(missing), "typo")),
        UnknownMovement,
        f"movement {missing} does not exist",
    )


async def test_reversal_without_reason_is_rejected(ledger: Ledger) -> None:
    posted = await stock(ledger)
    await assert_rejected(
        ledger,
        ledger.reverse(ReversalRequest(posted.ethanol_receipt, "  ")),
        ValidationError,
        "reason is missing",
    )


async def test_key_of_a_lot_status_change_reused_for_a_receipt_is_a_conflict(
    ledger: Ledger,
) -> None:
    await stock(ledger)
    first = await ledger.set_lot_status(
        LotStatusRequest(LotId("E1"), LotStatus.HOLD, "QA", idempotency_key="qa-17")
    )
    await assert_rejected(
        ledger,
        ledger.post(req(K.RECEIPT, ETHANOL, "E1", "5", to="TK-101", idempotency_key="qa-17")),
        IdempotencyConflict,
        f"idempotency key 'qa-17' was already used for movement {first.movement_id} "
        "with a different payload",
    )


async def test_reversal_key_reused_for_another_reversal_is_a_conflict(ledger: Ledger) -> None:
    await stock(ledger)
    a = await ledger.post(req(K.ISSUE, ETHANOL, "E1", "1", frm="TK-101"))
    b = await ledger.post(req(K.ISSUE, ETHANOL, "E1", "2", frm="TK-101"))
    await ledger.reverse(ReversalRequest(a.movement_id, "typo", idempotency_key="rev-1"))
    await assert_rejected(
        ledger,
        ledger.reverse(ReversalRequest(b.movement_id, "typo", idempotency_key="rev-1")),
        IdempotencyConflict,
        "'rev-1' was already used",
    )


async def test_invalid_lot_status_transition_is_rejected(ledger: Ledger) -> None:
    await stock(ledger)
    await ledger.set_lot_status(LotStatusRequest(LotId("G1"), LotStatus.REJECTED, "failed QA"))
    await assert_rejected(
        ledger,
        ledger.set_lot_status(LotStatusRequest(LotId("G1"), LotStatus.RELEASED, "retest")),
        LotStatusTransitionError,
        r"lot G1: status rejected cannot change to released "
        r"\(allowed from rejected: none \(scrap only\)\)",
    )


async def test_status_change_of_unknown_lot_is_rejected(ledger: Ledger) -> None:
    await assert_rejected(
        ledger,
        ledger.set_lot_status(LotStatusRequest(LotId("NOPE"), LotStatus.HOLD, "QA")),
        UnknownLot,
        "lot NOPE does not exist",
    )


async def test_measurement_of_unknown_unit_is_rejected(ledger: Ledger) -> None:
    with pytest.raises(UnknownStorageUnit, match="storage unit TK-999 is not defined"):
        await ledger.record_measurement("TK-999", Decimal(1), "kg")
    assert all(line.measured is None for line in await ledger.reconciliation())


async def test_rejected_posting_leaves_no_empty_balance_rows(ledger: Ledger) -> None:
    await stock(ledger)
    before = await ledger.balances()
    for rejected in (
        req(K.RECEIPT, ETHANOL, "E9", "1", to="TK-999"),  # unknown unit
        req(K.ISSUE, ETHANOL, "NOPE", "1", frm="TK-101"),  # unknown lot
        req(K.RECEIPT, GLYCOL, "E1", "1", to="TK-103"),  # lot of another material
    ):
        with pytest.raises(InventoryError):
            await ledger.post(rejected)
    assert await ledger.balances() == before


async def test_posting_with_details_that_are_not_json_is_rejected_alone(ledger: Ledger) -> None:
    good_a = req(K.RECEIPT, ETHANOL, "A", "1", to="TK-101")
    bad = req(K.RECEIPT, ETHANOL, "B", "1", to="TK-101", details={"temperature": Decimal("21.5")})
    good_c = req(K.RECEIPT, ETHANOL, "C", "1", to="TK-101")
    results = await asyncio.gather(
        ledger.post(good_a), ledger.post(bad), ledger.post(good_c), return_exceptions=True
    )
    assert isinstance(results[1], ValidationError), results[1]
    assert not isinstance(results[0], BaseException), results[0]
    assert not isinstance(results[2], BaseException), results[2]


# -- good paths -------------------------------------------------------------------


async def test_production_links_consumed_lots_both_ways(ledger: Ledger) -> None:
    await stock(ledger)
    made = await ledger.post(
        req(K.PRODUCTION, SYRUP, "P1", "40", to="TK-301", consumed_lots=(LotId("E1"), LotId("S1")))
    )
    mid = made.movement_id
    assert await ledger.trace("P1", forward=False) == [
        GenealogyLink(LotId("E1"), LotId("P1"), mid, 1),
        GenealogyLink(LotId("S1"), LotId("P1"), mid, 1),
    ]
    assert await ledger.trace("E1", forward=True) == [
        GenealogyLink(LotId("E1"), LotId("P1"), mid, 1)
    ]
    assert await ledger.trace("S1", forward=True) == [
        GenealogyLink(LotId("S1"), LotId("P1"), mid, 1)
    ]
    assert await ledger.trace("E1", forward=False) == []
    assert await ledger.trace("P1", forward=True) == []


async def test_genealogy_follows_multi_level_production_chains(ledger: Ledger) -> None:
    await stock(ledger)
    first = await ledger.post(
        req(K.PRODUCTION, SYRUP, "P1", "40", to="TK-301", consumed_lots=(LotId("E1"), LotId("S1")))
    )
    second = await ledger.post(
        req(K.PRODUCTION, SYRUP, "P2", "30", to="TK-103", consumed_lots=(LotId("P1"),))
    )
    third = await ledger.post(
        req(K.PRODUCTION, SYRUP, "P3", "20", to="TK-301", consumed_lots=(LotId("P2"), LotId("G1")))
    )
    m1, m2, m3 = first.movement_id, second.movement_id, third.movement_id
    assert await ledger.trace("P3", forward=False) == [
        GenealogyLink(LotId("G1"), LotId("P3"), m3, 1),
        GenealogyLink(LotId("P2"), LotId("P3"), m3, 1),
        GenealogyLink(LotId("P1"), LotId("P2"), m2, 2),
        GenealogyLink(LotId("E1"), LotId("P1"), m1, 3),
        GenealogyLink(LotId("S1"), LotId("P1"), m1, 3),
    ]
    assert await ledger.trace("E1", forward=True) == [
        GenealogyLink(LotId("E1"), LotId("P1"), m1, 1),
        GenealogyLink(LotId("P1"), LotId("P2"), m2, 2),
        GenealogyLink(LotId("P2"), LotId("P3"), m3, 3),
    ]
    assert await ledger.trace("P2", forward=False) == [
        GenealogyLink(LotId("P1"), LotId("P2"), m2, 1),
        GenealogyLink(LotId("E1"), LotId("P1"), m1, 2),
        GenealogyLink(LotId("S1"), LotId("P1"), m1, 2),
    ]


async def test_genealogy_of_a_rework_cycle_lists_each_edge_once(ledger: Ledger) -> None:
    await ledger.post(req(K.PRODUCTION, SYRUP, "A", "10", to="TK-301"))
    await ledger.post(req(K.PRODUCTION, SYRUP, "B", "5", to="TK-301", consumed_lots=(LotId("A"),)))
    await ledger.post(req(K.PRODUCTION, SYRUP, "A", "2", to="TK-301", consumed_lots=(LotId("B"),)))
    links = await ledger.trace("A", forward=False)
    assert sorted((link.parent, link.child) for link in links) == [("A", "B"), ("B", "A")]


async def test_count_sets_book_to_counted_quantity(ledger: Ledger) -> None:
    await stock(ledger)
    book = "100"
    for counted, delta in [("93.5", "-6.5"), ("112", "18.5"), ("112", "0"), ("0", "-112")]:
        result = await ledger.post(req(K.COUNT, ETHANOL, "E1", counted, to="TK-101"))
        [balance] = await ledger.balances(unit="TK-101", lot="E1")
        assert balance.quantity == Decimal(counted)
        movement = await ledger.movement(result.movement_id)
        assert movement.kind is K.COUNT
        assert movement.quantity == Decimal(delta)
        assert movement.details == {"counted": counted, "book_before": book}
        book = counted
    assert (await ledger.verify()).ok


async def test_count_of_a_new_lot_opens_it_with_the_material_status(ledger: Ledger) -> None:
    await ledger.post(req(K.COUNT, GLYCOL, "TK-102-OPEN", "2500.25", to="TK-102"))
    [lot] = await ledger.lots("TK-102-OPEN")
    assert (lot.material, lot.status) == (GLYCOL, LotStatus.QUARANTINE)
    [balance] = await ledger.balances(unit="TK-102")
    assert balance.quantity == Decimal("2500.25")
    assert await ledger.current_lot("TK-102") == "TK-102-OPEN"


async def test_current_lots_agree_with_current_lot_for_every_unit(ledger: Ledger) -> None:
    assert await ledger.current_lots() == {}
    await ledger.post(req(K.RECEIPT, ETHANOL, "E1", "10", to="TK-101"))
    await ledger.post(req(K.RECEIPT, ETHANOL, "E2", "5", to="TK-101"))  # the later one counts
    await ledger.post(req(K.COUNT, GLYCOL, "TK-102-OPEN", "7", to="TK-102"))
    await ledger.post(req(K.PRODUCTION, SYRUP, "S1", "3", to="TK-301"))
    await ledger.post(req(K.ISSUE, ETHANOL, "E1", "1", frm="TK-101"))  # an issue changes nothing
    expected = {"TK-101": "E2", "TK-102": "TK-102-OPEN", "TK-301": "S1"}
    assert await ledger.current_lots() == expected
    for unit in UNITS:
        assert await ledger.current_lot(str(unit.id)) == expected.get(str(unit.id))


async def test_balances_and_lots_filtered_by_sets(ledger: Ledger) -> None:
    await ledger.post(req(K.RECEIPT, ETHANOL, "E1", "10", to="TK-101"))
    await ledger.post(req(K.RECEIPT, ETHANOL, "E2", "5", to="TK-101"))
    await ledger.post(req(K.RECEIPT, GLYCOL, "G1", "7", to="TK-102"))
    await ledger.post(req(K.PRODUCTION, SYRUP, "S1", "3", to="TK-301"))
    every = await ledger.balances()

    def pairs(balances: list[Balance]) -> set[tuple[str, str]]:
        return {(str(b.unit), str(b.lot)) for b in balances}

    for units in ({"TK-101"}, {"TK-101", "TK-301"}, {"TK-999"}):
        assert pairs(await ledger.balances(units=units)) == {
            p for p in pairs(every) if p[0] in units
        }
    assert pairs(await ledger.balances(lots={"E2", "G1"})) == {("TK-101", "E2"), ("TK-102", "G1")}
    assert pairs(await ledger.balances(units={"TK-101"}, lots={"E1", "G1"})) == {("TK-101", "E1")}
    assert [str(lot.id) for lot in await ledger.lots(ids={"S1", "E1", "NOPE"})] == ["E1", "S1"]


async def test_new_lot_gets_its_material_default_status(ledger: Ledger) -> None:
    await ledger.post(req(K.RECEIPT, GLYCOL, "N-GLY", "1", to="TK-102"))
    await ledger.post(req(K.RECEIPT, ETHANOL, "N-ETH", "1", to="TK-101"))
    await ledger.post(req(K.RECEIPT, SUGAR, "N-SUG", "1", "t", to="SI-201"))
    await ledger.post(req(K.PRODUCTION, SYRUP, "N-SYR", "1", to="TK-301"))
    assert {lot.id: (lot.material, lot.status) for lot in await ledger.lots()} == {
        "N-GLY": (GLYCOL, LotStatus.QUARANTINE),
        "N-ETH": (ETHANOL, LotStatus.RELEASED),
        "N-SUG": (SUGAR, LotStatus.RELEASED),
        "N-SYR": (SYRUP, LotStatus.QUARANTINE),
    }


async def test_second_receipt_into_an_existing_lot_keeps_its_status(ledger: Ledger) -> None:
    await stock(ledger)
    await ledger.set_lot_status(LotStatusRequest(LotId("G1"), LotStatus.RELEASED, "QA ok"))
    await ledger.post(req(K.RECEIPT, GLYCOL, "G1", "5", to="TK-103"))
    [lot] = await ledger.lots("G1")
    assert lot.status is LotStatus.RELEASED


# How to bring a fresh lot into each status: (material, status changes after receipt).
PATH_TO = {
    LotStatus.QUARANTINE: (GLYCOL, []),
    LotStatus.RELEASED: (ETHANOL, []),
    LotStatus.HOLD: (ETHANOL, [LotStatus.HOLD]),
    LotStatus.REJECTED: (GLYCOL, [LotStatus.REJECTED]),
    LotStatus.EXPIRED: (ETHANOL, [LotStatus.EXPIRED]),
}


async def _lot_in(ledger: Ledger, lot: str, status: LotStatus) -> MaterialId:
    """Receive 1 kg of a new lot into TK-103 and bring it into `status`."""
    material, path = PATH_TO[status]
    await ledger.post(req(K.RECEIPT, material, lot, "1", to="TK-103"))
    for step in path:
        await ledger.set_lot_status(LotStatusRequest(LotId(lot), step, "setup"))
    [created] = await ledger.lots(lot)
    assert created.status is status
    return material


async def test_every_allowed_lot_status_transition_is_applied_and_recorded(
    ledger: Ledger,
) -> None:
    for old, targets in ALLOWED_TRANSITIONS.items():
        for new in sorted(targets):
            lot = f"{old}-to-{new}"
            await _lot_in(ledger, lot, old)
            result = await ledger.set_lot_status(LotStatusRequest(LotId(lot), new, "QA decision"))
            [changed] = await ledger.lots(lot)
            assert changed.status is new, lot
            movement = await ledger.movement(result.movement_id)
            assert movement.kind is K.LOT_STATUS
            assert movement.details == {"old_status": str(old), "new_status": str(new)}
            assert movement.legs() == []
    assert (await ledger.verify()).ok


async def test_every_forbidden_lot_status_transition_is_rejected(ledger: Ledger) -> None:
    for old in LotStatus:
        for new in LotStatus:
            if new in ALLOWED_TRANSITIONS[old]:
                continue
            lot = f"{old}-not-{new}"
            await _lot_in(ledger, lot, old)
            await assert_rejected(
                ledger,
                ledger.set_lot_status(LotStatusRequest(LotId(lot), new, "QA decision")),
                LotStatusTransitionError,
                f"lot {lot}: status {old} cannot change to {new}",
            )


async def test_measurements_show_in_reconciliation_as_measured_minus_book(ledger: Ledger) -> None:
    await stock(ledger)
    await ledger.record_measurement("TK-101", Decimal("95"), "kg")
    await ledger.record_measurement("TK-101", Decimal("96.5"), "kg")  # the latest counts
    await ledger.record_measurement("SI-201", Decimal("1000.25"), "kg")
    lines = {line.unit: line for line in await ledger.reconciliation()}
    assert set(lines) == {u.id for u in UNITS}
    tank = lines[StorageUnitId("TK-101")]
    assert (tank.book, tank.measured, tank.discrepancy) == (
        Decimal(100),
        Decimal("96.5"),
        Decimal("-3.5"),
    )
    assert tank.uom == "kg"
    assert tank.capacity == Decimal(40000)  # 50000 L of ethanol at 0.80 kg/L
    silo = lines[StorageUnitId("SI-201")]
    assert silo.discrepancy == Decimal("0.25")
    assert silo.capacity == Decimal(80000)
    glycol = lines[StorageUnitId("TK-102")]
    assert (glycol.book, glycol.measured, glycol.discrepancy) == (Decimal(50), None, None)


async def test_measurement_in_litres_is_reconciled_in_the_material_base_unit(
    ledger: Ledger,
) -> None:
    await ledger.post(req(K.RECEIPT, ETHANOL, "E1", "1000", "L", to="TK-101"))  # 800 kg
    try:
        await ledger.record_measurement("TK-101", Decimal(1000), "L")
    except ValidationError:
        return  # refusing a unit other than the base unit is as good as converting it
    [line] = [x for x in await ledger.reconciliation() if x.unit == "TK-101"]
    assert line.discrepancy == 0


async def test_master_data_sync_is_idempotent_and_audited(ledger: Ledger) -> None:
    heads = await ledger.chain_heads()
    assert await ledger.sync_master_data(MATERIALS, UNITS) == 0
    assert await ledger.chain_heads() == heads  # nothing changed, nothing audited

    renamed = replace(MATERIALS[0], description="Ethanol 96 % (denatured)")
    added = MaterialDefinition(MaterialId("WATER"), "Process water", "kg", Decimal(1))
    changed = await ledger.sync_master_data((renamed, added, *MATERIALS[1:]), UNITS)
    assert changed == 2
    [(seq_before, _)] = heads.values()
    [(seq_after, _)] = (await ledger.chain_heads()).values()
    assert seq_after == seq_before + 2
    materials = {m.id: m for m in await ledger.materials()}
    assert materials[ETHANOL].description == "Ethanol 96 % (denatured)"
    assert materials[MaterialId("WATER")].default_lot_status is LotStatus.QUARANTINE
    assert await ledger.sync_master_data((renamed, added, *MATERIALS[1:]), UNITS) == 0
    assert (await ledger.verify()).ok


async def test_plc_issue_may_drive_book_negative(ledger: Ledger) -> None:
    await ledger.post(req(K.RECEIPT, ETHANOL, "E1", "10", to="TK-101"))
    await ledger.post(req(K.ISSUE, ETHANOL, "E1", "15", frm="TK-101", source=Source.PLC))
    [balance] = await ledger.balances(unit="TK-101")
    assert balance.quantity == Decimal(-5)
    [line] = [x for x in await ledger.reconciliation() if x.unit == "TK-101"]
    assert line.book == Decimal(-5)
    assert (await ledger.verify()).ok


async def test_plc_issue_is_not_rejected_for_lot_status(ledger: Ledger) -> None:
    await stock(ledger)  # G1 quarantined
    await ledger.set_lot_status(LotStatusRequest(LotId("E1"), LotStatus.HOLD, "QA"))
    await ledger.post(req(K.ISSUE, GLYCOL, "G1", "5", frm="TK-102", source=Source.PLC))
    await ledger.post(req(K.ISSUE, ETHANOL, "E1", "5", frm="TK-101", source=Source.PLC))
    balances = {(b.unit, b.lot): b.quantity for b in await ledger.balances()}
    assert balances[(StorageUnitId("TK-102"), LotId("G1"))] == Decimal(45)
    assert balances[(StorageUnitId("TK-101"), LotId("E1"))] == Decimal(95)


async def test_plc_issue_of_unknown_lot_is_still_rejected(ledger: Ledger) -> None:
    await assert_rejected(
        ledger,
        ledger.post(req(K.ISSUE, ETHANOL, "NOPE", "1", frm="TK-101", source=Source.PLC)),
        UnknownLot,
        "lot NOPE does not exist",
    )

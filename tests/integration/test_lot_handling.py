"""Lot handling through the real ledger (SQLite and PostgreSQL): draws split over the lots
a unit holds, blends with genealogy quantities, single-lot units, empty units closed, and
a split posting replayed whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import InsufficientStock, UnitHoldsOtherLot
from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)

K = MovementKind
WATER = MaterialDefinition(MaterialId("WATER"), "Water", "kg", Decimal(1), LotStatus.RELEASED)
RULES = {
    "FIFO": LotHandling.FIFO,
    "LIFO": LotHandling.LIFO,
    "MIX": LotHandling.MIXED,
    "BLEND": LotHandling.BLEND,
    "ONE": LotHandling.SINGLE,
}


def unit(uid: str, rule: LotHandling, booking: Booking = Booking.MANUAL) -> StorageUnit:
    return StorageUnit(
        StorageUnitId(uid), "P", "A", StorageKind.TANK, Decimal(10000), "kg", WATER.id,
        lot_handling=rule, booking=booking,
    )  # fmt: skip


UNITS = (
    *(unit(uid, rule) for uid, rule in RULES.items()),
    unit("GAUGED", LotHandling.FIFO, Booking.MEASURED),  # empty below 0.5 %: 50 kg
    unit("OUT", LotHandling.FIFO),
)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url, writer_id="lots", migrate=True) as opened:
        await opened.sync_master_data((WATER,), UNITS)
        yield opened


def receipt(unit: str, lot: str, qty: str) -> PostingRequest:
    return PostingRequest(
        K.RECEIPT, WATER.id, LotId(lot), Decimal(qty), "kg", to_unit=StorageUnitId(unit)
    )


def plc_draw(unit: str, qty: str, key: str | None = None) -> PostingRequest:
    return PostingRequest(
        K.ISSUE, WATER.id, None, Decimal(qty), "kg", from_unit=StorageUnitId(unit),
        source=Source.PLC, user="plc", reason="measured change", idempotency_key=key,
    )  # fmt: skip


async def books(ledger: Ledger, unit: str) -> dict[str, Decimal]:
    return {b.lot: b.quantity for b in await ledger.balances(unit=unit) if b.quantity}


async def test_fifo_lifo_and_mixed_split_a_draw_that_names_no_lot(ledger: Ledger) -> None:
    for uid in ("FIFO", "LIFO", "MIX"):
        await ledger.post(receipt(uid, f"{uid}-A", "600"))
        await ledger.post(receipt(uid, f"{uid}-B", "300"))
        await ledger.post(receipt(uid, f"{uid}-C", "100"))
        result = await ledger.post(plc_draw(uid, "700"))
        assert len(result.movement_ids) == len(result.movements)
    assert await books(ledger, "FIFO") == {"FIFO-B": Decimal(200), "FIFO-C": Decimal(100)}
    assert await books(ledger, "LIFO") == {"LIFO-A": Decimal(300)}
    assert await books(ledger, "MIX") == {
        "MIX-A": Decimal(180),
        "MIX-B": Decimal(90),
        "MIX-C": Decimal(30),
    }
    assert (await ledger.verify()).ok


async def test_a_split_draw_is_one_posting_and_its_replay_returns_every_part(
    ledger: Ledger,
) -> None:
    await ledger.post(receipt("FIFO", "A", "10"))
    await ledger.post(receipt("FIFO", "B", "10"))
    first = await ledger.post(plc_draw("FIFO", "15", key="plc:FIFO:1"))
    assert [m.lot for m in first.movements] == ["A", "B"]
    assert [m.quantity for m in first.movements] == [Decimal(10), Decimal(5)]
    head, part = first.movements
    assert head.details["parts"] == [part.id]
    assert part.details["part_of"] == head.id
    again = await ledger.post(plc_draw("FIFO", "15", key="plc:FIFO:1"))
    assert again.replayed
    assert again.movement_ids == first.movement_ids
    assert await books(ledger, "FIFO") == {"B": Decimal(5)}


async def test_a_manual_draw_without_a_lot_is_allocated_or_refused_whole(ledger: Ledger) -> None:
    await ledger.post(receipt("FIFO", "A", "10"))
    await ledger.post(receipt("FIFO", "B", "10"))
    transfer = PostingRequest(
        K.TRANSFER, WATER.id, None, Decimal(12), "kg", from_unit=StorageUnitId("FIFO"),
        to_unit=StorageUnitId("OUT"), reason="to packing",
    )  # fmt: skip
    result = await ledger.post(transfer)
    assert [(m.lot, m.quantity) for m in result.movements] == [("A", 10), ("B", 2)]
    assert await books(ledger, "OUT") == {"A": Decimal(10), "B": Decimal(2)}  # lots travel
    too_much = PostingRequest(
        K.ISSUE, WATER.id, None, Decimal(9), "kg", from_unit=StorageUnitId("FIFO"), reason="r"
    )
    history = await ledger.history()
    with pytest.raises(InsufficientStock):
        await ledger.post(too_much)
    assert await ledger.history() == history  # nothing of it posted


async def test_a_receipt_into_a_blend_unit_makes_one_new_lot_with_its_genealogy(
    ledger: Ledger,
) -> None:
    await ledger.post(receipt("BLEND", "OLD", "400"))
    result = await ledger.post(receipt("BLEND", "NEW", "100"))
    assert [m.kind for m in result.movements] == [K.RECEIPT, K.BLEND, K.BLEND, K.BLEND]
    [blend] = (await books(ledger, "BLEND")).items()
    blend_lot, quantity = blend
    assert quantity == Decimal(500)
    assert blend_lot.startswith("BLEND-BLEND-")
    [lot] = await ledger.lots(blend_lot)
    assert lot.status is LotStatus.RELEASED  # both inputs released
    links = await ledger.trace(blend_lot, forward=False)
    assert {link.parent for link in links} == {"OLD", "NEW"}
    rise = PostingRequest(
        K.RECEIPT, WATER.id, None, Decimal(5), "kg", to_unit=StorageUnitId("BLEND"),
        source=Source.PLC, user="plc", reason="measured change",
    )  # fmt: skip
    assert (await ledger.post(rise)).movement.lot == blend_lot  # type: ignore[union-attr]
    assert (await ledger.verify()).ok


async def test_a_blend_with_a_quarantined_input_is_not_released(ledger: Ledger) -> None:
    await ledger.post(receipt("BLEND", "GOOD", "400"))
    quarantined = PostingRequest(
        K.RECEIPT, WATER.id, LotId("DOUBT"), Decimal(10), "kg", to_unit=StorageUnitId("OUT")
    )
    await ledger.post(quarantined)
    await ledger.set_lot_status(LotStatusRequest(LotId("DOUBT"), LotStatus.HOLD, reason="lab"))
    transfer = PostingRequest(
        K.TRANSFER, WATER.id, LotId("DOUBT"), Decimal(10), "kg", from_unit=StorageUnitId("OUT"),
        to_unit=StorageUnitId("BLEND"), reason="rework",
    )  # fmt: skip
    await ledger.post(transfer)
    [(blend_lot, quantity)] = (await books(ledger, "BLEND")).items()
    assert quantity == Decimal(410)
    [lot] = await ledger.lots(blend_lot)
    assert lot.status is LotStatus.HOLD


async def test_a_trace_reports_each_inputs_quantity_and_checks_the_mass_balance(
    ledger: Ledger,
) -> None:
    await ledger.post(receipt("BLEND", "IN-A", "300"))
    await ledger.post(receipt("BLEND", "IN-B", "200"))
    [blend_lot] = await books(ledger, "BLEND")
    backward = await ledger.trace(blend_lot, forward=False)
    assert {(link.parent, link.quantity) for link in backward} == {
        ("IN-A", Decimal(300)), ("IN-B", Decimal(200)),
    }  # fmt: skip
    forward = await ledger.trace("IN-A", forward=True)  # reaches one input of two
    assert [(link.child, link.quantity) for link in forward] == [(blend_lot, Decimal(300))]
    [check] = await ledger.mass_balance(forward)  # all inputs count, not only those reached
    assert (check.lot, check.inputs, check.output, check.conserved) == (
        blend_lot, Decimal(500), Decimal(500), True,
    )  # fmt: skip
    production = PostingRequest(
        K.PRODUCTION, WATER.id, LotId("MADE"), Decimal(50), "kg", to_unit=StorageUnitId("OUT"),
        consumed_lots=(LotId("IN-A"),),
    )  # fmt: skip
    await ledger.post(production)
    made = await ledger.trace("MADE", forward=False)
    assert [(link.parent, link.quantity) for link in made] == [("IN-A", None)]
    [unknown] = await ledger.mass_balance(made)
    assert (unknown.inputs, unknown.conserved) == (None, None)  # consumed quantity unrecorded


async def test_a_single_lot_unit_refuses_a_second_lot_until_it_is_empty(ledger: Ledger) -> None:
    await ledger.post(receipt("ONE", "A", "10"))
    with pytest.raises(UnitHoldsOtherLot, match="holds lot A"):
        await ledger.post(receipt("ONE", "B", "10"))
    await ledger.post(receipt("ONE", "A", "5"))  # more of the same lot is fine
    issue = PostingRequest(
        K.ISSUE, WATER.id, LotId("A"), Decimal(15), "kg", from_unit=StorageUnitId("ONE")
    )
    await ledger.post(issue)
    await ledger.post(receipt("ONE", "B", "10"))
    assert await books(ledger, "ONE") == {"B": Decimal(10)}


async def delivered(ledger: Ledger, unit: str, lot: str, qty: str) -> None:
    """A receipt into a measured unit: an advice, then the gauge's rise books it."""
    assert (await ledger.post(receipt(unit, lot, qty))).advice is not None
    rise = PostingRequest(
        K.RECEIPT, WATER.id, None, Decimal(qty), "kg", to_unit=StorageUnitId(unit),
        source=Source.PLC, user="plc", details={"settled": True},
    )  # fmt: skip
    assert (await ledger.post(rise)).movement_ids


async def test_a_measured_unit_drawn_below_its_threshold_closes_its_lots(ledger: Ledger) -> None:
    await delivered(ledger, "GAUGED", "A", "300")
    await delivered(ledger, "GAUGED", "B", "200")
    result = await ledger.post(plc_draw("GAUGED", "460"))  # 40 kg left: below 50 kg
    closing = [m for m in result.movements if m.kind is K.ADJUSTMENT]
    assert [(m.lot, m.quantity, m.source, m.reason) for m in closing] == [
        ("B", Decimal(-40), Source.SYSTEM, "unit empty")
    ]
    assert await books(ledger, "GAUGED") == {}
    await delivered(ledger, "GAUGED", "C", "100")
    assert await books(ledger, "GAUGED") == {"C": Decimal(100)}  # the next lot starts clean
    assert (await ledger.verify()).ok


async def test_a_manual_unit_is_never_closed_by_the_default_threshold(ledger: Ledger) -> None:
    await ledger.post(receipt("FIFO", "A", "30"))
    issue = PostingRequest(
        K.ISSUE, WATER.id, LotId("A"), Decimal(29), "kg", from_unit=StorageUnitId("FIFO")
    )
    await ledger.post(issue)
    assert await books(ledger, "FIFO") == {"A": Decimal(1)}


async def test_draws_in_one_commit_see_each_others_parts(ledger: Ledger) -> None:
    await ledger.post(receipt("FIFO", "A", "10"))
    await ledger.post(receipt("FIFO", "B", "10"))
    results = await asyncio.gather(*(ledger.post(plc_draw("FIFO", "4")) for _ in range(4)))
    drawn = [(m.lot, m.quantity) for r in results for m in r.movements]
    assert sum(q for _, q in drawn) == 16
    assert await books(ledger, "FIFO") == {"B": Decimal(4)}

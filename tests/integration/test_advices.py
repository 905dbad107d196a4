"""Advices through the real ledger (SQLite and PostgreSQL): a manual change of a measured
unit books nothing until the gauge's movements come, which then book to the advised lot
with the advice's reference; the variance is recorded, an unmatched advice expires, a
replay returns the advice, and every step is audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.cancel import cancel_and_wait
from inventory_core.domain.advices import AdviceDirection, AdviceState
from inventory_core.domain.errors import (
    DisagreesWithGauge,
    IdempotencyConflict,
    InsufficientStock,
    LotNotReleased,
    ValidationError,
)
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
from tests.polling import eventually

K = MovementKind
OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal(1), LotStatus.RELEASED)
STRICT = MaterialDefinition(MaterialId("STRICT"), "Strict", "kg", Decimal(1), LotStatus.QUARANTINE)


def unit(uid: str, booking: Booking, rule: LotHandling = LotHandling.FIFO) -> StorageUnit:
    return StorageUnit(
        StorageUnitId(uid), "P", "A", StorageKind.TANK, Decimal(100000), "kg", OIL.id,
        lot_handling=rule, booking=booking, zero_lot_threshold=Decimal(0),
        advice_window_s=600,
    )  # fmt: skip


UNITS = (
    unit("TANK", Booking.MEASURED),
    unit("TANK2", Booking.MEASURED, LotHandling.MIXED),
    unit("BLENDER", Booking.MEASURED, LotHandling.BLEND),
    unit("DRUMS", Booking.MANUAL),
    replace(unit("GAUGED", Booking.MEASURED), zero_lot_threshold=Decimal(10)),
)


@dataclass
class Clock:
    moment: datetime = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(ledger_url: str, clock: Clock) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url, writer_id="adv", migrate=True, clock=clock) as opened:
        await opened.sync_master_data((OIL, STRICT), UNITS)
        yield opened


def manual(
    kind: MovementKind,
    lot: str | None,
    qty: str,
    *,
    src: str | None = None,
    dst: str | None = None,
    key: str | None = None,
    ref: str = "",
    consumed: tuple[str, ...] = (),
    material: MaterialDefinition = OIL,
) -> PostingRequest:
    return PostingRequest(
        kind, material.id, None if lot is None else LotId(lot), Decimal(qty), "kg",
        from_unit=None if src is None else StorageUnitId(src),
        to_unit=None if dst is None else StorageUnitId(dst),
        idempotency_key=key, ref=ref, user="erp", source=Source.CLI, reason="delivery",
        consumed_lots=tuple(LotId(c) for c in consumed),
    )  # fmt: skip


def gauge(
    unit: str, qty: str, key: str, *, settled: bool, rise: bool = True, drift: bool = False
) -> PostingRequest:
    """A PLC-derived movement of `unit`, as the measurement service posts it."""
    u = StorageUnitId(unit)
    return PostingRequest(
        K.RECEIPT if rise else K.ISSUE, OIL.id, None, Decimal(qty), "kg",
        to_unit=u if rise else None, from_unit=None if rise else u,
        idempotency_key=key, user="plc", source=Source.PLC, reason="measured change",
        details={"derived_from": "plc", "settled": settled, "drift": drift},
    )  # fmt: skip


async def books(ledger: Ledger, unit: str) -> dict[str, Decimal]:
    return {b.lot: b.quantity for b in await ledger.balances(unit=unit) if b.quantity}


async def test_a_receipt_into_a_measured_unit_is_an_advice_the_gauge_books(
    ledger: Ledger, clock: Clock
) -> None:
    result = await ledger.post(manual(K.RECEIPT, "L1", "1000", dst="TANK", key="d1", ref="DN-7"))
    assert result.movement_id.startswith("advice:")
    assert result.advice is not None and result.advice.state is AdviceState.OPEN
    assert await books(ledger, "TANK") == {}  # nothing booked: the gauge books it
    assert await ledger.history(unit="TANK") == []

    again = await ledger.post(manual(K.RECEIPT, "L1", "1000", dst="TANK", key="d1", ref="DN-7"))
    assert again.replayed and again.movement_id == result.movement_id
    with pytest.raises(IdempotencyConflict):
        await ledger.post(manual(K.RECEIPT, "L1", "1100", dst="TANK", key="d1", ref="DN-7"))
    (listed,) = await ledger.advices(state="open")
    assert listed.id == result.advice.id and listed.ref == "DN-7"
    assert listed.direction is AdviceDirection.IN and listed.expected == Decimal(1000)

    clock.moment += timedelta(seconds=30)
    first = await ledger.post(gauge("TANK", "600", "plc:1", settled=False))
    second = await ledger.post(gauge("TANK", "370", "plc:2", settled=True))
    third = await ledger.post(gauge("TANK", "50", "plc:3", settled=True))
    # the unadvised rise books as any measured change: to the lot the unit holds
    assert await books(ledger, "TANK") == {"L1": Decimal(1020)}
    for posted in (first, second):
        assert posted.movement is not None
        assert posted.movement.lot == "L1" and posted.movement.source is Source.PLC
        assert posted.movement.details["advice"] == listed.id
        assert posted.movement.details["ref"] == "DN-7"
    assert third.movement is not None and third.movement.details["unadvised"] is True
    matched = await ledger.advice(result.movement_id)
    assert matched.state is AdviceState.MATCHED
    assert (matched.matched, matched.matches) == (Decimal(970), 2)
    assert matched.variance == Decimal(-30) and matched.variance_pct == Decimal("-3.00")
    assert (await ledger.lots("L1"))[0].status is LotStatus.RELEASED
    report = await ledger.verify()
    assert report.ok, report.problems


async def test_an_issue_advice_draws_by_lot_handling_and_falls_are_matched_only(
    ledger: Ledger,
) -> None:
    await ledger.post(gauge("TANK2", "600", "plc:a", settled=True))  # unadvised: TANK2-OPEN
    await ledger.post(manual(K.RECEIPT, "M2", "400", dst="TANK2"))
    await ledger.post(gauge("TANK2", "400", "plc:b", settled=True))
    assert await books(ledger, "TANK2") == {"TANK2-OPEN": Decimal(600), "M2": Decimal(400)}

    advice = (await ledger.post(manual(K.ISSUE, None, "500", src="TANK2", ref="SO-9"))).advice
    assert advice is not None and advice.direction is AdviceDirection.OUT
    rise = await ledger.post(gauge("TANK2", "10", "plc:c", settled=True))  # other direction
    assert rise.movement is not None and rise.movement.details["unadvised"] is True
    fall = await ledger.post(gauge("TANK2", "510", "plc:d", settled=True, rise=False))
    assert len(fall.movements) == 2  # mixed: split in proportion over both lots
    assert all(m.details["advice"] == advice.id for m in fall.movements)
    assert sum(m.quantity for m in fall.movements) == Decimal(510)
    closed = await ledger.advice(advice.id)
    assert closed.state is AdviceState.MATCHED and closed.variance == Decimal(10)
    scrap = PostingRequest(
        K.SCRAP, OIL.id, LotId("M2"), Decimal(20), "kg", from_unit=StorageUnitId("TANK2"),
        source=Source.CLI, user="qa", reason="off-spec",
    )  # fmt: skip
    assert (await ledger.post(scrap)).advice is not None
    drained = await ledger.post(gauge("TANK2", "20", "plc:e", settled=True, rise=False))
    assert drained.movement is not None and drained.movement.kind is K.SCRAP
    assert drained.movement.lot == "M2"


async def test_advised_transfers_book_the_manual_side_with_the_lots_that_moved(
    ledger: Ledger,
) -> None:
    await ledger.post(manual(K.RECEIPT, "D1", "800", dst="DRUMS"))  # manual: booked at once
    assert await books(ledger, "DRUMS") == {"D1": Decimal(800)}
    with pytest.raises(InsufficientStock):
        await ledger.post(manual(K.TRANSFER, "D1", "900", src="DRUMS", dst="TANK"))
    inbound = await ledger.post(manual(K.TRANSFER, "D1", "500", src="DRUMS", dst="TANK"))
    assert inbound.advice is not None and inbound.advice.other_unit == "DRUMS"
    assert await books(ledger, "DRUMS") == {"D1": Decimal(800)}  # not yet: the gauge decides
    moved = await ledger.post(gauge("TANK", "490", "plc:t1", settled=True))
    assert moved.movement is not None and moved.movement.kind is K.TRANSFER
    assert await books(ledger, "DRUMS") == {"D1": Decimal(310)}
    assert await books(ledger, "TANK") == {"D1": Decimal(490)}

    outbound = await ledger.post(manual(K.TRANSFER, None, "200", src="TANK", dst="DRUMS"))
    assert outbound.advice is not None and outbound.advice.direction is AdviceDirection.OUT
    await ledger.post(gauge("TANK", "205", "plc:t2", settled=True, rise=False))
    assert await books(ledger, "TANK") == {"D1": Decimal(285)}
    assert await books(ledger, "DRUMS") == {"D1": Decimal(515)}
    with pytest.raises(ValidationError, match="both units are measured"):
        await ledger.post(manual(K.TRANSFER, None, "10", src="TANK", dst="TANK2"))


async def test_a_production_advice_links_its_consumed_lots(ledger: Ledger) -> None:
    await ledger.post(manual(K.RECEIPT, "RAW", "100", dst="DRUMS"))
    production = manual(K.PRODUCTION, "BATCH-1", "300", dst="TANK", consumed=("RAW",))
    advice = await ledger.post(production)
    assert advice.advice is not None
    booked = await ledger.post(gauge("TANK", "300", "plc:p1", settled=True))
    assert booked.movement is not None and booked.movement.kind is K.PRODUCTION
    assert [link.parent for link in await ledger.trace("BATCH-1", forward=False)] == ["RAW"]
    assert (await ledger.advice(advice.movement_id)).variance == Decimal(0)


async def test_an_advice_is_checked_before_it_is_recorded(ledger: Ledger) -> None:
    strict = StorageUnit(
        StorageUnitId("SQ"), "P", "A", StorageKind.TANK, Decimal(1000), "kg", STRICT.id,
        booking=Booking.MANUAL,
    )  # fmt: skip
    await ledger.sync_master_data((OIL, STRICT), (*UNITS, strict))
    await ledger.post(manual(K.RECEIPT, "QL", "10", dst="SQ", material=STRICT))
    with pytest.raises(ValidationError, match="does not exist"):
        await ledger.post(manual(K.ISSUE, "NOPE", "10", src="TANK"))
    with pytest.raises(ValidationError, match="material"):
        await ledger.post(manual(K.RECEIPT, "QL", "10", dst="TANK"))
    await ledger.post(manual(K.RECEIPT, "OK1", "10", dst="DRUMS"))
    await ledger.post(manual(K.TRANSFER, "OK1", "10", src="DRUMS", dst="TANK"))
    await ledger.post(gauge("TANK", "10", "plc:q", settled=True))
    await ledger.set_lot_status(LotStatusRequest(LotId("OK1"), LotStatus.HOLD, "check"))
    with pytest.raises(LotNotReleased):
        await ledger.post(manual(K.ISSUE, "OK1", "5", src="TANK"))
    assert [a.lot for a in await ledger.advices()] == ["OK1"]  # only the transfer's


async def test_an_unmatched_advice_expires_audited_and_then_matches_nothing(
    ledger: Ledger, clock: Clock
) -> None:
    late = await ledger.post(manual(K.RECEIPT, "LATE", "100", dst="TANK", ref="DN-1"))
    part = await ledger.post(manual(K.RECEIPT, "PART", "100", dst="TANK2", ref="DN-2"))
    clock.moment += timedelta(seconds=10)
    await ledger.post(gauge("TANK2", "60", "plc:x", settled=False))  # flow never seen to stop
    assert await ledger.expire_advices() == []  # still in the window
    clock.moment += timedelta(seconds=600)
    closed = {a.id: a for a in await ledger.expire_advices()}
    assert late.advice is not None and part.advice is not None
    assert closed[late.advice.id].state is AdviceState.EXPIRED
    assert closed[part.advice.id].state is AdviceState.MATCHED
    assert closed[part.advice.id].variance == Decimal(-40)
    assert await ledger.expire_advices() == []
    after = await ledger.post(gauge("TANK", "100", "plc:y", settled=True))
    assert after.movement is not None and after.movement.lot == "TANK-OPEN"
    assert after.movement.details["unadvised"] is True
    report = await ledger.verify()
    assert report.ok, report.problems


async def test_the_expiry_task_closes_advices_and_tells_the_listeners(ledger_url: str) -> None:
    """`keep_advices` (a task of the service) expires an advice once its window passed,
    and the advice listeners (metrics) hear of the advice and of its expiry."""
    brief = StorageUnit(
        StorageUnitId("BRIEF"), "P", "A", StorageKind.TANK, Decimal(1000), "kg", OIL.id,
        booking=Booking.MEASURED, advice_window_s=1,
    )  # fmt: skip
    async with open_ledger(ledger_url, writer_id="exp", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), (brief,))
        heard: list[tuple[str, AdviceState]] = []
        ledger.subscribe_advices(lambda advice: heard.append((advice.id, advice.state)))
        advice = (await ledger.post(manual(K.RECEIPT, "B1", "10", dst="BRIEF"))).advice
        assert advice is not None
        task = asyncio.create_task(ledger.keep_advices(every_s=0.2))
        try:
            await eventually(lambda: len(heard) == 2, "the advice expired", timeout_s=10)
        finally:
            await cancel_and_wait([task])
        assert heard == [(advice.id, AdviceState.OPEN), (advice.id, AdviceState.EXPIRED)]
        assert (await ledger.advice(advice.reference)).state is AdviceState.EXPIRED


async def test_counts_and_adjustments_of_a_measured_unit_correct_the_book_at_once(
    ledger: Ledger,
) -> None:
    """They move no material, so the gauge never books them: they are not advices, and a
    count or adjustment followed by the gauge's next change books each once."""
    await ledger.post(gauge("TANK", "500", "plc:c1", settled=True))  # TANK-OPEN 500
    count = PostingRequest(
        K.COUNT, OIL.id, LotId("TANK-OPEN"), Decimal(480), "kg", to_unit=StorageUnitId("TANK"),
        source=Source.CLI, user="qa",
    )  # fmt: skip
    counted = await ledger.post(count)
    assert counted.advice is None and counted.movement is not None
    adjust = PostingRequest(
        K.ADJUSTMENT, OIL.id, LotId("TANK-OPEN"), Decimal(-5), "kg", to_unit=StorageUnitId("TANK"),
        source=Source.CLI, user="qa", reason="sample taken",
    )  # fmt: skip
    assert (await ledger.post(adjust)).advice is None
    await ledger.post(gauge("TANK", "20", "plc:c2", settled=True))
    assert await books(ledger, "TANK") == {"TANK-OPEN": Decimal(495)}
    assert await ledger.advices() == []


async def test_a_count_or_adjustment_must_agree_with_the_gauge_within_its_tolerance(
    ledger: Ledger,
) -> None:
    """The gauge is a measured unit's quantity truth: a count may set the lots' shares and
    correct the book towards the measurement, never take it further away than the unit's
    tolerance (its zero_lot_threshold, 10 kg here)."""
    await ledger.post(gauge("GAUGED", "600", "plc:g0", settled=True))  # GAUGED-OPEN 600
    await ledger.post(manual(K.RECEIPT, "G2", "400", dst="GAUGED", key="g2"))
    await ledger.post(gauge("GAUGED", "400", "plc:g1", settled=True))  # G2 400: 1000 in all
    await ledger.record_measurement("GAUGED", Decimal(1000), "kg")

    def count(lot: str, qty: str) -> PostingRequest:
        return PostingRequest(
            K.COUNT, OIL.id, LotId(lot), Decimal(qty), "kg", to_unit=StorageUnitId("GAUGED"),
            source=Source.CLI, user="qa",
        )  # fmt: skip

    with pytest.raises(DisagreesWithGauge, match="from the 1000 kg its gauge measures"):
        await ledger.post(count("G2", "300"))  # the book would be 900 kg
    await ledger.post(count("G2", "392"))  # 8 kg off: within the tolerance
    assert await books(ledger, "GAUGED") == {"GAUGED-OPEN": Decimal(600), "G2": Decimal(392)}

    await ledger.record_measurement("GAUGED", Decimal(1050), "kg")  # the gauge moved on
    adjust = PostingRequest(
        K.ADJUSTMENT, OIL.id, LotId("G2"), Decimal(20), "kg", to_unit=StorageUnitId("GAUGED"),
        source=Source.CLI, user="qa", reason="book behind the gauge",
    )  # fmt: skip
    await ledger.post(adjust)  # towards the gauge: allowed, though still 38 kg short
    with pytest.raises(DisagreesWithGauge):
        await ledger.post(replace(adjust, quantity=Decimal(-20)))  # away from it
    assert await books(ledger, "GAUGED") == {"GAUGED-OPEN": Decimal(600), "G2": Decimal(412)}


async def test_a_delivery_into_a_blend_unit_makes_one_blend_lot_over_its_gauge_steps(
    ledger: Ledger,
) -> None:
    await ledger.post(gauge("BLENDER", "500", "plc:0", settled=True))  # what the tank held
    (held,) = await books(ledger, "BLENDER")
    first = await ledger.post(manual(K.RECEIPT, "NEW1", "900", dst="BLENDER", key="d1"))
    assert first.advice is not None
    for step, qty in enumerate(("300", "300", "310")):  # one truck, three measured steps
        await ledger.post(gauge("BLENDER", qty, f"plc:1.{step}", settled=step == 2))
    blend = f"BLENDER-BLEND-{first.advice.id[:8].upper()}"
    assert await books(ledger, "BLENDER") == {blend: Decimal(1410)}
    backward = await ledger.trace(blend, forward=False)
    assert {(link.parent, link.quantity) for link in backward} == {
        (held, Decimal(500)),
        ("NEW1", Decimal(300)),
        ("NEW1", Decimal(300)),
        ("NEW1", Decimal(310)),
    }
    assert all(check.conserved for check in await ledger.mass_balance(backward))

    second = await ledger.post(manual(K.RECEIPT, "NEW2", "100", dst="BLENDER", key="d2"))
    await ledger.post(gauge("BLENDER", "100", "plc:2", settled=True))
    assert second.advice is not None
    (after,) = await books(ledger, "BLENDER")  # the next delivery: a new blend of the old one
    assert after not in (blend, "NEW2")
    assert {link.parent for link in await ledger.trace(after, forward=False)} >= {blend, "NEW2"}
    assert (await ledger.verify()).ok


async def test_a_delivery_whose_last_step_reads_as_a_fall_still_closes_its_advice(
    ledger: Ledger,
) -> None:
    """The truck is empty, the level settles a few kg lower (noise, the line draining):
    the settled fall books as an unadvised issue and closes the receipt advice, so the
    next delivery's rise is not booked to this one's lot."""
    first = await ledger.post(manual(K.RECEIPT, "L1", "1000", dst="TANK", key="d1"))
    await ledger.post(gauge("TANK", "990", "plc:1", settled=False))
    await ledger.post(gauge("TANK", "4", "plc:2", settled=True, rise=False))
    assert first.advice is not None
    closed = await ledger.advice(first.advice.id)
    assert closed.state is AdviceState.MATCHED and closed.matched == Decimal(990)
    assert closed.variance == Decimal(-10)
    second = await ledger.post(manual(K.RECEIPT, "L2", "500", dst="TANK", key="d2"))
    await ledger.post(gauge("TANK", "500", "plc:3", settled=True))
    assert second.advice is not None
    assert (await ledger.advice(second.advice.id)).matched == Decimal(500)
    assert await books(ledger, "TANK") == {"L1": Decimal(986), "L2": Decimal(500)}
    assert (await ledger.verify()).ok


async def test_a_transfer_between_two_measured_units_is_two_advices_each_gauge_books(
    ledger: Ledger,
) -> None:
    await ledger.post(manual(K.RECEIPT, "L1", "1000", dst="TANK", key="d1"))
    await ledger.post(gauge("TANK", "1000", "plc:1", settled=True))
    with pytest.raises(ValidationError, match="name the lot that moves"):
        await ledger.post(manual(K.TRANSFER, None, "300", src="TANK", dst="TANK2"))
    request = manual(K.TRANSFER, "L1", "300", src="TANK", dst="TANK2", key="t1", ref="MO-9")
    out = await ledger.post(request)
    assert out.advice is not None and out.advice.direction is AdviceDirection.OUT
    assert out.advice.partner_unit == "TANK2" and out.advice.partner is not None
    into = await ledger.advice(out.advice.partner)
    assert (into.unit, into.direction, into.lot, into.partner) == (
        "TANK2",
        AdviceDirection.IN,
        "L1",
        out.advice.id,
    )
    again = await ledger.post(request)
    assert again.replayed and again.movement_id == out.movement_id
    assert await books(ledger, "TANK2") == {}  # nothing until the gauges move

    fall = await ledger.post(gauge("TANK", "300", "plc:2", settled=True, rise=False))
    rise = await ledger.post(gauge("TANK2", "296", "plc:3", settled=True))
    assert fall.movement is not None and rise.movement is not None
    assert (fall.movement.kind, fall.movement.from_unit, fall.movement.to_unit) == (
        K.TRANSFER,
        "TANK",
        None,
    )
    assert fall.movement.details["transfer_to"] == "TANK2"
    assert (rise.movement.kind, rise.movement.lot, rise.movement.from_unit) == (
        K.TRANSFER,
        "L1",
        None,
    )
    assert rise.movement.details["transfer_from"] == "TANK"
    assert await books(ledger, "TANK") == {"L1": Decimal(700)}
    assert await books(ledger, "TANK2") == {"L1": Decimal(296)}  # lot carried through
    sides = {a.id: a for a in await ledger.advices(state="matched")}
    assert sides[out.advice.id].variance == 0 and sides[into.id].variance == Decimal(-4)
    assert (await ledger.verify()).ok


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE advices SET matched = '990' WHERE lot = 'T1'", "differs from its audit"),
        ("UPDATE advices SET state = 'open', closed_at = NULL WHERE lot = 'T1'", "differs"),
        ("UPDATE advices SET lot = 'T9' WHERE lot = 'T2'", "differs from its audit"),
        ("DELETE FROM advices WHERE lot = 'T2'", "deleted"),
    ],
)
async def test_verify_reports_an_advice_edited_or_deleted_outside_the_ledger(
    sqlite_url: str, clock: Clock, sql: str, message: str
) -> None:
    import sqlite3

    async with open_ledger(sqlite_url, writer_id="adv", migrate=True, clock=clock) as ledger:
        await ledger.sync_master_data((OIL, STRICT), UNITS)
        await ledger.post(manual(K.RECEIPT, "T1", "1000", dst="TANK", key="t1"))
        await ledger.post(gauge("TANK", "600", "plc:1", settled=False))  # a measured step
        await ledger.post(gauge("TANK", "395", "plc:2", settled=True))  # and the close
        await ledger.post(manual(K.RECEIPT, "T2", "50", dst="TANK2", key="t2"))  # still open
        assert (await ledger.verify()).ok
    path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        assert db.execute(sql).rowcount == 1
    db.close()
    async with open_ledger(sqlite_url, writer_id="adv", clock=clock) as ledger:
        report = await ledger.verify()
    assert not report.ok
    assert any(p.chain == "advices" and message in p.message for p in report.problems), report


async def test_drift_at_rest_matches_no_advice_and_closes_the_one_that_flowed(
    ledger: Ledger, clock: Clock
) -> None:
    """The gauge drifting at rest (less than the deadband by max_interval) is no delivery:
    an advice waiting for its truck is not matched nor closed by it; once the truck's rise
    booked to the advice, the next settled drift closes it (the flow stopped)."""
    await ledger.post(manual(K.RECEIPT, "D0", "100", dst="DRUMS"))
    advised = await ledger.post(manual(K.RECEIPT, "L9", "500", dst="TANK", key="d9"))
    assert advised.advice is not None
    clock.moment += timedelta(seconds=10)
    noise = await ledger.post(gauge("TANK", "2", "plc:n1", settled=True, drift=True))
    assert noise.advice is None
    (waiting,) = await ledger.advices(state="open")
    assert (waiting.id, waiting.matched, waiting.matches) == (advised.advice.id, 0, 0)
    rise = await ledger.post(gauge("TANK", "498", "plc:r1", settled=False))
    assert rise.advice is not None and rise.advice.matched == 498
    clock.moment += timedelta(seconds=10)
    await ledger.post(gauge("TANK", "1", "plc:n2", settled=True, drift=True))
    (done,) = await ledger.advices(state="matched")
    assert (done.id, done.matched, done.variance) == (advised.advice.id, 498, -2)
    held = await books(ledger, "TANK")
    assert held["L9"] == 498  # the delivery's lot got the flow, the drift went unadvised
    assert sum(held.values()) == 2 + 498 + 1  # every measured change booked once


async def test_a_variance_beyond_the_policys_tolerance_is_held_for_acceptance(
    ledger: Ledger, clock: Clock
) -> None:
    """advice-variance: the gauge books what it measured; a variance over 5 % of the
    advised quantity waits for a signature that accepts it (audited on the advice)."""
    from inventory_core.domain.signatures import (
        Decision,
        RequestState,
        SignatureAction,
        SignaturePolicy,
        SignRequest,
        Threshold,
    )  # fmt: skip
    from inventory_core.domain.users import Role

    await ledger.set_signature_policies(
        (
            SignaturePolicy(
                SignatureAction.ADVICE_VARIANCE,
                "accepted",
                Role.ENGINEER,
                threshold=Threshold(percent=Decimal(5)),
            ),
        )
    )
    close = await ledger.post(manual(K.RECEIPT, "L1", "1000", dst="TANK", key="v1"))
    near = await ledger.post(manual(K.RECEIPT, "L2", "100", dst="TANK2", key="v2"))
    clock.moment += timedelta(seconds=5)
    booked = await ledger.post(gauge("TANK", "900", "plc:v1", settled=True))
    assert booked.movement is not None and booked.movement.quantity == 900, "the gauge books"
    await ledger.post(gauge("TANK2", "103", "plc:v2", settled=True))  # 3 %: tolerated
    [pending] = await ledger.pending_requests()
    assert pending.action is SignatureAction.ADVICE_VARIANCE and "variance -100" in pending.summary
    assert close.advice is not None and close.advice.id in pending.summary
    assert near.advice is not None and near.advice.id not in pending.summary

    outcome = await ledger.sign(
        SignRequest(pending.request_id, Decision.APPROVED, "eng1", Role.ENGINEER, "E", "accepted")
    )
    assert outcome.request.state is RequestState.POSTED
    assert outcome.request.outcome == f"advice:{close.advice.id}"
    records = [r for _, r in await ledger.audit_records("advice", close.advice.id)]
    assert records[-1].action == "variance-accepted" and '"signer":"eng1"' in records[-1].new
    assert await books(ledger, "TANK") == {"L1": Decimal(900)}
    assert (await ledger.verify()).ok

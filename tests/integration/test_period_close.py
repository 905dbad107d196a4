"""Closing a period of the books with a signed balance report (SQLite and PostgreSQL):
the close is held until signed as `reviewed`; closed, it refuses an overlapping close
and any posting with a time inside it (a writer whose clock is behind); a reversal of a
movement booked in it posts in the open period and names the closed one."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.clock import format_timestamp
from inventory_core.domain.audit import canonical_json
from inventory_core.domain.errors import PeriodClosed, SignatureRefused, ValidationError
from inventory_core.domain.model import (
    Booking,
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
from inventory_core.domain.signatures import (
    PERIOD_PREFIX,
    REQUEST_PREFIX,
    Decision,
    SignatureAction,
    SignaturePolicy,
    SignRequest,
)
from inventory_core.domain.users import Role

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal(1), LotStatus.RELEASED)
BIN = StorageUnit(
    StorageUnitId("BIN-1"),
    "P",
    "A",
    StorageKind.BIN,
    Decimal(1000),
    "kg",
    OIL.id,
    booking=Booking.MANUAL,
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class StepClock:
    """The ledger's time, set by the test (the Clock protocol the ledger takes)."""

    at: datetime

    def now(self) -> datetime:
        return self.at


def receipt(lot: str, quantity: int) -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT,
        OIL.id,
        LotId(lot),
        Decimal(quantity),
        "kg",
        to_unit=BIN.id,
        user="op1",
    )


def review(request_id: str, signer: str = "eng1", meaning: str = "reviewed") -> SignRequest:
    return SignRequest(request_id, Decision.APPROVED, signer, Role.ENGINEER, signer, meaning)


@pytest.fixture
async def books(ledger_url: str) -> AsyncIterator[tuple[Ledger, StepClock]]:
    clock = StepClock(T0 + timedelta(days=1))
    async with open_ledger(ledger_url, writer_id="p", migrate=True, clock=clock) as ledger:
        await ledger.sync_master_data((OIL,), (BIN,))
        await ledger.post(receipt("L1", 100))
        clock.at = T0 + timedelta(days=20)
        await ledger.post(receipt("L2", 50))
        clock.at = T0 + timedelta(days=31)
        yield ledger, clock


NOVEMBER = (format_timestamp(T0), format_timestamp(T0 + timedelta(days=30)))


async def test_a_signed_close_closes_the_period(books: tuple[Ledger, StepClock]) -> None:
    ledger, clock = books
    held = await ledger.request_period_close(*NOVEMBER, user="ctrl", reason="month end")
    assert held.movement_id.startswith(REQUEST_PREFIX)
    pending = await ledger.pending_request(held.movement_id)
    assert (pending.action, pending.meaning, pending.role) == (
        SignatureAction.PERIOD_CLOSE,
        "reviewed",
        Role.ENGINEER,
    )
    assert await ledger.closed_periods() == []
    with pytest.raises(SignatureRefused, match="reviewed"):
        await ledger.sign(review(held.movement_id, meaning="approved"))

    outcome = await ledger.sign(review(held.movement_id))
    assert outcome.posted is not None
    assert outcome.posted.movement_id == f"{PERIOD_PREFIX}{NOVEMBER[0]}/{NOVEMBER[1]}"
    [closed] = await ledger.closed_periods()
    assert (closed.start, closed.end, closed.requested_by) == (*NOVEMBER, "ctrl")
    report = await ledger.mass_balance_report(*NOVEMBER)
    signed = [line.document() for line in report]
    assert closed.report_digest == hashlib.sha256(canonical_json(signed).encode()).hexdigest()
    assert closed.report_digest[:16] in pending.summary
    [(_, record)] = await ledger.audit_records("period", closed.id)
    assert record.action == "close" and '"signer":"eng1"' in record.new

    with pytest.raises(PeriodClosed, match="overlaps"):
        await ledger.request_period_close(
            format_timestamp(T0 + timedelta(days=10)),
            format_timestamp(clock.at),
            user="ctrl",
            reason="again",
        )
    with pytest.raises(ValidationError, match="has passed"):
        await ledger.request_period_close(
            NOVEMBER[1], format_timestamp(clock.at + timedelta(days=1)), user="c", reason="x"
        )

    # A correction posts now, in the open period, naming the closed one.
    [first] = [m for m in await ledger.history() if m.lot == "L1"]
    reversal = await ledger.reverse(ReversalRequest(first.id, "wrong lot", "op1"))
    posted = await ledger.movement(reversal.movement_id)
    assert posted.timestamp >= NOVEMBER[1] and posted.details["corrects_period"] == closed.id
    assert (await ledger.verify()).ok


async def test_nothing_posts_with_a_time_inside_a_closed_period(
    books: tuple[Ledger, StepClock], ledger_url: str
) -> None:
    ledger, _ = books
    held = await ledger.request_period_close(*NOVEMBER, user="ctrl", reason="month end")
    await ledger.sign(review(held.movement_id))
    behind = StepClock(T0 + timedelta(days=29))  # another instance whose clock is behind
    async with open_ledger(ledger_url, writer_id="behind", clock=behind) as other:
        with pytest.raises(PeriodClosed, match="closed up to"):
            await other.post(receipt("L3", 5))
        behind.at = T0 + timedelta(days=31)
        await other.post(receipt("L3", 5))
    assert sum(b.quantity for b in await ledger.balances(unit=BIN.id)) == 155


async def test_a_period_close_policy_can_ask_for_two_people(
    books: tuple[Ledger, StepClock],
) -> None:
    ledger, _ = books
    await ledger.set_signature_policies(
        (SignaturePolicy(SignatureAction.PERIOD_CLOSE, "reviewed", Role.ENGINEER, True),)
    )
    held = await ledger.request_period_close(*NOVEMBER, user="ctrl", reason="month end")
    assert (await ledger.sign(review(held.movement_id, "eng1"))).posted is None
    with pytest.raises(SignatureRefused, match="second person"):
        await ledger.sign(review(held.movement_id, "ctrl"))
    assert (await ledger.sign(review(held.movement_id, "eng2"))).posted is not None
    assert len(await ledger.closed_periods()) == 1

"""Electronic signatures in a real ledger (SQLite and PostgreSQL): every policy path.

A request a `[[signatures]]` policy catches is held as a pending request and posts
nothing; a signature by the wrong role, the wrong meaning or the same person twice is
refused and changes nothing; the last signature posts the request once; a rejection
posts nothing; signing a closed request changes nothing; `verify` stays clean.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import (
    InsufficientStock,
    RequestClosed,
    SignatureRefused,
    UnknownRequest,
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
    ReversalRequest,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    Decision,
    RequestState,
    SignatureAction,
    SignaturePolicy,
    SignRequest,
    Threshold,
)
from inventory_core.domain.users import Role

K = MovementKind
OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal(1), LotStatus.QUARANTINE)
BIN = StorageUnit(
    StorageUnitId("BIN-1"),
    "P",
    "A",
    StorageKind.BIN,
    Decimal(1000),
    "kg",
    OIL.id,
    lot_handling=LotHandling.FIFO,
    booking=Booking.MANUAL,
    zero_lot_threshold=Decimal(0),
)
POLICIES = (
    SignaturePolicy(
        SignatureAction.ADJUSTMENT, "approved", Role.ENGINEER, threshold=Threshold(Decimal(10))
    ),
    SignaturePolicy(
        SignatureAction.ADJUSTMENT,
        "verified",
        Role.ENGINEER,
        second_person=True,
        threshold=Threshold(percent=Decimal(20)),
    ),
    SignaturePolicy(SignatureAction.SCRAP, "approved", Role.ENGINEER),
    SignaturePolicy(SignatureAction.REVERSAL, "approved", Role.ENGINEER),
    SignaturePolicy(SignatureAction.LOT_STATUS, "released", Role.ENGINEER, second_person=True),
    SignaturePolicy(
        SignatureAction.COUNT, "reviewed", Role.OPERATOR, threshold=Threshold(Decimal(5))
    ),
)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url, writer_id="sig", migrate=True) as opened:
        await opened.sync_master_data((OIL,), (BIN,))
        assert await opened.set_signature_policies(POLICIES)
        assert not await opened.set_signature_policies(POLICIES), "unchanged: no change"
        await opened.post(receipt(Decimal(500)))
        yield opened


def receipt(quantity: Decimal) -> PostingRequest:
    return PostingRequest(
        K.RECEIPT,
        OIL.id,
        LotId("L1"),
        quantity,
        "kg",
        to_unit=BIN.id,
        user="op1",
        idempotency_key="r-1",
    )


def adjustment(delta: str, key: str = "adj-1") -> PostingRequest:
    return PostingRequest(
        K.ADJUSTMENT,
        OIL.id,
        LotId("L1"),
        Decimal(delta),
        "kg",
        to_unit=BIN.id,
        user="op1",
        reason="spill",
        idempotency_key=key,
    )


def approve(
    request_id: str, signer: str, meaning: str = "approved", role: Role = Role.ENGINEER
) -> SignRequest:
    return SignRequest(
        request_id, Decision.APPROVED, signer, role, f"{signer.title()} Signer", meaning=meaning
    )


async def book(ledger: Ledger) -> Decimal:
    balances = await ledger.balances(unit=BIN.id)
    return sum((b.quantity for b in balances), Decimal(0))


async def test_below_every_threshold_posts_at_once(ledger: Ledger) -> None:
    result = await ledger.post(adjustment("-10"))
    assert not result.movement_id.startswith(REQUEST_PREFIX)
    assert await book(ledger) == 490


async def test_a_caught_adjustment_waits_and_posts_once_on_its_signature(ledger: Ledger) -> None:
    held = await ledger.post(adjustment("-50"))
    assert held.movement_id.startswith(REQUEST_PREFIX)
    assert await book(ledger) == 500, "nothing is posted before it is signed"
    [pending] = await ledger.pending_requests()
    assert pending.request_id == held.movement_id
    assert (pending.action, pending.meaning, pending.signatures_required) == (
        SignatureAction.ADJUSTMENT,
        "approved",
        1,
    )
    assert pending.requested_by == "op1" and "-50 kg" in pending.summary

    again = await ledger.post(adjustment("-50"))  # the same key and body: the same request
    assert again.movement_id == held.movement_id and again.replayed
    assert len(await ledger.pending_requests()) == 1

    outcome = await ledger.sign(approve(held.movement_id, "eng1"))
    assert outcome.request.state is RequestState.POSTED and outcome.posted is not None
    assert await book(ledger) == 450
    movement = await ledger.movement(outcome.posted.movement_id)
    assert movement.user == "op1" and movement.details["request"] == held.movement_id
    [signed] = movement.details["signatures"]  # type: ignore[misc]
    assert signed["signer"] == "eng1" and signed["meaning"] == "approved"  # type: ignore[index]
    assert signed["digest"] == pending.digest  # type: ignore[index]
    # what listeners (OPC UA events, the plant view) are given is the movement as stored
    assert outcome.posted.movement is not None
    assert outcome.posted.movement.details == movement.details
    assert await ledger.pending_requests() == []

    with pytest.raises(RequestClosed):  # a replayed approval changes nothing
        await ledger.sign(approve(held.movement_id, "eng2"))
    assert await book(ledger) == 450
    assert (await ledger.post(adjustment("-50"))).movement_id == held.movement_id
    assert await book(ledger) == 450, "the request's key still answers the request"
    report = await ledger.verify()
    assert report.ok, report


async def test_the_most_demanding_policy_wins_and_needs_two_people(ledger: Ledger) -> None:
    held = await ledger.post(adjustment("-250"))  # 25 % of capacity: two-person rule
    pending = await ledger.pending_request(held.movement_id)
    assert (pending.meaning, pending.signatures_required) == ("verified", 2)

    with pytest.raises(SignatureRefused, match="verified"):  # the policy's meaning only
        await ledger.sign(approve(held.movement_id, "eng1", meaning="approved"))
    with pytest.raises(SignatureRefused, match="role engineer"):
        await ledger.sign(approve(held.movement_id, "op2", "verified", role=Role.OPERATOR))
    first = await ledger.sign(approve(held.movement_id, "op1", "verified", role=Role.ADMIN))
    assert first.posted is None and first.request.state is RequestState.PENDING
    with pytest.raises(SignatureRefused, match="already signed"):
        await ledger.sign(approve(held.movement_id, "op1", "verified", role=Role.ADMIN))
    assert await book(ledger) == 500

    second = await ledger.sign(approve(held.movement_id, "eng1", "verified"))
    assert second.request.state is RequestState.POSTED
    assert [s.signer for s in second.request.signatures] == ["op1", "eng1"]
    assert await book(ledger) == 250


async def test_the_requester_cannot_give_the_second_signature(ledger: Ledger) -> None:
    held = await ledger.post(adjustment("-250"))
    await ledger.sign(approve(held.movement_id, "eng1", "verified"))
    with pytest.raises(SignatureRefused, match="second person"):
        await ledger.sign(approve(held.movement_id, "op1", "verified", role=Role.ADMIN))
    assert await book(ledger) == 500


async def test_a_rejection_posts_nothing_and_closes_the_request(ledger: Ledger) -> None:
    held = await ledger.post(adjustment("-50"))
    with pytest.raises(SignatureRefused, match="reason"):
        await ledger.sign(
            SignRequest(held.movement_id, Decision.REJECTED, "eng1", Role.ENGINEER, "E")
        )
    outcome = await ledger.sign(
        SignRequest(
            held.movement_id,
            Decision.REJECTED,
            "eng1",
            Role.ENGINEER,
            "Eng One",
            reason="no spill reported",
        )
    )
    assert outcome.request.state is RequestState.REJECTED and outcome.posted is None
    assert outcome.request.outcome == "no spill reported"
    assert await book(ledger) == 500
    with pytest.raises(RequestClosed):
        await ledger.sign(approve(held.movement_id, "eng2"))
    assert await book(ledger) == 500
    rejected = await ledger.pending_requests(state=RequestState.REJECTED)
    assert [r.request_id for r in rejected] == [held.movement_id]


async def test_scrap_reversal_lot_status_and_count_are_held(ledger: Ledger) -> None:
    scrap = PostingRequest(
        K.SCRAP,
        OIL.id,
        LotId("L1"),
        Decimal(1),
        "kg",
        from_unit=BIN.id,
        user="op1",
        reason="damaged",
    )
    held = await ledger.post(scrap)
    assert held.movement_id.startswith(REQUEST_PREFIX)

    small = await ledger.post(adjustment("-5", key="small"))
    reversal = await ledger.reverse(ReversalRequest(small.movement_id, "typo", "op1"))
    assert reversal.movement_id.startswith(REQUEST_PREFIX)
    assert await book(ledger) == 495

    status = await ledger.set_lot_status(
        LotStatusRequest(LotId("L1"), LotStatus.RELEASED, "QC passed", "op1")
    )
    assert status.movement_id.startswith(REQUEST_PREFIX)
    assert (await ledger.lots("L1"))[0].status is LotStatus.QUARANTINE
    hold = await ledger.set_lot_status(
        LotStatusRequest(LotId("L1"), LotStatus.HOLD, "check", "op1")
    )
    assert not hold.movement_id.startswith(REQUEST_PREFIX), "hold is not a signed status"

    count_ok = PostingRequest(
        K.COUNT, OIL.id, LotId("L1"), Decimal(492), "kg", to_unit=BIN.id, user="op1"
    )
    assert not (await ledger.post(count_ok)).movement_id.startswith(REQUEST_PREFIX)
    count_off = PostingRequest(
        K.COUNT, OIL.id, LotId("L1"), Decimal(480), "kg", to_unit=BIN.id, user="op1"
    )
    counted = await ledger.post(count_off)
    assert counted.movement_id.startswith(REQUEST_PREFIX)
    assert await book(ledger) == 492

    await ledger.sign(approve(reversal.movement_id, "eng1"))
    assert await book(ledger) == 497
    await ledger.sign(approve(status.movement_id, "op1", "released", role=Role.ENGINEER))
    await ledger.sign(approve(status.movement_id, "eng1", "released"))
    # L1 was put on hold meanwhile: hold -> released is allowed, so the release posts.
    assert (await ledger.lots("L1"))[0].status is LotStatus.RELEASED
    await ledger.sign(approve(counted.movement_id, "op2", "reviewed", role=Role.OPERATOR))
    assert await book(ledger) == 480
    assert (await ledger.verify()).ok


async def test_a_request_the_rules_refuse_is_refused_not_held(ledger: Ledger) -> None:
    too_much = PostingRequest(
        K.SCRAP, OIL.id, LotId("L1"), Decimal(900), "kg", from_unit=BIN.id, user="op1", reason="x"
    )
    with pytest.raises(InsufficientStock):
        await ledger.post(too_much)
    assert await ledger.pending_requests() == []
    with pytest.raises(UnknownRequest):
        await ledger.sign(approve("request:00000000-0000-0000-0000-000000000000", "eng1"))


async def test_signed_later_the_request_is_checked_again(ledger: Ledger) -> None:
    held = await ledger.post(
        PostingRequest(
            K.SCRAP,
            OIL.id,
            LotId("L1"),
            Decimal(400),
            "kg",
            from_unit=BIN.id,
            user="op1",
            reason="damaged",
        )
    )
    release = await ledger.set_lot_status(
        LotStatusRequest(LotId("L1"), LotStatus.RELEASED, "QC passed", "op1")
    )
    await ledger.sign(approve(release.movement_id, "eng1", "released"))
    await ledger.sign(approve(release.movement_id, "eng2", "released"))
    await ledger.post(
        PostingRequest(
            K.ISSUE, OIL.id, LotId("L1"), Decimal(300), "kg", from_unit=BIN.id, user="op1"
        )
    )
    with pytest.raises(InsufficientStock):
        await ledger.sign(approve(held.movement_id, "eng1"))
    pending = await ledger.pending_request(held.movement_id)
    assert pending.state is RequestState.PENDING and pending.signatures == ()
    assert await book(ledger) == 200


async def test_every_writer_of_the_ledger_holds_by_the_stored_policies(
    ledger: Ledger, ledger_url: str
) -> None:
    """The policies live in the ledger: a process opened without them (the CLI without
    a config file, another instance) holds the same requests; their change is audited."""
    async with open_ledger(ledger_url, writer_id="other") as other:
        held = await other.post(adjustment("-50", key="other-1"))
        assert held.movement_id.startswith(REQUEST_PREFIX)
        await other.sign(approve(held.movement_id, "eng1"))
    assert await book(ledger) == 450
    [(_, record)] = await ledger.audit_records("signature_policies", "signatures")
    assert record.old == "[]" and '"action":"adjustment"' in record.new
    assert await ledger.set_signature_policies(())
    assert not (await ledger.post(adjustment("-50", key="free"))).movement_id.startswith(
        REQUEST_PREFIX
    )


@pytest.mark.parametrize(
    ("edit", "found"),
    [
        ("DELETE FROM signatures WHERE seq = 2", "deleted"),
        ("UPDATE signatures SET meaning = 'reviewed' WHERE seq = 1", "differs from its audit"),
        (
            "INSERT INTO signatures SELECT request_id, 3, 'mallory', 'Mallory', meaning, "
            "decision, signed_at, digest, reason FROM signatures WHERE seq = 1",
            "not audited",
        ),
        ("UPDATE pending_requests SET payload = replace(payload, '-250', '-25')", "differs"),
        ("UPDATE signatures SET digest = 'x' WHERE seq = 1", "another digest"),
    ],
)
async def test_verify_fails_when_a_signature_is_lost_added_or_changed(
    sqlite_url: str, edit: str, found: str
) -> None:
    import sqlite3

    async with open_ledger(sqlite_url, writer_id="sig", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), (BIN,))
        await ledger.set_signature_policies(POLICIES)
        await ledger.post(receipt(Decimal(500)))
        held = await ledger.post(adjustment("-250"))
        await ledger.sign(approve(held.movement_id, "eng1", "verified"))
        await ledger.sign(approve(held.movement_id, "eng2", "verified"))
        assert (await ledger.verify()).ok
    path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        assert db.execute(edit).rowcount == 1
    async with open_ledger(sqlite_url, writer_id="check") as ledger:
        report = await ledger.verify()
    assert not report.ok
    assert any(found in p.message for p in report.problems), report.problems


async def test_listeners_hear_of_each_request_held_and_signed(ledger: Ledger) -> None:
    heard: list[str] = []
    ledger.subscribe_requests(heard.append)
    held = await ledger.post(adjustment("-50"))
    await ledger.post(adjustment("-50"))  # a replay: nothing new
    await ledger.sign(approve(held.movement_id, "eng1"))
    assert heard == [held.movement_id, held.movement_id]


async def test_a_signed_movements_audit_shows_its_request_and_signatures(ledger: Ledger) -> None:
    held = await ledger.post(adjustment("-50"))
    outcome = await ledger.sign(approve(held.movement_id, "eng1"))
    assert outcome.posted is not None
    records = [r for _, r in await ledger.audit_records("movement", outcome.posted.movement_id)]
    assert [(r.object_type, r.action) for r in records] == [
        ("request", "request-pending"),
        ("request", "signature"),
        ("movement", "adjustment"),
        ("request", "request-posted"),
    ]
    assert next(r for r in records if r.action == "signature").user == "eng1"
    bare = held.movement_id.removeprefix(REQUEST_PREFIX)  # `--object request:<id>` finds it
    assert len(await ledger.audit_records("request", bare)) == 3

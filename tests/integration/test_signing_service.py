"""Re-authentication of a signer (inventory_core.signing) with real scrypt hashes and a
real ledger (SQLite and PostgreSQL): a wrong password is refused, audited and counted,
posts nothing; repeated failures lock the name out, even for the right password; the
right password signs with the user's printed name."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import SignatureRefused
from inventory_core.domain.model import (
    Booking,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.passwords import hash_password, parse_password_hash
from inventory_core.domain.signatures import RequestState, SignatureAction, SignaturePolicy
from inventory_core.domain.users import Role, User
from inventory_core.logins import LoginSettings
from inventory_core.signing import SigningService
from tests.scrypt_count import count_password_checks

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
USERS = (
    User("eng1", Role.ENGINEER, parse_password_hash(hash_password("right-one")), "Erin Engineer"),
)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    policies = (SignaturePolicy(SignatureAction.SCRAP, "approved", Role.ENGINEER),)
    async with open_ledger(ledger_url, writer_id="s", migrate=True) as opened:
        await opened.sync_master_data((OIL,), (BIN,))
        await opened.set_signature_policies(policies)
        await opened.post(
            PostingRequest(
                MovementKind.RECEIPT,
                OIL.id,
                LotId("L1"),
                Decimal(100),
                "kg",
                to_unit=BIN.id,
                user="op1",
            )
        )
        yield opened


async def held_scrap(ledger: Ledger) -> str:
    result = await ledger.post(
        PostingRequest(
            MovementKind.SCRAP,
            OIL.id,
            LotId("L1"),
            Decimal(5),
            "kg",
            from_unit=BIN.id,
            user="op1",
            reason="torn",
        )
    )
    return result.movement_id


async def test_wrong_password_is_refused_audited_counted_then_locked_out(ledger: Ledger) -> None:
    attempts: Counter[str] = Counter()
    lockouts: list[str] = []
    settings = LoginSettings(max_failures=3, lockout_s=600)
    service = SigningService(
        ledger, USERS, settings,
        on_attempt=lambda o: attempts.update([o]), on_lockout=lockouts.append,
    )  # fmt: skip
    request_id = await held_scrap(ledger)
    try:
        for _ in range(3):
            with pytest.raises(SignatureRefused, match="wrong user name or password"):
                await service.approve(request_id, "eng1", "wrong", "approved")
        with pytest.raises(SignatureRefused, match="locked out"):
            await service.approve(request_id, "eng1", "right-one", "approved")
        with pytest.raises(SignatureRefused, match="wrong user name or password"):
            await service.approve(request_id, "nobody", "x", "approved")
        # The count is in the ledger: a new process (the next CLI call) is locked out too.
        again = SigningService(ledger, USERS, settings, on_attempt=lambda o: attempts.update([o]))
        with pytest.raises(SignatureRefused, match="locked out"):
            await again.approve(request_id, "eng1", "right-one", "approved")
        again.close()
    finally:
        service.close()
    assert attempts == Counter(bad_password=4, locked_out=2)
    assert lockouts == ["user"]
    pending = await ledger.pending_request(request_id)
    assert pending.state is RequestState.PENDING and pending.signatures == ()
    records = [r for _, r in await ledger.audit_records("request", request_id)]
    actions = Counter(r.action for r in records)
    assert actions["signature-failed"] == 4 and actions["lockout"] == 1
    assert actions["signature-locked-out"] == 2
    assert {r.user for r in records if r.action == "signature-failed"} == {"eng1", "nobody"}


async def test_the_right_password_signs_with_the_printed_name(ledger: Ledger) -> None:
    attempts: Counter[str] = Counter()
    service = SigningService(ledger, USERS, on_attempt=lambda o: attempts.update([o]))
    request_id = await held_scrap(ledger)
    try:
        with pytest.raises(SignatureRefused, match="signed as 'approved'"):
            await service.approve(request_id, "eng1", "right-one", "reviewed")
        outcome = await service.approve(request_id, "eng1", "right-one", "approved")
    finally:
        service.close()
    assert attempts == Counter(refused=1, signed=1)
    assert outcome.request.state is RequestState.POSTED
    [signature] = outcome.request.signatures
    assert (signature.signer, signature.printed_name) == ("eng1", "Erin Engineer")
    assert signature.manifest().startswith("Erin Engineer (eng1), ")
    balances = await ledger.balances(unit=BIN.id)
    assert sum(b.quantity for b in balances) == 95


async def test_an_unknown_signer_costs_a_scrypt_as_a_known_one_does(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing does not tell which signer names exist (counted here, not timed)."""
    checked = count_password_checks(monkeypatch)
    service = SigningService(ledger, USERS)
    request_id = await held_scrap(ledger)
    try:
        for name in ("eng1", "nobody"):
            with pytest.raises(SignatureRefused, match="wrong user name or password"):
                await service.approve(request_id, name, "guess", "approved")
    finally:
        service.close()
    assert len(checked) == 2, "one scrypt each"

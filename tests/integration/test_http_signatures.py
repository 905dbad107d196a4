"""Electronic signatures over the HTTP API (uvicorn on an ephemeral 127.0.0.1 port, the
real app, a real ledger on SQLite and PostgreSQL, real scrypt hashes): a posting a
`[[signatures]]` policy holds answers 202 with its request and posts nothing; the
requests are listed; the signer re-authenticates in the body (a wrong password is a
403 and posts nothing); the last signature posts the request once, a second one is a
409; a rejection posts nothing; a viewer cannot sign; an unknown request is a 404; the
password shows nowhere (answers, audit trail, OpenAPI document)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from http_api import ApiAuth, create_app
from inventory_core import Ledger, open_ledger
from inventory_core.domain.api_tokens import ApiToken, hash_token
from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.passwords import hash_password, parse_password_hash
from inventory_core.domain.signatures import (
    SignatureAction,
    SignaturePolicy,
    Threshold,
    request_document,
)
from inventory_core.domain.users import Role, User
from inventory_core.signing import SigningService
from invops.http_server import HttpServer
from tests.http_client import http_call

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal("0.9"), LotStatus.RELEASED)
DRUMS = StorageUnit(StorageUnitId("DRUMS"), "P", "A", StorageKind.BIN, Decimal(10000), "kg",
                    OIL.id, lot_handling=LotHandling.FIFO, booking=Booking.MANUAL)  # fmt: skip
POLICIES = (
    SignaturePolicy(
        SignatureAction.ADJUSTMENT, "approved", Role.ENGINEER, threshold=Threshold(Decimal(10))
    ),
    SignaturePolicy(SignatureAction.REVERSAL, "approved", Role.ENGINEER),
    SignaturePolicy(
        SignatureAction.LOT_STATUS, "released", Role.ENGINEER, statuses=frozenset({LotStatus.HOLD})
    ),
)
ENGINEER_TOKEN = "invops_engineer-sign-token"
OPERATOR_TOKEN = "invops_operator-sign-token"
VIEWER_TOKEN = "invops_viewer-sign-token"
ERIN_PASSWORD = "s3cret-erin-signs"
OLGA_PASSWORD = "s3cret-olga-signs"
WRONG_PASSWORD = "not-erins-password"
PASSWORDS = (ERIN_PASSWORD, OLGA_PASSWORD, WRONG_PASSWORD)
RECEIPT = {"kind": "receipt", "material": "OIL", "lot": "L1", "quantity": 500, "uom": "kg",
           "to_unit": "DRUMS", "ref": "DN-1"}  # fmt: skip
ADJUSTMENT = {"kind": "adjustment", "material": "OIL", "lot": "L1", "quantity": -50,
              "uom": "kg", "to_unit": "DRUMS", "reason": "spill"}  # fmt: skip


@dataclass
class Api:
    base: str
    ledger: Ledger

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = OPERATOR_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        return await http_call(self.base + path, method, body, token=token, headers=headers)

    async def held(self, body: dict[str, Any] = ADJUSTMENT, key: str = "adj-1") -> str:
        """Post `body` (an engineer's adjustment by default): held, its request id."""
        status, _, answer = await self.call(
            "POST", "/movements", body, token=ENGINEER_TOKEN, headers={"Idempotency-Key": key}
        )
        assert status == 202, answer
        request_id: str = answer["request"]["request_id"]
        return request_id

    async def book(self) -> Decimal:
        return sum((b.quantity for b in await self.ledger.balances(unit="DRUMS")), Decimal(0))


def _user(name: str, role: Role, password: str, full_name: str) -> User:
    return User(name, role, parse_password_hash(hash_password(password)), full_name)


def _app(ledger: Ledger, signing: SigningService | None) -> Any:
    tokens = [
        ApiToken("qa", Role.ENGINEER, hash_token(ENGINEER_TOKEN)),
        ApiToken("wms", Role.OPERATOR, hash_token(OPERATOR_TOKEN)),
        ApiToken("bi", Role.VIEWER, hash_token(VIEWER_TOKEN)),
    ]
    auth = ApiAuth([], tokens, anonymous_read=False, record=ledger.record_event)
    return create_app(ledger, auth, version="test", max_body_bytes=4096, signing=signing)


@pytest.fixture
async def api(ledger_url: str) -> AsyncIterator[Api]:
    async with open_ledger(ledger_url, writer_id="api-sign", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), (DRUMS,))
        await ledger.set_signature_policies(POLICIES)
        users = [
            _user("erin", Role.ENGINEER, ERIN_PASSWORD, "Erin Engineer"),
            _user("olga", Role.OPERATOR, OLGA_PASSWORD, "Olga Operator"),
        ]
        signing = SigningService(ledger, users)
        try:
            async with HttpServer(_app(ledger, signing), "127.0.0.1", 0, name="api") as server:
                api = Api(f"http://127.0.0.1:{server.port}/api/v1", ledger)
                status, _, answer = await api.call("POST", "/movements", RECEIPT)
                assert status == 201, answer
                yield api
        finally:
            signing.close()


def approval(user: str = "erin", password: str = ERIN_PASSWORD, meaning: str = "approved") -> Any:
    return {"user": user, "password": password, "meaning": meaning}


def assert_problem(status: int, headers: dict[str, str], body: Any, expected: int) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == expected
    assert not any(p in json.dumps(body) for p in PASSWORDS), body


async def test_a_held_adjustment_is_202_posts_nothing_and_posts_once_when_approved(
    api: Api,
) -> None:
    movements = len(await api.ledger.history())
    request_id = await api.held()
    assert request_id.startswith("request:")
    assert await api.book() == 500 and len(await api.ledger.history()) == movements

    status, _, again = await api.call(
        "POST", "/movements", ADJUSTMENT, token=ENGINEER_TOKEN, headers={"Idempotency-Key": "adj-1"}
    )
    assert status == 200 and again["replayed"] and again["request"]["request_id"] == request_id

    status, _, listed = await api.call("GET", "/requests", token=VIEWER_TOKEN)
    assert status == 200
    [shown] = listed["requests"]
    assert shown["request_id"] == request_id
    assert (shown["state"], shown["action"], shown["meaning"], shown["role"]) == (
        "pending", "adjustment", "approved", "engineer",
    )  # fmt: skip
    assert shown["requested_by"] == "qa" and shown["signatures"] == []
    assert shown == request_document(await api.ledger.pending_request(request_id)), (
        "as the CLI shows it"
    )
    status, _, one = await api.call("GET", f"/requests/{request_id}", token=VIEWER_TOKEN)
    assert status == 200 and one == shown

    # The signer re-authenticates: a wrong password is refused, audited, posts nothing.
    answer = await api.call("POST", f"/requests/{request_id}/approve",
                            approval(password=WRONG_PASSWORD))  # fmt: skip
    assert_problem(*answer, 403)
    assert await api.book() == 500 and len(await api.ledger.history()) == movements
    failed = await api.ledger.audit_records("request", request_id)
    assert [r.action for _, r in failed] == ["request-pending", "signature-failed"]

    status, _, signed = await api.call("POST", f"/requests/{request_id}/approve", approval())
    assert status == 200, signed
    posted = signed["posted"]
    assert posted and not posted.startswith("request:")
    assert signed["request"]["state"] == "posted" and signed["request"]["outcome"] == posted
    [signature] = signed["request"]["signatures"]
    assert (signature["signer"], signature["printed_name"], signature["meaning"]) == (
        "erin", "Erin Engineer", "approved",
    )  # fmt: skip
    assert signature["decision"] == "approved" and signature["digest"] == shown["digest"]
    assert signature["signed_at"] and signature["reason"] == ""
    assert await api.book() == 450 and len(await api.ledger.history()) == movements + 1
    movement = await api.ledger.movement(posted)
    assert movement.user == "qa" and movement.details["request"] == request_id

    answer = await api.call("POST", f"/requests/{request_id}/approve", approval())
    assert_problem(*answer, 409)
    assert await api.book() == 450 and len(await api.ledger.history()) == movements + 1

    _, _, pending = await api.call("GET", "/requests")
    assert pending["requests"] == []
    for state in ("posted", "all"):
        _, _, found = await api.call("GET", f"/requests?state={state}")
        assert [r["request_id"] for r in found["requests"]] == [request_id]
    _, _, replay = await api.call(
        "POST", "/movements", ADJUSTMENT, token=ENGINEER_TOKEN, headers={"Idempotency-Key": "adj-1"}
    )
    assert replay["request"]["state"] == "posted", "the key still answers the request"
    assert await api.book() == 450
    report = await api.ledger.verify()
    assert report.ok, report


async def test_a_rejection_posts_nothing_and_closes_the_request(api: Api) -> None:
    movements = len(await api.ledger.history())
    request_id = await api.held()
    body = {"user": "erin", "password": ERIN_PASSWORD, "reason": "wrong lot"}
    status, _, rejected = await api.call("POST", f"/requests/{request_id}/reject", body)
    assert status == 200, rejected
    assert rejected["posted"] is None and rejected["request"]["state"] == "rejected"
    [signature] = rejected["request"]["signatures"]
    assert (signature["decision"], signature["reason"]) == ("rejected", "wrong lot")
    assert await api.book() == 500 and len(await api.ledger.history()) == movements

    answer = await api.call("POST", f"/requests/{request_id}/approve", approval())
    assert_problem(*answer, 409)
    answer = await api.call("POST", f"/requests/{request_id}/reject", body)
    assert_problem(*answer, 409)
    _, _, found = await api.call("GET", "/requests?state=rejected")
    assert [r["request_id"] for r in found["requests"]] == [request_id]
    assert await api.book() == 500


async def test_who_may_sign_and_unknown_requests(api: Api) -> None:
    request_id = await api.held()
    url = f"/requests/{request_id}/approve"

    answer = await api.call("POST", url, approval(), token=VIEWER_TOKEN)  # the caller's role
    assert_problem(*answer, 403)
    status, _, _ = await api.call("POST", url, approval(), token=None)
    assert status == 401
    # The signer's role, the policy's meaning: the ledger refuses them.
    answer = await api.call("POST", url, approval("olga", OLGA_PASSWORD))
    assert_problem(*answer, 403)
    assert "role engineer" in answer[2]["detail"]
    answer = await api.call("POST", url, approval(meaning="reviewed"))
    assert_problem(*answer, 403)
    answer = await api.call("POST", url, approval("nobody", ERIN_PASSWORD))
    assert_problem(*answer, 403)
    assert await api.book() == 500
    _, _, one = await api.call("GET", f"/requests/{request_id}")
    assert one["state"] == "pending" and one["signatures"] == []

    unknown = "request:00000000-0000-0000-0000-000000000000"
    answer = await api.call("GET", f"/requests/{unknown}", token=VIEWER_TOKEN)
    assert_problem(*answer, 404)
    answer = await api.call("POST", f"/requests/{unknown}/approve", approval())
    assert_problem(*answer, 404)
    assert answer[2]["field"] == "request_id"
    answer = await api.call("POST", f"/requests/{unknown}/reject",
                            {"user": "erin", "password": ERIN_PASSWORD, "reason": "x"})  # fmt: skip
    assert_problem(*answer, 404)
    answer = await api.call("GET", "/requests?state=open")
    assert_problem(*answer, 422)

    # A viewer reads requests; anonymous callers do not (anonymous reading is off here).
    assert (await api.call("GET", "/requests", token=VIEWER_TOKEN))[0] == 200
    assert (await api.call("GET", "/requests", token=None))[0] == 401


async def test_held_reversal_and_lot_status_answer_202_and_post_when_signed(api: Api) -> None:
    [receipt] = await api.ledger.history()
    status, _, held = await api.call(
        "POST", f"/movements/{receipt.id}/reversal", {"reason": "typo"}, token=ENGINEER_TOKEN
    )
    assert status == 202, held
    assert held["replayed"] is False and held["request"]["action"] == "reversal"
    assert await api.book() == 500

    key = {"Idempotency-Key": "hold-1"}
    body = {"status": "hold", "reason": "lab check"}
    status, _, hold = await api.call(
        "POST", "/lots/L1/status", body, token=ENGINEER_TOKEN, headers=key
    )
    assert status == 202, hold
    assert hold["request"]["action"] == "lot-status" and hold["request"]["meaning"] == "released"
    status, _, again = await api.call(
        "POST", "/lots/L1/status", body, token=ENGINEER_TOKEN, headers=key
    )
    assert status == 200 and again["replayed"]
    assert again["request"]["request_id"] == hold["request"]["request_id"]
    [lot] = await api.ledger.lots("L1")
    assert lot.status is LotStatus.RELEASED, "not changed before it is signed"

    _, _, listed = await api.call("GET", "/requests")
    assert [r["action"] for r in listed["requests"]] == ["reversal", "lot-status"]
    request_id = hold["request"]["request_id"]
    status, _, signed = await api.call(
        "POST", f"/requests/{request_id}/approve", approval(meaning="released")
    )
    assert status == 200 and signed["posted"], signed
    [lot] = await api.ledger.lots("L1")
    assert lot.status is LotStatus.HOLD
    status, _, shown = await api.call("GET", "/movements?lot=L1")
    assert [m["kind"] for m in shown["movements"]] == ["receipt", "lot-status"]


async def test_the_password_shows_nowhere(api: Api) -> None:
    request_id = await api.held()
    url = f"/requests/{request_id}/approve"
    for body in (
        {**approval(), "extra": 1},  # refused by the schema: the problem names no input
        {**approval(meaning=""), "password": ERIN_PASSWORD},
        approval(password=WRONG_PASSWORD),
        approval(),
    ):
        status, _, answer = await api.call("POST", url, body)
        assert status in (200, 403, 422), answer
        assert not any(p in json.dumps(answer) for p in PASSWORDS), answer
    records = await api.ledger.audit_records("request", request_id)
    assert {"signature-failed", "signature"} <= {r.action for _, r in records}
    everything = await api.ledger.audit_records()
    text = json.dumps([[r.reason, r.old, r.new, r.user] for _, r in everything], default=str)
    assert not any(p in text for p in PASSWORDS)

    _, _, document = await api.call("GET", "/openapi.json", token=None)
    assert not any(p in json.dumps(document) for p in PASSWORDS)
    password = document["components"]["schemas"]["ApproveIn"]["properties"]["password"]
    assert password["format"] == "password" and password["writeOnly"] is True
    assert "examples" not in password and "example" not in password
    approve = document["paths"]["/api/v1/requests/{request_id}/approve"]["post"]
    assert approve["x-invops-role"] == "operator"
    assert {"200", "403", "404", "409"} <= set(approve["responses"])
    posted = document["paths"]["/api/v1/movements"]["post"]["responses"]["202"]
    held = posted["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/RequestHeld"} in held


async def test_a_service_without_signing_answers_503_but_still_lists_requests(
    ledger_url: str,
) -> None:
    async with open_ledger(ledger_url, writer_id="api-nosign", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), (DRUMS,))
        await ledger.set_signature_policies(POLICIES)
        async with HttpServer(_app(ledger, None), "127.0.0.1", 0, name="api") as server:
            api = Api(f"http://127.0.0.1:{server.port}/api/v1", ledger)
            assert (await api.call("POST", "/movements", RECEIPT))[0] == 201
            request_id = await api.held()
            answer = await api.call("POST", f"/requests/{request_id}/approve", approval())
            assert_problem(*answer, 503)
            assert answer[1]["retry-after"]
            _, _, listed = await api.call("GET", "/requests")
            assert [r["request_id"] for r in listed["requests"]] == [request_id]
            assert await api.book() == 500

"""Lot quality data and period close over the HTTP API (uvicorn on an ephemeral
127.0.0.1 port, the real app, a real ledger on SQLite and PostgreSQL, real scrypt
hashes): an engineer sets a lot's properties, retest and expiry dates and certificate
(PUT /lots/{lot}/quality) and every lot document shows them, with `retest_due`; bad
input is a problem naming the field and changes nothing; an operator or viewer is
refused (403, audited). An engineer asks to close a period (POST /periods/close): 202
with the request held for a signature, the replay of its key 200; signed as `reviewed`
through POST /requests/{id}/approve, GET /periods lists it; an overlapping close is a
409, an end that has not passed a 422."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from http_api import ApiAuth, create_app
from inventory_core import Ledger, open_ledger
from inventory_core.clock import format_timestamp
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
from inventory_core.domain.signatures import SignatureAction, SignaturePolicy
from inventory_core.domain.users import Role, User
from inventory_core.signing import SigningService
from invops.http_server import HttpServer
from tests.http_client import http_call

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal("0.9"), LotStatus.RELEASED)
DRUMS = StorageUnit(StorageUnitId("DRUMS"), "P", "A", StorageKind.BIN, Decimal(10000), "kg",
                    OIL.id, lot_handling=LotHandling.FIFO, booking=Booking.MANUAL)  # fmt: skip
ENGINEER_TOKEN = "invops_engineer-quality-token"
OPERATOR_TOKEN = "invops_operator-quality-token"
VIEWER_TOKEN = "invops_viewer-quality-token"
ERIN_PASSWORD = "s3cret-erin-reviews"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
TODAY = date(2026, 12, 2)  # the clock's date when the tests read the lots
RECEIPT = {"kind": "receipt", "material": "OIL", "lot": "L1", "quantity": 500, "uom": "kg",
           "to_unit": "DRUMS", "ref": "DN-1"}  # fmt: skip
QUALITY = {
    "properties": [
        {"name": "density", "value": "0.915", "unit": "kg/L"},
        {"name": "assay", "value": "99.6", "unit": "%"},
        {"name": "appearance", "value": "clear"},
    ],
    "retest": "2026-12-01",  # before TODAY: due
    "expiry": "2027-11-30",
    "certificate": "CoA-2026-0001",
    "reason": "CoA received",
}
NOVEMBER = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "reason": "month end"}


@dataclass
class StepClock:
    """The ledger's and the app's time, set by the test."""

    at: datetime

    def now(self) -> datetime:
        return self.at


@dataclass
class Api:
    base: str
    ledger: Ledger
    clock: StepClock

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = ENGINEER_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        return await http_call(self.base + path, method, body, token=token, headers=headers)

    async def quality(self, lot: str = "L1") -> tuple[Any, ...]:
        """What the ledger holds of a lot's quality data (and its expiry)."""
        [found] = await self.ledger.lots(lot)
        return found.quality, found.expiry


def _user(name: str, role: Role, password: str, full_name: str) -> User:
    return User(name, role, parse_password_hash(hash_password(password)), full_name)


@pytest.fixture
async def api(ledger_url: str) -> AsyncIterator[Api]:
    clock = StepClock(T0 + timedelta(days=5))
    async with open_ledger(
        ledger_url, writer_id="api-quality", migrate=True, clock=clock
    ) as ledger:
        await ledger.sync_master_data((OIL,), (DRUMS,))
        signing = SigningService(ledger, [_user("erin", Role.ENGINEER, ERIN_PASSWORD, "Erin E")])
        tokens = [
            ApiToken("qa", Role.ENGINEER, hash_token(ENGINEER_TOKEN)),
            ApiToken("wms", Role.OPERATOR, hash_token(OPERATOR_TOKEN)),
            ApiToken("bi", Role.VIEWER, hash_token(VIEWER_TOKEN)),
        ]
        auth = ApiAuth([], tokens, anonymous_read=False, record=ledger.record_event)
        app = create_app(ledger, auth, version="test", max_body_bytes=4096, signing=signing,
                         clock=clock)  # fmt: skip
        try:
            async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
                api = Api(f"http://127.0.0.1:{server.port}/api/v1", ledger, clock)
                status, _, answer = await api.call("POST", "/movements", RECEIPT)
                assert status == 201, answer
                clock.at = datetime(2026, 12, 2, 8, tzinfo=UTC)
                yield api
        finally:
            signing.close()


def assert_problem(answer: tuple[int, dict[str, str], Any], status: int) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == status and {"type", "title", "detail"} <= set(body)
    problem: dict[str, Any] = body
    return problem


async def test_quality_data_is_set_and_every_lot_document_shows_it(api: Api) -> None:
    status, _, before = await api.call("GET", "/lots/L1", token=VIEWER_TOKEN)
    assert status == 200, before
    assert (before["properties"], before["retest"], before["retest_due"]) == ([], None, False)
    assert before["certificate"] == "" and before["expiry"] is None

    status, _, lot = await api.call("PUT", "/lots/L1/quality", QUALITY)
    assert status == 200, lot
    assert lot["lot"] == "L1" and lot["status"] == "released" and lot["material"] == "OIL"
    assert lot["properties"] == [
        {"name": "density", "value": "0.915", "unit": "kg/L"},
        {"name": "assay", "value": "99.6", "unit": "%"},
        {"name": "appearance", "value": "clear", "unit": ""},
    ]
    assert (lot["retest"], lot["retest_due"]) == ("2026-12-01", True)
    assert (lot["expiry"], lot["certificate"]) == ("2027-11-30", "CoA-2026-0001")

    quality, expiry = await api.quality()
    assert quality.retest == date(2026, 12, 1) and expiry == date(2027, 11, 30)
    assert quality.certificate == "CoA-2026-0001" and len(quality.properties) == 3

    status, _, shown = await api.call("GET", "/lots/L1", token=VIEWER_TOKEN)
    assert status == 200
    assert {k: shown[k] for k in lot} == lot
    assert shown["units"] == [{"unit": "DRUMS", "lot": "L1", "quantity": "500", "uom": "kg"}]
    _, _, listed = await api.call("GET", "/lots?material=OIL", token=VIEWER_TOKEN)
    assert listed["lots"] == [lot]

    # Only what is given changes: a new certificate and retest date keep the properties.
    status, _, again = await api.call(
        "PUT", "/lots/L1/quality",
        {"certificate": "CoA-2026-0002", "retest": "2027-06-01", "reason": "retested"},
    )  # fmt: skip
    assert status == 200, again
    assert again["properties"] == lot["properties"] and again["expiry"] == "2027-11-30"
    assert (again["certificate"], again["retest"], again["retest_due"]) == (
        "CoA-2026-0002", "2027-06-01", False,
    )  # fmt: skip
    # An empty list clears the properties.
    status, _, cleared = await api.call(
        "PUT", "/lots/L1/quality", {"properties": [], "reason": "wrong CoA"}
    )
    assert status == 200 and cleared["properties"] == [], cleared

    records = [r for _, r in await api.ledger.audit_records("lot", "L1") if r.action == "quality"]
    assert [(r.user, r.reason) for r in records] == [
        ("qa", "CoA received"), ("qa", "retested"), ("qa", "wrong CoA"),
    ]  # fmt: skip
    assert '"certificate":"CoA-2026-0001"' in records[0].new
    report = await api.ledger.verify()
    assert report.ok, report


def _with(**changes: Any) -> dict[str, Any]:
    return {**QUALITY, **changes}


def _prop(name: str, value: str, unit: str = "") -> dict[str, str]:
    return {"name": name, "value": value, "unit": unit}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_with(properties=[_prop("density", "-0.9", "kg/L")]), "properties.0.value"),
        (_with(properties=[_prop("assay", "99"), _prop("density", "0", "kg/L")]),
         "properties.1.value"),
        (_with(properties=[_prop("density", "heavy", "kg/L")]), "properties.0.value"),
        (_with(properties=[_prop("density", "0.9", "lb/gal")]), "properties.0.value"),
        (_with(properties=[_prop("density", "NaN", "kg/L")]), "properties.0.value"),
        (_with(properties=[_prop("density", "1e30", "kg/L")]), "properties.0.value"),
        (_with(properties=[_prop("density", "100001", "kg/m3")]), "properties.0.value"),
        (_with(properties=[_prop("assay", "99"), _prop("assay", "98")]), "properties"),
        (_with(properties=[_prop("pH value", "7")]), "properties.0.name"),
        (_with(properties=[_prop("assay", " ")]), "properties.0.value"),
        (_with(properties=[_prop("assay", "99\x07")]), "properties.0.value"),
        (_with(properties=[{"name": "assay"}]), "properties.0.value"),
        (_with(certificate="CoA\x00"), "certificate"),
        (_with(retest="next week"), "retest"),
        (_with(retest=20270601), "retest"),
        (_with(expiry="2027-02-30"), "expiry"),
        (_with(reason=" "), "reason"),
        ({k: v for k, v in QUALITY.items() if k != "reason"}, "reason"),
        (_with(colour="red"), "colour"),
        ({"reason": "nothing"}, "body"),
    ],
)  # fmt: skip
async def test_bad_quality_data_is_a_problem_naming_the_field_and_changes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    before = await api.quality()
    audits = len(await api.ledger.audit_records("lot", "L1"))
    problem = assert_problem(await api.call("PUT", "/lots/L1/quality", body), 422)
    assert problem["field"] == field, problem
    assert await api.quality() == before
    assert len(await api.ledger.audit_records("lot", "L1")) == audits
    _, _, lot = await api.call("GET", "/lots/L1")
    assert lot["properties"] == [] and lot["certificate"] == ""


async def test_an_unknown_lot_is_a_404_and_only_an_engineer_sets_quality(api: Api) -> None:
    problem = assert_problem(await api.call("PUT", "/lots/NOPE/quality", QUALITY), 404)
    assert problem["field"] == "lot"
    assert await api.ledger.lots("NOPE") == []

    before = await api.quality()
    for token in (OPERATOR_TOKEN, VIEWER_TOKEN):
        problem = assert_problem(
            await api.call("PUT", "/lots/L1/quality", QUALITY, token=token), 403
        )
        assert "lacks engineer" in problem["detail"]
    status, headers, _ = await api.call("PUT", "/lots/L1/quality", QUALITY, token=None)
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert await api.quality() == before
    denied = await api.ledger.audit_records("api_route", "/api/v1/lots/L1/quality")
    assert [(r.user, r.action) for _, r in denied] == [
        ("wms", "denied"), ("bi", "denied"), ("anonymous", "denied"),
    ]  # fmt: skip


async def test_a_period_close_is_held_signed_as_reviewed_and_then_listed(api: Api) -> None:
    key = {"Idempotency-Key": "close-2026-11"}
    status, _, held = await api.call("POST", "/periods/close", NOVEMBER, headers=key)
    assert status == 202, held
    request = held["request"]
    assert held["replayed"] is False and request["request_id"].startswith("request:")
    assert (request["action"], request["meaning"], request["role"], request["state"]) == (
        "period-close", "reviewed", "engineer", "pending",
    )  # fmt: skip
    assert request["requested_by"] == "qa" and request["signatures"] == []
    assert "2026-11-01" in request["summary"] and "2026-12-01" in request["summary"]

    status, _, again = await api.call("POST", "/periods/close", NOVEMBER, headers=key)
    assert status == 200 and again["replayed"] is True, again
    assert again["request"]["request_id"] == request["request_id"]
    reused = await api.call("POST", "/periods/close", {**NOVEMBER, "reason": "other"},
                            headers=key)  # fmt: skip
    assert assert_problem(reused, 409)["field"] == "Idempotency-Key"

    status, _, periods = await api.call("GET", "/periods", token=VIEWER_TOKEN)
    assert status == 200 and periods == {"periods": []}
    _, _, pending = await api.call("GET", "/requests", token=VIEWER_TOKEN)
    assert [r["request_id"] for r in pending["requests"]] == [request["request_id"]]

    url = f"/requests/{request['request_id']}/approve"
    signature = {"user": "erin", "password": ERIN_PASSWORD, "meaning": "approved"}
    assert_problem(await api.call("POST", url, signature, token=OPERATOR_TOKEN), 403)
    signature["meaning"] = "reviewed"
    status, _, signed = await api.call("POST", url, signature, token=OPERATOR_TOKEN)
    assert status == 200, signed
    assert signed["request"]["state"] == "posted" and signed["posted"].startswith("period:")
    [sig] = signed["request"]["signatures"]
    assert (sig["signer"], sig["meaning"], sig["decision"]) == ("erin", "reviewed", "approved")

    status, _, periods = await api.call("GET", "/periods", token=VIEWER_TOKEN)
    assert status == 200, periods
    [closed] = periods["periods"]
    start, end = format_timestamp(T0), format_timestamp(T0 + timedelta(days=30))
    assert (closed["start"], closed["end"], closed["id"]) == (start, end, f"{start}/{end}")
    assert closed["request_id"] == request["request_id"] and closed["requested_by"] == "qa"
    assert len(closed["report_digest"]) == 64 and closed["closed_at"] >= end
    [(_, record)] = await api.ledger.audit_records("period", closed["id"])
    assert record.action == "close" and record.reason == "month end"

    # An overlapping close conflicts with the closed period: nothing is held.
    overlap = {"from": "2026-11-15T00:00:00Z", "to": "2026-12-02T00:00:00Z", "reason": "again"}
    problem = assert_problem(await api.call("POST", "/periods/close", overlap), 409)
    assert problem["type"] == "urn:invops:problem:period-closed", problem
    assert "overlaps" in problem["detail"]
    _, _, pending = await api.call("GET", "/requests")
    assert pending["requests"] == []
    assert (await api.ledger.verify()).ok


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**NOVEMBER, "to": "2026-12-03T00:00:00Z"}, None),  # not passed yet (now: Dec 2)
        ({**NOVEMBER, "from": "2026-12-01T00:00:00Z"}, None),  # start not before the end
        ({**NOVEMBER, "from": "first of November"}, "from"),
        ({**NOVEMBER, "to": "2026-13-01"}, "to"),
        ({**NOVEMBER, "reason": " "}, "reason"),
        ({"from": NOVEMBER["from"], "to": NOVEMBER["to"]}, "reason"),
        ({**NOVEMBER, "start": NOVEMBER["from"]}, "start"),
    ],
)
async def test_a_bad_period_close_is_a_422_and_holds_nothing(
    api: Api, body: dict[str, Any], field: str | None
) -> None:
    problem = assert_problem(await api.call("POST", "/periods/close", body), 422)
    if field is not None:
        assert problem["field"] == field, problem
    _, _, pending = await api.call("GET", "/requests?state=all")
    assert pending["requests"] == []


async def test_only_an_engineer_closes_a_period_and_a_viewer_reads_them(api: Api) -> None:
    for token in (OPERATOR_TOKEN, VIEWER_TOKEN):
        assert_problem(await api.call("POST", "/periods/close", NOVEMBER, token=token), 403)
    assert (await api.call("POST", "/periods/close", NOVEMBER, token=None))[0] == 401
    assert (await api.call("GET", "/periods", token=None))[0] == 401
    _, _, pending = await api.call("GET", "/requests?state=all")
    assert pending["requests"] == []

    status, _, document = await api.call("GET", "/openapi.json", token=None)
    assert status == 200
    paths = document["paths"]
    assert paths["/api/v1/lots/{lot}/quality"]["put"]["x-invops-role"] == "engineer"
    close = paths["/api/v1/periods/close"]["post"]
    assert close["x-invops-role"] == "engineer" and {"200", "202", "409"} <= set(close["responses"])
    assert paths["/api/v1/periods"]["get"]["x-invops-role"] == "viewer"


async def test_under_a_master_data_policy_quality_data_is_held_until_signed(api: Api) -> None:
    policy = SignaturePolicy(SignatureAction.MASTER_DATA, "approved", Role.ENGINEER)
    assert await api.ledger.set_signature_policies((policy,))
    before = await api.quality()
    status, _, held = await api.call("PUT", "/lots/L1/quality", QUALITY)
    assert status == 202, held
    request = held["request"]
    assert (request["action"], request["state"]) == ("master-data", "pending")
    assert "quality data of lot L1" in request["summary"]
    assert await api.quality() == before, "nothing changes before the signature"
    status, _, again = await api.call("PUT", "/lots/L1/quality", QUALITY)  # a retry
    assert status == 202 and again["replayed"] is True, again
    assert again["request"]["request_id"] == request["request_id"]
    assert len(await api.ledger.pending_requests()) == 1

    url = f"/requests/{request['request_id']}/approve"
    signature = {"user": "erin", "password": ERIN_PASSWORD, "meaning": "approved"}
    status, _, signed = await api.call("POST", url, signature)
    assert status == 200 and signed["posted"] == "lot:L1", signed
    status, _, lot = await api.call("GET", "/lots/L1", token=VIEWER_TOKEN)
    assert status == 200 and lot["certificate"] == "CoA-2026-0001", lot
    assert [p["name"] for p in lot["properties"]] == ["density", "assay", "appearance"]

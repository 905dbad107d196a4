"""The HTTP API over real HTTP (uvicorn on an ephemeral 127.0.0.1 port) against a real
ledger on SQLite and PostgreSQL: reads, postings with Idempotency-Key, advices, auth,
problem details, body caps, cursor pagination and the OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
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
from inventory_core.domain.users import Role, User
from invops.http_server import HttpServer
from tests.http_client import http_call

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal("0.9"), LotStatus.RELEASED)
UNITS = (
    StorageUnit(StorageUnitId("DRUMS"), "P", "A", StorageKind.BIN, Decimal(10000), "kg", OIL.id,
                lot_handling=LotHandling.FIFO, booking=Booking.MANUAL),
    StorageUnit(StorageUnitId("TANK"), "P", "A", StorageKind.TANK, Decimal(50000), "kg", OIL.id,
                lot_handling=LotHandling.MIXED, booking=Booking.MEASURED),
)  # fmt: skip
OPERATOR_TOKEN = "invops_operator-test-token"
VIEWER_TOKEN = "invops_viewer-test-token"


@dataclass
class Api:
    base: str
    ledger: Ledger

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = OPERATOR_TOKEN,
        headers: dict[str, str] | None = None, raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        return await http_call(
            self.base + path, method, body, token=token, headers=headers, raw=raw
        )


@pytest.fixture
async def api(ledger_url: str) -> AsyncIterator[Api]:
    async with open_ledger(ledger_url, writer_id="api", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), UNITS)
        users = [User("erin", Role.ENGINEER, parse_password_hash(hash_password("s3cret-erin")))]
        tokens = [
            ApiToken("wms", Role.OPERATOR, hash_token(OPERATOR_TOKEN)),
            ApiToken("bi", Role.VIEWER, hash_token(VIEWER_TOKEN)),
        ]
        auth = ApiAuth(users, tokens, anonymous_read=True, record=ledger.record_event)
        app = create_app(ledger, auth, version="test", max_body_bytes=4096)
        async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
            yield Api(f"http://127.0.0.1:{server.port}/api/v1", ledger)


RECEIPT = {"kind": "receipt", "material": "OIL", "lot": "L1", "quantity": 500, "uom": "kg",
           "to_unit": "DRUMS", "ref": "DN-1"}  # fmt: skip


async def test_a_receipt_posts_once_under_its_key_and_a_changed_body_conflicts(api: Api) -> None:
    key = {"Idempotency-Key": "po-1"}
    status, _, first = await api.call("POST", "/movements", RECEIPT, headers=key)
    assert status == 201, first
    movement = first["movement"]
    assert (movement["kind"], movement["lot"], movement["quantity"]) == ("receipt", "L1", "500")
    assert (movement["user"], movement["source"]) == ("wms", "api")
    assert movement["details"]["ref"] == "DN-1"
    status, _, again = await api.call("POST", "/movements", RECEIPT, headers=key)
    assert status == 200 and again["replayed"] and again["movement"]["id"] == movement["id"]
    status, headers, problem = await api.call(
        "POST", "/movements", {**RECEIPT, "quantity": 501}, headers=key
    )
    assert status == 409 and headers["content-type"] == "application/problem+json"
    assert problem["field"] == "Idempotency-Key" and problem["status"] == 409
    assert len(await api.ledger.history()) == 1


async def test_reads_balances_lots_units_and_movements_with_a_cursor(api: Api) -> None:
    for n in range(3):
        body = {**RECEIPT, "lot": f"L{n}", "quantity": 10 + n}
        assert (await api.call("POST", "/movements", body))[0] == 201
    status, _, balances = await api.call("GET", "/balances?unit=DRUMS", token=None)
    assert status == 200  # anonymous reads are allowed here
    assert {b["lot"]: b["quantity"] for b in balances["balances"]} == {
        "L0": "10",
        "L1": "11",
        "L2": "12",
    }
    _, _, lot = await api.call("GET", "/lots/L1", token=VIEWER_TOKEN)
    assert lot["units"] == [{"unit": "DRUMS", "lot": "L1", "quantity": "11", "uom": "kg"}]
    assert (lot["parents"], lot["children"], lot["status"]) == ([], [], "released")
    _, _, units = await api.call("GET", "/units")
    drums = next(u for u in units["units"] if u["unit"] == "DRUMS")
    assert drums["book"] == "33" and len(drums["lots"]) == 3 and drums["booking"] == "manual"
    _, _, page = await api.call("GET", "/movements?limit=2")
    assert [m["lot"] for m in page["movements"]] == ["L0", "L1"]
    _, _, rest = await api.call("GET", f"/movements?since={page['next_cursor']}")
    assert [m["lot"] for m in rest["movements"]] == ["L2"]
    assert rest["next_cursor"] > page["next_cursor"]
    status, _, missing = await api.call("GET", "/units/NOPE")
    assert status == 404 and missing["field"] == "unit"


async def test_a_receipt_into_a_measured_unit_is_an_advice(api: Api) -> None:
    body = {**RECEIPT, "to_unit": "TANK", "lot": "T1"}
    status, _, answer = await api.call("POST", "/movements", body, headers={"Idempotency-Key": "a"})
    assert status == 202 and answer["advice"]["state"] == "open"
    assert answer["advice"]["unit"] == "TANK" and answer["advice"]["expected"] == "500"
    status, _, again = await api.call("POST", "/movements", body, headers={"Idempotency-Key": "a"})
    assert status == 200 and again["advice"]["id"] == answer["advice"]["id"]
    _, _, listed = await api.call("GET", "/advices?state=open")
    assert [a["id"] for a in listed["advices"]] == [answer["advice"]["id"]]
    assert await api.ledger.history() == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**RECEIPT, "quantity": "NaN"}, 422, "quantity"),
        ({**RECEIPT, "quantity": -5}, 422, None),
        ({**RECEIPT, "quantity": "lots"}, 422, "quantity"),
        ({**RECEIPT, "to_unit": "TK-999"}, 422, "unit"),
        ({**RECEIPT, "lot": "x" * 500}, 422, "lot"),
        ({**RECEIPT, "colour": "red"}, 422, "colour"),
        ({**RECEIPT, "kind": "teleport"}, 422, "kind"),
        ({"kind": "issue", "material": "OIL", "lot": "NONE", "quantity": 1, "uom": "kg",
          "from_unit": "DRUMS"}, 422, "lot"),
        ({"kind": "issue", "material": "OIL", "quantity": 1, "uom": "kg",
          "from_unit": "DRUMS"}, 409, None),  # nothing in stock to allocate
    ],
)  # fmt: skip
async def test_bad_input_is_a_problem_and_posts_nothing(
    api: Api, body: dict[str, Any], status: int, field: str | None
) -> None:
    got, headers, problem = await api.call("POST", "/movements", body)
    assert got == status, problem
    assert headers["content-type"] == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= set(problem) and problem["status"] == status
    if field is not None:
        assert problem["field"] == field, problem
    assert await api.ledger.history() == []


async def test_garbage_and_oversized_bodies_are_refused(api: Api) -> None:
    status, _, problem = await api.call("POST", "/movements", raw=b"{not json")
    assert status == 422 and problem["title"] == "Invalid request"
    status, _, problem = await api.call("POST", "/movements", raw=b"[" + b"1," * 5000 + b"1]")
    assert status == 413 and "4096 bytes" in problem["detail"]
    assert await api.ledger.history() == []


async def test_credentials_and_roles_are_checked_and_refusals_audited(api: Api) -> None:
    status, headers, problem = await api.call("POST", "/movements", RECEIPT, token=None)
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    status, _, _ = await api.call("POST", "/movements", RECEIPT, token="invops_wrong")
    assert status == 401
    status, _, problem = await api.call("POST", "/movements", RECEIPT, token=VIEWER_TOKEN)
    assert status == 403 and "lacks operator" in problem["detail"]
    adjust = {"kind": "adjustment", "material": "OIL", "lot": "L1", "quantity": -1, "uom": "kg",
              "to_unit": "DRUMS", "reason": "spill"}  # fmt: skip
    status, _, _ = await api.call("POST", "/movements", adjust)  # an operator token
    assert status == 403
    basic = base64.b64encode(b"erin:s3cret-erin").decode()
    status, _, posted = await api.call(
        "POST", "/movements", RECEIPT, token=None, headers={"Authorization": f"Basic {basic}"}
    )
    assert status == 201 and posted["movement"]["user"] == "erin"
    wrong = base64.b64encode(b"erin:guess").decode()
    status, _, _ = await api.call(
        "POST", "/movements", RECEIPT, token=None, headers={"Authorization": f"Basic {wrong}"}
    )
    assert status == 401
    assert (await api.ledger.verify()).ok


async def test_the_openapi_document_is_3_1_and_lists_the_routes(api: Api) -> None:
    status, _, doc = await api.call("GET", "/openapi.json", token=None)
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert {"/api/v1/units", "/api/v1/movements", "/api/v1/balances", "/api/v1/advices"} <= set(
        doc["paths"]
    )
    assert "MovementIn" in doc["components"]["schemas"]


def read_events(
    url: str, count: int, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The first `count` SSE events of a stream (id, event, data as JSON)."""
    request = urllib.request.Request(url, headers=headers or {})
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        while len(events) < count:
            line = response.readline().decode().rstrip("\n")
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif line.startswith("data: "):
                current["data"] = json.loads(line.removeprefix("data: "))
            elif line.startswith(("id: ", "event: ")):
                name, _, value = line.partition(": ")
                current[name] = value
    return events


async def test_the_movement_stream_delivers_each_movement_and_resumes_after_a_reconnect(
    api: Api,
) -> None:
    for n in range(2):
        assert (await api.call("POST", "/movements", {**RECEIPT, "lot": f"S{n}"}))[0] == 201
    live = asyncio.create_task(asyncio.to_thread(read_events, f"{api.base}/movements/stream", 3))
    await asyncio.sleep(0.5)
    assert (await api.call("POST", "/movements", {**RECEIPT, "lot": "S2"}))[0] == 201
    events = await asyncio.wait_for(live, 15)
    assert [e["data"]["lot"] for e in events] == ["S0", "S1", "S2"]
    assert {e["event"] for e in events} == {"movement"}
    assert [int(e["id"]) for e in events] == [e["data"]["cursor"] for e in events]
    resumed = await asyncio.to_thread(
        read_events, f"{api.base}/movements/stream", 2, {"Last-Event-ID": events[0]["id"]}
    )
    assert [e["data"]["lot"] for e in resumed] == ["S1", "S2"]  # nothing missed, nothing twice


async def test_reversal_lot_status_and_genealogy(api: Api) -> None:
    _, _, posted = await api.call("POST", "/movements", RECEIPT)
    movement_id = posted["movement"]["id"]
    status, _, problem = await api.call(
        "POST", f"/movements/{movement_id}/reversal", {"reason": "wrong drum"}
    )
    assert status == 403  # an operator token: reversals need an engineer
    basic = {"Authorization": "Basic " + base64.b64encode(b"erin:s3cret-erin").decode()}
    status, _, reversed_ = await api.call(
        "POST", f"/movements/{movement_id}/reversal", {"reason": "wrong drum"}, token=None,
        headers={**basic, "Idempotency-Key": "rev-1"},
    )  # fmt: skip
    assert status == 201 and reversed_["movement"]["reverses"] == movement_id
    status, _, again = await api.call(
        "POST", f"/movements/{movement_id}/reversal", {"reason": "wrong drum"}, token=None,
        headers={**basic, "Idempotency-Key": "rev-1"},
    )  # fmt: skip
    assert status == 200 and again["movement"]["id"] == reversed_["movement"]["id"]
    status, _, held = await api.call(
        "POST", "/lots/L1/status", {"status": "hold", "reason": "lab"}, token=None, headers=basic
    )
    assert status == 201 and held["movement"]["kind"] == "lot-status"
    _, _, lot = await api.call("GET", "/lots/L1")
    assert lot["status"] == "hold"
    status, _, problem = await api.call(
        "POST", "/lots/L1/status", {"status": "lost", "reason": "?"}, token=None, headers=basic
    )
    assert status == 422 and problem["field"] == "status"
    await api.call("POST", "/movements", {**RECEIPT, "lot": "IN-1", "quantity": 100})
    production = {"kind": "production", "material": "OIL", "lot": "OUT-1", "quantity": 60,
                  "uom": "kg", "to_unit": "DRUMS",
                  "consumed": [{"lot": "IN-1", "quantity": 60, "unit": "DRUMS"}]}  # fmt: skip
    status, _, produced = await api.call("POST", "/movements", production)
    assert status == 201 and len(produced["parts"]) == 1  # the draw of IN-1
    _, _, trace = await api.call("GET", "/lots/OUT-1/genealogy?direction=backward")
    assert [(k["parent"], k["quantity"]) for k in trace["links"]] == [("IN-1", "60")]
    assert trace["mass_balance"][0]["conserved"] is True
    _, _, lot_in = await api.call("GET", "/lots/IN-1")
    assert lot_in["children"] == ["OUT-1"] and lot_in["units"][0]["quantity"] == "40"


async def test_every_request_is_observed_by_route_template(ledger_url: str) -> None:
    seen: list[tuple[str, str, int]] = []
    async with open_ledger(ledger_url, writer_id="api-m", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), UNITS)
        auth = ApiAuth([], [], anonymous_read=True)
        app = create_app(ledger, auth, observe=lambda r, m, s, _: seen.append((r, m, s)))
        async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
            api = Api(f"http://127.0.0.1:{server.port}/api/v1", ledger)
            await api.call("GET", "/lots/NOPE", token=None)
            await api.call("GET", "/no/such/route", token=None)
            await api.call("POST", "/movements", RECEIPT, token=None)
    assert seen == [
        ("/api/v1/lots/{lot}", "GET", 404),
        ("unmatched", "GET", 404),
        ("/api/v1/movements", "POST", 401),
    ]


async def test_the_audit_of_a_lot_shows_its_receipt_and_status_change_old_to_new(api: Api) -> None:
    status, _, posted = await api.call("POST", "/movements", RECEIPT)
    assert status == 201
    receipt_id = posted["movement"]["id"]
    basic = {"Authorization": "Basic " + base64.b64encode(b"erin:s3cret-erin").decode()}
    status, _, held = await api.call(
        "POST", "/lots/L1/status", {"status": "hold", "reason": "lab"}, token=None, headers=basic
    )
    assert status == 201
    status, headers, audit = await api.call("GET", "/audit?object=lot:L1", token=None)
    assert status == 200 and headers["content-type"] == "application/json", audit
    records = audit["records"]  # anonymous reading is allowed here: a viewer's read
    assert audit["object"] == "lot:L1" and audit["next_cursor"] == records[-1]["cursor"]
    assert [(r["object_type"], r["action"], r["user"]) for r in records] == [
        ("lot", "create", "wms"),  # the receipt created the lot ...
        ("movement", "receipt", "wms"),  # ... and booked it
        ("movement", "lot-status", "erin"),
    ]
    created, receipt, change = records
    assert created["old"] is None and created["new"]["status"] == "released"
    assert created["reason"] == f"first receipt {receipt_id}"
    assert receipt["object_id"] == receipt_id and receipt["movement"]["quantity"] == "500"
    assert change["old"] == {"lot": "L1", "status": "released"}  # old -> new
    assert change["movement"]["details"]["new_status"] == "hold" and change["reason"] == "lab"
    assert change["object_id"] == held["movement"]["id"]
    assert [r["cursor"] for r in records] == sorted(r["cursor"] for r in records)  # newest last
    assert all(r["writer"] == "api" and r["seq"] > 0 and len(r["hash"]) == 64 for r in records)
    assert records[0]["timestamp"] <= records[-1]["timestamp"]

    _, _, by_erin = await api.call("GET", "/audit?object=lot:L1&user=erin")
    assert [r["action"] for r in by_erin["records"]] == ["lot-status"]
    _, _, after = await api.call("GET", f"/audit?object=lot:L1&since={created['cursor']}")
    assert [r["cursor"] for r in after["records"]] == [receipt["cursor"], change["cursor"]]
    _, _, page = await api.call("GET", f"/audit?object=lot:L1&since={created['cursor']}&limit=1")
    assert [r["action"] for r in page["records"]] == ["receipt"]
    _, _, rest = await api.call("GET", f"/audit?object=lot:L1&since={page['next_cursor']}")
    assert [r["action"] for r in rest["records"]] == ["lot-status"]
    _, _, done = await api.call("GET", f"/audit?object=lot:L1&since={rest['next_cursor']}")
    assert done["records"] == [] and done["next_cursor"] == rest["next_cursor"]

    _, _, unit = await api.call("GET", "/audit?object=unit:DRUMS")  # the unit's movements
    assert [r["object_id"] for r in unit["records"] if r["object_type"] == "movement"] == [
        receipt_id
    ]
    _, _, movement = await api.call("GET", f"/audit?object=movement:{receipt_id}")
    assert [r["cursor"] for r in movement["records"]] == [receipt["cursor"]]
    _, _, nobody = await api.call("GET", "/audit?object=lot:NOPE")
    assert nobody["records"] == []


@pytest.mark.parametrize("query", ["object=planet:X", "object=lot:", "object=lot", "since=1"])
async def test_an_audit_query_without_a_known_object_type_and_id_is_a_problem(
    api: Api, query: str
) -> None:
    status, headers, problem = await api.call("GET", f"/audit?{query}")
    assert status == 422 and headers["content-type"] == "application/problem+json", problem
    assert problem["field"] == "object" and problem["status"] == 422


async def test_a_nul_in_a_query_or_path_parameter_is_a_problem_not_a_ledger_failure(
    api: Api,
) -> None:
    # PostgreSQL cannot compare text with a NUL: this was a 503 "ledger unavailable" there.
    for path, field in [("/balances?unit=a%00b", "unit"), ("/lots/L%001", "lot"),
                        ("/audit?object=lot:L1&user=%00", "user")]:  # fmt: skip
        status, headers, problem = await api.call("GET", path)
        assert status == 422 and headers["content-type"] == "application/problem+json", problem
        assert problem["field"] == field


async def test_a_method_a_path_does_not_take_is_a_405_naming_every_method_it_takes(
    api: Api,
) -> None:
    status, headers, problem = await api.call("DELETE", "/movements")
    assert status == 405 and problem["status"] == 405
    assert headers["allow"] == "GET, POST"  # Starlette named only the first route's


async def test_a_body_that_is_not_utf8_is_invalid_input(api: Api) -> None:
    status, headers, problem = await api.call("POST", "/movements", raw=b'{"kind": "\xff\xfe"}')
    assert status == 422 and headers["content-type"] == "application/problem+json"
    assert problem["field"] == "body"

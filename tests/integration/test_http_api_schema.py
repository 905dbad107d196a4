"""Schemathesis over every operation of the API's own OpenAPI document, against the real
app (uvicorn on an ephemeral 127.0.0.1 port, a SQLite ledger with units, lots, an
advice and a genealogy), called anonymously, with an operator token and with an engineer
token: every answer must be documented (status, content type, headers, body schema), no
5xx, invalid input refused, auth enforced where declared. The fuzzer's postings must
leave a ledger that verifies.

The schema is the document the app serves at /api/v1/openapi.json, fetched at import
from an app without a ledger (the document does not depend on one; the test checks that
the server's is the same), so that each operation is a test of its own."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from http_api import ApiAuth, create_app
from inventory_core import Ledger, open_ledger
from inventory_core.domain.api_tokens import ApiToken, hash_token
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
from inventory_core.domain.signatures import SignatureAction, SignaturePolicy
from inventory_core.domain.users import Role
from inventory_core.plant_view import PlantView
from inventory_core.plant_view.state import Book
from inventory_core.signing import SigningService
from invops.http_server import HttpServer

T = TypeVar("T")
API = "/api/v1"
# The ids of the OpenAPI examples (the demo plant's), so that the examples post and find.
GLYCOL = MaterialDefinition(MaterialId("GLYCOL"), "Glycol", "kg", Decimal("1.11"),
                            LotStatus.RELEASED)  # fmt: skip
UNITS = (
    StorageUnit(StorageUnitId("WH-401"), "P", "WAREHOUSE", StorageKind.BIN, Decimal(20000), "kg",
                GLYCOL.id, lot_handling=LotHandling.FIFO, booking=Booking.MANUAL),
    StorageUnit(StorageUnitId("TK-102"), "P", "TANKFARM", StorageKind.TANK, Decimal(30000), "L",
                GLYCOL.id, lot_handling=LotHandling.MIXED, booking=Booking.MEASURED),
)  # fmt: skip
OPERATOR_TOKEN = "invops_operator-fuzz-token"
ENGINEER_TOKEN = "invops_engineer-fuzz-token"
TOKENS = (
    ApiToken("wms", Role.OPERATOR, hash_token(OPERATOR_TOKEN)),
    ApiToken("qa", Role.ENGINEER, hash_token(ENGINEER_TOKEN)),
)
CALLERS = {"anonymous": None, "operator": OPERATOR_TOKEN, "engineer": ENGINEER_TOKEN}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,  # invalid input (by the schema) is a 4xx
    missing_required_header,
    unsupported_method,  # other methods on a path: 405
    allow_header_conformance,  # with the Allow header
    ignored_auth,  # an operation that needs credentials refuses a request without them
    # Not positive_data_acceptance: data valid by the schema may name a unit or lot that
    # does not exist, or conflict with the stock (a documented 404, 409 or 422).
]
STREAM_READ_S = 5.0
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]


class _NoLedger:
    """Enough of a Ledger for the app to be built and serve its OpenAPI document."""

    def subscribe(self, _: object) -> None:
        pass


def _auth(record: Any = None) -> ApiAuth:
    return ApiAuth([], TOKENS, anonymous_read=True, record=record)


def served_document() -> dict[str, Any]:
    """GET /api/v1/openapi.json of an app built as the server's is (ASGI, no socket)."""
    app = create_app(_NoLedger(), _auth(), version="test")  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = f"{API}/openapi.json"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [], "server": ("test", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    document: dict[str, Any] = json.loads(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )
    return document


DOCUMENT = served_document()
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "with-security-parameters": False},
        "phases": {"coverage": {"enabled": True}, "stateful": {"enabled": False}},
        # schemathesis's default list of refusals, with 413: a body over the cap is one
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@dataclass
class Served:
    base: str
    loop: asyncio.AbstractEventLoop
    ledger: Ledger
    answered: Counter[tuple[str, str, int]]  # route template, method, status

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


# A lot put on hold is signed: the fuzzer's status changes to `hold` answer 202 with
# the request held (the other statuses post, 201), and GET /requests lists them.
POLICIES = (
    SignaturePolicy(SignatureAction.LOT_STATUS, "approved", Role.ENGINEER,
                    statuses=frozenset({LotStatus.HOLD})),
)  # fmt: skip


async def _seed(ledger: Ledger) -> None:
    """Lots in a manual unit, a production (genealogy), a held lot, an open advice into
    the measured tank and a measurement of it (reconciliation), then a request held for
    signatures (a second lot put on hold)."""

    def posting(kind: MovementKind, lot: str | None, quantity: int, **more: Any) -> PostingRequest:
        return PostingRequest(kind=kind, material=GLYCOL.id,
                              lot=None if lot is None else LotId(lot), quantity=Decimal(quantity),
                              uom="kg", user="seed", source=Source.API, **more)  # fmt: skip

    wh, tank = UNITS[0].id, UNITS[1].id
    await ledger.post(posting(MovementKind.RECEIPT, "GLY-0100", 500, to_unit=wh))
    await ledger.post(posting(MovementKind.RECEIPT, "GLY-0101", 300, to_unit=wh))
    await ledger.post(
        posting(MovementKind.PRODUCTION, "GLY-0200", 100, to_unit=wh,
                consumed_lots=(LotId("GLY-0101"),), consumed_quantities=(Decimal(100),),
                consumed_units=(wh,))
    )  # fmt: skip
    await ledger.set_lot_status(
        LotStatusRequest(LotId("GLY-0200"), LotStatus.HOLD, "lab check", "seed", Source.API)
    )
    await ledger.post(posting(MovementKind.RECEIPT, "GLY-0300", 1000, to_unit=tank))  # an advice
    await ledger.record_measurement(tank, Decimal(2000), "kg")
    await ledger.set_signature_policies(POLICIES)
    await ledger.set_lot_status(
        LotStatusRequest(LotId("GLY-0100"), LotStatus.HOLD, "lab check", "seed", Source.API)
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app on a real ledger, served from a thread with its own event loop (the
    schemathesis tests are synchronous and call it over HTTP)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz')}/ledger.db"
    handed: list[Any] = []
    ready = threading.Event()
    failed: list[BaseException] = []
    answered: Counter[tuple[str, str, int]] = Counter()

    async def main() -> None:
        async with open_ledger(url, writer_id="fuzz", migrate=True) as ledger:
            await ledger.sync_master_data((GLYCOL,), UNITS)
            await _seed(ledger)
            view = PlantView(UNITS, (GLYCOL,))
            view.apply_book(
                "TK-102", Book(quantity=1800.5, material_id="GLYCOL", lot_id="GLY-0300")
            )
            # No [[users]]: every signature the fuzzer tries is refused (403), audited.
            signing = SigningService(ledger, [])
            app = create_app(ledger, _auth(ledger.record_event), view=view, version="test",
                             max_body_bytes=4096, signing=signing,
                             observe=lambda r, m, s, _: answered.update([(r, m, s)]))  # fmt: skip
            async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
                stop = asyncio.Event()
                handed.extend([server.port, asyncio.get_running_loop(), ledger, stop])
                ready.set()
                await stop.wait()
            signing.close()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test thread
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=thread_main, name="api-under-fuzz", daemon=True)
    thread.start()
    assert ready.wait(30) and not failed, failed
    port, loop, ledger, stop = handed
    yield Served(f"http://127.0.0.1:{port}", loop, ledger, answered)
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    assert not failed, failed


def test_the_fuzzed_document_is_the_one_the_server_serves(served: Served) -> None:
    answer = requests.get(f"{served.base}{API}/openapi.json", timeout=10)
    assert answer.status_code == 200 and answer.json() == DOCUMENT
    operations = {(m.upper(), p) for p, item in DOCUMENT["paths"].items() for m in item}
    assert len(operations) == len(list(schema.get_all_operations())) >= 14


def _stream(case: schemathesis.Case, base: str, headers: dict[str, str]) -> requests.Response:
    """GET /movements/stream, bounded: an event stream is read up to its first event
    (the `retry:` line), then the client disconnects (and the server ends the stream);
    any other answer (a problem) is read whole."""
    kwargs = case.as_transport_kwargs(base_url=base, headers=headers)
    response = requests.request(**kwargs, stream=True, timeout=STREAM_READ_S)
    with response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            data = b""
            for chunk in response.iter_content(chunk_size=None):
                data += chunk
                if b"\n\n" in data:
                    break
            assert data.startswith(b"retry: "), data
        else:
            data = response.content
    response._content = data  # what was read is the body the checks see
    return response


@pytest.mark.parametrize("caller", list(CALLERS))
@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, served: Served, caller: str
) -> None:
    token = CALLERS[caller]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if case.path == f"{API}/movements/stream":
        response = _stream(case, served.base, headers)
        sent = {"base_url": served.base, "headers": headers}
        case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=sent)
        return
    case.call_and_validate(base_url=served.base, headers=headers, checks=CHECKS, timeout=10)


def test_the_ledger_verifies_after_the_fuzzing(served: Served) -> None:
    """Runs last: whatever the fuzzer posted, refused or replayed, the audit chain, the
    movements and the balances agree; and it did post (its examples do)."""
    report = served.run(served.ledger.verify())
    assert report.ok, report
    answered = {(route, method, status) for route, method, status in served.answered}
    posted = {status for route, method, status in answered if route == f"{API}/movements"
              and method == "POST" and status < 300}  # fmt: skip
    assert {201, 202} <= posted, answered
    held = {status for route, method, status in answered
            if route == f"{API}/lots/{{lot}}/status" and method == "POST"}  # fmt: skip
    assert 202 in held, "a status change held for signatures, its answer checked"
    closes = {status for route, method, status in answered
              if route == f"{API}/periods/close" and method == "POST"}  # fmt: skip
    assert 202 in closes, "a period close held for its signature, its answer checked"
    for operation in schema.get_all_operations():
        op = operation.ok()
        ok = any(r == op.path and m == op.method.upper() and s < 300 for r, m, s in answered)
        # A reversal names a movement by its id, a UUID the fuzzer cannot know (the
        # reversal's answers are tested in test_http_api.py), as a request is named by its
        # (and signing needs a password: tests/integration/test_http_signatures.py), and
        # POST /b2mml takes an XML document no string strategy writes
        # (tests/integration/test_b2mml_api.py); every other operation must have answered
        # a success too, not only refusals.
        unreachable = op.path.endswith(
            ("/reversal", "/b2mml", "/requests/{request_id}", "/approve", "/reject")
        )
        assert ok or unreachable, f"{op.method} {op.path}: no 2xx"

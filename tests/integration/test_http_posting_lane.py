"""The fast lane of POST /api/v1/movements (http_api.posting_lane): a Bearer posting is
booked without FastAPI and answered as FastAPI answers it; every request the lane does
not take reaches FastAPI with its body intact. Real ledgers on SQLite; the comparison runs
over real HTTP (uvicorn on ephemeral ports)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from http_api import ApiAuth, create_app
from http_api.posting_lane import PostingLane
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
from inventory_core.domain.posting import movement_document
from inventory_core.domain.users import Role, User
from invops.http_server import HttpServer
from tests.http_client import http_call

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal("0.9"), LotStatus.RELEASED)
UNITS = (
    StorageUnit(StorageUnitId("DRUMS"), "P", "A", StorageKind.BIN, Decimal(1000), "kg", OIL.id,
                lot_handling=LotHandling.FIFO, booking=Booking.MANUAL),
    StorageUnit(StorageUnitId("RACK"), "P", "A", StorageKind.BIN, Decimal(1000), "kg", OIL.id,
                lot_handling=LotHandling.FIFO, booking=Booking.MANUAL),
    StorageUnit(StorageUnitId("TANK"), "P", "A", StorageKind.TANK, Decimal(50000), "kg", OIL.id,
                lot_handling=LotHandling.MIXED, booking=Booking.MEASURED),
)  # fmt: skip
PATH = "/api/v1/movements"
OPERATOR, VIEWER, ENGINEER = "invops_lane-operator", "invops_lane-viewer", "invops_lane-engineer"
PASSWORDS = {"wms": "wms-secret-1", "ops": "ops-secret-1"}
RECEIPT = {"kind": "receipt", "material": "OIL", "lot": "L1", "quantity": 500, "uom": "kg",
           "to_unit": "DRUMS", "ref": "DN-1"}  # fmt: skip


def _auth(ledger: Ledger) -> ApiAuth:
    """Tokens and users of the same names and roles: a Bearer call goes down the lane,
    the Basic call of the same caller through FastAPI."""
    tokens = [
        ApiToken("wms", Role.OPERATOR, hash_token(OPERATOR)),
        ApiToken("bi", Role.VIEWER, hash_token(VIEWER)),
        ApiToken("ops", Role.ENGINEER, hash_token(ENGINEER)),
    ]
    users = [
        User(name, role, parse_password_hash(hash_password(PASSWORDS[name])))
        for name, role in (("wms", Role.OPERATOR), ("ops", Role.ENGINEER))
    ]
    return ApiAuth(users, tokens, anonymous_read=False, record=ledger.record_event)


async def _ledger(path: Path) -> AsyncIterator[Ledger]:
    async with open_ledger(f"sqlite+aiosqlite:///{path}", writer_id="lane", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), UNITS)
        yield ledger


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async for opened in _ledger(tmp_path / "lane.db"):
        yield opened


# -- the lane alone, in front of an app that must not be asked ---------------------------


class Inner:
    """The app behind the lane: records what reached it and the body it read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


async def _asgi(
    app: Any, body: bytes, headers: list[tuple[bytes, bytes]], *,
    method: str = "POST", path: str = PATH, query: bytes = b"", chunks: int = 1,
) -> tuple[int, bytes]:  # fmt: skip
    """Call the ASGI app once, the body split over `chunks` messages."""
    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query, "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 9841),
             "state": {}}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _headers(token: str | None = OPERATOR, **extra: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    headers += [(name.replace("_", "-").encode(), value.encode()) for name, value in extra.items()]
    return headers


async def test_a_bearer_posting_is_booked_and_answered_without_the_app_behind(
    ledger: Ledger,
) -> None:
    inner = Inner()
    lane = PostingLane(inner, ledger, _auth(ledger), PATH, None)
    body = json.dumps(RECEIPT).encode()
    status, answer = await _asgi(lane, body, _headers(idempotency_key="k-1"), chunks=3)
    assert status == 201, answer
    movement = json.loads(answer)["movement"]
    assert (movement["lot"], movement["user"], movement["idempotency_key"]) == ("L1", "wms", "k-1")
    status, answer = await _asgi(lane, body, _headers(idempotency_key="k-1"))
    assert status == 200 and json.loads(answer)["replayed"] is True
    # Ledger refusals are answered by the lane too, as problem details: nothing posted.
    changed = json.dumps({**RECEIPT, "quantity": 501}).encode()
    status, answer = await _asgi(lane, changed, _headers(idempotency_key="k-1"))
    assert status == 409 and json.loads(answer)["field"] == "Idempotency-Key"
    unknown = json.dumps({**RECEIPT, "lot": "L2", "to_unit": "NOPE"}).encode()
    status, answer = await _asgi(lane, unknown, _headers())
    assert status == 422 and json.loads(answer)["field"] == "unit"
    status, answer = await _asgi(lane, json.dumps({**RECEIPT, "lot": "L3"}).encode(), _headers())
    assert status == 201, answer
    assert inner.calls == []
    assert len(await ledger.history()) == 2


BASIC = "Basic " + base64.b64encode(b"wms:wms-secret-1").decode()
ADJUST = {"kind": "adjustment", "material": "OIL", "lot": "L1", "quantity": -1, "uom": "kg",
          "to_unit": "DRUMS", "reason": "spill"}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "query", "method"),
    [
        (
            RECEIPT,
            [(b"content-type", b"application/json"), (b"authorization", BASIC.encode())],
            b"",
            "POST",
        ),  # Basic: checked (and throttled) by FastAPI's dependency
        (RECEIPT, _headers(None), b"", "POST"),  # no credentials: 401 and its audit
        (RECEIPT, _headers("invops_unknown"), b"", "POST"),
        (RECEIPT, _headers(VIEWER), b"", "POST"),  # a role that may not post
        (ADJUST, _headers(OPERATOR), b"", "POST"),  # an engineer's kind
        (RECEIPT, [(b"content-type", b"text/plain"), *_headers()[1:]], b"", "POST"),
        (RECEIPT, _headers()[1:], b"", "POST"),  # no Content-Type
        (RECEIPT, [*_headers(idempotency_key="a"), (b"idempotency-key", b"b")], b"", "POST"),
        (RECEIPT, _headers(idempotency_key="k" * 129), b"", "POST"),
        (RECEIPT, _headers(), b"x=1", "POST"),
        (RECEIPT, _headers(), b"", "PUT"),
        ({**RECEIPT, "quantity": "NaN"}, _headers(), b"", "POST"),
        ({**RECEIPT, "extra": 1}, _headers(), b"", "POST"),
        ([RECEIPT], _headers(), b"", "POST"),
        (b"{not json", _headers(), b"", "POST"),
        (b"[" * 5000 + b"]" * 5000, _headers(), b"", "POST"),  # nested past the recursion limit
        (b"\xff\xfe{}", _headers(), b"", "POST"),  # not UTF-8
        (b"", _headers(), b"", "POST"),
    ],
)
async def test_what_the_lane_does_not_take_reaches_the_app_with_its_body(
    ledger: Ledger,
    body: Any,
    headers: list[tuple[bytes, bytes]],
    query: bytes,
    method: str,
) -> None:
    inner = Inner()
    lane = PostingLane(inner, ledger, _auth(ledger), PATH, None)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = await _asgi(lane, raw, headers, query=query, method=method, chunks=2)
    assert (status, answer) == (299, b"inner")
    assert inner.calls == [(PATH, raw)]
    assert await ledger.history() == []


async def test_another_path_is_not_the_lanes(ledger: Ledger) -> None:
    inner = Inner()
    lane = PostingLane(inner, ledger, _auth(ledger), PATH, None)
    raw = json.dumps(RECEIPT).encode()
    assert await _asgi(lane, raw, _headers(), path=PATH + "/") == (299, b"inner")
    assert inner.calls == [(PATH + "/", raw)]


# -- the lane and FastAPI answer alike, over real HTTP -----------------------------------

SCRIPT: list[tuple[dict[str, Any], str | None, str]] = [
    # (body, Idempotency-Key, caller)
    (RECEIPT, "r-1", "wms"),
    (RECEIPT, "r-1", "wms"),  # the replay
    ({**RECEIPT, "quantity": 7}, "r-1", "wms"),  # the key with another body: 409
    ({**RECEIPT, "lot": "L2", "quantity": 300}, None, "wms"),
    ({**RECEIPT, "lot": "L9", "quantity": 900}, None, "wms"),  # over capacity: 409
    ({"kind": "issue", "material": "OIL", "quantity": 600, "uom": "kg", "from_unit": "DRUMS",
      "ref": "PO-1"}, "i-1", "wms"),  # fifo over two lots: parts
    ({"kind": "issue", "material": "OIL", "quantity": 999, "uom": "kg", "from_unit": "DRUMS"},
     None, "wms"),  # more than is there: 409
    ({"kind": "transfer", "material": "OIL", "lot": "L2", "quantity": 100, "uom": "kg",
      "from_unit": "DRUMS", "to_unit": "RACK"}, None, "wms"),
    ({**RECEIPT, "lot": "T1", "to_unit": "TANK"}, "t-1", "wms"),  # a measured unit: an advice
    ({**RECEIPT, "lot": "T1", "to_unit": "TANK"}, "t-1", "wms"),  # ... and its replay
    ({**RECEIPT, "material": "WATER", "lot": "W1"}, None, "wms"),  # unknown material: 422
    ({"kind": "scrap", "material": "OIL", "lot": "L2", "quantity": 5, "uom": "kg",
      "from_unit": "RACK", "reason": "leak"}, None, "wms"),
    ({**ADJUST, "lot": "L2", "to_unit": "RACK"}, None, "ops"),  # an engineer adjusts
    ({"kind": "count", "material": "OIL", "lot": "L2", "quantity": 90, "uom": "kg",
      "to_unit": "RACK"}, None, "wms"),
    ({"kind": "production", "material": "OIL", "lot": "P1", "quantity": 50, "uom": "kg",
      "to_unit": "DRUMS", "consumed": [{"lot": "L2", "quantity": 50, "unit": "RACK"}]},
     None, "wms"),
    ({**RECEIPT, "lot": "L5", "quantity": "12.5"}, None, "wms"),  # a quantity as text
    ({**RECEIPT, "lot": "L6", "quantity": -1}, None, "wms"),  # refused by the ledger: 422
]  # fmt: skip
TOKENS = {"wms": OPERATOR, "ops": ENGINEER}
# What differs between two ledgers by nature: ids, clocks, and where a row is found.
VARYING = {"id", "movement_id", "timestamp", "created_at", "expires_at", "recorded_at", "seq"}


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        return UUID.sub("<id>", value)
    if isinstance(value, dict):
        return {k: "*" if k in VARYING else _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


async def _play(ledger: Ledger, *, lane: bool) -> tuple[list[tuple[int, str, Any]], int]:
    """The answers to SCRIPT, and how often FastAPI's credentials dependency ran."""
    auth = _auth(ledger)
    checked = 0
    principal = auth.principal

    async def counted(*args: Any) -> Any:
        nonlocal checked
        checked += 1
        return await principal(*args)

    auth.principal = counted  # type: ignore[method-assign]
    app = create_app(ledger, auth, version="test")
    answers = []
    async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
        for body, key, caller in SCRIPT:
            headers = {} if key is None else {"Idempotency-Key": key}
            if not lane:  # the same caller by password: FastAPI's dependency, not the lane
                secret = base64.b64encode(f"{caller}:{PASSWORDS[caller]}".encode()).decode()
                headers["Authorization"] = f"Basic {secret}"
            status, got, answer = await http_call(
                f"http://127.0.0.1:{server.port}{PATH}", "POST", body,
                token=TOKENS[caller] if lane else None, headers=headers,
            )  # fmt: skip
            answers.append((status, got["content-type"], _comparable(answer)))
    return answers, checked


async def test_the_lane_answers_every_posting_as_fastapi_does(tmp_path: Path) -> None:
    async for first in _ledger(tmp_path / "lane.db"):
        by_lane, fastapi_calls = await _play(first, lane=True)
        assert fastapi_calls == 0  # every Bearer posting went down the lane
        booked_by_lane = [_comparable(movement_document(m)) for m in await first.history()]
    async for second in _ledger(tmp_path / "fastapi.db"):
        by_fastapi, fastapi_calls = await _play(second, lane=False)
        assert fastapi_calls == len(SCRIPT)
        booked_by_fastapi = [_comparable(movement_document(m)) for m in await second.history()]
    statuses = [status for status, _, _ in by_lane]
    assert statuses == [201, 200, 409, 201, 409, 201, 409, 201, 202, 200, 422, 201, 201, 201,
                        201, 201, 422]  # fmt: skip
    for step, (lane, fastapi) in enumerate(zip(by_lane, by_fastapi, strict=True)):
        assert lane == fastapi, (step, SCRIPT[step])
    # nine postings; the fifo issue books one movement per lot it draws (two)
    assert booked_by_lane == booked_by_fastapi and len(booked_by_lane) == 11


async def test_a_posting_down_the_lane_is_observed_under_the_routes_template(
    ledger: Ledger,
) -> None:
    seen: list[tuple[str, str, int]] = []
    app = create_app(ledger, _auth(ledger), observe=lambda r, m, s, _: seen.append((r, m, s)))
    async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
        url = f"http://127.0.0.1:{server.port}{PATH}"
        await http_call(url, "POST", RECEIPT, token=OPERATOR)
        await http_call(url, "POST", {**RECEIPT, "to_unit": "NOPE"}, token=OPERATOR)
        await http_call(url, "POST", RECEIPT, token=VIEWER)  # FastAPI's 403
    assert seen == [(PATH, "POST", 201), (PATH, "POST", 422), (PATH, "POST", 403)]

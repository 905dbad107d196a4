"""The fast lane of `POST /api/v1/movements`: a well-formed posting by a known API token
is booked without FastAPI's per-request machinery; every other request goes to FastAPI.

Why: postings are the route whose rate matters (an ERP's goods receipts, a WMS's moves,
an MES's confirmations, in bulk), and FastAPI's routing (each request tried against every
route, twice for an included router), dependency solving and validation glue cost about
0.5 ms of CPU per request, more than the ledger takes to book the posting
(`benchmarks/api.py`). The lane does what that machinery does for this one operation and
nothing else: it takes the request only when FastAPI would take it too (a `Bearer` token
that names a caller whose role may post this kind, `application/json` that
`MovementIn` accepts, at most one `Idempotency-Key` of at most 128 characters, no query
string), and answers with the same function the FastAPI route calls
(`http_api.postings.post_movement`) and the same problem details for a ledger refusal.
Anything else (Basic credentials, a missing or unknown token, a body that does not
validate, an engineer's kind posted by an operator) is handed to FastAPI with the body
it already read, so every 401/403/422 and its audit record come from one place.

The OpenAPI document, the metrics label (the route's template) and the body cap
(`_BodyLimit`, outside) are those of the FastAPI route.
"""

from __future__ import annotations

import json
from typing import Final

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from http_api.auth import ApiAuth, Principal
from http_api.postings import may_post, post_movement
from http_api.problems import Problem, from_ledger, problem_response
from http_api.schemas import MovementIn
from inventory_core import Ledger
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.users import Role

__all__ = ["PostingLane"]

KEY_MAX: Final = 128  # as the route's `Idempotency-Key` header parameter


class PostingLane:
    """ASGI: serves the postings it can (see the module docstring), hands the rest to
    `app` (the FastAPI app)."""

    def __init__(
        self, app: ASGIApp, ledger: Ledger, auth: ApiAuth, path: str, route: BaseRoute | None
    ) -> None:
        self.app, self.ledger, self.auth, self.path, self.route = app, ledger, auth, path, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = self._caller(scope) if self._ours(scope) else None
        if caller is None:
            await self.app(scope, receive, send)
            return
        principal, key = caller
        messages, body = await _read_body(receive)
        posting = _posting(body) if messages[-1]["type"] == "http.request" else None
        if posting is None or not may_post(principal, posting):
            await self.app(scope, _replaying(messages, receive), send)
            return
        if self.route is not None:
            scope["route"] = self.route  # the metrics label FastAPI would have set
        try:
            response = await post_movement(self.ledger, posting, principal, key)
        except Problem as problem:
            response = problem_response(problem)
        except InventoryError as exc:  # a refusal: nothing posted, as FastAPI answers it
            response = problem_response(from_ledger(exc))
        await response(scope, receive, send)

    def _ours(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == self.path
            and not scope.get("query_string")
        )

    def _caller(self, scope: Scope) -> tuple[Principal, str | None] | None:
        """The caller and the Idempotency-Key of a request FastAPI would take, else None."""
        found: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            if name in (b"authorization", b"content-type", b"idempotency-key"):
                found.setdefault(name, []).append(value)
        authorization = found.get(b"authorization", [])
        content_type = found.get(b"content-type", [])
        keys = found.get(b"idempotency-key", [])
        if len(authorization) != 1 or len(content_type) != 1 or len(keys) > 1:
            return None
        media_type = content_type[0].split(b";", 1)[0].strip().lower()
        if media_type != b"application/json":
            return None
        key = keys[0].decode("latin-1") if keys else None  # as Starlette decodes headers
        if key is not None and len(key) > KEY_MAX:
            return None
        principal = self.auth.bearer(authorization[0].decode("latin-1"))
        if principal is None or not principal.role.grants(Role.OPERATOR):
            return None
        return principal, key


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    """Every message up to the end of the body (or a disconnect), and the body."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, b""
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _posting(body: bytes) -> MovementIn | None:
    """The body as FastAPI reads it (Starlette's `json.loads` of the bytes, then the
    model in Python mode), or None where FastAPI would refuse it."""
    if not body:
        return None
    try:
        return MovementIn.model_validate(json.loads(body))
    except (ValueError, RecursionError):  # also JSONDecodeError, UnicodeDecodeError and
        return None  # pydantic's ValidationError; RecursionError: JSON nested too deep


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that first gives back the messages the lane read."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay

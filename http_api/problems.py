"""RFC 9457 problem details: every error the API answers is `application/problem+json`
with `type`, `title`, `status`, `detail` and, where one field is at fault, `field`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from inventory_core.domain.errors import (
    CapacityExceeded,
    DisagreesWithGauge,
    IdempotencyConflict,
    InsufficientStock,
    InventoryError,
    LedgerUnavailable,
    LotExpired,
    LotNotReleased,
    PeriodClosed,
    RequestClosed,
    SignatureRefused,
    UnitHoldsOtherLot,
    UnknownLot,
    UnknownMaterial,
    UnknownMovement,
    UnknownRequest,
    UnknownStorageUnit,
)
from inventory_core.domain.text import InvalidText, shown

__all__ = ["PROBLEM_SCHEMA", "Problem", "install", "problem_response", "problem_responses"]

MEDIA_TYPE = "application/problem+json"
DETAIL_MAX = 500
PROBLEM_SCHEMA = "Problem"  # components.schemas entry: http_api.schemas.ProblemOut
_TITLES: dict[int, str] = {
    400: "Bad request",
    401: "No or wrong credentials (Bearer or Basic)",
    403: "The caller's role does not allow this (or a signature is refused)",
    404: "Not found",
    409: "Conflicts with the ledger's state: stock, lot status, an Idempotency-Key reused, "
    "a request already signed, a closed period",
    413: "Request body over [api] max_body_bytes",
    415: "Unsupported media type (Content-Type)",
    422: "Invalid request: a field's value, or something it names that does not exist",
    503: "Ledger unavailable: try again",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    503: {"Retry-After": {"schema": {"type": "string"}, "required": True}},
}

# A ledger refusal's status: the request conflicts with the ledger's state (409), names
# something that is not there (422: the body is wrong, not the URL), or is malformed.
_CONFLICTS = (
    IdempotencyConflict,
    InsufficientStock,
    LotNotReleased,
    LotExpired,
    CapacityExceeded,
    UnitHoldsOtherLot,
    DisagreesWithGauge,
    RequestClosed,  # already posted or rejected: signing it again changes nothing
    PeriodClosed,  # a close overlapping a closed period, a posting inside one
)
_FIELDS = (
    (UnknownStorageUnit, "unit"),
    (UnknownLot, "lot"),
    (UnknownMaterial, "material"),
    (UnknownMovement, "id"),
    (UnknownRequest, "request_id"),
    (LotNotReleased, "lot"),
    (LotExpired, "lot"),
    (InsufficientStock, "quantity"),
    (CapacityExceeded, "quantity"),
    (IdempotencyConflict, "Idempotency-Key"),
)


class Problem(Exception):
    """Raise to answer a problem: status, title, detail, the field at fault."""

    def __init__(
        self, status: int, title: str, detail: str = "", *, field: str | None = None,
        kind: str = "about:blank", headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.field = status, title, detail, field
        self.kind, self.headers = kind, headers or {}


def problem_response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": shown(problem.detail or problem.title, DETAIL_MAX),
    }
    if problem.field is not None:
        body["field"] = problem.field
    return JSONResponse(
        body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these problem statuses (`application/problem+json`)."""
    schema = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _TITLES[status],
            "content": {MEDIA_TYPE: {"schema": schema}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


def from_ledger(exc: InventoryError) -> Problem:
    """The problem a ledger refusal is: its class names the type, e.g.
    `urn:invops:problem:insufficient-stock`."""
    slug = re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()
    kind = f"urn:invops:problem:{slug}"
    if isinstance(exc, LedgerUnavailable):
        return Problem(503, "Ledger unavailable", str(exc), kind=kind,
                       headers={"Retry-After": "5"})  # fmt: skip
    if isinstance(exc, SignatureRefused):  # wrong password, locked out, not this signer
        status = 403
    elif isinstance(exc, UnknownRequest):  # the request named by the URL is not there
        status = 404
    else:
        status = 409 if isinstance(exc, _CONFLICTS) else 422
    field = next((name for error, name in _FIELDS if isinstance(exc, error)), None)
    if isinstance(exc, InvalidText):  # a text rule names the field it refuses
        field = exc.field
    title = re.sub(r"-", " ", slug).capitalize()
    return Problem(status, title, str(exc), field=field, kind=kind)


def _field_of(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: Any, routes: Sequence[Any] = ()) -> None:
    """Answer every error of `app` as problem details; a 405 names in `Allow` the
    methods of each of `routes` on its path (Starlette's, those of the first route)."""

    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        detail = f"{field}: {first.get('msg', 'invalid')}"
        return problem_response(Problem(422, "Invalid request", detail, field=field))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 400:  # FastAPI's for a body it cannot decode (not UTF-8):
            detail = "body: not JSON text in UTF-8"  # bad input, as one that is not JSON
            return problem_response(Problem(422, "Invalid request", detail, field="body"))
        if exc.status_code == 405:
            path = request.scope["path"]
            allowed = {m for route in routes if route.path_regex.match(path) for m in route.methods}
            if allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return problem_response(Problem(exc.status_code, title, str(exc.detail), headers=headers))

    async def on_ledger(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InventoryError)
        return problem_response(from_ledger(exc))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(InventoryError, on_ledger)

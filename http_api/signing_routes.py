"""The API's electronic signature routes (SPEC section 8): the requests a `[[signatures]]`
policy holds, and signing them (approve, reject).

The caller needs the viewer role to read, the operator role to sign; the signer is the
body's `user`, who re-authenticates with the body's `password` through the one
`SigningService` of every interface (its lockout and audit of failed signatures), even
inside an authenticated session; the ledger then checks who may sign what. A refused
signature is 403 (already audited by the service: not audited again here), a request
that is not there 404, one already posted or rejected 409. The password is a
`SecretStr`: it is never logged, echoed in a problem or shown in the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from http_api.auth import Principal
from http_api.problems import Problem, problem_responses
from http_api.schemas import ApproveIn, RejectIn, RequestOut, RequestsOut, Signed
from inventory_core import Ledger
from inventory_core.domain.model import Source
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    RequestState,
    request_document,
)
from inventory_core.domain.signing_rules import SignOutcome
from inventory_core.domain.text import InvalidText, check_free_text, check_identifier
from inventory_core.signing import SigningService

__all__ = ["add_signing_routes"]

PAGE_MAX: Final = 1000
RequestPath = Annotated[
    str,
    Path(min_length=1, max_length=200, description="the request, `request:<id>` (or `<id>`)",
         examples=["request:0b7e6f2c-7d3a-4d62-9d0e-2f1c3a4b5c6d"]),
]  # fmt: skip
StateQuery = Literal["pending", "posted", "rejected", "failed", "all"]


def add_signing_routes(
    router: APIRouter,
    ledger: Ledger,
    signing: SigningService | None,
    *,
    reader: Any,
    writer: Any,
    read_extra: dict[str, Any],
    write_extra: dict[str, Any],
) -> None:
    """Add /requests to `router` (`reader`/`writer`: the auth dependencies)."""

    @router.get(
        "/requests",
        summary="Requests held for electronic signatures, the oldest first",
        response_model=RequestsOut,
        responses=problem_responses(401, 422, 503),
        openapi_extra=read_extra,
    )
    async def requests(
        state: Annotated[
            StateQuery, Query(description="`pending` (waiting for signatures), `posted`, "
                              "`rejected`, `failed` (refused by the ledger when signed), `all`")
        ] = "pending",
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_MAX,
        _: Principal = reader,
    ) -> JSONResponse:  # fmt: skip
        found = await ledger.pending_requests(
            state=None if state == "all" else RequestState(state), limit=limit
        )
        return JSONResponse({"requests": [request_document(p) for p in found]})

    @router.get(
        "/requests/{request_id}",
        summary="One request held for signatures, with its signatures",
        response_model=RequestOut,
        responses=problem_responses(401, 404, 422, 503),
        openapi_extra=read_extra,
    )
    async def one_request(request_id: RequestPath, _: Principal = reader) -> JSONResponse:
        _checked(request_id)
        return JSONResponse(request_document(await ledger.pending_request(request_id)))

    sign_responses = problem_responses(401, 403, 404, 409, 413, 422, 503)

    def service() -> SigningService:
        if signing is None:
            raise Problem(503, "Signing unavailable", "this service signs no requests "
                          "(no signing service)", headers={"Retry-After": "60"})  # fmt: skip
        return signing

    @router.post(
        "/requests/{request_id}/approve",
        summary="Sign a request (the signer re-authenticates); its last signature posts it",
        response_model=Signed,
        responses=sign_responses,
        openapi_extra=write_extra,
    )
    async def approve(
        request_id: RequestPath, body: ApproveIn, _: Principal = writer
    ) -> JSONResponse:
        _checked(request_id, user=body.user, meaning=body.meaning)
        outcome = await service().approve(
            request_id, body.user, body.password.get_secret_value(), body.meaning,
            source=Source.API,
        )  # fmt: skip
        return _signed(outcome)

    @router.post(
        "/requests/{request_id}/reject",
        summary="Reject a request (signed like an approval): nothing is posted",
        response_model=Signed,
        responses=sign_responses,
        openapi_extra=write_extra,
    )
    async def reject(
        request_id: RequestPath, body: RejectIn, _: Principal = writer
    ) -> JSONResponse:
        _checked(request_id, user=body.user, reason=body.reason)
        outcome = await service().reject(
            request_id, body.user, body.password.get_secret_value(), body.reason,
            source=Source.API,
        )  # fmt: skip
        return _signed(outcome)


def _checked(request_id: str, *, user: str | None = None, **texts: str) -> None:
    """The ledger's text rules, before the signing service looks anything up or audits a
    failed attempt under the name given (a 422 naming the field)."""
    try:
        check_identifier("request_id", request_id.removeprefix(REQUEST_PREFIX), max_length=200)
        if user is not None:
            check_identifier("user", user)
        for field, text in texts.items():
            check_free_text(field, text)
    except InvalidText as exc:
        raise Problem(422, "Invalid request", str(exc), field=exc.field) from None


def _signed(outcome: SignOutcome) -> JSONResponse:
    posted = outcome.posted.movement_id if outcome.posted is not None else None
    return JSONResponse({"request": request_document(outcome.request), "posted": posted})

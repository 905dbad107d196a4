"""The API's B2MML routes (SPEC section 8): material information and movements out, master
data and announced lots in. The documents are inventory_core.b2mml's, as the CLI's."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from http_api.auth import Principal
from http_api.problems import Problem, problem_responses
from inventory_core import Ledger
from inventory_core.b2mml import B2mmlError, SchemaValidator, parse_inbound
from inventory_core.b2mml.apply import (
    apply_inbound,
    export_material_information,
    export_movements,
)
from inventory_core.domain.model import MAX_CURSOR, Source

XML: Final = "application/xml"
ACCEPTED_TYPES: Final = frozenset({"application/xml", "text/xml"})
NEXT_CURSOR: Final = "X-Next-Cursor"
PAGE_MAX: Final = 1000
_DOCUMENT: Final = {XML: {"schema": {"type": "string", "format": "xml"}}}
_CURSOR_HEADER: Final = {
    NEXT_CURSOR: {
        "description": "The cursor to ask from next (`since`).",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def add_b2mml_routes(
    router: APIRouter,
    ledger: Ledger,
    *,
    reader: Any,
    engineer: Any,
    read_extra: dict[str, Any],
    engineer_extra: dict[str, Any],
    validator: SchemaValidator | None = None,
) -> None:
    """Add the /b2mml routes to `router` (`reader`/`engineer`: the auth dependencies)."""

    @router.get(
        "/b2mml/material-information",
        summary="B2MML ShowMaterialInformation: materials, lots, status, quantity, location",
        response_class=Response,
        responses={
            200: {"description": "The document.", "content": _DOCUMENT},
            **problem_responses(401, 503),
        },
        openapi_extra=read_extra,
    )
    async def material_information(_: Principal = reader) -> Response:
        return Response(await export_material_information(ledger), media_type=XML)

    @router.get(
        "/b2mml/movements",
        summary="B2MML ShowOperationsPerformance of the movements after a cursor",
        description=(
            "One OperationsResponse per movement, in commit order, never skipping one that "
            "committed late. `X-Next-Cursor` is where to ask from next; 204 when there is "
            "nothing new (B2MML has no empty performance)."
        ),
        response_class=Response,
        responses={
            200: {"description": "The document.", "content": _DOCUMENT, "headers": _CURSOR_HEADER},
            204: {"description": "No movement after `since`.", "headers": _CURSOR_HEADER},
            **problem_responses(401, 422, 503),
        },
        openapi_extra=read_extra,
    )
    async def movements(
        since: Annotated[int, Query(ge=0, le=MAX_CURSOR)] = 0,
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
        _: Principal = reader,
    ) -> Response:
        body, cursor = await export_movements(ledger, since, limit)
        headers = {NEXT_CURSOR: str(cursor)}
        if body is None:
            return Response(status_code=204, headers=headers)
        return Response(body, media_type=XML, headers=headers)

    @router.post(
        "/b2mml",
        summary="Apply a B2MML Sync/ProcessMaterialDefinition or Sync/ProcessMaterialLot",
        description=(
            "Master data, or lots announced by ERP (status, expiry), all or nothing and "
            "audited. Answered with AcknowledgeMaterialDefinition / AcknowledgeMaterialLot "
            "(a Process) or ConfirmBOD (a Sync); a refused document is a problem whose "
            "`field` is the path of the first error, and nothing is applied."
        ),
        response_class=Response,
        responses={
            200: {"description": "The answer document.", "content": _DOCUMENT},
            202: {
                "description": "The answer document: accepted, but (in part) held for "
                "electronic signatures (ResponseCriteria/ChangeStatus code Held names the "
                "requests); nothing of that is applied until it is signed.",
                "content": _DOCUMENT,
            },
            **problem_responses(401, 403, 409, 413, 415, 422, 503),
        },
        openapi_extra={
            **engineer_extra,
            "requestBody": {"required": True, "content": _DOCUMENT},
        },
    )
    async def b2mml_in(request: Request, principal: Principal = engineer) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ACCEPTED_TYPES:
            raise Problem(
                415,
                "Unsupported media type",
                f"send the B2MML document as {XML} (got {media_type or 'no Content-Type'})",
                field="Content-Type",
            )
        body = await request.body()
        try:
            if validator is not None:
                validator.validate(body)
            inbound = parse_inbound(body)
            applied = await apply_inbound(ledger, inbound, user=principal.name, source=Source.API)
        except B2mmlError as exc:
            raise Problem(
                422, "Refused B2MML document", f"{exc.message}; nothing applied", field=exc.path
            ) from None
        return Response(applied.answer, media_type=XML, status_code=202 if applied.held else 200)

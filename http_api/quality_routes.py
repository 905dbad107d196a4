"""The API's lot quality and period close routes (SPEC section 8, issue 16).

`PUT /lots/{lot}/quality` (engineer) sets a lot's properties, retest and expiry dates
and certificate through `Ledger.set_lot_quality` (all or nothing, audited old -> new)
and answers the lot; bad input is a 422 problem naming the field (`properties.1.value`
for a density that is not a positive number in a density unit), an unknown lot a 404,
and nothing changes. `POST /periods/close` (engineer, `Idempotency-Key`) asks to close
a period of the books: its balance report is held for a signature (202 with the request,
signed through POST /requests/{id}/approve, as `reviewed`); a close that overlaps a
closed period is a 409. `GET /periods` (viewer) lists the closed periods.

The lot document (`lot_out`) is the one every lot route answers: the audited lot
document with its quality data always present, and `retest_due` from today's UTC date."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse

from http_api.auth import Principal
from http_api.problems import Problem, problem_responses
from http_api.schemas import (
    LotOut,
    LotQualityIn,
    PeriodCloseIn,
    PeriodsOut,
    RequestHeld,
)
from inventory_core import Ledger
from inventory_core.clock import Clock, format_timestamp, parse_timestamp, today
from inventory_core.domain.errors import UnknownLot, ValidationError
from inventory_core.domain.lot_quality import (
    LotQualityRequest,
    check_properties,
)
from inventory_core.domain.model import (
    Lot,
    LotId,
    LotProperty,
    Source,
)
from inventory_core.domain.posting import lot_document
from inventory_core.domain.signatures import request_document
from inventory_core.domain.text import InvalidText

__all__ = ["add_quality_routes", "lot_out"]

LotPath = Annotated[str, Path(description="lot id", examples=["GLY-0100"])]
# The field of a property an InvalidText of `check_properties` names.
_PROPERTY_FIELDS: Final = {"property": "name", "property value": "value", "property unit": "unit"}


def lot_out(lot: Lot, clock: Clock) -> dict[str, Any]:
    """A lot as the API shows it (http_api.schemas.LotOut)."""
    return {
        **lot_document(lot),
        **lot.quality.document(),
        "retest_due": lot.retest_due(today(clock)),
    }


def add_quality_routes(
    router: APIRouter,
    ledger: Ledger,
    clock: Clock,
    *,
    reader: Any,
    engineer: Any,
    read_extra: dict[str, Any],
    engineer_extra: dict[str, Any],
) -> None:
    """Add PUT /lots/{lot}/quality, POST /periods/close and GET /periods to `router`
    (`reader`/`engineer`: the auth dependencies)."""

    @router.put(
        "/lots/{lot}/quality",
        summary="Set a lot's quality data (engineer): 200 the lot, 202 held for signatures",
        description='Where a `[[signatures]] action = "master-data"` policy holds the '
        "change, nothing changes until it is signed (POST /requests/{id}/approve): 202 with "
        "the request.",
        response_model=LotOut,
        responses={
            202: {"model": RequestHeld, "description": "Held for electronic signatures"},
            **problem_responses(401, 403, 404, 413, 422, 503),
        },
        openapi_extra=engineer_extra,
    )
    async def lot_quality(
        lot: LotPath, body: LotQualityIn, principal: Principal = engineer
    ) -> JSONResponse:
        request = _quality_request(LotId(lot), body, principal.name)
        try:
            result = await ledger.set_lot_quality(request)
        except UnknownLot:
            raise Problem(404, "Not found", f"lot {lot} does not exist", field="lot") from None
        if result.lot is None:  # held: nothing changed yet
            pending = await ledger.pending_request(result.movement_id)
            document = {"replayed": result.replayed, "request": request_document(pending)}
            return JSONResponse(document, status_code=202)
        return JSONResponse(lot_out(result.lot, clock))

    @router.post(
        "/periods/close",
        status_code=202,
        summary="Ask to close a period of the books (engineer): 202, held for a signature",
        response_model=RequestHeld,
        responses={
            200: {"model": RequestHeld, "description": "The replay of a key used before"},
            **problem_responses(401, 403, 409, 413, 422, 503),
        },
        openapi_extra=engineer_extra,
    )
    async def close_period(
        body: PeriodCloseIn,
        principal: Principal = engineer,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> JSONResponse:
        start, end = _timestamp("from", body.start), _timestamp("to", body.end)
        if not body.reason.strip():
            raise Problem(422, "Invalid request", "a period close needs a reason", field="reason")
        result = await ledger.request_period_close(
            start, end, user=principal.name, reason=body.reason,
            idempotency_key=idempotency_key or None, source=Source.API,
        )  # fmt: skip
        pending = await ledger.pending_request(result.movement_id)
        document = {"replayed": result.replayed, "request": request_document(pending)}
        return JSONResponse(document, status_code=200 if result.replayed else 202)

    @router.get(
        "/periods",
        summary="The closed periods of the books, the oldest first",
        response_model=PeriodsOut,
        responses=problem_responses(401, 503),
        openapi_extra=read_extra,
    )
    async def periods(_: Principal = reader) -> JSONResponse:
        closed = await ledger.closed_periods()
        return JSONResponse({"periods": [dataclasses.asdict(p) for p in closed]})


def _quality_request(lot: LotId, body: LotQualityIn, user: str) -> LotQualityRequest:
    """The ledger's request, checked here first so that a refusal names the body's
    field (the ledger checks it again)."""
    properties = None
    if body.properties is not None:
        properties = tuple(LotProperty(p.name, p.value, p.unit) for p in body.properties)
        for i, prop in enumerate(properties):
            try:
                check_properties((prop,))
            except InvalidText as exc:
                field = f"properties.{i}.{_PROPERTY_FIELDS.get(exc.field, 'name')}"
                raise Problem(422, "Invalid request", str(exc), field=field) from None
            except ValidationError as exc:  # no value, a density that is none (or > 100 kg/L)
                raise Problem(422, "Invalid request", str(exc),
                              field=f"properties.{i}.value") from None  # fmt: skip
        try:
            check_properties(properties)  # names unique, not too many
        except ValidationError as exc:
            raise Problem(422, "Invalid request", str(exc), field="properties") from None
    if not body.reason.strip():
        detail = "a change of a lot's quality data needs a reason"
        raise Problem(422, "Invalid request", detail, field="reason")
    request = LotQualityRequest(
        lot, body.reason, user, Source.API, properties=properties, retest=body.retest,
        expiry=body.expiry, certificate=body.certificate,
    )  # fmt: skip
    try:
        request.check()
    except InvalidText as exc:
        raise Problem(422, "Invalid request", str(exc), field=exc.field) from None
    except ValidationError as exc:  # nothing to set
        raise Problem(422, "Invalid request", str(exc), field="body") from None
    return request


def _timestamp(field: str, value: str) -> str:
    """A period's bound as the ledger stores times (UTC, fixed width), else a 422."""
    try:
        return format_timestamp(parse_timestamp(value))
    except (ValueError, OverflowError):
        detail = f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)"
        raise Problem(422, "Invalid request", detail, field=field) from None

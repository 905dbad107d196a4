"""The API's routes (SPEC section 8): storage units, balances, lots, movements with
cursor pagination and as a stream, advices, reconciliation, audit records, postings
of every kind with `Idempotency-Key` (a posting a `[[signatures]]` policy holds answers
202 with its request), the requests held for signatures (http_api.signing_routes), and
lot quality data and period close (http_api.quality_routes).
Reads need the viewer role (or anonymous reading where allowed), postings the role the
OPC UA method of the same kind needs. A posting by an API token that FastAPI would accept
is answered by http_api.posting_lane, in front of FastAPI, with the route's own steps.

Every route documents its answers (models of http_api.schemas, the problems it can
answer, its security): tests/integration/test_http_api_schema.py runs schemathesis over
the OpenAPI document against the app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from http_api.auth import (
    ANONYMOUS,
    SECURITY_SCHEMES,
    ApiAuth,
    LoginsBusy,
    Principal,
    Unauthenticated,
    security,
)
from http_api.b2mml_routes import add_b2mml_routes
from http_api.docs import DOCS_HTML
from http_api.posting_lane import PostingLane
from http_api.postings import held_request, may_post, post_movement
from http_api.problems import (
    PROBLEM_SCHEMA,
    Problem,
    install,
    problem_response,
    problem_responses,
)
from http_api.quality_routes import add_quality_routes, lot_out
from http_api.schemas import (
    AdvicePosted,
    AdvicesOut,
    AuditOut,
    BalanceReportOut,
    BalancesOut,
    GenealogyOut,
    LotDetailOut,
    LotsOut,
    LotStatusIn,
    MovementIn,
    MovementPosted,
    MovementsOut,
    Posted,
    ProblemOut,
    ReconciliationOut,
    RequestHeld,
    ReversalIn,
    UnitOut,
    UnitsOut,
)
from http_api.signing_routes import add_signing_routes
from inventory_core import Ledger
from inventory_core.b2mml import SchemaValidator
from inventory_core.clock import Clock, SystemClock, format_timestamp, parse_timestamp
from inventory_core.domain.advices import advice_document
from inventory_core.domain.audit import (
    AUDIT_OBJECT_TYPES,
    WITH_MOVEMENTS,
    AuditRecord,
    audit_document,
    audited_object,
)
from inventory_core.domain.model import (
    MAX_CURSOR,
    Balance,
    GenealogyLink,
    LotId,
    LotStatus,
    LotStatusRequest,
    Movement,
    MovementId,
    ReversalRequest,
    Source,
)
from inventory_core.domain.posting import movement_document
from inventory_core.domain.signatures import REQUEST_PREFIX
from inventory_core.domain.units import format_decimal
from inventory_core.domain.users import Role
from inventory_core.plant_view import PlantView, UnitState
from inventory_core.signing import SigningService

__all__ = ["create_app"]

API: Final = "/api/v1"
PAGE_MAX: Final = 1000
STREAM_POLL_S: Final = 1.0  # how often a stream looks for other writers' movements
STREAM_KEEPALIVE_S: Final = 15.0  # a comment line keeps proxies from closing an idle stream
Observer = Callable[[str, str, int, float], None]  # route, method, status, seconds
_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="invops"'}
UnitPath = Annotated[str, Path(description="storage unit id", examples=["WH-401"])]
LotPath = Annotated[str, Path(description="lot id", examples=["GLY-0100"])]
# `object=TYPE:ID` of GET /audit: TYPE as the caller names it -> as the audit trail does.
AUDITED_OBJECTS: Final = AUDIT_OBJECT_TYPES
AUDIT_DESCRIPTION: Final = (
    "The audit records of one object, `object=TYPE:ID` (TYPE one of "
    + ", ".join(f"`{name}`" for name in AUDITED_OBJECTS)
    + "; e.g. `lot:L1`, `unit:TK-101`, `movement:<id>`, `advice:<id>`), the oldest first. "
    "A lot's or storage unit's records include those of the movements booked to it "
    "(receipts, draws, status changes, reversals); a movement's record comes with the "
    "movement its `new` digest covers. `old` and `new` are JSON where the trail stores "
    "JSON (else text, or null where empty). `since` is a cursor: the records after it; "
    "page with `since=<next_cursor>`. `user` keeps one user's records."
)


def create_app(
    ledger: Ledger,
    auth: ApiAuth,
    *,
    view: PlantView | None = None,
    version: str = "",
    max_body_bytes: int = 64 * 1024,
    observe: Observer | None = None,
    b2mml_validator: SchemaValidator | None = None,
    signing: SigningService | None = None,
    clock: Clock | None = None,
) -> ASGIApp:
    """The ASGI app: FastAPI routes under /api/v1, OpenAPI 3.1 at /api/v1/openapi.json,
    docs at /api/docs (served from here: no CDN), bodies capped at `max_body_bytes`;
    `observe` is told each request's route template, method, status and duration;
    inbound B2MML is validated against `b2mml_validator`'s XSDs where given; `clock`
    (the system's by default) tells a lot's `retest_due`."""
    clock = clock or SystemClock()
    app = FastAPI(
        title="invops Level-4 API",
        version=version or "0",
        description="Inventory operations (ISA-95 Level 3) for ERP, WMS and MES.",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/api/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)

    def caller(required: Role) -> Callable[..., Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            # The header is read here, not declared as a parameter: the OpenAPI document
            # lists the credentials as its security schemes instead.
            authorization = request.headers.get("authorization")
            route = request.url.path[:200]
            client = request.client.host if request.client else ""
            try:
                principal = await auth.principal(authorization, client)
            except LoginsBusy as exc:
                raise Problem(
                    503, "Service unavailable", str(exc), headers={"Retry-After": "1"}
                ) from None
            except Unauthenticated as exc:
                await auth.denied(ANONYMOUS, route, str(exc), 401)
                raise Problem(401, "Unauthorized", str(exc), headers=_CHALLENGE) from None
            if principal is None:
                if required is Role.VIEWER and auth.anonymous_read:
                    return Principal(ANONYMOUS, Role.VIEWER, "anonymous")
                await auth.denied(ANONYMOUS, route, "no credentials", 401)
                detail = "credentials required (Bearer or Basic)"
                raise Problem(401, "Unauthorized", detail, headers=_CHALLENGE)
            if not principal.role.grants(required):
                reason = f"role {principal.role} lacks {required}"
                await auth.denied(principal.name, route, reason, 403)
                raise Problem(403, "Forbidden", reason)
            return principal

        return dependency

    def needs(role: Role) -> dict[str, Any]:
        """The OpenAPI extras of an operation that needs `role`."""
        return {
            "security": security(role, anonymous_read=auth.anonymous_read),
            "x-invops-role": str(role),
        }

    reader = Depends(caller(Role.VIEWER))
    writer = Depends(caller(Role.OPERATOR))
    engineer = Depends(caller(Role.ENGINEER))
    tail = _Tail(ledger)
    router = APIRouter(prefix=API, dependencies=[Depends(_no_nul)])
    read = needs(Role.VIEWER)
    read_problems = problem_responses(401, 503)
    query_problems = problem_responses(401, 422, 503)
    found_problems = problem_responses(401, 404, 503)
    write_problems = problem_responses(401, 403, 409, 413, 422, 503)

    @router.get(
        "/units",
        summary="Storage units, live: measured, book, discrepancy, lots",
        response_model=UnitsOut,
        responses=read_problems,
        openapi_extra=read,
    )
    async def units(_: Principal = reader) -> JSONResponse:
        return JSONResponse({"units": await _units(ledger, view)})

    @router.get(
        "/units/{unit}",
        summary="One storage unit, live",
        response_model=UnitOut,
        responses=found_problems,
        openapi_extra=read,
    )
    async def unit(unit: UnitPath, _: Principal = reader) -> JSONResponse:
        found = [u for u in await _units(ledger, view, unit) if u["unit"] == unit]
        if not found:
            raise Problem(404, "Not found", f"storage unit {unit} is not defined", field="unit")
        return JSONResponse(found[0])

    @router.get(
        "/balances",
        summary="Book balances",
        response_model=BalancesOut,
        responses=read_problems,
        openapi_extra=read,
    )
    async def balances(
        unit: str | None = None, lot: str | None = None, material: str | None = None,
        _: Principal = reader,
    ) -> JSONResponse:  # fmt: skip
        found = await ledger.balances(unit, lot, material)
        return JSONResponse({"balances": [_balance(b) for b in found]})

    @router.get(
        "/lots", summary="Lots", response_model=LotsOut, responses=read_problems, openapi_extra=read
    )
    async def lots(
        status: str | None = None, material: str | None = None, _: Principal = reader
    ) -> JSONResponse:
        found = [
            lot
            for lot in await ledger.lots()
            if (status is None or lot.status == status)
            and (material is None or lot.material == material)
        ]
        return JSONResponse({"lots": [lot_out(lot, clock) for lot in found]})

    @router.get(
        "/lots/{lot}",
        summary="One lot: status, quantity per unit, parents, children",
        response_model=LotDetailOut,
        responses=found_problems,
        openapi_extra=read,
    )
    async def lot(lot: LotPath, _: Principal = reader) -> JSONResponse:
        found = await ledger.lots(lot)
        if not found:
            raise Problem(404, "Not found", f"lot {lot} does not exist", field="lot")
        parents = {link.parent for link in await ledger.trace(lot, forward=False)
                   if link.child == lot}  # fmt: skip
        children = {link.child for link in await ledger.trace(lot, forward=True)
                    if link.parent == lot}  # fmt: skip
        held = [b for b in await ledger.balances(lot=lot) if b.quantity]
        return JSONResponse(
            {
                **lot_out(found[0], clock),
                "units": [_held(b) for b in held],
                "parents": sorted(parents),
                "children": sorted(children),
            }
        )

    @router.get(
        "/movements",
        summary="Movements after a cursor (never skips a late commit)",
        response_model=MovementsOut,
        responses=query_problems,
        openapi_extra=read,
    )
    async def movements(
        since: Annotated[int, Query(ge=0, le=MAX_CURSOR)] = 0,
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
        unit: str | None = None,
        lot: str | None = None,
        _: Principal = reader,
    ) -> JSONResponse:
        page = await ledger.export(after_seq=since, limit=limit)
        shown = [
            m for m in page
            if (unit is None or unit in (m.from_unit, m.to_unit))
            and (lot is None or m.lot == lot)
        ]  # fmt: skip
        return JSONResponse(
            {
                "movements": [{"cursor": m.seq, **movement_document(m)} for m in shown],
                "next_cursor": page[-1].seq if page else since,
            }
        )

    @router.get(
        "/movements/stream",
        summary="Movements as Server-Sent Events, resumable",
        response_class=_EventStream,
        responses={
            200: {
                "description": "`retry:`, then one `movement` event per movement (`id:` its "
                "cursor, `data:` the movement as in GET /movements); the stream lasts until "
                "the client disconnects",
                "content": {_EventStream.media_type: {"schema": {"type": "string"}}},
            },
            **query_problems,
        },
        openapi_extra=read,
    )
    async def stream(
        request: Request,
        since: Annotated[int, Query(ge=0, le=MAX_CURSOR)] = 0,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
        _: Principal = reader,
    ) -> StreamingResponse:
        """One `movement` event per movement (`id:` its cursor) from after `since`, or
        after the `Last-Event-ID` a reconnecting client sends; never skips one."""
        cursor = since
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise Problem(422, "Invalid request", "Last-Event-ID must be a cursor",
                              field="Last-Event-ID")  # fmt: skip
            cursor = int(last_event_id)
        events = _events(ledger, tail, request, cursor)
        return _EventStream(events, headers={"Cache-Control": "no-store"})

    @router.get(
        "/advices",
        summary="Advices of measured units, their matches and variances",
        response_model=AdvicesOut,
        responses=read_problems,
        openapi_extra=read,
    )
    async def advices(
        state: str | None = None, unit: str | None = None, _: Principal = reader
    ) -> JSONResponse:
        found = await ledger.advices(state=state, unit=unit)
        return JSONResponse({"advices": [advice_document(a) for a in found]})

    @router.get(
        "/balance-report",
        summary="Period mass balance per unit and material (opening + movements = closing)",
        response_model=BalanceReportOut,
        responses=query_problems,
        openapi_extra=read,
    )
    async def balance_report(
        start: Annotated[str, Query(alias="from", max_length=40, description="ISO 8601, included",
                                    examples=["2026-12-01T00:00:00Z"])],
        end: Annotated[str, Query(alias="to", max_length=40, description="ISO 8601, excluded",
                                  examples=["2026-12-02T00:00:00Z"])],
        unit: Annotated[str | None, Query(max_length=128)] = None,
        _: Principal = reader,
    ) -> JSONResponse:  # fmt: skip
        period: list[str] = []
        for field, value in (("from", start), ("to", end)):
            try:
                period.append(format_timestamp(parse_timestamp(value)))
            except ValueError:
                detail = f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)"
                raise Problem(422, "Invalid request", detail, field=field) from None
        lines = await ledger.mass_balance_report(period[0], period[1], unit)
        return JSONResponse(
            {"from": period[0], "to": period[1], "unit": unit,
             "lines": [line.document() for line in lines]}
        )  # fmt: skip

    @router.get(
        "/reconciliation",
        summary="Book against measured, per storage unit",
        response_model=ReconciliationOut,
        responses=read_problems,
        openapi_extra=read,
    )
    async def reconciliation(_: Principal = reader) -> JSONResponse:
        lines = await ledger.reconciliation()
        return JSONResponse(
            {
                "units": [
                    {
                        "unit": line.unit,
                        "material": line.material,
                        "uom": line.uom,
                        "book": format_decimal(line.book),
                        "measured": _decimal(line.measured),
                        "measured_at": line.measured_at,
                        "discrepancy": _decimal(line.discrepancy),
                    }
                    for line in lines
                ]
            }
        )

    @router.get(
        "/audit",
        summary="The audit records of one object, the oldest first",
        description=AUDIT_DESCRIPTION,
        response_model=AuditOut,
        responses=query_problems,
        openapi_extra=read,
    )
    async def audit(
        object_: Annotated[str, Query(alias="object", min_length=3, max_length=240,
                                      description="TYPE:ID", examples=["lot:GLY-0100"])],
        since: Annotated[
            int, Query(ge=0, le=MAX_CURSOR, description="a cursor: records after it")
        ] = 0,
        user: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
        _: Principal = reader,
    ) -> JSONResponse:  # fmt: skip
        try:
            object_type, object_id = audited_object(object_)
        except ValueError:
            detail = f"object must be TYPE:ID, TYPE one of {', '.join(AUDITED_OBJECTS)}"
            raise Problem(422, "Invalid request", detail, field="object") from None
        records = await ledger.audit_records(
            object_type, object_id, since, user, limit,
            with_movements=object_type in WITH_MOVEMENTS,
        )  # fmt: skip
        ids = {r.object_id for _, r in records if r.object_type == "movement"}
        booked: dict[str, Movement] = {m.id: m for m in await ledger.movements(ids)}
        return JSONResponse(
            {
                "object": object_,
                "records": [_audit_record(c, r, booked.get(r.object_id)) for c, r in records],
                "next_cursor": records[-1][0] if records else since,
            }
        )

    @router.post(
        "/movements",
        status_code=201,
        summary="Post a movement: 201 posted, 202 advice or held for signatures, 200 replay, "
        "409 key reused",
        response_model=MovementPosted,
        responses={
            200: {
                "model": MovementPosted | AdvicePosted | RequestHeld,
                "description": "The replay of a key used before with the same body",
            },
            202: {
                "model": AdvicePosted | RequestHeld,
                "description": "Into or out of a measured unit: an advice its gauge books; "
                "or held for electronic signatures (`[[signatures]]`): nothing is posted "
                "until it is signed",
            },
            **write_problems,
        },
        openapi_extra=needs(Role.OPERATOR),
    )
    async def post(
        body: MovementIn,
        principal: Principal = writer,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> JSONResponse:
        if not may_post(principal, body):
            reason = f"role {principal.role} lacks engineer for {body.kind}"
            await auth.denied(principal.name, f"{API}/movements", reason, 403)
            raise Problem(403, "Forbidden", reason)
        return await post_movement(ledger, body, principal, idempotency_key)

    replay: dict[int | str, dict[str, Any]] = {
        200: {"model": Posted | RequestHeld, "description": "The replay of a key used before"},
        202: {
            "model": RequestHeld,
            "description": "Held for electronic signatures (`[[signatures]]`): nothing is "
            "posted until it is signed",
        },
    }

    @router.post(
        "/movements/{movement_id}/reversal",
        status_code=201,
        summary="Reverse a movement (engineer): 201 posted, 202 held for signatures",
        response_model=Posted,
        responses={**replay, **write_problems},
        openapi_extra=needs(Role.ENGINEER),
    )
    async def reverse(
        movement_id: str,
        body: ReversalIn,
        principal: Principal = engineer,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> JSONResponse:
        request = ReversalRequest(MovementId(movement_id), body.reason, principal.name,
                                  Source.API, idempotency_key or None)  # fmt: skip
        result = await ledger.reverse(request)
        return await _posted(ledger, result.movement_id, replayed=result.replayed)

    @router.post(
        "/lots/{lot}/status",
        status_code=201,
        summary="Change a lot's status (engineer): 201 posted, 202 held for signatures",
        response_model=Posted,
        responses={**replay, **write_problems},
        openapi_extra=needs(Role.ENGINEER),
    )
    async def lot_status(
        lot: LotPath,
        body: LotStatusIn,
        principal: Principal = engineer,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> JSONResponse:
        request = LotStatusRequest(LotId(lot), LotStatus(body.status), body.reason,
                                   principal.name, Source.API, idempotency_key or None)  # fmt: skip
        result = await ledger.set_lot_status(request)
        return await _posted(ledger, result.movement_id, replayed=result.replayed)

    @router.get(
        "/lots/{lot}/genealogy",
        summary="Where a lot went, or came from, with quantities",
        response_model=GenealogyOut,
        responses=problem_responses(401, 404, 422, 503),
        openapi_extra=read,
    )
    async def genealogy(
        lot: LotPath,
        direction: Literal["forward", "backward"] = "backward",
        _: Principal = reader,
    ) -> JSONResponse:
        if not await ledger.lots(lot):
            raise Problem(404, "Not found", f"lot {lot} does not exist", field="lot")
        links = await ledger.trace(lot, forward=direction == "forward")
        checks = await ledger.mass_balance(links)
        return JSONResponse(
            {
                "lot": lot,
                "direction": direction,
                "links": [_link(k) for k in links],
                "mass_balance": [
                    {
                        "movement_id": c.movement_id,
                        "lot": c.lot,
                        "inputs": _decimal(c.inputs),
                        "output": format_decimal(c.output),
                        "conserved": c.conserved,
                    }
                    for c in checks
                ],
            }
        )

    add_b2mml_routes(
        router, ledger, reader=reader, engineer=engineer, read_extra=read,
        engineer_extra=needs(Role.ENGINEER), validator=b2mml_validator,
    )  # fmt: skip
    add_quality_routes(
        router, ledger, clock, reader=reader, engineer=engineer, read_extra=read,
        engineer_extra=needs(Role.ENGINEER),
    )  # fmt: skip
    add_signing_routes(
        router, ledger, signing, reader=reader, writer=writer, read_extra=read,
        write_extra=needs(Role.OPERATOR),
    )  # fmt: skip
    app.include_router(router)
    install(app, router.routes)
    _document_problems_and_security(app)
    posting = next(
        r for r in router.routes
        if isinstance(r, APIRoute) and r.path == f"{API}/movements" and "POST" in (r.methods or ())
    )  # fmt: skip
    lane = PostingLane(app, ledger, auth, posting.path, posting)
    observed: ASGIApp = lane if observe is None else _Observed(lane, observe)
    return _BodyLimit(observed, max_body_bytes)


def _document_problems_and_security(app: FastAPI) -> None:
    """Complete the OpenAPI document FastAPI builds: the problem schema the error
    responses refer to, the security schemes, and every 422 a problem (FastAPI adds its
    own validation error to each operation with parameters)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas[PROBLEM_SCHEMA] = ProblemOut.model_json_schema()
        invalid = problem_responses(422)[422]
        for operation in (op for item in document["paths"].values() for op in item.values()):
            if "422" in operation["responses"]:  # FastAPI's own: a validation error is a problem
                operation["responses"]["422"] = invalid
        components["securitySchemes"] = SECURITY_SCHEMES
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


class _EventStream(StreamingResponse):
    media_type = "text/event-stream"


async def _no_nul(request: Request) -> None:
    """Refuse a NUL in a path or query parameter (422): no id holds one (the ledger's text
    rules refuse it), and PostgreSQL cannot even compare text with one (it would fail
    the read, a 503 that retrying never mends)."""
    for kind, values in (("path", request.path_params), ("query", request.query_params)):
        for name, value in values.items():
            if isinstance(value, str) and "\x00" in value:
                raise Problem(422, "Invalid request", f"{name}: NUL in a {kind} parameter",
                              field=name)  # fmt: skip


async def _posted(ledger: Ledger, movement_id: str, *, replayed: bool) -> JSONResponse:
    if movement_id.startswith(REQUEST_PREFIX):
        return await held_request(ledger, movement_id, replayed=replayed)
    movement = await ledger.movement(movement_id)
    document = {"replayed": replayed, "movement": _movement(movement)}
    return JSONResponse(document, status_code=200 if replayed else 201)


def _movement(m: Movement) -> dict[str, Any]:
    return {"cursor": m.seq, **movement_document(m)}


def _audit_record(cursor: int, r: AuditRecord, movement: Movement | None) -> dict[str, Any]:
    return {
        **audit_document(cursor, r),
        "movement": None if movement is None else movement_document(movement),
    }


def _link(k: GenealogyLink) -> dict[str, Any]:
    return {"parent": k.parent, "child": k.child, "movement_id": k.movement_id,
            "depth": k.depth, "quantity": _decimal(k.quantity)}  # fmt: skip


class _Tail:
    """Wakes the streams when this process posts a movement (one ledger subscription
    for all of them); other writers' movements are found by polling."""

    def __init__(self, ledger: Ledger) -> None:
        self._waiting: set[asyncio.Event] = set()
        ledger.subscribe(self._posted)

    def _posted(self, _: Movement) -> None:
        for event in self._waiting:
            event.set()

    async def wait(self, seconds: float) -> None:
        """Until this process posts a movement, or `seconds` passed."""
        event = asyncio.Event()
        self._waiting.add(event)
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._waiting.discard(event)


async def _events(ledger: Ledger, tail: _Tail, request: Request, cursor: int) -> AsyncIterator[str]:
    """The event stream: every settled movement after `cursor`, in commit order (the
    export rule: a movement committed late is not skipped), then new ones as they come."""
    quiet_since = time.monotonic()
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        page = await ledger.export(after_seq=cursor, limit=PAGE_MAX)
        for m in page:
            data = json.dumps(_movement(m), separators=(",", ":"))
            yield f"id: {m.seq}\nevent: movement\ndata: {data}\n\n"
            cursor = m.seq
        if page:
            quiet_since = time.monotonic()
            continue
        if time.monotonic() - quiet_since >= STREAM_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await tail.wait(STREAM_POLL_S)


class _Observed:
    """Tells `observe` each HTTP request's route template (bounded label values),
    method, status and duration."""

    def __init__(self, app: ASGIApp, observe: Observer) -> None:
        self.app, self.observe = app, observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.observe(path, str(scope.get("method", "")), status,
                         time.perf_counter() - started)  # fmt: skip


async def _units(
    ledger: Ledger, view: PlantView | None, only: str | None = None
) -> list[dict[str, Any]]:
    masters = [u for u in await ledger.storage_units() if only is None or u.id == only]
    held: dict[str, list[Balance]] = {}
    for b in await ledger.balances(unit=only):
        if b.quantity:
            held.setdefault(b.unit, []).append(b)
    documents = []
    for master in masters:
        state = view.state(master.id) if view is not None else None
        lots = held.get(master.id, [])
        book = sum((b.quantity for b in lots), Decimal(0))
        documents.append(
            {
                "unit": master.id,
                "site": master.site,
                "area": master.area,
                "kind": str(master.kind),
                "material": master.material,
                "booking": str(master.booking),
                "lot_handling": str(master.lot_handling),
                "capacity": format_decimal(master.capacity),
                "capacity_uom": master.capacity_uom,
                "book": format_decimal(book),
                "lots": [_held(b) for b in lots],
                "live": _live(state),
            }
        )
    return documents


def _live(state: UnitState | None) -> dict[str, Any] | None:
    """What the plant view shows now (None where the unit has no PLC value)."""
    if state is None:
        return None
    measured = state.measured
    return {
        "quality": measured.quality.name,
        "source_time": measured.source_time.isoformat() if measured.source_time else None,
        "level": measured.level,
        "volume_l": measured.volume_l,
        "mass_kg": measured.mass_kg,
        "measured": measured.quantity,
        "fill_percent": measured.fill_percent,
        "book": state.book.quantity,
        "discrepancy": state.discrepancy,
        "current_lot": state.book.lot_id,
        "alarm": None if state.alarm is None else str(state.alarm),
    }


def _held(b: Balance) -> dict[str, Any]:
    return {"unit": b.unit, "lot": b.lot, "quantity": format_decimal(b.quantity), "uom": b.uom}


def _balance(b: Balance) -> dict[str, Any]:
    return {"unit": b.unit, "lot": b.lot, "material": b.material,
            "quantity": format_decimal(b.quantity), "uom": b.uom}  # fmt: skip


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


class _BodyLimit:
    """Refuse a request body over `limit` bytes with 413 before the app reads it: by its
    Content-Length at once, or as a chunked body grows past it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = Problem(
            413, "Content too large", f"request bodies are capped at {self.limit} bytes"
        )
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await problem_response(too_big)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise too_big
            return message

        try:
            await self.app(scope, limited, send)
        except Problem as problem:  # raised while the app read the body: nothing answered
            await problem_response(problem)(scope, receive, send)

"""`POST /api/v1/movements` once the caller may post: the steps the FastAPI route and
its fast lane (http_api.posting_lane) share, so both answer alike."""

from __future__ import annotations

from typing import Any, Final

from fastapi.responses import JSONResponse

from http_api.auth import Principal
from http_api.schemas import MovementIn, posting_request
from inventory_core import Ledger
from inventory_core.domain.advices import ADVICE_PREFIX, advice_document
from inventory_core.domain.model import MovementKind
from inventory_core.domain.posting import movement_document
from inventory_core.domain.signatures import REQUEST_PREFIX, request_document
from inventory_core.domain.users import Role

__all__ = ["held_request", "may_post", "post_movement"]

# Kinds an operator may post; the others need an engineer (as the OPC UA methods).
ENGINEER_KINDS: Final = frozenset({MovementKind.ADJUSTMENT})


def may_post(principal: Principal, body: MovementIn) -> bool:
    """Whether the caller's role posts this kind (an adjustment needs an engineer)."""
    kind = MovementKind(body.kind)
    return kind not in ENGINEER_KINDS or principal.role.grants(Role.ENGINEER)


async def post_movement(
    ledger: Ledger, body: MovementIn, principal: Principal, idempotency_key: str | None
) -> JSONResponse:
    """POST /movements once the caller may post it: 201 posted, 202 an advice or held
    for signatures, 200 the replay of a key (also what http_api.posting_lane answers)."""
    result = await ledger.post(posting_request(body, principal.name, idempotency_key))
    if result.movement_id.startswith(REQUEST_PREFIX):  # held: nothing posted
        return await held_request(ledger, result.movement_id, replayed=result.replayed)
    if result.movement_id.startswith(ADVICE_PREFIX):  # also the replay of one
        advice = await ledger.advice(result.movement_id)
        status = 200 if result.replayed else 202
        return JSONResponse({"replayed": result.replayed, "advice": advice_document(advice)},
                            status_code=status)  # fmt: skip
    # The posting's own record (no second read): a movement's cursor comes with the
    # reads and the stream, which order movements by it.
    movement = result.movement or await ledger.movement(result.movement_id)
    document: dict[str, Any] = {
        "replayed": result.replayed,
        "movement": movement_document(movement),
        "parts": list(result.parts),
    }
    return JSONResponse(document, status_code=200 if result.replayed else 201)


async def held_request(ledger: Ledger, request_id: str, *, replayed: bool) -> JSONResponse:
    """A request a `[[signatures]]` policy holds (202; 200 for the replay of its key):
    nothing is posted until it is signed."""
    pending = await ledger.pending_request(request_id)
    document = {"replayed": replayed, "request": request_document(pending)}
    return JSONResponse(document, status_code=200 if replayed else 202)

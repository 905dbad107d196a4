"""Request bodies, as pydantic models (they are the OpenAPI schema), and their
translation into ledger requests. Lengths are capped here; the ledger's own text and
quantity rules still apply (and name the field when they refuse)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageUnitId,
)

__all__ = ["ConsumedIn", "LotStatusIn", "MovementIn", "ReversalIn", "posting_request"]

Identifier = Annotated[str, Field(min_length=1, max_length=128)]
Quantity = Annotated[Decimal, Field(allow_inf_nan=False, max_digits=30, decimal_places=6)]
PostableKind = Literal["receipt", "issue", "production", "transfer", "adjustment", "count", "scrap"]


class ConsumedIn(BaseModel):
    """One consumed lot of a production: its quantity (material base unit) and the unit
    it was drawn from (a manual unit books the draw in the same posting)."""

    model_config = ConfigDict(extra="forbid")

    lot: Identifier
    quantity: Quantity | None = None
    unit: Identifier | None = None


class MovementIn(BaseModel):
    """A posting, as `invops ledger post` takes it. `lot` may be left out of a draw
    (issue, transfer, scrap): the source unit's lot handling picks the lots."""

    model_config = ConfigDict(extra="forbid")

    kind: PostableKind
    material: Identifier
    lot: Identifier | None = None
    quantity: Quantity
    uom: Annotated[str, Field(min_length=1, max_length=8)]
    from_unit: Identifier | None = None
    to_unit: Identifier | None = None
    reason: Annotated[str, Field(max_length=500)] = ""
    ref: Annotated[str, Field(max_length=200)] = ""
    consumed: Annotated[list[ConsumedIn], Field(max_length=256)] = []


class ReversalIn(BaseModel):
    """Why the movement is reversed (kept in the audit trail)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class LotStatusIn(BaseModel):
    """A lot's new status and why."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["quarantine", "released", "hold", "rejected", "expired"]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


def posting_request(body: MovementIn, user: str, key: str | None) -> PostingRequest:
    quantities = [c.quantity for c in body.consumed]
    given = [q for q in quantities if q is not None]
    units = tuple(None if c.unit is None else StorageUnitId(c.unit) for c in body.consumed)
    return PostingRequest(
        kind=MovementKind(body.kind),
        material=MaterialId(body.material),
        lot=None if body.lot is None else LotId(body.lot),
        quantity=body.quantity,
        uom=body.uom,
        from_unit=None if body.from_unit is None else StorageUnitId(body.from_unit),
        to_unit=None if body.to_unit is None else StorageUnitId(body.to_unit),
        idempotency_key=key or None,
        reason=body.reason,
        user=user,
        source=Source.API,
        consumed_lots=tuple(LotId(c.lot) for c in body.consumed),
        consumed_quantities=tuple(given),  # the ledger refuses a partial list, naming it
        consumed_units=units if any(units) else (),
        ref=body.ref,
    )

"""Request bodies and answers, as pydantic models (they are the OpenAPI schema), and the
translation of bodies into ledger requests. Lengths are capped here; the ledger's own
text and quantity rules still apply (and name the field when they refuse).

The answer models document the JSON the routes build (the same documents as the CLI's
`--json` and the audit trail: `movement_document`, `lot_document`, `advice_document`);
the routes send those dicts as they are, and tests/integration/test_http_api_schema.py
checks every answer against these models (schemathesis). Quantities are exact decimals
as text (`"1500"`, `"0.25"`); live values of the plant view are numbers (display)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from inventory_core.domain.advices import AdviceDirection, AdviceState
from inventory_core.domain.lot_quality import MAX_PROPERTIES
from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotId,
    LotStatus,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnitId,
)
from inventory_core.domain.signatures import Decision, RequestState, SignatureAction
from inventory_core.domain.users import Role

__all__ = [
    "AdviceOut",
    "AdvicePosted",
    "AdvicesOut",
    "ApproveIn",
    "AuditOut",
    "AuditRecordOut",
    "BalancesOut",
    "ConsumedIn",
    "GenealogyOut",
    "LotDetailOut",
    "LotOut",
    "LotPropertyIn",
    "LotPropertyOut",
    "LotQualityIn",
    "LotStatusIn",
    "LotsOut",
    "MovementIn",
    "MovementPosted",
    "MovementsOut",
    "PeriodCloseIn",
    "PeriodOut",
    "PeriodsOut",
    "Posted",
    "ProblemOut",
    "ReconciliationOut",
    "RejectIn",
    "RequestHeld",
    "RequestOut",
    "RequestsOut",
    "ReversalIn",
    "SignatureOut",
    "Signed",
    "UnitOut",
    "UnitsOut",
    "posting_request",
]

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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "receipt", "material": "GLYCOL", "lot": "GLY-0100", "quantity": 500,
                 "uom": "kg", "to_unit": "WH-401", "ref": "DN-4711"},
                {"kind": "issue", "material": "GLYCOL", "quantity": 20, "uom": "kg",
                 "from_unit": "WH-401", "ref": "PO-4711"},
                {"kind": "receipt", "material": "GLYCOL", "lot": "GLY-0101", "quantity": 1000,
                 "uom": "kg", "to_unit": "TK-102", "ref": "DN-4712"},
            ]
        },
    )  # fmt: skip

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

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "typo"}]})

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class LotStatusIn(BaseModel):
    """A lot's new status and why."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"status": "hold", "reason": "lab check"}]},
    )

    status: Literal["quarantine", "released", "hold", "rejected", "expired"]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


def _date_text(value: object) -> object:
    """A date is JSON text (`YYYY-MM-DD`): no number read as a Unix time."""
    if not isinstance(value, str | date):
        raise ValueError("a date is text, YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_date_text), Field(examples=["2027-06-01"])]


class LotPropertyIn(BaseModel):
    """One property of a lot, as certified: a number or a text, and its unit."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[
        str, Field(min_length=1, max_length=128, description="`density` (kg/L, kg/m3, g/mL) "
                   "replaces the material's density in this lot's conversions",
                   examples=["density"])
    ]  # fmt: skip
    value: Annotated[str, Field(min_length=1, max_length=200, examples=["1.113"])]
    unit: Annotated[str, Field(max_length=16, examples=["kg/L"])] = ""


class LotQualityIn(BaseModel):
    """A lot's quality data: `properties` replace the lot's (left out: kept); `retest`,
    `expiry` and `certificate` are set where given (left out: kept). At least one of
    them, and a reason (audited, old -> new)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"properties": [{"name": "density", "value": "1.113", "unit": "kg/L"},
                                {"name": "assay", "value": "99.7", "unit": "%"}],
                 "retest": "2027-06-01", "certificate": "CoA-2026-0100",
                 "reason": "CoA received"},
            ]
        },
    )  # fmt: skip

    properties: Annotated[list[LotPropertyIn], Field(max_length=MAX_PROPERTIES)] | None = None
    retest: IsoDate | None = None
    expiry: IsoDate | None = None
    certificate: Annotated[
        str, Field(max_length=200, description="certificate of analysis reference")
    ] | None = None  # fmt: skip
    reason: Annotated[str, Field(min_length=1, max_length=500)]


PeriodTime = Annotated[
    str, Field(min_length=1, max_length=40, description="ISO 8601 (UTC where no zone)")
]


class PeriodCloseIn(BaseModel):
    """Close the period [from, to) of the books: its balance report is computed now and
    held for a signature (`reviewed`, unless a `period-close` policy says otherwise)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
                 "reason": "month end November"},
            ]
        },
    )  # fmt: skip

    start: PeriodTime = Field(alias="from", description="the period's start, included")
    end: PeriodTime = Field(alias="to", description="its end, excluded: it must have passed")
    reason: Annotated[str, Field(min_length=1, max_length=500)]


# The signer's password: sent once, in the body, checked and forgotten. `SecretStr`, so
# that it shows as `**********` in any repr, log or error; the schema marks it
# `format: password`, `writeOnly`, with no example.
Password = Annotated[
    SecretStr,
    Field(min_length=1, max_length=1024, description="the signer's password (re-authentication)"),
]
Signer = Annotated[
    str, Field(min_length=1, max_length=128, description="the signer, a `[[users]]` name")
]


class ApproveIn(BaseModel):
    """A signature: the signer re-authenticates (even inside an authenticated session)
    and gives the meaning the request's policy asks for."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    user: Signer
    password: Password
    meaning: Annotated[
        str,
        Field(min_length=1, max_length=128, description="what the signature means (the "
              "request's `meaning`: approved, reviewed, verified, ...)", examples=["approved"]),
    ]  # fmt: skip


class RejectIn(BaseModel):
    """A rejection, signed like an approval: nothing of the request is posted."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    user: Signer
    password: Password
    reason: Annotated[
        str,
        Field(min_length=1, max_length=500, description="why (audited)",
              examples=["wrong lot"]),
    ]  # fmt: skip


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


# -- answers ------------------------------------------------------------------------

Decimal_ = Annotated[
    str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="exact decimal as text")
]
Timestamp = Annotated[str, Field(description="UTC, ISO 8601")]


class _Out(BaseModel):
    """An answer document: every key documented, none other sent."""

    model_config = ConfigDict(extra="forbid")


class HeldOut(_Out):
    """A lot's book quantity in one storage unit."""

    unit: str
    lot: str
    quantity: Decimal_
    uom: str


class LiveOut(_Out):
    """What the plant view shows now (PLC values; display precision)."""

    quality: str = Field(description="GOOD, UNCERTAIN_LAST_USABLE, BAD_...")
    source_time: str | None
    level: float | None
    volume_l: float | None
    mass_kg: float | None
    measured: float | None
    fill_percent: float | None
    book: float | None
    discrepancy: float | None = Field(description="measured - book")
    current_lot: str
    alarm: str | None


class UnitOut(_Out):
    """A storage unit: master data, book (per lot) and, where PLC-backed, live values."""

    unit: str
    site: str
    area: str
    kind: StorageKind
    material: str | None
    booking: Booking
    lot_handling: LotHandling
    capacity: Decimal_
    capacity_uom: str
    book: Decimal_
    lots: list[HeldOut]
    live: LiveOut | None = Field(description="null where the unit has no PLC value")


class UnitsOut(_Out):
    units: list[UnitOut]


class BalanceOut(_Out):
    unit: str
    lot: str
    material: str
    quantity: Decimal_
    uom: str


class BalancesOut(_Out):
    balances: list[BalanceOut]


class LotPropertyOut(_Out):
    """One property of a lot (ISA-95 MaterialLotProperty)."""

    name: str
    value: str = Field(description="as certified: a number or a text")
    unit: str = Field(description="'' where the value has none")


class LotOut(_Out):
    """A lot (ISA-95 MaterialLot) with its quality data."""

    lot: str
    material: str
    status: LotStatus
    created_at: Timestamp
    expiry: str | None = Field(description="ISO date, or null")
    properties: list[LotPropertyOut]
    retest: str | None = Field(description="ISO date the lot must be retested by, or null")
    retest_due: bool = Field(description="past its retest date (today, UTC)")
    certificate: str = Field(description="certificate of analysis reference ('' where none)")


class LotsOut(_Out):
    lots: list[LotOut]


class LotDetailOut(LotOut):
    """A lot with its quantity per storage unit and its direct parents and children."""

    units: list[HeldOut]
    parents: list[str]
    children: list[str]


class PeriodOut(_Out):
    """A closed period of the books [start, end): nothing posts with a time inside it."""

    id: str = Field(description="`<start>/<end>`")
    start: Timestamp
    end: Timestamp
    report_digest: str = Field(description="SHA-256 of the balance report signed")
    request_id: str = Field(description="the request whose signature closed it")
    closed_at: Timestamp
    requested_by: str


class PeriodsOut(_Out):
    periods: list[PeriodOut]


class MovementOut(_Out):
    """A movement as stored (as `invops ledger history --json`)."""

    id: str
    kind: MovementKind
    material: str
    lot: str
    unit: str | None = Field(description="to_unit, else from_unit")
    from_unit: str | None
    to_unit: str | None
    quantity: Decimal_ = Field(description="in the material's base unit")
    uom: str
    posted_quantity: Decimal_ = Field(description="as the caller sent it")
    posted_uom: str
    timestamp: Timestamp
    user: str
    source: Source
    reason: str
    idempotency_key: str
    reverses: str | None
    writer: str
    details: dict[str, Any]


class CursoredMovementOut(MovementOut):
    cursor: int = Field(description="its place in commit order: pass as `since` to resume")


class MovementsOut(_Out):
    movements: list[CursoredMovementOut]
    next_cursor: int = Field(description="`since` of the next page")


class AdviceOut(_Out):
    """An advice: an expected change of a measured unit, what its gauge booked for it."""

    id: str
    unit: str
    direction: AdviceDirection
    kind: MovementKind
    material: str
    lot: str | None
    expected: Decimal_
    uom: str
    ref: str
    user: str
    source: Source
    reason: str
    created_at: Timestamp
    expires_at: Timestamp
    idempotency_key: str
    other_unit: str | None
    consumed_lots: list[str]
    consumed_quantities: list[Decimal_]
    consumed_units: list[str | None]
    partner_unit: str | None
    partner: str | None
    expiry: str | None
    state: AdviceState
    matched: Decimal_
    matches: int
    closed_at: Timestamp | None
    variance: Decimal_ | None = Field(description="matched - expected, once matched")
    variance_pct: Decimal_ | None


class AdvicesOut(_Out):
    advices: list[AdviceOut]


class ReconciliationLineOut(_Out):
    unit: str
    material: str | None
    uom: str
    book: Decimal_
    measured: Decimal_ | None
    measured_at: Timestamp | None
    discrepancy: Decimal_ | None = Field(description="measured - book")


class ReconciliationOut(_Out):
    units: list[ReconciliationLineOut]


class BalanceLineOut(_Out):
    """One unit and material over the period; the movement columns are signed sums
    (+ into the unit, - out of it): opening + columns = closing."""

    unit: str
    material: str
    uom: str
    opening: Decimal_
    receipts: Decimal_
    issues: Decimal_
    production_in: Decimal_
    production_out: Decimal_
    transfers_in: Decimal_
    transfers_out: Decimal_
    adjustments: Decimal_
    counts: Decimal_
    scrap: Decimal_
    reversals: Decimal_
    closing: Decimal_
    measured: Decimal_ | None = Field(description="the last good measurement at or before `to`")
    measured_at: Timestamp | None
    variance: Decimal_ | None = Field(description="measured - closing")
    variance_pct: Decimal_ | None = Field(description="variance in % of the closing book")
    metered_direction: Literal["out", "in"] | None = Field(
        default=None, description="where the unit's flow meter sits (None: no meter)"
    )
    metered: Decimal_ | None = Field(default=None, description="what the meter counted")
    gauged: Decimal_ | None = Field(
        default=None, description="what the level derived the same way (PLC movements)"
    )
    meter_vs_gauge: Decimal_ | None = Field(default=None, description="metered - gauged")
    meter_vs_gauge_pct: Decimal_ | None = Field(
        default=None, description="meter_vs_gauge in % of gauged"
    )


class BalanceReportOut(_Out):
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    unit: str | None
    lines: list[BalanceLineOut]


class MovementPosted(_Out):
    """A posted movement (201), or the replay of its key and body (200)."""

    replayed: bool
    movement: MovementOut
    parts: list[str] = Field(description="ids of the other movements of a split draw")


class AdvicePosted(_Out):
    """A posting into or out of a measured unit: the advice its gauge will book (202),
    or the replay of its key and body (200)."""

    replayed: bool
    advice: AdviceOut


class Posted(_Out):
    """A reversal or lot status change (201), or the replay of its key and body (200)."""

    replayed: bool
    movement: CursoredMovementOut


class SignatureOut(_Out):
    """One signature (or the rejection) of a request (21 CFR 11.50): who, printed name,
    when, meaning, bound to the request by its digest."""

    request_id: str
    seq: int = Field(description="1, 2: the order of the request's signatures")
    signer: str
    printed_name: str
    meaning: str = Field(description="the policy's meaning, or `rejected`")
    decision: Decision
    signed_at: Timestamp
    digest: str = Field(description="the request's digest (SHA-256) it signs")
    reason: str = Field(description="a rejection's reason")
    manifest: str = Field(description="printed name, time and meaning, as shown")


class RequestOut(_Out):
    """A request held for electronic signatures (as `invops ledger pending --json`):
    posted, once, on its last signature, or closed by a rejection."""

    request_id: str = Field(description="`request:<id>`")
    action: SignatureAction
    summary: str = Field(description="what a signer approves, in words")
    state: RequestState
    requested_by: str
    created_at: Timestamp
    meaning: str = Field(description="what each signature must mean")
    role: Role = Field(description="the role a signer needs (or a higher one)")
    signatures_required: int
    second_person: bool = Field(description="the last signer must not be the requester")
    digest: str = Field(description="SHA-256 over what was asked, by whom, when")
    outcome: str | None = Field(
        description="the movement, advice or period posted, or why it was rejected or failed"
    )
    closed_at: Timestamp | None
    signatures: list[SignatureOut]


class RequestsOut(_Out):
    requests: list[RequestOut]


class RequestHeld(_Out):
    """A posting a `[[signatures]]` policy holds (202): nothing is posted until it is
    signed (POST /requests/{id}/approve); or the replay of its key and body (200)."""

    replayed: bool
    request: RequestOut


class Signed(_Out):
    """A signature recorded: the request as it is now, and what its last signature
    posted (null: it waits for another signature, or was rejected)."""

    request: RequestOut
    posted: str | None = Field(description="the id of the movement (or advice) posted")


class LinkOut(_Out):
    parent: str
    child: str
    movement_id: str
    depth: int
    quantity: Decimal_ | None = Field(description="of the parent that went in")


class MassCheckOut(_Out):
    movement_id: str
    lot: str
    inputs: Decimal_ | None
    output: Decimal_
    conserved: bool | None


class GenealogyOut(_Out):
    lot: str
    direction: Literal["forward", "backward"]
    links: list[LinkOut]
    mass_balance: list[MassCheckOut]


class AuditRecordOut(_Out):
    """One audit record (its chain: `writer` and `seq`, `hash` over the stored text)."""

    cursor: int = Field(description="pass as `since` for the records after this one")
    writer: str = Field(description="the audit chain (one per writing instance)")
    seq: int = Field(description="its place in its chain")
    timestamp: Timestamp
    user: str
    action: str
    object_type: str
    object_id: str
    reason: str
    old: Any = Field(description="the old value: JSON as stored, text, or null")
    new: Any = Field(description="the new value (a movement's: the digest of its record)")
    hash: str
    movement: MovementOut | None = Field(
        description="for a movement's record: the movement (as its digest covers it)"
    )


class AuditOut(_Out):
    object: str
    records: list[AuditRecordOut]
    next_cursor: int = Field(description="`since` of the next page")


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(title="Problem")

    type: str = Field(description="about:blank, or urn:invops:problem:<refusal>")
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="the request field at fault")

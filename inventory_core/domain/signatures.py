"""Electronic signatures (21 CFR 11.50, 11.70, 11.200; EU GMP Annex 11 §14).

A `[[signatures]]` policy names an action that must be signed before it is posted.
A request it catches is not posted: it becomes a *pending request* (`request:<id>`)
that keeps the request exactly as it was made, and is posted, once, when its
signatures are complete, or closed when a signer rejects it. Each signature names
the signer (printed name), the UTC time and the meaning, and is bound to the request
by the request's digest (SHA-256 over what was asked, by whom and when): a signature
cannot be moved to another request, and `ledger verify` sees one lost, added or
changed. Pure values and rules; the planner applies them inside the posting
transaction, so every writer sharing a ledger agrees.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from inventory_core.domain.audit import length_prefixed
from inventory_core.domain.lot_quality import LotQualityRequest
from inventory_core.domain.model import (
    LotId,
    LotProperty,
    LotStatus,
    LotStatusRequest,
    MasterDataUpdate,
    MaterialDefinition,
    MaterialId,
    MovementId,
    MovementKind,
    PostingRequest,
    ReversalRequest,
    Source,
    StorageUnitId,
)
from inventory_core.domain.users import Role

__all__ = [
    "DEFAULT_SIGNED_STATUSES",
    "MATERIAL_PREFIX",
    "PERIOD_CLOSE_POLICY",
    "PERIOD_PREFIX",
    "REQUEST_PREFIX",
    "AdviceVarianceReview",
    "ClosePeriodRequest",
    "ClosedPeriod",
    "Decision",
    "PendingRequest",
    "RequestState",
    "SignRequest",
    "Signature",
    "SignatureAction",
    "SignaturePoliciesUpdate",
    "SignaturePolicy",
    "Threshold",
    "material_document",
    "policies_from_json",
    "policies_json",
    "request_digest",
    "request_document",
    "request_fingerprint",
    "request_from_payload",
    "request_payload",
    "signature_lines",
    "signed_manifest",
]

REQUEST_PREFIX: Final = "request:"  # a request waiting for signatures answers with this id


@dataclass(frozen=True, slots=True)
class ClosePeriodRequest:
    """Close the period [start, end) of the books: its balance report, whose SHA-256 is
    `report_digest`, is signed (as `reviewed` unless a `period-close` policy says
    otherwise). Once closed, nothing posts with a time inside it."""

    start: str
    end: str
    report_digest: str
    reason: str
    user: str = "system"
    source: Source = Source.MANUAL
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    id: str  # "<start>/<end>"
    start: str
    end: str
    report_digest: str
    request_id: str
    closed_at: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class AdviceVarianceReview:
    """The variance of a matched advice beyond an `advice-variance` policy's tolerance:
    the gauge booked what it measured; the signature accepts the difference from what
    was advised (a rejection leaves it to the plant to correct)."""

    advice_id: str
    unit: str
    expected: Decimal
    matched: Decimal
    uom: str
    reason: str = "advice variance beyond tolerance"
    user: str = "system"
    source: Source = Source.SYSTEM
    idempotency_key: str | None = None


SignedRequest = (
    PostingRequest
    | ReversalRequest
    | LotStatusRequest
    | ClosePeriodRequest
    | AdviceVarianceReview
    | LotQualityRequest
    | MasterDataUpdate
)


class SignatureAction(StrEnum):
    """What a `[[signatures]]` policy catches (SPEC section 3 `action`)."""

    ADJUSTMENT = "adjustment"
    SCRAP = "scrap"
    REVERSAL = "reversal"
    LOT_STATUS = "lot-status"
    COUNT = "count"
    ADVICE_VARIANCE = "advice-variance"
    MASTER_DATA = "master-data"
    PERIOD_CLOSE = "period-close"  # always signed: PERIOD_CLOSE_POLICY unless configured


DEFAULT_SIGNED_STATUSES: Final = frozenset({LotStatus.RELEASED, LotStatus.REJECTED})
PERIOD_PREFIX: Final = "period:"  # a signed period close answers with this id
MATERIAL_PREFIX: Final = "material:"  # signed material definitions answer with these ids


class RequestState(StrEnum):
    PENDING = "pending"  # waiting for (more) signatures
    POSTED = "posted"  # signed and posted (its movement, advice or status change)
    REJECTED = "rejected"  # a signer refused it: nothing posted
    FAILED = "failed"  # signed, but the ledger's rules refused it then: nothing posted


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Threshold:
    """Where a policy starts: above `quantity` (the material's base unit) or above
    `percent` of the unit's capacity. Neither: every request of the action."""

    quantity: Decimal | None = None
    percent: Decimal | None = None

    def exceeded(self, amount: Decimal, capacity: Decimal | None) -> bool:
        amount = abs(amount)
        if self.quantity is not None:
            return amount > self.quantity
        if self.percent is not None:
            return capacity is not None and amount * 100 > self.percent * capacity
        return amount > 0

    def __str__(self) -> str:
        if self.quantity is not None:
            return str(self.quantity)
        return f"{self.percent}%" if self.percent is not None else ""


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """One `[[signatures]]` entry. `second_person`: two signatures, the second by
    someone other than the requester and the first signer (the two-person rule)."""

    action: SignatureAction
    meaning: str
    role: Role
    second_person: bool = False
    threshold: Threshold = field(default_factory=Threshold)
    statuses: frozenset[LotStatus] = DEFAULT_SIGNED_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "meaning": self.meaning,
            "role": str(self.role),
            "second_person": self.second_person,
            "threshold": str(self.threshold) or None,
            "statuses": sorted(str(s) for s in self.statuses),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> SignaturePolicy:
        text = value.get("threshold") or ""
        threshold = (
            Threshold(percent=Decimal(text[:-1]))
            if text.endswith("%")
            else Threshold(quantity=Decimal(text) if text else None)
        )
        return cls(
            SignatureAction(value["action"]),
            value["meaning"],
            Role(value["role"]),
            bool(value["second_person"]),
            threshold,
            frozenset(LotStatus(s) for s in value["statuses"]),
        )

    @property
    def signatures_required(self) -> int:
        return 2 if self.second_person else 1

    def describe(self) -> str:
        limit = f" above {self.threshold}" if str(self.threshold) else ""
        who = "two persons" if self.second_person else "one person"
        return f"{self.action}{limit}: {self.meaning} by {who} with role {self.role}"


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature (or the rejection) of a pending request, as stored and audited."""

    request_id: str
    seq: int  # 1, 2: the order of the signatures of one request
    signer: str
    printed_name: str
    meaning: str
    decision: Decision
    signed_at: str
    digest: str  # the request's digest when it was signed
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Every field: the row, and the audit record's `new` that binds it."""
        return {
            "request_id": self.request_id,
            "seq": self.seq,
            "signer": self.signer,
            "printed_name": self.printed_name,
            "meaning": self.meaning,
            "decision": str(self.decision),
            "signed_at": self.signed_at,
            "digest": self.digest,
            "reason": self.reason,
        }

    def manifest(self) -> str:
        """What the signature shows (21 CFR 11.50): printed name, time, meaning."""
        return _manifest(self.printed_name, self.signer, self.signed_at, self.meaning)


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request held for signatures."""

    id: str  # without REQUEST_PREFIX
    action: SignatureAction
    summary: str  # what a signer approves, in words
    payload: str  # the request, JSON (request_payload)
    payload_hash: str  # the idempotency digest of the request
    digest: str  # request_digest: what signatures are bound to
    requested_by: str
    created_at: str
    meaning: str
    role: Role
    signatures_required: int
    second_person: bool
    idempotency_key: str | None = None
    state: RequestState = RequestState.PENDING
    outcome: str = ""  # the movement or advice id posted, or why it failed / was rejected
    closed_at: str | None = None
    signatures: tuple[Signature, ...] = ()

    @property
    def request_id(self) -> str:
        return f"{REQUEST_PREFIX}{self.id}"

    def request(self) -> SignedRequest:
        return request_from_payload(self.payload)

    def approvals(self) -> tuple[Signature, ...]:
        return tuple(s for s in self.signatures if s.decision is Decision.APPROVED)


@dataclass(frozen=True, slots=True)
class SignaturePoliciesUpdate:
    """The `[[signatures]]` policies from the configuration: stored in the ledger (as
    master data, audited) so that every process writing to it holds the same requests,
    the CLI without a config file too."""

    policies: tuple[SignaturePolicy, ...]
    user: str = "system"
    reason: str = "configuration"


@dataclass(frozen=True, slots=True)
class SignRequest:
    """A signer's approval or rejection of a pending request. The signer is already
    re-authenticated (`inventory_core.signing`): the ledger checks who may sign."""

    request_id: str
    decision: Decision
    signer: str
    role: Role
    printed_name: str
    meaning: str = ""  # approvals: approved, reviewed, verified, ... (the policy's)
    reason: str = ""  # rejections: why
    source: Source = Source.MANUAL


def request_digest(
    request_id: str, action: str, payload: str, requested_by: str, created_at: str
) -> str:
    """The SHA-256 a signature is bound to: what was asked, by whom, when."""
    text = length_prefixed(request_id, action, payload, requested_by, created_at)
    return hashlib.sha256(text.encode()).hexdigest()


def request_payload(request: SignedRequest) -> str:
    """The request as canonical JSON (sorted keys), without its idempotency key (kept
    on the pending request) so that the posting made from it books once."""
    body: dict[str, Any]
    if isinstance(request, PostingRequest):
        body = {
            "type": "posting",
            "kind": str(request.kind),
            "material": request.material,
            "lot": request.lot,
            "quantity": str(request.quantity),
            "uom": request.uom,
            "from_unit": request.from_unit,
            "to_unit": request.to_unit,
            "reason": request.reason,
            "user": request.user,
            "source": str(request.source),
            "consumed_lots": list(request.consumed_lots),
            "expiry": request.expiry.isoformat() if request.expiry else None,
            "ref": request.ref,
            "consumed_quantities": [str(q) for q in request.consumed_quantities],
            "consumed_units": list(request.consumed_units),
            "details": request.details,
        }
    elif isinstance(request, AdviceVarianceReview):
        body = {
            "type": "advice-variance",
            "advice_id": request.advice_id,
            "unit": request.unit,
            "expected": str(request.expected),
            "matched": str(request.matched),
            "uom": request.uom,
            "reason": request.reason,
            "user": request.user,
            "source": str(request.source),
        }
    elif isinstance(request, ClosePeriodRequest):
        body = {
            "type": "period-close",
            "start": request.start,
            "end": request.end,
            "report_digest": request.report_digest,
            "reason": request.reason,
            "user": request.user,
            "source": str(request.source),
        }
    elif isinstance(request, LotQualityRequest):
        properties = request.properties
        body = {
            "type": "lot-quality",
            "lot": request.lot,
            "properties": None if properties is None else [p.as_dict() for p in properties],
            "retest": request.retest.isoformat() if request.retest else None,
            "expiry": request.expiry.isoformat() if request.expiry else None,
            "certificate": request.certificate,
            "reason": request.reason,
            "user": request.user,
            "source": str(request.source),
        }
    elif isinstance(request, MasterDataUpdate):
        body = {
            "type": "master-data",
            "materials": [material_document(m) for m in request.materials],
            "reason": request.reason,
            "user": request.user,
            "source": str(request.source),
        }
    elif isinstance(request, ReversalRequest):
        body = {
            "type": "reversal",
            "movement_id": request.movement_id,
            "reason": request.reason,
            "user": request.user,
            "source": str(request.source),
        }
    else:
        body = {
            "type": "lot-status",
            "lot": request.lot,
            "status": str(request.status),
            "reason": request.reason,
            "user": request.user,
            "source": str(request.source),
        }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def request_fingerprint(request: SignedRequest) -> str:
    """SHA-256 of `request_payload`: the digest a request without a posting digest of
    its own (lot quality, master data, an advice variance) is held and replayed by."""
    return hashlib.sha256(request_payload(request).encode()).hexdigest()


def request_from_payload(payload: str) -> SignedRequest:
    body = json.loads(payload)
    if body["type"] == "advice-variance":
        return AdviceVarianceReview(
            body["advice_id"], body["unit"], Decimal(body["expected"]), Decimal(body["matched"]),
            body["uom"], body["reason"], body["user"], Source(body["source"]),
        )  # fmt: skip
    if body["type"] == "period-close":
        return ClosePeriodRequest(
            body["start"], body["end"], body["report_digest"], body["reason"], body["user"],
            Source(body["source"]),
        )  # fmt: skip
    if body["type"] == "reversal":
        return ReversalRequest(
            MovementId(body["movement_id"]), body["reason"], body["user"], Source(body["source"])
        )
    if body["type"] == "master-data":
        materials = tuple(_material(m) for m in body["materials"])
        return MasterDataUpdate(materials, (), body["user"], body["reason"], Source(body["source"]))
    if body["type"] == "lot-quality":
        properties = body["properties"]
        return LotQualityRequest(
            LotId(body["lot"]), body["reason"], body["user"], Source(body["source"]),
            None if properties is None else tuple(LotProperty(**p) for p in properties),
            _date(body["retest"]), _date(body["expiry"]), body["certificate"],
        )  # fmt: skip
    if body["type"] == "lot-status":
        return LotStatusRequest(
            LotId(body["lot"]),
            LotStatus(body["status"]),
            body["reason"],
            body["user"],
            Source(body["source"]),
        )
    return PostingRequest(
        MovementKind(body["kind"]),
        MaterialId(body["material"]),
        LotId(body["lot"]) if body["lot"] is not None else None,
        Decimal(body["quantity"]),
        body["uom"],
        from_unit=_unit(body["from_unit"]),
        to_unit=_unit(body["to_unit"]),
        reason=body["reason"],
        user=body["user"],
        source=Source(body["source"]),
        consumed_lots=tuple(LotId(lot) for lot in body["consumed_lots"]),
        expiry=_date(body["expiry"]),
        details=dict(body["details"]),
        ref=body["ref"],
        consumed_quantities=tuple(Decimal(q) for q in body["consumed_quantities"]),
        consumed_units=tuple(_unit(u) for u in body["consumed_units"]),
    )


def _unit(value: str | None) -> StorageUnitId | None:
    return None if value is None else StorageUnitId(value)


def material_document(m: MaterialDefinition) -> dict[str, str | None]:
    """A material definition as JSON-ready text (a held request's payload)."""
    density = m.density_kg_per_l
    return {
        "id": m.id,
        "description": m.description,
        "base_uom": m.base_uom,
        "density_kg_per_l": None if density is None else str(density),
        "default_lot_status": str(m.default_lot_status),
        "material_class": m.material_class,
    }


def _material(doc: dict[str, str | None]) -> MaterialDefinition:
    density = doc["density_kg_per_l"]
    return MaterialDefinition(
        MaterialId(str(doc["id"])), str(doc["description"]), str(doc["base_uom"]),
        None if density is None else Decimal(density), LotStatus(str(doc["default_lot_status"])),
        doc["material_class"],
    )  # fmt: skip


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def policies_json(policies: Sequence[SignaturePolicy]) -> str:
    return json.dumps([p.as_dict() for p in policies], sort_keys=True, separators=(",", ":"))


def policies_from_json(text: str | None) -> tuple[SignaturePolicy, ...]:
    return tuple(SignaturePolicy.from_dict(p) for p in json.loads(text)) if text else ()


def signed_manifest(signature: Signature) -> dict[str, Any]:
    """What a movement posted on signatures carries of each approval (its `details`)."""
    return {
        "signer": signature.signer,
        "printed_name": signature.printed_name,
        "meaning": signature.meaning,
        "signed_at": signature.signed_at,
        "digest": signature.digest,
    }


def signature_lines(details: Mapping[str, Any]) -> list[str]:
    """The approvals a movement posted on signatures carries (its `details`), one line
    each as `Signature.manifest` shows them; empty for a movement signed by no one."""
    signed = details.get("signatures") or []
    return [
        _manifest(s["printed_name"], s["signer"], s["signed_at"], s["meaning"])
        for s in signed
        if isinstance(s, dict)
    ]


def _manifest(printed_name: str, signer: str, signed_at: str, meaning: str) -> str:
    return f"{printed_name} ({signer}), {signed_at}: {meaning}"


# A period close is always signed: as `reviewed` by an engineer, unless a
# `[[signatures]] action = "period-close"` policy asks for more.
PERIOD_CLOSE_POLICY: Final = SignaturePolicy(
    SignatureAction.PERIOD_CLOSE, "reviewed", Role.ENGINEER
)


def request_document(pending: PendingRequest) -> dict[str, Any]:
    """A pending request as every interface shows it (CLI `--json`, HTTP API)."""
    return {
        "request_id": pending.request_id,
        "action": str(pending.action),
        "summary": pending.summary,
        "state": str(pending.state),
        "requested_by": pending.requested_by,
        "created_at": pending.created_at,
        "meaning": pending.meaning,
        "role": str(pending.role),
        "signatures_required": pending.signatures_required,
        "second_person": pending.second_person,
        "digest": pending.digest,
        "outcome": pending.outcome or None,
        "closed_at": pending.closed_at,
        "signatures": [
            {**s.as_dict(), "request_id": pending.request_id, "manifest": s.manifest()}
            for s in pending.signatures
        ],
    }

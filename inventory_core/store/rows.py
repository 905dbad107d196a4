"""Mapping between table rows (text columns) and domain values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from inventory_core.domain.advices import Advice, AdviceDirection, AdviceState
from inventory_core.domain.audit import AuditRecord, canonical_json
from inventory_core.domain.model import (
    Booking,
    Lot,
    LotHandling,
    LotId,
    LotProperty,
    LotQuality,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    Movement,
    MovementId,
    MovementKind,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.signatures import (
    ClosedPeriod,
    Decision,
    PendingRequest,
    RequestState,
    Signature,
    SignatureAction,
)
from inventory_core.domain.units import format_decimal
from inventory_core.domain.users import Role

Row = Mapping[Any, Any]


def material_to_row(m: MaterialDefinition) -> dict[str, Any]:
    return {
        "id": m.id,
        "description": m.description,
        "base_uom": m.base_uom,
        "density_kg_per_l": None if m.density_kg_per_l is None else str(m.density_kg_per_l),
        "default_lot_status": str(m.default_lot_status),
        "material_class": m.material_class,
    }


def material_from_row(r: Row) -> MaterialDefinition:
    density = r["density_kg_per_l"]
    return MaterialDefinition(
        id=MaterialId(r["id"]),
        description=r["description"],
        base_uom=r["base_uom"],
        density_kg_per_l=None if density is None else Decimal(density),
        default_lot_status=LotStatus(r["default_lot_status"]),
        material_class=r["material_class"],
    )


def unit_to_row(u: StorageUnit) -> dict[str, Any]:
    return {
        "id": u.id,
        "site": u.site,
        "area": u.area,
        "kind": str(u.kind),
        "capacity": str(u.capacity),
        "capacity_uom": u.capacity_uom,
        "material": u.material,
        "description": u.description,
        "lot_handling": str(u.lot_handling),
        "zero_lot_threshold": None if u.zero_lot_threshold is None else str(u.zero_lot_threshold),
        "booking": str(u.booking),
        "advice_window_s": u.advice_window_s,
    }


def unit_from_row(r: Row) -> StorageUnit:
    return StorageUnit(
        id=StorageUnitId(r["id"]),
        site=r["site"],
        area=r["area"],
        kind=StorageKind(r["kind"]),
        capacity=Decimal(r["capacity"]),
        capacity_uom=r["capacity_uom"],
        material=None if r["material"] is None else MaterialId(r["material"]),
        description=r["description"],
        lot_handling=LotHandling(r["lot_handling"]),
        zero_lot_threshold=None
        if r["zero_lot_threshold"] is None
        else Decimal(r["zero_lot_threshold"]),
        booking=Booking(r["booking"]),
        advice_window_s=int(r["advice_window_s"]),
    )


def lot_to_row(lot: Lot) -> dict[str, Any]:
    return {
        "id": lot.id,
        "material": lot.material,
        "status": str(lot.status),
        "created_at": lot.created_at,
        "expiry": lot.expiry.isoformat() if lot.expiry else None,
        **quality_to_row(lot.quality),
    }


def quality_to_row(q: LotQuality) -> dict[str, Any]:
    return {
        "properties": canonical_json([p.as_dict() for p in q.properties]),
        "retest": q.retest.isoformat() if q.retest else None,
        "certificate": q.certificate,
    }


def lot_from_row(r: Row) -> Lot:
    retest = r.get("retest")
    return Lot(
        id=LotId(r["id"]),
        material=MaterialId(r["material"]),
        status=LotStatus(r["status"]),
        created_at=r["created_at"],
        expiry=date.fromisoformat(r["expiry"]) if r["expiry"] else None,
        quality=LotQuality(
            tuple(LotProperty(**p) for p in json.loads(r.get("properties") or "[]")),
            date.fromisoformat(retest) if retest else None,
            r.get("certificate") or "",
        ),
    )


def movement_from_row(r: Row) -> Movement:
    return Movement(
        seq=int(r["seq"]),
        id=MovementId(r["id"]),
        kind=MovementKind(r["kind"]),
        material=MaterialId(r["material"]),
        lot=LotId(r["lot"]),
        from_unit=None if r["from_unit"] is None else StorageUnitId(r["from_unit"]),
        to_unit=None if r["to_unit"] is None else StorageUnitId(r["to_unit"]),
        quantity=Decimal(r["quantity"]),
        uom=r["uom"],
        posted_quantity=Decimal(r["posted_quantity"]),
        posted_uom=r["posted_uom"],
        timestamp=r["timestamp"],
        user=r["user"],
        source=Source(r["source"]),
        reason=r["reason"],
        idempotency_key=r["idempotency_key"],
        reverses=None if r["reverses"] is None else MovementId(r["reverses"]),
        writer=r["writer"],
        details=json.loads(r["details"]),
    )


def audit_to_row(a: AuditRecord) -> dict[str, Any]:
    return {
        "writer": a.writer,
        "seq": a.seq,
        "timestamp": a.timestamp,
        "user": a.user,
        "action": a.action,
        "object_type": a.object_type,
        "object_id": a.object_id,
        "reason": a.reason,
        "old": a.old,
        "new": a.new,
        "prev_hash": a.prev_hash,
        "hash": a.hash,
    }


def audit_from_row(r: Row) -> AuditRecord:
    return AuditRecord(
        writer=r["writer"],
        seq=int(r["seq"]),
        timestamp=r["timestamp"],
        user=r["user"],
        action=r["action"],
        object_type=r["object_type"],
        object_id=r["object_id"],
        reason=r["reason"],
        old=r["old"],
        new=r["new"],
        prev_hash=r["prev_hash"],
        hash=r["hash"],
    )


def advice_to_row(a: Advice, *, payload_hash: str, writer: str) -> dict[str, Any]:
    details: dict[str, object] = {
        "consumed_lots": list(a.consumed_lots),
        "expiry": a.expiry.isoformat() if a.expiry else None,
    }
    if a.partner_unit is not None:  # a transfer between two measured units
        details["partner_unit"] = a.partner_unit
        details["partner"] = a.partner
    if a.consumed_quantities:  # rows written before consumed quantities have neither key
        details["consumed_quantities"] = [format_decimal(q) for q in a.consumed_quantities]
        details["consumed_units"] = list(a.consumed_units)
    return {
        "id": a.id,
        "unit": a.unit,
        "direction": str(a.direction),
        "kind": str(a.kind),
        "material": a.material,
        "lot": a.lot,
        "expected": format_decimal(a.expected),
        "uom": a.uom,
        "ref": a.ref,
        "user": a.user,
        "source": str(a.source),
        "reason": a.reason,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "idempotency_key": a.idempotency_key,
        "payload_hash": payload_hash,
        "other_unit": a.other_unit,
        "details": canonical_json(details),
        "state": str(a.state),
        "matched": format_decimal(a.matched),
        "matches": a.matches,
        "closed_at": a.closed_at,
        "writer": writer,
    }


def advice_from_row(r: Row) -> Advice:
    details = json.loads(r["details"])
    expiry = details.get("expiry")
    return Advice(
        id=r["id"],
        unit=StorageUnitId(r["unit"]),
        direction=AdviceDirection(r["direction"]),
        kind=MovementKind(r["kind"]),
        material=MaterialId(r["material"]),
        lot=None if r["lot"] is None else LotId(r["lot"]),
        expected=Decimal(r["expected"]),
        uom=r["uom"],
        ref=r["ref"],
        user=r["user"],
        source=Source(r["source"]),
        reason=r["reason"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        idempotency_key=r["idempotency_key"],
        other_unit=None if r["other_unit"] is None else StorageUnitId(r["other_unit"]),
        consumed_lots=tuple(LotId(lot) for lot in details.get("consumed_lots", ())),
        consumed_quantities=tuple(Decimal(q) for q in details.get("consumed_quantities", ())),
        consumed_units=tuple(
            None if u is None else StorageUnitId(u) for u in details.get("consumed_units", ())
        ),
        expiry=date.fromisoformat(expiry) if expiry else None,
        partner_unit=StorageUnitId(details["partner_unit"])
        if details.get("partner_unit")
        else None,
        partner=details.get("partner"),
        state=AdviceState(r["state"]),
        matched=Decimal(r["matched"]),
        matches=int(r["matches"]),
        closed_at=r["closed_at"],
    )


def pending_request_to_row(p: PendingRequest, *, writer: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "action": str(p.action),
        "summary": p.summary,
        "payload": p.payload,
        "payload_hash": p.payload_hash,
        "digest": p.digest,
        "requested_by": p.requested_by,
        "created_at": p.created_at,
        "meaning": p.meaning,
        "role": str(p.role),
        "signatures_required": p.signatures_required,
        "second_person": int(p.second_person),
        "idempotency_key": p.idempotency_key,
        "state": str(p.state),
        "outcome": p.outcome,
        "closed_at": p.closed_at,
        "writer": writer,
    }


def pending_request_from_row(r: Row, signatures: tuple[Signature, ...] = ()) -> PendingRequest:
    return PendingRequest(
        id=r["id"],
        action=SignatureAction(r["action"]),
        summary=r["summary"],
        payload=r["payload"],
        payload_hash=r["payload_hash"],
        digest=r["digest"],
        requested_by=r["requested_by"],
        created_at=r["created_at"],
        meaning=r["meaning"],
        role=Role(r["role"]),
        signatures_required=int(r["signatures_required"]),
        second_person=bool(r["second_person"]),
        idempotency_key=r["idempotency_key"],
        state=RequestState(r["state"]),
        outcome=r["outcome"],
        closed_at=r["closed_at"],
        signatures=signatures,
    )


def signature_to_row(s: Signature) -> dict[str, Any]:
    return s.as_dict()


def signature_from_row(r: Row) -> Signature:
    return Signature(
        request_id=r["request_id"],
        seq=int(r["seq"]),
        signer=r["signer"],
        printed_name=r["printed_name"],
        meaning=r["meaning"],
        decision=Decision(r["decision"]),
        signed_at=r["signed_at"],
        digest=r["digest"],
        reason=r["reason"],
    )


def closed_period_to_row(p: ClosedPeriod, *, writer: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "start": p.start,
        "end": p.end,
        "report_digest": p.report_digest,
        "request_id": p.request_id,
        "closed_at": p.closed_at,
        "requested_by": p.requested_by,
        "writer": writer,
    }


def closed_period_from_row(r: Row) -> ClosedPeriod:
    return ClosedPeriod(
        r["id"], r["start"], r["end"], r["report_digest"], r["request_id"], r["closed_at"],
        r["requested_by"],
    )  # fmt: skip

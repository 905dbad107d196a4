"""Posting rules as a pure planner over an in-memory view of ledger state.

The store loads the rows a batch of requests touches into a `LedgerState`,
the `Planner` applies each request in order (checking every rule before it
changes anything, so a rejected request leaves no trace), and the store then
writes the accumulated `Changes` in the same transaction. Keeping the rules
here means the SQLite and PostgreSQL stores share them and tests can drive
them without a database.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import date
from decimal import Decimal
from typing import Any

from inventory_core.domain.audit import canonical_json, length_prefixed
from inventory_core.domain.errors import (
    AlreadyReversed,
    CapacityExceeded,
    IdempotencyConflict,
    InsufficientStock,
    LotExpired,
    LotNotReleased,
    MaterialMismatch,
    UnitConversionError,
    UnknownLot,
    UnknownMaterial,
    UnknownMovement,
    UnknownStorageUnit,
    ValidationError,
)
from inventory_core.domain.lots import check_transition
from inventory_core.domain.model import (
    CURRENT_LOT_KINDS,
    LOT_CREATING_KINDS,
    AuditEvent,
    Lot,
    LotId,
    LotStatus,
    LotStatusRequest,
    MasterDataUpdate,
    MaterialDefinition,
    MaterialId,
    Measurement,
    Movement,
    MovementId,
    MovementKind,
    PostingRequest,
    PostingResult,
    ReversalRequest,
    Source,
    StorageUnit,
    StorageUnitId,
    movement_legs,
    opening_lot,
)
from inventory_core.domain.units import QUANTUM, convert, format_decimal

BalanceKey = tuple[StorageUnitId, LotId]
# A manual posting may bring a unit's book at most this far above its capacity: beyond it,
# the quantity is a typo (999,999,999,999 kg into a 30,000 L tank), not a full tank.
DEFAULT_CAPACITY_MARGIN_PCT = Decimal(10)


@dataclass(slots=True)
class LedgerState:
    """The part of the ledger a batch reads; the planner updates it as it goes."""

    materials: dict[MaterialId, MaterialDefinition] = field(default_factory=dict)
    units: dict[StorageUnitId, StorageUnit] = field(default_factory=dict)
    lots: dict[LotId, Lot] = field(default_factory=dict)
    balances: dict[BalanceKey, Decimal] = field(default_factory=dict)
    keys: dict[str, tuple[MovementId, str]] = field(default_factory=dict)
    movements: dict[MovementId, Movement] = field(default_factory=dict)
    reversed_ids: set[MovementId] = field(default_factory=set)
    # Current lot of each unit a `lot=None` request touches (absent: it has none yet).
    current_lots: dict[StorageUnitId, LotId] = field(default_factory=dict)
    # Book quantity over all lots of each unit a manual posting adds to (capacity check).
    unit_totals: dict[StorageUnitId, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PendingAudit:
    """An audit entry before it gets its place (seq, hashes) in the writer's chain."""

    timestamp: str
    user: str
    action: str
    object_type: str
    object_id: str
    reason: str
    old: str
    new: str


@dataclass(slots=True)
class Changes:
    """Rows a batch will write, in order."""

    new_lots: list[Lot] = field(default_factory=list)
    lot_status: dict[LotId, LotStatus] = field(default_factory=dict)
    movements: list[MovementRecord] = field(default_factory=list)
    links: list[tuple[LotId, LotId, MovementId]] = field(default_factory=list)
    balances: dict[BalanceKey, tuple[MaterialId, Decimal]] = field(default_factory=dict)
    audits: list[PendingAudit] = field(default_factory=list)
    materials: list[MaterialDefinition] = field(default_factory=list)
    units: list[StorageUnit] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)


def payload_hash(request: PostingRequest | ReversalRequest | LotStatusRequest) -> str:
    """Fingerprint of what a request asks for (not who or when): the idempotency payload."""
    fields: tuple[str, ...]
    if isinstance(request, PostingRequest):
        fields = (
            str(request.kind),
            request.material,
            request.lot or "",  # None: the unit's current lot, the same on every replay
            format_decimal(request.quantity),
            request.uom,
            request.from_unit or "",
            request.to_unit or "",
            request.reason,
            length_prefixed(*request.consumed_lots),
            request.expiry.isoformat() if request.expiry else "",
        )
    elif isinstance(request, ReversalRequest):
        fields = ("reversal", str(request.movement_id), request.reason)
    else:
        fields = ("lot-status", str(request.lot), str(request.status), request.reason)
    return hashlib.sha256(length_prefixed(*fields).encode()).hexdigest()


def movement_document(m: Movement) -> dict[str, object]:
    """The movement as a JSON-ready dict (also the audited content of the record)."""
    return {
        "id": m.id,
        "kind": str(m.kind),
        "material": m.material,
        "lot": m.lot,
        "unit": m.unit,
        "from_unit": m.from_unit,
        "to_unit": m.to_unit,
        "quantity": format_decimal(m.quantity),
        "uom": m.uom,
        "posted_quantity": format_decimal(m.posted_quantity),
        "posted_uom": m.posted_uom,
        "timestamp": m.timestamp,
        "user": m.user,
        "source": str(m.source),
        "reason": m.reason,
        "idempotency_key": m.idempotency_key,
        "reverses": m.reverses,
        "writer": m.writer,
        "details": m.details,
    }


def new_movement_id() -> MovementId:
    return MovementId(str(uuid.uuid4()))


def current_lot(state: LedgerState, req: PostingRequest) -> LotId:
    """The lot a `lot=None` request books to: its unit's current lot in `state` (the
    planner keeps it up to date through a batch), else the unit's opening lot."""
    unit = req.unit
    assert unit is not None, "validate_posting: a lot=None request names one unit"
    return state.current_lots.get(unit) or opening_lot(unit)


class Planner:
    """Applies requests to a LedgerState, recording the rows to write in Changes."""

    def __init__(
        self,
        state: LedgerState,
        changes: Changes,
        *,
        writer: str,
        now: Callable[[], str],
        today: Callable[[], date],
        capacity_margin_pct: Decimal = DEFAULT_CAPACITY_MARGIN_PCT,
    ) -> None:
        self.state = state
        self.changes = changes
        self.writer = writer
        self._now = now
        self._today = today
        self._capacity_factor = 1 + capacity_margin_pct / 100

    # -- public entry points -------------------------------------------------

    def post(self, req: PostingRequest, digest: str) -> PostingResult:
        replay = self._replay(req.idempotency_key, digest)
        if replay is not None:
            return replay
        lot_id = req.lot if req.lot is not None else current_lot(self.state, req)
        result = self._post(req, lot_id, digest)
        if req.kind in CURRENT_LOT_KINDS and req.to_unit is not None:
            self.state.current_lots[req.to_unit] = lot_id
        return result

    def _post(self, req: PostingRequest, lot_id: LotId, digest: str) -> PostingResult:
        """`post` of `req` into lot `lot_id` (`req.lot`, or the one resolved for None)."""
        material = self._material(req.material)
        for unit_id in (req.from_unit, req.to_unit):
            if unit_id is not None:
                self._unit(unit_id, material.id)
        lot = self.state.lots.get(lot_id)
        if lot is None:
            if req.kind not in LOT_CREATING_KINDS and req.kind is not MovementKind.COUNT:
                raise UnknownLot(f"lot {lot_id} does not exist (receive or produce it first)")
        elif lot.material != material.id:
            raise MaterialMismatch(f"lot {lot_id} is material {lot.material}, not {material.id}")
        for parent in req.consumed_lots:
            if parent not in self.state.lots:
                raise UnknownLot(f"consumed lot {parent} does not exist")
        quantity = convert(req.quantity, req.uom, material.base_uom, material.density_kg_per_l)
        if quantity == 0 and req.kind is not MovementKind.COUNT:
            raise ValidationError(
                f"{req.kind} of {format_decimal(req.quantity)} {req.uom} is 0 {material.base_uom} "
                f"at the ledger's resolution ({QUANTUM} {material.base_uom})"
            )
        details = dict(req.details)
        if req.kind is MovementKind.COUNT:
            assert req.to_unit is not None
            book = self.state.balances.get((req.to_unit, lot_id), Decimal(0))
            details.update(counted=format_decimal(quantity), book_before=format_decimal(book))
            quantity = quantity - book
        manual = req.source is not Source.PLC
        if manual and req.kind is MovementKind.ISSUE and lot is not None:
            self._check_issuable(lot)
        legs = movement_legs(req.from_unit, req.to_unit, lot_id, quantity)
        if manual:
            self._check_stock(legs, material, str(req.kind))
            self._check_capacity(legs, material, str(req.kind))

        movement = self._movement(
            req,
            kind=req.kind,
            material=material.id,
            lot=lot_id,
            from_unit=req.from_unit,
            to_unit=req.to_unit,
            quantity=quantity,
            uom=material.base_uom,
            posted_quantity=req.quantity,
            posted_uom=req.uom,
            reverses=None,
            details=details,
        )
        if lot is None:
            self._create_lot(
                Lot(
                    lot_id,
                    material.id,
                    material.default_lot_status,
                    movement.timestamp,
                    req.expiry,
                ),
                movement,
            )
        for parent in req.consumed_lots:
            self.changes.links.append((parent, lot_id, movement.id))
        return self._append(movement, legs, digest, old="")

    def reverse(self, req: ReversalRequest, digest: str) -> PostingResult:
        replay = self._replay(req.idempotency_key, digest)
        if replay is not None:
            return replay
        original = self.state.movements.get(req.movement_id)
        if original is None:
            raise UnknownMovement(f"movement {req.movement_id} does not exist")
        if original.kind in (MovementKind.REVERSAL, MovementKind.LOT_STATUS):
            raise ValidationError(
                f"movement {original.id} is a {original.kind}; it cannot be reversed"
                + (
                    " (set the lot status instead)"
                    if original.kind is MovementKind.LOT_STATUS
                    else ""
                )
            )
        if original.id in self.state.reversed_ids:
            raise AlreadyReversed(f"movement {original.id} was already reversed")
        material = self._material(original.material)
        legs = movement_legs(original.to_unit, original.from_unit, original.lot, original.quantity)
        if req.source is not Source.PLC:
            self._check_stock(legs, material, "reversal")
        movement = self._movement(
            req,
            kind=MovementKind.REVERSAL,
            material=original.material,
            lot=original.lot,
            from_unit=original.to_unit,
            to_unit=original.from_unit,
            quantity=original.quantity,
            uom=original.uom,
            posted_quantity=original.posted_quantity,
            posted_uom=original.posted_uom,
            reverses=original.id,
            details={"reversed_kind": str(original.kind)},
        )
        self.state.reversed_ids.add(original.id)
        return self._append(movement, legs, digest, old="")

    def set_lot_status(self, req: LotStatusRequest, digest: str) -> PostingResult:
        replay = self._replay(req.idempotency_key, digest)
        if replay is not None:
            return replay
        lot = self.state.lots.get(req.lot)
        if lot is None:
            raise UnknownLot(f"lot {req.lot} does not exist")
        check_transition(lot.id, lot.status, req.status)
        movement = self._movement(
            req,
            kind=MovementKind.LOT_STATUS,
            material=lot.material,
            lot=lot.id,
            from_unit=None,
            to_unit=None,
            quantity=Decimal(0),
            uom=self._material(lot.material).base_uom,
            posted_quantity=Decimal(0),
            posted_uom=self._material(lot.material).base_uom,
            reverses=None,
            details={"old_status": str(lot.status), "new_status": str(req.status)},
        )
        self.state.lots[lot.id] = Lot(lot.id, lot.material, req.status, lot.created_at, lot.expiry)
        self.changes.lot_status[lot.id] = req.status
        old = canonical_json({"lot": lot.id, "status": str(lot.status)})
        return self._append(movement, [], digest, old=old)

    def master_data(self, update: MasterDataUpdate) -> int:
        """Create or update materials and units; returns how many changed (each audited)."""
        changed = 0
        now = self._now()
        pairs: list[tuple[str, str, object, object]] = [
            ("material", m.id, self.state.materials.get(m.id), m) for m in update.materials
        ] + [("storage_unit", u.id, self.state.units.get(u.id), u) for u in update.units]
        for object_type, object_id, old, new in pairs:
            if old == new:
                continue
            changed += 1
            if isinstance(new, MaterialDefinition):
                self.state.materials[new.id] = new
                self.changes.materials.append(new)
            else:
                assert isinstance(new, StorageUnit)
                self.state.units[new.id] = new
                self.changes.units.append(new)
            self.changes.audits.append(
                PendingAudit(
                    timestamp=now,
                    user=update.user,
                    action="create" if old is None else "update",
                    object_type=object_type,
                    object_id=object_id,
                    reason=update.reason,
                    old="" if old is None else canonical_json(master_document(old)),
                    new=canonical_json(master_document(new)),
                )
            )
        return changed

    def measurement(self, m: Measurement) -> None:
        """Store a measured quantity in the unit's book unit, so reconciliation compares
        like with like (the material's base unit, else the unit's capacity unit)."""
        unit = self.state.units.get(m.unit)
        if unit is None:
            raise UnknownStorageUnit(f"storage unit {m.unit} is not defined")
        material = self.state.materials.get(unit.material) if unit.material else None
        uom = material.base_uom if material else unit.capacity_uom
        density = material.density_kg_per_l if material else None
        quantity = convert(m.quantity, m.uom, uom, density)
        self.changes.measurements.append(replace(m, quantity=quantity, uom=uom))

    def audit_event(self, event: AuditEvent) -> None:
        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=event.user,
                action=event.action,
                object_type=event.object_type,
                object_id=event.object_id,
                reason=event.reason,
                old="",
                new=canonical_json(event.details),
            )
        )

    def rejected(
        self, request: PostingRequest | ReversalRequest | LotStatusRequest, error: Exception
    ) -> None:
        """Audit a request the rules rejected: failures belong in the trail too (ALCOA+)."""
        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=request.user,
                action="rejected",
                object_type="request",
                object_id=request.idempotency_key or "",
                reason=f"{type(error).__name__}: {error}",
                old="",
                new=canonical_json(request_document(request)),
            )
        )

    def _movement(
        self, req: PostingRequest | ReversalRequest | LotStatusRequest, **fields: Any
    ) -> Movement:
        """A new movement for `req`: who, why, key and the batch's time come from the request."""
        return Movement(
            seq=0,
            id=new_movement_id(),
            timestamp=self._now(),
            user=req.user,
            source=req.source,
            reason=req.reason,
            idempotency_key=req.idempotency_key or "",
            writer=self.writer,
            **fields,
        )

    # -- rules ---------------------------------------------------------------

    def _replay(self, key: str | None, digest: str) -> PostingResult | None:
        if key is None:
            return None
        seen = self.state.keys.get(key)
        if seen is None:
            return None
        movement_id, seen_digest = seen
        if seen_digest != digest:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for movement {movement_id} "
                "with a different payload"
            )
        return PostingResult(movement_id, replayed=True)

    def _material(self, material_id: MaterialId) -> MaterialDefinition:
        material = self.state.materials.get(material_id)
        if material is None:
            raise UnknownMaterial(f"material {material_id} is not defined")
        return material

    def _unit(self, unit_id: StorageUnitId, material: MaterialId) -> StorageUnit:
        unit = self.state.units.get(unit_id)
        if unit is None:
            raise UnknownStorageUnit(f"storage unit {unit_id} is not defined")
        if unit.material is not None and unit.material != material:
            raise MaterialMismatch(
                f"storage unit {unit_id} holds material {unit.material}, not {material}"
            )
        return unit

    def _check_issuable(self, lot: Lot) -> None:
        if lot.status is not LotStatus.RELEASED:
            raise LotNotReleased(f"lot {lot.id} is {lot.status}; only released lots can be issued")
        if lot.expiry is not None and lot.expiry < self._today():
            raise LotExpired(f"lot {lot.id} expired on {lot.expiry.isoformat()}")

    def _check_stock(
        self,
        legs: list[tuple[StorageUnitId, LotId, Decimal]],
        material: MaterialDefinition,
        what: str,
    ) -> None:
        for unit, lot, delta in legs:
            if delta >= 0:
                continue
            book = self.state.balances.get((unit, lot), Decimal(0))
            if book + delta < 0:
                raise InsufficientStock(
                    f"{what} of {format_decimal(-delta)} {material.base_uom} of lot {lot} "
                    f"from {unit} exceeds the book balance of {format_decimal(book)} "
                    f"{material.base_uom}"
                )

    def _check_capacity(
        self,
        legs: list[tuple[StorageUnitId, LotId, Decimal]],
        material: MaterialDefinition,
        what: str,
    ) -> None:
        """Refuse a manual posting that would bring a unit's book beyond capacity + margin.

        PLC-derived movements never come here (they record physics); a unit whose total
        the store did not load, or without a capacity in the material's unit, is not checked.
        """
        for unit_id, _lot, delta in legs:
            total = self.state.unit_totals.get(unit_id)
            unit = self.state.units.get(unit_id)
            if delta <= 0 or total is None or unit is None or unit.capacity <= 0:
                continue
            try:
                capacity = convert(
                    unit.capacity, unit.capacity_uom, material.base_uom, material.density_kg_per_l
                )
            except UnitConversionError:
                continue
            after = total + delta
            if after > capacity * self._capacity_factor:
                uom = material.base_uom
                raise CapacityExceeded(
                    f"{what} of {format_decimal(delta)} {uom} into {unit_id} would bring its "
                    f"book to {format_decimal(after)} {uom}, {after * 100 / capacity:.0f} % of "
                    f"its capacity of {format_decimal(capacity)} {uom} (check the quantity)"
                )

    # -- state changes (only after every check passed) -----------------------

    def _create_lot(self, lot: Lot, movement: Movement) -> None:
        self.state.lots[lot.id] = lot
        self.changes.new_lots.append(lot)
        self.changes.audits.append(
            PendingAudit(
                timestamp=movement.timestamp,
                user=movement.user,
                action="create",
                object_type="lot",
                object_id=lot.id,
                reason=f"first {movement.kind} {movement.id}",
                old="",
                new=canonical_json(lot_document(lot)),
            )
        )

    def _append(
        self,
        movement: Movement,
        legs: list[tuple[StorageUnitId, LotId, Decimal]],
        digest: str,
        *,
        old: str,
    ) -> PostingResult:
        if not movement.idempotency_key:
            movement = replace(movement, idempotency_key=f"auto:{movement.id}")
        record = movement_record(movement, digest)  # serialises details: may raise, so first
        for unit, lot, delta in legs:
            key = (unit, lot)
            new = self.state.balances.get(key, Decimal(0)) + delta
            self.state.balances[key] = new
            self.changes.balances[key] = (movement.material, new)
            if unit in self.state.unit_totals:
                self.state.unit_totals[unit] += delta
        self.state.keys[movement.idempotency_key] = (movement.id, digest)
        self.changes.movements.append(record)
        self.changes.audits.append(
            PendingAudit(
                timestamp=movement.timestamp,
                user=movement.user,
                action=str(movement.kind),
                object_type="movement",
                object_id=movement.id,
                reason=movement.reason,
                old=old,
                new=record_digest(record),
            )
        )
        return PostingResult(movement.id, movement=movement)


def master_document(obj: object) -> dict[str, object]:
    """Master data as JSON-ready dict (Decimals and enums as text)."""
    assert isinstance(obj, MaterialDefinition | StorageUnit)
    return {
        name: (None if value is None else str(value) if not isinstance(value, str) else value)
        for name, value in ((f.name, getattr(obj, f.name)) for f in fields(obj))
    }


# A movement as stored: text columns in this order (the ledger's `movements` table).
MOVEMENT_COLUMNS = (
    "id", "kind", "material", "lot", "from_unit", "to_unit", "quantity", "uom",
    "posted_quantity", "posted_uom", "timestamp", "user", "source", "reason",
    "idempotency_key", "payload_hash", "reverses", "writer", "details",
)  # fmt: skip
MovementRecord = tuple[str | None, ...]


def movement_record(m: Movement, payload: str) -> MovementRecord:
    """The movement's stored text form (values for MOVEMENT_COLUMNS)."""
    return (
        m.id, str(m.kind), m.material, m.lot, m.from_unit, m.to_unit,
        format_decimal(m.quantity), m.uom, format_decimal(m.posted_quantity), m.posted_uom,
        m.timestamp, m.user, str(m.source), m.reason, m.idempotency_key, payload, m.reverses,
        m.writer, canonical_json(m.details) if m.details else "{}",
    )  # fmt: skip


def record_digest(record: MovementRecord) -> str:
    """SHA-256 over a stored movement (length-prefixed columns): what its audit binds to."""
    return hashlib.sha256(length_prefixed(*record).encode()).hexdigest()


def request_document(
    request: PostingRequest | ReversalRequest | LotStatusRequest,
) -> dict[str, object]:
    """A request as a JSON-ready dict (for the audit record of a rejection)."""
    return {
        f.name: (
            list(v)
            if isinstance(v, tuple)
            else v
            if v is None or isinstance(v, dict | int)
            else str(v)
        )
        for f in fields(request)
        for v in (getattr(request, f.name),)
    }


def lot_document(lot: Lot) -> dict[str, object]:
    """A lot as audited when it is created (status changes are lot-status movements)."""
    return {
        "lot": lot.id,
        "material": lot.material,
        "status": str(lot.status),
        "created_at": lot.created_at,
        "expiry": lot.expiry.isoformat() if lot.expiry else None,
    }

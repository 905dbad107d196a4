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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date
from decimal import Decimal
from typing import Any

from inventory_core.domain.advices import (
    ADVISED_KINDS,
    Advice,
    AdviceDirection,
    AdviceState,
    advice_document,
    direction_of,
    open_advice,
    window_end,
)
from inventory_core.domain.audit import PendingAudit, canonical_json, length_prefixed
from inventory_core.domain.errors import (
    AlreadyReversed,
    CapacityExceeded,
    DisagreesWithGauge,
    IdempotencyConflict,
    InsufficientStock,
    LotExpired,
    LotNotReleased,
    MaterialMismatch,
    UnitConversionError,
    UnitHoldsOtherLot,
    UnknownLot,
    UnknownMaterial,
    UnknownMovement,
    UnknownStorageUnit,
    ValidationError,
)
from inventory_core.domain.lot_handling import LotShare, allocate, most_restrictive
from inventory_core.domain.lot_quality import (
    LOT_PREFIX,
    ExpireLots,
    LotQualityRequest,
    describe,
    lot_density,
)
from inventory_core.domain.lots import check_transition
from inventory_core.domain.meter import MeterFlow
from inventory_core.domain.model import (
    CURRENT_LOT_KINDS,
    DRAW_KINDS,
    LOT_CREATING_KINDS,
    AnnounceLots,
    AuditEvent,
    Booking,
    ExpireAdvices,
    Lot,
    LotHandling,
    LotId,
    LotQuality,
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
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    ClosedPeriod,
    PendingRequest,
    Signature,
    SignatureAction,
    SignaturePolicy,
    request_fingerprint,
)
from inventory_core.domain.signing_rules import SigningRules
from inventory_core.domain.units import QUANTUM, convert, format_decimal

BalanceKey = tuple[StorageUnitId, LotId]
# A manual posting may bring a unit's book at most this far above its capacity: beyond it,
# the quantity is a typo (999,999,999,999 kg into a 30,000 L tank), not a full tank.
DEFAULT_CAPACITY_MARGIN_PCT = Decimal(10)
DEFAULT_EMPTY_PCT = Decimal("0.5")  # zero_lot_threshold when the unit gives none
SYSTEM_USER = "system"
UNIT_EMPTY = "unit empty"
BLENDED = "blend"


@dataclass(slots=True)
class LedgerState:
    """The part of the ledger a batch reads; the planner updates it as it goes."""

    materials: dict[MaterialId, MaterialDefinition] = field(default_factory=dict)
    units: dict[StorageUnitId, StorageUnit] = field(default_factory=dict)
    lots: dict[LotId, Lot] = field(default_factory=dict)
    balances: dict[BalanceKey, Decimal] = field(default_factory=dict)
    # idempotency key -> (first movement, payload digest, the posting's other parts)
    keys: dict[str, tuple[MovementId, str, tuple[MovementId, ...]]] = field(default_factory=dict)
    movements: dict[MovementId, Movement] = field(default_factory=dict)
    reversed_ids: set[MovementId] = field(default_factory=set)
    # Current lot of each unit a `lot=None` request touches (absent: it has none yet).
    current_lots: dict[StorageUnitId, LotId] = field(default_factory=dict)
    # Book quantity over all lots of each unit a manual posting adds to (capacity check).
    unit_totals: dict[StorageUnitId, Decimal] = field(default_factory=dict)
    # Lots with a non-zero book in each unit a posting touches, and when each arrived.
    present: dict[StorageUnitId, set[LotId]] = field(default_factory=dict)
    entered: dict[BalanceKey, str] = field(default_factory=dict)
    # Open advices of the measured units PLC postings touch (and those due to expire),
    # oldest first: what a measured change books to.
    advices: dict[StorageUnitId, list[Advice]] = field(default_factory=dict)
    # The latest measured quantity of each measured unit a manual count or adjustment
    # touches (book unit; absent: never measured).
    measured: dict[StorageUnitId, Decimal] = field(default_factory=dict)
    # The pending requests a batch signs (by id, without the `request:` prefix).
    requests: dict[str, PendingRequest] = field(default_factory=dict)
    # (payload digest, requester) -> id of each request still waiting for signatures,
    # where the batch may hold one that is not a posting: the same again is that request.
    waiting: dict[tuple[str, str], str] = field(default_factory=dict)
    closed_periods: list[ClosedPeriod] = field(default_factory=list)  # every one, oldest first


@dataclass(slots=True)
class Changes:
    """Rows a batch will write, in order."""

    new_lots: list[Lot] = field(default_factory=list)
    lot_status: dict[LotId, LotStatus] = field(default_factory=dict)
    movements: list[MovementRecord] = field(default_factory=list)
    links: list[tuple[LotId, LotId, MovementId, Decimal | None]] = field(default_factory=list)
    # (unit, lot) -> (material, quantity, entered)
    balances: dict[BalanceKey, tuple[MaterialId, Decimal, str]] = field(default_factory=dict)
    audits: list[PendingAudit] = field(default_factory=list)
    materials: list[MaterialDefinition] = field(default_factory=list)
    units: list[StorageUnit] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    advices: dict[str, Advice] = field(default_factory=dict)  # id -> as it is to be stored
    new_advices: dict[str, str] = field(default_factory=dict)  # id -> its payload digest
    requests: dict[str, PendingRequest] = field(default_factory=dict)  # id -> as to store
    new_requests: set[str] = field(default_factory=set)
    signatures: list[Signature] = field(default_factory=list)
    signature_policies: tuple[SignaturePolicy, ...] | None = None  # None: unchanged
    closed_periods: list[ClosedPeriod] = field(default_factory=list)  # closed by this batch
    lot_quality: dict[LotId, Lot] = field(default_factory=dict)  # lots whose data changed
    meter_flows: list[MeterFlow] = field(default_factory=list)


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
        consumption = request.consumed_quantities or request.consumed_units
        if consumption:  # keys posted before consumed quantities keep their digests
            fields += (
                request.ref,
                length_prefixed(*map(format_decimal, request.consumed_quantities)),
                length_prefixed(*(unit or "" for unit in request.consumed_units)),
            )
        elif request.ref:  # keys posted before `ref` keep their digests
            fields += (request.ref,)
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


def _consumed_quantities(req: PostingRequest) -> tuple[Decimal | None, ...]:
    """The quantity of each consumed lot (None each when the request gave none)."""
    return req.consumed_quantities or (None,) * len(req.consumed_lots)


def current_lot(state: LedgerState, unit: StorageUnitId) -> LotId:
    """The lot a `lot=None` request books to in `unit` when its lot handling does not
    split it: the newest lot with stock in the unit (the planner keeps `present` up to
    date through a batch), else the lot last received, produced or counted into it, else
    the unit's opening lot."""
    present = [(state.entered.get((unit, lot), ""), lot) for lot in state.present.get(unit, ())]
    if present:
        return max(present)[1]
    return state.current_lots.get(unit) or opening_lot(unit)


@dataclass(slots=True)
class _Part:
    """One movement of a posting before it gets its id (see `Planner.post`)."""

    kind: MovementKind
    lot: LotId
    from_unit: StorageUnitId | None
    to_unit: StorageUnitId | None
    quantity: Decimal
    posted: tuple[Decimal, str]
    details: dict[str, object]
    system: bool = False  # the ledger's own part (blend, unit empty): source system
    reason: str = ""  # the ledger's own parts say why; requested parts take the request's
    new_lot: Lot | None = None
    parents: list[tuple[LotId, Decimal | None]] = field(default_factory=list)
    material: MaterialDefinition | None = None  # another than the request's (a consumption)


class _Book:
    """Balances as a posting in progress would leave them, over the batch's state."""

    def __init__(self, state: LedgerState) -> None:
        self.state = state
        self.delta: dict[BalanceKey, Decimal] = {}

    def get(self, key: BalanceKey) -> Decimal:
        return self.state.balances.get(key, Decimal(0)) + self.delta.get(key, Decimal(0))

    def add(self, legs: list[tuple[StorageUnitId, LotId, Decimal]]) -> None:
        for unit, lot, delta in legs:
            self.delta[(unit, lot)] = self.delta.get((unit, lot), Decimal(0)) + delta

    def unit_delta(self, unit: StorageUnitId) -> Decimal:
        return sum((d for (u, _), d in self.delta.items() if u == unit), Decimal(0))

    def shares(self, unit: StorageUnitId) -> list[LotShare]:
        """The lots with a non-zero book in `unit`, with when each arrived."""
        lots = set(self.state.present.get(unit, ())) | {lot for (u, lot) in self.delta if u == unit}
        entered = self.state.entered
        shares = [
            LotShare(lot, self.get((unit, lot)), entered.get((unit, lot), "")) for lot in lots
        ]
        return [share for share in shares if share.quantity != 0]


class Planner(SigningRules):
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
        signatures: Sequence[SignaturePolicy] = (),
    ) -> None:
        self.state = state
        self.changes = changes
        self.writer = writer
        self._now = now
        self._today = today
        self._capacity_factor = 1 + capacity_margin_pct / 100
        self._policies = tuple(signatures)
        self._signing = None

    # -- public entry points -------------------------------------------------

    def post(self, req: PostingRequest, digest: str) -> PostingResult:
        """Post `req` as one or more movements (one atomic group under its key).

        Every rule is checked on a `_Book` before anything changes: a request refused
        at its third part leaves no trace of the first two."""
        replay = self._replay(req.idempotency_key, digest)
        if replay is not None:
            return replay
        material = self._material(req.material)
        for unit_id in (req.from_unit, req.to_unit):
            if unit_id is not None:
                self._unit(unit_id, material.id)
        for parent in req.consumed_lots:
            if parent not in self.state.lots:
                raise UnknownLot(f"consumed lot {parent} does not exist")
        density = lot_density(self.state.lots.get(req.lot) if req.lot else None,
                              material.density_kg_per_l)  # fmt: skip
        quantity = convert(req.quantity, req.uom, material.base_uom, density)
        if quantity == 0 and req.kind is not MovementKind.COUNT:
            raise ValidationError(
                f"{req.kind} of {format_decimal(req.quantity)} {req.uom} is 0 {material.base_uom} "
                f"at the ledger's resolution ({QUANTUM} {material.base_uom})"
            )
        if req.source is not Source.PLC and req.kind in ADVISED_KINDS:
            measured = [
                unit
                for unit in (req.from_unit, req.to_unit)
                if unit is not None and self.state.units[unit].booking is Booking.MEASURED
            ]
            if measured:
                held = self._held_posting(req, material, quantity, digest)
                return held or self._advise(req, material, quantity, measured, digest)
        advice = None
        gauge_unit = req.unit  # a PLC request's own unit, whatever its match books
        if req.source is Source.PLC and req.lot is None:
            req, advice = self._advised(req)
        book = _Book(self.state)
        parts = self._requested(req, material, quantity, book)
        parts += self._consumption(req, book)
        parts += self._lot_handling(req, material, parts, book)
        held = self._held_posting(req, material, quantity, digest)
        if held is not None:  # every rule passed: it posts once signed
            return held
        result = self._commit(req, material, parts, digest)
        stopped = req.source is Source.PLC and req.details.get("settled") is True
        if advice is not None:
            result = replace(result, advice=self._matched(advice, quantity, flow_stopped=stopped))
        if stopped:
            assert gauge_unit is not None
            self._close_at_rest(gauge_unit, advice)
        return result

    # -- electronic signatures (domain.signing_rules) --------------------------

    def _held_posting(
        self, req: PostingRequest, material: MaterialDefinition, quantity: Decimal, digest: str
    ) -> PostingResult | None:
        """`req` held as a pending request where a signature policy catches it."""
        if req.source in (Source.PLC, Source.SYSTEM) or not self._policies:
            return None
        amount, unit = quantity, req.unit
        if req.kind is MovementKind.ADJUSTMENT:
            action = SignatureAction.ADJUSTMENT
        elif req.kind is MovementKind.SCRAP:
            action = SignatureAction.SCRAP
        elif req.kind is MovementKind.COUNT and unit is not None:
            action = SignatureAction.COUNT
            lot = req.lot or current_lot(self.state, unit)
            amount = quantity - self.state.balances.get((unit, lot), Decimal(0))
        else:
            return None
        policy = self._policy(action, amount, unit)
        if policy is None:
            return None
        where = f" {'from' if req.kind is MovementKind.SCRAP else 'at'} {unit}" if unit else ""
        lot_text = f" lot {req.lot}" if req.lot else ""
        summary = (
            f"{req.kind} of {format_decimal(req.quantity)} {req.uom} {material.id}{lot_text}"
            f"{where}" + (f" (difference {format_decimal(amount)} {material.base_uom})"
                          if action is SignatureAction.COUNT else "")
        )  # fmt: skip
        return self._hold(req, policy, digest, summary)

    # -- advices: manual changes of measured units -----------------------------

    def _advise(
        self,
        req: PostingRequest,
        material: MaterialDefinition,
        quantity: Decimal,
        measured: list[StorageUnitId],
        digest: str,
    ) -> PostingResult:
        """Record `req` as an advice of the measured unit it changes (see domain.advices):
        checked as far as it can be before the material moves, booked by the gauge. A
        transfer between two measured units is two linked advices, one per gauge, of the
        lot it names: the source's fall books it out, the target's rise books it in."""
        if len(measured) > 1 and req.lot is None:
            raise ValidationError(
                f"transfer from {req.from_unit} to {req.to_unit}: both units are measured and "
                "each side is booked by its own gauge, so name the lot that moves (--lot)"
            )
        unit_id = measured[0]
        direction = AdviceDirection.OUT if unit_id == req.from_unit else AdviceDirection.IN
        if req.lot is not None:
            lot = self._lot_for(req, material, req.lot)
            if lot is not None and req.kind is MovementKind.ISSUE:
                self._check_issuable(lot)
            if req.from_unit is not None and req.from_unit != unit_id:  # a manual source
                legs = movement_legs(req.from_unit, None, req.lot, quantity)
                self._check_stock(legs, material, str(req.kind))
        elif req.from_unit is not None and req.from_unit != unit_id:  # lots it picks
            shares = _Book(self.state).shares(req.from_unit)
            stock = sum((s.quantity for s in shares if s.quantity > 0), Decimal(0))
            if quantity > stock:
                raise InsufficientStock(
                    f"{req.kind} of {format_decimal(quantity)} {material.base_uom} from "
                    f"{req.from_unit} exceeds its book of {format_decimal(stock)} "
                    f"{material.base_uom}"
                )
        self._consumption(req, _Book(self.state))  # checked now, booked with the first match
        if len(measured) == 1:
            advice = self._record_advice(req, material, quantity, unit_id, direction, digest)
        else:
            assert req.from_unit is not None and req.to_unit is not None
            out_id, in_id = str(uuid.uuid4()), str(uuid.uuid4())
            advice = self._record_advice(
                req, material, quantity, req.from_unit, AdviceDirection.OUT, digest,
                advice_id=out_id, partner_unit=req.to_unit, partner=in_id,
            )  # fmt: skip
            self._record_advice(
                req, material, quantity, req.to_unit, AdviceDirection.IN, digest,
                advice_id=in_id, partner_unit=req.from_unit, partner=out_id,
            )  # fmt: skip
        self.state.keys[advice.idempotency_key] = (MovementId(advice.reference), digest, ())
        return PostingResult(MovementId(advice.reference), advice=advice)

    def _record_advice(
        self,
        req: PostingRequest,
        material: MaterialDefinition,
        quantity: Decimal,
        unit_id: StorageUnitId,
        direction: AdviceDirection,
        digest: str,
        *,
        advice_id: str | None = None,
        partner_unit: StorageUnitId | None = None,
        partner: str | None = None,
    ) -> Advice:
        """One new advice of `unit_id` (audited). `partner`: the other measured unit's
        advice of a transfer between two gauges (the outgoing one holds the request's key)."""
        now = self._now()
        advice_id = advice_id or str(uuid.uuid4())
        key = req.idempotency_key or f"auto:{advice_id}"
        inbound_partner = partner if direction is AdviceDirection.IN else None
        advice = Advice(
            id=advice_id,
            unit=unit_id,
            direction=direction,
            kind=req.kind,
            material=material.id,
            lot=req.lot,
            expected=quantity,
            uom=material.base_uom,
            ref=req.ref,
            user=req.user,
            source=req.source,
            reason=req.reason,
            created_at=now,
            expires_at=window_end(now, self.state.units[unit_id].advice_window_s),
            idempotency_key=f"{key}:in:{inbound_partner}" if inbound_partner else key,
            other_unit=None
            if partner_unit is not None
            else req.to_unit
            if direction is AdviceDirection.OUT
            else req.from_unit,
            consumed_lots=req.consumed_lots,
            consumed_quantities=req.consumed_quantities,
            consumed_units=req.consumed_units,
            expiry=req.expiry,
            partner_unit=partner_unit,
            partner=partner,
        )
        self.state.advices.setdefault(unit_id, []).append(advice)
        self.changes.advices[advice.id] = advice
        self.changes.new_advices[advice.id] = digest
        self._audit_advice("advise", None, advice, req.user, req.reason)
        return advice

    def _advised(self, req: PostingRequest) -> tuple[PostingRequest, Advice | None]:
        """A measured change of a measured unit as it books: to the advice it matches (its
        lot, kind, other unit and reference), else as it came, flagged `unadvised`."""
        unit_id = req.unit
        assert unit_id is not None
        if self.state.units[unit_id].booking is not Booking.MEASURED:
            return req, None
        if req.details.get("drift") is True:  # the gauge drifting at rest: no delivery
            return req, None
        direction = direction_of(req.kind)
        advice = open_advice(self.state.advices.get(unit_id, []), direction, self._now())
        if advice is None:
            return replace(req, details={**req.details, "unadvised": True}), None
        details: dict[str, object] = {**req.details, "advice": advice.id}
        if advice.ref:
            details["ref"] = advice.ref
        if advice.partner_unit is not None:  # the other side is booked by its own gauge
            side = "to" if direction is AdviceDirection.OUT else "from"
            details[f"transfer_{side}"] = advice.partner_unit
        from_unit, to_unit = req.from_unit, req.to_unit
        if advice.kind is MovementKind.TRANSFER:
            if direction is AdviceDirection.IN:
                from_unit = advice.other_unit
            else:
                to_unit = advice.other_unit
        first = advice.matches == 0  # a production's consumption books with its first step
        matched = replace(
            req,
            kind=advice.kind,  # the advice's direction is the change's: same kind or its kin
            lot=advice.lot,
            from_unit=from_unit,
            to_unit=to_unit,
            consumed_lots=advice.consumed_lots if first else (),
            consumed_quantities=advice.consumed_quantities if first else (),
            consumed_units=advice.consumed_units if first else (),
            expiry=advice.expiry,
            ref=advice.ref,
            details=details,
        )
        return matched, advice

    def _matched(self, advice: Advice, quantity: Decimal, *, flow_stopped: bool) -> Advice:
        """Book `quantity` to `advice` (audited: each measured step, and the close)."""
        updated = advice.matched_by(quantity, flow_stopped=flow_stopped, at=self._now())
        self._store_advice(updated)
        why = "measured step" if updated.state is AdviceState.OPEN else "flow stopped"
        self._audit_advice("match", advice, updated, SYSTEM_USER, why)
        return updated

    def _close_at_rest(self, unit_id: StorageUnitId, booked: Advice | None) -> None:
        """The gauge of `unit_id` came to rest: every other open advice there that has
        booked something is done (its flow stopped), whatever this last step's direction."""
        for advice in list(self.state.advices.get(unit_id, ())):
            other = booked is None or advice.id != booked.id
            if advice.state is AdviceState.OPEN and advice.matches and other:
                closed = advice.settled(self._now())
                self._store_advice(closed)
                self._audit_advice("match", advice, closed, SYSTEM_USER, "flow stopped")

    def expire_advices(self, req: ExpireAdvices) -> list[Advice]:
        """Close every open advice past its window (loaded by the store): one that booked
        something closes as matched, one that did not expires. Each is audited."""
        now = self._now()
        closed = []
        for advices in self.state.advices.values():
            for advice in list(advices):
                if advice.state is AdviceState.OPEN and advice.expires_at <= now:
                    updated = advice.expired(now)
                    self._store_advice(updated)
                    self._audit_advice("expire", advice, updated, req.user, "advice window passed")
                    closed.append(updated)
        return closed

    def _store_advice(self, advice: Advice) -> None:
        advices = self.state.advices[advice.unit]
        before = next((a for a in advices if a.id == advice.id), None)
        advices[:] = [advice if a.id == advice.id else a for a in advices]
        self.changes.advices[advice.id] = advice
        if advice.state is AdviceState.MATCHED and (
            before is None or before.state is not advice.state
        ):
            self._review_variance(advice)

    def _audit_advice(
        self, action: str, old: Advice | None, new: Advice, user: str, reason: str
    ) -> None:
        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=user,
                action=action,
                object_type="advice",
                object_id=new.id,
                reason=reason,
                old="" if old is None else canonical_json(advice_document(old)),
                new=canonical_json(advice_document(new)),
            )
        )

    # -- postings: parts -----------------------------------------------------

    def _requested(
        self, req: PostingRequest, material: MaterialDefinition, quantity: Decimal, book: _Book
    ) -> list[_Part]:
        """The parts `req` asks for: one, or a draw split by the source's lot handling."""
        if req.lot is None and req.kind in DRAW_KINDS:
            assert req.from_unit is not None, "validate_posting: a draw has a source"
            shares = book.shares(req.from_unit)
            split = allocate(self.state.units[req.from_unit].lot_handling, shares, quantity)
            stock = sum((s.quantity for s in shares if s.quantity > 0), Decimal(0))
            if req.source is not Source.PLC and quantity > stock:  # also an empty unit
                raise InsufficientStock(
                    f"{req.kind} of {format_decimal(quantity)} {material.base_uom} from "
                    f"{req.from_unit} exceeds its book of {format_decimal(stock)} "
                    f"{material.base_uom}"
                )
            lots = split or [(current_lot(self.state, req.from_unit), quantity)]
        else:
            unit = req.unit
            assert unit is not None
            lots = [(req.lot if req.lot is not None else current_lot(self.state, unit), quantity)]
        if len(lots) == 1:
            return [self._part(req, material, lots[0][0], quantity, (req.quantity, req.uom), book)]
        return [self._part(req, material, lot, q, (q, material.base_uom), book) for lot, q in lots]

    def _part(
        self,
        req: PostingRequest,
        material: MaterialDefinition,
        lot_id: LotId,
        quantity: Decimal,
        posted: tuple[Decimal, str],
        book: _Book,
    ) -> _Part:
        """One requested movement of lot `lot_id`, checked against `book` (then added)."""
        lot = self._lot_for(req, material, lot_id)
        details = dict(req.details)
        if req.ref:
            details["ref"] = req.ref
        if req.kind is MovementKind.COUNT:
            assert req.to_unit is not None
            before = book.get((req.to_unit, lot_id))
            details.update(counted=format_decimal(quantity), book_before=format_decimal(before))
            quantity = quantity - before
        manual = req.source is not Source.PLC
        if manual and req.kind is MovementKind.ISSUE and lot is not None:
            self._check_issuable(lot)
        legs = movement_legs(req.from_unit, req.to_unit, lot_id, quantity)
        if manual:
            self._check_stock(legs, material, str(req.kind), book)
            self._check_capacity(legs, material, str(req.kind), book)
            if req.kind in (MovementKind.COUNT, MovementKind.ADJUSTMENT):
                assert req.to_unit is not None
                self._check_gauge(req, req.to_unit, material, quantity, book)
        book.add(legs)
        new_lot = None
        if lot is None:
            new_lot = Lot(lot_id, material.id, material.default_lot_status, self._now(), req.expiry)
        return _Part(
            req.kind,
            lot_id,
            req.from_unit,
            req.to_unit,
            quantity,
            posted,
            details,
            new_lot=new_lot,
            parents=list(zip(req.consumed_lots, _consumed_quantities(req), strict=True)),
        )

    def _consumption(self, req: PostingRequest, book: _Book) -> list[_Part]:
        """A production's draws of its consumed lots from manual units (released lots,
        in stock), checked on `book` and added to it. A measured unit's draw is booked by
        its gauge, and a consumed lot without a unit only links the genealogy."""
        parts = []
        for lot_id, quantity, unit_id in zip(
            req.consumed_lots, req.consumed_quantities, req.consumed_units, strict=False
        ):
            lot = self.state.lots[lot_id]
            material = self._material(lot.material)
            if unit_id is None or self._unit(unit_id, material.id).booking is Booking.MEASURED:
                continue
            legs = movement_legs(unit_id, None, lot_id, quantity)
            if req.source is not Source.PLC:  # a matched advice's were checked when advised
                self._check_issuable(lot)
                self._check_stock(legs, material, "consumption", book)
            book.add(legs)
            details: dict[str, object] = {"consumed_by": req.lot}
            part = _Part(
                MovementKind.PRODUCTION, lot_id, unit_id, None, quantity,
                (quantity, material.base_uom), details, material=material,
            )  # fmt: skip
            parts.append(part)
        return parts

    def _lot_for(
        self, req: PostingRequest, material: MaterialDefinition, lot_id: LotId
    ) -> Lot | None:
        """The lot `req` books (None: a receipt, production or count creates it)."""
        lot = self.state.lots.get(lot_id)
        if lot is None:
            if req.kind not in LOT_CREATING_KINDS and req.kind is not MovementKind.COUNT:
                raise UnknownLot(f"lot {lot_id} does not exist (receive or produce it first)")
        elif lot.material != material.id:
            raise MaterialMismatch(f"lot {lot_id} is material {lot.material}, not {material.id}")
        return lot

    def _lot_handling(
        self,
        req: PostingRequest,
        material: MaterialDefinition,
        parts: list[_Part],
        book: _Book,
    ) -> list[_Part]:
        """The ledger's own parts after the requested ones: a `blend` unit's lots merged
        into one new lot, a `single` unit's second lot refused, and the lots of a unit a
        draw left (nearly) empty closed to zero."""
        extra: list[_Part] = []
        for unit_id in dict.fromkeys(p.to_unit for p in parts if p.to_unit is not None):
            rule = self.state.units[unit_id].lot_handling
            if rule not in (LotHandling.BLEND, LotHandling.SINGLE):
                continue  # the writer loads the present lots only for these two rules
            stocked = [s for s in book.shares(unit_id) if s.quantity > 0]
            if len(stocked) < 2:
                continue
            if rule is LotHandling.BLEND:
                advice = req.details.get("advice")
                delivery = advice if isinstance(advice, str) else None
                extra += self._blend(unit_id, material, stocked, parts, book, delivery)
            elif req.source is not Source.PLC:
                new = ", ".join(sorted({p.lot for p in parts if p.to_unit == unit_id}))
                held = ", ".join(sorted(s.lot for s in stocked if s.lot not in new.split(", ")))
                raise UnitHoldsOtherLot(
                    f"storage unit {unit_id} holds lot {held} and takes one lot at a time "
                    f"(lot_handling single): lot {new} can go in once it is empty"
                )
        drawn = {p.from_unit: p.material or material for p in parts if p.from_unit is not None}
        for unit_id, unit_material in drawn.items():
            shares = book.shares(unit_id)
            total = sum((s.quantity for s in shares), Decimal(0))
            below = self._empty_below(self.state.units[unit_id], unit_material)
            if not shares or below <= 0 or total >= below:
                continue
            for share in sorted(shares, key=lambda s: (s.entered, s.lot)):
                extra.append(
                    _Part(
                        MovementKind.ADJUSTMENT,
                        share.lot,
                        None,
                        unit_id,
                        -share.quantity,
                        (-share.quantity, unit_material.base_uom),
                        {"closed": "unit empty"},
                        system=True,
                        reason=UNIT_EMPTY,
                        material=unit_material,
                    )
                )
                book.add([(unit_id, share.lot, -share.quantity)])
        return extra

    def _blend(
        self,
        unit_id: StorageUnitId,
        material: MaterialDefinition,
        stocked: list[LotShare],
        parts: list[_Part],
        book: _Book,
        advice: str | None,
    ) -> list[_Part]:
        """Everything in `unit_id` into a new blend lot: one blend movement out of each
        input lot, one into the blend lot (genealogy with each input's quantity).

        A delivery books in several measured steps (one per settled or `max_interval_s`
        spell): its first step makes the blend lot `<unit>-BLEND-<advice id>`, and each
        later step of the same advice blends into that lot while it is still the unit's
        (one blend per delivery, not one per gauge step)."""
        inputs = sorted(stocked, key=lambda s: (s.entered, s.lot))
        created = {p.lot: p.new_lot for p in parts if p.new_lot is not None}
        lots = [self.state.lots.get(s.lot) or created[s.lot] for s in inputs]
        expiries = [lot.expiry for lot in lots if lot is not None and lot.expiry is not None]
        status = most_restrictive([lot.status for lot in lots if lot is not None])
        blend_id = LotId(f"{unit_id}-BLEND-{(advice or uuid.uuid4().hex)[:8].upper()}")
        existing = self.state.lots.get(blend_id)
        ongoing = [s for s in inputs if s.lot == blend_id]
        if existing is not None and ongoing and existing.status == status:
            blend: Lot = existing
            inputs = [s for s in inputs if s.lot != blend_id]
        else:
            if existing is not None:  # an earlier delivery's blend, gone from the unit
                blend_id = LotId(f"{unit_id}-BLEND-{uuid.uuid4().hex[:8].upper()}")
            blend = Lot(blend_id, material.id, status, self._now(), min(expiries, default=None))
        total = sum((s.quantity for s in inputs), Decimal(0))
        base = material.base_uom
        out = [
            _Part(
                MovementKind.BLEND, s.lot, unit_id, None, s.quantity, (s.quantity, base),
                {"blend": blend.id}, system=True, reason=BLENDED,
            )
            for s in inputs
        ]  # fmt: skip
        into = _Part(
            MovementKind.BLEND, blend.id, None, unit_id, total, (total, base),
            {"inputs": [s.lot for s in inputs]}, system=True, reason=BLENDED,
            new_lot=None if blend is existing else blend,
            parents=[(s.lot, s.quantity) for s in inputs],
        )  # fmt: skip
        for part in (*out, into):
            book.add(movement_legs(part.from_unit, part.to_unit, part.lot, part.quantity))
        return [*out, into]

    def _empty_below(self, unit: StorageUnit, material: MaterialDefinition) -> Decimal:
        """The unit's `zero_lot_threshold` in the material's base unit (default: 0.5 % of
        a measured unit's capacity, 0 for a manual unit); 0 never closes lots."""
        if unit.zero_lot_threshold is not None:
            return unit.zero_lot_threshold
        if unit.booking is Booking.MANUAL:  # counted stock (drums, bags): no gauge noise
            return Decimal(0)
        try:
            capacity = convert(
                unit.capacity, unit.capacity_uom, material.base_uom, material.density_kg_per_l
            )
        except UnitConversionError:
            return Decimal(0)
        return capacity * DEFAULT_EMPTY_PCT / 100

    def _commit(
        self,
        req: PostingRequest,
        material: MaterialDefinition,
        parts: list[_Part],
        digest: str,
    ) -> PostingResult:
        """Give the checked parts their ids and keys and append them: the first carries
        the request's key and the ids of the others, which point back to it."""
        ids = [new_movement_id() for _ in parts]
        head = ids[0]
        movements: list[Movement] = []
        for index, (part, movement_id) in enumerate(zip(parts, ids, strict=True)):
            moved = part.material or material
            details = part.details
            if index == 0 and len(parts) > 1:
                details = {**details, "parts": list(ids[1:])}
            elif index > 0:
                details = {**details, "part_of": head}
            movement = Movement(
                seq=0,
                id=movement_id,
                kind=part.kind,
                material=moved.id,
                lot=part.lot,
                from_unit=part.from_unit,
                to_unit=part.to_unit,
                quantity=part.quantity,
                uom=moved.base_uom,
                posted_quantity=part.posted[0],
                posted_uom=part.posted[1],
                timestamp=self._now(),
                user=SYSTEM_USER if part.system else req.user,
                source=Source.SYSTEM if part.system else req.source,
                reason=part.reason or req.reason,
                idempotency_key=(req.idempotency_key or "")
                if index == 0
                else f"part:{head}:{index + 1}",
                reverses=None,
                writer=self.writer,
                details=details,
            )
            if part.new_lot is not None:
                self._create_lot(part.new_lot, movement)
            for parent, quantity in part.parents:
                self.changes.links.append((parent, part.lot, movement.id, quantity))
            legs = movement_legs(part.from_unit, part.to_unit, part.lot, part.quantity)
            appended = self._append(
                movement, legs, digest, old="", parts=tuple(ids[1:]) if index == 0 else ()
            )
            if part.kind in CURRENT_LOT_KINDS and part.to_unit is not None:
                self.state.current_lots[part.to_unit] = part.lot
            assert appended.movement is not None
            movements.append(appended.movement)  # as stored: with its signatures, if any
        return PostingResult(
            head, movement=movements[0], parts=tuple(ids[1:]), movements=tuple(movements)
        )

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
            policy = self._policy(
                SignatureAction.REVERSAL, original.quantity, original.to_unit or original.from_unit
            )
            if policy is not None:
                quantity = format_decimal(original.quantity)
                summary = (
                    f"reversal of {original.kind} {original.id} ({quantity} {original.uom} "
                    f"{original.material} lot {original.lot})"
                )
                return self._hold(req, policy, digest, summary)
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
            details={"reversed_kind": str(original.kind)}
            | (
                {"corrects_period": closed.id}
                if (closed := self._corrects(original.timestamp))
                else {}
            ),
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
        if req.source is not Source.SYSTEM:
            policy = self._policy(SignatureAction.LOT_STATUS, Decimal(0), None, req.status)
            if policy is not None:
                summary = f"lot {lot.id} ({lot.material}): {lot.status} -> {req.status}"
                return self._hold(req, policy, digest, summary)
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

    def set_lot_quality(self, req: LotQualityRequest) -> PostingResult:
        """Set a lot's properties, retest and expiry dates, certificate; audited old ->
        new (nothing when nothing changes). Answers `lot:<id>` with the lot as it is
        now, or `request:<id>` where a `master-data` policy holds the change."""
        lot = self.state.lots.get(req.lot)
        if lot is None:
            raise UnknownLot(f"lot {req.lot} does not exist")
        old = lot.quality
        quality = LotQuality(
            old.properties if req.properties is None else req.properties,
            old.retest if req.retest is None else req.retest,
            old.certificate if req.certificate is None else req.certificate,
        )
        updated = replace(lot, quality=quality, expiry=req.expiry or lot.expiry)
        if updated == lot:
            return PostingResult(MovementId(f"{LOT_PREFIX}{lot.id}"), lot=lot)
        if req.source is not Source.SYSTEM:
            policy = self._policy(SignatureAction.MASTER_DATA, Decimal(0), None)
            if policy is not None:
                digest = request_fingerprint(req)
                expiry = f", expiry {req.expiry.isoformat()}" if req.expiry else ""
                summary = f"quality data of lot {lot.id} ({lot.material}): {describe(quality)}"
                summary += expiry
                return self._hold(req, policy, digest, summary)
        self.state.lots[lot.id] = updated
        self.changes.lot_quality[lot.id] = updated

        def data(value: Lot, signed: dict[str, object] | None = None) -> str:
            expiry = value.expiry.isoformat() if value.expiry else None
            return canonical_json({**value.quality.document(), "expiry": expiry, **(signed or {})})

        self.changes.audits.append(
            PendingAudit(
                timestamp=self._now(),
                user=req.user,
                action="quality",
                object_type="lot",
                object_id=lot.id,
                reason=req.reason,
                old=data(lot),
                new=data(updated, self._signing),
            )
        )
        return PostingResult(MovementId(f"{LOT_PREFIX}{lot.id}"), lot=updated)

    def expire_lots(self, req: ExpireLots) -> list[PostingResult]:
        """Released lots past their expiry (loaded by the store) become expired."""
        results = []
        for lot in sorted(self.state.lots.values(), key=lambda lot: lot.id):
            if (
                lot.status is LotStatus.RELEASED
                and lot.expiry is not None
                and lot.expiry < req.today
            ):
                change = LotStatusRequest(
                    lot.id, LotStatus.EXPIRED, f"expired on {lot.expiry.isoformat()}",
                    "system", Source.SYSTEM,
                )  # fmt: skip
                results.append(self.set_lot_status(change, payload_hash(change)))
        return results

    def announce_lots(self, req: AnnounceLots) -> tuple[list[Lot], list[PostingResult]]:
        """Create the lots that are new, change the status of the others; every check
        first, so a refused announcement changes nothing. Returns the lots as now and
        the lot-status movements posted."""
        named = [a.lot for a in req.lots]
        if len(set(named)) != len(named):
            twice = sorted({lot for lot in named if named.count(lot) > 1})
            raise ValidationError(f"lot {', '.join(twice)} is announced twice in one request")
        created: list[Lot] = []
        changes: list[LotStatusRequest] = []
        data: list[LotQualityRequest] = []
        for announced in req.lots:
            material = self._material(announced.material)
            lot = self.state.lots.get(announced.lot)
            quality = announced.quality
            if quality is not None:
                LotQualityRequest(
                    announced.lot, req.reason, req.user, req.source, quality.properties,
                    quality.retest, None, quality.certificate,
                ).check()  # fmt: skip
            if lot is None:
                status = announced.status or material.default_lot_status
                created.append(
                    Lot(
                        announced.lot,
                        material.id,
                        status,
                        self._now(),
                        announced.expiry,
                        quality or LotQuality(),
                    )
                )
                continue
            if quality is not None:  # what the announcement names; the rest stays
                data.append(
                    LotQualityRequest(
                        lot.id,
                        req.reason,
                        req.user,
                        req.source,
                        quality.properties or None,
                        quality.retest,
                        None,
                        quality.certificate or None,
                    )
                )
            if lot.material != material.id:
                raise MaterialMismatch(
                    f"lot {lot.id} is material {lot.material}, not {material.id}"
                )
            if announced.expiry is not None and announced.expiry != lot.expiry:
                raise ValidationError(
                    f"lot {lot.id} expires {lot.expiry or 'never'}; an announcement cannot change "
                    f"its expiry to {announced.expiry}"
                )
            if announced.status is not None and announced.status != lot.status:
                check_transition(lot.id, lot.status, announced.status)
                changes.append(
                    LotStatusRequest(lot.id, announced.status, req.reason, req.user, req.source)
                )
        for lot in created:
            self._add_lot(lot, req.user, req.reason)
        # quality data a `master-data` policy holds is answered with its request
        held = [self.set_lot_quality(quality_change) for quality_change in data]
        posted = [r for r in held if r.movement_id.startswith(REQUEST_PREFIX)]
        posted += [self.set_lot_status(change, payload_hash(change)) for change in changes]
        return [self.state.lots[a.lot] for a in req.lots], posted

    def master_data(self, update: MasterDataUpdate) -> int | PostingResult:
        """Create or update materials and units; returns how many changed (each audited).
        Material definitions from a business system (not the config's, source `system`)
        that a `master-data` policy catches are held instead: the pending request."""
        if update.source is not Source.SYSTEM:
            if update.units:
                raise ValidationError("storage units come from the configuration only")
            changing = [m for m in update.materials if self.state.materials.get(m.id) != m]
            policy = (
                self._policy(SignatureAction.MASTER_DATA, Decimal(0), None) if changing else None
            )
            if policy is not None:
                digest = request_fingerprint(update)
                summary = (
                    "material definitions from "
                    + update.reason
                    + ": "
                    + ", ".join(
                        _material_change(self.state.materials.get(m.id), m) for m in changing
                    )
                )
                return self._hold(update, policy, digest, summary)
        changed = 0
        now = self._now()
        reason = update.reason
        if self._signing is not None:  # the trail names the request its signatures are on
            reason = f"{reason}; signed as {self._signing['request']}"
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
                    reason=reason,
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
        movement_id, seen_digest, parts = seen
        if seen_digest != digest:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for movement {movement_id} "
                "with a different payload"
            )
        return PostingResult(movement_id, replayed=True, parts=parts)

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
        pending: _Book | None = None,
    ) -> None:
        for unit, lot, delta in legs:
            if delta >= 0:
                continue
            key = (unit, lot)
            book = pending.get(key) if pending else self.state.balances.get(key, Decimal(0))
            if book + delta < 0:
                raise InsufficientStock(
                    f"{what} of {format_decimal(-delta)} {material.base_uom} of lot {lot} "
                    f"from {unit} exceeds the book balance of {format_decimal(book)} "
                    f"{material.base_uom}"
                )

    def _check_gauge(
        self,
        req: PostingRequest,
        unit_id: StorageUnitId,
        material: MaterialDefinition,
        delta: Decimal,
        book: _Book,
    ) -> None:
        """In a measured unit the gauge is the quantity truth: a count or adjustment may set
        the lots' composition and correct the book towards the latest measurement, but
        not leave the unit's book further from it than its tolerance (zero_lot_threshold,
        default 0.5 % of capacity). Unchecked while the unit was never measured."""
        unit = self.state.units[unit_id]
        measured = self.state.measured.get(unit_id)
        total = self.state.unit_totals.get(unit_id)
        if unit.booking is not Booking.MEASURED or measured is None or total is None:
            return
        before = total + book.unit_delta(unit_id)
        after = before + delta
        tolerance = self._empty_below(unit, material)
        if abs(after - measured) > tolerance and abs(after - measured) > abs(before - measured):
            uom = material.base_uom
            raise DisagreesWithGauge(
                f"{req.kind} of lot {req.lot} would bring {unit_id}'s book to "
                f"{format_decimal(after)} {uom}, {format_decimal(abs(after - measured))} {uom} "
                f"from the {format_decimal(measured)} {uom} its gauge measures (tolerance "
                f"{format_decimal(tolerance)} {uom}): in a measured unit the gauge is the "
                "quantity truth; recount, or check the gauge"
            )

    def _check_capacity(
        self,
        legs: list[tuple[StorageUnitId, LotId, Decimal]],
        material: MaterialDefinition,
        what: str,
        pending: _Book,
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
            total += pending.unit_delta(unit_id)
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
        self._add_lot(
            lot, movement.user, f"first {movement.kind} {movement.id}", movement.timestamp
        )

    def _add_lot(self, lot: Lot, user: str, reason: str, timestamp: str | None = None) -> None:
        self.state.lots[lot.id] = lot
        self.changes.new_lots.append(lot)
        self.changes.audits.append(
            PendingAudit(
                timestamp=timestamp or self._now(),
                user=user,
                action="create",
                object_type="lot",
                object_id=lot.id,
                reason=reason,
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
        parts: tuple[MovementId, ...] = (),
    ) -> PostingResult:
        self._check_open(movement.timestamp)
        if not movement.idempotency_key:
            movement = replace(movement, idempotency_key=f"auto:{movement.id}")
        if self._signing is not None:  # posted on its signatures: they go with it
            movement = replace(movement, details={**movement.details, **self._signing})
        record = movement_record(movement, digest)  # serialises details: may raise, so first
        state = self.state
        for unit, lot, delta in legs:
            key = (unit, lot)
            before = state.balances.get(key, Decimal(0))
            new = before + delta
            state.balances[key] = new
            if before <= 0 < new:  # the lot (re)enters the unit: last in fifo order
                state.entered[key] = f"{movement.timestamp}#{len(self.changes.movements):07d}"
            self.changes.balances[key] = (movement.material, new, state.entered.get(key, ""))
            if unit in state.unit_totals:
                state.unit_totals[unit] += delta
            present = state.present.get(unit)
            if present is not None:
                if new:
                    present.add(lot)
                else:
                    present.discard(lot)
        state.keys[movement.idempotency_key] = (movement.id, digest, parts)
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


def _material_change(old: MaterialDefinition | None, new: MaterialDefinition) -> str:
    """`M1 (new)`, `M2 (description, density_kg_per_l)`: what a signer approves."""
    if old is None:
        return f"{new.id} (new)"
    before, after = master_document(old), master_document(new)
    return f"{new.id} ({', '.join(k for k in after if before.get(k) != after[k])})"


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

    def plain(v: object) -> object:
        if isinstance(v, tuple):
            return [plain(item) for item in v]
        if isinstance(v, Decimal):
            return format_decimal(v)
        return v if v is None or isinstance(v, dict | int | str) else str(v)

    return {f.name: plain(getattr(request, f.name)) for f in fields(request)}


def lot_document(lot: Lot) -> dict[str, object]:
    """A lot as audited when it is created (status changes are lot-status movements)."""
    return {
        "lot": lot.id,
        "material": lot.material,
        "status": str(lot.status),
        "created_at": lot.created_at,
        "expiry": lot.expiry.isoformat() if lot.expiry else None,
    } | ({} if lot.quality.is_empty() else lot.quality.document())

"""ISA-95 inventory objects as plain values: materials, storage units, lots, movements."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NewType, TypeVar

if TYPE_CHECKING:
    from inventory_core.domain.advices import Advice

MaterialId = NewType("MaterialId", str)
StorageUnitId = NewType("StorageUnitId", str)
LotId = NewType("LotId", str)
MovementId = NewType("MovementId", str)


class LotStatus(StrEnum):
    QUARANTINE = "quarantine"
    RELEASED = "released"
    HOLD = "hold"
    REJECTED = "rejected"
    EXPIRED = "expired"


class MovementKind(StrEnum):
    RECEIPT = "receipt"
    ISSUE = "issue"
    PRODUCTION = "production"
    TRANSFER = "transfer"
    ADJUSTMENT = "adjustment"
    COUNT = "count"
    SCRAP = "scrap"
    LOT_STATUS = "lot-status"
    REVERSAL = "reversal"
    BLEND = "blend"  # the ledger's own: lots of a `blend` unit merged into a new lot


class StorageKind(StrEnum):
    TANK = "tank"
    SILO = "silo"
    BIN = "bin"


class LotHandling(StrEnum):
    """How lots share a unit (`lot_handling`): see `domain.lot_handling`."""

    SINGLE = "single"
    FIFO = "fifo"
    LIFO = "lifo"
    MIXED = "mixed"
    BLEND = "blend"


class Booking(StrEnum):
    """Where a unit's quantity truth is (`booking`): its gauge or load cells (`measured`,
    booked by the PLC pipeline) or the manual postings (`manual`)."""

    MEASURED = "measured"
    MANUAL = "manual"


class Source(StrEnum):
    """Who or what originated a posting (a bounded set: it is a metric label)."""

    MANUAL = "manual"
    CLI = "cli"
    OPCUA = "opcua"
    PLC = "plc"
    SYSTEM = "system"
    ERP = "erp"  # a business system (Level 4) posting through the ledger API
    API = "api"  # the HTTP API (http_api)


# Kinds a caller posts with a quantity (reversal and lot-status have their own calls).
QUANTITY_KINDS = frozenset(
    {
        MovementKind.RECEIPT,
        MovementKind.ISSUE,
        MovementKind.PRODUCTION,
        MovementKind.TRANSFER,
        MovementKind.ADJUSTMENT,
        MovementKind.COUNT,
        MovementKind.SCRAP,
    }
)
# Kinds that create a lot on first use.
LOT_CREATING_KINDS = frozenset({MovementKind.RECEIPT, MovementKind.PRODUCTION})
# Movements that make their lot the target unit's current lot (PLC postings book to it).
CURRENT_LOT_KINDS = frozenset(
    {MovementKind.RECEIPT, MovementKind.PRODUCTION, MovementKind.COUNT, MovementKind.BLEND}
)
# Draws that may name no lot: the source unit's lot handling picks the lot(s).
DRAW_KINDS = frozenset({MovementKind.ISSUE, MovementKind.TRANSFER, MovementKind.SCRAP})


# How long an advice waits for its measured change (`advice_window_s`).
DEFAULT_ADVICE_WINDOW_S = 7200


def opening_lot(unit: str) -> LotId:
    """The lot of a unit's opening count, and its current lot before any receipt."""
    return LotId(f"{unit}-OPEN")


@dataclass(frozen=True, slots=True)
class MaterialDefinition:
    """ISA-95 MaterialDefinition: one kind of material and its base unit."""

    id: MaterialId
    description: str
    base_uom: str
    density_kg_per_l: Decimal | None = None
    default_lot_status: LotStatus = LotStatus.QUARANTINE
    material_class: str | None = None


@dataclass(frozen=True, slots=True)
class StorageUnit:
    """ISA-95 storage unit (equipment level 9) in the site/area hierarchy."""

    id: StorageUnitId
    site: str
    area: str
    kind: StorageKind
    capacity: Decimal
    capacity_uom: str
    material: MaterialId | None = None
    description: str = ""
    lot_handling: LotHandling = LotHandling.FIFO
    # Below this book quantity (material's base unit) the unit is empty and its lots are
    # closed to zero; None: 0.5 % of capacity in a measured unit, never in a manual one.
    zero_lot_threshold: Decimal | None = None
    booking: Booking = Booking.MANUAL
    advice_window_s: int = DEFAULT_ADVICE_WINDOW_S


@dataclass(frozen=True, slots=True)
class LotProperty:
    """One measured or certified property of a lot (ISA-95 MaterialLotProperty)."""

    name: str
    value: str  # as certified: a number or a text (e.g. "conforms")
    unit: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value, "unit": self.unit}


@dataclass(frozen=True, slots=True)
class LotQuality:
    """What a lot carries beyond its identity and status."""

    properties: tuple[LotProperty, ...] = ()
    retest: date | None = None
    certificate: str = ""

    def is_empty(self) -> bool:
        return not self.properties and self.retest is None and not self.certificate

    def document(self) -> dict[str, Any]:
        return {
            "properties": [p.as_dict() for p in self.properties],
            "retest": self.retest.isoformat() if self.retest else None,
            "certificate": self.certificate,
        }


@dataclass(frozen=True, slots=True)
class Lot:
    """ISA-95 MaterialLot: a uniquely identified amount of one material."""

    id: LotId
    material: MaterialId
    status: LotStatus
    created_at: str
    expiry: date | None = None
    quality: LotQuality = field(default_factory=lambda: LotQuality())

    def retest_due(self, today: date) -> bool:
        """Past its retest date: the lot must be retested before it is used."""
        return self.quality.retest is not None and self.quality.retest < today


@dataclass(frozen=True, slots=True)
class PostingRequest:
    """A request to post a quantity movement; quantity in `uom` as the caller gave it.

    Sign conventions: receipt/issue/transfer/scrap/production quantities are
    positive; an adjustment's quantity is the signed delta at `to_unit`; a
    count's quantity is the counted (absolute) quantity at `to_unit`.

    `lot=None` is resolved inside the posting transaction: a draw (issue, transfer,
    scrap) takes the lot(s) its source unit's lot handling picks; anything else (a
    PLC-derived rise) books to the newest lot in the unit, else the lot last received,
    produced or counted into it, else `opening_lot(unit)`.
    """

    kind: MovementKind
    material: MaterialId
    lot: LotId | None
    quantity: Decimal
    uom: str
    from_unit: StorageUnitId | None = None
    to_unit: StorageUnitId | None = None
    idempotency_key: str | None = None
    reason: str = ""
    user: str = "system"
    source: Source = Source.MANUAL
    consumed_lots: tuple[LotId, ...] = ()
    expiry: date | None = None
    details: dict[str, object] = field(default_factory=dict)
    ref: str = ""  # the business document behind it (ERP delivery, order number)
    # A production's consumption, parallel to consumed_lots (empty: genealogy only): the
    # quantity of each consumed lot, in its material's base unit, and the storage unit it
    # was drawn from (None: not drawn from a unit; a manual unit books the draw).
    consumed_quantities: tuple[Decimal, ...] = ()
    consumed_units: tuple[StorageUnitId | None, ...] = ()

    @property
    def unit(self) -> StorageUnitId | None:
        """The storage unit a reader thinks of first: target, else source."""
        return self.to_unit or self.from_unit


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    """Reverse an earlier movement: post its exact negation."""

    movement_id: MovementId
    reason: str
    user: str = "system"
    source: Source = Source.MANUAL
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class LotStatusRequest:
    """Change a lot's status (audited, no quantity change)."""

    lot: LotId
    status: LotStatus
    reason: str
    user: str = "system"
    source: Source = Source.MANUAL
    idempotency_key: str | None = None


MAX_CURSOR = 2**63 - 1  # cursors are row numbers (BIGINT): a larger one is no cursor


@dataclass(frozen=True, slots=True)
class Movement:
    """One posted ledger movement as stored (append-only).

    Effect on book balances: `-quantity` at `from_unit` and `+quantity` at
    `to_unit` for `lot` (see `legs`). `quantity` is in the material's base
    unit; `posted_quantity`/`posted_uom` keep what the caller sent.
    """

    seq: int
    id: MovementId
    kind: MovementKind
    material: MaterialId
    lot: LotId
    from_unit: StorageUnitId | None
    to_unit: StorageUnitId | None
    quantity: Decimal
    uom: str
    posted_quantity: Decimal
    posted_uom: str
    timestamp: str
    user: str
    source: Source
    reason: str
    idempotency_key: str
    reverses: MovementId | None
    writer: str
    details: dict[str, object]

    @property
    def unit(self) -> StorageUnitId | None:
        """The storage unit a reader thinks of first: target, else source."""
        return self.to_unit or self.from_unit

    def legs(self) -> list[tuple[StorageUnitId, LotId, Decimal]]:
        return movement_legs(self.from_unit, self.to_unit, self.lot, self.quantity)


def movement_legs(
    from_unit: StorageUnitId | None,
    to_unit: StorageUnitId | None,
    lot: LotId,
    quantity: Decimal,
) -> list[tuple[StorageUnitId, LotId, Decimal]]:
    """Book-balance changes a movement makes: one or two (unit, lot, delta) legs."""
    legs: list[tuple[StorageUnitId, LotId, Decimal]] = []
    if from_unit is not None:
        legs.append((from_unit, lot, -quantity))
    if to_unit is not None:
        legs.append((to_unit, lot, quantity))
    return legs


@dataclass(frozen=True, slots=True)
class PostingResult:
    """What a posting returns: the movement id, whether the key was replayed, and
    the new movement itself (None for a replay).

    A posting that books several lots (a draw split by the unit's lot handling, a
    blend, lots closed when the unit ran empty) is one atomic group: `movement_id` is
    its first movement, `parts` the ids of the others (also on a replay), `movements`
    all of them as posted (empty for a replay).

    A manual posting into or out of a measured unit books nothing: it becomes an
    advice, `movement_id` is `advice:<id>` and `advice` the advice recorded. A PLC
    movement that an advice explains returns that advice as it left it. A change of a
    lot's quality data is no movement either: `lot:<id>`, with `lot` as changed."""

    movement_id: MovementId
    replayed: bool = False
    movement: Movement | None = field(default=None, compare=False)
    parts: tuple[MovementId, ...] = ()
    movements: tuple[Movement, ...] = field(default=(), compare=False)
    advice: Advice | None = field(default=None, compare=False)
    # A lot whose quality data the request changed (`lot:<id>`), as it is now.
    lot: Lot | None = field(default=None, compare=False)

    @property
    def movement_ids(self) -> tuple[MovementId, ...]:
        return (self.movement_id, *self.parts)


@dataclass(frozen=True, slots=True)
class Balance:
    """Book quantity of one lot in one storage unit, in the material's base unit."""

    unit: StorageUnitId
    lot: LotId
    material: MaterialId
    quantity: Decimal
    uom: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """A measured quantity of a storage unit (from a PLC), in the material's base unit."""

    unit: StorageUnitId
    quantity: Decimal
    uom: str
    timestamp: str
    quality: str = "good"


_Q = TypeVar("_Q", Decimal, float)


def discrepancy(measured: _Q | None, book: _Q | None) -> _Q | None:
    """Measured minus book (positive: more in the unit than the books say); None when
    either is unknown. The one definition: reconciliation and the live plant view use it."""
    if measured is None or book is None:
        return None
    return measured - book


@dataclass(frozen=True, slots=True)
class ReconciliationLine:
    """Book vs measured for one storage unit: discrepancy = measured - book."""

    unit: StorageUnitId
    material: MaterialId | None
    uom: str
    book: Decimal
    measured: Decimal | None
    measured_at: str | None
    capacity: Decimal

    @property
    def discrepancy(self) -> Decimal | None:
        return discrepancy(self.measured, self.book)

    @property
    def discrepancy_pct_of_capacity(self) -> Decimal | None:
        d = self.discrepancy
        if d is None or self.capacity == 0:
            return None
        return (d * 100 / self.capacity).quantize(Decimal("0.01"))


@dataclass(frozen=True, slots=True)
class GenealogyLink:
    """One edge of the lot genealogy graph: `parent` went into `child`."""

    parent: LotId
    child: LotId
    movement_id: MovementId
    depth: int
    quantity: Decimal | None = None  # how much of the parent went in (None: not recorded)


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """The first broken record found by audit verification."""

    chain: str
    seq: int | None
    record_id: int | None
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    chains: dict[str, int]
    records: int
    movements: int
    problems: tuple[VerifyProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class MasterDataUpdate:
    """Materials and storage units to create or update, audited: from the config
    (source `system`), or material definitions from a business system (B2MML), which a
    `master-data` signature policy holds for signatures."""

    materials: tuple[MaterialDefinition, ...]
    units: tuple[StorageUnit, ...]
    user: str = "system"
    reason: str = "configuration"
    source: Source = Source.SYSTEM
    idempotency_key: str | None = None  # (held requests keep theirs: there is none)


@dataclass(frozen=True, slots=True)
class AnnouncedLot:
    """A lot a business system announces before it arrives (B2MML MaterialLot):
    `status`/`expiry` None leave the lot's own (or the material's default) as is."""

    lot: LotId
    material: MaterialId
    status: LotStatus | None = None
    expiry: date | None = None
    quality: LotQuality | None = None  # properties, retest, certificate (None: as is)


@dataclass(frozen=True, slots=True)
class AnnounceLots:
    """Create the announced lots that do not exist yet and change the status of those
    that do, all or none, audited (a status change is a lot-status movement)."""

    lots: tuple[AnnouncedLot, ...]
    user: str = "system"
    source: Source = Source.ERP
    reason: str = "announced"


@dataclass(frozen=True, slots=True)
class ExpireAdvices:
    """Close the open advices past their window (a periodic task of the service)."""

    user: str = "system"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A change or attempt worth recording that is not a movement (e.g. a denied call)."""

    user: str
    action: str
    object_type: str
    object_id: str
    reason: str
    details: dict[str, object] = field(default_factory=dict)

"""Advices: manual postings into or out of a measured unit, matched to what the gauge books.

In a `booking = "measured"` unit the PLC pipeline books every physical change once.
A manual receipt, issue, transfer or production there would book it a second time,
so it becomes an *advice* instead: what is expected to arrive or leave (lot, quantity,
reference). The PLC-derived movements of the same direction that follow book to the
advised lot, at the measured quantity, until the flow stops; the difference from the
advised quantity is the advice's variance. Pure values and rules; the planner applies
them inside the posting transaction, so every writer sharing a ledger agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from inventory_core.domain.derivation import format_utc
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    Source,
    StorageUnitId,
)
from inventory_core.domain.units import format_decimal

ADVICE_PREFIX = "advice:"  # a posting that became an advice answers with this id


class AdviceDirection(StrEnum):
    IN = "in"  # a rise of the unit's measurement: receipt, production, transfer into it
    OUT = "out"  # a fall: issue, transfer out of it


class AdviceState(StrEnum):
    OPEN = "open"  # waiting for (more of) its measured change
    MATCHED = "matched"  # the flow stopped: booked, variance known
    EXPIRED = "expired"  # nothing measured within the window


# Manual postings that become advices when a measured unit takes part: each moves
# material the gauge sees (a scrap drained out of a tank too).
ADVISED_KINDS = frozenset(
    {
        MovementKind.RECEIPT,
        MovementKind.ISSUE,
        MovementKind.TRANSFER,
        MovementKind.PRODUCTION,
        MovementKind.SCRAP,
    }
)


@dataclass(frozen=True, slots=True)
class Advice:
    """An expected change of one measured unit and what the gauge booked for it so far.

    `other_unit`: the manual unit on the other side of an advised transfer (the matched
    movement books a transfer to or from it). Quantities in the material's base unit.
    """

    id: str
    unit: StorageUnitId
    direction: AdviceDirection
    kind: MovementKind
    material: MaterialId
    lot: LotId | None
    expected: Decimal
    uom: str
    ref: str
    user: str
    source: Source
    reason: str
    created_at: str
    expires_at: str
    idempotency_key: str
    other_unit: StorageUnitId | None = None
    consumed_lots: tuple[LotId, ...] = ()
    consumed_quantities: tuple[Decimal, ...] = ()  # see PostingRequest
    consumed_units: tuple[StorageUnitId | None, ...] = ()
    expiry: date | None = None
    # A transfer between two measured units: the other unit and its advice (each side is
    # booked by its own gauge; `other_unit` stays None, the matched movement has one leg).
    partner_unit: StorageUnitId | None = None
    partner: str | None = None
    state: AdviceState = AdviceState.OPEN
    matched: Decimal = Decimal(0)
    matches: int = 0
    closed_at: str | None = None

    @property
    def variance(self) -> Decimal | None:
        """Measured minus advised, once the advice matched something (None before)."""
        return self.matched - self.expected if self.matches else None

    @property
    def variance_pct(self) -> Decimal | None:
        variance = self.variance
        if variance is None or self.expected == 0:
            return None
        return (variance * 100 / self.expected).quantize(Decimal("0.01"))

    @property
    def reference(self) -> str:
        """The id a caller gets back for the posting that became this advice."""
        return f"{ADVICE_PREFIX}{self.id}"

    def matched_by(self, quantity: Decimal, *, flow_stopped: bool, at: str) -> Advice:
        """This advice after a measured movement of `quantity` booked to it: closed when
        the flow stopped (the gauge settled), else still open for the rest."""
        closed = flow_stopped
        return replace(
            self,
            matched=self.matched + quantity,
            matches=self.matches + 1,
            state=AdviceState.MATCHED if closed else AdviceState.OPEN,
            closed_at=at if closed else None,
        )

    def settled(self, at: str) -> Advice:
        """Closed as matched: the unit's gauge came to rest after this advice booked
        something (the last step of a delivery may read as a small fall: noise, or the
        line draining back), so the next change of its direction is not this one's."""
        assert self.matches, "only an advice that booked something closes on a rest"
        return replace(self, state=AdviceState.MATCHED, closed_at=at)

    def expired(self, at: str) -> Advice:
        """Past its window: closed as matched when something was booked to it (the flow
        was never seen to stop, e.g. across a gap), else expired."""
        state = AdviceState.MATCHED if self.matches else AdviceState.EXPIRED
        return replace(self, state=state, closed_at=at)


def window_end(created_at: str, window_s: int) -> str:
    """When an advice recorded at `created_at` (the ledger's UTC text) stops waiting."""
    start = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    return format_utc(start + timedelta(seconds=window_s))


def direction_of(kind: MovementKind) -> AdviceDirection:
    """The direction a PLC-derived movement of `kind` changes its unit in."""
    return AdviceDirection.OUT if kind is MovementKind.ISSUE else AdviceDirection.IN


def open_advice(advices: list[Advice], direction: AdviceDirection, at: str) -> Advice | None:
    """The advice a measured change of `direction` at time `at` books to: the oldest
    open one of that direction recorded before it and not yet past its window."""
    for advice in advices:  # oldest first
        if (
            advice.state is AdviceState.OPEN
            and advice.direction is direction
            and advice.created_at <= at < advice.expires_at
        ):
            return advice
    return None


def advice_document(advice: Advice) -> dict[str, object]:
    """The advice as a JSON-ready dict (audit records, CLI `--json`, OPC UA, API)."""
    variance = advice.variance
    pct = advice.variance_pct
    return {
        "id": advice.id,
        "unit": advice.unit,
        "direction": str(advice.direction),
        "kind": str(advice.kind),
        "material": advice.material,
        "lot": advice.lot,
        "expected": format_decimal(advice.expected),
        "uom": advice.uom,
        "ref": advice.ref,
        "user": advice.user,
        "source": str(advice.source),
        "reason": advice.reason,
        "created_at": advice.created_at,
        "expires_at": advice.expires_at,
        "idempotency_key": advice.idempotency_key,
        "other_unit": advice.other_unit,
        "consumed_lots": list(advice.consumed_lots),
        "consumed_quantities": [format_decimal(q) for q in advice.consumed_quantities],
        "consumed_units": list(advice.consumed_units),
        "partner_unit": advice.partner_unit,
        "partner": advice.partner,
        "expiry": advice.expiry.isoformat() if advice.expiry else None,
        "state": str(advice.state),
        "matched": format_decimal(advice.matched),
        "matches": advice.matches,
        "closed_at": advice.closed_at,
        "variance": None if variance is None else format_decimal(variance),
        "variance_pct": None if pct is None else str(pct),
    }

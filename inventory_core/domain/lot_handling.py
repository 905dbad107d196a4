"""How lots share a storage unit: which lot(s) a draw takes, and what a receipt makes.

Tanks and silos are continuous vessels: a draw that names no lot (a measured fall,
an issue or transfer given without a lot) takes from the lots present by the unit's
rule. Pure functions over the unit's book (no database), so the planner, the
property tests and the docs share one definition:

- `fifo`: oldest lot in the unit first (plug flow: mass-flow silos, bins);
- `lifo`: newest first (funnel-flow silos, a pile);
- `mixed`: every lot present gives in proportion to its share (an agitated tank);
- `single` and `blend`: the unit holds one lot; a draw takes it (should several be
  present, e.g. after the rule was changed, they are drawn oldest first).

A draw larger than the stock present books the excess to the lot drawn last
(fifo: the newest; lifo: the oldest; mixed: in proportion), so a lot goes negative
only when the unit does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from inventory_core.domain.model import LotHandling, LotId, LotStatus, StorageKind
from inventory_core.domain.units import QUANTUM

__all__ = [
    "LotHandling",
    "LotShare",
    "allocate",
    "default_lot_handling",
    "most_restrictive",
]


def default_lot_handling(kind: StorageKind) -> LotHandling:
    """A unit's rule when its config gives none: a tank is agitated (`mixed`), a silo or
    bin drawn from the bottom (`fifo`). Migration 0004 applies the same to old ledgers."""
    return LotHandling.MIXED if kind is StorageKind.TANK else LotHandling.FIFO


@dataclass(frozen=True, slots=True)
class LotShare:
    """One lot's book in a unit; `entered` orders lots by arrival (text, ascending)."""

    lot: LotId
    quantity: Decimal
    entered: str


def allocate(
    rule: LotHandling, present: Sequence[LotShare], quantity: Decimal
) -> list[tuple[LotId, Decimal]]:
    """Split a draw of `quantity` (> 0) over the lots `present` (those with stock > 0).

    Returns (lot, quantity) parts in drawing order, each > 0, summing to `quantity`
    exactly; empty when nothing is present (the caller books to the unit's current lot).
    """
    stocked = [s for s in present if s.quantity > 0]
    if not stocked or quantity <= 0:
        return []
    if rule is LotHandling.MIXED:
        return _proportional(stocked, quantity)
    newest_first = rule is LotHandling.LIFO
    ordered = sorted(stocked, key=lambda s: (s.entered, s.lot), reverse=newest_first)
    parts: list[tuple[LotId, Decimal]] = []
    left = quantity
    for share in ordered:
        take = min(share.quantity, left)
        parts.append((share.lot, take))
        left -= take
        if left == 0:
            return parts
    last_lot, last_take = parts[-1]
    parts[-1] = (last_lot, last_take + left)  # more drawn than booked: the last lot goes short
    return parts


def _proportional(stocked: Sequence[LotShare], quantity: Decimal) -> list[tuple[LotId, Decimal]]:
    """Each lot's share of `quantity`, rounded down to QUANTUM; the rounding remainder
    (under one QUANTUM per lot) goes to the largest lots first (the oldest of equals),
    each taking no more than its stock leaves, so the parts sum to `quantity` exactly
    and no lot is overdrawn by a draw within the stock (an overdraw's excess goes to
    the largest lot)."""
    total = sum((s.quantity for s in stocked), Decimal(0))
    ordered = sorted(stocked, key=lambda s: (s.entered, s.lot))
    parts = [
        (s.lot, (quantity * s.quantity / total).quantize(QUANTUM, rounding=ROUND_DOWN))
        for s in ordered
    ]
    remainder = quantity - sum((q for _, q in parts), Decimal(0))
    by_size = sorted(range(len(ordered)), key=lambda i: (-ordered[i].quantity, i))
    for i in by_size:
        lot, share = parts[i]
        take = min(remainder, max(Decimal(0), ordered[i].quantity - share))
        parts[i] = (lot, share + take)
        remainder -= take
    if remainder > 0:  # more than the stock (a PLC-measured overdraw)
        lot, share = parts[by_size[0]]
        parts[by_size[0]] = (lot, share + remainder)
    return [(lot, q) for lot, q in parts if q > 0]


# From least to most restrictive: a blend is as usable as its least usable input.
_RESTRICTION = (
    LotStatus.RELEASED,
    LotStatus.QUARANTINE,
    LotStatus.HOLD,
    LotStatus.EXPIRED,
    LotStatus.REJECTED,
)


def most_restrictive(statuses: Sequence[LotStatus]) -> LotStatus:
    """The status of a blend of lots with these statuses (a quarantined input keeps the
    blend from being released)."""
    return max(statuses, key=_RESTRICTION.index)

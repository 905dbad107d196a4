"""Lot status rules (REFERENCE section 1: typical QA transitions)."""

from __future__ import annotations

from inventory_core.domain.errors import LotStatusTransitionError
from inventory_core.domain.model import LotId, LotStatus

_S = LotStatus
ALLOWED_TRANSITIONS: dict[LotStatus, frozenset[LotStatus]] = {
    _S.QUARANTINE: frozenset({_S.RELEASED, _S.REJECTED, _S.HOLD}),
    _S.RELEASED: frozenset({_S.HOLD, _S.EXPIRED, _S.REJECTED}),
    _S.HOLD: frozenset({_S.RELEASED, _S.REJECTED, _S.QUARANTINE}),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset({_S.REJECTED, _S.RELEASED}),
}


def check_transition(lot: LotId, old: LotStatus, new: LotStatus) -> None:
    """Raise LotStatusTransitionError unless `old -> new` is an allowed change."""
    if new in ALLOWED_TRANSITIONS[old]:
        return
    allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[old])) or "none (scrap only)"
    raise LotStatusTransitionError(
        f"lot {lot}: status {old} cannot change to {new} (allowed from {old}: {allowed})"
    )

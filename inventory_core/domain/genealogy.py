"""Mass conservation along lot genealogy: what went into a lot against what came out.

A blend or production links each input lot to the lot it made, with the quantity of
each input (links written before revision 0004, and productions posted without
consumed quantities, have none). For each movement that made a lot, the inputs'
quantities should add up to the quantity it booked; `trace` flags where they do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from inventory_core.domain.model import GenealogyLink, LotId, MovementId


@dataclass(frozen=True, slots=True)
class MassCheck:
    """Inputs against output of one movement that made `lot` from other lots."""

    movement_id: MovementId
    lot: LotId
    inputs: Decimal | None  # None: at least one input's quantity was not recorded
    output: Decimal

    @property
    def conserved(self) -> bool | None:
        """True when the inputs add up to the output, None when that cannot be told."""
        return None if self.inputs is None else self.inputs == self.output


def mass_checks(
    links: Iterable[GenealogyLink], outputs: Mapping[MovementId, Decimal]
) -> list[MassCheck]:
    """One check per movement of `links` whose booked quantity `outputs` holds, in the
    order the links first name them."""
    inputs: dict[MovementId, list[Decimal | None]] = {}
    lots: dict[MovementId, LotId] = {}
    for link in links:
        inputs.setdefault(link.movement_id, []).append(link.quantity)
        lots[link.movement_id] = link.child
    checks = []
    for movement_id, quantities in inputs.items():
        if movement_id not in outputs:
            continue
        known = [q for q in quantities if q is not None]
        total = sum(known, Decimal(0)) if len(known) == len(quantities) else None
        checks.append(MassCheck(movement_id, lots[movement_id], total, outputs[movement_id]))
    return checks

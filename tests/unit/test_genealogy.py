"""Mass conservation along genealogy links (domain.genealogy)."""

from __future__ import annotations

from decimal import Decimal

from inventory_core.domain.genealogy import mass_checks
from inventory_core.domain.model import GenealogyLink, LotId, MovementId

M1, M2, M3 = MovementId("m1"), MovementId("m2"), MovementId("m3")


def link(parent: str, child: str, movement: MovementId, qty: str | None) -> GenealogyLink:
    return GenealogyLink(
        LotId(parent), LotId(child), movement, 1, None if qty is None else Decimal(qty)
    )


def test_inputs_that_add_up_conserve_mass_and_those_that_do_not_are_flagged() -> None:
    links = [
        link("A", "BLEND", M1, "300"), link("B", "BLEND", M1, "200.5"),
        link("C", "P1", M2, "10"),
        link("D", "P2", M3, None), link("E", "P2", M3, "5"),
    ]  # fmt: skip
    outputs = {M1: Decimal("500.5"), M2: Decimal("12"), M3: Decimal("5")}
    checks = {c.movement_id: c for c in mass_checks(links, outputs)}
    assert (checks[M1].lot, checks[M1].inputs, checks[M1].conserved) == (
        "BLEND", Decimal("500.5"), True,
    )  # fmt: skip
    assert (checks[M2].inputs, checks[M2].output, checks[M2].conserved) == (
        Decimal(10), Decimal(12), False,
    )  # fmt: skip
    assert (checks[M3].inputs, checks[M3].conserved) == (None, None)  # one input unrecorded


def test_a_movement_whose_output_is_unknown_is_left_out() -> None:
    assert mass_checks([link("A", "B", M1, "1")], {}) == []

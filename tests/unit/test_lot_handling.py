"""The lot handling rules as pure functions: how a draw is split over the lots present."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from inventory_core.domain.lot_handling import (
    LotShare,
    allocate,
    default_lot_handling,
    most_restrictive,
)
from inventory_core.domain.model import LotHandling, LotId, LotStatus, StorageKind
from inventory_core.domain.units import QUANTUM

quantities = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**6), places=6)
shares = st.lists(st.tuples(quantities, st.integers(0, 1000)), min_size=1, max_size=6).map(
    lambda items: [
        LotShare(LotId(f"L{i}"), quantity, f"{entered:05d}")
        for i, (quantity, entered) in enumerate(items)
    ]
)
rules = st.sampled_from(list(LotHandling))
queues = st.sampled_from([LotHandling.FIFO, LotHandling.LIFO])


def stock(present: list[LotShare]) -> Decimal:
    return sum((s.quantity for s in present), Decimal(0))


@given(rule=rules, present=shares, quantity=quantities)
def test_a_draw_is_split_exactly_and_no_lot_goes_short_unless_the_unit_does(
    rule: LotHandling, present: list[LotShare], quantity: Decimal
) -> None:
    parts = allocate(rule, present, quantity)
    assert sum((q for _, q in parts), Decimal(0)) == quantity
    assert all(q > 0 for _, q in parts)
    assert len({lot for lot, _ in parts}) == len(parts)
    held = {s.lot: s.quantity for s in present}
    if quantity <= stock(present):
        # mixed rounds down per lot and gives the remainder (< 1 QUANTUM per lot) to the largest
        slack = QUANTUM * len(present) if rule is LotHandling.MIXED else Decimal(0)
        assert all(q <= held[lot] + slack for lot, q in parts)


@given(
    rule=st.sampled_from([LotHandling.FIFO, LotHandling.LIFO]), present=shares, quantity=quantities
)
def test_fifo_takes_the_oldest_lots_first_and_lifo_the_newest(
    rule: LotHandling, present: list[LotShare], quantity: Decimal
) -> None:
    parts = allocate(rule, present, quantity)
    order = sorted(present, key=lambda s: (s.entered, s.lot), reverse=rule is LotHandling.LIFO)
    assert [lot for lot, _ in parts] == [s.lot for s in order[: len(parts)]]
    held = {s.lot: s.quantity for s in present}
    assert all(q == held[lot] for lot, q in parts[:-1])  # every lot but the last drawn empty


@given(present=shares, quantity=quantities)
def test_mixed_draws_every_lot_in_proportion_to_its_share(
    present: list[LotShare], quantity: Decimal
) -> None:
    parts = dict(allocate(LotHandling.MIXED, present, quantity))
    total = stock(present)
    for share in present:
        exact = quantity * share.quantity / total
        assert abs(parts.get(share.lot, Decimal(0)) - exact) <= QUANTUM * len(present)


def test_mixed_worked_example_from_the_readme() -> None:
    present = [
        LotShare(LotId("A"), Decimal(600), "1"),
        LotShare(LotId("B"), Decimal(300), "2"),
        LotShare(LotId("C"), Decimal(100), "3"),
    ]
    assert allocate(LotHandling.MIXED, present, Decimal(100)) == [
        ("A", Decimal(60)),
        ("B", Decimal(30)),
        ("C", Decimal(10)),
    ]
    thirds = [LotShare(LotId(x), Decimal(1), x) for x in "ABC"]
    # 1/3 rounds down to 0.333333 each; the 0.000001 left goes to the largest (oldest) lot
    assert allocate(LotHandling.MIXED, thirds, Decimal(1)) == [
        ("A", Decimal("0.333334")),
        ("B", Decimal("0.333333")),
        ("C", Decimal("0.333333")),
    ]


def test_a_draw_beyond_the_stock_books_the_excess_to_the_lot_drawn_last() -> None:
    present = [LotShare(LotId("OLD"), Decimal(5), "1"), LotShare(LotId("NEW"), Decimal(5), "2")]
    assert allocate(LotHandling.FIFO, present, Decimal(12)) == [
        ("OLD", Decimal(5)),
        ("NEW", Decimal(7)),
    ]
    assert allocate(LotHandling.LIFO, present, Decimal(12)) == [
        ("NEW", Decimal(5)),
        ("OLD", Decimal(7)),
    ]


def test_nothing_present_leaves_the_lot_to_the_caller() -> None:
    assert allocate(LotHandling.FIFO, [], Decimal(1)) == []
    empty = [LotShare(LotId("A"), Decimal(0), "1"), LotShare(LotId("B"), Decimal(-2), "2")]
    assert allocate(LotHandling.MIXED, empty, Decimal(1)) == []


def test_a_blend_is_as_restricted_as_its_most_restricted_input() -> None:
    assert most_restrictive([LotStatus.RELEASED, LotStatus.RELEASED]) is LotStatus.RELEASED
    assert most_restrictive([LotStatus.RELEASED, LotStatus.QUARANTINE]) is LotStatus.QUARANTINE
    assert most_restrictive([LotStatus.HOLD, LotStatus.QUARANTINE]) is LotStatus.HOLD
    assert most_restrictive([LotStatus.REJECTED, LotStatus.EXPIRED]) is LotStatus.REJECTED


def test_tanks_mix_and_silos_and_bins_queue_by_default() -> None:
    assert default_lot_handling(StorageKind.TANK) is LotHandling.MIXED
    assert default_lot_handling(StorageKind.SILO) is LotHandling.FIFO
    assert default_lot_handling(StorageKind.BIN) is LotHandling.FIFO

"""Export never skips a movement that commits after one with a higher sequence number."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from inventory_core.domain.model import (
    LotId,
    MaterialId,
    Movement,
    MovementId,
    MovementKind,
    Source,
    StorageUnitId,
)
from inventory_core.ledger import settled_prefix

BASE = Movement(
    seq=1, id=MovementId("m"), kind=MovementKind.RECEIPT, material=MaterialId("M"),
    lot=LotId("L"), from_unit=None, to_unit=StorageUnitId("U"), quantity=Decimal(1), uom="kg",
    posted_quantity=Decimal(1), posted_uom="kg", timestamp="2026-11-26T06:00:00.000000Z",
    user="u", source=Source.PLC, reason="", idempotency_key="k", reverses=None, writer="w",
    details={},
)  # fmt: skip
HORIZON = "2026-11-26T06:00:30.000000Z"  # anything newer may still be filled in


def at(seq: int, second: int) -> Movement:
    return replace(
        BASE, seq=seq, timestamp=f"2026-11-26T06:{second // 60:02d}:{second % 60:02d}.000000Z"
    )


def test_contiguous_movements_are_all_exported() -> None:
    movements = [at(1, 40), at(2, 41), at(3, 42)]
    assert settled_prefix(movements, 0, HORIZON) == movements


def test_export_stops_before_a_recent_gap() -> None:
    movements = [at(1, 40), at(2, 41), at(4, 42)]  # seq 3 may still commit
    assert [m.seq for m in settled_prefix(movements, 0, HORIZON)] == [1, 2]


def test_a_gap_older_than_the_horizon_is_a_rollback_and_is_passed() -> None:
    movements = [at(1, 10), at(3, 20), at(4, 40)]
    assert [m.seq for m in settled_prefix(movements, 0, HORIZON)] == [1, 3, 4]


def test_gap_right_after_the_cursor_holds_everything_back() -> None:
    assert settled_prefix([at(7, 40)], 5, HORIZON) == []

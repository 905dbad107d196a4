"""The period mass balance closes for any sequence of movements: opening + the period's
movements = closing, each period's closing is the next one's opening, and over all time
the closing book is the sum of every leg (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from inventory_core.domain.derivation import format_utc
from inventory_core.domain.mass_balance import COLUMNS, BalanceLine, column, mass_balance
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    Measurement,
    Movement,
    MovementId,
    MovementKind,
    Source,
    StorageUnitId,
)

K = MovementKind
T0 = datetime(2026, 12, 1, tzinfo=UTC)
UNITS = ("U1", "U2", "U3")
MATERIALS = ("OIL", "SUGAR")
# (kind, has source unit, has target unit), as the ledger books them
SHAPES = (
    (K.RECEIPT, False, True), (K.ISSUE, True, False), (K.TRANSFER, True, True),
    (K.PRODUCTION, False, True), (K.PRODUCTION, True, False), (K.ADJUSTMENT, False, True),
    (K.COUNT, False, True), (K.SCRAP, True, False), (K.REVERSAL, True, False),
    (K.REVERSAL, False, True), (K.LOT_STATUS, False, False),
)  # fmt: skip


def at(minute: int) -> str:
    return format_utc(T0 + timedelta(minutes=minute))


def movement(seq: int, shape: int, units: tuple[str, str], material: str, qty: Decimal,
             minute: int) -> Movement:  # fmt: skip
    kind, source, target = SHAPES[shape]
    signed = kind in (K.ADJUSTMENT, K.COUNT)
    return Movement(
        seq, MovementId(f"m{seq}"), kind, MaterialId(material), LotId("L"),
        StorageUnitId(units[0]) if source else None,
        StorageUnitId(units[1]) if target else None,
        qty if signed or (kind is K.LOT_STATUS and not qty) else abs(qty), "kg", qty, "kg",
        at(minute), "u", Source.MANUAL, "", f"k{seq}", None, "w", {},
    )  # fmt: skip


movements = st.lists(
    st.tuples(
        st.integers(0, len(SHAPES) - 1),
        st.tuples(st.sampled_from(UNITS), st.sampled_from(UNITS)).filter(lambda u: u[0] != u[1]),
        st.sampled_from(MATERIALS),
        st.decimals(-1000, 1000, places=3, allow_nan=False, allow_infinity=False),
        st.integers(0, 600),
    ),
    max_size=60,
).map(
    lambda rows: [
        movement(n, *row) for n, row in enumerate(sorted(rows, key=lambda r: r[-1]), start=1)
    ]
)


def closing_by_key(lines: list[BalanceLine]) -> dict[tuple[str, str], Decimal]:
    return {(line.unit, line.material): line.closing for line in lines}


@settings(max_examples=300, deadline=None)
@given(movements, st.integers(0, 600), st.integers(1, 600))
def test_opening_plus_movements_is_closing_and_periods_chain(
    moved: list[Movement], start: int, length: int
) -> None:
    end = start + length
    before_end = [m for m in moved if m.timestamp < at(end)]
    period = mass_balance(before_end, at(start), {})
    for line in period:
        assert line.closing == line.opening + sum(line.moved.values(), Decimal(0))
        assert set(line.moved) <= set(COLUMNS)
    # the book at the end of [start, end) is where the next period starts
    following = mass_balance(moved, at(end), {})
    ends = closing_by_key(period)
    for line in following:
        assert line.opening == ends.get((line.unit, line.material), Decimal(0))
    # over all time: the closing book is the running sum of every leg
    everything = mass_balance(moved, at(-1), {})
    book: dict[tuple[str, str], Decimal] = {}
    for m in moved:
        for unit, _, quantity in m.legs():
            book[(unit, m.material)] = book.get((unit, m.material), Decimal(0)) + quantity
    assert {k: v for k, v in closing_by_key(everything).items() if v or k in book} == book
    assert all(line.opening == 0 for line in everything)


@given(movements, st.sampled_from(UNITS))
def test_one_unit_is_its_line_of_the_whole_report(moved: list[Movement], unit: str) -> None:
    whole = mass_balance(moved, at(300), {})
    mine = mass_balance(moved, at(300), {}, unit=unit)
    assert mine == [line for line in whole if line.unit == unit]


def test_each_kind_goes_to_its_column_by_direction() -> None:
    def of(shape: int) -> Movement:
        return movement(1, shape, ("U1", "U2"), "OIL", Decimal(5), 0)

    assert column(of(0), into=True) == "receipts"
    assert column(of(1), into=False) == "issues"
    assert (column(of(2), into=False), column(of(2), into=True)) == (
        "transfers_out", "transfers_in",
    )  # fmt: skip
    assert column(of(3), into=True) == "production_in"
    assert column(of(4), into=False) == "production_out"
    assert column(of(7), into=False) == "scrap"
    assert column(of(8), into=False) == column(of(9), into=True) == "reversals"


def test_the_variance_is_measured_minus_closing_at_the_end() -> None:
    moved = [
        movement(1, 0, ("U2", "U1"), "OIL", Decimal(1000), 0),
        movement(2, 1, ("U1", "U2"), "OIL", Decimal(200), 10),
    ]
    measured = {StorageUnitId("U1"): Measurement(StorageUnitId("U1"), Decimal(790), "kg", at(11))}
    (line,) = mass_balance(moved, at(5), measured)
    assert (line.opening, line.moved["issues"], line.closing) == (1000, -200, 800)
    assert (line.measured, line.variance, line.variance_pct) == (790, -10, Decimal("-1.25"))
    document = line.document()
    assert document["variance"] == "-10" and document["measured_at"] == at(11)
    assert document["receipts"] == "0" and document["closing"] == "800"
    other = {StorageUnitId("U1"): Measurement(StorageUnitId("U1"), Decimal(1), "L", at(11))}
    assert mass_balance(moved, at(5), other)[0].measured is None  # another unit of measure

"""Property tests of the pure planner over a small plant: two measured tanks A and B
(booked by their gauges) and a manual drum store D, one material.

Random sequences of manual receipts, issues, transfers (D->tank, tank->D, tank->tank),
productions into D (booked) or a tank (advised) with consumption, gauge changes of A and
B, replays, key reuses and refused requests. After every step:

1. each physical change is booked once: a tank's book is what its gauge measured (plus
   the ledger's own "unit empty" closings, which a fall below zero_lot_threshold makes of
   exactly the lots it left non-zero), and no manual posting books a tank itself;
2. every book (per lot and per unit) is the sum of the movements, in `state` and in
   `changes` alike;
3. a manual posting never takes a lot below zero; a lot-less draw from a tank (an
   unadvised fall, or one advised without a lot) takes only lots with stock and takes
   one below zero only when it draws more than the tank's positive stock, and then every
   lot it took ends at or below zero (`lot_handling.allocate`). A draw of a named lot is
   booked to that lot at the measured quantity, so it may leave that lot negative while
   the tank is not; and only a gauge-booked transfer can overdraw the drum store (an
   advice reserves nothing: `test_an_advice_does_not_reserve_...`);
4. genealogy conserves mass: a blend's links carry what each input put in (summing to
   the blend lot's quantity), a production's links carry the consumed quantities and
   its consumption draws them from D (a tank's draw is its gauge's to book); an advised
   production consumes with its first gauge step only;
5. a replay returns the first result and changes nothing; a refused request (or a key
   reused with another payload) leaves state and changes untouched;
6. an advice's `matched` (and `matches`) is what the movements booked to it carry, each
   movement is of its kind, lot and units; a settled gauge step leaves no advice of its
   unit half booked; linked advices of a tank->tank transfer point at each other.

Quantities are whole kg. The four planner bugs this test found (a mixed split overdrawing
a lot by its rounding remainder, a lot-less transfer advised from empty drums, a settled
fall into the drums closing nothing, an advised production's consumption re-checked at
its gauge step) are fixed; the examples at the end keep them fixed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, fields, replace
from datetime import date
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st

from inventory_core.domain.advices import AdviceDirection, AdviceState
from inventory_core.domain.errors import (
    IdempotencyConflict,
    InsufficientStock,
    InventoryError,
    ValidationError,
)
from inventory_core.domain.lot_handling import LotShare, allocate
from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    PostingResult,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.posting import (
    MOVEMENT_COLUMNS,
    UNIT_EMPTY,
    Changes,
    LedgerState,
    Planner,
    payload_hash,
)
from inventory_core.ledger import validate_posting

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal(1), LotStatus.RELEASED)
A, B, D = StorageUnitId("A"), StorageUnitId("B"), StorageUnitId("D")
TANKS = (A, B)
NOW = "2026-12-02T08:00:00.000000Z"
TODAY = date(2026, 12, 2)
D_CAPACITY = Decimal(4000)  # small enough that receipts into D are sometimes refused
D_LIMIT = D_CAPACITY * Decimal("1.1")  # the planner's default capacity margin: 10 %
ZERO = Decimal(0)
RULES = [LotHandling.FIFO, LotHandling.LIFO, LotHandling.MIXED, LotHandling.BLEND]

OPS = [
    "idle", "recv-D", "recv-tank", "issue-tank", "issue-D", "D->tank", "tank->D", "tank->tank",
    "produce", "produce-tank", "rise", "fall", "rise", "fall", "replay", "reuse",
]  # fmt: skip


@dataclass(frozen=True)
class Step:
    op: str
    tank: int  # 0: A, 1: B (the measured unit the step is about)
    quantity: int
    flag: bool  # named lot (draws), settled (gauge steps)
    pick: int  # which lot / earlier request (modulo)
    consume: tuple[tuple[int, int, bool], ...]  # production: (pick, quantity, from the tank)


steps = st.lists(
    st.builds(
        Step,
        st.sampled_from(OPS),
        st.integers(0, 1),
        st.integers(1, 600),
        st.booleans(),
        st.integers(0, 50),
        st.lists(
            st.tuples(
                st.integers(0, 50), st.integers(1, 400), st.integers(0, 3).map(lambda i: i == 0)
            ),
            max_size=3,
        ).map(tuple),
    ),
    min_size=10,
    max_size=50,
)


# -- reading the planned rows --------------------------------------------------


def rows(changes: Changes, start: int = 0) -> list[dict[str, Any]]:
    out = []
    for record in changes.movements[start:]:
        row: dict[str, Any] = dict(zip(MOVEMENT_COLUMNS, record, strict=True))
        row["quantity"] = Decimal(str(row["quantity"]))
        row["details"] = json.loads(str(row["details"]))
        out.append(row)
    return out


def legs(row: dict[str, Any]) -> list[tuple[str, str, Decimal]]:
    out = []
    if row["from_unit"] is not None:
        out.append((row["from_unit"], row["lot"], -row["quantity"]))
    if row["to_unit"] is not None:
        out.append((row["to_unit"], row["lot"], row["quantity"]))
    return out


def snapshot(state: LedgerState, changes: Changes) -> tuple[object, ...]:
    """Everything the planner may change, copied deep enough to compare later (the
    values are immutable: Decimals, tuples, frozen dataclasses)."""

    def copy(value: object) -> object:
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list | set):
            return type(value)(copy(v) for v in value)
        return value

    return tuple(copy(getattr(obj, f.name)) for obj in (state, changes) for f in fields(obj))


def lots_of(state: LedgerState, unit: StorageUnitId) -> dict[str, Decimal]:
    return {lot: q for (u, lot), q in state.balances.items() if u == unit}


def positive_lots(state: LedgerState, unit: StorageUnitId) -> list[str]:
    return sorted(lot for lot, q in lots_of(state, unit).items() if q > 0)


# -- the plant -------------------------------------------------------------------


class Plant:
    def __init__(self, rule_a: LotHandling, rule_b: LotHandling, threshold: Decimal) -> None:
        def tank(uid: StorageUnitId, rule: LotHandling) -> StorageUnit:
            return StorageUnit(
                uid, "P", "T", StorageKind.TANK, Decimal(100000), "kg", OIL.id,
                lot_handling=rule, booking=Booking.MEASURED, zero_lot_threshold=threshold,
            )  # fmt: skip

        drums = StorageUnit(
            D, "P", "W", StorageKind.BIN, D_CAPACITY, "kg", OIL.id, booking=Booking.MANUAL
        )
        units = {A: tank(A, rule_a), B: tank(B, rule_b), D: drums}
        self.state = LedgerState(
            materials={OIL.id: OIL},
            units=units,
            present={u: set() for u in units},
            unit_totals=dict.fromkeys(units, ZERO),
        )
        self.changes = Changes()
        self.planner = Planner(
            self.state, self.changes, writer="w", now=lambda: NOW, today=lambda: TODAY
        )
        self.physical = dict.fromkeys(TANKS, ZERO)  # what each gauge measured in all
        self.posted: list[tuple[PostingRequest, PostingResult]] = []
        self.productions: dict[str, PostingRequest] = {}  # head movement id -> request
        self.advised_productions: dict[str, PostingRequest] = {}  # advice id -> request
        self.names = count()

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    def post(self, request: PostingRequest) -> PostingResult | None:
        """Post like the writer does (stateless validation, then the planner); a refusal
        must leave no trace. Returns None when refused."""
        request = validate_posting(request)
        before = snapshot(self.state, self.changes)
        try:
            result = self.planner.post(request, payload_hash(request))
        except InventoryError:
            assert snapshot(self.state, self.changes) == before, "a refused request changed state"
            return None
        self.posted.append((request, result))
        return result

    def manual(self, kind: MovementKind, lot: str | None, qty: int, **kw: Any) -> PostingRequest:
        return PostingRequest(
            kind, OIL.id, None if lot is None else LotId(lot), Decimal(qty), "kg",
            idempotency_key=self.name("m"), user="erp", source=Source.CLI, **kw,
        )  # fmt: skip

    def gauge(self, unit: StorageUnitId, delta: int, settled: bool) -> PostingRequest:
        rise = delta > 0
        return PostingRequest(
            MovementKind.RECEIPT if rise else MovementKind.ISSUE, OIL.id, None,
            Decimal(abs(delta)), "kg", to_unit=unit if rise else None,
            from_unit=None if rise else unit, idempotency_key=self.name("plc:"), user="plc",
            source=Source.PLC, details={"settled": settled},
        )  # fmt: skip

    def open(self, unit: StorageUnitId, qty: int) -> None:
        """The opening count the measurement service books for a unit it starts to watch."""
        request = PostingRequest(
            MovementKind.COUNT, OIL.id, LotId(f"{unit}-OPEN"), Decimal(qty), "kg",
            to_unit=unit, idempotency_key=f"plc:open:{unit}", user="plc", source=Source.PLC,
        )  # fmt: skip
        assert self.post(request) is not None
        self.physical[unit] += qty


# -- one step ----------------------------------------------------------------------


def run_step(plant: Plant, step: Step) -> None:
    state, changes = plant.state, plant.changes
    tank, other = TANKS[step.tank], TANKS[1 - step.tank]
    qty = step.quantity
    start = len(changes.movements)
    advices_before = len(changes.new_advices)

    def pick(lots: list[str], index: int = step.pick) -> str | None:
        return lots[index % len(lots)] if lots else None

    if step.op == "idle":  # nothing happens (what shrinking pads a short case with)
        return
    if step.op in ("replay", "reuse"):
        if not plant.posted:
            return
        request, first = plant.posted[step.pick % len(plant.posted)]
        before = snapshot(state, changes)
        if step.op == "replay":
            again = plant.planner.post(request, payload_hash(request))
            assert again.replayed and again.movement_id == first.movement_id
            assert again.parts == first.parts
        else:
            other_payload = replace(request, quantity=request.quantity + 1)
            with pytest.raises(IdempotencyConflict):
                plant.planner.post(other_payload, payload_hash(other_payload))
        assert snapshot(state, changes) == before
        return

    if step.op in ("rise", "fall"):
        delta = qty if step.op == "rise" else -qty
        shares_before = lots_of(state, tank)
        result = plant.post(plant.gauge(tank, delta, step.flag))
        assert result is not None, "a gauge change is never refused"
        plant.physical[tank] += delta
        if step.op == "fall" and (result.advice is None or result.advice.lot is None):
            check_lotless_draw(plant, tank, shares_before, Decimal(qty), start)
        threshold = state.units[tank].zero_lot_threshold or ZERO
        if step.op == "fall" and threshold:  # "Empty units": below it, every lot is closed
            drawn = dict(shares_before)
            for row in rows(changes, start):
                if row["source"] == str(Source.PLC) and row["from_unit"] == tank:
                    drawn[row["lot"]] = drawn.get(row["lot"], ZERO) - row["quantity"]
            closed = {r["lot"] for r in rows(changes, start) if r["reason"] == UNIT_EMPTY}
            if sum(drawn.values(), ZERO) < threshold:
                assert closed == {lot for lot, q in drawn.items() if q}
                assert not any(lots_of(state, tank).values())
            else:
                assert not closed
        if step.flag:  # the gauge came to rest: nothing stays half booked
            half = [
                a for a in state.advices.get(tank, []) if a.state is AdviceState.OPEN and a.matches
            ]
            assert not half
        return

    request: PostingRequest | None = None
    booked_at_once = False
    if step.op == "recv-D":
        request = plant.manual(MovementKind.RECEIPT, plant.name("DR"), qty, to_unit=D)
        booked_at_once = True
    elif step.op == "recv-tank":
        request = plant.manual(MovementKind.RECEIPT, plant.name("TR"), qty, to_unit=tank)
    elif step.op == "issue-tank":
        lot = pick(positive_lots(state, tank)) if step.flag else None
        request = plant.manual(MovementKind.ISSUE, lot, qty, from_unit=tank)
    elif step.op == "issue-D":
        lot = pick(positive_lots(state, D)) if step.flag else None
        request = plant.manual(MovementKind.ISSUE, lot, qty, from_unit=D)
        booked_at_once = True
    elif step.op == "D->tank":
        lot = pick(positive_lots(state, D)) if step.flag else None
        request = plant.manual(MovementKind.TRANSFER, lot, qty, from_unit=D, to_unit=tank)
    elif step.op == "tank->D":
        lot = pick(positive_lots(state, tank)) if step.flag else None
        request = plant.manual(MovementKind.TRANSFER, lot, qty, from_unit=tank, to_unit=D)
    elif step.op == "tank->tank":  # names a lot in the source (else refused: which lot?)
        lot = pick(positive_lots(state, tank))
        request = plant.manual(MovementKind.TRANSFER, lot, qty, from_unit=tank, to_unit=other)
        if lot is None:
            with pytest.raises(ValidationError, match="name the lot"):
                plant.planner.post(request, payload_hash(request))
            return
    elif step.op in ("produce", "produce-tank"):  # into D (booked) or the tank (advised)
        into_d = step.op == "produce"
        consumed: dict[tuple[str, StorageUnitId], Decimal] = {}
        for index, q, from_tank in step.consume:
            unit = (tank if into_d else other) if from_tank else D
            lot = pick(positive_lots(state, unit) or sorted(state.lots), index)
            if lot is not None:
                consumed.setdefault((lot, unit), Decimal(q))
        request = plant.manual(
            MovementKind.PRODUCTION, plant.name("P"), qty, to_unit=D if into_d else tank,
            consumed_lots=tuple(LotId(lot) for lot, _ in consumed),
            consumed_quantities=tuple(consumed.values()),
            consumed_units=tuple(unit for _, unit in consumed),
        )  # fmt: skip
        booked_at_once = into_d
    assert request is not None, step.op

    d_before = lots_of(state, D)
    result = plant.post(request)
    new = rows(changes, start)
    if result is None:
        event(f"refused: {step.op}")
        refused_as_expected(plant, step, request, d_before)
        return
    if booked_at_once:
        assert not result.advice and new and new[0]["id"] == result.movement_id
        for row in new:  # a manual posting never books a tank, nor overdraws a drum lot
            assert not {u for u, _, _ in legs(row)} & set(TANKS), row
            for unit, lot, _ in legs(row):
                assert state.balances[(unit, lot)] >= 0, (unit, lot)
        if request.kind is MovementKind.PRODUCTION:
            plant.productions[result.movement_id] = request
    else:
        assert result.advice is not None and result.movement_id == result.advice.reference
        if request.kind is MovementKind.PRODUCTION:
            plant.advised_productions[result.advice.id] = request
        assert not new, "an advice books nothing itself"
        added = len(changes.new_advices) - advices_before
        assert added == (2 if step.op == "tank->tank" else 1)


def refused_as_expected(
    plant: Plant, step: Step, request: PostingRequest, d_before: dict[str, Decimal]
) -> None:
    """The plant only refuses what the rules say it must (over D's capacity or stock)."""
    stock = sum((q for q in d_before.values() if q > 0), ZERO)
    if step.op == "recv-D":
        assert sum(d_before.values(), ZERO) + request.quantity > D_LIMIT
    elif step.op == "issue-D" or step.op == "D->tank":
        if request.lot is None:  # a draw the lot handling allocates: beyond D's stock
            assert request.quantity > stock
        else:
            assert request.quantity > d_before.get(request.lot, ZERO)
    elif step.op in ("produce", "produce-tank"):
        over_capacity = step.op == "produce" and (
            sum(d_before.values(), ZERO) + request.quantity > D_LIMIT
        )
        drawn: dict[str, Decimal] = {}
        for lot, q, unit in zip(
            request.consumed_lots, request.consumed_quantities, request.consumed_units, strict=True
        ):
            if unit == D:
                drawn[lot] = drawn.get(lot, ZERO) + q
        short = any(d_before.get(lot, ZERO) < q for lot, q in drawn.items())
        assert over_capacity or short
    else:
        raise AssertionError(f"{step.op} refused: {request}")


def check_lotless_draw(
    plant: Plant, tank: StorageUnitId, before: dict[str, Decimal], qty: Decimal, start: int
) -> None:
    """Property 3 for a tank: a draw without a lot (an unadvised fall, or one advised
    without a lot) takes only lots with stock, none below zero unless it draws more than
    the positive stock, and then every lot it took ends at or below zero. Only the gauge's
    own movements count (not the "unit empty" closings that may follow)."""
    drawn: dict[str, Decimal] = {}
    for row in rows(plant.changes, start):
        if row["source"] == str(Source.PLC) and row["from_unit"] == tank:
            drawn[row["lot"]] = drawn.get(row["lot"], ZERO) + row["quantity"]
    assert sum(drawn.values(), ZERO) == qty
    stocked = {lot: q for lot, q in before.items() if q > 0}
    stock = sum(stocked.values(), ZERO)
    if not stocked:  # nothing to split: the unit's current lot takes it
        assert len(drawn) == 1
        return
    assert set(drawn) <= set(stocked), "a draw took a lot that had no stock"
    after = {lot: stocked[lot] - q for lot, q in drawn.items()}
    if qty <= stock:
        assert all(q >= 0 for q in after.values()), after
    else:
        assert all(q <= 0 for q in after.values()), after
        assert sum(after.values(), ZERO) == stock - qty


# -- the properties over the whole ledger ----------------------------------------------


def check_ledger(plant: Plant) -> None:
    state, changes = plant.state, plant.changes
    all_rows = rows(changes)
    by_id = {row["id"]: row for row in all_rows}

    # 2. books: per lot and per unit, the sum of the movements (state and changes agree)
    from_rows: dict[tuple[str, str], Decimal] = {}
    for row in all_rows:
        for unit, lot, delta in legs(row):
            from_rows[(unit, lot)] = from_rows.get((unit, lot), ZERO) + delta
    assert {k: v for k, v in state.balances.items() if v} == {
        k: v for k, v in from_rows.items() if v
    }
    assert {k: v[1] for k, v in changes.balances.items()} == {
        k: state.balances[k] for k in changes.balances
    }
    for unit in state.units:
        per_lot = sum(lots_of(state, unit).values(), ZERO)
        assert per_lot == state.unit_totals[unit]
        assert per_lot == sum((v for (u, _), v in from_rows.items() if u == unit), ZERO)
        assert state.present[unit] == {lot for lot, q in lots_of(state, unit).items() if q}

    # 1. each physical change booked once: by the gauge, never by a manual posting
    for tank in TANKS:
        gauged, closed = ZERO, ZERO
        for row in all_rows:
            for unit, _, delta in legs(row):
                if unit != tank:
                    continue
                if row["source"] == str(Source.PLC):
                    gauged += delta
                else:
                    assert row["source"] == str(Source.SYSTEM), row
                    assert row["kind"] == "blend" or row["reason"] == UNIT_EMPTY, row
                    if row["kind"] == "adjustment":
                        closed += delta
        assert gauged == plant.physical[tank]
        assert state.unit_totals[tank] == plant.physical[tank] + closed
        if state.units[tank].lot_handling is LotHandling.BLEND:  # one lot at a time
            assert len(positive_lots(state, tank)) <= 1

    # 3. drum lots go below zero only by a gauge-booked transfer out of D
    gauge_drawn = {
        row["lot"] for row in all_rows if row["source"] == str(Source.PLC) and row["from_unit"] == D
    }
    for lot, q in lots_of(state, D).items():
        assert q >= 0 or lot in gauge_drawn, (lot, q)

    # 4. genealogy conserves mass
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in all_rows:
        groups.setdefault(row["details"].get("part_of", row["id"]), []).append(row)
    links: dict[str, Counter[tuple[str, Decimal | None]]] = {}
    for parent, child, movement_id, q in changes.links:
        assert by_id[movement_id]["lot"] == child
        links.setdefault(movement_id, Counter())[(parent, q)] += 1
    for row in all_rows:
        if row["kind"] == "blend" and row["to_unit"] is not None:
            group = groups[row["details"].get("part_of", row["id"])]
            inputs = Counter(
                (r["lot"], r["quantity"])
                for r in group
                if r["kind"] == "blend" and r["details"].get("blend") == row["lot"]
            )
            assert links[row["id"]] == inputs
            assert sum((q * n for (_, q), n in inputs.items()), ZERO) == row["quantity"]
            assert all(q > 0 for (_, q) in inputs)
    heads = dict(plant.productions)
    for advice_id, request in plant.advised_productions.items():
        matched = [
            r["id"]
            for r in all_rows
            if r["details"].get("advice") == advice_id and "part_of" not in r["details"]
        ]
        if matched:  # the consumption books with the first measured step, and only then
            heads[matched[0]] = request
            for later in matched[1:]:
                assert later not in links
                assert not [r for r in groups[later] if "consumed_by" in r["details"]]
    for head, request in heads.items():
        consumed = list(zip(request.consumed_lots, request.consumed_quantities, strict=True))
        assert links.get(head, Counter()) == Counter(consumed)
        drawn = Counter(
            (r["lot"], r["quantity"], r["from_unit"])
            for r in groups[head]
            if r["details"].get("consumed_by") == request.lot
        )
        assert drawn == Counter(
            (lot, q, u)
            for lot, q, u in zip(
                request.consumed_lots,
                request.consumed_quantities,
                request.consumed_units,
                strict=True,
            )
            if u == D  # a tank's draw is its gauge's to book
        )
    blend_links = {m for m, r in by_id.items() if r["kind"] == "blend" and r["to_unit"]}
    assert set(links) <= blend_links | set(heads)

    # 6. advices: what they matched is what was booked to them
    booked: dict[str, Decimal] = {}
    steps_of: Counter[str] = Counter()
    for row in all_rows:
        advice_id = row["details"].get("advice")
        if advice_id is None:
            continue
        advice = changes.advices[advice_id]
        booked[advice_id] = booked.get(advice_id, ZERO) + row["quantity"]
        steps_of[advice_id] += "part_of" not in row["details"]
        assert row["kind"] == str(advice.kind)
        assert advice.lot is None or row["lot"] == advice.lot
        inbound = advice.direction is AdviceDirection.IN
        assert row["to_unit" if inbound else "from_unit"] == advice.unit
        assert row["from_unit" if inbound else "to_unit"] == advice.other_unit
        if advice.partner_unit is not None:
            assert row["details"][f"transfer_{'from' if inbound else 'to'}"] == advice.partner_unit
    assert {a.id: a.matched for a in changes.advices.values() if a.matches} == booked
    assert {a.id: a.matches for a in changes.advices.values() if a.matches} == dict(steps_of)
    in_state = {a.id: a for advices in state.advices.values() for a in advices}
    assert in_state == changes.advices
    for advice in changes.advices.values():
        assert (advice.state is AdviceState.OPEN) == (advice.closed_at is None)
        assert advice.state is not AdviceState.EXPIRED  # the clock stands still here
        if advice.partner is not None:
            partner = changes.advices[advice.partner]
            assert (partner.partner, partner.unit, partner.lot, partner.expected) == (
                advice.id,
                advice.partner_unit,
                advice.lot,
                advice.expected,
            )
            assert partner.direction is not advice.direction


@settings(max_examples=200, deadline=None, phases=[p for p in Phase if p is not Phase.explain])
@given(
    steps=steps,
    rule_a=st.sampled_from(RULES),
    rule_b=st.sampled_from(RULES),
    threshold=st.sampled_from([ZERO, ZERO, Decimal(40)]),
    opening=st.tuples(st.integers(0, 2000), st.integers(0, 2000)),
)
def test_a_measured_plant_books_each_change_once_and_conserves_mass(
    steps: list[Step],
    rule_a: LotHandling,
    rule_b: LotHandling,
    threshold: Decimal,
    opening: tuple[int, int],
) -> None:
    plant = Plant(rule_a, rule_b, threshold)
    for tank, qty in zip(TANKS, opening, strict=True):
        plant.open(tank, qty)
    check_ledger(plant)
    for step in steps:
        run_step(plant, step)
        check_ledger(plant)
    for row in rows(plant.changes):  # what the runs reach (--hypothesis-show-statistics)
        if row["kind"] == "blend" or row["reason"] == UNIT_EMPTY or "parts" in row["details"]:
            event(f"booked: {row['kind']} {row['reason'] or 'split'}")
        if "advice" in row["details"]:
            event(f"matched: {plant.changes.advices[row['details']['advice']].kind}")
    if any(q < 0 for q in lots_of(plant.state, D).values()):
        event("a drum lot overdrawn by a gauge")


def test_an_advised_transfer_between_tanks_carries_the_lot_at_each_gauges_quantity() -> None:
    """The worked case behind `tank->tank`: two linked advices, each side booked by its
    own gauge, the lot carried from A to B, each with its own variance."""
    plant = Plant(LotHandling.FIFO, LotHandling.FIFO, ZERO)
    plant.open(A, 1000)
    plant.open(B, 0)
    request = plant.manual(MovementKind.TRANSFER, "A-OPEN", 300, from_unit=A, to_unit=B)
    result = plant.post(request)
    assert result is not None and result.advice is not None
    out_id = result.advice.id
    in_id = result.advice.partner
    assert in_id is not None
    assert plant.post(plant.gauge(A, -290, True)) is not None
    assert plant.post(plant.gauge(B, 305, True)) is not None
    plant.physical[A] -= 290
    plant.physical[B] += 305
    check_ledger(plant)
    advices = plant.changes.advices
    assert (advices[out_id].matched, advices[out_id].state) == (290, AdviceState.MATCHED)
    assert (advices[in_id].matched, advices[in_id].state) == (305, AdviceState.MATCHED)
    assert plant.state.balances[(B, "A-OPEN")] == 305
    assert plant.state.balances[(A, "A-OPEN")] == 710


def test_an_advice_does_not_reserve_the_drums_it_was_checked_against() -> None:
    """What property 3 allows for D, pinned: a transfer D->A is checked against D's stock
    when it is advised, and booked at what A's gauge measures; a manual draw of the same
    drums in between is not refused, so the match then overdraws D's lot (shown in
    reconciliation; a gauge-booked movement is never refused)."""
    plant = Plant(LotHandling.FIFO, LotHandling.FIFO, ZERO)
    plant.open(A, 0)
    plant.open(B, 0)
    assert plant.post(plant.manual(MovementKind.RECEIPT, "DR", 100, to_unit=D)) is not None
    advised = plant.manual(MovementKind.TRANSFER, "DR", 100, from_unit=D, to_unit=A)
    assert plant.post(advised) is not None
    assert plant.post(plant.manual(MovementKind.ISSUE, "DR", 100, from_unit=D)) is not None
    assert plant.post(plant.gauge(A, 100, True)) is not None
    plant.physical[A] += 100
    check_ledger(plant)
    assert plant.state.balances[(D, "DR")] == -100
    assert plant.state.balances[(A, "DR")] == 100


def _mixed_drums(draw: str) -> tuple[Planner, PostingRequest]:
    drums = StorageUnit(
        D, "P", "W", StorageKind.TANK, Decimal(100), "kg", OIL.id,
        lot_handling=LotHandling.MIXED, booking=Booking.MANUAL,
    )  # fmt: skip
    state = LedgerState(
        materials={OIL.id: OIL}, units={D: drums}, present={D: set()}, unit_totals={D: ZERO}
    )
    planner = Planner(state, Changes(), writer="w", now=lambda: NOW, today=lambda: TODAY)
    for lot in ("L1", "L2", "L3"):
        receipt = PostingRequest(
            MovementKind.RECEIPT, OIL.id, LotId(lot), Decimal(1), "kg", to_unit=D
        )
        planner.post(receipt, payload_hash(receipt))
    issue = PostingRequest(MovementKind.ISSUE, OIL.id, None, Decimal(draw), "kg", from_unit=D)
    return planner, issue


def test_mixed_draw_just_below_stock_keeps_every_lot_covered() -> None:
    """README: "a lot goes negative only when the unit does"; a manual draw within the
    book is not refused. Three lots of 1 kg, a draw of 2.999999 kg: each share rounds down
    to 0.999999 and the 0.000002 kg remainder goes to L1, which is asked for 1.000001 kg."""
    shares = [LotShare(LotId(f"L{i}"), Decimal(1), str(i)) for i in (1, 2, 3)]
    parts = allocate(LotHandling.MIXED, shares, Decimal("2.999999"))
    assert all(q <= Decimal(1) for _, q in parts), parts  # fails: L1 gets 1.000001
    planner, issue = _mixed_drums("2.999999")
    try:
        planner.post(issue, payload_hash(issue))
    except InsufficientStock as exc:  # fails: "issue of 1.000001 kg of lot L1 ..."
        raise AssertionError(f"a draw within the book was refused: {exc}") from None


def test_a_lotless_transfer_from_never_stocked_drums_still_books_the_gauge() -> None:
    """A transfer D->A without a lot is advised without any check of D (a booked-at-once
    draw without lot from an empty unit is InsufficientStock); when A's gauge rises, the
    match draws D by its lot handling, finds nothing and falls back to D's opening lot
    D-OPEN, which does not exist: the PLC posting is refused and A's rise is booked by
    nothing. Either the advice should be refused, or the gauge change booked."""
    plant = Plant(LotHandling.FIFO, LotHandling.FIFO, ZERO)
    plant.open(A, 0)
    advice = validate_posting(
        plant.manual(MovementKind.TRANSFER, None, 100, from_unit=D, to_unit=A)
    )
    with pytest.raises(InsufficientStock, match="exceeds its book of 0 kg"):
        plant.planner.post(advice, payload_hash(advice))  # refused, as a draw would be
    rise = validate_posting(plant.gauge(A, 100, True))
    plant.planner.post(rise, payload_hash(rise))  # unadvised: booked to A's own lot
    plant.physical[A] += 100
    check_ledger(plant)


def test_a_settled_fall_into_the_drums_closes_the_tanks_other_advices() -> None:
    """README: an advice closes with the first movement of the unit booked after the
    signal came to rest, whichever way that last step went. A truck of R1 unloads into A
    (advised, booked while the level moves), then drums are filled from A (advised
    transfer A->D) and the level settles: the receipt stays open, and the next delivery
    (unadvised) is booked to lot R1 as if it were the same truck."""
    plant = Plant(LotHandling.FIFO, LotHandling.FIFO, ZERO)
    plant.open(A, 1000)
    assert plant.post(plant.manual(MovementKind.RECEIPT, "R1", 100, to_unit=A)) is not None
    assert plant.post(plant.manual(MovementKind.TRANSFER, None, 50, from_unit=A, to_unit=D))
    assert plant.post(plant.gauge(A, 100, False)) is not None
    assert plant.post(plant.gauge(A, -50, True)) is not None
    half = [a for a in plant.state.advices[A] if a.state is AdviceState.OPEN and a.matches]
    assert not half, half  # fails: the receipt of R1 is still open


def test_the_rise_of_an_advised_production_is_booked_when_its_drums_are_gone() -> None:
    """A production into A consuming 100 kg of DR from D is advised (D's stock checked:
    fine); the drums are then issued by hand; A's gauge rises and the match books the
    production with its consumption, checked again (`_consumption` checks stock and
    status whatever the source): InsufficientStock, the PLC posting is refused and A's
    rise is booked by nothing. A lot put on hold in between does the same (LotNotReleased)."""
    plant = Plant(LotHandling.FIFO, LotHandling.FIFO, ZERO)
    plant.open(A, 0)
    assert plant.post(plant.manual(MovementKind.RECEIPT, "DR", 100, to_unit=D)) is not None
    production = plant.manual(
        MovementKind.PRODUCTION, "P1", 100, to_unit=A, consumed_lots=(LotId("DR"),),
        consumed_quantities=(Decimal(100),), consumed_units=(D,),
    )  # fmt: skip
    assert plant.post(production) is not None  # an advice
    assert plant.post(plant.manual(MovementKind.ISSUE, "DR", 100, from_unit=D)) is not None
    rise = validate_posting(plant.gauge(A, 100, True))
    plant.planner.post(rise, payload_hash(rise))  # raises InsufficientStock

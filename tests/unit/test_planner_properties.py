"""Property tests of the pure posting planner (no database).

Random sequences of postings (valid or not), reversals, lot-status changes,
replays and key reuses are applied the way the writer applies them: requests
are validated statelessly (`validate_posting`), grouped into batches that
share one `Changes`, and between batches the planned movements become part
of the state (as if committed and loaded again).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory_core.domain.errors import (
    IdempotencyConflict,
    InsufficientStock,
    InventoryError,
    LotExpired,
    LotNotReleased,
    LotStatusTransitionError,
)
from inventory_core.domain.lots import ALLOWED_TRANSITIONS
from inventory_core.domain.model import (
    QUANTITY_KINDS,
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialDefinition,
    MaterialId,
    Movement,
    MovementId,
    MovementKind,
    PostingRequest,
    PostingResult,
    ReversalRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.posting import (
    MOVEMENT_COLUMNS,
    BalanceKey,
    Changes,
    LedgerState,
    Planner,
    payload_hash,
)
from inventory_core.ledger import validate_posting
from inventory_core.store.rows import movement_from_row

TODAY = date(2026, 6, 1)
PAST, FUTURE = date(2026, 1, 31), date(2027, 1, 31)

MATERIALS = {
    m.id: m
    for m in (
        MaterialDefinition(MaterialId("ETH"), "Ethanol", "kg", Decimal("0.8"), LotStatus.RELEASED),
        MaterialDefinition(MaterialId("GLY"), "Glycol", "kg", Decimal("1.11")),
        MaterialDefinition(MaterialId("SUG"), "Sugar", "kg", None, LotStatus.RELEASED),
    )
}


def _unit(uid: str, material: str | None) -> StorageUnit:
    # One movement per posting: no lots closed when a unit runs empty (that rule and the
    # split draws have their own properties in test_lot_handling_properties).
    return StorageUnit(
        StorageUnitId(uid), "S", "A", StorageKind.TANK, Decimal(1000), "kg",
        None if material is None else MaterialId(material), zero_lot_threshold=Decimal(0),
    )  # fmt: skip


UNITS = {
    u.id: u for u in (_unit("T1", "ETH"), _unit("T2", "GLY"), _unit("T3", None), _unit("T4", "SUG"))
}
UNIT_CHOICES = [*UNITS, "NOPE"]
MATERIAL_CHOICES = [*MATERIALS, "UNKNOWN"]
LOTS = ["L1", "L2", "L3", "L4"]
KEYS = [f"k{i}" for i in range(12)]
NEEDS = {
    MovementKind.RECEIPT: (False, True),
    MovementKind.PRODUCTION: (False, True),
    MovementKind.ISSUE: (True, False),
    MovementKind.SCRAP: (True, False),
    MovementKind.TRANSFER: (True, True),
    MovementKind.ADJUSTMENT: (False, True),
    MovementKind.COUNT: (False, True),
}

# -- operations ---------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    request: PostingRequest


@dataclass(frozen=True)
class Reverse:
    pick: int  # index into committed movements (modulo); -1 means an unknown id
    key: str | None
    source: Source


@dataclass(frozen=True)
class SetStatus:
    request: LotStatusRequest


@dataclass(frozen=True)
class Replay:
    pick: int  # index into earlier keyed requests (accepted ones, or any when `any_sent`)
    any_sent: bool


@dataclass(frozen=True)
class Reuse:
    pick: int  # index into earlier accepted keyed requests, sent with another payload


@dataclass(frozen=True)
class Commit:
    pass


Op = Post | Reverse | SetStatus | Replay | Reuse | Commit

quantities = st.one_of(
    st.decimals(min_value=1, max_value=150, places=1),
    st.sampled_from([Decimal(0), Decimal(-5), Decimal("0.5"), Decimal(10), Decimal(100)]),
)


keys = st.sampled_from([None, *KEYS])
LOTS_OF = {"ETH": ["L1", "L2"], "GLY": ["L3"], "SUG": ["L4"]}
UNITS_FOR = {m: [u.id for u in UNITS.values() if u.material in (m, None)] for m in MATERIALS}


@st.composite
def postings(draw: st.DrawFn, sources: st.SearchStrategy[Source]) -> Post:
    """Mostly coherent postings (material, units and lot fit together), sometimes not."""

    def sometimes_wrong(good: st.SearchStrategy[str], wrong: list[str]) -> str:
        return draw(st.sampled_from(wrong) if draw(st.integers(0, 9)) == 0 else good)

    kind = draw(st.sampled_from([MovementKind.RECEIPT] * 4 + sorted(QUANTITY_KINDS)))
    need_from, need_to = NEEDS[kind]
    if draw(st.integers(0, 19)) == 0:  # sometimes the wrong shape
        need_from, need_to = draw(st.booleans()), draw(st.booleans())
    material = sometimes_wrong(st.sampled_from(sorted(MATERIALS)), MATERIAL_CHOICES)
    good_units = st.sampled_from(UNITS_FOR.get(MaterialId(material), UNIT_CHOICES))
    from_unit = sometimes_wrong(good_units, UNIT_CHOICES) if need_from else None
    if from_unit is not None and kind is MovementKind.TRANSFER:
        good_units = good_units.filter(lambda u: u != from_unit)
    to_unit = sometimes_wrong(good_units, UNIT_CHOICES) if need_to else None
    lot = sometimes_wrong(st.sampled_from(LOTS_OF.get(material, LOTS)), [*LOTS, "L9"])
    quantity = draw(quantities)
    if kind is MovementKind.ADJUSTMENT and draw(st.booleans()):
        quantity = -quantity
    consumed: list[str] = []
    if kind is MovementKind.PRODUCTION or draw(st.integers(0, 19)) == 0:
        consumed = draw(st.lists(st.sampled_from([*LOTS, "L9"]), max_size=2, unique=True))
    return Post(
        PostingRequest(
            kind=kind,
            material=MaterialId(material),
            lot=LotId(lot),
            quantity=quantity,
            uom=sometimes_wrong(st.sampled_from(["kg", "kg", "g", "t"]), ["L", "mL", "lb"]),
            from_unit=None if from_unit is None else StorageUnitId(from_unit),
            to_unit=None if to_unit is None else StorageUnitId(to_unit),
            idempotency_key=draw(keys),
            reason=sometimes_wrong(st.sampled_from(["correction", "spill"]), ["", "  "]),
            source=draw(sources),
            consumed_lots=tuple(LotId(c) for c in consumed),
            expiry=draw(st.sampled_from([None, None, None, PAST, FUTURE])),
        )
    )


def operations(sources: st.SearchStrategy[Source]) -> st.SearchStrategy[list[Op]]:
    op = st.one_of(
        postings(sources),
        postings(sources),
        postings(sources),
        st.builds(Reverse, st.integers(-1, 30), keys, sources),
        st.builds(
            SetStatus,
            st.builds(
                LotStatusRequest,
                lot=st.sampled_from([*LOTS, "L9"]).map(LotId),
                status=st.sampled_from(list(LotStatus)),
                reason=st.just("qa"),
                idempotency_key=keys,
            ),
        ),
        st.builds(Replay, st.integers(0, 30), st.booleans()),
        st.builds(Reuse, st.integers(0, 30)),
        st.just(Commit()),
        st.just(Commit()),
    )
    return st.lists(op, min_size=3, max_size=40)


all_sources = st.sampled_from([Source.MANUAL, Source.MANUAL, Source.CLI, Source.PLC])
manual_sources = st.sampled_from([Source.MANUAL, Source.CLI, Source.OPCUA])

# -- the driver ---------------------------------------------------------------

Request = PostingRequest | ReversalRequest | LotStatusRequest


def other_payload(request: Request) -> Request:
    """The same request (same key) asking for something else."""
    return replace(request, reason=request.reason + " (changed)")


def planned(changes: Changes) -> list[Movement]:
    """The movements a batch will write, read back from their stored form."""
    return [
        movement_from_row({**dict(zip(MOVEMENT_COLUMNS, record, strict=True)), "seq": 0})
        for record in changes.movements
    ]


@dataclass
class Run:
    """A planner driven like the writer drives it, plus what the test observed."""

    state: LedgerState = field(default_factory=LedgerState)
    changes: Changes = field(default_factory=Changes)
    committed: list[Movement] = field(default_factory=list)
    keyed: list[Request] = field(default_factory=list)  # every keyed request sent
    accepted_keyed: list[Request] = field(default_factory=list)
    model_keys: dict[str, tuple[MovementId, str]] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    replays: int = 0
    conflicts: int = 0
    _clock: Callable[[], int] = field(default_factory=lambda: count().__next__)

    def __post_init__(self) -> None:
        self.state.materials.update(MATERIALS)
        self.state.units.update(UNITS)
        self.planner = self._planner()

    def _planner(self) -> Planner:
        return Planner(
            self.state,
            self.changes,
            writer="prop",
            now=lambda: f"2026-06-01T00:00:{self._clock():09d}Z",
            today=lambda: TODAY,
        )

    @property
    def movements(self) -> list[Movement]:
        return self.committed + planned(self.changes)

    def commit(self) -> None:
        for movement in planned(self.changes):
            self.state.movements[movement.id] = movement
        self.committed.extend(planned(self.changes))
        self.changes = Changes()
        self.planner = self._planner()

    def request_for(self, op: Op) -> Request | None:
        if isinstance(op, Post):
            return op.request
        if isinstance(op, SetStatus):
            return op.request
        if isinstance(op, Reverse):
            if op.pick >= 0 and not self.committed:
                return None
            if op.pick < 0:
                target = MovementId("00000000-0000-0000-0000-000000000000")
            else:
                target = self.committed[op.pick % len(self.committed)].id
            return ReversalRequest(
                target, "wrong posting", source=op.source, idempotency_key=op.key
            )
        if isinstance(op, Replay):
            sent = self.keyed if op.any_sent else self.accepted_keyed
            return sent[op.pick % len(sent)] if sent else None
        if isinstance(op, Reuse) and self.accepted_keyed:
            return other_payload(self.accepted_keyed[op.pick % len(self.accepted_keyed)])
        return None

    def apply(self, op: Op) -> None:
        if isinstance(op, Commit):
            self.commit()
            return
        request = self.request_for(op)
        if request is None:
            return
        if isinstance(request, PostingRequest):
            try:
                request = validate_posting(request)
            except InventoryError:
                self.rejected += 1
                return  # the Ledger rejects it before it reaches the planner
        digest = payload_hash(request)
        key = request.idempotency_key
        seen = self.model_keys.get(key) if key is not None else None
        if key is not None:
            self.keyed.append(request)
        state_before, changes_before = copy.deepcopy(self.state), copy.deepcopy(self.changes)
        balances_before = dict(self.state.balances)
        lots_before = dict(self.state.lots)
        try:
            result = self._dispatch(request, digest)
        except InventoryError as exc:
            self.rejected += 1
            # (c) a rejected request leaves no trace
            assert self.state == state_before
            assert self.changes == changes_before
            # (e) a used key with another payload is a conflict, and only then
            if seen is not None and seen[1] != digest:
                assert isinstance(exc, IdempotencyConflict), exc
                assert str(seen[0]) in str(exc)
                self.conflicts += 1
            else:
                assert not isinstance(exc, IdempotencyConflict), exc
            self._check_rejection_reason(request, exc, lots_before)
            return

        assert seen is None or seen[1] == digest, "a reused key with another payload was accepted"
        if seen is not None:
            # (d) replaying a key returns the first movement and changes nothing
            assert result == PostingResult(seen[0], replayed=True)
            assert self.state == state_before
            assert self.changes == changes_before
            self.replays += 1
            return
        assert not result.replayed
        self.accepted += 1
        movement = planned(self.changes)[-1]
        assert movement.id == result.movement_id
        if key is not None:
            assert movement.idempotency_key == key
            self.model_keys[key] = (movement.id, digest)
            self.accepted_keyed.append(request)
        else:
            assert movement.idempotency_key == f"auto:{movement.id}"
        self._check_accepted(request, movement, balances_before, lots_before)

    def _dispatch(self, request: Request, digest: str) -> PostingResult:
        if isinstance(request, PostingRequest):
            return self.planner.post(request, digest)
        if isinstance(request, ReversalRequest):
            return self.planner.reverse(request, digest)
        return self.planner.set_lot_status(request, digest)

    # -- invariants ----------------------------------------------------------

    def check_balances(self) -> None:
        # (a) every book balance is the sum of the legs of all planned movements
        expected: dict[BalanceKey, Decimal] = defaultdict(Decimal)
        for movement in self.movements:
            for unit, lot, delta in movement.legs():
                expected[(unit, lot)] += delta
        assert {k: v for k, v in self.state.balances.items() if v} == {
            k: v for k, v in expected.items() if v
        }
        for key, (_material, quantity, _entered) in self.changes.balances.items():
            assert self.state.balances[key] == quantity

    def _check_accepted(
        self,
        request: Request,
        movement: Movement,
        balances_before: dict[BalanceKey, Decimal],
        lots_before: dict[LotId, object],
    ) -> None:
        manual = request.source is not Source.PLC
        # (b) a manual posting never leaves a balance it lowers below zero
        for unit, lot, delta in movement.legs():
            assert (
                self.state.balances[(unit, lot)]
                == balances_before.get((unit, lot), Decimal(0)) + delta
            )
            if manual and delta < 0:
                assert self.state.balances[(unit, lot)] >= 0, (request, movement)
        if isinstance(request, PostingRequest) and manual and request.kind is MovementKind.ISSUE:
            lot = self.state.lots[request.lot]
            assert lot.status is LotStatus.RELEASED
            assert lot.expiry is None or lot.expiry >= TODAY
        if isinstance(request, ReversalRequest):
            original = self.state.movements[request.movement_id]
            assert movement.reverses == original.id
            assert sorted(movement.legs()) == sorted((u, lot, -d) for u, lot, d in original.legs())
        if isinstance(request, LotStatusRequest):
            old = lots_before[request.lot]
            assert request.status in ALLOWED_TRANSITIONS[old.status]  # type: ignore[attr-defined]
            assert self.state.lots[request.lot].status is request.status

    def _check_rejection_reason(
        self, request: Request, exc: InventoryError, lots_before: dict[LotId, object]
    ) -> None:
        if isinstance(exc, InsufficientStock | LotNotReleased | LotExpired):
            assert request.source is not Source.PLC, "a PLC posting was rejected for stock/status"
        if isinstance(exc, LotStatusTransitionError):
            assert isinstance(request, LotStatusRequest)
            old = lots_before[request.lot]
            assert request.status not in ALLOWED_TRANSITIONS[old.status]  # type: ignore[attr-defined]


def run(ops: list[Op], *, after_each: Callable[[Run], None] | None = None) -> Run:
    driver = Run()
    for op in ops:
        driver.apply(op)
        driver.check_balances()
        if after_each is not None:
            after_each(driver)
    driver.commit()
    driver.check_balances()
    return driver


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- properties ---------------------------------------------------------------


@PROPERTY
@given(ops=operations(all_sources))
def test_any_request_sequence_keeps_balances_equal_to_the_sum_of_movement_legs(
    ops: list[Op],
) -> None:
    run(ops)


def _no_negative_balance(driver: Run) -> None:
    assert all(q >= 0 for q in driver.state.balances.values()), driver.state.balances


@PROPERTY
@given(ops=operations(manual_sources))
def test_manual_requests_never_leave_any_balance_negative(ops: list[Op]) -> None:
    run(ops, after_each=_no_negative_balance)


@PROPERTY
@given(ops=operations(all_sources))
def test_replaying_every_accepted_key_returns_the_same_movement_and_changes_nothing(
    ops: list[Op],
) -> None:
    driver = run(ops)
    state_before = copy.deepcopy(driver.state)
    for request in driver.accepted_keyed:
        assert request.idempotency_key is not None
        first_id, _ = driver.model_keys[request.idempotency_key]
        result = driver._dispatch(request, payload_hash(request))
        assert result == PostingResult(first_id, replayed=True)
    assert driver.state == state_before
    assert driver.changes == Changes()


@PROPERTY
@given(ops=operations(all_sources), data=st.data())
def test_an_accepted_key_with_any_other_payload_is_a_conflict(
    ops: list[Op], data: st.DataObject
) -> None:
    driver = run(ops)
    if not driver.accepted_keyed:
        return
    request = data.draw(st.sampled_from(driver.accepted_keyed))
    other: Request
    if isinstance(request, PostingRequest):
        other = data.draw(
            st.sampled_from(
                [
                    replace(request, quantity=request.quantity + 1),
                    replace(request, material=MaterialId(request.material + "x")),
                    replace(request, lot=LotId(request.lot + "x")),
                    replace(request, uom="g" if request.uom != "g" else "kg"),
                    replace(request, reason=request.reason + "!"),
                    replace(request, to_unit=StorageUnitId("ELSEWHERE")),
                    replace(request, from_unit=StorageUnitId("ELSEWHERE")),
                    replace(request, expiry=date(2030, 1, 1)),
                    replace(request, consumed_lots=(*request.consumed_lots, LotId("L9"))),
                    replace(
                        request,
                        kind=MovementKind.COUNT
                        if request.kind is not MovementKind.COUNT
                        else MovementKind.ADJUSTMENT,
                    ),
                ]
            )
        )
    elif isinstance(request, ReversalRequest):
        other = replace(request, movement_id=MovementId("another"))
    else:
        other = replace(request, reason="another reason")
    state_before = copy.deepcopy(driver.state)
    try:
        driver._dispatch(other, payload_hash(other))
    except IdempotencyConflict as exc:
        assert repr(request.idempotency_key) in str(exc)
        assert "with a different payload" in str(exc)
    else:
        raise AssertionError(f"key {request.idempotency_key} reused without a conflict")
    assert driver.state == state_before


def test_generated_sequences_exercise_acceptance_replay_and_conflict() -> None:
    """Guard against strategies that only produce rejections (then the properties say little)."""
    totals = {"accepted": 0, "replays": 0, "conflicts": 0, "rejected": 0}

    @settings(max_examples=100, database=None, deadline=None, derandomize=True)
    @given(ops=operations(all_sources))
    def collect(ops: list[Op]) -> None:
        driver = run(ops)
        for name in totals:
            totals[name] += getattr(driver, name)

    collect()
    assert totals["accepted"] > 50 and totals["rejected"] > 50, totals
    assert totals["replays"] > 20 and totals["conflicts"] > 20, totals


@PROPERTY
@given(ops=operations(all_sources), data=st.data())
def test_an_accepted_key_from_another_user_or_source_is_a_replay(
    ops: list[Op], data: st.DataObject
) -> None:
    driver = run(ops)
    if not driver.accepted_keyed:
        return
    request = data.draw(st.sampled_from(driver.accepted_keyed))
    assert request.idempotency_key is not None
    again = replace(request, user="someone-else", source=Source.OPCUA)
    result = driver._dispatch(again, payload_hash(again))
    assert result == PostingResult(driver.model_keys[request.idempotency_key][0], replayed=True)
    assert driver.changes == Changes()


def _production(consumed: tuple[str, ...]) -> PostingRequest:
    return PostingRequest(
        MovementKind.PRODUCTION, MaterialId("ETH"), LotId("P1"), Decimal(5), "kg",
        to_unit=StorageUnitId("T1"), idempotency_key="batch-7",
        consumed_lots=tuple(LotId(c) for c in consumed),
    )  # fmt: skip


def test_same_key_with_regrouped_consumed_lots_is_a_conflict() -> None:
    """Lot ids may contain commas, so ("A", "B") and ("A,B",) are different payloads."""
    driver = Run()
    for lot in ("A", "B"):
        driver.apply(Post(replace(_production(()), lot=LotId(lot), idempotency_key=None)))
    first = _production(("A", "B"))
    driver.planner.post(first, payload_hash(first))
    regrouped = _production(("A,B",))
    with pytest.raises(IdempotencyConflict, match="'batch-7' was already used"):
        driver.planner.post(regrouped, payload_hash(regrouped))

"""Property tests of advices in the pure planner: for any sequence of advices, measured
changes (settled or not) and replays in a measured unit, each physical change is booked
exactly once, advices book nothing themselves, what the advices matched is what the
movements booked to them, and a replay changes nothing."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st

from inventory_core.domain.advices import AdviceState
from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.posting import (
    MOVEMENT_COLUMNS,
    Changes,
    LedgerState,
    Planner,
    payload_hash,
)

OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal(1), LotStatus.RELEASED)
TANK = StorageUnitId("TANK")
NOW = "2026-12-02T08:00:00.000000Z"

# (what, quantity, flag): an advice in (lot), an advice out, or a gauge rise/fall (settled)
steps = st.lists(
    st.tuples(
        st.sampled_from(["advise-in", "advise-out", "rise", "fall", "replay"]),
        st.integers(min_value=1, max_value=500),
        st.booleans(),
    ),
    max_size=40,
)


def gauge(rise: bool, qty: int, key: str, settled: bool) -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT if rise else MovementKind.ISSUE, OIL.id, None, Decimal(qty), "kg",
        to_unit=TANK if rise else None, from_unit=None if rise else TANK,
        idempotency_key=key, user="plc", source=Source.PLC, details={"settled": settled},
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(steps=steps, rule=st.sampled_from([LotHandling.FIFO, LotHandling.MIXED, LotHandling.LIFO]))
def test_each_measured_change_is_booked_once_and_advices_account_for_it(
    steps: list[tuple[str, int, bool]], rule: LotHandling
) -> None:
    unit = StorageUnit(
        TANK, "P", "A", StorageKind.TANK, Decimal(100000), "kg", OIL.id,
        lot_handling=rule, booking=Booking.MEASURED, zero_lot_threshold=Decimal(0),
    )  # fmt: skip
    state = LedgerState(materials={OIL.id: OIL}, units={TANK: unit}, present={TANK: set()})
    changes = Changes()
    planner = Planner(state, changes, writer="w", now=lambda: NOW, today=lambda: date(2026, 12, 2))
    keys = count()
    opening = PostingRequest(
        MovementKind.COUNT,
        OIL.id,
        LotId("TANK-OPEN"),
        Decimal(1000),
        "kg",
        to_unit=TANK,
        idempotency_key="plc:open",
        user="plc",
        source=Source.PLC,
    )  # fmt: skip, as the measurement service opens a unit
    planner.post(opening, payload_hash(opening))
    measured = Decimal(1000)  # what the gauge says is in the tank
    posted: list[tuple[PostingRequest, str]] = []
    for what, qty, flag in steps:
        if what == "replay":
            if posted:
                request, result_id = posted[qty % len(posted)]
                before = (len(changes.movements), dict(state.balances))
                again = planner.post(request, payload_hash(request))
                assert again.replayed and again.movement_id == result_id
                assert (len(changes.movements), dict(state.balances)) == before
            continue
        if what.startswith("advise"):
            inbound = what == "advise-in"
            request = PostingRequest(
                MovementKind.RECEIPT if inbound else MovementKind.ISSUE, OIL.id,
                LotId(f"L{next(keys)}") if inbound else None, Decimal(qty), "kg",
                to_unit=TANK if inbound else None, from_unit=None if inbound else TANK,
                idempotency_key=f"a{next(keys)}", source=Source.CLI, user="erp",
            )  # fmt: skip
            movements = len(changes.movements)
            result = planner.post(request, payload_hash(request))
            assert result.advice is not None and len(changes.movements) == movements
        else:
            request = gauge(what == "rise", qty, f"plc:{next(keys)}", flag)
            result = planner.post(request, payload_hash(request))
            measured += qty if what == "rise" else -qty
            if flag:  # the gauge came to rest: no advice stays half booked, either direction
                advices = state.advices.get(TANK, [])
                assert not [a for a in advices if a.state is AdviceState.OPEN and a.matches]
        posted.append((request, result.movement_id))

    book = sum(state.balances.values(), Decimal(0))
    assert book == measured  # every measured change booked once, nothing else booked
    booked_to: dict[str, Decimal] = {}
    for record in changes.movements:
        row = dict(zip(MOVEMENT_COLUMNS, record, strict=True))
        advice_id = json.loads(str(row["details"])).get("advice")
        if advice_id is not None:
            booked_to[advice_id] = booked_to.get(advice_id, Decimal(0)) + Decimal(
                str(row["quantity"])
            )
    advices = changes.advices.values()
    assert {a.id: a.matched for a in advices if a.matches} == booked_to
    for advice in advices:
        assert (advice.state is AdviceState.OPEN) == (advice.closed_at is None)
        if advice.state is AdviceState.MATCHED:
            assert advice.variance == advice.matched - advice.expected

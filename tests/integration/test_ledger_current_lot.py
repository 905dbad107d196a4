"""PLC postings without a lot (`lot=None`) book to the unit's current lot, resolved in
the posting transaction: on SQLite and PostgreSQL, alone and sharing a commit batch
with the receipts that change the current lot."""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import InventoryError, MaterialMismatch, ValidationError
from inventory_core.domain.model import (
    CURRENT_LOT_KINDS,
    LotId,
    MaterialId,
    Movement,
    MovementKind,
    PostingRequest,
    PostingResult,
    Source,
    StorageUnitId,
    opening_lot,
)
from tests.conftest import MATERIALS, UNITS

K = MovementKind
ETHANOL = MaterialId("ETHANOL-96")
TANKS = (StorageUnitId("TK-101"), StorageUnitId("TK-103"))


def manual(kind: MovementKind, lot: str, qty: str, unit: str = "TK-101") -> PostingRequest:
    target = {"from_unit": StorageUnitId(unit)} if kind is K.ISSUE else {}
    target = target or {"to_unit": StorageUnitId(unit)}
    return PostingRequest(kind, ETHANOL, LotId(lot), Decimal(qty), "kg", **target)


def plc(
    kind: MovementKind, qty: str, unit: str = "TK-101", key: str | None = None
) -> PostingRequest:
    target = {"from_unit": StorageUnitId(unit)} if kind is K.ISSUE else {}
    target = target or {"to_unit": StorageUnitId(unit)}
    return PostingRequest(
        kind, ETHANOL, None, Decimal(qty), "kg", idempotency_key=key, user="plc",
        source=Source.PLC, reason="measured change", **target,
    )  # fmt: skip


async def lot_of(ledger: Ledger, result: PostingResult) -> str:
    return str((await ledger.movement(result.movement_id)).lot)


async def test_without_a_current_lot_a_plc_receipt_opens_the_units_opening_lot(
    ledger: Ledger,
) -> None:
    result = await ledger.post(plc(K.RECEIPT, "12"))
    assert await lot_of(ledger, result) == "TK-101-OPEN"
    [balance] = await ledger.balances(unit="TK-101")
    assert (balance.lot, balance.quantity) == ("TK-101-OPEN", Decimal(12))
    assert await ledger.current_lot("TK-101") == "TK-101-OPEN"


async def test_plc_postings_follow_the_last_receipt_into_the_unit(ledger: Ledger) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    assert await lot_of(ledger, await ledger.post(plc(K.ISSUE, "10"))) == "E1"
    await ledger.post(manual(K.RECEIPT, "E2", "50"))
    assert await lot_of(ledger, await ledger.post(plc(K.ISSUE, "5"))) == "E2"
    assert await lot_of(ledger, await ledger.post(plc(K.RECEIPT, "1"))) == "E2"
    await ledger.post(manual(K.ISSUE, "E1", "1"))  # an issue does not change the current lot
    assert await lot_of(ledger, await ledger.post(plc(K.ISSUE, "1"))) == "E2"
    books = {b.lot: b.quantity for b in await ledger.balances(unit="TK-101")}
    assert books == {"E1": Decimal(89), "E2": Decimal(45)}


async def test_a_receipt_earlier_in_the_same_commit_is_the_current_lot(ledger: Ledger) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    receipt, issue = await asyncio.gather(
        ledger.post(manual(K.RECEIPT, "E2", "50")), ledger.post(plc(K.ISSUE, "5"))
    )
    first, second = [await ledger.movement(r.movement_id) for r in (receipt, issue)]
    assert first.timestamp == second.timestamp  # one batch: one commit, one timestamp
    assert second.lot == "E2"


async def test_a_rejected_receipt_in_the_same_commit_changes_no_current_lot(
    ledger: Ledger,
) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    await ledger.post(
        PostingRequest(
            K.RECEIPT, MaterialId("SUGAR"), LotId("S1"), Decimal(1), "kg",
            to_unit=StorageUnitId("SI-201"),
        )
    )  # fmt: skip
    rejected, issue = await asyncio.gather(
        ledger.post(manual(K.RECEIPT, "S1", "5")),  # S1 is a sugar lot: rejected
        ledger.post(plc(K.ISSUE, "5")),
        return_exceptions=True,
    )
    assert isinstance(rejected, MaterialMismatch)
    assert isinstance(issue, PostingResult)
    assert await lot_of(ledger, issue) == "E1"


async def test_a_replayed_key_is_the_first_movement_even_after_the_current_lot_changed(
    ledger: Ledger,
) -> None:
    await ledger.post(manual(K.RECEIPT, "E1", "100"))
    first = await ledger.post(plc(K.ISSUE, "5", key="plc:TK-101:1"))
    await ledger.post(manual(K.RECEIPT, "E2", "50"))
    again = await ledger.post(plc(K.ISSUE, "5", key="plc:TK-101:1"))
    assert (again.movement_id, again.replayed) == (first.movement_id, True)
    assert await lot_of(ledger, again) == "E1"


@pytest.mark.parametrize(
    "request_",
    [
        PostingRequest(K.RECEIPT, ETHANOL, None, Decimal(1), "kg", to_unit=TANKS[0]),
        PostingRequest(
            K.TRANSFER,
            ETHANOL,
            None,
            Decimal(1),
            "kg",
            from_unit=TANKS[0],
            to_unit=TANKS[1],
            source=Source.PLC,
        ),
    ],
    ids=["manual", "plc-transfer"],
)
async def test_only_a_plc_posting_of_one_unit_may_omit_the_lot(
    ledger: Ledger, request_: PostingRequest
) -> None:
    with pytest.raises(ValidationError, match="lot is missing"):
        await ledger.post(request_)
    assert await ledger.history() == []


# -- property: any interleaving, checked against the history --------------------------


def current_lots_before(history: list[Movement]) -> dict[str, str]:
    """For each movement id: the current lot of its unit just before it (oracle)."""
    current: dict[str, str] = {}
    before: dict[str, str] = {}
    for m in history:
        unit = m.to_unit or m.from_unit
        assert unit is not None
        before[m.id] = current.get(unit, str(opening_lot(unit)))
        if m.kind in CURRENT_LOT_KINDS and m.to_unit is not None:
            current[m.to_unit] = str(m.lot)
    return before


step = st.one_of(
    st.builds(
        manual,
        st.just(K.RECEIPT),
        st.sampled_from(["E1", "E2", "E3", "S1"]),  # S1 (sugar) is rejected
        st.sampled_from(["7", "40"]),
        st.sampled_from(TANKS),
    ),
    st.builds(
        plc,
        st.sampled_from([K.RECEIPT, K.ISSUE]),
        st.sampled_from(["1", "3"]),
        st.sampled_from(TANKS),
    ),
)
groups = st.lists(st.lists(step, min_size=1, max_size=6), min_size=1, max_size=8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=groups)
def test_every_plc_posting_books_to_the_current_lot_of_its_commit_order(
    script: list[list[PostingRequest]],
) -> None:
    async def main(path: Path) -> None:
        url = f"sqlite+aiosqlite:///{path}"
        async with open_ledger(url, writer_id="current-lot", migrate=True) as ledger:
            await ledger.sync_master_data(MATERIALS, UNITS)
            await ledger.post(
                PostingRequest(
                    K.RECEIPT, MaterialId("SUGAR"), LotId("S1"), Decimal(1), "kg",
                    to_unit=StorageUnitId("SI-201"),
                )
            )  # fmt: skip
            for tank in TANKS:  # stock to issue from, as a PLC unit's opening count gives
                await ledger.post(manual(K.RECEIPT, "E1", "500", tank))
            without_lot: set[str] = set()
            for group in script:  # each group concurrently: they share commit batches
                results = await asyncio.gather(
                    *(ledger.post(r) for r in group), return_exceptions=True
                )
                for request, result in zip(group, results, strict=True):
                    if isinstance(result, BaseException):
                        assert isinstance(result, InventoryError), result
                        assert request.lot is not None  # only manual receipts fail here
                    elif request.lot is None:
                        without_lot.add(str(result.movement_id))
            history = await ledger.history()
            expected = current_lots_before(history)
            booked = {m.id: str(m.lot) for m in history if m.id in without_lot}
            assert booked == {m: expected[m] for m in booked}
            assert len(booked) == len(without_lot)
            assert (await ledger.verify()).ok

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp) / "ledger.db"))

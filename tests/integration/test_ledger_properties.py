"""Property tests against a real SQLite ledger file, and tampering with it behind its back.

Each hypothesis example opens a fresh ledger file, plays a random sequence of
postings, reversals and lot-status changes (submitted in random concurrent
groups, so group commit batches them), and checks the book against the
history, idempotent replay and `verify`. Then one audit row is edited with
the stdlib `sqlite3` module and `verify` must point at the edit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.model import (
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialId,
    Movement,
    MovementKind,
    PostingRequest,
    PostingResult,
    ReversalRequest,
    StorageUnitId,
    VerifyReport,
)
from tests.conftest import MATERIALS, UNITS

WRITER = "prop-writer"
K = MovementKind
ETHANOL, SUGAR, SYRUP = MaterialId("ETHANOL-96"), MaterialId("SUGAR"), MaterialId("SYRUP")
# material -> (lots, storage units, units of measure a caller may post in)
FAMILIES = {
    ETHANOL: (["E1", "E2"], ["TK-101", "TK-103"], ["kg", "kg", "L", "g"]),
    SUGAR: (["S1", "S2"], ["SI-201", "SI-202"], ["kg", "kg", "t", "g"]),
}
INPUT_LOTS = [lot for lots, _, _ in FAMILIES.values() for lot in lots]

# -- what a test plays ------------------------------------------------------------


@dataclass(frozen=True)
class Reverse:
    pick: int  # index (modulo) into the movements accepted before this step's group


Step = PostingRequest | LotStatusRequest | Reverse


@st.composite
def postings(draw: st.DrawFn) -> PostingRequest:
    kind = draw(
        st.sampled_from(
            [K.RECEIPT] * 3 + [K.ISSUE] * 2 + [K.TRANSFER, K.SCRAP, K.ADJUSTMENT, K.COUNT]
            + [K.PRODUCTION]
        )
    )  # fmt: skip
    quantity = draw(st.decimals(min_value=Decimal("0.001"), max_value=400, places=3))
    if kind is K.PRODUCTION:
        consumed = draw(st.lists(st.sampled_from([*INPUT_LOTS, "P1"]), max_size=2, unique=True))
        lot = draw(st.sampled_from(["P1", "P2"]))
        return PostingRequest(
            kind, SYRUP, LotId(lot), quantity, "kg", to_unit=StorageUnitId("TK-301"),
            consumed_lots=tuple(LotId(c) for c in consumed if c != lot),
        )  # fmt: skip
    if kind is not K.RECEIPT:  # outgoing quantities smaller, so that more of them fit
        quantity = (quantity / 4).quantize(Decimal("0.001")) or Decimal("0.001")
    material = draw(st.sampled_from(sorted(FAMILIES)))
    lots, units, uoms = FAMILIES[material]
    # mostly the first lot and unit of the family, so that later steps find stock
    lot = LotId(draw(st.sampled_from([lots[0], lots[0], lots[0], lots[1]])))
    here = StorageUnitId(draw(st.sampled_from([units[0], units[0], units[1]])))
    there = StorageUnitId(next(u for u in units if u != here))
    uom = draw(st.sampled_from(uoms))
    base = PostingRequest(kind, material, lot, quantity, uom)
    if kind is K.RECEIPT:
        return replace(base, to_unit=here)
    if kind is K.ISSUE:
        return replace(base, from_unit=here)
    if kind is K.TRANSFER:
        return replace(base, from_unit=here, to_unit=there)
    if kind is K.SCRAP:
        return replace(base, from_unit=here, reason="spill")
    if kind is K.COUNT:
        counted = draw(st.sampled_from([quantity, Decimal(0)]))
        return replace(base, to_unit=here, quantity=counted)
    sign = draw(st.sampled_from([1, -1]))
    return replace(base, to_unit=here, quantity=sign * quantity, reason="stock check")


steps = st.one_of(
    postings(),
    postings(),
    postings(),
    st.builds(Reverse, st.integers(0, 50)),
    st.builds(
        LotStatusRequest,
        lot=st.sampled_from(INPUT_LOTS).map(LotId),
        status=st.sampled_from([LotStatus.HOLD, LotStatus.RELEASED]),
        reason=st.just("QA"),
    ),
)
# Every script opens with stock in each family's lots, so that later steps find some.
OPENING: list[Step] = [
    PostingRequest(K.RECEIPT, material, LotId(lot), Decimal(500), "kg",
                   to_unit=StorageUnitId(unit))
    for material, (lots, units, _) in FAMILIES.items()
    for lot, unit in zip(lots, units, strict=True)
]  # fmt: skip
# Groups of steps: each group is submitted concurrently (one or more commit batches).
scripts = st.lists(st.lists(steps, min_size=1, max_size=4), min_size=1, max_size=10).map(
    lambda groups: [OPENING, *groups]
)


@dataclass
class Played:
    accepted: list[tuple[PostingRequest | ReversalRequest | LotStatusRequest, PostingResult]]
    rejected: int


def _submit(
    ledger: Ledger, request: PostingRequest | ReversalRequest | LotStatusRequest
) -> Awaitable[PostingResult]:
    if isinstance(request, PostingRequest):
        return ledger.post(request)
    if isinstance(request, ReversalRequest):
        return ledger.reverse(request)
    return ledger.set_lot_status(request)


async def play(ledger: Ledger, script: list[list[Step]]) -> Played:
    played = Played([], 0)
    n = 0
    for group in script:
        known = [result.movement_id for _, result in played.accepted]
        requests: list[PostingRequest | ReversalRequest | LotStatusRequest] = []
        for step in group:
            n += 1
            key = f"step-{n}"
            if isinstance(step, Reverse):
                if known:
                    target = known[step.pick % len(known)]
                    requests.append(ReversalRequest(target, "correction", idempotency_key=key))
            else:
                requests.append(replace(step, idempotency_key=key))
        results = await asyncio.gather(
            *(_submit(ledger, r) for r in requests), return_exceptions=True
        )
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, InventoryError):
                played.rejected += 1
            elif isinstance(result, BaseException):
                raise result
            else:
                assert not result.replayed
                played.accepted.append((request, result))
    return played


def book_from(history: list[Movement]) -> dict[tuple[str, str], Decimal]:
    book: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for movement in history:
        for unit, lot, delta in movement.legs():
            book[(unit, lot)] += delta
    return book


def with_ledger(path: Path, body: Callable[[Ledger], Awaitable[object]]) -> object:
    async def main() -> object:
        async with open_ledger(f"sqlite+aiosqlite:///{path}", writer_id=WRITER) as ledger:
            return await body(ledger)

    return asyncio.run(main())


def new_ledger(path: Path, script: list[list[Step]]) -> Played:
    async def main() -> Played:
        url = f"sqlite+aiosqlite:///{path}"
        async with open_ledger(url, writer_id=WRITER, migrate=True) as ledger:
            await ledger.sync_master_data(MATERIALS, UNITS)
            return await play(ledger, script)

    return asyncio.run(main())


def verify(path: Path) -> VerifyReport:
    async def body(ledger: Ledger) -> VerifyReport:
        return await ledger.verify()

    report = with_ledger(path, body)
    assert isinstance(report, VerifyReport)
    return report


# -- properties -------------------------------------------------------------------

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


async def _check_book_replay_and_verify(ledger: Ledger, played: Played) -> None:
    history = await ledger.history()
    seqs = [m.seq for m in history]
    assert seqs == sorted(set(seqs))
    assert {m.id for m in history} == {result.movement_id for _, result in played.accepted}

    # balances equal the sum of the legs of the history, and none is negative (all manual)
    book = book_from(history)
    balances = await ledger.balances()
    rows = {(b.unit, b.lot): b.quantity for b in balances}
    assert {k: q for k, q in rows.items() if q} == {k: q for k, q in book.items() if q}
    assert set(rows) <= set(book)
    assert all(q >= 0 for q in rows.values()), rows
    assert {b.uom for b in balances} <= {"kg"}

    # replaying every accepted key returns the first movement and changes nothing
    replays = await asyncio.gather(*(_submit(ledger, r) for r, _ in played.accepted))
    assert replays == [PostingResult(result.movement_id, True) for _, result in played.accepted]
    assert [m.id for m in await ledger.history()] == [m.id for m in history]
    assert await ledger.balances() == balances

    report = await ledger.verify()
    assert report.ok, report.problems
    assert report.movements == len(history)
    assert report.chains[WRITER] == (await ledger.chain_heads())[WRITER][0]


@PROPERTY
@given(script=scripts)
def test_book_equals_history_replay_changes_nothing_and_verify_passes(
    script: list[list[Step]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        played = new_ledger(path, script)

        async def check(ledger: Ledger) -> None:
            await _check_book_replay_and_verify(ledger, played)

        with_ledger(path, check)


TEXT_COLUMNS = ("new", "reason", "user", "hash", "prev_hash", "timestamp", "action", "object_id")


@PROPERTY
@given(
    script=scripts,
    column=st.sampled_from([*TEXT_COLUMNS, "seq", "seq"]),
    row_pick=st.integers(0, 10_000),
    position_pick=st.integers(0, 10_000),
    replacement=st.characters(min_codepoint=1, exclude_categories=("Cs",)),
)
def test_any_single_character_edit_of_an_audit_row_is_reported_at_that_record(
    script: list[list[Step]], column: str, row_pick: int, position_pick: int, replacement: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        new_ledger(path, script)

        with sqlite3.connect(path) as db:
            rows = db.execute(
                f'SELECT id, seq, "{column}" FROM audit WHERE writer = ? ORDER BY seq', (WRITER,)
            ).fetchall()
            candidates = [r for r in rows if str(r[2])]
            assume(candidates)
            row_id, seq, value = candidates[row_pick % len(candidates)]
            text = str(value)
            index = position_pick % len(text)
            if column == "seq":
                used = {r[1] for r in rows}
                options = [
                    int(text[:index] + d + text[index + 1 :])
                    for d in "0123456789"
                    if d != text[index] and int(text[:index] + d + text[index + 1 :]) not in used
                ]
                assume(options)
                edited: object = options[ord(replacement) % len(options)]
            else:
                assume(replacement != text[index])
                edited = text[:index] + replacement + text[index + 1 :]
            db.execute(f'UPDATE audit SET "{column}" = ? WHERE id = ?', (edited, row_id))
        db.close()

        report = verify(path)

    assert not report.ok, f"edit of audit.{column} at seq {seq} went unnoticed"
    first = report.problems[0]
    assert first.chain == WRITER, report.problems
    # the report names the edited record, or (a moved seq) the place it left empty
    assert first.record_id == row_id or f"expected {seq}," in first.message, (
        column,
        seq,
        row_id,
        edited,
        report.problems,
    )


# -- tampering with other tables (fixed history) ----------------------------------

FIXED_SCRIPT: list[list[Step]] = [
    [
        PostingRequest(K.RECEIPT, ETHANOL, LotId("E1"), Decimal(100), "kg",
                       to_unit=StorageUnitId("TK-101")),
        PostingRequest(K.RECEIPT, SUGAR, LotId("S1"), Decimal(2), "t",
                       to_unit=StorageUnitId("SI-201")),
    ],
    [
        PostingRequest(K.ISSUE, ETHANOL, LotId("E1"), Decimal(30), "kg",
                       from_unit=StorageUnitId("TK-101")),
        PostingRequest(K.TRANSFER, SUGAR, LotId("S1"), Decimal(500), "kg",
                       from_unit=StorageUnitId("SI-201"), to_unit=StorageUnitId("SI-202")),
    ],
    [Reverse(2)],
]  # fmt: skip


@dataclass(frozen=True)
class Tamper:
    sql: str
    where: str  # which problem chain/table must be reported
    message: str  # a fragment of its message


TAMPERING = {
    "last audit row deleted": Tamper(
        "DELETE FROM audit WHERE id = (SELECT max(id) FROM audit)", WRITER, "but its head says"
    ),
    "chain head edited": Tamper(
        "UPDATE audit_heads SET seq = seq + 1", WRITER, "but its head says"
    ),
    "movement row deleted": Tamper(
        "DELETE FROM movements WHERE seq = 3", "movements", "deleted"
    ),
    "movement quantity edited": Tamper(
        "UPDATE movements SET quantity = '29' WHERE seq = 3",
        "movements",
        "differs from its audit record",
    ),
    "movement lot edited": Tamper(
        "UPDATE movements SET lot = 'E2' WHERE seq = 3", "movements", "differs from its audit"
    ),
    "balance edited": Tamper(
        "UPDATE balances SET quantity = '71' WHERE unit = 'TK-101' AND lot = 'E1'",
        "balances",
        "balance of lot E1 in TK-101 (71) is not the sum of its movements",
    ),
    "balance row deleted": Tamper(
        "DELETE FROM balances WHERE unit = 'SI-202'", "balances", "S1 in SI-202 is missing"
    ),
    "lot status edited": Tamper(
        "UPDATE lots SET status = 'released' WHERE id = 'E1'", "lots", "E1"
    ),
    "material edited": Tamper(
        "UPDATE materials SET density_kg_per_l = '0.9' WHERE id = 'ETHANOL-96'",
        "materials",
        "ETHANOL-96",
    ),
}  # fmt: skip


@pytest.mark.parametrize("tamper", list(TAMPERING.values()), ids=list(TAMPERING))
def test_verify_reports_edits_and_deletions_outside_the_ledger(
    tmp_path: Path, tamper: Tamper
) -> None:
    path = tmp_path / "ledger.db"
    played = new_ledger(
        path, [*FIXED_SCRIPT, [LotStatusRequest(LotId("E1"), LotStatus.HOLD, "QA")]]
    )
    assert played.rejected == 0 and len(played.accepted) == 6
    assert verify(path).ok

    with sqlite3.connect(path) as db:
        assert db.execute(tamper.sql).rowcount == 1
    db.close()

    report = verify(path)
    assert not report.ok
    assert any(p.chain == tamper.where and tamper.message in p.message for p in report.problems), (
        report.problems
    )


def test_deleting_the_last_audit_row_reports_the_missing_sequence_number(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    new_ledger(path, FIXED_SCRIPT)
    with sqlite3.connect(path) as db:
        (last,) = db.execute("SELECT max(seq) FROM audit WHERE writer = ?", (WRITER,)).fetchone()
        db.execute("DELETE FROM audit WHERE writer = ? AND seq = ?", (WRITER, last))
    db.close()
    report = verify(path)
    first = report.problems[0]
    assert (first.chain, first.seq) == (WRITER, last)
    assert f"chain ends at seq {last - 1} but its head says {last}" in first.message

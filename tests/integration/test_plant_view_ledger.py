"""The plant view's book side follows a real ledger: this process's movements at once,
other writers' through the tail, each movement passed on once as `MovementSeen`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio

from inventory_core import Ledger, open_ledger
from inventory_core.domain.model import (
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.plant_view import (
    Cause,
    LedgerFollower,
    MovementSeen,
    PlantChange,
    PlantView,
    UnitChanged,
)

pytestmark = pytest.mark.asyncio(loop_scope="function")

SUGAR = MaterialDefinition(
    MaterialId("SUGAR"), "Sugar", "kg", default_lot_status=LotStatus.RELEASED
)
UNITS = [
    StorageUnit(StorageUnitId("SI-1"), "PLANT", "SILOS", StorageKind.SILO, Decimal(1000), "kg",
                MaterialId("SUGAR")),
    StorageUnit(StorageUnitId("SI-2"), "PLANT", "SILOS", StorageKind.SILO, Decimal(1000), "kg",
                MaterialId("SUGAR")),
]  # fmt: skip
TIMEOUT_S = 10.0


@dataclass
class Books:
    url: str
    ledger: Ledger
    view: PlantView
    changes: list[PlantChange]


def receipt(unit: str, lot: str, kg: int) -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT, MaterialId("SUGAR"), LotId(lot), Decimal(kg), "kg",
        to_unit=StorageUnitId(unit), user="tester",
    )  # fmt: skip


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():  # noqa: ASYNC110 - the follower has no event to await
            await asyncio.sleep(0.02)
    assert condition(), what


@pytest_asyncio.fixture
async def books(tmp_path: Path) -> AsyncIterator[Books]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    async with open_ledger(url, writer_id="this-process", migrate=True) as ledger:
        await ledger.sync_master_data([SUGAR], UNITS)
        view = PlantView(UNITS, [SUGAR])
        changes: list[PlantChange] = []
        view.subscribe(changes.append)
        follower = LedgerFollower(ledger, view, debounce_s=0.01, tail_s=0.05)
        await follower.start()
        task = asyncio.create_task(follower.run())
        try:
            yield Books(url, ledger, view, changes)
        finally:
            follower.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def seen(books: Books) -> list[tuple[str, bool]]:
    return [(c.movement.lot, c.own) for c in books.changes if isinstance(c, MovementSeen)]


def book_of(books: Books, unit: str) -> float | None:
    state = books.view.state(unit)
    return None if state is None else state.book.quantity


async def test_the_first_read_gives_every_unit_a_book(books: Books) -> None:
    assert [book_of(books, u) for u in ("SI-1", "SI-2")] == [0.0, 0.0]


async def test_an_own_movement_is_seen_once_and_moves_the_book(books: Books) -> None:
    start = len(books.changes)  # after the first read
    await books.ledger.post(receipt("SI-1", "L1", 250))
    await until(lambda: book_of(books, "SI-1") == 250.0, "SI-1 booked 250 kg")
    state = books.view.state("SI-1")
    assert state is not None
    assert (state.book.lot_id, state.book.lots, state.book.status) == ("L1", ("L1",), "released")
    await asyncio.sleep(0.2)  # several tail reads later
    assert seen(books) == [("L1", True)]  # heard as posted, not again from the tail
    changed = [(c.state.unit, c.cause) for c in books.changes[start:] if isinstance(c, UnitChanged)]
    assert changed == [("SI-1", Cause.BOOK)]  # once, and only the unit it touched


async def test_another_writers_movement_comes_through_the_tail(books: Books) -> None:
    async with open_ledger(books.url, writer_id="another-process") as other:
        await other.post(receipt("SI-2", "EXT-1", 40))
    await until(lambda: book_of(books, "SI-2") == 40.0, "SI-2 booked 40 kg from elsewhere")
    assert seen(books) == [("EXT-1", False)]
    state = books.view.state("SI-2")
    assert state is not None and state.book.lot_id == "EXT-1"
    assert book_of(books, "SI-1") == 0.0  # untouched

"""Keeps the plant view's book side current: one follower of the ledger per process.

`Ledger.subscribe` calls its listeners synchronously inside the posting, so the
listener only passes the movement on (`MovementSeen`, own) and notes the units
and lots it touched. A loop does the reading:

- at most once per debounce interval it re-reads the touched units (balances,
  current lot, that lot's status) and hands each unit's `Book` to the view;
- movements other processes post (the CLI, other instances on a shared
  ledger) are not heard: every `tail_s` it reads the movements after the
  newest one it has seen, passes them on (`MovementSeen`, not own) and
  refreshes what they touched;
- a movement that commits after one with a higher sequence number (several
  writers on PostgreSQL) can slip past that cursor; the full re-read every
  `resync_s` catches it.

A ledger that cannot be read keeps the touched set and retries; the view keeps
showing the last book it had.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

from inventory_core.domain.model import CURRENT_LOT_KINDS, Balance, Movement
from inventory_core.ledger import Ledger
from inventory_core.log import get_logger
from inventory_core.plant_view.state import Book
from inventory_core.plant_view.view import PlantView

__all__ = ["DEBOUNCE_S", "RESYNC_S", "TAIL_S", "LedgerFollower"]

log = get_logger(__name__)

DEBOUNCE_S: Final = 0.2
RESYNC_S: Final = 60.0
TAIL_S: Final = 1.0
TAIL_LIMIT: Final = 1000
RETRY_S: Final = 2.0


class LedgerFollower:
    """Feeds the view's `apply_book` and `movement_seen` from one ledger."""

    def __init__(
        self,
        ledger: Ledger,
        view: PlantView,
        *,
        debounce_s: float = DEBOUNCE_S,
        resync_s: float = RESYNC_S,
        tail_s: float = TAIL_S,
    ) -> None:
        self._ledger = ledger
        self._view = view
        self._units = set(view.units)
        self._debounce_s = debounce_s
        self._resync_s = resync_s
        self._tail_s = tail_s
        self._tail_seq = 0  # the newest movement read by `_follow_others`
        self._touched_lots: set[str] = set()
        self._touched_units: set[str] = set()
        self._dirty = asyncio.Event()
        self._closed = False
        self._lot_status: dict[str, str] = {}
        self._lot_material: dict[str, str] = {}
        self._unit_lot: dict[str, str] = {}
        # current lot per unit as postings set it (the ledger's rule: the lot last
        # received, produced or counted into it); refresh_all reads the truth
        self._current_hint: dict[str, str] = {}

    async def start(self) -> None:
        """Listen, then a first full read (before anyone shows a book value)."""
        self._ledger.subscribe(self._on_movement)  # before reading: nothing falls between
        self._tail_seq = await self._ledger.last_seq()
        await self.refresh_all()

    def close(self) -> None:
        """Stop listening (Ledger has no unsubscribe; the listener turns into a no-op)."""
        self._closed = True

    def _on_movement(self, movement: Movement) -> None:
        if self._closed:
            return
        self._touch(movement)
        self._view.movement_seen(movement, own=True)

    def _touch(self, movement: Movement) -> None:
        self._touched_lots.add(str(movement.lot))
        self._touched_units.update(str(u) for u in (movement.from_unit, movement.to_unit) if u)
        if movement.to_unit and movement.kind in CURRENT_LOT_KINDS:
            self._current_hint[str(movement.to_unit)] = str(movement.lot)
        self._dirty.set()

    async def _follow_others(self) -> None:
        """Pass on what other writers posted since the newest movement read."""
        own = self._ledger.writer_id
        while True:
            movements = await self._ledger.history(after_seq=self._tail_seq, limit=TAIL_LIMIT)
            for movement in movements:
                if movement.writer != own:
                    self._touch(movement)
                    self._view.movement_seen(movement, own=False)
            if movements:
                self._tail_seq = movements[-1].seq
            if len(movements) < TAIL_LIMIT:
                return

    async def run(self) -> None:
        """Refresh what movements touched, follow other writers, resync; until cancelled."""
        now = time.monotonic()
        next_full, next_tail = now + self._resync_s, now + self._tail_s
        while True:
            wake = min(next_full, next_tail)
            try:
                async with asyncio.timeout(max(0.0, wake - time.monotonic())):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            if time.monotonic() >= next_tail:
                next_tail = time.monotonic() + self._tail_s
                try:
                    await self._follow_others()
                except Exception as exc:  # the ledger is away (health says so): next tick
                    log.debug("ledger_tail_read_failed", error=str(exc))
            full = time.monotonic() >= next_full
            if not full and not self._dirty.is_set():
                continue
            self._dirty.clear()
            lots, units = self._touched_lots, self._touched_units
            self._touched_lots, self._touched_units = set(), set()
            try:
                if full:
                    await self.refresh_all()
                    next_full = time.monotonic() + self._resync_s
                else:
                    await self.refresh(lots, units)
            except Exception as exc:  # ledger unreachable: keep the work, try again
                log.warning("book_refresh_failed_retrying", error=str(exc))
                self._touched_lots |= lots
                self._touched_units |= units
                self._dirty.set()
                await asyncio.sleep(RETRY_S)
                continue
            await asyncio.sleep(self._debounce_s)  # at most one refresh per interval

    async def refresh_all(self) -> None:
        """Every unit's book from the ledger."""
        by_unit: dict[str, list[Balance]] = {}
        for balance in await self._ledger.balances():
            by_unit.setdefault(str(balance.unit), []).append(balance)
        await self._read_lots(None)
        self._current_hint = dict(await self._ledger.current_lots())
        for unit in self._view.units:
            self._apply(unit, by_unit.get(unit, []), self._current_hint.get(unit, ""))

    async def refresh(self, lots: Iterable[str], units: Iterable[str]) -> None:
        """Only what changed: the given units, and the units whose current lot is one of
        the given lots (its status may have changed). A few reads for all of them."""
        lot_ids = set(lots)
        if lot_ids:
            await self._read_lots(lot_ids)
        unit_ids = {u for u in units if u in self._units}
        unit_ids |= {u for u, lot in self._unit_lot.items() if lot in lot_ids}
        if not unit_ids:
            return
        by_unit: dict[str, list[Balance]] = {}
        for balance in await self._ledger.balances(units=unit_ids):
            by_unit.setdefault(str(balance.unit), []).append(balance)
        for unit in sorted(unit_ids):
            current = self._current_hint.get(unit)
            if current is None:
                current = await self._ledger.current_lot(unit) or ""
            if current and current not in self._lot_status:
                await self._read_lots({current})
            self._apply(unit, by_unit.get(unit, []), current)

    async def _read_lots(self, ids: set[str] | None) -> None:
        for lot in await (self._ledger.lots() if ids is None else self._ledger.lots(ids=ids)):
            self._lot_status[str(lot.id)] = str(lot.status)
            self._lot_material[str(lot.id)] = str(lot.material)

    def _apply(self, unit: str, balances: list[Balance], current: str) -> None:
        if current:
            self._unit_lot[unit] = current
        else:
            self._unit_lot.pop(unit, None)
        state = self._view.state(unit)
        configured = state.info.material if state is not None else ""
        held: dict[str, Decimal] = {}
        for balance in balances:
            held[str(balance.lot)] = held.get(str(balance.lot), Decimal(0)) + balance.quantity
        lots = sorted(lot for lot, quantity in held.items() if quantity != 0)
        book = Book(
            quantity=float(sum(held.values(), Decimal(0))),
            material_id=configured or self._lot_material.get(current, ""),
            lot_id=current,
            lots=tuple(lots),
            lot_quantities=tuple(float(held[lot]) for lot in lots),
            status=self._lot_status.get(current, ""),
        )
        self._view.apply_book(unit, book)

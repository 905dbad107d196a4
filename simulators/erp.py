"""The demo's simulated ERP and its trucks: deliveries announced by advices, and every
advice a user posts delivered by the simulated plant.

It runs beside the service on the service's `Ledger` (the ledger API, as an ERP
integration would) and on the simulators' `PlantModel` (with `scheduled_receipts`, so
material arrives only by truck). Every `TICK_S`:

* **replenishment**: a measured unit that runs low (below `REORDER_BELOW` of capacity,
  and the first unit once, `FIRST_AFTER_S` after start: TK-102 in the demo) gets a
  delivery of a new lot. ERP posts it as a receipt (source `erp`, a delivery-note
  reference), which the ledger records as an open advice; the truck then unloads over
  `DELIVERY_S`. Some trucks bring a few percent more or less than advised
  (`OFF_SHARE`), and now and then one arrives that nobody announced (`UNADVISED_SHARE`).
* **user advices**: an open advice of a simulated unit that nothing has delivered yet
  (posted from the shell, OPC UA or the API) is delivered, or shipped for an outgoing
  one, within `USER_DELIVERY_S`, at its advised quantity (within gauge-like noise).

A truck waits until its unit is idle, so each delivery books on its own, and flows at
least as fast as the plant's own batches (a small one is over in seconds).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from inventory_core import Ledger
from inventory_core.domain.advices import Advice, AdviceDirection, AdviceState
from inventory_core.domain.model import (
    Booking,
    LotId,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageUnitId,
)
from inventory_core.log import get_logger
from simulators.events import EventKind, PlantEvent
from simulators.plant import RATE, PlantModel, SimulatedUnit

__all__ = ["ERP_USER", "SimulatedErp", "Truck"]

log = get_logger(__name__)

ERP_USER: Final = "erp"
TICK_S: Final = 2.0
FIRST_AFTER_S: Final = (5.0, 15.0)  # the first unit's delivery is advised this soon
FIRST_DELIVERY_S: Final = (45.0, 60.0)  # and its truck unloads within a minute
FIRST_AMOUNT: Final = (0.15, 0.25)  # of capacity: fits a unit that starts half full
REORDER_BELOW: Final = 0.35  # fill ratio at which ERP sends a truck
REFILL_TO: Final = (0.65, 0.75)  # fill ratio a delivery is sized to reach
DELIVERY_S: Final = (60.0, 120.0)  # an ERP truck unloads over a minute or two
USER_DELIVERY_S: Final = (30.0, 50.0)  # a user's advice is delivered within a minute
UNADVISED_SHARE: Final = 0.12
OFF_SHARE: Final = 0.35  # trucks a few percent off their advised quantity
OFF_PCT: Final = (1.0, 4.0)
NOISE_PCT: Final = 0.2  # how far from the advice an exact truck still is (1 sigma)


@dataclass(frozen=True, slots=True)
class Truck:
    """One delivery or shipment the ERP scheduled: `amount` in the unit's simulated uom;
    `advice` is None for an unadvised delivery."""

    kind: EventKind
    unit: str
    amount: float
    advice: Advice | None
    lot: str | None


class SimulatedErp:
    """Replenishes the measured units of `model` through `ledger` (see module doc).

    `first_unit` gets the first delivery soon after start (None: none early). Without
    `seed` the choices are random; `tick` runs one round (tests), `run` forever.
    """

    def __init__(
        self,
        ledger: Ledger,
        model: PlantModel,
        *,
        first_unit: str | None = "TK-102",
        seed: int | None = None,
    ) -> None:
        self._ledger = ledger
        self._model = model
        self._rng = random.Random(seed)
        self._first_unit = first_unit if first_unit in model.units else None
        self._first_at = model.time_s + self._rng.uniform(*FIRST_AFTER_S)
        self._materials: dict[str, MaterialDefinition] = {}
        self._units: set[str] = set()
        self.trucks: list[Truck] = []  # every truck scheduled, in order (tests read it)

    async def run(self) -> None:
        """Every TICK_S, one round; a round that fails is logged and the next one tries
        again (a demo helper must never stop the service)."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("simulated_erp_failed")
            await asyncio.sleep(TICK_S)

    async def tick(self) -> list[Truck]:
        """One round: user advices first (they are waiting), then replenishment."""
        if not self._units:
            await self._load_master_data()
        trucks = await self._deliver_advices()
        for unit in self._model.units.values():
            if unit.id in self._units and self._due(unit):
                trucks.append(await self._replenish(unit))
        self.trucks += trucks
        return trucks

    async def _load_master_data(self) -> None:
        self._materials = {m.id: m for m in await self._ledger.materials()}
        self._units = {
            unit.id
            for unit in await self._ledger.storage_units()
            if unit.booking is Booking.MEASURED
            and unit.id in self._model.units
            and self._model.units[unit.id].material in self._materials
        }

    def _idle(self, unit_id: str) -> bool:
        return self._model.units[unit_id].operation is None and not self._model.queued(unit_id)

    def _due(self, unit: SimulatedUnit) -> bool:
        """The first unit's delivery is advised on time (its truck waits for the unit);
        a later one when the unit runs low and nothing is running or queued."""
        if unit.id == self._first_unit:
            return self._model.time_s >= self._first_at
        return self._idle(unit.id) and unit.fill_ratio < REORDER_BELOW

    async def _deliver_advices(self) -> list[Truck]:
        """Schedule a truck for each open advice of a simulated unit nothing delivers yet."""
        trucks = []
        for advice in reversed(await self._ledger.advices(state=AdviceState.OPEN.value)):
            unit = advice.unit
            if unit not in self._model.units or advice.matches or self._model.knows(advice.id):
                continue
            amount = self._model.amount_in(unit, float(advice.expected), advice.uom)
            if amount is None or amount <= 0:
                continue
            kind = (
                EventKind.DELIVERY if advice.direction is AdviceDirection.IN else EventKind.SHIPMENT
            )
            amount *= 1 + self._rng.gauss(0.0, NOISE_PCT / 100)
            self._schedule(kind, unit, amount, USER_DELIVERY_S, advice.id)
            trucks.append(Truck(kind, unit, amount, advice, advice.lot))
            log.info("simulated_truck", kind=kind.value, unit=unit, advice=advice.id,
                     lot=advice.lot, amount=round(amount, 3))  # fmt: skip
        return trucks

    async def _replenish(self, unit: SimulatedUnit) -> Truck:
        """A delivery of a new lot into `unit`, advised by ERP unless it is an unadvised one."""
        first = unit.id == self._first_unit
        if first:
            self._first_unit = None
            share = self._rng.uniform(*FIRST_AMOUNT)
        else:
            share = max(0.05, self._rng.uniform(*REFILL_TO) - unit.fill_ratio)
        amount = share * unit.capacity
        advised = first or self._rng.random() >= UNADVISED_SHARE
        if not advised:
            self._schedule(
                EventKind.DELIVERY, unit.id, amount, DELIVERY_S, f"unadvised:{uuid.uuid4()}"
            )
            log.info("simulated_erp_unadvised", unit=unit.id, amount=round(amount, 3))
            return Truck(EventKind.DELIVERY, unit.id, amount, None, None)
        material = self._materials[str(unit.material)]
        per_base = self._model.amount_in(unit.id, 1.0, material.base_uom)
        assert per_base, f"{unit.id}: {material.base_uom} converts to {unit.uom}"
        expected = Decimal(max(1, round(amount / per_base)))  # ERP orders whole units
        amount = float(expected) * per_base
        lot = f"{material.id}-{datetime.now(UTC):%y%m%d}-{uuid.uuid4().hex[:4].upper()}"
        note = f"DN-{self._rng.randrange(10**7):07d}"
        result = await self._ledger.post(
            PostingRequest(
                kind=MovementKind.RECEIPT,
                material=MaterialId(material.id),
                lot=LotId(lot),
                quantity=expected,
                uom=material.base_uom,
                to_unit=StorageUnitId(unit.id),
                idempotency_key=f"erp:{note}:{lot}",
                reason="ERP delivery",
                user=ERP_USER,
                source=Source.ERP,
                ref=note,
            )
        )
        off = 0.0
        if self._rng.random() < OFF_SHARE:
            off = self._rng.choice((-1, 1)) * self._rng.uniform(*OFF_PCT) / 100
        actual = amount * (1 + off + self._rng.gauss(0.0, NOISE_PCT / 100))
        advice = result.advice
        ref = advice.id if advice is not None else f"erp:{note}"
        self._schedule(
            EventKind.DELIVERY, unit.id, actual, FIRST_DELIVERY_S if first else DELIVERY_S, ref
        )
        log.info("simulated_erp_delivery", unit=unit.id, lot=lot, ref=note, advised=str(expected),
                 off_pct=round(off * 100, 2))  # fmt: skip
        return Truck(EventKind.DELIVERY, unit.id, actual, advice, lot)

    def _schedule(
        self, kind: EventKind, unit: str, amount: float, duration: tuple[float, float], ref: str
    ) -> None:
        # No slower than the plant's own batches: a trickle would look steady to the gauge
        # logic (less than a deadband per settle time) and book as if the flow had stopped.
        slowest = RATE[0] * self._model.units[unit].capacity
        seconds = min(self._rng.uniform(*duration), amount / slowest)
        self._model.schedule(PlantEvent(kind, unit, amount, duration_s=seconds, ref=ref))

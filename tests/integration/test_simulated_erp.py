"""The demo's simulated ERP on a real ledger and the demo plant's model: deliveries
announced by advices (source `erp`), user advices delivered or shipped, unadvised trucks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

import simulators.erp as erp_module
from inventory_core import Ledger, open_ledger
from inventory_core.domain.advices import AdviceState
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageUnitId,
)
from invops.config import load_config
from invops.plant_description import plant_description
from simulators import EventKind, PlantModel
from simulators.erp import ERP_USER, FIRST_AFTER_S, SimulatedErp

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"


@pytest.fixture
async def plant(ledger_url: str) -> AsyncIterator[tuple[Ledger, PlantModel]]:
    config = load_config(DEMO)
    async with open_ledger(ledger_url, writer_id="erp-test", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        yield ledger, PlantModel(plant_description(config), seed=5, scheduled_receipts=True)


def user_advice(kind: MovementKind, material: str, unit: str, qty: str) -> PostingRequest:
    into = kind is MovementKind.RECEIPT
    return PostingRequest(
        kind, MaterialId(material), LotId("USER-LOT-1") if into else None, Decimal(qty), "kg",
        to_unit=StorageUnitId(unit) if into else None,
        from_unit=None if into else StorageUnitId(unit),
        user="operator", source=Source.CLI, reason="quick start",
    )  # fmt: skip


async def test_the_first_delivery_goes_to_tk102_announced_by_an_erp_advice(
    plant: tuple[Ledger, PlantModel],
) -> None:
    ledger, model = plant
    erp = SimulatedErp(ledger, model, seed=1)
    assert [t for t in await erp.tick() if t.unit == "TK-102"] == []  # not before its time
    model.step(FIRST_AFTER_S[1] + 1)
    (truck,) = [t for t in await erp.tick() if t.unit == "TK-102"]
    advice = truck.advice
    assert advice is not None and advice.state is AdviceState.OPEN
    assert (advice.source, advice.user, advice.kind) == (Source.ERP, ERP_USER, MovementKind.RECEIPT)
    assert advice.ref.startswith("DN-") and advice.lot == truck.lot
    assert truck.lot is not None and truck.lot.startswith("GLYCOL-")
    assert advice.expected == advice.expected.to_integral_value()  # ERP orders whole kg
    advised_litres = model.amount_in("TK-102", float(advice.expected), "kg")
    assert advised_litres is not None
    assert abs(truck.amount / advised_litres - 1) < 0.05  # a few percent off at most
    assert model.knows(advice.id)
    (listed,) = await ledger.advices(state="open", unit="TK-102")
    assert listed.id == advice.id
    assert [t for t in await erp.tick() if t.unit == "TK-102"] == []  # one truck only


async def test_an_advice_a_user_posts_is_delivered_or_shipped_at_its_quantity(
    plant: tuple[Ledger, PlantModel],
) -> None:
    ledger, model = plant
    erp = SimulatedErp(ledger, model, first_unit=None, seed=2)
    receipt = await ledger.post(user_advice(MovementKind.RECEIPT, "SUGAR", "SI-201", "2000"))
    issue = await ledger.post(user_advice(MovementKind.ISSUE, "FLOUR", "SI-202", "1500"))
    assert receipt.advice is not None and issue.advice is not None
    trucks = {t.advice.id: t for t in await erp.tick() if t.advice is not None}
    delivery, shipment = trucks[receipt.advice.id], trucks[issue.advice.id]
    assert delivery.kind is EventKind.DELIVERY
    assert (delivery.unit, delivery.lot) == ("SI-201", "USER-LOT-1")
    assert (shipment.kind, shipment.unit) == (EventKind.SHIPMENT, "SI-202")
    assert abs(delivery.amount - 2000) < 20 and abs(shipment.amount - 1500) < 15
    assert [e.ref for e in model.queued("SI-201")] == [receipt.advice.id]
    again = await erp.tick()
    assert {t.advice.id for t in again if t.advice} & set(trucks) == set()  # once each


async def test_now_and_then_a_truck_arrives_that_nobody_announced(
    plant: tuple[Ledger, PlantModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, model = plant
    monkeypatch.setattr(erp_module, "UNADVISED_SHARE", 1.0)
    monkeypatch.setattr(erp_module, "REORDER_BELOW", 1.0)  # every idle unit orders
    for unit in model.units.values():
        model.stop_operation(unit.id)
    erp = SimulatedErp(ledger, model, first_unit=None, seed=3)
    trucks = await erp.tick()
    assert {t.unit for t in trucks} == set(model.units)
    assert all(t.advice is None and t.kind is EventKind.DELIVERY for t in trucks)
    assert await ledger.advices() == []
    assert all(len(model.queued(unit)) == 1 for unit in model.units)


async def test_trucks_keep_every_unit_between_10_and_90_percent_for_an_hour(
    sqlite_url: str,
) -> None:
    config = load_config(DEMO)
    async with open_ledger(sqlite_url, writer_id="erp-hour", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        model = PlantModel(plant_description(config), seed=8, scheduled_receipts=True)
        erp = SimulatedErp(ledger, model, seed=8)
        lowest = {uid: 1.0 for uid in model.units}
        highest = {uid: 0.0 for uid in model.units}
        for _ in range(1800):  # an hour in the ERP's 2 s rounds
            model.step(2.0)
            await erp.tick()
            for uid, unit in model.units.items():
                lowest[uid] = min(lowest[uid], unit.fill_ratio)
                highest[uid] = max(highest[uid], unit.fill_ratio)
        assert min(lowest.values()) >= 0.10 and max(highest.values()) <= 0.90
        delivered = {t.unit for t in erp.trucks}
        assert delivered == set(model.units)  # every unit was replenished by truck
        assert all(unit.received > 0 for unit in model.units.values())
        advised = [t for t in erp.trucks if t.advice is not None]
        assert 0 < len(erp.trucks) - len(advised) < len(advised)  # a few unadvised

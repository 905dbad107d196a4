"""Deliveries and shipments scheduled on the plant model: when they start, what they move,
how they survive a restart, and the `--event` form that schedules them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from invops.config import load_config
from invops.plant_description import plant_description
from simulators import (
    HIGH_STOP,
    TRUCK_GAP_S,
    EventKind,
    PlantDescription,
    PlantEvent,
    PlantModel,
    parse_event,
)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
GLYCOL_KG_PER_L = 1.11


@pytest.fixture(scope="module")
def demo() -> PlantDescription:
    return plant_description(load_config(DEMO))


def _run(model: PlantModel, seconds: float, dt: float = 0.5) -> None:
    for _ in range(round(seconds / dt)):
        model.step(dt)


def _idle_model(demo: PlantDescription, unit: str) -> PlantModel:
    """A plant whose `unit` is idle now (its first random activity stopped)."""
    model = PlantModel(demo, seed=7, scheduled_receipts=True)
    model.stop_operation(unit)
    model.units[unit].idle_until = 0.0
    model.units[unit].idle_since = -TRUCK_GAP_S  # rested long enough for a truck
    return model


def test_a_delivery_unloads_its_amount_over_its_duration(demo: PlantDescription) -> None:
    model = _idle_model(demo, "TK-102")
    tank = model.units["TK-102"]
    before, received = tank.quantity, tank.received
    model.schedule(PlantEvent(EventKind.DELIVERY, "TK-102", 3000.0, duration_s=60.0, ref="a-1"))
    model.step(0.5)
    assert tank.operation is not None and tank.operation.ref == "a-1"
    assert math.isclose(tank.flow, 50.0)  # 3000 L over 60 s
    _run(model, 30)
    assert 0 < tank.received - received < 3000  # still unloading half way
    _run(model, 31)
    assert math.isclose(tank.received - received, 3000.0, rel_tol=1e-9)
    assert math.isclose(tank.quantity - before, 3000.0 - (tank.issued), abs_tol=1e-6)
    assert model.knows("a-1") and not model.knows("a-2")


def test_an_amount_in_another_uom_converts_through_the_density(demo: PlantDescription) -> None:
    model = _idle_model(demo, "TK-102")
    event = model.schedule(PlantEvent(EventKind.DELIVERY, "TK-102", 1110.0, uom="kg"))
    assert event.uom == "L" and math.isclose(event.amount, 1000.0)
    with pytest.raises(ValueError, match="does not convert"):
        model.schedule(PlantEvent(EventKind.DELIVERY, "SI-201", 10.0, uom="L"))  # no density
    with pytest.raises(ValueError, match="unknown storage unit 'TK-999'"):
        model.schedule(PlantEvent(EventKind.DELIVERY, "TK-999", 10.0))


def test_a_delivery_waits_for_the_running_activity_and_the_pause(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=3, scheduled_receipts=True)
    silo = model.units["SI-201"]
    model.stop_operation("SI-201")
    silo.idle_until = 0.0
    model.start_issue("SI-201", 2000.0, rate=100.0)  # 20 s of drawing
    model.schedule(PlantEvent(EventKind.DELIVERY, "SI-201", 5000.0, duration_s=50.0, ref="d"))
    _run(model, 10)
    assert silo.operation is not None and silo.operation.ref is None  # still the draw
    _run(model, 11)
    assert silo.operation is None  # the settle pause before the truck
    _run(model, silo.pause_s[1])
    assert silo.operation is None  # a truck also waits for TRUCK_GAP_S of rest
    _run(model, TRUCK_GAP_S - silo.pause_s[1] + 0.5)
    assert silo.operation is not None and silo.operation.ref == "d"


def test_a_shipment_draws_through_the_outlet(demo: PlantDescription) -> None:
    model = _idle_model(demo, "TK-101")
    tank = model.units["TK-101"]
    litres = model.totalizer_counts("TK-101.totalizer")
    model.schedule(PlantEvent(EventKind.SHIPMENT, "TK-101", 2000.0, duration_s=20.0))
    _run(model, 25)
    assert math.isclose(tank.issued, 2000.0, rel_tol=1e-9)
    assert model.totalizer_counts("TK-101.totalizer") - litres in (1999, 2000)


def test_a_delivery_too_big_for_the_room_stops_at_the_high_stop(demo: PlantDescription) -> None:
    model = _idle_model(demo, "BN-301")
    bin_ = model.units["BN-301"]
    model.schedule(PlantEvent(EventKind.DELIVERY, "BN-301", 5000.0, duration_s=10.0))
    _run(model, 3)  # at the 400 kg/s cap it hits the stop within a second (then pauses)
    assert math.isclose(bin_.quantity, HIGH_STOP * bin_.capacity, rel_tol=1e-9)
    assert bin_.operation is None


def test_with_scheduled_receipts_material_arrives_only_by_truck(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=11, scheduled_receipts=True)
    for unit in model.units.values():
        model.stop_operation(unit.id)
    _run(model, 3600, dt=1.0)
    assert all(unit.received == 0 for unit in model.units.values())
    assert all(unit.issued > 0 for unit in model.units.values())  # draws go on
    model.schedule(PlantEvent(EventKind.DELIVERY, "SI-202", 4000.0, duration_s=40.0))
    _run(model, 120, dt=1.0)
    assert math.isclose(model.units["SI-202"].received, 4000.0, rel_tol=1e-9)


def test_queued_events_and_started_refs_survive_a_restart(demo: PlantDescription) -> None:
    model = _idle_model(demo, "TK-102")
    model.schedule(PlantEvent(EventKind.DELIVERY, "TK-102", 900.0, duration_s=30.0, ref="run"))
    model.schedule(PlantEvent(EventKind.SHIPMENT, "TK-102", 400.0, at_s=500.0, ref="later"))
    _run(model, 10)
    state = model.to_state()
    resumed = PlantModel(demo, seed=99, scheduled_receipts=True)
    resumed.schedule(PlantEvent(EventKind.DELIVERY, "SI-201", 100.0, ref="mine"))
    assert resumed.restore(state) == {}
    tank = resumed.units["TK-102"]
    assert tank.operation is not None and tank.operation.ref == "run"
    assert [e.ref for e in resumed.queued("TK-102")] == ["later"]
    assert math.isclose(resumed.queued("TK-102")[0].at_s, 490.0)  # due in what was left
    assert [e.ref for e in resumed.queued("SI-201")] == ["mine"]  # scheduled ones stay
    assert all(resumed.knows(ref) for ref in ("run", "later", "mine"))
    _run(resumed, 25)
    assert resumed.knows("run") and tank.operation is None  # finished, still remembered


D, S = EventKind.DELIVERY, EventKind.SHIPMENT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TK-102:delivery=5000kg@10/60", PlantEvent(D, "TK-102", 5000.0, "kg", 10.0, 60.0)),
        ("SI-201:shipment=8t", PlantEvent(S, "SI-201", 8.0, "t")),
        ("BN-301:delivery=200.5/30s", PlantEvent(D, "BN-301", 200.5, duration_s=30.0)),
    ],
)
def test_event_specs_parse(text: str, expected: PlantEvent) -> None:
    assert parse_event(text) == expected


@pytest.mark.parametrize(
    "text",
    ["TK-102", "TK-102:delivery", "TK-102:refill=5", "TK-102:delivery=-5", "TK-102:delivery=0",
     "TK-102:delivery=5@x", "TK-102:shipment=nan"],
)  # fmt: skip
def test_bad_event_specs_say_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"UNIT:KIND=AMOUNT|must be a positive"):
        parse_event(text)

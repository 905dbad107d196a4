"""The simulators' plant model (pure): bands, flows, material balance, totalizers, faults."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from invops.config import load_config
from invops.plant_description import plant_description
from plc_connectors import Address, Area, DataType, Tag
from simulators import (
    FaultError,
    Faults,
    PlantDescription,
    PlantModel,
    PlcFaults,
    parse_fault,
    to_raw,
)
from tests.unit.plant_configs import with_ethanol_twins

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-plant.toml"
UINT32 = 2**32


@pytest.fixture(scope="module")
def demo() -> PlantDescription:
    return plant_description(load_config(DEMO))


def _run(model: PlantModel, seconds: float, dt: float) -> None:
    for _ in range(round(seconds / dt)):
        model.step(dt)


# --------------------------------------------------------------------------- bands and flows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_unit_stays_between_10_and_90_percent_for_hours(
    demo: PlantDescription, seed: int
) -> None:
    model = PlantModel(demo, seed=seed)
    lowest = {uid: 1.0 for uid in model.units}
    highest = {uid: 0.0 for uid in model.units}
    for _ in range(12_000):  # 4 simulated hours in 1.2 s steps
        model.step(1.2)
        for uid, unit in model.units.items():
            lowest[uid] = min(lowest[uid], unit.fill_ratio)
            highest[uid] = max(highest[uid], unit.fill_ratio)
    assert min(lowest.values()) >= 0.10
    assert max(highest.values()) <= 0.90
    # ...and it is not standing still: every unit went through most of its band.
    assert all(highest[uid] - lowest[uid] > 0.4 for uid in model.units)


def test_every_flow_stays_below_1000_litres_per_second(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=5)
    dt = 0.1
    fastest = 0.0
    for _ in range(20_000):
        before = {uid: unit.quantity for uid, unit in model.units.items()}
        model.step(dt)
        for uid, unit in model.units.items():
            per_second = abs(unit.quantity - before[uid]) / dt
            # Silos and bins hold solids without density: their kg/s is held to the same cap.
            fastest = max(fastest, per_second * (unit.litres_per_uom or 1.0))
    assert 0 < fastest < 1000


def test_quantities_move_more_than_the_deadband_within_seconds() -> None:
    demo = load_config(DEMO)
    model = PlantModel(plant_description(demo), seed=11)
    start = {uid: unit.quantity for uid, unit in model.units.items()}
    _run(model, 5.0, 0.1)
    for config in demo.storage_units:
        if config.id not in model.units:  # WH-401: no PLC, booked by hand
            continue
        unit = model.units[config.id]
        change = abs(unit.quantity - start[config.id])
        density = float(
            next(m for m in demo.materials if m.id == config.material).density_kg_per_l or 1
        )
        in_base_unit = change * density if unit.uom == "L" else change  # book unit is kg
        assert config.deadband is not None
        assert in_base_unit > float(config.deadband), config.id


def test_same_seed_gives_the_same_plant(demo: PlantDescription) -> None:
    runs = []
    for _ in range(2):
        model = PlantModel(demo, seed=42)
        _run(model, 300, 0.5)
        runs.append((model.tag_values(), [u.quantity for u in model.units.values()]))
    assert runs[0] == runs[1]


def test_step_rejects_negative_time(demo: PlantDescription) -> None:
    with pytest.raises(ValueError, match="dt"):
        PlantModel(demo, seed=1).step(-1)


# --------------------------------------------------------------------------- material balance


def test_material_balance_holds_for_every_unit(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=9)
    _run(model, 3600, 0.7)
    for unit in model.units.values():
        assert unit.quantity == pytest.approx(unit.booked, rel=1e-9, abs=1e-6)
        assert unit.received > 0 and unit.issued > 0


def test_transfer_takes_from_one_unit_what_it_puts_into_the_other() -> None:
    model = PlantModel(with_ethanol_twins(), seed=3)
    for uid in ("TK-101", "TK-103", "TK-104"):
        model.stop_operation(uid)
    src, dst = model.units["TK-101"], model.units["TK-104"]  # L -> kg at 0.80 kg/L
    total_before = src.quantity * 0.80 + dst.quantity
    out_before, in_before = src.transferred_out, dst.transferred_in
    op = model.start_transfer("TK-101", "TK-104", 1500.0, rate=60.0)
    assert op.factor == pytest.approx(0.80)
    while src.operation is op:
        model.step(0.1)
    moved_out = src.transferred_out - out_before
    moved_in = dst.transferred_in - in_before
    assert moved_out == pytest.approx(1500.0)
    assert moved_in == pytest.approx(moved_out * 0.80)
    assert src.quantity * 0.80 + dst.quantity == pytest.approx(total_before)


def test_random_transfers_between_same_material_units_conserve_material() -> None:
    model = PlantModel(with_ethanol_twins(), seed=4)
    _run(model, 4 * 3600, 1.0)
    tk101, tk103, tk104 = (model.units[u] for u in ("TK-101", "TK-103", "TK-104"))
    assert tk101.transferred_out + tk103.transferred_out > 0  # the planner does transfer
    # Everything that left as a transfer arrived somewhere (TK-104 is in kg: 0.80 kg/L).
    litres_out = tk101.transferred_out + tk103.transferred_out + tk104.transferred_out / 0.80
    litres_in = tk101.transferred_in + tk103.transferred_in + tk104.transferred_in / 0.80
    assert litres_out == pytest.approx(litres_in)
    for unit in model.units.values():
        assert unit.quantity == pytest.approx(unit.booked)
        assert 0.10 <= unit.fill_ratio <= 0.90


def test_transfer_needs_the_same_material(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=1)
    model.stop_operation("TK-101")
    model.stop_operation("TK-102")
    with pytest.raises(ValueError, match="same material"):
        model.start_transfer("TK-101", "TK-102", 100.0)


# --------------------------------------------------------------------------- totalizer and readings


def test_totalizer_counts_the_litres_drawn_from_tk101(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=8)
    _run(model, 1800, 0.5)
    tank = model.units["TK-101"]
    assert tank.outflow > 0
    counts = model.tag_values()["TK-101.totalizer"]
    assert counts == pytest.approx(tank.outflow, abs=1.0)
    assert counts == model.totalizer_counts("TK-101.totalizer")


def test_totalizer_rolls_over_at_2_to_the_32(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=8)
    model.stop_operation("TK-101")
    model.start_issue("TK-101", 500.0, rate=50.0)
    model.jump_totalizer("TK-101.totalizer", UINT32 - 100)
    assert model.totalizer_counts("TK-101.totalizer") == UINT32 - 100
    _run(model, 4.0, 0.1)  # 200 L drawn
    counts = model.totalizer_counts("TK-101.totalizer")
    assert 0 <= counts < 150
    assert model.tag_values()["TK-101.totalizer"] == counts  # no noise on totalizers


def test_level_reading_follows_the_strapping_table(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=2)
    _run(model, 30, 0.1)
    level = model.tag_values({"TK-101.level": 0.0})["TK-101.level"]
    # Independent strapping: [0,0] [300,1500] [6000,50000]
    volume = 1500 + (level - 300) * (50000 - 1500) / (6000 - 300)
    assert volume == pytest.approx(model.units["TK-101"].quantity, abs=0.01)


def test_weight_readings_carry_noise_that_a_spike_multiplies(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=2)
    model.stop_operation("SI-201")
    model.units["SI-201"].idle_until = 1e9  # hold still
    calm = [model.tag_values()["SI-201.weight"] for _ in range(300)]
    spiky = [model.tag_values({"SI-201.weight": 20.0})["SI-201.weight"] for _ in range(300)]
    quantity = model.units["SI-201"].quantity
    assert statistics.mean(calm) == pytest.approx(quantity, abs=5)
    assert 5 < statistics.stdev(calm) < 40  # 0.02 % of 80 t = 16 kg
    assert statistics.stdev(spiky) > 10 * statistics.stdev(calm)


def test_raw_values_saturate_like_a_transmitter() -> None:
    bin_tag = Tag("BN.weight", Address(Area.HOLDING, 20), DataType.UINT16, scale=0.1)
    assert to_raw(bin_tag, 512.34) == 5123
    assert to_raw(bin_tag, 1e9) == 65535
    assert to_raw(bin_tag, -3.0) == 0
    real = Tag("SI.weight", Address(Area.DB, 0, db=1, width=4), DataType.FLOAT32)
    assert to_raw(real, 1e300) == pytest.approx(3.4028234663852886e38)


# --------------------------------------------------------------------------- fault specs


@pytest.mark.parametrize(
    ("text", "target", "values"),
    [
        ("PLC-MODBUS:delay=0.5", "PLC-MODBUS", {"delay_s": 0.5}),
        ("PLC-S7:refuse", "PLC-S7", {"refuse": True}),
        ("PLC-MODBUS:exception=2", "PLC-MODBUS", {"exception": 2}),
        ("PLC-MODBUS:freeze", "PLC-MODBUS", {"freeze": True}),
        ("PLC-MODBUS:drop,delay=1", "PLC-MODBUS", {"drop": True, "delay_s": 1.0}),
        ("TK-101.level:spike=20", "TK-101.level", {"spike": 20.0}),
        ("TK-101.totalizer:jump=4294967000", "TK-101.totalizer", {"totalizer_jump": 4294967000}),
    ],
)
def test_fault_specs_parse(text: str, target: str, values: dict[str, object]) -> None:
    spec = parse_fault(text)
    assert spec.target == target
    assert spec.as_kwargs() == values


@pytest.mark.parametrize(
    "text",
    ["PLC-S7", "PLC-S7:", ":refuse", "PLC-S7:explode", "PLC-MODBUS:exception=9", "X:delay=-1",
     "X:delay=soon", "X:refuse=maybe", "X:jump=1.5", "X:spike"],
)  # fmt: skip
def test_bad_fault_specs_are_rejected(text: str) -> None:
    with pytest.raises(FaultError):
        parse_fault(text)


def test_faults_set_merge_and_clear() -> None:
    faults = Faults()
    changed = faults.subscribe()
    faults.set("PLC-MODBUS", delay_s=0.5)
    faults.set("PLC-MODBUS", exception=4)
    assert faults.plc("PLC-MODBUS") == PlcFaults(delay_s=0.5, exception=4)
    assert changed.is_set()
    faults.set("TK-101.level", spike=3)
    faults.set("TK-101.totalizer", totalizer_jump=10)
    faults.set("TK-101.totalizer", totalizer_jump=5)
    assert faults.spike_factors() == {"TK-101.level": 3.0}
    assert faults.take_jumps() == {"TK-101.totalizer": 15}
    assert faults.take_jumps() == {}
    faults.clear("PLC-MODBUS")
    assert faults.plc("PLC-MODBUS") == PlcFaults()
    with pytest.raises(FaultError, match="unknown fault"):
        faults.set("PLC-S7", smoke=True)
    with pytest.raises(FaultError, match="not a totalizer"):
        faults.set("TK-101.level", totalizer_jump=1)
        faults.check_targets(["PLC-S7"], ["TK-101.level"], ["TK-101.totalizer"])

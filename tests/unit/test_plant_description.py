"""The simulators' plant description: built from a config by invops, or written by hand."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

from inventory_core.domain.derivation import StrappingTable
from invops.config import load_config
from invops.plant_description import plant_description
from plc_connectors import DataType, PlcProtocol, PlcSettings, Tag, parse_address
from simulators import (
    LevelGauge,
    MaterialDescription,
    PlantDescription,
    PlantModel,
    TotalizerCounter,
    UnitDescription,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-plant.toml"
OURS = {"information_model", "inventory_core", "invops", "opcua_server", "plc_connectors"}


def test_the_demo_config_becomes_its_plant_description() -> None:
    config = load_config(DEMO, environ={})
    plant = plant_description(config)
    units = {unit.id: unit for unit in plant.units}
    measured = [u.id for u in config.storage_units if u.level or u.weight or u.totalizer]
    assert list(units) == measured and "WH-401" not in units  # booked by hand: not simulated
    tank = units["TK-101"]
    assert (tank.capacity, tank.capacity_uom, tank.material) == (Decimal(50000), "L", "ETHANOL-96")
    assert tank.settle_s == 2
    assert tank.level is not None and tank.weight is None
    assert tank.level.tag.name == "TK-101.level"
    assert (tank.level.tag.address, tank.level.tag.unit) == (parse_address("hr:0"), "mm")
    assert tank.level.volume_uom == "L"
    assert tank.level.strapping == StrappingTable.from_points([(0, 0), (300, 1500), (6000, 50000)])
    assert tank.totalizer == TotalizerCounter(
        Tag("TK-101.totalizer", parse_address("hr:10"), DataType.UINT32, unit="L"), 2**32 - 1
    )
    silo = units["SI-201"]
    assert silo.level is None and silo.weight is not None
    assert (silo.weight.name, silo.weight.unit) == ("SI-201.weight", "kg")
    assert MaterialDescription("ETHANOL-96", Decimal("0.8")) in plant.materials
    assert MaterialDescription("SUGAR", None) in plant.materials
    assert plant.plcs == tuple(config.plc_settings())
    served = {tag for plc in plant.plcs for tag in plc.tags}
    measured = {unit.level.tag for unit in plant.units if unit.level}
    measured |= {unit.weight for unit in plant.units if unit.weight}
    measured |= {unit.totalizer.tag for unit in plant.units if unit.totalizer}
    assert measured == served  # every tag a unit shows is served by its PLC, and no other


def test_a_hand_written_description_runs_without_any_config() -> None:
    level = Tag("T1.level", parse_address("hr:0"), DataType.FLOAT32, unit="mm")
    weight = Tag("B1.weight", parse_address("hr:2"), DataType.FLOAT32, unit="kg")
    plant = PlantDescription(
        units=(
            UnitDescription(
                "T1",
                Decimal(1000),
                "L",
                material="WATER",
                level=LevelGauge(level, StrappingTable.from_points([(0, 0), (1000, 1000)])),
            ),
            UnitDescription("B1", Decimal(500), "kg", weight=weight),
        ),
        materials=(MaterialDescription("WATER", Decimal(1)),),
        plcs=(PlcSettings("PLC", PlcProtocol.MODBUS, "127.0.0.1", 502, (level, weight)),),
    )
    model = PlantModel(plant, seed=1)
    model.step(30.0)
    values = model.tag_values()
    assert set(values) == {"T1.level", "B1.weight"}
    assert 0 < values["T1.level"] < 1000
    assert model.units["T1"].uom == "L" and model.units["B1"].uom == "kg"


def test_simulators_import_only_the_core_and_the_plc_connectors() -> None:
    offenders: dict[str, set[str]] = {}
    for path in (ROOT / "simulators").rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        if forbidden := names & (OURS - {"inventory_core", "plc_connectors"}):
            offenders[str(path.relative_to(ROOT))] = forbidden
    assert not offenders

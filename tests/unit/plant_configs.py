"""Demo plant variants the plant-model tests share (a module of helpers, not tests)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from invops.config import parse_config
from invops.plant_description import plant_description
from simulators import PlantDescription

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"


def with_ethanol_twins(*, weighed: bool = True) -> PlantDescription:
    """The demo plus TK-103, a second ethanol tank (level, L), so that transfers happen;
    with `weighed` also TK-104, an ethanol unit measured by weight (kg). Built from a
    config, as `invops simulate` builds its plant."""
    data: dict[str, Any] = tomllib.loads(DEMO.read_text())
    tank = next(u for u in data["storage_units"] if u["id"] == "TK-101")
    twin = {**tank, "id": "TK-103", "capacity": 20000}
    twin["level"] = {**tank["level"], "address": "hr:30"}
    twin["strapping"] = {"volume_uom": "L", "points": [[0, 0], [4000, 20000]]}
    del twin["totalizer"]
    data["storage_units"].append(twin)
    if weighed:
        unit = {**twin, "id": "TK-104", "capacity": 16000, "capacity_uom": "kg"}
        del unit["level"], unit["strapping"]
        unit["weight"] = {"plc": "PLC-S7", "address": "DB1.DBD8", "data_type": "float32"}
        data["storage_units"].append(unit)
    return plant_description(parse_config(data))

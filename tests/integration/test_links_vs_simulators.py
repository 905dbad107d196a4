"""The invops links read what the invops simulators serve, for every type and word order."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from invops.config import parse_config
from invops.plant_description import plant_description
from invops.wiring import make_link
from simulators import Simulation

NUMERIC = ["int16", "uint16", "int32", "uint32", "float32", "float64"]
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
TOLERANCE_KG = 25.0  # the plant moves a few kg/s between reading the link and the model


def plant(protocol: str) -> dict[str, Any]:
    units = []
    if protocol == "modbus":
        for n, (dtype, order) in enumerate(itertools.product(NUMERIC, ORDERS)):
            address = f"hr:{n * 4}"
            units.append((f"BN-{n:02d}", dtype, order, address))
    else:
        offset = 0
        for n, dtype in enumerate(["int16", "uint16", "int32", "uint32", "float32", "float64"]):
            size = {"int16": 2, "uint16": 2, "float64": 8}.get(dtype, 4)
            kind = "DBW" if size == 2 else "DBD"
            units.append((f"BN-{n:02d}", dtype, "ABCD", f"DB1.{kind}{offset}"))
            offset += size
    return {
        "site": {"enterprise": "ACME", "name": "LAB", "areas": ["A"]},
        "materials": [{"id": "WATER", "base_uom": "kg", "density_kg_per_l": 1}],
        "plcs": [{"name": "PLC", "protocol": protocol, "timeout_s": 1.0}],
        "storage_units": [
            {
                "id": uid,
                "area": "A",
                "kind": "bin",
                "capacity": 1000,
                "capacity_uom": "kg",
                "material": "WATER",
                "weight": {
                    "plc": "PLC",
                    "address": address,
                    "data_type": dtype,
                    "word_order": order,
                    "unit": "kg",
                },
            }
            for uid, dtype, order, address in units
        ],
    }


@pytest.mark.parametrize("protocol", ["modbus", "s7"])
async def test_link_reads_every_type_and_word_order_the_simulator_serves(protocol: str) -> None:
    data = plant(protocol)
    config = parse_config(data, environ={})
    async with Simulation(plant_description(config), ports={"PLC": 0}, seed=3) as sim:
        [settings] = config.plc_settings()
        settings = dataclasses.replace(settings, port=sim.ports["PLC"])
        async with make_link(settings) as link:
            values = await link.read()
        expected = sim.model.tag_values()
    assert set(values) == {f"{u['id']}.weight" for u in data["storage_units"]}
    for tag, value in values.items():
        assert isinstance(value, float | int)
        assert abs(float(value) - float(expected[tag])) < TOLERANCE_KG, tag
        assert 50 < float(value) < 950, tag  # a wrong byte order would be far outside

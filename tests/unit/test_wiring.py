"""The demo config becomes the right measurement plan."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from invops.config import MetricsConfig, load_config
from invops.http_server import HttpLimits
from invops.wiring import http_limits, measured_units, quantity_tags

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"


def test_every_measured_unit_has_its_quantity_tag() -> None:
    tags = quantity_tags(load_config(DEMO, environ={}))
    assert tags == {
        "TK-101.level": "TK-101",
        "TK-102.level": "TK-102",
        "SI-201.weight": "SI-201",
        "SI-202.weight": "SI-202",
        **{f"BN-30{i}.weight": f"BN-30{i}" for i in range(1, 5)},
    }


def test_tank_levels_go_through_strapping_and_density() -> None:
    units = {u.unit: u for u in measured_units(load_config(DEMO, environ={}))}
    tank = units["TK-101"]
    assert tank.signal_uom == "L" and tank.strapping is not None
    assert tank.strapping.volume_at(Decimal(6000)) == (Decimal(50000), False)
    assert tank.deriver.deadband == Decimal(40)
    silo = units["SI-201"]
    assert silo.signal_uom == "kg" and silo.strapping is None
    assert len(units) == 8


def test_a_listener_config_becomes_the_limits_of_its_http_server() -> None:
    listener = MetricsConfig(max_connections=64, header_timeout_s=2, keep_alive_s=1, backlog=128)

    assert http_limits(listener) == HttpLimits(
        backlog=128, max_connections=64, header_timeout_s=2.0, keep_alive_s=1.0
    )
    assert http_limits(MetricsConfig()) == HttpLimits()

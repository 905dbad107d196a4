"""The demo config becomes the right measurement plan."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

from inventory_core.domain.meter import MeterDirection
from inventory_core.domain.passwords import hash_password
from inventory_core.domain.users import Role
from inventory_core.logins import LoginSettings
from invops.config import MetricsConfig, load_config, parse_config
from invops.http_server import HttpLimits
from invops.wiring import (
    http_limits,
    measured_units,
    meter_tags,
    metered_units,
    opcua_security,
    quantity_tags,
)
from opcua_server.settings import OpcuaSecurity

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


def test_the_opcua_security_keys_and_users_become_the_adapters_settings() -> None:
    config = parse_config(
        {
            "site": {"enterprise": "ACME", "name": "PLANT1", "areas": ["TANKFARM"]},
            "opcua": {
                "endpoint": "opc.tcp://plant1.example:4841/invops",
                "security_policies": ["Basic256Sha256_SignAndEncrypt"],
                "anonymous": "off",
                "login_max_failures": 3,
                "login_source_max_failures": 7,
                "login_failure_window_s": 120,
                "login_lockout_s": 30,
                "login_lockout_max_s": 900,
                "login_failure_delay_s": 0.25,
                "login_concurrency": 2,
                "login_queue": 4,
            },
            "users": [{"name": "otto", "role": "operator", "password_hash": hash_password("o")}],
        },
        environ={},
    )
    access = opcua_security(config)
    assert isinstance(access, OpcuaSecurity)
    assert (access.endpoint, access.allow_security_none, access.anonymous) == (
        "opc.tcp://plant1.example:4841/invops",
        False,
        "off",
    )
    assert access.security_policies == ("Basic256Sha256_SignAndEncrypt",)
    assert all(type(p) is str for p in (*access.security_policies, access.anonymous))
    assert access.logins == LoginSettings(
        max_failures=3,
        source_max_failures=7,
        failure_window_s=120,
        lockout_s=30,
        lockout_max_s=900,
        failure_delay_s=0.25,
        concurrency=2,
        queue=4,
    )
    [otto] = access.users
    assert (otto.name, otto.role) == ("otto", Role.OPERATOR) and otto.verify("o")


def test_the_configs_login_defaults_are_the_throttles_defaults() -> None:
    site = {"enterprise": "ACME", "name": "PLANT1", "areas": ["TANKFARM"]}
    access = opcua_security(parse_config({"site": site}, environ={}))
    assert access.logins == LoginSettings()
    assert (access.anonymous, access.users) == ("read", ())


def test_the_demo_tanks_outlet_totalizer_is_metered_in_kg() -> None:
    config = load_config(DEMO, environ={})
    assert meter_tags(config) == {"TK-101.totalizer": "TK-101"}
    [meter] = metered_units(config)
    assert (meter.unit, meter.direction, meter.uom) == ("TK-101", MeterDirection.OUT, "kg")
    assert meter.config.scale == Decimal("0.8")  # 1 L per count of ethanol at 0.80 kg/L
    assert meter.config.maximum == 2**32 - 1 and meter.counter(1234.0) == 1234
    text = DEMO.read_text().replace(
        'unit = "L" }\nstrapping', 'unit = "L", scale = 10.0, offset = 5.0 }\nstrapping', 1
    )
    [scaled] = metered_units(parse_config(tomllib.loads(text)))
    assert scaled.config.scale == Decimal(8) and scaled.counter(1235.0) == 123

"""The TOML config model and loader: demo plant, every error kind, lines, env overrides."""

from __future__ import annotations

import copy
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotStatus,
    MaterialDefinition,
    StorageKind,
    StorageUnit,
)
from invops.config import (
    DEFAULT_LEDGER_URL,
    DEFAULT_METRICS_LISTEN,
    DEFAULT_OPCUA_ENDPOINT,
    ConfigError,
    ConfigProblem,
    InvopsConfig,
    load_config,
    parse_config,
)
from invops.wiring import measured_units
from plc_connectors import format_address

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
NO_ENV: dict[str, str] = {}


def minimal() -> dict[str, Any]:
    """A small valid config as tomllib would return it."""
    return {
        "site": {"enterprise": "ACME", "name": "PLANT1", "areas": ["TANKFARM", "SILOS"]},
        "materials": [
            {"id": "ETHANOL-96", "base_uom": "kg", "density_kg_per_l": 0.80},
            {"id": "SUGAR", "base_uom": "kg"},
        ],
        "storage_units": [
            {
                "id": "TK-101",
                "area": "TANKFARM",
                "kind": "tank",
                "capacity": 50000,
                "capacity_uom": "L",
                "material": "ETHANOL-96",
            },
            {
                "id": "SI-201",
                "area": "SILOS",
                "kind": "silo",
                "capacity": 80,
                "capacity_uom": "t",
                "material": "SUGAR",
            },
        ],
    }


def problems(data: dict[str, Any]) -> dict[str, str]:
    """path -> message of every problem parse_config reports (it must report some)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ=NO_ENV)
    return {problem.path: problem.message for problem in caught.value.problems}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plant.toml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the n-th line containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


# --------------------------------------------------------------------------- demo plant


def test_demo_plant_loads_with_site_and_endpoints() -> None:
    config = load_config(DEMO, environ=NO_ENV)

    assert config.site.enterprise == "ACME"
    assert config.site.name == "PLANT1"
    assert config.site.areas == ["TANKFARM", "SILOS", "WAREHOUSE"]
    assert config.ledger.url == "sqlite+aiosqlite:///var/invops.db"
    assert config.opcua.endpoint == "opc.tcp://127.0.0.1:4840/invops"
    assert config.opcua.allow_security_none is True
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9840)


def test_demo_plant_converts_to_material_definitions() -> None:
    definitions = load_config(DEMO, environ=NO_ENV).material_definitions()
    materials: dict[str, MaterialDefinition] = {m.id: m for m in definitions}

    assert list(materials) == [
        "ETHANOL-96",
        "GLYCOL",
        "SUGAR",
        "FLOUR",
        "CAPS",
        "LABELS",
        "PREFORMS",
        "CARTONS",
    ]
    assert all(m.base_uom == "kg" for m in materials.values())
    assert all(m.default_lot_status is LotStatus.RELEASED for m in materials.values())
    ethanol = materials["ETHANOL-96"].density_kg_per_l
    assert isinstance(ethanol, Decimal)
    assert ethanol == Decimal("0.80")
    assert str(ethanol) == "0.8"  # exact, not 0.8000000000000000444...
    assert materials["GLYCOL"].density_kg_per_l == Decimal("1.11")
    assert materials["SUGAR"].density_kg_per_l is None
    assert materials["ETHANOL-96"].material_class == "solvents"


def test_demo_plant_converts_to_storage_units() -> None:
    definitions = load_config(DEMO, environ=NO_ENV).storage_unit_definitions()
    units: dict[str, StorageUnit] = {u.id: u for u in definitions}

    assert len(units) == 9
    assert all(u.site == "PLANT1" for u in units.values())
    tank = units["TK-101"]
    assert (tank.kind, tank.capacity, tank.capacity_uom) == (StorageKind.TANK, Decimal(50000), "L")
    assert (tank.area, tank.material) == ("TANKFARM", "ETHANOL-96")
    assert (units["TK-102"].capacity, units["TK-102"].material) == (Decimal(30000), "GLYCOL")
    silo = units["SI-201"]
    assert (silo.kind, silo.capacity, silo.capacity_uom) == (StorageKind.SILO, Decimal(80), "t")
    assert (silo.area, silo.material) == ("SILOS", "SUGAR")
    assert units["SI-202"].material == "FLOUR"
    drums = units["WH-401"]
    assert (drums.kind, drums.capacity, drums.capacity_uom) == (
        StorageKind.BIN,
        Decimal(20000),
        "kg",
    )
    assert (drums.area, drums.material, drums.booking) == ("WAREHOUSE", "GLYCOL", Booking.MANUAL)
    bins = {
        uid: u.material
        for uid, u in units.items()
        if u.kind is StorageKind.BIN and uid.startswith("BN-")
    }
    assert bins == {"BN-301": "CAPS", "BN-302": "LABELS", "BN-303": "PREFORMS", "BN-304": "CARTONS"}
    assert all(units[b].capacity == Decimal(1000) for b in bins)
    assert all(units[b].capacity_uom == "kg" and units[b].area == "WAREHOUSE" for b in bins)


def test_demo_plant_maps_registers_and_db_exactly_as_spec_section_2() -> None:
    config = load_config(DEMO, environ=NO_ENV)
    plcs = {plc.name: plc for plc in config.plc_settings()}
    modbus, s7 = plcs["PLC-MODBUS"], plcs["PLC-S7"]
    assert (modbus.protocol, modbus.host, modbus.port, modbus.unit_id) == (
        "modbus",
        "127.0.0.1",
        5020,
        1,
    )
    assert (s7.protocol, s7.host, s7.port, s7.rack, s7.slot) == ("s7", "127.0.0.1", 1102, 0, 1)
    mapped = {
        tag.name: (format_address(tag.address), str(tag.data_type), str(tag.word_order), tag.scale)
        for plc in (modbus, s7)
        for tag in plc.tags
    }
    assert mapped == {
        "TK-101.level": ("hr:0", "float32", "ABCD", 1.0),
        "TK-102.level": ("hr:2", "float32", "ABCD", 1.0),
        "TK-101.totalizer": ("hr:10", "uint32", "ABCD", 1.0),
        "SI-201.weight": ("DB1.DBD0", "float32", "ABCD", 1.0),
        "SI-202.weight": ("DB1.DBD4", "float32", "ABCD", 1.0),
        "BN-301.weight": ("hr:20", "uint16", "ABCD", 0.1),
        "BN-302.weight": ("hr:21", "uint16", "ABCD", 0.1),
        "BN-303.weight": ("hr:22", "uint16", "ABCD", 0.1),
        "BN-304.weight": ("hr:23", "uint16", "ABCD", 0.1),
    }


# --------------------------------------------------------------------------- defaults


def test_optional_tables_take_their_defaults() -> None:
    config = parse_config({"site": minimal()["site"]}, environ=NO_ENV)

    assert config.ledger.url == DEFAULT_LEDGER_URL == "sqlite+aiosqlite:///var/invops.db"
    assert config.ledger.writer_id is None
    assert config.ledger.batch_max == 64
    assert config.ledger.migrate_on_start is False
    assert config.opcua.endpoint == DEFAULT_OPCUA_ENDPOINT
    assert config.opcua.allow_security_none is False
    assert config.metrics.listen == DEFAULT_METRICS_LISTEN
    assert config.materials == []
    assert config.storage_units == []


def test_material_defaults_to_quarantine_without_class_or_density() -> None:
    data = minimal()
    data["materials"][1] = {"id": "SUGAR", "base_uom": "kg"}

    sugar = parse_config(data, environ=NO_ENV).material_definitions()[1]

    assert sugar.default_lot_status is LotStatus.QUARANTINE
    assert (sugar.material_class, sugar.density_kg_per_l, sugar.description) == (None, None, "")


def test_unit_spellings_are_canonicalised() -> None:
    data = minimal()
    data["storage_units"][0]["capacity_uom"] = "l"

    assert parse_config(data, environ=NO_ENV).storage_units[0].capacity_uom == "L"


def test_config_models_are_frozen() -> None:
    config = parse_config(minimal(), environ=NO_ENV)

    with pytest.raises(ValueError, match="frozen"):
        config.ledger.batch_max = 5


def test_metrics_listen_splits_ipv6_host_and_port() -> None:
    data = minimal()
    data["metrics"] = {"listen": "[::1]:0"}

    metrics = parse_config(data, environ=NO_ENV).metrics

    assert (metrics.host, metrics.port) == ("::1", 0)


def test_metrics_listener_limits_have_defaults_and_can_be_set() -> None:
    assert parse_config(minimal(), environ=NO_ENV).metrics.model_dump() == {
        "listen": DEFAULT_METRICS_LISTEN,
        "max_connections": 512,
        "header_timeout_s": 5.0,
        "keep_alive_s": 5.0,
        "backlog": 2048,
    }
    data = minimal()
    data["metrics"] = {"max_connections": 64, "header_timeout_s": 2, "keep_alive_s": 0.5}

    metrics = parse_config(data, environ=NO_ENV).metrics

    assert (metrics.max_connections, metrics.header_timeout_s, metrics.keep_alive_s) == (
        64,
        2.0,
        0.5,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_connections", 0),
        ("max_connections", "many"),
        ("header_timeout_s", 0),
        ("header_timeout_s", 301),
        ("keep_alive_s", -1),
        ("backlog", 0),
        ("backlog", 1.5),
    ],
)
def test_bad_metrics_listener_limits_are_errors(key: str, value: object) -> None:
    data = minimal()
    data["metrics"] = {key: value}

    assert list(problems(data)) == [f"metrics.{key}"]


# --------------------------------------------------------------------------- pass 1 errors


def test_unknown_top_level_key_is_an_error() -> None:
    data = minimal()
    data["sites"] = {}

    assert problems(data) == {"sites": "unknown key (did you mean 'site'?)"}


def test_unknown_nested_key_is_an_error_with_a_suggestion() -> None:
    data = minimal()
    data["ledger"] = {"batchmax": 10}
    data["materials"][1]["colour"] = "white"

    found = problems(data)

    assert found["ledger.batchmax"] == "unknown key (did you mean 'batch_max'?)"
    assert found["materials[1].colour"].startswith("unknown key (allowed: id, description")


def test_material_class_must_be_spelled_class() -> None:
    data = minimal()
    data["materials"][0]["material_class"] = "solvents"

    assert problems(data)["materials[0].material_class"].startswith("unknown key")


def test_missing_site_table_is_an_error() -> None:
    data = minimal()
    del data["site"]

    assert problems(data) == {"site": "missing required key"}


def test_missing_required_key_names_the_entry() -> None:
    data = minimal()
    del data["materials"][1]["base_uom"]
    del data["site"]["enterprise"]

    found = problems(data)

    assert found["materials[1].base_uom"] == "missing required key"
    assert found["site.enterprise"] == "missing required key"


def test_bad_enum_values_list_the_allowed_ones() -> None:
    data = minimal()
    data["storage_units"][1]["kind"] = "bag"
    data["materials"][0]["default_lot_status"] = "approved"

    found = problems(data)

    assert found["storage_units[1].kind"] == "must be 'tank', 'silo' or 'bin' (got 'bag')"
    assert "'quarantine'" in found["materials[0].default_lot_status"]
    assert "(got 'approved')" in found["materials[0].default_lot_status"]


@pytest.mark.parametrize("capacity", [-5, 0, -0.5])
def test_capacity_must_be_positive(capacity: float) -> None:
    data = minimal()
    data["storage_units"][0]["capacity"] = capacity

    assert problems(data) == {
        "storage_units[0].capacity": f"must be greater than 0 (got {capacity!r})"
    }


@pytest.mark.parametrize("density", [-0.8, 0, "heavy", float("nan"), True])
def test_density_must_be_a_positive_number(density: object) -> None:
    data = minimal()
    data["materials"][0]["density_kg_per_l"] = density

    assert list(problems(data)) == ["materials[0].density_kg_per_l"]


def test_float_density_is_read_as_exact_decimal() -> None:
    data = minimal()
    data["materials"][0]["density_kg_per_l"] = 1.11

    density = parse_config(data, environ=NO_ENV).materials[0].density_kg_per_l

    assert density == Decimal("1.11")


def test_unknown_units_of_measure_are_errors() -> None:
    data = minimal()
    data["storage_units"][0]["capacity_uom"] = "gal"
    data["materials"][1]["base_uom"] = "lb"

    found = problems(data)

    assert found["storage_units[0].capacity_uom"].startswith("unknown unit of measure 'gal'")
    assert "known: kg, g, t, L, mL, m3" in found["materials[1].base_uom"]


@pytest.mark.parametrize("bad_id", ["", "TK 101", "x" * 65, "TK/101"])
def test_ids_must_match_the_id_pattern(bad_id: str) -> None:
    data = minimal()
    data["storage_units"][0]["id"] = bad_id

    assert problems(data)["storage_units[0].id"].startswith("invalid id")


def test_site_areas_must_be_non_empty_and_unique() -> None:
    empty = minimal()
    empty["site"]["areas"] = []
    duplicated = minimal()
    duplicated["site"]["areas"] = ["TANKFARM", "SILOS", "TANKFARM"]

    assert problems(empty)["site.areas"] == "must list at least one area"
    assert problems(duplicated)["site.areas"] == "duplicate area 'TANKFARM'"


@pytest.mark.parametrize(
    ("ledger", "path"),
    [
        ({"batch_max": 0}, "ledger.batch_max"),
        ({"batch_max": 1025}, "ledger.batch_max"),
        ({"batch_max": "64"}, "ledger.batch_max"),
        ({"migrate_on_start": "yes"}, "ledger.migrate_on_start"),
        ({"writer_id": "plant 1"}, "ledger.writer_id"),
        ({"url": "invops.db"}, "ledger.url"),
    ],
)
def test_bad_ledger_values_are_errors(ledger: dict[str, object], path: str) -> None:
    data = minimal()
    data["ledger"] = ledger

    assert list(problems(data)) == [path]


def test_ledger_accepts_writer_id_with_at_sign_and_batch_bounds() -> None:
    data = minimal()
    data["ledger"] = {"writer_id": "plant1@host-a", "batch_max": 1024}

    ledger = parse_config(data, environ=NO_ENV).ledger

    assert (ledger.writer_id, ledger.batch_max) == ("plant1@host-a", 1024)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("opcua.endpoint", "http://127.0.0.1:4840"),
        ("opcua.endpoint", "opc.tcp://127.0.0.1:70000/x"),
        ("metrics.listen", "9840"),
        ("metrics.listen", "127.0.0.1:99999"),
    ],
)
def test_bad_endpoints_are_errors(path: str, value: str) -> None:
    table, key = path.split(".")
    data = minimal()
    data[table] = {key: value}

    assert list(problems(data)) == [path]


def test_wrong_value_types_are_named_in_toml_words() -> None:
    data = minimal()
    data["materials"][0]["class"] = 3
    data["storage_units"] = {"id": "TK-101"}

    found = problems(data)

    assert found["materials[0].class"] == "expected a string (got 3)"
    assert found["storage_units"] == "expected an array"


def test_top_level_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="expected a table"):
        parse_config([], environ=NO_ENV)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pass 2 errors


def test_unit_area_must_be_a_site_area() -> None:
    data = minimal()
    data["storage_units"][1]["area"] = "SILO"

    assert problems(data) == {
        "storage_units[1].area": (
            "area 'SILO' is not in site.areas (TANKFARM, SILOS) (did you mean 'SILOS'?)"
        )
    }


def test_unit_material_must_be_a_declared_material() -> None:
    data = minimal()
    data["storage_units"][1]["material"] = "SUGER"

    message = problems(data)["storage_units[1].material"]

    assert message.startswith("unknown material 'SUGER'")
    assert "did you mean 'SUGAR'" in message


def test_duplicate_material_and_unit_ids_are_errors() -> None:
    data = minimal()
    data["materials"].append({"id": "SUGAR", "base_uom": "kg"})
    data["storage_units"].append(copy.deepcopy(data["storage_units"][0]))

    assert problems(data) == {
        "materials[2].id": "duplicate material id 'SUGAR' (first defined at materials[1])",
        "storage_units[2].id": (
            "duplicate storage unit id 'TK-101' (first defined at storage_units[0])"
        ),
    }


def test_volume_capacity_needs_density_for_a_mass_material() -> None:
    data = minimal()
    del data["materials"][0]["density_kg_per_l"]

    message = problems(data)["storage_units[0].capacity_uom"]

    assert "capacity is in L (volume)" in message
    assert "'ETHANOL-96' is booked in kg (mass) and has no density_kg_per_l" in message


def test_mass_capacity_needs_density_for_a_volume_material() -> None:
    data = minimal()
    data["materials"][1]["base_uom"] = "L"

    assert "capacity is in t (mass)" in problems(data)["storage_units[1].capacity_uom"]


def test_mixed_dimensions_are_fine_with_a_density() -> None:
    data = minimal()
    data["materials"][1].update(base_uom="L", density_kg_per_l=0.6)

    assert parse_config(data, environ=NO_ENV).storage_units[1].capacity_uom == "t"


def test_every_error_is_reported_at_once_across_both_passes() -> None:
    data = minimal()
    data["storage_units"][0]["area"] = "NOWHERE"  # pass 2
    data["storage_units"][1]["capacity"] = -1  # pass 1
    data["materials"].append({"id": "SUGAR", "base_uom": "kg"})  # pass 2
    data["ledger"] = {"batch_max": 0}  # pass 1

    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ=NO_ENV)

    paths = {problem.path for problem in caught.value.problems}
    assert paths == {
        "storage_units[0].area",
        "storage_units[1].capacity",
        "materials[2].id",
        "ledger.batch_max",
    }
    assert len(str(caught.value).splitlines()) == 4


def test_invalid_material_entry_does_not_cause_unknown_material() -> None:
    data = minimal()
    data["materials"][1]["density_kg_per_l"] = -1

    assert list(problems(data)) == ["materials[1].density_kg_per_l"]


# --------------------------------------------------------------------------- problems, lines


def test_problem_formats_as_file_line_path_message() -> None:
    assert str(ConfigProblem("p.toml", 7, "site.name", "bad")) == "p.toml:7: site.name: bad"
    assert str(ConfigProblem("p.toml", None, "site", "bad")) == "p.toml: site: bad"
    assert str(ConfigProblem("p.toml", 3, "", "syntax")) == "p.toml:3: syntax"


def test_config_error_text_is_every_problem_one_per_line() -> None:
    found = [ConfigProblem("f", 1, "a", "x"), ConfigProblem("f", None, "b", "y")]

    error = ConfigError(found)

    assert error.problems == found
    assert str(error) == "f:1: a: x\nf: b: y"


def test_problems_point_at_the_line_in_the_right_table_occurrence(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace("density_kg_per_l = 1.11", "density_kg_per_l = -1.11")
    text = text.replace('area = "SILOS"', 'area = "SILO"', 2)  # SI-201 and SI-202
    text = text.replace('description = "Caps bin"\n', "")
    text = text.replace('id = "BN-302"', 'id = "BN-302"\ncolour = "blue"')
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=NO_ENV)

    lines = {problem.path: problem.line for problem in caught.value.problems}
    assert lines == {
        "materials[1].density_kg_per_l": line_of(text, "density_kg_per_l = -1.11"),
        "storage_units[2].area": line_of(text, 'area = "SILO"', 1),
        "storage_units[3].area": line_of(text, 'area = "SILO"', 2),
        "storage_units[5].colour": line_of(text, 'colour = "blue"'),
    }
    assert all(problem.file == str(path) for problem in caught.value.problems)
    assert str(caught.value).splitlines()[0].startswith(f"{path}:")


def test_missing_key_points_at_its_table_header(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8").replace('base_uom = "kg"\n', "", 3)
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=NO_ENV)

    lines = [problem.line for problem in caught.value.problems]
    assert lines == [line_of(text, "[[materials]]", n) for n in (1, 2, 3)]


def test_multiline_strings_do_not_confuse_line_numbers(tmp_path: Path) -> None:
    text = (
        '[site]\nenterprise = "ACME"\nname = "P"\nareas = ["A"]\n'
        'description = """\nkind = "tank"\n[[storage_units]]\n"""\n'
        '[[storage_units]]\nid = "U1"\narea = "A"\nkind = "vat"\n'
        'capacity = 1\ncapacity_uom = "kg"\n'
    )
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=NO_ENV)

    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("storage_units[0].kind", line_of(text, '"vat"'))


def test_problems_without_source_text_have_no_line() -> None:
    data = minimal()
    data["ledger"] = {"batch_max": 0}

    with pytest.raises(ConfigError) as caught:
        parse_config(data, file="x.toml", environ=NO_ENV)

    assert str(caught.value) == (
        "x.toml: ledger.batch_max: must be greater than or equal to 1 (got 0)"
    )


# --------------------------------------------------------------------------- reading files


def test_toml_syntax_error_gives_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[site]\nenterprise = "ACME"\nname = = "PLANT1"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=NO_ENV)

    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.path) == (str(path), 3, "")
    assert problem.message.startswith("TOML syntax error: Invalid value")
    assert str(problem).startswith(f"{path}:3: TOML syntax error")


def test_unterminated_string_points_at_the_end_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[site]\nenterprise = "ACME\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=NO_ENV)

    assert caught.value.problems[0].line is not None


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing)

    assert str(caught.value) == f"{missing}: file not found"


def test_directory_and_binary_files_are_config_errors(tmp_path: Path) -> None:
    binary = tmp_path / "plant.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")

    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "plant.toml"
    path.write_bytes(b"\xef\xbb\xbf" + DEMO.read_bytes())

    assert load_config(path, environ=NO_ENV).site.name == "PLANT1"


# --------------------------------------------------------------------------- environment


def test_environment_overrides_the_file() -> None:
    environ = {
        "INVOPS_LEDGER_URL": "postgresql+asyncpg://invops@db/invops",
        "INVOPS_OPCUA_ENDPOINT": "opc.tcp://0.0.0.0:4841/plant",
        "INVOPS_METRICS_LISTEN": "0.0.0.0:9999",
    }

    config = load_config(DEMO, environ=environ)

    assert config.ledger.url == "postgresql+asyncpg://invops@db/invops"
    assert config.ledger.batch_max == 64  # the rest of [ledger] is kept
    assert config.opcua.endpoint == "opc.tcp://0.0.0.0:4841/plant"
    assert config.opcua.allow_security_none is True
    assert config.metrics.listen == "0.0.0.0:9999"


def test_environment_overrides_tables_the_file_omits() -> None:
    config = parse_config(minimal(), environ={"INVOPS_METRICS_LISTEN": "127.0.0.1:0"})

    assert config.metrics.port == 0


def test_empty_environment_variable_counts_as_unset() -> None:
    assert load_config(DEMO, environ={"INVOPS_LEDGER_URL": ""}).ledger.url == DEFAULT_LEDGER_URL


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOPS_LEDGER_URL", "sqlite+aiosqlite:///elsewhere.db")

    assert load_config(DEMO).ledger.url == "sqlite+aiosqlite:///elsewhere.db"


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DEMO, environ={"INVOPS_METRICS_LISTEN": "nine-eight-four-zero"})

    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("metrics.listen", None)
    assert problem.message.endswith("(from INVOPS_METRICS_LISTEN)")


# --------------------------------------------------------------------------- robustness

_SECTIONS = ["site", "ledger", "opcua", "metrics", "materials", "storage_units", "plcs"]
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["kg", "L", "t", "tank", "released", "TANKFARM", "SUGAR", "TK-101", ""]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mangled_config_is_valid_or_a_config_error(data: st.DataObject) -> None:
    config = minimal()
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        section = data.draw(st.sampled_from(_SECTIONS))
        target = config.get(section)
        if isinstance(target, list) and target:
            target = data.draw(st.sampled_from(target))
        if isinstance(target, dict) and data.draw(st.booleans()):
            key = data.draw(st.sampled_from([*target, "extra"]))
            target[key] = data.draw(_values)
        else:
            config[section] = data.draw(_values)

    try:
        result = parse_config(config, environ=NO_ENV)
    except ConfigError as exc:
        assert exc.problems
        assert all(problem.message for problem in exc.problems)
    else:
        assert isinstance(result, InvopsConfig)
        result.material_definitions()
        result.storage_unit_definitions()


# --------------------------------------------------------------------------- PLCs and tags


def with_plcs() -> dict[str, Any]:
    data = minimal()
    data["plcs"] = [
        {"name": "MB", "protocol": "modbus", "port": 5020},
        {"name": "S7", "protocol": "s7", "port": 1102},
    ]
    tank, silo = data["storage_units"]
    tank["level"] = {"plc": "MB", "address": "hr:0", "data_type": "float32", "unit": "mm"}
    tank["strapping"] = {"points": [[0, 0], [5000, 50000]]}
    silo["weight"] = {"plc": "S7", "address": "DB1.DBD0", "data_type": "float32", "unit": "kg"}
    return data


def test_plc_tags_become_named_tags_of_their_plc() -> None:
    config = parse_config(with_plcs(), environ=NO_ENV)
    plcs = {plc.name: plc for plc in config.plc_settings()}
    assert [t.name for t in plcs["MB"].tags] == ["TK-101.level"]
    assert [t.name for t in plcs["S7"].tags] == ["SI-201.weight"]
    assert plcs["S7"].port == 1102 and plcs["MB"].port == 5020


def test_plc_port_defaults_to_the_protocol_port() -> None:
    data = with_plcs()
    for plc in data["plcs"]:
        del plc["port"]
    ports = {p.name: p.port for p in parse_config(data, environ=NO_ENV).plc_settings()}
    assert ports == {"MB": 502, "S7": 102}


def test_tag_errors_name_their_key_path() -> None:
    data = with_plcs()
    tank, silo = data["storage_units"]
    tank["level"]["plc"] = "MBX"
    silo["weight"]["address"] = "DB1.DBW0"  # a 2-byte word cannot hold a float32
    data["plcs"].append({"name": "MB", "protocol": "modbus"})
    found = problems(data)
    assert "unknown PLC 'MBX'" in found["storage_units[0].level.plc"]
    assert "float32" in found["storage_units[1].weight.address"]
    assert "duplicate PLC name 'MB'" in found["plcs[2].name"]


def test_malformed_address_is_reported_under_its_key() -> None:
    data = with_plcs()
    data["storage_units"][0]["level"]["address"] = "hr:-1"
    assert "storage_units[0].level.address" in problems(data)


def test_overlapping_registers_on_one_plc_are_an_error() -> None:
    data = with_plcs()
    data["storage_units"][1]["weight"] = {
        "plc": "MB", "address": "hr:1", "data_type": "uint16", "unit": "kg"
    }  # fmt: skip
    message = problems(data)["storage_units[1].weight.address"]
    assert "overlaps storage_units[0].level" in message


def test_level_needs_strapping_and_weight_excludes_level() -> None:
    data = with_plcs()
    tank = data["storage_units"][0]
    del tank["strapping"]
    tank["weight"] = {"plc": "MB", "address": "hr:10", "data_type": "uint16", "unit": "kg"}
    found = problems(data)
    assert "strapping" in found["storage_units[0].strapping"]
    assert "not both" in found["storage_units[0].weight"]


def test_strapping_table_must_increase() -> None:
    data = with_plcs()
    data["storage_units"][0]["strapping"]["points"] = [[0, 0], [100, 50], [50, 80]]
    assert "storage_units[0].strapping.points" in problems(data)


def test_lot_handling_booking_and_empty_threshold_default_by_unit() -> None:
    data = minimal()
    data["storage_units"][1] |= {"lot_handling": "lifo", "zero_lot_threshold": 0}
    tank, silo = parse_config(data, environ=NO_ENV).storage_unit_definitions()
    assert (tank.lot_handling, tank.booking, tank.zero_lot_threshold) == (
        LotHandling.MIXED,
        Booking.MANUAL,  # no level or weight tag
        None,
    )
    assert (silo.lot_handling, silo.zero_lot_threshold) == (LotHandling.LIFO, Decimal(0))
    demo = {u.id: u for u in load_config(DEMO).storage_unit_definitions()}
    assert demo["SI-202"].lot_handling is LotHandling.LIFO
    assert {uid for uid, u in demo.items() if u.booking is Booking.MANUAL} == {"WH-401"}
    assert {u.advice_window_s for u in demo.values()} == {7200}
    data = minimal()
    data["storage_units"][1] |= {"advice_window_s": 0}
    assert "advice_window_s" in " ".join(problems(data))


def test_a_manual_unit_with_a_tag_feeds_reconciliation_only() -> None:
    data = tomllib.loads(DEMO.read_text(encoding="utf-8"))
    next(u for u in data["storage_units"] if u["id"] == "SI-202")["booking"] = "manual"
    books = {u.unit: u.books for u in measured_units(parse_config(data, environ=NO_ENV))}
    assert books["SI-202"] is False and books["SI-201"] is True


def test_bad_lot_handling_keys_name_their_path() -> None:
    data = minimal()
    data["storage_units"][0] |= {"lot_handling": "random"}
    data["storage_units"][1] |= {"zero_lot_threshold": -1}
    found = problems(data)
    assert "fifo" in found["storage_units[0].lot_handling"]
    assert "0 or more" in found["storage_units[1].zero_lot_threshold"]
    data = minimal()  # a cross-check: runs once every key is valid
    data["storage_units"][0] |= {"booking": "measured"}
    assert "level or weight tag" in problems(data)["storage_units[0].booking"]

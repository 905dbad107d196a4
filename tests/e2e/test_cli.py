"""The `invops` command line as a user meets it (SPEC section 1 and the ledger rules of 5).

Each test runs the installed console script in a subprocess against a real
SQLite file (one test: a real PostgreSQL database), with INVOPS_* variables
set or cleared explicitly. Fixtures live in tests/e2e/conftest.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.e2e.conftest import Cli, LedgerFile, Result

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
MOVEMENT_FIELDS = {
    "id", "kind", "material", "lot", "unit", "quantity", "uom", "timestamp", "user", "source",
}  # fmt: skip
SPEC_COMMANDS = [
    ["check-config"],
    ["db", "upgrade"],
    *(
        ["ledger", name]
        for name in (
            "post", "balance", "history", "trace", "reconcile", "verify", "export",
            "lot-status", "reverse",
        )
    ),
]  # fmt: skip


def assert_user_error(result: Result, *needles: str, code: int | None = 1) -> None:
    """Failed with exactly one human line on stderr, no traceback, nothing on stdout."""
    assert result.returncode != 0, result
    if code is not None:
        assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result
    assert len(result.err_lines) == 1, result
    assert result.stdout == "", result
    for needle in needles:
        assert needle.lower() in result.stderr.lower(), result


def balances(result: Result) -> dict[tuple[str, str], Decimal]:
    assert result.returncode == 0, result
    return {(b["unit"], b["lot"]): Decimal(b["quantity"]) for b in result.json()["balances"]}


def movements(result: Result) -> list[dict[str, Any]]:
    assert result.returncode == 0, result
    found: list[dict[str, Any]] = result.json()["movements"]
    return found


def post_args(kind: str, ledger: LedgerFile, *args: str) -> list[str]:
    return ["ledger", "post", kind, "--material", "ETHANOL-96", "--url", ledger.url, *args]


# -- help --------------------------------------------------------------------------


def test_help_of_invops_and_of_every_spec_command_exits_zero(cli: Cli) -> None:
    argvs = [["--help"], ["ledger", "--help"], *([*c, "--help"] for c in SPEC_COMMANDS)]
    results = cli.many(argvs)
    for result in results:
        assert result.returncode == 0, result
        assert "Usage" in result.stdout, result
        assert result.stderr == "", result
    top, ledger = results[0].stdout, results[1].stdout
    for name in ("check-config", "db", "ledger"):
        assert name in top
    for _, name in SPEC_COMMANDS[2:]:
        assert name in ledger
    post_help = results[2 + SPEC_COMMANDS.index(["ledger", "post"])].stdout
    for option in ("--material", "--lot", "--qty", "--uom", "--from", "--to", "--key", "--reason"):
        assert option in post_help


def _command_paths() -> list[tuple[list[str], Any]]:
    """(path, click command) of the app, every group and every command, top first."""
    import typer.main

    from invops.cli import app

    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_option_and_argument_of_every_command_has_help_text() -> None:
    missing = [
        f"invops {' '.join(path)} {param.opts[0]}"
        for path, command in _command_paths()
        for param in command.params
        if not getattr(param, "help", None)
    ]
    assert missing == []


def test_no_help_shows_a_value_for_a_flag(cli: Cli) -> None:
    paths = [path for path, _ in _command_paths()]
    results = cli.many([[*path, "--help"] for path in paths])
    for result in results:
        assert result.returncode == 0, result
        assert "<bool>" not in result.stdout, result
    flags = {" ".join(path): result.stdout for path, result in zip(paths, results, strict=True)}
    assert re.search(r"^  --json +Print one JSON document\.$", flags["ledger balance"], re.M)
    assert re.search(r"^  --help +Show this message and exit\.$", flags[""], re.M)


def test_json_is_a_plain_flag_that_takes_no_value(plant: LedgerFile, cli: Cli) -> None:
    result = cli("ledger", "balance", "--json", "--url", plant.url)
    assert balances(result)[("TK-101", "E1")] == Decimal("395")


def test_demo_help_explains_every_port_option(cli: Cli) -> None:
    result = cli("demo", "--help")
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())
    for option, what in [
        ("--opcua-port", "OPC UA"),
        ("--metrics-port", "metrics"),
        ("--modbus-port", "Modbus"),
        ("--s7-port", "S7"),
        ("--api-port", "API"),
    ]:
        assert re.search(rf"{option} PORT [^-]*{what}[^-]*free port", text), (option, text)


def test_post_help_says_a_lot_is_created_by_its_first_receipt_or_production(cli: Cli) -> None:
    result = cli("ledger", "post", "--help")
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())
    assert "A lot is created by its first receipt or production" in text
    assert "adjustment needs an existing lot" in text
    assert "without --lot draw the lot(s) the source unit's lot_handling picks" in text


def test_a_new_lot_cannot_be_issued_but_a_receipt_creates_it(plant: LedgerFile, cli: Cli) -> None:
    issue = cli(*post_args("issue", plant, "--lot", "NEW", "--qty", "1", "--uom", "kg",
                           "--from", "TK-101"))  # fmt: skip
    assert_user_error(issue, "lot NEW does not exist")
    receipt = cli(*post_args("receipt", plant, "--lot", "NEW", "--qty", "1", "--uom", "kg",
                             "--to", "TK-101", "--json"))  # fmt: skip
    assert receipt.returncode == 0, receipt
    assert receipt.json()["movement"]["lot"] == "NEW"


# -- schema ------------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_and_a_second_run_is_harmless(
    cli: Cli, new_ledger: Callable[[str], LedgerFile]
) -> None:
    ledger = new_ledger("new/ledger.db")
    first = cli("db", "upgrade", "--url", ledger.url)
    assert first.returncode == 0, first
    tables = {name for (name,) in ledger.sql("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"movements", "audit", "lots", "balances", "alembic_version"} <= tables
    second = cli("db", "upgrade", "--url", ledger.url)
    assert second.returncode == 0, second
    (revision,) = ledger.sql("SELECT version_num FROM alembic_version")
    assert revision[0] in second.stdout
    empty = cli("ledger", "balance", "--url", ledger.url, "--json")
    assert balances(empty) == {}


def test_ledger_commands_on_a_database_without_schema_say_run_db_upgrade(
    cli: Cli, tmp_path: Path
) -> None:
    commands = [
        ["ledger", "balance"],
        ["ledger", "history", "--json"],
        ["ledger", "post", "receipt", "--material", "X", "--lot", "L", "--qty", "1", "--uom",
         "kg", "--to", "U"],
        ["ledger", "verify"],
        ["ledger", "export", "--format", "jsonl"],
        ["ledger", "lot-status", "--lot", "L", "--status", "hold", "--reason", "r"],
    ]  # fmt: skip
    argvs = [
        [*argv, "--url", f"sqlite+aiosqlite:///{tmp_path}/noschema-{i}.db"]
        for i, argv in enumerate(commands)
    ]
    for result in cli.many(argvs):
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr, result
        assert result.stdout == "", result
        assert result.err_lines, result
        assert result.err_lines[-1].startswith("invops: error:"), result
        assert "invops db upgrade" in result.err_lines[-1], result


def test_ledger_command_without_schema_prints_only_the_one_line_message(
    cli: Cli, tmp_path: Path
) -> None:
    result = cli("ledger", "balance", "--url", f"sqlite+aiosqlite:///{tmp_path}/noschema.db")
    assert_user_error(result, "invops db upgrade")


# -- ledger URL resolution ---------------------------------------------------------

SMALL_PLANT = """\
[site]
enterprise = "ACME"
name = "E2E"
areas = ["AREA1"]

[ledger]
url = "{url}"

[[materials]]
id = "WATER"
base_uom = "kg"
default_lot_status = "released"

[[storage_units]]
id = "TK-1"
area = "AREA1"
kind = "tank"
capacity = 1000
capacity_uom = "kg"
material = "WATER"
"""


def test_url_option_beats_environment_which_beats_the_config_file(
    cli: Cli, tmp_path: Path, new_ledger: Callable[[str], LedgerFile]
) -> None:
    by_option, by_env, by_config = (new_ledger(f"{n}.db") for n in "abc")
    config = tmp_path / "plant.toml"
    config.write_text(SMALL_PLANT.format(url=by_config.url), encoding="utf-8")
    # db upgrade resolves the same way: one ledger each by --url, by env, by --config
    upgrades = [
        cli("db", "upgrade", "--url", by_option.url),
        cli("db", "upgrade", env_url=by_env.url),
        cli("db", "upgrade", "--config", config),
    ]
    for result in upgrades:
        assert result.returncode == 0, result

    def receipt(lot: str) -> list[str | Path]:
        return ["ledger", "post", "receipt", "--material", "WATER", "--lot", lot, "--qty", "1",
                "--uom", "kg", "--to", "TK-1", "--config", config]  # fmt: skip

    posts = [
        cli(*receipt("VIA-OPTION"), "--url", by_option.url, env_url=by_env.url),
        cli(*receipt("VIA-ENV"), env_url=by_env.url),
        cli(*receipt("VIA-CONFIG")),
    ]
    for result in posts:
        assert result.returncode == 0, result
    lots = {
        name: [lot for (lot,) in ledger.sql("SELECT lot FROM movements ORDER BY seq")]
        for name, ledger in (("a", by_option), ("b", by_env), ("c", by_config))
    }
    assert lots == {"a": ["VIA-OPTION"], "b": ["VIA-ENV"], "c": ["VIA-CONFIG"]}


# -- posting -----------------------------------------------------------------------


def test_post_every_kind_prints_one_json_document_with_the_movement(
    plant: LedgerFile, cli: Cli
) -> None:
    """The plant fixture posted receipt, issue, production, transfer, adjustment, count
    and scrap through `invops ledger post KIND ... --json` (demo-plant.toml as master data)."""
    expected_units = {
        "receipt": "TK-101", "issue": "TK-101", "production": "TK-101", "transfer": "TK-103",
        "adjustment": "TK-101", "count": "TK-101", "scrap": "TK-101",
    }  # fmt: skip
    assert set(plant.posts) == set(expected_units)
    ids = set()
    for kind, document in plant.posts.items():
        assert document["replayed"] is False
        movement = document["movement"]
        assert set(movement) >= MOVEMENT_FIELDS, movement
        assert movement["kind"] == kind
        assert movement["material"] == "ETHANOL-96"
        assert movement["unit"] == expected_units[kind]
        assert movement["uom"] == "kg"
        assert movement["user"] == "op-e2e"
        assert movement["source"] == "cli"
        assert datetime.fromisoformat(movement["timestamp"]).tzinfo is not None
        ids.add(movement["id"])
    assert len(ids) == 7
    # 1000 L at 0.80 kg/L is booked as 800 kg in the material's base unit
    assert Decimal(plant.posts["receipt"]["movement"]["quantity"]) == 800
    assert plant.posts["production"]["movement"]["lot"] == "E2"

    all_units, one_unit, one_lot = cli.many(
        [
            ["ledger", "balance", "--url", plant.url, "--json"],
            ["ledger", "balance", "--url", plant.url, "--json", "--unit", "TK-103"],
            ["ledger", "balance", "--url", plant.url, "--json", "--lot", "E2"],
        ]
    )
    # 800 - 100 issued - 200 transferred - 10 adjusted = 490, counted 400, 5 scrapped
    assert balances(all_units) == {
        ("TK-101", "E1"): Decimal(395),
        ("TK-101", "E2"): Decimal(50),
        ("TK-103", "E1"): Decimal(200),
    }
    assert balances(one_unit) == {("TK-103", "E1"): Decimal(200)}
    assert balances(one_lot) == {("TK-101", "E2"): Decimal(50)}


def test_idempotency_key_returns_the_first_movement_and_conflicts_on_another_payload(
    plant: LedgerFile, cli: Cli
) -> None:
    args = post_args(
        "receipt", plant, "--lot", "K1", "--qty", "10", "--uom", "kg", "--to", "TK-101",
        "--key", "erp-4711", "--json",
    )  # fmt: skip
    # four shells posting the same key at once: one movement, the others replay it
    documents = []
    for result in cli.many([args] * 4):
        assert result.returncode == 0, result
        documents.append(result.json())
    assert len({d["movement"]["id"] for d in documents}) == 1
    assert sorted(d["replayed"] for d in documents) == [False, True, True, True]
    assert plant.sql("SELECT count(*) FROM movements WHERE lot = 'K1'") == [(1,)]

    other_qty = [*args[: args.index("--qty") + 1], "11", *args[args.index("--qty") + 2 :]]
    conflict = cli(*other_qty)
    assert_user_error(conflict, "erp-4711", "already used")
    assert plant.sql("SELECT count(*) FROM movements WHERE lot = 'K1'") == [(1,)]


REJECTIONS = {
    "insufficient-stock": (
        ["ledger", "post", "issue", "--material", "ETHANOL-96", "--lot", "E1", "--qty", "1000",
         "--uom", "kg", "--from", "TK-101", "--url", "{url}", "--json"],
        ["exceeds", "395"],
    ),
    "unknown-material": (
        ["ledger", "post", "receipt", "--material", "NO-SUCH", "--lot", "X1", "--qty", "1",
         "--uom", "kg", "--to", "TK-101", "--url", "{url}", "--config", str(DEMO_CONFIG)],
        ["NO-SUCH"],
    ),
    "qty-not-a-number": (
        ["ledger", "post", "receipt", "--material", "ETHANOL-96", "--lot", "X1", "--qty", "abc",
         "--uom", "kg", "--to", "TK-101", "--url", "{url}"],
        ["abc"],
    ),
    "unknown-uom": (
        ["ledger", "post", "receipt", "--material", "ETHANOL-96", "--lot", "X1", "--qty", "1",
         "--uom", "furlong", "--to", "TK-101", "--url", "{url}"],
        ["furlong"],
    ),
    "issue-without-from": (
        ["ledger", "post", "issue", "--material", "ETHANOL-96", "--lot", "E1", "--qty", "1",
         "--uom", "kg", "--url", "{url}"],
        ["issue needs a source unit (--from)"],
    ),
    "receipt-with-from": (
        ["ledger", "post", "receipt", "--material", "ETHANOL-96", "--lot", "E1", "--qty", "1",
         "--uom", "kg", "--from", "TK-101", "--to", "TK-103", "--url", "{url}"],
        ["receipt takes no source unit (--from)"],
    ),
    "import-missing-file": (
        ["ledger", "import", "--format", "b2mml", "no-such-file.xml", "--url", "{url}"],
        ["no-such-file.xml", "cannot read"],
    ),
    "import-not-b2mml": (
        ["ledger", "import", "--format", "b2mml", "-", "--url", "{url}"],
        ["not well-formed XML", "nothing applied"],
    ),
    "export-bad-cursor": (
        ["ledger", "export", "--format", "jsonl", "--since", "yesterday", "--url", "{url}"],
        ["yesterday", "cursor"],
    ),
    "history-bad-since": (
        ["ledger", "history", "--since", "last tuesday", "--url", "{url}", "--json"],
        ["last tuesday", "ISO 8601"],
    ),
    "no-ledger-given": (["ledger", "balance"], ["--url", "INVOPS_LEDGER_URL", "--config"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejection_exits_nonzero_with_one_line_and_no_traceback(
    case: str, plant: LedgerFile, cli: Cli
) -> None:
    argv, needles = REJECTIONS[case]
    before = plant.sql("SELECT count(*) FROM movements")
    result = cli(*(a.replace("{url}", plant.url) for a in argv))
    assert_user_error(result, *needles)
    assert plant.sql("SELECT count(*) FROM movements") == before


# -- queries -----------------------------------------------------------------------


def test_history_json_lists_movements_and_filters_by_unit_lot_and_since(
    plant: LedgerFile, cli: Cli
) -> None:
    base = ["ledger", "history", "--url", plant.url, "--json"]
    full = movements(cli(*base))
    assert [m["kind"] for m in full] == list(plant.posts)
    assert [m["id"] for m in full] == [d["movement"]["id"] for d in plant.posts.values()]
    third = full[2]["timestamp"]
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_unit, by_lot, since_third, since_future = cli.many(
        [
            [*base, "--unit", "TK-103"],
            [*base, "--lot", "E2"],
            [*base, "--since", third],
            [*base, "--since", future],
        ]
    )
    assert [m["kind"] for m in movements(by_unit)] == ["transfer"]
    assert [m["kind"] for m in movements(by_lot)] == ["production"]
    assert [m["id"] for m in movements(since_third)] == [m["id"] for m in full[2:]]
    assert movements(since_future) == []


def test_history_last_shows_the_newest_movements_oldest_first(plant: LedgerFile, cli: Cli) -> None:
    base = ["ledger", "history", "--url", plant.url, "--json"]
    full = movements(cli(*base))
    ids = [m["id"] for m in full]
    third = full[2]["timestamp"]
    last3, unit, lot, since, more_than_all, text = cli.many(
        [
            [*base, "--last", "3"],
            [*base, "--last", "2", "--unit", "TK-103"],
            [*base, "--last", "2", "--lot", "E1"],
            [*base, "--last", "2", "--since", third],
            [*base, "--last", "100"],
            ["ledger", "history", "--url", plant.url, "--last", "3"],
        ]
    )
    assert [m["id"] for m in movements(last3)] == ids[-3:]
    assert [m["kind"] for m in movements(last3)] == ["adjustment", "count", "scrap"]
    assert [m["kind"] for m in movements(unit)] == ["transfer"]
    e1 = [m["id"] for m in full if m["lot"] == "E1"]
    assert [m["id"] for m in movements(lot)] == e1[-2:]
    assert [m["id"] for m in movements(since)] == ids[-2:]
    assert [m["id"] for m in movements(more_than_all)] == ids
    assert text.returncode == 0, text
    header, *rows = text.out_lines
    assert header.split()[:3] == ["TIMESTAMP", "ID", "KIND"]
    assert [row.split()[1] for row in rows] == ids[-3:]


def test_history_last_with_limit_or_zero_is_a_one_line_error(plant: LedgerFile, cli: Cli) -> None:
    both, zero = cli.many(
        [
            ["ledger", "history", "--url", plant.url, "--last", "3", "--limit", "3"],
            ["ledger", "history", "--url", plant.url, "--last", "0"],
        ]
    )
    assert_user_error(both, "--last", "--limit")
    assert_user_error(zero, "--last", code=None)


def test_history_help_says_last_keeps_the_newest_printed_oldest_first(cli: Cli) -> None:
    result = cli("ledger", "history", "--help")
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())
    assert "--last N Only the N newest movements that match, still printed oldest first" in text
    assert "--limit N At most N movements: the N oldest" in text


def test_the_commands_the_demo_banner_suggests_run(
    plant: LedgerFile, cli: Cli, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from invops import service_cli

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # where `make run` starts the demo
    in_repo_venv = Path(sys.executable).parent == repo / ".venv" / "bin"
    invops = ".venv/bin/invops" if in_repo_venv else str(Path(sys.executable).with_name("invops"))
    endpoints = {
        "opcua": "opc.tcp://127.0.0.1:4840/invops",
        "metrics": "http://127.0.0.1:9840/metrics",
        "healthz": "http://127.0.0.1:9840/healthz",
        "modbus": "127.0.0.1:5020",
        "s7": "127.0.0.1:1102",
        "ledger": plant.url,
        "api": "http://127.0.0.1:9841/api/v1",
    }
    service_cli._print_welcome(endpoints)
    banner = capsys.readouterr().out
    assert "GLY-0001" in banner and "GLY-001 " not in banner
    suggested = [
        line.split()
        for line in banner.replace("\\\n", " ").splitlines()
        if "ledger" in line.split()[1:2]
    ]
    assert [argv[:3] for argv in suggested] == [
        [invops, "ledger", "history"],
        [invops, "ledger", "post"],
        [invops, "ledger", "advices"],
        [invops, "ledger", "reconcile"],
    ], banner
    history, post, _, reconcile = cli.many([argv[1:] for argv in suggested])
    assert history.returncode == 0 and "--last" in suggested[0], history
    assert post.returncode == 0 and "of lot GLY-0001" in post.stdout, post
    advices = cli(*suggested[2][1:])  # after the post (`many` runs them side by side)
    assert advices.returncode == 0 and "GLY-0001" in advices.stdout, advices
    assert reconcile.returncode == 0, reconcile


def test_trace_follows_a_production_with_consumed_lots_forward_and_backward(
    plant: LedgerFile, cli: Cli
) -> None:
    base = ["ledger", "trace", "--url", plant.url, "--json"]
    forward, backward = cli.many(
        [[*base, "--lot", "E1", "--direction", "forward"], [*base, "--lot", "E2"]]
    )
    production_id = plant.posts["production"]["movement"]["id"]
    for result in (forward, backward):
        assert result.returncode == 0, result
    where_used, where_from = forward.json(), backward.json()
    assert [(k["parent"], k["child"], k["movement_id"]) for k in where_used["links"]] == [
        ("E1", "E2", production_id)
    ]
    assert where_from["direction"] == "backward"
    assert [(k["parent"], k["child"]) for k in where_from["links"]] == [("E1", "E2")]
    assert set(where_from["lots"]) == {"E1", "E2"}
    assert set(where_used["lots"]["E1"]["locations"]) == {"TK-101", "TK-103"}


def test_a_production_with_consumed_quantities_draws_them_and_traces_them(
    plant: LedgerFile, cli: Cli, plus_config: Path
) -> None:
    common = ["--url", plant.url, "--config", str(plus_config), "--json"]
    post = cli("ledger", "post", "production", "--material", "ETHANOL-96", "--lot", "P-MIX",
               "--qty", "100", "--uom", "kg", "--to", "TK-103", "--consumed", "E1=60@TK-101",
               "--consumed", "E2=40@TK-101", "--key", "batch-1", *common)  # fmt: skip
    assert post.returncode == 0, post
    assert len(post.json()["parts"]) == 2  # the two draws, in the same posting
    balance = cli("ledger", "balance", "--unit", "TK-101", "--url", plant.url, "--json")
    held = {b["lot"]: b["quantity"] for b in balance.json()["balances"]}
    assert held == {"E1": "335", "E2": "10"}, held
    trace = cli("ledger", "trace", "--lot", "P-MIX", "--direction", "backward",
                "--url", plant.url, "--json")  # fmt: skip
    links = {(k["parent"], k["quantity"]) for k in trace.json()["links"] if k["child"] == "P-MIX"}
    assert links == {("E1", "60"), ("E2", "40")}
    half = cli("ledger", "post", "production", "--material", "ETHANOL-96", "--lot", "P-2",
               "--qty", "5", "--uom", "kg", "--to", "TK-103", "--consumed", "E1=5",
               "--consumed", "E2", *common)  # fmt: skip
    assert half.returncode == 1
    assert "give a quantity (LOT=QTY) for every consumed lot or for none" in half.stderr


def test_reconcile_json_shows_book_per_unit_and_no_measurement(plant: LedgerFile, cli: Cli) -> None:
    result = cli("ledger", "reconcile", "--url", plant.url, "--json")
    assert result.returncode == 0, result
    units = {u["unit"]: u for u in result.json()["units"]}
    assert {"TK-101", "TK-102", "TK-103", "SI-201", "SI-202"} <= set(units)
    assert Decimal(units["TK-101"]["book"]) == 445
    assert Decimal(units["TK-103"]["book"]) == 200
    assert Decimal(units["SI-201"]["book"]) == 0
    for line in units.values():
        assert line["measured"] is None, line


# -- changes: lot status, reversal -------------------------------------------------


def test_lot_status_change_is_audited_and_a_held_lot_cannot_be_issued(
    plant: LedgerFile, cli: Cli
) -> None:
    change = cli(
        "ledger", "lot-status", "--lot", "E1", "--status", "hold", "--reason", "QA sample 17",
        "--user", "qa-anna", "--url", plant.url, "--json",
    )  # fmt: skip
    assert change.returncode == 0, change
    assert change.json()["status"] == "hold"
    audited = plant.sql(
        "SELECT user, reason, old FROM audit WHERE object_id = ?", [change.json()["movement_id"]]
    )
    assert len(audited) == 1
    user, reason, old = audited[0]
    assert (user, reason) == ("qa-anna", "QA sample 17")
    assert json.loads(old)["status"] == "released"

    issue = cli(*post_args("issue", plant, "--lot", "E1", "--qty", "1", "--uom", "kg",
                           "--from", "TK-101"))  # fmt: skip
    assert_user_error(issue, "E1", "hold")


def test_reverse_restores_the_balance_and_cannot_be_repeated(plant: LedgerFile, cli: Cli) -> None:
    issue_id = plant.posts["issue"]["movement"]["id"]
    reverse = ["ledger", "reverse", issue_id, "--reason", "wrong tank", "--url", plant.url]
    first = cli(*reverse, "--json", env={"INVOPS_USER": "night-shift"})
    assert first.returncode == 0, first
    assert first.json()["reverses"] == issue_id
    balance, history = cli.many(
        [
            ["ledger", "balance", "--url", plant.url, "--json", "--unit", "TK-101", "--lot", "E1"],
            ["ledger", "history", "--url", plant.url, "--json", "--lot", "E1"],
        ]
    )
    assert balances(balance) == {("TK-101", "E1"): Decimal(395 + 100)}
    last = movements(history)[-1]
    assert (last["id"], last["kind"], last["user"]) == (
        first.json()["movement_id"], "reversal", "night-shift",
    )  # fmt: skip
    assert_user_error(cli(*reverse), issue_id, "reversed")


# -- export ------------------------------------------------------------------------


def test_export_jsonl_streams_one_line_per_movement_and_resumes_after_a_cursor(
    plant: LedgerFile, cli: Cli
) -> None:
    export = ["ledger", "export", "--format", "jsonl", "--url", plant.url]
    everything = cli(*export, "--since", "0")
    assert everything.returncode == 0, everything
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [line["id"] for line in lines] == [d["movement"]["id"] for d in plant.posts.values()]
    cursors = [line["cursor"] for line in lines]
    assert cursors == sorted(set(cursors))
    resumed = cli(*export, "--since", str(cursors[0]))
    assert resumed.returncode == 0, resumed
    assert [json.loads(line) for line in resumed.stdout.splitlines()] == lines[1:]


# -- verify ------------------------------------------------------------------------


def test_verify_exits_zero_on_an_intact_ledger(plant: LedgerFile, cli: Cli) -> None:
    result = cli("ledger", "verify", "--url", plant.url)
    assert result.returncode == 0, result
    assert "intact" in result.stdout
    assert result.stderr == ""


def _broken_at(result: Result, chain: str, seq: int) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result
    first = result.err_lines[0]
    assert chain in first, result
    assert re.search(rf"\bseq {seq}\b", first), result


def test_verify_names_an_edited_audit_record(plant: LedgerFile, cli: Cli) -> None:
    ((writer,),) = plant.sql("SELECT writer FROM audit WHERE seq = 3")
    plant.sql("UPDATE audit SET reason = 'x' WHERE seq = 3")
    _broken_at(cli("ledger", "verify", "--url", plant.url), writer, 3)


def test_verify_names_a_deleted_last_audit_record(plant: LedgerFile, cli: Cli) -> None:
    ((writer, seq),) = plant.sql("SELECT writer, seq FROM audit ORDER BY id DESC LIMIT 1")
    plant.sql("DELETE FROM audit WHERE id = (SELECT max(id) FROM audit)")
    _broken_at(cli("ledger", "verify", "--url", plant.url), writer, seq)


def test_verify_names_an_edited_movement_row(plant: LedgerFile, cli: Cli) -> None:
    plant.sql("UPDATE movements SET quantity = '999'")
    ((seq, movement_id),) = plant.sql("SELECT seq, id FROM movements ORDER BY seq LIMIT 1")
    result = cli("ledger", "verify", "--url", plant.url)
    _broken_at(result, "movements", seq)
    assert movement_id in result.err_lines[0]


def test_verify_detects_an_edited_lot_status_row(plant: LedgerFile, cli: Cli) -> None:
    held = cli("ledger", "lot-status", "--lot", "E1", "--status", "hold", "--reason", "QA",
               "--url", plant.url)  # fmt: skip
    assert held.returncode == 0, held
    plant.sql("UPDATE lots SET status = 'released' WHERE id = 'E1'")
    result = cli("ledger", "verify", "--url", plant.url)
    assert result.returncode == 1, result
    assert "E1" in result.stderr


# -- start-up: a command imports what it needs -----------------------------------

PROTOCOL_LIBRARIES = {
    "asyncua", "pymodbus", "snap7", "prometheus_client", "simulators", "opcua_server",
}  # fmt: skip
# Runs the CLI in a fresh interpreter, then writes the top-level packages it imported.
_IMPORTS_PROBE = """
import json, sys
from invops.cli import app
try:
    app(sys.argv[2:], standalone_mode=False)
finally:
    with open(sys.argv[1], "w") as out:
        json.dump(sorted({name.split(".")[0] for name in sys.modules}), out)
"""


def _imported(tmp_path: Path, *argv: str | Path, stdin: str = "") -> set[str]:
    import subprocess

    from tests.e2e.conftest import clean_env

    report = tmp_path / "imported.json"
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE, str(report), *(str(a) for a in argv)],
        cwd=tmp_path, env=clean_env(), input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result
    found: list[str] = json.loads(report.read_text(encoding="utf-8"))
    return set(found)


def test_importing_the_cli_loads_no_protocol_database_or_config_library(tmp_path: Path) -> None:
    import subprocess

    probe = "import json, sys, invops.cli; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert "invops" in loaded
    assert not loaded & (PROTOCOL_LIBRARIES | {"sqlalchemy", "alembic", "pydantic"})


def test_ledger_queries_load_no_protocol_library_and_no_alembic(
    plant: LedgerFile, tmp_path: Path
) -> None:
    for argv in (
        ["ledger", "balance", "--url", plant.url],
        ["ledger", "history", "--url", plant.url, "--last", "3", "--json"],
        ["ledger", "verify", "--url", plant.url],
        ["ledger", "post", "receipt", "--url", plant.url, "--config", DEMO_CONFIG,
         "--material", "GLYCOL", "--lot", "G1", "--qty", "1", "--uom", "kg", "--to", "TK-102"],
    ):  # fmt: skip
        loaded = _imported(tmp_path, *argv)
        assert "sqlalchemy" in loaded, argv  # the probe did run the command
        assert not loaded & (PROTOCOL_LIBRARIES | {"alembic"}), argv


def test_check_config_and_hash_password_load_no_protocol_or_database_library(
    tmp_path: Path,
) -> None:
    config = _imported(tmp_path, "check-config", DEMO_CONFIG)
    assert "pydantic" in config
    password = _imported(tmp_path, "users", "hash-password", stdin="secret\n")
    for loaded in (config, password):
        assert not loaded & (PROTOCOL_LIBRARIES | {"sqlalchemy", "alembic"})


# -- ports: a listener that cannot bind says why and which option moves it ---------

TEMPLATE_CONFIG = DEMO_CONFIG.with_name("plant-template.toml")
DEMO_PORT_OPTIONS = ("--modbus-port", "--s7-port", "--opcua-port", "--metrics-port", "--api-port")


def _busy_port() -> Any:
    import socket

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    return squatter


def _template_plcs() -> list[tuple[str, str, int]]:
    from invops.config import load_config

    return [(p.name, p.host, p.effective_port) for p in load_config(TEMPLATE_CONFIG).plcs]


def _error_line(result: Result) -> str:
    """The failure: exit 1, no traceback, exactly one `invops: error:` line and it is the last."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result
    errors = [line for line in result.err_lines if line.startswith("invops:")]
    assert errors == result.err_lines[-1:], result
    return errors[0]


@pytest.mark.parametrize("option", DEMO_PORT_OPTIONS)
def test_demo_on_a_busy_port_names_the_option_that_moves_it(
    option: str, cli: Cli, tmp_path: Path
) -> None:
    with _busy_port() as squatter:
        busy = squatter.getsockname()[1]
        ports = {name: "0" for name in DEMO_PORT_OPTIONS} | {option: str(busy)}
        argv = ["demo", "--data-dir", tmp_path / "var"]
        result = cli(*argv, *(a for pair in ports.items() for a in pair))
    line = _error_line(result)
    assert f"127.0.0.1:{busy}: the port is already in use" in line, result
    assert f"start the demo with {option} PORT (0 picks a free port)" in line, result
    if option == "--modbus-port":  # the first listener: nothing started, nothing logged
        assert len(result.err_lines) == 1, result


def test_simulate_on_a_busy_port_suggests_port_plc_equals_port(cli: Cli) -> None:
    with _busy_port() as squatter:
        busy = squatter.getsockname()[1]
        result = cli("simulate", "--config", DEMO_CONFIG,
                     "--port", f"PLC-MODBUS={busy}", "--port", "PLC-S7=0")  # fmt: skip
    assert _error_line(result) == (
        f"invops: error: PLC-MODBUS cannot listen on 127.0.0.1:{busy}: the port is already "
        "in use (another invops, or another server); serve it on another port with "
        "--port PLC-MODBUS=PORT (0 picks a free port)"
    )
    assert len(result.err_lines) == 1, result


def _without_the_right_to_bind_low_ports() -> list[str]:
    """A command prefix under which binding a port below 1024 is refused (EACCES)."""
    import os
    import shutil

    if os.geteuid() != 0:
        start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        if start.exists() and int(start.read_text()) <= 502:
            pytest.skip("this machine lets anyone bind ports below 1024")
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed to drop the right")
    return [setpriv, "--inh-caps=-net_bind_service", "--bounding-set=-net_bind_service"]


def test_simulate_on_a_privileged_port_says_permission_denied_not_in_use(tmp_path: Path) -> None:
    import subprocess

    from tests.e2e.conftest import Result, base_command, clean_env

    prefix = _without_the_right_to_bind_low_ports()
    (first, _, port), *others = _template_plcs()
    assert port == 502  # the template keeps the Modbus default
    others_free = [a for name, _, _ in others for a in ("--port", f"{name}=0")]
    run = subprocess.run(
        [*prefix, *base_command(), "simulate", "--config", str(TEMPLATE_CONFIG), *others_free],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    result = Result(tuple(run.args), run.returncode, run.stdout, run.stderr)
    line = _error_line(result)
    assert f"{first} cannot listen on 127.0.0.1:502: permission denied" in line, result
    assert "ports below 1024 need root" in line and "in use" not in line, result
    assert f"--port {first}=PORT" in line, result


def test_simulate_on_an_address_of_another_machine_suggests_host(cli: Cli) -> None:
    result = cli("simulate", "--config", DEMO_CONFIG, "--host", "192.0.2.1",  # TEST-NET-1
                 "--port", "PLC-MODBUS=0", "--port", "PLC-S7=0")  # fmt: skip
    line = _error_line(result)
    assert "cannot listen on 192.0.2.1:" in line and "not one of this machine's" in line, result
    assert "--host" in line, result


def test_simulate_says_it_serves_loopback_not_the_config_hosts(tmp_path: Path) -> None:
    import signal
    import subprocess

    from tests.e2e.conftest import base_command, clean_env

    plcs = _template_plcs()
    free = [a for name, _, _ in plcs for a in ("--port", f"{name}=0")]
    process = subprocess.Popen(
        [*base_command(), "simulate", "--config", str(TEMPLATE_CONFIG), *free],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        served = [process.stdout.readline().split() for _ in plcs]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert [(line[0], line[2].split(":")[0]) for line in served] == [
        (name, "127.0.0.1") for name, _, _ in plcs
    ]
    (note,) = [line for line in err.splitlines() if line.startswith("note: ")]
    for name, host, port in plcs:
        assert f"{name} {host}:{port}" in note, note
        assert host != "127.0.0.1"
    assert "[[plcs]] host and port" in note, note


def test_simulate_help_says_it_serves_127_0_0_1_and_offers_host(cli: Cli) -> None:
    result = cli("simulate", "--help")
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())
    assert "Every PLC is served on 127.0.0.1 (or --host), whatever host the config gives it" in text
    assert "--host ADDRESS" in text and "--port PLC=PORT" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("TK-102:refill=5", "expected UNIT:KIND=AMOUNT[UOM][@START_S][/DURATION_S]"),
        ("TK-999:delivery=5", "unknown storage unit 'TK-999'"),
        ("SI-201:delivery=5L", "L does not convert to SI-201's kg"),
    ],
)
def test_simulate_refuses_a_bad_event_naming_the_option(cli: Cli, spec: str, message: str) -> None:
    result = cli("simulate", "--config", DEMO_CONFIG, "--event", spec)
    assert result.returncode == 2, result
    text = " ".join(result.stderr.split())
    assert "--event" in text and message in text, result


# -- check-config ------------------------------------------------------------------


def test_check_config_accepts_the_demo_plant(cli: Cli) -> None:
    result = cli("check-config", DEMO_CONFIG)
    assert result.returncode == 0, result
    assert "ok" in result.stdout


def test_check_config_lists_every_problem_with_file_line_and_key_path(
    cli: Cli, tmp_path: Path
) -> None:
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    text = text.replace("batch_max = 64", 'batch_max = 64\ncolour = "red"', 1)
    text = text.replace('area = "TANKFARM"', 'area = "TANKFRAM"', 1)
    bad = tmp_path / "bad-plant.toml"
    bad.write_text(text, encoding="utf-8")
    result = cli("check-config", bad)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    line_form = re.compile(rf"^{re.escape(str(bad))}(:\d+)?: (\S+): .+$")
    problems = {}
    for line in result.err_lines:
        match = line_form.match(line)
        assert match, f"not `file:line: path: message`: {line!r}\n{result}"
        problems[match[2]] = line
    assert set(problems) == {"ledger.colour", "storage_units[0].area"}, result
    assert "TANKFRAM" in problems["storage_units[0].area"]


def test_a_receipt_into_a_measured_tank_is_an_advice_listed_by_ledger_advices(
    cli: Cli, empty_ledger: LedgerFile
) -> None:
    post = cli(
        "ledger", "post", "receipt", "--material", "GLYCOL", "--lot", "GLY-0001", "--qty", "500",
        "--uom", "kg", "--to", "TK-102", "--ref", "DN-4711", "--user", "operator",
        "--config", DEMO_CONFIG, "--url", empty_ledger.url,
    )  # fmt: skip
    assert post.returncode == 0, post
    assert re.match(
        r"advice:[0-9a-f-]{36} receipt of 500 kg of lot GLY-0001 into TK-102", post.stdout
    )
    assert "gauge books" in post.stdout
    assert balances(cli("ledger", "balance", "--url", empty_ledger.url, "--json")) == {}
    table = cli("ledger", "advices", "--open", "--url", empty_ledger.url)
    assert table.returncode == 0, table
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["ADVICE", "STATE", "UNIT"]
    assert row.split()[1:7] == ["open", "TK-102", "in", "receipt", "GLY-0001", "500"]
    assert "DN-4711" in row
    closed = cli("ledger", "advices", "--unit", "TK-101", "--url", empty_ledger.url, "--json")
    assert closed.json() == {"advices": []}


# -- PostgreSQL --------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_ledger_upgrade_post_and_balance_by_url(pg_url: str, cli: Cli) -> None:
    upgrade = cli("db", "upgrade", "--url", pg_url)
    assert upgrade.returncode == 0, upgrade
    assert "Traceback" not in upgrade.stderr
    post = cli(
        "ledger", "post", "receipt", "--material", "GLYCOL", "--lot", "PG-1", "--qty", "2.5",
        "--uom", "t", "--to", "WH-401", "--config", DEMO_CONFIG, "--url", pg_url, "--json",
    )  # fmt: skip
    assert post.returncode == 0, post
    assert Decimal(post.json()["movement"]["quantity"]) == 2500
    advice = cli(
        "ledger", "post", "receipt", "--material", "SUGAR", "--lot", "PG-2", "--qty", "2.5",
        "--uom", "t", "--to", "SI-201", "--config", DEMO_CONFIG, "--url", pg_url, "--json",
        "--ref", "DN-1",
    )  # fmt: skip
    assert advice.returncode == 0, advice
    assert advice.json()["advice"]["expected"] == "2500"  # SI-201 is measured: its gauge books
    assert balances(cli("ledger", "balance", "--url", pg_url, "--json")) == {
        ("WH-401", "PG-1"): Decimal(2500)
    }
    listed = cli("ledger", "advices", "--open", "--url", pg_url, "--json").json()["advices"]
    assert [(a["unit"], a["lot"], a["ref"]) for a in listed] == [("SI-201", "PG-2", "DN-1")]


# -- bugs found --------------------------------------------------------------------


def test_receipt_that_rounds_to_zero_in_the_base_unit_is_rejected(
    plant: LedgerFile, cli: Cli
) -> None:
    result = cli(*post_args("receipt", plant, "--lot", "DUST", "--qty", "0.0000001",
                            "--uom", "kg", "--to", "TK-101"))  # fmt: skip
    assert result.returncode == 1, result
    assert plant.sql("SELECT count(*) FROM lots WHERE id = 'DUST'") == [(0,)]


@pytest.mark.parametrize(
    ("qty", "says"), [("1e999999999", "out of range"), ("1_000", "not a number")]
)
def test_a_quantity_that_overflows_or_has_a_typo_is_one_line_and_posts_nothing(
    plant: LedgerFile, cli: Cli, qty: str, says: str
) -> None:
    before = plant.sql("SELECT count(*) FROM movements")
    result = cli(*post_args("receipt", plant, "--lot", "TYPO", "--qty", qty,
                            "--uom", "kg", "--to", "TK-101"))  # fmt: skip
    assert_user_error(result, "--qty", says)
    assert "internal error" not in result.stderr
    assert plant.sql("SELECT count(*) FROM movements") == before


def _foreign_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('Ada')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.touch(), "is an empty file, not an invops ledger"),
        (_foreign_database, "another application's SQLite database (tables contacts)"),
        (lambda p: p.write_text("hello\n" * 40), "is not a SQLite database"),
    ],
    ids=["empty-file", "other-application", "not-sqlite"],
)
@pytest.mark.parametrize("command", ["verify", "history", "balance", "post", "upgrade"])
def test_a_file_that_is_not_an_invops_ledger_is_refused_and_left_unchanged(
    cli: Cli, tmp_path: Path, make: Callable[[Path], None], says: str, command: str
) -> None:
    path = tmp_path / "other.db"
    make(path)
    before = path.read_bytes()
    url = f"sqlite+aiosqlite:///{path}"
    argv = {
        "verify": ["ledger", "verify", "--url", url],
        "history": ["ledger", "history", "--url", url, "--last", "5"],
        "balance": ["ledger", "balance", "--url", url, "--json"],
        "post": ["ledger", "post", "receipt", "--material", "ETHANOL-96", "--url", url,
                 "--lot", "X", "--qty", "1", "--uom", "kg", "--to", "TK-101"],
        "upgrade": ["db", "upgrade", "--url", url],
    }[command]  # fmt: skip
    result = cli(*argv)
    if command == "upgrade" and not before:  # an empty file may become a ledger
        assert result.returncode == 0, result
        return
    assert_user_error(result, says)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, no -shm


@pytest.mark.parametrize(
    "command",
    [
        ["ledger", "balance"],
        ["ledger", "history", "--last", "3"],
        ["ledger", "trace", "--lot", "E1", "--direction", "forward"],
        ["ledger", "reconcile"],
        ["ledger", "verify"],
        ["ledger", "export", "--format", "jsonl", "--since", "0"],
    ],
    ids=lambda c: c[1],
)
def test_read_only_commands_with_a_config_write_nothing(
    plant: LedgerFile, cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    changed = tmp_path / "changed.toml"  # master data that differs from the ledger's
    changed.write_text(
        DEMO_CONFIG.read_text(encoding="utf-8").replace("Ethanol", "Ethanol (renamed)", 1),
        encoding="utf-8",
    )
    before = plant.sql("SELECT count(*) FROM audit")
    result = cli(*command, "--url", plant.url, "--config", changed)
    assert result.returncode == 0, result
    assert plant.sql("SELECT count(*) FROM audit") == before


MISTAKES = {
    # SQLAlchemy's own spelling of a SQLite URL; invops needs the async driver
    "sqlite-url-without-aiosqlite": ["ledger", "balance", "--url", "sqlite:///{tmp}/plain.db"],
    "ledger-path-below-a-file": [
        "ledger", "balance", "--url", "sqlite+aiosqlite:///{tmp}/a-file/ledger.db",
    ],
    "export-cursor-out-of-range": [
        "ledger", "export", "--format", "jsonl", "--since", "1" + "0" * 30, "--url", "{url}",
    ],
}  # fmt: skip


@pytest.mark.parametrize("case", list(MISTAKES))
def test_user_mistake_is_reported_as_an_error_not_an_internal_error(
    case: str, plant: LedgerFile, cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{url}", plant.url) for a in MISTAKES[case]]
    result = cli(*argv)
    assert_user_error(result, "invops: error:")
    assert "internal error" not in result.stderr


def test_invalid_option_value_gives_a_one_line_message(plant: LedgerFile, cli: Cli) -> None:
    result = cli("ledger", "lot-status", "--lot", "E1", "--status", "bogus", "--reason", "r",
                 "--url", plant.url)  # fmt: skip
    assert_user_error(result, "bogus", code=None)

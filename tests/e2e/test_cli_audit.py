"""`invops audit show`: the audit trail for a reviewer, as text, JSON and CSV, filtered by
object, user and time, against the plant ledger the CLI posted (tests/e2e/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from tests.e2e.conftest import Cli, LedgerFile
from tests.e2e.test_cli import assert_user_error


def show(cli: Cli, plant: LedgerFile, *args: str) -> list[dict[str, object]]:
    result = cli("audit", "show", "--url", plant.url, "--json", *args)
    assert result.returncode == 0, result
    records: list[dict[str, object]] = result.json()["records"]
    return records


def test_every_record_shows_oldest_first_with_old_and_new(plant: LedgerFile, cli: Cli) -> None:
    records = show(cli, plant)
    assert len(records) == plant.sql("SELECT count(*) FROM audit")[0][0]
    cursors = [int(str(r["cursor"])) for r in records]
    assert cursors == sorted(cursors)
    count = plant.posts["count"]["movement"]["id"]
    (counted,) = [r for r in records if r["object_id"] == count]
    assert (counted["object_type"], counted["user"], counted["action"]) == (
        "movement", "op-e2e", "count",
    )  # fmt: skip
    created = [r for r in records if r["object_type"] == "lot" and r["action"] == "create"]
    assert {r["object_id"] for r in created} == {"E1", "E2"}
    assert all(isinstance(r["new"], dict) and r["old"] is None for r in created)

    text = cli("audit", "show", "--url", plant.url)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == len(records)
    assert f"movement:{count}" in text.stdout and "op-e2e" in text.stdout


def test_filters_by_object_user_and_time(plant: LedgerFile, cli: Cli) -> None:
    everything = show(cli, plant)
    lot = show(cli, plant, "--object", "lot:E2")
    production = plant.posts["production"]["movement"]["id"]
    assert {(r["object_type"], r["object_id"]) for r in lot} == {
        ("lot", "E2"),
        ("movement", production),
    }
    unit = show(cli, plant, "--object", "unit:TK-103")
    transfer = plant.posts["transfer"]["movement"]["id"]
    assert ("movement", transfer) in {(r["object_type"], r["object_id"]) for r in unit}
    assert show(cli, plant, "--user", "nobody") == []
    mine = show(cli, plant, "--user", "op-e2e")
    assert mine and all(r["user"] == "op-e2e" for r in mine)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert show(cli, plant, "--since", tomorrow) == []
    assert show(cli, plant, "--until", tomorrow) == everything
    middle = str(everything[len(everything) // 2]["timestamp"])
    early, late = show(cli, plant, "--until", middle), show(cli, plant, "--since", middle)
    assert early and late and all(str(r["timestamp"]) <= middle for r in early)
    assert all(str(r["timestamp"]) >= middle for r in late)
    assert len(show(cli, plant, "--limit", "2")) == 2


def test_csv_has_a_header_and_the_stored_values(plant: LedgerFile, cli: Cli) -> None:
    result = cli("audit", "show", "--url", plant.url, "--csv", "--object", "lot:E1")
    assert result.returncode == 0, result
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and rows[0].keys() >= {"cursor", "timestamp", "user", "action", "old", "new"}
    created = next(r for r in rows if r["object_type"] == "lot" and r["action"] == "create")
    assert json.loads(created["new"])["lot"] == "E1"


def test_bad_options_are_one_line_errors(plant: LedgerFile, cli: Cli) -> None:
    base = ("audit", "show", "--url", plant.url)
    assert_user_error(cli(*base, "--object", "pallet:P1"), "pallet:P1", "lot", "unit")
    assert_user_error(cli(*base, "--object", "lot:"), "TYPE:ID")
    assert_user_error(cli(*base, "--since", "last week"), "last week", "ISO 8601")
    assert_user_error(cli(*base, "--json", "--csv"), "--json or --csv")

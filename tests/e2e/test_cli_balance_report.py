"""`invops ledger balance-report`: the period mass balance of the CLI-posted plant ledger
(tests/e2e/conftest.py) as JSON, CSV and a table; it closes on `ledger balance`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.e2e.conftest import Cli, LedgerFile
from tests.e2e.test_cli import assert_user_error

YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
TOMORROW = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_report_closes_on_the_book(plant: LedgerFile, cli: Cli) -> None:
    result = cli(
        "ledger", "balance-report", "--from", YESTERDAY, "--to", TOMORROW, "--url", plant.url,
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result
    report = result.json()
    lines = {line["unit"]: line for line in report["lines"]}
    book = cli("ledger", "balance", "--url", plant.url, "--json").json()
    per_unit: dict[str, Decimal] = {}
    for balance in book["balances"]:
        per_unit[balance["unit"]] = per_unit.get(balance["unit"], Decimal(0)) + Decimal(
            balance["quantity"]
        )
    assert {unit: Decimal(line["closing"]) for unit, line in lines.items()} == per_unit
    tk101 = lines["TK-101"]
    assert Decimal(tk101["opening"]) == 0 and Decimal(tk101["receipts"]) == 800
    assert (
        Decimal(tk101["transfers_out"]) == -200 and Decimal(lines["TK-103"]["transfers_in"]) == 200
    )
    columns = ("receipts", "issues", "production_in", "production_out", "transfers_in",
               "transfers_out", "adjustments", "counts", "scrap", "reversals")  # fmt: skip
    for line in lines.values():
        moved = sum((Decimal(line[c]) for c in columns), Decimal(0))
        assert Decimal(line["opening"]) + moved == Decimal(line["closing"])

    later = cli(
        "ledger", "balance-report", "--from", TOMORROW, "--to", TOMORROW.replace("Z", ".5Z"),
        "--url", plant.url, "--unit", "TK-101", "--json",
    )  # fmt: skip
    (only,) = later.json()["lines"]
    assert (only["unit"], only["opening"], only["closing"]) == ("TK-101", tk101["closing"],
                                                               tk101["closing"])  # fmt: skip


def test_csv_and_table(plant: LedgerFile, cli: Cli) -> None:
    period = ("--from", YESTERDAY, "--to", TOMORROW, "--url", plant.url)
    as_csv = cli("ledger", "balance-report", *period, "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {row["unit"] for row in rows} == {"TK-101", "TK-103"}
    assert rows[0].keys() >= {"opening", "receipts", "closing", "variance_pct"}
    table = cli("ledger", "balance-report", *period)
    assert table.returncode == 0 and "TK-103" in table.stdout and "closing" in table.stdout


def test_bad_periods_are_one_line_errors(plant: LedgerFile, cli: Cli) -> None:
    base = ("ledger", "balance-report", "--url", plant.url)
    assert_user_error(cli(*base, "--from", "monday", "--to", TOMORROW), "monday", "ISO 8601")
    assert_user_error(cli(*base, "--from", TOMORROW, "--to", YESTERDAY), "start before it ends")

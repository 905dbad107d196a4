"""Text that reaches an engineer's terminal through the real `invops` command (issue 12,
items 7 and 9): refused characters are one-line user errors, stored text is shown with its
newlines and controls escaped in tables (one movement, one line) and exact in --json, and
a posting the database refuses is a one-line user error, not a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_cli import assert_user_error, movements, post_args

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli, LedgerFile

RECEIPT = ["--qty", "1", "--uom", "kg", "--to", "TK-101", "--user", "op-e2e"]


def history_line(cli: Cli, plant: LedgerFile, lot: str) -> str:
    table = cli("ledger", "history", "--url", plant.url, "--lot", lot)
    assert table.returncode == 0, table
    header, *rows = table.out_lines
    assert header.startswith("TIMESTAMP") and len(rows) == 1, table  # one movement, one line
    return rows[0]


def test_a_reason_with_newlines_is_one_line_in_the_table_and_exact_in_json(
    plant: LedgerFile, cli: Cli
) -> None:
    reason = "delivery\n2026-01-01T00:00:00Z  fake-id  receipt  E9  -  TK-101  9999\tok"
    posted = cli(*post_args("receipt", plant, "--lot", "TXT-1", "--reason", reason, *RECEIPT))
    assert posted.returncode == 0, posted
    row = history_line(cli, plant, "TXT-1")
    assert row.endswith(
        "delivery\\n2026-01-01T00:00:00Z  fake-id  receipt  E9  -  TK-101  9999\\tok"
    )
    [movement] = movements(cli("ledger", "history", "--url", plant.url, "--lot", "TXT-1", "--json"))
    assert movement["reason"] == reason


def test_text_stored_before_the_rules_is_escaped_on_output(plant: LedgerFile, cli: Cli) -> None:
    cli(*post_args("receipt", plant, "--lot", "OLD-1", "--reason", "x", *RECEIPT))
    hostile = "ok\r\x1b[2Jwiped\u202eevil\x00"
    plant.sql("UPDATE movements SET reason = ? WHERE lot = 'OLD-1'", (hostile,))
    row = history_line(cli, plant, "OLD-1")
    assert row.endswith("ok\\r\\x1b[2Jwiped\\u202eevil\\x00")
    assert not any(c in row for c in "\r\x1b\u202e\x00")


@pytest.mark.parametrize(
    ("option", "value", "needles"),
    [
        ("--reason", "line\rover", ["reason", "U+000D"]),
        ("--reason", "clear\x1b[2J", ["reason", "U+001B"]),
        ("--reason", "\u202etxt.exe", ["reason", "U+202E"]),
        ("--lot", "LOT\u202e1", ["lot", "U+202E", "bidirectional"]),
        ("--lot", "LOT 1", ["lot", "U+0020"]),
        ("--lot", "LOT-A\u0308", ["lot", "NFC"]),
        ("--key", " key", ["idempotency key", "whitespace"]),
        ("--user", "op\x1b[31m", ["user", "U+001B"]),
        ("--reason", "x" * 100_000, ["reason is 100000 characters long; at most 2000"]),
        ("--lot", "L" * 100_000, ["lot", "(100000 chars)", "at most 128"]),
    ],
    ids=["cr", "escape", "rlo-reason", "rlo-lot", "space-lot", "nfd-lot", "key-space", "user-esc",
         "long-reason", "long-lot"],
)  # fmt: skip
def test_refused_text_is_a_one_line_error_naming_the_field(
    plant: LedgerFile, cli: Cli, option: str, value: str, needles: list[str]
) -> None:
    args = {"--lot": "TXT-2", "--reason": "", "--user": "op-e2e"} | {option: value}
    argv = post_args("receipt", plant, "--qty", "1", "--uom", "kg", "--to", "TK-101",
                     *(x for pair in args.items() for x in pair))  # fmt: skip
    before = plant.sql("SELECT count(*) FROM movements")
    result = cli(*argv)
    assert_user_error(result, *needles)
    assert len(result.stderr) < 400  # no value is echoed whole
    assert not any(c in result.stderr for c in "\r\x1b\u202e")
    assert plant.sql("SELECT count(*) FROM movements") == before


def test_a_posting_the_database_refuses_is_a_one_line_user_error(
    plant: LedgerFile, cli: Cli
) -> None:
    plant.sql(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON movements WHEN NEW.reason = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
    )
    result = cli(*post_args("receipt", plant, "--lot", "TXT-3", "--reason", "poison", *RECEIPT))
    assert_user_error(result, "the ledger database refused this request", "test trigger")
    fine = cli(*post_args("receipt", plant, "--lot", "TXT-3", "--reason", "fine", *RECEIPT))
    assert fine.returncode == 0, fine

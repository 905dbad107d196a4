"""`invops ledger pending | approve | reject`: a scrap caught by a `[[signatures]]` policy
is held, listed, refused for a wrong password (one line, exit 1, nothing posted), signed
with the right one (read from stdin, no echo needed) and posted once; a rejection posts
nothing. Real processes on a real SQLite ledger."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inventory_core.domain.passwords import hash_password
from tests.e2e.conftest import TIMEOUT_S, Cli, LedgerFile, base_command, clean_env
from tests.e2e.test_cli_b2mml import NS, b2mml, document, write

POLICY = """
[[users]]
name = "eng1"
password_hash = "{hash}"
role = "engineer"
full_name = "Erin Engineer"

[[signatures]]
action = "scrap"
meaning = "approved"
role = "engineer"
"""


@pytest.fixture
def signed_config(plus_config: Path, tmp_path: Path) -> Path:
    path = tmp_path / "signed.toml"
    text = plus_config.read_text(encoding="utf-8")
    path.write_text(text + POLICY.format(hash=hash_password("s3cret pass")), encoding="utf-8")
    return path


def sign(cwd: Path, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*base_command(), "ledger", *args], cwd=cwd, env=clean_env(), input=password + "\n",
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


def scrap(cli: Cli, plant: LedgerFile, config: Path, quantity: str) -> dict[str, Any]:
    result = cli(
        "ledger", "post", "scrap", "--material", "ETHANOL-96", "--lot", "E1", "--qty", quantity,
        "--uom", "kg", "--from", "TK-101", "--reason", "contaminated", "--user", "op-e2e",
        "--config", config, "--url", plant.url, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result
    document: dict[str, Any] = result.json()
    return document


def book(plant: LedgerFile) -> float:
    rows = plant.sql("SELECT quantity FROM balances WHERE unit = 'TK-101' AND lot = 'E1'")
    return float(rows[0][0])


def test_a_held_scrap_is_listed_refused_for_a_wrong_password_then_signed(
    plant: LedgerFile, cli: Cli, signed_config: Path
) -> None:
    before = book(plant)
    held = scrap(cli, plant, signed_config, "7")
    request_id = held["request"]["request_id"]
    assert request_id.startswith("request:") and held["request"]["state"] == "pending"
    assert book(plant) == before, "held: nothing posted"

    listed = cli("ledger", "pending", "--url", plant.url, "--json")
    assert [r["request_id"] for r in listed.json()] == [request_id]
    text = cli("ledger", "pending", "--url", plant.url)
    assert request_id in text.stdout and "scrap of 7 kg" in text.stdout

    approve = ("approve", request_id, "--meaning", "approved", "--user", "eng1",
               "--config", str(signed_config), "--url", plant.url, "--password-stdin")  # fmt: skip
    wrong = sign(plant.path.parent, *approve, password="guess")
    assert wrong.returncode == 1 and wrong.stdout == "", wrong
    assert wrong.stderr.strip() == "invops: error: wrong user name or password"
    assert book(plant) == before

    signed = sign(plant.path.parent, *approve, "--json", password="s3cret pass")
    assert signed.returncode == 0, signed
    outcome = json.loads(signed.stdout)
    assert outcome["request"]["state"] == "posted" and outcome["posted"]
    [signature] = outcome["request"]["signatures"]
    assert signature["printed_name"] == "Erin Engineer" and signature["meaning"] == "approved"
    assert book(plant) == before - 7
    assert cli("ledger", "pending", "--url", plant.url, "--json").json() == []
    # the history shows the movement with its signature (printed name, time, meaning)
    history = cli("ledger", "history", "--url", plant.url, "--last", "1")
    assert history.returncode == 0, history
    assert history.stdout.splitlines()[0].split()[-2:] == ["SIGNATURES", "REASON"]
    assert f"Erin Engineer (eng1), {signature['signed_at']}: approved" in history.stdout
    trace = cli("ledger", "trace", "--lot", "E1", "--url", plant.url)
    assert trace.returncode == 0, trace
    shown = f"scrap signed: Erin Engineer (eng1), {signature['signed_at']}: approved"
    assert shown in trace.stdout, trace.stdout

    again = sign(plant.path.parent, *approve, password="s3cret pass")
    assert again.returncode == 1 and "changes nothing" in again.stderr
    assert book(plant) == before - 7
    verify = cli("ledger", "verify", "--url", plant.url)
    assert verify.returncode == 0, verify
    failed = plant.sql("SELECT count(*) FROM audit WHERE action = 'signature-failed'")
    assert failed[0][0] == 1


def test_a_rejected_request_posts_nothing(plant: LedgerFile, cli: Cli, signed_config: Path) -> None:
    before = book(plant)
    request_id = scrap(cli, plant, signed_config, "3")["request"]["request_id"]
    rejected = sign(
        plant.path.parent, "reject", request_id, "--reason", "not contaminated", "--user",
        "eng1", "--config", str(signed_config), "--url", plant.url, "--password-stdin",
        password="s3cret pass",
    )  # fmt: skip
    assert rejected.returncode == 0, rejected
    assert "rejected -> not contaminated" in rejected.stdout
    assert book(plant) == before
    every = cli("ledger", "pending", "--all", "--url", plant.url, "--json").json()
    assert [(r["request_id"], r["state"]) for r in every] == [(request_id, "rejected")]


def test_a_period_is_closed_with_a_signed_balance_report(
    plant: LedgerFile, cli: Cli, signed_config: Path
) -> None:
    end = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    asked = cli(
        "ledger", "close-period", "--from", "2026-01-01T00:00:00Z", "--to", end,
        "--reason", "month end", "--user", "ctrl", "--url", plant.url, "--json",
    )  # fmt: skip
    assert asked.returncode == 0, asked
    request = asked.json()
    assert request["action"] == "period-close" and request["meaning"] == "reviewed"
    assert cli("ledger", "periods", "--url", plant.url, "--json").json() == []
    signed = sign(
        plant.path.parent, "approve", request["request_id"], "--meaning", "reviewed", "--user",
        "eng1", "--config", str(signed_config), "--url", plant.url, "--password-stdin",
        "--json", password="s3cret pass",
    )  # fmt: skip
    assert signed.returncode == 0, signed
    assert json.loads(signed.stdout)["posted"].startswith("period:")
    [period] = cli("ledger", "periods", "--url", plant.url, "--json").json()
    assert (period["start"], period["requested_by"]) == ("2026-01-01T00:00:00.000000Z", "ctrl")
    assert cli("ledger", "verify", "--url", plant.url).returncode == 0


def test_lot_quality_and_an_imported_material_master_wait_for_a_signature(
    plant: LedgerFile, cli: Cli, plus_config: Path, tmp_path: Path
) -> None:
    config = tmp_path / "master-data.toml"
    policy = POLICY.replace('action = "scrap"', 'action = "master-data"')
    config.write_text(
        plus_config.read_text(encoding="utf-8") + policy.format(hash=hash_password("pw 2")),
        encoding="utf-8",
    )
    held = cli(
        "ledger", "lot-quality", "--lot", "E1", "--certificate", "CoA-9", "--reason", "CoA in",
        "--user", "qa-e2e", "--config", config, "--url", plant.url,
    )  # fmt: skip
    assert held.returncode == 0, held
    assert "held for signatures, nothing posted yet" in held.stdout
    [(request_id,)] = plant.sql("SELECT 'request:' || id FROM pending_requests")
    assert request_id in held.stdout
    assert plant.sql("SELECT certificate FROM lots WHERE id = 'E1'") == [("",)]
    signed = sign(
        plant.path.parent, "approve", request_id, "--meaning", "approved", "--user", "eng1",
        "--config", str(config), "--url", plant.url, "--password-stdin", password="pw 2",
    )  # fmt: skip
    assert signed.returncode == 0, signed
    assert plant.sql("SELECT certificate FROM lots WHERE id = 'E1'") == [("CoA-9",)]

    master = document("SyncMaterialDefinition", "<MaterialDefinition><ID>NEW-1</ID>"
                      "<Description>New</Description><MaterialDefinitionProperty>"
                      "<ID>BaseUnitOfMeasure</ID><Value><ValueString>kg</ValueString>"
                      "<DataType>string</DataType></Value></MaterialDefinitionProperty>"
                      "</MaterialDefinition>")  # fmt: skip
    imported = cli(
        "ledger", "import", "--format", "b2mml", write(tmp_path, "m.xml", master),
        "--url", plant.url, "--config", config, "--user", "sap-pi",
    )  # fmt: skip
    answer = b2mml(imported)
    assert "held for signatures, not applied yet: request:" in imported.stderr
    code = answer.findtext(
        "b:DataArea/b:Confirm/b:ResponseCriteria/b:ChangeStatus/b:Code", namespaces=NS
    )
    assert code == "Held"
    assert plant.sql("SELECT id FROM materials WHERE id = 'NEW-1'") == []

"""`invops ledger lot-quality`: properties, retest date and certificate of a lot set from
the shell, audited; bad input is one line on stderr and changes nothing."""

from __future__ import annotations

from tests.e2e.conftest import Cli, LedgerFile
from tests.e2e.test_cli import assert_user_error


def test_quality_data_is_set_shown_and_audited(plant: LedgerFile, cli: Cli) -> None:
    result = cli(
        "ledger",
        "lot-quality",
        "--lot",
        "E1",
        "--property",
        "assay=99.6 %",
        "--property",
        "density=0.7893 kg/L",
        "--retest",
        "2027-03-01",
        "--certificate",
        "CoA-4711",
        "--reason",
        "CoA received",
        "--user",
        "qa1",
        "--url",
        plant.url,
        "--json",
    )
    assert result.returncode == 0, result
    document = result.json()
    assert document["properties"] == [
        {"name": "assay", "value": "99.6", "unit": "%"},
        {"name": "density", "value": "0.7893", "unit": "kg/L"},
    ]
    assert (document["retest"], document["certificate"]) == ("2027-03-01", "CoA-4711")
    text = cli(
        "ledger",
        "lot-quality",
        "--lot",
        "E1",
        "--certificate",
        "CoA-4712",
        "--reason",
        "reissued",
        "--user",
        "qa2",
        "--url",
        plant.url,
    )
    assert text.returncode == 0 and "certificate CoA-4712" in text.stdout, text
    audit = cli("audit", "show", "--object", "lot:E1", "--url", plant.url, "--json")
    quality = [r for r in audit.json()["records"] if r["action"] == "quality"]
    assert [r["user"] for r in quality] == ["qa1", "qa2"]
    assert cli("ledger", "verify", "--url", plant.url).returncode == 0


def test_bad_quality_data_is_refused_in_one_line(plant: LedgerFile, cli: Cli) -> None:
    before = plant.sql("SELECT properties, retest, certificate FROM lots WHERE id = 'E1'")
    for args, needle in (
        (("--property", "density=heavy kg/L"), "density"),
        (("--property", "assay"), "NAME=VALUE"),
        (("--retest", "next week"), "--retest"),
        ((), "nothing to set"),
    ):
        result = cli(
            "ledger", "lot-quality", "--lot", "E1", *args, "--reason", "x", "--url", plant.url
        )
        assert_user_error(result, needle)
    assert plant.sql("SELECT properties, retest, certificate FROM lots WHERE id = 'E1'") == before

"""`[ledger] lease_s` and `lease_heartbeat_s`: the writer lease's terms (issue 12 item 8)."""

from __future__ import annotations

from typing import Any

import pytest

from invops.config import ConfigError, parse_config
from tests.unit.test_config import NO_ENV, minimal


def _problems(ledger: dict[str, Any]) -> dict[str, str]:
    data = minimal()
    data["ledger"] = ledger
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ=NO_ENV)
    return {p.path: p.message for p in caught.value.problems}


def test_the_lease_defaults_to_30_s_renewed_every_5_s() -> None:
    ledger = parse_config(minimal(), environ=NO_ENV).ledger
    assert (ledger.lease_s, ledger.lease_heartbeat_s) == (30.0, 5.0)


def test_a_short_lease_for_tests_and_integer_seconds_are_accepted() -> None:
    data = minimal()
    data["ledger"] = {"lease_s": 2, "lease_heartbeat_s": 0.5}
    ledger = parse_config(data, environ=NO_ENV).ledger
    assert (ledger.lease_s, ledger.lease_heartbeat_s) == (2.0, 0.5)


def test_a_heartbeat_over_half_the_lease_is_an_error_naming_the_key() -> None:
    found = _problems({"lease_s": 10, "lease_heartbeat_s": 6})
    assert list(found) == ["ledger.lease_heartbeat_s"]
    assert "at most half of lease_s" in found["ledger.lease_heartbeat_s"]


@pytest.mark.parametrize(
    ("ledger", "path"),
    [
        ({"lease_s": 0.5}, "ledger.lease_s"),
        ({"lease_s": 7200}, "ledger.lease_s"),
        ({"lease_s": "30"}, "ledger.lease_s"),
        ({"lease_heartbeat_s": 0}, "ledger.lease_heartbeat_s"),
    ],
)
def test_bad_lease_values_are_errors(ledger: dict[str, Any], path: str) -> None:
    assert path in _problems(ledger)

"""`[[signatures]]` policies and `[[users]] full_name` in the config: valid tables become
the domain's SignaturePolicy; a policy invops would not enforce, a bad threshold or a key
that does not fit the action is an error naming its key path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from inventory_core.domain.model import LotStatus
from inventory_core.domain.signatures import (
    DEFAULT_SIGNED_STATUSES,
    SignatureAction,
    SignaturePolicy,
    Threshold,
)
from inventory_core.domain.users import Role
from invops.config import parse_config
from tests.unit.test_config import NO_ENV, minimal, problems


def with_policies(*policies: dict[str, Any]) -> dict[str, Any]:
    return {**minimal(), "signatures": list(policies)}


def test_policies_become_the_domains_policies() -> None:
    config = parse_config(
        with_policies(
            {
                "action": "adjustment",
                "threshold": "2%",
                "meaning": "approved",
                "role": "engineer",
                "second_person": True,
            },
            {"action": "scrap", "threshold": 50, "meaning": "approved", "role": "operator"},
            {
                "action": "lot-status",
                "statuses": ["released"],
                "meaning": "released",
                "role": "engineer",
            },
            {"action": "count", "meaning": "reviewed", "role": "operator"},
            {
                "action": "advice-variance",
                "threshold": "5%",
                "meaning": "accepted",
                "role": "engineer",
            },
            {"action": "period-close", "meaning": "reviewed", "role": "admin"},
            {"action": "master-data", "meaning": "approved", "role": "engineer"},
        ),
        environ=NO_ENV,
    )
    policies = config.signature_policies()
    assert policies[0] == SignaturePolicy(
        SignatureAction.ADJUSTMENT, "approved", Role.ENGINEER, True, Threshold(percent=Decimal(2))
    )
    assert policies[1].threshold == Threshold(quantity=Decimal(50))
    assert policies[2].statuses == frozenset({LotStatus.RELEASED})
    assert policies[3].threshold == Threshold() and policies[3].statuses == DEFAULT_SIGNED_STATUSES
    assert [p.action for p in policies[4:]] == [
        SignatureAction.ADVICE_VARIANCE,
        SignatureAction.PERIOD_CLOSE,
        SignatureAction.MASTER_DATA,
    ]
    assert [SignaturePolicy.from_dict(p.as_dict()) for p in policies] == list(policies)


@pytest.mark.parametrize(
    ("policy", "path", "needle"),
    [
        ({"action": "master-data", "threshold": 1}, "signatures[0]", "no threshold"),
        ({"action": "approve-all"}, "signatures[0].action", ""),
        ({"action": "scrap", "threshold": "lots"}, "signatures[0].threshold", "neither a quantity"),
        ({"action": "scrap", "threshold": "120%"}, "signatures[0].threshold", "0% to 100%"),
        ({"action": "scrap", "threshold": -1}, "signatures[0].threshold", "neither a quantity"),
        ({"action": "scrap", "statuses": ["released"]}, "signatures[0]", "'lot-status' only"),
        ({"action": "period-close", "threshold": 5}, "signatures[0]", "no threshold"),
        ({"action": "scrap", "meaning": "Approved!"}, "signatures[0].meaning", ""),
        ({"action": "scrap", "role": "boss"}, "signatures[0].role", ""),
        ({"action": "scrap", "colour": "red"}, "signatures[0].colour", "unknown key"),
    ],
)
def test_a_bad_policy_is_an_error_naming_its_key_path(
    policy: dict[str, Any], path: str, needle: str
) -> None:
    found = problems(with_policies({"meaning": "approved", "role": "engineer", **policy}))
    assert path in found, found
    assert needle in found[path]


def test_a_user_may_carry_the_printed_name_a_signature_shows() -> None:
    from inventory_core.domain.passwords import hash_password

    user = {"name": "qa1", "password_hash": hash_password("pw"), "role": "engineer"}
    config = parse_config(
        {**minimal(), "users": [{**user, "full_name": "Dana Quality"}]}, environ=NO_ENV
    )
    [signer] = config.user_definitions()
    assert signer.printed_name == "Dana Quality"
    [plain] = parse_config({**minimal(), "users": [user]}, environ=NO_ENV).user_definitions()
    assert plain.printed_name == "qa1"

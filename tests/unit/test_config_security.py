"""The security part of the config: [opcua] policies/anonymous/certificate_dir, [[users]]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inventory_core.domain.passwords import hash_password, parse_password_hash
from inventory_core.domain.users import Role, User
from invops.config import (
    DEFAULT_CERTIFICATE_DIR,
    SECURE_POLICIES,
    AnonymousAccess,
    ConfigError,
    SecurityPolicyName,
    load_config,
    parse_config,
)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
NO_ENV: dict[str, str] = {}
HASH = hash_password("s3cret-Pa55")


def minimal(**extra: Any) -> dict[str, Any]:
    return {"site": {"enterprise": "ACME", "name": "PLANT1", "areas": ["TANKFARM"]}, **extra}


def user(name: str, role: str = "operator", password_hash: object = HASH) -> dict[str, Any]:
    return {"name": name, "role": role, "password_hash": password_hash}


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ=NO_ENV)
    return {problem.path: problem.message for problem in caught.value.problems}


# --------------------------------------------------------------------------- demo plant


def test_demo_users_load_with_real_hashes_of_their_demo_passwords() -> None:
    config = load_config(DEMO, environ=NO_ENV)
    users = config.user_definitions()
    assert [user.name for user in users] == ["viewer", "operator", "engineer", "admin"]
    for user in users:
        assert user.role is Role(user.name)
        assert user.verify(user.name)
        assert not user.verify(user.name.upper())


def test_demo_allows_policy_none_and_anonymous_read() -> None:
    opcua = load_config(DEMO, environ=NO_ENV).opcua
    assert opcua.allow_security_none is True
    assert opcua.security_policies == [SecurityPolicyName.NONE, *SECURE_POLICIES]
    assert opcua.anonymous is AnonymousAccess.READ
    assert opcua.certificate_dir == Path("var/pki")


def test_demo_file_says_its_users_are_demo_only() -> None:
    text = DEMO.read_text(encoding="utf-8")
    assert "DEMO ONLY" in text
    assert "invops users hash-password" in text


# --------------------------------------------------------------------------- policies


def test_default_policies_are_the_four_secure_ones() -> None:
    opcua = parse_config(minimal(), environ=NO_ENV).opcua
    assert opcua.security_policies == list(SECURE_POLICIES)
    assert SecurityPolicyName.NONE not in opcua.security_policies
    assert len(opcua.security_policies) == 4
    assert opcua.anonymous is AnonymousAccess.READ
    assert opcua.certificate_dir == DEFAULT_CERTIFICATE_DIR


def test_allow_security_none_adds_none_to_the_default_policies() -> None:
    opcua = parse_config(minimal(opcua={"allow_security_none": True}), environ=NO_ENV).opcua
    assert opcua.security_policies == [SecurityPolicyName.NONE, *SECURE_POLICIES]


def test_explicit_policies_are_kept_in_order() -> None:
    names = ["Aes256_Sha256_RsaPss_SignAndEncrypt", "Basic256Sha256_Sign"]
    opcua = parse_config(minimal(opcua={"security_policies": names}), environ=NO_ENV).opcua
    assert [p.value for p in opcua.security_policies] == names


def test_policy_none_listed_without_allow_security_none_is_an_error() -> None:
    found = problems(minimal(opcua={"security_policies": ["Basic256Sha256_Sign", "None"]}))
    assert "allow_security_none = true" in found["opcua.security_policies[1]"]


@pytest.mark.parametrize(
    ("policies", "path", "needle"),
    [
        (["Basic256"], "opcua.security_policies[0]", "Basic256Sha256_Sign"),
        ([], "opcua.security_policies", "at least one"),
        (
            ["Basic256Sha256_Sign", "Basic256Sha256_Sign"],
            "opcua.security_policies",
            "duplicate security policy 'Basic256Sha256_Sign'",
        ),
        ("Basic256Sha256_Sign", "opcua.security_policies", "array"),
    ],
)
def test_bad_policy_lists_name_the_key(policies: object, path: str, needle: str) -> None:
    found = problems(minimal(opcua={"security_policies": policies}))
    assert needle in found[path]


def test_none_with_users_needs_an_encrypting_policy_for_the_passwords() -> None:
    opcua = {"allow_security_none": True, "security_policies": ["None", "Basic256Sha256_Sign"]}
    found = problems(minimal(opcua=opcua, users=[user("op")]))
    assert "SignAndEncrypt" in found["opcua.security_policies"]
    # without users there is no password to protect
    parse_config(minimal(opcua=opcua), environ=NO_ENV)


def test_anonymous_must_be_read_or_off() -> None:
    found = problems(minimal(opcua={"anonymous": "write"}))
    assert "'read'" in found["opcua.anonymous"] and "'off'" in found["opcua.anonymous"]


def test_anonymous_off_without_users_is_an_error() -> None:
    found = problems(minimal(opcua={"anonymous": "off"}))
    assert "no [[users]]" in found["opcua.anonymous"]
    config = parse_config(minimal(opcua={"anonymous": "off"}, users=[user("op")]), environ=NO_ENV)
    assert config.opcua.anonymous is AnonymousAccess.OFF


def test_certificate_dir_must_not_be_empty() -> None:
    assert "empty" in problems(minimal(opcua={"certificate_dir": " "}))["opcua.certificate_dir"]
    config = parse_config(minimal(opcua={"certificate_dir": "/srv/invops/pki"}), environ=NO_ENV)
    assert config.opcua.certificate_dir == Path("/srv/invops/pki")


# --------------------------------------------------------------------------- users


def test_users_load_with_roles() -> None:
    config = parse_config(
        minimal(users=[user("op1"), user("eng.1", "engineer"), user("boss", "admin")]),
        environ=NO_ENV,
    )
    assert config.user_definitions() == (
        User("op1", Role.OPERATOR, parse_password_hash(HASH)),
        User("eng.1", Role.ENGINEER, parse_password_hash(HASH)),
        User("boss", Role.ADMIN, parse_password_hash(HASH)),
    )


def test_plain_text_password_is_a_config_error_that_does_not_repeat_it() -> None:
    found = problems(minimal(users=[user("op1"), user("op2", password_hash="hunter2")]))
    message = found["users[1].password_hash"]
    assert "run invops users hash-password" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "bad",
    [
        HASH[:-8],  # truncated
        HASH.replace("scrypt$", "scrypt2$"),
        12345678,  # a number: still not echoed
        "",
    ],
)
def test_bad_password_hashes_name_the_key_and_the_fix(bad: object) -> None:
    message = problems(minimal(users=[user("op1", password_hash=bad)]))["users[0].password_hash"]
    assert "run invops users hash-password" in message
    if bad:
        assert str(bad) not in message


def test_unknown_role_names_the_key_and_the_roles() -> None:
    found = problems(minimal(users=[user("op1"), user("boss", "superuser")]))
    message = found["users[1].role"]
    for role in ("viewer", "operator", "engineer", "admin"):
        assert role in message
    assert "superuser" in message


def test_duplicate_user_names_are_reported_at_the_second_entry() -> None:
    found = problems(minimal(users=[user("op1"), user("op2"), user("op1", "engineer")]))
    assert found == {
        "users[2].name": "duplicate user name 'op1' (first defined at users[0])",
    }


def test_every_user_problem_is_reported_at_once() -> None:
    found = problems(
        minimal(
            users=[
                user("op 1"),
                user("op2", "chief"),
                user("op3", password_hash="op3"),
                user("op2"),
                {"name": "op4", "role": "viewer"},
                {**user("op5"), "password": "op5"},
            ]
        )
    )
    assert set(found) == {
        "users[0].name",
        "users[1].role",
        "users[2].password_hash",
        "users[3].name",
        "users[4].password_hash",
        "users[5].password",
    }
    assert found["users[4].password_hash"] == "missing required key"
    assert "password_hash" in found["users[5].password"]  # did you mean ...


def test_user_problems_carry_file_lines(tmp_path: Path) -> None:
    text = (
        '[site]\nenterprise = "ACME"\nname = "PLANT1"\nareas = ["TANKFARM"]\n\n'
        f'[[users]]\nname = "op1"\nrole = "operator"\npassword_hash = "{HASH}"\n\n'
        '[[users]]\nname = "op2"\nrole = "operator"\npassword_hash = "op2-in-clear"\n'
    )
    path = tmp_path / "plant.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=NO_ENV)
    (problem,) = caught.value.problems
    assert problem.path == "users[1].password_hash"
    assert problem.line == 14
    assert "op2-in-clear" not in str(caught.value)


def test_the_config_default_policies_are_the_servers_secure_policies() -> None:
    """One list: the config's secure policy names are the server's default endpoints."""
    from opcua_server.security import POLICY_TYPES, SECURE_POLICY_TYPES

    assert [POLICY_TYPES[str(name)] for name in SECURE_POLICIES] == list(SECURE_POLICY_TYPES)

"""inventory_core.domain.users: a user verifies their own password; the config and the
OPC UA user manager hand such users on."""

from __future__ import annotations

import pytest

from information_model import Role as ModelRole
from inventory_core.domain.passwords import PasswordHash, hash_password, parse_password_hash
from inventory_core.domain.users import Role, User
from invops.config import parse_config
from opcua_server.security import InvopsUserManager, SecuritySetupError

SITE = {"enterprise": "ACME", "name": "PLANT1", "areas": ["TANKFARM"]}


@pytest.fixture(scope="module")
def operator() -> User:
    return User("otto", Role.OPERATOR, parse_password_hash(hash_password("s3cret Pa55")))


def test_a_user_verifies_the_right_password_only(operator: User) -> None:
    assert operator.verify("s3cret Pa55")
    assert not operator.verify("s3cret Pa5")
    assert not operator.verify("S3cret Pa55")
    assert not operator.verify("")


def test_the_same_password_typed_decomposed_matches() -> None:
    user = User("gruber", Role.VIEWER, parse_password_hash(hash_password("Gr\u00fc\u00dfe")))
    assert user.verify("Gru\u0308\u00dfe")  # u + combining diaeresis: NFC makes it ü


def test_a_parsed_hash_verifies_as_its_string_does(operator: User) -> None:
    assert isinstance(operator.password, PasswordHash)
    assert operator.password.verify("s3cret Pa55") and not operator.password.verify("nope")


def test_the_hash_stays_out_of_a_users_repr(operator: User) -> None:
    shown = repr(operator)
    assert "otto" in shown and "operator" in shown
    assert "password" not in shown and "salt" not in shown


def test_the_information_model_still_exports_the_domain_role() -> None:
    assert ModelRole is Role
    assert Role.ENGINEER.grants("operator") and not Role.VIEWER.grants("operator")


def test_the_config_hands_on_its_users_as_domain_users_with_their_roles() -> None:
    table = [
        {"name": "vera", "role": "viewer", "password_hash": hash_password("vera-pw")},
        {"name": "eddi", "role": "engineer", "password_hash": hash_password("eddi-pw")},
    ]
    users = parse_config({"site": SITE, "users": table}, environ={}).user_definitions()
    assert [(u.name, u.role) for u in users] == [("vera", Role.VIEWER), ("eddi", Role.ENGINEER)]
    assert all(isinstance(u, User) and isinstance(u.password, PasswordHash) for u in users)
    vera, eddi = users
    assert vera.verify("vera-pw") and not vera.verify("eddi-pw")
    assert eddi.verify("eddi-pw")


def test_the_user_manager_refuses_a_name_listed_twice(operator: User) -> None:
    again = User(operator.name, Role.ADMIN, operator.password)
    with pytest.raises(SecuritySetupError, match="'otto' is listed twice"):
        InvopsUserManager([operator, again], "read")

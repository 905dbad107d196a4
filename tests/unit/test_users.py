"""inventory_core.domain.users: a user verifies their own password; the config and the
OPC UA user manager hand such users on."""

from __future__ import annotations

import pytest

from information_model import Role as ModelRole
from inventory_core.domain.passwords import PasswordHash, hash_password, parse_password_hash
from inventory_core.domain.users import Role, User


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

"""Password hashes for [[users]]: scrypt, self-describing, never plain text."""

from __future__ import annotations

import base64

import pytest

from inventory_core.domain.passwords import (
    DEFAULT_N,
    PasswordHash,
    PasswordHashError,
    hash_password,
    parse_password_hash,
    verify_password,
)

GOOD_PARAMS = "scrypt$n=16384,r=8,p=1"
ZERO_SALT = "A" * 22 + "=="
ZERO_KEY = "A" * 43 + "="


def test_the_zero_hash_used_below_is_well_formed() -> None:
    assert not verify_password("x", f"{GOOD_PARAMS}${ZERO_SALT}${ZERO_KEY}")


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse battery staple")


def test_hash_round_trips(stored: str) -> None:
    assert verify_password("correct horse battery staple", stored)


def test_hash_is_self_describing_scrypt(stored: str) -> None:
    scheme, params, salt, key = stored.split("$")
    assert scheme == "scrypt"
    assert params == f"n={DEFAULT_N},r=8,p=1"
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(key)) == 32
    assert str(parse_password_hash(stored)) == stored


def test_wrong_password_does_not_verify(stored: str) -> None:
    assert not verify_password("correct horse battery stapler", stored)
    assert not verify_password("", stored)
    assert not verify_password("Correct horse battery staple", stored)


def test_salt_differs_each_time() -> None:
    first, second = hash_password("viewer"), hash_password("viewer")
    assert first != second
    assert parse_password_hash(first).salt != parse_password_hash(second).salt
    assert verify_password("viewer", first) and verify_password("viewer", second)


def test_tampered_key_or_salt_does_not_verify(stored: str) -> None:
    parsed = parse_password_hash(stored)
    flipped_key = PasswordHash(
        parsed.n, parsed.r, parsed.p, parsed.salt, bytes([parsed.key[0] ^ 1]) + parsed.key[1:]
    )
    flipped_salt = PasswordHash(
        parsed.n, parsed.r, parsed.p, bytes([parsed.salt[0] ^ 1]) + parsed.salt[1:], parsed.key
    )
    assert not verify_password("correct horse battery staple", str(flipped_key))
    assert not verify_password("correct horse battery staple", str(flipped_salt))


def test_tampered_cost_parameters_do_not_verify(stored: str) -> None:
    cheaper = stored.replace("n=16384", "n=1024")
    assert not verify_password("correct horse battery staple", cheaper)


@pytest.mark.parametrize(
    "not_a_hash",
    [
        "viewer",  # a plain-text password pasted into the config
        "",
        "scrypt",
        "scrypt$n=16384,r=8,p=1$$",
        "scrypt$n=16384,r=8,p=1$c2FsdA==",  # key missing
        "pbkdf2_sha256$600000$salt$hash",
        "$2b$12$abcdefghijklmnopqrstuuOaBcDeFgHiJkLmNoPqRsTuVwXyZ0123",  # bcrypt
        "scrypt$n=16384,r=8,p=1$!!!!$!!!!",  # not base64
        "scrypt$n=16384,r=8,p=1$c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5",  # salt too short
        "scrypt$n=1000,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$n=16777216,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        f" {GOOD_PARAMS}${ZERO_SALT}${ZERO_KEY}",  # leading space
        f"{GOOD_PARAMS}${ZERO_SALT}${ZERO_KEY[:36]}",  # key too short
        f"{GOOD_PARAMS}$AAAAAAAAAAAAAAAAAAAAAB==${ZERO_KEY}",  # non-canonical base64
    ],
)
def test_anything_that_is_not_our_hash_is_rejected(not_a_hash: str) -> None:
    with pytest.raises(PasswordHashError):
        verify_password(not_a_hash, not_a_hash)
    with pytest.raises(PasswordHashError):
        parse_password_hash(not_a_hash)


def test_rejection_never_echoes_what_may_be_a_password() -> None:
    with pytest.raises(PasswordHashError) as caught:
        parse_password_hash("hunter2")
    assert "hunter2" not in str(caught.value)


def test_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_unicode_passwords_are_normalised() -> None:
    stored = hash_password("Gr\u00fc\u00dfe")  # precomposed ü
    assert verify_password("Gru\u0308\u00dfe", stored)  # u + combining diaeresis

"""Password hashes for the `[[users]]` table (21 CFR 11: never stored as plain text).

In the domain because every side that verifies a person uses it: OPC UA and HTTP
logins, and (with electronic signatures) the ledger's own re-authentication.

Standard library only (`hashlib.scrypt`). A hash is one self-describing string,

    scrypt$n=16384,r=8,p=1$<salt, base64>$<key, base64>

so the cost parameters can be raised later without breaking the hashes already
in config files. `verify_password` accepts only strings of exactly this shape
(checked by `parse_password_hash`): a plain-text password pasted into the config
is an error, never something a login is compared against. A parsed
`PasswordHash` verifies by itself (`PasswordHash.verify`): what `users.User` holds.

Passwords are NFC-normalised and UTF-8 encoded before hashing, so the same
password typed on different systems gives the same key (RFC 8265, OpaqueString).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_N",
    "DEFAULT_P",
    "DEFAULT_R",
    "SCHEME",
    "PasswordHash",
    "PasswordHashError",
    "hash_password",
    "parse_password_hash",
    "verify_password",
]

SCHEME: Final = "scrypt"
DEFAULT_N: Final = 2**14  # CPU/memory cost: 16 MiB and about 50 ms per hash
DEFAULT_R: Final = 8
DEFAULT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32

# Bounds for hashes read back: generous enough for stronger settings later, tight
# enough that a crafted config cannot make every login burn gigabytes of memory.
_MAX_MEMORY: Final = 256 * 2**20
_MIN_N: Final = 2**10
_MAX_P: Final = 16

_HASH_RE: Final = re.compile(
    r"scrypt\$n=(?P<n>[0-9]{1,8}),r=(?P<r>[0-9]{1,3}),p=(?P<p>[0-9]{1,3})"
    r"\$(?P<salt>[A-Za-z0-9+/]+={0,2})\$(?P<key>[A-Za-z0-9+/]+={0,2})"
)


class PasswordHashError(ValueError):
    """Raised when a string is not a password hash made by `hash_password`."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed `scrypt$...` string: cost parameters, salt and derived key."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        key = base64.b64encode(self.key).decode("ascii")
        return f"{SCHEME}$n={self.n},r={self.r},p={self.p}${salt}${key}"

    def verify(self, password: str) -> bool:
        """Whether `password` derives this key (constant-time comparison).

        On the parsed hash so that whoever holds a user (OPC UA logins now, HTTP and
        e-signatures later) checks without parsing the config's string again.
        """
        candidate = _derive(password, self.salt, self.n, self.r, self.p, len(self.key))
        return hmac.compare_digest(candidate, self.key)


def hash_password(password: str) -> str:
    """A new hash of `password` with a fresh random salt (different every call)."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, DEFAULT_N, DEFAULT_R, DEFAULT_P, KEY_BYTES)
    return str(PasswordHash(DEFAULT_N, DEFAULT_R, DEFAULT_P, salt, key))


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches the hash `stored` (constant-time comparison).

    Raises PasswordHashError when `stored` is not a hash at all: that is a broken
    configuration, not a wrong password.
    """
    return parse_password_hash(stored).verify(password)


def parse_password_hash(stored: str) -> PasswordHash:
    """The parts of a `scrypt$n=..,r=..,p=..$salt$key` string, or PasswordHashError.

    The message never repeats the input: it may be a password typed in by mistake.
    """
    if not isinstance(stored, str):
        raise PasswordHashError("expected a password hash string")
    match = _HASH_RE.fullmatch(stored)
    if match is None:
        raise PasswordHashError(
            f"not a password hash (expected {SCHEME}$n=16384,r=8,p=1$<salt>$<hash>)"
        )
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < _MIN_N or n & (n - 1) != 0:
        raise PasswordHashError(f"scrypt n must be a power of two of at least {_MIN_N}")
    if r < 1 or not 1 <= p <= _MAX_P or 128 * n * r > _MAX_MEMORY:
        raise PasswordHashError("scrypt cost parameters out of range")
    salt, key = _base64(match["salt"]), _base64(match["key"])
    if len(salt) != SALT_BYTES or len(key) != KEY_BYTES:
        raise PasswordHashError(
            f"salt or hash has the wrong length ({SALT_BYTES} and {KEY_BYTES} bytes expected)"
        )
    return PasswordHash(n, r, p, salt, key)


def _base64(text: str) -> bytes:
    """Strict, canonical base64: what `hash_password` writes and nothing else."""
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise PasswordHashError("salt or hash is not valid base64") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise PasswordHashError("salt or hash is not valid base64")
    return data


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    # OpenSSL refuses above its 32 MiB default; allow what the parameters need.
    memory = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=memory, dklen=length)

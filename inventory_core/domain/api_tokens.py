"""API tokens for the Level-4 HTTP API: long random secrets, stored only as a hash.

A token is 32 random bytes (URL-safe base64, prefixed `invops_` so a leaked one is
recognisable in a scan); the config holds `sha256$<hex>` of it. A plain SHA-256 is
enough here, unlike for passwords (scrypt): a 256-bit random secret cannot be guessed
from its hash, and checking a bearer token must stay cheap on every request (a slow
hash would hand a flood of bad tokens the CPU). The comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from inventory_core.domain.users import Role

__all__ = ["TOKEN_PREFIX", "ApiToken", "hash_token", "new_token"]

TOKEN_PREFIX = "invops_"
_SCHEME = "sha256$"


def new_token() -> str:
    """A fresh token (shown once to its owner; only `hash_token` of it is kept)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """`sha256$<hex>` of `token`, as `[[api_tokens]] token_hash` holds it."""
    return _SCHEME + hashlib.sha256(token.encode()).hexdigest()


def is_token_hash(text: str) -> bool:
    digest = text.removeprefix(_SCHEME)
    return (
        text.startswith(_SCHEME)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One configured token: who it is (a name for the audit trail) and its role."""

    name: str
    role: Role
    token_hash: str = field(repr=False)

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(hash_token(token), self.token_hash)

"""The people who may change inventory: a name, an invops role and a password hash.

In the domain, not in an adapter, because the same users are checked by more than
one side: OPC UA logins now, HTTP Basic logins and the re-authentication of an
electronic signature (21 CFR 11) later. Each side gets these objects from the
composition root; none reads the config file's `[[users]]` table itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from inventory_core.domain.passwords import PasswordHash

__all__ = ["Role", "User"]


class Role(StrEnum):
    """invops user roles (SPEC §4 security), each granting everything below it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"

    def grants(self, required: str) -> bool:
        """Whether a user with this role may call a method requiring `required`."""
        order = list(Role)
        return order.index(self) >= order.index(Role(required))


@dataclass(frozen=True, slots=True)
class User:
    """One configured user. The password is held only as its parsed scrypt hash, so
    the plain text is never stored and a login costs no parsing."""

    name: str
    role: Role
    password: PasswordHash = field(repr=False)  # kept out of logs and error messages
    full_name: str = ""  # the printed name an electronic signature shows (21 CFR 11.50)

    @property
    def printed_name(self) -> str:
        return self.full_name or self.name

    def verify(self, password: str) -> bool:
        """Whether `password` is this user's (NFC-normalised, constant-time comparison).

        Costs one scrypt (about 50 ms): a server calls it off its event loop.
        """
        return self.password.verify(password)

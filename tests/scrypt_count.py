"""Counting password checks (scrypt runs) instead of timing them: an unknown user name
must cost one check as a known one does, so timing reveals no valid names."""

from __future__ import annotations

import pytest

from inventory_core.domain.passwords import PasswordHash


def count_password_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every `PasswordHash.verify` from now on appends its scrypt cost (n) to the list."""
    checked: list[int] = []
    real = PasswordHash.verify

    def counting(self: PasswordHash, password: str) -> bool:
        checked.append(self.n)
        return real(self, password)

    monkeypatch.setattr(PasswordHash, "verify", counting)
    return checked

"""HTTP Basic logins are throttled like OPC UA logins: repeated wrong passwords lock the
user name out (the right password too, without a scrypt), audited; a token caller and
another user are not held up. Real HTTP against the real app, real scrypt hashes."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from http_api import ApiAuth, create_app
from inventory_core import Ledger, open_ledger
from inventory_core.domain.api_tokens import ApiToken, hash_token
from inventory_core.domain.passwords import hash_password, parse_password_hash
from inventory_core.domain.users import Role, User
from inventory_core.logins import LoginSettings
from invops.http_server import HttpServer
from tests.scrypt_count import count_password_checks

TOKEN = "invops_login-test-token"
USERS = [
    User(name, Role.VIEWER, parse_password_hash(hash_password(f"right-{name}")))
    for name in ("erin", "otto")
]


REFUSED: list[str] = []  # what the metrics hooks were told, per test (cleared by `served`)
LOCKOUTS: list[str] = []


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Ledger]]:
    async with open_ledger(
        f"sqlite+aiosqlite:///{tmp_path}/l.db", writer_id="w", migrate=True
    ) as ledger:
        REFUSED.clear()
        LOCKOUTS.clear()
        settings = LoginSettings(max_failures=3, lockout_s=600, failure_delay_s=0)
        tokens = [ApiToken("bi", Role.VIEWER, hash_token(TOKEN))]
        auth = ApiAuth(
            USERS,
            tokens,
            anonymous_read=False,
            record=ledger.record_event,
            logins=settings,
            on_refused=REFUSED.append,
            on_lockout=LOCKOUTS.append,
        )
        try:
            async with HttpServer(create_app(ledger, auth), "127.0.0.1", 0, name="api") as server:
                yield f"http://127.0.0.1:{server.port}/api/v1/units", ledger
        finally:
            auth.close()


async def get(url: str, authorization: str) -> tuple[int, str]:
    def send() -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"Authorization": authorization})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, str(json.loads(exc.read()).get("detail"))

    return await asyncio.to_thread(send)


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


async def test_repeated_wrong_passwords_lock_the_name_out(served: tuple[str, Ledger]) -> None:
    url, ledger = served
    assert (await get(url, basic("erin", "right-erin")))[0] == 200
    for _ in range(3):
        assert await get(url, basic("erin", "guess")) == (401, "wrong user name or password")
    status, detail = await get(url, basic("erin", "right-erin"))
    assert status == 401 and "locked out" in detail
    assert (await get(url, basic("otto", "right-otto")))[0] == 200, "another user logs in"
    assert (await get(url, f"Bearer {TOKEN}"))[0] == 200, "a token is no login"
    lockouts = [r for _, r in await ledger.audit_records("api_login") if r.action == "lockout"]
    assert [(r.user, r.object_id) for r in lockouts] == [("erin", "erin")]
    # what the metrics count (invops_api_login_failures_total, invops_api_lockouts_total)
    assert REFUSED == ["bad_password"] * 3 + ["locked_out"]
    assert LOCKOUTS == ["user"]
    assert (await get(url, basic("nobody", "x")))[0] == 401
    assert REFUSED[-1] == "unknown_user"


async def test_an_unknown_name_costs_a_scrypt_as_a_known_one_does(
    served: tuple[str, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing does not tell which names exist: an unknown name's password is checked
    against a decoy hash (counted here, not timed)."""
    url, _ = served
    checked = count_password_checks(monkeypatch)
    assert (await get(url, basic("otto", "guess")))[0] == 401
    assert (await get(url, basic("nobody", "guess")))[0] == 401
    assert len(checked) == 2, "one scrypt each"
    assert REFUSED[-2:] == ["bad_password", "unknown_user"]

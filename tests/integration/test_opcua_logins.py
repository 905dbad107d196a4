"""Password logins under attack, against real asyncua servers and clients on 127.0.0.1
(issue 12, item 1): checks off the event loop, lockouts per user name and per address,
audited once per episode and counted.

Each test starts its own bare asyncua server set up through `opcua_server.security`
(as the invops server core plugs it in); time for lockouts comes from a manual clock,
so nothing waits for a lockout to run out.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from information_model import APPLICATION_URI
from inventory_core.domain.model import AuditEvent
from inventory_core.domain.passwords import PasswordHash, hash_password, parse_password_hash
from inventory_core.domain.users import Role, User
from inventory_core.logins import LoginSettings
from opcua_server import asyncua_patches
from opcua_server.security import (
    POLICY_TYPES,
    current_user,
    identity_tokens,
    secure_server_kwargs,
)
from opcua_server.settings import OpcuaSecurity

USERS = ("viewer", "operator", "engineer")
CLIENT_TIMEOUT_S = 15


@dataclass
class Recorder:
    """What the server reports: audit records, refused logins and lockouts (the metrics)."""

    audited: list[AuditEvent] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    lockouts: Counter[str] = field(default_factory=Counter)

    async def audit(self, event: AuditEvent) -> None:
        self.audited.append(event)

    def on_refused(self, reason: str) -> None:
        self.refused[reason] += 1

    def on_lockout(self, scope: str) -> None:
        self.lockouts[scope] += 1


class ManualClock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@dataclass
class LoginServer:
    url: str
    ns: int
    server: Server
    recorder: Recorder


@asynccontextmanager
async def _login_server(
    pki: Path,
    access: OpcuaSecurity,
    *,
    clock: Callable[[], float] | None = None,
    hooks: bool = True,
) -> AsyncIterator[LoginServer]:
    asyncua_patches.apply()
    recorder = Recorder()
    if hooks:
        kwargs = secure_server_kwargs(
            access,
            pki,
            audit=recorder.audit,
            on_login_refused=recorder.on_refused,
            on_lockout=recorder.on_lockout,
            clock=clock,
        )
    else:  # only what secure_server_kwargs always took
        kwargs = secure_server_kwargs(access, pki)
    server = Server(user_manager=kwargs["user_manager"])
    await server.init()
    server.disable_clock()
    server.set_endpoint("opc.tcp://127.0.0.1:0/invops")
    await server.set_application_uri(APPLICATION_URI)
    server.set_security_policy(
        kwargs["security_policies"], permission_ruleset=kwargs["permission_ruleset"]
    )
    await server.load_certificate(str(kwargs["certificate"]))
    await server.load_private_key(str(kwargs["private_key"]))
    server.set_identity_tokens(identity_tokens(access))
    ns = await server.register_namespace("urn:invops:test")
    test = await server.nodes.objects.add_object(ns, "Test")

    async def who_am_i(parent: ua.NodeId) -> list[ua.Variant]:
        name, role = current_user()
        return [ua.Variant(f"{name}:{role}", ua.VariantType.String)]

    await test.add_method(ns, "WhoAmI", who_am_i, [], [ua.VariantType.String])
    await test.add_variable(ns, "Level", 42.0, ua.VariantType.Double)
    try:
        async with server:
            assert server.bserver is not None
            url = f"opc.tcp://127.0.0.1:{server.bserver.port}/invops"
            yield LoginServer(url, ns, server, recorder)
    finally:
        close = getattr(kwargs["user_manager"], "close", None)
        if close is not None:
            close()


def _security(users: Sequence[User], **logins: Any) -> OpcuaSecurity:
    """Policy None allowed (plain clients), anonymous read, `logins` for LoginSettings."""
    return OpcuaSecurity(
        endpoint="opc.tcp://127.0.0.1:0/invops",
        allow_security_none=True,
        security_policies=tuple(POLICY_TYPES),
        anonymous="read",
        logins=LoginSettings(**logins),
        users=tuple(users),
    )


@pytest.fixture(scope="module")
def users() -> tuple[User, ...]:
    """One user per role, each with their role's name as password."""
    return tuple(_user(name) for name in USERS)


def _user(name: str) -> User:
    return User(name, Role(name), parse_password_hash(hash_password(name)))


async def _login(running: LoginServer, user: str, password: str) -> str | int:
    """'name:role' as the server's method handler sees it, or the refusal's status code."""
    client = Client(running.url, timeout=CLIENT_TIMEOUT_S)
    client.set_user(user)
    client.set_password(password)
    try:
        async with client:
            test = await client.nodes.objects.get_child([f"{running.ns}:Test"])
            answer = await test.call_method(f"{running.ns}:WhoAmI")
            assert isinstance(answer, str)
            return answer
    except UaStatusCodeError as exc:
        return int(exc.code)


DENIED = StatusCodes.BadUserAccessDenied


async def test_wrong_passwords_lock_the_user_out_even_for_the_right_password_until_it_ends(
    tmp_path: Path, users: tuple[User, ...]
) -> None:
    clock = ManualClock()
    access = _security(
        users,
        max_failures=3,
        source_max_failures=100,
        lockout_s=60,
        failure_delay_s=0.01,
    )
    async with _login_server(tmp_path / "pki", access, clock=clock) as running:
        assert await _login(running, "operator", "operator") == "operator:operator"
        for guess in ("a", "b", "c"):
            assert await _login(running, "operator", guess) == DENIED
        recorder = running.recorder
        assert recorder.lockouts == {"user": 1}
        # locked out: the right password is refused too, and checked not at all
        assert await _login(running, "operator", "operator") == DENIED
        assert await _login(running, "operator", "d") == DENIED
        assert recorder.refused["locked_out"] == 2
        assert recorder.refused["bad_password"] == 3
        # other users are not affected
        assert await _login(running, "engineer", "engineer") == "engineer:engineer"
        clock.now += 59
        assert await _login(running, "operator", "operator") == DENIED
        clock.now += 1.5
        assert await _login(running, "operator", "operator") == "operator:operator"
        # audited once, for the episode
        [lockout] = [e for e in recorder.audited if e.action == "lockout"]
        assert (lockout.user, lockout.object_type, lockout.object_id) == (
            "operator",
            "opcua_login",
            "user:operator",
        )
        assert lockout.details["failures"] == 3
        assert lockout.details["lockout_s"] == 60
        assert lockout.details["source"] == "127.0.0.1"
        assert recorder.lockouts == {"user": 1}


async def test_an_address_guessing_many_names_is_locked_out_for_every_name(
    tmp_path: Path, users: tuple[User, ...]
) -> None:
    clock = ManualClock()
    access = _security(
        users,
        max_failures=10,
        source_max_failures=4,
        lockout_s=30,
        failure_delay_s=0.01,
    )
    async with _login_server(tmp_path / "pki", access, clock=clock) as running:
        for name in ("root", "admin", "viewer", "scada"):
            assert await _login(running, name, "guess") == DENIED
        recorder = running.recorder
        assert recorder.lockouts == {"source": 1}
        assert recorder.refused == {"unknown_user": 3, "bad_password": 1}
        # engineer has no failures of its own, but this address is locked out
        assert await _login(running, "engineer", "engineer") == DENIED
        assert recorder.refused["locked_out"] == 1
        [lockout] = [e for e in recorder.audited if e.action == "lockout"]
        assert lockout.object_id == "source:127.0.0.1"
        # anonymous sessions need no password and are not held by a password lockout
        async with Client(running.url, timeout=CLIENT_TIMEOUT_S) as client:
            level = await client.nodes.objects.get_child(
                [f"{running.ns}:Test", f"{running.ns}:Level"]
            )
            assert await level.read_value() == 42.0
        clock.now += 31
        assert await _login(running, "engineer", "engineer") == "engineer:engineer"


SLOW_CHECK_S = 1.5  # a password check this slow (a costly hash, a busy machine)


async def test_a_flood_of_wrong_passwords_does_not_block_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 concurrent wrong-password logins, each check made slow (SLOW_CHECK_S on top of
    the real scrypt, as a costly hash on a busy machine would be): a probe task on the
    (shared) event loop keeps running, and every check ran in a thread of its own pool.
    Only the settings and API the server always had are used."""
    checked_in: list[str] = []
    verify = PasswordHash.verify

    def slow_verify(stored: PasswordHash, password: str) -> bool:
        checked_in.append(threading.current_thread().name)
        matches = verify(stored, password)
        time.sleep(SLOW_CHECK_S)  # blocks whichever thread runs it
        return matches

    monkeypatch.setattr(PasswordHash, "verify", slow_verify)
    access = _security([_user("operator")])
    async with _login_server(tmp_path / "pki", access, hooks=False) as running:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        gc.collect()
        gc.freeze()  # as the invops server does after start (REFERENCE 9.2: GC pauses)
        prober = asyncio.create_task(probe())
        try:
            results = await asyncio.gather(
                *(_login(running, "operator", f"guess-{n}") for n in range(32))
            )
        finally:
            stop.set()
            await prober
            gc.unfreeze()
        # generous: a check on the loop would stall it SLOW_CHECK_S; noise stays far below
        assert max(gaps) < SLOW_CHECK_S / 2, f"the event loop stalled for {max(gaps):.3f} s"
        assert results == [DENIED] * 32
        assert checked_in, "no password was checked"
        assert all(name.startswith("invops-login") for name in checked_in), set(checked_in)
        # the burst for one name was stopped by its lockout, not checked 32 times
        assert len(checked_in) <= LoginSettings().max_failures + 1

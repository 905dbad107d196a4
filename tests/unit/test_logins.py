"""inventory_core.logins: failure throttling per user name and address, lockouts, delays,
and the password checker's own bounded thread pool; the user manager's async path
(no sockets; a manual clock)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from inventory_core.domain.model import AuditEvent
from inventory_core.domain.passwords import PasswordHash, hash_password, parse_password_hash
from inventory_core.domain.users import Role, User
from inventory_core.logins import (
    CheckerBusy,
    LockoutScope,
    LoginSettings,
    LoginThrottle,
    PasswordChecker,
)
from opcua_server.asyncua_patches import Activation
from opcua_server.security import InvopsUser, InvopsUserManager

SETTINGS = LoginSettings(
    max_failures=3,
    source_max_failures=5,
    failure_window_s=100.0,
    lockout_s=10.0,
    lockout_max_s=35.0,
    failure_delay_s=0.5,
)


A = parse_password_hash(hash_password("a"))


def _user(name: str, password: str) -> User:
    return User(name, Role.OPERATOR, parse_password_hash(hash_password(password)))


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def throttle(clock: ManualClock) -> LoginThrottle:
    return LoginThrottle(SETTINGS, clock=clock)


def test_a_user_is_locked_out_after_max_failures_and_free_again_after_the_lockout(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    for _ in range(2):
        assert not throttle.failure("op", "10.0.0.1").lockouts
    assert throttle.locked("op", "10.0.0.1") is None
    outcome = throttle.failure("op", "10.0.0.2")  # the name counts, whatever the address
    [lockout] = outcome.lockouts
    assert (lockout.scope, lockout.key, lockout.failures) == (LockoutScope.USER, "op", 3)
    assert (lockout.duration_s, lockout.episode) == (10.0, 1)
    assert throttle.locked("op", "10.0.0.9") is LockoutScope.USER
    assert throttle.locked("other", "10.0.0.1") is None
    clock.now += 9.9
    assert throttle.locked("op", "10.0.0.1") is LockoutScope.USER
    clock.now += 0.2
    assert throttle.locked("op", "10.0.0.1") is None


def test_each_further_lockout_doubles_up_to_the_cap_and_a_quiet_spell_resets_it(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    durations = []
    for _ in range(4):
        for _ in range(3):
            outcome = throttle.failure("op", f"10.0.{len(durations)}.1")
        durations.append(outcome.lockouts[0].duration_s)
        clock.now += outcome.lockouts[0].duration_s
    assert durations == [10.0, 20.0, 35.0, 35.0]
    clock.now += 36.0  # longer than lockout_max_s without a lockout
    for _ in range(3):
        outcome = throttle.failure("op", "10.0.9.1")
    assert (outcome.lockouts[0].duration_s, outcome.lockouts[0].episode) == (10.0, 1)


def test_an_address_is_locked_out_whatever_names_it_tries(
    throttle: LoginThrottle,
) -> None:
    lockouts = [lo for n in range(5) for lo in throttle.failure(f"user{n}", "10.0.0.1").lockouts]
    assert [(lo.scope, lo.key) for lo in lockouts] == [(LockoutScope.SOURCE, "10.0.0.1")]
    assert throttle.locked("somebody", "10.0.0.1") is LockoutScope.SOURCE
    assert throttle.locked("somebody", "10.0.0.2") is None


def test_failures_older_than_the_window_no_longer_count(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    throttle.failure("op", "10.0.0.1")
    throttle.failure("op", "10.0.0.1")
    clock.now += 100.1
    assert throttle.recent_failures("op", "10.0.0.1") == (0, 0)
    assert not throttle.failure("op", "10.0.0.1").lockouts


def test_a_good_login_forgets_the_names_failures_but_not_the_addresss(
    throttle: LoginThrottle,
) -> None:
    throttle.failure("op", "10.0.0.1")
    throttle.failure("op", "10.0.0.1")
    throttle.success("op")
    assert throttle.recent_failures("op", "10.0.0.1") == (0, 2)
    assert not throttle.failure("op", "10.0.0.1").lockouts


def test_the_answer_to_a_failure_waits_longer_each_time_up_to_four_times_the_delay(
    throttle: LoginThrottle,
) -> None:
    delays = [throttle.failure(f"u{n % 2}", "10.0.0.1").delay_s for n in range(4)]
    assert delays == [0.5, 1.0, 2.0, 2.0]


def test_the_tables_stay_bounded_when_many_names_and_addresses_are_tried(
    clock: ManualClock,
) -> None:
    throttle = LoginThrottle(SETTINGS, clock=clock, max_tracked=50)
    for n in range(1000):
        throttle.failure(f"name-{n}", f"10.0.{n // 250}.{n % 250}")
    assert throttle.tracked() == (50, 50)


def test_settings_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="lockout_s"):
        LoginSettings(lockout_s=100.0, lockout_max_s=10.0)
    with pytest.raises(ValueError, match="max_failures"):
        LoginSettings(max_failures=0)


async def test_checks_run_in_the_checkers_own_threads_never_on_the_loop() -> None:
    threads: list[str] = []

    def verify(password: str, stored: PasswordHash) -> bool:
        threads.append(threading.current_thread().name)
        return stored.verify(password)

    checker = PasswordChecker(verify, concurrency=2, queue=4)
    try:
        await checker.acquire()
        try:
            assert await checker.verify("a", A) and not await checker.verify("b", A)
        finally:
            checker.release()
    finally:
        checker.close()
    assert threads and all(name.startswith("invops-login") for name in threads)
    assert threading.main_thread().name not in threads


async def test_attempts_beyond_the_slots_and_queue_are_refused_at_once() -> None:
    release = threading.Event()

    def verify(password: str, stored: PasswordHash) -> bool:
        release.wait(5)
        return False

    checker = PasswordChecker(verify, concurrency=1, queue=1)
    try:
        await checker.acquire()  # the one slot
        running = asyncio.ensure_future(checker.verify("x", A))
        queued = asyncio.ensure_future(checker.acquire())  # the one queue place
        await asyncio.sleep(0)
        assert checker.waiting == 1
        with pytest.raises(CheckerBusy):
            await checker.acquire()
        release.set()
        assert await running is False
        checker.release()
        await queued
        checker.release()
    finally:
        release.set()
        checker.close()


# --- the user manager's async path (no sockets: an Activation as the patch builds it) ----


def _activation(user: str | None, password: str | None) -> Activation:
    return Activation(user, password, b"client-cert", "10.0.0.5", "i=42")


async def test_authenticate_answers_users_with_their_session_and_address() -> None:
    manager = InvopsUserManager([_user("op", "op")], "read")
    try:
        user = await manager.authenticate(_activation("op", "op"))
        assert isinstance(user, InvopsUser)
        assert (user.identity, user.session, user.source) == (
            ("op", Role.OPERATOR),
            "i=42",
            "10.0.0.5",
        )
        anonymous = await manager.authenticate(_activation(None, None))
        assert isinstance(anonymous, InvopsUser) and anonymous.source == "10.0.0.5"
    finally:
        manager.close()


async def test_a_name_cut_to_the_audit_length_never_matches_a_user() -> None:
    long_name = "a" * 128
    audited: list[AuditEvent] = []

    async def audit(event: AuditEvent) -> None:
        audited.append(event)

    settings = LoginSettings(max_failures=1, failure_delay_s=0)
    manager = InvopsUserManager([_user(long_name, "pw")], "read", settings=settings, audit=audit)
    try:
        assert await manager.authenticate(_activation(long_name + "x" * 10_000, "pw")) is None
        [lockout] = audited
        assert lockout.user == long_name  # bounded in the trail, the log and the throttle
        assert manager.throttle.tracked() == (1, 1)
    finally:
        manager.close()


async def test_get_user_on_the_event_loop_without_a_checked_verdict_refuses() -> None:
    """Never a password hash on the loop: without the patched ActivateSession's verdict,
    a call from inside a running loop fails closed."""
    manager = InvopsUserManager([_user("op", "op")], "read")
    try:
        assert manager.get_user(None, username="op", password="op", certificate=b"c") is None
    finally:
        manager.close()


async def test_an_unknown_user_costs_one_check_against_one_decoy_and_is_refused() -> None:
    """Timing does not tell which names exist (counted here, not timed): even a check
    the decoy would pass refuses."""
    checked: list[PasswordHash] = []

    def verify(password: str, stored: PasswordHash) -> bool:
        checked.append(stored)
        return True

    checker = PasswordChecker(verify)
    try:
        assert await checker.verify("guess", None) is False
        assert await checker.verify("other", None) is False
        assert len(checked) == 2 and checked[0] is checked[1] is checker.decoy()
        known = parse_password_hash(hash_password("pw"))
        assert await checker.verify("pw", known) is True and checked[-1] is known
    finally:
        checker.close()

"""Password logins that neither stall the event loop nor invite guessing (issue 12, item 1).

Two pieces, used by the OPC UA server's logins (`opcua_server.security`) and by the
re-authentication of an electronic signature (`inventory_core.signing`); in the core
because both sides use them and adapters do not depend on each other:

- `PasswordChecker`: scrypt runs in a thread pool of its own (`invops-login-N`
  threads), never on the event loop and never in the loop's default executor
  (`asyncio.to_thread`), so logins share no budget with anything else. At most
  `concurrency` checks run at once (default 1: on a small machine a core stays
  free for the PLC pollers); at most `queue` more wait for a slot, and an attempt
  beyond that is refused at once (`busy`) instead of queueing without bound.
- `LoginThrottle`: failed logins counted per user name and per client address.
  `max_failures` failures of one name (`source_max_failures` from one address,
  whatever the names) within `failure_window_s` lock that name (address) out for
  `lockout_s`; each further lockout of the same key doubles it, up to
  `lockout_max_s` (after a quiet `lockout_max_s` it starts again from `lockout_s`).
  While locked out, a login is refused without checking the password (the right
  one too), costing no scrypt. A good login forgets the user name's failures, not
  the address's (an account of its own must not let a guesser reset it). The
  answer to a failed login waits `failure_delay_s`, doubled per recent failure,
  at most 4 x `failure_delay_s`: a guessing client slows down, the server spends
  nothing while it waits.

Both tables are bounded (`max_tracked` keys each, least recently seen forgotten
first), so guessing many names or addresses cannot grow memory without limit.
Time comes from an injected monotonic clock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from inventory_core.domain.passwords import PasswordHash, hash_password, parse_password_hash

__all__ = [
    "API_LOGIN_REFUSALS",
    "LOCKOUT_SCOPES",
    "LOGIN_REFUSALS",
    "CheckerBusy",
    "FailureOutcome",
    "Lockout",
    "LockoutScope",
    "LoginRefusal",
    "LoginSettings",
    "LoginThrottle",
    "PasswordChecker",
]

Clock = Callable[[], float]
DELAY_GROWTH_CAP: Final = 4  # the longest delay, in multiples of failure_delay_s
MAX_TRACKED: Final = 10_000


class LoginRefusal(StrEnum):
    """Why a session was not activated (label `reason` of invops_opcua_login_failures_total)."""

    BAD_PASSWORD = "bad_password"
    UNKNOWN_USER = "unknown_user"
    LOCKED_OUT = "locked_out"
    BUSY = "busy"
    UNSECURED_CHANNEL = "unsecured_channel"
    ANONYMOUS_OFF = "anonymous_off"


class LockoutScope(StrEnum):
    """What a lockout holds: one user name, or one client address."""

    USER = "user"
    SOURCE = "source"


LOGIN_REFUSALS: Final = tuple(r.value for r in LoginRefusal)
LOCKOUT_SCOPES: Final = tuple(s.value for s in LockoutScope)
# HTTP Basic has no secure-channel or anonymous-session refusals of its own.
API_LOGIN_REFUSALS: Final = tuple(
    r.value
    for r in LoginRefusal
    if r not in {LoginRefusal.UNSECURED_CHANNEL, LoginRefusal.ANONYMOUS_OFF}
)


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """The `[opcua] login_*` keys (see the module docstring)."""

    max_failures: int = 5
    source_max_failures: int = 20
    failure_window_s: float = 600.0
    lockout_s: float = 60.0
    lockout_max_s: float = 3600.0
    failure_delay_s: float = 0.5
    concurrency: int = 1
    queue: int = 16

    def __post_init__(self) -> None:
        if min(self.max_failures, self.source_max_failures, self.concurrency) < 1:
            raise ValueError("max_failures, source_max_failures and concurrency must be >= 1")
        if self.queue < 0 or self.failure_delay_s < 0:
            raise ValueError("queue and failure_delay_s must not be negative")
        if not 0 < self.lockout_s <= self.lockout_max_s or self.failure_window_s <= 0:
            raise ValueError("need 0 < lockout_s <= lockout_max_s and failure_window_s > 0")

    @property
    def max_delay_s(self) -> float:
        return self.failure_delay_s * DELAY_GROWTH_CAP


@dataclass(frozen=True, slots=True)
class Lockout:
    """A lockout that has just started (audited and logged once: one per episode)."""

    scope: LockoutScope
    key: str
    failures: int
    duration_s: float
    episode: int  # 1 for the first lockout of this key, 2 for the next (doubled), ...


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """What one failed login changed: recent failures per key, lockouts begun, the delay."""

    user_failures: int
    source_failures: int
    lockouts: tuple[Lockout, ...]
    delay_s: float


@dataclass(slots=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    lockouts: int = 0


class _Table:
    """Failure records of one scope, least recently seen first, at most `limit` keys."""

    def __init__(self, scope: LockoutScope, threshold: int, limit: int) -> None:
        self.scope = scope
        self.threshold = threshold
        self._limit = limit
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def locked(self, key: str, now: float) -> bool:
        record = self._records.get(key)
        return record is not None and record.locked_until > now

    def recent(self, key: str, now: float, window: float) -> int:
        record = self._records.get(key)
        if record is None:
            return 0
        _expire(record.failures, now - window)
        return len(record.failures)

    def fail(self, key: str, now: float, settings: LoginSettings) -> tuple[int, Lockout | None]:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
            self._evict()
        else:
            self._records.move_to_end(key)
        _expire(record.failures, now - settings.failure_window_s)
        record.failures.append(now)
        failures = len(record.failures)
        if failures < self.threshold:
            return failures, None
        if record.lockouts and now - record.locked_until > settings.lockout_max_s:
            record.lockouts = 0  # quiet for long enough: the next lockout is short again
        duration = min(settings.lockout_s * 2**record.lockouts, settings.lockout_max_s)
        record.lockouts += 1
        record.locked_until = now + duration
        record.failures.clear()
        return failures, Lockout(self.scope, key, failures, duration, record.lockouts)

    def forget(self, key: str) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)

    def _evict(self) -> None:
        while len(self._records) > self._limit:
            self._records.popitem(last=False)


def _expire(failures: deque[float], before: float) -> None:
    while failures and failures[0] <= before:
        failures.popleft()


class LoginThrottle:
    """Failed logins per user name and per client address; lockouts; delays (pure, no I/O)."""

    def __init__(
        self,
        settings: LoginSettings,
        *,
        clock: Clock = time.monotonic,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._users = _Table(LockoutScope.USER, settings.max_failures, max_tracked)
        self._sources = _Table(LockoutScope.SOURCE, settings.source_max_failures, max_tracked)

    def locked(self, user: str, source: str) -> LockoutScope | None:
        """Which lockout refuses a login of `user` from `source` now (None: may try)."""
        now = self._clock()
        if self._sources.locked(source, now):
            return LockoutScope.SOURCE
        if self._users.locked(user, now):
            return LockoutScope.USER
        return None

    def failure(self, user: str, source: str) -> FailureOutcome:
        """Count a failed login (wrong password or unknown name) of `user` from `source`."""
        now = self._clock()
        user_failures, user_lockout = self._users.fail(user, now, self.settings)
        source_failures, source_lockout = self._sources.fail(source, now, self.settings)
        lockouts = tuple(x for x in (user_lockout, source_lockout) if x is not None)
        recent = max(user_failures, source_failures)
        delay = self.settings.max_delay_s
        if not lockouts:
            delay = min(self.settings.failure_delay_s * 2 ** (recent - 1), delay)
        return FailureOutcome(user_failures, source_failures, lockouts, delay)

    def success(self, user: str) -> None:
        """A good login: the user name's failures and lockout history are forgotten."""
        self._users.forget(user)

    def recent_failures(self, user: str, source: str) -> tuple[int, int]:
        """(failures of `user`, failures from `source`) still counting (tests, logs)."""
        now, window = self._clock(), self.settings.failure_window_s
        return self._users.recent(user, now, window), self._sources.recent(source, now, window)

    def tracked(self) -> tuple[int, int]:
        """(user names, addresses) with a record: bounded by `max_tracked` each."""
        return len(self._users), len(self._sources)


class CheckerBusy(Exception):
    """Raised by `PasswordChecker.acquire` when every slot is taken and the queue is full."""


def _verify_hash(password: str, stored: PasswordHash) -> bool:
    return stored.verify(password)


class PasswordChecker:
    """Runs password checks in a dedicated thread pool with bounded concurrency and queue.

    Use as: `await checker.acquire()` (CheckerBusy when full), then `await
    checker.verify(...)` any number of times, then `checker.release()` in a
    `finally`. Holding the slot across "is it locked? / verify / count" keeps the
    throttle's view current: with one slot, a burst of guesses for one name is
    checked one by one and the lockout stops the rest before any scrypt.

    A check is `PasswordHash.verify` unless `verify` replaces it (tests). An unknown
    user name is checked against a decoy hash: it costs the same scrypt as a known one,
    so the time an answer takes does not reveal which names are valid.
    """

    def __init__(
        self,
        verify: Callable[[str, PasswordHash], bool] = _verify_hash,
        *,
        concurrency: int = 1,
        queue: int = 16,
    ) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self._verify = verify
        self._slots = asyncio.Semaphore(concurrency)
        self._queue = queue
        self._waiting = 0
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="invops-login"
        )
        self._decoy: PasswordHash | None = None

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> None:
        if self._slots.locked() and self._waiting >= self._queue:
            raise CheckerBusy("every password check slot is taken and the queue is full")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._slots.release()

    def decoy(self) -> PasswordHash:
        """The hash of a random password, made once (a scrypt itself)."""
        if self._decoy is None:
            self._decoy = parse_password_hash(hash_password(secrets.token_urlsafe(16)))
        return self._decoy

    async def verify(self, password: str, stored: PasswordHash | None) -> bool:
        """Whether `password` matches `stored`, checked in the checker's own threads.
        None (an unknown user): checked against the decoy, and False."""
        loop = asyncio.get_running_loop()
        if stored is None:
            decoy = await loop.run_in_executor(self._executor, self.decoy)
            await loop.run_in_executor(self._executor, self._verify, password, decoy)
            return False
        return await loop.run_in_executor(self._executor, self._verify, password, stored)

    def close(self) -> None:
        """Stop the threads (a check already running finishes first)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

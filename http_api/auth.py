"""Who is calling: HTTP Basic with the `[[users]]` of the OPC UA side, or a bearer
token of `[[api_tokens]]`; the same four roles. Anonymous callers may read only where
the config allows it (`[api] anonymous = "read"`).

Basic logins are throttled like OPC UA logins (`[opcua] login_*`): repeated failures of a
user name or from a client address lock it out for a while, each answer to a failed login
waits a little longer, and scrypt runs in threads of its own, a bounded number at once.

A refusal (401 without or with wrong credentials, 403 for a missing role) is audited
like a denied OPC UA call, at most `AUDITS_PER_MINUTE` per caller and reason so that
a flood of bad requests cannot flood the audit trail (the rest are counted in the log).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from inventory_core.domain.api_tokens import ApiToken
from inventory_core.domain.model import AuditEvent
from inventory_core.domain.users import Role, User
from inventory_core.log import get_logger
from inventory_core.logins import (
    CheckerBusy,
    LoginRefusal,
    LoginSettings,
    LoginThrottle,
    PasswordChecker,
)

__all__ = ["ANONYMOUS", "SECURITY_SCHEMES", "ApiAuth", "LoginsBusy", "Principal", "security"]

log = get_logger(__name__)

AUDITS_PER_MINUTE: Final = 10
ANONYMOUS: Final = "anonymous"
# The OpenAPI document's security schemes (components.securitySchemes).
SECURITY_SCHEMES: Final[dict[str, dict[str, Any]]] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an `[[api_tokens]]` token"},
    "basic": {"type": "http", "scheme": "basic", "description": "a `[[users]]` account"},
}


def security(required: Role, *, anonymous_read: bool) -> list[dict[str, list[str]]]:
    """An operation's OpenAPI `security`: a token or Basic, or nothing for a read where
    anonymous reading is allowed."""
    schemes: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}]
    return [*schemes, {}] if anonymous_read and required is Role.VIEWER else schemes


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller (or the anonymous reader): the name the audit trail keeps."""

    name: str
    role: Role
    via: str  # "basic", "token" or "anonymous"


class Unauthenticated(Exception):
    """No usable credentials (401)."""


class LoginsBusy(Exception):
    """Every password check slot and queue place is taken (503: try again)."""


class ApiAuth:
    """Checks credentials; `record` writes the audit event of a refusal."""

    def __init__(
        self,
        users: Sequence[User],
        tokens: Sequence[ApiToken],
        *,
        anonymous_read: bool,
        record: Callable[[AuditEvent], Awaitable[None]] | None = None,
        logins: LoginSettings | None = None,
        on_refused: Callable[[str], None] | None = None,
        on_lockout: Callable[[str], None] | None = None,
    ) -> None:
        self._users = {u.name: u for u in users}
        self._tokens = tuple(tokens)
        self.anonymous_read = anonymous_read
        self._record = record
        self._audited: dict[tuple[str, str], tuple[float, int]] = {}
        # Basic logins are throttled as OPC UA logins are (inventory_core.logins): failures
        # per user name and client address lock them out; scrypt runs in its own threads.
        self.logins = logins or LoginSettings()
        self._throttle = LoginThrottle(self.logins)
        self._checker: PasswordChecker | None = None
        # metrics hooks: a refused Basic login (a LoginRefusal value), a lockout begun (scope)
        self._on_refused = on_refused or (lambda reason: None)
        self._on_lockout = on_lockout or (lambda scope: None)

    def close(self) -> None:
        if self._checker is not None:
            self._checker.close()

    async def principal(self, authorization: str | None, client: str = "") -> Principal | None:
        """The caller of a request with this Authorization header from `client` (its
        address; None: anonymous); Unauthenticated for credentials that are malformed,
        wrong, or locked out after repeated failures."""
        if not authorization:
            return None
        scheme, credentials = _scheme(authorization)
        if scheme == "bearer" and credentials:
            found = self._token(credentials)
            if found is None:
                raise Unauthenticated("unknown API token")
            return found
        if scheme == "basic" and credentials:
            try:
                name, colon, password = (
                    base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthenticated("malformed Basic credentials") from None
            if not colon:
                raise Unauthenticated("malformed Basic credentials")
            return await self._basic(name, password, client)
        raise Unauthenticated("use Authorization: Bearer TOKEN or Basic")

    def bearer(self, authorization: str) -> Principal | None:
        """The caller a `Bearer` header names by a known token, else None: no audit, no
        throttle, nothing awaited (what http_api.posting_lane asks before it serves)."""
        scheme, credentials = _scheme(authorization)
        return self._token(credentials) if scheme == "bearer" and credentials else None

    def _token(self, credentials: str) -> Principal | None:
        for token in self._tokens:
            if token.matches(credentials):
                return Principal(token.name, token.role, "token")
        return None

    async def _basic(self, name: str, password: str, client: str) -> Principal:
        if self._throttle.locked(name, client) is not None:  # refused unchecked: no scrypt
            self._on_refused(LoginRefusal.LOCKED_OUT)
            raise Unauthenticated("locked out after repeated failed logins; try again later")
        user = self._users.get(name)
        if self._checker is None:
            self._checker = PasswordChecker(
                concurrency=self.logins.concurrency, queue=self.logins.queue
            )
        try:
            await self._checker.acquire()
        except CheckerBusy:
            self._on_refused(LoginRefusal.BUSY)
            raise LoginsBusy("too many logins are being checked; try again") from None
        try:
            good = await self._checker.verify(password, user.password if user else None)
        finally:
            self._checker.release()
        if user is None or not good:
            self._on_refused(
                LoginRefusal.UNKNOWN_USER if user is None else LoginRefusal.BAD_PASSWORD
            )
            failed = self._throttle.failure(name, client)
            for lockout in failed.lockouts:
                self._on_lockout(str(lockout.scope))
                log.warning("api_lockout", scope=str(lockout.scope), key=lockout.key[:128],
                            duration_s=lockout.duration_s)  # fmt: skip
                if self._record is not None:
                    await self._record(
                        AuditEvent(
                            user=name[:128] or ANONYMOUS,
                            action="lockout",
                            object_type="api_login",
                            object_id=lockout.key[:128],
                            reason=f"{lockout.scope} locked out for {lockout.duration_s:g} s "
                            f"after {lockout.failures} failed logins",
                        )
                    )
            await asyncio.sleep(failed.delay_s)  # a guesser slows down; nothing waits on it
            raise Unauthenticated("wrong user name or password")
        self._throttle.success(name)
        return Principal(user.name, user.role, "basic")

    async def denied(self, who: str, route: str, reason: str, status: int) -> None:
        """Audit a refused request (rate-limited per caller and reason)."""
        now = time.monotonic()
        key = (who, reason)
        start, count = self._audited.get(key, (now, 0))
        if now - start >= 60:
            start, count = now, 0
        self._audited[key] = (start, count + 1)
        if len(self._audited) > 10_000:  # many distinct callers: forget the old windows
            self._audited = {k: v for k, v in self._audited.items() if now - v[0] < 60}
        if count >= AUDITS_PER_MINUTE or self._record is None:
            log.info("api_denied_not_audited", user=who, route=route, reason=reason)
            return
        log.warning("api_denied", user=who, route=route, reason=reason, status=status)
        await self._record(
            AuditEvent(
                user=who[:128] or ANONYMOUS,
                action="denied",
                object_type="api_route",
                object_id=route,
                reason=reason,
                details={"status": status},
            )
        )


def _scheme(authorization: str) -> tuple[str, str]:
    """An Authorization header's scheme (lower case) and its credentials."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return scheme.lower(), credentials.strip()

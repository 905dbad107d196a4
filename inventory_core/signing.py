"""Signing a pending request: re-authentication, lockout, audit (21 CFR 11.200, 11.300).

Every interface (CLI, OPC UA, HTTP API) signs through this one service, so the rules
are the same everywhere: the signer gives user name and password again, even inside
an authenticated session; the password is checked off the event loop (scrypt in the
checker's own threads, `inventory_core.logins`). Every failed attempt is an audit
record (`signature-failed`), and the lockout is read from those records: a name with
`max_failures` failures within `failure_window_s` is locked out until `lockout_s`
after its last one (the `[opcua] login_*` settings). Kept in the ledger, the count
holds across restarts and across every process and interface signing on it, the CLI
included. Attempts and lockouts are also reported to `on_attempt` / `on_lockout` (the
metrics). The ledger then checks who may sign what (role, meaning, second person)
inside its transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from inventory_core.clock import Clock, SystemClock, format_timestamp, parse_timestamp
from inventory_core.domain.errors import (
    LedgerUnavailable,
    SignatureRefused,
    ValidationError,
)
from inventory_core.domain.model import AuditEvent, Source
from inventory_core.domain.signatures import REQUEST_PREFIX, Decision, SignRequest
from inventory_core.domain.signing_rules import SignOutcome
from inventory_core.domain.text import check_identifier
from inventory_core.domain.users import User
from inventory_core.ledger import Ledger
from inventory_core.log import get_logger
from inventory_core.logins import CheckerBusy, LoginSettings, PasswordChecker

__all__ = ["MAX_PASSWORD_CHARS", "SIGNING_OUTCOMES", "SigningBusy", "SigningService"]

log = get_logger(__name__)

# Label values of invops_signature_attempts_total{outcome}.
SIGNING_OUTCOMES = ("signed", "bad_password", "locked_out", "busy", "refused")
WRONG = "wrong user name or password"
MAX_PASSWORD_CHARS = 1024  # a longer one is refused before it is hashed


class SigningBusy(LedgerUnavailable):
    """Every password check slot is taken and the queue is full: try again (a 503 /
    Bad_ResourceUnavailable, not a refused signature)."""


class SigningService:
    """Re-authenticates a signer and records the signature in the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        users: Sequence[User],
        settings: LoginSettings | None = None,
        *,
        on_attempt: Callable[[str], None] | None = None,
        on_lockout: Callable[[str], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._ledger = ledger
        self._users = {u.name: u for u in users}
        self.settings = settings or LoginSettings()
        self._clock = clock or SystemClock()
        self._checker = PasswordChecker(
            concurrency=self.settings.concurrency, queue=self.settings.queue
        )
        self._on_attempt = on_attempt or (lambda outcome: None)
        self._on_lockout = on_lockout or (lambda scope: None)

    def close(self) -> None:
        self._checker.close()

    async def approve(
        self,
        request_id: str,
        user_name: str,
        password: str,
        meaning: str,
        *,
        source: Source = Source.MANUAL,
    ) -> SignOutcome:
        return await self._sign(
            request_id, Decision.APPROVED, user_name, password, source, meaning=meaning
        )

    async def reject(
        self,
        request_id: str,
        user_name: str,
        password: str,
        reason: str,
        *,
        source: Source = Source.MANUAL,
    ) -> SignOutcome:
        return await self._sign(
            request_id, Decision.REJECTED, user_name, password, source, reason=reason
        )

    async def _sign(
        self,
        request_id: str,
        decision: Decision,
        user_name: str,
        password: str,
        source: Source,
        *,
        meaning: str = "",
        reason: str = "",
    ) -> SignOutcome:
        user = await self._authenticate(request_id, user_name, password)
        request = SignRequest(
            request_id,
            decision,
            user.name,
            user.role,
            user.printed_name,
            meaning=meaning,
            reason=reason,
            source=source,
        )
        try:
            outcome = await self._ledger.sign(request)
        except SignatureRefused:
            self._on_attempt("refused")
            raise
        self._on_attempt("signed")
        return outcome

    async def _authenticate(self, request_id: str, user_name: str, password: str) -> User:
        # The names go to the audit trail and the log: checked as every name is, first.
        check_identifier("request", request_id.removeprefix(REQUEST_PREFIX))
        check_identifier("user", user_name)
        if len(password) > MAX_PASSWORD_CHARS:
            raise ValidationError(f"a password has at most {MAX_PASSWORD_CHARS} characters")
        now = self._clock.now()
        failures = await self._failures(user_name, now)
        lockout = timedelta(seconds=self.settings.lockout_s)
        if len(failures) >= self.settings.max_failures and now - failures[-1] < lockout:
            until = format_timestamp(failures[-1] + lockout)
            self._on_attempt("locked_out")
            log.info("signature_locked_out", user=user_name, request=request_id, until=until)
            await self._audit(
                request_id, user_name, "signature-locked-out", f"locked out until {until}"
            )
            raise SignatureRefused(
                f"{user_name} is locked out after {len(failures)} failed signatures until {until}"
            )
        try:
            await self._checker.acquire()
        except CheckerBusy:
            self._on_attempt("busy")
            raise SigningBusy("too many signatures are being checked; try again") from None
        try:
            user = self._users.get(user_name)
            good = await self._checker.verify(password, user.password if user else None)
        finally:
            self._checker.release()
        if user is not None and good:
            return user
        self._on_attempt("bad_password")
        log.info("signature_failed", user=user_name, request=request_id)
        await self._audit(request_id, user_name, "signature-failed", WRONG)
        if len(failures) + 1 == self.settings.max_failures:
            self._on_lockout("user")
            await self._audit(
                request_id, user_name, "lockout",
                f"locked out for {self.settings.lockout_s:g} s after "
                f"{self.settings.max_failures} failed signatures",
            )  # fmt: skip
        raise SignatureRefused(WRONG)

    async def _failures(self, user_name: str, now: datetime) -> list[datetime]:
        """When `user_name` failed to sign within the failure window, oldest first."""
        since = now - timedelta(seconds=self.settings.failure_window_s)
        records = await self._ledger.audit_records(
            user=user_name[:128] or "unknown", since_time=format_timestamp(since)
        )
        return [parse_timestamp(r.timestamp) for _, r in records if r.action == "signature-failed"]

    async def _audit(self, request_id: str, user: str, action: str, reason: str) -> None:
        await self._ledger.record_event(
            AuditEvent(
                user=user[:128] or "unknown",
                action=action,
                object_type="request",
                object_id=request_id[:200],
                reason=reason,
            )
        )

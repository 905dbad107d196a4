"""OPC UA security for the invops server: certificates, users, roles, permissions.

What the server core plugs in (see `secure_server_kwargs`), all made from one
`settings.OpcuaSecurity` (built by `invops.wiring.opcua_security`; this module
reads no config):

- `ensure_certificate`: the server's own self-signed certificate and key, made
  on first start in the PKI directory (SubjectAltName URI = application URI)
  and reused afterwards; `trusted/` holds the client certificates an
  administrator accepts (`client_certificate_validator`).
- `InvopsUserManager`: user name + password checked against the configured
  users (`inventory_core.domain.users.User`, each with its scrypt hash), off the
  event loop and throttled (`logins`); anonymous sessions only when
  anonymous is "read".
- `InvopsPermissionRuleset`: per request type. Browse, read, subscribe, history
  read and method calls are allowed; every client write (Write, HistoryUpdate,
  AddNodes, DeleteNodes, Add/DeleteReferences) is refused with
  Bad_UserAccessDenied for every user, admin included.
- `current_user()`: who is calling, for method handlers; `current_session()`:
  from which session and client address.

How a method handler learns its caller (asyncua 2.1.0): method callbacks get
only `(parent_nodeid, *arguments)`, no session. But one asyncio task per client
connection (`BinaryServer._process_received_message_loop`) runs each request
start to finish: `UaProcessor._process_message` calls the ruleset's
`check_validity(session.user, request_type, body)` and then, in the same task
and with no task or thread hop in between, `InternalSession.call` ->
`MethodService._call` -> `await handler(parent, *args)`. `check_validity` sets
a ContextVar; the handler, running in that task's context, reads it through
`current_user()`. Every request after ActivateSession (Call included) goes
through `check_validity` first — only Create/Activate/CloseSession,
GetEndpoints, FindServers and RegisterServer skip it — so the value is always
that of the request being served, and other connections (other tasks, other
contexts) never see it. This needs the ruleset on the channel's security
policy, i.e. `set_security_policy(..., permission_ruleset=...)`; a channel
without it gets no session (see InvopsUserManager). The handler MUST be
`async def` (with or without `@uamethod`): asyncua runs plain functions in a
thread pool through `run_in_executor`, which does not copy the context, so
there `current_user()` answers the anonymous default (fails closed: a viewer
may post nothing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypedDict
from urllib.parse import urlparse

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import SimpleRoleRuleset, UserRole
from asyncua.crypto.permission_rules import User as UaUser
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.status_codes import StatusCodes, get_name_and_doc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from information_model.isa95 import APPLICATION_URI
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.model import AuditEvent
from inventory_core.domain.users import Role, User
from inventory_core.log import get_logger
from inventory_core.logins import (
    CheckerBusy,
    FailureOutcome,
    Lockout,
    LoginRefusal,
    LoginSettings,
    LoginThrottle,
    PasswordChecker,
)
from opcua_server import asyncua_patches
from opcua_server.settings import OpcuaSecurity

__all__ = [
    "ANONYMOUS",
    "CERTIFICATE_FILE",
    "POLICY_TYPES",
    "PRIVATE_KEY_FILE",
    "TRUSTED_DIR",
    "ClientCertificateValidator",
    "InvopsPermissionRuleset",
    "InvopsUser",
    "InvopsUserManager",
    "SecureServerKwargs",
    "SecuritySetupError",
    "acting_as",
    "client_certificate_validator",
    "current_session",
    "current_user",
    "ensure_certificate",
    "identity_tokens",
    "secure_server_kwargs",
    "security_policies",
]

log = get_logger(__name__)

CERTIFICATE_FILE: Final = "server_cert.der"
PRIVATE_KEY_FILE: Final = "server_key.pem"
TRUSTED_DIR: Final = "trusted"
CERTIFICATE_DAYS: Final = 5 * 365
ANONYMOUS_NAME: Final = "anonymous"
ANONYMOUS: Final[tuple[str, Role]] = (ANONYMOUS_NAME, Role.VIEWER)

# Config policy name -> asyncua endpoint (policy + message security mode).
POLICY_TYPES: Final[Mapping[str, ua.SecurityPolicyType]] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes256_Sha256_RsaPss_Sign": ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    "Aes256_Sha256_RsaPss_SignAndEncrypt": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}
# The signing/encrypting ones, in that order: what a server with a key offers by default.
SECURE_POLICY_TYPES: Final[tuple[ua.SecurityPolicyType, ...]] = tuple(
    t for t in POLICY_TYPES.values() if t is not ua.SecurityPolicyType.NoSecurity
)
_ANONYMOUS_MODES: Final = ("read", "off")


class SecuritySetupError(Exception):
    """Raised when the PKI directory or the user table cannot be used as configured."""


AuditSink = Callable[[AuditEvent], Awaitable[None]]
"""Where security events go (`Ledger.record_event`)."""


# --------------------------------------------------------------------------- current user

_CURRENT_USER: ContextVar[tuple[str, Role]] = ContextVar("invops_opcua_user", default=ANONYMOUS)
_CURRENT_SESSION: ContextVar[tuple[str, str]] = ContextVar("invops_opcua_session", default=("", ""))


def current_user() -> tuple[str, Role]:
    """(user name, invops role) of the OPC UA request being served.

    Valid inside an `async def` method handler (see the module docstring); the
    role is a `Role`, which is also a plain `str` ("operator"). Anywhere else,
    including sync handlers, it is ("anonymous", Role.VIEWER).
    """
    return _CURRENT_USER.get()


def current_session() -> tuple[str, str]:
    """(session id, client address) of the OPC UA request being served, e.g.
    ("i=12", "10.0.0.7"); ("", "") outside a request (valid where `current_user` is)."""
    return _CURRENT_SESSION.get()


@contextlib.contextmanager
def acting_as(name: str, role: Role | str) -> Iterator[None]:
    """Run a block as if `name` with `role` had sent the request (tests, server-side calls)."""
    token = _CURRENT_USER.set((name, Role(role)))
    try:
        yield
    finally:
        _CURRENT_USER.reset(token)


# --------------------------------------------------------------------------- users


@dataclass
class InvopsUser(UaUser):
    """An asyncua User that also carries the invops role and a printable name.

    asyncua knows only Admin, User and Anonymous; its Admin role would bypass the
    variables' write masks and allow AddNodes/DeleteNodes inside asyncua, which no
    invops role may do. So every logged-in user, admin too, is a UserRole.User
    to asyncua, and what they may post is decided from `invops_role`.
    """

    invops_role: Role = Role.VIEWER
    session: str = ""  # the session's NodeId as text, "" when not known
    source: str = ""  # the client's address, "" when not known

    @property
    def identity(self) -> tuple[str, Role]:
        return (self.name or ANONYMOUS_NAME, self.invops_role)


def _anonymous_mode(anonymous: str) -> str:
    mode = str(anonymous)
    if mode not in _ANONYMOUS_MODES:
        raise SecuritySetupError(f"anonymous must be 'read' or 'off' (got {anonymous!r})")
    return mode


class InvopsUserManager(UserManager):
    """asyncua user manager: the configured users (names unique), anonymous per config.

    In the server, logins go through `authenticate` (awaited by the patched
    ActivateSession, `asyncua_patches`): the password is checked in the
    `PasswordChecker`'s own threads, never on the event loop, and failures are
    throttled by a `LoginThrottle` (delays, lockouts per user name and per client
    address; see `logins`). A lockout is logged, counted and audited once, when it
    starts. `get_user` (what asyncua calls, synchronously) then only answers the
    verdict. Called directly outside an event loop (tests, tools), `get_user`
    checks by itself; inside a running loop without a verdict it refuses, so a
    password is never hashed on the loop.

    `get_user`/`authenticate` answer None to refuse; asyncua then fails
    ActivateSession with Bad_UserAccessDenied.

    `allow_security_none=False` (the default) also refuses every session on an
    unsecured channel. asyncua 2.1.0 always accepts a None secure channel (for
    GetEndpoints) and, when None is not among the configured policies, keeps a
    SecurityPolicyNone *without* the permission ruleset on it and lets
    CreateSession/ActivateSession through: a client that ignores the endpoint
    list could read without security. Such a channel has no client certificate,
    which every Sign/SignAndEncrypt channel must have, and asyncua hands that
    certificate to `get_user`: no certificate, no session.
    """

    def __init__(
        self,
        users: Sequence[User],
        anonymous: str,
        *,
        allow_security_none: bool = False,
        settings: LoginSettings | None = None,
        audit: AuditSink | None = None,
        on_refused: Callable[[str], None] | None = None,
        on_lockout: Callable[[str], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._anonymous = _anonymous_mode(anonymous)
        self._allow_security_none = allow_security_none
        self._users: dict[str, User] = {}
        for user in users:
            if user.name in self._users:
                raise SecuritySetupError(f"user {user.name!r} is listed twice")
            self._users[user.name] = user
        self.settings = settings or LoginSettings()
        self.throttle = (
            LoginThrottle(self.settings)
            if clock is None
            else LoginThrottle(self.settings, clock=clock)
        )
        self._checker = PasswordChecker(
            concurrency=self.settings.concurrency, queue=self.settings.queue
        )
        self._audit = audit
        self._on_refused = on_refused
        self._on_lockout = on_lockout

    def close(self) -> None:
        """Stop the password-check threads."""
        self._checker.close()

    # -- the server's path: awaited by the patched ActivateSession ---------------------

    async def authenticate(self, activation: asyncua_patches.Activation) -> UaUser | None:
        """The user for this activation, or None to refuse (see the class docstring)."""
        username, source = _bounded(activation.username), activation.source
        exact = username == activation.username  # a cut name is nobody's: never a match
        refusal = self._channel_refusal(username, activation.certificate)
        if refusal is not None:
            self._refused(refusal, username, source)
            return None
        if username is None:
            return self._anonymous_user(activation.session_id, source)
        password = activation.password or ""
        if self.throttle.locked(username, source) is not None:
            await self._locked_out(username, source)
            return None
        try:
            await self._checker.acquire()
        except CheckerBusy:
            self._refused(LoginRefusal.BUSY, username, source)
            await asyncio.sleep(self.settings.failure_delay_s)
            return None
        try:
            # Looked at again: attempts queued behind the one that locked it out stop here.
            locked = self.throttle.locked(username, source) is not None
            outcome = None if locked else await self._verify(username, password, source, exact)
        finally:
            self._checker.release()
        if locked:
            await self._locked_out(username, source)
            return None
        if outcome is None:
            return self._user(username, activation.session_id, source)
        await self._failed(username, source, outcome)
        await asyncio.sleep(outcome.delay_s)
        return None

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> UaUser | None:
        checked, verdict = asyncua_patches.checked_login(username, password)
        if checked:
            return verdict if isinstance(verdict, UaUser) else None
        if _loop_running():
            log.error(
                "opcua_login_refused",
                user=username or ANONYMOUS_NAME,
                reason="not_checked_off_loop",
            )
            return None
        # Called directly, outside an event loop: the same rules, checked here.
        refusal = self._channel_refusal(username, certificate)
        if refusal is not None:
            self._refused(refusal, username, "")
            return None
        if username is None:
            return self._anonymous_user("", "")
        if self.throttle.locked(username, "") is not None:
            self._refused(LoginRefusal.LOCKED_OUT, username, "")
            return None
        user = self._users.get(username)
        # an unknown name costs the same scrypt: timing does not reveal valid names
        matches = (user.password if user else self._checker.decoy()).verify(password or "")
        outcome = self._judge(username, "", user is not None and matches)
        if outcome is None:
            return self._user(username, "", "")
        self._refused(_failure_reason(user is not None), username, "")
        for lockout in outcome.lockouts:
            self._lockout_started(lockout, username, "")
        return None

    # -- pieces ---------------------------------------------------------------------

    def _channel_refusal(self, username: str | None, certificate: Any) -> LoginRefusal | None:
        # `certificate` is the secure channel's client certificate for every token
        # type (b"" on a None channel), so it says whether the channel is secured,
        # not who the user is; only the name does.
        if not certificate and not self._allow_security_none:
            return LoginRefusal.UNSECURED_CHANNEL
        if username is None and self._anonymous == "off":
            return LoginRefusal.ANONYMOUS_OFF
        return None

    def _anonymous_user(self, session: str, source: str) -> InvopsUser:
        return InvopsUser(
            role=UserRole.Anonymous, name=ANONYMOUS_NAME, session=session, source=source
        )

    def _user(self, username: str, session: str, source: str) -> InvopsUser:
        role = self._users[username].role
        log.info("opcua_login", user=username, role=role, source=source or "-")
        return InvopsUser(
            role=UserRole.User,
            name=username,
            invops_role=role,
            session=session,
            source=source,
        )

    async def _verify(
        self, username: str, password: str, source: str, exact: bool
    ) -> FailureOutcome | None:
        """Check the password in the checker's threads (slot held): None when it is right."""
        user = self._users.get(username) if exact else None
        matches = await self._checker.verify(password, user.password if user else None)
        return self._judge(username, source, user is not None and matches)

    def _judge(self, username: str, source: str, good: bool) -> FailureOutcome | None:
        """Count the result of a checked password: None for a good one."""
        if good:
            self.throttle.success(username)
            return None
        return self.throttle.failure(username, source)

    async def _failed(self, username: str, source: str, outcome: FailureOutcome) -> None:
        known = username in self._users
        first = outcome.user_failures == 1 or outcome.source_failures == 1
        # The first failure of an episode is a security event; repeats until the
        # lockout are DEBUG (STYLE 7: the lockout itself is logged once, below).
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "opcua_login_failed",
            user=username,
            source=source or "-",
            reason=_failure_reason(known).value,
            failures=outcome.user_failures,
        )
        self._count(_failure_reason(known))
        for lockout in outcome.lockouts:
            self._lockout_started(lockout, username, source)
            await self._audit_lockout(lockout, username, source)

    async def _locked_out(self, username: str, source: str) -> None:
        self._refused(LoginRefusal.LOCKED_OUT, username, source)
        await asyncio.sleep(self.settings.max_delay_s)

    def _refused(self, reason: LoginRefusal, username: str | None, source: str) -> None:
        """A refusal that is not a counted password failure (channel, anonymous, lockout, busy)."""
        level = logging.DEBUG if reason in _QUIET_REFUSALS else logging.WARNING
        log.log(
            level,
            "opcua_login_refused",
            user=username or ANONYMOUS_NAME,
            source=source or "-",
            reason=reason.value,
        )
        self._count(reason)

    def _count(self, reason: LoginRefusal) -> None:
        if self._on_refused is not None:
            self._on_refused(reason.value)

    def _lockout_started(self, lockout: Lockout, username: str, source: str) -> None:
        log.warning(
            "opcua_login_locked_out",
            scope=lockout.scope.value,
            key=lockout.key or "-",
            user=username,
            source=source or "-",
            failures=lockout.failures,
            lockout_s=_seconds(lockout.duration_s),
            episode=lockout.episode,
        )
        if self._on_lockout is not None:
            self._on_lockout(lockout.scope.value)

    async def _audit_lockout(self, lockout: Lockout, username: str, source: str) -> None:
        if self._audit is None:
            return
        window = _seconds(self.settings.failure_window_s)
        event = AuditEvent(
            user=username,
            action="lockout",
            object_type="opcua_login",
            object_id=f"{lockout.scope.value}:{lockout.key}",
            reason=f"{lockout.failures} failed logins within {window} s",
            details={
                "scope": lockout.scope.value,
                "user": username,
                "source": source,
                "failures": lockout.failures,
                "lockout_s": lockout.duration_s,
                "episode": lockout.episode,
            },
        )
        try:
            await self._audit(event)
        except InventoryError as exc:  # the lockout stands even if the audit store is down
            log.error(
                "opcua_lockout_not_audited",
                scope=lockout.scope.value,
                key=lockout.key,
                error=str(exc),
            )


# Refusals repeated by every attempt of a client that keeps trying: DEBUG (the
# lockout and "busy" are visible in the metrics; the lockout's start is logged).
_QUIET_REFUSALS: Final = frozenset({LoginRefusal.LOCKED_OUT, LoginRefusal.BUSY})


MAX_NAME: Final = 128  # the audit trail's `user` column


def _bounded(username: str | None) -> str | None:
    """A user name as the throttle, the log and the audit keep it: configured names are
    short, and a client's megabyte of name must not become a megabyte per table entry."""
    return username if username is None or len(username) <= MAX_NAME else username[:MAX_NAME]


def _failure_reason(known_user: bool) -> LoginRefusal:
    return LoginRefusal.BAD_PASSWORD if known_user else LoginRefusal.UNKNOWN_USER


def _seconds(value: float) -> str:
    return f"{value:g}"


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# --------------------------------------------------------------------------- permissions


def _request_ids(*names: str) -> frozenset[ua.NodeId]:
    return frozenset(
        ua.NodeId(getattr(ObjectIds, f"{name}Request_Encoding_DefaultBinary")) for name in names
    )


# Requests a session may send that change nothing in the address space. Call is
# here: standard methods (ConditionRefresh, GetMonitoredItems) must work for
# viewers, and the ledger methods check the role themselves so that a denied
# attempt is audited and answered Bad_UserAccessDenied per method.
READ_REQUESTS: Final = _request_ids(
    "Read",
    "Browse",
    "BrowseNext",
    "TranslateBrowsePathsToNodeIds",
    "RegisterNodes",
    "UnregisterNodes",
    "CreateSubscription",
    "ModifySubscription",
    "DeleteSubscriptions",
    "TransferSubscriptions",
    "SetPublishingMode",
    "CreateMonitoredItems",
    "ModifyMonitoredItems",
    "DeleteMonitoredItems",
    "SetMonitoringMode",
    "SetTriggering",
    "Publish",
    "Republish",
    "HistoryRead",
    "Call",
    "Cancel",
)
# Ending a session or channel is always allowed, even for a refused anonymous user.
CLOSE_REQUESTS: Final = _request_ids("CloseSession", "CloseSecureChannel")


class InvopsPermissionRuleset(SimpleRoleRuleset):
    """asyncua permission ruleset (per request type) that also records the caller.

    Subclasses SimpleRoleRuleset only because `Server.set_security_policy` is
    annotated with that class; none of its rules are used. A refused request
    fails as a whole with Bad_UserAccessDenied.
    """

    def __init__(self, anonymous: str) -> None:
        # No super().__init__(): SimpleRoleRuleset's permission table is not used.
        self._anonymous = _anonymous_mode(anonymous)

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        if isinstance(user, InvopsUser) and user.role is not UserRole.Anonymous:
            identity, anonymous = user.identity, False
        else:  # an anonymous session, or a user object some other manager made
            identity, anonymous = ANONYMOUS, True
        # The method handler of this request runs next in this same task: see the
        # module docstring. Set for every request, so nothing stale survives.
        _CURRENT_USER.set(identity)
        if isinstance(user, InvopsUser):
            _CURRENT_SESSION.set((user.session, user.source))
        else:
            _CURRENT_SESSION.set(("", ""))
        if action_type_id in CLOSE_REQUESTS:
            return True
        allowed = action_type_id in READ_REQUESTS and not (anonymous and self._anonymous == "off")
        if not allowed:
            log.warning(
                "opcua_request_denied",
                user=identity[0],
                role=identity[1],
                request=_request_name(action_type_id),
            )
        return allowed


def _request_name(type_id: Any) -> str:
    identifier = getattr(type_id, "Identifier", None)
    name = ObjectIdNames.get(identifier, str(type_id)) if isinstance(identifier, int) else None
    return (name or str(type_id)).removesuffix("_Encoding_DefaultBinary")


# --------------------------------------------------------------------------- policies


def security_policies(security: OpcuaSecurity) -> list[ua.SecurityPolicyType]:
    """The asyncua endpoint types for the configured policy names, in config order."""
    types = []
    for name in security.security_policies:
        policy = POLICY_TYPES.get(name)
        if policy is None:
            raise SecuritySetupError(f"unknown security policy {name!r}")
        if policy is ua.SecurityPolicyType.NoSecurity and not security.allow_security_none:
            raise SecuritySetupError("security policy None needs allow_security_none = true")
        types.append(policy)
    if not types:
        raise SecuritySetupError("no security policy configured")
    return types


def select_policies(
    requested: Sequence[ua.SecurityPolicyType] | None, *, allow_none: bool, has_key: bool
) -> list[ua.SecurityPolicyType]:
    """The endpoints a server offers: `requested` (checked), else None where allowed and
    every secure policy when it has a certificate and key. Raises SecuritySetupError
    for a set asyncua would silently serve differently."""
    none = ua.SecurityPolicyType.NoSecurity
    if requested is not None:
        if none in requested and not allow_none:
            raise SecuritySetupError(
                "security policy None requested but [opcua] allow_security_none is false"
            )
        if any(p is not none for p in requested) and not has_key:
            # asyncua would silently leave those endpoints out
            raise SecuritySetupError(
                "signing/encrypting security policies need a server certificate and key"
            )
        return list(requested)
    policies = [none] if allow_none else []
    if has_key:
        policies.extend(SECURE_POLICY_TYPES)
    if not policies:
        raise SecuritySetupError(
            "no usable security policy: [opcua] allow_security_none is false "
            "and no server certificate and private key were given"
        )
    return policies


def identity_tokens(security: OpcuaSecurity) -> list[type]:
    """Token types to offer (`Server.set_identity_tokens`): user name, and anonymous if on.

    Optional: InvopsUserManager refuses anonymous sessions anyway; offering only
    what is accepted lets clients see it in the endpoint list.
    """
    tokens: list[type] = [ua.UserNameIdentityToken]
    if _anonymous_mode(security.anonymous) == "read":
        tokens.insert(0, ua.AnonymousIdentityToken)
    return tokens


# --------------------------------------------------------------------------- certificates


def ensure_certificate(
    directory: Path | str, application_uri: str, hostname: str
) -> tuple[Path, Path]:
    """(certificate, private key) paths of the server's own certificate in `directory`.

    First start: a 2048-bit RSA key (PEM, mode 0600) and a self-signed certificate
    (DER, valid CERTIFICATE_DAYS) with SubjectAltName URI `application_uri`, DNS
    `hostname`, this machine's name and localhost, IP 127.0.0.1; `trusted/` is
    created for client certificates. Later starts reuse both; the certificate is
    made again (same key) only when it is expired, not yet valid, lacks the
    application URI or does not belong to the key. A renamed host does not
    trigger a new certificate: clients that trusted it keep working.
    Synchronous (key generation takes a fraction of a second).
    """
    root = Path(directory)
    try:
        (root / TRUSTED_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SecuritySetupError(
            f"cannot create {root / TRUSTED_DIR}: {exc.strerror or exc}"
        ) from exc
    cert_path, key_path = root / CERTIFICATE_FILE, root / PRIVATE_KEY_FILE
    key = _load_private_key(key_path)
    if key is None:
        key = cert_gen.generate_private_key()
        _write_atomically(key_path, cert_gen.dump_private_key_as_pem(key), mode=0o600)
        log.info("opcua_key_created", path=str(key_path))
    problem = _certificate_problem(cert_path, key, application_uri)
    if problem is not None:
        names = _alt_names(application_uri, hostname)
        certificate = cert_gen.generate_self_signed_app_certificate(
            key,
            "invops",
            {"organizationName": "invops"},
            names,
            extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            days=CERTIFICATE_DAYS,
        )
        _write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.DER), 0o644)
        log.info("opcua_certificate_created", path=str(cert_path), reason=problem)
    return cert_path, key_path


def _load_private_key(path: Path) -> rsa.RSAPrivateKey | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecuritySetupError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SecuritySetupError(
            f"{path} is not an unencrypted PEM private key "
            "(delete it and its certificate to create new ones)"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecuritySetupError(f"{path}: OPC UA security policies need an RSA key")
    return key


def _certificate_problem(path: Path, key: rsa.RSAPrivateKey, application_uri: str) -> str | None:
    """Why the certificate at `path` cannot be used with `key` (None: it can)."""
    try:
        certificate = x509.load_der_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return "first start"
    except (OSError, ValueError):
        return "unreadable certificate"
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return "expired or not yet valid"
    if certificate.public_key() != key.public_key():
        return "certificate does not match the private key"
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "no SubjectAltName"
    if application_uri not in san.value.get_values_for_type(x509.UniformResourceIdentifier):
        return f"application URI is not {application_uri}"
    return None


def _alt_names(application_uri: str, hostname: str) -> list[x509.GeneralName]:
    dns = list(dict.fromkeys(n for n in (hostname, socket.gethostname(), "localhost") if n))
    ips = {ipaddress.ip_address("127.0.0.1")}
    with contextlib.suppress(ValueError):
        ips.add(ipaddress.ip_address(hostname.strip("[]")))
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    names += [x509.DNSName(n) for n in dns]
    names += [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    return names


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and rename: a crash never leaves half a key."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise SecuritySetupError(f"cannot write {path}: {exc.strerror or exc}") from exc


class ClientCertificateValidator:
    """Accepts only client certificates found in `trusted/` (plus asyncua's checks of
    time range, application URI, key usage and client-auth extended key usage).

    The directory is re-read when its content changes, so an administrator can
    trust a client by copying its certificate (DER or PEM) there, without a
    restart. Plug in with `server.set_certificate_validator(validator)`; asyncua
    calls it at CreateSession, and a refusal fails the session with
    Bad_CertificateUntrusted (or the specific certificate error).
    """

    def __init__(self, trusted_dir: Path) -> None:
        self._trusted_dir = trusted_dir
        self._store = TrustStore([trusted_dir], [])
        options = (
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        )
        self._validator = CertificateValidator(options, self._store)
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._empty = True

    async def __call__(
        self, certificate: x509.Certificate, app_description: ua.ApplicationDescription
    ) -> None:
        stamp = self._directory_stamp()
        if stamp != self._stamp:
            self._empty = not stamp
            if stamp:  # TrustStore cannot load an empty directory ("can't create an empty store")
                await self._store.load_trust()
            self._stamp = stamp
        try:
            if self._empty:
                raise ServiceError(StatusCodes.BadCertificateUntrusted)
            await self._validator.validate(certificate, app_description)
        except ServiceError as exc:
            log.warning(
                "opcua_client_certificate_refused",
                application=app_description.ApplicationUri,
                thumbprint=_thumbprint(certificate),
                status=get_name_and_doc(exc.code)[0],
                trusted_dir=str(self._trusted_dir),
                hint="copy the client certificate into trusted_dir to trust it",
            )
            raise

    def _directory_stamp(self) -> tuple[tuple[str, int, int], ...]:
        try:
            entries = [e for e in os.scandir(self._trusted_dir) if e.is_file()]
        except FileNotFoundError:
            return ()
        return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries))


def _thumbprint(certificate: x509.Certificate) -> str:
    digest = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).digest()
    return base64.b16encode(digest).decode("ascii")


def client_certificate_validator(pki_dir: Path | str) -> ClientCertificateValidator:
    """The validator for `<pki_dir>/trusted/` (see ClientCertificateValidator)."""
    return ClientCertificateValidator(Path(pki_dir) / TRUSTED_DIR)


# --------------------------------------------------------------------------- server wiring


class SecureServerKwargs(TypedDict):
    """Keyword arguments for the invops OPC UA server constructor."""

    user_manager: InvopsUserManager
    permission_ruleset: InvopsPermissionRuleset
    security_policies: list[ua.SecurityPolicyType]
    certificate: Path
    private_key: Path


def secure_server_kwargs(
    security: OpcuaSecurity,
    pki_dir: Path | str,
    *,
    audit: AuditSink | None = None,
    on_login_refused: Callable[[str], None] | None = None,
    on_lockout: Callable[[str], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> SecureServerKwargs:
    """Everything the server needs for SPEC §4 security, creating the certificate if needed.

    `audit` receives the lockout records (`Ledger.record_event`); `on_login_refused(reason)`
    and `on_lockout(scope)` count refused logins and lockouts (the metrics).

    The server applies them as: `asyncua.Server(user_manager=...)`,
    `set_security_policy(security_policies, permission_ruleset=...)`,
    `await load_certificate(certificate)`, `await load_private_key(private_key)`,
    `await set_application_uri(APPLICATION_URI)`; and, recommended,
    `set_identity_tokens(identity_tokens(security))` and
    `set_certificate_validator(client_certificate_validator(pki_dir))`.
    """
    hostname = urlparse(security.endpoint).hostname or "localhost"
    certificate, private_key = ensure_certificate(pki_dir, APPLICATION_URI, hostname)
    return {
        "user_manager": InvopsUserManager(
            security.users,
            security.anonymous,
            allow_security_none=security.allow_security_none,
            settings=security.logins,
            audit=audit,
            on_refused=on_login_refused,
            on_lockout=on_lockout,
            clock=clock,
        ),
        "permission_ruleset": InvopsPermissionRuleset(security.anonymous),
        "security_policies": security_policies(security),
        "certificate": certificate,
        "private_key": private_key,
    }

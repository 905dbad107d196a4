"""ActivateSession's user check off the event loop (issue 12: a wrong-password flood
stalled the event loop).

asyncua asks the user manager synchronously (`InternalSession.activate_session`
calls `user_manager.get_user(...)`, itself called without an await from
`UaProcessor._process_message`), so a scrypt check there blocks the loop for its
whole duration. When the server's user manager has an `async def authenticate(
Activation)` (`security.InvopsUserManager`), the `_process_message` hook (`sessions`)
now reads the request's identity token first (from a copy of the body), decrypts it
with asyncua's own `decrypt_user_token` and awaits `authenticate` (password checked in
a thread, throttled, delayed); the verdict is held in a ContextVar while asyncua's
unchanged ActivateSession code runs, and `get_user` answers it (`checked_login`).
Anything asyncua refuses before asking the user manager (closed or unknown
session, token type not offered, undecryptable token) is left to asyncua.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Protocol

from asyncua import ua
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua import ua_binary

# What this module relies on (fingerprinted: tests/unit/test_asyncua_patches.py): the
# request is read as `activate_session` reads it (null token = anonymous, supported
# token types, the user token decrypted with `decrypt_user_token` and the session's
# nonce, then `get_user` called without an await).
UPSTREAM: Final = (
    (InternalSession.activate_session, "relied on"),
    (InternalServer.decrypt_user_token, "relied on"),
)


@dataclass(frozen=True, slots=True)
class Activation:
    """One ActivateSession as an async user manager sees it, before asyncua's own check.

    `username` and `password` are None for an anonymous token; `certificate` is the
    secure channel's client certificate (b"" or None on a None channel), as asyncua
    hands it to `get_user`; `source` is the client's address, `session_id` the
    session's NodeId as text ("i=12")."""

    username: str | None
    password: str | None
    certificate: bytes | None
    source: str
    session_id: str


class AsyncUserManager(Protocol):
    """A user manager the patched ActivateSession awaits before asyncua asks `get_user`."""

    def authenticate(self, activation: Activation) -> Awaitable[Any]: ...


class _Checked:
    """The verdict on one activation, emptied when the request is done: tasks asyncua
    starts meanwhile (the session's timeout watchdog) copy the context, and must not
    keep the password alive in it."""

    __slots__ = ("password", "username", "valid", "verdict")

    def __init__(self, username: str | None, password: str | None, verdict: Any) -> None:
        self.username, self.password, self.verdict, self.valid = username, password, verdict, True

    def clear(self) -> None:
        self.username = self.password = self.verdict = None
        self.valid = False


_checked: ContextVar[_Checked | None] = ContextVar("invops_checked_login", default=None)


def checked_login(username: str | None, password: str | None) -> tuple[bool, Any]:
    """(True, verdict) when `authenticate` already judged this login in this request
    (verdict: the user, or None to refuse); (False, None) when nothing was checked."""
    checked = _checked.get()
    if checked is None or not checked.valid:
        return False, None
    if checked.username != username or checked.password != password:
        return False, None
    return True, checked.verdict


async def authenticate_then_activate(
    processor: UaProcessor,
    requesthdr: Any,
    body: Any,
    proceed: Callable[[], Awaitable[Any]],
) -> Any:
    """Await the user manager's `authenticate` (if it has one), then `proceed()` with
    asyncua's own ActivateSession while the verdict is in the context."""
    authenticate = getattr(processor.iserver.user_manager, "authenticate", None)
    activation = _activation(processor, requesthdr, body) if authenticate is not None else None
    if activation is None:
        return await proceed()
    assert authenticate is not None
    checked = _Checked(activation.username, activation.password, await authenticate(activation))
    token = _checked.set(checked)
    try:
        return await proceed()
    finally:
        checked.clear()
        _checked.reset(token)


def _activation(processor: UaProcessor, requesthdr: Any, body: Any) -> Activation | None:
    """The identity an ActivateSession request claims, read as asyncua will read it;
    None when asyncua refuses the request before it asks the user manager."""
    iserver = processor.iserver
    session = processor.session or iserver.lookup_external_session(requesthdr.AuthenticationToken)
    if session is None or session.state == SessionState.Closed:
        return None
    try:
        params = ua_binary.struct_from_binary(ua.ActivateSessionParameters, body.copy())
    except Exception:  # asyncua parses it again and answers the fault itself
        return None
    token = params.UserIdentityToken
    if isinstance(token, ua.ExtensionObject) and token.TypeId == ua.NodeId(ua.ObjectIds.Null):
        token = ua.AnonymousIdentityToken()
    if not isinstance(token, iserver.supported_tokens):
        return None
    username: str | None = None
    password: str | None = None
    if isinstance(token, ua.UserNameIdentityToken):
        try:
            username, password = iserver.decrypt_user_token(session, token)
        except Exception:  # asyncua fails it with Bad_IdentityTokenInvalid
            return None
    elif not isinstance(token, ua.AnonymousIdentityToken):
        return None  # X509 and issued tokens: asyncua's own path
    peer = processor.name
    source = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
    return Activation(
        username=username,
        password=password,
        certificate=processor._connection.security_policy.peer_certificate,
        source=source,
        session_id=session.session_id.to_string(),
    )

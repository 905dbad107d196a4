"""Fixes to asyncua 2.1 (pinned in pyproject.toml), applied when the server starts.

Client certificates at CreateSession (a correctness and security fix; OPC UA Part 4, 5.6.2):

- asyncua validates the certificate a client puts into CreateSession whatever the
  secure channel, so on a `None` channel a client that presents its application
  instance certificate, as UaExpert, node-opcua and most SCADA clients do, is refused
  with Bad_CertificateUntrusted. Part 4: "if the securityPolicyUri is None, the
  Server shall ignore the ApplicationInstanceCertificate". It is now ignored there.
- On a Sign/SignAndEncrypt channel asyncua validates only that CreateSession
  certificate and skips the check when it is empty; it never compares it with the
  certificate the channel was opened with (the one whose key the client proved).
  Any client could get past the trust list by sending no certificate, or another
  client's (public) one. Now the CreateSession certificate must be the channel's
  (first certificate of a chain compared), else Bad_CertificateInvalid, and the
  trust list always judges the channel's certificate.
- How: `_process_message` records the connection's security policy in a
  ContextVar for the duration of a CreateSession request (one task per connection
  serves it start to finish, as for `security.current_user`); `_create_session`
  reads it and adjusts the parameters before asyncua's own code runs.

Data-change path, profiled with benchmarks/opcua_server.py (10,000 values at 1 Hz):

- `MonitoredItemValues.set_current_datavalue` stores a `copy.deepcopy` of every
  DataValue written to a monitored node, so that a caller mutating its object
  later cannot change what was stored: half of the server's CPU. A scalar value
  (number, text, bool, time, bytes) is immutable, so copying the two small
  wrapper objects (DataValue, Variant) slot by slot gives the same protection
  at a fraction of the cost (`copy.copy` of them costs twice as much again);
  anything else (arrays, structures) still gets the deep copy.
- `MonitoredItemService.datachange_callback` builds each notification as
  `MonitoredItemNotification()` and then sets its fields; the dataclass default
  builds a throwaway `DataValue()` (a Variant with type guessing) first, which
  was a quarter of the server's CPU. The replacement passes the fields to the
  constructor and is otherwise the same code.
- Publishing serializes every notification through asyncua's generic dataclass
  encoder (a getattr and a closure per field, per nesting level): the largest
  cost left. `_notification_to_binary` encodes MonitoredItemNotification
  directly, byte for byte what the generic encoder produces (tests compare them
  on generated values); DataValues with picoseconds take the generic path.
- Node storage: constant attributes shared between nodes (`asyncua_nodes`).

User check at ActivateSession (issue 12: a wrong-password flood stalled the event loop):

- asyncua asks the user manager synchronously (`InternalSession.activate_session`
  calls `user_manager.get_user(...)`, itself called without an await from
  `UaProcessor._process_message`), so a scrypt check there blocks the loop for its
  whole duration. When the server's user manager has an `async def authenticate(
  Activation)` (`security.InvopsUserManager`), `_process_message` now reads the
  request's identity token first (from a copy of the body), decrypts it with
  asyncua's own `decrypt_user_token` and awaits `authenticate` (password checked in
  a thread, throttled, delayed); the verdict is held in a ContextVar while asyncua's
  unchanged ActivateSession code runs, and `get_user` answers it (`checked_login`).
  Anything asyncua refuses before asking the user manager (closed or unknown
  session, token type not offered, undecryptable token) is left to asyncua.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import Any, Final, Protocol, TypeVar

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua import ua_binary

from opcua_server import asyncua_nodes

_T = TypeVar("_T")
_IMMUTABLE = (int, float, str, bool, bytes, datetime, type(None))
_original_set = MonitoredItemValues.set_current_datavalue


def _shallow_copy(obj: _T) -> _T:
    """A new instance with the same field values (asyncua's types are slots dataclasses)."""
    cls = type(obj)
    new = object.__new__(cls)
    for name in cls.__slots__:  # type: ignore[attr-defined]
        object.__setattr__(new, name, getattr(obj, name))
    return new


def _set_current_datavalue(self: MonitoredItemValues, cur_val: ua.DataValue) -> None:
    variant = cur_val.Value
    if variant is not None and isinstance(variant.Value, _IMMUTABLE):
        stored = _shallow_copy(cur_val)
        stored.Value = _shallow_copy(variant)
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = stored
        return
    _original_set(self, cur_val)


async def _datachange_callback(
    self: MonitoredItemService,
    handle: int,
    value: ua.DataValue,
    error: ua.StatusCode | None = None,
) -> None:
    if error:
        self.logger.info(
            "subscription %s: datachange callback called with handle '%s' and error '%s'",
            self,
            handle,
            error,
        )
        await self.trigger_statuschange(error)
        return
    mid = self._monitored_datachange[handle]
    mdata = self._monitored_items[mid]
    if mdata.mode == ua.MonitoringMode.Disabled:
        return
    mdata.mvalue.set_current_datavalue(value)
    if mdata.filter:
        passes = self._is_data_changed(
            mdata.mvalue, mdata.filter.Trigger
        ) and self._is_deadband_exceeded(mdata.mvalue, mdata.filter)
    else:
        passes = self._is_data_changed(mdata.mvalue, ua.DataChangeTrigger.StatusValue)
    if passes:
        event = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
        await self.isub.enqueue_datachange_event(mid, event, mdata.queue_size)


_UINT32 = ua_binary.Primitives.UInt32.pack
_DATETIME = ua_binary.Primitives.DateTime.pack
_generic_notification = ua_binary.create_dataclass_serializer(ua.MonitoredItemNotification)
_original_type_serializer = ua_binary.create_type_serializer


def _notification_to_binary(item: ua.MonitoredItemNotification) -> bytes:
    """OPC UA binary of one MonitoredItemNotification (ClientHandle, DataValue), in the
    field order and with the encoding mask asyncua's generic encoder uses."""
    dv = item.Value
    if dv.SourcePicoseconds is not None or dv.ServerPicoseconds is not None:
        return _generic_notification(item)
    mask = 0
    parts = [_UINT32(item.ClientHandle), b""]
    if dv.Value is not None:
        mask |= 0x01
        parts.append(ua_binary.variant_to_binary(dv.Value))
    if dv.StatusCode is not None:
        mask |= 0x02
        parts.append(_UINT32(dv.StatusCode.value))
    if dv.SourceTimestamp is not None:
        mask |= 0x04
        parts.append(_DATETIME(dv.SourceTimestamp))
    if dv.ServerTimestamp is not None:
        mask |= 0x08
        parts.append(_DATETIME(dv.ServerTimestamp))
    parts[1] = bytes((mask,))
    return b"".join(parts)


def _create_type_serializer(uatype: type) -> Callable[[Any], bytes]:
    if uatype is ua.MonitoredItemNotification:
        return _notification_to_binary
    return _original_type_serializer(uatype)


# --------------------------------------------------------------------------- CreateSession

PINNED_VERSION: Final = "2.1."
_CREATE_SESSION: Final = ua.NodeId(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary)
_channel_policy: ContextVar[Any] = ContextVar("invops_create_session_channel", default=None)
_original_process_message = UaProcessor._process_message
_original_create_session = InternalSession.create_session


async def _process_message(
    self: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any
) -> Any:
    if typeid == _ACTIVATE_SESSION:
        return await _activate_session(self, typeid, requesthdr, seqhdr, body)
    if typeid != _CREATE_SESSION:
        return await _original_process_message(self, typeid, requesthdr, seqhdr, body)
    token = _channel_policy.set(self._connection.security_policy)
    try:
        return await _original_process_message(self, typeid, requesthdr, seqhdr, body)
    finally:
        _channel_policy.reset(token)


async def _create_session(
    self: InternalSession, params: ua.CreateSessionParameters, sockname: Any = None
) -> ua.CreateSessionResult:
    policy = _channel_policy.get()
    if policy is not None:  # None: a session asyncua makes without a client connection
        params.ClientCertificate = channel_client_certificate(
            policy.Mode, policy.peer_certificate, params.ClientCertificate
        )
    return await _original_create_session(self, params, sockname)


def channel_client_certificate(
    mode: ua.MessageSecurityMode, channel_certificate: bytes | None, session_certificate: Any
) -> bytes | None:
    """The client certificate CreateSession validates, by the channel's security mode.

    None for a `None` channel (ignored, Part 4); on a secured channel the channel's own
    certificate, after checking that the session names the same one (else
    Bad_CertificateInvalid: a client may not borrow another client's certificate).
    """
    if mode == ua.MessageSecurityMode.None_:
        return None
    presented = uacrypto.x509_from_der(session_certificate) if session_certificate else None
    if not channel_certificate or presented is None:
        raise ServiceError(ua.StatusCodes.BadCertificateInvalid)
    if uacrypto.der_from_x509(presented) != channel_certificate:
        raise ServiceError(ua.StatusCodes.BadCertificateInvalid)
    return channel_certificate


# --------------------------------------------------------------------------- ActivateSession

_ACTIVATE_SESSION: Final = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
_original_activate_session = InternalSession.activate_session
_original_decrypt_user_token = InternalServer.decrypt_user_token


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


async def _activate_session(
    self: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any
) -> Any:
    authenticate = getattr(self.iserver.user_manager, "authenticate", None)
    activation = _activation(self, requesthdr, body) if authenticate is not None else None
    if activation is None:
        return await _original_process_message(self, typeid, requesthdr, seqhdr, body)
    assert authenticate is not None
    checked = _Checked(activation.username, activation.password, await authenticate(activation))
    token = _checked.set(checked)
    try:
        return await _original_process_message(self, typeid, requesthdr, seqhdr, body)
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


def _check_version() -> None:
    version = metadata.version("asyncua")
    if not version.startswith(PINNED_VERSION):
        raise RuntimeError(
            f"opcua_server.asyncua_patches was written for asyncua {PINNED_VERSION}x, "
            f"found {version}: check each patch against the new release, then re-pin"
        )


def apply() -> None:
    """Install the fixes (idempotent). The encoder is picked up by list encoders built
    after this call (asyncua builds them on first use, i.e. at the first publish)."""
    _check_version()
    UaProcessor._process_message = _process_message  # type: ignore[method-assign]
    InternalSession.create_session = _create_session  # type: ignore[method-assign]
    MonitoredItemValues.set_current_datavalue = _set_current_datavalue  # type: ignore[method-assign]
    MonitoredItemService.datachange_callback = _datachange_callback  # type: ignore[method-assign]
    ua_binary.create_type_serializer = _create_type_serializer
    asyncua_nodes.apply()

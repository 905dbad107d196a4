"""CreateSession's client certificate (a correctness and security fix; OPC UA Part 4,
5.6.2), and the one `UaProcessor._process_message` hook the session patches share.

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

The same hook sends an ActivateSession through the async user check (`auth`) and,
before a CreateSession, lets the limits drop the connection's unactivated session
(`limits`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Final

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.server.internal_session import InternalSession
from asyncua.server.uaprocessor import UaProcessor

from opcua_server.asyncua_patches import auth, limits

_CREATE_SESSION: Final = ua.NodeId(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary)
_ACTIVATE_SESSION: Final = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
_channel_policy: ContextVar[Any] = ContextVar("invops_create_session_channel", default=None)
_original_process_message = UaProcessor._process_message
_original_create_session = InternalSession.create_session

# What this module copies, wraps or relies on (fingerprinted: tests/unit/test_asyncua_patches.py):
# one request is served start to finish in the connection's task; ClientCertificate is
# used only for the validator.
UPSTREAM: Final = (
    (_original_process_message, "wrapped"),
    (_original_create_session, "wrapped"),
)


async def _process_message(
    self: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any
) -> Any:
    if typeid == _ACTIVATE_SESSION:
        return await auth.authenticate_then_activate(
            self,
            requesthdr,
            body,
            lambda: _original_process_message(self, typeid, requesthdr, seqhdr, body),
        )
    if typeid != _CREATE_SESSION:
        return await _original_process_message(self, typeid, requesthdr, seqhdr, body)
    token = _channel_policy.set(self._connection.security_policy)
    try:
        await limits.drop_unactivated_session(self)
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


def apply() -> None:
    UaProcessor._process_message = _process_message  # type: ignore[method-assign]
    InternalSession.create_session = _create_session  # type: ignore[method-assign]


def restore() -> None:
    UaProcessor._process_message = _original_process_message  # type: ignore[method-assign]
    InternalSession.create_session = _original_create_session  # type: ignore[method-assign]

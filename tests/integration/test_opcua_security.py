"""OPC UA security against a real asyncua server on an ephemeral 127.0.0.1 port.

The server is a bare `asyncua.Server` set up only through `opcua_server.security`
(the way the invops server core plugs it in), with one test object: `WhoAmI`
returns `current_user()` from an `async def` handler, `WhoAmISync` from a plain
function, and `Level` is a variable even flagged writable. Clients log in with
their own certificate made with asyncua's cert_gen.

Two servers per module (starting one costs about a second):
`open`   - policy None allowed, anonymous = "read";
`locked` - secure policies only, anonymous = "off".
"""

from __future__ import annotations

import asyncio
import contextvars
import shutil
import socket
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.methods import uamethod
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User as UaUser
from asyncua.crypto.permission_rules import UserRole
from asyncua.crypto.security_policies import (
    SecurityPolicy,
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from information_model import APPLICATION_URI, Role
from inventory_core.domain.passwords import hash_password, parse_password_hash
from inventory_core.domain.users import User
from invops.config import parse_config
from invops.wiring import opcua_security
from opcua_server import asyncua_patches
from opcua_server.security import (
    ANONYMOUS,
    CERTIFICATE_FILE,
    POLICY_TYPES,
    PRIVATE_KEY_FILE,
    InvopsPermissionRuleset,
    InvopsUser,
    InvopsUserManager,
    SecuritySetupError,
    acting_as,
    client_certificate_validator,
    current_user,
    ensure_certificate,
    identity_tokens,
    secure_server_kwargs,
    security_policies,
)
from opcua_server.settings import OpcuaSecurity

# Async tests share the module event loop with the two servers.
module_loop = pytest.mark.asyncio(loop_scope="module")

CLIENT_URI = "urn:invops:test-client"
SIGN = ua.MessageSecurityMode.Sign
ENCRYPT = ua.MessageSecurityMode.SignAndEncrypt
BASIC = SecurityPolicyBasic256Sha256
RSAPSS = SecurityPolicyAes256Sha256RsaPss
DEMO_USERS = ("viewer", "operator", "engineer", "admin")
SITE = {"enterprise": "ACME", "name": "PLANT1", "areas": ["TANKFARM"]}


@dataclass(frozen=True)
class ClientCert:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class RunningServer:
    url: str
    ns: int
    pki: Path
    server: Server


def _status(exc: BaseException) -> int:
    assert isinstance(exc, UaStatusCodeError), repr(exc)
    return int(exc.code)


async def _client_cert(directory: Path, name: str) -> ClientCert:
    cert, key = directory / f"{name}.der", directory / f"{name}.pem"
    await cert_gen.setup_self_signed_certificate(
        key,
        cert,
        CLIENT_URI,
        socket.gethostname(),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"organizationName": "invops tests"},
    )
    return ClientCert(cert, key)


@asynccontextmanager
async def _server(access: OpcuaSecurity, pki: Path) -> Any:
    """A bare asyncua server wired exactly as secure_server_kwargs documents, with the
    asyncua patches the invops server applies (CreateSession's client certificate)."""
    asyncua_patches.apply()
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
    server.set_certificate_validator(client_certificate_validator(pki))

    ns = await server.register_namespace("urn:invops:test")
    test = await server.nodes.objects.add_object(ns, "Test")

    async def who_am_i(parent: ua.NodeId) -> list[ua.Variant]:
        await asyncio.sleep(0.05)  # let concurrent sessions interleave
        name, role = current_user()
        return [ua.Variant(f"{name}:{role}", ua.VariantType.String)]

    def who_am_i_sync(parent: ua.NodeId) -> list[ua.Variant]:
        name, role = current_user()
        return [ua.Variant(f"{name}:{role}", ua.VariantType.String)]

    await test.add_method(ns, "WhoAmI", who_am_i, [], [ua.VariantType.String])

    @uamethod
    async def who_am_i_uamethod(parent: ua.NodeId) -> str:
        name, role = current_user()
        return f"{name}:{role}"

    await test.add_method(ns, "WhoAmISync", who_am_i_sync, [], [ua.VariantType.String])
    await test.add_method(ns, "WhoAmIUa", who_am_i_uamethod, [], [ua.VariantType.String])
    level = await test.add_variable(ns, "Level", 42.0, ua.VariantType.Double)
    await level.set_writable()  # even a writable-flagged variable is refused to clients
    async with server:
        assert server.bserver is not None
        yield RunningServer(f"opc.tcp://127.0.0.1:{server.bserver.port}/invops", ns, pki, server)


@pytest.fixture(scope="module")
def users() -> tuple[User, ...]:
    """One user per role, each with their role's name as password."""
    return tuple(_user(name, name) for name in DEMO_USERS)


def _user(name: str, role: str) -> User:
    return User(name, Role(role), parse_password_hash(hash_password(name)))


SECURE_POLICIES = tuple(name for name in POLICY_TYPES if name != "None")


def _security(
    *,
    allow_security_none: bool = False,
    policies: tuple[str, ...] = SECURE_POLICIES,
    anonymous: str = "read",
    users: Sequence[User] = (),
) -> OpcuaSecurity:
    return OpcuaSecurity(
        endpoint="opc.tcp://127.0.0.1:0/invops",
        allow_security_none=allow_security_none,
        security_policies=policies,
        anonymous=anonymous,
        users=tuple(users),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientCert]:
    directory = tmp_path_factory.mktemp("client-pki")
    return {
        "trusted": await _client_cert(directory, "trusted"),
        "untrusted": await _client_cert(directory, "untrusted"),
    }


def _trust(pki: Path, cert: ClientCert) -> None:
    shutil.copy(cert.certificate, pki / "trusted" / cert.certificate.name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_server(
    tmp_path_factory: pytest.TempPathFactory,
    users: tuple[User, ...],
    client_certs: dict[str, ClientCert],
) -> AsyncIterator[RunningServer]:
    access = _security(
        allow_security_none=True, policies=("None", *SECURE_POLICIES), anonymous="read", users=users
    )
    pki = tmp_path_factory.mktemp("open") / "pki"
    async with _server(access, pki) as running:
        _trust(pki, client_certs["trusted"])
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def locked_server(
    tmp_path_factory: pytest.TempPathFactory,
    users: tuple[User, ...],
    client_certs: dict[str, ClientCert],
) -> AsyncIterator[RunningServer]:
    access = _security(anonymous="off", users=users)
    pki = tmp_path_factory.mktemp("locked") / "pki"
    async with _server(access, pki) as running:
        _trust(pki, client_certs["trusted"])
        yield running


async def _client(
    running: RunningServer,
    cert: ClientCert | None = None,
    policy: type[SecurityPolicy] = BASIC,
    mode: ua.MessageSecurityMode = ENCRYPT,
    user: str | None = None,
    password: str | None = None,
) -> Client:
    client = Client(running.url, timeout=5)
    client.application_uri = CLIENT_URI
    if cert is not None:
        await client.set_security(
            policy,
            str(cert.certificate),
            str(cert.private_key),
            server_certificate=str(running.pki / CERTIFICATE_FILE),
            mode=mode,
        )
    if user is not None:
        client.set_user(user)
        client.set_password(user if password is None else password)
    return client


async def _who_am_i(client: Client, ns: int, method: str = "WhoAmI") -> str:
    test = await client.nodes.objects.get_child([f"{ns}:Test"])
    result = await test.call_method(f"{ns}:{method}")
    assert isinstance(result, str)
    return result


def _present_at_create_session(client: Client, certificate: bytes | None) -> None:
    """Make `client` send `certificate` in CreateSession, whatever its channel uses.

    asyncua's client sends no certificate on a None channel; UaExpert, node-opcua and
    most SCADA clients send their application instance certificate there too. On a
    secured channel this plays a client that names another client's certificate.
    """
    original = client.uaclient.create_session

    async def create_session(params: ua.CreateSessionParameters) -> Any:
        params.ClientCertificate = certificate
        return await original(params)

    client.uaclient.create_session = create_session  # type: ignore[method-assign]


async def _refusal(client: Client) -> int:
    """The status code with which connecting (channel, session, activation) fails."""
    with pytest.raises(Exception) as caught:
        async with client:
            pass
    return _status(caught.value)


# --------------------------------------------------------------------------- anonymous


@module_loop
async def test_anonymous_browses_reads_and_is_a_viewer_over_policy_none(
    open_server: RunningServer,
) -> None:
    async with await _client(open_server) as client:
        test = await client.nodes.objects.get_child([f"{open_server.ns}:Test"])
        names = {(await child.read_browse_name()).Name for child in await test.get_children()}
        assert {"WhoAmI", "WhoAmISync", "Level"} <= names
        level = await test.get_child([f"{open_server.ns}:Level"])
        assert await level.read_value() == 42.0
        assert await _who_am_i(client, open_server.ns) == "anonymous:viewer"


@module_loop
async def test_anonymous_reads_over_an_encrypted_channel(
    open_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    async with await _client(open_server, client_certs["trusted"]) as client:
        level = await client.nodes.objects.get_child(
            [f"{open_server.ns}:Test", f"{open_server.ns}:Level"]
        )
        assert await level.read_value() == 42.0
        assert await _who_am_i(client, open_server.ns) == "anonymous:viewer"


@module_loop
async def test_anonymous_is_refused_when_off(
    locked_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    client = await _client(locked_server, client_certs["trusted"])
    assert await _refusal(client) == StatusCodes.BadIdentityTokenRejected


def test_user_manager_refuses_anonymous_when_off_even_if_the_token_is_offered() -> None:
    # asyncua passes the secure channel's client certificate (b"" on a None channel)
    assert InvopsUserManager([], "off").get_user(None, certificate=b"client") is None
    user = InvopsUserManager([], "read").get_user(None, certificate=b"client")
    assert isinstance(user, InvopsUser)
    assert user.role is UserRole.Anonymous and user.identity == ANONYMOUS


def test_user_manager_refuses_unsecured_channels_unless_none_is_allowed() -> None:
    users = [_user("op", "operator")]
    strict = InvopsUserManager(users, "read")
    assert strict.get_user(None, certificate=b"") is None
    assert strict.get_user(None, username="op", password="op", certificate=b"") is None
    assert strict.get_user(None, username="op", password="op", certificate=b"client") is not None
    demo = InvopsUserManager(users, "read", allow_security_none=True)
    assert demo.get_user(None, certificate=b"") is not None


# --------------------------------------------------------------------------- users


@module_loop
@pytest.mark.parametrize(
    ("policy", "mode", "user"),
    [
        (BASIC, ENCRYPT, "operator"),
        (RSAPSS, ENCRYPT, "engineer"),
        (BASIC, SIGN, "viewer"),
        (RSAPSS, SIGN, "admin"),
    ],
    ids=["Basic256Sha256-SignAndEncrypt", "Aes256RsaPss-SignAndEncrypt", "Basic-Sign", "Pss-Sign"],
)
async def test_user_logs_in_and_the_method_handler_sees_name_and_role(
    open_server: RunningServer,
    client_certs: dict[str, ClientCert],
    policy: type[SecurityPolicy],
    mode: ua.MessageSecurityMode,
    user: str,
) -> None:
    client = await _client(open_server, client_certs["trusted"], policy, mode, user)
    async with client:
        assert await _who_am_i(client, open_server.ns) == f"{user}:{user}"


@module_loop
async def test_user_logs_in_when_anonymous_is_off(
    locked_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    client = await _client(locked_server, client_certs["trusted"], RSAPSS, ENCRYPT, "operator")
    async with client:
        assert await _who_am_i(client, locked_server.ns) == "operator:operator"


@module_loop
async def test_user_logs_in_over_policy_none_with_the_password_encrypted(
    open_server: RunningServer,
) -> None:
    """asyncua encrypts the user token with a SignAndEncrypt policy on a None channel."""
    async with await _client(open_server, user="engineer") as client:
        assert await _who_am_i(client, open_server.ns) == "engineer:engineer"


@module_loop
async def test_concurrent_sessions_each_see_their_own_user(
    open_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    cert = client_certs["trusted"]
    clients = [
        await _client(open_server, cert, BASIC, ENCRYPT, "operator"),
        await _client(open_server, cert, RSAPSS, ENCRYPT, "engineer"),
        await _client(open_server, cert, BASIC, ENCRYPT, "admin"),
        await _client(open_server),
    ]
    for client in clients:
        await client.connect()
    try:
        for _ in range(3):  # handlers sleep, so the calls really overlap
            answers = await asyncio.gather(*(_who_am_i(c, open_server.ns) for c in clients))
            assert answers == [
                "operator:operator",
                "engineer:engineer",
                "admin:admin",
                "anonymous:viewer",
            ]
    finally:
        for client in clients:
            await client.disconnect()


@module_loop
async def test_current_user_outside_a_request_is_the_anonymous_viewer() -> None:
    assert current_user() == ("anonymous", Role.VIEWER)
    with acting_as("op1", "operator"):
        assert current_user() == ("op1", Role.OPERATOR)
    assert current_user() == ANONYMOUS


@module_loop
async def test_an_async_uamethod_handler_sees_the_user_too(
    open_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    client = await _client(open_server, client_certs["trusted"], RSAPSS, ENCRYPT, "operator")
    async with client:
        assert await _who_am_i(client, open_server.ns, "WhoAmIUa") == "operator:operator"


@module_loop
async def test_a_sync_method_handler_does_not_see_the_user_and_fails_closed(
    open_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    """asyncua runs plain functions via run_in_executor, which drops the context."""
    client = await _client(open_server, client_certs["trusted"], BASIC, ENCRYPT, "admin")
    async with client:
        assert await _who_am_i(client, open_server.ns, "WhoAmISync") == "anonymous:viewer"


@module_loop
@pytest.mark.parametrize(("user", "password"), [("operator", "wrong"), ("nobody", "nobody")])
async def test_wrong_password_or_unknown_user_is_refused(
    open_server: RunningServer, client_certs: dict[str, ClientCert], user: str, password: str
) -> None:
    client = await _client(open_server, client_certs["trusted"], BASIC, ENCRYPT, user, password)
    assert await _refusal(client) == StatusCodes.BadUserAccessDenied


def test_user_manager_refuses_an_unknown_anonymous_mode() -> None:
    with pytest.raises(SecuritySetupError, match="anonymous"):
        InvopsUserManager([], "write")


# --------------------------------------------------------------------------- policies


@module_loop
@pytest.mark.parametrize("user", [None, "operator"])
async def test_policy_none_is_refused_when_not_allowed(
    locked_server: RunningServer, user: str | None
) -> None:
    # The server offers no None endpoint, so an asyncua client has nothing to
    # connect to; the next test shows what happens to a client that goes anyway.
    with pytest.raises(UaError, match="No matching endpoints"):
        async with await _client(locked_server, user=user):
            pass


@module_loop
async def test_a_client_ignoring_the_endpoint_list_gets_no_session_over_none(
    locked_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncua's server accepts a None channel even without a None endpoint (for
    GetEndpoints); a careless client then sends its user token there in clear text.
    The user manager refuses the session, though the password is right."""

    def careless(
        endpoints: list[ua.EndpointDescription], mode: ua.MessageSecurityMode, uri: str
    ) -> ua.EndpointDescription:
        return next(e for e in endpoints if e.SecurityMode == ENCRYPT)

    monkeypatch.setattr(Client, "find_endpoint", staticmethod(careless))
    client = await _client(locked_server, user="operator")
    assert await _refusal(client) == StatusCodes.BadUserAccessDenied


@module_loop
async def test_only_configured_endpoints_are_offered(
    open_server: RunningServer, locked_server: RunningServer
) -> None:
    def offered(endpoints: list[ua.EndpointDescription]) -> set[tuple[str, int]]:
        return {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode) for e in endpoints}

    secure = {
        (name, mode)
        for name in ("Basic256Sha256", "Aes256_Sha256_RsaPss")
        for mode in (ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt)
    }
    assert offered(await locked_server.server.get_endpoints()) == secure
    assert offered(await open_server.server.get_endpoints()) == {
        *secure,
        ("None", ua.MessageSecurityMode.None_),
    }
    for endpoint in await locked_server.server.get_endpoints():
        tokens = {t.TokenType for t in endpoint.UserIdentityTokens}
        assert tokens == {ua.UserTokenType.UserName}


def test_security_policies_map_config_names_to_asyncua() -> None:
    secure = opcua_security(parse_config({"site": SITE}, environ={}))
    assert security_policies(secure) == [
        ua.SecurityPolicyType.Basic256Sha256_Sign,
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ]
    demo = opcua_security(
        parse_config({"site": SITE, "opcua": {"allow_security_none": True}}, environ={})
    )
    assert security_policies(demo)[0] is ua.SecurityPolicyType.NoSecurity
    assert security_policies(_security(policies=("Aes256_Sha256_RsaPss_Sign",))) == [
        ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign
    ]


def test_security_policies_refuse_unknown_names_and_none_unless_allowed() -> None:
    with pytest.raises(SecuritySetupError, match="unknown security policy 'Basic128'"):
        security_policies(_security(policies=("Basic128",)))
    with pytest.raises(SecuritySetupError, match="allow_security_none"):
        security_policies(_security(policies=("None",)))
    with pytest.raises(SecuritySetupError, match="no security policy"):
        security_policies(_security(policies=()))


# --------------------------------------------------------------------------- writes


@module_loop
@pytest.mark.parametrize("user", [None, "operator", "admin"])
async def test_client_writes_are_refused_for_every_user(
    open_server: RunningServer, client_certs: dict[str, ClientCert], user: str | None
) -> None:
    client = await _client(open_server, client_certs["trusted"], BASIC, ENCRYPT, user)
    async with client:
        level = await client.nodes.objects.get_child(
            [f"{open_server.ns}:Test", f"{open_server.ns}:Level"]
        )
        with pytest.raises(UaStatusCodeError) as caught:
            await level.write_value(ua.DataValue(ua.Variant(7.0, ua.VariantType.Double)))
        assert _status(caught.value) == StatusCodes.BadUserAccessDenied
        assert await level.read_value() == 42.0
        # the session survives a refused request
        assert (
            await _who_am_i(client, open_server.ns) == f"{user or 'anonymous'}:{user or 'viewer'}"
        )


@module_loop
async def test_admin_cannot_add_or_delete_nodes(
    open_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    client = await _client(open_server, client_certs["trusted"], RSAPSS, ENCRYPT, "admin")
    async with client:
        with pytest.raises(UaStatusCodeError) as added:
            await client.nodes.objects.add_object(open_server.ns, "Intruder")
        assert _status(added.value) == StatusCodes.BadUserAccessDenied
        test = await client.nodes.objects.get_child([f"{open_server.ns}:Test"])
        with pytest.raises(UaStatusCodeError) as deleted:
            await client.delete_nodes([test])
        assert _status(deleted.value) == StatusCodes.BadUserAccessDenied
        assert await _who_am_i(client, open_server.ns) == "admin:admin"


def test_ruleset_allows_reads_and_calls_and_refuses_every_write() -> None:
    # check_validity sets the current user: keep it out of the other tests' context
    contextvars.Context().run(_ruleset_checks)


def _ruleset_checks() -> None:
    admin = InvopsUser(role=UserRole.User, name="admin", invops_role=Role.ADMIN)
    anonymous = InvopsUser(role=UserRole.Anonymous, name="anonymous")
    stranger = UaUser(role=UserRole.Admin, name="made-by-another-manager")

    def request(name: str) -> ua.NodeId:
        return ua.NodeId(getattr(ObjectIds, f"{name}Request_Encoding_DefaultBinary"))

    read, off = InvopsPermissionRuleset("read"), InvopsPermissionRuleset("off")
    for name in ("Read", "Browse", "CreateSubscription", "Publish", "HistoryRead", "Call"):
        assert read.check_validity(admin, request(name), None)
        assert read.check_validity(anonymous, request(name), None)
        assert not off.check_validity(anonymous, request(name), None)
    for name in ("Write", "HistoryUpdate", "AddNodes", "DeleteNodes", "AddReferences"):
        for who in (admin, anonymous, stranger):
            assert not read.check_validity(who, request(name), None)
    assert off.check_validity(anonymous, request("CloseSession"), None)
    # a user object from another manager counts as anonymous, whatever its asyncua role
    read.check_validity(stranger, request("Read"), None)
    assert current_user() == ANONYMOUS
    read.check_validity(admin, request("Read"), None)
    assert current_user() == ("admin", Role.ADMIN)


# --------------------------------------------------------------------------- certificates


@module_loop
async def test_untrusted_client_certificate_is_refused_until_copied_to_trusted(
    locked_server: RunningServer, client_certs: dict[str, ClientCert]
) -> None:
    cert = client_certs["untrusted"]
    client = await _client(locked_server, cert, BASIC, ENCRYPT, "operator")
    assert await _refusal(client) == StatusCodes.BadCertificateUntrusted
    _trust(locked_server.pki, cert)  # no restart needed
    try:
        client = await _client(locked_server, cert, BASIC, ENCRYPT, "operator")
        async with client:
            assert await _who_am_i(client, locked_server.ns) == "operator:operator"
    finally:
        (locked_server.pki / "trusted" / cert.certificate.name).unlink()


@module_loop
@pytest.mark.parametrize("user", [None, "operator"])
async def test_a_client_certificate_on_a_none_channel_is_ignored(
    open_server: RunningServer, client_certs: dict[str, ClientCert], user: str | None
) -> None:
    """Part 4, CreateSession: on a None channel the server ignores the certificate, so an
    untrusted one neither refuses the session nor counts for anything; users still apply."""
    untrusted = client_certs["untrusted"].certificate.read_bytes()
    client = await _client(open_server, user=user)
    _present_at_create_session(client, untrusted)
    async with client:
        expected = "anonymous:viewer" if user is None else "operator:operator"
        assert await _who_am_i(client, open_server.ns) == expected
    client = await _client(open_server, user="operator", password="wrong")
    _present_at_create_session(client, untrusted)
    assert await _refusal(client) == StatusCodes.BadUserAccessDenied


@module_loop
@pytest.mark.parametrize("presented", ["trusted", "none"])
async def test_a_secured_channel_cannot_present_another_certificate_at_create_session(
    locked_server: RunningServer, client_certs: dict[str, ClientCert], presented: str
) -> None:
    """The trust list judges the certificate the channel was opened with: a client with
    an untrusted key gets nowhere by naming a trusted client's (public) certificate, or
    none, in CreateSession."""
    certificate = client_certs["trusted"].certificate.read_bytes() if presented != "none" else None
    client = await _client(locked_server, client_certs["untrusted"], BASIC, ENCRYPT, "operator")
    _present_at_create_session(client, certificate)
    assert await _refusal(client) == StatusCodes.BadCertificateInvalid


def test_create_session_certificate_rule_by_channel_mode() -> None:
    garbage = b"not a certificate"  # never parsed on a None channel
    none = ua.MessageSecurityMode.None_
    assert asyncua_patches.channel_client_certificate(none, b"", garbage) is None
    with pytest.raises(ServiceError) as caught:
        asyncua_patches.channel_client_certificate(SIGN, b"", None)
    assert caught.value.code == StatusCodes.BadCertificateInvalid


@module_loop
async def test_server_offers_its_certificate_with_the_application_uri(
    open_server: RunningServer,
) -> None:
    async with Client(open_server.url, timeout=5) as client:
        endpoints = await client.get_endpoints()
    secure = [e for e in endpoints if e.SecurityMode == ENCRYPT]
    assert secure
    cert = x509.load_der_x509_certificate(secure[0].ServerCertificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [APPLICATION_URI]
    assert cert.public_bytes(Encoding.DER) == (open_server.pki / CERTIFICATE_FILE).read_bytes()


def test_certificate_is_created_on_first_start_and_reused(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    cert_path, key_path = ensure_certificate(pki, APPLICATION_URI, "plant-host")
    assert (cert_path, key_path) == (pki / CERTIFICATE_FILE, pki / PRIVATE_KEY_FILE)
    assert (pki / "trusted").is_dir()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_der_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [APPLICATION_URI]
    assert {"plant-host", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    before = (cert_path.read_bytes(), key_path.read_bytes())
    assert ensure_certificate(pki, APPLICATION_URI, "renamed-host") == (cert_path, key_path)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


def test_certificate_is_made_again_with_the_same_key_when_the_uri_changes(tmp_path: Path) -> None:
    cert_path, key_path = ensure_certificate(tmp_path, "urn:other:app", "localhost")
    old_cert, old_key = cert_path.read_bytes(), key_path.read_bytes()
    ensure_certificate(tmp_path, APPLICATION_URI, "localhost")
    assert key_path.read_bytes() == old_key
    assert cert_path.read_bytes() != old_cert


def test_a_broken_private_key_is_an_error_not_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / PRIVATE_KEY_FILE).write_text("not a key")
    with pytest.raises(SecuritySetupError, match="delete it"):
        ensure_certificate(tmp_path, APPLICATION_URI, "localhost")
    assert (tmp_path / PRIVATE_KEY_FILE).read_text() == "not a key"


def test_secure_server_kwargs_holds_what_the_server_constructor_takes(tmp_path: Path) -> None:
    users = [_user("op", "operator")]
    kwargs = secure_server_kwargs(_security(anonymous="off", users=users), tmp_path)
    assert set(kwargs) == {
        "user_manager",
        "permission_ruleset",
        "security_policies",
        "certificate",
        "private_key",
    }
    assert kwargs["certificate"].is_file() and kwargs["private_key"].is_file()
    manager = kwargs["user_manager"]
    user = manager.get_user(None, username="op", password="op", certificate=b"client")
    assert isinstance(user, InvopsUser) and user.identity == ("op", Role.OPERATOR)
    assert user.role is UserRole.User  # never asyncua's Admin: that would bypass write masks
    assert manager.get_user(None, username="op", password="nope", certificate=b"client") is None
    assert manager.get_user(None, certificate=b"client") is None  # anonymous = "off"

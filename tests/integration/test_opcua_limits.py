"""[opcua] limits against hostile clients (issue 12 items 2, 3, 5): the real invops OPC UA
server on an ephemeral 127.0.0.1 port, asyncua clients and raw sockets.

One server for the module, with low limits so that floods stay small (a few hundred
sockets at most) and timeouts short (2 s handshake, 3 s activation). Every socket and
client a test opens is closed by the test (or shown to be closed by the server). Waits
have generous deadlines and assert what happened, never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.common.utils import Buffer
from asyncua.crypto.permission_rules import UserRole
from asyncua.server.binary_server_asyncio import OPCUAProtocol
from asyncua.server.internal_session import SessionState
from asyncua.ua.ua_binary import header_from_binary, struct_from_binary, uatcp_to_binary
from asyncua.ua.uaerrors import UaStatusCodeError

from inventory_core import Ledger, open_ledger
from inventory_core.domain.passwords import hash_password
from invops.config import parse_config
from invops.wiring import opcua_security, opcua_settings
from opcua_server import InvopsOpcUaServer
from opcua_server.limits import CREATE_BATCH, RefusalListener
from opcua_server.security import (
    client_certificate_validator,
    current_user,
    identity_tokens,
    secure_server_kwargs,
)
from tests.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_CONNECTIONS = 20
MAX_SESSIONS = 8
MAX_ANONYMOUS = 3
HANDSHAKE_S = 2.0
ACTIVATION_S = 3.0
MAX_SESSION_TIMEOUT_S = 30.0
MAX_CHUNK = 16384
MAX_MESSAGE = 128 * 1024
MAX_SUBSCRIPTIONS = 3
MAX_ITEMS = 1000
MAX_ANONYMOUS_ITEMS = 1500
DEADLINE_S = 15.0  # for things that happen within a second or two; never asserted on

PLANT = f"""
[site]
enterprise = "ACME"
name = "PLANT1"
areas = ["WAREHOUSE"]

[opcua]
endpoint = "opc.tcp://127.0.0.1:0/invops"
allow_security_none = true
max_connections = {MAX_CONNECTIONS}
max_sessions = {MAX_SESSIONS}
max_anonymous_sessions = {MAX_ANONYMOUS}
handshake_timeout_s = {HANDSHAKE_S}
activation_timeout_s = {ACTIVATION_S}
min_session_timeout_s = 0.5
max_session_timeout_s = {MAX_SESSION_TIMEOUT_S}
max_chunk_size = {MAX_CHUNK}
max_message_size = {MAX_MESSAGE}
max_subscriptions_per_session = {MAX_SUBSCRIPTIONS}
max_monitored_items_per_session = {MAX_ITEMS}
max_anonymous_monitored_items = {MAX_ANONYMOUS_ITEMS}

[[materials]]
id = "GLYCOL"
base_uom = "kg"

[[storage_units]]
id = "WH-401"
area = "WAREHOUSE"
kind = "bin"
capacity = 20000
capacity_uom = "kg"
material = "GLYCOL"

[[users]]
name = "operator"
role = "operator"
password_hash = "{hash_password("operator")}"
"""


@dataclass
class Plant:
    server: InvopsOpcUaServer
    url: str
    port: int
    refusals: Counter[str]

    @property
    def protocols(self) -> list[OPCUAProtocol]:
        bserver = self.server.ua_server.bserver
        assert bserver is not None
        return list(bserver.clients)

    def sessions(self) -> list[Any]:
        return list(self.server.ua_server.iserver._external_sessions.values())

    def activated(self) -> list[Any]:
        return [s for s in self.sessions() if s.state == SessionState.Activated]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plant]:
    tmp = tmp_path_factory.mktemp("limits")
    config = parse_config(_toml(PLANT), environ={})
    url = f"sqlite+aiosqlite:///{tmp}/ledger.db"
    async with open_ledger(url, writer_id="limits-t", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        refusals: Counter[str] = Counter()

        def count(reason: str, n: int) -> None:
            refusals[reason] += n

        server = _server(config, ledger, tmp / "pki", on_refusal=count)
        async with server:
            port = int(server.endpoint_url.rsplit(":", 1)[1].split("/")[0])
            yield Plant(server, server.endpoint_url, port, refusals)


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


def _server(
    config: Any, ledger: Ledger, pki: Path, on_refusal: RefusalListener | None = None
) -> InvopsOpcUaServer:
    access = opcua_security(config)
    security = secure_server_kwargs(access, pki)
    return InvopsOpcUaServer(
        opcua_settings(config),
        ledger,
        on_refusal=on_refusal,
        identity_tokens=identity_tokens(access),
        certificate_validator=client_certificate_validator(pki),
        current_user=current_user,
        freeze_gc=False,
        **security,
    )


@contextlib.asynccontextmanager
async def _sockets(port: int, count: int) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """`count` raw TCP connections that send nothing; all closed on exit."""
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(count):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        yield writers
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def _hello(url: str, buffer_size: int = 65535) -> bytes:
    hello = ua.Hello()
    hello.ReceiveBufferSize = buffer_size
    hello.SendBufferSize = buffer_size
    hello.MaxMessageSize = 0
    hello.MaxChunkCount = 0
    hello.EndpointUrl = url
    return uatcp_to_binary(ua.MessageType.Hello, hello)


def _tcp_messages(data: bytes) -> list[tuple[bytes, Any]]:
    """(message type, decoded body) of every Acknowledge / Error in `data`."""
    found = []
    buf = Buffer(data)
    while len(buf) >= 8:
        header = header_from_binary(buf)
        body = Buffer(buf.read(header.body_size))
        kind = header.MessageType
        if kind == ua.MessageType.Error:
            found.append((kind, struct_from_binary(ua.ErrorMessage, body)))
        elif kind == ua.MessageType.Acknowledge:
            found.append((kind, struct_from_binary(ua.Acknowledge, body)))
        else:
            found.append((kind, None))
    return found


def _client(plant: Plant, user: str | None = None) -> Client:
    client = Client(plant.url, timeout=10)
    if user is not None:
        client.set_user(user)
        client.set_password(user)
    return client


@contextlib.asynccontextmanager
async def _connected(plant: Plant, user: str | None = None) -> AsyncIterator[Client]:
    client = _client(plant, user)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


@contextlib.asynccontextmanager
async def _quiet_session(plant: Plant, timeout_ms: float) -> AsyncIterator[Client]:
    """An anonymous session whose client sends nothing after ActivateSession (no
    keep-alive: the asyncua Client's high-level connect() would start one)."""
    client = _client(plant)
    client.session_timeout = timeout_ms
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        await client.create_session()
        await client.activate_session()
        yield client
    finally:
        client.disconnect_socket()


async def _status_of(call: Awaitable[Any]) -> int:
    with pytest.raises(UaStatusCodeError) as caught:
        await call
    return int(caught.value.code)


# --------------------------------------------------------------------------- item 2: connections


async def test_an_idle_socket_is_closed_after_the_handshake_timeout(plant: Plant) -> None:
    before = plant.refusals["handshake_timeout"]
    reader, writer = await asyncio.open_connection("127.0.0.1", plant.port)
    try:
        assert await _read_until_closed(reader) == b""  # closed by the server, nothing sent
    finally:
        writer.close()
    assert plant.refusals["handshake_timeout"] == before + 1


async def test_a_hello_without_open_secure_channel_is_closed_after_the_handshake_timeout(
    plant: Plant,
) -> None:
    before = plant.refusals["handshake_timeout"]
    reader, writer = await asyncio.open_connection("127.0.0.1", plant.port)
    try:
        writer.write(_hello(plant.url))
        data = await _read_until_closed(reader)
    finally:
        writer.close()
    assert [kind for kind, _ in _tcp_messages(data)] == [ua.MessageType.Acknowledge]
    assert plant.refusals["handshake_timeout"] == before + 1


async def test_a_secure_channel_without_session_is_closed_after_the_activation_timeout(
    plant: Plant,
) -> None:
    before = plant.refusals["activation_timeout"]
    client = _client(plant)
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        peer = client.uaclient.protocol.transport.get_extra_info("sockname")
        assert any(p.peer_name == peer for p in plant.protocols)
        await eventually(
            lambda: not any(p.peer_name == peer for p in plant.protocols), "connection closed"
        )
    finally:
        client.disconnect_socket()
    assert plant.refusals["activation_timeout"] == before + 1


async def test_an_idle_socket_flood_never_holds_more_than_max_connections_and_an_operator_gets_in(
    plant: Plant,
) -> None:
    before = plant.refusals["connection_evicted"]
    async with _sockets(plant.port, 200) as sockets:
        await eventually(lambda: plant.refusals["connection_evicted"] >= before + 1, "evictions")
        assert len(plant.protocols) <= MAX_CONNECTIONS
        async with _connected(plant, "operator") as operator:
            assert len(plant.protocols) <= MAX_CONNECTIONS
            level = operator.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State))
            assert await level.read_value() == ua.ServerState.Running
        assert len(sockets) == 200
    assert plant.refusals["connection_evicted"] >= 200 - MAX_CONNECTIONS


async def test_idle_sockets_never_push_out_a_client_that_has_started_its_handshake(
    plant: Plant,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plant.port)
    peer = writer.get_extra_info("sockname")
    try:
        writer.write(_hello(plant.url))
        [(kind, _)] = _tcp_messages(await reader.read(65536))
        assert kind == ua.MessageType.Acknowledge
        # The oldest connection, but the only one that has said anything: the idle ones
        # arriving after it go first, however many there are.
        async with _sockets(plant.port, 5 * MAX_CONNECTIONS):
            await eventually(lambda: len(plant.protocols) == MAX_CONNECTIONS, "every slot taken")
            assert any(p.peer_name == peer for p in plant.protocols)
    finally:
        writer.close()


async def test_with_anonymous_sessions_at_their_cap_and_idle_sockets_filling_the_rest_an_operator_gets_in(  # noqa: E501
    plant: Plant,
) -> None:
    before = Counter(plant.refusals)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(MAX_ANONYMOUS):
            await stack.enter_async_context(_connected(plant))
        # Anonymous sessions beyond the cap are refused, whatever room there is for others.
        for _ in range(5):
            client = _client(plant)
            status = await _status_of(client.connect())
            assert status == ua.StatusCodes.BadTooManySessions
        anonymous = [s for s in plant.activated() if s.user.role == UserRole.Anonymous]
        assert len(anonymous) == MAX_ANONYMOUS
        await stack.enter_async_context(_sockets(plant.port, 3 * MAX_CONNECTIONS))
        await eventually(lambda: len(plant.protocols) == MAX_CONNECTIONS, "every slot taken")
        operator = await stack.enter_async_context(_connected(plant, "operator"))
        assert [s.user.name for s in plant.activated() if s.user.name == "operator"] == ["operator"]
        assert await operator.nodes.server.read_browse_name() == ua.QualifiedName("Server", 0)
    assert plant.refusals["anonymous_session_limit"] == before["anonymous_session_limit"] + 5
    assert plant.refusals["connection_evicted"] > before["connection_evicted"]


async def test_sessions_are_capped_at_max_sessions_with_users_beyond_the_anonymous_ones(
    plant: Plant,
) -> None:
    before = plant.refusals["session_limit"]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(MAX_SESSIONS - len(plant.activated())):
            await stack.enter_async_context(_connected(plant, "operator"))
        assert len(plant.activated()) == MAX_SESSIONS
        status = await _status_of(_client(plant, "operator").connect())
        assert status == ua.StatusCodes.BadTooManySessions
        assert len(plant.activated()) == MAX_SESSIONS
    assert plant.refusals["session_limit"] == before + 1
    await eventually(lambda: not plant.activated(), "sessions closed")  # a free server again


async def test_session_timeouts_are_clamped_and_an_idle_session_expires_with_its_connection(
    plant: Plant,
) -> None:
    async with _quiet_session(plant, timeout_ms=3_600_000) as client:
        assert client.session_timeout == MAX_SESSION_TIMEOUT_S * 1000  # revised down
    async with _quiet_session(plant, timeout_ms=1000) as client:
        token = client.uaclient.session.authentication_token  # type: ignore[union-attr]
        iserver = plant.server.ua_server.iserver
        assert iserver.lookup_external_session(token).is_activated()
        peer = client.uaclient.protocol.transport.get_extra_info("sockname")
        # No request for the session timeout: the session expires, then its connection.
        await eventually(lambda: iserver.lookup_external_session(token) is None, "session expired")
        await eventually(
            lambda: not any(p.peer_name == peer for p in plant.protocols), "connection closed"
        )


async def test_a_second_create_session_on_a_connection_closes_the_unactivated_first(
    plant: Plant,
) -> None:
    client = _client(plant)
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        first = await client.create_session()
        iserver = plant.server.ua_server.iserver
        assert iserver.lookup_external_session(first.AuthenticationToken) is not None
        second = await client.create_session()
        assert iserver.lookup_external_session(first.AuthenticationToken) is None
        assert iserver.lookup_external_session(second.AuthenticationToken) is not None
    finally:
        client.disconnect_socket()
    await eventually(
        lambda: iserver.lookup_external_session(second.AuthenticationToken) is None,
        "the unactivated session goes with its connection",
    )


# --------------------------------------------------------------------------- item 3: sizes


async def test_a_hello_announcing_4_gib_is_refused_before_its_body_is_buffered(
    plant: Plant,
) -> None:
    before = plant.refusals["message_too_large"]
    hello_4gib = struct.pack("<3scI", b"HEL", b"F", 0xFFFFFFFF)
    # The header alone is answered with an error, and the connection closed.
    reader, writer = await asyncio.open_connection("127.0.0.1", plant.port)
    try:
        writer.write(hello_4gib)
        data = await _read_until_closed(reader)
    finally:
        writer.close()
    [(kind, error)] = _tcp_messages(data)
    assert kind == ua.MessageType.Error
    assert error.Error.value == ua.StatusCodes.BadTcpMessageTooLarge
    # Streaming the body: the server never holds more than one chunk's worth of it.
    reader, writer = await asyncio.open_connection("127.0.0.1", plant.port)
    peer = writer.get_extra_info("sockname")

    def mine() -> list[OPCUAProtocol]:
        return [p for p in plant.protocols if p.peer_name == peer]

    try:
        writer.write(hello_4gib)
        with contextlib.suppress(ConnectionError):
            for _ in range(16):  # 1 MiB of body
                writer.write(b"\0" * 65536)
                await writer.drain()
        # Either the server closed the connection, or it is buffering the body.
        await eventually(
            lambda: not mine() or any(len(p._buffer) > MAX_CHUNK for p in mine()), "settled"
        )
        assert not mine(), f"the server buffered {[len(p._buffer) for p in mine()]} bytes"
    finally:
        writer.close()
    assert plant.refusals["message_too_large"] == before + 2


async def test_after_hello_a_chunk_above_the_negotiated_size_is_refused_from_its_header(
    plant: Plant,
) -> None:
    before = plant.refusals["message_too_large"]
    reader, writer = await asyncio.open_connection("127.0.0.1", plant.port)
    try:
        writer.write(_hello(plant.url, buffer_size=65535))
        ack = await reader.read(65536)
        [(kind, acknowledge)] = _tcp_messages(ack)
        assert kind == ua.MessageType.Acknowledge
        # Both directions at the configured size (asyncua swaps the two fields).
        assert acknowledge.ReceiveBufferSize == acknowledge.SendBufferSize == MAX_CHUNK
        writer.write(struct.pack("<3scII", b"OPN", b"F", MAX_CHUNK + 1, 0))  # header only
        data = await _read_until_closed(reader)
    finally:
        writer.close()
    [(kind, error)] = _tcp_messages(data)
    assert kind == ua.MessageType.Error
    assert error.Error.value == ua.StatusCodes.BadTcpMessageTooLarge
    assert plant.refusals["message_too_large"] == before + 1


async def test_a_request_above_max_message_size_is_refused(plant: Plant) -> None:
    before = plant.refusals["message_too_large"]
    async with _connected(plant) as client:
        state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
        small = await client.read_values([client.get_node(state)] * 10)
        assert small == [ua.ServerState.Running] * 10
        too_many = [client.get_node(state)] * 20_000  # ~300 KiB of ReadValueIds
        with pytest.raises((UaStatusCodeError, ConnectionError, asyncio.TimeoutError)):
            await client.read_values(too_many)
    assert plant.refusals["message_too_large"] == before + 1


# --------------------------------------------------------------------------- item 5: subscriptions


class _Quiet:
    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        pass


def _item_requests(node_id: ua.NodeId, count: int, first_handle: int = 1) -> list[Any]:
    requests = []
    for handle in range(first_handle, first_handle + count):
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = ua.MonitoringParameters(
            ClientHandle=handle, SamplingInterval=100, QueueSize=1, DiscardOldest=True
        )
        requests.append(request)
    return requests


async def _create_items(
    client: Client, subscription_id: int, requests: list[Any]
) -> list[ua.MonitoredItemCreateResult]:
    params = ua.CreateMonitoredItemsParameters(
        SubscriptionId=subscription_id,
        TimestampsToReturn=ua.TimestampsToReturn.Both,
        ItemsToCreate=requests,
    )
    return await client.uaclient.create_monitored_items(params)


async def test_subscriptions_beyond_the_per_session_limit_are_refused(plant: Plant) -> None:
    before = plant.refusals["subscription_limit"]
    async with _connected(plant) as client, _connected(plant) as other:
        for _ in range(MAX_SUBSCRIPTIONS):
            await client.create_subscription(500, _Quiet())
        status = await _status_of(client.create_subscription(500, _Quiet()))
        assert status == ua.StatusCodes.BadTooManySubscriptions
        await other.create_subscription(500, _Quiet())  # the limit is per session
    assert plant.refusals["subscription_limit"] == before + 1


async def test_the_1001st_monitored_item_of_a_session_gets_bad_too_many_monitored_items(
    plant: Plant,
) -> None:
    before = plant.refusals["monitored_item_limit"]
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
    async with _connected(plant) as client:
        first = await client.create_subscription(500, _Quiet())
        second = await client.create_subscription(500, _Quiet())
        results = await _create_items(client, first.subscription_id, _item_requests(state, 600))
        assert all(r.StatusCode.is_good() for r in results)
        # The limit counts every subscription of the session: 400 more fit, the rest not.
        results = await _create_items(
            client, second.subscription_id, _item_requests(state, 402, first_handle=601)
        )
        codes = [r.StatusCode.value for r in results]
        assert codes[:400] == [ua.StatusCodes.Good] * 400
        assert codes[400:] == [ua.StatusCodes.BadTooManyMonitoredItems] * 2
    assert plant.refusals["monitored_item_limit"] == before + 2


async def test_anonymous_sessions_share_one_pool_of_monitored_items_users_do_not(
    plant: Plant,
) -> None:
    before = Counter(plant.refusals)
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
    async with (
        _connected(plant) as first,
        _connected(plant) as second,
        _connected(plant, "operator") as operator,
    ):
        subscriptions = [await c.create_subscription(500, _Quiet()) for c in (first, second)]
        results = await _create_items(
            first, subscriptions[0].subscription_id, _item_requests(state, MAX_ITEMS)
        )
        assert all(r.StatusCode.is_good() for r in results)
        results = await _create_items(
            second, subscriptions[1].subscription_id, _item_requests(state, 600)
        )
        codes = [r.StatusCode.value for r in results]
        room = MAX_ANONYMOUS_ITEMS - MAX_ITEMS
        assert codes == [ua.StatusCodes.Good] * room + [ua.StatusCodes.BadTooManyMonitoredItems] * (
            600 - room
        )
        mine = await operator.create_subscription(500, _Quiet())
        results = await _create_items(operator, mine.subscription_id, _item_requests(state, 900))
        assert all(r.StatusCode.is_good() for r in results)
    refused = plant.refusals["anonymous_monitored_item_limit"]
    assert refused == before["anonymous_monitored_item_limit"] + 600 - room
    assert plant.refusals["monitored_item_limit"] == before["monitored_item_limit"]


async def test_concurrent_anonymous_requests_get_exactly_the_pool(plant: Plant) -> None:
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(_connected(plant)) for _ in range(MAX_ANONYMOUS)]
        subscriptions = [await c.create_subscription(500, _Quiet()) for c in clients]
        each = MAX_ANONYMOUS_ITEMS // MAX_ANONYMOUS + 100  # together 300 more than the pool
        answers = await asyncio.gather(
            *(
                _create_items(c, s.subscription_id, _item_requests(state, each))
                for c, s in zip(clients, subscriptions, strict=True)
            )
        )
        good = sum(r.StatusCode.is_good() for results in answers for r in results)
        assert good == MAX_ANONYMOUS_ITEMS


async def test_items_cannot_be_added_to_another_sessions_subscription(plant: Plant) -> None:
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
    async with _connected(plant) as owner, _connected(plant) as intruder:
        subscription = await owner.create_subscription(500, _Quiet())
        status = await _status_of(
            _create_items(intruder, subscription.subscription_id, _item_requests(state, 1))
        )
        assert status == ua.StatusCodes.BadSubscriptionIdInvalid
        results = await _create_items(owner, subscription.subscription_id, _item_requests(state, 1))
        assert results[0].StatusCode.is_good()


async def test_creating_many_items_yields_to_the_event_loop_between_batches(plant: Plant) -> None:
    """A probe task on the server's event loop runs between the batches: it sees the
    count of monitored items grow step by step (asyncua made all of them in one step)."""
    subscriptions = plant.server.ua_server.iserver.subscription_service.subscriptions
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
    seen: list[int] = []

    def items() -> int:
        return sum(len(s.monitored_item_srv._monitored_items) for s in subscriptions.values())

    async def probe() -> None:
        while True:
            seen.append(items())
            await asyncio.sleep(0)

    async with _connected(plant) as client:
        subscription = await client.create_subscription(500, _Quiet())
        start = items()
        task = asyncio.create_task(probe())
        try:
            results = await _create_items(
                client, subscription.subscription_id, _item_requests(state, MAX_ITEMS)
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert all(r.StatusCode.is_good() for r in results)
        end = start + MAX_ITEMS
        steps = sorted({n for n in seen if start < n < end})
        assert len(steps) >= MAX_ITEMS // CREATE_BATCH - 1, steps
        bounds = [start, *steps, end]
        assert all(b - a <= CREATE_BATCH for a, b in itertools.pairwise(bounds))


# --------------------------------------------------------------------------- back-pressure


class _FakeTransport:
    """Just enough of an asyncio transport for OPCUAProtocol (no socket)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True


async def test_reading_pauses_while_more_than_max_message_size_waits_to_be_processed(
    plant: Plant,
) -> None:
    bserver = plant.server.ua_server.bserver
    assert bserver is not None
    protocol = bserver._make_protocol()
    transport = _FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    try:
        # Complete chunks (junk inside: the processor refuses each one later) arriving in
        # one read, before the connection's task had a chance to run.
        chunk = struct.pack("<3scII", b"MSG", b"C", MAX_CHUNK, 0) + b"\0" * (MAX_CHUNK - 12)
        protocol.data_received(chunk * (MAX_MESSAGE // MAX_CHUNK + 1))
        assert transport.calls == ["pause"]
        await eventually(lambda: protocol.messages.empty(), "queue drained")
        await eventually(lambda: transport.calls == ["pause", "resume"], "reading resumed")
    finally:
        protocol.connection_lost(None)

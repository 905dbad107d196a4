"""asyncua patches: the cheaper monitored-item copy keeps asyncua's guarantee (stored
values never change), the notification encoder writes exactly asyncua's bytes, the
asyncua code under the patches is fingerprinted, and another asyncua release is left
alone (and refused to the OPC UA server)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.server.monitored_item_service import MonitoredItemValues
from asyncua.ua import ua_binary
from asyncua.ua.status_codes import StatusCodes
from hypothesis import given
from hypothesis import strategies as st

from opcua_server import OpcuaServerError, asyncua_patches
from opcua_server.asyncua_patches import data_change
from opcua_server.limits import ServerLimits
from tests.asyncua_versions import other_asyncua_release
from tests.log_events import events

ROOT = Path(__file__).resolve().parents[2]


def test_scalar_values_are_stored_as_independent_copies() -> None:
    asyncua_patches.apply()
    values = MonitoredItemValues()
    written = ua.DataValue(ua.Variant(1.5, ua.VariantType.Double))
    values.set_current_datavalue(written)
    written.Value.Value = 99.0  # a careless writer mutating its object afterwards
    stored = values.get_current_datavalue()
    assert stored is not None and stored.Value is not None
    assert stored.Value.Value == 1.5
    values.set_current_datavalue(ua.DataValue(ua.Variant(2.5, ua.VariantType.Double)))
    old = values.get_old_datavalue()
    assert old is not None and old.Value is not None and old.Value.Value == 1.5


def test_arrays_are_still_deep_copied() -> None:
    asyncua_patches.apply()
    values = MonitoredItemValues()
    written = ua.DataValue(ua.Variant([1.0, 2.0], ua.VariantType.Double))
    values.set_current_datavalue(written)
    written.Value.Value.append(3.0)
    stored = values.get_current_datavalue()
    assert stored is not None and stored.Value is not None
    assert stored.Value.Value == [1.0, 2.0]


# --- notification encoder ------------------------------------------------------------

_TIMES = st.none() | st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_VARIANTS = st.one_of(
    st.none(),
    st.just(ua.Variant()),
    st.floats(allow_nan=False).map(lambda v: ua.Variant(v, ua.VariantType.Double)),
    st.text(max_size=20).map(lambda v: ua.Variant(v, ua.VariantType.String)),
    st.booleans().map(lambda v: ua.Variant(v, ua.VariantType.Boolean)),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: ua.Variant(v, ua.VariantType.Int32)),
    st.lists(st.floats(allow_nan=False), max_size=4).map(
        lambda v: ua.Variant(v, ua.VariantType.Double)
    ),
)
_STATUS = st.none() | st.sampled_from(
    [StatusCodes.Good, StatusCodes.UncertainLastUsableValue, StatusCodes.BadNoCommunication]
).map(ua.StatusCode)


@given(
    handle=st.integers(0, 2**32 - 1),
    variant=_VARIANTS,
    status=_STATUS,
    source=_TIMES,
    server=_TIMES,
    picos=st.none() | st.integers(0, 9999),
)
def test_notification_encoder_matches_asyncua_byte_for_byte(
    handle: int,
    variant: ua.Variant | None,
    status: ua.StatusCode | None,
    source: datetime | None,
    server: datetime | None,
    picos: int | None,
) -> None:
    dv = ua.DataValue(variant, status, source, server)
    dv.Value = variant  # DataValue(None) would make an empty Variant: keep None too
    dv.SourcePicoseconds = picos
    item = ua.MonitoredItemNotification(ClientHandle=handle, Value=dv)
    generic = ua_binary.create_dataclass_serializer(ua.MonitoredItemNotification)
    assert data_change.notification_to_binary(item) == generic(item)


@pytest.fixture
def encoder_calls() -> Iterator[list[ua.MonitoredItemNotification]]:
    """Every notification the patch's encoder encodes while the test runs."""
    calls: list[ua.MonitoredItemNotification] = []
    encode = data_change.notification_to_binary

    def counted(item: ua.MonitoredItemNotification) -> bytes:
        calls.append(item)
        return encode(item)

    asyncua_patches.restore()  # the encoders asyncua built drop the encoder they hold
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(data_change, "notification_to_binary", counted)
            asyncua_patches.apply()
            yield calls
    finally:
        asyncua_patches.restore()
        asyncua_patches.apply()  # the encoders hold the real encoder again


def test_published_notifications_use_the_encoder_and_decode_back(
    encoder_calls: list[ua.MonitoredItemNotification],
) -> None:
    """The server's publish path (a PublishResponse, the DataChangeNotification in it as
    an ExtensionObject) encodes each notification with the patch's encoder, and a client
    decodes what it wrote."""
    ua_binary.struct_to_binary(_publish_response(ClientHandle=1))  # encoders built here
    encoder_calls.clear()
    response = _publish_response(ClientHandle=7)
    data = ua_binary.struct_to_binary(response)
    assert [item.ClientHandle for item in encoder_calls] == [7, 8]
    decoded = ua_binary.struct_from_binary(ua.PublishResponse, ua.utils.Buffer(data))
    (change,) = decoded.Parameters.NotificationMessage.NotificationData
    assert [(i.ClientHandle, i.Value.Value.Value) for i in change.MonitoredItems] == [
        (7, 42.5),
        (8, "full"),
    ]
    assert decoded == response


def _publish_response(ClientHandle: int) -> ua.PublishResponse:
    change = ua.DataChangeNotification()
    now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    change.MonitoredItems = [
        ua.MonitoredItemNotification(
            ClientHandle=ClientHandle,
            Value=ua.DataValue(ua.Variant(42.5, ua.VariantType.Double), ua.StatusCode(0), now),
        ),
        ua.MonitoredItemNotification(
            ClientHandle=ClientHandle + 1,
            Value=ua.DataValue(ua.Variant("full", ua.VariantType.String), ua.StatusCode(0)),
        ),
    ]
    response = ua.PublishResponse()
    response.Parameters.SubscriptionId = 1
    response.Parameters.NotificationMessage.SequenceNumber = 1
    response.Parameters.NotificationMessage.NotificationData = [change]
    return response


# --- fingerprints of the asyncua code the patches copy, wrap or rely on ------------------
#
# Every entry of `asyncua_patches.upstream()`: its dotted name, the sha256 of its source in
# asyncua 2.1.0, and which patch module uses it how ("copied": the patch is a copy of it
# with changes; "wrapped": the patch calls it around its own code; "relied on": the
# patch reproduces or depends on what it does). Each module's UPSTREAM says why. A new
# asyncua release changes some of these: read each function the failure names against
# the patch that uses it, adapt the patch, then update its line here and re-pin
# (PINNED_VERSION, pyproject.toml).
UPSTREAM = {
    "asyncua.server.uaprocessor.UaProcessor._process_message": (
        "029ff357dd3bdd16a53eec2a830fdc0660d2c1736123715255f7e3dead8ae11b",
        ("sessions: wrapped",),
    ),
    "asyncua.server.internal_session.InternalSession.create_session": (
        "b588ef2ca1d2d98fb20639eb23d4bfb420674f970403314fb8ab4af35fc2090c",
        ("sessions: wrapped",),
    ),
    "asyncua.server.internal_session.InternalSession.activate_session": (
        "cfe664a2bb572c9ffecfc1339759eadadec32eb82fc69df940a043019d9948fd",
        ("auth: relied on", "limits: wrapped"),
    ),
    "asyncua.server.internal_server.InternalServer.decrypt_user_token": (
        "3f4ac207891e1cfd45cdaa03f9039613ff1809097214aec5a3ee5cc10728b29e",
        ("auth: relied on",),
    ),
    "asyncua.server.binary_server_asyncio.OPCUAProtocol.connection_made": (
        "67ce5af61202da4f182b64338e3396e63163c11010dfb4e14fd1472e99132e4b",
        ("limits: wrapped",),
    ),
    "asyncua.server.binary_server_asyncio.OPCUAProtocol.connection_lost": (
        "f5e287852bda01095f428c633e10e37a6c9e3e1832fa1990aea642027f791d58",
        ("limits: wrapped",),
    ),
    "asyncua.server.binary_server_asyncio.OPCUAProtocol.data_received": (
        "bacb98f07f0b63ff2d74c3e485602ee59deec813e1593425dc000d5a15b98112",
        ("limits: copied",),
    ),
    "asyncua.server.binary_server_asyncio.OPCUAProtocol._process_one_msg": (
        "c2162392f00a7272279f8f71acb19c6669bf00e9cc211aad54a18503460e417c",
        ("limits: wrapped",),
    ),
    "asyncua.server.internal_session.InternalSession.create_subscription": (
        "3cc1876d55cae81051f1ebd0d504208a2a8d16bf550cef69d23485818caeafdc",
        ("limits: wrapped",),
    ),
    "asyncua.server.internal_session.InternalSession.create_monitored_items": (
        "65301bafcb5825018c9a94e807e1c4c2a2b4c58c2b9de990933c08ee1df76465",
        ("limits: wrapped",),
    ),
    "asyncua.common.connection.TransportLimits.is_msg_size_within_limit": (
        "a03ae930217d4ba5ada36ae65c61d6d96da50d19edb64ccd0a9d621a96600b51",
        ("limits: wrapped",),
    ),
    "asyncua.common.connection.TransportLimits.is_chunk_count_within_limit": (
        "64f14dff64175823329de7d98f65cfe48536df8e5b0fcd0c48fe1144251650c5",
        ("limits: wrapped",),
    ),
    "asyncua.common.connection.SecureConnection._receive": (
        "e24031f2ed2f65f67b06cc2a9732e4b796d9c09db1b31535bce7dcec01728469",
        ("limits: relied on",),
    ),
    "asyncua.server.monitored_item_service.MonitoredItemValues.set_current_datavalue": (
        "df9d5e87226514b2e2512f5a9f4e1a54f350b6f0e57b890b4dcfc1d5d2c731d5",
        ("data_change: wrapped",),
    ),
    "asyncua.server.monitored_item_service.MonitoredItemService.datachange_callback": (
        "d4468698f4d16058fe297b56f9900b9cd5883027bda8c94ce90b724c9045ea3b",
        ("data_change: copied",),
    ),
    "asyncua.ua.ua_binary.create_type_serializer": (
        "35563aa410ce475c4848a15502364209f4657dafff783b0e1336ad39ec15cc36",
        ("data_change: wrapped",),
    ),
    "asyncua.ua.ua_binary.create_dataclass_serializer": (
        "76225d0ea8f294b2bd3a12f4a798db6b7766cafb77b3456466bfa8361cc1974d",
        ("data_change: relied on",),
    ),
    "asyncua.ua.ua_binary.create_list_serializer": (
        "3c1cfc433f0a0df7621beedc3e59836e201aa5e1a885057df0938611698df7fd",
        ("data_change: relied on",),
    ),
    "asyncua.ua.uatypes.DataValue": (
        "bf227d3a7e2eb5efd14b881ebe1bff06fbfd9b557cbc8473d5a3ab4a662de517",
        ("data_change: relied on",),
    ),
    "asyncua.ua.uaprotocol_auto.MonitoredItemNotification": (
        "992c48085931cd6c44791b40fed1d393d3eabe70a0e2545514542746c025dc3c",
        ("data_change: relied on",),
    ),
    "asyncua.server.address_space.NodeManagementService._add_node": (
        "6abfea3019376a048215369af004c2cfa032f281af2590f36ffc2b93ab61b0f9",
        ("nodes: copied",),
    ),
    "asyncua.server.address_space.NodeManagementService._add_node_attributes": (
        "52f339c11e611cd036cfd681f08b00924efeb897ca994e48a321fc55df8eb2f0",
        ("nodes: copied",),
    ),
    "asyncua.server.address_space.NodeManagementService._add_nodeattributes": (
        "0c9490901a2e4b2a7cb4c61d6cce6507b550bbeae2f4dc6dd2e5ce9f67270cfe",
        ("nodes: copied",),
    ),
    "asyncua.server.address_space.NodeManagementService._add_ref_to_parent": (
        "b363eaf3105d579e7ca214de2ec36e5d364d9d08c7858d100b4b8647f3f1b835",
        ("nodes: wrapped",),
    ),
    "asyncua.server.address_space.NodeManagementService._add_type_definition": (
        "59047cdc3008bf7d551e7cab0099c55d0c5b4af6eaf40dbe7c67431a6a0a8a6d",
        ("nodes: wrapped",),
    ),
    "asyncua.server.address_space.NodeManagementService._add_reference_no_check": (
        "f880ddf4a8ad7928b8f38fdb5f56a2798c7a317356a1c5d7e6760f45c73b0f1b",
        ("nodes: relied on",),
    ),
    "asyncua.server.address_space.AddressSpace.write_attribute_value": (
        "5887d38687e80d6721ce9ea4ea23e74ad6d0254cfa21ee214b470ea1d4915c57",
        ("nodes: wrapped",),
    ),
    "asyncua.server.address_space.AddressSpace.add_datachange_callback": (
        "afb2b5eeec48d3328f97959c79043ac16ed5861e81acdc7b4cffbf3c0091517d",
        ("nodes: wrapped",),
    ),
    "asyncua.server.address_space.AddressSpace.set_attribute_value_callback": (
        "2ca2f7fb31a3dc79df9ddd7d1809a16ead14a09914d18a529c982adb02905d0d",
        ("nodes: wrapped",),
    ),
    "asyncua.server.address_space.AddressSpace.set_attribute_value_setter": (
        "1b8fdf584e8a115768074bd4d9dfb8dc32b28c4585c34825be3e664481f1baef",
        ("nodes: wrapped",),
    ),
    "asyncua.server.address_space.AttributeService.write": (
        "5a6028729a9239e7d174190c3b3c8a3b05146fc3989d405121d4fcdebf047d9e",
        ("writes: wrapped",),
    ),
    "asyncua.common.instantiate_util._instantiate_node": (
        "c1581a5580f01bff8b07e4659b6065a0ed8f4c38f1fa234265999f9f2de965cc",
        ("instantiate: wrapped",),
    ),
}


def _fingerprint(function: object) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()  # type: ignore[arg-type]


def test_the_asyncua_code_under_the_patches_is_the_code_they_were_written_for() -> None:
    found = {
        name: (_fingerprint(function), uses)
        for name, (function, uses) in asyncua_patches.upstream().items()
    }
    changed = sorted(
        name for name in found.keys() | UPSTREAM.keys() if found.get(name) != UPSTREAM.get(name)
    )
    assert not changed, "asyncua code under the patches changed (or gone): " + ", ".join(changed)


# --- version policy ------------------------------------------------------------------


def _at(name: str) -> object:
    """What a dotted name (module path, then attributes) points at now."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise LookupError(name)


def test_the_pin_is_the_version_the_patches_are_written_for() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("asyncua")]
    assert pins == [f"asyncua=={asyncua_patches.PINNED_VERSION}"]
    assert asyncua_patches.installed_version() == asyncua_patches.PINNED_VERSION
    assert asyncua_patches.apply() and asyncua_patches.applied()


def test_another_release_is_left_alone_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with other_asyncua_release("2.2.0"), caplog.at_level(logging.WARNING):
        assert not asyncua_patches.apply()
        assert not asyncua_patches.apply()  # the service calls it more than once
        assert not asyncua_patches.applied()
        changed = [
            name
            for name, (original, _) in asyncua_patches.upstream().items()
            if _at(name) is not original
        ]
        assert changed == []
    assert [r.levelno for r in caplog.records if r.name == asyncua_patches.__name__] == [
        logging.WARNING
    ]
    assert events(caplog.records, logger=asyncua_patches.__name__) == [
        {
            "event": "asyncua_patches_not_applied",
            "found": "2.2.0",
            "expected": "2.1.0",
            "path": "the unpatched (slower) path runs",
            "opcua_server": "refuses to start",
        }
    ]
    assert asyncua_patches.applied()  # the block's end applied them again


def test_a_server_on_another_release_is_refused_before_it_is_touched() -> None:
    server = Server()
    before = (server.iserver.max_connections, server.limits)
    with (
        other_asyncua_release("2.2.0"),
        pytest.raises(asyncua_patches.UnpatchedAsyncua) as refused,
    ):
        asyncua_patches.install_limits(server, ServerLimits(), lambda reason, n: None)
    message = str(refused.value)
    assert "asyncua 2.2.0 is installed" in message
    assert "pip install asyncua==2.1.0" in message
    assert "certificate trust list" in message
    assert isinstance(refused.value, OpcuaServerError)  # the CLI prints it as one line
    assert (server.iserver.max_connections, server.limits) == before


# --- connection and session limits ----------------------------------------------------


def test_a_refusal_flood_logs_one_line_per_reason_and_minute_and_counts_every_one(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[tuple[str, int]] = []
    guard = asyncua_patches.limits._Guard(
        ServerLimits(), lambda reason, n: counted.append((reason, n))
    )
    now = [1000.0]
    monkeypatch.setattr(asyncua_patches.limits.time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=asyncua_patches.limits.__name__):
        for _ in range(500):
            guard.refused("connection_evicted")
        guard.refused("handshake_timeout")
        now[0] += 61
        guard.refused("connection_evicted", 2)
    metric = "invops_opcua_refusals_total"
    assert events(caplog.records) == [
        {
            "event": "opcua_limit_refusals",
            "reason": "connection_evicted",
            "count": 1,
            "metric": metric,
        },
        {
            "event": "opcua_limit_refusals",
            "reason": "handshake_timeout",
            "count": 1,
            "metric": metric,
        },
        {
            "event": "opcua_limit_refusals",
            "reason": "connection_evicted",
            "count": 501,
            "metric": metric,
        },
    ]
    assert sum(n for reason, n in counted if reason == "connection_evicted") == 502

"""asyncua patches: the cheaper monitored-item copy keeps asyncua's guarantee (stored
values never change), and the notification encoder writes exactly asyncua's bytes."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.common.connection import SecureConnection, TransportLimits
from asyncua.server.internal_server import InternalServer
from asyncua.server.monitored_item_service import MonitoredItemValues
from asyncua.ua import ua_binary
from asyncua.ua.status_codes import StatusCodes
from hypothesis import given
from hypothesis import strategies as st

from opcua_server import OpcuaServerError, asyncua_patches
from opcua_server.limits import ServerLimits
from tests.asyncua_versions import other_asyncua_release

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
    assert asyncua_patches.data_change.notification_to_binary(item) == generic(item)


async def test_published_notifications_use_the_encoder_and_decode_back() -> None:
    """The server's publish path picks the encoder up, and a client decodes it."""
    asyncua_patches.apply()
    change = ua.DataChangeNotification()
    dv = ua.DataValue(ua.Variant(42.5, ua.VariantType.Double), ua.StatusCode(0))
    change.MonitoredItems = [ua.MonitoredItemNotification(ClientHandle=7, Value=dv)]
    data = ua_binary.struct_to_binary(change)
    decoded = ua_binary.struct_from_binary(ua.DataChangeNotification, ua.utils.Buffer(data))
    assert decoded.MonitoredItems[0].ClientHandle == 7
    assert decoded.MonitoredItems[0].Value.Value.Value == 42.5


# The CreateSession fix wraps these two asyncua functions and relies on what they do
# (one request served start to finish in the connection's task; ClientCertificate used
# only for the validator). The ActivateSession user check reads the request as
# `activate_session` does (null token = anonymous, supported token types, the user token
# decrypted with `decrypt_user_token` and the session's nonce, then `get_user` called
# without an await). A new asyncua release must be read again before re-pinning.
UPSTREAM_FINGERPRINTS = {
    "UaProcessor._process_message": (
        "029ff357dd3bdd16a53eec2a830fdc0660d2c1736123715255f7e3dead8ae11b"
    ),
    "InternalSession.create_session": (
        "b588ef2ca1d2d98fb20639eb23d4bfb420674f970403314fb8ab4af35fc2090c"
    ),
    "InternalSession.activate_session": (
        "cfe664a2bb572c9ffecfc1339759eadadec32eb82fc69df940a043019d9948fd"
    ),
    "InternalServer.decrypt_user_token": (
        "3f4ac207891e1cfd45cdaa03f9039613ff1809097214aec5a3ee5cc10728b29e"
    ),
}


def test_wrapped_asyncua_code_is_the_code_the_patch_was_written_for() -> None:
    originals = (
        asyncua_patches.sessions._original_process_message,
        asyncua_patches.sessions._original_create_session,
        asyncua_patches.limits._original_activate_session,
        InternalServer.decrypt_user_token,
    )
    found = {
        f.__qualname__: hashlib.sha256(inspect.getsource(f).encode()).hexdigest() for f in originals
    }
    assert found == UPSTREAM_FINGERPRINTS


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
    records = [r for r in caplog.records if r.name == asyncua_patches.__name__]
    assert len(records) == 1
    assert records[0].msg.startswith("asyncua_patches_not_applied found=%s expected=%s path=%s")
    assert records[0].args == (
        "2.2.0",
        "2.1.0",
        "the unpatched (slower) path runs",
        "refuses to start",
    )
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
# `data_received` is a copy of asyncua's with two additions; the others are wrapped and
# rely on what the originals do (connection_made refuses at max_connections and sets
# `transport` only when it accepts; activate_session's first activation is the one from
# SessionState.Created; the create functions take the session's parameters as they are;
# the transport limits' checks are the two size checks SecureConnection._receive calls).
LIMIT_FINGERPRINTS = {
    "OPCUAProtocol.connection_made": (
        "67ce5af61202da4f182b64338e3396e63163c11010dfb4e14fd1472e99132e4b"
    ),
    "OPCUAProtocol.connection_lost": (
        "f5e287852bda01095f428c633e10e37a6c9e3e1832fa1990aea642027f791d58"
    ),
    "OPCUAProtocol.data_received": (
        "bacb98f07f0b63ff2d74c3e485602ee59deec813e1593425dc000d5a15b98112"
    ),
    "OPCUAProtocol._process_one_msg": (
        "c2162392f00a7272279f8f71acb19c6669bf00e9cc211aad54a18503460e417c"
    ),
    "InternalSession.activate_session": (
        "cfe664a2bb572c9ffecfc1339759eadadec32eb82fc69df940a043019d9948fd"
    ),
    "InternalSession.create_subscription": (
        "3cc1876d55cae81051f1ebd0d504208a2a8d16bf550cef69d23485818caeafdc"
    ),
    "InternalSession.create_monitored_items": (
        "65301bafcb5825018c9a94e807e1c4c2a2b4c58c2b9de990933c08ee1df76465"
    ),
    "TransportLimits.is_msg_size_within_limit": (
        "a03ae930217d4ba5ada36ae65c61d6d96da50d19edb64ccd0a9d621a96600b51"
    ),
    "TransportLimits.is_chunk_count_within_limit": (
        "64f14dff64175823329de7d98f65cfe48536df8e5b0fcd0c48fe1144251650c5"
    ),
    "SecureConnection._receive": (
        "e24031f2ed2f65f67b06cc2a9732e4b796d9c09db1b31535bce7dcec01728469"
    ),
}


def _limit_originals() -> dict[str, str]:
    originals = (
        asyncua_patches.limits._original_connection_made,
        asyncua_patches.limits._original_connection_lost,
        asyncua_patches.limits._original_data_received,
        asyncua_patches.limits._original_process_one_msg,
        asyncua_patches.limits._original_activate_session,
        asyncua_patches.limits._original_session_create_subscription,
        asyncua_patches.limits._original_session_create_monitored_items,
        TransportLimits.is_msg_size_within_limit,
        TransportLimits.is_chunk_count_within_limit,
        SecureConnection._receive,
    )
    return {
        f.__qualname__: hashlib.sha256(inspect.getsource(f).encode()).hexdigest() for f in originals
    }


def test_asyncua_code_the_limits_wrap_is_the_code_they_were_written_for() -> None:
    assert _limit_originals() == LIMIT_FINGERPRINTS


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
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "opcua_limit_refusals reason=connection_evicted count=1 (see invops_opcua_refusals_total)",
        "opcua_limit_refusals reason=handshake_timeout count=1 (see invops_opcua_refusals_total)",
        "opcua_limit_refusals reason=connection_evicted count=501 "
        "(see invops_opcua_refusals_total)",
    ]
    assert sum(n for reason, n in counted if reason == "connection_evicted") == 502

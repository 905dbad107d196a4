"""[opcua] limits: defaults, ranges and consistency checks name the key; the server's
limits are the config's."""

from __future__ import annotations

from typing import Any

import pytest

from invops.config import ConfigError, OpcuaConfig, parse_config
from invops.wiring import server_limits
from opcua_server.limits import ServerLimits

NO_ENV: dict[str, str] = {}


def minimal(**opcua: Any) -> dict[str, Any]:
    return {
        "site": {"enterprise": "ACME", "name": "PLANT1", "areas": ["TANKFARM"]},
        "opcua": opcua,
    }


def problems(**opcua: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(**opcua), environ=NO_ENV)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_the_defaults_keep_sessions_below_connections_and_anonymous_below_sessions() -> None:
    opcua = parse_config(minimal(), environ=NO_ENV).opcua
    assert opcua.max_anonymous_sessions < opcua.max_sessions < opcua.max_connections
    assert opcua.handshake_timeout_s == 5.0
    assert opcua.max_chunk_size == 65535
    assert opcua.max_message_size == 2 * 1024 * 1024


def test_the_server_limits_are_the_configured_ones_with_the_same_defaults() -> None:
    assert server_limits(OpcuaConfig()) == ServerLimits()
    config = parse_config(
        minimal(max_connections=30, max_sessions=20, max_anonymous_sessions=0), environ=NO_ENV
    )
    limits = server_limits(config.opcua)
    assert (limits.max_connections, limits.max_sessions, limits.max_anonymous_sessions) == (
        30,
        20,
        0,
    )


@pytest.mark.parametrize(
    ("opcua", "path", "needle"),
    [
        ({"max_sessions": 100}, "opcua.max_sessions", "below max_connections (100)"),
        ({"max_anonymous_sessions": 50}, "opcua.max_anonymous_sessions", "below max_sessions"),
        (
            {"min_session_timeout_s": 600},
            "opcua.min_session_timeout_s",
            "at most max_session_timeout_s (300)",
        ),
        (
            {"max_message_size": 16384, "max_chunk_size": 65535},
            "opcua.max_message_size",
            "at least max_chunk_size (65535)",
        ),
        ({"max_chunk_size": 1024}, "opcua.max_chunk_size", "8192"),
        ({"handshake_timeout_s": 0}, "opcua.handshake_timeout_s", "greater than 0"),
        (
            {"handshake_timeout_s": 20},
            "opcua.handshake_timeout_s",
            "at most activation_timeout_s (10)",
        ),
        ({"max_connections": "many"}, "opcua.max_connections", "integer"),
        ({"max_monitored_items_per_session": 0}, "opcua.max_monitored_items_per_session", "1"),
        ({"max_subscription_per_session": 5}, "opcua.max_subscription_per_session", "unknown"),
    ],
)
def test_bad_limits_name_the_key(opcua: dict[str, Any], path: str, needle: str) -> None:
    found = problems(**opcua)
    assert path in found, found
    assert needle in found[path]


def test_every_inconsistent_limit_is_reported_at_once() -> None:
    found = problems(max_connections=10, max_sessions=10, max_anonymous_sessions=10)
    assert {"opcua.max_sessions", "opcua.max_anonymous_sessions"} <= set(found)


def test_server_limits_refuse_an_inconsistent_set_built_in_code() -> None:
    with pytest.raises(ValueError, match="max_sessions must be below max_connections"):
        ServerLimits(max_connections=10, max_sessions=10)
    assert ServerLimits(max_message_size=1 << 20).max_chunk_count == 129

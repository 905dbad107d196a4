"""The tables of what invops serves: `[opcua]` (endpoint, security, client limits)
and `[metrics]` (an HTTP listener).

Apart from the plant tables in `schema` because they describe this process's
servers, not the plant, and are read by other code (OPC UA, HTTP).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Final

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from invops.config.fields import (
    DEFAULT_API_LISTEN,
    DEFAULT_CERTIFICATE_DIR,
    DEFAULT_METRICS_LISTEN,
    DEFAULT_OPCUA_ENDPOINT,
    ConfigModel,
    Directory,
    ListenAddress,
    OpcuaEndpoint,
)

__all__ = [
    "SECURE_POLICIES",
    "AnonymousAccess",
    "AnonymousApi",
    "ApiConfig",
    "HttpListenerConfig",
    "MetricsConfig",
    "OpcuaConfig",
    "SecurityPolicyName",
]


class SecurityPolicyName(StrEnum):
    """OPC UA security policy and message security mode of one endpoint (SPEC §4)."""

    NONE = "None"
    BASIC256SHA256_SIGN = "Basic256Sha256_Sign"
    BASIC256SHA256_SIGN_AND_ENCRYPT = "Basic256Sha256_SignAndEncrypt"
    AES256_SHA256_RSAPSS_SIGN = "Aes256_Sha256_RsaPss_Sign"
    AES256_SHA256_RSAPSS_SIGN_AND_ENCRYPT = "Aes256_Sha256_RsaPss_SignAndEncrypt"


SECURE_POLICIES: Final[tuple[SecurityPolicyName, ...]] = tuple(
    p for p in SecurityPolicyName if p is not SecurityPolicyName.NONE
)


def _secure_policies() -> list[SecurityPolicyName]:
    return list(SECURE_POLICIES)


class AnonymousAccess(StrEnum):
    """What a session without user name may do: browse and read, or nothing at all."""

    READ = "read"
    OFF = "off"


class OpcuaConfig(ConfigModel):
    """`[opcua]`: the OPC UA server endpoint and its security.

    `security_policies` defaults to the four secure policies, plus `None` when
    `allow_security_none` is true. `certificate_dir` holds the server's own
    certificate and key (created on first start) and `trusted/` client certificates.
    """

    endpoint: OpcuaEndpoint = DEFAULT_OPCUA_ENDPOINT
    allow_security_none: StrictBool = False
    security_policies: list[SecurityPolicyName] = Field(default_factory=_secure_policies)
    anonymous: AnonymousAccess = AnonymousAccess.READ
    certificate_dir: Directory = DEFAULT_CERTIFICATE_DIR
    # PLC-backed analog values change in OPC UA only by more than this % of their
    # EURange (or with their status): reading noise costs no write or notification.
    value_deadband_pct: Annotated[float, Field(ge=0, le=10)] = 0.1
    # Password logins (issue 12): failures per user name / per client address within
    # the window before a lockout; lockouts double per episode up to the cap; the
    # answer to a failure waits the delay (doubling, at most 4x); scrypt checks at once
    # in their own threads, and attempts that may wait for one.
    login_max_failures: StrictInt = Field(default=5, ge=1, le=1000)
    login_source_max_failures: StrictInt = Field(default=20, ge=1, le=100_000)
    login_failure_window_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    login_lockout_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    login_lockout_max_s: Annotated[float, Field(gt=0, le=604_800)] = 3600.0
    login_failure_delay_s: Annotated[float, Field(ge=0, le=10)] = 0.5
    login_concurrency: StrictInt = Field(default=1, ge=1, le=64)
    login_queue: StrictInt = Field(default=16, ge=0, le=10_000)
    # Denied method calls: per session and window, the first in full, then one summary.
    denied_audit_window_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Limits against hostile or careless clients (opcua_server.limits; README "Security").
    max_connections: StrictInt = Field(default=100, ge=2, le=10_000)
    max_sessions: StrictInt = Field(default=50, ge=1, le=1000)
    max_anonymous_sessions: StrictInt = Field(default=10, ge=0, le=1000)
    handshake_timeout_s: float = Field(default=5.0, gt=0, le=600)
    activation_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    min_session_timeout_s: float = Field(default=5.0, gt=0, le=86_400)
    max_session_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    max_chunk_size: StrictInt = Field(default=65535, ge=8192, le=16 * 1024 * 1024)
    max_message_size: StrictInt = Field(default=2 * 1024 * 1024, ge=8192, le=256 * 1024 * 1024)
    max_subscriptions_per_session: StrictInt = Field(default=20, ge=1, le=1000)
    max_monitored_items_per_session: StrictInt = Field(default=10_000, ge=1, le=1_000_000)
    max_anonymous_monitored_items: StrictInt = Field(default=2000, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _lockout_cap(self) -> OpcuaConfig:
        if self.login_lockout_max_s < self.login_lockout_s:
            raise ValueError("login_lockout_max_s must be at least login_lockout_s")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_policies(cls, data: object) -> object:
        """Without an explicit list, `allow_security_none = true` adds the None policy."""
        if (
            isinstance(data, Mapping)
            and "security_policies" not in data
            and data.get("allow_security_none") is True
        ):
            return {**data, "security_policies": [SecurityPolicyName.NONE, *SECURE_POLICIES]}
        return data

    @field_validator("security_policies")
    @classmethod
    def _policies_non_empty_and_unique(
        cls, policies: list[SecurityPolicyName]
    ) -> list[SecurityPolicyName]:
        if not policies:
            raise ValueError("must list at least one security policy")
        duplicates = sorted({p.value for p in policies if policies.count(p) > 1})
        if duplicates:
            raise ValueError(f"duplicate security policy {', '.join(map(repr, duplicates))}")
        return policies


class HttpListenerConfig(ConfigModel):
    """What one HTTP listener binds and tolerates (`[metrics]`; `[api]` alike).

    `max_connections` open at once (more are answered 503 and closed), the request
    head within `header_timeout_s` (else 408 and closed: slowloris), idle kept-alive
    connections closed after `keep_alive_s`, `backlog` queued by the kernel.
    """

    listen: ListenAddress
    max_connections: StrictInt = Field(default=512, ge=1, le=65_535)
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    keep_alive_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    backlog: StrictInt = Field(default=2048, ge=1, le=65_535)

    @property
    def host(self) -> str:
        """Host part of `listen`, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class AnonymousApi(StrEnum):
    OFF = "off"
    READ = "read"


class ApiConfig(HttpListenerConfig):
    """`[api]`: the Level-4 HTTP API (SPEC section 8); without this table, no API."""

    listen: ListenAddress = DEFAULT_API_LISTEN
    anonymous: AnonymousApi = AnonymousApi.OFF
    max_body_bytes: StrictInt = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)


class MetricsConfig(HttpListenerConfig):
    """`[metrics]`: the Prometheus /metrics and /healthz listener."""

    listen: ListenAddress = DEFAULT_METRICS_LISTEN

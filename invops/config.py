"""The invops configuration file: pydantic v2 models for the TOML and its loader.

Pydantic stays at this boundary: `load_config` validates the file, and
`InvopsConfig.material_definitions()` / `storage_unit_definitions()` hand the
rest of the system plain domain dataclasses.

Validation runs in two passes so that an engineer sees every mistake at once:

1. pydantic checks each table's keys, types and ranges;
2. cross-object checks (duplicate ids, references between tables, units that
   cannot be compared) run over everything that survived pass 1.

Every problem names its key path (`storage_units[2].area`) and, when it can be
found cheaply in the source text, its line.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from information_model.isa95 import Role
from inventory_core.domain.derivation import StrappingTable
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.model import (
    LotStatus,
    MaterialDefinition,
    MaterialId,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.passwords import PasswordHashError, parse_password_hash
from inventory_core.domain.posting import DEFAULT_CAPACITY_MARGIN_PCT
from inventory_core.domain.units import canonical_uom, dimension, parse_quantity
from plc_connectors import (
    Address,
    DataType,
    PlcProtocol,
    PlcSettings,
    Tag,
    TagConfigError,
    WordOrder,
    overlaps,
    parse_address,
    validate_tag,
)

__all__ = [
    "DEFAULT_CERTIFICATE_DIR",
    "DEFAULT_LEDGER_URL",
    "DEFAULT_METRICS_LISTEN",
    "DEFAULT_OPCUA_ENDPOINT",
    "ENV_OVERRIDES",
    "SECURE_POLICIES",
    "AnonymousAccess",
    "ConfigError",
    "ConfigProblem",
    "HttpListenerConfig",
    "InvopsConfig",
    "LedgerConfig",
    "MaterialConfig",
    "MetricsConfig",
    "OpcuaConfig",
    "PlcConfig",
    "SecurityPolicyName",
    "SiteConfig",
    "StorageUnitConfig",
    "TagConfig",
    "UserConfig",
    "load_config",
    "parse_config",
]

DEFAULT_LEDGER_URL: Final = "sqlite+aiosqlite:///var/invops.db"
DEFAULT_OPCUA_ENDPOINT: Final = "opc.tcp://127.0.0.1:4840/invops"
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9840"
DEFAULT_CERTIFICATE_DIR: Final = Path("var/pki")

# Environment variable -> (table, key) it overrides (SPEC section 3).
ENV_OVERRIDES: Final[Mapping[str, tuple[str, str]]] = {
    "INVOPS_LEDGER_URL": ("ledger", "url"),
    "INVOPS_OPCUA_ENDPOINT": ("opcua", "endpoint"),
    "INVOPS_METRICS_LISTEN": ("metrics", "listen"),
}

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file, printable as `file:line: path: message`."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        # File-level problems (unreadable file, TOML syntax) have no key path.
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised when a config file cannot be read or is invalid; carries every problem."""

    problems: list[ConfigProblem]

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


# --------------------------------------------------------------------------- field types

_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WRITER_ID_RE: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# A SQLAlchemy URL: dialect[+driver]://...
_DB_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z0-9_]+)?://.*")
_HOST: Final = r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)"
_OPCUA_RE: Final = re.compile(rf"opc\.tcp://{_HOST}(?::(?P<port>\d{{1,5}}))?(?:/\S*)?")
_LISTEN_RE: Final = re.compile(rf"(?P<host>{_HOST}):(?P<port>\d{{1,5}})")


def _identifier(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"invalid id {value!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return value


def _writer_id(value: str) -> str:
    if not _WRITER_ID_RE.fullmatch(value):
        raise ValueError(
            f"invalid writer id {value!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _uom(value: str) -> str:
    """Canonical spelling (`l` -> `L`) so the rest of the system compares units by string."""
    try:
        return canonical_uom(value)
    except InventoryError as exc:
        raise ValueError(str(exc)) from None


def _exact_decimal(value: object) -> Decimal:
    """An exact Decimal: TOML floats go through str(), so `0.80` is Decimal('0.8')."""
    try:
        return parse_quantity(value)
    except InventoryError:
        raise ValueError(f"expected a finite number below 1e12 (got {value!r})") from None


def _positive_decimal(value: object) -> Decimal:
    """An exact Decimal greater than 0."""
    number = _exact_decimal(value)
    if number <= 0:
        raise ValueError(f"must be greater than 0 (got {value!r})")
    return number


def _port(text: str) -> int:
    port = int(text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return port


def _opcua_endpoint(value: str) -> str:
    match = _OPCUA_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected opc.tcp://host:port/path (got {value!r})")
    if match["port"] is not None:
        _port(match["port"])
    return value


def _listen(value: str) -> str:
    match = _LISTEN_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"expected host:port such as 127.0.0.1:9840 (got {value!r})")
    _port(match["port"])
    return value


def _db_url(value: str) -> str:
    if not _DB_URL_RE.fullmatch(value):
        raise ValueError(
            f"expected a SQLAlchemy URL such as {DEFAULT_LEDGER_URL} or "
            f"postgresql+asyncpg://user@host/db (got {value!r})"
        )
    return value


def _address(value: object) -> Address:
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an address string such as hr:0 or DB1.DBD0 (got {value!r})")
    return parse_address(value)  # TagConfigError is a ValueError: reported under the key


def tag_of(unit: str, role: str, tag: TagConfig) -> Tag:
    """The plc_connectors Tag for one unit's role, named `<unit>.<role>`."""
    return Tag(
        name=f"{unit}.{role}",
        address=tag.address,
        data_type=tag.data_type,
        word_order=tag.word_order,
        scale=tag.scale,
        offset=tag.offset,
        unit=tag.unit,
    )


def _password_hash(value: object) -> str:
    """A hash made by `invops users hash-password`; the value is never echoed back
    (a plain-text password pasted here must not end up in an error log)."""
    if not isinstance(value, str):
        raise ValueError("expected a password hash string (run invops users hash-password)")
    try:
        parse_password_hash(value)
    except PasswordHashError as exc:
        raise ValueError(f"{exc}: run invops users hash-password") from None
    return value


def _directory(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]
Uom = Annotated[str, AfterValidator(_uom)]
PositiveDecimal = Annotated[Decimal, BeforeValidator(_positive_decimal)]


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    """Base of every config table: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Model):
    """`[site]`: the ISA-95 enterprise/site/area hierarchy every unit hangs from."""

    enterprise: NonEmptyStr
    name: Identifier
    description: str = ""
    areas: list[Identifier]

    @field_validator("areas")
    @classmethod
    def _areas_non_empty_and_unique(cls, areas: list[str]) -> list[str]:
        if not areas:
            raise ValueError("must list at least one area")
        duplicates = sorted({area for area in areas if areas.count(area) > 1})
        if duplicates:
            raise ValueError(f"duplicate area {', '.join(map(repr, duplicates))}")
        return areas


class LedgerConfig(_Model):
    """`[ledger]`: where movements are stored and how this instance writes to it."""

    url: Annotated[str, AfterValidator(_db_url)] = DEFAULT_LEDGER_URL
    # Name of this instance's audit chain (SPEC section 5); None lets the ledger choose.
    writer_id: Annotated[str, AfterValidator(_writer_id)] | None = None
    batch_max: StrictInt = Field(default=64, ge=1, le=1024)
    # A manual posting may bring a unit's book at most this % above its capacity.
    capacity_margin_pct: Annotated[
        Decimal, BeforeValidator(_exact_decimal), Field(ge=0, le=1000)
    ] = DEFAULT_CAPACITY_MARGIN_PCT
    migrate_on_start: StrictBool = False
    # Readings taken while the ledger is unreachable wait here (bounded, on disk).
    buffer_path: NonEmptyStr = "var/invops-buffer.db"
    buffer_max_readings: StrictInt = Field(default=200_000, ge=1000, le=100_000_000)
    # The writer lease (one live process per writer_id and per measured unit): renewed
    # every lease_heartbeat_s; another instance may take it over lease_s after the last
    # renewal (a kill -9 or a lost host), at once after a graceful stop.
    lease_s: StrictFloat = Field(default=30.0, ge=1, le=3600)
    lease_heartbeat_s: StrictFloat = Field(default=5.0, ge=0.1, le=1800)

    @field_validator("lease_heartbeat_s")
    @classmethod
    def _heartbeat_within_lease(cls, heartbeat: float, info: ValidationInfo) -> float:
        lease = info.data.get("lease_s")
        if lease is not None and heartbeat > lease / 2:
            raise ValueError(
                f"must be at most half of lease_s ({lease}), so that one missed renewal "
                "does not let the lease expire"
            )
        return heartbeat


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


class OpcuaConfig(_Model):
    """`[opcua]`: the OPC UA server endpoint and its security.

    `security_policies` defaults to the four secure policies, plus `None` when
    `allow_security_none` is true. `certificate_dir` holds the server's own
    certificate and key (created on first start) and `trusted/` client certificates.
    """

    endpoint: Annotated[str, AfterValidator(_opcua_endpoint)] = DEFAULT_OPCUA_ENDPOINT
    allow_security_none: StrictBool = False
    security_policies: list[SecurityPolicyName] = Field(default_factory=_secure_policies)
    anonymous: AnonymousAccess = AnonymousAccess.READ
    certificate_dir: Annotated[Path, BeforeValidator(_directory)] = DEFAULT_CERTIFICATE_DIR
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


class HttpListenerConfig(_Model):
    """What one HTTP listener binds and tolerates (`[metrics]`; `[api]` alike).

    `max_connections` open at once (more are answered 503 and closed), the request
    head within `header_timeout_s` (else 408 and closed: slowloris), idle kept-alive
    connections closed after `keep_alive_s`, `backlog` queued by the kernel.
    """

    listen: Annotated[str, AfterValidator(_listen)]
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


class MetricsConfig(HttpListenerConfig):
    """`[metrics]`: the Prometheus /metrics and /healthz listener."""

    listen: Annotated[str, AfterValidator(_listen)] = DEFAULT_METRICS_LISTEN


class MaterialConfig(_Model):
    """`[[materials]]`: one ISA-95 MaterialDefinition."""

    id: Identifier
    description: str = ""
    base_uom: Uom
    density_kg_per_l: PositiveDecimal | None = None
    default_lot_status: LotStatus = LotStatus.QUARANTINE
    # `class` is a Python keyword, so the TOML key is an alias.
    material_class: str | None = Field(default=None, alias="class")


class PlcConfig(_Model):
    """`[[plcs]]`: one PLC the service polls (and `invops simulate` serves)."""

    name: Identifier
    protocol: PlcProtocol
    host: NonEmptyStr = "127.0.0.1"
    port: StrictInt | None = Field(default=None, ge=1, le=65535)  # 502 Modbus, 102 S7
    unit_id: StrictInt = Field(default=1, ge=0, le=255)  # Modbus only
    rack: StrictInt = Field(default=0, ge=0, le=7)  # S7 only
    slot: StrictInt = Field(default=1, ge=0, le=31)  # S7 only
    poll_interval_s: float = Field(default=1.0, ge=0.01, le=3600)
    timeout_s: float = Field(default=1.0, ge=0.01, le=60)
    max_gap: StrictInt | None = Field(default=None, ge=0, le=2000)

    @property
    def effective_port(self) -> int:
        return self.port or (502 if self.protocol is PlcProtocol.MODBUS else 102)


class TagConfig(_Model):
    """A PLC value: `plc` names a [[plcs]] entry; address like hr:0 or DB1.DBD0."""

    plc: str
    address: Annotated[Address, BeforeValidator(_address)]
    data_type: DataType
    word_order: WordOrder = WordOrder.ABCD
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


class StrappingConfig(_Model):
    """Tank calibration: level (in the level tag's unit) -> volume, piecewise linear."""

    volume_uom: Uom = "L"
    points: list[tuple[Decimal, Decimal]]

    @field_validator("points")
    @classmethod
    def _valid_table(cls, points: list[tuple[Decimal, Decimal]]) -> list[tuple[Decimal, Decimal]]:
        try:
            StrappingTable.from_points(points)
        except InventoryError as exc:
            raise ValueError(str(exc)) from None
        return points


class AlarmConfig(_Model):
    """Level limits in percent of capacity (OPC UA limit alarms)."""

    high_high: float | None = Field(default=None, ge=0, le=100)
    high: float | None = Field(default=None, ge=0, le=100)
    low: float | None = Field(default=None, ge=0, le=100)
    low_low: float | None = Field(default=None, ge=0, le=100)


class StorageUnitConfig(_Model):
    """`[[storage_units]]`: one tank, silo or bin, and how it is measured.

    A tank is measured by `level` (with a `strapping` table) or `weight`; a
    silo or bin by `weight`. `deadband` (in the material's base unit) and the
    timing keys decide when a measured change becomes a ledger movement.
    """

    id: Identifier
    area: str
    kind: StorageKind
    capacity: PositiveDecimal
    capacity_uom: Uom
    material: str | None = None
    description: str = ""
    level: TagConfig | None = None
    weight: TagConfig | None = None
    strapping: StrappingConfig | None = None
    totalizer: TagConfig | None = None
    totalizer_max: StrictInt = Field(default=2**32 - 1, ge=1)
    deadband: PositiveDecimal | None = None  # default: 0.5 % of capacity
    settle_s: float = Field(default=5.0, ge=0, le=3600)
    max_interval_s: float = Field(default=300.0, gt=0, le=86400)
    plausibility_limit: PositiveDecimal | None = None
    alarms: AlarmConfig = Field(default_factory=AlarmConfig)

    def tags(self) -> dict[str, TagConfig]:
        """This unit's PLC values by role (level, weight, totalizer)."""
        roles = {"level": self.level, "weight": self.weight, "totalizer": self.totalizer}
        return {role: tag for role, tag in roles.items() if tag is not None}


class UserConfig(_Model):
    """`[[users]]`: one OPC UA user (user name + password) and their invops role."""

    name: Identifier
    password_hash: Annotated[str, BeforeValidator(_password_hash)]
    role: Role


class InvopsConfig(_Model):
    """The whole validated file. Build it with `load_config`/`parse_config`, which
    also run the cross-object checks that pydantic alone does not."""

    site: SiteConfig
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    opcua: OpcuaConfig = Field(default_factory=OpcuaConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    materials: list[MaterialConfig] = Field(default_factory=list)
    plcs: list[PlcConfig] = Field(default_factory=list)
    storage_units: list[StorageUnitConfig] = Field(default_factory=list)
    users: list[UserConfig] = Field(default_factory=list)

    def opcua_users(self) -> dict[str, tuple[str, Role]]:
        """User name -> (password hash, role), as the OPC UA user manager takes them."""
        return {user.name: (user.password_hash, user.role) for user in self.users}

    def material_definitions(self) -> list[MaterialDefinition]:
        return [
            MaterialDefinition(
                id=MaterialId(m.id),
                description=m.description,
                base_uom=m.base_uom,
                density_kg_per_l=m.density_kg_per_l,
                default_lot_status=m.default_lot_status,
                material_class=m.material_class,
            )
            for m in self.materials
        ]

    def plc_settings(self) -> list[PlcSettings]:
        """Each PLC with every tag that names it; tag names are `<unit>.<role>`."""
        tags: dict[str, list[Tag]] = {plc.name: [] for plc in self.plcs}
        for unit in self.storage_units:
            for role, tag in unit.tags().items():
                tags[tag.plc].append(tag_of(unit.id, role, tag))
        return [
            PlcSettings(
                name=plc.name,
                protocol=plc.protocol,
                host=plc.host,
                port=plc.effective_port,
                tags=tuple(tags[plc.name]),
                unit_id=plc.unit_id,
                rack=plc.rack,
                slot=plc.slot,
                poll_interval_s=plc.poll_interval_s,
                timeout_s=plc.timeout_s,
                max_gap=plc.max_gap,
            )
            for plc in self.plcs
        ]

    def storage_unit_definitions(self) -> list[StorageUnit]:
        return [
            StorageUnit(
                id=StorageUnitId(u.id),
                site=self.site.name,
                area=u.area,
                kind=u.kind,
                capacity=u.capacity,
                capacity_uom=u.capacity_uom,
                material=None if u.material is None else MaterialId(u.material),
                description=u.description,
            )
            for u in self.storage_units
        ]


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> InvopsConfig:
    """Read, parse and validate a TOML config file; any problem is a ConfigError."""
    file = str(path)
    try:
        # utf-8-sig: tolerate the byte-order mark some Windows editors write.
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError([ConfigProblem(file, None, "", "file not found")]) from exc
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (bad byte at offset {exc.start})"
        raise ConfigError([ConfigProblem(file, None, "", message)]) from exc
    except OSError as exc:
        message = f"cannot read file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(file, None, "", message)]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(file, text, exc)]) from exc
    return parse_config(data, file=file, source_text=text, environ=environ)


def parse_config(
    data: Mapping[str, Any],
    file: str = "<config>",
    source_text: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> InvopsConfig:
    """Validate already-parsed TOML data (both passes), after environment overrides.

    `source_text` is only used to find line numbers for the problems.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([ConfigProblem(file, None, "", "expected a table at the top level")])
    merged, overridden = _apply_env(data, os.environ if environ is None else environ)
    try:
        config = InvopsConfig.model_validate(merged)
    except ValidationError as exc:
        issues = [_Issue(tuple(e["loc"]), _message(e)) for e in exc.errors(include_url=False)]
        issues += _cross_check(_parts_from_raw(merged))
    else:
        issues = _cross_check(_parts_from_model(config))
        if not issues:
            return config
    lines = _KeyLines(source_text)
    problems = [_to_problem(issue, file, lines, overridden) for issue in issues]
    # File order reads best; problems without a line keep their order, last.
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    raise ConfigError(problems)


def _apply_env(
    data: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[Loc, str]]:
    """Copy of `data` with the INVOPS_* overrides applied, and which keys they replaced.

    An empty variable counts as unset, so `INVOPS_LEDGER_URL= invops ...` is harmless.
    """
    merged = dict(data)
    overridden: dict[Loc, str] = {}
    for variable, (table, key) in ENV_OVERRIDES.items():
        value = environ.get(variable)
        if not value:
            continue
        section = merged.get(table, {})
        if not isinstance(section, Mapping):
            continue  # the file's own type error is reported instead
        merged[table] = {**section, key: value}
        overridden[(table, key)] = variable
    return merged, overridden


_TOML_AT_LINE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END: Final = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_problem(file: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigProblem:
    """tomllib puts the position in its message text; move it into `line`."""
    message = str(exc)
    line: int | None = getattr(exc, "lineno", None)  # Python >= 3.14 has it as an attribute
    if match := _TOML_AT_LINE.search(message):
        line = int(match[1])
        message = f"{message[: match.start()]} (column {match[2]})"
    elif match := _TOML_AT_END.search(message):
        line = max(1, len(text.splitlines()))
        message = f"{message[: match.start()]} (at end of file)"
    return ConfigProblem(file, line, "", f"TOML syntax error: {message}")


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True, slots=True)
class _Issue:
    """A problem before it is placed in the file: pydantic-style location + message."""

    loc: Loc
    message: str


def _format_path(loc: Loc) -> str:
    """('materials', 1, 'density_kg_per_l') -> 'materials[1].density_kg_per_l'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _to_problem(
    issue: _Issue, file: str, lines: _KeyLines, overridden: Mapping[Loc, str]
) -> ConfigProblem:
    variable = overridden.get(issue.loc)
    if variable is not None:
        # The bad value came from the environment, not from any line of the file.
        return ConfigProblem(
            file, None, _format_path(issue.loc), f"{issue.message} (from {variable})"
        )
    return ConfigProblem(file, lines.find(issue.loc), _format_path(issue.loc), issue.message)


# Pydantic error types whose message is better said in TOML words.
_MESSAGES: Final[Mapping[str, str]] = {
    "missing": "missing required key",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "dict_type": "expected a table",
    "list_type": "expected an array",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
}


def _message(error: ErrorDetails) -> str:
    """A short human sentence for one pydantic error."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(tuple(error["loc"]))
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    text = _MESSAGES.get(kind) or error["msg"].replace("Input should be", "must be")
    value = error.get("input")
    if kind != "missing" and isinstance(value, str | int | float):
        text += f" (got {value!r})"
    return text


def _unknown_key_message(loc: Loc) -> str:
    key = loc[-1] if loc else None
    model = _model_at(loc[:-1])
    if model is None or not isinstance(key, str):
        return "unknown key"
    allowed = [field.alias or name for name, field in model.model_fields.items()]
    hint = _did_you_mean(key, allowed)
    return f"unknown key{hint}" if hint else f"unknown key (allowed: {', '.join(allowed)})"


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The config model class that sits at `loc`, by walking field annotations."""
    current: object = InvopsConfig
    for part in loc:
        if isinstance(part, int):
            if typing.get_origin(current) is not list:
                return None
            current = typing.get_args(current)[0]
        else:
            if not (isinstance(current, type) and issubclass(current, BaseModel)):
                return None
            fields = {f.alias or name: f for name, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = _without_none(fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _without_none(annotation: object) -> object:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


# --------------------------------------------------------------------------- pass 2


@dataclass(frozen=True, slots=True)
class _Parts:
    """What the cross-object checks see: whatever survived pass 1, with list indices.

    Ids are taken from the raw entries too, so a material with a bad density
    still counts as declared and does not cause a false "unknown material".
    """

    site: SiteConfig | None
    material_ids: list[tuple[int, str]]
    unit_ids: list[tuple[int, str]]
    materials: dict[str, MaterialConfig]
    units: list[tuple[int, StorageUnitConfig]]
    plc_ids: list[tuple[int, str]]
    plcs: dict[str, PlcConfig]
    opcua: OpcuaConfig | None
    user_names: list[tuple[int, str]]
    user_count: int


def _parts_from_model(config: InvopsConfig) -> _Parts:
    materials: dict[str, MaterialConfig] = {}
    for material in config.materials:
        materials.setdefault(material.id, material)
    plcs: dict[str, PlcConfig] = {}
    for plc in config.plcs:
        plcs.setdefault(plc.name, plc)
    return _Parts(
        site=config.site,
        material_ids=[(i, m.id) for i, m in enumerate(config.materials)],
        unit_ids=[(i, u.id) for i, u in enumerate(config.storage_units)],
        materials=materials,
        units=list(enumerate(config.storage_units)),
        plc_ids=[(i, p.name) for i, p in enumerate(config.plcs)],
        plcs=plcs,
        opcua=config.opcua,
        user_names=[(i, u.name) for i, u in enumerate(config.users)],
        user_count=len(config.users),
    )


def _parts_from_raw(data: Mapping[str, Any]) -> _Parts:
    """Validate each piece on its own so one bad entry does not hide the others."""
    raw_materials = _entries(data.get("materials"))
    raw_units = _entries(data.get("storage_units"))
    materials: dict[str, MaterialConfig] = {}
    for _, raw in raw_materials:
        material = _try_validate(MaterialConfig, raw)
        if material is not None:
            materials.setdefault(material.id, material)
    units = [(i, u) for i, raw in raw_units if (u := _try_validate(StorageUnitConfig, raw))]
    raw_plcs = _entries(data.get("plcs"))
    plcs: dict[str, PlcConfig] = {}
    for _, raw in raw_plcs:
        plc = _try_validate(PlcConfig, raw)
        if plc is not None:
            plcs.setdefault(plc.name, plc)
    raw_users = _entries(data.get("users"))
    return _Parts(
        site=_try_validate(SiteConfig, data.get("site")),
        material_ids=_raw_ids(raw_materials),
        unit_ids=_raw_ids(raw_units),
        materials=materials,
        units=units,
        plc_ids=_raw_ids(raw_plcs, key="name"),
        plcs=plcs,
        opcua=_try_validate(OpcuaConfig, data.get("opcua", {})),
        user_names=_raw_ids(raw_users, key="name"),
        user_count=len(raw_users),
    )


def _entries(value: object) -> list[tuple[int, Mapping[str, Any]]]:
    if not isinstance(value, list):
        return []
    return [(i, entry) for i, entry in enumerate(value) if isinstance(entry, Mapping)]


def _raw_ids(
    entries: Sequence[tuple[int, Mapping[str, Any]]], key: str = "id"
) -> list[tuple[int, str]]:
    return [(i, entry[key]) for i, entry in entries if isinstance(entry.get(key), str)]


_M = typing.TypeVar("_M", bound=BaseModel)


def _try_validate(model: type[_M], raw: object) -> _M | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None  # already reported by pass 1


def _cross_check(parts: _Parts) -> list[_Issue]:
    """Checks between tables; reports every problem found, not the first."""
    issues = [
        *_duplicate_ids("materials", "material", parts.material_ids),
        *_duplicate_ids("storage_units", "storage unit", parts.unit_ids),
    ]
    issues += _duplicate_ids("plcs", "PLC", parts.plc_ids, key="name")
    issues += _duplicate_ids("users", "user", parts.user_names, key="name")
    if parts.opcua is not None:
        issues += _check_opcua_security(parts.opcua, parts.user_count)
        issues += _check_opcua_limits(parts.opcua)
    declared_materials = {material_id for _, material_id in parts.material_ids}
    declared_plcs = {name for _, name in parts.plc_ids}
    placed: dict[str, list[tuple[Loc, Tag]]] = {}
    for index, unit in parts.units:
        loc: Loc = ("storage_units", index)
        issues += _check_storage_unit(loc, unit, parts, declared_materials)
        issues += _check_measurement(loc, unit, parts)
        for role, tag in unit.tags().items():
            issues += _check_tag((*loc, role), tag, parts, declared_plcs)
            placed.setdefault(tag.plc, []).append(((*loc, role), tag_of(unit.id, role, tag)))
    issues += _overlapping_tags(placed)
    return issues


def _check_opcua_security(opcua: OpcuaConfig, user_count: int) -> Iterator[_Issue]:
    """Policy None only when allowed; passwords never in clear text; someone can log in."""
    policies = opcua.security_policies
    if SecurityPolicyName.NONE in policies and not opcua.allow_security_none:
        index = policies.index(SecurityPolicyName.NONE)
        yield _Issue(
            ("opcua", "security_policies", index),
            "policy 'None' (no signing, no encryption) needs allow_security_none = true",
        )
    encrypting = [p for p in policies if p.value.endswith("_SignAndEncrypt")]
    if SecurityPolicyName.NONE in policies and user_count and not encrypting:
        yield _Issue(
            ("opcua", "security_policies"),
            "with policy 'None' and [[users]], also list a *_SignAndEncrypt policy: "
            "it encrypts the passwords sent over unsecured sessions",
        )
    if opcua.anonymous is AnonymousAccess.OFF and not user_count:
        yield _Issue(
            ("opcua", "anonymous"),
            'anonymous = "off" but there are no [[users]]: no OPC UA client could log in',
        )


def _check_opcua_limits(opcua: OpcuaConfig) -> Iterator[_Issue]:
    """Sessions below connections, anonymous ones below sessions (room for users who
    log in), timeouts and sizes in order."""
    if opcua.max_sessions >= opcua.max_connections:
        yield _Issue(
            ("opcua", "max_sessions"),
            f"must be below max_connections ({opcua.max_connections}): connections beyond "
            "the sessions let a new client in while every session is taken",
        )
    if opcua.max_anonymous_sessions >= opcua.max_sessions:
        yield _Issue(
            ("opcua", "max_anonymous_sessions"),
            f"must be below max_sessions ({opcua.max_sessions}): the difference is kept "
            "for users who log in",
        )
    if opcua.handshake_timeout_s > opcua.activation_timeout_s:
        yield _Issue(
            ("opcua", "handshake_timeout_s"),
            f"must be at most activation_timeout_s ({opcua.activation_timeout_s:g}): both "
            "count from the connection's start",
        )
    if opcua.min_session_timeout_s > opcua.max_session_timeout_s:
        yield _Issue(
            ("opcua", "min_session_timeout_s"),
            f"must be at most max_session_timeout_s ({opcua.max_session_timeout_s:g})",
        )
    if opcua.max_message_size < opcua.max_chunk_size:
        yield _Issue(
            ("opcua", "max_message_size"),
            f"must be at least max_chunk_size ({opcua.max_chunk_size})",
        )


def _check_tag(
    loc: Loc, tag: TagConfig, parts: _Parts, declared_plcs: set[str]
) -> Iterator[_Issue]:
    if tag.plc not in declared_plcs:
        hint = _did_you_mean(tag.plc, declared_plcs)
        yield _Issue(
            (*loc, "plc"), f"unknown PLC {tag.plc!r}: no [[plcs]] entry has this name{hint}"
        )
        return
    plc = parts.plcs.get(tag.plc)
    if plc is None:
        return  # the PLC entry itself is broken and already reported
    try:
        validate_tag(tag_of("", "", tag), plc.protocol)
    except TagConfigError as exc:
        yield _Issue((*loc, "address"), str(exc))


def _overlapping_tags(placed: Mapping[str, list[tuple[Loc, Tag]]]) -> Iterator[_Issue]:
    """Two values mapped onto the same registers/bytes of one PLC are a wiring mistake."""
    for plc, tags in placed.items():
        for i, (loc, tag) in enumerate(tags):
            for other_loc, other in tags[:i]:
                if overlaps(tag, other):
                    yield _Issue(
                        (*loc, "address"),
                        f"overlaps {_format_path(other_loc)} on PLC {plc!r} "
                        f"({_format_path(loc)} and {_format_path(other_loc)} share registers)",
                    )


def _check_measurement(loc: Loc, unit: StorageUnitConfig, parts: _Parts) -> Iterator[_Issue]:
    """A unit is measured by level (with a strapping table) or by weight, not both."""
    if unit.level is not None and unit.weight is not None:
        yield _Issue((*loc, "weight"), "give either level (with strapping) or weight, not both")
    if unit.level is not None and unit.strapping is None:
        yield _Issue((*loc, "strapping"), "a level measurement needs a strapping table")
    if unit.strapping is not None and unit.level is None:
        yield _Issue((*loc, "level"), "a strapping table needs a level measurement")
    if unit.weight is not None and unit.weight.unit:
        try:
            if dimension(unit.weight.unit).value != "mass":
                raise InventoryError
        except InventoryError:
            yield _Issue(
                (*loc, "weight", "unit"),
                f"weight unit must be kg, g or t (got {unit.weight.unit!r})",
            )
    if unit.totalizer is not None and unit.totalizer.data_type not in (
        DataType.UINT16,
        DataType.UINT32,
    ):
        yield _Issue((*loc, "totalizer", "data_type"), "a totalizer is a uint16 or uint32 counter")


def _duplicate_ids(
    section: str, noun: str, ids: Iterable[tuple[int, str]], key: str = "id"
) -> Iterator[_Issue]:
    first: dict[str, int] = {}
    for index, ident in ids:
        if ident in first:
            message = (
                f"duplicate {noun} {key} {ident!r} (first defined at {section}[{first[ident]}])"
            )
            yield _Issue((section, index, key), message)
        else:
            first[ident] = index


def _check_storage_unit(
    loc: Loc, unit: StorageUnitConfig, parts: _Parts, declared_materials: set[str]
) -> Iterator[_Issue]:
    if parts.site is not None and unit.area not in parts.site.areas:
        areas = ", ".join(parts.site.areas)
        hint = _did_you_mean(unit.area, parts.site.areas)
        yield _Issue((*loc, "area"), f"area {unit.area!r} is not in site.areas ({areas}){hint}")
    if unit.material is None:
        return
    if unit.material not in declared_materials:
        hint = _did_you_mean(unit.material, declared_materials)
        message = f"unknown material {unit.material!r}: no [[materials]] entry has this id{hint}"
        yield _Issue((*loc, "material"), message)
        return
    material = parts.materials.get(unit.material)
    if material is not None and (mismatch := _incomparable_units(unit, material)):
        yield _Issue((*loc, "capacity_uom"), mismatch)


def _incomparable_units(unit: StorageUnitConfig, material: MaterialConfig) -> str | None:
    """Book balances are in the material's base unit; without a density a volume
    capacity cannot be compared with a mass balance (or the other way round)."""
    capacity_dim, base_dim = dimension(unit.capacity_uom), dimension(material.base_uom)
    if capacity_dim is base_dim or material.density_kg_per_l is not None:
        return None
    return (
        f"capacity is in {unit.capacity_uom} ({capacity_dim}) but material {material.id!r} "
        f"is booked in {material.base_uom} ({base_dim}) and has no density_kg_per_l: "
        f"set the material's density or give the capacity in {base_dim} units"
    )


# --------------------------------------------------------------------------- line numbers

_BARE_OR_QUOTED: Final = r"""(?:[A-Za-z0-9_-]+|"[^"\\]*"|'[^']*')"""
_KEY_LINE: Final = re.compile(rf"\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_HEADER_LINE: Final = re.compile(
    rf"\s*(\[\[?)\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*\]\]?\s*(?:#.*)?"
)
_KEY_PART: Final = re.compile(_BARE_OR_QUOTED)


class _KeyLines:
    """Line numbers of keys and table headers in TOML text, by key path.

    Best effort, for messages only: the text already parsed, so a line scan that
    follows `[table]` / `[[array]]` headers (counting array occurrences) and skips
    multi-line strings finds the right line for ordinary files. Anything it cannot
    place falls back to the enclosing table, or to no line at all.
    """

    def __init__(self, text: str | None) -> None:
        self._lines: dict[Loc, int] = {}
        self._array_index: dict[Loc, int] = {}
        if text:
            self._scan(text)

    def find(self, loc: Loc) -> int | None:
        for end in range(len(loc), 0, -1):
            line = self._lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def _scan(self, text: str) -> None:
        table: Loc = ()
        open_string: str | None = None  # delimiter of the multi-line string we are in
        for number, line in enumerate(text.splitlines(), start=1):
            if open_string is not None:
                if line.count(open_string) % 2 == 1:
                    open_string = None
                continue
            if header := _HEADER_LINE.fullmatch(line):
                table = self._enter_table(header[1] == "[[", _key_parts(header[2]), number)
                continue
            if key := _KEY_LINE.match(line):
                parts = _key_parts(key[1])
                for end in range(1, len(parts) + 1):
                    self._lines.setdefault((*table, *parts[:end]), number)
                rest = line[key.end() :]
                for delimiter in ('"""', "'''"):
                    if rest.count(delimiter) % 2 == 1:
                        open_string = delimiter
                        break

    def _enter_table(self, is_array: bool, parts: list[str], number: int) -> Loc:
        if is_array:
            array = (*self._resolve(parts[:-1]), parts[-1])
            index = self._array_index.get(array, -1) + 1
            self._array_index[array] = index
            self._lines.setdefault(array, number)
            table: Loc = (*array, index)
        else:
            table = self._resolve(parts)
        self._lines.setdefault(table, number)
        return table

    def _resolve(self, parts: Sequence[str]) -> Loc:
        """Dotted header -> path, stepping into the latest element of any array of tables."""
        loc: Loc = ()
        for part in parts:
            loc = (*loc, part)
            if loc in self._array_index:
                loc = (*loc, self._array_index[loc])
        return loc


def _key_parts(dotted: str) -> list[str]:
    return [part.strip("\"'") for part in _KEY_PART.findall(dotted)]

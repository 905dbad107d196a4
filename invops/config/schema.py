"""The plant tables of the config file and the whole file's model, `InvopsConfig`.

Pydantic stays at this boundary: `InvopsConfig.material_definitions()`,
`storage_unit_definitions()`, `user_definitions()` and `plc_settings()` hand the
rest of the system plain domain objects. Each model checks its own table (pass 1);
checks across tables live in `cross_checks` (pass 2).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from inventory_core.domain.api_tokens import ApiToken
from inventory_core.domain.derivation import StrappingTable
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.lot_handling import default_lot_handling
from inventory_core.domain.meter import MeterDirection
from inventory_core.domain.model import (
    DEFAULT_ADVICE_WINDOW_S,
    Booking,
    LotHandling,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from inventory_core.domain.passwords import parse_password_hash
from inventory_core.domain.posting import DEFAULT_CAPACITY_MARGIN_PCT
from inventory_core.domain.signatures import (
    DEFAULT_SIGNED_STATUSES,
    SignatureAction,
    SignaturePolicy,
    Threshold,
)
from inventory_core.domain.users import Role, User
from invops.config.fields import (
    DEFAULT_LEDGER_URL,
    ConfigModel,
    DbUrl,
    ExactDecimal,
    Identifier,
    NonEmptyStr,
    NonNegativeDecimal,
    PasswordHash,
    PlcAddress,
    PositiveDecimal,
    TokenHash,
    Uom,
    WriterId,
)
from invops.config.server_schema import ApiConfig, MetricsConfig, OpcuaConfig
from plc_connectors import DataType, PlcProtocol, PlcSettings, Tag, WordOrder

__all__ = [
    "AlarmConfig",
    "InvopsConfig",
    "LedgerConfig",
    "MaterialConfig",
    "PlcConfig",
    "SiteConfig",
    "StorageUnitConfig",
    "StrappingConfig",
    "TagConfig",
    "UserConfig",
    "tag_of",
]


class SiteConfig(ConfigModel):
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


class LedgerConfig(ConfigModel):
    """`[ledger]`: where movements are stored and how this instance writes to it."""

    url: DbUrl = DEFAULT_LEDGER_URL
    # Name of this instance's audit chain (SPEC section 5); None lets the ledger choose.
    writer_id: WriterId | None = None
    batch_max: StrictInt = Field(default=64, ge=1, le=1024)
    # A manual posting may bring a unit's book at most this % above its capacity.
    capacity_margin_pct: Annotated[ExactDecimal, Field(ge=0, le=1000)] = DEFAULT_CAPACITY_MARGIN_PCT
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


class B2mmlConfig(ConfigModel):
    """`[b2mml]`: B2MML documents (ledger import/export, the HTTP API's /b2mml routes)."""

    # The folder of MESA's B2MML V0700 schemas (AllSchemas.xsd): inbound documents are
    # validated against them first. invops does not ship them (MESA's licence terms).
    schema_dir: NonEmptyStr | None = None

    @field_validator("schema_dir")
    @classmethod
    def _has_schemas(cls, folder: str | None) -> str | None:
        if folder is not None and not (Path(folder) / "AllSchemas.xsd").is_file():
            raise ValueError(f"{folder} holds no AllSchemas.xsd (the B2MML V0700 schema folder)")
        return folder


class MaterialConfig(ConfigModel):
    """`[[materials]]`: one ISA-95 MaterialDefinition."""

    id: Identifier
    description: str = ""
    base_uom: Uom
    density_kg_per_l: PositiveDecimal | None = None
    default_lot_status: LotStatus = LotStatus.QUARANTINE
    # `class` is a Python keyword, so the TOML key is an alias.
    material_class: str | None = Field(default=None, alias="class")


class PlcConfig(ConfigModel):
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


class TagConfig(ConfigModel):
    """A PLC value: `plc` names a [[plcs]] entry; address like hr:0 or DB1.DBD0."""

    plc: str
    address: PlcAddress
    data_type: DataType
    word_order: WordOrder = WordOrder.ABCD
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


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


class StrappingConfig(ConfigModel):
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


class AlarmConfig(ConfigModel):
    """Level limits in percent of capacity (OPC UA limit alarms)."""

    high_high: float | None = Field(default=None, ge=0, le=100)
    high: float | None = Field(default=None, ge=0, le=100)
    low: float | None = Field(default=None, ge=0, le=100)
    low_low: float | None = Field(default=None, ge=0, le=100)


class StorageUnitConfig(ConfigModel):
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
    # Where the flow meter sits: on the outlet (its count is set against the issues the
    # level derives, meter versus gauge) or on the inlet (against the receipts).
    totalizer_direction: MeterDirection = MeterDirection.OUT
    deadband: PositiveDecimal | None = None  # default: 0.5 % of capacity
    # How lots share the unit; default: tanks `mixed` (agitated), silos and bins `fifo`.
    lot_handling: LotHandling | None = None
    # Below this book quantity (material's base unit) the unit is empty and its lots are
    # closed to zero; default 0.5 % of capacity, 0 never closes them.
    zero_lot_threshold: NonNegativeDecimal | None = None
    # The quantity truth: default `measured` for a unit with a level or weight tag.
    booking: Booking | None = None
    # How long an advice (a manual change of a measured unit) waits for its measured change.
    advice_window_s: StrictInt = Field(default=DEFAULT_ADVICE_WINDOW_S, ge=1, le=30 * 86400)
    settle_s: float = Field(default=5.0, ge=0, le=3600)
    max_interval_s: float = Field(default=300.0, gt=0, le=86400)
    plausibility_limit: PositiveDecimal | None = None
    alarms: AlarmConfig = Field(default_factory=AlarmConfig)

    def tags(self) -> dict[str, TagConfig]:
        """This unit's PLC values by role (level, weight, totalizer)."""
        roles = {"level": self.level, "weight": self.weight, "totalizer": self.totalizer}
        return {role: tag for role, tag in roles.items() if tag is not None}


def default_booking(unit: StorageUnitConfig) -> Booking:
    """A unit with a level or weight tag is measured: its gauge is the quantity truth."""
    return Booking.MANUAL if unit.level is None and unit.weight is None else Booking.MEASURED


class UserConfig(ConfigModel):
    """`[[users]]`: one OPC UA user (user name + password) and their invops role."""

    name: Identifier
    password_hash: PasswordHash
    role: Role
    # The printed name an electronic signature shows (21 CFR 11.50); default: `name`.
    full_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class ApiTokenConfig(ConfigModel):
    """`[[api_tokens]]`: one HTTP API token (only its hash) and its invops role."""

    name: Identifier
    token_hash: TokenHash
    role: Role


class SignatureConfig(ConfigModel):
    """`[[signatures]]`: one action that must be signed before it is posted (SPEC 3)."""

    action: SignatureAction
    meaning: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z -]*$")]
    role: Role
    second_person: StrictBool = False
    # A quantity in the material's base unit (`50`) or a share of the unit's capacity
    # (`"5%"`): the action is signed above it. None: every one of them.
    threshold: StrictInt | StrictFloat | str | None = None
    statuses: list[LotStatus] | None = None  # lot-status only: the statuses signed

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: object) -> object:
        _parse_threshold(value)
        return value

    @model_validator(mode="after")
    def _fits_the_action(self) -> SignatureConfig:
        if self.statuses is not None and self.action is not SignatureAction.LOT_STATUS:
            raise ValueError("statuses is for action 'lot-status' only")
        if self.threshold is not None and self.action in (
            SignatureAction.LOT_STATUS,
            SignatureAction.PERIOD_CLOSE,
            SignatureAction.MASTER_DATA,
        ):
            raise ValueError(f"a {self.action} policy takes no threshold")
        return self

    def policy(self) -> SignaturePolicy:
        statuses = DEFAULT_SIGNED_STATUSES if self.statuses is None else frozenset(self.statuses)
        return SignaturePolicy(
            self.action, self.meaning, self.role, self.second_person,
            _parse_threshold(self.threshold), statuses,
        )  # fmt: skip


def _parse_threshold(value: object) -> Threshold:
    if value is None:
        return Threshold()
    text = str(value).strip()
    try:
        if isinstance(value, str) and text.endswith("%"):
            percent = Decimal(text[:-1].strip())
            if not percent.is_finite() or not 0 <= percent <= 100:
                raise ValueError
            return Threshold(percent=percent)
        quantity = Decimal(text)
        if not quantity.is_finite() or quantity < 0:
            raise ValueError
    except (ArithmeticError, ValueError):
        raise ValueError(
            f"threshold {value!r} is neither a quantity >= 0 (e.g. 50) nor a share of the "
            'capacity from 0% to 100% (e.g. "5%")'
        ) from None
    return Threshold(quantity=quantity)


class InvopsConfig(ConfigModel):
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
    api: ApiConfig | None = None
    api_tokens: list[ApiTokenConfig] = Field(default_factory=list)
    b2mml: B2mmlConfig = Field(default_factory=B2mmlConfig)
    signatures: list[SignatureConfig] = Field(default_factory=list)

    def signature_policies(self) -> tuple[SignaturePolicy, ...]:
        return tuple(s.policy() for s in self.signatures)

    def api_token_definitions(self) -> tuple[ApiToken, ...]:
        return tuple(ApiToken(t.name, t.role, t.token_hash) for t in self.api_tokens)

    def user_definitions(self) -> tuple[User, ...]:
        """`[[users]]` as domain users, in config order, each with its parsed hash.

        (Not `users()`: that name is the table itself.) The hashes were checked when
        the file was read (`fields.PasswordHash`), so parsing them again cannot fail.
        """
        return tuple(
            User(
                user.name,
                user.role,
                parse_password_hash(user.password_hash),
                full_name=user.full_name or "",
            )
            for user in self.users
        )

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
                lot_handling=u.lot_handling or default_lot_handling(u.kind),
                zero_lot_threshold=u.zero_lot_threshold,
                booking=u.booking or default_booking(u),
                advice_window_s=u.advice_window_s,
            )
            for u in self.storage_units
        ]

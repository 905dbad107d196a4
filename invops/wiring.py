"""The composition root: the one module that knows every concrete class.

`assemble` turns the validated config into the running parts of the service:
metrics and the HTTP endpoint, the ledger, the plant view and its ledger
follower, the measurement service with its bridge and reading buffer, the OPC
UA server with its security and features, and one poller per PLC. Everything
is passed in explicitly; the adapters get plain settings and domain objects
(`opcua_settings`, `opcua_security`, `measured_units`, `alarm_limits`), never
the config.
`invops.service` only runs what this returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from http_api import ApiAuth, create_app
from inventory_core import Ledger, open_history, open_ledger
from inventory_core.b2mml import SchemaValidator
from inventory_core.cancel import cancel_and_wait
from inventory_core.domain.derivation import DeriverConfig, StrappingTable, TotalizerConfig
from inventory_core.domain.lease import WriterLease
from inventory_core.domain.level_alarm import LevelLimits
from inventory_core.domain.meter import MeterDirection
from inventory_core.domain.model import Booking, MaterialId, MovementKind, StorageUnitId
from inventory_core.domain.units import convert
from inventory_core.logins import LoginSettings
from inventory_core.measurement_service import MeasuredUnit, MeasurementService
from inventory_core.meter_service import MeteredUnit, MeterService
from inventory_core.plant_view import LedgerFollower, PlantView
from inventory_core.signing import SigningService
from invops import __version__
from invops.config import HttpListenerConfig, InvopsConfig, OpcuaConfig, StorageUnitConfig
from invops.config.server_schema import AnonymousApi
from invops.http import HealthBoard, HttpEndpoint, watch_ledger
from invops.http_server import HttpLimits, HttpServer
from invops.metrics import Metrics, MetricsSink, storage_samples, ua_session_count
from invops.plant_feed import PlantFeed
from invops.plc_bridge import LedgerBridge
from invops.reading_buffer import ReadingBuffer
from opcua_server import InvopsOpcUaServer, OpcuaServerError
from opcua_server.denied_calls import DeniedCallAudit
from opcua_server.features import AlarmFeature, HistoryFeature
from opcua_server.limits import ServerLimits
from opcua_server.security import (
    client_certificate_validator,
    current_session,
    current_user,
    identity_tokens,
    secure_server_kwargs,
)
from opcua_server.settings import OpcuaSecurity, OpcuaSettings, OpcuaUnit
from plc_connectors import (
    ModbusLink,
    PlcLink,
    PlcPoller,
    PlcProtocol,
    PlcSettings,
    S7Link,
    start_offsets,
)

DEFAULT_DEADBAND_FRACTION = Decimal("0.005")  # 0.5 % of capacity


@dataclass(frozen=True, slots=True)
class Overrides:
    """What a caller (the demo, tests, benchmarks) changes from the config at start."""

    plc_ports: Mapping[str, int] | None = None
    opcua_endpoint: str | None = None
    pki_dir: Path | None = None
    buffer_path: Path | None = None
    metrics_port: int | None = None
    api_port: int | None = None


@dataclass(frozen=True, slots=True)
class Assembly:
    """The running parts `invops.service` starts and stops (entered on its exit stack)."""

    ledger: Ledger
    view: PlantView
    opcua: InvopsOpcUaServer
    http: HttpEndpoint
    bridge: LedgerBridge  # drained at shutdown: readings already taken become movements
    pollers: tuple[PlcPoller, ...]  # stopped first
    background: tuple[tuple[str, Callable[[], Coroutine[Any, Any, None]]], ...]  # (name, work)
    api: HttpServer | None = None  # the Level-4 HTTP API, when the config has `[api]`


async def assemble(
    config: InvopsConfig, stack: AsyncExitStack, overrides: Overrides = Overrides()
) -> Assembly:
    """Build and start everything but the tasks, in dependency order, on `stack`."""
    settings = [_with_port(s, overrides.plc_ports) for s in config.plc_settings()]
    registry = CollectorRegistry()
    metrics = Metrics(registry, version=__version__, plcs=[s.name for s in settings])
    board = HealthBoard([s.name for s in settings])
    units = measured_units(config)
    view = PlantView(
        config.storage_unit_definitions(),
        config.material_definitions(),
        units,
        deadband_fraction=config.opcua.value_deadband_pct / 100,
    )
    metrics.register_storage(storage_samples(view))
    port = config.metrics.port if overrides.metrics_port is None else overrides.metrics_port
    http = await stack.enter_async_context(
        HttpEndpoint(
            config.metrics.host, port, registry, board.current, limits=http_limits(config.metrics)
        )
    )
    lease = WriterLease.for_this_process(
        (u.unit for u in units),
        duration_s=config.ledger.lease_s,
        heartbeat_s=config.ledger.lease_heartbeat_s,
    )
    # A second instance of this writer id or of these measured units is refused here
    # (naming the holder), before it polls a PLC or opens the reading buffer.
    ledger = await stack.enter_async_context(
        open_ledger(
            config.ledger.url,
            writer_id=writer_id(config),
            batch_max=config.ledger.batch_max,
            capacity_margin_pct=config.ledger.capacity_margin_pct,
            migrate=config.ledger.migrate_on_start,
            on_commit=metrics.posting_committed,
            lease=lease,
            writer_process=True,  # a SQLite file's writer off this process's GIL
        )
    )
    # Renewed from now on, not from when the service's tasks start: building the OPC UA
    # address space can take longer than the lease lasts on a loaded machine.
    keeper = asyncio.create_task(ledger.keep_lease(), name="writer-lease")
    stack.push_async_callback(cancel_and_wait, [keeper])
    metrics.watch_ledger_writer(lambda: ledger.writer_pid)
    ledger.subscribe(metrics.movement_posted)
    ledger.subscribe_advices(metrics.advice_changed)
    await ledger.sync_master_data(config.material_definitions(), config.storage_unit_definitions())
    await ledger.set_signature_policies(config.signature_policies())
    board.set_ledger(True)
    follower = LedgerFollower(ledger, view)
    await follower.start()
    stack.callback(follower.close)
    measurements = MeasurementService(ledger, units)
    await measurements.start()
    tags = quantity_tags(config)
    buffer = ReadingBuffer(
        overrides.buffer_path or Path(config.ledger.buffer_path),
        max_readings=config.ledger.buffer_max_readings,
    )
    stack.callback(buffer.close)
    plc_tags = {s.name: [t.name for t in s.tags] for s in settings}
    bridge = LedgerBridge(
        measurements, tags, plc_tags=plc_tags, buffer=buffer, ledger_state=board.set_ledger
    )
    signing = signing_service(config, ledger, metrics)
    stack.callback(signing.close)
    opcua = await _opcua_server(config, stack, overrides, ledger, view, metrics, signing)
    api = await _api_server(config, stack, overrides, ledger, view, metrics, signing)
    meters = MeterService(ledger, metered_units(config))
    await meters.start()
    feed = PlantFeed(bridge, view, tags, plc_tags, meters=meters, meter_tags=meter_tags(config))
    sink = MetricsSink(feed, metrics, health=board)
    offsets = start_offsets(settings)
    pollers = tuple(
        PlcPoller(make_link(s), s, sink, start_offset_s=offsets[s.name]) for s in settings
    )
    background = (
        ("writer-lease", lambda: _watch(keeper)),
        ("plant-view-books", follower.run),
        ("measurements", bridge.run),
        ("ledger-health", lambda: watch_ledger(board, ledger.chain_heads)),
        ("advice-expiry", ledger.keep_advices),
        ("lot-expiry", ledger.keep_lots),
        ("meter-flows", meters.run),
    )
    return Assembly(ledger, view, opcua, http, bridge, pollers, background, api)


async def _api_server(
    config: InvopsConfig,
    stack: AsyncExitStack,
    overrides: Overrides,
    ledger: Ledger,
    view: PlantView,
    metrics: Metrics,
    signing: SigningService,
) -> HttpServer | None:
    """The HTTP API on `[api] listen` (its own listener and limits: a flood there never
    takes the metrics endpoint's connections), or None without an `[api]` table."""
    api = config.api
    if api is None:
        return None
    auth = ApiAuth(
        config.user_definitions(),
        config.api_token_definitions(),
        anonymous_read=api.anonymous is AnonymousApi.READ,
        record=ledger.record_event,
        logins=login_settings(config.opcua),
        on_refused=metrics.api_login_refused,
        on_lockout=metrics.api_lockout,
    )
    stack.callback(auth.close)
    folder = config.b2mml.schema_dir
    validator = None if folder is None else await asyncio.to_thread(SchemaValidator, Path(folder))
    app = create_app(
        ledger, auth, view=view, version=__version__, max_body_bytes=api.max_body_bytes,
        observe=metrics.api_request, b2mml_validator=validator, signing=signing,
    )  # fmt: skip
    port = api.port if overrides.api_port is None else overrides.api_port
    server = HttpServer(app, api.host, port, name="api", limits=http_limits(api))
    return await stack.enter_async_context(server)


async def _opcua_server(
    config: InvopsConfig,
    stack: AsyncExitStack,
    overrides: Overrides,
    ledger: Ledger,
    view: PlantView,
    metrics: Metrics,
    signing: SigningService,
) -> InvopsOpcUaServer:
    """The OPC UA server with its security, denied-call audit and features, started."""
    pki = overrides.pki_dir or Path(config.opcua.certificate_dir)
    access = opcua_security(config)
    security = secure_server_kwargs(
        access,
        pki,
        audit=ledger.record_event,
        on_login_refused=metrics.opcua_login_refused,
        on_lockout=metrics.opcua_lockout,
    )
    stack.callback(security["user_manager"].close)
    history_store = await stack.enter_async_context(open_history(config.ledger.url))
    opcua = InvopsOpcUaServer(
        opcua_settings(config),
        ledger,
        view=view,
        features=(HistoryFeature(history_store, view), AlarmFeature(alarm_limits(config), view)),
        on_refusal=metrics.opcua_refused,
        endpoint=overrides.opcua_endpoint,
        identity_tokens=identity_tokens(access),
        signing=signing,
        certificate_validator=client_certificate_validator(pki),
        current_user=current_user,
        denied_calls=DeniedCallAudit(
            ledger.record_event,
            window_s=config.opcua.denied_audit_window_s,
            session=current_session,
            on_denied=metrics.opcua_denied_call,
        ),
        **security,
    )
    metrics.set_opcua_sessions(lambda: ua_session_count(opcua.ua_server))
    await stack.enter_async_context(opcua)
    return opcua


async def _watch(task: asyncio.Task[None]) -> None:
    """Await a task started during assembly, so that its failure (a lost writer lease)
    fails the service's TaskGroup like any of its own tasks."""
    await task


def writer_id(config: InvopsConfig) -> str:
    """This instance's audit chain: the configured one, else one per host and site."""
    return config.ledger.writer_id or f"{config.site.name}@{socket.gethostname()}"[:64]


def alarm_limits(config: InvopsConfig) -> dict[str, LevelLimits]:
    """Level alarm limits (percent of capacity) of every unit that has any."""
    limits = {}
    for unit in config.storage_units:
        alarms = unit.alarms
        if any(v is not None for v in (alarms.high_high, alarms.high, alarms.low, alarms.low_low)):
            limits[unit.id] = LevelLimits(
                high_high=alarms.high_high, high=alarms.high, low=alarms.low, low_low=alarms.low_low
            )
    return limits


def _with_port(settings: PlcSettings, ports: Mapping[str, int] | None) -> PlcSettings:
    if ports is None or settings.name not in ports:
        return settings
    return dataclasses.replace(settings, port=ports[settings.name])


def http_limits(listener: HttpListenerConfig) -> HttpLimits:
    """The limits of an HTTP listener (`[metrics]`, `[api]`) as its server takes them."""
    return HttpLimits(
        backlog=listener.backlog,
        max_connections=listener.max_connections,
        header_timeout_s=listener.header_timeout_s,
        keep_alive_s=listener.keep_alive_s,
    )


def quantity_tags(config: InvopsConfig) -> dict[str, StorageUnitId]:
    """Tag name -> storage unit, for each unit's quantity signal (level or weight)."""
    tags: dict[str, StorageUnitId] = {}
    for unit in config.storage_units:
        role = "level" if unit.level is not None else "weight" if unit.weight is not None else None
        if role is not None:
            tags[f"{unit.id}.{role}"] = StorageUnitId(unit.id)
    return tags


def measured_units(config: InvopsConfig) -> list[MeasuredUnit]:
    """How each measured unit's signal becomes a booked quantity."""
    materials = {m.id: m for m in config.material_definitions()}
    bookings = {u.id: u.booking for u in config.storage_unit_definitions()}
    measured = []
    for unit in config.storage_units:
        signal = unit.level or unit.weight
        if signal is None or unit.material is None:
            continue
        material = materials[MaterialId(unit.material)]
        strapping = None
        signal_uom = unit.weight.unit if unit.weight is not None and unit.weight.unit else "kg"
        if unit.strapping is not None:
            strapping = StrappingTable.from_points(unit.strapping.points)
            signal_uom = unit.strapping.volume_uom
        measured.append(
            MeasuredUnit(
                unit=StorageUnitId(unit.id),
                material=material,
                signal_uom=signal_uom,
                strapping=strapping,
                deriver=DeriverConfig(
                    unit=unit.id,
                    deadband=unit.deadband
                    or _default_deadband(unit, material.base_uom, material.density_kg_per_l),
                    max_interval=timedelta(seconds=unit.max_interval_s),
                    settle=timedelta(seconds=unit.settle_s),
                    plausibility_limit=unit.plausibility_limit,
                ),
                books=bookings[StorageUnitId(unit.id)] is Booking.MEASURED,
            )
        )
    return measured


METER_MAX_GAP = timedelta(hours=1)  # longer unobserved: the counter may have rolled over
# A meter flow per unit and minute (the deadband is the unit's capacity): period sums
# need no finer grain, and the ledger does not grow by a row per poll.
METER_INTERVAL = timedelta(minutes=1)


def meter_tags(config: InvopsConfig) -> dict[str, StorageUnitId]:
    """Tag name -> storage unit, for each unit's flow totalizer."""
    return {
        f"{unit.id}.totalizer": StorageUnitId(unit.id)
        for unit in config.storage_units
        if unit.totalizer is not None
    }


def metered_units(config: InvopsConfig) -> list[MeteredUnit]:
    """Each unit's flow totalizer as the MeterService counts it: in the material's base
    unit (the tag's unit per count, converted by the material's density)."""
    materials = {m.id: m for m in config.material_definitions()}
    metered = []
    for unit in config.storage_units:
        if unit.totalizer is None or unit.material is None:
            continue
        material = materials[MaterialId(unit.material)]
        tag = unit.totalizer
        per_count = Decimal(str(tag.scale))  # the tag's unit per count
        scale = convert(
            per_count, tag.unit or material.base_uom, material.base_uom,
            material.density_kg_per_l,
        )  # fmt: skip
        direction = unit.totalizer_direction
        kind = MovementKind.ISSUE if direction is MeterDirection.OUT else MovementKind.RECEIPT
        metered.append(
            MeteredUnit(
                StorageUnitId(unit.id),
                direction,
                material.base_uom,
                TotalizerConfig(
                    unit.id,
                    kind,
                    max_gap=METER_MAX_GAP,
                    max_interval=METER_INTERVAL,
                    deadband=convert(
                        unit.capacity,
                        unit.capacity_uom,
                        material.base_uom,
                        material.density_kg_per_l,
                    ),
                    scale=scale,
                    maximum=unit.totalizer_max,
                ),
                tag_scale=tag.scale or 1.0,
                tag_offset=tag.offset,
            )
        )
    return metered


def _default_deadband(unit: StorageUnitConfig, base_uom: str, density: Decimal | None) -> Decimal:
    capacity = convert(unit.capacity, unit.capacity_uom, base_uom, density)
    return max(capacity * DEFAULT_DEADBAND_FRACTION, Decimal("0.001"))


def make_link(settings: PlcSettings) -> PlcLink:
    """The PLC link for one configured PLC (the only place that picks the protocol)."""
    if settings.protocol is PlcProtocol.S7:
        return S7Link(settings)
    return ModbusLink(settings)


def opcua_settings(config: InvopsConfig) -> OpcuaSettings:
    """What the OPC UA server shows and how it listens, as the adapter takes it."""
    units = {str(u.id): u for u in config.storage_unit_definitions()}
    return OpcuaSettings(
        endpoint=config.opcua.endpoint,
        site=config.site.name,
        site_description=config.site.description,
        areas=tuple(config.site.areas),
        units=tuple(
            OpcuaUnit(
                units[unit.id],
                level_uom=(unit.level.unit if unit.level is not None else "") or "mm",
                max_level=None
                if unit.strapping is None
                else float(max(point[0] for point in unit.strapping.points)),
            )
            for unit in config.storage_units
        ),
        materials=tuple(config.material_definitions()),
        allow_security_none=config.opcua.allow_security_none,
        value_deadband_pct=config.opcua.value_deadband_pct,
        denied_audit_window_s=config.opcua.denied_audit_window_s,
        limits=server_limits(config.opcua),
    )


def opcua_security(config: InvopsConfig) -> OpcuaSecurity:
    """Who may log in to the OPC UA server and over which policies, as the adapter
    takes it: the security and `login_*` keys of `[opcua]`, and the `[[users]]`."""
    opcua = config.opcua
    return OpcuaSecurity(
        endpoint=opcua.endpoint,
        allow_security_none=opcua.allow_security_none,
        security_policies=tuple(policy.value for policy in opcua.security_policies),
        anonymous=opcua.anonymous.value,
        logins=login_settings(opcua),
        users=config.user_definitions(),
    )


def login_settings(opcua: OpcuaConfig) -> LoginSettings:
    """The `[opcua] login_*` keys: OPC UA logins and electronic signatures (which take
    `max_failures`, `failure_window_s` and `lockout_s` from them) alike."""
    return LoginSettings(
        max_failures=opcua.login_max_failures,
        source_max_failures=opcua.login_source_max_failures,
        failure_window_s=opcua.login_failure_window_s,
        lockout_s=opcua.login_lockout_s,
        lockout_max_s=opcua.login_lockout_max_s,
        failure_delay_s=opcua.login_failure_delay_s,
        concurrency=opcua.login_concurrency,
        queue=opcua.login_queue,
    )


def signing_service(
    config: InvopsConfig, ledger: Ledger, metrics: Metrics | None = None
) -> SigningService:
    """Signing of pending requests, for every interface: the `[[users]]` sign."""
    return SigningService(
        ledger,
        config.user_definitions(),
        login_settings(config.opcua),
        on_attempt=metrics.signature_attempt if metrics else None,
        on_lockout=metrics.signature_lockout if metrics else None,
    )


def server_limits(opcua: OpcuaConfig) -> ServerLimits:
    """The server's limits from `[opcua]` (config checks keep them consistent; an
    inconsistent model built in code fails here)."""
    try:
        return ServerLimits(
            max_connections=opcua.max_connections,
            max_sessions=opcua.max_sessions,
            max_anonymous_sessions=opcua.max_anonymous_sessions,
            handshake_timeout_s=opcua.handshake_timeout_s,
            activation_timeout_s=opcua.activation_timeout_s,
            min_session_timeout_s=opcua.min_session_timeout_s,
            max_session_timeout_s=opcua.max_session_timeout_s,
            max_chunk_size=opcua.max_chunk_size,
            max_message_size=opcua.max_message_size,
            max_subscriptions_per_session=opcua.max_subscriptions_per_session,
            max_monitored_items_per_session=opcua.max_monitored_items_per_session,
            max_anonymous_monitored_items=opcua.max_anonymous_monitored_items,
        )
    except ValueError as exc:
        raise OpcuaServerError(f"[opcua] limits: {exc}") from exc

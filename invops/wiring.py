"""The composition root: the one module that knows every concrete class.

It turns the validated config into the objects the service runs: PLC links
and pollers, the measurement service and its bridge, (later) the OPC UA
server and metrics. Everything is passed in explicitly.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from inventory_core.domain.derivation import DeriverConfig, StrappingTable
from inventory_core.domain.model import MaterialId, StorageUnitId
from inventory_core.domain.units import convert
from inventory_core.measurement_service import MeasuredUnit
from invops.config import HttpListenerConfig, InvopsConfig, OpcuaConfig, StorageUnitConfig
from invops.http_server import HttpLimits
from opcua_server import OpcuaServerError
from opcua_server.limits import ServerLimits
from opcua_server.settings import OpcuaSettings, OpcuaUnit
from plc_connectors import ModbusLink, PlcLink, PlcProtocol, PlcSettings, S7Link

DEFAULT_DEADBAND_FRACTION = Decimal("0.005")  # 0.5 % of capacity


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
            )
        )
    return measured


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

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
from invops.config import HttpListenerConfig, InvopsConfig, StorageUnitConfig
from invops.http_server import HttpLimits
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

"""Pass 2: checks between tables, which no single pydantic model can make.

Duplicate ids, references (unit -> area, material, PLC), PLC addresses valid for
the PLC's protocol and not overlapping, measurement combinations, comparable
units, and OPC UA security and limits that depend on each other. They run over
whatever survived pass 1, so that one broken table does not hide the rest.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from inventory_core.domain.errors import InventoryError
from inventory_core.domain.model import Booking
from inventory_core.domain.units import dimension
from invops.config.errors import Issue, Loc, did_you_mean, format_path
from invops.config.schema import (
    InvopsConfig,
    MaterialConfig,
    PlcConfig,
    SiteConfig,
    StorageUnitConfig,
    TagConfig,
    tag_of,
)
from invops.config.server_schema import AnonymousAccess, OpcuaConfig, SecurityPolicyName
from plc_connectors import DataType, Tag, TagConfigError, overlaps, validate_tag

__all__ = ["Parts", "cross_check", "parts_from_model", "parts_from_raw"]


@dataclass(frozen=True, slots=True)
class Parts:
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


def parts_from_model(config: InvopsConfig) -> Parts:
    materials: dict[str, MaterialConfig] = {}
    for material in config.materials:
        materials.setdefault(material.id, material)
    plcs: dict[str, PlcConfig] = {}
    for plc in config.plcs:
        plcs.setdefault(plc.name, plc)
    return Parts(
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


def parts_from_raw(data: Mapping[str, Any]) -> Parts:
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
    return Parts(
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


def cross_check(parts: Parts) -> list[Issue]:
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


def _check_opcua_security(opcua: OpcuaConfig, user_count: int) -> Iterator[Issue]:
    """Policy None only when allowed; passwords never in clear text; someone can log in."""
    policies = opcua.security_policies
    if SecurityPolicyName.NONE in policies and not opcua.allow_security_none:
        index = policies.index(SecurityPolicyName.NONE)
        yield Issue(
            ("opcua", "security_policies", index),
            "policy 'None' (no signing, no encryption) needs allow_security_none = true",
        )
    encrypting = [p for p in policies if p.value.endswith("_SignAndEncrypt")]
    if SecurityPolicyName.NONE in policies and user_count and not encrypting:
        yield Issue(
            ("opcua", "security_policies"),
            "with policy 'None' and [[users]], also list a *_SignAndEncrypt policy: "
            "it encrypts the passwords sent over unsecured sessions",
        )
    if opcua.anonymous is AnonymousAccess.OFF and not user_count:
        yield Issue(
            ("opcua", "anonymous"),
            'anonymous = "off" but there are no [[users]]: no OPC UA client could log in',
        )


def _check_opcua_limits(opcua: OpcuaConfig) -> Iterator[Issue]:
    """Sessions below connections, anonymous ones below sessions (room for users who
    log in), timeouts and sizes in order."""
    if opcua.max_sessions >= opcua.max_connections:
        yield Issue(
            ("opcua", "max_sessions"),
            f"must be below max_connections ({opcua.max_connections}): connections beyond "
            "the sessions let a new client in while every session is taken",
        )
    if opcua.max_anonymous_sessions >= opcua.max_sessions:
        yield Issue(
            ("opcua", "max_anonymous_sessions"),
            f"must be below max_sessions ({opcua.max_sessions}): the difference is kept "
            "for users who log in",
        )
    if opcua.handshake_timeout_s > opcua.activation_timeout_s:
        yield Issue(
            ("opcua", "handshake_timeout_s"),
            f"must be at most activation_timeout_s ({opcua.activation_timeout_s:g}): both "
            "count from the connection's start",
        )
    if opcua.min_session_timeout_s > opcua.max_session_timeout_s:
        yield Issue(
            ("opcua", "min_session_timeout_s"),
            f"must be at most max_session_timeout_s ({opcua.max_session_timeout_s:g})",
        )
    if opcua.max_message_size < opcua.max_chunk_size:
        yield Issue(
            ("opcua", "max_message_size"),
            f"must be at least max_chunk_size ({opcua.max_chunk_size})",
        )


def _check_tag(loc: Loc, tag: TagConfig, parts: Parts, declared_plcs: set[str]) -> Iterator[Issue]:
    if tag.plc not in declared_plcs:
        hint = did_you_mean(tag.plc, declared_plcs)
        yield Issue(
            (*loc, "plc"), f"unknown PLC {tag.plc!r}: no [[plcs]] entry has this name{hint}"
        )
        return
    plc = parts.plcs.get(tag.plc)
    if plc is None:
        return  # the PLC entry itself is broken and already reported
    try:
        validate_tag(tag_of("", "", tag), plc.protocol)
    except TagConfigError as exc:
        yield Issue((*loc, "address"), str(exc))


def _overlapping_tags(placed: Mapping[str, list[tuple[Loc, Tag]]]) -> Iterator[Issue]:
    """Two values mapped onto the same registers/bytes of one PLC are a wiring mistake."""
    for plc, tags in placed.items():
        for i, (loc, tag) in enumerate(tags):
            for other_loc, other in tags[:i]:
                if overlaps(tag, other):
                    yield Issue(
                        (*loc, "address"),
                        f"overlaps {format_path(other_loc)} on PLC {plc!r} "
                        f"({format_path(loc)} and {format_path(other_loc)} share registers)",
                    )


def _check_measurement(loc: Loc, unit: StorageUnitConfig, parts: Parts) -> Iterator[Issue]:
    """A unit is measured by level (with a strapping table) or by weight, not both."""
    if unit.level is not None and unit.weight is not None:
        yield Issue((*loc, "weight"), "give either level (with strapping) or weight, not both")
    if unit.level is not None and unit.strapping is None:
        yield Issue((*loc, "strapping"), "a level measurement needs a strapping table")
    if unit.strapping is not None and unit.level is None:
        yield Issue((*loc, "level"), "a strapping table needs a level measurement")
    if unit.weight is not None and unit.weight.unit:
        try:
            if dimension(unit.weight.unit).value != "mass":
                raise InventoryError
        except InventoryError:
            yield Issue(
                (*loc, "weight", "unit"),
                f"weight unit must be kg, g or t (got {unit.weight.unit!r})",
            )
    if unit.totalizer is not None and unit.totalizer.data_type not in (
        DataType.UINT16,
        DataType.UINT32,
    ):
        yield Issue((*loc, "totalizer", "data_type"), "a totalizer is a uint16 or uint32 counter")


def _duplicate_ids(
    section: str, noun: str, ids: Iterable[tuple[int, str]], key: str = "id"
) -> Iterator[Issue]:
    first: dict[str, int] = {}
    for index, ident in ids:
        if ident in first:
            message = (
                f"duplicate {noun} {key} {ident!r} (first defined at {section}[{first[ident]}])"
            )
            yield Issue((section, index, key), message)
        else:
            first[ident] = index


def _check_storage_unit(
    loc: Loc, unit: StorageUnitConfig, parts: Parts, declared_materials: set[str]
) -> Iterator[Issue]:
    if parts.site is not None and unit.area not in parts.site.areas:
        areas = ", ".join(parts.site.areas)
        hint = did_you_mean(unit.area, parts.site.areas)
        yield Issue((*loc, "area"), f"area {unit.area!r} is not in site.areas ({areas}){hint}")
    if unit.booking is Booking.MEASURED and unit.level is None and unit.weight is None:
        yield Issue(
            (*loc, "booking"),
            'booking = "measured" needs a level or weight tag: the measurement is the quantity '
            'truth (use booking = "manual" for a unit booked by its postings)',
        )
    if unit.material is None:
        return
    if unit.material not in declared_materials:
        hint = did_you_mean(unit.material, declared_materials)
        message = f"unknown material {unit.material!r}: no [[materials]] entry has this id{hint}"
        yield Issue((*loc, "material"), message)
        return
    material = parts.materials.get(unit.material)
    if material is not None and (mismatch := _incomparable_units(unit, material)):
        yield Issue((*loc, "capacity_uom"), mismatch)


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

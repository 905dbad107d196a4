"""Build the invops instance nodes (SPEC §4 browse paths) from TYPE_MODEL and the config.

Layout under Objects, all BrowseNames of instances in the instances namespace
(`urn:invops:ua:plant`), the members inherited from the types keep the types
namespace (`urn:invops:ua:types`), as OPC UA instantiation does:

    Inventory/<Site>/<Area>/<Unit>          TankType | SiloType | BinType
    Inventory/Materials/<MaterialDefinitionID>   MaterialDefinitionType
    Inventory/Lots/<LotID>                  MaterialLotType (added as lots appear)
    Inventory/Ledger                        LedgerType: the ledger methods, OpenAdvices,
                                            PendingRequests

NodeIds are strings in the instances namespace that spell the browse path
with `.` between segments (`Inventory.PLANT1.TANKFARM.TK-101.Level`,
`...Level.EURange`); a `.` or `%` inside an id is escaped as `%2E` / `%25`,
so every path maps to exactly one NodeId. They survive restarts, which
historians and SCADA tag lists rely on.

Nodes are added in batches straight through the internal session (one
AddNodes call per unit), not with `Node.add_*` one by one, and spread over the
site/area hierarchy: asyncua's node creation is linear in a parent's children.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Final

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from information_model import (
    DATA_TYPE_IDS,
    INSTANCES_NAMESPACE,
    TYPE_MODEL,
    TYPES_NAMESPACE,
    UNECE_NAMESPACE_URI,
    MethodDef,
    VariableDef,
    render_nodeset,
    unit_for,
)
from inventory_core.domain.errors import UnitConversionError
from inventory_core.domain.model import Lot, MaterialDefinition, StorageKind
from inventory_core.domain.units import convert
from inventory_core.log import get_logger
from opcua_server.settings import OpcuaSettings, OpcuaUnit
from opcua_server.values import data_value, make_node_id

log = get_logger(__name__)

INVENTORY: Final = "Inventory"
MATERIALS: Final = "Materials"
LOTS: Final = "Lots"
LEDGER: Final = "Ledger"
RESERVED_SITE_NAMES: Final = frozenset({MATERIALS, LOTS, LEDGER})

UNIT_TYPES: Final[Mapping[StorageKind, str]] = {
    StorageKind.TANK: "TankType",
    StorageKind.SILO: "SiloType",
    StorageKind.BIN: "BinType",
}
# Variables whose value comes from a PLC (status follows the link's quality).
PLC_VARIABLES: Final = frozenset(
    {"Level", "Volume", "Mass", "FillPercent", "MeasuredQuantity", "Discrepancy"}
)
YIELD_EVERY: Final = 500  # server-side writes between two yields to the event loop

_GOOD: Final = StatusCodes.Good
_WAITING: Final = StatusCodes.BadWaitingForInitialData
_READ_ONLY: Final = ua.AccessLevel.CurrentRead.mask


def _escape(segment: str) -> str:
    return segment.replace("%", "%25").replace(".", "%2E")


def node_id_text(*segments: str) -> str:
    """The string identifier of the instance node at this browse path (without `Objects`)."""
    return ".".join(_escape(s) for s in segments)


class OpcuaServerError(Exception):
    """The OPC UA server cannot be built or started as configured."""


@dataclass(frozen=True, slots=True)
class UnitNodes:
    """One storage unit's object and its variables (BrowseName -> NodeId) for fast writes."""

    unit: str
    site: str
    area: str
    kind: StorageKind
    object_id: ua.NodeId
    variables: Mapping[str, ua.NodeId]


@dataclass(frozen=True, slots=True)
class LotNodes:
    """One material lot's object and its variables (BrowseName -> NodeId)."""

    lot: str
    object_id: ua.NodeId
    variables: Mapping[str, ua.NodeId]


WriteObserver = Callable[[ua.NodeId, ua.DataValue], None]


class NodeWriter:
    """Server-side value writes of full DataValues, skipping unchanged ones.

    Uses `Server.write_attribute_value` (no per-node client plumbing) and yields
    to the event loop every YIELD_EVERY writes, so thousands of updates never
    hold the loop long enough to starve sessions (REFERENCE 9.2).
    """

    def __init__(self, server: Server, yield_every: int = YIELD_EVERY) -> None:
        self._server = server
        self._yield_every = yield_every
        self._last: dict[ua.NodeId, tuple[object, int]] = {}
        self._observers: dict[ua.NodeId, WriteObserver] = {}
        self._deadbands: dict[ua.NodeId, float] = {}
        self._since_yield = 0
        self.writes = 0

    def set_deadband(self, node_id: ua.NodeId, deadband: float) -> None:
        """Skip writes of a number within `deadband` of the number last written with the
        same status: sensor noise then costs no write, no notification and no history
        point, while every real change still goes out at once."""
        if deadband > 0:
            self._deadbands[node_id] = deadband
        else:
            self._deadbands.pop(node_id, None)

    def observe(self, node_id: ua.NodeId, observer: WriteObserver) -> None:
        """Call `observer(node_id, datavalue)` after each write of `node_id` (sync, quick,
        must not raise): e.g. value history, without an internal OPC UA subscription."""
        self._observers[node_id] = observer

    async def write(
        self,
        node_id: ua.NodeId,
        value: ua.Variant,
        status: int = _GOOD,
        source_time: datetime | None = None,
        server_time: datetime | None = None,
    ) -> bool:
        """Write when (value, status) differs from the last write (beyond the node's
        deadband, if it has one); True if it wrote."""
        if self.unchanged(node_id, value.Value, status):
            return False
        await self._write(node_id, value, status, source_time, server_time)
        return True

    async def write_double(
        self,
        node_id: ua.NodeId,
        number: float,
        status: int = _GOOD,
        source_time: datetime | None = None,
        server_time: datetime | None = None,
    ) -> bool:
        """`write` of a Double, deciding before any OPC UA object is built (most
        PLC values are skipped: unchanged or within the deadband)."""
        number = float(number)
        if self.unchanged(node_id, number, status):
            return False
        variant = ua.Variant(number, ua.VariantType.Double)
        await self._write(node_id, variant, status, source_time, server_time)
        return True

    def unchanged(self, node_id: ua.NodeId, value: object, status: int) -> bool:
        """Whether writing (value, status) would show nothing new: the same as the last
        write, or a number within the node's deadband of it with the same status."""
        last = self._last.get(node_id)
        if last is None:
            return False
        if last[1] != status:
            return False
        if last[0] == value and type(last[0]) is type(value):
            return True
        deadband = self._deadbands.get(node_id)
        return (
            deadband is not None
            and isinstance(last[0], float)
            and isinstance(value, float)
            and abs(value - last[0]) < deadband
        )

    async def _write(
        self,
        node_id: ua.NodeId,
        value: ua.Variant,
        status: int,
        source_time: datetime | None,
        server_time: datetime | None,
    ) -> None:
        self._last[node_id] = (value.Value, status)
        dv = data_value(value, status, source_time, server_time or datetime.now(UTC))
        await self._server.write_attribute_value(node_id, dv)
        observer = self._observers.get(node_id)
        if observer is not None:
            observer(node_id, dv)
        self.writes += 1
        self._since_yield += 1
        if self._since_yield >= self._yield_every:
            self._since_yield = 0
            await asyncio.sleep(0)

    def remember(self, node_id: ua.NodeId, value: ua.Variant, status: int = _GOOD) -> None:
        """Record what a node holds without writing it (values set at creation)."""
        self._last[node_id] = (value.Value, status)

    def last(self, node_id: ua.NodeId) -> tuple[object, int] | None:
        """The (value, status) last written to `node_id`, if any."""
        return self._last.get(node_id)


def eu_information(uom: str) -> ua.EUInformation:
    """EngineeringUnits of an invops unit of measure (UNECE; UnitId -1 when unknown)."""
    try:
        unit = unit_for(uom)
    except UnitConversionError:
        text = ua.LocalizedText(uom)
        return ua.EUInformation(UNECE_NAMESPACE_URI, -1, text, text)
    return ua.EUInformation(
        unit.namespace_uri,
        unit.unit_id,
        ua.LocalizedText(unit.display_name),
        ua.LocalizedText(unit.description),
    )


def _range(low: float, high: float | None) -> ua.Range | None:
    return None if high is None or high <= low else ua.Range(float(low), float(high))


def _convert(
    quantity: Decimal, from_uom: str, to_uom: str, density: Decimal | None
) -> float | None:
    try:
        return float(convert(quantity, from_uom, to_uom, density))
    except UnitConversionError:
        return None  # e.g. a silo sized in t for a material without density has no litres


def _variant(value: object, data_type: str) -> ua.Variant:
    if value is None:
        return ua.Variant()
    return ua.Variant(value, ua.VariantType[data_type])


@dataclass(frozen=True, slots=True)
class _Meta:
    """Per-instance metadata of an analog item (EngineeringUnits, EURange) and start value."""

    units: ua.EUInformation | None = None
    eu_range: ua.Range | None = None
    value: object = None


@dataclass(slots=True)
class _Batch:
    """AddNodes items for one object and its members, plus the values to write after."""

    items: list[ua.AddNodesItem] = field(default_factory=list)
    initial: list[tuple[ua.NodeId, ua.Variant, int]] = field(default_factory=list)


class AddressSpace:
    """The invops instance nodes of one asyncua Server, and maps to them for fast writes."""

    def __init__(self, server: Server, types_ns: int, plant_ns: int) -> None:
        self.server = server
        self.types_ns = types_ns
        self.plant_ns = plant_ns
        ids = TYPE_MODEL.node_ids()
        self.type_ids: dict[str, ua.NodeId] = {
            t.browse_name: make_node_id(ids[t.browse_name], types_ns) for t in TYPE_MODEL.types
        }
        self.writer = NodeWriter(server)
        self.inventory_id = self.node_id(INVENTORY)
        self.materials_folder_id = self.node_id(INVENTORY, MATERIALS)
        self.lots_folder_id = self.node_id(INVENTORY, LOTS)
        self.ledger_id = self.node_id(INVENTORY, LEDGER)
        self.units: dict[str, UnitNodes] = {}
        self.materials: dict[str, Mapping[str, ua.NodeId]] = {}
        self.lots: dict[str, LotNodes] = {}
        self.ledger_methods: dict[str, ua.NodeId] = {}
        self.ledger_variables: dict[str, ua.NodeId] = {}  # OpenAdvices, PendingRequests
        self.eu_spans: dict[ua.NodeId, float] = {}  # analog item -> EURange high - low
        self._folders: set[ua.NodeId] = set()

    def node_id(self, *segments: str) -> ua.NodeId:
        """The NodeId of the instance node at `Objects/<segments...>`."""
        return make_node_id(node_id_text(*segments), self.plant_ns)

    def _qname(self, name: str, ns: int | None = None) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.plant_ns if ns is None else ns)

    # --- node items ----------------------------------------------------------------

    def _object(
        self,
        node_id: ua.NodeId,
        parent: ua.NodeId,
        name: str,
        type_id: ua.NodeId,
        description: str = "",
        event_notifier: int = 0,
    ) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = node_id
        item.BrowseName = self._qname(name)
        item.NodeClass = ua.NodeClass.Object
        item.ParentNodeId = parent
        item.ReferenceTypeId = make_node_id(ObjectIds.Organizes)
        item.TypeDefinition = type_id
        attrs = ua.ObjectAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(description or name)
        attrs.EventNotifier = event_notifier
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        item.NodeAttributes = attrs
        return item

    def _variable(
        self,
        node_id: ua.NodeId,
        parent: ua.NodeId,
        browse_name: ua.QualifiedName,
        data_type: ua.NodeId,
        value: ua.Variant,
        *,
        property_: bool,
        type_id: int,
        description: str = "",
        array_length: int | None = None,
    ) -> ua.AddNodesItem:
        """A read-only variable: no write bit in AccessLevel, WriteMask 0 (SPEC §4)."""
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = node_id
        item.BrowseName = browse_name
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent
        reference = ObjectIds.HasProperty if property_ else ObjectIds.HasComponent
        item.ReferenceTypeId = make_node_id(reference)
        item.TypeDefinition = make_node_id(type_id)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(browse_name.Name)
        attrs.Description = ua.LocalizedText(description or browse_name.Name)
        attrs.DataType = data_type
        attrs.Value = value
        if array_length is None:
            attrs.ValueRank = ua.ValueRank.Scalar
        else:
            attrs.ValueRank = ua.ValueRank.OneDimension
            attrs.ArrayDimensions = [array_length]
        attrs.AccessLevel = _READ_ONLY
        attrs.UserAccessLevel = _READ_ONLY
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.Historizing = False
        item.NodeAttributes = attrs
        return item

    def _members(
        self,
        batch: _Batch,
        parent_segments: tuple[str, ...],
        variables: Iterable[VariableDef],
        meta: Mapping[str, _Meta],
        waiting: frozenset[str] = frozenset(),
    ) -> dict[str, ua.NodeId]:
        """Items for an object's variables as its type declares them; returns their NodeIds."""
        parent = self.node_id(*parent_segments)
        found: dict[str, ua.NodeId] = {}
        for variable in variables:
            name = variable.browse_name
            node_id = self.node_id(*parent_segments, name)
            info = meta.get(name, _Meta(value=variable.value))
            value = (
                ua.Variant([], ua.VariantType[variable.data_type])
                if variable.array  # filled by the writers as lots appear
                else _variant(info.value, variable.data_type)
            )
            batch.items.append(
                self._variable(
                    node_id,
                    parent,
                    ua.QualifiedName(name, self.types_ns),
                    make_node_id(DATA_TYPE_IDS[variable.data_type]),
                    value,
                    property_=variable.kind == "property",
                    type_id=_VARIABLE_TYPES[variable.kind],
                    description=variable.description,
                    array_length=0 if variable.array else None,
                )
            )
            batch.initial.append((node_id, value, _WAITING if name in waiting else _GOOD))
            if variable.kind == "analog":
                self._analog_properties(batch, (*parent_segments, name), variable, info)
            found[name] = node_id
        return found

    def _analog_properties(
        self, batch: _Batch, segments: tuple[str, ...], variable: VariableDef, info: _Meta
    ) -> None:
        units = info.units
        if units is None and variable.engineering_unit is not None:
            unit = variable.engineering_unit
            units = ua.EUInformation(
                unit.namespace_uri,
                unit.unit_id,
                ua.LocalizedText(unit.display_name),
                ua.LocalizedText(unit.description),
            )
        eu_range = info.eu_range
        if eu_range is None and variable.eu_range is not None:
            eu_range = ua.Range(*map(float, variable.eu_range))
        parent = self.node_id(*segments)
        if eu_range is not None:
            self.eu_spans[parent] = eu_range.High - eu_range.Low
        for name, data_type, value in (
            ("EngineeringUnits", ObjectIds.EUInformation, units),
            ("EURange", ObjectIds.Range, eu_range),
        ):
            batch.items.append(
                self._variable(
                    self.node_id(*segments, name),
                    parent,
                    ua.QualifiedName(name, 0),
                    make_node_id(data_type),
                    ua.Variant() if value is None else ua.Variant(value),
                    property_=True,
                    type_id=ObjectIds.PropertyType,
                )
            )

    async def _add(self, batch: _Batch) -> None:
        results = await self.server.iserver.isession.add_nodes(batch.items)
        for item, result in zip(batch.items, results, strict=True):
            if not result.StatusCode.is_good():
                raise OpcuaServerError(
                    f"cannot add node {item.RequestedNewNodeId.to_string()}: "
                    f"{result.StatusCode.name}"
                )
        for node_id, value, status in batch.initial:
            if status == _GOOD:  # the value is already in the node: just remember it
                self.writer.remember(node_id, value, status)
            else:
                await self.writer.write(node_id, value, status)

    async def _folder(self, parent: ua.NodeId, *segments: str, description: str = "") -> None:
        node_id = self.node_id(*segments)
        if node_id in self._folders:
            return
        item = self._object(
            node_id, parent, segments[-1], make_node_id(ObjectIds.FolderType), description
        )
        await self._add(_Batch([item]))
        self._folders.add(node_id)

    # --- storage units ---------------------------------------------------------------

    async def add_unit(
        self, site: str, shown: OpcuaUnit, material: MaterialDefinition | None
    ) -> UnitNodes:
        """A storage unit under Inventory/<site>/<area>, typed by its kind."""
        unit = shown.unit
        if site in RESERVED_SITE_NAMES:
            raise ValueError(f"site name {site!r} clashes with Inventory/{site}")
        await self._folder(self.inventory_id, INVENTORY, site)
        await self._folder(self.node_id(INVENTORY, site), INVENTORY, site, unit.area)
        type_name = UNIT_TYPES[unit.kind]
        segments = (INVENTORY, site, unit.area, unit.id)
        batch = _Batch()
        batch.items.append(
            self._object(
                self.node_id(*segments),
                self.node_id(INVENTORY, site, unit.area),
                unit.id,
                self.type_ids[type_name],
                unit.description,
            )
        )
        variables = self._members(
            batch,
            segments,
            TYPE_MODEL.all_variables(type_name),
            _unit_meta(shown, material),
            waiting=PLC_VARIABLES | {"BookQuantity"},
        )
        await self._add(batch)
        nodes = UnitNodes(unit.id, site, unit.area, unit.kind, self.node_id(*segments), variables)
        self.units[unit.id] = nodes
        return nodes

    # --- materials and lots ----------------------------------------------------------

    async def add_material(self, material: MaterialDefinition) -> Mapping[str, ua.NodeId]:
        """Inventory/Materials/<id> (idempotent)."""
        if material.id in self.materials:
            return self.materials[material.id]
        segments = (INVENTORY, MATERIALS, material.id)
        density = material.density_kg_per_l
        meta = {
            "ID": _Meta(value=material.id),
            "Description": _Meta(value=material.description),
            "BaseUnitOfMeasure": _Meta(value=material.base_uom),
            "Density": _Meta(
                eu_range=None if density is None else _range(0.0, 2 * float(density)),
                value=None if density is None else float(density),
            ),
            "MaterialClassID": _Meta(value=material.material_class or ""),
        }
        batch = _Batch()
        batch.items.append(
            self._object(
                self.node_id(*segments),
                self.materials_folder_id,
                material.id,
                self.type_ids["MaterialDefinitionType"],
                material.description,
            )
        )
        variables = self._members(
            batch, segments, TYPE_MODEL.all_variables("MaterialDefinitionType"), meta
        )
        await self._add(batch)
        self.materials[material.id] = variables
        return variables

    async def ensure_lot(self, lot: Lot, base_uom: str) -> LotNodes:
        """Inventory/Lots/<id>, created on first sight; values are written by the caller."""
        found = self.lots.get(lot.id)
        if found is not None:
            return found
        segments = (INVENTORY, LOTS, lot.id)
        expiry = None if lot.expiry is None else midnight(lot.expiry)
        meta = {
            "ID": _Meta(value=lot.id),
            "MaterialDefinitionID": _Meta(value=lot.material),
            "Status": _Meta(value=str(lot.status)),
            "StorageLocation": _Meta(value=""),
            "Quantity": _Meta(units=eu_information(base_uom), value=0.0),
            "QuantityUnitOfMeasure": _Meta(value=base_uom),
            "ExpirationDate": _Meta(value=expiry),
            "RetestDate": _Meta(value=lot.quality.retest.isoformat() if lot.quality.retest else ""),
            "RetestDue": _Meta(value=False),  # the mirror's write says (it knows the day)
            "Certificate": _Meta(value=lot.quality.certificate),
        }
        batch = _Batch()
        batch.items.append(
            self._object(
                self.node_id(*segments),
                self.lots_folder_id,
                lot.id,
                self.type_ids["MaterialLotType"],
                f"Lot {lot.id} of {lot.material}",
            )
        )
        variables = self._members(
            batch, segments, TYPE_MODEL.all_variables("MaterialLotType"), meta
        )
        await self._add(batch)
        nodes = LotNodes(lot.id, self.node_id(*segments), variables)
        self.lots[lot.id] = nodes
        return nodes

    # --- ledger ------------------------------------------------------------------------

    async def add_ledger(self) -> ua.NodeId:
        """Inventory/Ledger with one method node per LedgerType method (callbacks linked later)."""
        batch = _Batch()
        batch.items.append(
            self._object(
                self.ledger_id,
                self.inventory_id,
                LEDGER,
                self.type_ids["LedgerType"],
                TYPE_MODEL.object_type("LedgerType").description,
                event_notifier=ua.EventNotifier.SubscribeToEvents.mask,
            )
        )
        self.ledger_variables = self._members(
            batch, (INVENTORY, LEDGER), TYPE_MODEL.all_variables("LedgerType"), {}
        )
        for method in TYPE_MODEL.all_methods("LedgerType"):
            self.ledger_methods[method.browse_name] = self._method(batch, method)
        await self._add(batch)
        return self.ledger_id

    def _method(self, batch: _Batch, method: MethodDef) -> ua.NodeId:
        segments = (INVENTORY, LEDGER, method.browse_name)
        node_id = self.node_id(*segments)
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = node_id
        item.BrowseName = ua.QualifiedName(method.browse_name, self.types_ns)
        item.NodeClass = ua.NodeClass.Method
        item.ParentNodeId = self.ledger_id
        item.ReferenceTypeId = make_node_id(ObjectIds.HasComponent)
        attrs = ua.MethodAttributes()
        attrs.DisplayName = ua.LocalizedText(method.browse_name)
        attrs.Description = ua.LocalizedText(
            f"{method.description} Required role: {method.required_role}."
        )
        attrs.Executable = True
        attrs.UserExecutable = True
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        item.NodeAttributes = attrs
        batch.items.append(item)
        for name, arguments in (
            ("InputArguments", method.inputs),
            ("OutputArguments", method.outputs),
        ):
            values = [
                ua.Argument(
                    Name=a.name,
                    DataType=make_node_id(DATA_TYPE_IDS[a.data_type]),
                    ValueRank=a.value_rank,
                    ArrayDimensions=[0] if a.array else [],
                    Description=ua.LocalizedText(a.description),
                )
                for a in arguments
            ]
            batch.items.append(
                self._variable(
                    self.node_id(*segments, name),
                    node_id,
                    ua.QualifiedName(name, 0),
                    make_node_id(ObjectIds.Argument),
                    ua.Variant(values, ua.VariantType.ExtensionObject),
                    property_=True,
                    type_id=ObjectIds.PropertyType,
                    array_length=len(values),
                )
            )
        return node_id


_VARIABLE_TYPES: Final[Mapping[str, int]] = {
    "analog": ObjectIds.AnalogItemType,
    "property": ObjectIds.PropertyType,
    "variable": ObjectIds.BaseDataVariableType,
}


def midnight(day: date) -> datetime:
    """A date as the DateTime of its start, UTC (ExpirationDate)."""
    return datetime.combine(day, time(), tzinfo=UTC)


def _unit_meta(shown: OpcuaUnit, material: MaterialDefinition | None) -> dict[str, _Meta]:
    """EngineeringUnits, EURange and start values of one storage unit's variables."""
    unit = shown.unit
    density = material.density_kg_per_l if material is not None else None
    base_uom = material.base_uom if material is not None else unit.capacity_uom
    capacity = unit.capacity
    in_base = _convert(capacity, unit.capacity_uom, base_uom, density)
    base_units = eu_information(base_uom)
    return {
        "Level": _Meta(eu_information(shown.level_uom or "mm"), _range(0.0, shown.max_level)),
        "Volume": _Meta(eu_range=_range(0.0, _convert(capacity, unit.capacity_uom, "L", density))),
        "Mass": _Meta(eu_range=_range(0.0, _convert(capacity, unit.capacity_uom, "kg", density))),
        "FillPercent": _Meta(eu_range=ua.Range(0.0, 100.0)),
        "BookQuantity": _Meta(base_units, _range(0.0, in_base)),
        "MeasuredQuantity": _Meta(base_units, _range(0.0, in_base)),
        "Discrepancy": _Meta(base_units, None if in_base is None else _range(-in_base, in_base)),
        "MaterialDefinitionID": _Meta(value=unit.material or ""),
        "LotID": _Meta(value=""),
        "Status": _Meta(value=""),
        "Capacity": _Meta(
            eu_information(unit.capacity_uom), _range(0.0, float(capacity)), float(capacity)
        ),
    }


async def load_type_model(server: Server) -> int:
    """Import the invops types (NodeSet2 of TYPE_MODEL); returns the types namespace index."""
    await server.import_xml(xmlstring=render_nodeset().decode("utf-8"))
    return await server.get_namespace_index(TYPES_NAMESPACE)


async def build_address_space(
    server: Server, settings: OpcuaSettings, materials: Sequence[MaterialDefinition]
) -> AddressSpace:
    """Types, then Inventory with every site/area/unit, material and the ledger.

    `materials`: the material definitions to show (config and ledger); lots are
    added later by the ledger mirror as they appear.
    """
    types_ns = await load_type_model(server)
    plant_ns = await server.register_namespace(INSTANCES_NAMESPACE)
    space = AddressSpace(server, types_ns, plant_ns)
    objects = make_node_id(ObjectIds.ObjectsFolder)
    await space._folder(objects, INVENTORY, description="ISA-95 inventory: sites, materials, lots")
    await space._folder(
        space.inventory_id, INVENTORY, MATERIALS, description="Material definitions"
    )
    await space._folder(space.inventory_id, INVENTORY, LOTS, description="Material lots")
    await space.add_ledger()
    by_id = {str(m.id): m for m in materials}
    site = settings.site
    if site in RESERVED_SITE_NAMES:
        raise ValueError(f"site name {site!r} clashes with Inventory/{site}")
    await space._folder(space.inventory_id, INVENTORY, site, description=settings.site_description)
    for area in settings.areas:  # areas in config order, even without units
        await space._folder(space.node_id(INVENTORY, site), INVENTORY, site, area)
    for material in materials:
        await space.add_material(material)
        await asyncio.sleep(0)  # building thousands of nodes must not starve other tasks
    for shown in settings.units:
        material = shown.unit.material
        await space.add_unit(site, shown, by_id.get(material) if material else None)
        await asyncio.sleep(0)
    log.info("opcua_address_space_built", units=len(space.units), materials=len(space.materials))
    return space

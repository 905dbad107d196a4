"""The vocabulary the information model is written in: OPC UA type definitions as frozen data.

Nothing here imports asyncua. `isa95.py` spells the invops model with these
classes; `nodeset.py` exports it as NodeSet2 XML and `opcua_server/` builds the
address space from the same values, so both always agree.

Conventions:

- Data types are OPC UA built-in type names (`"Double"`, `"String"`, ...; see
  `DATA_TYPE_IDS`); a builder maps them to `ua.VariantType` by name.
- A variable's `kind` says how it hangs off its object: `"analog"` is an
  `AnalogItemType` component with `EngineeringUnits` and `EURange` properties,
  `"variable"` a `BaseDataVariableType` component, `"property"` a `PropertyType`
  property. Every instance declaration is Mandatory.
- `engineering_unit=None` / `eu_range=None` on an analog variable mean "set per
  instance" (the material's base unit, 0..capacity); the properties still exist.
- NodeIds (`TypeModel.node_ids`): each type owns a block of 1000 numeric ids in
  the types namespace; see `TypeModel.node_ids` for the layout inside a block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

UNECE_NAMESPACE_URI: Final = "http://www.opcfoundation.org/UA/units/un/cefact"

# OPC UA built-in data types a definition may name (numeric ids in namespace 0).
DATA_TYPE_IDS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "Boolean": 1,
        "SByte": 2,
        "Byte": 3,
        "Int16": 4,
        "UInt16": 5,
        "Int32": 6,
        "UInt32": 7,
        "Int64": 8,
        "UInt64": 9,
        "Float": 10,
        "Double": 11,
        "String": 12,
        "DateTime": 13,
        "LocalizedText": 21,
    }
)
NUMERIC_DATA_TYPES: Final = frozenset(DATA_TYPE_IDS) - {
    "Boolean",
    "String",
    "DateTime",
    "LocalizedText",
}

# Standard ObjectTypes (namespace 0) a definition may name as its supertype.
STANDARD_TYPE_IDS: Final[Mapping[str, int]] = MappingProxyType(
    {"BaseObjectType": 58, "FolderType": 61, "BaseEventType": 2041}
)

VariableKind = Literal["analog", "property", "variable"]
VARIABLE_KINDS: Final[tuple[VariableKind, ...]] = ("analog", "property", "variable")

ScalarValue = bool | int | float | str

NODE_ID_BLOCK: Final = 1000  # numeric ids per type
_METHOD_OFFSET: Final = 500  # methods start half-way into a type's block
_CHILD_STRIDE: Final = 10  # ids per child: the child, then its own properties
MAX_CHILDREN: Final = _METHOD_OFFSET // _CHILD_STRIDE - 1  # per kind (variables, methods)

_BROWSE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def _check_name(what: str, name: str) -> None:
    if not _BROWSE_NAME.match(name):
        raise ValueError(f"{what} {name!r}: expected letters, digits and '_', starting a letter")


def _check_data_type(what: str, data_type: str) -> None:
    if data_type not in DATA_TYPE_IDS:
        known = ", ".join(DATA_TYPE_IDS)
        raise ValueError(f"{what}: unknown data type {data_type!r} (known: {known})")


def _duplicates(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dupes: list[str] = []
    for name in names:
        if name in seen:
            dupes.append(name)
        seen.add(name)
    return dupes


def unece_unit_id(common_code: str) -> int:
    """The OPC UA UnitId of a UN/CEFACT Rec 20 common code: its ASCII bytes, big-endian."""
    if not 1 <= len(common_code) <= 3 or not common_code.isascii() or not common_code.isalnum():
        raise ValueError(f"UNECE common code {common_code!r}: expected 1-3 ASCII letters/digits")
    unit_id = 0
    for char in common_code:
        unit_id = (unit_id << 8) | ord(char)
    return unit_id


@dataclass(frozen=True, slots=True)
class Unit:
    """An engineering unit as OPC UA `EUInformation` carries it (UNECE Rec 20 by default)."""

    common_code: str
    unit_id: int
    display_name: str
    description: str
    namespace_uri: str = UNECE_NAMESPACE_URI

    def __post_init__(self) -> None:
        if self.namespace_uri == UNECE_NAMESPACE_URI and self.unit_id != unece_unit_id(
            self.common_code
        ):
            raise ValueError(
                f"unit {self.common_code}: UnitId {self.unit_id} is not the packed common code"
            )


def unece(common_code: str, display_name: str, description: str) -> Unit:
    """A UNECE unit with its UnitId computed from the common code (`unece("LTR", ...)`)."""
    return Unit(common_code, unece_unit_id(common_code), display_name, description)


@dataclass(frozen=True, slots=True)
class ArgumentDef:
    """One method argument (or event field): name, built-in data type, description."""

    name: str
    data_type: str
    description: str = ""
    array: bool = False  # a one-dimensional array of data_type (ValueRank 1)

    def __post_init__(self) -> None:
        _check_name("argument", self.name)
        _check_data_type(f"argument {self.name}", self.data_type)

    @property
    def value_rank(self) -> int:
        """OPC UA ValueRank: -1 scalar, 1 one-dimensional array."""
        return 1 if self.array else -1


_PY_TYPES: Final[Mapping[str, tuple[type, ...]]] = MappingProxyType(
    {
        "Boolean": (bool,),
        "String": (str,),
        "LocalizedText": (str,),
        **{name: (int,) for name in NUMERIC_DATA_TYPES if name not in ("Float", "Double")},
        "Float": (int, float),
        "Double": (int, float),
    }
)


@dataclass(frozen=True, slots=True)
class VariableDef:
    """A variable or property of an object type (an instance declaration, Mandatory).

    `value` is the default the type carries (e.g. `EquipmentLevel = 9`); most
    variables have none and get their value per instance.
    """

    browse_name: str
    data_type: str
    kind: VariableKind = "variable"
    engineering_unit: Unit | None = None
    eu_range: tuple[float, float] | None = None
    description: str = ""
    value: ScalarValue | None = None
    array: bool = False  # a one-dimensional array of data_type (ValueRank 1), empty at first

    def __post_init__(self) -> None:
        what = f"variable {self.browse_name}"
        _check_name("variable", self.browse_name)
        _check_data_type(what, self.data_type)
        if self.array and (self.kind == "analog" or self.value is not None):
            raise ValueError(f"{what}: an array is a plain variable or property with no default")
        if self.kind not in VARIABLE_KINDS:
            raise ValueError(f"{what}: kind {self.kind!r} is not one of {VARIABLE_KINDS}")
        if self.kind == "analog":
            if self.data_type not in NUMERIC_DATA_TYPES:
                raise ValueError(f"{what}: an analog item needs a numeric data type")
        elif self.engineering_unit is not None or self.eu_range is not None:
            raise ValueError(f"{what}: engineering units and EURange need kind 'analog'")
        if self.eu_range is not None and not self.eu_range[0] < self.eu_range[1]:
            raise ValueError(f"{what}: EURange low must be below high")
        if self.value is not None:
            allowed = _PY_TYPES.get(self.data_type, ())
            if isinstance(self.value, bool) and bool not in allowed:
                allowed = ()
            if not isinstance(self.value, allowed):
                raise ValueError(f"{what}: default {self.value!r} is not a {self.data_type}")

    @property
    def value_rank(self) -> int:
        """OPC UA ValueRank: -1 scalar, 1 one-dimensional array."""
        return 1 if self.array else -1


@dataclass(frozen=True, slots=True)
class MethodDef:
    """A method of an object type; `required_role` is the least role allowed to call it."""

    browse_name: str
    inputs: tuple[ArgumentDef, ...] = ()
    outputs: tuple[ArgumentDef, ...] = ()
    description: str = ""
    required_role: str = ""

    def __post_init__(self) -> None:
        _check_name("method", self.browse_name)
        for direction, args in (("input", self.inputs), ("output", self.outputs)):
            dupes = _duplicates(tuple(a.name for a in args))
            if dupes:
                raise ValueError(f"method {self.browse_name}: duplicate {direction} {dupes}")
        if not self.required_role:
            raise ValueError(f"method {self.browse_name}: required_role is empty")


@dataclass(frozen=True, slots=True)
class ObjectTypeDef:
    """An ObjectType: its supertype (an invops type or a standard one), variables, methods.

    `isa95_level` is the ISA95EquipmentElementLevelEnum value for equipment types
    (StorageUnit = 9); `generates_events` names event types its instances raise.
    """

    browse_name: str
    supertype: str = "BaseObjectType"
    is_abstract: bool = False
    variables: tuple[VariableDef, ...] = ()
    methods: tuple[MethodDef, ...] = ()
    description: str = ""
    isa95_level: int | None = None
    generates_events: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name("object type", self.browse_name)
        dupes = _duplicates(self.child_names())
        if dupes:
            raise ValueError(f"object type {self.browse_name}: duplicate children {dupes}")

    def child_names(self) -> tuple[str, ...]:
        return tuple(v.browse_name for v in self.variables) + tuple(
            m.browse_name for m in self.methods
        )

    def variable(self, name: str) -> VariableDef:
        for variable in self.variables:
            if variable.browse_name == name:
                return variable
        raise KeyError(f"{self.browse_name} declares no variable {name!r}")

    def method(self, name: str) -> MethodDef:
        for method in self.methods:
            if method.browse_name == name:
                return method
        raise KeyError(f"{self.browse_name} declares no method {name!r}")


@dataclass(frozen=True, slots=True)
class EventTypeDef:
    """An event type; each field becomes a Mandatory property of the type."""

    browse_name: str
    supertype: str = "BaseEventType"
    fields: tuple[ArgumentDef, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("event type", self.browse_name)
        dupes = _duplicates(tuple(f.name for f in self.fields))
        if dupes:
            raise ValueError(f"event type {self.browse_name}: duplicate fields {dupes}")


TypeDef = ObjectTypeDef | EventTypeDef


@dataclass(frozen=True, slots=True)
class TypeModel:
    """A whole types namespace: object types, event types and their NodeId blocks.

    Types are listed supertypes first. `node_id_blocks` gives every type a fixed
    block base (a multiple of NODE_ID_BLOCK); never renumber a published block.
    `publication_date` is an ISO 8601 UTC timestamp (`...Z`).
    """

    namespace_uri: str
    version: str
    publication_date: str
    object_types: tuple[ObjectTypeDef, ...]
    event_types: tuple[EventTypeDef, ...]
    node_id_blocks: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        types: tuple[TypeDef, ...] = (*self.object_types, *self.event_types)
        defined: dict[str, TypeDef] = {}
        for type_def in types:
            name = type_def.browse_name
            if name in defined or name in STANDARD_TYPE_IDS:
                raise ValueError(f"type {name} is defined twice")
            if type_def.supertype not in defined and type_def.supertype not in STANDARD_TYPE_IDS:
                raise ValueError(
                    f"type {name}: supertype {type_def.supertype} is not defined before it"
                )
            defined[name] = type_def
        for object_type in self.object_types:
            inherited = [
                n for t in self.lineage(object_type.browse_name)[:-1] for n in t.child_names()
            ]
            shadowed = set(inherited) & set(object_type.child_names())
            if shadowed:
                raise ValueError(f"type {object_type.browse_name}: redeclares {sorted(shadowed)}")
            if len(object_type.variables) > MAX_CHILDREN or len(object_type.methods) > MAX_CHILDREN:
                raise ValueError(
                    f"type {object_type.browse_name}: more than {MAX_CHILDREN} children"
                )
            for event_type in object_type.generates_events:
                if not isinstance(defined.get(event_type), EventTypeDef):
                    raise ValueError(f"type {object_type.browse_name}: no event type {event_type}")
        for event_def in self.event_types:
            if len(event_def.fields) > 2 * MAX_CHILDREN:
                raise ValueError(f"type {event_def.browse_name}: too many fields")
        blocks = dict(self.node_id_blocks)
        if len(blocks) != len(self.node_id_blocks) or set(blocks) != set(defined):
            raise ValueError("node_id_blocks must name every type exactly once")
        bases = list(blocks.values())
        if len(set(bases)) != len(bases) or any(b <= 0 or b % NODE_ID_BLOCK for b in bases):
            raise ValueError(
                f"node_id_blocks must be distinct positive multiples of {NODE_ID_BLOCK}"
            )

    @property
    def types(self) -> tuple[TypeDef, ...]:
        return (*self.object_types, *self.event_types)

    def object_type(self, name: str) -> ObjectTypeDef:
        for object_type in self.object_types:
            if object_type.browse_name == name:
                return object_type
        raise KeyError(f"no object type {name!r}")

    def event_type(self, name: str) -> EventTypeDef:
        for event_type in self.event_types:
            if event_type.browse_name == name:
                return event_type
        raise KeyError(f"no event type {name!r}")

    def lineage(self, name: str) -> tuple[ObjectTypeDef, ...]:
        """The invops object types from the topmost down to `name` (standard ones left out)."""
        chain = [self.object_type(name)]
        while chain[-1].supertype not in STANDARD_TYPE_IDS:
            chain.append(self.object_type(chain[-1].supertype))
        return tuple(reversed(chain))

    def subtypes(self, name: str) -> tuple[ObjectTypeDef, ...]:
        return tuple(t for t in self.object_types if t.supertype == name)

    def all_variables(self, name: str) -> tuple[VariableDef, ...]:
        """Inherited variables first, then the type's own: what an instance carries."""
        return tuple(v for t in self.lineage(name) for v in t.variables)

    def all_methods(self, name: str) -> tuple[MethodDef, ...]:
        return tuple(m for t in self.lineage(name) for m in t.methods)

    def node_ids(self) -> dict[str, int]:
        """Numeric NodeIds (types namespace) by dotted path, e.g. `TankType.Level.EURange`.

        Inside a type's block B: the type is B; its n-th own variable (1-based,
        definition order) is B + 10n, that variable's EngineeringUnits B + 10n + 1
        and EURange B + 10n + 2; its m-th method is B + 500 + 10m, with
        InputArguments + 1 and OutputArguments + 2; an event type's n-th field is
        B + 10n. Appending children keeps every existing id.
        """
        ids: dict[str, int] = {}
        blocks = dict(self.node_id_blocks)
        for object_type in self.object_types:
            base = blocks[object_type.browse_name]
            ids[object_type.browse_name] = base
            for n, variable in enumerate(object_type.variables, start=1):
                path = f"{object_type.browse_name}.{variable.browse_name}"
                ids[path] = base + _CHILD_STRIDE * n
                if variable.kind == "analog":
                    ids[f"{path}.EngineeringUnits"] = ids[path] + 1
                    ids[f"{path}.EURange"] = ids[path] + 2
            for m, method in enumerate(object_type.methods, start=1):
                path = f"{object_type.browse_name}.{method.browse_name}"
                ids[path] = base + _METHOD_OFFSET + _CHILD_STRIDE * m
                if method.inputs:
                    ids[f"{path}.InputArguments"] = ids[path] + 1
                if method.outputs:
                    ids[f"{path}.OutputArguments"] = ids[path] + 2
        for event_def in self.event_types:
            base = blocks[event_def.browse_name]
            ids[event_def.browse_name] = base
            for n, event_field in enumerate(event_def.fields, start=1):
                ids[f"{event_def.browse_name}.{event_field.name}"] = base + _CHILD_STRIDE * n
        return ids

"""Compact node storage: constant attributes shared between nodes.

asyncua gives every attribute of every node its own AttributeValue, DataValue
and Variant (about 24 attributes, ~8 KB per node): a 500-tank plant's address
space was most of the service's memory, and creating those objects most of its
start-up time (benchmarks/opcua_server.py). Yet apart from NodeId and Value,
the attributes of nodes made from the same declaration are equal: AccessLevel,
ValueRank, DataType, DisplayName "Level", ...

`apply()` replaces `NodeManagementService._add_nodeattributes` (and the three
common attributes `_add_node_attributes` adds first) with a version that builds
the same attributes, in the same order, with the same values, but takes every
attribute other than NodeId and Value from an intern table: one shared
`_SharedAttributeValue` per distinct (attribute, type, value). The tables are per
address space (`SpaceCaches`, `caches_of`): two servers in one process share nothing.
Tests compare the result with asyncua's own on the standard address space and an
invops plant, and the copied `_add_node` with asyncua's request by request.

Sharing is copy-on-write: the four AddressSpace entry points that change an
AttributeValue (`write_attribute_value`, `add_datachange_callback`,
`set_attribute_value_callback`, `set_attribute_value_setter`) first give the
node a private copy, so e.g. `Node.set_writable()` or a client monitoring a
DisplayName affects that node alone. Nothing else in asyncua 2.1 mutates an
AttributeValue or a stored DataValue in place (writes replace `.value`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final
from weakref import WeakKeyDictionary

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import (
    AddressSpace,
    AttributeValue,
    NodeData,
    NodeManagementService,
)

# asyncua's `_add_nodeattributes` order (UserWriteMask twice: the UInt32 one wins).
_ATTRIBUTES: tuple[tuple[str, ua.VariantType | None, bool], ...] = (
    ("AccessLevel", ua.VariantType.Byte, False),
    ("ArrayDimensions", ua.VariantType.UInt32, True),
    ("BrowseName", ua.VariantType.QualifiedName, False),
    ("ContainsNoLoops", ua.VariantType.Boolean, False),
    ("DataType", ua.VariantType.NodeId, False),
    ("Description", ua.VariantType.LocalizedText, False),
    ("DisplayName", ua.VariantType.LocalizedText, False),
    ("EventNotifier", ua.VariantType.Byte, False),
    ("Executable", ua.VariantType.Boolean, False),
    ("Historizing", ua.VariantType.Boolean, False),
    ("InverseName", ua.VariantType.LocalizedText, False),
    ("IsAbstract", ua.VariantType.Boolean, False),
    ("MinimumSamplingInterval", ua.VariantType.Double, False),
    ("NodeClass", ua.VariantType.Int32, False),
    ("NodeId", ua.VariantType.NodeId, False),
    ("Symmetric", ua.VariantType.Boolean, False),
    ("UserAccessLevel", ua.VariantType.Byte, False),
    ("UserExecutable", ua.VariantType.Boolean, False),
    ("UserWriteMask", ua.VariantType.Byte, False),
    ("ValueRank", ua.VariantType.Int32, False),
    ("WriteMask", ua.VariantType.UInt32, False),
    ("UserWriteMask", ua.VariantType.UInt32, False),
    ("DataTypeDefinition", ua.VariantType.ExtensionObject, False),
    ("Value", None, False),
)

ORIGINALS: dict[str, Callable[..., Any]] = {
    name: getattr(NodeManagementService, name)
    for name in (
        "_add_node",
        "_add_node_attributes",
        "_add_nodeattributes",
        "_add_ref_to_parent",
        "_add_type_definition",
    )
}
_COPY_ON_WRITE = (
    "write_attribute_value",
    "add_datachange_callback",
    "set_attribute_value_callback",
    "set_attribute_value_setter",
)
_ORIGINAL_SPACE_METHODS: dict[str, Callable[..., Any]] = {
    name: getattr(AddressSpace, name) for name in _COPY_ON_WRITE
}

# What this module copies, wraps or relies on (fingerprinted: tests/unit/test_asyncua_patches.py):
# `_add_node` and the two attribute builders are copies (the builders rewritten to share
# values, same attributes in the same order); the two reference builders are wrapped and
# rely on `_add_reference_no_check` appending one description; the four AddressSpace
# entry points that change an AttributeValue are wrapped (copy-on-write), and nothing
# else in asyncua changes one in place.
UPSTREAM: Final = (
    (ORIGINALS["_add_node"], "copied"),
    (ORIGINALS["_add_node_attributes"], "copied"),
    (ORIGINALS["_add_nodeattributes"], "copied"),
    (ORIGINALS["_add_ref_to_parent"], "wrapped"),
    (ORIGINALS["_add_type_definition"], "wrapped"),
    (NodeManagementService._add_reference_no_check, "relied on"),
    *((method, "wrapped") for method in _ORIGINAL_SPACE_METHODS.values()),
)
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_HAS_TYPE_DEFINITION = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
_STAMPED = (ua.AttributeIds.NodeClass, ua.AttributeIds.BrowseName, ua.AttributeIds.DisplayName)

_Plan = tuple[tuple[str, ua.AttributeIds, ua.VariantType | None, bool], ...]


class _SharedAttributeValue(AttributeValue):
    """An AttributeValue held by several nodes; never changed, replaced first."""


class _Unhashable(Exception):
    pass


_Stamp = tuple[object, ...]
_RefKey = tuple[ua.NodeId, ua.NodeId, bool]


@dataclasses.dataclass(slots=True, eq=False)
class SpaceCaches:
    """What the nodes of one address space share: the interned attribute values
    (attribute, type, value) -> AttributeValue, and the reference descriptions
    (target, reference type, direction) -> (stamp, description). Per address space, so
    two servers in one process never hold each other's objects, and a server's caches go
    with it. (`_plan` and `_field_names` stay process-wide: they depend on types only.)"""

    interned: dict[tuple[object, ...], _SharedAttributeValue] = dataclasses.field(
        default_factory=dict
    )
    references: dict[_RefKey, tuple[_Stamp, ua.ReferenceDescription]] = dataclasses.field(
        default_factory=dict
    )


_CACHES: WeakKeyDictionary[AddressSpace, SpaceCaches] = WeakKeyDictionary()


def caches_of(space: AddressSpace) -> SpaceCaches:
    """The caches of `space` (made on first use)."""
    found = _CACHES.get(space)
    if found is None:
        found = _CACHES[space] = SpaceCaches()
    return found


@functools.cache
def _plan(attributes_class: type, mask: int) -> _Plan:
    """The attributes one NodeAttributes class with this SpecifiedAttributes mask sets."""
    del attributes_class  # part of the cache key only: the mask decides
    return tuple(
        (name, getattr(ua.AttributeIds, name), vtype, is_array)
        for name, vtype, is_array in _ATTRIBUTES
        if mask & getattr(ua.NodeAttributesMask, name)
    )


_ATOMS = frozenset({str, bytes, bool, int, float, type(None)})


def _freeze(value: object) -> object:
    """A hashable stand-in equal exactly when the values are equal (types included)."""
    kind = type(value)
    if kind in _ATOMS or isinstance(value, Enum | ua.NodeId):
        return (kind, value)
    if kind is list or kind is tuple:
        return (kind, tuple(_freeze(item) for item in value))  # type: ignore[attr-defined]
    names = _field_names(kind)
    if names is None:
        raise _Unhashable
    return (kind, tuple(_freeze(getattr(value, name)) for name in names))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass type (None: not a dataclass), looked up once per type."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def _shared(
    interned: dict[tuple[object, ...], _SharedAttributeValue],
    attr: ua.AttributeIds,
    value: object,
    vtype: ua.VariantType | None,
    is_array: bool,
) -> AttributeValue:
    """The interned AttributeValue of DataValue(Variant(value, vtype, is_array))."""
    try:
        key = (attr, vtype, is_array, _freeze(value))
    except _Unhashable:
        return AttributeValue(ua.DataValue(ua.Variant(value, vtype, is_array=is_array)))
    found = interned.get(key)
    if found is None:
        variant = ua.Variant(value, vtype, is_array=is_array)
        found = interned[key] = _SharedAttributeValue(ua.DataValue(variant))
    return found


def _add_node(
    self: NodeManagementService, item: ua.AddNodesItem, user: User, check: bool = True
) -> ua.AddNodesResult:
    """asyncua 2.1's `_add_node`, unchanged but for building the HasProperty NodeId once
    instead of once per reference of the parent (1.7 M NodeIds for 50,000 nodes)."""
    result = ua.AddNodesResult()
    if user.role != UserRole.Admin:
        result.StatusCode = ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        return result
    space = self._aspace
    if item.RequestedNewNodeId.has_null_identifier():
        item.RequestedNewNodeId = space.generate_nodeid(item.RequestedNewNodeId.NamespaceIndex)
    elif item.RequestedNewNodeId in space:
        self.logger.warning(
            "AddNodesItem: Requested NodeId %s already exists", item.RequestedNewNodeId
        )
        result.StatusCode = ua.StatusCode(ua.StatusCodes.BadNodeIdExists)
        return result
    if item.ParentNodeId.is_null() and check:
        result.StatusCode = ua.StatusCode(ua.StatusCodes.BadParentNodeIdInvalid)
        return result
    parentdata = space.get(item.ParentNodeId)
    if parentdata is None and not item.ParentNodeId.is_null():
        self.logger.info(
            "add_node: while adding node %s, requested parent node %s does not exists",
            item.RequestedNewNodeId,
            item.ParentNodeId,
        )
        result.StatusCode = ua.StatusCode(ua.StatusCodes.BadParentNodeIdInvalid)
        return result
    if parentdata is not None:
        name = item.BrowseName.Name
        for ref in parentdata.references:
            if ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName.Name == name:
                self.logger.warning(
                    "AddNodesItem: Requested Browsename %s already exists in Parent Node. "
                    "ParentID:%s --- ItemId:%s",
                    name,
                    item.ParentNodeId,
                    item.RequestedNewNodeId,
                )
                result.StatusCode = ua.StatusCode(ua.StatusCodes.BadBrowseNameDuplicated)
                return result
    if not item.TypeDefinition.is_null() and item.TypeDefinition not in space:
        result.StatusCode = ua.StatusCode(ua.StatusCodes.BadTypeDefinitionInvalid)
        return result
    nodedata = NodeData(item.RequestedNewNodeId)
    self._add_node_attributes(nodedata, item, add_timestamps=check)
    space[nodedata.nodeid] = nodedata
    if parentdata is not None:
        self._add_ref_from_parent(nodedata, item, parentdata)
        self._add_ref_to_parent(nodedata, item, parentdata)
    if not item.TypeDefinition.is_null():
        self._add_type_definition(nodedata, item)
    result.StatusCode = ua.StatusCode()
    result.AddedNodeId = nodedata.nodeid
    return result


def _add_node_attributes(
    self: NodeManagementService, nodedata: NodeData, item: ua.AddNodesItem, add_timestamps: bool
) -> None:
    interned = caches_of(self._aspace).interned
    attributes = nodedata.attributes
    attributes[ua.AttributeIds.NodeId] = AttributeValue(
        ua.DataValue(ua.Variant(nodedata.nodeid, ua.VariantType.NodeId))
    )
    attributes[ua.AttributeIds.BrowseName] = _shared(
        interned, ua.AttributeIds.BrowseName, item.BrowseName, ua.VariantType.QualifiedName, False
    )
    attributes[ua.AttributeIds.NodeClass] = _shared(
        interned, ua.AttributeIds.NodeClass, item.NodeClass, ua.VariantType.Int32, False
    )
    _set_attributes(self, interned, item.NodeAttributes, nodedata, add_timestamps)


def _add_nodeattributes(
    self: NodeManagementService, node_attributes: Any, nodedata: NodeData, add_timestamps: bool
) -> None:
    interned = caches_of(self._aspace).interned
    _set_attributes(self, interned, node_attributes, nodedata, add_timestamps)


def _set_attributes(
    self: NodeManagementService,
    interned: dict[tuple[object, ...], _SharedAttributeValue],
    node_attributes: Any,
    nodedata: NodeData,
    add_timestamps: bool,
) -> None:
    attributes = nodedata.attributes
    for name, attr, vtype, is_array in _plan(
        type(node_attributes), node_attributes.SpecifiedAttributes
    ):
        value = getattr(node_attributes, name)
        if attr is ua.AttributeIds.Value:
            now = datetime.now(UTC) if add_timestamps else None
            server_time = now if self._aspace.force_server_timestamp else None
            variant = ua.Variant(value, vtype, is_array=is_array)
            attributes[attr] = AttributeValue(
                ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=server_time)
            )
        elif attr is ua.AttributeIds.NodeId:
            attributes[attr] = AttributeValue(
                ua.DataValue(ua.Variant(value, vtype, is_array=is_array))
            )
        elif attr is ua.AttributeIds.DataTypeDefinition and not isinstance(
            value, ua.DataTypeDefinition
        ):
            attributes[attr] = _shared(interned, attr, None, ua.VariantType.Null, False)
        else:
            attributes[attr] = _shared(interned, attr, value, vtype, is_array)


# --- references: one ReferenceDescription per (target, type, direction) -----------------
#
# A new node's reference to its parent and to its type definition describe the target
# (class, names, its own type definition), so siblings get equal descriptions: asyncua
# builds each anew (three attribute reads and a dataclass with five defaults). They are
# shared, and a shared one is reused only while the target still has the very same
# attribute values and type-definition reference it was made from.


def _stamp(space: AddressSpace, target: ua.NodeId) -> _Stamp | None:
    node = space.get(target)
    if node is None:
        return None
    attributes = node.attributes
    values = tuple(
        attributes[a].value if a in attributes else None for a in _STAMPED
    )  # compared by identity: a write replaces the DataValue
    for ref in node.references:
        if ref.IsForward and ref.ReferenceTypeId == _HAS_TYPE_DEFINITION:
            return (*values, ref)
    return (*values, None)


def _reuse(
    self: NodeManagementService,
    nodedata: NodeData,
    key: _RefKey,
    build: Callable[[], None],
) -> None:
    space = self._aspace
    stamp = _stamp(space, key[0])
    memo = caches_of(space).references
    known = memo.get(key)
    if (
        stamp is not None
        and known is not None
        and all(a is b for a, b in zip(known[0], stamp, strict=True))
    ):
        nodedata.references.append(known[1])  # a new node: nothing to deduplicate
        return
    before = len(nodedata.references)
    build()
    if stamp is not None and len(nodedata.references) == before + 1:
        memo[key] = (stamp, nodedata.references[-1])


def _add_ref_to_parent(
    self: NodeManagementService, nodedata: NodeData, item: ua.AddNodesItem, parentdata: NodeData
) -> None:
    _reuse(
        self,
        nodedata,
        (item.ParentNodeId, item.ReferenceTypeId, False),
        lambda: ORIGINALS["_add_ref_to_parent"](self, nodedata, item, parentdata),
    )


def _add_type_definition(
    self: NodeManagementService, nodedata: NodeData, item: ua.AddNodesItem
) -> None:
    _reuse(
        self,
        nodedata,
        (item.TypeDefinition, _HAS_TYPE_DEFINITION, True),
        lambda: ORIGINALS["_add_type_definition"](self, nodedata, item),
    )


def _own(space: AddressSpace, nodeid: ua.NodeId, attr: ua.AttributeIds) -> None:
    """Give the node a private copy of a shared attribute before it changes."""
    node = space.get(nodeid)
    if node is None:
        return
    current = node.attributes.get(attr)
    if isinstance(current, _SharedAttributeValue):
        private = AttributeValue(current.value)  # type: ignore[arg-type]
        node.attributes[attr] = private


def _copy_on_write(method: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(method, "_invops_copy_on_write", False):
        return method  # already wrapped (apply() is idempotent)

    @functools.wraps(method)
    def wrapper(
        self: AddressSpace, nodeid: ua.NodeId, attr: ua.AttributeIds, *a: Any, **k: Any
    ) -> Any:
        if attr != ua.AttributeIds.Value:  # Value is never shared: skip the hot path
            _own(self, nodeid, attr)
        return method(self, nodeid, attr, *a, **k)

    wrapper._invops_copy_on_write = True  # type: ignore[attr-defined]
    return wrapper


def apply() -> None:
    """Install the shared-attribute node storage (idempotent). Affects servers whose
    address space is built afterwards, the standard nodes included."""
    NodeManagementService._add_node = _add_node  # type: ignore[method-assign]
    NodeManagementService._add_node_attributes = _add_node_attributes  # type: ignore[method-assign]
    NodeManagementService._add_nodeattributes = _add_nodeattributes  # type: ignore[method-assign]
    NodeManagementService._add_ref_to_parent = _add_ref_to_parent  # type: ignore[method-assign]
    NodeManagementService._add_type_definition = _add_type_definition  # type: ignore[method-assign]
    for name in _COPY_ON_WRITE:
        setattr(AddressSpace, name, _copy_on_write(getattr(AddressSpace, name)))


def restore() -> None:
    """asyncua's own node storage again (tests, comparisons with upstream)."""
    for name, method in ORIGINALS.items():
        setattr(NodeManagementService, name, method)
    for name, method in _ORIGINAL_SPACE_METHODS.items():
        setattr(AddressSpace, name, method)

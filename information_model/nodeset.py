"""Export the type model as OPC UA NodeSet2 XML (UANodeSet.xsd), deterministically.

One namespace (`TypeModel.namespace_uri`, written as ns=1) holds every node, with
the numeric NodeIds of `TypeModel.node_ids`. What the XML contains:

- `UAObjectType` per object type (HasSubtype from its supertype) and per event
  type (under BaseEventType; fields as properties); a reference between two
  nodes of the file is written on both of them (forward and inverse);
- `UAVariable` per instance declaration, all with ModellingRule Mandatory and
  read-only (AccessLevel 1): analog items are `AnalogItemType` with
  `EngineeringUnits` (EUInformation) and `EURange` (Range) properties, whose
  values are ExtensionObjects when the type fixes them and null when they are
  set per instance; other variables are `BaseDataVariableType` or `PropertyType`;
- `UAMethod` per method with `InputArguments` / `OutputArguments` properties
  holding `Argument` ExtensionObjects; the required role is in the method's
  Description (enforcement lives in the server's handlers; RolePermissions are
  not written because invops roles are not OPC UA well-known roles).

The output is pretty-printed on purpose: asyncua's importer treats a value
element without text (e.g. `<ExtensionObject>` with children but no whitespace)
as null, so a compact document would lose every ExtensionObject value.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Final

from information_model.isa95 import TYPE_MODEL
from information_model.nodes import (
    DATA_TYPE_IDS,
    STANDARD_TYPE_IDS,
    ArgumentDef,
    EventTypeDef,
    MethodDef,
    ObjectTypeDef,
    ScalarValue,
    TypeModel,
    Unit,
    VariableDef,
)

UANODESET_NAMESPACE: Final = "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
UATYPES_NAMESPACE: Final = "http://opcfoundation.org/UA/2008/02/Types.xsd"
UA_NAMESPACE: Final = "http://opcfoundation.org/UA/"
# The base model the types need (AnalogItemType, EUInformation, BaseEventType, ...).
REQUIRED_UA_VERSION: Final = "1.04.7"
REQUIRED_UA_PUBLICATION_DATE: Final = "2020-07-15T00:00:00Z"

# Aliases the exporter may emit, in the order they are written (only used ones are).
ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        **{name: f"i={number}" for name, number in DATA_TYPE_IDS.items()},
        "Argument": "i=296",
        "Range": "i=884",
        "EUInformation": "i=887",
        "HasModellingRule": "i=37",
        "HasTypeDefinition": "i=40",
        "GeneratesEvent": "i=41",
        "HasSubtype": "i=45",
        "HasProperty": "i=46",
        "HasComponent": "i=47",
    }
)

_BASE_DATA_VARIABLE_TYPE: Final = "i=63"
_PROPERTY_TYPE: Final = "i=68"
_MODELLING_RULE_MANDATORY: Final = "i=78"
_ANALOG_ITEM_TYPE: Final = "i=2368"
_ARGUMENT_XML_ENCODING: Final = "i=297"
_RANGE_XML_ENCODING: Final = "i=885"
_EU_INFORMATION_XML_ENCODING: Final = "i=888"
_READ_ONLY: Final = "1"  # AccessLevel CurrentRead: clients never write (SPEC §4)

_Reference = tuple[str, str, bool]  # (reference type alias, target NodeId, is forward)


# Tags are written with literal prefixes (root declares xmlns and xmlns:uax): ElementTree's
# own namespace handling would need a global register_namespace and qualified attributes.
def _ua(tag: str) -> str:
    return tag


def _uax(tag: str) -> str:
    return f"uax:{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _format_scalar(value: ScalarValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _NodeSetWriter:
    """Walks a TypeModel once and collects the UANodeSet children."""

    def __init__(self, model: TypeModel) -> None:
        self._model = model
        self._ids = model.node_ids()
        self._used_aliases: set[str] = set()
        self._nodes: list[ET.Element] = []

    # --- NodeIds and names ---

    def _nid(self, path: str) -> str:
        return f"ns=1;i={self._ids[path]}"

    def _type_nid(self, name: str) -> str:
        if name in STANDARD_TYPE_IDS:
            return f"i={STANDARD_TYPE_IDS[name]}"
        return self._nid(name)

    def _alias(self, name: str) -> str:
        if name not in ALIASES:
            raise ValueError(f"no alias for {name!r}")
        self._used_aliases.add(name)
        return name

    # --- generic node ---

    def _node(
        self,
        tag: str,
        node_id: str,
        browse_name: str,
        attributes: Mapping[str, str],
        description: str,
        references: list[_Reference],
    ) -> ET.Element:
        element = ET.Element(_ua(tag), {"NodeId": node_id, "BrowseName": browse_name})
        element.attrib.update(attributes)
        _sub(element, _ua("DisplayName"), browse_name.rpartition(":")[2])
        if description:
            _sub(element, _ua("Description"), description)
        refs = _sub(element, _ua("References"))
        for reference_type, target, forward in references:
            ref = _sub(refs, _ua("Reference"), target)
            ref.set("ReferenceType", self._alias(reference_type))
            if not forward:
                ref.set("IsForward", "false")
        self._nodes.append(element)
        return element

    def _instance_declaration(
        self,
        tag: str,
        node_id: str,
        browse_name: str,
        parent: tuple[str, str],
        attributes: Mapping[str, str],
        description: str,
        references: list[_Reference],
    ) -> ET.Element:
        """A Mandatory child of a type: ParentNodeId plus the inverse reference to it."""
        link, parent_id = parent
        return self._node(
            tag,
            node_id,
            browse_name,
            {"ParentNodeId": parent_id, **attributes},
            description,
            [
                *references,
                ("HasModellingRule", _MODELLING_RULE_MANDATORY, True),
                (link, parent_id, False),
            ],
        )

    def _property(
        self,
        node_id: str,
        browse_name: str,
        parent_id: str,
        data_type: str,
        description: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> ET.Element:
        return self._instance_declaration(
            "UAVariable",
            node_id,
            browse_name,
            ("HasProperty", parent_id),
            {"DataType": self._alias(data_type), **(attributes or {}), "AccessLevel": _READ_ONLY},
            description,
            [("HasTypeDefinition", _PROPERTY_TYPE, True)],
        )

    # --- object types ---

    def object_type(self, type_def: ObjectTypeDef) -> None:
        name = type_def.browse_name
        references: list[_Reference] = [("HasSubtype", self._type_nid(type_def.supertype), False)]
        for variable in type_def.variables:
            link = "HasProperty" if variable.kind == "property" else "HasComponent"
            references.append((link, self._nid(f"{name}.{variable.browse_name}"), True))
        for method in type_def.methods:
            references.append(("HasComponent", self._nid(f"{name}.{method.browse_name}"), True))
        for event_type in type_def.generates_events:
            references.append(("GeneratesEvent", self._nid(event_type), True))
        for subtype in self._model.subtypes(name):
            references.append(("HasSubtype", self._nid(subtype.browse_name), True))
        self._node(
            "UAObjectType",
            self._nid(name),
            f"1:{name}",
            {"IsAbstract": "true"} if type_def.is_abstract else {},
            type_def.description,
            references,
        )
        for variable in type_def.variables:
            self._variable(name, variable)
        for method in type_def.methods:
            self._method(name, method)

    def _variable(self, type_name: str, variable: VariableDef) -> None:
        path = f"{type_name}.{variable.browse_name}"
        node_id, parent_id = self._nid(path), self._nid(type_name)
        shape = {"ValueRank": "1", "ArrayDimensions": "0"} if variable.array else {}
        attributes = {
            "DataType": self._alias(variable.data_type),
            **shape,
            "AccessLevel": _READ_ONLY,
        }
        if variable.kind == "property":
            element = self._property(
                node_id, f"1:{variable.browse_name}", parent_id, variable.data_type,
                variable.description, shape,
            )  # fmt: skip
        else:
            analog = variable.kind == "analog"
            references: list[_Reference] = [
                (
                    "HasTypeDefinition",
                    _ANALOG_ITEM_TYPE if analog else _BASE_DATA_VARIABLE_TYPE,
                    True,
                )
            ]
            if analog:
                references += [
                    ("HasProperty", self._nid(f"{path}.EngineeringUnits"), True),
                    ("HasProperty", self._nid(f"{path}.EURange"), True),
                ]
            element = self._instance_declaration(
                "UAVariable",
                node_id,
                f"1:{variable.browse_name}",
                ("HasComponent", parent_id),
                attributes,
                variable.description,
                references,
            )
        if variable.value is not None:
            value = _sub(element, _ua("Value"))
            _sub(value, _uax(variable.data_type), _format_scalar(variable.value))
        if variable.kind == "analog":
            self._analog_properties(path, variable)

    def _analog_properties(self, path: str, variable: VariableDef) -> None:
        units = self._property(
            self._nid(f"{path}.EngineeringUnits"), "EngineeringUnits", self._nid(path),
            "EUInformation",
            "" if variable.engineering_unit else "Set per instance.",
        )  # fmt: skip
        if variable.engineering_unit is not None:
            _eu_information(_sub(units, _ua("Value")), variable.engineering_unit)
        eu_range = self._property(
            self._nid(f"{path}.EURange"), "EURange", self._nid(path), "Range",
            "" if variable.eu_range else "Set per instance.",
        )  # fmt: skip
        if variable.eu_range is not None:
            _range(_sub(eu_range, _ua("Value")), variable.eu_range)

    def _method(self, type_name: str, method: MethodDef) -> None:
        path = f"{type_name}.{method.browse_name}"
        node_id = self._nid(path)
        arguments = [
            (f"{path}.{browse_name}", browse_name, args)
            for browse_name, args in (
                ("InputArguments", method.inputs),
                ("OutputArguments", method.outputs),
            )
            if args
        ]
        description = f"{method.description} Required role: {method.required_role}.".strip()
        self._instance_declaration(
            "UAMethod",
            node_id,
            f"1:{method.browse_name}",
            ("HasComponent", self._nid(type_name)),
            {},
            description,
            [("HasProperty", self._nid(arg_path), True) for arg_path, _, _ in arguments],
        )
        for arg_path, browse_name, args in arguments:
            prop = self._property(
                self._nid(arg_path), browse_name, node_id, "Argument", "",
                {"ValueRank": "1", "ArrayDimensions": str(len(args))},
            )  # fmt: skip
            _arguments(_sub(prop, _ua("Value")), args)

    # --- event types ---

    def event_type(self, type_def: EventTypeDef) -> None:
        name = type_def.browse_name
        fields = [(self._nid(f"{name}.{f.name}"), f) for f in type_def.fields]
        self._node(
            "UAObjectType",
            self._nid(name),
            f"1:{name}",
            {},
            type_def.description,
            [
                ("HasSubtype", self._type_nid(type_def.supertype), False),
                *(("HasProperty", node_id, True) for node_id, _ in fields),
                *(
                    ("GeneratesEvent", self._nid(t.browse_name), False)
                    for t in self._model.object_types
                    if name in t.generates_events
                ),
            ],
        )
        for node_id, event_field in fields:
            shape = {"ValueRank": "1", "ArrayDimensions": "0"} if event_field.array else {}
            self._property(
                node_id, f"1:{event_field.name}", self._nid(name), event_field.data_type,
                event_field.description, shape,
            )  # fmt: skip

    # --- document ---

    def document(self) -> ET.Element:
        model = self._model
        for object_type in model.object_types:
            self.object_type(object_type)
        for event_type in model.event_types:
            self.event_type(event_type)
        root = ET.Element(
            _ua("UANodeSet"),
            {
                "xmlns": UANODESET_NAMESPACE,
                "xmlns:uax": UATYPES_NAMESPACE,
                "LastModified": model.publication_date,
            },
        )
        uris = _sub(root, _ua("NamespaceUris"))
        _sub(uris, _ua("Uri"), model.namespace_uri)
        models = _sub(root, _ua("Models"))
        model_element = _sub(models, _ua("Model"))
        model_element.attrib.update(
            {
                "ModelUri": model.namespace_uri,
                "Version": model.version,
                "PublicationDate": model.publication_date,
            }
        )
        required = _sub(model_element, _ua("RequiredModel"))
        required.attrib.update(
            {
                "ModelUri": UA_NAMESPACE,
                "Version": REQUIRED_UA_VERSION,
                "PublicationDate": REQUIRED_UA_PUBLICATION_DATE,
            }
        )
        aliases = _sub(root, _ua("Aliases"))
        for alias, node_id in ALIASES.items():
            if alias in self._used_aliases:
                _sub(aliases, _ua("Alias"), node_id).set("Alias", alias)
        root.extend(self._nodes)
        return root


def _localized_text(parent: ET.Element, tag: str, text: str) -> None:
    element = _sub(parent, _uax(tag))
    if text:
        _sub(element, _uax("Text"), text)


def _extension_object(parent: ET.Element, encoding_id: str, body_tag: str) -> ET.Element:
    extension_object = _sub(parent, _uax("ExtensionObject"))
    _sub(_sub(extension_object, _uax("TypeId")), _uax("Identifier"), encoding_id)
    return _sub(_sub(extension_object, _uax("Body")), _uax(body_tag))


def _eu_information(value: ET.Element, unit: Unit) -> None:
    body = _extension_object(value, _EU_INFORMATION_XML_ENCODING, "EUInformation")
    _sub(body, _uax("NamespaceUri"), unit.namespace_uri)
    _sub(body, _uax("UnitId"), str(unit.unit_id))
    _localized_text(body, "DisplayName", unit.display_name)
    _localized_text(body, "Description", unit.description)


def _range(value: ET.Element, eu_range: tuple[float, float]) -> None:
    body = _extension_object(value, _RANGE_XML_ENCODING, "Range")
    _sub(body, _uax("Low"), repr(float(eu_range[0])))
    _sub(body, _uax("High"), repr(float(eu_range[1])))


def _arguments(value: ET.Element, arguments: tuple[ArgumentDef, ...]) -> None:
    items = _sub(value, _uax("ListOfExtensionObject"))
    for argument in arguments:
        body = _extension_object(items, _ARGUMENT_XML_ENCODING, "Argument")
        _sub(body, _uax("Name"), argument.name)
        _sub(
            _sub(body, _uax("DataType")),
            _uax("Identifier"),
            f"i={DATA_TYPE_IDS[argument.data_type]}",
        )
        _sub(body, _uax("ValueRank"), str(argument.value_rank))
        dimensions = _sub(body, _uax("ArrayDimensions"))
        if argument.array:
            _sub(dimensions, _uax("UInt32"), "0")  # any length
        _localized_text(body, "Description", argument.description)


def render_nodeset(model: TypeModel = TYPE_MODEL) -> bytes:
    """The NodeSet2 XML document of `model`, UTF-8; the same model gives the same bytes."""
    root = _NodeSetWriter(model).document()
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n").encode("utf-8")


def export_nodeset(
    target: str | os.PathLike[str] | IO[bytes], model: TypeModel = TYPE_MODEL
) -> None:
    """Write `model` as NodeSet2 XML to a path or a binary file object."""
    document = render_nodeset(model)
    if isinstance(target, str | os.PathLike):
        Path(target).write_bytes(document)
    else:
        target.write(document)

"""NodeSet2 export: document structure, reference integrity, determinism, real asyncua import.

Besides loading into asyncua (and into node-opcua, in test_nodeset_node_opcua.py), the
XML is checked against the structural rules a strict loader enforces: unique NodeIds,
resolvable references and parents, defined aliases, matching inverse references, analog
items with their unit properties.
"""

from __future__ import annotations

import io
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Node, Server, ua

from information_model import TYPE_MODEL, TYPES_NAMESPACE, export_nodeset, render_nodeset

NS = {
    "n": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd",
    "uax": "http://opcfoundation.org/UA/2008/02/Types.xsd",
}
NODE_TAGS = ("UAObjectType", "UAVariable", "UAMethod")
STANDARD_ID = re.compile(r"i=\d+\Z")
LOCAL_ID = re.compile(r"ns=1;i=\d+\Z")


@pytest.fixture
def nodeset_path(tmp_path: Path) -> Path:
    path = tmp_path / "invops.NodeSet2.xml"
    export_nodeset(path)
    return path


@pytest.fixture
def root(nodeset_path: Path) -> ET.Element:
    return ET.parse(nodeset_path).getroot()


def _nodes(root: ET.Element) -> Iterator[ET.Element]:
    for tag in NODE_TAGS:
        yield from root.findall(f"n:{tag}", NS)


def _by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {node.attrib["NodeId"]: node for node in _nodes(root)}


def _references(node: ET.Element) -> list[tuple[str, str, bool]]:
    return [
        (ref.attrib["ReferenceType"], (ref.text or "").strip(), ref.get("IsForward") != "false")
        for ref in node.findall("n:References/n:Reference", NS)
    ]


def _name(node: ET.Element) -> str:
    return node.attrib["BrowseName"].rpartition(":")[2]


def _aliases(root: ET.Element) -> dict[str, str]:
    return {a.attrib["Alias"]: (a.text or "") for a in root.findall("n:Aliases/n:Alias", NS)}


def _child(root: ET.Element, parent: ET.Element, name: str) -> ET.Element:
    by_id = _by_id(root)
    for _, target, forward in _references(parent):
        if forward and target in by_id and _name(by_id[target]) == name:
            return by_id[target]
    raise KeyError(name)


def _type_node(root: ET.Element, name: str) -> ET.Element:
    (node,) = [n for n in root.findall("n:UAObjectType", NS) if _name(n) == name]
    return node


# --- document structure ------------------------------------------------------------------


def test_document_is_a_nodeset2_with_the_types_namespace(root: ET.Element) -> None:
    assert root.tag == "{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}UANodeSet"
    assert [u.text for u in root.findall("n:NamespaceUris/n:Uri", NS)] == [TYPES_NAMESPACE]
    (model,) = root.findall("n:Models/n:Model", NS)
    assert model.attrib["ModelUri"] == TYPES_NAMESPACE
    assert model.attrib["Version"] == TYPE_MODEL.version
    (required,) = model.findall("n:RequiredModel", NS)
    assert required.attrib["ModelUri"] == "http://opcfoundation.org/UA/"
    children = [child.tag.rpartition("}")[2] for child in root]
    assert children[:3] == ["NamespaceUris", "Models", "Aliases"]
    assert set(children[3:]) <= set(NODE_TAGS)


def test_node_ids_are_unique_numeric_and_match_the_model(root: ET.Element) -> None:
    ids = [node.attrib["NodeId"] for node in _nodes(root)]
    assert len(ids) == len(set(ids))
    assert all(LOCAL_ID.match(i) for i in ids)
    assert set(ids) == {f"ns=1;i={n}" for n in TYPE_MODEL.node_ids().values()}


def test_every_reference_target_and_parent_exists(root: ET.Element) -> None:
    by_id = _by_id(root)
    for node_id, node in by_id.items():
        for _, target, _ in _references(node):
            assert target in by_id or STANDARD_ID.match(target), (node_id, target)
        parent = node.get("ParentNodeId")
        if parent is not None:
            assert parent in by_id, node_id


def test_every_alias_used_is_defined_and_standard(root: ET.Element) -> None:
    aliases = _aliases(root)
    assert all(STANDARD_ID.match(target) for target in aliases.values())
    used = {ref_type for node in _nodes(root) for ref_type, _, _ in _references(node)}
    used |= {node.attrib["DataType"] for node in root.findall("n:UAVariable", NS)}
    assert used == set(aliases)


def test_references_between_file_nodes_have_their_inverse(root: ET.Element) -> None:
    by_id = _by_id(root)
    edges = {
        (source, ref_type, target, forward)
        for source, node in by_id.items()
        for ref_type, target, forward in _references(node)
        if target in by_id
    }
    for source, ref_type, target, forward in edges:
        assert (target, ref_type, source, not forward) in edges, (source, ref_type, target)


def test_instance_declarations_are_mandatory_and_read_only(root: ET.Element) -> None:
    for node in [*root.findall("n:UAVariable", NS), *root.findall("n:UAMethod", NS)]:
        assert ("HasModellingRule", "i=78", True) in _references(node), node.attrib["NodeId"]
    for variable in root.findall("n:UAVariable", NS):
        assert variable.attrib["AccessLevel"] == "1"


def test_types_hang_under_their_supertypes(root: ET.Element) -> None:
    ids = TYPE_MODEL.node_ids()
    expected = {
        "StorageUnitType": "i=58",
        "TankType": f"ns=1;i={ids['StorageUnitType']}",
        "SiloType": f"ns=1;i={ids['StorageUnitType']}",
        "BinType": f"ns=1;i={ids['StorageUnitType']}",
        "MaterialDefinitionType": "i=58",
        "MaterialLotType": "i=58",
        "LedgerType": "i=58",
        "InventoryMovementEventType": "i=2041",
    }
    for name, supertype in expected.items():
        node = _type_node(root, name)
        assert ("HasSubtype", supertype, False) in _references(node), name
    assert _type_node(root, "StorageUnitType").get("IsAbstract") == "true"
    assert _type_node(root, "TankType").get("IsAbstract") is None


def test_analog_items_carry_engineering_units_and_eu_range(root: ET.Element) -> None:
    analog = [
        v
        for v in root.findall("n:UAVariable", NS)
        if ("HasTypeDefinition", "i=2368", True) in _references(v)
    ]
    assert len(analog) == sum(
        v.kind == "analog" for t in TYPE_MODEL.object_types for v in t.variables
    )
    for variable in analog:
        units = _child(root, variable, "EngineeringUnits")
        eu_range = _child(root, variable, "EURange")
        assert units.attrib["DataType"] == "EUInformation"
        assert eu_range.attrib["DataType"] == "Range"
        assert units.attrib["BrowseName"] == "EngineeringUnits"  # namespace 0 name
    fill = _child(root, _type_node(root, "StorageUnitType"), "FillPercent")
    body = _child(root, fill, "EngineeringUnits").find(".//uax:EUInformation", NS)
    assert body is not None
    assert body.findtext("uax:UnitId", namespaces=NS) == "20529"
    assert body.findtext("uax:NamespaceUri", namespaces=NS) == (
        "http://www.opcfoundation.org/UA/units/un/cefact"
    )
    fill_range = _child(root, fill, "EURange").find(".//uax:Range", NS)
    assert fill_range is not None
    assert fill_range.findtext("uax:Low", namespaces=NS) == "0.0"
    assert fill_range.findtext("uax:High", namespaces=NS) == "100.0"


def _arguments(prop: ET.Element) -> list[tuple[str, str, str]]:
    """(encoding TypeId, Name, DataType) of each Argument ExtensionObject in a property's value."""
    found = []
    for extension_object in prop.findall(
        "n:Value/uax:ListOfExtensionObject/uax:ExtensionObject", NS
    ):
        body = extension_object.find("uax:Body/uax:Argument", NS)
        assert body is not None
        found.append(
            (
                extension_object.findtext("uax:TypeId/uax:Identifier", "", NS),
                body.findtext("uax:Name", "", NS),
                body.findtext("uax:DataType/uax:Identifier", "", NS),
            )
        )
    return found


def test_method_arguments_are_argument_extension_objects(root: ET.Element) -> None:
    ledger = _type_node(root, "LedgerType")
    for method_def in TYPE_MODEL.object_type("LedgerType").methods:
        method = _child(root, ledger, method_def.browse_name)
        assert method.tag.endswith("UAMethod")
        assert f"Required role: {method_def.required_role}." in (
            method.findtext("n:Description", namespaces=NS) or ""
        )
        for prop_name, args in (
            ("InputArguments", method_def.inputs),
            ("OutputArguments", method_def.outputs),
        ):
            prop = _child(root, method, prop_name)
            assert prop.attrib["DataType"] == "Argument"
            assert prop.attrib["ValueRank"] == "1"
            assert prop.attrib["ArrayDimensions"] == str(len(args))
            assert _arguments(prop) == [
                ("i=297", a.name, "i=11" if a.data_type == "Double" else "i=12") for a in args
            ]


def test_export_is_deterministic(tmp_path: Path, nodeset_path: Path) -> None:
    again = tmp_path / "again.xml"
    export_nodeset(again)
    buffer = io.BytesIO()
    export_nodeset(buffer)
    assert nodeset_path.read_bytes() == again.read_bytes() == buffer.getvalue() == render_nodeset()


def test_export_is_pretty_printed_so_asyncua_keeps_extension_object_values(
    nodeset_path: Path,
) -> None:
    # asyncua's parser reads a value element without text as null (see nodeset.py).
    text = nodeset_path.read_text(encoding="utf-8")
    assert re.search(r"<uax:ExtensionObject>\s+<uax:TypeId>", text)


# --- a real asyncua server ---------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """One server for the module (init loads the whole standard address space: ~1.5 s)."""
    path = tmp_path_factory.mktemp("nodeset") / "invops.NodeSet2.xml"
    export_nodeset(path)
    server = Server()
    await server.init()
    importer_log = logging.getLogger("asyncua.common")
    records = _Records()
    importer_log.addHandler(records)
    try:
        await server.import_xml(str(path))
    finally:
        importer_log.removeHandler(records)
    # The importer logs, rather than raises, references it could not add.
    assert not records.records, [r.getMessage() for r in records.records]
    return server


async def _type_path(server: Server, *names: str, under: str = "BaseObjectType") -> Node:
    """Browse Root/Types/ObjectTypes/BaseObjectType[/under]/<names...> by BrowseName."""
    idx = await server.get_namespace_index(TYPES_NAMESPACE)
    path = ["0:Types", "0:ObjectTypes", "0:BaseObjectType"]
    if under != "BaseObjectType":
        path.append(f"0:{under}")
    return await server.nodes.root.get_child([*path, *(f"{idx}:{n}" for n in names)])


@pytest.mark.asyncio(loop_scope="module")
async def test_asyncua_imports_types_browsable_under_base_object_type(server: Server) -> None:
    idx = await server.get_namespace_index(TYPES_NAMESPACE)
    storage_unit = await _type_path(server, "StorageUnitType")
    assert await storage_unit.read_node_class() == ua.NodeClass.ObjectType
    is_abstract = (await storage_unit.read_attribute(ua.AttributeIds.IsAbstract)).Value
    assert is_abstract is not None and is_abstract.Value is True
    subtypes = {
        (await c.read_browse_name()).Name
        for c in await storage_unit.get_children(refs=ua.ObjectIds.HasSubtype)
    }
    assert subtypes == {"TankType", "SiloType", "BinType"}
    for name in ("MaterialDefinitionType", "MaterialLotType", "LedgerType"):
        node = await _type_path(server, name)
        assert (await node.read_browse_name()) == ua.QualifiedName(name, idx)
    event_type = await _type_path(server, "InventoryMovementEventType", under="BaseEventType")
    assert await event_type.read_node_class() == ua.NodeClass.ObjectType
    # NodeIds keep their numbers; only the namespace index is the server's.
    ids = TYPE_MODEL.node_ids()
    assert storage_unit.nodeid == ua.NodeId(ids["StorageUnitType"], idx)
    assert event_type.nodeid == ua.NodeId(ids["InventoryMovementEventType"], idx)


@pytest.mark.asyncio(loop_scope="module")
async def test_asyncua_reads_units_ranges_defaults_and_arguments(server: Server) -> None:
    idx = await server.get_namespace_index(TYPES_NAMESPACE)
    fill = await _type_path(server, "StorageUnitType", "FillPercent")
    assert await fill.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
    assert await (await fill.get_child("0:EURange")).read_value() == ua.Range(0.0, 100.0)
    units = await (await fill.get_child("0:EngineeringUnits")).read_value()
    assert isinstance(units, ua.EUInformation)
    assert (units.UnitId, units.DisplayName.Text) == (20529, "%")
    level = await _type_path(server, "StorageUnitType", "TankType", "Level")
    assert (await (await level.get_child("0:EngineeringUnits")).read_value()).UnitId == 5066068
    equipment_level = await _type_path(server, "StorageUnitType", "EquipmentLevel")
    assert await equipment_level.read_value() == 9
    for method_def in TYPE_MODEL.object_type("LedgerType").methods:
        method = await _type_path(server, "LedgerType", method_def.browse_name)
        assert await method.read_node_class() == ua.NodeClass.Method
        inputs = await (await method.get_child("0:InputArguments")).read_value()
        assert [(a.Name, a.DataType) for a in inputs] == [
            (a.name, ua.NodeId(getattr(ua.ObjectIds, a.data_type))) for a in method_def.inputs
        ]
        outputs = await (await method.get_child("0:OutputArguments")).read_value()
        assert [a.Name for a in outputs] == [a.name for a in method_def.outputs]
        assert method_def.outputs[0].name in ("MovementID", "LotID", "RequestId")
    assert idx > 0


@pytest.mark.asyncio(loop_scope="module")
async def test_asyncua_instantiates_a_tank_with_every_declared_child(server: Server) -> None:
    idx = await server.get_namespace_index(TYPES_NAMESPACE)
    tank_type = await _type_path(server, "StorageUnitType", "TankType")
    tank = await server.nodes.objects.add_object(idx, "TK-101", tank_type.nodeid)
    names = {(await c.read_browse_name()).Name for c in await tank.get_children()}
    assert names == {v.browse_name for v in TYPE_MODEL.all_variables("TankType")}
    volume_units = await (
        await tank.get_child([f"{idx}:Volume", "0:EngineeringUnits"])
    ).read_value()
    assert volume_units.UnitId == 5002322  # LTR


@pytest.mark.asyncio(loop_scope="module")
async def test_asyncua_builds_events_of_the_imported_movement_event_type(server: Server) -> None:
    idx = await server.get_namespace_index(TYPES_NAMESPACE)
    event_type = await server.nodes.base_event_type.get_child([f"{idx}:InventoryMovementEventType"])
    generator = await server.get_event_generator(event_type, server.nodes.server.nodeid)
    for event_field in TYPE_MODEL.event_type("InventoryMovementEventType").fields:
        assert hasattr(generator.event, event_field.name)
        declared = await event_type.get_child(f"{idx}:{event_field.name}")
        rank = await declared.read_attribute(ua.AttributeIds.ValueRank)
        assert rank.Value.Value == (1 if event_field.array else -1), event_field.name

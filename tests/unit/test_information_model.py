"""The OPC UA type model as data: SPEC §4 names, argument order and types, units, roles."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from information_model import (
    APPLICATION_URI,
    INSTANCES_NAMESPACE,
    OPC10030_MAPPING,
    OPC10030_NAMESPACE,
    STORAGE_UNIT_LEVEL,
    TYPE_MODEL,
    TYPES_NAMESPACE,
    UNITS,
    ArgumentDef,
    EventTypeDef,
    MethodDef,
    ObjectTypeDef,
    Role,
    TypeModel,
    Unit,
    VariableDef,
    unece,
    unece_unit_id,
    unit_for,
)
from inventory_core.domain.errors import UnitConversionError
from inventory_core.domain.model import LotStatus, MovementKind

PACKAGE = Path(__file__).resolve().parents[2] / "information_model"

# SPEC §4, verbatim: method -> arguments in order. Quantities are Double, the rest String.
SPEC_METHODS = {
    "PostReceipt": (
        "MaterialDefinitionID", "LotID", "Quantity", "UnitOfMeasure", "ToUnit",
        "IdempotencyKey", "Reason",
    ),
    "PostIssue": (
        "MaterialDefinitionID", "LotID", "Quantity", "UnitOfMeasure", "FromUnit",
        "IdempotencyKey", "Reason",
    ),
    "PostTransfer": (
        "MaterialDefinitionID", "LotID", "Quantity", "UnitOfMeasure", "FromUnit", "ToUnit",
        "IdempotencyKey", "Reason",
    ),
    "PostAdjustment": (
        "Unit", "LotID", "DeltaQuantity", "UnitOfMeasure", "ReasonCode", "IdempotencyKey",
        "Comment",
    ),
    "RecordCount": ("Unit", "LotID", "CountedQuantity", "UnitOfMeasure", "IdempotencyKey"),
    "SetLotStatus": ("LotID", "Status", "Reason"),
    "ReverseMovement": ("MovementID", "Reason"),
    "PostScrap": (
        "Unit", "LotID", "Quantity", "UnitOfMeasure", "ReasonCode", "IdempotencyKey", "Comment",
    ),
    "PostProduction": (
        "MaterialDefinitionID", "LotID", "Quantity", "UnitOfMeasure", "ToUnit", "ConsumedLots",
        "ConsumedQuantities", "ConsumedUnits", "IdempotencyKey", "Reason",
    ),
    "ApproveRequest": ("RequestId", "Meaning", "UserName", "Password"),
    "RejectRequest": ("RequestId", "Reason", "UserName", "Password"),
    "SetLotQuality": (
        "LotID", "Properties", "RetestDate", "ExpiryDate", "Certificate", "Reason",
    ),
    "ClosePeriod": ("From", "To", "Reason", "IdempotencyKey"),
}  # fmt: skip
QUANTITY_ARGUMENTS = {"Quantity", "DeltaQuantity", "CountedQuantity", "ConsumedQuantities"}
# SPEC: String[] ...
ARRAY_ARGUMENTS = {"ConsumedLots", "ConsumedQuantities", "ConsumedUnits", "Properties"}
# The output of the methods that post no movement (every other one answers MovementID).
SPEC_OUTPUTS = {"SetLotQuality": "LotID", "ClosePeriod": "RequestId"}
SPEC_ROLES = {
    "PostReceipt": "operator",
    "PostIssue": "operator",
    "PostTransfer": "operator",
    "RecordCount": "operator",
    "PostAdjustment": "engineer",
    "SetLotStatus": "engineer",
    "ReverseMovement": "engineer",
    "PostScrap": "operator",
    "PostProduction": "operator",
    "ApproveRequest": "operator",  # the session; the signer's role is the policy's
    "RejectRequest": "operator",
    "SetLotQuality": "engineer",
    "ClosePeriod": "engineer",
}

# REFERENCE 3.3: common code -> UnitId
REFERENCE_UNIT_IDS = {
    "LTR": 5002322,
    "MTQ": 5067857,
    "KGM": 4933453,
    "TNE": 5525061,
    "P1": 20529,
    "CEL": 4408652,
    "MMT": 5066068,
    "MTR": 5067858,
    "E93": 4536627,
    "L2": 19506,
}


def _type(name: str) -> ObjectTypeDef:
    return TYPE_MODEL.object_type(name)


# --- namespaces -----------------------------------------------------------------------


def test_namespaces_and_application_uri_are_the_spec_values() -> None:
    assert TYPES_NAMESPACE == "urn:invops:ua:types"
    assert INSTANCES_NAMESPACE == "urn:invops:ua:plant"
    assert APPLICATION_URI == "urn:invops:server"
    assert TYPE_MODEL.namespace_uri == TYPES_NAMESPACE


def test_model_declares_every_spec_type() -> None:
    assert [t.browse_name for t in TYPE_MODEL.object_types] == [
        "StorageUnitType",
        "TankType",
        "SiloType",
        "BinType",
        "MaterialDefinitionType",
        "MaterialLotType",
        "LedgerType",
    ]
    assert [t.browse_name for t in TYPE_MODEL.event_types] == [
        "InventoryMovementEventType",
        "AdviceEventType",
    ]


# --- storage units ----------------------------------------------------------------------


def test_storage_unit_type_is_abstract_isa95_storage_unit() -> None:
    storage_unit = _type("StorageUnitType")
    assert storage_unit.is_abstract
    assert storage_unit.supertype == "BaseObjectType"
    assert storage_unit.isa95_level == STORAGE_UNIT_LEVEL == 9
    level = storage_unit.variable("EquipmentLevel")
    assert (level.kind, level.data_type, level.value) == ("property", "Int32", 9)


@pytest.mark.parametrize(
    ("name", "kind", "data_type"),
    [
        ("Volume", "analog", "Double"),
        ("Mass", "analog", "Double"),
        ("FillPercent", "analog", "Double"),
        ("BookQuantity", "analog", "Double"),
        ("MeasuredQuantity", "analog", "Double"),
        ("Discrepancy", "analog", "Double"),
        ("MaterialDefinitionID", "property", "String"),
        ("LotID", "property", "String"),
        ("Status", "property", "String"),
        ("Capacity", "analog", "Double"),
        ("EquipmentLevel", "property", "Int32"),
    ],
)
def test_storage_unit_carries_spec_variable(name: str, kind: str, data_type: str) -> None:
    variable = _type("StorageUnitType").variable(name)
    assert (variable.kind, variable.data_type) == (kind, data_type)
    assert variable.description


def test_storage_unit_declares_nothing_beyond_the_spec_list() -> None:
    names = [v.browse_name for v in _type("StorageUnitType").variables]
    assert names == [
        "Volume", "Mass", "FillPercent", "BookQuantity", "MeasuredQuantity", "Discrepancy",
        "MaterialDefinitionID", "LotID", "Status", "Capacity", "EquipmentLevel",
        "LotIDs", "LotQuantities",  # issue 14: the lots in the unit, appended (NodeIds kept)
    ]  # fmt: skip


def test_lot_lists_are_parallel_live_arrays() -> None:
    pairs = {
        "StorageUnitType": [("LotIDs", "LotQuantities")],
        "MaterialLotType": [
            ("StorageUnits", "StorageUnitQuantities"),
            ("ParentLotIDs", "ParentQuantities"),
            ("ChildLotIDs", "ChildQuantities"),
        ],
    }
    for type_name, lists in pairs.items():
        for ids, quantities in lists:
            names, numbers = _type(type_name).variable(ids), _type(type_name).variable(quantities)
            assert (names.data_type, names.kind, names.value_rank) == ("String", "variable", 1)
            assert (numbers.data_type, numbers.kind, numbers.value_rank) == (
                "Double",
                "variable",
                1,
            )
    assert _type("LedgerType").variable("OpenAdvices").value_rank == 1
    assert _type("LedgerType").variable("PendingRequests").value_rank == 1
    assert _type("StorageUnitType").variable("LotID").value_rank == -1


def test_an_array_variable_is_plain_and_has_no_default() -> None:
    with pytest.raises(ValueError, match="an array is a plain variable"):
        VariableDef("Levels", "Double", "analog", array=True)
    with pytest.raises(ValueError, match="an array is a plain variable"):
        VariableDef("Names", "String", "property", value="x", array=True)


def test_measured_analog_items_carry_unece_units() -> None:
    storage_unit = _type("StorageUnitType")
    assert storage_unit.variable("Volume").engineering_unit == UNITS["L"]
    assert storage_unit.variable("Mass").engineering_unit == UNITS["kg"]
    fill = storage_unit.variable("FillPercent")
    assert fill.engineering_unit == UNITS["%"]
    assert fill.engineering_unit.common_code == "P1"
    assert fill.eu_range == (0, 100)
    level = _type("TankType").variable("Level")
    assert (level.kind, level.engineering_unit) == ("analog", UNITS["mm"])


def test_quantities_in_the_material_base_unit_get_their_unit_per_instance() -> None:
    storage_unit = _type("StorageUnitType")
    for name in ("BookQuantity", "MeasuredQuantity", "Discrepancy", "Capacity"):
        variable = storage_unit.variable(name)
        assert variable.kind == "analog"
        assert variable.engineering_unit is None
        assert variable.eu_range is None


@pytest.mark.parametrize("name", ["TankType", "SiloType", "BinType"])
def test_storage_subtypes_derive_from_storage_unit_type(name: str) -> None:
    subtype = _type(name)
    assert subtype.supertype == "StorageUnitType"
    assert not subtype.is_abstract
    assert subtype.isa95_level == STORAGE_UNIT_LEVEL
    inherited = {v.browse_name for v in TYPE_MODEL.all_variables(name)}
    assert {v.browse_name for v in _type("StorageUnitType").variables} <= inherited
    assert ("Level" in inherited) == (name == "TankType")


def test_subtypes_are_listed_under_storage_unit_type() -> None:
    assert [t.browse_name for t in TYPE_MODEL.subtypes("StorageUnitType")] == [
        "TankType",
        "SiloType",
        "BinType",
    ]
    assert [t.browse_name for t in TYPE_MODEL.lineage("TankType")] == [
        "StorageUnitType",
        "TankType",
    ]


# --- material model ---------------------------------------------------------------------


def test_material_definition_type_members() -> None:
    material = _type("MaterialDefinitionType")
    assert [v.browse_name for v in material.variables] == [
        "ID", "Description", "BaseUnitOfMeasure", "Density", "MaterialClassID",
    ]  # fmt: skip
    density = material.variable("Density")
    assert density.kind == "analog"
    assert density.engineering_unit is not None
    assert density.engineering_unit.common_code == "B35"  # kilogram per litre


def test_material_lot_type_uses_isa95_attribute_names() -> None:
    lot = _type("MaterialLotType")
    assert [(v.browse_name, v.data_type) for v in lot.variables] == [
        ("ID", "String"),
        ("MaterialDefinitionID", "String"),
        ("Status", "String"),
        ("StorageLocation", "String"),
        ("Quantity", "Double"),
        ("QuantityUnitOfMeasure", "String"),
        ("ExpirationDate", "DateTime"),
        ("StorageUnits", "String"),
        ("StorageUnitQuantities", "Double"),
        ("ParentLotIDs", "String"),
        ("ParentQuantities", "Double"),
        ("ChildLotIDs", "String"),
        ("ChildQuantities", "Double"),
        # issue 16: lot quality data, appended (NodeIds kept)
        ("RetestDate", "String"),
        ("RetestDue", "Boolean"),
        ("Certificate", "String"),
        ("PropertyNames", "String"),
        ("PropertyValues", "String"),
        ("PropertyUnits", "String"),
    ]
    for status in LotStatus:
        assert status.value in lot.variable("Status").description


# --- ledger methods ---------------------------------------------------------------------


def test_ledger_has_exactly_the_spec_methods_in_order() -> None:
    assert [m.browse_name for m in _type("LedgerType").methods] == list(SPEC_METHODS)


@pytest.mark.parametrize(("name", "arguments"), SPEC_METHODS.items())
def test_ledger_method_arguments_in_spec_order_and_types(
    name: str, arguments: tuple[str, ...]
) -> None:
    method = _type("LedgerType").method(name)
    assert tuple(a.name for a in method.inputs) == arguments
    for argument in method.inputs:
        expected = "Double" if argument.name in QUANTITY_ARGUMENTS else "String"
        assert argument.data_type == expected, argument.name
        assert argument.array == (argument.name in ARRAY_ARGUMENTS), argument.name
        assert argument.value_rank == (1 if argument.array else -1)
        assert argument.description
    output = SPEC_OUTPUTS.get(name, "MovementID")
    assert [(a.name, a.data_type) for a in method.outputs] == [(output, "String")]


@pytest.mark.parametrize(("name", "role"), SPEC_ROLES.items())
def test_ledger_method_requires_the_spec_role(name: str, role: str) -> None:
    assert _type("LedgerType").method(name).required_role == role


def test_roles_grant_everything_below_them() -> None:
    assert Role.ENGINEER.grants("operator")
    assert Role.ADMIN.grants("engineer")
    assert Role.OPERATOR.grants("operator")
    assert not Role.OPERATOR.grants("engineer")
    assert not Role.VIEWER.grants("operator")
    assert [r.value for r in Role] == ["viewer", "operator", "engineer", "admin"]


def test_ledger_generates_the_movement_event() -> None:
    assert _type("LedgerType").generates_events == (
        "InventoryMovementEventType",
        "AdviceEventType",
    )


def test_advice_event_fields() -> None:
    event = TYPE_MODEL.event_type("AdviceEventType")
    assert event.supertype == "BaseEventType"
    assert [(f.name, f.data_type) for f in event.fields] == [
        ("AdviceId", "String"),
        ("State", "String"),
        ("Kind", "String"),
        ("MaterialDefinitionID", "String"),
        ("LotID", "String"),
        ("Unit", "String"),
        ("Reference", "String"),
        ("AdvisedQuantity", "Double"),
        ("BookedQuantity", "Double"),
        ("Variance", "Double"),
        ("VariancePercent", "Double"),
        ("UnitOfMeasure", "String"),
        ("User", "String"),
    ]
    for state in ("open", "matched", "expired"):
        assert state in event.fields[1].description


def test_movement_event_fields() -> None:
    event = TYPE_MODEL.event_type("InventoryMovementEventType")
    assert event.supertype == "BaseEventType"
    assert [(f.name, f.data_type) for f in event.fields] == [
        ("MovementId", "String"),
        ("Kind", "String"),
        ("MaterialDefinitionID", "String"),
        ("LotID", "String"),
        ("FromUnit", "String"),
        ("ToUnit", "String"),
        ("Quantity", "Double"),
        ("UnitOfMeasure", "String"),
        ("User", "String"),
        ("Source", "String"),
        ("RequestId", "String"),
        ("Signatures", "String"),
    ]
    assert [f.name for f in event.fields if f.array] == ["Signatures"]
    ids = TYPE_MODEL.node_ids()  # appended in 1.4.0: the fields of 1.0 keep their ids
    assert ids["InventoryMovementEventType.MovementId"] == 7010
    assert ids["InventoryMovementEventType.Source"] == 7100
    assert ids["InventoryMovementEventType.Signatures"] == 7120
    for kind in MovementKind:
        assert kind.value in event.fields[1].description


# --- engineering units ------------------------------------------------------------------


@pytest.mark.parametrize(("code", "unit_id"), REFERENCE_UNIT_IDS.items())
def test_unece_unit_id_matches_reference_table(code: str, unit_id: int) -> None:
    assert unece_unit_id(code) == unit_id
    assert unece(code, code, code).unit_id == unit_id


@pytest.mark.parametrize(
    ("uom", "code", "unit_id", "display"),
    [
        ("L", "LTR", 5002322, "l"),
        ("m3", "MTQ", 5067857, "m³"),
        ("kg", "KGM", 4933453, "kg"),
        ("t", "TNE", 5525061, "t"),
        ("%", "P1", 20529, "%"),
        ("mm", "MMT", 5066068, "mm"),
        ("g", "GRM", 0x47524D, "g"),
        ("mL", "MLT", 0x4D4C54, "ml"),
    ],
)
def test_invops_units_map_to_unece(uom: str, code: str, unit_id: int, display: str) -> None:
    unit = unit_for(uom)
    assert unit is UNITS[uom]
    assert (unit.common_code, unit.unit_id, unit.display_name) == (code, unit_id, display)
    assert unit.namespace_uri == "http://www.opcfoundation.org/UA/units/un/cefact"


def test_unit_for_accepts_spelling_variants_and_unece_codes() -> None:
    assert unit_for("l") is UNITS["L"]
    assert unit_for("ml") is UNITS["mL"]
    assert unit_for("m³") is UNITS["m3"]
    assert unit_for("KGM") is UNITS["kg"]


def test_unit_for_rejects_unknown_units_as_a_validation_error() -> None:
    with pytest.raises(UnitConversionError, match="gal"):
        unit_for("gal")


def test_unit_rejects_an_id_that_is_not_the_packed_code() -> None:
    with pytest.raises(ValueError, match="packed"):
        Unit("LTR", 1, "l", "litre")
    with pytest.raises(ValueError, match="common code"):
        unece("LITRE", "l", "litre")


# --- OPC 10030 mapping ------------------------------------------------------------------


def test_opc10030_mapping_names_model_members_and_isa95_types() -> None:
    assert OPC10030_NAMESPACE == "http://www.OPCFoundation.org/UA/2013/01/ISA95"
    mapping = dict(OPC10030_MAPPING)
    assert mapping["StorageUnitType"] == "EquipmentType"
    assert mapping["MaterialDefinitionType"] == "MaterialDefinitionType"
    assert mapping["MaterialLotType"] == "MaterialLotType"
    for invops_name, counterpart in OPC10030_MAPPING:
        type_name, _, member = invops_name.partition(".")
        type_def = TYPE_MODEL.object_type(type_name)
        if member:
            type_def.variable(member)
        assert counterpart.split(".")[0] in {
            "EquipmentType",
            "MaterialDefinitionType",
            "MaterialLotType",
        }


# --- definitions are data ---------------------------------------------------------------


def test_definitions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _type("TankType").browse_name = "Other"  # type: ignore[misc]


@pytest.mark.parametrize("module", ["nodes.py", "isa95.py", "nodeset.py", "__init__.py"])
def test_information_model_imports_no_opc_ua_stack(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "asyncua" not in imported


# --- validation -------------------------------------------------------------------------


def _model(*object_types: ObjectTypeDef, blocks: tuple[tuple[str, int], ...] = ()) -> TypeModel:
    return TypeModel(
        namespace_uri="urn:test",
        version="1",
        publication_date="2026-01-01T00:00:00Z",
        object_types=object_types,
        event_types=(),
        node_id_blocks=blocks
        or tuple((t.browse_name, 1000 * (i + 1)) for i, t in enumerate(object_types)),
    )


def test_model_rejects_unknown_supertype() -> None:
    with pytest.raises(ValueError, match="supertype"):
        _model(ObjectTypeDef("AType", supertype="NoSuchType"))


def test_model_rejects_a_subtype_redeclaring_an_inherited_child() -> None:
    base = ObjectTypeDef("Base", variables=(VariableDef("X", "Double"),))
    with pytest.raises(ValueError, match="redeclares"):
        _model(
            base, ObjectTypeDef("Sub", supertype="Base", variables=(VariableDef("X", "Double"),))
        )


def test_model_rejects_missing_or_shared_node_id_blocks() -> None:
    a, b = ObjectTypeDef("A"), ObjectTypeDef("B")
    with pytest.raises(ValueError, match="every type"):
        _model(a, b, blocks=(("A", 1000),))
    with pytest.raises(ValueError, match="distinct"):
        _model(a, b, blocks=(("A", 1000), ("B", 1000)))
    with pytest.raises(ValueError, match="multiples"):
        _model(a, blocks=(("A", 1500),))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: VariableDef("X", "Decimal"), "unknown data type"),
        (lambda: VariableDef("X", "String", "analog"), "numeric"),
        (lambda: VariableDef("X", "Double", "property", eu_range=(0, 1)), "analog"),
        (lambda: VariableDef("X", "Double", "analog", eu_range=(1, 0)), "low"),
        (lambda: VariableDef("X", "Int32", "property", value="9"), "not a Int32"),
        (lambda: VariableDef("X", "Int32", "property", value=True), "not a Int32"),
        (lambda: VariableDef("Bad Name", "Double"), "letters"),
        (lambda: ObjectTypeDef("T", variables=(VariableDef("X", "Double"),) * 2), "duplicate"),
        (lambda: MethodDef("M", required_role=""), "required_role"),
        (lambda: MethodDef("M", (ArgumentDef("A", "String"),) * 2, required_role="x"), "dup"),
        (lambda: EventTypeDef("E", fields=(ArgumentDef("A", "String"),) * 2), "duplicate"),
    ],
)
def test_definitions_reject_inconsistent_data(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


# --- NodeIds ----------------------------------------------------------------------------


def test_node_ids_are_unique_and_inside_each_type_block() -> None:
    ids = TYPE_MODEL.node_ids()
    assert len(set(ids.values())) == len(ids)
    blocks = dict(TYPE_MODEL.node_id_blocks)
    for path, number in ids.items():
        base = blocks[path.split(".")[0]]
        assert base <= number < base + 1000, path


def test_node_ids_are_pinned() -> None:
    # Published ids: a change here breaks clients that stored NodeIds.
    ids = TYPE_MODEL.node_ids()
    assert ids["StorageUnitType"] == 1000
    assert ids["StorageUnitType.Volume"] == 1010
    assert ids["StorageUnitType.Volume.EngineeringUnits"] == 1011
    assert ids["StorageUnitType.Volume.EURange"] == 1012
    assert ids["StorageUnitType.EquipmentLevel"] == 1110
    assert ids["TankType"] == 2000
    assert ids["TankType.Level"] == 2010
    assert ids["SiloType"] == 3000
    assert ids["BinType"] == 4000
    assert ids["MaterialDefinitionType"] == 5000
    assert ids["MaterialLotType"] == 6000
    assert ids["InventoryMovementEventType"] == 7000
    assert ids["InventoryMovementEventType.MovementId"] == 7010
    assert ids["LedgerType"] == 8000
    assert ids["LedgerType.PostReceipt"] == 8510
    assert ids["LedgerType.PostReceipt.InputArguments"] == 8511
    assert ids["LedgerType.PostReceipt.OutputArguments"] == 8512
    assert ids["LedgerType.ReverseMovement"] == 8570

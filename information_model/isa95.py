"""The invops OPC UA type model (SPEC §4), ISA-95 Part 2 names, as data.

Read it like the SPEC: storage units (tanks, silos, bins) with their measured
and booked quantities, material definitions, material lots, the ledger's
methods and the movement event. `opcua_server/` builds the address space from
`TYPE_MODEL`; `nodeset.export_nodeset` writes the same model as NodeSet2 XML.

OPC 10030 (OPC UA for ISA-95) is not imported: types derive from the standard
base types and keep the ISA-95 / OPC 10030 BrowseNames, so switching to the
official ISA95 NodeSet later is mechanical (`OPC10030_MAPPING`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from information_model.nodes import (
    ArgumentDef,
    EventTypeDef,
    MethodDef,
    ObjectTypeDef,
    TypeModel,
    Unit,
    VariableDef,
    unece,
)
from inventory_core.domain.advices import AdviceState
from inventory_core.domain.errors import UnitConversionError
from inventory_core.domain.model import LotStatus, MovementKind, Source
from inventory_core.domain.units import UNITS as LEDGER_UOMS
from inventory_core.domain.users import Role

TYPES_NAMESPACE: Final = "urn:invops:ua:types"
INSTANCES_NAMESPACE: Final = "urn:invops:ua:plant"
APPLICATION_URI: Final = "urn:invops:server"
OPC10030_NAMESPACE: Final = "http://www.OPCFoundation.org/UA/2013/01/ISA95"

# Bump both when a type changes; the NodeSet's <Model> carries them.
# 1.1: lot lists, genealogy arrays, advices (issue 14); 1.2: pending requests, ApproveRequest
# and RejectRequest (electronic signatures, issue 16); 1.3: lot quality data (retest date,
# certificate, properties) and SetLotQuality, ClosePeriod (issue 16); 1.4: RequestId and
# Signatures on InventoryMovementEventType (issue 16).
MODEL_VERSION: Final = "1.4.0"
MODEL_PUBLICATION_DATE: Final = "2026-12-04T00:00:00Z"

# ISA95EquipmentElementLevelEnum (OPC 10030, DataType i=4871 in the ISA95 namespace).
STORAGE_ZONE_LEVEL: Final = 8
STORAGE_UNIT_LEVEL: Final = 9


# --- engineering units (REFERENCE 3.3, UNECE Rec 20) --------------------------------

LITRE: Final = unece("LTR", "l", "litre")
MILLILITRE: Final = unece("MLT", "ml", "millilitre")
CUBIC_METRE: Final = unece("MTQ", "m³", "cubic metre")
KILOGRAM: Final = unece("KGM", "kg", "kilogram")
GRAM: Final = unece("GRM", "g", "gram")
TONNE: Final = unece("TNE", "t", "tonne (metric ton)")
PERCENT: Final = unece("P1", "%", "percent")
MILLIMETRE: Final = unece("MMT", "mm", "millimetre")
KILOGRAM_PER_LITRE: Final = unece("B35", "kg/l", "kilogram per litre")

# invops unit of measure (as the ledger and the config spell it) -> EUInformation
UNITS: Final[Mapping[str, Unit]] = MappingProxyType(
    {
        "kg": KILOGRAM,
        "g": GRAM,
        "t": TONNE,
        "L": LITRE,
        "mL": MILLILITRE,
        "m3": CUBIC_METRE,
        "mm": MILLIMETRE,
        "%": PERCENT,
    }
)
_UOM_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {"l": "L", "ml": "mL", "m³": "m3"} | {unit.common_code: uom for uom, unit in UNITS.items()}
)


def unit_for(uom: str) -> Unit:
    """The UNECE engineering unit of an invops unit of measure (`"L"` -> LTR)."""
    unit = UNITS.get(_UOM_ALIASES.get(uom, uom))
    if unit is None:
        known = ", ".join(UNITS)
        raise UnitConversionError(f"no engineering unit for {uom!r} (known: {known})")
    return unit


# --- helpers that keep the tables below short ---------------------------------------


def _analog(
    name: str,
    description: str,
    unit: Unit | None = None,
    eu_range: tuple[float, float] | None = None,
) -> VariableDef:
    return VariableDef(name, "Double", "analog", unit, eu_range, description)


def _property(name: str, description: str, data_type: str = "String") -> VariableDef:
    return VariableDef(name, data_type, "property", description=description)


def _list(name: str, description: str, data_type: str = "String") -> VariableDef:
    """A live one-dimensional array (BaseDataVariableType, ValueRank 1)."""
    return VariableDef(name, data_type, "variable", description=description, array=True)


def _text(name: str, description: str) -> ArgumentDef:
    return ArgumentDef(name, "String", description)


def _quantity(name: str, description: str) -> ArgumentDef:
    return ArgumentDef(name, "Double", description)


def _one_of(values: type[StrEnum]) -> str:
    return ", ".join(v.value for v in values)


_LOT_STATUSES: Final = _one_of(LotStatus)
_UOMS: Final = ", ".join(LEDGER_UOMS)

# --- storage units: ISA-95 equipment at level StorageUnit ---------------------------

STORAGE_UNIT_TYPE: Final = ObjectTypeDef(
    "StorageUnitType",
    is_abstract=True,
    isa95_level=STORAGE_UNIT_LEVEL,
    description="ISA-95 storage unit (EquipmentLevel StorageUnit): holds one lot or sublots.",
    variables=(
        _analog("Volume", "Measured volume; EURange 0..capacity per unit.", LITRE),
        _analog("Mass", "Measured mass; EURange 0..capacity per unit.", KILOGRAM),
        _analog("FillPercent", "Measured fill level as percent of capacity.", PERCENT, (0, 100)),
        _analog("BookQuantity", "Ledger (book) quantity in the material's base unit."),
        _analog("MeasuredQuantity", "Quantity from the PLC measurement, material base unit."),
        _analog("Discrepancy", "MeasuredQuantity - BookQuantity, material base unit."),
        _property("MaterialDefinitionID", "Material the unit holds ('' when empty)."),
        _property("LotID", "Current lot in the unit ('' when empty)."),
        _property("Status", f"Status of the current lot: {_LOT_STATUSES} ('' when empty)."),
        _analog("Capacity", "Nominal capacity, in the unit's capacity unit of measure."),
        VariableDef(
            "EquipmentLevel",
            "Int32",
            "property",
            description="ISA95EquipmentElementLevelEnum: 9 = StorageUnit.",
            value=STORAGE_UNIT_LEVEL,
        ),
        _list("LotIDs", "Every lot with stock in the unit, sorted."),
        _list(
            "LotQuantities",
            "Book quantity of each lot of LotIDs (same order), material base unit.",
            "Double",
        ),
    ),
)

TANK_TYPE: Final = ObjectTypeDef(
    "TankType",
    supertype="StorageUnitType",
    isa95_level=STORAGE_UNIT_LEVEL,
    description="Liquid tank measured by level; volume from a strapping table.",
    variables=(_analog("Level", "Measured liquid level; EURange 0..max level.", MILLIMETRE),),
)

SILO_TYPE: Final = ObjectTypeDef(
    "SiloType",
    supertype="StorageUnitType",
    isa95_level=STORAGE_UNIT_LEVEL,
    description="Bulk solids silo measured by load cells (net weight).",
)

BIN_TYPE: Final = ObjectTypeDef(
    "BinType",
    supertype="StorageUnitType",
    isa95_level=STORAGE_UNIT_LEVEL,
    description="Bin on a scale (net weight); may hold sublots.",
)

# --- material model: ISA-95 Part 2 MaterialDefinition and MaterialLot ---------------

MATERIAL_DEFINITION_TYPE: Final = ObjectTypeDef(
    "MaterialDefinitionType",
    description="ISA-95 MaterialDefinition: one kind of material.",
    variables=(
        _property("ID", "MaterialDefinitionID."),
        _property("Description", "Human-readable description."),
        _property("BaseUnitOfMeasure", f"Unit the ledger books the material in ({_UOMS})."),
        _analog(
            "Density", "Density for volume/mass conversion (null when unknown).", KILOGRAM_PER_LITRE
        ),
        _property("MaterialClassID", "ISA-95 MaterialClass ('' when none)."),
    ),
)

MATERIAL_LOT_TYPE: Final = ObjectTypeDef(
    "MaterialLotType",
    description="ISA-95 MaterialLot: a uniquely identified amount of one material.",
    variables=(
        _property("ID", "LotID."),
        _property("MaterialDefinitionID", "Material the lot is made of."),
        _property("Status", f"Lot status: {_LOT_STATUSES}."),
        _property("StorageLocation", "Storage unit(s) holding the lot, comma-separated."),
        _analog("Quantity", "Book quantity of the lot, in QuantityUnitOfMeasure."),
        _property("QuantityUnitOfMeasure", "Unit of Quantity (the material's base unit)."),
        _property("ExpirationDate", "Expiry date (null when none).", "DateTime"),
        _list("StorageUnits", "Storage units holding the lot, sorted."),
        _list(
            "StorageUnitQuantities",
            "Book quantity of the lot in each unit of StorageUnits (same order).",
            "Double",
        ),
        _list("ParentLotIDs", "Lots that went into this one (production, blend), sorted."),
        _list(
            "ParentQuantities",
            "Quantity of each parent that went in (same order; NaN where not recorded).",
            "Double",
        ),
        _list("ChildLotIDs", "Lots this one went into, sorted."),
        _list(
            "ChildQuantities",
            "Quantity of this lot in each child (same order; NaN where not recorded).",
            "Double",
        ),
        # Lot quality data (issue 16), appended (NodeIds kept).
        _property("RetestDate", "Retest date, ISO 8601 (YYYY-MM-DD; '' when none)."),
        _property("RetestDue", "Past its retest date: retest before use.", "Boolean"),
        _property("Certificate", "Certificate of analysis reference ('' when none)."),
        _list("PropertyNames", "Names of the lot's properties (assay, density, ...), as set."),
        _list("PropertyValues", "Value of each property of PropertyNames (same order)."),
        _list("PropertyUnits", "Unit of each property of PropertyNames (same order; '' none)."),
    ),
)

# --- ledger: the only way to change inventory (SPEC §4 methods, argument order fixed) ----

_MATERIAL = _text("MaterialDefinitionID", "Material being moved.")
_LOT = _text("LotID", "Lot being moved (a receipt creates it on first use).")
_QUANTITY = _quantity("Quantity", "Quantity moved, positive, in UnitOfMeasure.")
_UOM = _text("UnitOfMeasure", f"Unit of the quantity: {_UOMS}.")
_FROM_UNIT = _text("FromUnit", "Storage unit the material leaves.")
_TO_UNIT = _text("ToUnit", "Storage unit the material enters.")
_KEY = _text("IdempotencyKey", "Client key: a repeated call returns the first MovementID.")
_REASON = _text("Reason", "Why (kept in the audit trail).")
_MOVEMENT_ID = _text("MovementID", "ID of the posted movement.")
_REQUEST_ID = _text("RequestId", "Pending request to sign (request:<id>, as the posting answered).")
_SIGNER = _text("UserName", "Signer: re-authenticated by name and password for this signature.")
_PASSWORD = _text("Password", "The signer's password (never logged or audited).")
_SIGNED = _text(
    "MovementID",
    "ID of the movement (advice, period) the signature posted; else the request id.",
)
_KEEP = "'' keeps the lot's"


def _ledger_method(name: str, role: Role, description: str, *inputs: ArgumentDef) -> MethodDef:
    return MethodDef(name, inputs, (_MOVEMENT_ID,), description, role.value)


LEDGER_TYPE: Final = ObjectTypeDef(
    "LedgerType",
    description="Inventory ledger: posts movements, each raising an InventoryMovementEventType.",
    generates_events=("InventoryMovementEventType", "AdviceEventType"),
    variables=(
        _list("OpenAdvices", "Ids of the advices waiting for their measured change, oldest first."),
        _list(
            "PendingRequests",
            "Ids (request:<id>) of the requests waiting for signatures, oldest first.",
        ),
    ),
    methods=(
        _ledger_method(
            "PostReceipt", Role.OPERATOR, "Receive material into a storage unit.",
            _MATERIAL, _LOT, _QUANTITY, _UOM, _TO_UNIT, _KEY, _REASON,
        ),
        _ledger_method(
            "PostIssue", Role.OPERATOR, "Issue material from a storage unit.",
            _MATERIAL, _LOT, _QUANTITY, _UOM, _FROM_UNIT, _KEY, _REASON,
        ),
        _ledger_method(
            "PostTransfer", Role.OPERATOR, "Move material between storage units.",
            _MATERIAL, _LOT, _QUANTITY, _UOM, _FROM_UNIT, _TO_UNIT, _KEY, _REASON,
        ),
        _ledger_method(
            "PostAdjustment", Role.ENGINEER, "Correct a unit's book quantity by a signed delta.",
            _text("Unit", "Storage unit adjusted."),
            _text("LotID", "Lot adjusted."),
            _quantity("DeltaQuantity", "Signed change of the book quantity, in UnitOfMeasure."),
            _UOM,
            _text("ReasonCode", "Adjustment reason code."),
            _KEY,
            _text("Comment", "Free text (kept in the audit trail)."),
        ),
        _ledger_method(
            "RecordCount", Role.OPERATOR, "Record a physical count; the difference is booked.",
            _text("Unit", "Storage unit counted."),
            _text("LotID", "Lot counted."),
            _quantity("CountedQuantity", "Counted (absolute) quantity, in UnitOfMeasure."),
            _UOM,
            _KEY,
        ),
        _ledger_method(
            "SetLotStatus", Role.ENGINEER, "Change a lot's status (audited).",
            _text("LotID", "Lot whose status changes."),
            _text("Status", f"New status: {_LOT_STATUSES}."),
            _REASON,
        ),
        _ledger_method(
            "ReverseMovement", Role.ENGINEER, "Post the exact negation of an earlier movement.",
            _text("MovementID", "Movement to reverse."),
            _REASON,
        ),
        _ledger_method(
            "PostScrap", Role.OPERATOR, "Scrap material of a lot from a storage unit.",
            _text("Unit", "Storage unit the scrapped material leaves."),
            _text("LotID", "Lot scrapped."),
            _QUANTITY,
            _UOM,
            _text("ReasonCode", "Scrap reason code."),
            _KEY,
            _text("Comment", "Free text (kept in the audit trail)."),
        ),
        _ledger_method(
            "PostProduction", Role.OPERATOR,
            "Produce a lot into a storage unit from consumed lots (genealogy with quantities).",
            _MATERIAL,
            _text("LotID", "Lot produced (created on first use)."),
            _quantity("Quantity", "Quantity produced, positive, in UnitOfMeasure."),
            _UOM,
            _TO_UNIT,
            ArgumentDef("ConsumedLots", "String", "Lots consumed (may be empty).", array=True),
            ArgumentDef(
                "ConsumedQuantities", "Double",
                "Quantity of each consumed lot, in its material's base unit (same length).",
                array=True,
            ),
            ArgumentDef(
                "ConsumedUnits", "String",
                "Storage unit each consumed lot was drawn from ('' for none; a manual unit "
                "books the draw, a measured one's gauge does; same length).",
                array=True,
            ),
            _KEY,
            _REASON,
        ),
        # Electronic signatures (issue 16): the session needs operator; the signer's own
        # role is checked by the ledger against the request's policy.
        MethodDef(
            "ApproveRequest",
            (
                _REQUEST_ID,
                _text("Meaning", "What the signature means; the policy's (approved, ...)."),
                _SIGNER,
                _PASSWORD,
            ),
            (_SIGNED,),
            "Sign a pending request; the last signature posts it.",
            Role.OPERATOR.value,
        ),
        MethodDef(
            "RejectRequest",
            (
                _REQUEST_ID,
                _text("Reason", "Why it is rejected (required; kept in the audit trail)."),
                _SIGNER,
                _PASSWORD,
            ),
            (_SIGNED,),
            "Reject a pending request (a signed rejection): nothing is posted.",
            Role.OPERATOR.value,
        ),
        # Lot quality data and period close (issue 16), engineer.
        MethodDef(
            "SetLotQuality",
            (
                _text("LotID", "Lot whose quality data is set."),
                ArgumentDef(
                    "Properties", "String",
                    "NAME=VALUE[ UNIT] entries (e.g. 'density=0.7893 kg/L'): replace the "
                    "lot's properties; an empty array keeps them. A density converts this "
                    "lot's postings.",
                    array=True,
                ),
                _text("RetestDate", f"Retest date, YYYY-MM-DD ({_KEEP})."),
                _text("ExpiryDate", f"Expiry date, YYYY-MM-DD ({_KEEP})."),
                _text("Certificate", f"Certificate of analysis reference ({_KEEP})."),
                _text("Reason", "Why (required; kept in the audit trail)."),
            ),
            (_text("LotID", "The lot set."),),
            "Set a lot's quality data: properties, retest and expiry dates, certificate "
            "(all or nothing, audited).",
            Role.ENGINEER.value,
        ),
        MethodDef(
            "ClosePeriod",
            (
                _text("From", "Period start, ISO 8601 (UTC if no zone; included)."),
                _text("To", "Period end, ISO 8601 (UTC if no zone; excluded; passed)."),
                _text("Reason", "Why (required; kept in the audit trail)."),
                _KEY,
            ),
            (
                _text(
                    "RequestId",
                    "request:<id> of the held close; ApproveRequest (meaning reviewed) "
                    "closes the period.",
                ),
            ),
            "Ask to close a period of the books: its balance report is held for a signature.",
            Role.ENGINEER.value,
        ),
    ),
)  # fmt: skip

# --- events -------------------------------------------------------------------------

INVENTORY_MOVEMENT_EVENT_TYPE: Final = EventTypeDef(
    "InventoryMovementEventType",
    description="Raised on the Ledger object and the Server object for every posted movement.",
    fields=(
        _text("MovementId", "ID of the posted movement."),
        _text("Kind", f"Movement kind: {_one_of(MovementKind)}."),
        _text("MaterialDefinitionID", "Material moved."),
        _text("LotID", "Lot moved."),
        _text("FromUnit", "Source storage unit ('' when none)."),
        _text("ToUnit", "Target storage unit ('' when none)."),
        _quantity("Quantity", "Quantity in UnitOfMeasure (the material's base unit)."),
        _text("UnitOfMeasure", "Unit of Quantity."),
        _text("User", "User who posted the movement."),
        _text("Source", f"Origin of the posting: {_one_of(Source)}."),
        _text(
            "RequestId",
            "The pending request the movement was posted on once signed ('' when it needed "
            "no signature).",
        ),
        ArgumentDef(
            "Signatures",
            "String",
            "The signatures it was posted on (21 CFR 11.50), each 'Printed Name (user), UTC "
            "time: meaning'; empty when none.",
            array=True,
        ),
    ),
)

ADVICE_EVENT_TYPE: Final = EventTypeDef(
    "AdviceEventType",
    description=(
        "Raised on the Ledger object and the Server object when an advice (a manual change of "
        "a measured unit) is recorded, matched by its measured change, or expires."
    ),
    fields=(
        _text("AdviceId", "Advice id (a posting that became it answered 'advice:<id>')."),
        _text("State", f"State: {_one_of(AdviceState)}."),
        _text("Kind", "Movement kind advised (receipt, issue, transfer, production, scrap)."),
        _text("MaterialDefinitionID", "Material advised."),
        _text("LotID", "Lot advised ('' when the unit's lot handling picks)."),
        _text("Unit", "Measured storage unit the advice is about."),
        _text("Reference", "Document reference (e.g. an ERP delivery number)."),
        _quantity("AdvisedQuantity", "Quantity advised, in UnitOfMeasure."),
        _quantity("BookedQuantity", "Quantity the gauge booked to it so far, in UnitOfMeasure."),
        _quantity("Variance", "BookedQuantity - AdvisedQuantity once matched (0 before)."),
        _quantity("VariancePercent", "Variance in percent of AdvisedQuantity (0 before)."),
        _text("UnitOfMeasure", "Unit of the quantities (the material's base unit)."),
        _text("User", "User who posted the advice."),
    ),
)

# Never renumber a published block: clients and historians persist NodeIds.
NODE_ID_BLOCKS: Final = (
    ("StorageUnitType", 1000),
    ("TankType", 2000),
    ("SiloType", 3000),
    ("BinType", 4000),
    ("MaterialDefinitionType", 5000),
    ("MaterialLotType", 6000),
    ("InventoryMovementEventType", 7000),
    ("LedgerType", 8000),
    ("AdviceEventType", 9000),
)

TYPE_MODEL: Final = TypeModel(
    namespace_uri=TYPES_NAMESPACE,
    version=MODEL_VERSION,
    publication_date=MODEL_PUBLICATION_DATE,
    object_types=(
        STORAGE_UNIT_TYPE,
        TANK_TYPE,
        SILO_TYPE,
        BIN_TYPE,
        MATERIAL_DEFINITION_TYPE,
        MATERIAL_LOT_TYPE,
        LEDGER_TYPE,
    ),
    event_types=(INVENTORY_MOVEMENT_EVENT_TYPE, ADVICE_EVENT_TYPE),
    node_id_blocks=NODE_ID_BLOCKS,
)

# invops type (or member) -> OPC 10030 counterpart in OPC10030_NAMESPACE. LedgerType,
# InventoryMovementEventType and AdviceEventType are invops operations with no OPC 10030
# counterpart.
OPC10030_MAPPING: Final[tuple[tuple[str, str], ...]] = (
    ("StorageUnitType", "EquipmentType"),
    ("StorageUnitType.EquipmentLevel", "EquipmentType.EquipmentLevel"),
    ("TankType", "EquipmentType"),
    ("SiloType", "EquipmentType"),
    ("BinType", "EquipmentType"),
    ("MaterialDefinitionType", "MaterialDefinitionType"),
    ("MaterialDefinitionType.MaterialClassID", "MaterialDefinitionType.DefinedByMaterialClass"),
    ("MaterialLotType", "MaterialLotType"),
    ("MaterialLotType.MaterialDefinitionID", "MaterialLotType.DefinedByMaterialDefinition"),
    ("MaterialLotType.Status", "MaterialLotType.Status"),
    ("MaterialLotType.StorageLocation", "MaterialLotType.StorageLocation"),
    ("MaterialLotType.Quantity", "MaterialLotType.Quantity"),
)

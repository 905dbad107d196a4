"""B2MML documents invops writes: material information and the movements after a cursor.

Element order follows the V0700 XSD sequences (a validating reader checks it).
Why OperationsPerformance for movements: B2MML's actuals (`OperationsResponse` ->
`SegmentResponse` -> `MaterialActual`) carry exactly what a movement is, material,
lot, storage location and signed quantity per stock leg, and ERP systems map them
to goods movements; `OperationsEvent` tells *that* something happened (an event
record for a historian), without the material actuals a stock ledger needs.

Mapping (README "B2MML"):

- one `OperationsResponse` per movement, ID = movement id, OperationsType
  `Production` for productions, else `Inventory`;
- its one `SegmentResponse` (ID = movement id, ProcessSegmentID = the movement
  kind, PostingDate = the booking time) carries `SegmentData` Cursor, Kind,
  User, Source, Reason, Reference, Reverses, and one `MaterialActual` per stock
  leg: StorageLocation = the unit, Quantity signed (+ into it, - out of it),
  MaterialUse `Produced` (production output), `Consumed` (issue, scrap, the
  draws of a production) or `Inventoried` (receipts, transfers, adjustments,
  counts, reversals).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from inventory_core.domain.derivation import format_utc
from inventory_core.domain.model import (
    Balance,
    Lot,
    MaterialDefinition,
    Movement,
    MovementKind,
)
from inventory_core.domain.units import format_decimal

B2MML_NAMESPACE = "http://www.mesa.org/xml/B2MML"
RELEASE_ID = "7.0"  # B2MML V0700
SENDER = "invops"

ET.register_namespace("", B2MML_NAMESPACE)

_CONSUMING = frozenset({MovementKind.ISSUE, MovementKind.SCRAP})


def tag(name: str) -> str:
    """The qualified name of a B2MML element."""
    return f"{{{B2MML_NAMESPACE}}}{name}"


def sub(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag(name), attrs)
    if text is not None:
        element.text = text
    return element


def document(verb_noun: str, verb: str, created: datetime, bod_id: str) -> ET.Element:
    """`<VerbNoun releaseID>` with its ApplicationArea and an empty verb in DataArea;
    returns the root (the caller appends the nouns to `root[1]`, the DataArea)."""
    # ConfirmBOD is the one verb document without a releaseID attribute.
    attributes = {} if verb_noun == "ConfirmBOD" else {"releaseID": RELEASE_ID}
    root = ET.Element(tag(verb_noun), attributes)
    area = sub(root, "ApplicationArea")
    sub(sub(area, "Sender"), "LogicalID", SENDER)
    sub(area, "CreationDateTime", format_utc(created))
    sub(area, "BODID", bod_id)
    data = sub(root, "DataArea")
    sub(data, verb)
    return root


def serialize(root: ET.Element) -> bytes:
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def _quantity(parent: ET.Element, quantity: Decimal, uom: str) -> None:
    element = sub(parent, "Quantity")
    sub(element, "QuantityString", format_decimal(quantity))
    sub(element, "DataType", "decimal")
    sub(element, "UnitOfMeasure", uom)


def _value(parent: ET.Element, text: str, data_type: str, uom: str | None = None) -> None:
    element = sub(parent, "Value")
    sub(element, "ValueString", text)
    sub(element, "DataType", data_type)
    if uom is not None:
        sub(element, "UnitOfMeasure", uom)


def _location(parent: ET.Element, unit: str) -> None:
    element = sub(parent, "StorageLocation")
    sub(element, "Location", unit)
    sub(element, "LocationType", "Equipment")


def definition(parent: ET.Element, material: MaterialDefinition) -> None:
    element = sub(parent, "MaterialDefinition")
    sub(element, "ID", material.id)
    if material.description:
        sub(element, "Description", material.description)
    properties: list[tuple[str, str, str, str | None]] = [
        ("BaseUnitOfMeasure", material.base_uom, "string", None),
        ("DefaultLotStatus", str(material.default_lot_status), "string", None),
    ]
    if material.density_kg_per_l is not None:
        density = format_decimal(material.density_kg_per_l)
        properties.append(("Density", density, "decimal", "kg/L"))
    for name, text, data_type, uom in properties:
        prop = sub(element, "MaterialDefinitionProperty")
        sub(prop, "ID", name)
        _value(prop, text, data_type, uom)
    if material.material_class:
        sub(element, "MaterialClassID", material.material_class)


def lot_element(parent: ET.Element, lot: Lot, held: Sequence[Balance], uom: str | None) -> None:
    """A MaterialLot: status, expiry, where it is held (one sublot per unit when more
    than one) and its total book quantity in `uom` (none when `uom` is None)."""
    element = sub(parent, "MaterialLot")
    sub(element, "ID", lot.id)
    sub(element, "MaterialDefinitionID", lot.material)
    sub(element, "Status", str(lot.status))
    dates = (("ExpirationDate", lot.expiry), ("RetestDate", lot.quality.retest))
    for name, day in dates:
        if day is not None:
            prop = sub(element, "MaterialLotProperty")
            sub(prop, "ID", name)
            _value(prop, day.isoformat(), "date")
    if lot.quality.certificate:
        prop = sub(element, "MaterialLotProperty")
        sub(prop, "ID", "CertificateOfAnalysis")
        _value(prop, lot.quality.certificate, "string")
    for lot_property in lot.quality.properties:
        prop = sub(element, "MaterialLotProperty")
        sub(prop, "ID", lot_property.name)
        _value(prop, lot_property.value, "string", lot_property.unit or None)
    if len(held) > 1:  # one sublot per unit holding part of the lot
        for balance in held:
            sublot = sub(element, "MaterialSubLot")
            sub(sublot, "ID", f"{lot.id}@{balance.unit}")
            _location(sublot, balance.unit)
            _quantity(sublot, balance.quantity, balance.uom)
            sub(sublot, "MaterialLotID", lot.id)
    elif held:
        _location(element, held[0].unit)
    if uom is not None:
        _quantity(element, sum((b.quantity for b in held), Decimal(0)), uom)


def material_information(
    materials: Iterable[MaterialDefinition],
    lots: Iterable[Lot],
    balances: Iterable[Balance],
    *,
    created: datetime,
    bod_id: str,
) -> bytes:
    """`ShowMaterialInformation`: every material definition and lot (with status, book
    quantity in the material's base unit, where it is held, expiry)."""
    root = document("ShowMaterialInformation", "Show", created, bod_id)
    info = sub(root[1], "MaterialInformation")
    sub(info, "ID", bod_id)
    sub(info, "PublishedDate", format_utc(created))
    by_id = {m.id: m for m in materials}
    for material in by_id.values():
        definition(info, material)
    held: dict[str, list[Balance]] = {}
    for balance in balances:
        if balance.quantity != 0:
            held.setdefault(balance.lot, []).append(balance)
    for lot in lots:
        found = by_id.get(lot.material)
        uom = found.base_uom if found is not None else ""
        lot_element(info, lot, sorted(held.get(lot.id, []), key=lambda b: b.unit), uom)
    return serialize(root)


def _use(movement: Movement, quantity: Decimal) -> str:
    if movement.kind is MovementKind.PRODUCTION:
        return "Produced" if quantity > 0 else "Consumed"
    if movement.kind in _CONSUMING or movement.details.get("consumed_by"):
        return "Consumed"
    return "Inventoried"


def _segment_data(parent: ET.Element, name: str, text: str, data_type: str = "string") -> None:
    element = sub(parent, "SegmentData")
    sub(element, "ID", name)
    _value(element, text, data_type)


def _movement(parent: ET.Element, movement: Movement) -> None:
    response = sub(parent, "OperationsResponse")
    sub(response, "ID", movement.id)
    sub(response, "StartTime", movement.timestamp)
    sub(response, "EndTime", movement.timestamp)
    production = movement.kind is MovementKind.PRODUCTION
    sub(response, "OperationsType", "Production" if production else "Inventory")
    segment = sub(response, "SegmentResponse")
    sub(segment, "ID", movement.id)
    if movement.reason:
        sub(segment, "Description", movement.reason)
    sub(segment, "PostingDate", movement.timestamp)
    sub(segment, "ProcessSegmentID", str(movement.kind))
    sub(segment, "SegmentState", "Completed")
    data = [
        ("Cursor", str(movement.seq), "long"),
        ("Kind", str(movement.kind), "string"),
        ("User", movement.user, "string"),
        ("Source", str(movement.source), "string"),
    ]
    ref = movement.details.get("ref")
    if isinstance(ref, str) and ref:
        data.append(("Reference", ref, "string"))
    if movement.reverses:
        data.append(("Reverses", movement.reverses, "string"))
    for name, text, data_type in data:
        _segment_data(segment, name, text, data_type)
    for n, (unit, lot, quantity) in enumerate(movement.legs(), start=1):
        actual = sub(segment, "MaterialActual")
        sub(actual, "ID", f"{movement.id}:{n}")
        sub(actual, "MaterialDefinitionID", movement.material)
        sub(actual, "MaterialLotID", lot)
        sub(actual, "MaterialUse", _use(movement, quantity))
        _location(actual, unit)
        _quantity(actual, quantity, movement.uom)


def operations_performance(
    movements: Sequence[Movement], *, created: datetime, bod_id: str
) -> bytes:
    """`ShowOperationsPerformance` of `movements` (at least one: B2MML has no empty
    performance; callers answer "nothing new" without a document)."""
    if not movements:
        raise ValueError("an OperationsPerformance needs at least one movement")
    root = document("ShowOperationsPerformance", "Show", created, bod_id)
    performance = sub(root[1], "OperationsPerformance")
    sub(performance, "ID", bod_id)
    first, last = movements[0].seq, movements[-1].seq
    sub(performance, "Description", f"invops movements, cursor {first} to {last}")
    sub(performance, "PublishedDate", format_utc(created))
    productions = {m.kind is MovementKind.PRODUCTION for m in movements}
    kind = "Mixed" if len(productions) > 1 else "Production" if True in productions else "Inventory"
    sub(performance, "OperationsType", kind)
    for movement in movements:
        _movement(performance, movement)
    return serialize(root)

"""B2MML documents ERP sends invops, and the answers.

Accepted: `SyncMaterialDefinition` and `ProcessMaterialDefinition` (master data:
ID, Description, MaterialClassID, and the properties `BaseUnitOfMeasure`,
`Density` (kg/L) and `DefaultLotStatus`), `SyncMaterialLot` and
`ProcessMaterialLot` (lots announced before they arrive: ID,
MaterialDefinitionID, Status, and MaterialLotProperty: `ExpirationDate`,
`RetestDate`, `CertificateOfAnalysis`, and every other property kept as a lot
property with its value and unit, e.g. `Assay`, `density` in kg/L). Stock is
booked by movements only, so a lot's Quantity and StorageLocation in such a
document are not applied. Anything invops would have to drop (a Delete action)
refuses the whole document: nothing is lost quietly.

`parse_inbound` raises `B2mmlError` with the path of the first problem
(`/ProcessMaterialLot/DataArea/MaterialLot[2]/Status`); the answer to an applied
document is `AcknowledgeMaterialDefinition` / `AcknowledgeMaterialLot` for a
Process, `ConfirmBOD` for a Sync.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal, NoReturn
from xml.parsers import expat

from inventory_core.b2mml.documents import (
    B2MML_NAMESPACE,
    definition,
    document,
    lot_element,
    serialize,
    sub,
    tag,
)
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.lot_quality import check_properties
from inventory_core.domain.model import (
    AnnouncedLot,
    Lot,
    LotId,
    LotProperty,
    LotQuality,
    LotStatus,
    MaterialDefinition,
    MaterialId,
)
from inventory_core.domain.units import UNITS

Verb = Literal["Sync", "Process"]
Noun = Literal["MaterialDefinition", "MaterialLot"]
ACCEPTED: tuple[tuple[Verb, Noun], ...] = (
    ("Sync", "MaterialDefinition"),
    ("Process", "MaterialDefinition"),
    ("Sync", "MaterialLot"),
    ("Process", "MaterialLot"),
)
_DENSITY_UNITS = frozenset({"kg/L", "kg/l", "B35", "g/mL", "g/ml", "g/cm3"})
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(Z|[+-]\d{2}:\d{2})?")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
NO_DTD = "DTDs and entity declarations are not accepted"
LotAnnouncement = AnnouncedLot
# MaterialLotProperty IDs invops reads as dates and the certificate; every other
# property ID is kept as a lot property (name, value, unit).
EXPIRATION_DATE = "ExpirationDate"
RETEST_DATE = "RetestDate"
CERTIFICATE = "CertificateOfAnalysis"


class B2mmlError(ValueError):
    """A document invops refuses; `path` locates the first problem."""

    def __init__(self, message: str, path: str = "/") -> None:
        super().__init__(f"{path}: {message}")
        self.message = message
        self.path = path


@dataclass(frozen=True, slots=True)
class MaterialUpdate:
    """One MaterialDefinition as ERP sent it; None: not given (keep what invops has)."""

    id: str
    description: str | None = None
    base_uom: str | None = None
    density_kg_per_l: Decimal | None = None
    default_lot_status: LotStatus | None = None
    material_class: str | None = None

    def applied_to(self, old: MaterialDefinition | None, path: str) -> MaterialDefinition:
        """The definition after this update (a new material needs its base unit)."""
        if old is None:
            if self.base_uom is None:
                raise B2mmlError(
                    f"material {self.id} is new: give its MaterialDefinitionProperty "
                    "BaseUnitOfMeasure",
                    path,
                )
            old = MaterialDefinition(MaterialId(self.id), "", self.base_uom)
        return MaterialDefinition(
            old.id,
            old.description if self.description is None else self.description,
            old.base_uom if self.base_uom is None else self.base_uom,
            old.density_kg_per_l if self.density_kg_per_l is None else self.density_kg_per_l,
            old.default_lot_status if self.default_lot_status is None else self.default_lot_status,
            old.material_class if self.material_class is None else self.material_class,
        )


@dataclass(frozen=True, slots=True)
class Inbound:
    """A parsed document: its verb and noun, sender's ids, and what it carries."""

    verb: Verb
    noun: Noun
    bod_id: str
    sender: str
    application_area: ET.Element
    materials: tuple[MaterialUpdate, ...] = ()
    lots: tuple[AnnouncedLot, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.verb}{self.noun}"

    def path(self, *steps: str) -> str:
        return "/" + "/".join((self.name, "DataArea", *steps))


def _local(element: ET.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return element.findall(tag(name))


def _text(element: ET.Element, name: str, path: str, *, required: bool = False) -> str | None:
    found = element.find(tag(name))
    text = None if found is None or found.text is None else found.text.strip()
    if required and not text:
        raise B2mmlError(f"{name} is required and must not be empty", f"{path}/{name}")
    return text or None


def _check_structure(root: ET.Element) -> tuple[Verb, Noun]:
    if not root.tag.startswith(f"{{{B2MML_NAMESPACE}}}"):
        raise B2mmlError(f"the root element is not in the B2MML namespace {B2MML_NAMESPACE}")
    name = _local(root)
    for verb, noun in ACCEPTED:
        if name == f"{verb}{noun}":
            break
    else:
        known = ", ".join(v + n for v, n in ACCEPTED)
        raise B2mmlError(f"invops accepts {known}; this is {name}", f"/{name}")
    if not root.get("releaseID"):
        raise B2mmlError("the releaseID attribute is required", f"/{name}/@releaseID")
    return verb, noun


def _forbid(*_: object) -> NoReturn:
    raise B2mmlError(NO_DTD)


def read_xml(body: bytes) -> ET.Element:
    """The document's root element. A DTD or entity declaration (billion laughs, external
    entities) is refused in any encoding: expat reads the document first with handlers
    that refuse them, before ElementTree builds the tree."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise B2mmlError(NO_DTD)
    check = expat.ParserCreate()
    check.StartDoctypeDeclHandler = _forbid
    check.EntityDeclHandler = _forbid
    check.UnparsedEntityDeclHandler = _forbid
    check.ExternalEntityRefHandler = _forbid
    try:
        check.Parse(body, True)
        return ET.fromstring(body)
    except expat.ExpatError as exc:
        where = f"line {exc.lineno}, column {exc.offset}"
        raise B2mmlError(f"not well-formed XML ({expat.ErrorString(exc.code)})", where) from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise B2mmlError(f"not well-formed XML ({exc})", f"line {line}, column {column}") from None
    except ValueError as exc:  # e.g. "multi-byte encodings are not supported"
        raise B2mmlError(f"cannot read the document ({exc}); send it as UTF-8") from None


def parse_inbound(body: bytes) -> Inbound:
    """The document in `body`, checked; raises B2mmlError at the first problem."""
    root = read_xml(body)
    verb, noun = _check_structure(root)
    name = f"{verb}{noun}"
    area = root.find(tag("ApplicationArea"))
    if area is None:
        raise B2mmlError("ApplicationArea is required", f"/{name}/ApplicationArea")
    created = _text(area, "CreationDateTime", f"/{name}/ApplicationArea", required=True)
    assert created is not None
    if _datetime(created) is None:  # the answer copies it: it must be an xsd:dateTime
        message = f"{created!r} is not a date and time (xsd:dateTime, e.g. 2026-12-03T08:00:00Z)"
        raise B2mmlError(message, f"/{name}/ApplicationArea/CreationDateTime")
    sender = area.find(tag("Sender"))
    data = root.find(tag("DataArea"))
    if data is None:
        raise B2mmlError("DataArea is required", f"/{name}/DataArea")
    action = data.find(tag(verb))
    if action is None:
        raise B2mmlError(f"{verb} is required", f"/{name}/DataArea/{verb}")
    for c, criteria in enumerate(_children(action, "ActionCriteria"), start=1):
        expressions = _children(criteria, "ActionExpression")
        for e, expression in enumerate(expressions, start=1):
            if expression.get("actionCode", "") == "Delete":
                which = f"[{e}]" if len(expressions) > 1 else ""
                raise B2mmlError(
                    "invops never deletes master data or lots (the audit trail keeps them); "
                    "change a lot's status instead",
                    f"/{name}/DataArea/{verb}/ActionCriteria[{c}]/ActionExpression{which}"
                    "/@actionCode",
                )
    nouns = _children(data, noun)
    if not nouns:
        raise B2mmlError(f"at least one {noun} is required", f"/{name}/DataArea/{noun}")
    inbound = Inbound(
        verb,
        noun,
        _text(area, "BODID", "") or "",
        (_text(sender, "LogicalID", "") or "") if sender is not None else "",
        area,
    )
    if noun == "MaterialDefinition":
        materials = tuple(
            _material(e, inbound.path(f"{noun}[{i}]")) for i, e in enumerate(nouns, start=1)
        )
        _no_duplicates([m.id for m in materials], inbound, noun)
        return Inbound(*_head(inbound), materials=materials)
    lots = tuple(_lot(e, inbound.path(f"{noun}[{i}]")) for i, e in enumerate(nouns, start=1))
    _no_duplicates([a.lot for a in lots], inbound, noun)
    return Inbound(*_head(inbound), lots=lots)


def _head(inbound: Inbound) -> tuple[Verb, Noun, str, str, ET.Element]:
    return inbound.verb, inbound.noun, inbound.bod_id, inbound.sender, inbound.application_area


def _no_duplicates(ids: Sequence[str], inbound: Inbound, noun: str) -> None:
    seen: set[str] = set()
    for i, identifier in enumerate(ids, start=1):
        if identifier in seen:
            raise B2mmlError(f"{identifier} is given twice", inbound.path(f"{noun}[{i}]", "ID"))
        seen.add(identifier)


def _properties(
    element: ET.Element, name: str, path: str
) -> list[tuple[str, str, str | None, str]]:
    """(ID, first Value's ValueString, its UnitOfMeasure, path) of each property."""
    found: list[tuple[str, str, str | None, str]] = []
    for i, prop in enumerate(_children(element, name), start=1):
        where = f"{path}/{name}[{i}]"
        prop_id = _text(prop, "ID", where, required=True)
        value = prop.find(tag("Value"))
        if value is None:
            raise B2mmlError(f"property {prop_id} has no Value", f"{where}/Value")
        text = _text(value, "ValueString", f"{where}/Value", required=True)
        assert prop_id is not None and text is not None
        found.append((prop_id, text, _text(value, "UnitOfMeasure", ""), f"{where}/Value"))
    return found


def _status(text: str, path: str) -> LotStatus:
    try:
        return LotStatus(text.lower())
    except ValueError:
        known = ", ".join(s.value for s in LotStatus)
        raise B2mmlError(f"lot status {text!r} is not one of {known}", path) from None


def _material(element: ET.Element, path: str) -> MaterialUpdate:
    material_id = _text(element, "ID", path, required=True)
    assert material_id is not None
    base_uom: str | None = None
    density: Decimal | None = None
    status: LotStatus | None = None
    for prop_id, text, uom, where in _properties(element, "MaterialDefinitionProperty", path):
        if prop_id == "BaseUnitOfMeasure":
            if text not in UNITS:
                known = ", ".join(UNITS)
                raise B2mmlError(f"unit {text!r} is not one of {known}", f"{where}/ValueString")
            base_uom = text
        elif prop_id == "Density":
            if uom is not None and uom not in _DENSITY_UNITS:
                raise B2mmlError(f"density unit {uom!r}: give it in kg/L", f"{where}/UnitOfMeasure")
            density = _positive(text, f"{where}/ValueString")
        elif prop_id == "DefaultLotStatus":
            status = _status(text, f"{where}/ValueString")
        else:
            raise B2mmlError(
                f"material property {prop_id!r} is not kept by invops (it keeps "
                "BaseUnitOfMeasure, Density, DefaultLotStatus)",
                where.removesuffix("/Value") + "/ID",
            )
    return MaterialUpdate(
        material_id,
        _text(element, "Description", path),
        base_uom,
        density,
        status,
        _text(element, "MaterialClassID", path),
    )


def _positive(text: str, path: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise B2mmlError(f"{text!r} is not a number", path) from None
    if not _DECIMAL.fullmatch(text) or number <= 0:  # NaN, Infinity, 0_9 are no xsd:decimal
        raise B2mmlError(f"{text!r} must be a positive number (xsd:decimal, e.g. 0.95)", path)
    return number


def _datetime(text: str) -> datetime | None:
    """An xsd:dateTime (`2026-12-03T08:00:00Z`, with an offset or none), else None."""
    if not _DATETIME.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _date(text: str) -> date | None:
    """An xsd:date or the date of an xsd:dateTime, else None."""
    if _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return None
    moment = _datetime(text)
    return None if moment is None else moment.date()


def _lot(element: ET.Element, path: str) -> AnnouncedLot:
    lot_id = _text(element, "ID", path, required=True)
    material = _text(element, "MaterialDefinitionID", path, required=True)
    assert lot_id is not None and material is not None
    status_text = _text(element, "Status", path)
    status = None if status_text is None else _status(status_text, f"{path}/Status")
    expiry: date | None = None
    retest: date | None = None
    certificate = ""
    properties: list[LotProperty] = []
    for prop_id, text, uom, where in _properties(element, "MaterialLotProperty", path):
        if prop_id in (EXPIRATION_DATE, RETEST_DATE):
            day = _date(text)
            if day is None:
                message = f"{text!r} is not a date (YYYY-MM-DD)"
                raise B2mmlError(message, f"{where}/ValueString")
            if prop_id == EXPIRATION_DATE:
                expiry = day
            else:
                retest = day
        elif prop_id == CERTIFICATE:
            certificate = text
        else:
            properties.append(LotProperty(prop_id, text, uom or ""))
    quality = LotQuality(tuple(properties), retest, certificate)
    try:
        check_properties(quality.properties)
    except InventoryError as exc:
        raise B2mmlError(str(exc), f"{path}/MaterialLotProperty") from None
    return AnnouncedLot(
        LotId(lot_id), MaterialId(material), status, expiry,
        None if quality.is_empty() else quality,
    )  # fmt: skip


def _original_area(parent: ET.Element, inbound: Inbound) -> None:
    original = sub(parent, "OriginalApplicationArea")
    original.extend(list(inbound.application_area))


def _accepted(verb_element: ET.Element, inbound: Inbound, held: Sequence[str]) -> None:
    _original_area(verb_element, inbound)
    criteria = sub(verb_element, "ResponseCriteria")
    sub(criteria, "ResponseExpression", "Accepted", actionCode="Accepted")
    if held:  # accepted, but (in part) not applied until it is signed
        status = sub(criteria, "ChangeStatus")
        sub(status, "Code", "Held")
        sub(
            status,
            "Description",
            f"held for electronic signatures, not applied until signed: {', '.join(held)}",
        )


def acknowledge(
    inbound: Inbound,
    *,
    materials: Sequence[MaterialDefinition] = (),
    lots: Sequence[Lot] = (),
    held: Sequence[str] = (),
    created: datetime,
    bod_id: str,
) -> bytes:
    """The answer to an applied document: for a Process, `Acknowledge<Noun>` with the
    nouns as invops now holds them; for a Sync, `ConfirmBOD`. `held`: the `request:` ids
    of what signature policies hold (ResponseCriteria/ChangeStatus, code `Held`)."""
    if inbound.verb == "Sync":
        root = document("ConfirmBOD", "Confirm", created, bod_id)
        _accepted(root[1][0], inbound, held)
        bod = sub(root[1], "BOD")
        _original_area(bod, inbound)
        count = (len(inbound.materials) or len(inbound.lots)) if held else len(materials or lots)
        done = f"accepted, held for electronic signatures: {', '.join(held)}" if held else "applied"
        sub(bod, "Description", f"{inbound.name} {inbound.bod_id}: {count} {inbound.noun} {done}")
        return serialize(root)
    root = document(f"Acknowledge{inbound.noun}", "Acknowledge", created, bod_id)
    _accepted(root[1][0], inbound, held)
    for material in materials:
        definition(root[1], material)
    for lot in lots:
        lot_element(root[1], lot, (), None)
    return serialize(root)

"""B2MML V0700 documents without a ledger: every document invops writes validates against
MESA's XSDs (skipped without them) and says what it should; `parse_inbound` accepts the
four documents ERP sends and refuses anything else with the path of the first problem;
MaterialUpdate merges into what invops holds; SchemaValidator refuses what the XSDs do."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory_core.b2mml import (
    B2MML_NAMESPACE,
    RELEASE_ID,
    B2mmlError,
    Inbound,
    MaterialUpdate,
    SchemaValidator,
    acknowledge,
    material_information,
    operations_performance,
    parse_inbound,
)
from inventory_core.domain.model import (
    AnnouncedLot,
    Balance,
    Lot,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    Movement,
    MovementId,
    MovementKind,
    Source,
    StorageUnitId,
)
from inventory_core.domain.units import UNITS
from tests.standards import assert_valid_b2mml, b2mml_validator

NS = {"b": B2MML_NAMESPACE}
K = MovementKind
CREATED = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
STAMP = "2026-12-03T07:59:00.000000Z"


@pytest.fixture(scope="session")
def validator() -> SchemaValidator:
    """The official XSDs (skips the test without them); session-scoped, so hypothesis
    tests may use it."""
    return b2mml_validator()


def xml(body: bytes) -> ET.Element:
    return ET.fromstring(body)


def local(element: ET.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def text(element: ET.Element, path: str) -> str | None:
    found = element.find(path, NS)
    return None if found is None else found.text


def texts(element: ET.Element, path: str) -> list[str | None]:
    return [e.text for e in element.findall(path, NS)]


def quantity(element: ET.Element) -> tuple[Decimal, str | None, str | None]:
    """(QuantityString, UnitOfMeasure, DataType) of element's own Quantity."""
    found = element.find("b:Quantity", NS)
    assert found is not None, ET.tostring(element)
    return (
        Decimal(text(found, "b:QuantityString") or "nan"),
        text(found, "b:UnitOfMeasure"),
        text(found, "b:DataType"),
    )


def location(element: ET.Element) -> tuple[str | None, str | None] | None:
    found = element.find("b:StorageLocation", NS)
    if found is None:
        return None
    return text(found, "b:Location"), text(found, "b:LocationType")


def properties(element: ET.Element, name: str) -> dict[str, tuple[str | None, ...]]:
    """Property ID -> (ValueString, DataType, UnitOfMeasure)."""
    found: dict[str, tuple[str | None, ...]] = {}
    for prop in element.findall(f"b:{name}", NS):
        key = text(prop, "b:ID")
        assert key is not None and key not in found
        value = prop.find("b:Value", NS)
        assert value is not None
        found[key] = (
            text(value, "b:ValueString"),
            text(value, "b:DataType"),
            text(value, "b:UnitOfMeasure"),
        )
    return found


# -- inbound documents, as ERP writes them (element order of the V0700 sequences) -------

SENDER = "SAP-ERP"
AREA = (
    f"<ApplicationArea><Sender><LogicalID>{SENDER}</LogicalID></Sender>"
    "<CreationDateTime>2026-12-03T08:00:00Z</CreationDateTime><BODID>BOD-1</BODID>"
    "</ApplicationArea>"
)


def document(
    name: str,
    nouns: str,
    *,
    area: str = AREA,
    verb: str | None = None,
    attributes: str = f'releaseID="{RELEASE_ID}"',
    namespace: str = B2MML_NAMESPACE,
) -> bytes:
    """`<name>` with its ApplicationArea and DataArea (the verb, then `nouns`)."""
    if verb is None:
        verb = "<Sync/>" if name.startswith("Sync") else "<Process/>"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{name} xmlns="{namespace}" {attributes}>'
        f"{area}<DataArea>{verb}{nouns}</DataArea></{name}>"
    ).encode()


def prop(element: str, prop_id: str, value: str, data_type: str = "string", uom: str = "") -> str:
    unit = f"<UnitOfMeasure>{escape(uom)}</UnitOfMeasure>" if uom else ""
    return (
        f"<{element}><ID>{escape(prop_id)}</ID><Value><ValueString>{escape(value)}</ValueString>"
        f"<DataType>{data_type}</DataType>{unit}</Value></{element}>"
    )


def lot(
    lot_id: str,
    material: str = "OIL",
    status: str | None = None,
    expiry: str | None = None,
    *,
    more: Sequence[str] = (),
    tail: str = "",
) -> str:
    """A MaterialLot: ID, MaterialDefinitionID, Status, properties, then `tail`
    (StorageLocation, Quantity)."""
    parts = [f"<ID>{escape(lot_id)}</ID>", f"<MaterialDefinitionID>{escape(material)}"]
    parts[-1] += "</MaterialDefinitionID>"
    if status is not None:
        parts.append(f"<Status>{escape(status)}</Status>")
    if expiry is not None:
        parts.append(prop("MaterialLotProperty", "ExpirationDate", expiry, "date"))
    parts.extend(more)
    return f"<MaterialLot>{''.join(parts)}{tail}</MaterialLot>"


def material(
    material_id: str,
    description: str | None = None,
    *,
    base: str | None = None,
    density: str | None = None,
    density_uom: str = "kg/L",
    status: str | None = None,
    more: Sequence[str] = (),
    material_class: str | None = None,
) -> str:
    parts = [f"<ID>{escape(material_id)}</ID>"]
    if description is not None:
        parts.append(f"<Description>{escape(description)}</Description>")
    if base is not None:
        parts.append(prop("MaterialDefinitionProperty", "BaseUnitOfMeasure", base))
    if density is not None:
        parts.append(prop("MaterialDefinitionProperty", "Density", density, "decimal", density_uom))
    if status is not None:
        parts.append(prop("MaterialDefinitionProperty", "DefaultLotStatus", status))
    parts.extend(more)
    if material_class is not None:
        parts.append(f"<MaterialClassID>{escape(material_class)}</MaterialClassID>")
    return f"<MaterialDefinition>{''.join(parts)}</MaterialDefinition>"


LOTS = lot("L1", "OIL", "quarantine", "2027-06-30") + lot("L2", "SUGAR") + lot("L3", "OIL", "Hold")
MATERIALS = material("OIL", "Rapeseed oil", base="kg", density="0.92", status="released") + (
    material("SUGAR", material_class="SWEETENERS")
)
GOOD = {
    "ProcessMaterialLot": document("ProcessMaterialLot", LOTS),
    "SyncMaterialLot": document("SyncMaterialLot", LOTS),
    "ProcessMaterialDefinition": document("ProcessMaterialDefinition", MATERIALS),
    "SyncMaterialDefinition": document("SyncMaterialDefinition", MATERIALS),
}
EXPECTED_LOTS = (
    AnnouncedLot(LotId("L1"), MaterialId("OIL"), LotStatus.QUARANTINE, date(2027, 6, 30)),
    AnnouncedLot(LotId("L2"), MaterialId("SUGAR"), None, None),
    AnnouncedLot(LotId("L3"), MaterialId("OIL"), LotStatus.HOLD, None),
)
EXPECTED_MATERIALS = (
    MaterialUpdate("OIL", "Rapeseed oil", "kg", Decimal("0.92"), LotStatus.RELEASED, None),
    MaterialUpdate("SUGAR", None, None, None, None, "SWEETENERS"),
)


def refused(body: bytes) -> B2mmlError:
    with pytest.raises(B2mmlError) as caught:
        parse_inbound(body)
    return caught.value


# -- documents invops writes: ShowMaterialInformation ---------------------------------

OIL = MaterialDefinition(
    MaterialId("OIL"), "Rapeseed oil", "kg", Decimal("0.92"), LotStatus.RELEASED, "OILS"
)
WATER = MaterialDefinition(MaterialId("WATER"), "", "L")  # no density, class, description
INFO_LOTS = (
    Lot(LotId("NOWHERE"), OIL.id, LotStatus.QUARANTINE, STAMP),  # held in no unit
    Lot(LotId("ONE"), OIL.id, LotStatus.RELEASED, STAMP, date(2027, 6, 30)),
    Lot(LotId("TWO"), OIL.id, LotStatus.HOLD, STAMP, date(2028, 1, 31)),
    Lot(LotId("THREE"), WATER.id, LotStatus.REJECTED, STAMP),
    Lot(LotId("EMPTIED"), WATER.id, LotStatus.EXPIRED, STAMP),  # only zero balances left
)


def balance(unit: str, lot_id: str, material_id: MaterialId, qty: str, uom: str) -> Balance:
    return Balance(StorageUnitId(unit), LotId(lot_id), material_id, Decimal(qty), uom)


INFO_BALANCES = (
    balance("TK-1", "ONE", OIL.id, "120.5", "kg"),
    balance("TK-2", "TWO", OIL.id, "30", "kg"),  # listed out of unit order on purpose
    balance("TK-1", "TWO", OIL.id, "70.25", "kg"),
    balance("TK-3", "TWO", OIL.id, "0", "kg"),  # an emptied unit is no sublot
    balance("IBC-9", "THREE", WATER.id, "5", "L"),
    balance("IBC-1", "THREE", WATER.id, "1", "L"),
    balance("IBC-2", "THREE", WATER.id, "0.000001", "L"),
    balance("IBC-1", "EMPTIED", WATER.id, "0", "L"),
)


@pytest.fixture(scope="module")
def info() -> bytes:
    return material_information(
        [OIL, WATER], INFO_LOTS, INFO_BALANCES, created=CREATED, bod_id="invops-info-1"
    )


def info_lots(body: bytes) -> dict[str, ET.Element]:
    found = xml(body).findall("b:DataArea/b:MaterialInformation/b:MaterialLot", NS)
    return {text(e, "b:ID") or "": e for e in found}


def test_material_information_validates(info: bytes) -> None:
    assert_valid_b2mml(info)


def test_material_information_without_materials_or_lots_validates() -> None:
    assert_valid_b2mml(material_information([], [], [], created=CREATED, bod_id="empty"))


def test_material_information_head_names_invops_and_the_time() -> None:
    root = xml(material_information([], [], [], created=CREATED, bod_id="B-7"))
    assert root.tag == f"{{{B2MML_NAMESPACE}}}ShowMaterialInformation"
    assert root.get("releaseID") == RELEASE_ID
    assert text(root, "b:ApplicationArea/b:Sender/b:LogicalID") == "invops"
    assert text(root, "b:ApplicationArea/b:BODID") == "B-7"
    assert text(root, "b:ApplicationArea/b:CreationDateTime") == "2026-12-03T08:00:00.000000Z"
    assert [local(e) for e in root.find("b:DataArea", NS) or []] == ["Show", "MaterialInformation"]
    assert text(root, "b:DataArea/b:MaterialInformation/b:ID") == "B-7"
    info = "b:DataArea/b:MaterialInformation/b:PublishedDate"
    assert text(root, info) == "2026-12-03T08:00:00.000000Z"


def test_material_information_materials_with_and_without_density_and_class(info: bytes) -> None:
    found = xml(info).findall("b:DataArea/b:MaterialInformation/b:MaterialDefinition", NS)
    oil, water = found
    assert text(oil, "b:ID") == "OIL" and text(oil, "b:Description") == "Rapeseed oil"
    assert properties(oil, "MaterialDefinitionProperty") == {
        "BaseUnitOfMeasure": ("kg", "string", None),
        "DefaultLotStatus": ("released", "string", None),
        "Density": ("0.92", "decimal", "kg/L"),
    }
    assert texts(oil, "b:MaterialClassID") == ["OILS"]
    assert text(water, "b:ID") == "WATER"
    assert water.find("b:Description", NS) is None  # an empty description is left out
    assert properties(water, "MaterialDefinitionProperty") == {
        "BaseUnitOfMeasure": ("L", "string", None),
        "DefaultLotStatus": ("quarantine", "string", None),
    }
    assert water.find("b:MaterialClassID", NS) is None


def test_material_information_lot_held_nowhere_has_zero_and_no_location(info: bytes) -> None:
    nowhere = info_lots(info)["NOWHERE"]
    assert text(nowhere, "b:MaterialDefinitionID") == "OIL"
    assert text(nowhere, "b:Status") == "quarantine"
    assert nowhere.find("b:MaterialLotProperty", NS) is None  # no expiry
    assert location(nowhere) is None and nowhere.find("b:MaterialSubLot", NS) is None
    assert quantity(nowhere) == (Decimal(0), "kg", "decimal")


def test_material_information_lot_held_in_one_unit_has_its_location(info: bytes) -> None:
    one = info_lots(info)["ONE"]
    assert text(one, "b:Status") == "released"
    assert properties(one, "MaterialLotProperty") == {
        "ExpirationDate": ("2027-06-30", "date", None)
    }
    assert one.find("b:MaterialSubLot", NS) is None
    assert location(one) == ("TK-1", "Equipment")
    assert quantity(one) == (Decimal("120.5"), "kg", "decimal")


def test_material_information_lot_held_in_several_units_has_one_sublot_each(
    info: bytes,
) -> None:
    lots = info_lots(info)
    two, three = lots["TWO"], lots["THREE"]
    assert location(two) is None and location(three) is None  # the sublots say where
    sublots = two.findall("b:MaterialSubLot", NS)
    assert [text(s, "b:ID") for s in sublots] == ["TWO@TK-1", "TWO@TK-2"]  # by unit
    assert [location(s) for s in sublots] == [("TK-1", "Equipment"), ("TK-2", "Equipment")]
    assert [quantity(s) for s in sublots] == [
        (Decimal("70.25"), "kg", "decimal"),
        (Decimal("30"), "kg", "decimal"),
    ]
    assert texts(two, "b:MaterialSubLot/b:MaterialLotID") == ["TWO", "TWO"]
    assert quantity(two) == (Decimal("100.25"), "kg", "decimal")
    assert properties(two, "MaterialLotProperty")["ExpirationDate"][0] == "2028-01-31"
    units = [location(s) for s in three.findall("b:MaterialSubLot", NS)]
    assert units == [("IBC-1", "Equipment"), ("IBC-2", "Equipment"), ("IBC-9", "Equipment")]
    assert quantity(three) == (Decimal("6.000001"), "L", "decimal")
    emptied = lots["EMPTIED"]
    assert location(emptied) is None and emptied.find("b:MaterialSubLot", NS) is None
    assert quantity(emptied) == (Decimal(0), "L", "decimal")


@st.composite
def holdings(draw: st.DrawFn) -> tuple[list[Lot], list[Balance]]:
    ids = draw(st.lists(st.sampled_from(["A", "B", "C", "D"]), unique=True, max_size=4))
    lots = [Lot(LotId(i), OIL.id, draw(st.sampled_from(LotStatus)), STAMP) for i in ids]
    units = draw(st.lists(st.sampled_from(["U1", "U2", "U3"]), unique=True, max_size=3))
    amounts = st.decimals(min_value=-50, max_value=1000, places=3)
    balances = [balance(u, i, OIL.id, str(draw(amounts)), "kg") for i in ids for u in units]
    return lots, balances


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(holdings())
def test_material_information_sublots_add_up_for_any_holdings(
    validator: SchemaValidator, held: tuple[list[Lot], list[Balance]]
) -> None:
    lots, balances = held
    body = material_information([OIL], lots, balances, created=CREATED, bod_id="h")
    validator.validate(body)
    found = info_lots(body)
    assert list(found) == [lot.id for lot in lots]
    for lot_id, element in found.items():
        nonzero = {b.unit: b.quantity for b in balances if b.lot == lot_id and b.quantity != 0}
        sublots = element.findall("b:MaterialSubLot", NS)
        if len(nonzero) > 1:
            shown = {(location(s) or ("", ""))[0]: quantity(s)[0] for s in sublots}
            assert shown == nonzero
            assert location(element) is None
        else:
            assert sublots == []
            assert location(element) == ((next(iter(nonzero)), "Equipment") if nonzero else None)
        assert quantity(element) == (sum(nonzero.values(), Decimal(0)), "kg", "decimal")


# -- documents invops writes: ShowOperationsPerformance --------------------------------


def movement(
    seq: int,
    kind: MovementKind,
    from_unit: str | None,
    to_unit: str | None,
    qty: str,
    *,
    lot_id: str = "L1",
    reason: str = "",
    reverses: str | None = None,
    details: dict[str, object] | None = None,
    source: Source = Source.CLI,
) -> Movement:
    return Movement(
        seq, MovementId(f"mv-{seq}"), kind, OIL.id, LotId(lot_id),
        None if from_unit is None else StorageUnitId(from_unit),
        None if to_unit is None else StorageUnitId(to_unit),
        Decimal(qty), "kg", Decimal(qty), "kg", f"2026-12-03T07:{seq:02d}:00.000000Z",
        "op-1", source, reason, f"key-{seq}",
        None if reverses is None else MovementId(reverses), "writer-a", details or {},
    )  # fmt: skip


EVERY_KIND = (
    movement(3, K.RECEIPT, None, "TK-1", "100", details={"ref": "DN-4711"}),
    movement(4, K.TRANSFER, "TK-1", "TK-2", "30"),
    movement(5, K.ADJUSTMENT, None, "TK-1", "-2.5", reason="spillage <& cleanup>"),
    movement(6, K.ISSUE, "TK-2", None, "10", source=Source.ERP),
    movement(7, K.SCRAP, "TK-1", None, "1", reason="contaminated"),
    movement(8, K.PRODUCTION, None, "TK-2", "20", lot_id="P1"),
    movement(9, K.PRODUCTION, "TK-1", None, "20", details={"consumed_by": "P1"}),
    movement(10, K.COUNT, None, "TK-1", "-1.5"),
    movement(11, K.LOT_STATUS, None, None, "0", reason="released by QA"),
    movement(12, K.REVERSAL, "TK-2", "TK-1", "30", reverses="mv-4", reason="wrong tank"),
    movement(13, K.BLEND, "TK-2", None, "5", details={"blend": "BL-1"}),
    movement(14, K.BLEND, None, "TK-2", "5", lot_id="BL-1"),
)
# (kind, [(StorageLocation, signed quantity, MaterialUse)]) per movement
EXPECTED_ACTUALS = {
    "mv-3": [("TK-1", Decimal(100), "Inventoried")],
    "mv-4": [("TK-1", Decimal(-30), "Inventoried"), ("TK-2", Decimal(30), "Inventoried")],
    "mv-5": [("TK-1", Decimal("-2.5"), "Inventoried")],
    "mv-6": [("TK-2", Decimal(-10), "Consumed")],
    "mv-7": [("TK-1", Decimal(-1), "Consumed")],
    "mv-8": [("TK-2", Decimal(20), "Produced")],
    "mv-9": [("TK-1", Decimal(-20), "Consumed")],
    "mv-10": [("TK-1", Decimal("-1.5"), "Inventoried")],
    "mv-11": [],
    "mv-12": [("TK-2", Decimal(-30), "Inventoried"), ("TK-1", Decimal(30), "Inventoried")],
    "mv-13": [("TK-2", Decimal(-5), "Inventoried")],
    "mv-14": [("TK-2", Decimal(5), "Inventoried")],
}


@pytest.fixture(scope="module")
def performance() -> bytes:
    return operations_performance(EVERY_KIND, created=CREATED, bod_id="invops-perf-1")


def responses(body: bytes) -> list[ET.Element]:
    return xml(body).findall("b:DataArea/b:OperationsPerformance/b:OperationsResponse", NS)


def segment_data(segment: ET.Element) -> dict[str, tuple[str | None, str | None]]:
    found = {}
    for data in segment.findall("b:SegmentData", NS):
        found[text(data, "b:ID") or ""] = (
            text(data, "b:Value/b:ValueString"),
            text(data, "b:Value/b:DataType"),
        )
    return found


def test_operations_performance_of_every_kind_validates(performance: bytes) -> None:
    assert_valid_b2mml(performance)


@pytest.mark.parametrize("kind", [k for k in MovementKind])
def test_operations_performance_of_one_movement_of_each_kind_validates(kind: K) -> None:
    one = [m for m in EVERY_KIND if m.kind is kind][:1]
    assert one, f"EVERY_KIND has no {kind}"
    assert_valid_b2mml(operations_performance(one, created=CREATED, bod_id="one"))


def test_operations_performance_head_says_cursor_range_and_mixed_type(
    performance: bytes,
) -> None:
    root = xml(performance)
    assert root.tag == f"{{{B2MML_NAMESPACE}}}ShowOperationsPerformance"
    assert root.get("releaseID") == RELEASE_ID
    perf = root.find("b:DataArea/b:OperationsPerformance", NS)
    assert perf is not None
    assert text(perf, "b:ID") == "invops-perf-1"
    assert text(perf, "b:Description") == "invops movements, cursor 3 to 14"
    assert text(perf, "b:OperationsType") == "Mixed"


def test_operations_performance_has_one_response_per_movement_in_order(
    performance: bytes,
) -> None:
    found = responses(performance)
    assert [text(r, "b:ID") for r in found] == [m.id for m in EVERY_KIND]
    for response, moved in zip(found, EVERY_KIND, strict=True):
        production = moved.kind is K.PRODUCTION
        assert text(response, "b:OperationsType") == ("Production" if production else "Inventory")
        assert text(response, "b:StartTime") == text(response, "b:EndTime") == moved.timestamp
        (segment,) = response.findall("b:SegmentResponse", NS)
        assert text(segment, "b:ID") == moved.id
        assert text(segment, "b:ProcessSegmentID") == str(moved.kind)
        assert text(segment, "b:PostingDate") == moved.timestamp
        assert text(segment, "b:SegmentState") == "Completed"
        assert text(segment, "b:Description") == (moved.reason or None)


def test_operations_performance_segment_data_carries_cursor_and_origin(
    performance: bytes,
) -> None:
    by_id = {text(r, "b:ID"): r.find("b:SegmentResponse", NS) for r in responses(performance)}
    for moved in EVERY_KIND:
        segment = by_id[moved.id]
        assert segment is not None
        data = segment_data(segment)
        expected = {
            "Cursor": (str(moved.seq), "long"),
            "Kind": (str(moved.kind), "string"),
            "User": ("op-1", "string"),
            "Source": (str(moved.source), "string"),
        }
        if moved.details.get("ref"):
            expected["Reference"] = ("DN-4711", "string")
        if moved.reverses:
            expected["Reverses"] = (moved.reverses, "string")
        assert data == expected, moved.id
    last = by_id["mv-14"]
    assert last is not None and segment_data(last)["Cursor"] == ("14", "long")


def test_operations_performance_material_actuals_are_signed_per_leg(performance: bytes) -> None:
    for response in responses(performance):
        movement_id = text(response, "b:ID")
        assert movement_id is not None
        moved = next(m for m in EVERY_KIND if m.id == movement_id)
        actuals = response.findall("b:SegmentResponse/b:MaterialActual", NS)
        shown = [
            ((location(a) or ("", ""))[0], quantity(a)[0], text(a, "b:MaterialUse"))
            for a in actuals
        ]
        assert shown == EXPECTED_ACTUALS[movement_id], movement_id
        n = len(actuals)
        assert [text(a, "b:ID") for a in actuals] == [f"{movement_id}:{i}" for i in range(1, n + 1)]
        for actual in actuals:
            assert text(actual, "b:MaterialDefinitionID") == "OIL"
            assert text(actual, "b:MaterialLotID") == moved.lot
            assert location(actual) == ((location(actual) or ("", ""))[0], "Equipment")
            assert quantity(actual)[1:] == ("kg", "decimal")
        # the legs of a movement add up to its change of stock: 0 for a transfer
        total = sum((q for _, q, _ in shown), Decimal(0))
        assert total == sum((leg[2] for leg in moved.legs()), Decimal(0))


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ([K.RECEIPT, K.ISSUE], "Inventory"),
        ([K.PRODUCTION], "Production"),
        ([K.PRODUCTION, K.LOT_STATUS], "Mixed"),
    ],
)
def test_operations_performance_type_follows_the_movements(kinds: list[K], expected: str) -> None:
    chosen = [next(m for m in EVERY_KIND if m.kind is k) for k in kinds]
    body = operations_performance(chosen, created=CREATED, bod_id="t")
    assert text(xml(body), "b:DataArea/b:OperationsPerformance/b:OperationsType") == expected
    assert_valid_b2mml(body)


def test_operations_performance_of_no_movements_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one movement"):
        operations_performance([], created=CREATED, bod_id="none")


# -- parse_inbound accepts the four documents ----------------------------------------


@pytest.mark.parametrize("name", list(GOOD))
def test_the_inbound_documents_of_these_tests_are_valid_b2mml(name: str) -> None:
    assert_valid_b2mml(GOOD[name])


@pytest.mark.parametrize("name", list(GOOD))
def test_parse_inbound_accepts_each_document(name: str) -> None:
    inbound = parse_inbound(GOOD[name])
    assert inbound.name == name
    assert inbound.verb == ("Sync" if name.startswith("Sync") else "Process")
    assert inbound.noun == name.removeprefix(inbound.verb)
    assert (inbound.bod_id, inbound.sender) == ("BOD-1", SENDER)
    assert inbound.path("X[1]") == f"/{name}/DataArea/X[1]"
    if inbound.noun == "MaterialLot":
        assert inbound.lots == EXPECTED_LOTS and inbound.materials == ()
    else:
        assert inbound.materials == EXPECTED_MATERIALS and inbound.lots == ()


ACCEPTED_VARIANTS = {
    # a lot's Quantity and StorageLocation are ERP's view: read past, not applied
    "lot-with-location-and-quantity": (
        document(
            "ProcessMaterialLot",
            lot(
                "L1",
                "OIL",
                "released",
                tail=(
                    "<StorageLocation><Location>TK-1</Location><LocationType>Equipment"
                    "</LocationType></StorageLocation><Quantity><QuantityString>10</QuantityString>"
                    "<UnitOfMeasure>kg</UnitOfMeasure></Quantity>"
                ),
            ),
        ),
        (AnnouncedLot(LotId("L1"), MaterialId("OIL"), LotStatus.RELEASED),),
    ),
    "status-any-case": (
        document("SyncMaterialLot", lot("L1", "OIL", "REJECTED") + lot("L2", "OIL", "Expired")),
        (
            AnnouncedLot(LotId("L1"), MaterialId("OIL"), LotStatus.REJECTED),
            AnnouncedLot(LotId("L2"), MaterialId("OIL"), LotStatus.EXPIRED),
        ),
    ),
    "expiry-as-date-time": (
        document("ProcessMaterialLot", lot("L1", "OIL", None, "2027-01-31T23:59:59Z")),
        (AnnouncedLot(LotId("L1"), MaterialId("OIL"), None, date(2027, 1, 31)),),
    ),
    "action-add-and-change": (
        document(
            "SyncMaterialLot",
            lot("L1"),
            verb=(
                '<Sync><ActionCriteria><ActionExpression actionCode="Add"/></ActionCriteria>'
                '<ActionCriteria><ActionExpression actionCode="Change"/></ActionCriteria></Sync>'
            ),
        ),
        (AnnouncedLot(LotId("L1"), MaterialId("OIL")),),
    ),
    "no-sender-no-bodid": (
        document(
            "ProcessMaterialLot",
            lot("L1"),
            area="<ApplicationArea><CreationDateTime>2026-12-03T08:00:00Z</CreationDateTime>"
            "</ApplicationArea>",
        ),
        (AnnouncedLot(LotId("L1"), MaterialId("OIL")),),
    ),
    "xml-specials-in-ids": (
        document("ProcessMaterialLot", lot("L<1>&'\"", "O&L")),
        (AnnouncedLot(LotId("L<1>&'\""), MaterialId("O&L")),),
    ),
}


@pytest.mark.parametrize("case", list(ACCEPTED_VARIANTS))
def test_parse_inbound_accepts_valid_lot_variants(case: str) -> None:
    body, expected = ACCEPTED_VARIANTS[case]
    assert_valid_b2mml(body)
    assert parse_inbound(body).lots == expected


@pytest.mark.parametrize(
    ("density", "uom", "expected"),
    [("0.92", "kg/L", "0.92"), ("1.1", "", "1.1"), ("0.8", "g/mL", "0.8"), ("2", "B35", "2")],
)
def test_parse_inbound_reads_density_in_kg_per_l_spellings(
    density: str, uom: str, expected: str
) -> None:
    body = document("SyncMaterialDefinition", material("M", density=density, density_uom=uom))
    assert_valid_b2mml(body)
    assert parse_inbound(body).materials[0].density_kg_per_l == Decimal(expected)


def test_parse_inbound_reads_every_base_unit_invops_knows() -> None:
    body = document(
        "ProcessMaterialDefinition",
        "".join(material(f"M{i}", base=unit) for i, unit in enumerate(UNITS)),
    )
    assert [m.base_uom for m in parse_inbound(body).materials] == list(UNITS)


# -- parse_inbound refuses, with the exact path of the first problem --------------------

PL = "/ProcessMaterialLot/DataArea"
SL = "/SyncMaterialLot/DataArea"
PD = "/ProcessMaterialDefinition/DataArea"
SD = "/SyncMaterialDefinition/DataArea"
NO_AREA_TIME = "<ApplicationArea><Sender><LogicalID>X</LogicalID></Sender></ApplicationArea>"
TRUNCATED = GOOD["ProcessMaterialLot"][:-30]
LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n"
    + GOOD["ProcessMaterialLot"].split(b"\n", 1)[1].replace(b"L1", b"&lol9;")
)

REFUSALS = [
    pytest.param(LAUGHS, "/", "DTDs and entity declarations", id="billion-laughs"),
    pytest.param(
        b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>', "/", "DTDs",
        id="doctype-external",
    ),
    pytest.param(
        GOOD["SyncMaterialLot"].replace(b"<DataArea>", b'<!ENTITY e "x"><DataArea>'), "/",
        "entity declarations", id="entity-declaration",
    ),
    pytest.param(b"SKU;LOT;QTY\nOIL;L1;10\n", "line 1, column 3", "not well-formed XML",
                 id="not-xml"),
    pytest.param(b"", "line 1, column 0", "not well-formed XML", id="empty"),
    pytest.param(TRUNCATED, f"line 2, column {TRUNCATED.splitlines()[1].rindex(b'<')}",
                 "unclosed token", id="truncated"),
    pytest.param(
        document("ShowMaterialLot", lot("L1"), verb="<Show/>"), "/ShowMaterialLot",
        "invops accepts SyncMaterialDefinition, ProcessMaterialDefinition, SyncMaterialLot, "
        "ProcessMaterialLot; this is ShowMaterialLot", id="wrong-root",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1"), namespace="http://www.mesa.org/xml/B2MML-V0600"),
        "/", "not in the B2MML namespace", id="wrong-namespace",
    ),
    pytest.param(
        GOOD["ProcessMaterialLot"].replace(f' xmlns="{B2MML_NAMESPACE}"'.encode(), b""), "/",
        "not in the B2MML namespace", id="no-namespace",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1"), attributes=""), "/ProcessMaterialLot/@releaseID",
        "releaseID attribute is required", id="missing-releaseID",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M"), attributes='releaseID=""'),
        "/SyncMaterialDefinition/@releaseID", "releaseID", id="empty-releaseID",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1"), area=""), "/ProcessMaterialLot/ApplicationArea",
        "ApplicationArea is required", id="missing-ApplicationArea",
    ),
    pytest.param(
        document("SyncMaterialLot", lot("L1"), area=NO_AREA_TIME),
        "/SyncMaterialLot/ApplicationArea/CreationDateTime",
        "CreationDateTime is required and must not be empty", id="missing-CreationDateTime",
    ),
    pytest.param(
        document("SyncMaterialLot", lot("L1"), area=AREA.replace("2026-12-03T08:00:00Z", "  ")),
        "/SyncMaterialLot/ApplicationArea/CreationDateTime", "must not be empty",
        id="blank-CreationDateTime",
    ),
    pytest.param(
        b'<ProcessMaterialLot xmlns="%s" releaseID="7.0">%s</ProcessMaterialLot>'
        % (B2MML_NAMESPACE.encode(), AREA.encode()),
        "/ProcessMaterialLot/DataArea", "DataArea is required", id="missing-DataArea",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1"), verb=""), f"{PL}/Process", "Process is required",
        id="missing-verb",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M"), verb="<Process/>"), f"{SD}/Sync",
        "Sync is required", id="other-verb",
    ),
    pytest.param(
        document("ProcessMaterialLot", ""), f"{PL}/MaterialLot",
        "at least one MaterialLot is required", id="no-lots",
    ),
    pytest.param(
        document("SyncMaterialDefinition", lot("L1")), f"{SD}/MaterialDefinition",
        "at least one MaterialDefinition is required", id="no-materials-but-a-lot",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1") + lot("").replace("<ID></ID>", "")),
        f"{PL}/MaterialLot[2]/ID", "ID is required and must not be empty", id="missing-lot-ID",
    ),
    pytest.param(
        document("SyncMaterialLot", lot(" ")), f"{SL}/MaterialLot[1]/ID", "must not be empty",
        id="blank-lot-ID",
    ),
    pytest.param(
        document("ProcessMaterialLot", "<MaterialLot><ID>L1</ID></MaterialLot>"),
        f"{PL}/MaterialLot[1]/MaterialDefinitionID", "MaterialDefinitionID is required",
        id="missing-lot-material",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("A", base="kg") + "<MaterialDefinition>"
                 "<Description>no id</Description></MaterialDefinition>"),
        f"{SD}/MaterialDefinition[2]/ID", "ID is required", id="missing-material-ID",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1") + lot("L2") + lot("L1", "SUGAR")),
        f"{PL}/MaterialLot[3]/ID", "L1 is given twice", id="duplicate-lot-ID",
    ),
    pytest.param(
        document("ProcessMaterialDefinition", material("M") + material("M", "again")),
        f"{PD}/MaterialDefinition[2]/ID", "M is given twice", id="duplicate-material-ID",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1", status="released") + lot("L2", status="free")),
        f"{PL}/MaterialLot[2]/Status",
        "lot status 'free' is not one of quarantine, released, hold, rejected, expired",
        id="bad-lot-status",
    ),
    pytest.param(
        document("SyncMaterialLot", lot("L1", expiry="2027-01-01", more=[
            prop("MaterialLotProperty", "density", "heavy", "string", "kg/L")])),
        f"{SL}/MaterialLot[1]/MaterialLotProperty",
        "property density heavy kg/L: a positive number in g/cm3, g/ml, kg/l, kg/m3",
        id="bad-lot-density",
    ),
    pytest.param(
        document("SyncMaterialLot", lot("L1", more=[
            "<MaterialLotProperty><ID>ExpirationDate</ID></MaterialLotProperty>"])),
        f"{SL}/MaterialLot[1]/MaterialLotProperty[1]/Value",
        "property ExpirationDate has no Value", id="lot-property-without-value",
    ),
    pytest.param(
        document("SyncMaterialLot", lot("L1", more=["<MaterialLotProperty><ID>ExpirationDate"
                 "</ID><Value><DataType>date</DataType></Value></MaterialLotProperty>"])),
        f"{SL}/MaterialLot[1]/MaterialLotProperty[1]/Value/ValueString",
        "ValueString is required", id="lot-property-without-value-string",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1") + lot("L2", expiry="30.06.2027")),
        f"{PL}/MaterialLot[2]/MaterialLotProperty[1]/Value/ValueString",
        "'30.06.2027' is not a date (YYYY-MM-DD)", id="bad-date",
    ),
    pytest.param(
        document("ProcessMaterialLot", lot("L1", expiry="2027-02-30")),
        f"{PL}/MaterialLot[1]/MaterialLotProperty[1]/Value/ValueString", "is not a date",
        id="impossible-date",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M", base="kg", more=[
            prop("MaterialDefinitionProperty", "FlashPoint", "12", "decimal", "CEL")])),
        f"{SD}/MaterialDefinition[1]/MaterialDefinitionProperty[2]/ID",
        "material property 'FlashPoint' is not kept by invops (it keeps BaseUnitOfMeasure, "
        "Density, DefaultLotStatus)", id="unknown-material-property",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("A") + material("M", base="kg", density="x")),
        f"{SD}/MaterialDefinition[2]/MaterialDefinitionProperty[2]/Value/ValueString",
        "'x' is not a number", id="density-not-a-number",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M", density="0")),
        f"{SD}/MaterialDefinition[1]/MaterialDefinitionProperty[1]/Value/ValueString",
        "'0' must be a positive number", id="density-zero",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M", density="-0.8")),
        f"{SD}/MaterialDefinition[1]/MaterialDefinitionProperty[1]/Value/ValueString",
        "must be a positive number", id="density-negative",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M", density="NaN")),
        f"{SD}/MaterialDefinition[1]/MaterialDefinitionProperty[1]/Value/ValueString",
        "must be a positive number", id="density-nan",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M", density="Infinity")),
        f"{SD}/MaterialDefinition[1]/MaterialDefinitionProperty[1]/Value/ValueString",
        "must be a positive number", id="density-infinite",
    ),
    pytest.param(
        document("ProcessMaterialDefinition", material("M", density="7.5", density_uom="lb/gal")),
        f"{PD}/MaterialDefinition[1]/MaterialDefinitionProperty[1]/Value/UnitOfMeasure",
        "density unit 'lb/gal': give it in kg/L", id="density-unit",
    ),
    pytest.param(
        document("ProcessMaterialDefinition", material("M", base="furlong")),
        f"{PD}/MaterialDefinition[1]/MaterialDefinitionProperty[1]/Value/ValueString",
        "unit 'furlong' is not one of kg, g, t, L, mL, m3", id="bad-base-uom",
    ),
    pytest.param(
        document("ProcessMaterialDefinition", material("M", base="kg", status="approved")),
        f"{PD}/MaterialDefinition[1]/MaterialDefinitionProperty[2]/Value/ValueString",
        "lot status 'approved' is not one of", id="bad-default-lot-status",
    ),
    pytest.param(
        document("SyncMaterialLot", lot("L1"), verb=(
            '<Sync><ActionCriteria><ActionExpression actionCode="Delete"/></ActionCriteria></Sync>'
        )),
        f"{SL}/Sync/ActionCriteria[1]/ActionExpression/@actionCode",
        "invops never deletes master data or lots", id="action-delete",
    ),
    pytest.param(
        document("SyncMaterialDefinition", material("M"), verb=(
            '<Sync><ActionCriteria><ActionExpression actionCode="Change"/></ActionCriteria>'
            '<ActionCriteria><ActionExpression actionCode="Delete"/></ActionCriteria></Sync>'
        )),
        f"{SD}/Sync/ActionCriteria[2]/ActionExpression/@actionCode", "never deletes",
        id="action-delete-second",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "path", "message"), REFUSALS)
def test_parse_inbound_refuses_with_the_path_of_the_first_problem(
    body: bytes, path: str, message: str
) -> None:
    error = refused(body)
    assert error.path == path, error
    assert message in error.message, error
    assert str(error) == f"{error.path}: {error.message}"


def test_billion_laughs_is_refused_before_any_entity_is_expanded() -> None:
    assert LAUGHS.count(b"<!ENTITY") == 10  # 10**9 "lol"s, were it expanded
    assert refused(LAUGHS).message == "DTDs and entity declarations are not accepted"


def test_a_doctype_in_a_utf16_document_is_refused_too() -> None:
    body = GOOD["ProcessMaterialLot"].replace(b"UTF-8", b"UTF-16").decode()
    body = body.replace("?>\n", '?>\n<!DOCTYPE r [<!ENTITY e "&#76;&#76;">]>\n', 1)
    body = body.replace("<ID>L1</ID>", "<ID>&e;</ID>")
    error = refused(body.encode("utf-16"))
    assert error.path == "/" and "DTDs" in error.message


@pytest.mark.parametrize("encoding", ["Shift_JIS", "UTF-16-LE"])
def test_an_unsupported_declared_encoding_is_a_b2mml_refusal(encoding: str) -> None:
    body = GOOD["SyncMaterialLot"].replace(b"UTF-8", encoding.encode())
    if encoding == "UTF-16-LE":
        body = body.decode().encode("utf-16-le")
    refused(body)


def test_a_delete_in_the_second_expression_of_one_criteria_is_located_exactly() -> None:
    verb = (
        '<Sync><ActionCriteria><ActionExpression actionCode="Change"/>'
        '<ActionExpression actionCode="Delete"/></ActionCriteria></Sync>'
    )
    body = document("SyncMaterialLot", lot("L1"), verb=verb)
    assert_valid_b2mml(body)
    assert refused(body).path == f"{SL}/Sync/ActionCriteria[1]/ActionExpression[2]/@actionCode"


@pytest.mark.parametrize("value", ["2027-06-30junk", "2027-06-30T25:99:00"])
def test_an_expiry_with_trailing_garbage_is_refused(value: str) -> None:
    error = refused(document("ProcessMaterialLot", lot("L1", expiry=value)))
    assert error.path == f"{PL}/MaterialLot[1]/MaterialLotProperty[1]/Value/ValueString"


def test_a_density_with_underscores_is_refused() -> None:
    error = refused(document("SyncMaterialDefinition", material("M", density="0_9")))
    assert error.path.endswith("/MaterialDefinitionProperty[1]/Value/ValueString")


# -- MaterialUpdate.applied_to ---------------------------------------------------------

HELD = MaterialDefinition(
    MaterialId("OIL"), "Oil", "kg", Decimal("0.9"), LotStatus.RELEASED, "OILS"
)


def test_a_new_material_needs_its_base_unit() -> None:
    with pytest.raises(B2mmlError) as caught:
        MaterialUpdate("NEW", "New", None, Decimal(1)).applied_to(None, "/X/MaterialDefinition[3]")
    assert caught.value.path == "/X/MaterialDefinition[3]"
    assert "material NEW is new" in caught.value.message
    assert "BaseUnitOfMeasure" in caught.value.message


def test_a_new_material_takes_invops_defaults_for_what_is_not_given() -> None:
    made = MaterialUpdate("NEW", base_uom="L").applied_to(None, "/")
    assert made == MaterialDefinition(MaterialId("NEW"), "", "L", None, LotStatus.QUARANTINE, None)


def test_an_update_of_nothing_keeps_the_material() -> None:
    assert MaterialUpdate("OIL").applied_to(HELD, "/") == HELD


def test_an_update_changes_only_what_it_gives() -> None:
    update = MaterialUpdate("OIL", default_lot_status=LotStatus.QUARANTINE, base_uom="t")
    assert update.applied_to(HELD, "/") == MaterialDefinition(
        HELD.id, "Oil", "t", Decimal("0.9"), LotStatus.QUARANTINE, "OILS"
    )


optional_text = st.none() | st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1)
updates = st.builds(
    MaterialUpdate,
    id=st.just("OIL"),
    description=optional_text,
    base_uom=st.none() | st.sampled_from(UNITS),
    density_kg_per_l=st.none() | st.decimals(min_value="0.001", max_value=20, places=3),
    default_lot_status=st.none() | st.sampled_from(LotStatus),
    material_class=optional_text,
)


@given(updates)
def test_applied_to_takes_each_given_field_and_keeps_the_others(update: MaterialUpdate) -> None:
    merged = update.applied_to(HELD, "/")
    names = [f.name for f in fields(MaterialUpdate) if f.name != "id"]
    assert names == [f.name for f in fields(MaterialDefinition) if f.name != "id"]
    assert merged.id == HELD.id
    for name in names:
        given_value = getattr(update, name)
        expected = getattr(HELD, name) if given_value is None else given_value
        assert getattr(merged, name) == expected, name


# -- acknowledge: the answers -----------------------------------------------------------

ANSWER_LOTS = (
    Lot(LotId("L1"), MaterialId("OIL"), LotStatus.QUARANTINE, STAMP, date(2027, 6, 30)),
    Lot(LotId("L2"), MaterialId("SUGAR"), LotStatus.RELEASED, STAMP),
)
ANSWER_MATERIALS = (
    HELD,
    MaterialDefinition(MaterialId("SUGAR"), "", "kg", None, LotStatus.RELEASED, "SWEETENERS"),
)


def answer(name: str) -> bytes:
    inbound = parse_inbound(GOOD[name])
    if inbound.noun == "MaterialLot":
        return acknowledge(inbound, lots=ANSWER_LOTS, created=CREATED, bod_id="invops-ack")
    return acknowledge(inbound, materials=ANSWER_MATERIALS, created=CREATED, bod_id="invops-ack")


@pytest.mark.parametrize("name", list(GOOD))
def test_every_answer_validates(name: str) -> None:
    assert_valid_b2mml(answer(name))


def original_area(parent: ET.Element | None) -> tuple[str | None, str | None, str | None]:
    assert parent is not None
    area = parent.find("b:OriginalApplicationArea", NS)
    assert area is not None
    return (
        text(area, "b:Sender/b:LogicalID"),
        text(area, "b:CreationDateTime"),
        text(area, "b:BODID"),
    )


ORIGINAL = (SENDER, "2026-12-03T08:00:00Z", "BOD-1")


@pytest.mark.parametrize("name", ["ProcessMaterialLot", "ProcessMaterialDefinition"])
def test_a_process_is_acknowledged_with_the_nouns_as_invops_holds_them(name: str) -> None:
    root = xml(answer(name))
    noun = name.removeprefix("Process")
    assert root.tag == f"{{{B2MML_NAMESPACE}}}Acknowledge{noun}"
    assert root.get("releaseID") == RELEASE_ID
    assert text(root, "b:ApplicationArea/b:Sender/b:LogicalID") == "invops"
    assert text(root, "b:ApplicationArea/b:BODID") == "invops-ack"
    ack = root.find("b:DataArea/b:Acknowledge", NS)
    assert original_area(ack) == ORIGINAL
    expression = root.find("b:DataArea/b:Acknowledge/b:ResponseCriteria/b:ResponseExpression", NS)
    assert expression is not None
    assert (expression.text, expression.get("actionCode")) == ("Accepted", "Accepted")
    nouns = root.findall(f"b:DataArea/b:{noun}", NS)
    if noun == "MaterialLot":
        assert [
            (text(e, "b:ID"), text(e, "b:MaterialDefinitionID"), text(e, "b:Status")) for e in nouns
        ] == [("L1", "OIL", "quarantine"), ("L2", "SUGAR", "released")]
        assert properties(nouns[0], "MaterialLotProperty") == {
            "ExpirationDate": ("2027-06-30", "date", None)
        }
        for element in nouns:  # an announcement is not stock: no quantity, no location
            assert element.find("b:Quantity", NS) is None and location(element) is None
    else:
        assert [text(e, "b:ID") for e in nouns] == ["OIL", "SUGAR"]
        assert properties(nouns[0], "MaterialDefinitionProperty")["Density"] == (
            "0.9",
            "decimal",
            "kg/L",
        )
        assert texts(nouns[1], "b:MaterialClassID") == ["SWEETENERS"]


@pytest.mark.parametrize("name", ["SyncMaterialLot", "SyncMaterialDefinition"])
def test_a_sync_is_confirmed_with_a_confirm_bod(name: str) -> None:
    root = xml(answer(name))
    assert root.tag == f"{{{B2MML_NAMESPACE}}}ConfirmBOD"
    assert root.get("releaseID") is None  # the one verb document without it
    data = root.find("b:DataArea", NS)
    assert data is not None and [local(e) for e in data] == ["Confirm", "BOD"]
    assert original_area(data.find("b:Confirm", NS)) == ORIGINAL
    assert original_area(data.find("b:BOD", NS)) == ORIGINAL
    code = data.find("b:Confirm/b:ResponseCriteria/b:ResponseExpression", NS)
    assert code is not None and code.get("actionCode") == "Accepted"
    noun = name.removeprefix("Sync")
    assert text(data, "b:BOD/b:Description") == f"{name} BOD-1: 2 {noun} applied"


def test_an_answer_can_be_written_twice_and_is_the_same() -> None:
    inbound = parse_inbound(GOOD["SyncMaterialLot"])
    first = acknowledge(inbound, lots=ANSWER_LOTS, created=CREATED, bod_id="a")
    assert acknowledge(inbound, lots=ANSWER_LOTS, created=CREATED, bod_id="a") == first


def test_an_answer_validates_whatever_creation_time_the_sender_wrote() -> None:
    area = AREA.replace("2026-12-03T08:00:00Z", "yesterday")
    body = document("ProcessMaterialLot", lot("L1"), area=area)
    try:
        inbound = parse_inbound(body)
    except B2mmlError as exc:  # refusing it at its path would be right too
        assert exc.path == "/ProcessMaterialLot/ApplicationArea/CreationDateTime"
        return
    b2mml_validator().validate(
        acknowledge(inbound, lots=ANSWER_LOTS[:1], created=CREATED, bod_id="x")
    )


# -- round trips (hypothesis) -----------------------------------------------------------

# What an ID may hold in XML text that survives reading: no whitespace (text is stripped
# and IdentifierType collapses it), no controls, no surrogates.
ids = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=12
)
announced = st.builds(
    AnnouncedLot,
    lot=ids.map(LotId),
    material=ids.map(MaterialId),
    status=st.none() | st.sampled_from(LotStatus),
    expiry=st.none() | st.dates(min_value=date(1900, 1, 1), max_value=date(9999, 12, 31)),
)
announcements = st.lists(announced, min_size=1, max_size=5, unique_by=lambda a: a.lot)


def process_material_lot(lots: Sequence[AnnouncedLot]) -> bytes:
    return document(
        "ProcessMaterialLot",
        "".join(
            lot(a.lot, a.material, None if a.status is None else str(a.status),
                None if a.expiry is None else a.expiry.isoformat())
            for a in lots
        ),
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(announcements)
def test_any_process_material_lot_parses_back_to_its_lots(
    validator: SchemaValidator, lots: list[AnnouncedLot]
) -> None:
    body = process_material_lot(lots)
    validator.validate(body)
    assert parse_inbound(body).lots == tuple(lots)


@settings(max_examples=60, deadline=None)
@given(announcements)
def test_any_acknowledged_lot_parses_back_to_the_same_lot(
    validator: SchemaValidator, lots: list[AnnouncedLot]
) -> None:
    """The MaterialLots invops writes in an AcknowledgeMaterialLot, sent back to it in a
    ProcessMaterialLot, announce exactly the lots it holds."""
    held = [Lot(a.lot, a.material, a.status or LotStatus.QUARANTINE, STAMP, a.expiry) for a in lots]
    inbound = parse_inbound(process_material_lot(lots))
    body = acknowledge(inbound, lots=held, created=CREATED, bod_id="ack")
    validator.validate(body)
    root = xml(body)
    root.tag = f"{{{B2MML_NAMESPACE}}}ProcessMaterialLot"
    data = root.find("b:DataArea", NS)
    assert data is not None
    data[0].tag = f"{{{B2MML_NAMESPACE}}}Process"
    for child in list(data[0]):
        data[0].remove(child)
    echoed = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    validator.validate(echoed)
    assert parse_inbound(echoed).lots == tuple(
        AnnouncedLot(h.id, h.material, h.status, h.expiry) for h in held
    )


definitions = st.builds(
    MaterialDefinition,
    id=ids.map(MaterialId),
    description=st.just("") | ids,
    base_uom=st.sampled_from(UNITS),
    density_kg_per_l=st.none() | st.decimals(min_value="0.0001", max_value=50, places=4),
    default_lot_status=st.sampled_from(LotStatus),
    material_class=st.none() | ids,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(definitions, min_size=1, max_size=4, unique_by=lambda m: m.id))
def test_any_acknowledged_material_parses_back_to_the_same_definition(
    validator: SchemaValidator, materials: list[MaterialDefinition]
) -> None:
    inbound = parse_inbound(GOOD["ProcessMaterialDefinition"])
    body = acknowledge(inbound, materials=materials, created=CREATED, bod_id="ack")
    validator.validate(body)
    echoed = (
        body.replace(b"AcknowledgeMaterialDefinition", b"SyncMaterialDefinition")
        .replace(b"<Acknowledge>", b"<Sync>")
        .replace(b"</Acknowledge>", b"</Sync>")
    )
    root = xml(echoed)
    sync = root.find("b:DataArea/b:Sync", NS)
    assert sync is not None
    for child in list(sync):
        sync.remove(child)
    echoed = ET.tostring(root, encoding="utf-8")
    validator.validate(echoed)
    parsed = parse_inbound(echoed).materials
    assert [u.applied_to(None, "/") for u in parsed] == materials


# -- SchemaValidator ---------------------------------------------------------------------


def schema_refusal(validator: SchemaValidator, body: bytes) -> B2mmlError:
    with pytest.raises(B2mmlError) as caught:
        validator.validate(body)
    return caught.value


@pytest.mark.parametrize("name", list(GOOD))
def test_schema_validator_accepts_a_valid_document(validator: SchemaValidator, name: str) -> None:
    validator.validate(GOOD[name])


def test_schema_validator_refuses_elements_out_of_order_with_the_path(
    validator: SchemaValidator,
) -> None:
    out_of_order = (
        "<MaterialLot><ID>L2</ID><Status>released</Status>"
        "<MaterialDefinitionID>OIL</MaterialDefinitionID></MaterialLot>"
    )
    body = document("ProcessMaterialLot", lot("L1") + out_of_order)
    parse_inbound(body)  # invops' own reading does not care about the order
    error = schema_refusal(validator, body)
    assert error.path == "/ProcessMaterialLot/DataArea/MaterialLot[2]"
    assert error.message.startswith("fails the B2MML schema: ")
    assert "MaterialDefinitionID" in error.message


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        pytest.param(
            document("ProcessMaterialLot", lot("L1"), attributes=""), "/ProcessMaterialLot",
            "releaseID", id="missing-releaseID",
        ),
        pytest.param(
            document("SyncMaterialLot", lot("L1"), area=AREA.replace("2026-12-03T08:00:00Z",
                     "yesterday")),
            "/SyncMaterialLot/ApplicationArea/CreationDateTime", "yesterday", id="not-a-date-time",
        ),
        pytest.param(
            document("ProcessMaterialLot", lot("L1", tail="<Colour>red</Colour>")),
            "/ProcessMaterialLot/DataArea/MaterialLot", "Colour", id="unknown-element",
        ),
        pytest.param(
            document("SyncMaterialDefinition", ""), "/SyncMaterialDefinition/DataArea",
            "MaterialDefinition", id="no-nouns",
        ),
        pytest.param(
            document("ProcessMaterialLot", lot("L1"), verb=(
                "<Process><ActionCriteria><ActionExpression/></ActionCriteria></Process>")),
            "/ProcessMaterialLot/DataArea/Process/ActionCriteria/ActionExpression",
            "actionCode", id="expression-without-action-code",
        ),
    ],
)  # fmt: skip
def test_schema_validator_names_the_path_of_the_first_error(
    validator: SchemaValidator, body: bytes, path: str, message: str
) -> None:
    error = schema_refusal(validator, body)
    assert (error.path, message in error.message) == (path, True), error


def test_schema_validator_refuses_a_body_that_is_not_utf8(validator: SchemaValidator) -> None:
    body = GOOD["ProcessMaterialLot"].replace(b"L2", "L\xe9".encode("latin-1"))
    error = schema_refusal(validator, body)
    assert error.path == "/"
    assert error.message.startswith("not well-formed XML")
    line = body[: body.index(b"L\xe9")].count(b"\n") + 1
    assert f"at line {line}, column " in error.message
    utf16 = GOOD["ProcessMaterialLot"].decode().encode("utf-16")  # declared UTF-8, is not
    assert schema_refusal(validator, utf16).message.startswith("not well-formed XML")
    honest = utf16.decode("utf-16").replace("UTF-8", "UTF-16").encode("utf-16")
    validator.validate(honest)  # an XML encoding expat reads is read, as parse_inbound does
    assert parse_inbound(honest).lots == parse_inbound(GOOD["ProcessMaterialLot"]).lots


@pytest.mark.parametrize(
    "body",
    [b"<ProcessMaterialLot", LAUGHS, b'<?xml version="1.0"?><!DOCTYPE x><x/>'],
    ids=["not-well-formed", "billion-laughs", "doctype"],
)
def test_schema_validator_refuses_broken_xml_and_dtds(
    validator: SchemaValidator, body: bytes
) -> None:
    error = schema_refusal(validator, body)
    assert error.path == "/"
    assert error.message.startswith(("not well-formed XML", "DTDs and entity declarations"))


def test_schema_validator_reads_only_the_body_it_is_given(
    validator: SchemaValidator, tmp_path: Path
) -> None:
    valid = GOOD["ProcessMaterialLot"]
    (tmp_path / "valid.xml").write_bytes(valid)
    schema_refusal(validator, str(tmp_path / "valid.xml").encode())  # a path is no document
    schema_refusal(validator, (tmp_path / "valid.xml").as_uri().encode())
    one_line = b"\xef\xbb\xbf" + valid.split(b"\n", 1)[1]
    parse_inbound(one_line)  # well-formed, and ElementTree reads it
    validator.validate(one_line)


def test_schema_validator_needs_the_folder_with_all_schemas(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"AllSchemas\.xsd does not exist"):
        SchemaValidator(tmp_path)


def test_the_schemas_are_loaded_once_per_session(validator: SchemaValidator) -> None:
    assert validator is b2mml_validator()
    assert validator.folder.name == "b2mml-v0700"


def test_inbound_path_names_the_document() -> None:
    inbound = Inbound("Process", "MaterialLot", "", "", ET.Element("x"))
    assert inbound.name == "ProcessMaterialLot"
    assert inbound.path() == "/ProcessMaterialLot/DataArea"
    assert inbound.path("MaterialLot[2]", "ID") == "/ProcessMaterialLot/DataArea/MaterialLot[2]/ID"

"""B2MML documents applied to and exported from the real ledger (SQLite and PostgreSQL):
lots ERP announces are created or change status all or nothing, audited with the
document's reason; material master data is created and merged; the movement export pages
by cursor without skipping; every document invops writes validates against MESA's XSDs
(skipped without them)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from xml.sax.saxutils import escape

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.b2mml import B2MML_NAMESPACE, RELEASE_ID, B2mmlError, parse_inbound
from inventory_core.b2mml.apply import (
    apply_inbound,
    export_material_information,
    export_movements,
)
from inventory_core.domain.errors import (
    InventoryError,
    LotStatusTransitionError,
    MaterialMismatch,
    UnknownMaterial,
    ValidationError,
)
from inventory_core.domain.model import (
    AnnouncedLot,
    AnnounceLots,
    Booking,
    LotHandling,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)
from tests.standards import assert_valid_b2mml, require_b2mml, validate_b2mml_if_present

NS = {"b": B2MML_NAMESPACE}
OIL = MaterialDefinition(MaterialId("OIL"), "Oil", "kg", Decimal("0.9"), LotStatus.RELEASED)
STRICT = MaterialDefinition(MaterialId("STRICT"), "Strict", "kg", None, LotStatus.QUARANTINE)


def unit(uid: str) -> StorageUnit:
    return StorageUnit(
        StorageUnitId(uid), "P", "A", StorageKind.TANK, Decimal(100000), "kg", OIL.id,
        lot_handling=LotHandling.MIXED, booking=Booking.MANUAL,
    )  # fmt: skip


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url, writer_id="b2mml", migrate=True) as opened:
        await opened.sync_master_data((OIL, STRICT), (unit("T1"), unit("T2")))
        yield opened


# -- documents ERP sends -----------------------------------------------------------------


def document(name: str, nouns: str, bod_id: str = "BOD-1") -> bytes:
    verb = "<Sync/>" if name.startswith("Sync") else "<Process/>"
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<{name} xmlns="{B2MML_NAMESPACE}" releaseID="{RELEASE_ID}"><ApplicationArea>'
        "<Sender><LogicalID>SAP</LogicalID></Sender>"
        f"<CreationDateTime>2026-12-03T08:00:00Z</CreationDateTime><BODID>{bod_id}</BODID>"
        f"</ApplicationArea><DataArea>{verb}{nouns}</DataArea></{name}>"
    ).encode()
    validate_b2mml_if_present(body)  # what these tests send is what the standard allows
    return body


def value(element: str, prop_id: str, text: str, data_type: str, uom: str = "") -> str:
    unit_of_measure = f"<UnitOfMeasure>{uom}</UnitOfMeasure>" if uom else ""
    return (
        f"<{element}><ID>{prop_id}</ID><Value><ValueString>{escape(text)}</ValueString>"
        f"<DataType>{data_type}</DataType>{unit_of_measure}</Value></{element}>"
    )


def lot(lot_id: str, material: str = "OIL", status: str | None = None, expiry: str = "") -> str:
    parts = f"<ID>{lot_id}</ID><MaterialDefinitionID>{material}</MaterialDefinitionID>"
    if status is not None:
        parts += f"<Status>{status}</Status>"
    if expiry:
        parts += value("MaterialLotProperty", "ExpirationDate", expiry, "date")
    return f"<MaterialLot>{parts}</MaterialLot>"


def material(
    material_id: str,
    description: str | None = None,
    *,
    base: str | None = None,
    density: str | None = None,
    status: str | None = None,
    material_class: str | None = None,
) -> str:
    parts = f"<ID>{material_id}</ID>"
    if description is not None:
        parts += f"<Description>{escape(description)}</Description>"
    prop = "MaterialDefinitionProperty"
    if base is not None:
        parts += value(prop, "BaseUnitOfMeasure", base, "string")
    if density is not None:
        parts += value(prop, "Density", density, "decimal", "kg/L")
    if status is not None:
        parts += value(prop, "DefaultLotStatus", status, "string")
    if material_class is not None:
        parts += f"<MaterialClassID>{material_class}</MaterialClassID>"
    return f"<MaterialDefinition>{parts}</MaterialDefinition>"


async def apply(ledger: Ledger, body: bytes) -> bytes:
    answer, held = await apply_inbound(
        ledger, parse_inbound(body), user="erp-sap", source=Source.ERP
    )
    assert held == [], "no signature policy: nothing held"
    validate_b2mml_if_present(answer)
    return answer


async def snapshot(ledger: Ledger) -> tuple[object, ...]:
    """Everything an applied document could change."""
    return (
        await ledger.lots(),
        await ledger.materials(),
        await ledger.last_seq(),
        [record for _, record in await ledger.audit_records()],
    )


def receipt(lot_id: str, qty: str, to: str = "T1") -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT, OIL.id, LotId(lot_id), Decimal(qty), "kg",
        to_unit=StorageUnitId(to), user="op", ref=f"DN-{lot_id}",
    )  # fmt: skip


def transfer(lot_id: str, qty: str, src: str = "T1", dst: str = "T2") -> PostingRequest:
    return PostingRequest(
        MovementKind.TRANSFER, OIL.id, LotId(lot_id), Decimal(qty), "kg",
        from_unit=StorageUnitId(src), to_unit=StorageUnitId(dst), user="op",
    )  # fmt: skip


def xml_of(body: bytes) -> ET.Element:
    return ET.fromstring(body)


def cursors(body: bytes) -> list[int]:
    root = xml_of(body)
    found = []
    for data in root.iterfind(".//b:SegmentResponse/b:SegmentData", NS):
        if data.findtext("b:ID", namespaces=NS) == "Cursor":
            found.append(int(data.findtext("b:Value/b:ValueString", namespaces=NS) or "-1"))
    return found


# -- lots ----------------------------------------------------------------------------------


async def test_process_material_lot_creates_lots_with_status_expiry_audited(
    ledger: Ledger,
) -> None:
    body = document(
        "ProcessMaterialLot",
        lot("L-HOLD", "OIL", "hold", "2027-06-30")
        + lot("L-OIL", "OIL")  # OIL's default: released
        + lot("L-STRICT", "STRICT", expiry="2028-01-31"),  # STRICT's default: quarantine
        bod_id="BOD-77",
    )
    seq = await ledger.last_seq()
    answer = xml_of(await apply(ledger, body))

    lots = {lot.id: lot for lot in await ledger.lots()}
    assert {i: (lot.material, lot.status, lot.expiry) for i, lot in lots.items()} == {
        "L-HOLD": ("OIL", LotStatus.HOLD, date(2027, 6, 30)),
        "L-OIL": ("OIL", LotStatus.RELEASED, None),
        "L-STRICT": ("STRICT", LotStatus.QUARANTINE, date(2028, 1, 31)),
    }
    assert await ledger.last_seq() == seq  # creating a lot books no movement
    assert answer.tag == f"{{{B2MML_NAMESPACE}}}AcknowledgeMaterialLot"
    shown = [
        (e.findtext("b:ID", namespaces=NS), e.findtext("b:Status", namespaces=NS))
        for e in answer.iterfind("b:DataArea/b:MaterialLot", NS)
    ]
    assert shown == [("L-HOLD", "hold"), ("L-OIL", "released"), ("L-STRICT", "quarantine")]

    for lot_id, found in lots.items():
        records = [r for _, r in await ledger.audit_records("lot", lot_id)]
        assert [(r.action, r.user, r.reason) for r in records] == [
            ("create", "erp-sap", "B2MML ProcessMaterialLot BOD-77 from SAP")
        ]
        new = json.loads(records[0].new)
        assert new["status"] == str(found.status)
        assert new["expiry"] == (found.expiry.isoformat() if found.expiry else None)
    assert (await ledger.verify()).ok


async def test_sync_material_lot_changes_a_known_lots_status_by_a_lot_status_movement(
    ledger: Ledger,
) -> None:
    await apply(ledger, document("ProcessMaterialLot", lot("L1", "STRICT")))
    assert (await ledger.lots("L1"))[0].status is LotStatus.QUARANTINE
    seq = await ledger.last_seq()

    answer = xml_of(
        await apply(ledger, document("SyncMaterialLot", lot("L1", "STRICT", "Released"), "B-9"))
    )

    assert answer.tag == f"{{{B2MML_NAMESPACE}}}ConfirmBOD"
    described = answer.findtext("b:DataArea/b:BOD/b:Description", namespaces=NS)
    assert described == "SyncMaterialLot B-9: 1 MaterialLot applied"
    assert (await ledger.lots("L1"))[0].status is LotStatus.RELEASED
    (change,) = await ledger.export(after_seq=seq)
    assert change.kind is MovementKind.LOT_STATUS and change.lot == "L1"
    assert (change.user, change.source) == ("erp-sap", Source.ERP)
    assert change.reason == "B2MML SyncMaterialLot B-9 from SAP"
    assert change.details == {"old_status": "quarantine", "new_status": "released"}
    assert change.quantity == 0 and change.legs() == []
    trail = [r for _, r in await ledger.audit_records("lot", "L1", with_movements=True)]
    assert [r.reason for r in trail][-1] == "B2MML SyncMaterialLot B-9 from SAP"
    assert (await ledger.verify()).ok


async def test_an_announcement_without_status_leaves_a_known_lot_as_it_is(
    ledger: Ledger,
) -> None:
    await ledger.post(receipt("E1", "10"))
    before = await snapshot(ledger)
    await apply(ledger, document("SyncMaterialLot", lot("E1", "OIL")))
    assert await snapshot(ledger) == before


BAD_SECOND_LOT = {
    "unknown-material": (
        lot("L2", "NO-SUCH"), UnknownMaterial, "NO-SUCH", "MaterialDefinitionID"
    ),
    "illegal-transition": (
        lot("KNOWN", "STRICT", "expired"), LotStatusTransitionError, "expired", "Status"
    ),
    "other-material": (lot("KNOWN", "OIL"), MaterialMismatch, "STRICT", "MaterialDefinitionID"),
    "changed-expiry": (
        lot("KNOWN", "STRICT", expiry="2029-12-31"), ValidationError, "expiry",
        "MaterialLotProperty",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_SECOND_LOT))
async def test_a_document_whose_second_lot_is_refused_applies_nothing(
    ledger: Ledger, case: str
) -> None:
    """Refused with the bad lot's path before the ledger is asked; and the ledger itself,
    asked directly, refuses the same lots all or none."""
    await apply(ledger, document("ProcessMaterialLot", lot("KNOWN", "STRICT", expiry="2027-01-01")))
    before = await snapshot(ledger)
    bad, error, needle, where = BAD_SECOND_LOT[case]
    body = document("ProcessMaterialLot", lot("NEW-1", "OIL", "hold") + bad)
    with pytest.raises(B2mmlError) as caught:
        await apply(ledger, body)
    assert needle in caught.value.message
    assert caught.value.path == f"/ProcessMaterialLot/DataArea/MaterialLot[2]/{where}"
    with pytest.raises(error) as direct:
        await ledger.announce_lots(AnnounceLots(parse_inbound(body).lots, user="erp"))
    assert needle in str(direct.value)
    assert await snapshot(ledger) == before  # NEW-1 not created, no movement, no audit
    assert await ledger.lots("NEW-1") == []
    assert (await ledger.verify()).ok


async def test_a_status_change_and_a_refused_lot_in_one_sync_change_nothing(
    ledger: Ledger,
) -> None:
    await apply(ledger, document("ProcessMaterialLot", lot("K1", "STRICT") + lot("K2", "STRICT")))
    before = await snapshot(ledger)
    body = document("SyncMaterialLot", lot("K1", "STRICT", "released") + lot("K2", "OIL"))
    with pytest.raises(B2mmlError, match="lot K2 is material STRICT"):
        await apply(ledger, body)
    with pytest.raises(MaterialMismatch):  # the ledger's own check, inside its transaction
        await ledger.announce_lots(AnnounceLots(parse_inbound(body).lots, user="erp"))
    assert await snapshot(ledger) == before
    assert (await ledger.lots("K1"))[0].status is LotStatus.QUARANTINE


@pytest.mark.parametrize("name", ["ProcessMaterialLot", "SyncMaterialLot"])
async def test_replaying_the_same_document_changes_nothing_more(ledger: Ledger, name: str) -> None:
    await apply(ledger, document("ProcessMaterialLot", lot("L1", "STRICT")))
    body = document(name, lot("L1", "STRICT", "hold") + lot("L2", "OIL", "hold", "2027-03-01"))
    first = await apply(ledger, body)
    after_first = await snapshot(ledger)
    second = await apply(ledger, body)
    assert await snapshot(ledger) == after_first
    strip = [b"BODID", b"CreationDateTime"]  # the answer's own id and time differ
    same = [line for line in first.splitlines() if not any(s in line for s in strip)]
    assert same == [line for line in second.splitlines() if not any(s in line for s in strip)]
    moved = await ledger.export()
    assert [(m.kind, m.lot) for m in moved] == [(MovementKind.LOT_STATUS, "L1")]
    assert (await ledger.verify()).ok


async def test_ledger_announce_lots_naming_one_lot_twice_changes_nothing(ledger: Ledger) -> None:
    await ledger.announce_lots(AnnounceLots((AnnouncedLot(LotId("B"), STRICT.id),), user="u"))
    twice = (
        AnnouncedLot(LotId("B"), STRICT.id, LotStatus.REJECTED),
        AnnouncedLot(LotId("B"), STRICT.id, LotStatus.RELEASED),
    )
    with pytest.raises(InventoryError):
        await ledger.announce_lots(AnnounceLots(twice, user="u"))
    assert (await ledger.lots("B"))[0].status is LotStatus.QUARANTINE


async def test_ledger_announce_lots_naming_a_new_lot_twice_creates_nothing(ledger: Ledger) -> None:
    twice = (
        AnnouncedLot(LotId("N"), OIL.id),
        AnnouncedLot(LotId("N"), OIL.id, LotStatus.HOLD),
    )
    with pytest.raises(InventoryError):
        await ledger.announce_lots(AnnounceLots(twice, user="u"))
    assert await ledger.lots("N") == []


# -- material master data ------------------------------------------------------------------


async def test_material_definitions_are_created_and_merged_audited(ledger: Ledger) -> None:
    create = document(
        "ProcessMaterialDefinition",
        material("RESIN", "Epoxy resin", base="kg", density="1.16", status="hold",
                 material_class="POLYMERS"),
        bod_id="MD-1",
    )  # fmt: skip
    answer = xml_of(await apply(ledger, create))
    assert answer.tag == f"{{{B2MML_NAMESPACE}}}AcknowledgeMaterialDefinition"
    assert [e.findtext("b:ID", namespaces=NS) for e in answer.iterfind(
        "b:DataArea/b:MaterialDefinition", NS)] == ["RESIN"]  # fmt: skip
    held = {m.id: m for m in await ledger.materials()}
    resin = MaterialDefinition(
        MaterialId("RESIN"), "Epoxy resin", "kg", Decimal("1.16"), LotStatus.HOLD, "POLYMERS"
    )
    assert held["RESIN"] == resin

    merge = document(
        "SyncMaterialDefinition",
        material("RESIN", "Epoxy resin, 2K") + material("OIL", status="quarantine"),
        bod_id="MD-2",
    )
    confirmed = xml_of(await apply(ledger, merge))
    assert confirmed.tag == f"{{{B2MML_NAMESPACE}}}ConfirmBOD"
    held = {m.id: m for m in await ledger.materials()}
    assert held["RESIN"] == MaterialDefinition(
        resin.id, "Epoxy resin, 2K", "kg", Decimal("1.16"), LotStatus.HOLD, "POLYMERS"
    )
    assert held["OIL"] == MaterialDefinition(
        OIL.id, "Oil", "kg", Decimal("0.9"), LotStatus.QUARANTINE, None
    )
    trail = [
        (r.action, r.user, r.reason) for _, r in await ledger.audit_records("material", "RESIN")
    ]
    assert trail == [
        ("create", "erp-sap", "B2MML ProcessMaterialDefinition MD-1 from SAP"),
        ("update", "erp-sap", "B2MML SyncMaterialDefinition MD-2 from SAP"),
    ]
    oil = [(r.action, r.reason) for _, r in await ledger.audit_records("material", "OIL")]
    assert oil[-1] == ("update", "B2MML SyncMaterialDefinition MD-2 from SAP")
    # the new default applies to the next lot announced without a status
    await apply(ledger, document("ProcessMaterialLot", lot("AFTER", "OIL")))
    assert (await ledger.lots("AFTER"))[0].status is LotStatus.QUARANTINE
    assert (await ledger.verify()).ok


async def test_an_unchanged_material_definition_is_not_audited_again(ledger: Ledger) -> None:
    body = document("SyncMaterialDefinition", material("OIL", "Oil", base="kg", density="0.9"))
    before = await snapshot(ledger)
    await apply(ledger, body)
    assert await snapshot(ledger) == before


async def test_a_new_material_without_base_unit_is_refused_with_its_path(ledger: Ledger) -> None:
    body = document(
        "ProcessMaterialDefinition",
        material("OIL", "Oil, refined") + material("NEWMAT", "No unit given", density="1"),
    )
    before = await snapshot(ledger)
    with pytest.raises(B2mmlError) as caught:
        await apply(ledger, body)
    assert caught.value.path == "/ProcessMaterialDefinition/DataArea/MaterialDefinition[2]"
    assert "NEWMAT is new" in caught.value.message
    assert await snapshot(ledger) == before  # OIL's new description was not applied either


# -- exports -------------------------------------------------------------------------------


async def test_export_movements_pages_by_cursor_without_skipping(ledger: Ledger) -> None:
    await ledger.post(receipt("E1", "100"))
    await ledger.post(transfer("E1", "30"))
    await apply(ledger, document("SyncMaterialLot", lot("E1", "OIL", "hold")))
    await apply(ledger, document("SyncMaterialLot", lot("E1", "OIL", "released")))
    await ledger.post(receipt("E2", "5", to="T2"))
    everything = [m.seq for m in await ledger.export()]
    assert len(everything) == 5

    seen: list[int] = []
    cursor, pages = 0, 0
    while True:
        body, next_cursor = await export_movements(ledger, after_seq=cursor, limit=2)
        if body is None:
            assert next_cursor == cursor
            break
        validate_b2mml_if_present(body)
        page = cursors(body)
        assert 1 <= len(page) <= 2 and page[0] > cursor and next_cursor == page[-1]
        seen += page
        cursor, pages = next_cursor, pages + 1
    assert seen == everything and pages == 3

    whole, last = await export_movements(ledger)
    assert whole is not None and cursors(whole) == everything and last == everything[-1]
    validate_b2mml_if_present(whole)
    assert await export_movements(ledger, after_seq=last) == (None, last)


async def test_export_movements_of_an_empty_ledger_is_nothing(ledger: Ledger) -> None:
    assert await export_movements(ledger) == (None, 0)
    assert await export_movements(ledger, after_seq=7, limit=3) == (None, 7)


async def test_export_movements_shows_each_leg_signed_at_its_unit(ledger: Ledger) -> None:
    await ledger.post(receipt("E1", "100"))
    await ledger.post(transfer("E1", "30"))
    body, _ = await export_movements(ledger)
    assert body is not None
    validate_b2mml_if_present(body)
    legs = [
        (
            a.findtext("b:StorageLocation/b:Location", namespaces=NS),
            Decimal(a.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "nan"),
            a.findtext("b:MaterialUse", namespaces=NS),
        )
        for a in xml_of(body).iterfind(".//b:MaterialActual", NS)
    ]
    assert legs == [
        ("T1", Decimal(100), "Inventoried"),
        ("T1", Decimal(-30), "Inventoried"),
        ("T2", Decimal(30), "Inventoried"),
    ]
    reference = [
        d.findtext("b:Value/b:ValueString", namespaces=NS)
        for d in xml_of(body).iterfind(".//b:SegmentData", NS)
        if d.findtext("b:ID", namespaces=NS) == "Reference"
    ]
    assert reference == ["DN-E1"]


async def test_material_information_shows_a_lot_held_in_two_units_as_two_sublots(
    ledger: Ledger,
) -> None:
    await ledger.post(receipt("E1", "100"))
    await ledger.post(transfer("E1", "30.5"))
    await ledger.post(receipt("E2", "7", to="T2"))
    await apply(
        ledger, document("ProcessMaterialLot", lot("ANNOUNCED", "STRICT", expiry="2027-05-01"))
    )
    body = await export_material_information(ledger)
    validate_b2mml_if_present(body)
    info = xml_of(body).find("b:DataArea/b:MaterialInformation", NS)
    assert info is not None
    assert sorted(e.findtext("b:ID", namespaces=NS) or "" for e in info.iterfind(
        "b:MaterialDefinition", NS)) == ["OIL", "STRICT"]  # fmt: skip
    lots = {e.findtext("b:ID", namespaces=NS): e for e in info.iterfind("b:MaterialLot", NS)}
    assert set(lots) == {"E1", "E2", "ANNOUNCED"}

    e1 = lots["E1"]
    sublots = [
        (
            s.findtext("b:ID", namespaces=NS),
            s.findtext("b:StorageLocation/b:Location", namespaces=NS),
            Decimal(s.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "nan"),
            s.findtext("b:Quantity/b:UnitOfMeasure", namespaces=NS),
        )
        for s in e1.iterfind("b:MaterialSubLot", NS)
    ]
    assert sublots == [
        ("E1@T1", "T1", Decimal("69.5"), "kg"),
        ("E1@T2", "T2", Decimal("30.5"), "kg"),
    ]
    assert e1.find("b:StorageLocation", NS) is None
    assert Decimal(e1.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "") == 100
    e2 = lots["E2"]
    assert e2.findtext("b:StorageLocation/b:Location", namespaces=NS) == "T2"
    assert e2.find("b:MaterialSubLot", NS) is None
    announced = lots["ANNOUNCED"]
    assert announced.findtext("b:Status", namespaces=NS) == "quarantine"
    assert announced.findtext("b:MaterialLotProperty/b:Value/b:ValueString", namespaces=NS) == (
        "2027-05-01"
    )
    assert announced.find("b:StorageLocation", NS) is None
    assert Decimal(announced.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "") == 0


async def test_every_document_invops_writes_for_a_ledger_validates(ledger: Ledger) -> None:
    """Answers to all four documents, both exports, over movements of several kinds."""
    require_b2mml()
    await ledger.post(receipt("E1", "100"))
    await ledger.post(transfer("E1", "40"))
    written = [
        (await apply_inbound(ledger, parse_inbound(body), user="erp", source=Source.ERP)).answer
        for body in (
            document("ProcessMaterialDefinition", material("NEW", "New", base="L", density="1.2")),
            document("SyncMaterialDefinition", material("OIL", material_class="OILS")),
            document("ProcessMaterialLot", lot("A1", "NEW", "hold", "2027-01-01")),
            document("SyncMaterialLot", lot("A1", "NEW", "released") + lot("E1", "OIL", "hold")),
        )
    ]
    movements, _ = await export_movements(ledger)
    assert movements is not None
    written += [movements, await export_material_information(ledger)]
    roots = [ET.fromstring(body).tag.rsplit("}", 1)[-1] for body in written]
    assert roots == [
        "AcknowledgeMaterialDefinition", "ConfirmBOD", "AcknowledgeMaterialLot", "ConfirmBOD",
        "ShowOperationsPerformance", "ShowMaterialInformation",
    ]  # fmt: skip
    for body in written:
        assert_valid_b2mml(body)


async def test_material_lot_properties_set_quality_data_and_come_back_out(ledger: Ledger) -> None:
    """MaterialLotProperty: RetestDate, CertificateOfAnalysis and any other property (kept
    with its value and unit) on a new lot and on a known one; ShowMaterialInformation
    gives them back, valid against the official XSD."""
    quality = (
        value("MaterialLotProperty", "RetestDate", "2027-03-01", "date")
        + value("MaterialLotProperty", "CertificateOfAnalysis", "CoA-4711", "string")
        + value("MaterialLotProperty", "Assay", "99.6", "decimal", "%")
    )
    new_lot = "<MaterialLot><ID>L-Q</ID><MaterialDefinitionID>OIL</MaterialDefinitionID>"
    await apply(ledger, document("ProcessMaterialLot", f"{new_lot}{quality}</MaterialLot>"))
    [created] = await ledger.lots("L-Q")
    assert created.quality.retest == date(2027, 3, 1)
    assert created.quality.certificate == "CoA-4711"
    assert [(p.name, p.value, p.unit) for p in created.quality.properties] == [
        ("Assay", "99.6", "%")
    ]
    again = value("MaterialLotProperty", "Assay", "99.8", "decimal", "%")
    await apply(ledger, document("SyncMaterialLot", f"{new_lot}{again}</MaterialLot>", "BOD-2"))
    [updated] = await ledger.lots("L-Q")
    assert [p.value for p in updated.quality.properties] == ["99.8"]
    assert updated.quality.certificate == "CoA-4711", "what the document does not name stays"
    actions = [r.action for _, r in await ledger.audit_records("lot", "L-Q")]
    assert actions == ["create", "quality"]

    exported = await export_material_information(ledger)
    validate_b2mml_if_present(exported)
    info = xml_of(exported)
    [element] = [
        e for e in info.iter(f"{{{B2MML_NAMESPACE}}}MaterialLot")
        if e.findtext("b:ID", namespaces=NS) == "L-Q"
    ]  # fmt: skip
    shown = {
        p.findtext("b:ID", namespaces=NS): p.findtext("b:Value/b:ValueString", namespaces=NS)
        for p in element.iterfind("b:MaterialLotProperty", NS)
    }
    assert shown == {"RetestDate": "2027-03-01", "CertificateOfAnalysis": "CoA-4711",
                     "Assay": "99.8"}  # fmt: skip
    assert (await ledger.verify()).ok

"""`[[signatures]] action = "master-data"` in a real ledger (SQLite and PostgreSQL).

A lot's quality data and material definitions from a business system (B2MML) are held
as pending requests and change nothing until signed; the last signature applies them
once, audited with the request; a rejection applies nothing; the configuration's own
master data is not held; the B2MML answer names the held request and stays valid
against MESA's XSDs.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.b2mml import B2MML_NAMESPACE, parse_inbound
from inventory_core.b2mml.apply import apply_inbound
from inventory_core.domain.errors import RequestClosed, SignatureRefused
from inventory_core.domain.lot_quality import LotQualityRequest, parse_property
from inventory_core.domain.model import (
    AnnouncedLot,
    AnnounceLots,
    Lot,
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialDefinition,
    MaterialId,
    Source,
)
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    Decision,
    RequestState,
    SignatureAction,
    SignaturePolicy,
    SignRequest,
)
from inventory_core.domain.users import Role
from tests.integration.test_b2mml_ledger import OIL, STRICT, document, material, unit, value
from tests.standards import validate_b2mml_if_present

NS = {"b": B2MML_NAMESPACE}
POLICY = SignaturePolicy(SignatureAction.MASTER_DATA, "approved", Role.ENGINEER)
ASSAY = (parse_property("assay=99.6 %"),)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url, writer_id="md-sig", migrate=True) as opened:
        await opened.sync_master_data((OIL, STRICT), (unit("T1"),))
        known = AnnouncedLot(LotId("L1"), OIL.id)  # a known lot, before the policy
        await opened.announce_lots(AnnounceLots((known,), user="erp", reason="ASN"))
        assert await opened.set_signature_policies((POLICY,))
        yield opened


def quality(**fields: Any) -> LotQualityRequest:
    return LotQualityRequest(LotId("L1"), "CoA received", "qa1", Source.CLI, **fields)


def approve(request_id: str, signer: str = "eng1") -> SignRequest:
    return SignRequest(
        request_id, Decision.APPROVED, signer, Role.ENGINEER, f"{signer} E.", "approved"
    )


async def lot(ledger: Ledger, lot_id: str = "L1") -> Lot:
    [found] = await ledger.lots(lot_id)
    return found


async def test_a_lots_quality_data_waits_for_its_signature_and_is_set_once(
    ledger: Ledger,
) -> None:
    seen: list[Lot] = []
    ledger.subscribe_lots(seen.append)
    held = await ledger.set_lot_quality(
        quality(properties=ASSAY, retest=date(2027, 3, 1), certificate="CoA-1")
    )
    assert held.movement_id.startswith(REQUEST_PREFIX) and held.lot is None
    assert (await lot(ledger)).quality.is_empty(), "nothing changes before the signature"
    assert seen == []
    [pending] = await ledger.pending_requests()
    assert pending.action is SignatureAction.MASTER_DATA and pending.requested_by == "qa1"
    assert "quality data of lot L1" in pending.summary and "assay=99.6 %" in pending.summary

    outcome = await ledger.sign(approve(held.movement_id))
    assert outcome.request.state is RequestState.POSTED
    assert outcome.posted is not None and outcome.posted.movement_id == "lot:L1"
    now = await lot(ledger)
    assert (now.quality.properties, now.quality.retest, now.quality.certificate) == (
        ASSAY,
        date(2027, 3, 1),
        "CoA-1",
    )
    assert seen == [now], "the lot's listeners (OPC UA Lots/<LotID>) hear of it once"
    [record] = [r for _, r in await ledger.audit_records("lot", "L1") if r.action == "quality"]
    signed = json.loads(record.new)
    assert signed["request"] == held.movement_id and record.user == "qa1"
    assert [s["printed_name"] for s in signed["signatures"]] == ["eng1 E."]

    with pytest.raises(RequestClosed):  # a replayed approval changes nothing
        await ledger.sign(approve(held.movement_id, "eng2"))
    assert await lot(ledger) == now
    assert (await ledger.verify()).ok


async def test_a_rejected_quality_change_changes_nothing(ledger: Ledger) -> None:
    held = await ledger.set_lot_quality(quality(certificate="CoA-2"))
    rejection = SignRequest(
        held.movement_id, Decision.REJECTED, "eng1", Role.ENGINEER, "Eng", reason="wrong CoA"
    )
    outcome = await ledger.sign(rejection)
    assert outcome.request.state is RequestState.REJECTED and outcome.posted is None
    assert (await lot(ledger)).quality.is_empty()
    assert [r.action for _, r in await ledger.audit_records("lot", "L1")] == ["create"]


async def test_an_operator_cannot_sign_master_data(ledger: Ledger) -> None:
    held = await ledger.set_lot_quality(quality(certificate="CoA-3"))
    operator = SignRequest(
        held.movement_id, Decision.APPROVED, "op1", Role.OPERATOR, "Op", "approved"
    )
    with pytest.raises(SignatureRefused, match="role engineer"):
        await ledger.sign(operator)
    assert (await lot(ledger)).quality.is_empty()


async def test_a_quality_request_that_changes_nothing_is_not_held(ledger: Ledger) -> None:
    first = await ledger.sign(
        approve((await ledger.set_lot_quality(quality(certificate="C"))).movement_id)
    )
    assert first.posted is not None
    again = await ledger.set_lot_quality(quality(certificate="C"))
    assert again.movement_id == "lot:L1" and again.lot == await lot(ledger)
    assert await ledger.pending_requests() == []


async def test_the_configurations_master_data_is_not_held(ledger: Ledger) -> None:
    renamed = MaterialDefinition(
        OIL.id, "Oil, refined", "kg", OIL.density_kg_per_l, OIL.default_lot_status
    )
    assert await ledger.sync_master_data((renamed,), ()) == 1
    assert [m.description for m in await ledger.materials() if m.id == OIL.id] == ["Oil, refined"]
    assert await ledger.pending_requests() == []


async def test_material_definitions_from_erp_wait_for_their_signature(ledger: Ledger) -> None:
    new = MaterialDefinition(MaterialId("NEW"), "New", "L", Decimal("1.2"), LotStatus.QUARANTINE)
    changed = MaterialDefinition(
        OIL.id, "Oil (ERP)", "kg", OIL.density_kg_per_l, OIL.default_lot_status
    )
    pending = await ledger.define_materials(
        (new, changed), user="erp", reason="B2MML BOD-7", source=Source.ERP
    )
    assert pending is not None and pending.action is SignatureAction.MASTER_DATA
    assert "NEW (new)" in pending.summary and "OIL (description)" in pending.summary
    before = {m.id: m for m in await ledger.materials()}
    assert "NEW" not in before and before[OIL.id].description == "Oil"

    outcome = await ledger.sign(approve(pending.request_id))
    assert outcome.posted is not None
    assert outcome.posted.movement_ids == ("material:NEW", "material:OIL")
    after = {m.id: m for m in await ledger.materials()}
    assert after[MaterialId("NEW")] == new and after[OIL.id].description == "Oil (ERP)"
    records = [r for _, r in await ledger.audit_records("material", "NEW")]
    assert [r.action for r in records] == ["create"]
    assert records[0].reason == f"B2MML BOD-7; signed as {pending.request_id}"
    assert (await ledger.verify()).ok


async def test_material_definitions_that_change_nothing_are_not_held(ledger: Ledger) -> None:
    assert await ledger.define_materials((OIL,), user="erp", reason="x", source=Source.ERP) is None
    assert await ledger.pending_requests() == []


def _answer(body: bytes) -> ET.Element:
    validate_b2mml_if_present(body)
    return ET.fromstring(body)


async def test_a_b2mml_material_master_is_held_and_the_answer_says_so(ledger: Ledger) -> None:
    body = document("SyncMaterialDefinition", material("NEW", "New", base="L", density="1.2"))
    answer, held = await apply_inbound(ledger, parse_inbound(body), user="erp", source=Source.ERP)
    [request_id] = held
    root = _answer(answer)
    status = root.find("b:DataArea/b:Confirm/b:ResponseCriteria/b:ChangeStatus", NS)
    assert status is not None and status.findtext("b:Code", namespaces=NS) == "Held"
    assert request_id in (status.findtext("b:Description", namespaces=NS) or "")
    assert "NEW" not in {m.id for m in await ledger.materials()}

    await ledger.sign(approve(request_id))
    assert "NEW" in {m.id for m in await ledger.materials()}

    process = document("ProcessMaterialDefinition", material("OIL", "Oil (SAP)"), "BOD-2")
    answer, held = await apply_inbound(
        ledger, parse_inbound(process), user="erp", source=Source.ERP
    )
    root = _answer(answer)
    shown = root.findtext("b:DataArea/b:MaterialDefinition/b:Description", namespaces=NS)
    assert len(held) == 1 and shown == "Oil", "the answer shows the material as it still is"


async def test_a_known_lots_announced_quality_data_is_held_a_new_lot_is_created(
    ledger: Ledger,
) -> None:
    assay = value("MaterialLotProperty", "Assay", "99.1", "decimal", "%")
    lots = "".join(
        f"<MaterialLot><ID>{lot_id}</ID><MaterialDefinitionID>OIL</MaterialDefinitionID>"
        f"{assay}</MaterialLot>"
        for lot_id in ("L1", "L2")  # known, new
    )
    body = document("ProcessMaterialLot", lots)
    answer, held = await apply_inbound(ledger, parse_inbound(body), user="erp", source=Source.ERP)
    [request_id] = held
    root = _answer(answer)
    code = root.findtext(
        "b:DataArea/b:Acknowledge/b:ResponseCriteria/b:ChangeStatus/b:Code", namespaces=NS
    )
    assert code == "Held"
    assert (await lot(ledger)).quality.is_empty()
    assert [p.value for p in (await lot(ledger, "L2")).quality.properties] == ["99.1"]

    await ledger.sign(approve(request_id))
    assert [p.value for p in (await lot(ledger)).quality.properties] == ["99.1"]
    assert (await ledger.verify()).ok


async def test_a_b2mml_document_sent_again_while_held_is_the_same_request(
    ledger: Ledger,
) -> None:
    """An ERP that retries (no answer seen, a timeout) gets the request it made, not a
    second one for the signers; once that one is signed, the same change is new again."""
    body = document("SyncMaterialDefinition", material("NEW", "New", base="L"), "BOD-9")
    first = await apply_inbound(ledger, parse_inbound(body), user="erp", source=Source.ERP)
    again = await apply_inbound(ledger, parse_inbound(body), user="erp", source=Source.ERP)
    assert again.held == first.held and len(first.held) == 1
    code = _answer(again.answer).findtext(
        "b:DataArea/b:Confirm/b:ResponseCriteria/b:ChangeStatus/b:Code", namespaces=NS
    )
    assert code == "Held"
    # Another document (another BODID) is another request; so is another requester.
    other = document("SyncMaterialDefinition", material("NEW", "New", base="L"), "BOD-10")
    third = await apply_inbound(ledger, parse_inbound(other), user="erp", source=Source.ERP)
    by_mes = await apply_inbound(ledger, parse_inbound(body), user="mes", source=Source.ERP)
    assert len({*first.held, *third.held, *by_mes.held}) == 3
    assert len(await ledger.pending_requests()) == 3

    [request_id] = first.held
    await ledger.sign(approve(request_id))
    assert "NEW" in {m.id for m in await ledger.materials()}
    assert (await ledger.verify()).ok


async def test_a_quality_change_asked_again_while_held_is_the_same_request(
    ledger: Ledger,
) -> None:
    first = await ledger.set_lot_quality(quality(properties=ASSAY))
    again = await ledger.set_lot_quality(quality(properties=ASSAY))
    assert again.movement_id == first.movement_id and again.replayed
    other = await ledger.set_lot_quality(quality(certificate="CoA-2"))
    assert other.movement_id != first.movement_id
    assert len(await ledger.pending_requests()) == 2
    await ledger.sign(approve(first.movement_id))
    assert (await lot(ledger)).quality.properties == ASSAY
    # Signed and applied: asking for the same again changes nothing, so nothing is held.
    assert not (await ledger.set_lot_quality(quality(properties=ASSAY))).movement_id.startswith(
        REQUEST_PREFIX
    )
    assert len(await ledger.pending_requests()) == 1


async def test_the_same_status_change_asked_by_two_users_is_two_requests(
    ledger: Ledger,
) -> None:
    """Alike and still waiting is one request only for its own requester: who asked for
    a change stays on the record."""
    on_hold = SignaturePolicy(SignatureAction.LOT_STATUS, "approved", Role.ENGINEER,
                              statuses=frozenset({LotStatus.HOLD}))  # fmt: skip
    assert await ledger.set_signature_policies((POLICY, on_hold))

    def hold(user: str) -> LotStatusRequest:
        return LotStatusRequest(LotId("L1"), LotStatus.HOLD, "lab check", user, Source.API)

    first = await ledger.set_lot_status(hold("qa1"))
    again = await ledger.set_lot_status(hold("qa1"))
    other = await ledger.set_lot_status(hold("qa2"))
    assert again.movement_id == first.movement_id and again.replayed
    assert other.movement_id != first.movement_id and not other.replayed
    assert sorted(p.requested_by for p in await ledger.pending_requests()) == ["qa1", "qa2"]

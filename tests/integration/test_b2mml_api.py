"""The API's B2MML routes over real HTTP against a real ledger (SQLite and PostgreSQL):
documents out validate against MESA's XSDs, documents in are applied all or nothing by an
engineer and answered with the acknowledge document, or refused as a problem naming the
path, with nothing applied."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from http_api import ApiAuth, create_app
from inventory_core import Ledger, open_ledger
from inventory_core.b2mml import B2MML_NAMESPACE
from inventory_core.domain.api_tokens import ApiToken, hash_token
from inventory_core.domain.model import LotId, MovementKind, PostingRequest, StorageUnitId
from inventory_core.domain.signatures import SignatureAction, SignaturePolicy
from inventory_core.domain.users import Role
from invops.http_server import HttpServer
from tests.integration.test_http_api import OIL, UNITS
from tests.standards import b2mml_schema_dir, b2mml_validator

ENGINEER_TOKEN = "invops_erp-engineer-token"
OPERATOR_TOKEN = "invops_erp-operator-token"
NS = {"b": B2MML_NAMESPACE}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.body)
        return document

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)


@dataclass
class Api:
    base: str
    ledger: Ledger

    async def call(
        self, method: str, path: str, body: bytes | None = None, *,
        token: str | None = ENGINEER_TOKEN, content_type: str = "application/xml",
    ) -> Answer:  # fmt: skip
        request = urllib.request.Request(self.base + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")

        def send() -> Answer:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return Answer(response.status, dict(response.headers), response.read())
            except urllib.error.HTTPError as exc:
                return Answer(exc.code, dict(exc.headers), exc.read())

        return await asyncio.to_thread(send)


@pytest.fixture
async def api(ledger_url: str) -> AsyncIterator[Api]:
    folder = b2mml_schema_dir()
    validator = b2mml_validator() if folder is not None else None
    async with open_ledger(ledger_url, writer_id="b2mml-api", migrate=True) as ledger:
        await ledger.sync_master_data((OIL,), UNITS)
        tokens = [
            ApiToken("sap", Role.ENGINEER, hash_token(ENGINEER_TOKEN)),
            ApiToken("wms", Role.OPERATOR, hash_token(OPERATOR_TOKEN)),
        ]
        auth = ApiAuth([], tokens, anonymous_read=False, record=ledger.record_event)
        app = create_app(ledger, auth, version="test", b2mml_validator=validator)
        async with HttpServer(app, "127.0.0.1", 0, name="api") as server:
            yield Api(f"http://127.0.0.1:{server.port}/api/v1", ledger)


def process_lots(*lots: tuple[str, str, str], verb: str = "Process") -> bytes:
    """A Process/SyncMaterialLot of (lot, material, status) triples."""
    nouns = "".join(
        f"<MaterialLot><ID>{lot}</ID><MaterialDefinitionID>{material}</MaterialDefinitionID>"
        f"<Status>{status}</Status></MaterialLot>"
        for lot, material, status in lots
    )
    return (
        f'<{verb}MaterialLot xmlns="{B2MML_NAMESPACE}" releaseID="7.0"><ApplicationArea>'
        "<Sender><LogicalID>SAP-PI</LogicalID></Sender>"
        "<CreationDateTime>2026-12-03T08:00:00Z</CreationDateTime><BODID>BOD-1</BODID>"
        f"</ApplicationArea><DataArea><{verb}/>{nouns}</DataArea></{verb}MaterialLot>"
    ).encode()


async def test_an_engineer_announces_lots_and_gets_the_acknowledge_document(api: Api) -> None:
    answer = await api.call("POST", "/b2mml", process_lots(("E-1", "OIL", "quarantine")))
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("application/xml")
    root = answer.xml()
    assert root.tag == f"{{{B2MML_NAMESPACE}}}AcknowledgeMaterialLot"
    expression = root.find("b:DataArea/b:Acknowledge/b:ResponseCriteria/b:ResponseExpression", NS)
    assert expression is not None and expression.get("actionCode") == "Accepted"
    assert root.findtext("b:DataArea/b:MaterialLot/b:Status", namespaces=NS) == "quarantine"
    if b2mml_schema_dir() is not None:
        b2mml_validator().validate(answer.body)
    (lot,) = await api.ledger.lots("E-1")
    assert (lot.material, str(lot.status)) == ("OIL", "quarantine")
    synced = await api.call(
        "POST",
        "/b2mml",
        process_lots(("E-1", "OIL", "released"), verb="Sync"),
        content_type="text/xml",
    )
    assert synced.status == 200 and synced.xml().tag == f"{{{B2MML_NAMESPACE}}}ConfirmBOD"
    (lot,) = await api.ledger.lots("E-1")
    assert str(lot.status) == "released"
    (change,) = [m for m in await api.ledger.history(lot="E-1")]
    assert (change.kind, change.user, str(change.source)) == (MovementKind.LOT_STATUS, "sap", "api")
    assert (await api.ledger.verify()).ok


async def test_a_refused_document_is_a_problem_with_its_path_and_applies_nothing(api: Api) -> None:
    bad = process_lots(("E-2", "OIL", "released"), ("E-3", "NO-SUCH", "released"))
    answer = await api.call("POST", "/b2mml", bad)
    assert answer.status in (409, 422), answer
    assert answer.headers["content-type"] == "application/problem+json"
    assert "NO-SUCH" in str(answer.json()["detail"])
    assert await api.ledger.lots(ids=["E-2", "E-3"]) == []  # the good first lot neither

    wrong_status = process_lots(("E-4", "OIL", "sunny"))
    answer = await api.call("POST", "/b2mml", wrong_status)
    problem = answer.json()
    assert answer.status == 422 and "sunny" in str(problem["detail"])
    assert "nothing applied" in str(problem["detail"])
    if b2mml_schema_dir() is None:  # the reader's own check names the path
        assert problem["field"] == "/ProcessMaterialLot/DataArea/MaterialLot[1]/Status"
    else:  # StatusType is free text in the XSD: the reader refuses it, at its path
        assert str(problem["field"]).endswith("MaterialLot[1]/Status")

    broken = await api.call("POST", "/b2mml", b"<ProcessMaterialLot")
    assert broken.status == 422 and "well-formed" in str(broken.json()["detail"])
    laughs = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    assert (await api.call("POST", "/b2mml", laughs)).status == 422
    assert await api.ledger.lots(ids=["E-4"]) == []


async def test_schema_errors_name_the_xsd_path(api: Api) -> None:
    if b2mml_schema_dir() is None:
        pytest.skip("needs MESA's B2MML XSDs (tests/standards.py says where)")
    out_of_order = process_lots(("E-5", "OIL", "released")).replace(
        b"<ID>E-5</ID><MaterialDefinitionID>OIL</MaterialDefinitionID>",
        b"<MaterialDefinitionID>OIL</MaterialDefinitionID><ID>E-5</ID>",
    )
    answer = await api.call("POST", "/b2mml", out_of_order)
    problem = answer.json()
    assert answer.status == 422 and "schema" in str(problem["detail"])
    assert "MaterialLot" in str(problem["field"])
    assert await api.ledger.lots(ids=["E-5"]) == []


async def test_only_an_engineer_posts_documents_and_only_xml(api: Api) -> None:
    document = process_lots(("E-6", "OIL", "released"))
    assert (await api.call("POST", "/b2mml", document, token=OPERATOR_TOKEN)).status == 403
    assert (await api.call("POST", "/b2mml", document, token=None)).status == 401
    as_json = await api.call("POST", "/b2mml", document, content_type="application/json")
    assert as_json.status == 415 and as_json.json()["field"] == "Content-Type"
    assert await api.ledger.lots(ids=["E-6"]) == []


async def test_material_information_and_movements_come_out_as_valid_documents(api: Api) -> None:
    for n, (unit, quantity) in enumerate((("DRUMS", "40"), ("DRUMS", "2"))):
        await api.ledger.post(
            PostingRequest(
                MovementKind.RECEIPT, OIL.id, LotId(f"M-{n}"), Decimal(quantity), "kg",
                to_unit=StorageUnitId(unit), user="wms",
            )
        )  # fmt: skip
    info = await api.call("GET", "/b2mml/material-information", token=OPERATOR_TOKEN)
    assert info.status == 200 and info.headers["content-type"].startswith("application/xml")
    lots = info.xml().findall("b:DataArea/b:MaterialInformation/b:MaterialLot", NS)
    assert {lot.findtext("b:ID", namespaces=NS) for lot in lots} == {"M-0", "M-1"}
    first = await api.call("GET", "/b2mml/movements?since=0&limit=1", token=OPERATOR_TOKEN)
    assert first.status == 200
    performance = first.xml().find("b:DataArea/b:OperationsPerformance", NS)
    assert performance is not None
    assert len(performance.findall("b:OperationsResponse", NS)) == 1
    cursor = int(first.headers["x-next-cursor"])
    rest = await api.call("GET", f"/b2mml/movements?since={cursor}", token=OPERATOR_TOKEN)
    assert rest.status == 200 and int(rest.headers["x-next-cursor"]) > cursor
    last = int(rest.headers["x-next-cursor"])
    none = await api.call("GET", f"/b2mml/movements?since={last}", token=OPERATOR_TOKEN)
    assert (none.status, none.body, int(none.headers["x-next-cursor"])) == (204, b"", last)
    if b2mml_schema_dir() is not None:
        for document in (info.body, first.body, rest.body):
            b2mml_validator().validate(document)


async def test_what_a_signature_policy_holds_is_a_202_naming_the_request(api: Api) -> None:
    await api.call("POST", "/b2mml", process_lots(("E-2", "OIL", "quarantine")))
    policy = SignaturePolicy(SignatureAction.LOT_STATUS, "released", Role.ENGINEER)
    assert await api.ledger.set_signature_policies((policy,))
    answer = await api.call("POST", "/b2mml", process_lots(("E-2", "OIL", "released"), verb="Sync"))
    assert answer.status == 202, answer
    if b2mml_schema_dir() is not None:
        b2mml_validator().validate(answer.body)
    status = answer.xml().find("b:DataArea/b:Confirm/b:ResponseCriteria/b:ChangeStatus", NS)
    assert status is not None and status.findtext("b:Code", namespaces=NS) == "Held"
    [pending] = await api.ledger.pending_requests()
    assert pending.request_id in (status.findtext("b:Description", namespaces=NS) or "")
    (lot,) = await api.ledger.lots("E-2")
    assert str(lot.status) == "quarantine", "nothing applied before the signature"
    # The ERP sends the same document again (it saw no answer): the same request.
    again = await api.call("POST", "/b2mml", process_lots(("E-2", "OIL", "released"), verb="Sync"))
    assert again.status == 202 and pending.request_id in again.body.decode()
    assert [p.request_id for p in await api.ledger.pending_requests()] == [pending.request_id]

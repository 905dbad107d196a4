"""Lot quality data and period close over OPC UA (issue 16): SetLotQuality, ClosePeriod
and the quality variables of `Lots/<LotID>` on a real InvopsOpcUaServer with the real
security stack and a real SQLite ledger, asyncua clients logged in by user name on an
ephemeral 127.0.0.1 port.

SetLotQuality (engineer) sets a lot's properties, retest and expiry dates and
certificate all or nothing; the lot's node shows them when the call answers (an empty
Properties array and '' keep what the lot has); a bad density, date or lot is
Bad_InvalidArgument with the argument marked and changes nothing; an operator may not
call it (audited). ClosePeriod (engineer) answers a `request:` id that
PendingRequests lists; ApproveRequest with the meaning `reviewed` closes the period.
"""

from __future__ import annotations

import json
import sqlite3
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua

from information_model import INSTANCES_NAMESPACE, TYPE_MODEL, TYPES_NAMESPACE
from inventory_core import Ledger, open_ledger
from inventory_core.clock import format_timestamp
from inventory_core.domain.lot_quality import LotQualityRequest, parse_property
from inventory_core.domain.model import LotId, Source
from inventory_core.domain.passwords import hash_password
from inventory_core.domain.signatures import (
    PERIOD_PREFIX,
    REQUEST_PREFIX,
    RequestState,
    SignatureAction,
    SignaturePolicy,
)
from inventory_core.domain.users import Role
from invops.config import InvopsConfig, parse_config
from invops.wiring import opcua_security, opcua_settings, signing_service
from opcua_server import InvopsOpcUaServer
from opcua_server.security import current_user, identity_tokens, secure_server_kwargs
from tests.followed_view import followed_view
from tests.polling import eventually

PASSWORDS = {"otto": "otto-pw", "erin": "erin-pw", "sam": "sam-pw"}

PLANT = f"""
[site]
enterprise = "ACME"
name = "PLANT1"
areas = ["SILOS"]

[opcua]
endpoint = "opc.tcp://127.0.0.1:0/invops"
allow_security_none = true

[[materials]]
id = "SUGAR"
base_uom = "kg"
default_lot_status = "released"

[[storage_units]]
id = "SI-201"
area = "SILOS"
kind = "silo"
capacity = 80
capacity_uom = "t"
material = "SUGAR"

[[users]]
name = "otto"
role = "operator"
password_hash = "{hash_password(PASSWORDS["otto"])}"

[[users]]
name = "erin"
role = "engineer"
password_hash = "{hash_password(PASSWORDS["erin"])}"

[[users]]
name = "sam"
role = "engineer"
full_name = "Sam Signer"
password_hash = "{hash_password(PASSWORDS["sam"])}"
"""

TIMEOUT_S = 15
LOT = "SUG-1"
RECEIPT = ("SUGAR", LOT, 100.0, "kg", "SI-201", "", "delivery")
TODAY = datetime.now(UTC).date()
QUALITY_VARIABLES = (
    "RetestDate",
    "RetestDue",
    "Certificate",
    "PropertyNames",
    "PropertyValues",
    "PropertyUnits",
    "ExpirationDate",
)


@dataclass
class Plant:
    config: InvopsConfig
    server: InvopsOpcUaServer
    ledger: Ledger
    db: Path

    @asynccontextmanager
    async def session(self, user: str) -> AsyncIterator[Session]:
        client = Client(self.server.endpoint_url, timeout=TIMEOUT_S)
        client.set_user(user)
        client.set_password(PASSWORDS[user])
        async with client:
            ns = await client.get_namespace_index(INSTANCES_NAMESPACE)
            tns = await client.get_namespace_index(TYPES_NAMESPACE)
            ledger = await client.nodes.objects.get_child([f"{ns}:Inventory", f"{ns}:Ledger"])
            yield Session(client, ledger, ns, tns)


@dataclass
class Session:
    client: Client
    ledger: Node
    ns: int
    tns: int

    async def call(self, method: str, *arguments: object) -> str:
        answer = await self.ledger.call_method(f"{self.tns}:{method}", *arguments)
        assert isinstance(answer, str)
        return answer

    async def set_quality(
        self,
        lot: str,
        properties: list[str],
        retest: str = "",
        expiry: str = "",
        certificate: str = "",
        reason: str = "CoA received",
    ) -> str:
        return await self.call(
            "SetLotQuality",
            lot,
            ua.Variant(properties, ua.VariantType.String),
            retest,
            expiry,
            certificate,
            reason,
        )

    async def result(self, method: str, *arguments: object) -> ua.CallMethodResult:
        """The whole CallMethodResult (the client raises on a Bad status otherwise)."""
        method_node = await self.ledger.get_child(f"{self.tns}:{method}")
        request = ua.CallMethodRequest()
        request.ObjectId = self.ledger.nodeid
        request.MethodId = method_node.nodeid
        request.InputArguments = [
            a if isinstance(a, ua.Variant) else ua.Variant(a, ua.VariantType.String)
            for a in arguments
        ]
        [result] = await self.client.uaclient.call([request])
        return result

    async def lot(self, lot: str, name: str) -> Any:
        node = await self.client.nodes.objects.get_child(
            [f"{self.ns}:Inventory", f"{self.ns}:Lots", f"{self.ns}:{lot}", f"{self.tns}:{name}"]
        )
        return await node.read_value()

    async def quality(self, lot: str) -> dict[str, Any]:
        return {name: await self.lot(lot, name) for name in QUALITY_VARIABLES}

    async def pending(self) -> list[str]:
        node = await self.ledger.get_child(f"{self.tns}:PendingRequests")
        return list(await node.read_value() or [])


@asynccontextmanager
async def _plant(tmp_path: Path, **server: Any) -> AsyncIterator[Plant]:
    config = parse_config(tomllib.loads(PLANT))
    db = tmp_path / "ledger.db"
    access = opcua_security(config)
    security = secure_server_kwargs(access, tmp_path / "pki")
    async with open_ledger(f"sqlite+aiosqlite:///{db}", writer_id="qual-t", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        await ledger.set_signature_policies(config.signature_policies())
        service = signing_service(config, ledger)
        async with followed_view(config, ledger) as view:
            running = InvopsOpcUaServer(
                opcua_settings(config),
                ledger,
                view=view,
                refresh_debounce_s=0.05,
                identity_tokens=identity_tokens(access),
                current_user=current_user,
                signing=service,
                **server,
                **security,
            )
            try:
                async with running:
                    plant = Plant(config, running, ledger, db)
                    async with plant.session("otto") as otto:
                        await otto.call("PostReceipt", *RECEIPT)

                        async def lot_shown() -> bool:
                            return bool(await otto.lot(LOT, "Quantity") == 100.0)

                        await eventually(
                            lot_shown, what=f"Lots/{LOT}", ignoring=(ua.uaerrors.BadNoMatch,)
                        )
                    yield plant
            finally:
                service.close()
                security["user_manager"].close()


@pytest_asyncio.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    async with _plant(tmp_path) as running:
        yield running


def _audit(db: Path, action: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            'SELECT "user", object_type, object_id, new FROM audit WHERE action = ? ORDER BY id',
            (action,),
        ).fetchall()
    return [(u, t, i, json.loads(new) if new else {}) for u, t, i, new in rows]


def _marked(result: ua.CallMethodResult) -> list[int]:
    """Indices of the input arguments the server marked as at fault."""
    return [i for i, r in enumerate(result.InputArgumentResults) if not r.is_good()]


NOTHING = {
    "RetestDate": "",
    "RetestDue": False,
    "Certificate": "",
    "PropertyNames": [],
    "PropertyValues": [],
    "PropertyUnits": [],
    "ExpirationDate": None,
}


# --- the model --------------------------------------------------------------------------


def test_the_quality_variables_and_methods_are_appended_to_the_model() -> None:
    ledger = TYPE_MODEL.object_type("LedgerType")
    quality, close = ledger.method("SetLotQuality"), ledger.method("ClosePeriod")
    assert [a.name for a in quality.inputs] == [
        "LotID", "Properties", "RetestDate", "ExpiryDate", "Certificate", "Reason",
    ]  # fmt: skip
    assert [a.name for a in quality.inputs if a.array] == ["Properties"]
    assert [a.name for a in close.inputs] == ["From", "To", "Reason", "IdempotencyKey"]
    for method in (quality, close):
        assert {a.data_type for a in (*method.inputs, *method.outputs)} == {"String"}
        assert method.required_role == "engineer"
    assert [a.name for a in quality.outputs] == ["LotID"]
    assert [a.name for a in close.outputs] == ["RequestId"]
    lot = TYPE_MODEL.object_type("MaterialLotType")
    assert lot.variable("RetestDue").data_type == "Boolean"
    for name in ("PropertyNames", "PropertyValues", "PropertyUnits"):
        assert (lot.variable(name).data_type, lot.variable(name).value_rank) == ("String", 1)
    ids = TYPE_MODEL.node_ids()  # appended: every id of 1.2.0 is kept
    assert ids["MaterialLotType.ChildQuantities"] == 6130
    assert [ids[f"MaterialLotType.{n}"] for n in QUALITY_VARIABLES[:-1]] == [
        6140, 6150, 6160, 6170, 6180, 6190,
    ]  # fmt: skip
    assert ids["LedgerType.RejectRequest"] == 8610
    assert ids["LedgerType.SetLotQuality"] == 8620 and ids["LedgerType.ClosePeriod"] == 8630
    assert tuple(map(int, TYPE_MODEL.version.split("."))) >= (1, 3, 0)


# --- SetLotQuality ------------------------------------------------------------------------


async def test_set_lot_quality_shows_on_the_lot_when_the_call_answers(plant: Plant) -> None:
    retest, expiry = TODAY + timedelta(days=90), TODAY + timedelta(days=365)
    async with plant.session("erin") as erin:
        assert await erin.quality(LOT) == NOTHING
        answer = await erin.set_quality(
            LOT,
            ["assay=99.6 %", "density=0.7900 kg/L", "appearance=clear"],
            retest.isoformat(),
            expiry.isoformat(),
            "CoA-4711",
        )
        assert answer == LOT
        assert await erin.quality(LOT) == {  # no waiting: current when the call answers
            "RetestDate": retest.isoformat(),
            "RetestDue": False,
            "Certificate": "CoA-4711",
            "PropertyNames": ["assay", "density", "appearance"],
            "PropertyValues": ["99.6", "0.7900", "clear"],
            "PropertyUnits": ["%", "kg/L", ""],
            "ExpirationDate": datetime(expiry.year, expiry.month, expiry.day, tzinfo=UTC),
        }

        # an empty array and '' keep what the lot has: only the retest date changes
        passed = TODAY - timedelta(days=1)
        assert await erin.set_quality(LOT, [], passed.isoformat(), reason="retest moved") == LOT
        shown = await erin.quality(LOT)
        assert (shown["RetestDate"], shown["RetestDue"]) == (passed.isoformat(), True)
        assert shown["Certificate"] == "CoA-4711"
        assert shown["PropertyNames"] == ["assay", "density", "appearance"]

    [stored] = await plant.ledger.lots(LOT)
    assert stored.quality.retest == passed and stored.quality.certificate == "CoA-4711"
    assert stored.expiry == expiry
    assert [p.unit for p in stored.quality.properties] == ["%", "kg/L", ""]
    [first, second] = [
        r for _, r in await plant.ledger.audit_records("lot", LOT) if r.action == "quality"
    ]
    assert first.user == second.user == "erin" and "retest moved" in second.reason
    assert (await plant.ledger.verify()).ok


async def test_under_a_master_data_policy_set_lot_quality_answers_the_held_request(
    plant: Plant,
) -> None:
    policy = SignaturePolicy(SignatureAction.MASTER_DATA, "approved", Role.ENGINEER)
    assert await plant.ledger.set_signature_policies((policy,))
    async with plant.session("erin") as erin:
        request_id = await erin.set_quality(LOT, ["assay=99.6 %"], certificate="CoA-7")
        assert request_id.startswith(REQUEST_PREFIX)
        assert await erin.pending() == [request_id]
        assert await erin.quality(LOT) == NOTHING, "nothing changes before the signature"
        posted = await erin.call("ApproveRequest", request_id, "approved", "sam", PASSWORDS["sam"])
        assert posted == f"lot:{LOT}" and await erin.pending() == []

        async def shown() -> bool:
            return bool(await erin.lot(LOT, "Certificate") == "CoA-7")

        await eventually(shown, what=f"Lots/{LOT}/Certificate after the signature")


async def test_bad_quality_data_is_refused_with_its_argument_and_changes_nothing(
    plant: Plant,
) -> None:
    async with plant.session("erin") as erin:
        await erin.set_quality(LOT, ["assay=99.6 %"], certificate="CoA-1")
        before, [lot_before] = await erin.quality(LOT), await plant.ledger.lots(LOT)
        properties = ua.VariantType.String

        def entries(*texts: str) -> ua.Variant:
            return ua.Variant(list(texts), properties)

        result = await erin.result(
            "SetLotQuality", LOT, entries("density=-1 kg/L"), "", "", "CoA-2", "new CoA"
        )
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument
        assert _marked(result) == [1]
        assert "density" in str(result.InputArgumentDiagnosticInfos[1].AdditionalInfo)
        for arguments, at_fault in (
            ((LOT, entries("density=0.8 furlongs"), "", "", "", "why"), 1),  # not a density unit
            ((LOT, entries("assay=1", "assay=2"), "", "", "", "why"), 1),  # repeated name
            ((LOT, entries("assay"), "", "", "", "why"), 1),  # not NAME=VALUE
            ((LOT, entries(""), "", "", "", "why"), 1),  # an empty entry
            ((LOT, entries(), "2026-13-01", "", "", "why"), 2),  # not a date
            ((LOT, entries(), "", "tomorrow", "", "why"), 3),
            ((LOT, entries(), "", "", "CoA\x00", "why"), 4),  # a control character
            ((LOT, entries(), "", "", "CoA-2", ""), 5),  # a reason is required
            (("NOPE", entries(), "", "", "CoA-2", "why"), 0),  # an unknown lot
            ((LOT, ua.Variant(1.0, ua.VariantType.Double), "", "", "", "why"), 1),
        ):
            result = await erin.result("SetLotQuality", *arguments)
            assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument, arguments
            assert _marked(result) == [at_fault], arguments
        # nothing to set: no single argument is at fault
        result = await erin.result("SetLotQuality", LOT, entries(), "", "", "", "why")
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument
        assert _marked(result) == []
        assert "nothing to set" in str(result.InputArgumentDiagnosticInfos[0].AdditionalInfo)
        assert await erin.quality(LOT) == before
    assert await plant.ledger.lots(LOT) == [lot_before]


async def test_an_operator_may_not_set_lot_quality_and_the_attempt_is_audited(
    plant: Plant,
) -> None:
    async with plant.session("otto") as otto:
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await otto.set_quality(LOT, ["assay=99.6 %"], certificate="CoA-1")
        assert await otto.quality(LOT) == NOTHING
    [lot] = await plant.ledger.lots(LOT)
    assert lot.quality.is_empty()
    denied = _audit(plant.db, "denied")
    assert [(u, t, i) for u, t, i, _ in denied] == [("otto", "opcua_method", "SetLotQuality")]
    assert denied[0][3]["required_role"] == "engineer"


async def test_quality_set_through_another_interface_shows_at_once(
    tmp_path: Path,
) -> None:
    """Set through the ledger directly (as the HTTP API or B2MML do in the service): no
    movement, but the ledger tells the mirror (subscribe_lots), long before a resync."""
    async with _plant(tmp_path, resync_interval_s=3600) as plant:
        await plant.ledger.set_lot_quality(
            LotQualityRequest(
                LotId(LOT),
                "CoA received",
                "qa1",
                Source.CLI,
                properties=(parse_property("moisture=0.2 %"),),
                retest=date(2000, 1, 1),
                certificate="CoA-9",
            )
        )
        async with plant.session("otto") as otto:

            async def shown() -> bool:
                quality = await otto.quality(LOT)
                return bool(
                    quality["Certificate"] == "CoA-9"
                    and quality["RetestDue"] is True
                    and quality["PropertyNames"] == ["moisture"]
                    and quality["PropertyUnits"] == ["%"]
                )

            await eventually(shown, what="the lot node to show the quality set elsewhere")


# --- ClosePeriod --------------------------------------------------------------------------


async def test_close_period_is_held_and_the_reviewed_signature_closes_it(plant: Plant) -> None:
    start = "2026-01-01T00:00:00Z"
    end = datetime.now(UTC).replace(microsecond=0).isoformat()  # passed: the receipt is in it
    async with plant.session("erin") as erin:
        request_id = await erin.call("ClosePeriod", start, end, "month end", "close-1")
        assert request_id.startswith(REQUEST_PREFIX)
        assert await erin.pending() == [request_id]  # current when the call answers
        assert await erin.call("ClosePeriod", start, end, "month end", "close-1") == request_id
        assert await plant.ledger.closed_periods() == []
        pending = await plant.ledger.pending_request(request_id)
        assert (pending.meaning, pending.role, pending.requested_by) == (
            "reviewed",
            "engineer",
            "erin",
        )

        with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # the policy's meaning
            await erin.call("ApproveRequest", request_id, "approved", "sam", PASSWORDS["sam"])
        closed_id = await erin.call(
            "ApproveRequest", request_id, "reviewed", "sam", PASSWORDS["sam"]
        )
        assert closed_id.startswith(PERIOD_PREFIX)
        assert await erin.pending() == []

        # the same period again overlaps the closed one
        result = await erin.result("ClosePeriod", start, end, "again", "")
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument
        assert "overlaps" in str(result.InputArgumentDiagnosticInfos[_marked(result)[0]])

    [closed] = await plant.ledger.closed_periods()
    # the ledger's own timestamps: ISO 8601 in, fixed-width UTC text kept
    assert (closed.start, closed.end) == (
        format_timestamp(datetime(2026, 1, 1, tzinfo=UTC)),
        format_timestamp(datetime.fromisoformat(end)),
    )
    assert closed_id == f"{PERIOD_PREFIX}{closed.id}" and closed.requested_by == "erin"
    request = await plant.ledger.pending_request(request_id)
    assert request.state is RequestState.POSTED
    assert (await plant.ledger.verify()).ok


async def test_bad_close_period_arguments_and_an_operator_are_refused(plant: Plant) -> None:
    now = datetime.now(UTC)
    past, future = (now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()
    async with plant.session("erin") as erin:
        for arguments, at_fault in (
            (("yesterday", past, "why", ""), 0),  # not ISO 8601
            ((past, "2026-02-30", "why", ""), 1),
            (("2026-01-01", future, "why", ""), 1),  # the end has not passed
            ((past, "2026-01-01", "why", ""), 1),  # ends before it starts
            (("2026-01-01", past, "", ""), 2),  # a reason is required
            (("2026-01-01", past, "why", " key"), 3),  # a key with leading whitespace
        ):
            result = await erin.result("ClosePeriod", *arguments)
            assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument, arguments
            assert _marked(result) == [at_fault], arguments
        assert await erin.pending() == []
    async with plant.session("otto") as otto:
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await otto.call("ClosePeriod", "2026-01-01", past, "month end", "")
    assert await plant.ledger.pending_requests() == []
    assert await plant.ledger.closed_periods() == []

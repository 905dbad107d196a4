"""Electronic signatures over OPC UA (issue 16): ApproveRequest, RejectRequest and
Ledger/PendingRequests on a real InvopsOpcUaServer with the real security stack and a
real SQLite ledger, asyncua clients logged in by user name on 127.0.0.1.

An adjustment above the `[[signatures]]` threshold answers `request:<id>` and posts
nothing; PendingRequests lists it; the signer is re-authenticated by UserName and
Password whatever the session: a wrong password, or a signer without the policy's
role, is Bad_UserAccessDenied and posts nothing; the right one posts the adjustment
once and empties PendingRequests; signing it again is Bad_InvalidState. A viewer
session may not call either method (audited, without the password).
"""

from __future__ import annotations

import json
import sqlite3
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua

from information_model import INSTANCES_NAMESPACE, TYPE_MODEL, TYPES_NAMESPACE
from inventory_core import Ledger, open_ledger
from inventory_core.domain.model import Movement, MovementKind, Source
from inventory_core.domain.passwords import hash_password
from inventory_core.domain.signatures import REQUEST_PREFIX, RequestState
from invops.config import InvopsConfig, parse_config
from invops.wiring import opcua_security, opcua_settings, signing_service
from opcua_server import InvopsOpcUaServer
from opcua_server.security import current_user, identity_tokens, secure_server_kwargs
from tests.followed_view import followed_view
from tests.polling import eventually

PASSWORDS = {"vera": "vera-pw", "otto": "otto-pw", "erin": "erin-pw", "sam": "sam-pw"}

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

[[signatures]]
action = "adjustment"
meaning = "approved"
role = "engineer"
threshold = 10

[[users]]
name = "vera"
role = "viewer"
password_hash = "{hash_password(PASSWORDS["vera"])}"

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


def _adjustment(delta: float, key: str = "") -> tuple[object, ...]:
    return ("SI-201", LOT, delta, "kg", "DAMAGE", key, "found wet")


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
            yield Session(client, ledger, tns)

    async def movements(self) -> list[Movement]:
        return await self.ledger.export()


@dataclass
class Session:
    client: Client
    ledger: Node
    tns: int

    async def call(self, method: str, *arguments: object) -> str:
        answer = await self.ledger.call_method(f"{self.tns}:{method}", *arguments)
        assert isinstance(answer, str)
        return answer

    async def pending(self) -> list[str]:
        node = await self.ledger.get_child(f"{self.tns}:PendingRequests")
        value = await node.read_value()
        return list(value or [])

    async def result(self, method: str, *arguments: str) -> ua.CallMethodResult:
        """The whole CallMethodResult (the client raises on a Bad status otherwise)."""
        method_node = await self.ledger.get_child(f"{self.tns}:{method}")
        request = ua.CallMethodRequest()
        request.ObjectId = self.ledger.nodeid
        request.MethodId = method_node.nodeid
        request.InputArguments = [ua.Variant(a, ua.VariantType.String) for a in arguments]
        [result] = await self.client.uaclient.call([request])
        return result


@asynccontextmanager
async def _plant(tmp_path: Path, *, signing: bool = True, **server: Any) -> AsyncIterator[Plant]:
    config = parse_config(tomllib.loads(PLANT))
    db = tmp_path / "ledger.db"
    access = opcua_security(config)
    security = secure_server_kwargs(access, tmp_path / "pki")
    url = f"sqlite+aiosqlite:///{db}"
    async with open_ledger(url, writer_id="sign-t", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        await ledger.set_signature_policies(config.signature_policies())
        service = signing_service(config, ledger) if signing else None
        async with followed_view(config, ledger) as view:
            running = InvopsOpcUaServer(
                opcua_settings(config),
                ledger,
                view=view,
                identity_tokens=identity_tokens(access),
                current_user=current_user,
                signing=service,
                **server,
                **security,
            )
            try:
                async with running:
                    yield Plant(config, running, ledger, db)
            finally:
                if service is not None:
                    service.close()
                security["user_manager"].close()


@pytest_asyncio.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    async with _plant(tmp_path) as running:
        async with running.session("otto") as otto:
            await otto.call("PostReceipt", *RECEIPT)
        yield running


async def _held(plant: Plant, delta: float = 50.0, key: str = "") -> str:
    """An engineer's adjustment above the threshold: its request id."""
    async with plant.session("erin") as erin:
        answer = await erin.call("PostAdjustment", *_adjustment(delta, key))
    assert answer.startswith(REQUEST_PREFIX)
    return answer


def _audit(db: Path, action: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            'SELECT "user", object_type, object_id, new FROM audit WHERE action = ? ORDER BY id',
            (action,),
        ).fetchall()
    return [(u, t, i, json.loads(new) if new else {}) for u, t, i, new in rows]


def _kinds(movements: list[Movement]) -> list[MovementKind]:
    return [m.kind for m in movements]


# --- the model --------------------------------------------------------------------------


def test_the_signing_methods_and_pending_requests_are_in_the_model() -> None:
    ledger = TYPE_MODEL.object_type("LedgerType")
    approve, reject = ledger.method("ApproveRequest"), ledger.method("RejectRequest")
    assert [a.name for a in approve.inputs] == ["RequestId", "Meaning", "UserName", "Password"]
    assert [a.name for a in reject.inputs] == ["RequestId", "Reason", "UserName", "Password"]
    for method in (approve, reject):
        assert {a.data_type for a in (*method.inputs, *method.outputs)} == {"String"}
        assert method.required_role == "operator"
    pending = ledger.variable("PendingRequests")
    assert (pending.data_type, pending.value_rank) == ("String", 1)
    ids = TYPE_MODEL.node_ids()  # appended: every id of 1.1.0 is kept
    assert ids["LedgerType.OpenAdvices"] == 8010 and ids["LedgerType.PendingRequests"] == 8020
    assert ids["LedgerType.PostProduction"] == 8590 and ids["LedgerType.ApproveRequest"] == 8600
    assert ids["LedgerType.RejectRequest"] == 8610
    # 1.3.0 appended lot quality (test_opcua_lot_quality)
    assert tuple(map(int, TYPE_MODEL.version.split("."))) >= (1, 2, 0)


# --- approving ----------------------------------------------------------------------------


async def test_a_held_adjustment_posts_once_on_the_right_signature(plant: Plant) -> None:
    before = await plant.movements()
    request_id = await _held(plant)
    assert await plant.movements() == before  # held: nothing posted
    async with plant.session("otto") as otto:
        assert await otto.pending() == [request_id]
        # the signer is re-authenticated: a wrong password is refused, posts nothing
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await otto.call("ApproveRequest", request_id, "approved", "sam", "wrong")
        # the signer's own role counts, not the session's: an operator may not sign
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await otto.call("ApproveRequest", request_id, "approved", "otto", PASSWORDS["otto"])
        # the policy's meaning
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await otto.call("ApproveRequest", request_id, "reviewed", "sam", PASSWORDS["sam"])
        assert await plant.movements() == before
        assert await otto.pending() == [request_id]
        assert (await plant.ledger.pending_request(request_id)).signatures == ()

        posted = await otto.call("ApproveRequest", request_id, "approved", "sam", PASSWORDS["sam"])
        assert not posted.startswith(REQUEST_PREFIX)
        assert await otto.pending() == []  # current when the call answers
        after = await plant.movements()
        assert _kinds(after[len(before) :]) == [MovementKind.ADJUSTMENT]
        movement = await plant.ledger.movement(posted)
        assert movement.quantity == 50 and movement.user == "erin"
        assert movement.details["request"] == request_id
        [signature] = movement.details["signatures"]
        assert (signature["signer"], signature["printed_name"]) == ("sam", "Sam Signer")

        # signed again: the request is closed, nothing changes
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await otto.call("ApproveRequest", request_id, "approved", "erin", PASSWORDS["erin"])
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await otto.call("RejectRequest", request_id, "too late", "erin", PASSWORDS["erin"])
        assert await plant.movements() == after
    request = await plant.ledger.pending_request(request_id)
    assert request.state is RequestState.POSTED and request.outcome == posted
    failed = _audit(plant.db, "signature-failed")
    assert [(u, i) for u, _, i, _ in failed] == [("sam", request_id)]
    [signed] = _audit(plant.db, "signature")
    assert signed[0] == "sam"
    assert (await plant.ledger.verify()).ok


class _Events:
    """Subscription handler collecting the events it is sent."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.events.append(event)


async def test_the_movement_event_shows_the_signatures_it_was_posted_on(plant: Plant) -> None:
    request_id = await _held(plant)
    async with plant.session("otto") as otto:
        event_type = await otto.client.nodes.base_event_type.get_child(
            f"{otto.tns}:InventoryMovementEventType"
        )
        inbox = _Events()
        subscription = await otto.client.create_subscription(50, inbox)
        try:
            await subscription.subscribe_events(otto.ledger, event_type)
            unsigned = await otto.call(
                "PostReceipt", "SUGAR", "SUG-E9", 1.0, "kg", "SI-201", "", ""
            )
            posted = await otto.call(
                "ApproveRequest", request_id, "approved", "sam", PASSWORDS["sam"]
            )

            def event(movement_id: str) -> Any:
                found = [e for e in inbox.events if e.MovementId == movement_id]
                return found[0] if found else None

            signed = await eventually(lambda: event(posted), "the signed movement's event")
            assert signed.RequestId == request_id and signed.User == "erin"
            [line] = signed.Signatures
            stamp = (await plant.ledger.movement(posted)).details["signatures"][0]["signed_at"]
            assert line == f"Sam Signer (sam), {stamp}: approved"
            plain = await eventually(lambda: event(unsigned), "the receipt's event")
            assert (plain.RequestId, list(plain.Signatures or [])) == ("", [])
        finally:
            await subscription.delete()


async def test_an_adjustment_below_the_threshold_posts_at_once(plant: Plant) -> None:
    async with plant.session("erin") as erin:
        posted = await erin.call("PostAdjustment", *_adjustment(5.0))
        assert not posted.startswith(REQUEST_PREFIX)
        assert (await plant.ledger.movement(posted)).kind is MovementKind.ADJUSTMENT
        assert await erin.pending() == []


async def test_a_held_request_replayed_by_its_key_answers_the_same_id(plant: Plant) -> None:
    first = await _held(plant, key="adj-1")
    assert await _held(plant, key="adj-1") == first
    async with plant.session("otto") as otto:
        assert await otto.pending() == [first]


# --- rejecting ----------------------------------------------------------------------------


async def test_a_rejected_request_posts_nothing(plant: Plant) -> None:
    before = await plant.movements()
    kept, rejected = await _held(plant, 20.0), await _held(plant, 30.0)
    async with plant.session("otto") as otto:
        assert await otto.pending() == [kept, rejected]  # oldest first
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await otto.call("RejectRequest", rejected, "wrong lot", "sam", "nope")
        with pytest.raises(ua.uaerrors.BadInvalidArgument):  # a rejection needs its reason
            await otto.call("RejectRequest", rejected, "", "sam", PASSWORDS["sam"])
        answer = await otto.call("RejectRequest", rejected, "wrong lot", "sam", PASSWORDS["sam"])
        assert answer == rejected
        assert await otto.pending() == [kept]
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await otto.call("ApproveRequest", rejected, "approved", "sam", PASSWORDS["sam"])
    assert await plant.movements() == before
    request = await plant.ledger.pending_request(rejected)
    assert request.state is RequestState.REJECTED and request.outcome == "wrong lot"
    assert [s.reason for s in request.signatures] == ["wrong lot"]


# --- refusals -----------------------------------------------------------------------------


async def test_a_viewer_session_may_not_sign_and_the_password_is_not_audited(
    plant: Plant,
) -> None:
    request_id = await _held(plant)
    async with plant.session("vera") as vera:
        assert await vera.pending() == [request_id]  # viewers may read it
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await vera.call("ApproveRequest", request_id, "approved", "sam", PASSWORDS["sam"])
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await vera.call("RejectRequest", request_id, "no", "sam", PASSWORDS["sam"])
    assert (await plant.ledger.pending_request(request_id)).state is RequestState.PENDING
    denied = _audit(plant.db, "denied")
    assert [(u, t, i) for u, t, i, _ in denied] == [("vera", "opcua_method", "ApproveRequest")]
    assert denied[0][3]["arguments"] == [request_id, "approved", "sam", "***"]
    with sqlite3.connect(plant.db) as conn:
        dump = "\n".join(conn.iterdump())
    assert PASSWORDS["sam"] not in dump


async def test_bad_arguments_are_refused_before_anyone_signs(plant: Plant) -> None:
    request_id = await _held(plant)
    sam = PASSWORDS["sam"]
    async with plant.session("otto") as otto:
        unknown = REQUEST_PREFIX + "00000000-0000-0000-0000-000000000000"
        result = await otto.result("ApproveRequest", unknown, "approved", "sam", sam)
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument
        assert [r.value for r in result.InputArgumentResults] == [
            ua.StatusCodes.BadInvalidArgument,
            ua.StatusCodes.Good,
            ua.StatusCodes.Good,
            ua.StatusCodes.Good,
        ]
        assert "no pending request" in str(result.InputArgumentDiagnosticInfos[0].AdditionalInfo)
        for arguments in (
            ("", "approved", "sam", sam),  # no request
            (request_id, "", "sam", sam),  # no meaning
            (request_id, "approved", "", sam),  # no signer
            (request_id, "approved", "sam", ""),  # no password
            (request_id, "approved", "sam\x00", sam),  # a name with a control character
            (request_id, "approved", "sam", "x" * 5000),  # a password too long to hash
        ):
            result = await otto.result("ApproveRequest", *arguments)
            assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument, arguments
            assert "x" * 100 not in str(result.InputArgumentDiagnosticInfos)
        with pytest.raises(ua.uaerrors.BadArgumentsMissing):
            await otto.call("ApproveRequest", request_id, "approved", "sam")
        with pytest.raises(ua.uaerrors.BadInvalidArgument):  # a Double where a String is
            await otto.call("ApproveRequest", request_id, "approved", "sam", 1.0)
        assert await otto.pending() == [request_id]
    assert (await plant.ledger.pending_request(request_id)).signatures == ()
    assert _audit(plant.db, "signature-failed") == []  # no password was checked


async def test_without_a_signing_service_the_methods_are_not_supported(tmp_path: Path) -> None:
    async with _plant(tmp_path, signing=False) as plant:
        async with plant.session("otto") as otto:
            await otto.call("PostReceipt", *RECEIPT)
        request_id = await _held(plant)
        async with plant.session("otto") as otto:
            with pytest.raises(ua.uaerrors.BadNotSupported):
                await otto.call("ApproveRequest", request_id, "approved", "sam", PASSWORDS["sam"])
            with pytest.raises(ua.uaerrors.BadNotSupported):
                await otto.call("RejectRequest", request_id, "no", "sam", PASSWORDS["sam"])
            assert await otto.pending() == [request_id]
        assert (await plant.ledger.pending_request(request_id)).state is RequestState.PENDING


# --- kept current -------------------------------------------------------------------------


async def test_requests_signed_through_another_interface_leave_the_list(tmp_path: Path) -> None:
    """Signed through the service directly (as the HTTP API does): the ledger tells the
    mirror (subscribe_requests), which takes it off PendingRequests at once, long before
    the next full resync."""
    async with _plant(tmp_path, resync_interval_s=3600) as plant:
        async with plant.session("otto") as otto:
            await otto.call("PostReceipt", *RECEIPT)
        request_id = await _held(plant)
        service = signing_service(plant.config, plant.ledger)
        try:
            async with plant.session("vera") as vera:
                assert await vera.pending() == [request_id]
                outcome = await service.reject(
                    request_id, "sam", PASSWORDS["sam"], "duplicate", source=Source.API
                )
                assert outcome.request.state is RequestState.REJECTED

                async def cleared() -> bool:
                    return await vera.pending() == []

                await eventually(cleared, what="PendingRequests to drop the rejected request")
        finally:
            service.close()

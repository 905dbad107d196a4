"""Hostile method arguments against a real asyncua server and client (issue 12, items 7, 9,
10, 11): every argument of the wrong shape is refused for that argument (no traceback, no
Bad_InternalError), refused characters are refused naming the argument, long values are
not echoed whole into the response or the log, and a request the database refuses fails
alone with Bad_InvalidArgument while the server keeps posting.

One server for the module, on a real SQLite ledger whose database refuses one value
(a trigger the test installs: reason 'poison').
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from information_model import INSTANCES_NAMESPACE, TYPE_MODEL, TYPES_NAMESPACE, MethodDef
from inventory_core import Ledger, open_ledger
from inventory_core.store import upgrade_schema
from invops.config import parse_config
from invops.wiring import opcua_settings
from opcua_server import InvopsOpcUaServer
from tests.integration.test_opcua_server import PLANT, TIMEOUT_S, Caller

pytestmark = pytest.mark.asyncio(loop_scope="module")

METHODS: list[MethodDef] = list(TYPE_MODEL.object_type("LedgerType").methods)
TRIGGER = """
CREATE TRIGGER refuse_poison BEFORE INSERT ON movements WHEN NEW.reason = 'poison'
BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;
"""
# "" leaves these out (SetLotQuality: RetestDate, ExpiryDate and Certificate keep the lot's).
OPTIONAL = {"IdempotencyKey", "Reason", "Comment", "RetestDate", "ExpiryDate", "Certificate"}
DRAWS = {"PostIssue", "PostTransfer", "PostScrap"}  # an empty LotID: the unit picks the lots
CAP = 400  # no diagnostic or log line about a call grows with what the caller sent


@dataclass
class Server:
    ledger: Ledger
    client: Client
    caller: Caller
    tns: int
    ledger_node: Any
    db: Path

    async def call(self, method: str, *arguments: ua.Variant) -> ua.CallMethodResult:
        method_node = await self.ledger_node.get_child(f"{self.tns}:{method}")
        request = ua.CallMethodRequest(
            ObjectId=self.ledger_node.nodeid,
            MethodId=method_node.nodeid,
            InputArguments=list(arguments),
        )
        (result,) = await self.client.uaclient.call([request])
        return result


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    config = parse_config(tomllib.loads(PLANT))
    db = tmp_path_factory.mktemp("hostile") / "ledger.db"
    url = f"sqlite+aiosqlite:///{db}"
    await upgrade_schema(url)
    with sqlite3.connect(db) as conn:
        conn.executescript(TRIGGER)
    caller = Caller()
    async with open_ledger(url, writer_id="hostile-t") as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        opcua = InvopsOpcUaServer(
            opcua_settings(config), ledger, current_user=caller, refresh_debounce_s=0.05
        )
        async with opcua, Client(opcua.endpoint_url, timeout=TIMEOUT_S) as client:
            ns = await client.get_namespace_index(INSTANCES_NAMESPACE)
            tns = await client.get_namespace_index(TYPES_NAMESPACE)
            node = await client.nodes.objects.get_child([f"{ns}:Inventory", f"{ns}:Ledger"])
            yield Server(ledger, client, caller, tns, node, db)


def good_arguments(method: MethodDef) -> list[ua.Variant]:
    """Well-shaped arguments (their values may still be refused by the ledger); the
    arrays of PostProduction one element each, so that their lengths agree."""
    return [
        ua.Variant([1.0] if a.array else 1.0, ua.VariantType.Double)
        if a.data_type == "Double"
        else ua.Variant(["X"] if a.array else "X", ua.VariantType.String)
        for a in method.inputs
    ]


# Wrong shapes for a scalar argument: arrays, matrices, structures, null, other types.
COMMON_SHAPES: dict[str, ua.Variant] = {
    "ExtensionObject": ua.Variant(ua.Argument(Name="x"), ua.VariantType.ExtensionObject),
    "LocalizedText": ua.Variant(ua.LocalizedText("1")),
    "ByteString": ua.Variant(b"1", ua.VariantType.ByteString),
    "NodeId": ua.Variant(ua.NodeId(1, 0)),
    "Boolean": ua.Variant(True),
    "Int32[]": ua.Variant([1, 2], ua.VariantType.Int32),
    "Guid": ua.Variant(uuid.UUID(int=1)),
    "DateTime": ua.Variant(datetime(2026, 1, 1, tzinfo=UTC)),
}
DOUBLE_SHAPES: dict[str, ua.Variant] = {
    **COMMON_SHAPES,
    "Double[]": ua.Variant([1.0, 2.0], ua.VariantType.Double),
    "empty Double[]": ua.Variant([], ua.VariantType.Double),
    "Double[1]": ua.Variant([1.0], ua.VariantType.Double),
    "Double matrix": ua.Variant([[1.0, 2.0], [3.0, 4.0]], ua.VariantType.Double),
    "Null": ua.Variant(),
    "String": ua.Variant("1", ua.VariantType.String),
}
STRING_SHAPES: dict[str, ua.Variant] = {
    **COMMON_SHAPES,
    "String[]": ua.Variant(["a", "b"], ua.VariantType.String),
    "String[1]": ua.Variant(["X"], ua.VariantType.String),
    "empty String[]": ua.Variant([], ua.VariantType.String),
    "null String[]": ua.Variant([None], ua.VariantType.String),
    "String matrix": ua.Variant([["a"], ["b"]], ua.VariantType.String),
    "Double": ua.Variant(1.0, ua.VariantType.Double),
    "Int32": ua.Variant(1, ua.VariantType.Int32),
}


# Wrong shapes for an array argument (an empty or null array is a legal one: no inputs).
_SCALAR_SHAPES = ("Int32[]", "ExtensionObject", "LocalizedText", "ByteString", "NodeId",
                  "Boolean", "Guid", "DateTime")  # fmt: skip
DOUBLE_ARRAY_SHAPES: dict[str, ua.Variant] = {
    **{k: v for k, v in COMMON_SHAPES.items() if k != "Int32[]"},  # Int32[] is numeric
    "Double": ua.Variant(1.0, ua.VariantType.Double),
    "String[]": ua.Variant(["1"], ua.VariantType.String),
    "Double matrix": ua.Variant([[1.0, 2.0], [3.0, 4.0]], ua.VariantType.Double),
}
STRING_ARRAY_SHAPES: dict[str, ua.Variant] = {
    **{k: COMMON_SHAPES[k] for k in _SCALAR_SHAPES},
    "String": ua.Variant("X", ua.VariantType.String),
    "Double[]": ua.Variant([1.0], ua.VariantType.Double),
    "String matrix": ua.Variant([["a"], ["b"]], ua.VariantType.String),
}


def shape_cases() -> list[Any]:
    cases = []
    for method in METHODS:
        for index, argument in enumerate(method.inputs):
            if argument.array:
                shapes = (
                    DOUBLE_ARRAY_SHAPES if argument.data_type == "Double" else STRING_ARRAY_SHAPES
                )
                for shape, variant in shapes.items():
                    case = f"{method.browse_name}-{argument.name}-{shape}"
                    cases.append(pytest.param(method, index, variant, id=case))
                continue
            shapes = DOUBLE_SHAPES if argument.data_type == "Double" else dict(STRING_SHAPES)
            draw_lot = argument.name == "LotID" and method.browse_name in DRAWS
            if argument.data_type == "String" and argument.name not in OPTIONAL and not draw_lot:
                # A null String (or Variant) is the empty string: it leaves an optional
                # argument out and is "missing" for a required one.
                shapes |= {
                    "Null": ua.Variant(),
                    "null String": ua.Variant(None, ua.VariantType.String),
                }
            for shape, variant in shapes.items():
                cases.append(
                    pytest.param(
                        method, index, variant, id=f"{method.browse_name}-{argument.name}-{shape}"
                    )
                )
    return cases


def faults(method: MethodDef, result: ua.CallMethodResult) -> list[str]:
    names = [a.name for a in method.inputs]
    return [names[i] for i, code in enumerate(result.InputArgumentResults) if not code.is_good()]


@pytest.mark.parametrize(("method", "index", "variant"), shape_cases())
async def test_every_argument_of_the_wrong_shape_is_refused_for_that_argument(
    server: Server,
    method: MethodDef,
    index: int,
    variant: ua.Variant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    arguments = good_arguments(method)
    arguments[index] = variant
    before = len(await server.ledger.history())
    with caplog.at_level(logging.INFO):
        result = await server.call(method.browse_name, *arguments)
    assert result.StatusCode == ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
    assert result.InputArgumentResults[index] in (
        ua.StatusCode(ua.StatusCodes.BadTypeMismatch),
        ua.StatusCode(ua.StatusCodes.BadInvalidArgument),
    )
    assert faults(method, result) == [method.inputs[index].name]
    assert method.inputs[index].name in result.InputArgumentDiagnosticInfos[index].AdditionalInfo
    assert len(await server.ledger.history()) == before
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


def long_text_cases() -> list[Any]:
    return [
        pytest.param(method, index, id=f"{method.browse_name}-{argument.name}")
        for method in METHODS
        for index, argument in enumerate(method.inputs)
        if argument.data_type == "String"
    ]


@pytest.mark.parametrize(("method", "index"), long_text_cases())
async def test_a_100000_character_argument_is_not_echoed_into_the_answer_or_the_log(
    server: Server, method: MethodDef, index: int, caplog: pytest.LogCaptureFixture
) -> None:
    arguments = good_arguments(method)
    arguments[index] = ua.Variant("x" * 100_000, ua.VariantType.String)
    with caplog.at_level(logging.DEBUG, logger="opcua_server"):
        result = await server.call(method.browse_name, *arguments)
    assert not result.StatusCode.is_good()
    infos = [d.AdditionalInfo or "" for d in result.InputArgumentDiagnosticInfos]
    assert max(len(i) for i in infos) < CAP, max(len(i) for i in infos)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("opcua_server")]
    assert lines and max(len(line) for line in lines) < CAP


@pytest.mark.parametrize(
    ("method", "argument", "value"),
    [
        ("PostReceipt", "Reason", "a\x00b"),
        ("PostReceipt", "Reason", "line one\r\nline two"),
        ("PostReceipt", "LotID", "LOT\u202e1"),
        ("PostReceipt", "IdempotencyKey", "key\x1b[2J"),
        ("PostReceipt", "ToUnit", "TK-101\n"),
        ("PostReceipt", "MaterialDefinitionID", "ETHANOL-96\x00"),
        ("PostAdjustment", "Comment", "found\x00"),
        ("PostAdjustment", "ReasonCode", "SPILL\n"),
        ("PostAdjustment", "Unit", "TK\u202e101"),
        ("RecordCount", "LotID", "L\x00"),
        ("SetLotStatus", "Reason", "held\x00"),
        ("SetLotStatus", "Status", "hold\x00"),
        ("ReverseMovement", "MovementID", "m\x00"),
        ("ReverseMovement", "Reason", "\u2066why"),
    ],
)
async def test_refused_characters_are_refused_naming_the_argument(
    server: Server, method: str, argument: str, value: str
) -> None:
    definition = TYPE_MODEL.object_type("LedgerType").method(method)
    names = [a.name for a in definition.inputs]
    valid = {
        "MaterialDefinitionID": "ETHANOL-96", "LotID": "CHARS-1", "Quantity": 1.0,
        "DeltaQuantity": 1.0, "CountedQuantity": 1.0, "UnitOfMeasure": "kg",
        "ToUnit": "TK-103", "Unit": "TK-103", "IdempotencyKey": "", "Reason": "why",
        "ReasonCode": "FOUND", "Comment": "", "Status": "hold",
        "MovementID": "00000000-0000-0000-0000-000000000000",
    }  # fmt: skip
    values = {name: valid[name] for name in names} | {argument: value}
    arguments = [
        ua.Variant(values[a.name], ua.VariantType.Double)
        if a.data_type == "Double"
        else ua.Variant(values[a.name], ua.VariantType.String)
        for a in definition.inputs
    ]
    before = len(await server.ledger.history())
    result = await server.call(method, *arguments)
    assert result.StatusCode == ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
    assert faults(definition, result) == [argument]
    info = result.InputArgumentDiagnosticInfos[names.index(argument)].AdditionalInfo
    assert info.startswith(f"{argument} "), info
    assert "U+" in info and not any(c in info for c in "\x00\r\n\x1b\u202e\u2066")
    assert len(await server.ledger.history()) == before


async def test_a_request_the_database_refuses_fails_alone_and_the_server_keeps_posting(
    server: Server,
) -> None:
    def receipt(lot: str, reason: str) -> list[ua.Variant]:
        values = ["ETHANOL-96", lot, 1.0, "kg", "TK-101", "", reason]
        return [
            ua.Variant(v, ua.VariantType.Double if isinstance(v, float) else ua.VariantType.String)
            for v in values
        ]

    results = await asyncio.gather(
        *(server.call("PostReceipt", *receipt(f"DB-{i}", "delivery")) for i in range(5)),
        server.call("PostReceipt", *receipt("DB-POISON", "poison")),
        *(server.call("PostReceipt", *receipt(f"DB-{i}", "delivery")) for i in range(5, 10)),
    )
    refused = results.pop(5)
    assert [r.StatusCode for r in results] == [ua.StatusCode(ua.StatusCodes.Good)] * 10
    assert refused.StatusCode == ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
    assert "refused" in refused.InputArgumentDiagnosticInfos[0].AdditionalInfo
    lots = {m.lot for m in await server.ledger.history()}
    assert {f"DB-{i}" for i in range(10)} <= lots and "DB-POISON" not in lots
    again = await server.call("PostReceipt", *receipt("DB-AFTER", "delivery"))
    assert again.StatusCode.is_good()


async def test_the_answer_and_log_are_capped_but_the_audit_keeps_the_whole_request(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "why " * 499 + "end"  # 1999 characters: allowed
    arguments = ["ETHANOL-96", "CAPPED-1", 1e6, "kg", "TK-101", "capped-key", reason]
    variants = [
        ua.Variant(v, ua.VariantType.Double if isinstance(v, float) else ua.VariantType.String)
        for v in arguments
    ]
    with caplog.at_level(logging.INFO, logger="opcua_server"):
        result = await server.call("PostIssue", *variants)  # refused: no such lot in stock
    assert result.StatusCode == ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
    assert max(len(d.AdditionalInfo or "") for d in result.InputArgumentDiagnosticInfos) < CAP
    assert max(len(r.getMessage()) for r in caplog.records) < CAP
    with sqlite3.connect(server.db) as conn:
        (new,) = conn.execute(
            "SELECT new FROM audit WHERE action = 'rejected' AND object_id = 'capped-key'"
        ).fetchone()
    assert json.loads(new)["reason"] == reason

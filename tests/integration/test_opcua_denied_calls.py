"""Denied calls in the permanent audit trail, attributable but bounded (issue 12, item 4).

A real InvopsOpcUaServer with the real security stack (`secure_server_kwargs`,
`current_user`, `current_session`) on a real SQLite ledger; anonymous asyncua clients
on 127.0.0.1 call a ledger method they may not: per session and window, the first
denial is audited in full, the rest in one summary record with the count; the metric
counts every denial.
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
from asyncua import Client, ua

from information_model import INSTANCES_NAMESPACE, TYPES_NAMESPACE
from inventory_core import open_ledger
from inventory_core.domain.passwords import hash_password
from invops.config import InvopsConfig, parse_config
from invops.wiring import opcua_security, opcua_settings
from opcua_server import InvopsOpcUaServer
from opcua_server.denied_calls import DeniedCallAudit
from opcua_server.security import (
    current_session,
    current_user,
    identity_tokens,
    secure_server_kwargs,
)

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
password_hash = "{hash_password("otto")}"
"""

TIMEOUT_S = 10
RECEIPT = ("SUGAR", "SUG-X", 1.0, "kg", "SI-201", "", "")


@dataclass
class Plant:
    config: InvopsConfig
    server: InvopsOpcUaServer
    db: Path
    denied: list[None]


@asynccontextmanager
async def _plant(tmp_path: Path, *, wired: bool) -> AsyncIterator[Plant]:
    """`wired`: the server gets its DeniedCallAudit as the service builds it (session and
    address of the caller, the metric); else the server's default, from the config."""
    config = parse_config(tomllib.loads(PLANT))
    db = tmp_path / "ledger.db"
    denied: list[None] = []
    access = opcua_security(config)
    security = secure_server_kwargs(access, tmp_path / "pki")
    async with open_ledger(f"sqlite+aiosqlite:///{db}", writer_id="deny-t", migrate=True) as ledger:
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        extra: dict[str, Any] = {}
        if wired:
            extra["denied_calls"] = DeniedCallAudit(
                ledger.record_event,
                window_s=config.opcua.denied_audit_window_s,
                session=current_session,
                on_denied=lambda: denied.append(None),
            )
        server = InvopsOpcUaServer(
            opcua_settings(config),
            ledger,
            identity_tokens=identity_tokens(access),
            current_user=current_user,
            **extra,
            **security,
        )
        try:
            async with server:
                yield Plant(config, server, db, denied)
        finally:
            close = getattr(security["user_manager"], "close", None)
            if close is not None:
                close()


@pytest_asyncio.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    async with _plant(tmp_path, wired=True) as running:
        yield running


def _audit(db: Path, *actions: str) -> list[tuple[str, str, str, str, dict[str, object]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            'SELECT action, "user", object_type, object_id, new FROM audit '
            f"WHERE action IN ({','.join('?' * len(actions))}) ORDER BY id",
            actions,
        ).fetchall()
    return [(a, u, t, i, json.loads(new)) for a, u, t, i, new in rows]


async def _deny(client: Client, times: int) -> None:
    ns = await client.get_namespace_index(INSTANCES_NAMESPACE)
    tns = await client.get_namespace_index(TYPES_NAMESPACE)
    ledger = await client.nodes.objects.get_child([f"{ns}:Inventory", f"{ns}:Ledger"])
    for _ in range(times):
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await ledger.call_method(f"{tns}:PostReceipt", *RECEIPT)


async def test_a_denied_flood_by_one_session_is_one_full_record_and_one_summary(
    plant: Plant,
) -> None:

    flood, other = 25, 2
    async with (
        Client(plant.server.endpoint_url, timeout=TIMEOUT_S) as first,
        Client(plant.server.endpoint_url, timeout=TIMEOUT_S) as second,
    ):
        await _deny(first, flood)
        await _deny(second, other)
    # within the minute: each session's first denial only, in full, with who and where
    full = _audit(plant.db, "denied")
    assert [(a, u, t, i) for a, u, t, i, _ in full] == [
        ("denied", "anonymous", "opcua_method", "PostReceipt"),
    ] * 2
    sessions = [d["session"] for *_, d in full]
    assert len(set(sessions)) == 2 and all(str(s).startswith(("i=", "ns=")) for s in sessions)
    assert {d["source"] for *_, d in full} == {"127.0.0.1"}
    assert full[0][4]["arguments"][:2] == ["SUGAR", "SUG-X"]
    assert _audit(plant.db, "denied_summary") == []
    assert len(plant.denied) == flood + other  # the metric counts every one
    await plant.server.stop()  # open windows are summarised at shutdown
    summaries = {d["session"]: d for *_, d in _audit(plant.db, "denied_summary")}
    assert summaries.keys() == set(sessions)
    assert summaries[sessions[0]]["count"] == flood - 1
    assert summaries[sessions[1]]["count"] == other - 1
    assert summaries[sessions[0]]["methods"] == {"PostReceipt": flood - 1}
    assert summaries[sessions[0]]["source"] == "127.0.0.1"
    assert len(_audit(plant.db, "denied", "denied_summary")) == 4


async def test_the_server_bounds_a_flood_of_denied_calls_with_its_defaults(
    tmp_path: Path,
) -> None:
    """The server without a DeniedCallAudit of its caller's (its config's window): one
    anonymous session's flood is one full record now, the rest one summary at stop."""
    async with _plant(tmp_path, wired=False) as running:
        async with Client(running.server.endpoint_url, timeout=TIMEOUT_S) as client:
            await _deny(client, 30)
        assert len(_audit(running.db, "denied")) == 1
        await running.server.stop()
        [summary] = _audit(running.db, "denied_summary")
        assert summary[4]["count"] == 29

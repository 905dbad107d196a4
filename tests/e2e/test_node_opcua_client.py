"""The demo as UaExpert-style clients see it: node-opcua's client, a second OPC UA stack.

Such clients present their application instance certificate in CreateSession even on a
`None` channel; the server must ignore it there (OPC UA Part 4) and enforce its trust list
on secured channels. node_opcua_client.mjs does the client side and prints what the
server answered; these tests judge it. Needs `node` and the packages that
tools/install-node-opcua.sh installs into .tools/node (.ci/run calls it); skipped without.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_demo import start_demo, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SCRIPT = Path(__file__).with_name("node_opcua_client.mjs")
NODE_MODULES = ROOT / ".tools" / "node" / "node_modules"
NODE = shutil.which("node")
MMT = 5066068  # UNECE millimetre, packed as OPC UA EUInformation.UnitId
UNECE = "http://www.opcfoundation.org/UA/units/un/cefact"


def _skip_reason() -> str | None:
    if NODE is None:
        return "node (Node.js) is not installed"
    if not (NODE_MODULES / "node-opcua-client" / "package.json").is_file():
        return (
            f"node-opcua-client missing under {NODE_MODULES}: "
            "run tools/install-node-opcua.sh (.ci/run does) to enable"
        )
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@dataclass(frozen=True)
class Demo:
    data_dir: Path
    endpoint: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("node-opcua-demo")
    data_dir = root / "var"
    stderr = root / "demo.log"
    with stderr.open("w") as log:
        process = start_demo(data_dir, stderr=log)
        try:
            wait_for(data_dir / "endpoints.json", process)
            endpoint = json.loads((data_dir / "endpoints.json").read_text())["opcua"]
            yield Demo(data_dir, endpoint, stderr)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _client(demo: Demo, scenario: str, pki: Path) -> dict[str, Any]:
    assert NODE is not None
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "NO_COLOR": "1"}
    result = subprocess.run(
        [NODE, str(CLIENT_SCRIPT), scenario, demo.endpoint, str(pki)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{result.stderr}\n--- demo log ---\n{demo.log()}"
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_none_channel_anonymous_browse_read_subscribe_and_operator_posts(
    demo: Demo, tmp_path: Path
) -> None:
    answer = _client(demo, "none", tmp_path / "client-pki")

    anonymous = answer["anonymous"]
    assert {"Level", "Volume", "Mass", "FillPercent", "BookQuantity", "Discrepancy"} <= set(
        anonymous["children"]
    )
    level = anonymous["level"]
    assert level["status"] == "Good" and level["sourceTimestamp"]
    assert 0 < level["value"] < 6000
    assert anonymous["engineeringUnits"] == {
        "namespaceUri": UNECE,
        "unitId": MMT,
        "displayName": "mm",
    }
    assert anonymous["euRange"] == {"low": 0, "high": 6000}
    changes = anonymous["changes"]
    assert len(changes) >= 2 and len(set(changes)) >= 2, changes  # the level moves
    assert anonymous["anonymousPost"]["status"] == "BadUserAccessDenied"

    operator = answer["operator"]
    assert operator["status"] == "Good", operator
    (movement_id,) = operator["outputs"]
    with sqlite3.connect(demo.data_dir / "invops.db") as db:
        rows = db.execute(
            "SELECT kind, lot, to_unit, quantity, user FROM movements"
            " WHERE id = ? AND idempotency_key = ?",
            (movement_id, "node-opcua-e2e-1"),
        ).fetchall()
    assert [(*row[:3], float(row[3]), row[4]) for row in rows] == [
        ("receipt", "GLY-NODE-1", "WH-401", 250.0, "operator")
    ]

    refused = operator["refused"]  # ToUnit TK-999: only that argument is marked, with why
    assert refused["status"] == "BadInvalidArgument" and refused["outputs"] == []
    to_unit = 4  # PostReceipt(MaterialDefinitionID, LotID, Quantity, UnitOfMeasure, ToUnit, ...)
    assert [i for i, r in enumerate(refused["inputArgumentResults"]) if r != "Good"] == [to_unit]
    reasons = refused["inputArgumentReasons"]
    assert [i for i, r in enumerate(reasons) if r] == [to_unit] and "TK-999" in reasons[to_unit]

    assert answer["wrongPassword"] == "BadUserAccessDenied"
    assert "opcua_client_certificate_refused" not in demo.log()


def test_untrusted_certificate_is_refused_on_sign_and_encrypt_until_trusted(
    demo: Demo, tmp_path: Path
) -> None:
    pki = tmp_path / "client-pki"
    refused = _client(demo, "secure", pki)
    assert refused["refused"] == "BadCertificateUntrusted", refused
    assert "opcua_client_certificate_refused" in demo.log()

    trusted_dir = demo.data_dir / "pki" / "trusted"
    shutil.copy(refused["certificateFile"], trusted_dir / "node-opcua-e2e.pem")
    try:
        accepted = _client(demo, "secure", pki)
    finally:
        (trusted_dir / "node-opcua-e2e.pem").unlink()
    assert accepted["refused"] is None, accepted
    assert 0 < accepted["level"] < 6000

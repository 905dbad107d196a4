"""NodeSet2 export loads into node-opcua, a second OPC UA stack (Node.js), besides asyncua.

nodeset_check.mjs loads the standard nodeset, then the exported file, into a node-opcua
address space; it fails on any loader warning or error raised by the invops file, and checks
the invops types, the LedgerType methods with their InputArguments, and that every node,
reference and value of the file made it in. Needs `node` and the packages that
tools/install-node-opcua.sh installs into .tools/node (.ci/run calls it); skipped without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from information_model import LEDGER_TYPE, TYPES_NAMESPACE, export_nodeset

ROOT = Path(__file__).resolve().parents[2]
CHECK_SCRIPT = Path(__file__).with_name("nodeset_check.mjs")
NODE_MODULES = ROOT / ".tools" / "node" / "node_modules"
REQUIRED_PACKAGES = ("node-opcua-address-space", "node-opcua-nodesets")
NODE = shutil.which("node")

OBJECT_TYPES = {
    "StorageUnitType": "BaseObjectType",
    "TankType": "StorageUnitType",
    "SiloType": "StorageUnitType",
    "BinType": "StorageUnitType",
    "MaterialDefinitionType": "BaseObjectType",
    "MaterialLotType": "BaseObjectType",
    "LedgerType": "BaseObjectType",
    "InventoryMovementEventType": "BaseEventType",
}
LEDGER_METHODS = (
    "PostReceipt",
    "PostIssue",
    "PostTransfer",
    "PostAdjustment",
    "RecordCount",
    "SetLotStatus",
    "ReverseMovement",
    "PostScrap",
    "PostProduction",
    "ApproveRequest",
    "RejectRequest",
    "SetLotQuality",
    "ClosePeriod",
)


def _skip_reason() -> str | None:
    if NODE is None:
        return "node (Node.js) is not installed"
    missing = [p for p in REQUIRED_PACKAGES if not (NODE_MODULES / p / "package.json").is_file()]
    if missing:
        return (
            f"{', '.join(missing)} missing under {NODE_MODULES}: "
            "run .ci/run or tools/install-node-opcua.sh "
            "(npm install --prefix .tools/node ...) to enable"
        )
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _run_check(nodeset: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    assert NODE is not None
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "NO_COLOR": "1"}
    result = subprocess.run(
        [NODE, str(CHECK_SCRIPT), str(nodeset)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    try:
        summary = json.loads(result.stdout)
    except json.JSONDecodeError:
        summary = {}
    return result, summary


def _export_with_cli(path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from invops.cli import main; main()",
            "opcua",
            "export-nodeset",
            "--output",
            str(path),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture
def nodeset_path(tmp_path: Path) -> Path:
    path = tmp_path / "invops-types.xml"
    export_nodeset(path)
    return path


@pytest.fixture(scope="module")
def checked(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One node-opcua run over `export_nodeset`'s file, shared by the read-only tests."""
    path = tmp_path_factory.mktemp("nodeset") / "invops-types.xml"
    export_nodeset(path)
    return _run_check(path)


def test_node_opcua_loads_the_export_without_complaint(
    checked: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, summary = checked
    assert result.returncode == 0, f"node-opcua check failed:\n{result.stderr}\n{result.stdout}"
    assert summary["ok"] is True
    assert summary["namespace"] == TYPES_NAMESPACE
    assert summary["namespace_index"] >= 1
    assert summary["loader_messages"] == []
    assert summary["problems"] == []
    assert summary["node_count"] == summary["declared_node_count"] > 0
    assert summary["values_checked"] > 0


def test_node_opcua_sees_the_invops_types(
    checked: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, summary = checked
    assert result.returncode == 0, result.stderr
    types = summary["types"]
    assert {name: t["subtypeOf"] for name, t in types.items()} == OBJECT_TYPES
    assert types["StorageUnitType"]["isAbstract"] is True
    assert all(t["nodeId"].startswith(f"ns={summary['namespace_index']};") for t in types.values())


def test_node_opcua_sees_the_ledger_methods_and_arguments(
    checked: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, summary = checked
    assert result.returncode == 0, result.stderr
    methods = summary["methods"]
    assert set(methods) == set(LEDGER_METHODS)
    for method in LEDGER_TYPE.methods:
        seen = methods[method.browse_name]
        assert seen["inputArguments"] == [
            {"name": a.name, "dataType": a.data_type} for a in method.inputs
        ], method.browse_name
        assert seen["outputArguments"] == [a.name for a in method.outputs], method.browse_name


def test_node_opcua_loads_the_cli_export(tmp_path: Path) -> None:
    path = tmp_path / "invops-types.xml"
    _export_with_cli(path)
    result, summary = _run_check(path)
    assert result.returncode == 0, f"node-opcua check failed:\n{result.stderr}"
    assert summary["ok"] is True


def test_the_check_fails_on_a_dangling_reference(nodeset_path: Path) -> None:
    """The checker is not a rubber stamp: a reference to a node nobody defines fails it."""
    text = nodeset_path.read_text(encoding="utf-8")
    anchor = '<Reference ReferenceType="HasComponent">ns=1;i=1010</Reference>'
    assert anchor in text
    broken = text.replace(
        anchor,
        anchor + '\n      <Reference ReferenceType="HasComponent">ns=1;i=99999</Reference>',
        1,
    )
    nodeset_path.write_text(broken, encoding="utf-8")
    result, summary = _run_check(nodeset_path)
    assert result.returncode == 1
    assert summary["ok"] is False
    assert any("ns=1;i=99999" in p for p in summary["problems"]), summary["problems"]

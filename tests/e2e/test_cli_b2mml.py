"""`invops ledger export --format b2mml` and `invops ledger import --format b2mml` as a user
runs them: the documents written validate against MESA's B2MML V0700 XSDs (skipped
without them) and say what the ledger holds; an imported document is applied and
answered, or refused with one line naming the path, and then nothing is applied."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inventory_core.b2mml import B2MML_NAMESPACE, RELEASE_ID, parse_inbound
from tests.e2e.conftest import TIMEOUT_S, Result, base_command, clean_env
from tests.standards import require_b2mml, validate_b2mml_if_present

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli, LedgerFile

NS = {"b": B2MML_NAMESPACE}


def b2mml(result: Result) -> ET.Element:
    """stdout of a successful run: a B2MML document, valid where the XSDs are here."""
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr, result
    body = result.stdout.encode("utf-8")
    validate_b2mml_if_present(body)
    return ET.fromstring(body)


def refused_with(result: Result, *needles: str) -> str:
    """Failed with exit 1 and exactly one line on stderr holding every needle."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result
    assert result.stdout == "", result
    assert len(result.err_lines) == 1, result
    line = result.err_lines[0]
    for needle in needles:
        assert needle in line, result
    return line


def state(ledger: LedgerFile) -> tuple[list[tuple[Any, ...]], ...]:
    """Every row an import could change."""
    return (
        ledger.sql("SELECT id, material, status, expiry FROM lots ORDER BY id"),
        ledger.sql("SELECT * FROM materials ORDER BY id"),
        ledger.sql("SELECT count(*), max(seq) FROM movements"),
        ledger.sql("SELECT count(*) FROM audit"),
    )


def document(name: str, nouns: str, bod_id: str = "E2E-1") -> bytes:
    verb = "<Sync/>" if name.startswith("Sync") else "<Process/>"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<{name} xmlns="{B2MML_NAMESPACE}" releaseID="{RELEASE_ID}">\n'
        "<ApplicationArea><Sender><LogicalID>SAP-E2E</LogicalID></Sender>"
        f"<CreationDateTime>2026-12-03T08:00:00Z</CreationDateTime><BODID>{bod_id}</BODID>"
        f"</ApplicationArea>\n<DataArea>{verb}\n{nouns}</DataArea>\n</{name}>\n"
    ).encode()


def lot(lot_id: str, material: str, status: str | None = None, expiry: str = "") -> str:
    parts = f"<ID>{lot_id}</ID><MaterialDefinitionID>{material}</MaterialDefinitionID>"
    if status is not None:
        parts += f"<Status>{status}</Status>"
    if expiry:
        parts += (
            "<MaterialLotProperty><ID>ExpirationDate</ID><Value>"
            f"<ValueString>{expiry}</ValueString><DataType>date</DataType></Value>"
            "</MaterialLotProperty>"
        )
    return f"<MaterialLot>{parts}</MaterialLot>\n"


def write(directory: Path, name: str, body: bytes) -> Path:
    path = directory / name
    path.write_bytes(body)
    return path


def lots_of(info: ET.Element) -> dict[str, ET.Element]:
    found = info.iterfind("b:DataArea/b:MaterialInformation/b:MaterialLot", NS)
    return {e.findtext("b:ID", namespaces=NS) or "": e for e in found}


def cursors(root: ET.Element) -> list[int]:
    return [
        int(d.findtext("b:Value/b:ValueString", namespaces=NS) or "-1")
        for d in root.iterfind(".//b:SegmentResponse/b:SegmentData", NS)
        if d.findtext("b:ID", namespaces=NS) == "Cursor"
    ]


# -- export ------------------------------------------------------------------------------


def test_export_b2mml_writes_a_valid_operations_performance_of_the_movements(
    plant: LedgerFile, cli: Cli
) -> None:
    require_b2mml()
    as_b2mml, as_jsonl = cli.many(
        [
            ["ledger", "export", "--format", "b2mml", "--url", plant.url],
            ["ledger", "export", "--format", "jsonl", "--url", plant.url],
        ]
    )
    root = b2mml(as_b2mml)
    assert root.tag == f"{{{B2MML_NAMESPACE}}}ShowOperationsPerformance"
    assert as_jsonl.returncode == 0, as_jsonl
    lines = [json.loads(line) for line in as_jsonl.out_lines]
    responses = root.findall("b:DataArea/b:OperationsPerformance/b:OperationsResponse", NS)
    assert [r.findtext("b:ID", namespaces=NS) for r in responses] == [m["id"] for m in lines]
    assert cursors(root) == [m["cursor"] for m in lines]
    kinds = [r.findtext("b:SegmentResponse/b:ProcessSegmentID", namespaces=NS) for r in responses]
    assert kinds == [m["kind"] for m in lines]
    assert {"receipt", "issue", "production", "transfer", "adjustment", "count", "scrap"} <= set(
        kinds
    )
    assert as_b2mml.err_lines == [f"movements up to cursor {lines[-1]['cursor']}"]
    transfer = next(r for r in responses if r.findtext(".//b:ProcessSegmentID", namespaces=NS)
                    == "transfer")  # fmt: skip
    legs = [
        (
            a.findtext("b:StorageLocation/b:Location", namespaces=NS),
            Decimal(a.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "nan"),
        )
        for a in transfer.iterfind(".//b:MaterialActual", NS)
    ]
    assert legs == [("TK-101", Decimal(-200)), ("TK-103", Decimal(200))]


def test_export_since_the_last_cursor_writes_nothing_and_says_so(
    plant: LedgerFile, cli: Cli
) -> None:
    ((last,),) = plant.sql("SELECT max(seq) FROM movements")
    nothing, newest = cli.many(
        [
            ["ledger", "export", "--format", "b2mml", "--since", str(last), "--url", plant.url],
            ["ledger", "export", "--format", "b2mml", "--since", str(last - 1), "--url", plant.url],
        ]
    )
    assert nothing.returncode == 0, nothing
    assert nothing.stdout == ""
    assert nothing.err_lines == [f"no movements after cursor {last}: nothing written"]
    assert cursors(b2mml(newest)) == [last]


def test_export_material_information_shows_lots_where_they_are(plant: LedgerFile, cli: Cli) -> None:
    root = b2mml(
        cli("ledger", "export", "--format", "b2mml", "--document", "material-information",
            "--url", plant.url)
    )  # fmt: skip
    assert root.tag == f"{{{B2MML_NAMESPACE}}}ShowMaterialInformation"
    lots = lots_of(root)
    e1, e2 = lots["E1"], lots["E2"]
    sublots = {
        s.findtext("b:StorageLocation/b:Location", namespaces=NS): Decimal(
            s.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "nan"
        )
        for s in e1.iterfind("b:MaterialSubLot", NS)
    }
    assert sublots == {"TK-101": Decimal(395), "TK-103": Decimal(200)}
    assert Decimal(e1.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "") == 595
    assert e2.findtext("b:StorageLocation/b:Location", namespaces=NS) == "TK-101"
    assert Decimal(e2.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "") == 50


# -- import ------------------------------------------------------------------------------


def test_import_process_material_lot_applies_and_acknowledges(
    plant: LedgerFile, cli: Cli, plus_config: Path, tmp_path: Path
) -> None:
    body = document(
        "ProcessMaterialLot",
        lot("ERP-1", "ETHANOL-96", "quarantine", "2027-06-30") + lot("ERP-2", "GLYCOL"),
        bod_id="E2E-42",
    )
    validate_b2mml_if_present(body)
    path = write(tmp_path, "lots.xml", body)
    imported = cli(
        "ledger", "import", "--format", "b2mml", path, "--url", plant.url,
        "--config", plus_config, "--user", "sap-pi",
    )  # fmt: skip
    answer = b2mml(imported)
    assert answer.tag == f"{{{B2MML_NAMESPACE}}}AcknowledgeMaterialLot"
    acked = [
        (e.findtext("b:ID", namespaces=NS), e.findtext("b:Status", namespaces=NS))
        for e in answer.iterfind("b:DataArea/b:MaterialLot", NS)
    ]
    assert acked == [("ERP-1", "quarantine"), ("ERP-2", "released")]  # GLYCOL's default
    original = "b:DataArea/b:Acknowledge/b:OriginalApplicationArea/b:BODID"
    assert answer.findtext(original, namespaces=NS) == "E2E-42"

    info, verify = cli.many(
        [
            ["ledger", "export", "--format", "b2mml", "--document", "material-information",
             "--url", plant.url],
            ["ledger", "verify", "--url", plant.url],
        ]
    )  # fmt: skip
    erp1 = lots_of(b2mml(info))["ERP-1"]
    assert erp1.findtext("b:Status", namespaces=NS) == "quarantine"
    assert erp1.findtext("b:MaterialLotProperty/b:Value/b:ValueString", namespaces=NS) == (
        "2027-06-30"
    )
    assert Decimal(erp1.findtext("b:Quantity/b:QuantityString", namespaces=NS) or "") == 0
    assert verify.returncode == 0, verify
    audit = plant.sql(
        "SELECT user, action, reason FROM audit WHERE object_type = 'lot' AND object_id = ?",
        ("ERP-1",),
    )
    assert audit == [("sap-pi", "create", "B2MML ProcessMaterialLot E2E-42 from SAP-E2E")]


def run_with_stdin(
    cwd: Path, args: list[str], stdin: bytes, env: dict[str, str] | None = None
) -> Result:
    proc = subprocess.run(
        [*base_command(), *args], cwd=cwd, env=clean_env(None, env), input=stdin,
        capture_output=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    return Result(tuple(args), proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_import_from_stdin_syncs_material_master_and_lots_into_an_empty_ledger(
    empty_ledger: LedgerFile, tmp_path: Path, cli: Cli
) -> None:
    master = document(
        "ProcessMaterialDefinition",
        "<MaterialDefinition><ID>RESIN</ID><Description>Epoxy resin</Description>"
        "<MaterialDefinitionProperty><ID>BaseUnitOfMeasure</ID><Value><ValueString>kg"
        "</ValueString><DataType>string</DataType></Value></MaterialDefinitionProperty>"
        "</MaterialDefinition>\n",
    )
    import_args = ["ledger", "import", "--format", "b2mml", "-", "--url", empty_ledger.url]
    acked = b2mml(run_with_stdin(tmp_path, import_args, master))
    assert acked.tag == f"{{{B2MML_NAMESPACE}}}AcknowledgeMaterialDefinition"
    assert empty_ledger.sql("SELECT id, base_uom, default_lot_status FROM materials") == [
        ("RESIN", "kg", "quarantine")
    ]
    lots = document("SyncMaterialLot", lot("R-1", "RESIN") + lot("R-2", "RESIN", "released"))
    confirmed = b2mml(run_with_stdin(tmp_path, import_args, lots))
    assert confirmed.tag == f"{{{B2MML_NAMESPACE}}}ConfirmBOD"
    assert confirmed.findtext("b:DataArea/b:BOD/b:Description", namespaces=NS) == (
        "SyncMaterialLot E2E-1: 2 MaterialLot applied"
    )
    info = b2mml(
        cli("ledger", "export", "--format", "b2mml", "--document", "material-information",
            "--url", empty_ledger.url)
    )  # fmt: skip
    statuses = {k: v.findtext("b:Status", namespaces=NS) for k, v in lots_of(info).items()}
    assert statuses == {"R-1": "quarantine", "R-2": "released"}


REFUSED = {
    "bad-status": (
        document("ProcessMaterialLot", lot("N-1", "ETHANOL-96") + lot("N-2", "GLYCOL", "free")),
        "/ProcessMaterialLot/DataArea/MaterialLot[2]/Status",
    ),
    "delete": (
        document("SyncMaterialLot", lot("E1", "ETHANOL-96")).replace(
            b"<Sync/>",
            b'<Sync><ActionCriteria><ActionExpression actionCode="Delete"/></ActionCriteria>'
            b"</Sync>",
        ),
        "/SyncMaterialLot/DataArea/Sync/ActionCriteria[1]/ActionExpression/@actionCode",
    ),
    "not-xml": (b"SKU;LOT\nETHANOL-96;N-1\n", "line 1, column 3"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_document_exits_nonzero_with_one_line_and_changes_nothing(
    plant: LedgerFile, cli: Cli, plus_config: Path, tmp_path: Path, case: str
) -> None:
    body, path = REFUSED[case]
    file = write(tmp_path, f"{case}.xml", body)
    before = state(plant)
    result = cli(
        "ledger", "import", "--format", "b2mml", file, "--url", plant.url, "--config", plus_config
    )
    line = refused_with(result, path, "nothing applied", str(file))
    assert line.startswith("invops: error: ")
    assert state(plant) == before


def test_with_a_schema_dir_a_schema_invalid_document_is_refused_at_the_schemas_path(
    plant: LedgerFile, cli: Cli, tmp_path: Path
) -> None:
    schemas = require_b2mml()
    env = {"INVOPS_B2MML_SCHEMA_DIR": str(schemas)}
    out_of_order = (
        "<MaterialLot><ID>S-2</ID><Status>released</Status>"
        "<MaterialDefinitionID>ETHANOL-96</MaterialDefinitionID></MaterialLot>\n"
    )
    invalid = write(
        tmp_path,
        "invalid.xml",
        document("ProcessMaterialLot", lot("S-1", "ETHANOL-96") + out_of_order),
    )
    valid = write(tmp_path, "valid.xml", document("ProcessMaterialLot", lot("S-3", "ETHANOL-96")))
    before = state(plant)
    args = ["ledger", "import", "--format", "b2mml", "--url", plant.url]
    result = cli(*args, invalid, env=env)
    refused_with(
        result,
        "/ProcessMaterialLot/DataArea/MaterialLot[2]",
        "fails the B2MML schema",
        "MaterialDefinitionID",
        "nothing applied",
    )
    assert state(plant) == before
    # only the XSDs refuse it: invops' own reading would have applied it
    assert [a.lot for a in parse_inbound(invalid.read_bytes()).lots] == ["S-1", "S-2"]
    assert b2mml(cli(*args, valid, env=env)).tag == f"{{{B2MML_NAMESPACE}}}AcknowledgeMaterialLot"
    assert [r[0] for r in plant.sql("SELECT id FROM lots WHERE id LIKE 'S-%'")] == ["S-3"]


def test_a_schema_dir_without_the_schemas_is_one_line_and_changes_nothing(
    plant: LedgerFile, cli: Cli, tmp_path: Path
) -> None:
    file = write(tmp_path, "lots.xml", document("ProcessMaterialLot", lot("X-1", "ETHANOL-96")))
    before = state(plant)
    result = cli(
        "ledger", "import", "--format", "b2mml", file, "--url", plant.url,
        env={"INVOPS_B2MML_SCHEMA_DIR": str(tmp_path)},
    )  # fmt: skip
    refused_with(result, "AllSchemas.xsd")
    assert state(plant) == before


def test_a_lot_of_an_unknown_material_is_refused_with_its_path(
    plant: LedgerFile, cli: Cli, tmp_path: Path
) -> None:
    body = document("ProcessMaterialLot", lot("N-1", "ETHANOL-96") + lot("N-2", "NO-SUCH"))
    file = write(tmp_path, "unknown.xml", body)
    before = state(plant)
    result = cli("ledger", "import", "--format", "b2mml", file, "--url", plant.url)
    assert state(plant) == before
    refused_with(result, "NO-SUCH", "MaterialLot[2]", "nothing applied")


def test_a_new_material_without_base_unit_is_a_user_error_with_its_path(
    empty_ledger: LedgerFile, cli: Cli, tmp_path: Path
) -> None:
    body = document(
        "ProcessMaterialDefinition",
        "<MaterialDefinition><ID>NEWMAT</ID><Description>no unit</Description>"
        "</MaterialDefinition>\n",
    )
    file = write(tmp_path, "newmat.xml", body)
    result = cli("ledger", "import", "--format", "b2mml", file, "--url", empty_ledger.url)
    assert empty_ledger.sql("SELECT count(*) FROM materials") == [(0,)]
    refused_with(
        result,
        "/ProcessMaterialDefinition/DataArea/MaterialDefinition[1]",
        "BaseUnitOfMeasure",
        "nothing applied",
    )


def test_a_document_in_an_unsupported_encoding_is_a_user_error(
    plant: LedgerFile, cli: Cli, tmp_path: Path
) -> None:
    body = document("ProcessMaterialLot", lot("J-1", "ETHANOL-96"))
    file = write(tmp_path, "sjis.xml", body.replace(b"UTF-8", b"Shift_JIS"))
    refused_with(
        cli("ledger", "import", "--format", "b2mml", file, "--url", plant.url), "nothing applied"
    )

"""`invops ledger verify`: the audit chains, and every table against what was audited.

1. Each writer's chain: contiguous sequence numbers from 1, each record's
   hash recomputed from its stored fields, each prev_hash linking to the
   record before, and the chain's head row agreeing with its last record.
2. Movements: each row's SHA-256 equals the digest its audit record holds;
   no audited movement is missing.
3. Balances equal the sum of the movements' legs.
4. Lots, materials and storage units equal the state their audit records
   (and lot-status movements) describe.
5. Advices equal their latest audit record (advise, each match, expire).
6. Electronic signatures: each signature row equals its audit record, none is
   missing or added; each is bound to its request's digest, which is recomputed
   from the request as stored; a movement posted on signatures carries exactly
   the audited approvals of its request.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncConnection

from inventory_core.domain.advices import advice_document
from inventory_core.domain.audit import GENESIS_HASH, AuditRecord, canonical_json, check_record
from inventory_core.domain.model import (
    DEFAULT_ADVICE_WINDOW_S,
    MovementKind,
    VerifyProblem,
    VerifyReport,
)
from inventory_core.domain.posting import (
    MOVEMENT_COLUMNS,
    lot_document,
    master_document,
    record_digest,
)
from inventory_core.domain.signatures import (
    REQUEST_PREFIX,
    Decision,
    request_digest,
    signed_manifest,
)
from inventory_core.store import tables as t
from inventory_core.store.rows import (
    advice_from_row,
    audit_from_row,
    lot_from_row,
    material_from_row,
    movement_from_row,
    pending_request_from_row,
    signature_from_row,
    unit_from_row,
)

PAGE = 5000


class _Audited:
    """What the audit records say the tables must contain."""

    def __init__(self) -> None:
        self.movements: dict[str, str] = {}  # movement id -> digest
        self.unreadable: list[AuditRecord] = []
        self.lots: dict[str, dict[str, Any]] = {}  # lot id -> document at creation
        # (object type, id) -> (timestamp, writer, seq, document text) of the latest change
        self.master: dict[tuple[str, str], tuple[str, str, int, str]] = {}
        self.advices: dict[str, tuple[str, str, int, str]] = {}  # the same, per advice
        self.quality: dict[str, tuple[str, str, int, str]] = {}  # lot -> latest quality record
        self.signatures: dict[tuple[str, int], str] = {}  # (request id, seq) -> record
        self.requests: dict[str, str] = {}  # request id -> the record that held it

    def add(self, r: AuditRecord) -> None:
        if r.object_type == "movement":
            self.movements[r.object_id] = r.new
        elif r.object_type == "lot" and r.action == "create":
            try:
                document = json.loads(r.new)
                if not isinstance(document, dict):
                    raise ValueError("not an object")
                self.lots[r.object_id] = document
            except ValueError:
                self.unreadable.append(r)  # an edited record: the chain check reports it
        elif r.object_type == "lot" and r.action == "quality":
            seen = self.quality.get(r.object_id)
            if seen is None or (r.timestamp, r.writer, r.seq) > seen[:3]:
                self.quality[r.object_id] = (r.timestamp, r.writer, r.seq, r.new)
        elif r.object_type in ("material", "storage_unit") and r.action in ("create", "update"):
            key = (r.object_type, r.object_id)
            latest = self.master.get(key)
            if latest is None or (r.timestamp, r.writer, r.seq) > latest[:3]:
                self.master[key] = (r.timestamp, r.writer, r.seq, r.new)
        elif r.object_type == "request" and r.action in ("signature", "request-pending"):
            request_id = r.object_id.removeprefix(REQUEST_PREFIX)
            if r.action == "request-pending":
                self.requests[request_id] = r.new
                return
            try:
                seq = json.loads(r.new)["seq"]
            except (ValueError, KeyError, TypeError):
                self.unreadable.append(r)
                return
            self.signatures[(request_id, int(seq))] = r.new
        elif r.object_type == "advice" and r.action != "variance-accepted":  # (no change of it)
            seen = self.advices.get(r.object_id)
            if seen is None or (r.timestamp, r.writer, r.seq) > seen[:3]:
                self.advices[r.object_id] = (r.timestamp, r.writer, r.seq, r.new)


async def verify_ledger(conn: AsyncConnection) -> VerifyReport:
    audited = _Audited()
    problems: list[VerifyProblem] = []
    chains, records = await _check_chains(conn, audited, problems)
    movements = await _check_movements(conn, audited, problems)
    await _check_master_data(conn, audited, problems)
    await _check_advices(conn, audited, problems)
    await _check_signatures(conn, audited, problems)
    return VerifyReport(chains, records, movements, tuple(problems))


async def _check_chains(
    conn: AsyncConnection, audited: _Audited, problems: list[VerifyProblem]
) -> tuple[dict[str, int], int]:
    heads = {
        w: (int(s), h)
        for w, s, h in await conn.execute(
            select(t.audit_heads.c.writer, t.audit_heads.c.seq, t.audit_heads.c.hash)
        )
    }
    writers = union(select(t.audit.c.writer), select(t.audit_heads.c.writer))
    chains: dict[str, int] = {}
    records = 0
    for (writer,) in (await conn.execute(writers)).all():
        expected_seq, prev, broken = 1, GENESIS_HASH, False
        async for row in _chain(conn, writer):
            records += 1
            record = audit_from_row(row)
            why = check_record(record, expected_seq, prev)
            if why is not None and not broken:
                problems.append(VerifyProblem(writer, record.seq, int(row["id"]), why))
                broken = True
            audited.add(record)
            expected_seq, prev = record.seq + 1, record.hash
        last = expected_seq - 1
        chains[writer] = last
        head = heads.get(writer)
        if not broken and head is not None and head != (last, prev):
            problems.append(
                VerifyProblem(
                    writer,
                    head[0],
                    None,
                    f"chain ends at seq {last} but its head says {head[0]} "
                    "(records at the end deleted, or the head edited)",
                )
            )
    return chains, records


async def _check_movements(
    conn: AsyncConnection, audited: _Audited, problems: list[VerifyProblem]
) -> int:
    count = 0
    book: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    status: dict[str, object] = {lot: doc.get("status") for lot, doc in audited.lots.items()}
    recorded = dict(audited.movements)
    rows = await conn.stream(select(t.movements).order_by(t.movements.c.seq))
    async for row in rows.mappings():
        count += 1
        m = movement_from_row(row)
        for unit, lot, delta in m.legs():
            book[(unit, lot)] += delta
        if m.kind is MovementKind.LOT_STATUS:
            status[m.lot] = str(m.details.get("new_status"))
        digest = recorded.pop(m.id, None)
        if digest is None:
            problems.append(
                VerifyProblem("movements", m.seq, m.seq, f"movement {m.id} has no audit record")
            )
        elif digest != record_digest(tuple(row[c] for c in MOVEMENT_COLUMNS)):
            problems.append(
                VerifyProblem(
                    "movements", m.seq, m.seq, f"movement {m.id} differs from its audit record"
                )
            )
    for movement_id in recorded:
        problems.append(VerifyProblem("movements", None, None, f"movement {movement_id} deleted"))

    for unit, lot, quantity in await conn.execute(
        select(t.balances.c.unit, t.balances.c.lot, t.balances.c.quantity)
    ):
        if Decimal(quantity) != book.pop((unit, lot), Decimal(0)):
            problems.append(
                VerifyProblem(
                    "balances",
                    None,
                    None,
                    f"balance of lot {lot} in {unit} ({quantity}) is not the sum of its movements",
                )
            )
    for (b_unit, b_lot), quantity in book.items():
        if quantity != 0:
            problems.append(
                VerifyProblem(
                    "balances", None, None, f"balance of lot {b_lot} in {b_unit} is missing"
                )
            )

    expected_lots = {
        lot: _with_quality({**doc, "status": status[lot]}, audited.quality.get(lot))
        for lot, doc in audited.lots.items()
    }
    for row in (await conn.execute(select(t.lots))).mappings():
        stored = lot_from_row(row)
        expected = expected_lots.pop(stored.id, None)
        if expected is None:
            problems.append(VerifyProblem("lots", None, None, f"lot {stored.id} not audited"))
        elif lot_document(stored) != expected:
            problems.append(
                VerifyProblem("lots", None, None, f"lot {stored.id} differs from its audit trail")
            )
    for lot_id in expected_lots:
        problems.append(VerifyProblem("lots", None, None, f"lot {lot_id} deleted"))
    return count


async def _check_master_data(
    conn: AsyncConnection, audited: _Audited, problems: list[VerifyProblem]
) -> None:
    expected = {key: doc for key, (_, _, _, doc) in audited.master.items()}
    tables = (
        ("material", t.materials, material_from_row),
        ("storage_unit", t.storage_units, unit_from_row),
    )
    for object_type, table, from_row in tables:
        for row in (await conn.execute(select(table))).mappings():
            obj = from_row(row)
            doc = expected.pop((object_type, obj.id), None)
            if doc is None:
                problems.append(
                    VerifyProblem(table.name, None, None, f"{object_type} {obj.id} not audited")
                )
            elif canonical_json(master_document(obj)) != _with_later_fields(doc):
                problems.append(
                    VerifyProblem(
                        table.name, None, None, f"{object_type} {obj.id} differs from its audit"
                    )
                )
    for object_type, object_id in expected:
        problems.append(
            VerifyProblem(object_type, None, None, f"{object_type} {object_id} deleted")
        )


async def _check_advices(
    conn: AsyncConnection, audited: _Audited, problems: list[VerifyProblem]
) -> None:
    expected = {advice_id: doc for advice_id, (_, _, _, doc) in audited.advices.items()}
    for row in (await conn.execute(select(t.advices))).mappings():
        advice = advice_from_row(row)
        doc = expected.pop(advice.id, None)
        if doc is None:
            problems.append(VerifyProblem("advices", None, None, f"advice {advice.id} not audited"))
        elif canonical_json(advice_document(advice)) != _advice_with_later_fields(doc):
            problems.append(
                VerifyProblem("advices", None, None, f"advice {advice.id} differs from its audit")
            )
    for advice_id in expected:
        problems.append(VerifyProblem("advices", None, None, f"advice {advice_id} deleted"))


async def _check_signatures(
    conn: AsyncConnection, audited: _Audited, problems: list[VerifyProblem]
) -> None:
    def problem(text: str) -> None:
        problems.append(VerifyProblem("signatures", None, None, text))

    expected = dict(audited.signatures)
    requests = {
        row["id"]: pending_request_from_row(row)
        for row in (await conn.execute(select(t.pending_requests))).mappings()
    }
    approvals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in (await conn.execute(select(t.signatures))).mappings():
        signature = signature_from_row(row)
        key = (signature.request_id, signature.seq)
        where = f"signature {signature.seq} of request {REQUEST_PREFIX}{signature.request_id}"
        audit = expected.pop(key, None)
        if audit is None:
            problem(f"{where} is not audited (added)")
        elif canonical_json(signature.as_dict()) != audit:
            problem(f"{where} differs from its audit record")
        pending = requests.get(signature.request_id)
        if pending is None:
            problem(f"{where} signs a request that does not exist")
        elif signature.digest != pending.digest:
            problem(f"{where} is bound to another digest than its request's")
        if signature.decision is Decision.APPROVED:
            approvals[signature.request_id].append(signed_manifest(signature))
    for request_id, seq in expected:
        problem(f"signature {seq} of request {REQUEST_PREFIX}{request_id} deleted")
    for pending in requests.values():
        recomputed = request_digest(
            pending.id, pending.action, pending.payload, pending.requested_by, pending.created_at
        )
        record = audited.requests.get(pending.id)
        if pending.digest != recomputed or record is None or pending.digest not in record:
            problem(f"request {pending.request_id} differs from what was signed or audited")
    rows = await conn.stream(select(t.movements).where(t.movements.c.details.contains('"request"')))
    async for row in rows.mappings():
        m = movement_from_row(row)
        held = m.details.get("request")
        if not isinstance(held, str):
            continue
        signed = approvals.get(held.removeprefix(REQUEST_PREFIX), [])
        if m.details.get("signatures") != signed:
            problem(f"movement {m.id} carries other signatures than request {held}")


def _with_quality(doc: dict[str, Any], latest: tuple[str, str, int, str] | None) -> dict[str, Any]:
    """A lot's audited document with its latest quality record applied (set_lot_quality:
    properties, retest, certificate and expiry); empty quality data is not shown."""
    if latest is None:
        return doc
    try:
        data = json.loads(latest[3])
        quality = {k: data[k] for k in ("properties", "retest", "certificate")}
        expiry = data["expiry"]
    except (ValueError, KeyError, TypeError):
        return doc  # an edited record: the chain check reports it
    base = {k: v for k, v in doc.items() if k not in quality}
    empty = not quality["properties"] and quality["retest"] is None and not quality["certificate"]
    return {**base, "expiry": expiry} | ({} if empty else quality)


def _advice_with_later_fields(doc: str) -> str:
    """An audited advice with the fields added since 0005 at their defaults (consumed
    quantities and units, the partner of a transfer between two measured units)."""
    try:
        fields = json.loads(doc)
    except ValueError:
        return doc
    if isinstance(fields, dict):
        for key, default in (
            ("consumed_quantities", []),
            ("consumed_units", []),
            ("partner_unit", None),
            ("partner", None),
        ):
            fields.setdefault(key, default)
    return canonical_json(fields)


def _with_later_fields(doc: str) -> str:
    """An audited master-data document with the fields added since it was written, at
    the values their migration gave existing rows (0004: lot handling by kind, the
    default empty threshold, manual booking; 0005: the default advice window): an old
    ledger verifies after upgrading, and any later change of those fields is audited
    with them."""
    try:
        fields = json.loads(doc)
    except ValueError:  # an edited record: compared as it is, so the edit is reported
        return doc
    if isinstance(fields, dict) and "kind" in fields and "lot_handling" not in fields:
        fields["lot_handling"] = "mixed" if fields["kind"] == "tank" else "fifo"
        fields.setdefault("zero_lot_threshold", None)
        fields.setdefault("booking", "manual")
    if isinstance(fields, dict) and "kind" in fields and "advice_window_s" not in fields:
        fields["advice_window_s"] = str(DEFAULT_ADVICE_WINDOW_S)
    return canonical_json(fields)


async def _chain(conn: AsyncConnection, writer: str) -> AsyncIterator[Mapping[Any, Any]]:
    """Audit rows of one chain in sequence order, a page at a time."""
    last = -1
    while True:
        query = (
            select(t.audit)
            .where(t.audit.c.writer == writer, t.audit.c.seq > last)
            .order_by(t.audit.c.seq)
            .limit(PAGE)
        )
        rows = (await conn.execute(query)).mappings().all()
        if not rows:
            return
        for row in rows:
            yield row
        last = int(rows[-1]["seq"])

"""Audit records and their SHA-256 hash chain (pure functions, no storage).

Each writer (service instance) appends to its own chain with contiguous
sequence numbers. A record's hash covers every stored field exactly as
stored (text), plus the previous record's hash, so editing any byte,
deleting a record or reordering records breaks the chain.

Hash input (so an outside tool can recompute it): the fields writer, seq,
timestamp, user, action, object_type, object_id, reason, old, new, prev_hash,
each as UTF-8 text (seq in decimal), each prefixed by its length in
characters and a colon (`6:test-a1:1...`), concatenated; SHA-256, hex.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64
# An object as a reader names it (`lot:L1`, `unit:TK-101`) -> its type in the trail.
AUDIT_OBJECT_TYPES = {
    "lot": "lot",
    "unit": "storage_unit",
    "storage_unit": "storage_unit",
    "material": "material",
    "movement": "movement",
    "advice": "advice",
    "request": "request",
    "period": "period",
    "signature_policies": "signature_policies",
    "api_route": "api_route",
    "opcua_method": "opcua_method",
    "opcua_session": "opcua_session",
    "opcua_login": "opcua_login",
}
# The objects whose records include those of the movements booked to them.
WITH_MOVEMENTS = frozenset({"lot", "storage_unit"})


def audited_object(text: str) -> tuple[str, str]:
    """(object type as stored, id) of `TYPE:ID`; ValueError naming the known types."""
    kind, _, object_id = text.partition(":")
    object_type = AUDIT_OBJECT_TYPES.get(kind)
    if object_type is None or not object_id:
        known = ", ".join(AUDIT_OBJECT_TYPES)
        raise ValueError(f"{text!r}: expected TYPE:ID, TYPE one of {known}")
    return object_type, object_id


def stored_value(text: str) -> Any:
    """An audited value: its JSON where stored as a JSON object or list, else the text
    (a digest), None where empty."""
    if not text:
        return None
    if text[0] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True, slots=True)
class PendingAudit:
    """An audit entry before it gets its place (seq, hashes) in the writer's chain."""

    timestamp: str
    user: str
    action: str
    object_type: str
    object_id: str
    reason: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what, when and why, with old -> new values as canonical JSON text."""

    writer: str
    seq: int
    timestamp: str
    user: str
    action: str
    object_type: str
    object_id: str
    reason: str
    old: str
    new: str
    prev_hash: str
    hash: str


def canonical_json(value: object) -> str:
    """Deterministic JSON text: sorted keys, no spaces, UTF-8 kept readable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(
    writer: str,
    seq: int,
    timestamp: str,
    user: str,
    action: str,
    object_type: str,
    object_id: str,
    reason: str,
    old: str,
    new: str,
    prev_hash: str,
) -> str:
    """SHA-256 over the record's fields exactly as stored."""
    return hashlib.sha256(
        length_prefixed(
            writer, str(seq), timestamp, user, action, object_type, object_id, reason, old, new,
            prev_hash,
        ).encode("utf-8")
    ).hexdigest()  # fmt: skip


def length_prefixed(*fields: str | None) -> str:
    """Unambiguous concatenation: `<len>:<text>` per field, `N` for NULL (no escaping)."""
    return "".join("N" if f is None else f"{len(f)}:{f}" for f in fields)


def make_record(
    *,
    writer: str,
    seq: int,
    timestamp: str,
    user: str,
    action: str,
    object_type: str,
    object_id: str,
    reason: str,
    old: str,
    new: str,
    prev_hash: str,
) -> AuditRecord:
    digest = record_hash(
        writer, seq, timestamp, user, action, object_type, object_id, reason, old, new, prev_hash
    )
    return AuditRecord(
        writer, seq, timestamp, user, action, object_type, object_id, reason, old, new,
        prev_hash, digest,
    )  # fmt: skip


def check_record(record: AuditRecord, expected_seq: int, expected_prev: str) -> str | None:
    """Why `record` breaks its chain at this position, or None when it is intact."""
    if record.seq != expected_seq:
        if record.seq > expected_seq:
            return f"sequence gap: expected {expected_seq}, found {record.seq} (record deleted)"
        return f"sequence out of order: expected {expected_seq}, found {record.seq}"
    if record.prev_hash != expected_prev:
        return "previous-hash link broken (record deleted, inserted or reordered)"
    recomputed = record_hash(
        record.writer, record.seq, record.timestamp, record.user, record.action,
        record.object_type, record.object_id, record.reason, record.old, record.new,
        record.prev_hash,
    )  # fmt: skip
    if recomputed != record.hash:
        return "hash mismatch (record edited)"
    return None


def audit_document(cursor: int, r: AuditRecord) -> dict[str, Any]:
    """A record as JSON (`old`/`new` parsed where stored as JSON), with its cursor."""
    return {
        "cursor": cursor,
        "writer": r.writer,
        "seq": r.seq,
        "timestamp": r.timestamp,
        "user": r.user,
        "action": r.action,
        "object_type": r.object_type,
        "object_id": r.object_id,
        "reason": r.reason,
        "old": stored_value(r.old),
        "new": stored_value(r.new),
        "hash": r.hash,
    }

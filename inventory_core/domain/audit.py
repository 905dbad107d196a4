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

GENESIS_HASH = "0" * 64


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

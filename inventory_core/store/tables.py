"""Ledger schema (SQLAlchemy Core). Alembic migrations create it; this is the query model.

Quantities, timestamps and JSON are stored as TEXT so that both backends keep
exact decimals and the audit hash covers byte-identical values.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

materials = Table(
    "materials",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("description", Text, nullable=False),
    Column("base_uom", String(8), nullable=False),
    Column("density_kg_per_l", Text, nullable=True),
    Column("default_lot_status", String(16), nullable=False),
    Column("material_class", String(64), nullable=True),
)

storage_units = Table(
    "storage_units",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("area", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("capacity", Text, nullable=False),
    Column("capacity_uom", String(8), nullable=False),
    Column("material", String(64), nullable=True),
    Column("description", Text, nullable=False),
    Column("lot_handling", String(8), nullable=False, server_default="fifo"),  # 0004
    Column("zero_lot_threshold", Text, nullable=True),  # 0004; NULL: the default
    Column("booking", String(8), nullable=False, server_default="manual"),  # 0004
    Column("advice_window_s", Integer, nullable=False, server_default="7200"),  # 0005
)

lots = Table(
    "lots",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("material", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expiry", String(10), nullable=True),
    # 0008: quality data (domain.lot_quality)
    Column("properties", Text, nullable=False, server_default="[]"),
    Column("retest", String(10), nullable=True),
    Column("certificate", Text, nullable=False, server_default=""),
)

movements = Table(
    "movements",
    metadata,
    Column("seq", AutoId, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("material", String(64), nullable=False),
    Column("lot", String(128), nullable=False),
    Column("from_unit", String(64), nullable=True),
    Column("to_unit", String(64), nullable=True),
    Column("quantity", Text, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("posted_quantity", Text, nullable=False),
    Column("posted_uom", String(8), nullable=False),
    Column("timestamp", String(32), nullable=False),
    Column("user", String(128), nullable=False),
    Column("source", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("payload_hash", String(64), nullable=False),
    Column("reverses", String(36), nullable=True, unique=True),
    Column("writer", String(64), nullable=False),
    Column("details", Text, nullable=False),
    Index("ix_movements_lot", "lot", "seq"),
    Index("ix_movements_from_unit", "from_unit", "seq"),
    Index("ix_movements_to_unit", "to_unit", "seq"),
    Index("ix_movements_timestamp", "timestamp"),
)

balances = Table(
    "balances",
    metadata,
    Column("unit", String(64), primary_key=True),
    Column("lot", String(128), primary_key=True),
    Column("material", String(64), nullable=False),
    Column("quantity", Text, nullable=False),
    # 0004: when the lot (last) arrived in the unit: orders fifo/lifo draws
    Column("entered", String(48), nullable=False, server_default=""),
)

lot_links = Table(
    "lot_links",
    metadata,
    Column("parent", String(128), primary_key=True),
    Column("child", String(128), primary_key=True),
    Column("movement_id", String(36), primary_key=True),
    Column("quantity", Text, nullable=True),  # 0004: parent quantity that went in
    Index("ix_lot_links_child", "child"),
)

measurements = Table(
    "measurements",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("unit", String(64), nullable=False),
    Column("quantity", Text, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("timestamp", String(32), nullable=False),
    Column("quality", String(16), nullable=False),
    Index("ix_measurements_unit", "unit", "id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("writer", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("timestamp", String(32), nullable=False),
    Column("user", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("old", Text, nullable=False),
    Column("new", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("writer", "seq", name="uq_audit_writer_seq"),
    Index("ix_audit_object", "object_type", "object_id"),
)

# Small key/value facts about the ledger, e.g. the master-data revision writers cache by.
ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("writer", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# Trend samples behind OPC UA HistoryRead (revision 0002). Not audited: the ledger's
# movements are the authoritative record; this is a pruned convenience history.
# `status` is an OPC UA StatusCode (UInt32: Bad codes exceed a signed 32-bit INTEGER).
value_history = Table(
    "value_history",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("node", Text, nullable=False),
    Column("source_time", String(32), nullable=False),
    Column("server_time", String(32), nullable=True),
    Column("value", Text, nullable=True),
    Column("status", BigInteger, nullable=False),
    Index("ix_value_history_node_time", "node", "source_time"),
)

# Which process holds each writer id (revision 0003): one live process per audit chain.
# Acquired, renewed and released in the writer's own transactions; times are the
# database's clock, fixed-width UTC text, so they compare as text on every backend.
writer_leases = Table(
    "writer_leases",
    metadata,
    Column("writer_id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("instance", String(36), nullable=False),
    Column("acquired_at", String(32), nullable=False),
    Column("heartbeat_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
)

# The writer that books each PLC-measured storage unit (revision 0003), live while that
# writer's lease is: a unit is booked by one writer at a time.
unit_owners = Table(
    "unit_owners",
    metadata,
    Column("unit", String(64), primary_key=True),
    Column("writer_id", String(64), nullable=False),
    Column("claimed_at", String(32), nullable=False),
    Index("ix_unit_owners_writer", "writer_id"),
)

# Manual changes of measured units, waiting for (or matched to) what the gauge books
# (revision 0005). Rows are updated as movements match them (matched, matches, state):
# the movements carry the advice id and are the audited record; every state change of
# an advice is audited as well.
advices = Table(
    "advices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("unit", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("material", String(64), nullable=False),
    Column("lot", String(128), nullable=True),
    Column("expected", Text, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("ref", Text, nullable=False),
    Column("user", String(128), nullable=False),
    Column("source", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("payload_hash", String(64), nullable=False),
    Column("other_unit", String(64), nullable=True),
    Column("details", Text, nullable=False),  # consumed lots, lot expiry (JSON)
    Column("state", String(8), nullable=False),
    Column("matched", Text, nullable=False),
    Column("matches", Integer, nullable=False),
    Column("closed_at", String(32), nullable=True),
    Column("writer", String(64), nullable=False),
    Index("ix_advices_unit_state", "unit", "state"),
    Index("ix_advices_state_expires", "state", "expires_at"),
)

# Requests held for electronic signatures (revision 0006): the request as it was made
# (payload), the digest its signatures are bound to, and its state; rows are updated
# when signed, posted or rejected. Each signature is a row of `signatures` and an audit
# record carrying the same values, so `verify` sees one lost, added or changed.
pending_requests = Table(
    "pending_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("action", String(16), nullable=False),
    Column("summary", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("payload_hash", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("meaning", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("signatures_required", Integer, nullable=False),
    Column("second_person", Integer, nullable=False),
    Column("idempotency_key", Text, nullable=True, unique=True),
    Column("state", String(16), nullable=False),
    Column("outcome", Text, nullable=False),
    Column("closed_at", String(32), nullable=True),
    Column("writer", String(64), nullable=False),
    Index("ix_pending_requests_state", "state", "created_at"),
)

signatures = Table(
    "signatures",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("signer", String(128), nullable=False),
    Column("printed_name", String(256), nullable=False),
    Column("meaning", String(64), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("signed_at", String(32), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("reason", Text, nullable=False),
)

# Periods of the books closed with a signed balance report (revision 0007): nothing
# posts with a time inside one; corrections post in the open period.
closed_periods = Table(
    "closed_periods",
    metadata,
    Column("id", String(80), primary_key=True),  # "<start>/<end>"
    Column("start", String(32), nullable=False),
    Column("end", String(32), nullable=False),
    Column("report_digest", String(64), nullable=False),
    Column("request_id", String(48), nullable=False),
    Column("closed_at", String(32), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("writer", String(64), nullable=False),
)

# What units' flow totalizers counted (revision 0009): meter versus gauge in the period
# mass balance (domain.meter). Not movements: the gauge books the material.
meter_flows = Table(
    "meter_flows",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("unit", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("quantity", Text, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("window_start", String(32), nullable=False),
    Column("window_end", String(32), nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("writer", String(64), nullable=False),
    Index("ix_meter_flows_unit_end", "unit", "window_end"),
)

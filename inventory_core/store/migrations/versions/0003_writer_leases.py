"""writer leases and unit owners

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00.000000

One live process per writer id (`writer_leases`: holder host, pid and start
instance, acquired/heartbeat/expiry times from the database's clock) and one
writer per PLC-measured storage unit (`unit_owners`). Both start empty: an
existing ledger's instances claim their writer ids and units at their next start.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "writer_leases",
        sa.Column("writer_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.BigInteger(), nullable=False),
        sa.Column("instance", sa.String(length=36), nullable=False),
        sa.Column("acquired_at", sa.String(length=32), nullable=False),
        sa.Column("heartbeat_at", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("writer_id"),
    )
    op.create_table(
        "unit_owners",
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("writer_id", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("unit"),
    )
    with op.batch_alter_table("unit_owners", schema=None) as batch_op:
        batch_op.create_index("ix_unit_owners_writer", ["writer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("unit_owners", schema=None) as batch_op:
        batch_op.drop_index("ix_unit_owners_writer")
    op.drop_table("unit_owners")
    op.drop_table("writer_leases")

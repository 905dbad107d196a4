"""advices: manual changes of measured units, matched to the gauge's movements

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:00:00.000000

`advices` holds each advice (expected lot and quantity of a receipt, issue, transfer
or production into or out of a measured unit) with its state (open, matched,
expired) and what the gauge booked to it; `storage_units.advice_window_s` how long
the unit's advices wait.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_units", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("advice_window_s", sa.Integer(), nullable=False, server_default="7200")
        )
    op.create_table(
        "advices",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("material", sa.String(length=64), nullable=False),
        sa.Column("lot", sa.String(length=128), nullable=True),
        sa.Column("expected", sa.Text(), nullable=False),
        sa.Column("uom", sa.String(length=8), nullable=False),
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False, unique=True),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("other_unit", sa.String(length=64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("matched", sa.Text(), nullable=False),
        sa.Column("matches", sa.Integer(), nullable=False),
        sa.Column("closed_at", sa.String(length=32), nullable=True),
        sa.Column("writer", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_advices_unit_state", "advices", ["unit", "state"])
    op.create_index("ix_advices_state_expires", "advices", ["state", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_advices_state_expires", table_name="advices")
    op.drop_index("ix_advices_unit_state", table_name="advices")
    op.drop_table("advices")
    with op.batch_alter_table("storage_units", schema=None) as batch_op:
        batch_op.drop_column("advice_window_s")

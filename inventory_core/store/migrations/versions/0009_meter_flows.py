"""meter flows: what a unit's flow totalizer counted (meter versus gauge)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_flows",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Text(), nullable=False),
        sa.Column("uom", sa.String(length=8), nullable=False),
        sa.Column("window_start", sa.String(length=32), nullable=False),
        sa.Column("window_end", sa.String(length=32), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("writer", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_meter_flows_unit_end", "meter_flows", ["unit", "window_end"])


def downgrade() -> None:
    op.drop_index("ix_meter_flows_unit_end", table_name="meter_flows")
    op.drop_table("meter_flows")

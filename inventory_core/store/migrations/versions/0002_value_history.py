"""value history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:00:00.000000

Trend samples for OPC UA HistoryRead, stored in the ledger database so they
survive restarts. Times are fixed-width UTC text like the ledger's timestamps,
values JSON text (a number or a string), status the OPC UA StatusCode value.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "value_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("node", sa.Text(), nullable=False),
        sa.Column("source_time", sa.String(length=32), nullable=False),
        sa.Column("server_time", sa.String(length=32), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("status", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("value_history", schema=None) as batch_op:
        batch_op.create_index("ix_value_history_node_time", ["node", "source_time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("value_history", schema=None) as batch_op:
        batch_op.drop_index("ix_value_history_node_time")
    op.drop_table("value_history")

"""lot handling: per-unit rule, empty threshold and booking, lot arrival order, link quantities

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00.000000

`storage_units.lot_handling` (fifo, lifo, mixed, single, blend) and
`zero_lot_threshold` (NULL: the default), `booking` (measured or manual; existing
units start `manual` and the config's next sync, audited, sets the measured ones);
existing tanks become `mixed`, silos and bins `fifo`, as the config's defaults say.
`balances.entered` orders the lots of a unit by arrival (fifo/lifo draws);
existing rows get their lot's creation time, the best order the old ledger knows.
`lot_links.quantity`: how much of the parent went into the child (NULL for links
written before this revision).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_units", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lot_handling", sa.String(length=8), nullable=False, server_default="fifo")
        )
        batch_op.add_column(sa.Column("zero_lot_threshold", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("booking", sa.String(length=8), nullable=False, server_default="manual")
        )
    op.execute("UPDATE storage_units SET lot_handling = 'mixed' WHERE kind = 'tank'")
    with op.batch_alter_table("balances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("entered", sa.String(length=48), nullable=False, server_default="")
        )
    op.execute(
        "UPDATE balances SET entered = COALESCE("
        "(SELECT lots.created_at FROM lots WHERE lots.id = balances.lot), '')"
    )
    with op.batch_alter_table("lot_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quantity", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lot_links", schema=None) as batch_op:
        batch_op.drop_column("quantity")
    with op.batch_alter_table("balances", schema=None) as batch_op:
        batch_op.drop_column("entered")
    with op.batch_alter_table("storage_units", schema=None) as batch_op:
        batch_op.drop_column("booking")
        batch_op.drop_column("zero_lot_threshold")
        batch_op.drop_column("lot_handling")

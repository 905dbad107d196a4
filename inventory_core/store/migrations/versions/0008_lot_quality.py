"""lot quality: properties, retest date and certificate of each lot

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 13:30:00.000000

`lots.properties` (JSON list of name, value, unit), `lots.retest` (ISO date) and
`lots.certificate` (the certificate of analysis' reference).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("properties", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("retest", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("certificate", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_column("certificate")
        batch_op.drop_column("retest")
        batch_op.drop_column("properties")

"""closed periods: the books closed with a signed balance report

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:00:00.000000

`closed_periods` holds each period [start, end) closed by a signed `period-close`
request, with the SHA-256 of the balance report that was signed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "closed_periods",
        sa.Column("id", sa.String(length=80), primary_key=True),
        sa.Column("start", sa.String(length=32), nullable=False),
        sa.Column("end", sa.String(length=32), nullable=False),
        sa.Column("report_digest", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=48), nullable=False),
        sa.Column("closed_at", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("writer", sa.String(length=64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("closed_periods")

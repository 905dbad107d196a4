"""signatures: requests held for electronic signatures, and the signatures

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 12:30:00.000000

`pending_requests` holds each request a `[[signatures]]` policy caught, as it was
made, with the digest its signatures are bound to and its state (pending, posted,
rejected); `signatures` each signature or rejection of one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_requests",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("meaning", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("signatures_required", sa.Integer(), nullable=False),
        sa.Column("second_person", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True, unique=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("closed_at", sa.String(length=32), nullable=True),
        sa.Column("writer", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_pending_requests_state", "pending_requests", ["state", "created_at"])
    op.create_table(
        "signatures",
        sa.Column("request_id", sa.String(length=36), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("signer", sa.String(length=128), nullable=False),
        sa.Column("printed_name", sa.String(length=256), nullable=False),
        sa.Column("meaning", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("signed_at", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signatures")
    op.drop_index("ix_pending_requests_state", table_name="pending_requests")
    op.drop_table("pending_requests")

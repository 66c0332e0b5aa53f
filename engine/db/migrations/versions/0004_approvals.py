"""approvals: bookings waiting for a person's decision

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("hold_id", sa.String(length=64), nullable=True),
        sa.Column("fallback", sa.String(length=32), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("deadline_ts", sa.Float(), nullable=False),
        sa.Column("decided_ts", sa.Float(), nullable=True),
        sa.Column("decided_by", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("turn_id", sa.String(length=64), nullable=False),
        sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("approval_id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_approvals_state_deadline_ts"), ["state", "deadline_ts"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_approvals_client_id_state_created_ts"),
            ["client_id", "state", "created_ts"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvals_client_id_state_created_ts"))
        batch_op.drop_index(batch_op.f("ix_approvals_state_deadline_ts"))
    op.drop_table("approvals")

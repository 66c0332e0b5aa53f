"""handoff state per conversation, staff lines in the transcript

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("staff", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("handoff", sa.String(length=16), server_default="bot", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("handoff")

    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.drop_column("staff")

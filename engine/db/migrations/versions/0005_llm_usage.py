"""model token use and estimated cost per conversation

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("llm_input_tokens", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("llm_output_tokens", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("llm_calls", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("llm_cost_usd", sa.Float(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        for column in ("llm_cost_usd", "llm_calls", "llm_output_tokens", "llm_input_tokens"):
            batch_op.drop_column(column)

"""messaging channels: inbound messages (dedupe, state, lease), threads
(24-hour window, last choices), outbound messages (delivery statuses)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
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
        "inbound_messages",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), server_default="", nullable=False),
        sa.Column("choice_id", sa.String(256)),
        sa.Column("media", sa.Text(), server_default="[]", nullable=False),
        sa.Column("wa_id", sa.String(64)),
        sa.Column("profile_name", sa.String(256)),
        sa.Column("business", sa.String(64)),
        sa.Column("provider_ts", sa.Float(), nullable=False),
        sa.Column("received_ts", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claim", sa.String(64)),
        sa.Column("lease_until_ts", sa.Float()),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("turn_id", sa.String(64)),
        sa.Column("error", sa.Text()),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "message_id", name=op.f("pk_inbound_messages")),
    )
    op.create_index(
        "ix_inbound_messages_state_received_ts", "inbound_messages", ["state", "received_ts"]
    )
    op.create_index(
        "ix_inbound_messages_client_id_channel_sender_state",
        "inbound_messages",
        ["client_id", "channel", "sender", "state"],
    )
    op.create_table(
        "messaging_threads",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("business", sa.String(64)),
        sa.Column("last_inbound_ts", sa.Float(), nullable=False),
        sa.Column("choices", sa.Text(), server_default="[]", nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "client_id", "channel", "sender", name=op.f("pk_messaging_threads")
        ),
    )
    op.create_table(
        "outbound_messages",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("provider_message_id", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("outbox_key", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(32)),
        sa.Column("error_title", sa.Text()),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "provider", "provider_message_id", name=op.f("pk_outbound_messages")
        ),
    )
    op.create_index(
        "ix_outbound_messages_client_id_status_updated_ts",
        "outbound_messages",
        ["client_id", "status", "updated_ts"],
    )
    op.create_index("ix_outbound_messages_outbox_key", "outbound_messages", ["outbox_key"])


def downgrade() -> None:
    op.drop_index("ix_outbound_messages_outbox_key", table_name="outbound_messages")
    op.drop_index(
        "ix_outbound_messages_client_id_status_updated_ts", table_name="outbound_messages"
    )
    op.drop_table("outbound_messages")
    op.drop_table("messaging_threads")
    op.drop_index(
        "ix_inbound_messages_client_id_channel_sender_state", table_name="inbound_messages"
    )
    op.drop_index("ix_inbound_messages_state_received_ts", table_name="inbound_messages")
    op.drop_table("inbound_messages")

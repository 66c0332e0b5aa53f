"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "bookings",
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("start_ts", sa.Float(), nullable=False),
        sa.Column("end_ts", sa.Float(), nullable=False),
        sa.Column("start_iso", sa.String(length=40), nullable=False),
        sa.Column("end_iso", sa.String(length=40), nullable=False),
        sa.Column("service", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=512), server_default="", nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("turn_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="booked", nullable=False),
        sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_iso", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("booking_id", name=op.f("pk_bookings")),
    )
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bookings_client_id_start_ts"), ["client_id", "start_ts"], unique=False
        )

    op.create_table(
        "calendar_locks",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_calendar_locks")),
    )
    op.create_table(
        "call_traces",
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("call_sid", name=op.f("pk_call_traces")),
    )
    with op.batch_alter_table("call_traces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_traces_updated_ts"), ["updated_ts"], unique=False)

    op.create_table(
        "conversation_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("cut", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("at_iso", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_messages")),
    )
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversation_messages_client_id_channel_session_id_id"),
            ["client_id", "channel", "session_id", "id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_conversation_messages_client_id_channel_session_id_line_id"),
            ["client_id", "channel", "session_id", "line_id"],
            unique=True,
        )

    op.create_table(
        "conversations",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("turn_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_iso", sa.String(length=40), nullable=False),
        sa.Column("updated_iso", sa.String(length=40), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "client_id", "channel", "session_id", name=op.f("pk_conversations")
        ),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversations_client_id_updated_ts"),
            ["client_id", "updated_ts"],
            unique=False,
        )

    op.create_table(
        "leads",
        sa.Column("lead_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.String(length=64), nullable=True),
        sa.Column("service", sa.String(length=256), nullable=True),
        sa.Column("start_iso", sa.String(length=40), nullable=True),
        sa.Column("end_iso", sa.String(length=40), nullable=True),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("turn_id", sa.String(length=64), nullable=True),
        sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_iso", sa.String(length=40), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_leads")),
    )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_leads_client_id_created_ts"), ["client_id", "created_ts"], unique=False
        )

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=256), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_ts", sa.Float(), nullable=False),
        sa.Column("claimed_until_ts", sa.Float(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.Column("delivered_ts", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_outbox_idempotency_key")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_client_id_state"), ["client_id", "state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_outbox_state_next_attempt_ts"),
            ["state", "next_attempt_ts"],
            unique=False,
        )

    op.create_table(
        "processed_messages",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.String(length=256), nullable=False),
        sa.Column("turn_id", sa.String(length=64), nullable=False),
        sa.Column("expires_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "client_id", "channel", "session_id", "message_id", name=op.f("pk_processed_messages")
        ),
    )
    with op.batch_alter_table("processed_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_processed_messages_expires_ts"), ["expires_ts"], unique=False
        )

    op.create_table(
        "session_events",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "client_id", "channel", "session_id", "event_id", name=op.f("pk_session_events")
        ),
    )
    op.create_table(
        "sessions",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expires_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "channel", "session_id", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_expires_ts"), ["expires_ts"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_expires_ts"))

    op.drop_table("sessions")
    op.drop_table("session_events")
    with op.batch_alter_table("processed_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_processed_messages_expires_ts"))

    op.drop_table("processed_messages")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_state_next_attempt_ts"))
        batch_op.drop_index(batch_op.f("ix_outbox_client_id_state"))

    op.drop_table("outbox")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_client_id_created_ts"))

    op.drop_table("leads")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversations_client_id_updated_ts"))

    op.drop_table("conversations")
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_conversation_messages_client_id_channel_session_id_line_id")
        )
        batch_op.drop_index(batch_op.f("ix_conversation_messages_client_id_channel_session_id_id"))

    op.drop_table("conversation_messages")
    with op.batch_alter_table("call_traces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_traces_updated_ts"))

    op.drop_table("call_traces")
    op.drop_table("calendar_locks")
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bookings_client_id_start_ts"))

    op.drop_table("bookings")

"""contacts: returning contacts and the conversations they had

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("contact_key", sa.String(length=160), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("first_seen_iso", sa.String(length=40), nullable=False),
        sa.Column("last_seen_iso", sa.String(length=40), nullable=False),
        sa.Column("last_seen_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "contact_key", name=op.f("pk_contacts")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contacts_client_id_phone"), ["client_id", "phone"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_contacts_client_id_last_seen_ts"),
            ["client_id", "last_seen_ts"],
            unique=False,
        )

    op.create_table(
        "contact_conversations",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("contact_key", sa.String(length=160), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("date_iso", sa.String(length=10), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("service", sa.String(length=256), nullable=True),
        sa.Column("line", sa.String(length=512), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "client_id",
            "contact_key",
            "channel",
            "session_id",
            name=op.f("pk_contact_conversations"),
        ),
    )
    with op.batch_alter_table("contact_conversations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_conversations_client_id_channel_session_id"),
            ["client_id", "channel", "session_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_contact_conversations_client_id_updated_ts"),
            ["client_id", "updated_ts"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_conversations_client_id_updated_ts"))
        batch_op.drop_index(batch_op.f("ix_contact_conversations_client_id_channel_session_id"))
    op.drop_table("contact_conversations")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_client_id_last_seen_ts"))
        batch_op.drop_index(batch_op.f("ix_contacts_client_id_phone"))
    op.drop_table("contacts")

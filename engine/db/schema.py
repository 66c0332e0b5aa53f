"""The gateway's durable tables (SQLAlchemy Core), one metadata for SQLite and PostgreSQL.

Times are epoch seconds (``*_ts``, float, UTC) where the database compares
them, ISO-8601 text (``*_iso``, with the client's UTC offset) where people read
them. JSON documents are stored as text: both engines, no extension needed.

::

    sessions            one row per conversation: the engine's session JSON, a
                        version (optimistic concurrency) and an expiry
    session_events      a session's replay log (web chat events), by event id;
                        it lives as long as its session
    processed_messages  inbound message ids a committed turn consumed
    conversations       one row per conversation for the admin API (with its
                        takeover state: bot, pending_human, human, resolved)
    conversation_messages  the durable transcript, append-only (ordered by id)
    bookings            the local calendar (never two overlapping per client)
    calendar_locks      one row per client, locked while a booking is written
    leads               the lead ledger (what /admin/api/leads reads)
    call_traces         phone calls' per-turn stage timings
    outbox              side effects to deliver exactly once (Slack, email,
                        Twilio call actions...), with retries and a dead state
    approvals           actions waiting for a person's decision (a booking
                        outside the usual rules): pending until approved,
                        declined, expired (timeout fallback) or withdrawn
    contacts            a client's returning contacts (engine.contacts): name,
                        phone, email, first/last seen, by contact key
    contact_conversations  which conversations a contact had, with a one-line
                        summary of each (no free text from the customer)

The schema evolves only through the Alembic migrations beside this module
(``engine/db/migrations``); ``gateway db upgrade`` applies them.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "APPROVALS",
    "BOOKINGS",
    "CALENDAR_LOCKS",
    "CALL_TRACES",
    "CONTACTS",
    "CONTACT_CONVERSATIONS",
    "CONVERSATIONS",
    "CONVERSATION_MESSAGES",
    "INBOUND_MESSAGES",
    "LEADS",
    "MESSAGING_THREADS",
    "METADATA",
    "OUTBOUND_MESSAGES",
    "OUTBOX",
    "PROCESSED_MESSAGES",
    "SESSIONS",
    "SESSION_EVENTS",
]

METADATA = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_KEY = ("client_id", "channel", "session_id")


def _key_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("session_id", sa.String(128), primary_key=True),
    ]


SESSIONS = sa.Table(
    "sessions",
    METADATA,
    *_key_columns(),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("last_event_id", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expires_ts", sa.Float, nullable=False, index=True),
    sa.Column("updated_ts", sa.Float, nullable=False),
)

SESSION_EVENTS = sa.Table(
    "session_events",
    METADATA,
    *_key_columns(),
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.Text, nullable=False),
)

PROCESSED_MESSAGES = sa.Table(
    "processed_messages",
    METADATA,
    *_key_columns(),
    sa.Column("message_id", sa.String(256), primary_key=True),
    sa.Column("turn_id", sa.String(64), nullable=False),
    sa.Column("expires_ts", sa.Float, nullable=False, index=True),
)

CONVERSATIONS = sa.Table(
    "conversations",
    METADATA,
    *_key_columns(),
    sa.Column("purpose", sa.String(64)),
    sa.Column("outcome", sa.String(64)),
    sa.Column("turn_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("message_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_iso", sa.String(40), nullable=False),
    sa.Column("updated_iso", sa.String(40), nullable=False),
    sa.Column("updated_ts", sa.Float, nullable=False),
    # bot | pending_human | human | resolved (engine.takeover)
    sa.Column("handoff", sa.String(16), nullable=False, server_default="bot"),
    # the model's use by the conversation (engine.session.LlmUsage)
    sa.Column("llm_input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("llm_output_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("llm_calls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("llm_cost_usd", sa.Float, nullable=False, server_default="0"),
    sa.Index(None, "client_id", "updated_ts"),
)

CONVERSATION_MESSAGES = sa.Table(
    "conversation_messages",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("line_id", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("purpose", sa.String(64)),
    sa.Column("cut", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("at_iso", sa.String(40), nullable=False),
    # an assistant line a person at the business wrote (admin API staff reply)
    sa.Column("staff", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(None, "client_id", "channel", "session_id", "id"),
    sa.Index(None, "client_id", "channel", "session_id", "line_id", unique=True),
)

BOOKINGS = sa.Table(
    "bookings",
    METADATA,
    sa.Column("booking_id", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("start_ts", sa.Float, nullable=False),
    sa.Column("end_ts", sa.Float, nullable=False),
    sa.Column("start_iso", sa.String(40), nullable=False),
    sa.Column("end_iso", sa.String(40), nullable=False),
    sa.Column("service", sa.String(256), nullable=False),
    sa.Column("name", sa.String(512), nullable=False, server_default=""),
    sa.Column("channel", sa.String(16)),
    sa.Column("session_id", sa.String(128)),
    sa.Column("turn_id", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False, server_default="booked"),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_iso", sa.String(40), nullable=False),
    sa.Index(None, "client_id", "start_ts"),
)

CALENDAR_LOCKS = sa.Table(
    "calendar_locks",
    METADATA,
    sa.Column("client_id", sa.String(128), primary_key=True),
)

LEADS = sa.Table(
    "leads",
    METADATA,
    sa.Column("lead_id", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("booking_id", sa.String(64)),
    sa.Column("service", sa.String(256)),
    sa.Column("start_iso", sa.String(40)),
    sa.Column("end_iso", sa.String(40)),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("properties", sa.Text, nullable=False),
    sa.Column("turn_id", sa.String(64)),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_iso", sa.String(40), nullable=False),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Index(None, "client_id", "created_ts"),
)

CALL_TRACES = sa.Table(
    "call_traces",
    METADATA,
    sa.Column("call_sid", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("updated_ts", sa.Float, nullable=False, index=True),
)

OUTBOX = sa.Table(
    "outbox",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(256), nullable=False, unique=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    # pending | delivering | delivered | dead
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_ts", sa.Float, nullable=False),
    sa.Column("claimed_until_ts", sa.Float),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("last_error", sa.Text),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Column("updated_ts", sa.Float, nullable=False),
    sa.Column("delivered_ts", sa.Float),
    sa.Index(None, "state", "next_attempt_ts"),
    sa.Index(None, "client_id", "state"),
)

CONTACTS = sa.Table(
    "contacts",
    METADATA,
    sa.Column("client_id", sa.String(128), primary_key=True),
    # tel:+E164 (phone, WhatsApp) | wa:<wa id> | web:<hashed visitor id>
    sa.Column("contact_key", sa.String(160), primary_key=True),
    sa.Column("name", sa.String(512)),
    sa.Column("phone", sa.String(32)),
    sa.Column("email", sa.String(320)),
    sa.Column("first_seen_iso", sa.String(40), nullable=False),
    sa.Column("last_seen_iso", sa.String(40), nullable=False),
    sa.Column("last_seen_ts", sa.Float, nullable=False),
    sa.Index(None, "client_id", "phone"),
    sa.Index(None, "client_id", "last_seen_ts"),
)

CONTACT_CONVERSATIONS = sa.Table(
    "contact_conversations",
    METADATA,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("contact_key", sa.String(160), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("session_id", sa.String(128), primary_key=True),
    sa.Column("date_iso", sa.String(10), nullable=False),
    sa.Column("outcome", sa.String(64)),
    sa.Column("service", sa.String(256)),
    sa.Column("line", sa.String(512), nullable=False),
    sa.Column("updated_ts", sa.Float, nullable=False),
    sa.Index(None, "client_id", "channel", "session_id"),
    sa.Index(None, "client_id", "updated_ts"),
)

APPROVALS = sa.Table(
    "approvals",
    METADATA,
    sa.Column("approval_id", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("purpose", sa.String(64), nullable=False),
    # pending | approved | declined | expired | withdrawn (engine.approvals)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("hold_id", sa.String(64)),
    sa.Column("fallback", sa.String(32), nullable=False),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Column("deadline_ts", sa.Float, nullable=False),
    sa.Column("decided_ts", sa.Float),
    sa.Column("decided_by", sa.String(16)),
    sa.Column("note", sa.Text),
    sa.Column("outcome", sa.String(32)),
    sa.Column("result", sa.Text),
    sa.Column("turn_id", sa.String(64), nullable=False),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(None, "state", "deadline_ts"),
    sa.Index(None, "client_id", "state", "created_ts"),
)


# -- messaging channels (channels/whatsapp): WhatsApp via Twilio or Meta, SMS via Twilio

INBOUND_MESSAGES = sa.Table(
    "inbound_messages",
    METADATA,
    # twilio | meta, and the provider's message id (MessageSid, wamid): the dedupe key
    sa.Column("provider", sa.String(16), primary_key=True),
    sa.Column("message_id", sa.String(128), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("sender", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False, server_default=""),
    sa.Column("choice_id", sa.String(256)),
    sa.Column("media", sa.Text, nullable=False, server_default="[]"),
    sa.Column("wa_id", sa.String(64)),
    sa.Column("profile_name", sa.String(256)),
    sa.Column("business", sa.String(64)),
    sa.Column("provider_ts", sa.Float, nullable=False),
    sa.Column("received_ts", sa.Float, nullable=False),
    # received | processing | replied | failed (channels.whatsapp.inbox)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("claim", sa.String(64)),
    sa.Column("lease_until_ts", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("turn_id", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("updated_ts", sa.Float, nullable=False),
    sa.Index(None, "state", "received_ts"),
    sa.Index(None, "client_id", "channel", "sender", "state"),
)

MESSAGING_THREADS = sa.Table(
    "messaging_threads",
    METADATA,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("sender", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("business", sa.String(64)),
    # the customer's last message: the 24-hour customer-service window opens here
    sa.Column("last_inbound_ts", sa.Float, nullable=False),
    # the choices of the last reply, JSON [{"title", "value"}], so "2"/"two"/a title maps back
    sa.Column("choices", sa.Text, nullable=False, server_default="[]"),
    sa.Column("updated_ts", sa.Float, nullable=False),
)

OUTBOUND_MESSAGES = sa.Table(
    "outbound_messages",
    METADATA,
    sa.Column("provider", sa.String(16), primary_key=True),
    sa.Column("provider_message_id", sa.String(128), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("recipient", sa.String(64), nullable=False),
    sa.Column("outbox_key", sa.String(256), nullable=False),
    # queued | sent | delivered | read | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_code", sa.String(32)),
    sa.Column("error_title", sa.Text),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Column("updated_ts", sa.Float, nullable=False),
    sa.Index(None, "client_id", "status", "updated_ts"),
    sa.Index(None, "outbox_key"),
)

"""What became of the messages the gateway sent: the ``outbound_messages`` table.

One row per message a provider accepted (a Twilio ``SM...``/``MM...`` sid, a
Meta ``wamid``), written by the sender (:mod:`channels.whatsapp.sender`) as
``queued`` right after the provider answered, then moved forward by the
providers' status webhooks through :func:`record_status`::

    queued ──> sent ──> delivered ──> read
       │         │          │          │
       └─────────┴──────────┴──────────┴──> failed   (error_code, error_title)

A status never moves a row backwards (webhooks arrive out of order: Meta may
post ``read`` before ``delivered``), and ``failed`` wins over everything and
is final, keeping the provider's error code and title. A status for a message
the sender has not recorded yet (the webhook beat the sender's insert) is kept
in a row of its own with an empty ``outbox_key``, which the sender's insert
then completes: no status is lost to that race.

Staff see failed sends through ``GET /admin/api/messages?client_id=&status=failed``
(:func:`list_messages`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal, get_args

import sqlalchemy as sa

from channels.whatsapp.models import Provider, StatusUpdate
from engine.db.database import Database
from engine.db.fast import Tx
from engine.db.schema import OUTBOUND_MESSAGES

__all__ = [
    "STATUSES",
    "MessageStatus",
    "list_messages",
    "record_sent",
    "record_status",
    "sent_keys",
]

MessageStatus = Literal["queued", "sent", "delivered", "read", "failed"]
STATUSES: tuple[MessageStatus, ...] = get_args(MessageStatus)
"""In the order a message goes through them; ``failed`` ranks above all."""

_RANK = {status: rank for rank, status in enumerate(STATUSES)}


async def record_sent(
    db: Database,
    *,
    provider: Provider,
    message_id: str,
    client_id: str,
    channel: str,
    recipient: str,
    outbox_key: str,
    ts: float,
) -> None:
    """Record a message the provider just accepted, as ``queued``.

    ``outbox_key``: the outbox row's idempotency key and the part
    (``key#0``, ``key#template``), which :func:`sent_keys` finds on a retry.
    ``ts``: epoch seconds. A row a status webhook already created for this
    message keeps its (later) status and gains the rest.
    """

    async def write(tx: Tx) -> int:
        return await tx.execute(
            "INSERT INTO outbound_messages (provider, provider_message_id, client_id, channel,"
            " recipient, outbox_key, status, created_ts, updated_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7)"
            " ON CONFLICT (provider, provider_message_id) DO UPDATE SET"
            " client_id = excluded.client_id, channel = excluded.channel,"
            " recipient = excluded.recipient, outbox_key = excluded.outbox_key,"
            " created_ts = excluded.created_ts",
            provider,
            message_id,
            client_id,
            channel,
            recipient,
            outbox_key,
            ts,
        )

    await db.fast.transaction(write)


async def sent_keys(db: Database, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` (``outbox_key`` values) have a message recorded."""
    if not keys:
        return set()
    marks = ", ".join(f"${i}" for i in range(1, len(keys) + 1))

    async def read(tx: Tx) -> set[str]:
        rows = await tx.fetchall(
            f"SELECT outbox_key FROM outbound_messages WHERE outbox_key IN ({marks})", *keys
        )
        return {str(r[0]) for r in rows}

    return await db.fast.query(read)


async def record_status(db: Database, update: StatusUpdate, *, now: float | None = None) -> bool:
    """Apply a provider's status webhook; True when it changed what is stored.

    Forward moves only (``queued < sent < delivered < read``); ``failed``
    replaces any other status and stores ``error_code``/``error_title``; a
    status at or below the stored one, or anything after ``failed``, is
    ignored (False). A message not recorded yet gets a row of its own (True).
    ``now``: epoch seconds of the update (default: the wall clock).
    """
    ts = time.time() if now is None else now
    lower = [s for s in STATUSES if _RANK[s] < _RANK[update.status]]
    failed = update.status == "failed"
    code = (update.error_code or None) if failed else None
    title = (update.error_title or None) if failed else None

    async def advance(tx: Tx) -> int:
        if not lower:
            return 0
        marks = ", ".join(f"${i}" for i in range(7, 7 + len(lower)))
        return await tx.execute(
            "UPDATE outbound_messages SET status = $3, updated_ts = $4,"
            " error_code = COALESCE($5, error_code), error_title = COALESCE($6, error_title)"
            f" WHERE provider = $1 AND provider_message_id = $2 AND status IN ({marks})",
            update.provider,
            update.message_id,
            update.status,
            ts,
            code,
            title,
            *lower,
        )

    async def write(tx: Tx) -> bool:
        if await advance(tx):
            return True
        known = await tx.fetchone(
            "SELECT 1 FROM outbound_messages WHERE provider = $1 AND provider_message_id = $2",
            update.provider,
            update.message_id,
        )
        if known is not None:
            return False
        inserted = await tx.execute(
            "INSERT INTO outbound_messages (provider, provider_message_id, client_id, channel,"
            " recipient, outbox_key, status, error_code, error_title, created_ts, updated_ts)"
            " VALUES ($1, $2, $3, $4, $5, '', $6, $7, $8, $9, $9)"
            " ON CONFLICT (provider, provider_message_id) DO NOTHING",
            update.provider,
            update.message_id,
            update.client_id,
            "whatsapp" if update.provider == "meta" else "",
            update.recipient or "",
            update.status,
            code,
            title,
            ts,
        )
        # Zero: the sender's insert committed meanwhile; a fresh statement sees it.
        return bool(inserted) or bool(await advance(tx))

    return await db.fast.transaction(write)


async def list_messages(
    db: Database, client_id: str, status: str | None = None, limit: int = 200
) -> list[dict[str, object]]:
    """The client's sent messages, most recently updated first, optionally only
    those in ``status`` (``failed`` for the sends staff should look at).

    Each item: ``provider``, ``message_id``, ``client_id``, ``channel``,
    ``recipient`` (E.164), ``outbox_key``, ``status``, ``error_code``,
    ``error_title``, ``created_ts``, ``updated_ts`` (epoch seconds).
    """
    t = OUTBOUND_MESSAGES.c
    query = (
        sa.select(OUTBOUND_MESSAGES)
        .where(t.client_id == client_id)
        .order_by(t.updated_ts.desc(), t.provider_message_id)
        .limit(limit)
    )
    if status:
        query = query.where(t.status == status)
    async with db.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        {
            "provider": r["provider"],
            "message_id": r["provider_message_id"],
            "client_id": r["client_id"],
            "channel": r["channel"],
            "recipient": r["recipient"],
            "outbox_key": r["outbox_key"],
            "status": r["status"],
            "error_code": r["error_code"],
            "error_title": r["error_title"],
            "created_ts": float(r["created_ts"]),
            "updated_ts": float(r["updated_ts"]),
        }
        for r in rows
    ]

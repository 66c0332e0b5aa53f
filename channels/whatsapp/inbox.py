"""The messaging inbox: every inbound WhatsApp/SMS message durable first, each
answered exactly once, in order, bursts merged.

A message's life (table ``inbound_messages``, keyed by provider and the
provider's message id — ``MessageSid`` or ``wamid``)::

    webhook -> received --claim--> processing --turn commit--> replied
                  ^                     |
                  +---- lease expired --+   (a replica died mid-turn)

- **Recording** (:meth:`Inbox.record`) is one ``INSERT ... ON CONFLICT DO
  NOTHING``: the webhook answers 200 as soon as it is durable. A provider's
  retry of a message we have is a no-op whatever its state — a retry of a
  replied message sends nothing, a retry while it is processing starts no
  second turn — and a message is never taken for a duplicate before it was
  recorded for real (there is no dedupe cache that could claim it first).
- **Claiming** (:meth:`Inbox.claim`): one writer per conversation. Under the
  conversation's inbox lock, a replica takes every ``received`` message of
  the conversation (and ``processing`` ones whose lease ran out) with a fresh
  claim token and a lease, unless another replica holds a live lease on it.
  A conversation is due once its newest message is ``burst_window_ms`` old:
  messages sent in a burst are answered as one turn.
- **Order**: the claimed messages are read by the provider's timestamp (then
  arrival), not by arrival; one that arrives while a turn runs stays
  ``received`` and is answered by the next turn, never dropped.
- **Answering** (:class:`ReplyHook`): the reply's outbox rows and the
  ``processing -> replied`` update commit in the turn's own transaction, the
  update conditional on the claim token. A replica whose lease was taken over
  (it was too slow, or presumed dead) fails that update and its whole turn
  rolls back (:class:`InboundClaimLost`): only one turn per message ever
  commits, and only it sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from channels.whatsapp.models import InboundMessage, Media
from engine.db.database import Database
from engine.db.fast import Tx
from engine.errors import GatewayError
from engine.locks import Locks
from engine.messages import QuickReply

__all__ = ["Claim", "InboundClaimLost", "Inbox", "ThreadKey"]

log = logging.getLogger("channels.whatsapp.inbox")

LEASE_S = 60.0
"""How long a claim holds a conversation's messages; a replica that died
mid-turn gives them back after this (a turn's model budget is 10 s)."""


class InboundClaimLost(GatewayError):
    """The messages this turn answers were claimed by another replica (the lease
    ran out); the turn rolled back and the other replica answers them."""

    def __init__(self, key: ThreadKey) -> None:
        super().__init__(f"inbound messages of {key} were claimed by another replica")
        self.key = key


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """One messaging conversation: client, channel (``whatsapp``/``sms``) and
    the customer's number (the session id)."""

    client_id: str
    channel: str
    sender: str

    def __str__(self) -> str:
        return f"{self.client_id}:{self.channel}:{self.sender[:4]}…"


@dataclass(frozen=True, slots=True)
class Claim:
    """Messages one replica took to answer in one turn (oldest first)."""

    key: ThreadKey
    token: str
    messages: tuple[InboundMessage, ...]
    attempts: int
    """The most attempts any of them has had (1 on a first claim)."""


def _media_json(media: Sequence[Media]) -> str:
    return json.dumps([{"ref": m.ref, "content_type": m.content_type} for m in media])


def _media_of(raw: str) -> tuple[Media, ...]:
    try:
        items = json.loads(raw or "[]")
    except ValueError:
        return ()
    return tuple(Media(str(i.get("ref", "")), str(i.get("content_type", ""))) for i in items)


class Inbox:
    """The durable inbox (see the module docstring). ``clock``: epoch seconds."""

    def __init__(
        self,
        db: Database,
        locks: Locks,
        *,
        clock: Callable[[], float] = time.time,
        lease_s: float = LEASE_S,
    ) -> None:
        self.db, self.locks, self.clock, self.lease_s = db, locks, clock, lease_s
        self.wake = asyncio.Event()
        """Set when this replica recorded a message (the worker looks at once)."""

    async def record(self, msg: InboundMessage) -> bool:
        """Make ``msg`` durable (state ``received``); True when it is new, False
        for a message already recorded (a provider retry). Also moves the
        conversation's 24-hour window. Raises StoreError."""
        now = self.clock()
        provider_ts = msg.timestamp or now

        async def write(tx: Tx) -> int:
            inserted = await tx.execute(
                "INSERT INTO inbound_messages (provider, message_id, client_id, channel, sender,"
                " kind, text, choice_id, media, wa_id, profile_name, business, provider_ts,"
                " received_ts, state, attempts, updated_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
                " 'received', 0, $14)"
                " ON CONFLICT (provider, message_id) DO NOTHING",
                msg.provider,
                msg.message_id,
                msg.client_id,
                msg.channel,
                msg.sender,
                msg.kind,
                msg.text,
                msg.choice_id,
                _media_json(msg.media),
                msg.wa_id,
                msg.profile_name,
                msg.business,
                provider_ts,
                now,
            )
            if inserted:
                await tx.execute(
                    "INSERT INTO messaging_threads (client_id, channel, sender, provider,"
                    " business, last_inbound_ts, choices, updated_ts)"
                    " VALUES ($1, $2, $3, $4, $5, $6, '[]', $6)"
                    " ON CONFLICT (client_id, channel, sender) DO UPDATE SET"
                    " provider = excluded.provider,"
                    " business = COALESCE(excluded.business, messaging_threads.business),"
                    " last_inbound_ts = CASE WHEN excluded.last_inbound_ts >"
                    " messaging_threads.last_inbound_ts THEN excluded.last_inbound_ts"
                    " ELSE messaging_threads.last_inbound_ts END,"
                    " updated_ts = excluded.updated_ts",
                    msg.client_id,
                    msg.channel,
                    msg.sender,
                    msg.provider,
                    msg.business,
                    now,
                )
            return inserted

        new = bool(await self.db.fast.transaction(write))
        if new:
            self.wake.set()
        return new

    async def due(self, burst_s: Callable[[str, str], float]) -> list[ThreadKey]:
        """Conversations to answer now: with ``received`` messages whose newest
        arrived at least ``burst_s(client_id, channel)`` seconds ago and no live
        lease, or with ``processing`` messages whose lease ran out."""
        now = self.clock()

        async def read(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.fetchall(
                "SELECT client_id, channel, sender, MAX(received_ts),"
                " MAX(CASE WHEN state = 'processing' AND lease_until_ts >= $1 THEN 1 ELSE 0 END)"
                " FROM inbound_messages WHERE state IN ('received', 'processing')"
                " GROUP BY client_id, channel, sender",
                now,
            )

        rows = await self.db.fast.query(read)
        out: list[ThreadKey] = []
        for client_id, channel, sender, newest, live in rows:
            if live:
                continue  # a replica is answering this conversation now
            if float(newest) + burst_s(str(client_id), str(channel)) <= now:
                out.append(ThreadKey(str(client_id), str(channel), str(sender)))
        return out

    async def claim(self, key: ThreadKey) -> Claim | None:
        """Take the conversation's pending messages (see the module docstring);
        None when there are none or another replica holds them. Raises
        SessionBusyError (the inbox lock), StoreError."""
        token = uuid.uuid4().hex
        async with self.locks.lock(f"inbox:{key.client_id}:{key.channel}:{key.sender}", 5.0):
            now = self.clock()

            async def write(tx: Tx) -> list[tuple[Any, ...]]:
                live = await tx.fetchone(
                    "SELECT 1 FROM inbound_messages WHERE client_id = $1 AND channel = $2"
                    " AND sender = $3 AND state = 'processing' AND lease_until_ts >= $4",
                    key.client_id,
                    key.channel,
                    key.sender,
                    now,
                )
                if live is not None:
                    return []
                await tx.execute(
                    "UPDATE inbound_messages SET state = 'processing', claim = $5,"
                    " lease_until_ts = $6, attempts = attempts + 1, updated_ts = $4"
                    " WHERE client_id = $1 AND channel = $2 AND sender = $3"
                    " AND (state = 'received' OR (state = 'processing' AND lease_until_ts < $4))",
                    key.client_id,
                    key.channel,
                    key.sender,
                    now,
                    token,
                    now + self.lease_s,
                )
                return await tx.fetchall(
                    "SELECT provider, message_id, kind, text, choice_id, media, wa_id,"
                    " profile_name, business, provider_ts, received_ts, attempts"
                    " FROM inbound_messages WHERE claim = $1 AND state = 'processing'"
                    " ORDER BY provider_ts, received_ts, message_id",
                    token,
                )

            rows = await self.db.fast.transaction(write)
        if not rows:
            return None
        messages = tuple(
            InboundMessage(
                provider=r[0],
                channel=key.channel,  # type: ignore[arg-type]
                client_id=key.client_id,
                message_id=str(r[1]),
                sender=key.sender,
                kind=r[2],
                text=str(r[3] or ""),
                choice_id=r[4],
                media=_media_of(str(r[5] or "[]")),
                wa_id=r[6],
                profile_name=r[7],
                business=r[8],
                timestamp=float(r[9]),
            )
            for r in rows
        )
        return Claim(key, token, messages, max(int(r[11]) for r in rows))

    async def release(self, claim: Claim) -> None:
        """Give the claimed messages back at once (the turn could not run now,
        e.g. the session was busy): they are claimed again on the next look."""

        async def write(tx: Tx) -> int:
            return await tx.execute(
                "UPDATE inbound_messages SET state = 'received', claim = NULL,"
                " lease_until_ts = NULL, updated_ts = $2 WHERE claim = $1 AND state = 'processing'",
                claim.token,
                self.clock(),
            )

        await self.db.fast.transaction(write)

    async def consume_in(
        self, tx: Tx, claim: Claim, state: str = "replied", error: str | None = None
    ) -> None:
        """Mark the claimed messages ``replied`` (or ``failed``) in the caller's
        transaction; raises InboundClaimLost when the claim is no longer ours
        (the transaction must then roll back)."""
        changed = await tx.execute(
            "UPDATE inbound_messages SET state = $2, turn_id = $3, error = $4,"
            " lease_until_ts = NULL, updated_ts = $5 WHERE claim = $1 AND state = 'processing'",
            claim.token,
            state,
            claim.token[:24],
            error,
            self.clock(),
        )
        if changed != len(claim.messages):
            raise InboundClaimLost(claim.key)

    async def set_choices_in(self, tx: Tx, key: ThreadKey, choices: Sequence[QuickReply]) -> None:
        """Remember the choices the reply offers, so "2", "two" or a title maps
        back to one on the next message."""
        await tx.execute(
            "UPDATE messaging_threads SET choices = $4, updated_ts = $5"
            " WHERE client_id = $1 AND channel = $2 AND sender = $3",
            key.client_id,
            key.channel,
            key.sender,
            json.dumps([{"title": q.title, "value": q.value} for q in choices]),
            self.clock(),
        )

    async def choices(self, key: ThreadKey) -> list[QuickReply]:
        """The choices the last reply offered (empty when none)."""

        async def read(tx: Tx) -> tuple[Any, ...] | None:
            return await tx.fetchone(
                "SELECT choices FROM messaging_threads"
                " WHERE client_id = $1 AND channel = $2 AND sender = $3",
                key.client_id,
                key.channel,
                key.sender,
            )

        row = await self.db.fast.query(read)
        try:
            items = json.loads(row[0]) if row else []
        except ValueError:
            return []
        return [QuickReply(title=str(i["title"]), value=str(i["value"])) for i in items]

    async def states(self, provider: str, message_id: str) -> str | None:
        """A message's state (for tests and the admin API), or None."""

        async def read(tx: Tx) -> tuple[Any, ...] | None:
            return await tx.fetchone(
                "SELECT state FROM inbound_messages WHERE provider = $1 AND message_id = $2",
                provider,
                message_id,
            )

        row = await self.db.fast.query(read)
        return str(row[0]) if row else None

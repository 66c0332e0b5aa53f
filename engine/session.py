"""Conversation sessions and the store that keeps them durable.

A session is keyed by ``(client_id, channel, session_id)``. It lives in the
gateway's database (embedded SQLite under ``GATEWAY_DATA_DIR``, or PostgreSQL
with ``DATABASE_URL``), so a restart or another replica sees the same
conversation. The store offers reads; writes happen only inside a turn's
atomic commit (:mod:`engine.commit`):

- ``load``: the session, its **version** and its last replay event id;
  saves are versioned (optimistic concurrency), so two writers can never
  both win — the loser's whole commit is rolled back
  (:class:`~engine.errors.CommitConflict`);
- a per-session **replay log** (the web channel's events), kept with the
  session and trimmed to ``max_events``;
- **processed-message marks**: an inbound message id a committed turn
  consumed; a second turn for it is refused
  (:class:`~engine.errors.DuplicateMessageError`).

Sessions, replay logs and marks expire ``ttl_s`` seconds after the last
commit (:meth:`SessionStore.purge_expired` deletes them; the outbox worker
runs it). Locks are :mod:`engine.locks`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, JsonValue
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.db.database import Database
from engine.db.schema import PROCESSED_MESSAGES, SESSION_EVENTS, SESSIONS
from engine.errors import CommitConflict, DuplicateMessageError

__all__ = [
    "ConversationSession",
    "LoadedSession",
    "SessionKey",
    "SessionStore",
    "Turn",
]

TRANSCRIPT_WINDOW = 40
"""Transcript items kept in the session itself (for prompts and flows); the
whole conversation is in the durable conversation log."""


@dataclass(frozen=True, slots=True)
class SessionKey:
    client_id: str
    channel: str
    session_id: str

    def __str__(self) -> str:
        return f"{self.client_id}:{self.channel}:{self.session_id}"


def _now() -> datetime:
    return datetime.now(UTC)


class Turn(BaseModel):
    """One line of the transcript. ``cut`` marks a bot reply the caller interrupted
    (``text`` is then only what was actually heard)."""

    role: Literal["user", "assistant", "system"]
    text: str
    at: datetime = Field(default_factory=_now)
    purpose: str | None = None
    cut: bool = False
    seq: int | None = None
    """Its line number in the durable conversation log (set when committed)."""


class ConversationSession(BaseModel):
    """Everything the engine keeps about one conversation.

    ``purpose`` is the agent holding the conversation (a journey: it keeps
    control across turns until it hands back). ``purpose_state`` holds each
    purpose flow's own state as JSON; flows validate it into their typed model.
    """

    client_id: str
    channel: str
    session_id: str
    purpose: str | None = None
    purpose_state: dict[str, dict[str, JsonValue]] = Field(default_factory=dict)
    transcript: list[Turn] = Field(default_factory=list)
    context: dict[str, str] = Field(default_factory=dict)
    outcome: str | None = None
    """Last notable outcome: ``booked``, ``escalated``, ``abandoned``..."""
    turn_count: int = 0
    logged_messages: int = 0
    """How many transcript lines the durable conversation log holds (the next
    line's sequence number); the session keeps only the last lines."""
    test: bool = False
    """A conversation held for testing (``gateway chat``): kept out of the leads
    list unless asked for."""
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.client_id, self.channel, self.session_id)

    @classmethod
    def new(cls, key: SessionKey) -> ConversationSession:
        return cls(client_id=key.client_id, channel=key.channel, session_id=key.session_id)


@dataclass(frozen=True, slots=True)
class LoadedSession:
    session: ConversationSession
    version: int
    """The row's version; the commit saves only if it is still this one."""
    last_event_id: int


def _where(table: sa.Table, key: SessionKey) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.client_id == key.client_id,
        table.c.channel == key.channel,
        table.c.session_id == key.session_id,
    )


class SessionStore:
    """Sessions, replay logs and processed marks in the gateway's database.

    ``ttl_s``: seconds a session lives after its last commit. ``max_events``:
    replay events kept per session. ``clock``: epoch seconds (tests move it).
    Reads raise :class:`~engine.errors.StoreError` when the database fails.
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 24 * 3600,
        max_events: int = 2000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.max_events = max_events
        self.clock = clock

    @property
    def backend(self) -> str:
        return self.db.backend

    async def ping(self) -> bool:
        return await self.db.ping()

    # -- reads ------------------------------------------------------------------
    async def load(self, key: SessionKey) -> LoadedSession | None:
        async def run() -> LoadedSession | None:
            async with self.db.read() as conn:
                row = (
                    await conn.execute(
                        sa.select(SESSIONS.c.data, SESSIONS.c.version, SESSIONS.c.last_event_id)
                        .where(_where(SESSIONS, key))
                        .where(SESSIONS.c.expires_ts > self.clock())
                    )
                ).first()
            if row is None:
                return None
            return LoadedSession(
                ConversationSession.model_validate_json(row.data), row.version, row.last_event_id
            )

        return await self.db.retry_once("session load", run)

    async def exists(self, key: SessionKey) -> bool:
        return await self.load(key) is not None

    async def processed(self, key: SessionKey, message_id: str) -> bool:
        """True if a committed turn of this session already consumed ``message_id``."""

        async def run() -> bool:
            async with self.db.read() as conn:
                row = (
                    await conn.execute(
                        sa.select(PROCESSED_MESSAGES.c.turn_id)
                        .where(_where(PROCESSED_MESSAGES, key))
                        .where(PROCESSED_MESSAGES.c.message_id == message_id)
                        .where(PROCESSED_MESSAGES.c.expires_ts > self.clock())
                    )
                ).first()
            return row is not None

        return await self.db.retry_once("processed check", run)

    async def events_after(self, key: SessionKey, after_id: int) -> list[tuple[int, str]]:
        """Replay events with id > ``after_id``, oldest first: ``(event_id, json_text)``."""

        async def run() -> list[tuple[int, str]]:
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(SESSION_EVENTS.c.event_id, SESSION_EVENTS.c.data)
                    .where(_where(SESSION_EVENTS, key))
                    .where(SESSION_EVENTS.c.event_id > after_id)
                    .where(SESSION_EVENTS.c.expires_ts > self.clock())
                    .order_by(SESSION_EVENTS.c.event_id)
                )
                return [(r.event_id, r.data) for r in rows]

        return await self.db.retry_once("replay read", run)

    async def last_event_id(self, key: SessionKey) -> int:
        """The highest replay event id committed for the session (0 if none)."""
        loaded = await self.load(key)
        return loaded.last_event_id if loaded else 0

    # -- writes, inside a turn's commit ------------------------------------------------
    async def save_in(
        self,
        conn: AsyncConnection,
        session: ConversationSession,
        expected_version: int | None,
        last_event_id: int,
    ) -> int:
        """Write ``session`` if its row is still at ``expected_version`` (None: must
        not exist, or be expired). Returns the new version; raises CommitConflict."""
        now = self.clock()
        if len(session.transcript) > TRANSCRIPT_WINDOW:
            del session.transcript[: len(session.transcript) - TRANSCRIPT_WINDOW]
        values = {
            "data": session.model_dump_json(),
            "last_event_id": last_event_id,
            "expires_ts": now + self.ttl_s,
            "updated_ts": now,
        }
        key = session.key
        if expected_version is not None:
            result = await conn.execute(
                SESSIONS.update()
                .where(_where(SESSIONS, key))
                .where(SESSIONS.c.version == expected_version)
                .values(version=expected_version + 1, **values)
            )
            if result.rowcount != 1:
                raise CommitConflict(str(key))
            return expected_version + 1
        # A new session, or one whose row expired: replace an expired row only.
        await conn.execute(
            SESSIONS.delete().where(_where(SESSIONS, key)).where(SESSIONS.c.expires_ts <= now)
        )
        try:
            async with conn.begin_nested():
                await conn.execute(
                    SESSIONS.insert().values(
                        client_id=key.client_id,
                        channel=key.channel,
                        session_id=key.session_id,
                        version=1,
                        **values,
                    )
                )
        except IntegrityError as exc:
            raise CommitConflict(str(key)) from exc
        return 1

    async def mark_processed_in(
        self, conn: AsyncConnection, key: SessionKey, message_id: str, turn_id: str
    ) -> None:
        """Record that ``message_id`` was consumed; raises DuplicateMessageError if it was."""
        now = self.clock()
        await conn.execute(
            PROCESSED_MESSAGES.delete()
            .where(_where(PROCESSED_MESSAGES, key))
            .where(PROCESSED_MESSAGES.c.message_id == message_id)
            .where(PROCESSED_MESSAGES.c.expires_ts <= now)
        )
        try:
            async with conn.begin_nested():
                await conn.execute(
                    PROCESSED_MESSAGES.insert().values(
                        client_id=key.client_id,
                        channel=key.channel,
                        session_id=key.session_id,
                        message_id=message_id,
                        turn_id=turn_id,
                        expires_ts=now + self.ttl_s,
                    )
                )
        except IntegrityError as exc:
            raise DuplicateMessageError(str(key), message_id) from exc

    async def append_events_in(
        self, conn: AsyncConnection, key: SessionKey, events: Sequence[tuple[int, str]]
    ) -> None:
        """Append ``(event_id, json_text)`` pairs (ids increasing) and trim the log
        to the last ``max_events``; every event of the session gets the new expiry."""
        if not events:
            return
        expires = self.clock() + self.ttl_s
        await conn.execute(
            SESSION_EVENTS.insert(),
            [
                {
                    "client_id": key.client_id,
                    "channel": key.channel,
                    "session_id": key.session_id,
                    "event_id": event_id,
                    "data": data,
                    "expires_ts": expires,
                }
                for event_id, data in events
            ],
        )
        last = events[-1][0]
        await conn.execute(
            SESSION_EVENTS.delete()
            .where(_where(SESSION_EVENTS, key))
            .where(SESSION_EVENTS.c.event_id <= last - self.max_events)
        )
        await conn.execute(
            SESSION_EVENTS.update()
            .where(_where(SESSION_EVENTS, key))
            .where(SESSION_EVENTS.c.event_id < events[0][0])
            .values(expires_ts=expires)
        )

    async def purge_expired(self) -> int:
        """Delete expired sessions, replay events and marks; returns rows deleted."""
        now = self.clock()
        total = 0
        async with self.db.write() as conn:
            for table in (SESSIONS, SESSION_EVENTS, PROCESSED_MESSAGES):
                result = await conn.execute(table.delete().where(table.c.expires_ts <= now))
                total += result.rowcount or 0
        return total

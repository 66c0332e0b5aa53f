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
- a **cache** of the sessions this replica committed, so a turn does not
  read back what the last one wrote (a stale copy is caught by the versioned
  save);
- **processed-message marks**: an inbound message id a committed turn
  consumed; a second turn for it is refused
  (:class:`~engine.errors.DuplicateMessageError`).

Sessions, replay logs and marks expire ``ttl_s`` seconds after the last
commit (:meth:`SessionStore.purge_expired` deletes them; the outbox worker
runs it). Locks are :mod:`engine.locks`.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue

from engine.db.database import Database
from engine.db.fast import Row, Tx
from engine.db.schema import PROCESSED_MESSAGES, SESSION_EVENTS, SESSIONS
from engine.errors import CommitConflict, DuplicateMessageError
from engine.llm.types import Usage
from engine.messages import ChannelContext
from engine.takeover import TakeoverState

__all__ = [
    "ConversationSession",
    "HandoffItem",
    "HistoryItem",
    "LoadedSession",
    "SessionKey",
    "SessionStore",
    "SuspendedJourney",
    "ToolCallItem",
    "ToolResultItem",
    "Turn",
    "window",
]

RECENT_IDS = 32
"""Message ids a cached session remembers for the quick duplicate check."""
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
    """A user or assistant line of the history. ``cut`` marks a bot reply the
    caller interrupted (``text`` is then only what was actually heard)."""

    role: Literal["user", "assistant", "system"]
    text: str
    at: datetime = Field(default_factory=_now)
    purpose: str | None = None
    cut: bool = False
    line_id: str | None = None
    """Its id in the durable conversation log (set when committed)."""
    staff: bool = False
    """An assistant line written by a person at the business (the admin API's
    staff reply), not by the bot."""


class ToolCallItem(BaseModel):
    """An agent called a tool (history item; not shown to the customer)."""

    role: Literal["tool_call"] = "tool_call"
    call_id: str
    name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    purpose: str | None = None
    at: datetime = Field(default_factory=_now)


class ToolResultItem(BaseModel):
    """What a tool returned (``result``) or why it failed (``error``)."""

    role: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    result: JsonValue = None
    error: str | None = None
    purpose: str | None = None
    at: datetime = Field(default_factory=_now)


class HandoffItem(BaseModel):
    """Control moved between agents (``mode``: handoff, delegate, resume, handback)."""

    role: Literal["handoff"] = "handoff"
    source: str
    target: str
    mode: str = "handoff"
    reason: str = ""
    at: datetime = Field(default_factory=_now)


HistoryItem = Annotated[
    Turn | ToolCallItem | ToolResultItem | HandoffItem, Field(discriminator="role")
]
"""One typed item of a conversation's history."""


class SuspendedJourney(BaseModel):
    """A journey put aside for an interruption, resumed when it is over."""

    purpose: str
    reason: str = ""
    at: datetime = Field(default_factory=_now)


def window(items: Sequence[HistoryItem], max_items: int = 20) -> list[HistoryItem]:
    """The last ``max_items`` history items for a prompt, never starting on a
    tool result whose call was cut off."""
    recent = list(items[-max_items:]) if max_items > 0 else []
    while recent and isinstance(recent[0], ToolResultItem):
        recent.pop(0)
    return recent


class LlmUsage(BaseModel):
    """The model's use by one conversation: tokens (per the vendor's usage
    reports), calls, and the estimated cost in USD."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    cost_usd: float = 0.0

    def plus(self, usage: Usage, cost_usd: float, calls: int = 1) -> LlmUsage:
        return LlmUsage(
            input_tokens=self.input_tokens + usage.input_tokens,
            output_tokens=self.output_tokens + usage.output_tokens,
            calls=self.calls + calls,
            cost_usd=round(self.cost_usd + cost_usd, 8),
        )


class ConversationSession(BaseModel):
    """Everything the engine keeps about one conversation.

    ``purpose`` is the agent holding the conversation (a journey: it keeps
    control across turns until it hands back). ``purpose_state`` holds each
    purpose flow's own state as JSON; flows validate it into their typed model.
    """

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    client_id: str
    channel: str
    session_id: str
    purpose: str | None = None
    purpose_state: dict[str, dict[str, JsonValue]] = Field(default_factory=dict)
    transcript: list[HistoryItem] = Field(default_factory=list)
    """Typed history, the last ``TRANSCRIPT_WINDOW`` items (the durable
    conversation log keeps every line)."""
    suspended: list[SuspendedJourney] = Field(default_factory=list)
    """Journeys interrupted by another purpose, most recent last."""
    context: ChannelContext = Field(default_factory=ChannelContext)
    outcome: str | None = None
    """Last notable outcome: ``booked``, ``escalated``, ``abandoned``..."""
    takeover: TakeoverState = Field(
        "bot", validation_alias=AliasChoices("takeover", "handoff"), serialization_alias="handoff"
    )
    """Who answers: ``bot``, ``pending_human``, ``human`` or ``resolved``
    (:mod:`engine.takeover` draws the state machine). Stored as ``handoff`` in
    the session JSON (the name it always had there)."""
    turn_count: int = 0
    test: bool = False
    llm_usage: LlmUsage = Field(default_factory=LlmUsage)
    """Tokens and estimated cost the model spent on this conversation."""
    """A conversation held for testing (``gateway chat``): kept out of the leads
    list unless asked for."""
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    def lines(self) -> list[Turn]:
        """The user and assistant lines of the history, in order."""
        return [t for t in self.transcript if isinstance(t, Turn)]

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


@dataclass(slots=True)
class _Cached:
    session: ConversationSession
    version: int
    last_event_id: int
    expires_ts: float
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_IDS))


_KEY_SQL = "client_id = $1 AND channel = $2 AND session_id = $3"


def _args(key: SessionKey) -> tuple[str, str, str]:
    return key.client_id, key.channel, key.session_id


class SessionStore:
    """Sessions, replay logs and processed marks in the gateway's database.

    ``ttl_s``: seconds a session lives after its last commit. ``max_events``:
    replay events kept per session. ``clock``: epoch seconds (tests move it).
    ``cache_size``: sessions this replica keeps in memory after committing
    them, so a turn does not read back what it just wrote. ``load`` hands out
    the cached object itself; whoever loads it must :meth:`forget` the key
    unless its changes are committed (the engine does). A cached copy may
    be stale when another replica committed since; the versioned save then
    refuses the commit, the copy is dropped and the turn runs again on the
    stored one (:meth:`forget`). Reads raise :class:`~engine.errors.StoreError`
    when the database fails.
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 24 * 3600,
        max_events: int = 2000,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.max_events = max_events
        self.clock = clock
        self.cache_size = cache_size
        self._cache: OrderedDict[SessionKey, _Cached] = OrderedDict()

    @property
    def backend(self) -> str:
        return self.db.backend

    async def ping(self) -> bool:
        return await self.db.ping()

    # -- the cache ----------------------------------------------------------------
    def forget(self, key: SessionKey) -> None:
        """Drop this replica's copy of a session (after a conflict or a failure)."""
        self._cache.pop(key, None)

    def remember(
        self,
        session: ConversationSession,
        version: int,
        last_event_id: int,
        message_id: str | None,
    ) -> None:
        """Keep what a commit just wrote (called after the transaction committed)."""
        key = session.key
        old = self._cache.pop(key, None)
        entry = _Cached(session, version, last_event_id, self.clock() + self.ttl_s)
        if old is not None:
            entry.recent_ids.extend(old.recent_ids)
        if message_id is not None:
            entry.recent_ids.append(message_id)
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- reads ------------------------------------------------------------------
    async def load(self, key: SessionKey) -> LoadedSession | None:
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and cached.expires_ts > now:
            # The committed object itself: the turn that loads it either commits
            # (and it is remembered again) or the engine forgets it.
            self._cache.move_to_end(key)
            return LoadedSession(cached.session, cached.version, cached.last_event_id)
        self.forget(key)

        async def read(tx: Tx) -> Row | None:
            return await tx.fetchone(
                "SELECT data, version, last_event_id FROM sessions"
                f" WHERE {_KEY_SQL} AND expires_ts > $4",
                *_args(key),
                now,
            )

        row = await self.db.fast.query(read)
        if row is None:
            return None
        return LoadedSession(ConversationSession.model_validate_json(row[0]), row[1], row[2])

    async def exists(self, key: SessionKey) -> bool:
        """True if the database holds the session, unexpired (never from the cache)."""
        self.forget(key)
        return await self.load(key) is not None

    def recently_processed(self, key: SessionKey, message_id: str) -> bool:
        """True if this replica committed ``message_id`` for the session lately.

        A quick check that saves running a turn for a resent message; the
        commit's processed mark is the authority (DuplicateMessageError)."""
        cached = self._cache.get(key)
        return cached is not None and message_id in cached.recent_ids

    async def processed(self, key: SessionKey, message_id: str) -> bool:
        """True if a committed turn of this session consumed ``message_id`` (database)."""
        now = self.clock()

        async def read(tx: Tx) -> Row | None:
            return await tx.fetchone(
                f"SELECT 1 FROM processed_messages WHERE {_KEY_SQL}"
                " AND message_id = $4 AND expires_ts > $5",
                *_args(key),
                message_id,
                now,
            )

        return await self.db.fast.query(read) is not None

    async def events_after(self, key: SessionKey, after_id: int) -> list[tuple[int, str]]:
        """Replay events with id > ``after_id``, oldest first: ``(event_id, json_text)``.
        (They live as long as their session: check it exists first.)"""

        async def read(tx: Tx) -> list[Row]:
            return await tx.fetchall(
                f"SELECT event_id, data FROM session_events WHERE {_KEY_SQL}"
                " AND event_id > $4 ORDER BY event_id",
                *_args(key),
                after_id,
            )

        return [(int(r[0]), str(r[1])) for r in await self.db.fast.query(read)]

    async def last_event_id(self, key: SessionKey) -> int:
        """The highest replay event id committed for the session (0 if none)."""
        loaded = await self.load(key)
        return loaded.last_event_id if loaded else 0

    # -- writes, inside a turn's commit ------------------------------------------------
    async def save_in(
        self,
        tx: Tx,
        session: ConversationSession,
        expected_version: int | None,
        last_event_id: int,
    ) -> int:
        """Write ``session`` if its row is still at ``expected_version`` (None: must
        not exist, or be expired) and unexpired. Returns the new version; raises
        CommitConflict."""
        now = self.clock()
        if len(session.transcript) > TRANSCRIPT_WINDOW:
            del session.transcript[: len(session.transcript) - TRANSCRIPT_WINDOW]
        data = session.model_dump_json()
        key = session.key
        expires = now + self.ttl_s
        if expected_version is not None:
            changed = await tx.execute(
                "UPDATE sessions SET version = $5, data = $6, last_event_id = $7,"
                f" expires_ts = $8, updated_ts = $9 WHERE {_KEY_SQL}"
                " AND version = $4 AND expires_ts > $9",
                *_args(key),
                expected_version,
                expected_version + 1,
                data,
                last_event_id,
                expires,
                now,
            )
            if changed != 1:
                raise CommitConflict(str(key))
            return expected_version + 1
        inserted = await tx.execute(
            "INSERT INTO sessions (client_id, channel, session_id, version, data,"
            " last_event_id, expires_ts, updated_ts) VALUES ($1, $2, $3, 1, $4, $5, $6, $7)"
            " ON CONFLICT (client_id, channel, session_id) DO NOTHING",
            *_args(key),
            data,
            last_event_id,
            expires,
            now,
        )
        if inserted == 1:
            return 1
        # A row is there: take it over only if it expired (its events go with it).
        replaced = await tx.fetchone(
            "UPDATE sessions SET version = version + 1, data = $4, last_event_id = $5,"
            f" expires_ts = $6, updated_ts = $7 WHERE {_KEY_SQL} AND expires_ts <= $7"
            " RETURNING version",
            *_args(key),
            data,
            last_event_id,
            expires,
            now,
        )
        if replaced is None:
            raise CommitConflict(str(key))
        await tx.execute(f"DELETE FROM session_events WHERE {_KEY_SQL}", *_args(key))
        return int(replaced[0])

    async def mark_processed_in(
        self, tx: Tx, key: SessionKey, message_id: str, turn_id: str
    ) -> None:
        """Record that ``message_id`` was consumed; raises DuplicateMessageError if it was."""
        now = self.clock()
        inserted = await tx.execute(
            "INSERT INTO processed_messages (client_id, channel, session_id, message_id,"
            " turn_id, expires_ts) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (client_id, channel, session_id, message_id) DO NOTHING",
            *_args(key),
            message_id,
            turn_id,
            now + self.ttl_s,
        )
        if inserted == 1:
            return
        renewed = await tx.execute(  # an expired mark no longer counts
            "UPDATE processed_messages SET turn_id = $5, expires_ts = $6"
            f" WHERE {_KEY_SQL} AND message_id = $4 AND expires_ts <= $7",
            *_args(key),
            message_id,
            turn_id,
            now + self.ttl_s,
            now,
        )
        if renewed != 1:
            raise DuplicateMessageError(str(key), message_id)

    async def append_events_in(
        self, tx: Tx, key: SessionKey, events: Sequence[tuple[int, str]]
    ) -> None:
        """Append ``(event_id, json_text)`` pairs (ids increasing); every 64 events the
        log is trimmed to the last ``max_events``."""
        if not events:
            return
        await tx.executemany(
            "INSERT INTO session_events (client_id, channel, session_id, event_id, data)"
            " VALUES ($1, $2, $3, $4, $5)",
            [(*_args(key), event_id, data) for event_id, data in events],
        )
        first, last = events[0][0], events[-1][0]
        if last > self.max_events and (first - 1) // 64 != last // 64:
            await tx.execute(
                f"DELETE FROM session_events WHERE {_KEY_SQL} AND event_id <= $4",
                *_args(key),
                last - self.max_events,
            )

    async def purge_expired(self) -> int:
        """Delete expired sessions (with their replay events) and marks; returns rows deleted."""
        now = self.clock()
        total = 0
        live = sa.select(SESSIONS.c.session_id).where(
            SESSIONS.c.client_id == SESSION_EVENTS.c.client_id,
            SESSIONS.c.channel == SESSION_EVENTS.c.channel,
            SESSIONS.c.session_id == SESSION_EVENTS.c.session_id,
        )
        async with self.db.write() as conn:
            for table in (SESSIONS, PROCESSED_MESSAGES):
                result = await conn.execute(table.delete().where(table.c.expires_ts <= now))
                total += result.rowcount or 0
            result = await conn.execute(SESSION_EVENTS.delete().where(~live.exists()))
            total += result.rowcount or 0
        for key in [k for k, c in self._cache.items() if c.expires_ts <= now]:
            self._cache.pop(key, None)
        return total

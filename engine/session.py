"""Conversation sessions and the store that keeps them.

A session is keyed by ``(client_id, channel, session_id)``. The store offers:

- ``load`` / ``save`` with a TTL (idle sessions expire),
- ``lock``: one writer per session at a time, so two messages of one
  conversation never race (across replicas when the store is Redis),
- an append-only per-session **event log** (used by the web channel to replay
  what a reconnecting client missed),
- ``remember``: a set-if-absent with TTL, for exactly-once webhook handling.

Two backends implement :class:`SessionStore`: :class:`MemorySessionStore`
(default, one process) and :class:`RedisSessionStore` (``REDIS_URL``; state
survives a gateway restart and is shared by replicas). Both serialise sessions
to JSON, so they behave the same.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, JsonValue

from engine.errors import SessionBusyError, StoreError

__all__ = [
    "ConversationSession",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionKey",
    "SessionStore",
    "Turn",
]


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
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.client_id, self.channel, self.session_id)

    @classmethod
    def new(cls, key: SessionKey) -> ConversationSession:
        return cls(client_id=key.client_id, channel=key.channel, session_id=key.session_id)


class SessionStore(ABC):
    """Where sessions, locks, event logs and dedupe marks live.

    ``ttl_s`` (seconds) applies to sessions and event logs, counted from the
    last save. Errors from the backend surface as :class:`StoreError`.
    """

    def __init__(self, ttl_s: float = 24 * 3600, max_events: int = 2000) -> None:
        self.ttl_s = ttl_s
        self.max_events = max_events

    @abstractmethod
    async def load(self, key: SessionKey) -> ConversationSession | None: ...

    @abstractmethod
    async def save(self, session: ConversationSession) -> None: ...

    @abstractmethod
    def lock(self, name: str, timeout_s: float = 10.0) -> AbstractAsyncContextManager[None]:
        """An async context manager held by one task (one replica) at a time.

        Raises :class:`SessionBusyError` when not acquired within ``timeout_s``.
        """

    @abstractmethod
    async def append_events(self, key: SessionKey, events: list[tuple[int, str]]) -> None:
        """Append ``(event_id, json_text)`` pairs; ids increase. Keeps the last
        ``max_events``."""

    @abstractmethod
    async def events_after(self, key: SessionKey, after_id: int) -> list[tuple[int, str]]:
        """Events with id > ``after_id``, oldest first."""

    @abstractmethod
    async def last_event_id(self, key: SessionKey) -> int:
        """Highest event id appended for the session (0 if none)."""

    @abstractmethod
    async def remember(self, mark: str, ttl_s: float) -> bool:
        """Set ``mark`` if absent; True the first time, False while it lives."""

    @abstractmethod
    async def ping(self) -> bool: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @property
    @abstractmethod
    def backend(self) -> str: ...


class _Lease:
    """An asyncio.Lock with a waiter count, so idle locks can be dropped."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class MemorySessionStore(SessionStore):
    """In-process store: the embedded default. State is lost on restart."""

    def __init__(self, ttl_s: float = 24 * 3600, max_events: int = 2000) -> None:
        super().__init__(ttl_s, max_events)
        self._sessions: dict[SessionKey, tuple[float, str]] = {}
        self._events: dict[SessionKey, list[tuple[int, str]]] = {}
        self._marks: dict[str, float] = {}
        self._locks: dict[str, _Lease] = {}

    @property
    def backend(self) -> str:
        return "memory"

    async def load(self, key: SessionKey) -> ConversationSession | None:
        item = self._sessions.get(key)
        if item is None:
            return None
        expires, data = item
        if expires < time.monotonic():
            self._sessions.pop(key, None)
            self._events.pop(key, None)
            return None
        return ConversationSession.model_validate_json(data)

    async def save(self, session: ConversationSession) -> None:
        self._sessions[session.key] = (time.monotonic() + self.ttl_s, session.model_dump_json())
        if len(self._sessions) % 1024 == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, (exp, _) in self._sessions.items() if exp < now]:
            self._sessions.pop(key, None)
            self._events.pop(key, None)
        for mark in [m for m, exp in self._marks.items() if exp < now]:
            self._marks.pop(mark, None)

    @asynccontextmanager
    async def _locked(self, name: str, timeout_s: float) -> AsyncIterator[None]:
        lease = self._locks.get(name)
        if lease is None:
            lease = self._locks[name] = _Lease()
        lease.users += 1
        try:
            try:
                await asyncio.wait_for(lease.lock.acquire(), timeout_s)
            except TimeoutError as exc:
                raise SessionBusyError(name, timeout_s) from exc
            try:
                yield
            finally:
                lease.lock.release()
        finally:
            lease.users -= 1
            if lease.users == 0:
                self._locks.pop(name, None)

    def lock(self, name: str, timeout_s: float = 10.0) -> AbstractAsyncContextManager[None]:
        return self._locked(name, timeout_s)

    async def append_events(self, key: SessionKey, events: list[tuple[int, str]]) -> None:
        log = self._events.setdefault(key, [])
        log.extend(events)
        if len(log) > self.max_events:
            del log[: len(log) - self.max_events]

    async def events_after(self, key: SessionKey, after_id: int) -> list[tuple[int, str]]:
        return [e for e in self._events.get(key, ()) if e[0] > after_id]

    async def last_event_id(self, key: SessionKey) -> int:
        log = self._events.get(key)
        return log[-1][0] if log else 0

    async def remember(self, mark: str, ttl_s: float) -> bool:
        now = time.monotonic()
        expires = self._marks.get(mark)
        if expires is not None and expires > now:
            return False
        self._marks[mark] = now + ttl_s
        return True

    async def ping(self) -> bool:
        return True


class RedisSessionStore(SessionStore):
    """Redis-backed store (``REDIS_URL``). Keys are prefixed ``gw:``.

    Sessions are JSON strings with ``EX`` TTL; event logs are sorted sets scored
    by event id; locks are redis-py's ``Lock`` (a token in a key with a lease of
    ``lease_s`` seconds, released only by its owner).
    """

    def __init__(
        self,
        url: str,
        ttl_s: float = 24 * 3600,
        max_events: int = 2000,
        lease_s: float = 30.0,
        prefix: str = "gw:",
    ) -> None:
        super().__init__(ttl_s, max_events)
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._lease_s = lease_s
        self._prefix = prefix

    @property
    def backend(self) -> str:
        return "redis"

    def _k(self, kind: str, key: SessionKey | str) -> str:
        return f"{self._prefix}{kind}:{key}"

    @asynccontextmanager
    async def _mapped(self, what: str) -> AsyncIterator[None]:
        """Map redis-py errors into the gateway's StoreError."""
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis {what} failed: {exc}") from exc

    async def load(self, key: SessionKey) -> ConversationSession | None:
        async with self._mapped("load"):
            data = await self._redis.get(self._k("session", key))
        return None if data is None else ConversationSession.model_validate_json(data)

    async def save(self, session: ConversationSession) -> None:
        async with self._mapped("save"):
            await self._redis.set(
                self._k("session", session.key), session.model_dump_json(), ex=int(self.ttl_s)
            )

    @asynccontextmanager
    async def _locked(self, name: str, timeout_s: float) -> AsyncIterator[None]:
        from redis.exceptions import LockError, RedisError

        lock = self._redis.lock(
            self._k("lock", name), timeout=self._lease_s, blocking_timeout=timeout_s, sleep=0.005
        )
        try:
            acquired = await lock.acquire()
        except RedisError as exc:
            raise StoreError(f"redis lock failed: {exc}") from exc
        if not acquired:
            raise SessionBusyError(name, timeout_s)
        try:
            yield
        finally:
            with suppress(LockError):  # lease expired meanwhile; another owner may hold it now
                await lock.release()

    def lock(self, name: str, timeout_s: float = 10.0) -> AbstractAsyncContextManager[None]:
        return self._locked(name, timeout_s)

    async def append_events(self, key: SessionKey, events: list[tuple[int, str]]) -> None:
        if not events:
            return
        zkey = self._k("events", key)
        async with self._mapped("append_events"), self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(zkey, {data: event_id for event_id, data in events})
            pipe.zremrangebyrank(zkey, 0, -(self.max_events + 1))
            pipe.expire(zkey, int(self.ttl_s))
            await pipe.execute()

    async def events_after(self, key: SessionKey, after_id: int) -> list[tuple[int, str]]:
        async with self._mapped("events_after"):
            rows = await self._redis.zrangebyscore(
                self._k("events", key), f"({after_id}", "+inf", withscores=True
            )
        return [(int(row[1]), str(row[0])) for row in rows]

    async def last_event_id(self, key: SessionKey) -> int:
        async with self._mapped("last_event_id"):
            rows = await self._redis.zrange(self._k("events", key), -1, -1, withscores=True)
        return int(rows[0][1]) if rows else 0

    async def remember(self, mark: str, ttl_s: float) -> bool:
        async with self._mapped("remember"):
            ok = await self._redis.set(self._k("mark", mark), "1", nx=True, ex=max(1, int(ttl_s)))
        return bool(ok)

    async def ping(self) -> bool:
        from redis.exceptions import RedisError

        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()

"""One way to write a conversation: lock -> load -> mutate -> commit -> retry on conflict.

Every writer of a session (a user turn, a staff reply, a release, an approval
decision) takes the conversation's lock, then runs attempts until one commits::

    async with writes.locked(key):
        for attempt in writes.attempts(key, on_retry=replay.reset):
            with attempt:
                loaded = await store.load(key)
                ...  # mutate the session, build the commit
                await committer.commit(client, commit)
                return result  # (or let the loop end: it ends once an attempt committed)
        # here: an attempt committed (put nothing after ``with`` inside the loop:
        # it would also run after an attempt that is retried)

An attempt that raises one of ``retry_on`` (a :class:`~engine.errors.CommitConflict`:
the session changed under us; a :class:`~engine.errors.SlotTakenError`: someone
booked the slot first) is run again on fresh state, up to ``max_attempts``
times; the last one's error propagates. Any error drops the store's cached
copy of the session (it may hold the failed attempt's changes), so the next
load reads what was committed. Locks order writers; the versioned save is
what keeps data right (:mod:`engine.locks`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from types import TracebackType

from engine.errors import CommitConflict, SlotTakenError
from engine.locks import Locks
from engine.session import SessionKey, SessionStore

__all__ = ["MAX_ATTEMPTS", "Attempt", "SessionWrites"]

log = logging.getLogger("engine.writes")

MAX_ATTEMPTS = 3
"""Runs of one write when its commit conflicts (slot taken, session changed)."""

RETRY_ON: tuple[type[BaseException], ...] = (CommitConflict, SlotTakenError)


class Attempt:
    """One attempt of a write (a context manager; see the module docstring)."""

    def __init__(self, writes: _Attempts, number: int) -> None:
        self._writes = writes
        self.number = number
        """1 for the first attempt."""

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> bool:
        writes = self._writes
        if error is None:
            writes.done = True
            return False
        writes.store.forget(writes.key)
        if not isinstance(error, writes.retry_on) or self.number >= writes.max_attempts:
            return False
        log.info(
            "commit conflicted (%s); running it again: client=%s attempt=%d",
            type(error).__name__,
            writes.key.client_id,
            self.number,
        )
        if writes.on_retry is not None:
            writes.on_retry()
        return True  # swallowed: the next attempt runs


class _Attempts:
    def __init__(
        self,
        store: SessionStore,
        key: SessionKey,
        retry_on: tuple[type[BaseException], ...],
        max_attempts: int,
        on_retry: Callable[[], None] | None,
    ) -> None:
        self.store, self.key, self.retry_on = store, key, retry_on
        self.max_attempts, self.on_retry = max_attempts, on_retry
        self.done = False

    def __iter__(self) -> Iterator[Attempt]:
        for number in range(1, self.max_attempts + 1):
            yield Attempt(self, number)
            if self.done:
                return
        # Only reached when the body left an attempt without committing and
        # without raising (a bug in the caller): never loop silently.
        raise AssertionError(f"no attempt committed for {self.key}")


class SessionWrites:
    """The session locks and the retry loop every conversation writer shares.

    ``lock_timeout_s``: how long a writer waits for the conversation's lock
    (SessionBusyError after it).
    """

    def __init__(self, locks: Locks, store: SessionStore, lock_timeout_s: float = 10.0) -> None:
        self.locks = locks
        self.store = store
        self.lock_timeout_s = lock_timeout_s

    @asynccontextmanager
    async def locked(self, key: SessionKey) -> AsyncIterator[None]:
        """Hold ``key``'s conversation lock. Raises SessionBusyError, StoreError."""
        async with self.locks.lock(f"session:{key}", self.lock_timeout_s):
            yield

    def attempts(
        self,
        key: SessionKey,
        *,
        retry_on: tuple[type[BaseException], ...] = RETRY_ON,
        max_attempts: int = MAX_ATTEMPTS,
        on_retry: Callable[[], None] | None = None,
    ) -> Iterator[Attempt]:
        """Attempts of one write of ``key``; ``on_retry`` runs before each rerun
        (e.g. to drop the replay events of the attempt that conflicted)."""
        return iter(_Attempts(self.store, key, retry_on, max_attempts, on_retry))

"""Per-session locks: one writer per conversation at a time.

Two backends implement :class:`Locks`:

- :class:`LocalLocks` (one process; the embedded default): asyncio locks;
- :class:`providers.redis.locks.RedisLocks` (``REDIS_URL``; shared by
  replicas): a token in a key
  with a short lease (``lease_s``, default 5 s) that a background task renews
  every ``lease_s / 3`` while the block runs, so a long turn (an LLM that
  takes 20 s) keeps its lock, and a replica that dies holding one frees it
  within ``lease_s``.

Locks order work; they are not what keeps data right. Session saves are
versioned (:class:`engine.session.SessionStore`), so a turn that lost its lock
(Redis gone, a lease that could not be renewed) fails its commit instead of
overwriting another turn's state.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from engine.errors import SessionBusyError

__all__ = ["LocalLocks", "Locks"]

log = logging.getLogger("engine.locks")


class Locks(ABC):
    @abstractmethod
    def lock(self, name: str, timeout_s: float = 10.0) -> AbstractAsyncContextManager[None]:
        """Held by one task (one replica) at a time.

        Raises :class:`SessionBusyError` when not acquired within ``timeout_s``
        seconds, :class:`StoreError` when the backend fails.
        """

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @property
    @abstractmethod
    def backend(self) -> str: ...


class _Lease:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class LocalLocks(Locks):
    """asyncio locks for one process; idle locks are dropped."""

    def __init__(self) -> None:
        self._locks: dict[str, _Lease] = {}

    @property
    def backend(self) -> str:
        return "local"

    @asynccontextmanager
    async def _locked(self, name: str, timeout_s: float) -> AsyncIterator[None]:
        lease = self._locks.get(name)
        if lease is None:
            lease = self._locks[name] = _Lease()
        lease.users += 1
        try:
            if not lease.lock.locked():
                await lease.lock.acquire()  # free: no timer needed (the common case)
            else:
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


# Release/extend only while the key still holds our token.

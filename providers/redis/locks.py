"""Session locks in Redis, shared by replicas (``REDIS_URL``): a token in a key
with a short lease (``lease_s``, default 5 s) that a background task renews every
``lease_s / 3`` while the block runs, so a long turn keeps its lock and a replica
that dies holding one frees it within ``lease_s``. The port and the in-process
default are :mod:`engine.locks`."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

from engine.errors import SessionBusyError, StoreError
from engine.locks import Locks

__all__ = ["RedisLocks"]

log = logging.getLogger("providers.redis.locks")

_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class RedisLocks(Locks):
    """Redis locks with renewed leases. Keys: ``<prefix>lock:<name>``.

    ``lease_s``: how long a lock outlives a dead holder (seconds).
    ``poll_s``: how often a waiter retries.
    """

    def __init__(
        self, url: str, *, lease_s: float = 5.0, poll_s: float = 0.005, prefix: str = "gw:"
    ) -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.Redis.from_url(url, decode_responses=True)
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._prefix = prefix

    @property
    def backend(self) -> str:
        return "redis"

    async def _call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        """One command; a connection that went stale (Redis restarted) is retried once."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError

        for attempt in (1, 2):
            try:
                return await getattr(self._redis, what)(*args, **kwargs)
            except (RedisConnectionError, OSError) as exc:
                if attempt == 2:
                    raise StoreError(f"redis {what} failed: {type(exc).__name__}") from exc
            except RedisError as exc:
                raise StoreError(f"redis {what} failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _locked(self, name: str, timeout_s: float) -> AsyncIterator[None]:
        key = f"{self._prefix}lock:{name}"
        token = uuid.uuid4().hex
        lease_ms = int(self.lease_s * 1000)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await self._call("set", key, token, nx=True, px=lease_ms):
            if loop.time() >= deadline:
                raise SessionBusyError(name, timeout_s)
            await asyncio.sleep(self.poll_s)
        renewer = asyncio.create_task(self._renew(key, token, lease_ms))
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            with suppress(StoreError):  # the lease then simply runs out
                await self._call("eval", _RELEASE, 1, key, token)

    async def _renew(self, key: str, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                held = await self._call("eval", _EXTEND, 1, key, token, lease_ms)
            except StoreError:
                log.warning("lock lease could not be renewed (Redis unreachable)")
                continue
            if not held:
                # Someone else holds it now; the versioned save will refuse our commit.
                log.warning("lock lease was lost before the turn finished")
                return

    def lock(self, name: str, timeout_s: float = 10.0) -> AbstractAsyncContextManager[None]:
        return self._locked(name, timeout_s)

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping"))
        except StoreError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()

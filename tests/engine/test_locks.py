"""Per-session locks (``engine.locks``): the in-process backend and Redis.

The contract tests run against :class:`LocalLocks` and against
:class:`RedisLocks` on a real Redis (``redis_url``: a database of this test's
own). The Redis-only tests cover what a shared lock must survive: a turn
longer than the lease (renewal), a replica that died holding a lock (its lease
runs out), a Redis that dropped the pool's connections, and no Redis at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.errors import SessionBusyError, StoreError
from engine.locks import LocalLocks, Locks
from providers.redis.locks import RedisLocks

NAME = "spa-del-sol:web:web:7f3a"


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def locks(request: pytest.FixtureRequest) -> AsyncIterator[Locks]:
    backend: Locks
    if request.param == "local":
        backend = LocalLocks()
    else:
        backend = RedisLocks(request.getfixturevalue("redis_url"))
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Any]:
    """A client of our own on the test's database, to look at and meddle with keys."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def hold(locks: Locks, name: str, entered: asyncio.Event, leave: asyncio.Event) -> None:
    async with locks.lock(name):
        entered.set()
        await leave.wait()


# -- both backends ------------------------------------------------------------------------


async def test_backend_name_and_ping(locks: Locks) -> None:
    assert locks.backend in ("local", "redis")
    assert await locks.ping() is True


async def test_one_holder_at_a_time(locks: Locks) -> None:
    inside = 0
    most_inside = 0
    order: list[int] = []

    async def worker(n: int) -> None:
        nonlocal inside, most_inside
        async with locks.lock(NAME, timeout_s=10):
            inside += 1
            most_inside = max(most_inside, inside)
            for _ in range(3):  # give every other task the chance to barge in
                await asyncio.sleep(0)
            await asyncio.sleep(0.001)
            order.append(n)
            inside -= 1

    await asyncio.gather(*(worker(n) for n in range(8)))
    assert most_inside == 1
    assert sorted(order) == list(range(8))


async def test_waiter_times_out_with_session_busy(locks: Locks) -> None:
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(locks, NAME, entered, leave))
    try:
        await asyncio.wait_for(entered.wait(), 5)
        with pytest.raises(SessionBusyError) as info:
            async with locks.lock(NAME, timeout_s=0.05):
                pytest.fail("acquired a lock that is held")
        assert info.value.key == NAME
        assert info.value.timeout_s == 0.05
    finally:
        leave.set()
        await holder
    async with locks.lock(NAME, timeout_s=1):
        pass


async def test_waiter_gets_the_lock_when_the_holder_leaves(locks: Locks) -> None:
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(locks, NAME, entered, leave))
    await asyncio.wait_for(entered.wait(), 5)
    got = asyncio.Event()

    async def waiter() -> None:
        async with locks.lock(NAME, timeout_s=5):
            got.set()

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.02)
    assert not got.is_set()
    leave.set()
    await asyncio.wait_for(waiting, 5)
    await holder
    assert got.is_set()


async def test_lock_is_released_when_the_body_raises(locks: Locks) -> None:
    with pytest.raises(ValueError, match="flow bug"):
        async with locks.lock(NAME):
            raise ValueError("flow bug")
    async with locks.lock(NAME, timeout_s=0.5):
        pass


async def test_different_names_do_not_block_each_other(locks: Locks) -> None:
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(locks, "client:web:a", entered, leave))
    try:
        await asyncio.wait_for(entered.wait(), 5)
        async with locks.lock("client:web:b", timeout_s=0.5):
            pass
    finally:
        leave.set()
        await holder


async def test_local_locks_drop_idle_entries() -> None:
    locks = LocalLocks()
    async with locks.lock(NAME):
        assert NAME in locks._locks
    assert locks._locks == {}


# -- Redis specifics ----------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_lock_key_holds_a_token_and_is_deleted_on_release(
    redis_url: str, redis_client: Any
) -> None:
    locks = RedisLocks(redis_url, lease_s=2.0)
    try:
        async with locks.lock(NAME):
            token = await redis_client.get(f"gw:lock:{NAME}")
            assert token
            assert 0 < await redis_client.pttl(f"gw:lock:{NAME}") <= 2000
        assert await redis_client.exists(f"gw:lock:{NAME}") == 0
    finally:
        await locks.close()


@pytest.mark.redis
async def test_redis_lock_is_renewed_while_a_long_block_runs(
    redis_url: str, redis_client: Any
) -> None:
    locks = RedisLocks(redis_url, lease_s=0.3)
    other = RedisLocks(redis_url, lease_s=0.3)
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(locks, NAME, entered, leave))
    try:
        await asyncio.wait_for(entered.wait(), 5)
        token = await redis_client.get(f"gw:lock:{NAME}")
        # The block outlives three leases; without renewal the key would be gone
        # after 0.3 s and the other replica would take the lock.
        with pytest.raises(SessionBusyError):
            async with other.lock(NAME, timeout_s=1.0):
                pytest.fail("took a lock whose holder is still running")
        assert await redis_client.get(f"gw:lock:{NAME}") == token
        assert not holder.done()
    finally:
        leave.set()
        await holder
        await locks.close()
        await other.close()
    assert await redis_client.exists(f"gw:lock:{NAME}") == 0


@pytest.mark.redis
async def test_lock_of_a_dead_holder_is_taken_after_its_lease(
    redis_url: str, redis_client: Any
) -> None:
    key = f"gw:lock:{NAME}"
    await redis_client.set(key, "token-of-a-replica-that-died", px=300)
    locks = RedisLocks(redis_url, lease_s=0.3)
    try:
        async with locks.lock(NAME, timeout_s=1.5):
            assert await redis_client.get(key) not in (None, "token-of-a-replica-that-died")
    finally:
        await locks.close()


@pytest.mark.redis
async def test_release_never_deletes_another_holders_key(redis_url: str, redis_client: Any) -> None:
    key = f"gw:lock:{NAME}"
    locks = RedisLocks(redis_url, lease_s=5.0)
    try:
        async with locks.lock(NAME):
            # Our lease was lost and another replica took the lock meanwhile.
            await redis_client.set(key, "someone-else")
        assert await redis_client.get(key) == "someone-else"
    finally:
        await locks.close()


@pytest.mark.redis
async def test_lock_works_after_redis_dropped_the_pool_connections(
    redis_url: str, redis_client: Any
) -> None:
    db = int(redis_url.rsplit("/", 1)[1])
    own_id = await redis_client.client_id()
    before = {c["id"] for c in await redis_client.client_list()}
    locks = RedisLocks(redis_url, lease_s=2.0)
    try:
        async with locks.lock(NAME):
            pass
        # Only the lock client's connections: other test runs share this server.
        victims = [
            c["id"]
            for c in await redis_client.client_list()
            if c["id"] not in before and c["id"] != own_id and int(c["db"]) == db
        ]
        assert victims, "the lock client holds no connection to kill"
        for client_id in victims:
            await redis_client.execute_command("CLIENT", "KILL", "ID", client_id)

        async with locks.lock(NAME, timeout_s=2):
            assert await redis_client.get(f"gw:lock:{NAME}")
        assert await locks.ping() is True
    finally:
        await locks.close()


@pytest.mark.redis
async def test_lock_without_a_reachable_redis_is_a_store_error() -> None:
    locks = RedisLocks("redis://127.0.0.1:1/0")
    try:
        assert await locks.ping() is False
        with pytest.raises(StoreError, match="redis set failed"):
            async with locks.lock(NAME, timeout_s=1):
                pytest.fail("acquired a lock without Redis")
    finally:
        await locks.close()

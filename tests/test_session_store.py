"""The SessionStore contract, run against both backends.

Every test here runs once on :class:`MemorySessionStore` and once on
:class:`RedisSessionStore` over a real Redis (``redis_url`` fixture), so the
two stay interchangeable: what the engine and the web channel rely on must
hold for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from engine.errors import SessionBusyError, StoreError
from engine.session import (
    ConversationSession,
    MemorySessionStore,
    RedisSessionStore,
    SessionKey,
    SessionStore,
    Turn,
)

# Redis expiries are whole seconds (``EX``), memory ones are not: each backend
# gets the shortest TTL it can honour, so the expiry tests stay quick.
SHORT_TTL_S = {"memory": 0.2, "redis": 1.0}

StoreFactory = Callable[..., SessionStore]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def make_store(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Factory of stores of one backend; every store made is closed at teardown."""
    made: list[SessionStore] = []
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""

    def make(**kwargs: Any) -> SessionStore:
        store: SessionStore = (
            RedisSessionStore(url, **kwargs) if backend == "redis" else MemorySessionStore(**kwargs)
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> SessionStore:
    return make_store()


KEY = SessionKey("spa-del-sol", "web", "s-1")


def _session(key: SessionKey = KEY) -> ConversationSession:
    session = ConversationSession.new(key)
    session.purpose = "lead_capture"
    session.purpose_state["lead_capture"] = {"slots": {"name": "Ana"}, "asked": 2}
    session.transcript.append(Turn(role="user", text="hi, I'd like a massage"))
    session.transcript.append(Turn(role="assistant", text="Sure! What's your name?"))
    session.context["caller_number"] = "+14155550100"
    session.turn_count = 1
    return session


# --- load / save -------------------------------------------------------------------


async def test_load_missing_is_none(store: SessionStore) -> None:
    assert await store.load(KEY) is None


async def test_save_load_round_trip(store: SessionStore) -> None:
    session = _session()
    await store.save(session)
    loaded = await store.load(KEY)
    assert loaded == session
    assert loaded is not session


async def test_save_overwrites(store: SessionStore) -> None:
    session = _session()
    await store.save(session)
    session.turn_count = 7
    session.outcome = "booked"
    await store.save(session)
    loaded = await store.load(KEY)
    assert loaded is not None
    assert (loaded.turn_count, loaded.outcome) == (7, "booked")


async def test_keys_are_separate(store: SessionStore) -> None:
    await store.save(_session())
    for other in (
        SessionKey("spa-del-sol", "whatsapp", "s-1"),
        SessionKey("spa-del-sol", "web", "s-2"),
        SessionKey("other-client", "web", "s-1"),
    ):
        assert await store.load(other) is None


async def test_session_expires_after_ttl(make_store: StoreFactory, backend: str) -> None:
    ttl = SHORT_TTL_S[backend]
    store = make_store(ttl_s=ttl)
    await store.save(_session())
    await store.append_events(KEY, [(1, '{"type":"session"}')])
    assert await store.load(KEY) is not None
    await asyncio.sleep(ttl + 0.6)
    assert await store.load(KEY) is None
    assert await store.events_after(KEY, 0) == []


async def test_save_refreshes_ttl(make_store: StoreFactory, backend: str) -> None:
    ttl = SHORT_TTL_S[backend]
    store = make_store(ttl_s=ttl * 2)
    await store.save(_session())
    await asyncio.sleep(ttl * 1.2)
    await store.save(_session())
    await asyncio.sleep(ttl * 1.2)
    assert await store.load(KEY) is not None


# --- lock ----------------------------------------------------------------------------


async def test_lock_is_mutually_exclusive(store: SessionStore) -> None:
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with store.lock("session:x", timeout_s=5):
            order.append("first in")
            first_in.set()
            await release_first.wait()
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with store.lock("session:x", timeout_s=5):
            order.append("second in")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await first_in.wait()
    await asyncio.sleep(0.2)  # second is now waiting for the lock
    assert order == ["first in"]
    release_first.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["first in", "first out", "second in"]


async def test_lock_timeout_raises_session_busy(store: SessionStore) -> None:
    held = asyncio.Event()
    done = asyncio.Event()

    async def holder() -> None:
        async with store.lock("session:busy", timeout_s=5):
            held.set()
            await done.wait()

    task = asyncio.create_task(holder())
    await held.wait()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SessionBusyError) as info:
        async with store.lock("session:busy", timeout_s=0.3):
            pytest.fail("the lock was taken twice")
    waited = loop.time() - started
    assert 0.25 <= waited < 3, waited
    assert "session:busy" in str(info.value)
    done.set()
    await asyncio.wait_for(task, 5)
    # Released by its holder: free again.
    async with store.lock("session:busy", timeout_s=1):
        pass


async def test_lock_released_when_body_raises(store: SessionStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.lock("session:err", timeout_s=1):
            raise RuntimeError("boom")
    async with store.lock("session:err", timeout_s=0.5):
        pass


async def test_locks_with_other_names_do_not_block(store: SessionStore) -> None:
    async with store.lock("session:a", timeout_s=1), store.lock("session:b", timeout_s=0.5):
        pass


# --- event log -------------------------------------------------------------------------


async def test_event_log_append_and_read(store: SessionStore) -> None:
    assert await store.last_event_id(KEY) == 0
    assert await store.events_after(KEY, 0) == []
    await store.append_events(KEY, [(1, '{"n":1}'), (2, '{"n":2}')])
    await store.append_events(KEY, [(3, '{"n":3}')])
    await store.append_events(KEY, [])
    assert await store.events_after(KEY, 0) == [(1, '{"n":1}'), (2, '{"n":2}'), (3, '{"n":3}')]
    assert await store.events_after(KEY, 2) == [(3, '{"n":3}')]
    assert await store.events_after(KEY, 3) == []
    assert await store.last_event_id(KEY) == 3
    other = SessionKey("spa-del-sol", "web", "s-other")
    assert await store.last_event_id(other) == 0
    assert await store.events_after(other, 0) == []


async def test_event_log_keeps_last_max_events(make_store: StoreFactory) -> None:
    store = make_store(max_events=5)
    for i in range(1, 9):
        await store.append_events(KEY, [(i, f'{{"n":{i}}}')])
    assert [i for i, _ in await store.events_after(KEY, 0)] == [4, 5, 6, 7, 8]
    assert await store.last_event_id(KEY) == 8
    await store.append_events(KEY, [(i, f'{{"n":{i}}}') for i in range(9, 21)])
    assert [i for i, _ in await store.events_after(KEY, 0)] == [16, 17, 18, 19, 20]
    assert await store.last_event_id(KEY) == 20


# --- remember (exactly-once marks) ----------------------------------------------------


async def test_remember_is_set_if_absent(store: SessionStore, backend: str) -> None:
    ttl = SHORT_TTL_S[backend]
    assert await store.remember("wa:msg-1", ttl) is True
    assert await store.remember("wa:msg-1", ttl) is False
    assert await store.remember("wa:msg-2", ttl) is True
    await asyncio.sleep(ttl + 0.6)
    assert await store.remember("wa:msg-1", ttl) is True


async def test_remember_concurrent_only_one_wins(store: SessionStore) -> None:
    results = await asyncio.gather(*(store.remember("wa:race", 30) for _ in range(20)))
    assert results.count(True) == 1


# --- health -------------------------------------------------------------------------------


async def test_ping(store: SessionStore) -> None:
    assert await store.ping() is True


async def test_backend_name(store: SessionStore, backend: str) -> None:
    assert store.backend == backend


# --- Redis only: shared between replicas, errors mapped ---------------------------------


async def test_redis_state_is_shared_between_instances(redis_url: str) -> None:
    a, b = RedisSessionStore(redis_url), RedisSessionStore(redis_url)
    try:
        await a.save(_session())
        assert await b.load(KEY) == await a.load(KEY)
        await a.append_events(KEY, [(1, "{}")])
        assert await b.last_event_id(KEY) == 1
        async with a.lock("session:shared", timeout_s=1):
            with pytest.raises(SessionBusyError):
                async with b.lock("session:shared", timeout_s=0.2):
                    pass
        async with b.lock("session:shared", timeout_s=1):
            pass
        assert await a.remember("m", 30) is True
        assert await b.remember("m", 30) is False
    finally:
        await a.close()
        await b.close()


async def test_redis_unreachable_maps_to_store_error() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    store = RedisSessionStore("redis://127.0.0.1:1/0")
    try:
        assert await store.ping() is False
        with pytest.raises(StoreError):
            await store.load(KEY)
        with pytest.raises(StoreError):
            await store.save(_session())
    finally:
        await store.close()

"""The durable core's contract: ``engine.db.database.Database`` and ``engine.session.SessionStore``.

Every store test runs twice (the ``database_url`` fixture): on an embedded
SQLite file and on a throwaway database of a real PostgreSQL. Writes are
transaction bodies run by ``db.fast.transaction``, as the turn commit runs
them, without the Committer. Time is a fake clock in epoch seconds, moved by
the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from fakes import FakeClock

from engine.db.database import Database, normalize_url
from engine.db.fast import Tx
from engine.db.schema import PROCESSED_MESSAGES, SESSION_EVENTS, SESSIONS
from engine.errors import CommitConflict, DuplicateMessageError, StoreError
from engine.messages import ChannelContext
from engine.session import (
    TRANSCRIPT_WINDOW,
    ConversationSession,
    SessionKey,
    SessionStore,
    Turn,
)

T = TypeVar("T")

T0 = 1_800_000_000.0
TTL_S = 100.0
KEY = SessionKey("spa-del-sol", "web", "web:7f3a")
OTHER = SessionKey("spa-del-sol", "whatsapp", "wa:+14155550123")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(db: Database, clock: FakeClock) -> SessionStore:
    return SessionStore(db, ttl_s=TTL_S, max_events=5, clock=clock)


def make_session(key: SessionKey = KEY, *, note: str = "first") -> ConversationSession:
    session = ConversationSession.new(key)
    session.purpose = "lead_capture"
    session.purpose_state = {
        "lead_capture": {"state": "ask_phone", "name": "王伟", "slots": [1, 2], "note": note}
    }
    session.transcript = [
        Turn(role="user", text="你好，我叫王伟"),
        Turn(role="assistant", text="Nice to meet you, 王伟. What number can we call?"),
    ]
    session.context = ChannelContext(
        caller_number="+14155550123", web_origin="https://例子.example"
    )
    return session


async def in_tx(db: Database, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
    """Run ``body`` as one write transaction, the way the turn commit does."""
    return await db.fast.transaction(body)


async def save(
    store: SessionStore,
    session: ConversationSession,
    version: int | None,
    last_event_id: int = 0,
) -> int:
    async def body(tx: Tx) -> int:
        return await store.save_in(tx, session, version, last_event_id)

    new_version = await in_tx(store.db, body)

    async def written(tx: Tx) -> Any:
        return await tx.fetchone(
            "SELECT data, version FROM sessions"
            " WHERE client_id = $1 AND channel = $2 AND session_id = $3",
            session.client_id,
            session.channel,
            session.session_id,
        )

    assert await store.db.fast.query(written) == (session.model_dump_json(), new_version)
    return new_version


async def mark(store: SessionStore, key: SessionKey, message_id: str, turn_id: str) -> None:
    async def body(tx: Tx) -> None:
        await store.mark_processed_in(tx, key, message_id, turn_id)

    await in_tx(store.db, body)


async def append(store: SessionStore, key: SessionKey, events: list[tuple[int, str]]) -> None:
    async def body(tx: Tx) -> None:
        await store.append_events_in(tx, key, events)

    await in_tx(store.db, body)


async def count_rows(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


# -- Database ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:pw@db.internal/gw", "postgresql+asyncpg://u:pw@db.internal/gw"),
        ("postgresql://u:pw@db.internal:6543/gw", "postgresql+asyncpg://u:pw@db.internal:6543/gw"),
        ("postgresql+psycopg://u@db.internal/gw", "postgresql+asyncpg://u@db.internal/gw"),
        (
            "postgresql://u@db.internal/gw?sslmode=require",
            "postgresql+asyncpg://u@db.internal/gw?ssl=require",
        ),
        (
            "  postgresql://u@db.internal/gw?application_name=gw&sslmode=verify-full  ",
            "postgresql+asyncpg://u@db.internal/gw?application_name=gw&ssl=verify-full",
        ),
        ("sqlite:///x", "sqlite+aiosqlite:///x"),
        ("sqlite:////var/lib/gw/gateway.sqlite", "sqlite+aiosqlite:////var/lib/gw/gateway.sqlite"),
        ("sqlite+pysqlite:///x", "sqlite+aiosqlite:///x"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@db/gw", "redis://127.0.0.1:6379/0", "gateway.sqlite"])
def test_normalize_url_rejects_other_schemes_naming_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme") as info:
        normalize_url(url)
    assert "postgresql://user:pass@host/db" in str(info.value)
    assert "sqlite:///" in str(info.value)


def test_open_rejects_a_bad_url() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        Database.open("mysql://u@db/gw")


def test_open_rejects_an_in_memory_sqlite_database() -> None:
    with pytest.raises(ValueError, match="give a file path"):
        Database.open("sqlite:///:memory:")


@pytest.mark.unseeded  # runs the migrations itself, on an empty database
async def test_migrations_take_an_empty_database_to_head_and_rerun_as_a_no_op(
    database_url: str, clock: FakeClock
) -> None:
    db = Database.open(database_url)
    try:
        assert await db.current_revision() is None
        await db.upgrade()
        assert await db.current_revision() == Database.head_revision()

        store = SessionStore(db, ttl_s=TTL_S, clock=clock)
        await save(store, make_session(), None)
        await db.upgrade()
        assert await db.current_revision() == Database.head_revision()
        loaded = await store.load(KEY)
        assert loaded is not None and loaded.version == 1
    finally:
        await db.close()


async def test_backend_names_the_dialect(db: Database, database_url: str) -> None:
    assert db.backend == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
    assert db.is_sqlite == database_url.startswith("sqlite")
    assert db.fast.dialect == db.dialect
    assert await db.ping() is True


async def test_unreachable_postgres_is_a_store_error_not_a_driver_exception() -> None:
    db = Database.open("postgresql://postgres@127.0.0.1:1/x")
    store = SessionStore(db)
    try:
        assert await db.ping() is False
        assert await store.ping() is False
        with pytest.raises(StoreError, match=r"database read failed \(postgresql\)"):
            await store.load(KEY)
        with pytest.raises(StoreError, match=r"database read failed \(postgresql\)"):
            await store.processed(KEY, "SM-1")
        with pytest.raises(StoreError, match=r"database write failed \(postgresql\)"):
            await save(store, make_session(), None)
        with pytest.raises(StoreError, match=r"database write failed \(postgresql\)"):
            await store.purge_expired()
    finally:
        await db.close()


@pytest.mark.postgres
async def test_sslmode_in_the_url_reaches_both_postgres_drivers(postgres_url: str) -> None:
    # Managed PostgreSQL URLs carry sslmode=require; the hot path (asyncpg's own
    # DSN parser) must get it as sslmode, not as a server setting "ssl".
    db = Database.open(f"{postgres_url}?sslmode=disable")
    try:
        await db.upgrade()
        assert await db.ping() is True
        store = SessionStore(db)
        assert await store.load(KEY) is None
    finally:
        await db.close()


async def test_transaction_body_that_raises_is_rolled_back(
    db: Database, store: SessionStore
) -> None:
    async def body(tx: Tx) -> None:
        await store.save_in(tx, make_session(), None, 0)
        await store.mark_processed_in(tx, KEY, "SM-1", "turn-1")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await in_tx(db, body)
    assert await store.load(KEY) is None
    assert await store.processed(KEY, "SM-1") is False
    assert await count_rows(db, SESSIONS) == 0


async def test_sqlite_body_that_awaits_something_else_is_refused_and_rolled_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    # SQLite drives a body straight through in its writer thread; a body must
    # await only its Tx (PostgreSQL bodies may await anything).
    db = Database.open(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    try:
        await db.upgrade()
        store = SessionStore(db, ttl_s=TTL_S, clock=clock)

        async def body(tx: Tx) -> None:
            await store.save_in(tx, make_session(), None, 0)
            await asyncio.sleep(0)

        with pytest.raises(RuntimeError, match="awaited something other than its Tx"):
            await in_tx(db, body)
        assert await store.load(KEY) is None
        assert await save(store, make_session(), None) == 1
    finally:
        await db.close()


# -- SessionStore: versioned saves --------------------------------------------------------


async def test_load_of_a_missing_session_is_none(store: SessionStore) -> None:
    assert await store.load(KEY) is None
    assert await store.exists(KEY) is False
    assert await store.last_event_id(KEY) == 0


async def test_new_session_round_trips_at_version_1(store: SessionStore) -> None:
    session = make_session()
    assert await save(store, session, None, last_event_id=0) == 1

    loaded = await store.load(KEY)
    assert loaded is not None
    assert loaded.version == 1
    assert loaded.last_event_id == 0
    assert loaded.session == session
    assert loaded.session.purpose_state["lead_capture"]["name"] == "王伟"
    assert [t.text for t in loaded.session.transcript] == [
        "你好，我叫王伟",
        "Nice to meet you, 王伟. What number can we call?",
    ]
    assert loaded.session.context == ChannelContext(
        caller_number="+14155550123", web_origin="https://例子.example"
    )
    assert await store.exists(KEY) is True
    assert await store.load(OTHER) is None


async def test_save_at_the_loaded_version_bumps_it(store: SessionStore) -> None:
    await save(store, make_session(), None)
    loaded = await store.load(KEY)
    assert loaded is not None
    loaded.session.transcript.append(Turn(role="user", text="+1 415 555 0123"))
    loaded.session.turn_count = 1

    assert await save(store, loaded.session, loaded.version) == 2
    again = await store.load(KEY)
    assert again is not None
    assert again.version == 2
    assert again.session.turn_count == 1
    assert again.session.transcript[-1].text == "+1 415 555 0123"


async def test_stale_version_conflicts_and_rolls_back_the_whole_transaction(
    store: SessionStore,
) -> None:
    await save(store, make_session(note="v1"), None)
    await save(store, make_session(note="v2"), 1)

    async def stale_turn(tx: Tx) -> None:
        await store.save_in(tx, make_session(OTHER), None, 0)
        await store.mark_processed_in(tx, KEY, "SM-stale", "turn-stale")
        await store.append_events_in(tx, KEY, [(1, '{"type":"reply"}')])
        await store.save_in(tx, make_session(note="stale"), 1, 1)

    with pytest.raises(CommitConflict) as info:
        await in_tx(store.db, stale_turn)
    assert info.value.key == str(KEY)

    assert await store.load(OTHER) is None
    assert await store.processed(KEY, "SM-stale") is False
    assert await store.events_after(KEY, 0) == []
    current = await store.load(KEY)
    assert current is not None
    assert current.version == 2
    assert current.last_event_id == 0
    assert current.session.purpose_state["lead_capture"]["note"] == "v2"


async def test_new_save_over_a_live_row_conflicts(store: SessionStore) -> None:
    await save(store, make_session(note="kept"), None)
    with pytest.raises(CommitConflict):
        await save(store, make_session(note="lost"), None)
    loaded = await store.load(KEY)
    assert loaded is not None
    assert loaded.session.purpose_state["lead_capture"]["note"] == "kept"


async def test_save_of_a_vanished_session_at_a_version_conflicts(store: SessionStore) -> None:
    with pytest.raises(CommitConflict):
        await save(store, make_session(), 3)
    assert await store.load(KEY) is None


async def test_two_concurrent_new_saves_of_one_key_exactly_one_wins(
    store: SessionStore,
) -> None:
    # On PostgreSQL both transactions are open before either inserts (the loser
    # waits on the primary key, then finds the row); SQLite has one writer.
    barrier = asyncio.Barrier(2) if not store.db.is_sqlite else None

    async def new_save(note: str) -> int:
        async def body(tx: Tx) -> int:
            if barrier is not None:
                await barrier.wait()
            return await store.save_in(tx, make_session(note=note), None, 0)

        version = await in_tx(store.db, body)
        return version

    results = await asyncio.gather(new_save("a"), new_save("b"), return_exceptions=True)

    wins = [i for i, r in enumerate(results) if r == 1]
    conflicts = [i for i, r in enumerate(results) if isinstance(r, CommitConflict)]
    assert len(wins) == 1 and len(conflicts) == 1, results
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.version == 1
    assert loaded.session.purpose_state["lead_capture"]["note"] == "ab"[wins[0]]


async def test_two_concurrent_saves_at_one_version_exactly_one_wins(
    store: SessionStore,
) -> None:
    await save(store, make_session(note="v1"), None)
    barrier = asyncio.Barrier(2) if not store.db.is_sqlite else None

    async def turn(note: str) -> int:
        async def body(tx: Tx) -> int:
            if barrier is not None:
                await barrier.wait()
            return await store.save_in(tx, make_session(note=note), 1, 0)

        version = await in_tx(store.db, body)
        return version

    results = await asyncio.gather(turn("a"), turn("b"), return_exceptions=True)
    wins = [i for i, r in enumerate(results) if r == 2]
    assert len(wins) == 1, results
    assert sum(isinstance(r, CommitConflict) for r in results) == 1, results
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.version == 2
    assert loaded.session.purpose_state["lead_capture"]["note"] == "ab"[wins[0]]


# -- expiry --------------------------------------------------------------------------------


async def test_session_expires_after_ttl_and_a_new_save_replaces_it(
    store: SessionStore, clock: FakeClock
) -> None:
    await save(store, make_session(note="old"), None, last_event_id=2)
    await append(store, KEY, [(1, "{}"), (2, "{}")])
    assert await save(store, make_session(note="old"), 1, last_event_id=2) == 2

    clock.advance(TTL_S - 1)
    assert await store.load(KEY) is not None
    clock.advance(1)
    assert await store.load(KEY) is None
    assert await store.exists(KEY) is False
    assert await store.last_event_id(KEY) == 0

    # The new conversation's versions continue past the old row's, so a turn
    # still holding version 1 or 2 of the expired one can never overwrite it.
    new_version = await save(store, make_session(note="new"), None)
    assert new_version > 2
    loaded = await store.load(KEY)
    assert loaded is not None
    assert loaded.version == new_version
    assert loaded.last_event_id == 0
    assert loaded.session.purpose_state["lead_capture"]["note"] == "new"
    assert await store.events_after(KEY, 0) == []  # the old replay log went with it
    for stale in (1, 2):
        with pytest.raises(CommitConflict):
            await save(store, make_session(note="stale"), stale)


async def test_save_at_a_version_of_an_expired_row_conflicts(
    store: SessionStore, clock: FakeClock
) -> None:
    await save(store, make_session(note="old"), None)
    clock.advance(TTL_S)
    with pytest.raises(CommitConflict):
        await save(store, make_session(note="late"), 1)
    assert await store.load(KEY) is None


async def test_each_save_extends_the_expiry(store: SessionStore, clock: FakeClock) -> None:
    await save(store, make_session(), None)
    clock.advance(TTL_S - 10)
    await save(store, make_session(), 1)
    clock.advance(TTL_S - 10)
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.version == 2


async def test_purge_expired_deletes_expired_rows_only(
    store: SessionStore, clock: FakeClock
) -> None:
    async def first(tx: Tx) -> None:
        await store.save_in(tx, make_session(KEY), None, 2)
        await store.mark_processed_in(tx, KEY, "SM-1", "turn-1")
        await store.append_events_in(tx, KEY, [(1, "{}"), (2, "{}")])

    async def second(tx: Tx) -> None:
        await store.save_in(tx, make_session(OTHER), None, 1)
        await store.mark_processed_in(tx, OTHER, "SM-2", "turn-2")
        await store.append_events_in(tx, OTHER, [(1, "{}")])

    await in_tx(store.db, first)
    clock.advance(TTL_S / 2)
    await in_tx(store.db, second)

    assert await store.purge_expired() == 0
    clock.advance(TTL_S / 2)  # KEY's rows expire now; OTHER's in TTL_S / 2
    assert await store.purge_expired() == 1 + 1 + 2

    assert await count_rows(store.db, SESSIONS) == 1
    assert await count_rows(store.db, PROCESSED_MESSAGES) == 1
    assert await count_rows(store.db, SESSION_EVENTS) == 1
    assert await store.load(OTHER) is not None
    assert await store.processed(OTHER, "SM-2") is True
    assert await store.events_after(OTHER, 0) == [(1, "{}")]
    assert await store.purge_expired() == 0

    clock.advance(TTL_S / 2)
    assert await store.purge_expired() == 1 + 1 + 1
    assert await count_rows(store.db, SESSION_EVENTS) == 0


# -- processed marks ----------------------------------------------------------------------


async def test_processed_mark_then_a_second_mark_is_a_duplicate(store: SessionStore) -> None:
    assert await store.processed(KEY, "SM-abc") is False
    await mark(store, KEY, "SM-abc", "turn-1")
    assert await store.processed(KEY, "SM-abc") is True
    assert await store.processed(KEY, "SM-other") is False
    assert await store.processed(OTHER, "SM-abc") is False

    with pytest.raises(DuplicateMessageError) as info:
        await mark(store, KEY, "SM-abc", "turn-2")
    assert info.value.message_id == "SM-abc"
    assert info.value.key == str(KEY)


async def test_duplicate_mark_rolls_back_the_turn_it_belongs_to(store: SessionStore) -> None:
    async def turn(note: str, version: int | None) -> None:
        async def body(tx: Tx) -> None:
            await store.mark_processed_in(tx, KEY, "SM-abc", f"turn-{note}")
            await store.save_in(tx, make_session(note=note), version, 0)

        await in_tx(store.db, body)

    await turn("1", None)
    with pytest.raises(DuplicateMessageError):
        await turn("2", 1)
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.version == 1
    assert loaded.session.purpose_state["lead_capture"]["note"] == "1"


async def test_same_message_id_in_one_transaction_is_a_duplicate(store: SessionStore) -> None:
    async def body(tx: Tx) -> None:
        await store.mark_processed_in(tx, KEY, "SM-abc", "turn-1")
        await store.mark_processed_in(tx, KEY, "SM-abc", "turn-1")

    with pytest.raises(DuplicateMessageError):
        await in_tx(store.db, body)
    assert await store.processed(KEY, "SM-abc") is False


async def test_an_expired_mark_can_be_taken_again(store: SessionStore, clock: FakeClock) -> None:
    await mark(store, KEY, "SM-abc", "turn-1")
    clock.advance(TTL_S)
    assert await store.processed(KEY, "SM-abc") is False
    await mark(store, KEY, "SM-abc", "turn-2")
    assert await store.processed(KEY, "SM-abc") is True
    with pytest.raises(DuplicateMessageError):
        await mark(store, KEY, "SM-abc", "turn-3")


# -- replay events ------------------------------------------------------------------------


async def test_events_append_read_after_and_last_event_id_from_the_session_row(
    store: SessionStore,
) -> None:
    async def first(tx: Tx) -> None:
        await store.save_in(tx, make_session(), None, 2)
        await store.append_events_in(
            tx, KEY, [(1, '{"type":"reply","text":"你好"}'), (2, '{"type":"done"}')]
        )

    await in_tx(store.db, first)
    assert await store.last_event_id(KEY) == 2
    assert await store.events_after(KEY, 0) == [
        (1, '{"type":"reply","text":"你好"}'),
        (2, '{"type":"done"}'),
    ]
    assert await store.events_after(KEY, 1) == [(2, '{"type":"done"}')]
    assert await store.events_after(KEY, 2) == []
    assert await store.events_after(OTHER, 0) == []

    async def second(tx: Tx) -> None:
        await store.save_in(tx, make_session(), 1, 3)
        await store.append_events_in(tx, KEY, [(3, '{"type":"reply"}')])
        await store.append_events_in(tx, KEY, [])

    await in_tx(store.db, second)
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.last_event_id == 3
    assert [i for i, _ in await store.events_after(KEY, 0)] == [1, 2, 3]


async def test_events_are_trimmed_to_max_events(store: SessionStore) -> None:
    # The log is trimmed whenever an append crosses a multiple of 64 (not on
    # every append): never below the last max_events, never far above.
    assert store.max_events == 5
    for n in range(1, 140):
        await append(store, KEY, [(n, f'{{"n":{n}}}')])
        ids = [i for i, _ in await store.events_after(KEY, 0)]
        assert ids[-min(n, 5) :] == list(range(max(1, n - 4), n + 1))
        assert len(ids) <= 5 + 64
        if n % 64 == 0:
            assert ids == list(range(n - 4, n + 1))
    assert await store.events_after(KEY, 137) == [(138, '{"n":138}'), (139, '{"n":139}')]


async def test_a_batch_crossing_the_trim_point_keeps_the_last_max_events(
    store: SessionStore,
) -> None:
    await append(store, KEY, [(n, "{}") for n in range(1, 61)])
    await append(store, KEY, [(n, "{}") for n in range(61, 71)])
    assert [i for i, _ in await store.events_after(KEY, 0)] == list(range(66, 71))


# -- the session cache --------------------------------------------------------------------


async def test_a_stale_cached_copy_is_refused_then_forgotten(
    db: Database, clock: FakeClock
) -> None:
    replica_a = SessionStore(db, ttl_s=TTL_S, clock=clock)
    replica_b = SessionStore(db, ttl_s=TTL_S, clock=clock)
    session = make_session(note="a1")
    replica_a.remember(session, await save(replica_a, session, None), 0, "SM-1")

    loaded_b = await replica_b.load(KEY)
    assert loaded_b is not None and loaded_b.version == 1
    loaded_b.session.purpose_state["lead_capture"]["note"] = "b2"
    assert await save(replica_b, loaded_b.session, 1) == 2

    cached = await replica_a.load(KEY)  # this replica's own copy, now stale
    assert cached is not None and cached.version == 1
    assert cached.session.purpose_state["lead_capture"]["note"] == "a1"
    with pytest.raises(CommitConflict):
        await save(replica_a, cached.session, cached.version)

    replica_a.forget(KEY)
    fresh = await replica_a.load(KEY)
    assert fresh is not None and fresh.version == 2
    assert fresh.session.purpose_state["lead_capture"]["note"] == "b2"


async def test_exists_never_answers_from_the_cache(store: SessionStore) -> None:
    session = make_session()
    store.remember(session, 1, 0, None)  # a commit that was lost
    assert await store.load(KEY) is not None
    assert await store.exists(KEY) is False
    assert await store.load(KEY) is None


async def test_recently_processed_remembers_committed_message_ids(store: SessionStore) -> None:
    session = make_session()
    store.remember(session, 1, 0, "SM-1")
    store.remember(session, 2, 0, "SM-2")
    store.remember(session, 3, 0, None)
    assert store.recently_processed(KEY, "SM-1") is True
    assert store.recently_processed(KEY, "SM-2") is True
    assert store.recently_processed(KEY, "SM-3") is False
    assert store.recently_processed(OTHER, "SM-1") is False
    store.forget(KEY)
    assert store.recently_processed(KEY, "SM-1") is False


async def test_cache_entries_expire_and_the_least_recent_is_evicted(
    db: Database, clock: FakeClock
) -> None:
    store = SessionStore(db, ttl_s=TTL_S, clock=clock, cache_size=2)
    keys = [SessionKey("spa-del-sol", "web", f"web:{n}") for n in range(3)]
    for n, key in enumerate(keys):
        session = make_session(key)
        store.remember(session, 1, 0, f"SM-{n}")
        if n == 1:
            assert await store.load(keys[0]) is not None  # keys[0] is now the most recent
    assert store.recently_processed(keys[0], "SM-0") is True
    assert store.recently_processed(keys[1], "SM-1") is False
    assert store.recently_processed(keys[2], "SM-2") is True

    clock.advance(TTL_S)
    assert await store.load(keys[0]) is None  # expired copy: read from the database
    assert store.recently_processed(keys[0], "SM-0") is False


# -- transcript window --------------------------------------------------------------------


async def test_transcript_is_trimmed_to_the_window(store: SessionStore) -> None:
    session = make_session()
    session.transcript = [
        Turn(role="user" if i % 2 == 0 else "assistant", text=f"line {i}")
        for i in range(TRANSCRIPT_WINDOW + 15)
    ]
    await save(store, session, None)
    loaded = await store.load(KEY)
    assert loaded is not None
    texts = [t.text for t in loaded.session.transcript]
    assert len(texts) == TRANSCRIPT_WINDOW
    assert texts[0] == "line 15"
    assert texts[-1] == f"line {TRANSCRIPT_WINDOW + 14}"


async def test_transcript_within_the_window_is_kept_whole(store: SessionStore) -> None:
    session = make_session()
    session.transcript = [Turn(role="user", text=f"line {i}") for i in range(TRANSCRIPT_WINDOW)]
    await save(store, session, None)
    loaded = await store.load(KEY)
    assert loaded is not None
    assert len(loaded.session.transcript) == TRANSCRIPT_WINDOW
    assert loaded.session.transcript[0].text == "line 0"

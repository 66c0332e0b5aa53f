"""No driver error escapes a store: a broken or closed database surfaces as
``StoreError`` (the driver's exception chained, no stored values in the message)
from the session store, the tools' stores and the outbox alike."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from engine.db.database import Database
from engine.db.fast import Tx
from engine.errors import StoreError
from engine.outbox import Outbox
from engine.session import ConversationSession, SessionKey, SessionStore, Turn
from engine.tools import ConversationLog, LeadLedger, LocalCalendar
from engine.tools.calltraces import CallTraceStore

NAME = "王伟 +14155550123"
KEY = SessionKey("spa-del-sol", "web", "web:7f3a")
NOW = datetime(2026, 12, 1, 10, tzinfo=UTC)
MESSAGE = re.compile(
    r"database (read|write) failed \(sqlite\): ([A-Za-z]+|the database was closed)"
)


def session() -> ConversationSession:
    s = ConversationSession.new(KEY)
    s.transcript = [Turn(role="user", text=f"I am {NAME}")]
    return s


def operations(db: Database) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of every store method that reaches the database."""
    store = SessionStore(db)

    async def save(tx: Tx) -> int:
        return await store.save_in(tx, session(), None, 0)

    return {
        "session load": lambda: store.load(KEY),
        "session processed": lambda: store.processed(KEY, "SM-1"),
        "session events": lambda: store.events_after(KEY, 0),
        "session save (turn commit)": lambda: db.fast.transaction(save),
        "session purge": store.purge_expired,
        "calendar busy": lambda: LocalCalendar(db).busy("spa-del-sol", NOW, NOW),
        "leads": lambda: LeadLedger(db).list_leads("spa-del-sol"),
        "conversations": lambda: ConversationLog(db).list("spa-del-sol"),
        "call trace save": lambda: CallTraceStore(db).save("CA1", "spa-del-sol", {"n": NAME}),
        "call trace get": lambda: CallTraceStore(db).get("CA1"),
        "outbox list": lambda: Outbox(db).list(),
    }


async def assert_store_errors(db: Database) -> None:
    for what, call in operations(db).items():
        with pytest.raises(StoreError) as caught:
            await asyncio.wait_for(call(), 10)
        error = caught.value
        assert MESSAGE.fullmatch(str(error)), (what, str(error))
        assert NAME not in str(error)
        cause = error.__cause__
        if "closed" not in str(error):
            driver = cause.orig if isinstance(cause, DBAPIError) else cause
            assert isinstance(driver, sqlite3.Error), (what, repr(cause))


async def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite"
    path.write_bytes(b"this is not a database\n" * 512)
    db = Database.open(f"sqlite:///{path}")
    try:
        await assert_store_errors(db)
    finally:
        await db.close()


async def test_a_database_without_the_schema_raises_store_error(tmp_path: Path) -> None:
    db = Database.embedded(tmp_path)
    try:
        await assert_store_errors(db)
    finally:
        await db.close()


async def test_a_closed_database_raises_store_error_and_does_not_reopen(tmp_path: Path) -> None:
    db = Database.embedded(tmp_path)
    await db.upgrade()
    assert await SessionStore(db).load(KEY) is None  # worker threads started
    await db.close()
    await assert_store_errors(db)
    assert await db.ping() is False
    fast = db.fast
    assert getattr(fast, "_writer", None) is None and getattr(fast, "_reader", None) is None


async def test_a_commit_that_loses_its_transaction_fails_and_the_writer_carries_on(
    tmp_path: Path,
) -> None:
    """A statement can make SQLite roll the whole transaction back (disk full,
    I/O error), taking the group commit's savepoint with it: the turn must fail
    with StoreError, not hang on a dead writer thread."""
    db = Database.embedded(tmp_path)
    await db.upgrade()
    store = SessionStore(db)

    async def loses_it(tx: Tx) -> None:
        await store.save_in(tx, session(), None, 0)
        await tx.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL

    async def save(tx: Tx) -> int:
        return await store.save_in(tx, session(), None, 0)

    try:
        with pytest.raises(StoreError, match=r"database write failed \(sqlite\)"):
            await asyncio.wait_for(db.fast.transaction(loses_it), 10)
        store.forget(KEY)
        assert await store.load(KEY) is None
        assert await asyncio.wait_for(db.fast.transaction(save), 10) == 1
    finally:
        await db.close()

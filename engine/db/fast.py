"""The turn's hot path to the database: plain SQL straight to the driver.

Every turn loads a session, reads the calendar and commits one transaction.
Through SQLAlchemy's async layer each statement cost ~0.5 ms of CPU here
(compilation lookups, greenlet hops, result wrapping) — more than the whole
turn's own work — so the few statements a turn runs go straight to the
driver, and SQLAlchemy keeps everything else (migrations, the admin API, the
outbox worker, the CLI).

A transaction body is one ``async def body(tx: Tx) -> T`` written once for
both engines; SQL uses PostgreSQL's ``$1, $2`` parameters (SQLite gets ``?1,
?2``, which it reads the same way) and only syntax both engines share
(``ON CONFLICT``, ``RETURNING``).

- :class:`SqliteFast`: one writer thread with its own SQLite connection runs
  each write body whole (the body's awaits on the SQLite Tx never suspend, so
  the thread drives it straight through): one thread hop per commit, writers
  serial as SQLite wants them, and the bodies waiting together share one
  ``BEGIN IMMEDIATE``/``COMMIT`` (group commit), each in its own savepoint.
  Reads run on a second thread and connection (WAL: they never wait for the
  writer). Never blocks the caller's event loop.
- :class:`PgFast`: an ``asyncpg`` pool; bodies run in a transaction on one
  pooled connection; row locks (``FOR UPDATE``) are the callers' to take.

Errors surface as :class:`~engine.errors.StoreError` (``disconnect`` set when
the connection was lost, so a read may be retried once); GatewayErrors a body
raises (a conflict, a taken slot) pass through after the rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import GatewayError, StoreError

__all__ = ["FastDB", "PgFast", "SqliteFast", "Tx"]

T = TypeVar("T")
Row = tuple[Any, ...]


class Tx(ABC):
    """One transaction (or one read-only connection) of a body."""

    @abstractmethod
    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    @abstractmethod
    async def fetchone(self, sql: str, *args: object) -> Row | None: ...

    @abstractmethod
    async def fetchall(self, sql: str, *args: object) -> list[Row]: ...


class FastDB(ABC):
    dialect: str

    @abstractmethod
    async def transaction(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``body`` in one write transaction: committed if it returns, rolled
        back if it raises (its exception then propagates)."""

    @abstractmethod
    async def query(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run a read-only ``body``; a dropped connection is retried once."""

    @abstractmethod
    async def close(self) -> None: ...


def _store_error(what: str, dialect: str, exc: BaseException, disconnect: bool) -> StoreError:
    # The type name only: a driver's message can quote the statement's values.
    return StoreError(
        f"database {what} failed ({dialect}): {type(exc).__name__}", disconnect=disconnect
    )


def _closed_error(what: str, dialect: str) -> StoreError:
    return StoreError(f"database {what} failed ({dialect}): the database was closed")


# --- SQLite ---------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # (sqlite3 binds bool as the integer it is: no conversion needed.)
    async def execute(self, sql: str, *args: object) -> int:
        return self.conn.execute(_sqlite_sql(sql), args).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.conn.executemany(_sqlite_sql(sql), rows)

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        row: Row | None = self.conn.execute(_sqlite_sql(sql), args).fetchone()
        return row

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        return self.conn.execute(_sqlite_sql(sql), args).fetchall()


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its awaits are on :class:`_SqliteTx`)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite transaction body awaited something other than its Tx")


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.cancelled():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)


class _Worker:
    """A daemon thread holding one SQLite connection and running jobs in order.

    A job is driven to completion in the thread; results go back to the
    callers' loops with one ``call_soon_threadsafe`` per batch. With
    ``group_commit``, the jobs waiting when the thread gets to them (up to
    ``MAX_GROUP``) share one transaction, each inside its own savepoint: a job
    that raises is rolled back alone, the others commit together — one
    ``BEGIN IMMEDIATE``/``COMMIT`` for many turns under load.
    """

    MAX_GROUP = 64

    def __init__(self, path: Path, name: str, *, group_commit: bool = False) -> None:
        self.path = path
        self.group_commit = group_commit
        self.conn: sqlite3.Connection | None = None
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self.jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.MAX_GROUP:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            if self.group_commit:
                self._transaction(batch)
            else:
                for job in batch:
                    self._one(job)
            loops: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
            for job in batch:
                loops.setdefault(job.loop, []).append(job)
            for loop, jobs in loops.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, jobs)
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _one(self, job: _Job) -> None:
        try:
            job.result = job.fn(self.connection())
        except BaseException as exc:  # handed to the caller, whatever it is
            job.error = exc

    def _transaction(self, batch: list[_Job]) -> None:
        try:
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in batch:
                job.error = exc
            return
        lost: BaseException | None = None
        for job in batch:
            if lost is not None:
                job.error = lost
                continue
            try:
                conn.execute("SAVEPOINT job")
            except BaseException as exc:
                job.error = exc
                continue
            try:
                job.result = job.fn(conn)
            except BaseException as exc:
                job.error = exc
            try:
                if job.error is not None:
                    conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            except sqlite3.Error as exc:
                # Some errors (disk full, I/O) make SQLite roll the whole
                # transaction back itself: the savepoint is gone, and so is
                # every earlier job's work in this batch.
                lost = exc
        try:
            if lost is not None or not conn.in_transaction:
                raise lost or sqlite3.OperationalError("the transaction was rolled back")
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            for job in batch:
                if job.error is None:
                    job.error, job.result = exc, None

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self.conn = conn
        return self.conn

    async def submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.jobs.put(_Job(fn, loop, future))
        return await future

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(5)


class SqliteFast(FastDB):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: _Worker | None = None
        self._reader: _Worker | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _threads(self, what: str) -> tuple[_Worker, _Worker]:
        with self._lock:
            if self._closed:
                raise _closed_error(what, self.dialect)
            if self._writer is None or self._reader is None:
                self._writer = _Worker(self.path, "gateway-sqlite-writer", group_commit=True)
                self._reader = _Worker(self.path, "gateway-sqlite-reader")
            return self._writer, self._reader

    async def transaction(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        writer, _ = self._threads("write")

        def run(conn: sqlite3.Connection) -> T:
            return _drive(body(_SqliteTx(conn)))  # inside the group's transaction

        return await self._mapped("write", writer.submit(run))

    async def query(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        _, reader = self._threads("read")

        def run(conn: sqlite3.Connection) -> T:
            if conn.in_transaction:  # a failed ROLLBACK left one open: do not inherit it
                conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            try:
                return _drive(body(_SqliteTx(conn)))
            finally:
                conn.execute("ROLLBACK")

        return await self._mapped("read", reader.submit(run))

    async def _mapped(self, what: str, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except (GatewayError, asyncio.CancelledError):
            raise
        except (sqlite3.Error, OSError) as exc:
            raise _store_error(what, self.dialect, exc, disconnect=False) from exc

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            threads, self._writer, self._reader = (self._writer, self._reader), None, None
        for thread in threads:
            if thread is not None:
                await asyncio.to_thread(thread.stop)


# --- PostgreSQL -------------------------------------------------------------------------


class _PgTx(Tx):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        status: str = await self.conn.execute(sql, *args)
        # "UPDATE 1", "INSERT 0 1", "DELETE 3", "SELECT 1": the count is the last word.
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        record = await self.conn.fetchrow(sql, *args)
        return None if record is None else tuple(record)

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        return [tuple(r) for r in await self.conn.fetch(sql, *args)]


class PgFast(FastDB):
    """``dsn``: a ``postgresql://`` URL asyncpg accepts (``ssl=...`` in the query)."""

    dialect = "postgresql"

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 20) -> None:
        self.dsn = dsn
        self.min_size, self.max_size = min_size, max_size
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _pool_(self) -> Any:
        if self._closed:
            raise _closed_error("connect", self.dialect)
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=self.min_size,
                        max_size=self.max_size,
                        statement_cache_size=512,
                    )
        return self._pool

    async def transaction(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        async def run() -> T:
            pool = await self._pool_()
            async with pool.acquire() as conn, conn.transaction():
                return await body(_PgTx(conn))

        return await self._mapped("write", run())

    async def query(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        async def run() -> T:
            pool = await self._pool_()
            async with pool.acquire() as conn:
                return await body(_PgTx(conn))

        try:
            return await self._mapped("read", run())
        except StoreError as exc:
            if not exc.disconnect:
                raise
            return await self._mapped("read", run())

    async def _mapped(self, what: str, pending: Awaitable[T]) -> T:
        import asyncpg

        try:
            return await pending
        except (GatewayError, asyncio.CancelledError):
            raise
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            ConnectionError,
            OSError,
        ) as exc:
            raise _store_error(what, self.dialect, exc, disconnect=True) from exc
        except (asyncpg.PostgresError, asyncpg.InternalClientError) as exc:
            raise _store_error(what, self.dialect, exc, disconnect=False) from exc

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

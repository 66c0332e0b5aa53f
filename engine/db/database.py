"""One database handle for the gateway's durable data: embedded SQLite or PostgreSQL.

``Database.open(url)`` takes the usual URL forms and picks the async driver::

    postgresql://user:pass@host/db     -> postgresql+asyncpg (also postgres://,
                                          postgresql+psycopg://; sslmode=... is
                                          passed to asyncpg as ssl=...)
    sqlite:///data/gateway.sqlite      -> sqlite+aiosqlite (WAL, busy timeout 5 s)

Transactions: :meth:`Database.write` opens one write transaction (SQLite:
``BEGIN IMMEDIATE``, so two writers never deadlock on a lock upgrade;
PostgreSQL: READ COMMITTED, row locks taken explicitly by the callers);
:meth:`Database.read` a read-only connection. Driver errors surface as
:class:`~engine.errors.StoreError` naming what failed; a connection the
server dropped (a PostgreSQL restart) is replaced and the block retried once
by the callers that are idempotent (``retry_once``).

Schema: Alembic migrations in ``engine/db/migrations`` (:meth:`upgrade`),
applied under a PostgreSQL advisory lock so replicas starting together do not
race.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from engine.db.fast import FastDB, PgFast, SqliteFast
from engine.errors import StoreError

__all__ = ["Database", "normalize_url"]

log = logging.getLogger("engine.db")

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_ADVISORY_LOCK_ID = 0x6A7E_3A7E  # any constant shared by every replica


def normalize_url(url: str) -> str:
    """The SQLAlchemy async URL for a user-facing database URL.

    Raises ValueError naming the accepted forms for anything else.
    """
    raw = url.strip()
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):
        query = dict(parse_qsl(parts.query))
        sslmode = query.pop("sslmode", None)
        if sslmode is not None:
            query["ssl"] = sslmode
        return urlunsplit(
            ("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment)
        )
    if scheme == "sqlite" or scheme.startswith("sqlite+"):
        return "sqlite+aiosqlite" + raw[len(parts.scheme) :]
    raise ValueError(
        f"unsupported database URL scheme {parts.scheme!r}: use postgresql://user:pass@host/db "
        "or sqlite:///path/to/file.sqlite"
    )


def asyncpg_dsn(url: str) -> str:
    """The URL asyncpg itself takes: scheme ``postgresql``, ``sslmode`` kept as is."""
    parts = urlsplit(url.strip())
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


class Database:
    """An async SQLAlchemy engine plus the dialect facts the stores need."""

    def __init__(self, engine: AsyncEngine, url: str, fast: FastDB) -> None:
        self.engine = engine
        self.url = url
        self.fast = fast
        """The turn's hot path: plain SQL to the driver (:mod:`engine.db.fast`)."""
        self.dialect = engine.dialect.name
        """``sqlite`` or ``postgresql``."""
        self._sqlite_writer = asyncio.Lock() if self.is_sqlite else None
        self._closed = False
        self._errors: tuple[type[BaseException], ...] = (
            SQLAlchemyError,
            OSError,
            *_driver_errors(self.dialect),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def backend(self) -> str:
        return self.dialect

    @classmethod
    def open(cls, url: str, *, pool_size: int = 10) -> Database:
        """Create the engine (no connection is made yet). Raises ValueError for a bad URL.

        ``pool_size``: PostgreSQL connections for turns (asyncpg); SQLAlchemy's
        pool for everything else holds at most 4 more. Mind the server's
        ``max_connections`` when running many replicas."""
        sa_url = normalize_url(url)
        fast: FastDB
        if sa_url.startswith("sqlite"):
            path = sa.engine.make_url(sa_url).database
            if not path or path == ":memory:":
                raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(sa_url, connect_args={"timeout": 5.0})
            _configure_sqlite(engine)
            fast = SqliteFast(Path(path))
        else:
            engine = create_async_engine(
                sa_url, pool_pre_ping=True, pool_size=2, max_overflow=2, pool_recycle=1800
            )
            fast = PgFast(asyncpg_dsn(url), min_size=1, max_size=pool_size)
        return cls(engine, url, fast)

    @classmethod
    def embedded(cls, data_dir: Path) -> Database:
        """The embedded default: ``<data_dir>/gateway.sqlite``."""
        return cls.open(f"sqlite:///{(data_dir / 'gateway.sqlite').resolve()}")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        if self._sqlite_writer is not None:
            # One writer at a time in this process: SQLite has one write lock
            # anyway, and waiting here is cheaper than its busy loop.
            async with self._sqlite_writer, self._mapped("write"), self.engine.connect() as conn:
                await conn.execution_options(gateway_write=True)
                async with conn.begin():
                    yield conn
            return
        async with self._mapped("write"), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (its transaction is rolled back at the end)."""
        async with self._mapped("read"), self.engine.connect() as conn:
            yield conn

    async def retry_once(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn``; if it failed on a connection the server dropped, run it once more.

        For idempotent blocks only (a read, or a write whose transaction was
        rolled back). Raises StoreError.
        """
        try:
            return await fn()
        except StoreError as exc:
            if not exc.disconnect:
                raise
            log.warning("database connection was dropped; retrying %s once", what)
            return await fn()

    @asynccontextmanager
    async def _mapped(self, what: str) -> AsyncIterator[None]:
        """Driver errors inside the block -> StoreError naming ``what`` and the
        driver's error type (never its message: it can quote the row's values)."""
        if self._closed:
            raise StoreError(f"database {what} failed ({self.dialect}): the database was closed")
        try:
            yield
        except StoreError:
            raise
        except self._errors as exc:
            reason = type(exc.orig).__name__ if isinstance(exc, DBAPIError) else type(exc).__name__
            disconnect = bool(isinstance(exc, DBAPIError) and exc.connection_invalidated)
            error = StoreError(
                f"database {what} failed ({self.dialect}): {reason}",
                disconnect=disconnect or isinstance(exc, OSError | ConnectionError),
            )
            raise error from exc

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except StoreError:
            return False
        return True

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to ``revision`` (PostgreSQL: under an advisory lock)."""
        from alembic import command

        def run(sync_conn: sa.Connection) -> None:
            config = _alembic_config(sync_conn)
            command.upgrade(config, revision)

        async with self._mapped("migration"), self.engine.connect() as conn:
            if not self.is_sqlite:
                await conn.execute(sa.text(f"SELECT pg_advisory_lock({_ADVISORY_LOCK_ID})"))
            try:
                await conn.run_sync(run)
                await conn.commit()
            finally:
                if not self.is_sqlite:
                    await conn.execute(sa.text(f"SELECT pg_advisory_unlock({_ADVISORY_LOCK_ID})"))
                    await conn.commit()

    async def current_revision(self) -> str | None:
        """The applied migration revision, or None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        def read(sync_conn: sa.Connection) -> str | None:
            return MigrationContext.configure(sync_conn).get_current_revision()

        async with self.read() as conn:
            return await conn.run_sync(read)

    @staticmethod
    def head_revision() -> str:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
        assert head is not None
        return head

    async def close(self) -> None:
        """Release every connection and thread. Using the database afterwards
        raises StoreError (it never reopens behind the caller's back)."""
        self._closed = True
        await self.fast.close()
        await self.engine.dispose()


def _driver_errors(dialect: str) -> tuple[type[BaseException], ...]:
    """The raw driver exceptions that can surface past SQLAlchemy's own wrapping
    (a connection the driver gave up on, an error raised while the pool
    recycles one)."""
    if dialect == "sqlite":
        import sqlite3

        return (sqlite3.Error,)
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def _alembic_config(connection: sa.Connection | None) -> Config:

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, foreign keys; transactions begun by us (BEGIN IMMEDIATE)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: object, _record: object) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN, not the driver (pysqlite recipe).
        dbapi_conn.isolation_level = None  # type: ignore[attr-defined]
        cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers take the write lock up front (no deadlock on a lock upgrade);
        # readers get a deferred transaction, a consistent snapshot under WAL.
        write = conn.get_execution_options().get("gateway_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

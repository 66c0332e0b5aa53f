"""Shared fixtures: a real Redis, temporary client/data folders, and the real
gateway served by uvicorn on a free loopback port.

Redis
    ``redis_url`` gives a URL on a database of its own. The server is
    ``GATEWAY_TEST_REDIS_URL`` or ``REDIS_URL`` (host and port only) or
    ``127.0.0.1:6379``; the database is the first of 15, 14, ... 8 that no other
    test run holds at the moment (a claim key, so two suites running at once on
    one machine do not flush each other's data). That database is **flushed**
    before and after the test. Database 0, the gateway's default, is never
    used. A Redis that does not answer is a test *failure*, not a skip:
    ``scripts/test`` (via ``scripts/setup``) starts one.

PostgreSQL
    ``postgres_url`` gives an empty throwaway database (created for the test,
    dropped after it) on ``GATEWAY_TEST_POSTGRES_URL`` (default
    ``postgresql://postgres@127.0.0.1:5432``); ``migrated_postgres_url`` one at
    the schema's head; ``database_url`` runs a test once on SQLite and once on
    PostgreSQL, its database at head.

Templates (set-up costs paid once per session)
    Migrations run once per session, into a SQLite file and (when a test needs
    PostgreSQL) a ``gw_template_<hex>`` database; a test's database is a copy
    (``CREATE DATABASE ... TEMPLATE``). Each client's knowledge folder is
    ingested once per session and embedder too. The gateways the fixtures open
    (``gw``/``open_gw``, ``running_gateway``) start on a data folder seeded with
    both (:func:`seed_data_dir`: only what is not there yet), so they neither
    migrate nor re-ingest; they behave as on a data folder a previous run left.
    A test of the migrations or of ingestion itself is marked
    ``@pytest.mark.unseeded``: its ``database_url``/``db`` start empty and its
    gateways' data folders are not seeded.

Gateway
    ``running_gateway(**settings)`` is a context manager factory: each ``with``
    builds ``gateway.app.create_app(Settings(...))``, serves it with uvicorn in a
    background thread and yields a :class:`RunningGateway` (``.url``,
    ``.ws_url``); leaving the block shuts it down (lifespan closed, port freed).
    Two in a row over the same Redis and data folder is a gateway restart.
    ``open_gw(**options)`` opens ``gateway.app.open_gateway`` in the test (no
    server); ``gw`` is one on the defaults, ``gw_options`` (a module overrides
    it) saying what differs: clock, database URL, clients folder, worker...

Vendor stubs
    ``serve_stub(stub)`` starts a :class:`stub_server.StubServer` and stops it
    after the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    closing,
    contextmanager,
)
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from stub_server import StubServer

if TYPE_CHECKING:
    from gateway.app import Gateway

REPO = Path(__file__).resolve().parents[1]
CLIENTS = REPO / "clients"

# Gateways in tests search knowledge sparse-only unless a test asks for the
# embedder (retrieval-quality tests do): loading MiniLM costs seconds of CPU
# per process and most tests are not about retrieval.
os.environ.setdefault("GATEWAY_EMBEDDER", "none")
# Likewise speech models load on a client's first call, not at every app start.
os.environ.setdefault("GATEWAY_SPEECH_WARM_UP", "false")

_TEST_DBS = range(15, 7, -1)
_CLAIM_KEY = "gateway-tests:claim"
_CLAIM_TTL_S = 900


def _redis_server_url() -> str:
    """``redis://[auth@]host:port`` of the Redis the tests use, without a db number."""
    raw = (
        os.environ.get("GATEWAY_TEST_REDIS_URL")
        or os.environ.get("REDIS_URL")
        or "redis://127.0.0.1:6379"
    )
    parts = urlsplit(raw)
    return urlunsplit((parts.scheme or "redis", parts.netloc or "127.0.0.1:6379", "", "", ""))


# Atomic: take the database only if no other run holds it, emptying it first.
_CLAIM = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('flushdb')
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# Atomic: empty the database only while it is still ours.
_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('flushdb')
return 1
"""


def _claim_db(server: str, token: str) -> tuple[int, Any]:
    """Take the first free test database (flushed, marked ours); return it and a client."""
    import redis
    from redis.exceptions import RedisError

    for db in _TEST_DBS:
        client = redis.Redis.from_url(f"{server}/{db}", socket_connect_timeout=3)
        try:
            if client.eval(_CLAIM, 1, _CLAIM_KEY, token, _CLAIM_TTL_S):
                return db, client
        except (RedisError, OSError) as exc:
            client.close()
            pytest.fail(
                f"Redis is not reachable at {server} ({type(exc).__name__}: {exc}). "
                "These tests need a real Redis: run scripts/test (it starts one via "
                "scripts/setup), or point GATEWAY_TEST_REDIS_URL at a server.",
                pytrace=False,
            )
        client.close()
    pytest.fail(
        f"every test database ({_TEST_DBS[-1]}..{_TEST_DBS[0]}) on {server} is claimed by "
        f"another test run; wait {_CLAIM_TTL_S} s, or delete the {_CLAIM_KEY!r} keys",
        pytrace=False,
    )


@pytest.fixture
def redis_url() -> Iterator[str]:
    """``redis://host:port/<db>`` on an empty database owned by this test."""
    server = _redis_server_url()
    token = uuid.uuid4().hex
    db, client = _claim_db(server, token)
    try:
        yield f"{server}/{db}"
    finally:
        try:
            client.eval(_RELEASE, 1, _CLAIM_KEY, token)
        finally:
            client.close()


def _postgres_server_url() -> str:
    """``postgresql://user@host:port`` of the PostgreSQL the tests use (no database)."""
    raw = os.environ.get("GATEWAY_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432"
    parts = urlsplit(raw)
    return urlunsplit((parts.scheme or "postgresql", parts.netloc, "", "", ""))


def _pg_admin(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(f"{_postgres_server_url()}/postgres", timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _pg_create(name: str, template: str | None = None) -> str:
    """``CREATE DATABASE name [TEMPLATE template]``; its URL. A server that does not
    answer fails the test (see :func:`postgres_url`)."""
    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    try:
        _pg_admin(sql)
    except OSError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {_postgres_server_url()} ({exc}). These tests "
            "need a real PostgreSQL: run scripts/test (it starts one via scripts/setup), or "
            "point GATEWAY_TEST_POSTGRES_URL at a server.",
            pytrace=False,
        )
    return f"{_postgres_server_url()}/{name}"


def _pg_drop(name: str) -> None:
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _pg_database(template: str | None = None) -> Iterator[str]:
    """A throwaway ``gw_test_<hex>`` database (a copy of ``template`` if given): its URL."""
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    url = _pg_create(name, template)
    try:
        yield url
    finally:
        _pg_drop(name)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """``postgresql://.../<db>``: an empty throwaway database of its own, dropped afterwards.

    The server is ``GATEWAY_TEST_POSTGRES_URL`` (default
    ``postgresql://postgres@127.0.0.1:5432``). A server that does not answer is a
    test *failure*, not a skip: ``scripts/test`` (via ``scripts/setup``) starts one.
    """
    with _pg_database() as url:
        yield url


@pytest.fixture
def migrated_postgres_url(templates: Templates) -> Iterator[str]:
    """Like ``postgres_url``, but migrated to head: a copy of the session's template."""
    with _pg_database(templates.postgres()) as url:
        yield url


# -- templates: migrations and knowledge ingestion once per session ---------------------

T = TypeVar("T")

EMBEDDED_DB = "gateway.sqlite"
"""The embedded database's file in a data folder (``engine.db.Database.embedded``)."""


def _run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on an event loop of its own, in a thread of its
    own (so never inside, nor disturbing, the test's loop)."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _migrated(url: str) -> None:
    from engine.db.database import Database

    database = Database.open(url)
    try:
        await database.upgrade()
    finally:
        await database.close()


async def _ingested(data_dir: Path, embedder_setting: str) -> None:
    """Each repository client's knowledge folder in ``data_dir``'s index, as the
    gateway's start-up ingest leaves it (same index, chunking and embedder)."""
    from engine.config import load_clients
    from providers.knowledge import KnowledgeIndex
    from providers.knowledge.embedders import load_embedder

    index = KnowledgeIndex.open(data_dir=data_dir, embedder_ready=False)
    try:
        index.use_embedder(await load_embedder(embedder_setting))
        for client in load_clients(CLIENTS).clients.values():
            folder = client.folder / client.support.knowledge_dir if client.folder else None
            view = index.for_client(client.client_id, folder)
            if view is not None:
                await view.ingest()
    finally:
        index.close()


class Templates:
    """This session's templates, each built the first time a test needs it."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._sqlite: Path | None = None
        self._postgres: str | None = None
        self._knowledge: dict[str, Path] = {}

    def sqlite(self) -> Path:
        """A SQLite file at the schema's head (its write-ahead log folded in)."""
        with self._lock:
            if self._sqlite is None:
                path = self._root / "sqlite" / EMBEDDED_DB
                path.parent.mkdir()
                _run_async(lambda: _migrated(f"sqlite:///{path}"))
                with closing(sqlite3.connect(path)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._sqlite = path
            return self._sqlite

    def postgres(self) -> str:
        """The name of a PostgreSQL database at the schema's head, to copy."""
        with self._lock:
            if self._postgres is None:
                name = f"gw_template_{uuid.uuid4().hex[:16]}"
                url = _pg_create(name)
                try:
                    _run_async(lambda: _migrated(url))
                except BaseException:
                    _pg_drop(name)
                    raise
                self._postgres = name
            return self._postgres

    def knowledge(self, embedder_setting: str) -> Path:
        """A ``qdrant`` folder (local mode) with every repository client's knowledge
        ingested with ``embedder_setting`` (``GATEWAY_EMBEDDER``)."""
        with self._lock:
            folder = self._knowledge.get(embedder_setting)
            if folder is None:
                data = self._root / f"knowledge-{len(self._knowledge)}"
                _run_async(lambda: _ingested(data, embedder_setting))
                folder = self._knowledge[embedder_setting] = data / "qdrant"
            return folder

    def close(self) -> None:
        if self._postgres is not None:
            _pg_drop(self._postgres)
            self._postgres = None


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    built = Templates(tmp_path_factory.mktemp("templates"))
    try:
        yield built
    finally:
        built.close()


def seed_data_dir(
    templates: Templates,
    data_dir: Path,
    *,
    database: bool = True,
    embedder: str | None = None,
) -> None:
    """Give a gateway's data folder what a previous run would have left: the
    embedded database at the schema's head (``database``) and the repository
    clients' knowledge ingested with ``embedder`` (default: ``GATEWAY_EMBEDDER``,
    else ``auto``). Only what the folder does not have yet: a second gateway on
    the same folder (a restart) finds it as the first one left it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if database and not (data_dir / EMBEDDED_DB).exists():
        shutil.copyfile(templates.sqlite(), data_dir / EMBEDDED_DB)
    if not (data_dir / "qdrant").exists():
        setting = embedder or os.environ.get("GATEWAY_EMBEDDER") or "auto"
        shutil.copytree(templates.knowledge(setting), data_dir / "qdrant")


def _seeded(request: pytest.FixtureRequest) -> bool:
    """False for a test marked ``unseeded`` (it tests migrations or ingestion)."""
    return request.node.get_closest_marker("unseeded") is None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "unseeded: the test exercises the migrations or the knowledge ingestion itself: "
        "database_url/db start empty, and the data folders of the gateways the fixtures "
        "open are not seeded from this session's templates",
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, templates: Templates) -> str:
    """Each test using it runs twice: on an embedded SQLite file and on a real PostgreSQL.

    The database is at the schema's head (a copy of the session's template),
    or empty for a test marked ``unseeded``."""
    if request.param == "sqlite":
        path = tmp_path / EMBEDDED_DB
        if _seeded(request):
            shutil.copyfile(templates.sqlite(), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue(
        "migrated_postgres_url" if _seeded(request) else "postgres_url"
    )
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Any]:
    """An :class:`engine.db.Database` on ``database_url``, migrated to head (with a
    copy of the template there is nothing left to apply)."""
    from engine.db.database import Database

    database = Database.open(database_url)
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def clients_dir(tmp_path: Path) -> Path:
    """A temporary copy of the repository's ``clients/`` folder."""
    target = tmp_path / "clients"
    shutil.copytree(CLIENTS, target)
    return target


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty folder for the embedded stores (SQLite calendar, CRM, log)."""
    target = tmp_path / "data"
    target.mkdir()
    return target


@dataclass(frozen=True)
class RunningGateway:
    """A gateway served on loopback. ``url`` is ``http://127.0.0.1:<port>``."""

    url: str
    app: Any

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


class _ServerThread:
    """uvicorn serving ``app`` in a daemon thread, on a socket bound up front
    (port 0, so no free-port race)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            ws_max_size=1 << 20,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self, timeout_s: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the gateway stopped during start-up; see the log above")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start within {timeout_s} s")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"the gateway did not stop within {timeout_s + 5} s")


GatewayFactory = Callable[..., AbstractContextManager[RunningGateway]]


@pytest.fixture
def running_gateway(
    clients_dir: Path, data_dir: Path, templates: Templates, request: pytest.FixtureRequest
) -> Iterator[GatewayFactory]:
    """Factory: ``with running_gateway(REDIS_URL=url) as gw: ...``.

    Keyword arguments are settings by their env-var names (``REDIS_URL``,
    ``GATEWAY_ADMIN_TOKEN``, ``GATEWAY_WEB_RATE_PER_S``...) and override the
    defaults: this test's ``clients_dir`` / ``data_dir``, memory sessions
    (``REDIS_URL=None``), admin token ``"test-admin-token"``. ``clock=`` pins the
    engine's notion of now. No ``.env`` file is read. The data folder is seeded
    (:func:`seed_data_dir`) unless the test is marked ``unseeded``.
    """
    from gateway.app import create_app
    from gateway.settings import Settings

    live: list[_ServerThread] = []
    seeded = _seeded(request)

    @contextmanager
    def start(
        *, clock: Callable[[], datetime] | None = None, **overrides: Any
    ) -> Iterator[RunningGateway]:
        values: dict[str, Any] = {
            "GATEWAY_CLIENTS_DIR": clients_dir,
            "GATEWAY_DATA_DIR": data_dir,
            "REDIS_URL": None,
            "GATEWAY_ADMIN_TOKEN": "test-admin-token",
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        if seeded:
            seed_data_dir(
                templates,
                settings.data_dir,
                database=settings.database_url is None,
                embedder=settings.embedder,
            )
        app = create_app(settings, clock=clock)
        server = _ServerThread(app)
        live.append(server)
        server.start()
        try:
            yield RunningGateway(f"http://127.0.0.1:{server.port}", app)
        finally:
            live.remove(server)
            server.stop()

    try:
        yield start
    finally:
        for server in live:
            server.stop()


@pytest.fixture
def gateway_url(running_gateway: GatewayFactory) -> Iterator[str]:
    """Base URL of a gateway on the embedded defaults (memory sessions)."""
    with running_gateway() as gw:
        yield gw.url


# -- the gateway in the test (no server) -----------------------------------------------

GwFactory = Callable[..., AbstractAsyncContextManager["Gateway"]]


@pytest.fixture
def open_gw(tmp_path: Path, templates: Templates, request: pytest.FixtureRequest) -> GwFactory:
    """Factory: ``async with open_gw(clock=..., database_url=..., ...) as gw:`` opens
    ``gateway.app.open_gateway`` and closes it at the end of the block.

    ``clock``: the engine's notion of now (default: the real time).
    ``database_url``: ``DATABASE_URL`` (default: the embedded SQLite file).
    ``clients_dir``: default the repository's ``clients/``.
    ``data_dir``: default this test's ``tmp_path``.
    ``worker``, ``http``: as for ``open_gateway``.
    ``knowledge_ready``: wait (up to ``knowledge_timeout_s``) until every client's
    knowledge is searchable (ingested in the background at start-up).
    Other keyword arguments are settings by their env-var names. Defaults:
    memory sessions (``REDIS_URL=None``), no ``.env`` file. The data folder is
    seeded (:func:`seed_data_dir`) unless the test is marked ``unseeded``.
    """
    from gateway.app import open_gateway
    from gateway.settings import Settings

    @asynccontextmanager
    async def start(
        *,
        clock: Callable[[], datetime] | None = None,
        database_url: str | None = None,
        clients_dir: Path | None = None,
        data_dir: Path | None = None,
        worker: bool = False,
        http: Any = None,
        knowledge_ready: bool = False,
        knowledge_timeout_s: float = 60.0,
        **overrides: Any,
    ) -> AsyncIterator[Gateway]:
        values: dict[str, Any] = {
            "GATEWAY_CLIENTS_DIR": clients_dir or CLIENTS,
            "GATEWAY_DATA_DIR": data_dir or tmp_path,
            "DATABASE_URL": database_url,
            "REDIS_URL": None,
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        if _seeded(request):
            seed_data_dir(
                templates,
                settings.data_dir,
                database=settings.database_url is None,
                embedder=settings.embedder,
            )
        async with open_gateway(settings, clock=clock, http=http, worker=worker) as gateway:
            if knowledge_ready:
                await wait_for_knowledge(gateway, knowledge_timeout_s)
            yield gateway

    return start


async def wait_for_knowledge(gateway: Gateway, timeout_s: float = 60.0) -> None:
    """Wait until every client's knowledge (ingested in the background at start-up)
    is searchable, so support answers instead of "not ready yet"."""
    deadline = time.monotonic() + timeout_s
    for client in gateway.registry.clients.values():
        view = gateway.engine.tools.for_client(client).knowledge
        assert view is not None, f"{client.client_id}: no knowledge"
        while view.status() != "ready":
            assert time.monotonic() < deadline, f"{client.client_id}: knowledge not ready"
            await asyncio.sleep(0.02)


@pytest.fixture
def gw_options() -> dict[str, Any]:
    """What this module's ``gw`` differs by: keyword arguments for ``open_gw``. A
    module (or a conftest.py) overrides this fixture; the default is none."""
    return {}


@pytest.fixture
async def gw(open_gw: GwFactory, gw_options: dict[str, Any]) -> AsyncIterator[Gateway]:
    """A gateway opened in the test (``open_gw(**gw_options)``), closed after it."""
    async with open_gw(**gw_options) as gateway:
        yield gateway


# -- vendor stubs ----------------------------------------------------------------------

S = TypeVar("S", bound=StubServer)


@pytest.fixture
def serve_stub() -> Iterator[Callable[[S], S]]:
    """``serve_stub(SomeStub(...))``: the stub started, stopped after the test."""
    started: list[StubServer] = []

    def serve(stub: S) -> S:
        stub.start()
        started.append(stub)
        return stub

    try:
        yield serve
    finally:
        for stub in reversed(started):
            stub.stop()

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
    ``postgres_url`` gives a throwaway database (created for the test, dropped
    after it) on ``GATEWAY_TEST_POSTGRES_URL`` (default
    ``postgresql://postgres@127.0.0.1:5432``); ``database_url`` runs a test once
    on SQLite and once on PostgreSQL.

Gateway
    ``running_gateway(**settings)`` is a context manager factory: each ``with``
    builds ``gateway.app.create_app(Settings(...))``, serves it with uvicorn in a
    background thread and yields a :class:`RunningGateway` (``.url``,
    ``.ws_url``); leaving the block shuts it down (lifespan closed, port freed).
    Two in a row over the same Redis and data folder is a gateway restart.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """``postgresql://.../<db>``: a throwaway database of its own, dropped afterwards.

    The server is ``GATEWAY_TEST_POSTGRES_URL`` (default
    ``postgresql://postgres@127.0.0.1:5432``). A server that does not answer is a
    test *failure*, not a skip: ``scripts/test`` (via ``scripts/setup``) starts one.
    """
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except OSError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {_postgres_server_url()} ({exc}). These tests "
            "need a real PostgreSQL: run scripts/test (it starts one via scripts/setup), or "
            "point GATEWAY_TEST_POSTGRES_URL at a server.",
            pytrace=False,
        )
    try:
        yield f"{_postgres_server_url()}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs twice: on an embedded SQLite file and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Any]:
    """An :class:`engine.db.Database` on ``database_url``, migrated to head."""
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
def running_gateway(clients_dir: Path, data_dir: Path) -> Iterator[GatewayFactory]:
    """Factory: ``with running_gateway(REDIS_URL=url) as gw: ...``.

    Keyword arguments are settings by their env-var names (``REDIS_URL``,
    ``GATEWAY_ADMIN_TOKEN``, ``GATEWAY_WEB_RATE_PER_S``...) and override the
    defaults: this test's ``clients_dir`` / ``data_dir``, memory sessions
    (``REDIS_URL=None``), admin token ``"test-admin-token"``. ``clock=`` pins the
    engine's notion of now. No ``.env`` file is read.
    """
    from gateway.app import create_app
    from gateway.settings import Settings

    live: list[_ServerThread] = []

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

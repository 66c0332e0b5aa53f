"""What the benches share besides the server process: the local PostgreSQL and
Redis they use (throwaway databases, key cleanup, reachability) and one web
chat turn over a websocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection

__all__ = [
    "OffScript",
    "chat_turn",
    "check_postgres",
    "check_redis",
    "create_postgres",
    "drop_postgres",
    "pg_server",
    "redis_keys_cleanup",
    "throwaway_postgres",
]


class OffScript(Exception):
    """The gateway answered something the bench's script did not expect."""


async def chat_turn(ws: ClientConnection, text: str, timeout_s: float) -> dict[str, Any]:
    """Send one web chat message; its ``complete`` event (OffScript on an ``error``)."""
    await ws.send(json.dumps({"type": "message", "text": text, "id": uuid.uuid4().hex}))
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if event.get("type") == "complete":
            return event
        if event.get("type") == "error":
            raise OffScript(f"error event {event.get('code')}: {event.get('message')}")


def pg_server(url: str) -> str:
    """``postgresql://user@host:port`` of ``url`` (database part dropped)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme or "postgresql", parts.netloc, "", "", ""))


async def _pg_admin(server: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_postgres(server: str) -> str:
    """A new empty database ``gw_bench_<hex>`` on ``server``; its URL."""
    name = f"gw_bench_{uuid.uuid4().hex[:16]}"
    await _pg_admin(server, f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


async def drop_postgres(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    await _pg_admin(pg_server(url), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def throwaway_postgres(server: str) -> AsyncIterator[str]:
    """A fresh database on ``server``, dropped on the way out."""
    url = await create_postgres(server)
    try:
        yield url
    finally:
        await drop_postgres(url)


def check_postgres(server: str, hint: str) -> None:
    """SystemExit naming the server and ``hint`` (what to leave out) if it does not answer."""
    try:
        asyncio.run(_pg_admin(server, "SELECT 1"))
    except Exception as exc:  # asyncpg's errors, OSError, TimeoutError
        raise SystemExit(
            f"PostgreSQL does not answer at {server} ({type(exc).__name__}: {exc}); "
            f"start it (scripts/setup) or {hint}"
        ) from exc


def check_redis(url: str, hint: str) -> None:
    """SystemExit naming the server and ``hint`` if Redis does not answer."""
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise SystemExit(
            f"Redis does not answer at {url} ({exc}); start it (scripts/setup) or {hint}"
        ) from exc
    finally:
        client.close()


def redis_keys_cleanup(url: str) -> None:
    """Delete the ``gw:*`` keys a bench left in its Redis database."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match="gw:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()

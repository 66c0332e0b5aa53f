"""Web chat load benchmark: concurrent lead-capture conversations over the websocket.

Runs the real gateway (``gateway serve``, uvicorn, one worker) in a **separate
process** on loopback, and drives it from this process with ``--conversations``
concurrent websocket clients (default 50), each playing a full booking script
again and again for ``--seconds`` (default 10):

    "Hi, I'd like to book an appointment" -> name -> phone -> email ->
    "Manicure" -> "<date> at <time>" -> "yes"       (7 turns, one booking)

Every booking opens a new websocket (a new visitor, a new session) and asks
for its own time: conversation ``i`` books for client folder ``bench-i`` (a copy
of ``clients/spa-del-sol`` open around the clock, made in a temporary folder),
walking forward through 30-minute slots, so bookings never collide. Each
reply's ``metadata.expecting`` is checked against the script; a conversation
that goes off-script is counted as a failure and restarted.

It runs once per deployment (``--stores embedded,redis,postgresql``):
``embedded`` (the default with no settings: sessions, replay log, leads,
bookings and outbox in SQLite under the data folder, in-process locks),
``redis`` (the same with Redis session locks) and ``postgresql`` (a throwaway
PostgreSQL database via ``DATABASE_URL``, plus Redis locks: the scale-out
setup). Every turn is one atomic commit of the session, its replay events,
the processed mark, the conversation log lines and its effects. Printed per store: turns completed, bookings,
turns/s, p50/p99/max turn latency (message sent -> its ``complete`` event
received, in ms), failures, and the CPU used by the server process and by this
client process (percent of one core).

Why two processes: client and server in one process would share one
interpreter lock and one event loop, and the client's JSON/websocket work would
be charged to the server. The server is one uvicorn worker, so it can use at
most one core; on a 2-core machine the client has the other core. When the
client's CPU column nears 100 %, the client, not the gateway, is the limit.

The gateway's per-connection rate limit is lifted for the bench server
(``GATEWAY_WEB_RATE_PER_S``/``GATEWAY_WEB_RATE_BURST``). Loopback only. The
Redis runs use database 7 of ``--redis-url``'s server by default (the tests use
15..8) and delete the ``gw:*`` keys they leave there; the PostgreSQL run
creates ``gw_bench_<hex>`` on ``--postgres-url`` and drops it afterwards.

    .venv/bin/python -m bench.web_chat --seconds 10
    .venv/bin/python -m bench.web_chat --seconds 5 --conversations 20 --stores embedded
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from bench._server import (
    HOST,
    ServerProcess,
    cpu_seconds,
    free_port,
    gateway_bench_env,
    gateway_serve_cmd,
)
from bench._services import (
    OffScript,
    chat_turn,
    check_redis,
    create_postgres,
    drop_postgres,
    pg_server,
    redis_keys_cleanup,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "clients" / "spa-del-sol"
MAX_SECONDS = 300.0
MAX_CONVERSATIONS = 500
TURN_TIMEOUT_S = 30.0
SLOTS_PER_DAY = 44  # 01:00 .. 22:30 local, every 30 minutes

SERVICE = "Manicure"  # 30 minutes: one slot
SCRIPT_HEAD = (
    ("Hi, I'd like to book an appointment", "name"),
    ("Alex Bench", "phone"),
    ("415 555 0134", "email"),
    ("alex.bench@example.com", "service"),
    (SERVICE, "time"),
)


def booking_script(slot: int, first_day: date) -> list[tuple[str, str | None]]:
    """The 7 (message, expected ``metadata.expecting`` after it) pairs of one booking."""
    day = first_day + timedelta(days=slot // SLOTS_PER_DAY)
    minutes = 60 + 30 * (slot % SLOTS_PER_DAY)
    hour, minute = divmod(minutes, 60)
    clock = f"{(hour - 1) % 12 + 1}:{minute:02d} {'am' if hour < 12 else 'pm'}"
    return [*SCRIPT_HEAD, (f"{day.isoformat()} at {clock}", "confirmation"), ("yes", None)]


# --- client folders and the server process -----------------------------------------------


def make_clients(root: Path, count: int) -> list[str]:
    """``count`` copies of the template client, open 00:00-24:00 every day, no secrets."""
    base = yaml.safe_load((TEMPLATE / "config.yaml").read_text(encoding="utf-8"))
    ids = []
    for i in range(count):
        client_id = f"bench-{i:03d}"
        config = dict(base)
        config.update(
            client_id=client_id,
            name=f"Bench Spa {i}",
            business_hours={
                d: ["00:00", "24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            },
            channels={"web": {"purpose": "auto"}},
            escalation={},
        )
        config["booking"] = {
            **base.get("booking", {}),
            "rules": {
                **base["booking"].get("rules", {}),
                "min_notice_hours": 0,
                "max_days_ahead": 3650,
            },
        }
        folder = root / client_id
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
        )
        if (TEMPLATE / "knowledge").is_dir():
            shutil.copytree(TEMPLATE / "knowledge", folder / "knowledge")
        ids.append(client_id)
    return ids


class Server(ServerProcess):
    """``gateway serve`` in a child process; logs go to ``workdir/server-<store>.log``."""

    poll_s = 0.1

    def __init__(
        self,
        store: str,
        workdir: Path,
        clients_dir: Path,
        redis_url: str | None,
        clients: int,
        database_url: str | None = None,
    ) -> None:
        self.name = f"server-{store}"
        self.clients = clients
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        data = workdir / f"data-{store}"
        data.mkdir()
        env = gateway_bench_env(data)
        if redis_url:
            env["REDIS_URL"] = redis_url
        if database_url:
            env["DATABASE_URL"] = database_url
        cmd = gateway_serve_cmd(port, clients_dir)
        super().__init__(workdir, cmd, env)

    def ready(self) -> bool:
        try:
            ready = httpx.get(f"{self.url}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return ready.status_code == 200 and len(ready.json()["clients"]) == self.clients


# --- the load --------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies_s: list[float] = field(default_factory=list)
    bookings: int = 0
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.failures += 1
        if len(self.failure_samples) < 5:
            self.failure_samples.append(reason)


async def conversation(url: str, first_day: date, deadline: float, stats: Stats) -> None:
    """Book slot after slot for one client until the deadline."""
    slot = 0
    while time.monotonic() < deadline:
        script = booking_script(slot, first_day)
        slot += 1
        try:
            async with connect(url, open_timeout=TURN_TIMEOUT_S, max_queue=None) as ws:
                for text, expecting in script:
                    if time.monotonic() >= deadline:
                        return
                    sent = time.perf_counter()
                    complete = await chat_turn(ws, text, TURN_TIMEOUT_S)
                    stats.latencies_s.append(time.perf_counter() - sent)
                    got = complete.get("metadata", {}).get("expecting")
                    if got != expecting:
                        raise OffScript(
                            f"after {text!r} expected expecting={expecting!r}, got {got!r}: "
                            f"{complete.get('text', '')[:160]!r}"
                        )
                if complete["metadata"].get("state") != "booked":
                    raise OffScript(f"not booked: {complete['metadata']}")
                stats.bookings += 1
        except (OffScript, TimeoutError, OSError, WebSocketException) as exc:
            stats.fail(f"{type(exc).__name__}: {exc}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class Result:
    store: str
    conversations: int
    elapsed_s: float
    turns: int
    bookings: int
    failures: int
    turns_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_pct: float
    client_cpu_pct: float
    failure_samples: list[str]


def run_store(
    store: str,
    workdir: Path,
    clients_dir: Path,
    client_ids: list[str],
    seconds: float,
    redis_url: str | None,
    database_url: str | None = None,
) -> Result:
    server = Server(store, workdir, clients_dir, redis_url, len(client_ids), database_url)
    try:
        server.wait_ready(60.0)
        stats = Stats()
        first_day = date.today() + timedelta(days=2)
        base = f"ws://{HOST}:{server.port}/web/chat"
        cpu_server0, cpu_client0 = cpu_seconds(server.proc.pid), time.process_time()
        started = time.monotonic()

        async def load() -> None:
            deadline = time.monotonic() + seconds
            await asyncio.gather(
                *(conversation(f"{base}/{cid}", first_day, deadline, stats) for cid in client_ids)
            )

        asyncio.run(load())
        elapsed = time.monotonic() - started
        cpu_server = cpu_seconds(server.proc.pid) - cpu_server0
        cpu_client = time.process_time() - cpu_client0
        if stats.failures and not stats.latencies_s:
            print(
                f"[{store}] every conversation failed; server log tail:\n{server.tail()}",
                file=sys.stderr,
            )
    finally:
        server.stop()
    lat = stats.latencies_s
    return Result(
        store=store,
        conversations=len(client_ids),
        elapsed_s=elapsed,
        turns=len(lat),
        bookings=stats.bookings,
        failures=stats.failures,
        turns_per_s=len(lat) / elapsed if elapsed else 0.0,
        p50_ms=percentile(lat, 0.50) * 1000,
        p99_ms=percentile(lat, 0.99) * 1000,
        max_ms=max(lat, default=float("nan")) * 1000,
        server_cpu_pct=100 * cpu_server / elapsed,
        client_cpu_pct=100 * cpu_client / elapsed,
        failure_samples=stats.failure_samples,
    )


def _table(results: list[Result]) -> Iterator[str]:
    yield (
        f"{'store':<10} {'turns':>7} {'bookings':>8} {'turns/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'failed':>6} {'server CPU':>10} {'client CPU':>10}"
    )
    for r in results:
        yield (
            f"{r.store:<10} {r.turns:>7} {r.bookings:>8} {r.turns_per_s:>8.1f} {r.p50_ms:>7.1f} "
            f"{r.p99_ms:>7.1f} {r.max_ms:>7.1f} {r.failures:>6} {r.server_cpu_pct:>9.0f}% "
            f"{r.client_cpu_pct:>9.0f}%"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.web_chat", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="load duration per store, in s (max 300)"
    )
    parser.add_argument(
        "--conversations", type=int, default=50, help="concurrent websocket conversations (max 500)"
    )
    parser.add_argument(
        "--stores",
        default="embedded,redis,postgresql",
        help="comma-separated: embedded, redis, postgresql",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/7", help="Redis for the redis run (loopback)"
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server for the postgresql run (a throwaway database is made there)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, SQLite files)"
    )
    args = parser.parse_args(argv)

    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    if not 0 < args.conversations <= MAX_CONVERSATIONS:
        parser.error(f"--conversations must be in [1, {MAX_CONVERSATIONS}]")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - {"embedded", "redis", "postgresql"}:
        parser.error("--stores takes embedded, redis and/or postgresql")
    host = urlsplit(args.redis_url).hostname
    if {"redis", "postgresql"} & set(stores):
        if host not in ("127.0.0.1", "localhost", "::1"):
            parser.error("--redis-url must be on loopback")
        check_redis(args.redis_url, "leave redis and postgresql out of --stores")

    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    results: list[Result] = []
    try:
        clients_dir = workdir / "clients"
        client_ids = make_clients(clients_dir, args.conversations)
        print(
            f"web chat bench: {args.conversations} concurrent conversations x {args.seconds:g} s per "
            f"store; lead-capture booking script ({len(SCRIPT_HEAD) + 2} turns); offline engine; "
            f"gateway in a separate process on {HOST}; {os.cpu_count()} CPUs",
            flush=True,
        )
        for store in stores:
            redis_url = args.redis_url if store in ("redis", "postgresql") else None
            database = (
                asyncio.run(create_postgres(pg_server(args.postgres_url)))
                if store == "postgresql"
                else None
            )
            try:
                result = run_store(
                    store,
                    workdir,
                    clients_dir,
                    client_ids,
                    args.seconds,
                    redis_url,
                    database,
                )
            finally:
                if redis_url:
                    redis_keys_cleanup(redis_url)
                if database:
                    asyncio.run(drop_postgres(database))
            results.append(result)
            print(f"  {store}: done ({result.turns} turns in {result.elapsed_s:.1f} s)", flush=True)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    for line in _table(results):
        print(line)
    for r in results:
        for sample in r.failure_samples:
            print(f"  [{r.store}] failure: {sample}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2), encoding="utf-8")
    return 1 if any(r.failures or not r.turns for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())

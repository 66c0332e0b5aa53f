"""Durability benchmark: outbox delivery throughput, and two replicas racing for slots.

Two parts, each checking its own invariant while it measures (``--parts``):

**outbox** — for each database (``--databases sqlite,postgresql``), enqueue
``--rows`` (default 2000) ``notify.slack`` rows through ``Outbox.enqueue`` in
batches of 100 (one transaction each), then start one ``OutboxWorker`` in this
process (concurrency 8, batch 16, poll 0.05 s) and time until ``outbox.stats()``
shows every row ``delivered`` (polled every 50 ms). Each row is delivered by
the gateway's own ``SlackDeliverer`` (``gateway/deliveries.py``: the client's
config, ``render_slack``, ``SlackNotifier``; only its 1-per-second rate limit
is lifted) with one real HTTP POST to a Slack-like stub: ``http.server`` in a
separate process on 127.0.0.1, HTTP/1.1 keep-alive, answering ``200 ok``
and recording the escalation id in each message. Printed: rows, seconds
(worker start -> all delivered), deliveries/s, the enqueue rate, this
process's CPU (percent of one core), and what the stub received: requests,
distinct idempotency keys, duplicates (requests - distinct; must be 0). On
PostgreSQL a second run has **2 workers** on two ``Database`` objects (two
engines, two connection pools: two replicas) claiming from one table, where
``FOR UPDATE SKIP LOCKED`` must keep duplicates at 0; each worker's share is
shown.

**race** — two gateway replicas (``tests/durability/gateway_proc.py``: real
uvicorn, each its own child process) on one throwaway PostgreSQL database
and one Redis (``--redis-url``, database 7 by default; its ``gw:*`` keys are
deleted afterwards), with "now" pinned to Monday 2026-12-07 09:00 in Los
Angeles (``GATEWAY_TEST_NOW``) so the slots stay bookable. ``--customers``
(default 40) web chat visitors, alternating replicas, each want one of
``--slots`` (default 4) Manicure slots on Tuesday December 15 (10:00 am,
10:30 am, ...; customer ``n`` wants slot ``n % slots``). Each says everything
in one message ("I'd like to book a Manicure on December 15 at 10:00 am. I'm
Ana Souza, 415 555 0100, c0@example.com") and is offered the slot; once
**every** customer has been offered theirs, all say "yes" at the same
instant, so the commits collide. Counted from the ``bookings`` table: bookings
per slot, double bookings (bookings beyond one per slot; must be 0); from the
replies: customers booked, customers told their slot was taken (state back to
``collecting``, asked for another time), anything else (a failure). Printed:
wall time (first connect -> last reply), and p50/p99 latency of the "yes"
turn (message sent -> ``complete`` received).

PostgreSQL databases are created as ``gw_bench_<hex>`` on ``--postgres-url``
(default ``postgresql://postgres@127.0.0.1:5432``) and dropped afterwards.
Loopback only. Exits 1 on any duplicate delivery or double booking, and on an
incomplete run (rows not delivered, conversations that failed); about a
minute by default on a 2-core machine, ``--quick`` about half that.

    .venv/bin/python -m bench.durability
    .venv/bin/python -m bench.durability --quick --json /tmp/durability.json
    .venv/bin/python -m bench.durability --parts outbox --databases sqlite --rows 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from bench._server import HOST, ServerProcess, free_port
from bench._services import (
    OffScript,
    chat_turn,
    check_postgres,
    check_redis,
    pg_server,
    redis_keys_cleanup,
    throwaway_postgres,
)
from bench.web_chat import percentile

# The gateway's modules are imported inside the functions that use them: the
# Slack stub's child process imports this module and needs none of them.

REPO = Path(__file__).resolve().parents[1]
CLIENT = "spa-del-sol"
GATEWAY_PROC = REPO / "tests" / "durability" / "gateway_proc.py"
NOW = "2026-12-07T17:00:00+00:00"  # Monday 09:00 in Los Angeles
DAY = "December 15"  # the Tuesday after: open 09:00-19:00
FIRST_SLOT_MIN = 10 * 60  # 10:00 am local
MAX_SLOTS = 16  # 10:00 am .. 5:30 pm, 30-minute Manicures
MAX_ROWS = 100_000
MAX_CUSTOMERS = 400
ENQUEUE_BATCH = 100
DELIVERY_TIMEOUT_S = 300.0
TURN_TIMEOUT_S = 60.0

FIRST = ["Ana", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas"]
FIRST += ["Kira", "Luis", "Maya", "Nils", "Olga", "Pedro", "Rosa", "Sam", "Tara", "Uma"]
LAST = ["Souza", "Ito", "Novak", "Quinn", "Reyes", "Berg", "Costa", "Doyle", "Ekström", "Fox"]
LAST += ["Garcia", "Haas", "Ibarra", "Jensen", "Kovac", "Lopez", "Moreau", "Nakata", "Olsen"]
LAST += ["Perez"]


# --- the Slack stub, in a process of its own ---------------------------------------------

_ESCALATION_ID = re.compile(r"escalation `([^`]+)`")


def serve_slack_stub() -> None:
    """Child-process entry point (``--port N`` in ``sys.argv``): a Slack incoming-webhook
    stand-in. ``POST /services/...`` -> ``200 ok``, recording the escalation id found
    in the message's context block; ``GET /received?prefix=P`` -> JSON
    ``{"requests": int, "keys": {escalation_id: times received}}`` for ids starting
    with ``P``."""
    port = int(sys.argv[sys.argv.index("--port") + 1])
    received: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Slack's HTTPS endpoint
        # Headers and body go out as two writes: with Nagle on, the body waits for
        # the client's delayed ACK, 40 ms per request on Linux.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            found = _ESCALATION_ID.search(body.decode("utf-8", "replace"))
            with lock:
                received.append(found.group(1) if found else "")
            self._answer(200, b"ok", "text/plain")

        def do_GET(self) -> None:
            prefix = parse_qs(urlsplit(self.path).query).get("prefix", [""])[0]
            with lock:
                mine = [k for k in received if k.startswith(prefix)]
            keys = Counter(mine)
            self._answer(200, json.dumps({"requests": len(mine), "keys": keys}).encode(), "")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type or "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the default 5 drops SYNs when a pool opens at once

    Server((HOST, port), Handler).serve_forever()


class SlackStub(ServerProcess):
    """:func:`serve_slack_stub` in a child process; ``url`` is the webhook URL."""

    name = "slack-stub"
    poll_s = 0.05

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        self.base = f"http://{HOST}:{port}"
        self.url = f"{self.base}/services/T000/B000/bench"
        cmd = [
            sys.executable,
            "-c",
            "from bench.durability import serve_slack_stub; serve_slack_stub()",
            "--port",
            str(port),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        super().__init__(workdir, cmd, env)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/received", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    async def received(self, http: httpx.AsyncClient, prefix: str) -> tuple[int, Counter[str]]:
        """Requests received for escalation ids starting with ``prefix``, and how
        often each id came."""
        got = (await http.get(f"{self.base}/received", params={"prefix": prefix})).json()
        return int(got["requests"]), Counter(got["keys"])


# --- part 1: outbox deliveries -----------------------------------------------------------


@dataclass
class OutboxResult:
    database: str
    workers: int
    rows: int
    enqueue_s: float
    seconds: float
    deliveries_per_s: float
    delivered: int
    dead: int
    not_delivered: int
    stub_requests: int
    distinct_keys: int
    duplicates: int
    missing: int
    per_worker: list[int]
    cpu_pct: float

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.missing == 0 and self.delivered == self.rows


def _registry(webhook_url: str) -> Any:
    """A ClientRegistry holding the reference client, its Slack webhook pointed at the stub."""
    from engine.config import ClientRegistry, load_client

    config, problems = load_client(REPO / "clients" / CLIENT)
    if config is None:
        raise SystemExit(f"cannot load clients/{CLIENT}: {problems}")
    escalation = config.escalation.model_copy(update={"to_slack_webhook": webhook_url})
    config = config.model_copy(update={"escalation": escalation})
    return ClientRegistry(clients={CLIENT: config})


def _escalations(run: str, rows: int) -> Iterator[Any]:
    """``rows`` outbox items shaped as ``engine.commit.escalation_items`` makes them."""
    from engine.outbox import OutboxItem
    from engine.payloads import EscalationNotice
    from engine.tools.notify import Escalation

    created = datetime.now(UTC)
    for i in range(rows):
        esc = Escalation(
            escalation_id=f"{run}-{i:06d}",
            client_id=CLIENT,
            client_name="Spa del Sol",
            channel="web",
            session_id=f"bench-session-{i:06d}",
            reason="asked for a person",
            who=f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]}",
            contact=f"+1415555{i % 10000:04d}",
            email=f"c{i}@example.com",
            fields={"service": "Manicure"},
            transcript=(
                ("user", "Can I talk to someone about a gift card?"),
                ("assistant", "Of course, I'll let the front desk know."),
            ),
            created_at=created,
        )
        notice = EscalationNotice(kind="notify.slack", escalation=esc)
        yield OutboxItem(CLIENT, f"{esc.escalation_id}:slack", notice)


async def run_outbox(
    database: str, url: str, rows: int, workers: int, stub: SlackStub
) -> OutboxResult:
    from engine.db.database import Database
    from engine.outbox import Deliverer, Outbox, OutboxRow, OutboxWorker, WorkerOptions
    from gateway.deliveries import SlackDeliverer

    registry = _registry(stub.url)

    class Counting(Deliverer):
        """The gateway's Slack deliverer without its 1-per-second limit, counting."""

        kind = SlackDeliverer.kind
        rate_per_s = None

        def __init__(self, http: httpx.AsyncClient) -> None:
            self.inner = SlackDeliverer(registry, http)
            self.delivered = 0

        async def deliver(self, row: OutboxRow) -> None:
            await self.inner.deliver(row)
            self.delivered += 1

    run = f"{database}-{workers}w-{uuid.uuid4().hex[:8]}"
    options = WorkerOptions(poll_s=0.05, batch=16, concurrency=8)
    dbs = [Database.open(url) for _ in range(workers)]
    https = [httpx.AsyncClient() for _ in range(workers)]
    try:
        await dbs[0].upgrade()
        outboxes = [Outbox(db) for db in dbs]
        items = list(_escalations(run, rows))
        started = time.perf_counter()
        for i in range(0, rows, ENQUEUE_BATCH):
            await outboxes[0].enqueue(items[i : i + ENQUEUE_BATCH])
        enqueue_s = time.perf_counter() - started

        deliverers = [Counting(http) for http in https]
        pool = [OutboxWorker(o, [d], options) for o, d in zip(outboxes, deliverers, strict=True)]
        cpu0 = time.process_time()
        started = time.perf_counter()
        for worker in pool:
            worker.start()
        try:
            while True:
                counts, _ = await outboxes[0].stats()
                if counts["delivered"] + counts["dead"] >= rows:
                    break
                if time.perf_counter() - started > DELIVERY_TIMEOUT_S:
                    print(f"  [{run}] gave up after {DELIVERY_TIMEOUT_S:g} s: {counts}")
                    break
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu0
        finally:
            for worker in pool:
                await worker.stop()
        counts, _ = await outboxes[0].stats()
        requests, keys = await stub.received(https[0], f"{run}-")
    finally:
        for http in https:
            await http.aclose()
        for db in dbs:
            await db.close()
    return OutboxResult(
        database=database,
        workers=workers,
        rows=rows,
        enqueue_s=enqueue_s,
        seconds=seconds,
        deliveries_per_s=counts["delivered"] / seconds if seconds else 0.0,
        delivered=counts["delivered"],
        dead=counts["dead"],
        not_delivered=counts["pending"] + counts["delivering"] + counts["dead"],
        stub_requests=requests,
        distinct_keys=len(keys),
        duplicates=requests - len(keys),
        missing=rows - len(keys),
        per_worker=[d.delivered for d in deliverers],
        cpu_pct=100 * cpu / seconds if seconds else 0.0,
    )


async def outbox_part(
    databases: list[str], rows: int, postgres: str, workdir: Path, stub: SlackStub
) -> list[OutboxResult]:
    results = []
    for database in databases:
        plans = [1, 2] if database == "postgresql" else [1]
        for workers in plans:
            if database == "sqlite":
                url = f"sqlite:///{workdir / f'outbox-{uuid.uuid4().hex[:8]}.sqlite'}"
                result = await run_outbox(database, url, rows, workers, stub)
            else:
                async with throwaway_postgres(postgres) as url:
                    result = await run_outbox(database, url, rows, workers, stub)
            results.append(result)
            print(
                f"  outbox {database}, {workers} worker(s): {result.delivered} delivered in "
                f"{result.seconds:.2f} s",
                flush=True,
            )
    return results


# --- part 2: two replicas, customers racing for slots --------------------------------------


class Replica(ServerProcess):
    """``tests/durability/gateway_proc.py`` (uvicorn, "now" pinned) in a child process."""

    poll_s = 0.1

    def __init__(self, n: int, workdir: Path, env: dict[str, str]) -> None:
        self.name = f"replica-{n}"
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        self.ws_url = f"ws://{HOST}:{port}/web/chat/{CLIENT}"
        super().__init__(workdir, [sys.executable, str(GATEWAY_PROC), "--port", str(port)], env)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def slot_clock(slot: int) -> str:
    """``10:00 am``, ``10:30 am``, ... for slot 0, 1, ..."""
    hour, minute = divmod(FIRST_SLOT_MIN + 30 * slot, 60)
    return f"{(hour - 1) % 12 + 1}:{minute:02d} {'am' if hour < 12 else 'pm'}"


class Gate:
    """Opens once ``count`` customers have arrived (succeeded or failed at turn 1)."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.open = asyncio.Event()
        if count <= 0:
            self.open.set()

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.open.set()


@dataclass
class Outcome:
    customer: int
    slot: int
    result: str  # booked | taken | failed
    yes_s: float | None = None
    detail: str = ""


async def customer(url: str, n: int, slots: int, gate: Gate) -> Outcome:
    slot = n % slots
    name = f"{FIRST[n % len(FIRST)]} {LAST[(n // len(FIRST)) % len(LAST)]}"
    ask = (
        f"I'd like to book a Manicure on {DAY} at {slot_clock(slot)}. I'm {name}, "
        f"415 555 {100 + n:04d}, c{n}@example.com"
    )
    arrived = False
    try:
        async with connect(url, open_timeout=TURN_TIMEOUT_S, max_queue=None) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), TURN_TIMEOUT_S))
            if first.get("type") != "session":
                raise OffScript(f"expected a session event, got {first.get('type')!r}")
            offer = await chat_turn(ws, ask, TURN_TIMEOUT_S)
            meta = offer.get("metadata", {})
            if meta.get("expecting") != "confirmation":
                raise OffScript(
                    f"not offered the slot: expecting={meta.get('expecting')!r}: "
                    f"{str(offer.get('text', ''))[:160]!r}"
                )
            gate.arrive()
            arrived = True
            await gate.open.wait()
            sent = time.perf_counter()
            done = await chat_turn(ws, "yes", TURN_TIMEOUT_S)
            yes_s = time.perf_counter() - sent
    except (OffScript, TimeoutError, OSError, WebSocketException) as exc:
        return Outcome(n, slot, "failed", detail=f"{type(exc).__name__}: {exc}")
    finally:
        if not arrived:
            gate.arrive()
    meta = done.get("metadata", {})
    if meta.get("state") == "booked":
        return Outcome(n, slot, "booked", yes_s)
    if meta.get("state") == "collecting" and meta.get("expecting") == "time":
        return Outcome(n, slot, "taken", yes_s)
    detail = f"state={meta.get('state')!r} expecting={meta.get('expecting')!r}"
    return Outcome(n, slot, "failed", yes_s, f"{detail}: {str(done.get('text', ''))[:160]!r}")


@dataclass
class RaceResult:
    customers: int
    slots: int
    booked: int
    booked_rows: int
    slots_booked: int
    double_bookings: int
    taken: int
    failed: int
    wall_s: float
    yes_p50_ms: float
    yes_p99_ms: float
    yes_max_ms: float
    bookings_per_slot: dict[str, int] = field(default_factory=dict)
    failure_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.double_bookings == 0 and self.failed == 0 and self.booked == self.booked_rows


async def _bookings_per_slot(url: str) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT start_iso, count(*) AS n FROM bookings WHERE client_id = $1 "
            "AND status = 'booked' GROUP BY start_iso ORDER BY start_iso",
            CLIENT,
        )
    finally:
        await conn.close()
    return {str(r["start_iso"]): int(r["n"]) for r in rows}


async def race_part(
    customers: int, slots: int, postgres: str, redis_url: str, workdir: Path
) -> RaceResult:
    clients_dir = workdir / "clients"
    shutil.copytree(REPO / "clients" / CLIENT, clients_dir / CLIENT)
    async with throwaway_postgres(postgres) as db_url:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GATEWAY_") and k not in ("REDIS_URL", "DATABASE_URL")
        }
        env = {
            **inherited,
            "GATEWAY_CLIENTS_DIR": str(clients_dir),
            "GATEWAY_DATA_DIR": str(workdir / "race-data"),
            "GATEWAY_LOG_LEVEL": "WARNING",
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "GATEWAY_TEST_NOW": NOW,
            "GATEWAY_WEB_NEW_SESSIONS_PER_MIN": "1000000",
            "GATEWAY_WEB_RATE_PER_S": "1000000",
            "GATEWAY_WEB_RATE_BURST": "1000000",
        }
        # Started together: the migration runs under an advisory lock, once.
        replicas = [Replica(1, workdir, env), Replica(2, workdir, env)]
        try:
            await asyncio.gather(*(asyncio.to_thread(r.wait_ready, 90.0) for r in replicas))
            gate = Gate(customers)
            started = time.perf_counter()
            outcomes = await asyncio.gather(
                *(customer(replicas[n % 2].ws_url, n, slots, gate) for n in range(customers))
            )
            wall_s = time.perf_counter() - started
            per_slot = await _bookings_per_slot(db_url)
            if any(o.result == "failed" for o in outcomes):
                for replica in replicas:
                    print(f"[{replica.name}] log tail:\n{replica.tail(15)}", file=sys.stderr)
        finally:
            for replica in replicas:
                await asyncio.to_thread(replica.stop)
    yes = [o.yes_s for o in outcomes if o.yes_s is not None]
    return RaceResult(
        customers=customers,
        slots=slots,
        booked=sum(o.result == "booked" for o in outcomes),
        booked_rows=sum(per_slot.values()),
        slots_booked=len(per_slot),
        double_bookings=sum(n - 1 for n in per_slot.values() if n > 1),
        taken=sum(o.result == "taken" for o in outcomes),
        failed=sum(o.result == "failed" for o in outcomes),
        wall_s=wall_s,
        yes_p50_ms=percentile(yes, 0.50) * 1000,
        yes_p99_ms=percentile(yes, 0.99) * 1000,
        yes_max_ms=max(yes, default=float("nan")) * 1000,
        bookings_per_slot=per_slot,
        failure_samples=[
            f"customer {o.customer}: {o.detail}" for o in outcomes if o.result == "failed"
        ][:5],
    )


# --- report --------------------------------------------------------------------------------


def _outbox_table(results: list[OutboxResult]) -> Iterator[str]:
    yield (
        f"{'database':<10} {'workers':>7} {'rows':>6} {'seconds':>7} {'deliv/s':>8} "
        f"{'enqueue/s':>9} {'CPU':>5} {'requests':>8} {'distinct':>8} {'dupes':>5} "
        f"{'missing':>7}  per worker"
    )
    for r in results:
        yield (
            f"{r.database:<10} {r.workers:>7} {r.rows:>6} {r.seconds:>7.2f} "
            f"{r.deliveries_per_s:>8.0f} {r.rows / r.enqueue_s:>9.0f} {r.cpu_pct:>4.0f}% "
            f"{r.stub_requests:>8} {r.distinct_keys:>8} {r.duplicates:>5} {r.missing:>7}  "
            f"{'/'.join(map(str, r.per_worker))}"
        )


def _race_lines(r: RaceResult) -> Iterator[str]:
    yield (
        f"customers {r.customers}, slots {r.slots}: booked {r.booked} "
        f"({r.booked_rows} rows over {r.slots_booked} slots), double bookings "
        f"{r.double_bookings}, told the slot was taken {r.taken}, failed {r.failed}"
    )
    yield (
        f"wall time {r.wall_s:.2f} s; 'yes' turn p50 {r.yes_p50_ms:.0f} ms, "
        f"p99 {r.yes_p99_ms:.0f} ms, max {r.yes_max_ms:.0f} ms"
    )
    yield "bookings per slot: " + ", ".join(f"{k} x{n}" for k, n in r.bookings_per_slot.items())
    for sample in r.failure_samples:
        yield f"  failure: {sample}"


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.durability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--parts", default="outbox,race", help="comma-separated: outbox, race")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="outbox runs: sqlite, postgresql"
    )
    parser.add_argument("--rows", type=int, help="outbox rows per run (default 2000; quick 500)")
    parser.add_argument(
        "--customers", type=int, help="racing web chat customers (default 40; quick 16)"
    )
    parser.add_argument("--slots", type=int, default=4, help=f"slots wanted (max {MAX_SLOTS})")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server for the throwaway databases (loopback)",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/7", help="Redis for the replicas (loopback)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer rows and customers")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, SQLite files)"
    )
    args = parser.parse_args(argv)

    rows = args.rows if args.rows is not None else (500 if args.quick else 2000)
    customers = args.customers if args.customers is not None else (16 if args.quick else 40)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not parts or parts - {"outbox", "race"}:
        parser.error("--parts takes outbox and/or race")
    if "outbox" in parts and (not databases or set(databases) - {"sqlite", "postgresql"}):
        parser.error("--databases takes sqlite and/or postgresql")
    if not 0 < rows <= MAX_ROWS:
        parser.error(f"--rows must be in [1, {MAX_ROWS}]")
    if not 0 < args.slots <= MAX_SLOTS:
        parser.error(f"--slots must be in [1, {MAX_SLOTS}]")
    if not args.slots <= customers <= MAX_CUSTOMERS:
        parser.error(f"--customers must be in [--slots, {MAX_CUSTOMERS}]")
    if not (_loopback(args.postgres_url) and _loopback(args.redis_url)):
        parser.error("--postgres-url and --redis-url must be on loopback")
    postgres = pg_server(args.postgres_url)
    if "race" in parts or ("outbox" in parts and "postgresql" in databases):
        check_postgres(postgres, "leave out --databases postgresql and --parts race")
    if "race" in parts:
        check_redis(args.redis_url, "use --parts outbox")

    print(
        f"durability bench: outbox {rows} rows x {','.join(databases)}; race {customers} "
        f"customers for {args.slots} slots on 2 replicas; {os.cpu_count()} CPUs",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-durability-"))
    outbox_results: list[OutboxResult] = []
    race: RaceResult | None = None
    try:
        if "outbox" in parts:
            stub = SlackStub(workdir)
            try:
                stub.wait_ready(30.0)
                outbox_results = asyncio.run(outbox_part(databases, rows, postgres, workdir, stub))
            finally:
                stub.stop()
        if "race" in parts:
            try:
                race = asyncio.run(
                    race_part(customers, args.slots, postgres, args.redis_url, workdir)
                )
            finally:
                redis_keys_cleanup(args.redis_url)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if outbox_results:
        print("\nOutbox deliveries (one HTTP POST to the Slack stub per row):")
        for line in _outbox_table(outbox_results):
            print(line)
    if race is not None:
        print("\nBooking race (2 replicas, one PostgreSQL, one Redis):")
        for line in _race_lines(race):
            print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "outbox": [asdict(r) for r in outbox_results],
            "race": asdict(race) if race is not None else None,
        }
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    ok = all(r.ok for r in outbox_results) and (race is None or race.ok)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

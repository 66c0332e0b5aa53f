"""Messaging benchmark: WhatsApp webhooks under load, turns per second, and a chaos run.

Runs the real gateway (``gateway serve``, uvicorn, one worker) in child
processes on loopback, with the spa-del-sol client (offline LLM) copied to a
temporary folder, its Twilio/Meta secrets set from bench values and
``channels.whatsapp.burst_window_ms`` set to ``--burst-ms`` (default 500).
Replies go to a local stand-in for Twilio's Messages API
(``tests/whatsapp/vendor_stubs.py``'s ``TwilioMessagingStub``) in a child
process of its own, which records each reply's ``To``, ``Body`` and arrival
time. Every webhook is a real Twilio WhatsApp form with a valid
``X-Twilio-Signature`` (``RequestValidator.compute_signature`` over
``GATEWAY_PUBLIC_URL`` + path), a unique ``MessageSid``, POSTed with httpx.

**load** (per ``--stores``: ``sqlite`` = the embedded store, ``postgresql``
= a throwaway PostgreSQL database plus Redis locks) — an open-loop generator
posts ``--rate`` webhooks per second (default 200) for ``--seconds`` (default
10; ``--quick`` 4) to ``POST /twilio/whatsapp/spa-del-sol``: request ``i`` is
sent at ``t0 + i / rate`` whether or not earlier ones were answered, from
``--senders`` customers (default 500, round-robin, so each customer writes
every ``senders / rate`` seconds), each walking a booking script (ask, name,
phone, email, time, "yes", again). Acknowledgement latency is measured from
the request's *scheduled* send time to its response (so a stalled server
cannot hide queueing: no coordinated omission). Printed: achieved rate,
p50/p95/p99/max ack latency, errors (non-200 or transport errors), the
gateway's and this process's CPU (percent of one core). Then **turns**: the
bench polls the gateway's database until every recorded message is
``replied`` and every reply row in the outbox is delivered; printed are the
messages recorded, turns (distinct turn ids in ``inbound_messages``: a burst
of one customer's messages is one turn), replies at the stub, the backlog
still unanswered when the load stopped, the drain time (load end -> last
reply at the stub), turns/s and replies/s over the whole run (first webhook
-> last reply), and message-to-reply latency p50/p99 (newest message of a
turn recorded -> its reply at the stub; includes the burst window). The
gateway paces each reply kind at 20 deliveries/s per replica
(``channels.whatsapp.sender.RATE_PER_S``); the load part lifts that pacing in
its server (``--paced`` keeps it), so turns/s measures the gateway, not the
pacing — in production replies would leave at most 20/s per replica.

**chaos** — two replicas on one throwaway PostgreSQL database and one Redis
(``--redis-url``, database 7 by default; its ``gw:*`` keys are deleted
afterwards), ``GATEWAY_MESSAGING_LEASE_S=3`` and ``GATEWAY_OUTBOX_CLAIM_S=3``
(so a survivor takes over a dead replica's claims quickly), production reply
pacing. ``--chaos-messages`` unique messages (default 300; quick 150) over
``--chaos-conversations`` customers (default 100; quick 50), spread over
``--chaos-seconds`` (default 15; quick 8). Each message is delivered 1-5
times (random), each copy to a random replica: extra copies either at the
same instant (concurrently) or up to 2 s later; in 30 % of conversations two
consecutive messages are sent in swapped order. A delivery that fails
(connection refused, 5xx) is retried on the other replica 0.1 s later, as a
load balancer or the provider would. At 40 % of the schedule replica 1 is
killed with SIGKILL (in-flight turns, claims and outbox deliveries die with
it) and **restarted** 3 s later (same port, same database). At the end, once
the database shows nothing pending (or 90 s pass), and 2 s more for late
duplicates, the bench prints: messages sent (unique, acknowledged at least
once), deliveries, messages recorded, turns, replies at the stub, and the two
invariants — **lost** (messages acknowledged but not recorded, not
``replied``, or whose reply row was not delivered; plus conversations that got
fewer replies at the stub than their delivered reply rows hold parts) and
**duplicates** (per conversation, replies at the stub beyond the parts of its
delivered reply rows; plus parts recorded twice in ``outbound_messages``).
Both must be 0, or the bench exits 1. For information it also prints how
often a conversation got the same body twice in a row (the offline assistant
may legitimately ask the same question twice, so this is not counted as a
duplicate).

The bench itself never asserts timings. Loopback only; PostgreSQL databases
are ``gw_bench_<hex>`` on ``--postgres-url`` and dropped afterwards. About 2.5
minutes by default on a 2-core machine, ``--quick`` about 1 minute.

    .venv/bin/python -m bench.messaging
    .venv/bin/python -m bench.messaging --quick --json /tmp/messaging.json
    .venv/bin/python -m bench.messaging --parts load --stores sqlite --rate 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bench._server import (
    HOST,
    ServerProcess,
    free_port,
    gateway_bench_env,
    gateway_serve_cmd,
)
from bench._services import (
    check_postgres,
    check_redis,
    pg_server,
    redis_keys_cleanup,
    throwaway_postgres,
)
from bench.web_chat import percentile

# The gateway's modules are imported by the child processes only.

REPO = Path(__file__).resolve().parents[1]
CLIENT = "spa-del-sol"
PUBLIC = "https://gw.bench.example"
ACCOUNT_SID, AUTH_TOKEN = "AC" + "b" * 32, "bench-twilio-auth-token"
BUSINESS = "+14155550123"
PATH = f"/twilio/whatsapp/{CLIENT}"
LOAD_PREFIX, WARM_PREFIX, CHAOS_PREFIX = "+1628555", "+1628556", "+1628557"
UNPACED_ENV = "BENCH_MESSAGING_UNPACED"
SETTLE_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 30.0

NAMES = ["Ana Souza", "Ben Ito", "Carla Novak", "Dmitri Quinn", "Elena Reyes", "Farid Berg"]
NAMES += ["Grace Costa", "Hugo Doyle", "Ines Fox", "Jonas Garcia", "Kira Haas", "Luis Ibarra"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def script_text(sender: int, k: int) -> str:
    """What customer ``sender`` writes as their ``k``-th message (a booking, over and over)."""
    name = NAMES[sender % len(NAMES)]
    step = k % 6
    if step == 0:
        return "Hi, I'd like to book a massage"
    if step == 1:
        return f"My name is {name}"
    if step == 2:
        return f"415 555 {sender % 10000:04d}"
    if step == 3:
        return f"{name.split()[0].lower()}{sender}@example.com"
    if step == 4:
        return f"{DAYS[sender % len(DAYS)]} at {1 + sender % 5}pm"
    return "yes"


# --- the Twilio stub, in a process of its own ----------------------------------------------


def serve_twilio_stub() -> None:
    """Child-process entry point (``--url-file PATH`` in ``sys.argv``): the test suite's
    ``TwilioMessagingStub`` (our bench account) plus ``GET /_bench/replies?prefix=P``
    -> JSON ``[[to, body, epoch_s], ...]`` for recipients starting with ``P``
    (``whatsapp:`` stripped) and ``GET /_bench/count`` -> ``{"replies": n}``.
    Writes its base URL to the file once it listens."""
    import http.server

    sys.path.insert(0, str(REPO / "tests"))
    from whatsapp.vendor_stubs import TwilioMessagingStub, _Answer, _json

    # The default backlog of 5 drops SYNs when the gateway's pool opens at once.
    http.server.ThreadingHTTPServer.request_queue_size = 256
    url_file = Path(sys.argv[sys.argv.index("--url-file") + 1])

    class BenchStub(TwilioMessagingStub):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__({ACCOUNT_SID: AUTH_TOKEN})
            self.arrived: dict[str, float] = {}

        def _answer(self, request: Any) -> _Answer:
            path = urlsplit(request.path)
            if request.method == "GET" and path.path == "/_bench/count":
                with self._lock:
                    return _json(200, {"replies": len(self.messages)})
            if request.method == "GET" and path.path == "/_bench/replies":
                prefix = dict(p.split("=", 1) for p in path.query.split("&") if "=" in p)
                want = prefix.get("prefix", "").replace("%2B", "+")
                with self._lock:
                    rows = [
                        [to, m.form.get("Body", ""), self.arrived.get(m.sid, 0.0)]
                        for m in self.messages
                        if (to := m.form.get("To", "").removeprefix("whatsapp:")).startswith(want)
                    ]
                return _json(200, rows)
            answer = super()._answer(request)
            if answer.status == 201:
                sid = json.loads(answer.body)["sid"]
                with self._lock:
                    self.arrived[sid] = time.time()
            return answer

    stub = BenchStub().start()
    url_file.write_text(stub.url, encoding="utf-8")
    threading.Event().wait()


@dataclass(frozen=True)
class Reply:
    to: str
    body: str
    at: float
    """Epoch seconds when the stub accepted it."""


class TwilioStub(ServerProcess):
    """:func:`serve_twilio_stub` in a child process; ``url`` is its base URL."""

    poll_s = 0.05

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.url_file = workdir / f"{name}.url"
        self.url = ""
        cmd = [
            sys.executable,
            "-c",
            "from bench.messaging import serve_twilio_stub; serve_twilio_stub()",
            "--url-file",
            str(self.url_file),
            "--port",
            "0",  # chosen by the stub; read from the url file
        ]
        super().__init__(workdir, cmd, {**os.environ, "PYTHONPATH": str(REPO)})

    def ready(self) -> bool:
        if not self.url_file.exists() or not self.url_file.read_text().strip():
            return False
        self.url = self.url_file.read_text().strip()
        try:
            return httpx.get(f"{self.url}/_bench/count", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    async def replies(self, http: httpx.AsyncClient, prefix: str) -> list[Reply]:
        got = await http.get(f"{self.url}/_bench/replies", params={"prefix": prefix})
        return [Reply(str(to), str(body), float(at)) for to, body, at in got.json()]


# --- the gateway, in a process of its own ---------------------------------------------------


def serve_gateway() -> None:
    """Child-process entry point: ``gateway.cli`` (arguments as for ``gateway``), with
    the Twilio reply pacing lifted when ``BENCH_MESSAGING_UNPACED=1``."""
    if os.environ.get(UNPACED_ENV) == "1":
        from channels.whatsapp import sender

        # The outbox reads None as "no token bucket" (engine.outbox.Deliverer).
        sender.TwilioMessageDeliverer.rate_per_s = None  # type: ignore[assignment]
    from gateway.cli import main

    main()


class Gateway(ServerProcess):
    """The gateway under :func:`serve_gateway` in a child process."""

    poll_s = 0.1

    def __init__(self, name: str, workdir: Path, env: dict[str, str], port: int = 0) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        port = port or free_port()
        self.url = f"http://{HOST}:{port}"
        cmd = gateway_serve_cmd(port, Path(env["GATEWAY_CLIENTS_DIR"]))
        cmd[1:3] = ["-c", "from bench.messaging import serve_gateway; serve_gateway()"]
        super().__init__(workdir, cmd, env)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no drain — a replica lost mid-run."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def restart(self) -> Gateway:
        """A new process for this replica on the same port (log ``<name>-restarted.log``)."""
        return Gateway(f"{self.name}-restarted", self.workdir, self.env, self.port)


def clients_copy(workdir: Path, burst_ms: int) -> Path:
    """``clients/spa-del-sol`` under ``workdir`` with ``burst_window_ms`` set."""
    clients_dir = workdir / "clients"
    shutil.copytree(REPO / "clients" / CLIENT, clients_dir / CLIENT)
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    anchor = "  whatsapp:\n    purpose: auto\n"
    if anchor not in text:
        raise SystemExit(f"clients/{CLIENT}/config.yaml: no '{anchor.strip()}' to add to")
    config.write_text(
        text.replace(anchor, f"{anchor}    burst_window_ms: {burst_ms}\n"), encoding="utf-8"
    )
    return clients_dir


def gateway_env(
    data_dir: Path,
    clients_dir: Path,
    stub_url: str,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    unpaced: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in gateway_bench_env(data_dir).items() if not k.startswith("SPA_")}
    env.update(
        PYTHONPATH=str(REPO),
        GATEWAY_CLIENTS_DIR=str(clients_dir),
        GATEWAY_EMBEDDER="none",
        GATEWAY_KNOWLEDGE_INGEST_ON_START="false",
        GATEWAY_PUBLIC_URL=PUBLIC,
        TWILIO_BASE_URL=stub_url,
        META_GRAPH_BASE_URL="http://127.0.0.1:9",  # unused: every webhook is Twilio's
        GATEWAY_MESSAGING_POLL_S="0.1",
        GATEWAY_OUTBOX_POLL_S="0.1",
        SPA_TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        SPA_TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        SPA_META_APP_SECRET="bench-meta-app-secret",
        SPA_META_VERIFY_TOKEN="bench-meta-verify-token",
        SPA_META_ACCESS_TOKEN="bench-meta-access-token",
    )
    for key in ("GATEWAY_TEST_NOW", "GATEWAY_ADMIN_TOKEN"):
        env.pop(key, None)
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    if unpaced:
        env[UNPACED_ENV] = "1"
    env.update(extra or {})
    return env


# --- webhooks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    """One signed Twilio WhatsApp webhook, ready to POST."""

    message_sid: str
    sender: str
    body: bytes
    headers: dict[str, str]


def webhook(sender: str, message_sid: str, text: str) -> Webhook:
    from twilio.request_validator import RequestValidator

    form = {
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": f"whatsapp:{sender}",
        "To": f"whatsapp:{BUSINESS}",
        "Body": text,
        "NumMedia": "0",
        "NumSegments": "1",
        "ProfileName": "Bench",
        "WaId": sender.lstrip("+"),
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + PATH, form)
    headers = {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return Webhook(message_sid, sender, urlencode(form).encode(), headers)


async def post(http: httpx.AsyncClient, base: str, hook: Webhook) -> int:
    """The webhook's HTTP status (0 on a transport error)."""
    try:
        return (await http.post(base + PATH, content=hook.body, headers=hook.headers)).status_code
    except httpx.HTTPError:
        return 0


# --- reading the gateway's database -------------------------------------------------------


class Store:
    """Read-only queries on the gateway's database (SQLite file or PostgreSQL URL).

    SQL uses ``$1``-style placeholders for both (rewritten to ``?`` for SQLite)."""

    def __init__(self, sqlite_path: Path | None = None, pg_url: str | None = None) -> None:
        self.sqlite_path, self.pg_url = sqlite_path, pg_url
        self._pg: Any = None

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.pg_url is not None:
            import asyncpg

            if self._pg is None:
                self._pg = await asyncpg.connect(self.pg_url, timeout=5)
            return [tuple(r) for r in await self._pg.fetch(sql, *args)]
        assert self.sqlite_path is not None
        path = self.sqlite_path
        lite = sql
        for i in range(len(args), 0, -1):
            lite = lite.replace(f"${i}", "?")

        def run() -> list[tuple[Any, ...]]:
            if not path.exists():
                return []
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                return [tuple(r) for r in conn.execute(lite, args).fetchall()]
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()

    async def pending(self, prefix: str) -> tuple[int, int, int]:
        """(messages recorded, messages not yet replied/failed, reply rows not yet
        delivered/dead) for senders starting with ``prefix``."""
        like = prefix + "%"
        rows = await self.fetch(
            "SELECT count(*), coalesce(sum(CASE WHEN state IN ('received', 'processing')"
            " THEN 1 ELSE 0 END), 0) FROM inbound_messages WHERE sender LIKE $1",
            like,
        )
        out = await self.fetch(
            "SELECT count(*) FROM outbox WHERE kind = 'message.twilio'"
            " AND state IN ('pending', 'delivering') AND idempotency_key LIKE 'reply:%'",
        )
        recorded, waiting = (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
        return recorded, waiting, int(out[0][0]) if out else 0

    async def inbound(self, prefix: str) -> list[tuple[str, str, str, str, float, float]]:
        """(message_id, sender, state, turn_id, received_ts, updated_ts) per message."""
        rows = await self.fetch(
            "SELECT message_id, sender, state, coalesce(turn_id, ''), received_ts, updated_ts"
            " FROM inbound_messages WHERE sender LIKE $1",
            prefix + "%",
        )
        return [(str(a), str(b), str(c), str(d), float(e), float(f)) for a, b, c, d, e, f in rows]

    async def reply_rows(self) -> dict[str, tuple[str, str, int, int]]:
        """Reply outbox rows by idempotency key: (to, state, parts, attempts)."""
        rows = await self.fetch(
            "SELECT idempotency_key, payload, state, attempts FROM outbox"
            " WHERE kind = 'message.twilio'"
        )
        out: dict[str, tuple[str, str, int, int]] = {}
        for key, payload, state, attempts in rows:
            body = json.loads(payload)
            out[str(key)] = (str(body.get("to", "")), str(state), len(body["parts"]), attempts)
        return out

    async def in_flight(self, prefix: str) -> dict[str, int]:
        """Messages ``processing`` and reply rows ``delivering`` right now."""
        inbound = await self.fetch(
            "SELECT count(*) FROM inbound_messages WHERE sender LIKE $1 AND state = 'processing'",
            prefix + "%",
        )
        rows = await self.fetch(
            "SELECT count(*) FROM outbox WHERE kind = 'message.twilio' AND state = 'delivering'"
        )
        return {"processing": int(inbound[0][0]), "delivering": int(rows[0][0])}

    async def reclaimed(self, prefix: str) -> int:
        """Messages claimed more than once."""
        rows = await self.fetch(
            "SELECT count(*) FROM inbound_messages WHERE sender LIKE $1 AND attempts > 1",
            prefix + "%",
        )
        return int(rows[0][0])

    async def parts_sent_twice(self) -> int:
        """Reply parts recorded more than once in ``outbound_messages``."""
        rows = await self.fetch(
            "SELECT outbox_key, count(*) FROM outbound_messages GROUP BY outbox_key"
            " HAVING count(*) > 1"
        )
        return sum(int(n) - 1 for _key, n in rows)


async def settle(
    store: Store, prefix: str, expected: int, timeout_s: float = SETTLE_TIMEOUT_S
) -> bool:
    """Wait until ``expected`` messages are recorded and nothing of ``prefix`` is pending."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recorded, waiting, undelivered = await store.pending(prefix)
        if recorded >= expected and waiting == 0 and undelivered == 0:
            return True
        await asyncio.sleep(0.2)
    return False


# --- part 1 + 2: load, then turns -----------------------------------------------------------


@dataclass
class LoadResult:
    store: str
    target_rate: float
    seconds: float
    """First send -> last acknowledgement."""
    sent: int
    achieved_rate: float
    """Webhooks sent per second over the send window (first -> last send)."""
    ack_p50_ms: float
    ack_p95_ms: float
    ack_p99_ms: float
    ack_max_ms: float
    errors: int
    error_kinds: dict[str, int]
    gateway_cpu_pct: float
    client_cpu_pct: float
    messages_recorded: int = 0
    turns: int = 0
    replies: int = 0
    backlog_at_load_end: int = 0
    drain_s: float = float("nan")
    turns_per_s: float = float("nan")
    replies_per_s: float = float("nan")
    answer_p50_ms: float = float("nan")
    answer_p99_ms: float = float("nan")
    unanswered: int = 0
    paced: bool = False
    settled: bool = True

    @property
    def ok(self) -> bool:
        return self.settled and self.unanswered == 0


def answer_latencies(
    inbound: list[tuple[str, str, str, str, float, float]], replies: list[Reply]
) -> list[float]:
    """Per turn: its reply's arrival at the stub - its newest message recorded.

    Turns of a conversation are matched to its replies in commit order; a
    conversation whose reply count differs from its turn count is left out."""
    turns: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for _mid, sender, state, turn, received, updated in inbound:
        if state != "replied" or not turn:
            continue
        newest, committed = turns[sender].get(turn, (0.0, 0.0))
        turns[sender][turn] = (max(newest, received), max(committed, updated))
    by_to: dict[str, list[float]] = defaultdict(list)
    for r in replies:
        by_to[r.to].append(r.at)
    out: list[float] = []
    for sender, found in turns.items():
        arrived = sorted(by_to.get(sender, []))
        ordered = sorted(found.values(), key=lambda t: t[1])
        if len(arrived) != len(ordered):
            continue
        out += [at - newest for (newest, _c), at in zip(ordered, arrived, strict=True)]
    return out


async def warm_up(http: httpx.AsyncClient, gw: Gateway, store: Store) -> None:
    """A few conversations first: connections, imports and caches warm."""
    hooks = [
        webhook(f"{WARM_PREFIX}{i:04d}", f"SMwarm{i:026d}", script_text(i, 0)) for i in range(8)
    ]
    await asyncio.gather(*(post(http, gw.url, h) for h in hooks))
    await settle(store, WARM_PREFIX, len(hooks), 30.0)


async def run_load(
    store_name: str,
    gw: Gateway,
    stub: TwilioStub,
    store: Store,
    rate: float,
    seconds: float,
    senders: int,
    paced: bool,
) -> LoadResult:
    total = max(1, round(rate * seconds))
    hooks = [
        webhook(
            f"{LOAD_PREFIX}{i % senders:04d}",
            f"SM{store_name[:2]}{i:030d}",
            script_text(i % senders, i // senders),
        )
        for i in range(total)
    ]
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, pool=REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        await warm_up(http, gw, store)
        latencies: list[float] = []
        errors: Counter[str] = Counter()

        async def fire(hook: Webhook, scheduled: float) -> None:
            status = await post(http, gw.url, hook)
            latencies.append(time.perf_counter() - scheduled)
            if status != 200:
                errors["transport" if status == 0 else f"HTTP {status}"] += 1

        cpu_gw0, cpu_me0 = gw.cpu_seconds(), time.process_time()
        wall0 = time.time()
        t0 = time.perf_counter() + 0.05
        tasks: list[asyncio.Task[None]] = []
        issued = t0
        for i, hook in enumerate(hooks):
            at = t0 + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            issued = time.perf_counter()
            tasks.append(asyncio.create_task(fire(hook, at)))
        send_window = max(issued - t0, 1e-9)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        load_end = time.time()
        cpu_gw, cpu_me = gw.cpu_seconds() - cpu_gw0, time.process_time() - cpu_me0
        _recorded, backlog, _u = await store.pending(LOAD_PREFIX)

        settled = await settle(store, LOAD_PREFIX, total - sum(errors.values()))
        await asyncio.sleep(0.5)  # a reply in flight to the stub lands
        replies = await stub.replies(http, LOAD_PREFIX)
        inbound = await store.inbound(LOAD_PREFIX)
    result = LoadResult(
        store=store_name,
        target_rate=rate,
        seconds=elapsed,
        sent=total,
        achieved_rate=(total - 1) / send_window if total > 1 else 0.0,
        ack_p50_ms=percentile(latencies, 0.50) * 1000,
        ack_p95_ms=percentile(latencies, 0.95) * 1000,
        ack_p99_ms=percentile(latencies, 0.99) * 1000,
        ack_max_ms=max(latencies, default=float("nan")) * 1000,
        errors=sum(errors.values()),
        error_kinds=dict(errors),
        gateway_cpu_pct=100 * cpu_gw / elapsed,
        client_cpu_pct=100 * cpu_me / elapsed,
        paced=paced,
        settled=settled,
    )
    result.messages_recorded = len(inbound)
    result.turns = len({(s, t) for _m, s, st, t, _r, _u in inbound if t})
    result.replies = len(replies)
    result.backlog_at_load_end = backlog
    result.unanswered = sum(1 for row in inbound if row[2] != "replied")
    if replies:
        last = max(r.at for r in replies)
        result.drain_s = last - load_end
        span = last - wall0
        result.turns_per_s = result.turns / span
        result.replies_per_s = len(replies) / span
    answers = answer_latencies(inbound, replies)
    result.answer_p50_ms = percentile(answers, 0.50) * 1000
    result.answer_p99_ms = percentile(answers, 0.99) * 1000
    return result


async def load_part(
    stores: list[str],
    workdir: Path,
    clients_dir: Path,
    postgres: str,
    redis_url: str,
    rate: float,
    seconds: float,
    senders: int,
    paced: bool,
) -> list[LoadResult]:
    results = []
    for store_name in stores:
        stub = TwilioStub(workdir, f"twilio-stub-{store_name}")
        try:
            await asyncio.to_thread(stub.wait_ready, 30.0)
            data_dir = workdir / f"data-{store_name}"
            if store_name == "sqlite":
                env = gateway_env(data_dir, clients_dir, stub.url, unpaced=not paced)
                result = await _load_one(
                    store_name, workdir, env, stub, Store(sqlite_path=data_dir / "gateway.sqlite"),
                    rate, seconds, senders, paced,
                )  # fmt: skip
            else:
                async with throwaway_postgres(postgres) as db_url:
                    env = gateway_env(
                        data_dir,
                        clients_dir,
                        stub.url,
                        database_url=db_url,
                        redis_url=redis_url,
                        unpaced=not paced,
                    )
                    try:
                        result = await _load_one(
                            store_name, workdir, env, stub, Store(pg_url=db_url),
                            rate, seconds, senders, paced,
                        )  # fmt: skip
                    finally:
                        await asyncio.to_thread(redis_keys_cleanup, redis_url)
        finally:
            await asyncio.to_thread(stub.stop)
        results.append(result)
        print(
            f"  load {store_name}: {result.sent} webhooks at {result.achieved_rate:.0f}/s, "
            f"{result.turns} turns, {result.replies} replies",
            flush=True,
        )
    return results


async def _load_one(
    store_name: str,
    workdir: Path,
    env: dict[str, str],
    stub: TwilioStub,
    store: Store,
    rate: float,
    seconds: float,
    senders: int,
    paced: bool,
) -> LoadResult:
    gw = Gateway(f"gateway-{store_name}", workdir, env)
    try:
        await asyncio.to_thread(gw.wait_ready, 90.0)
        result = await run_load(store_name, gw, stub, store, rate, seconds, senders, paced)
        if not result.ok:
            print(f"[{gw.name}] log tail:\n{gw.tail(15)}", file=sys.stderr)
        return result
    finally:
        await store.close()
        await asyncio.to_thread(gw.stop)


# --- part 3: chaos ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    at: float
    """Seconds after the start of the run."""
    message: int
    replica: int


def chaos_plan(
    messages: int, conversations: int, seconds: float, rng: random.Random
) -> tuple[list[Webhook], list[Delivery]]:
    """The unique messages and their deliveries (copies, delays, swaps), by time."""
    hooks = [
        webhook(
            f"{CHAOS_PREFIX}{j % conversations:04d}",
            f"SMchaos{j:027d}",
            script_text(j % conversations, j // conversations),
        )
        for j in range(messages)
    ]
    first = [j * seconds / messages for j in range(messages)]
    for conv in range(conversations):
        mine = list(range(conv, messages, conversations))
        if len(mine) >= 2 and rng.random() < 0.3:
            k = rng.randrange(len(mine) - 1)
            a, b = mine[k], mine[k + 1]
            first[a] = first[b] + rng.uniform(0.05, 0.3)  # b goes first, a just after
    deliveries: list[Delivery] = []
    for j, at in enumerate(first):
        deliveries.append(Delivery(at, j, rng.randrange(2)))
        for _ in range(rng.randint(1, 5) - 1):
            later = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 2.0)
            deliveries.append(Delivery(at + later, j, rng.randrange(2)))
    deliveries.sort(key=lambda d: d.at)
    return hooks, deliveries


@dataclass
class ChaosResult:
    messages_planned: int
    conversations: int
    deliveries: int
    deliveries_failed_over: int
    messages_sent: int
    messages_unacked: int
    messages_recorded: int
    turns: int
    replies: int
    reply_rows_delivered: int
    reply_parts_expected: int
    silent_turns: int
    lost_messages: int
    conversations_with_lost: int
    duplicate_replies: int
    parts_recorded_twice: int
    outbox_rows_retried: int
    same_body_twice_in_a_row: int
    states: dict[str, int]
    messages_reclaimed: int
    """Messages claimed more than once (a lease ran out: the killed replica's)."""
    in_flight_at_kill: dict[str, int]
    """Both replicas' messages ``processing`` and reply rows ``delivering`` at the kill."""
    killed_at_s: float
    restarted_ready_s: float
    wall_s: float
    settled: bool
    samples: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.duplicate_replies + self.parts_recorded_twice

    @property
    def lost(self) -> int:
        return self.lost_messages + self.conversations_with_lost + self.messages_unacked

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.settled


async def chaos_part(
    messages: int,
    conversations: int,
    seconds: float,
    seed: int,
    workdir: Path,
    clients_dir: Path,
    postgres: str,
    redis_url: str,
) -> ChaosResult:
    rng = random.Random(seed)
    hooks, plan = chaos_plan(messages, conversations, seconds, rng)
    stub = TwilioStub(workdir, "twilio-stub-chaos")
    try:
        await asyncio.to_thread(stub.wait_ready, 30.0)
        async with throwaway_postgres(postgres) as db_url:
            extra = {
                "GATEWAY_MESSAGING_LEASE_S": "3",
                "GATEWAY_OUTBOX_CLAIM_S": "3",
                "GATEWAY_OUTBOX_BASE_BACKOFF_S": "0.5",
            }
            envs = [
                gateway_env(
                    workdir / f"data-chaos-{n}",
                    clients_dir,
                    stub.url,
                    database_url=db_url,
                    redis_url=redis_url,
                    extra=extra,
                )
                for n in (1, 2)
            ]
            replicas = [Gateway(f"replica-{n}", workdir, envs[n - 1]) for n in (1, 2)]
            store = Store(pg_url=db_url)
            try:
                await asyncio.gather(*(asyncio.to_thread(r.wait_ready, 90.0) for r in replicas))
                return await _chaos_run(hooks, plan, conversations, seconds, replicas, stub, store)
            finally:
                await store.close()
                for replica in replicas:
                    await asyncio.to_thread(replica.stop)
                await asyncio.to_thread(redis_keys_cleanup, redis_url)
    finally:
        await asyncio.to_thread(stub.stop)


async def _chaos_run(
    hooks: list[Webhook],
    plan: list[Delivery],
    conversations: int,
    seconds: float,
    replicas: list[Gateway],
    stub: TwilioStub,
    store: Store,
) -> ChaosResult:
    acked: set[int] = set()
    failed_over = 0
    in_flight: dict[str, int] = {}
    kill_at = 0.4 * seconds
    restarted_ready = float("nan")
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10.0)) as http:

        async def deliver(d: Delivery) -> None:
            nonlocal failed_over
            target = d.replica
            for attempt in range(60):
                status = await post(http, replicas[target].url, hooks[d.message])
                if status == 200:
                    acked.add(d.message)
                    return
                if attempt == 0:
                    failed_over += 1
                target = 1 - target  # the load balancer / provider tries elsewhere
                await asyncio.sleep(0.1)

        async def killer() -> None:
            nonlocal restarted_ready
            await asyncio.sleep(kill_at)
            in_flight.update(await store.in_flight(CHAOS_PREFIX))
            await asyncio.to_thread(replicas[0].kill)
            print(f"  chaos: replica-1 killed (SIGKILL) at {kill_at:.1f} s", flush=True)
            await asyncio.sleep(3.0)
            fresh = replicas[0].restart()
            replicas[0] = fresh
            await asyncio.to_thread(fresh.wait_ready, 90.0)
            restarted_ready = time.perf_counter() - t0
            print(f"  chaos: replica-1 restarted, ready at {restarted_ready:.1f} s", flush=True)

        t0 = time.perf_counter()
        kill_task = asyncio.create_task(killer())
        tasks: list[asyncio.Task[None]] = []
        for d in plan:
            delay = t0 + d.at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(deliver(d)))
        await asyncio.gather(*tasks)
        await kill_task
        settled = await settle(store, CHAOS_PREFIX, len(acked))
        await asyncio.sleep(2.0)  # a late duplicate would show up by now
        wall_s = time.perf_counter() - t0
        replies = await stub.replies(http, CHAOS_PREFIX)
        inbound = await store.inbound(CHAOS_PREFIX)
        rows = await store.reply_rows()
        twice = await store.parts_sent_twice()
        reclaimed = await store.reclaimed(CHAOS_PREFIX)
    judged = judge(hooks, acked, len(plan), failed_over, conversations, replies, inbound, rows)
    return ChaosResult(
        **judged,
        parts_recorded_twice=twice,
        messages_reclaimed=reclaimed,
        in_flight_at_kill=in_flight,
        killed_at_s=kill_at,
        restarted_ready_s=restarted_ready,
        wall_s=wall_s,
        settled=settled,
    )


def judge(
    hooks: list[Webhook],
    acked: set[int],
    deliveries: int,
    failed_over: int,
    conversations: int,
    replies: list[Reply],
    inbound: list[tuple[str, str, str, str, float, float]],
    rows: dict[str, tuple[str, str, int, int]],
) -> dict[str, Any]:
    """Lost and duplicate counts from what was acknowledged, the database and the stub."""
    by_id = {mid: (sender, state, turn) for mid, sender, state, turn, _r, _u in inbound}
    states = Counter(state for _s, state, _t in by_id.values())
    # A turn's reply row is keyed by the first message it answers.
    row_of_turn: dict[tuple[str, str], str] = {}
    for mid, (sender, _state, turn) in by_id.items():
        key = f"reply:twilio:{mid}"
        if turn and key in rows:
            row_of_turn[(sender, turn)] = key
    turns = {(s, t) for s, _st, t in by_id.values() if t}
    samples: list[str] = []
    lost_convs: set[str] = set()
    lost_messages = 0
    for j in sorted(acked):
        hook = hooks[j]
        found = by_id.get(hook.message_sid)
        reason = ""
        if found is None:
            reason = "acknowledged but not recorded"
        elif found[1] != "replied":
            reason = f"state {found[1]!r}"
        else:
            row_key = row_of_turn.get((found[0], found[2]))
            if row_key is not None and rows[row_key][1] != "delivered":
                reason = f"reply row {rows[row_key][1]!r}"
        if reason:
            lost_messages += 1
            lost_convs.add(hook.sender)
            if len(samples) < 5:
                samples.append(f"{hook.message_sid}: {reason}")
    expected: Counter[str] = Counter()
    delivered_rows = 0
    for to, state, parts, _attempts in rows.values():
        if state == "delivered" and to.startswith(CHAOS_PREFIX):
            expected[to] += parts
            delivered_rows += 1
    got = Counter(r.to for r in replies)
    duplicates = 0
    short_convs: set[str] = set()
    for conv in set(expected) | set(got):
        if got[conv] > expected[conv]:
            duplicates += got[conv] - expected[conv]
            if len(samples) < 10:
                samples.append(f"{conv[:6]}…: {got[conv]} replies for {expected[conv]} parts")
        elif got[conv] < expected[conv]:
            short_convs.add(conv)
    repeated = 0
    last: dict[str, str] = {}
    for r in sorted(replies, key=lambda r: r.at):
        repeated += last.get(r.to) == r.body
        last[r.to] = r.body
    return dict(
        messages_planned=len(hooks),
        conversations=conversations,
        deliveries=deliveries,
        deliveries_failed_over=failed_over,
        messages_sent=len(acked),
        messages_unacked=len(hooks) - len(acked),
        messages_recorded=len(by_id),
        turns=len(turns),
        replies=len(replies),
        reply_rows_delivered=delivered_rows,
        reply_parts_expected=sum(expected.values()),
        silent_turns=len(turns) - len(row_of_turn),
        lost_messages=lost_messages,
        conversations_with_lost=len(short_convs | lost_convs),
        duplicate_replies=duplicates,
        outbox_rows_retried=sum(
            1 for to, st, _p, a in rows.values() if to.startswith(CHAOS_PREFIX) and a > 1
        ),
        same_body_twice_in_a_row=repeated,
        states=dict(states),
        samples=samples,
    )


# --- report ---------------------------------------------------------------------------------


def _load_lines(results: list[LoadResult]) -> Iterator[str]:
    yield (
        f"{'store':<10} {'rate/s':>7} {'sent':>5} {'ack p50':>7} {'p95':>6} {'p99':>6} "
        f"{'max':>6} {'errors':>6} {'gw CPU':>6} {'client':>6}"
    )
    for r in results:
        yield (
            f"{r.store:<10} {r.achieved_rate:>7.0f} {r.sent:>5} {r.ack_p50_ms:>5.1f}ms "
            f"{r.ack_p95_ms:>4.0f}ms {r.ack_p99_ms:>4.0f}ms {r.ack_max_ms:>4.0f}ms "
            f"{r.errors:>6} {r.gateway_cpu_pct:>5.0f}% {r.client_cpu_pct:>5.0f}%"
        )
    yield ""
    yield (
        f"{'store':<10} {'messages':>8} {'turns':>6} {'replies':>7} {'backlog':>7} "
        f"{'drain':>6} {'turns/s':>7} {'replies/s':>9} {'answer p50':>10} {'p99':>7} "
        f"{'unanswered':>10}"
    )
    for r in results:
        yield (
            f"{r.store:<10} {r.messages_recorded:>8} {r.turns:>6} {r.replies:>7} "
            f"{r.backlog_at_load_end:>7} {r.drain_s:>5.1f}s {r.turns_per_s:>7.0f} "
            f"{r.replies_per_s:>9.0f} {r.answer_p50_ms:>8.0f}ms {r.answer_p99_ms:>5.0f}ms "
            f"{r.unanswered:>10}"
            + ("" if r.settled else "  (did not settle)")
            + ("  [paced 20/s]" if r.paced else "")
        )


def _chaos_lines(c: ChaosResult) -> Iterator[str]:
    yield (
        f"messages sent (unique) {c.messages_sent} of {c.messages_planned} over "
        f"{c.conversations} conversations, in {c.deliveries} deliveries "
        f"({c.deliveries_failed_over} failed over to the other replica); unacknowledged "
        f"{c.messages_unacked}"
    )
    yield (
        f"replica-1 SIGKILLed at {c.killed_at_s:.1f} s, restarted (ready at "
        f"{c.restarted_ready_s:.1f} s); in flight at the kill (both replicas): "
        f"{c.in_flight_at_kill.get('processing', 0)} messages in a turn, "
        f"{c.in_flight_at_kill.get('delivering', 0)} replies being sent; messages claimed "
        f"again after a lease ran out: {c.messages_reclaimed}; wall time {c.wall_s:.1f} s"
        + ("" if c.settled else "; did NOT settle")
    )
    yield (
        f"recorded {c.messages_recorded}, states {c.states}, turns {c.turns}, reply rows "
        f"delivered {c.reply_rows_delivered} ({c.reply_parts_expected} parts; "
        f"{c.outbox_rows_retried} needed a retry), replies at the stub {c.replies}, "
        f"silent turns {c.silent_turns}"
    )
    yield (
        f"LOST: {c.lost_messages} messages, {c.conversations_with_lost} conversations "
        f"short of replies;  DUPLICATES: {c.duplicate_replies} replies beyond the rows, "
        f"{c.parts_recorded_twice} parts recorded twice"
    )
    yield f"(info) same body twice in a row to one conversation: {c.same_body_twice_in_a_row}"
    for sample in c.samples:
        yield f"  {sample}"


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.messaging", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--parts", default="load,chaos", help="comma-separated: load, chaos")
    parser.add_argument(
        "--stores", default="sqlite,postgresql", help="load runs: sqlite, postgresql"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="webhooks per second (load)")
    parser.add_argument("--seconds", type=float, help="load duration (default 10; quick 4)")
    parser.add_argument("--senders", type=int, default=500, help="customers in the load")
    parser.add_argument("--burst-ms", type=int, default=500, help="burst_window_ms of the client")
    parser.add_argument(
        "--paced", action="store_true", help="keep the 20/s reply pacing in the load part"
    )
    parser.add_argument(
        "--chaos-messages", type=int, help="unique messages (default 300; quick 150)"
    )
    parser.add_argument("--chaos-conversations", type=int, help="(default 100; quick 50)")
    parser.add_argument("--chaos-seconds", type=float, help="send schedule (default 15; quick 8)")
    parser.add_argument("--seed", type=int, default=7, help="chaos randomness")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server for the throwaway databases (loopback)",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/7", help="Redis for PostgreSQL runs"
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (~1 min)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)

    seconds = args.seconds if args.seconds is not None else (4.0 if args.quick else 10.0)
    c_messages = args.chaos_messages or (150 if args.quick else 300)
    c_convs = args.chaos_conversations or (50 if args.quick else 100)
    c_seconds = args.chaos_seconds or (8.0 if args.quick else 15.0)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not parts or parts - {"load", "chaos"}:
        parser.error("--parts takes load and/or chaos")
    if "load" in parts and (not stores or set(stores) - {"sqlite", "postgresql"}):
        parser.error("--stores takes sqlite and/or postgresql")
    if not (0 < args.rate <= 5000 and 0 < seconds <= 600 and 0 < args.senders <= 10_000):
        parser.error("--rate in (0, 5000], --seconds in (0, 600], --senders in [1, 10000]")
    if not (0 < c_convs <= c_messages <= 20_000 and c_convs <= 10_000 and c_seconds > 0):
        parser.error("need 0 < --chaos-conversations <= --chaos-messages <= 20000")
    if not 0 <= args.burst_ms <= 30_000:
        parser.error("--burst-ms must be in [0, 30000]")
    if not (_loopback(args.postgres_url) and _loopback(args.redis_url)):
        parser.error("--postgres-url and --redis-url must be on loopback")
    postgres = pg_server(args.postgres_url)
    needs_pg = "chaos" in parts or ("load" in parts and "postgresql" in stores)
    if needs_pg:
        check_postgres(postgres, "leave out --stores postgresql and --parts chaos")
        check_redis(args.redis_url, "leave out --stores postgresql and --parts chaos")

    print(
        f"messaging bench: load {args.rate:g}/s x {seconds:g} s from {args.senders} senders on "
        f"{','.join(stores)}; chaos {c_messages} messages / {c_convs} conversations over "
        f"{c_seconds:g} s on 2 replicas; burst window {args.burst_ms} ms; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-messaging-"))
    load: list[LoadResult] = []
    chaos: ChaosResult | None = None
    try:
        clients_dir = clients_copy(workdir, args.burst_ms)
        if "load" in parts:
            load = asyncio.run(
                load_part(
                    stores, workdir, clients_dir, postgres, args.redis_url,
                    args.rate, seconds, args.senders, args.paced,
                )
            )  # fmt: skip
        if "chaos" in parts:
            chaos = asyncio.run(
                chaos_part(
                    c_messages, c_convs, c_seconds, args.seed, workdir, clients_dir,
                    postgres, args.redis_url,
                )
            )  # fmt: skip
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if load:
        print("\nWebhook acknowledgement (open loop; latency from the scheduled send time):")
        for line in _load_lines(load):
            print(line)
    if chaos is not None:
        print("\nChaos (2 replicas, PostgreSQL + Redis, duplicates, reordering, SIGKILL):")
        for line in _chaos_lines(chaos):
            print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "load": [asdict(r) for r in load],
            "chaos": (
                {**asdict(chaos), "lost": chaos.lost, "duplicates": chaos.duplicates}
                if chaos is not None
                else None
            ),
        }
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    ok = all(r.ok for r in load) and (chaos is None or chaos.ok)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Integrations benchmark: leads to HubSpot through the outbox, healthy and after an outage.

Both parts push to a HubSpot CRM v3 stand-in (``bench/_hubspot_stub.py``: a
threaded ``http.server`` on 127.0.0.1 in this process, ``POST
/crm/v3/objects/contacts/batch/upsert`` with ``Authorization: Bearer``, one
contact per email) through the gateway's own ``HubspotDeliverer``
(``providers/crm/hubspot.py``), unchanged: its pacing of 9 deliveries/s per
replica included, production ``WorkerOptions``.

**latency** — the real gateway (``tests/durability/gateway_proc.py``: uvicorn
in a child process, embedded SQLite, "now" pinned to Monday 2026-12-07 09:00
in Los Angeles) with the spa-del-sol client copied to a temporary folder and
set to ``crm.provider: hubspot`` (``HUBSPOT_BASE_URL`` = the stub).
``--bookings`` customers (default 30; quick 10), one after the other, each
book a Manicure on web chat in two turns ("I'd like to book a Manicure on
December 15 at 10:00 am. I'm Ana Souza, 415 555 0100, c0@example.com", then
"yes"), each its own slot. Measured per lead: the outbox row's ``created_ts``
(the turn's commit, the same transaction as the lead) -> the stub receiving
the upsert (**lead captured -> provider confirmed**), and -> the row marked
``delivered``. Printed: p50/p95/max of both, and the checks: one contact per
booking, every upsert with the bearer token and the ``crm.map``'ed properties
(``full_name``, ``phone``, ``email``, ``service_interest``).

**drain** — per database (``--databases sqlite,postgresql``), in this process:
``Database.open`` + ``Outbox`` + one ``OutboxWorker`` (production
``WorkerOptions``) with the gateway's ``HubspotDeliverer``. HubSpot is down
(503 to everything) while ``--leads`` (default 1000; quick 200) leads pile up:
enqueued through ``Outbox.enqueue`` as ``crm.hubspot`` rows exactly as the
turn's commit writes them (``engine.commit.crm_items``: key ``crm:<lead id>``,
payload ``LeadRecord.as_json()`` with the ``crm.map``'ed properties), and the
worker keeps trying (and backing off) for ``--outage-s`` (default 10; quick
4). Then the stub recovers with a rate limit: a 429 with ``Retry-After`` to
any request beyond ``--limit-per-s`` (default 10) in a sliding second
(HubSpot's Free/Starter burst limit is 100 per 10 s). Measured: recovery ->
every row ``delivered``; deliveries/s; 429s and 503s the worker got; and from
the stub: leads received, **lost** (never accepted) and **duplicates**
(accepted more than once), both must be 0.

The bench never asserts timings; it exits 1 on a lost or duplicated lead, a
dead row, a failed booking or a missing property/token. Loopback only;
PostgreSQL databases are ``gw_bench_<hex>`` on ``--postgres-url``, dropped
afterwards. About 2.5 minutes by default (the drain is paced at 9/s: 1000
leads take ~110 s), ``--quick`` under a minute.

    .venv/bin/python -m bench.integrations
    .venv/bin/python -m bench.integrations --quick --json /tmp/integrations.json
    .venv/bin/python -m bench.integrations --parts drain --databases sqlite,postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from bench._hubspot_stub import HubspotStub
from bench._server import HOST, ServerProcess, free_port
from bench._services import OffScript, chat_turn, check_postgres, pg_server, throwaway_postgres
from bench.web_chat import percentile

# The gateway's modules are imported inside the functions that use them.

REPO = Path(__file__).resolve().parents[1]
CLIENT = "spa-del-sol"
GATEWAY_PROC = REPO / "tests" / "durability" / "gateway_proc.py"
TOKEN = "pat-na1-bench0000-1111-2222-3333-444444444444"
NOW = "2026-12-07T17:00:00+00:00"  # Monday 09:00 in Los Angeles
DAYS = ["December 15", "December 16", "December 17", "December 18"]  # Tue..Fri, open 9-19+
SLOTS_PER_DAY = 16  # 10:00 am .. 5:30 pm, 30-minute Manicures
FIRST_SLOT_MIN = 10 * 60
MAX_BOOKINGS = SLOTS_PER_DAY * len(DAYS)
MAX_LEADS = 20_000
ENQUEUE_BATCH = 100
TURN_TIMEOUT_S = 60.0
MAPPED = ("full_name", "phone", "email", "service_interest")

FIRST = ["Ana", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas"]
LAST = ["Souza", "Ito", "Novak", "Quinn", "Reyes", "Berg", "Costa", "Doyle", "Ekström", "Fox"]


def person(n: int) -> tuple[str, str, str]:
    """Customer ``n``'s name, spoken phone number and email."""
    name = f"{FIRST[n % len(FIRST)]} {LAST[(n // len(FIRST)) % len(LAST)]}"
    return name, f"415 555 {100 + n % 9000:04d}", f"c{n}@example.com"


# --- part 1: lead captured -> provider confirmed, real gateway ---------------------------


class Gateway(ServerProcess):
    """``tests/durability/gateway_proc.py`` (uvicorn, "now" pinned) in a child process."""

    name = "gateway"
    poll_s = 0.1

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        self.ws_url = f"ws://{HOST}:{port}/web/chat/{CLIENT}"
        super().__init__(workdir, [sys.executable, str(GATEWAY_PROC), "--port", str(port)], env)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def hubspot_client_dir(workdir: Path) -> Path:
    """The reference client copied under ``workdir/clients``, ``crm.provider: hubspot``."""
    clients = workdir / "clients"
    shutil.copytree(REPO / "clients" / CLIENT, clients / CLIENT)
    config = clients / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "crm:\n  provider: local"
    if old not in text:
        raise SystemExit(f"clients/{CLIENT}/config.yaml: no `crm: provider: local` block to switch")
    line_end = text.index("\n", text.index(old) + len("crm:\n"))
    new = f"crm:\n  provider: hubspot\n  hubspot:\n    access_token: {TOKEN}"
    config.write_text(text[: text.index(old)] + new + text[line_end:], encoding="utf-8")
    return clients


def slot_of(n: int) -> tuple[str, str]:
    """Booking ``n``'s day and time (``December 15``, ``10:30 am``)."""
    day, slot = divmod(n, SLOTS_PER_DAY)
    hour, minute = divmod(FIRST_SLOT_MIN + 30 * slot, 60)
    return DAYS[day], f"{(hour - 1) % 12 + 1}:{minute:02d} {'am' if hour < 12 else 'pm'}"


async def book_once(ws_url: str, n: int) -> None:
    """Customer ``n`` books on web chat (two turns); OffScript if it did not book."""
    name, phone, email = person(n)
    day, at = slot_of(n)
    ask = f"I'd like to book a Manicure on {day} at {at}. I'm {name}, {phone}, {email}"
    async with connect(ws_url, open_timeout=TURN_TIMEOUT_S) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), TURN_TIMEOUT_S))
        if first.get("type") != "session":
            raise OffScript(f"expected a session event, got {first.get('type')!r}")
        offer = await chat_turn(ws, ask, TURN_TIMEOUT_S)
        if offer.get("metadata", {}).get("expecting") != "confirmation":
            raise OffScript(f"not offered the slot: {str(offer.get('text', ''))[:160]!r}")
        done = await chat_turn(ws, "yes", TURN_TIMEOUT_S)
        if done.get("metadata", {}).get("state") != "booked":
            raise OffScript(f"not booked: {str(done.get('text', ''))[:160]!r}")


@dataclass
class LatencyResult:
    bookings: int
    booked: int
    failed: int
    leads_in_outbox: int
    contacts: int
    duplicates: int
    missing: int
    wrong_token: int
    missing_properties: int
    confirmed_p50_ms: float
    confirmed_p95_ms: float
    confirmed_max_ms: float
    marked_p50_ms: float
    marked_p95_ms: float
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.failed == 0
            and self.duplicates == 0
            and self.missing == 0
            and self.wrong_token == 0
            and self.missing_properties == 0
            and self.contacts == self.booked
        )


def _outbox_rows(sqlite_file: Path) -> list[tuple[str, float, float | None, str]]:
    """(email, created_ts, delivered_ts, state) of every ``crm.hubspot`` row."""
    with sqlite3.connect(sqlite_file) as db:
        rows = db.execute(
            "SELECT payload, created_ts, delivered_ts, state FROM outbox WHERE kind = 'crm.hubspot'"
        ).fetchall()
    return [(str(json.loads(p)["email"]), float(c), d, str(s)) for p, c, d, s in rows]


async def wait_for(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def run_latency(bookings: int, workdir: Path) -> LatencyResult:
    """``bookings`` web chat bookings on a real gateway pushing to a healthy stub."""
    clients = hubspot_client_dir(workdir)
    data_dir = workdir / "latency-data"
    with HubspotStub(TOKEN) as stub:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GATEWAY_") and k not in ("REDIS_URL", "DATABASE_URL")
        }
        env = {
            **inherited,
            "GATEWAY_CLIENTS_DIR": str(clients),
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_TEST_NOW": NOW,
            "GATEWAY_EMBEDDER": "none",
            "GATEWAY_SPEECH_WARM_UP": "false",
            "GATEWAY_WEB_NEW_SESSIONS_PER_MIN": "1000000",
            "GATEWAY_WEB_RATE_PER_S": "1000000",
            "GATEWAY_WEB_RATE_BURST": "1000000",
            "HUBSPOT_BASE_URL": stub.url,
            "PYTHONPATH": str(REPO),
        }
        gateway = Gateway(workdir, env)
        failures: list[str] = []
        try:
            await asyncio.to_thread(gateway.wait_ready, 90.0)
            for n in range(bookings):
                try:
                    await book_once(gateway.ws_url, n)
                except (OffScript, TimeoutError, OSError, WebSocketException) as exc:
                    failures.append(f"customer {n}: {type(exc).__name__}: {exc}")
            booked = bookings - len(failures)
            await wait_for(lambda: len(stub.contacts) >= booked, 30.0)

            def settled() -> bool:
                rows = _outbox_rows(data_dir / "gateway.sqlite")
                return all(s in ("delivered", "dead") for *_, s in rows)

            await wait_for(settled, 10.0)
            await asyncio.sleep(0.5)  # anything delivered twice would arrive now
        finally:
            await asyncio.to_thread(gateway.stop)
        if failures:
            print(f"[gateway] log tail:\n{gateway.tail(15)}", file=sys.stderr)
        rows = _outbox_rows(data_dir / "gateway.sqlite")
        with stub.lock:
            accepted = list(stub.accepted)
    first_seen: dict[str, float] = {}
    for a in accepted:
        first_seen.setdefault(a.email, a.at)
    counts = Counter(a.email for a in accepted)
    confirmed = [first_seen[e] - c for e, c, _d, _s in rows if e in first_seen]
    marked = [d - c for _e, c, d, s in rows if s == "delivered" and d is not None]
    expected = {e for e, *_ in rows}
    return LatencyResult(
        bookings=bookings,
        booked=bookings - len(failures),
        failed=len(failures),
        leads_in_outbox=len(rows),
        contacts=len(counts),
        duplicates=sum(n - 1 for n in counts.values()),
        missing=len(expected - set(counts)),
        wrong_token=sum(a.authorization != f"Bearer {TOKEN}" for a in accepted),
        missing_properties=sum(any(not a.properties.get(p) for p in MAPPED) for a in accepted),
        confirmed_p50_ms=percentile(confirmed, 0.50) * 1000,
        confirmed_p95_ms=percentile(confirmed, 0.95) * 1000,
        confirmed_max_ms=max(confirmed, default=float("nan")) * 1000,
        marked_p50_ms=percentile(marked, 0.50) * 1000,
        marked_p95_ms=percentile(marked, 0.95) * 1000,
        failures=failures[:5],
    )


# --- part 2: drain after an outage ---------------------------------------------------------


def hubspot_registry() -> Any:
    """A ClientRegistry with the reference client set to ``crm.provider: hubspot``."""
    from engine.config import ClientRegistry, HubspotCrm, load_client

    config, problems = load_client(REPO / "clients" / CLIENT)
    if config is None:
        raise SystemExit(f"cannot load clients/{CLIENT}: {problems}")
    crm = config.crm.model_copy(
        update={"provider": "hubspot", "hubspot": HubspotCrm(access_token=TOKEN)}
    )
    return ClientRegistry(clients={CLIENT: config.model_copy(update={"crm": crm})})


def lead_items(run: str, leads: int, field_map: dict[str, str]) -> Iterator[Any]:
    """``leads`` outbox items shaped as ``engine.commit.crm_items`` writes them."""
    from datetime import UTC, datetime, timedelta

    from engine.outbox import OutboxItem
    from engine.payloads import LeadPush
    from engine.tools.crm import Lead, crm_outbox_key, new_record

    base = datetime(2026, 12, 15, 18, 0, tzinfo=UTC)
    for i in range(leads):
        name, phone, _ = person(i)
        start = base + timedelta(minutes=30 * (i % 16), days=i // 16)
        lead = Lead(
            client_id=CLIENT,
            channel="web",
            session_id=f"bench-{run}-{i:06d}",
            fields={
                "name": name,
                "phone": "+1" + phone.replace(" ", ""),
                "email": f"{run}-{i}@example.com",
                "service": "Manicure",
                "time": start.isoformat(),
            },
            booking_id=f"bk-{run}-{i:06d}",
            service="Manicure",
            start=start.isoformat(),
            end=(start + timedelta(minutes=30)).isoformat(),
        )
        record = new_record(lead, f"{run}{i:06d}", field_map, test=False)
        push = LeadPush.model_validate({**record.as_json(), "kind": "crm.hubspot"})
        yield OutboxItem(CLIENT, crm_outbox_key(record.lead_id), push)


@dataclass
class DrainResult:
    database: str
    leads: int
    outage_s: float
    limit_per_s: int
    enqueue_s: float
    attempts_during_outage: int
    drain_s: float
    deliveries_per_s: float
    status_503: int
    status_429: int
    requests_after_recovery: int
    received: int
    lost: int
    duplicates: int
    delivered_rows: int
    dead_rows: int
    max_attempts: int
    peak_requests_1s: int

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.dead_rows == 0
            and self.delivered_rows == self.leads
        )


def _peak(times: list[float], window: float = 1.0) -> int:
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def run_drain(
    database: str,
    url: str,
    leads: int,
    outage_s: float,
    limit_per_s: int,
    timeout_s: float = 600.0,
) -> DrainResult:
    """``leads`` pile up while the stub answers 503, then drain under its rate limit."""
    from engine.db.database import Database
    from engine.outbox import Outbox, OutboxWorker, WorkerOptions
    from engine.payloads import LeadPush
    from providers.crm.hubspot import HubspotDeliverer

    registry = hubspot_registry()
    run = uuid.uuid4().hex[:8]
    field_map = dict(registry.get(CLIENT).crm.map)
    items = list(lead_items(run, leads, field_map))
    emails = {str(item.payload.email) for item in items if isinstance(item.payload, LeadPush)}
    db = Database.open(url)
    http = httpx.AsyncClient()
    stub = HubspotStub(TOKEN, limit=(limit_per_s, 1.0)).start()
    arrivals: list[float] = []
    try:
        await db.upgrade()
        outbox = Outbox(db)
        worker = OutboxWorker(outbox, [HubspotDeliverer(registry, http, stub.url)], WorkerOptions())
        stub.down = True
        worker.start()
        try:
            started = time.perf_counter()
            for i in range(0, leads, ENQUEUE_BATCH):
                await outbox.enqueue(items[i : i + ENQUEUE_BATCH])
            enqueue_s = time.perf_counter() - started
            await asyncio.sleep(outage_s)
            with stub.lock:
                during = sum(stub.statuses.values())
                status_503 = stub.statuses[503]
                stub.statuses.clear()
                stub.down = False
            recovered = time.perf_counter()
            while True:
                counts, _ = await outbox.stats()
                if counts["delivered"] + counts["dead"] >= leads:
                    break
                if time.perf_counter() - recovered > timeout_s:
                    print(f"  [{database}] gave up after {timeout_s:g} s: {counts}")
                    break
                await asyncio.sleep(0.05)
            drain_s = time.perf_counter() - recovered
            await asyncio.sleep(0.5)  # a duplicate in flight would land now
        finally:
            await worker.stop()
        counts, _ = await outbox.stats()
        rows = await outbox.list(state="delivered", limit=leads + 10)
        max_attempts = max((r.attempts for r in rows), default=0)
        with stub.lock:
            accepted = list(stub.accepted)
            statuses = Counter(stub.statuses)
        arrivals = [a.at for a in accepted]
    finally:
        stub.stop()
        await http.aclose()
        await db.close()
    got = Counter(a.email for a in accepted)
    return DrainResult(
        database=database,
        leads=leads,
        outage_s=outage_s,
        limit_per_s=limit_per_s,
        enqueue_s=enqueue_s,
        attempts_during_outage=during,
        drain_s=drain_s,
        deliveries_per_s=counts["delivered"] / drain_s if drain_s else 0.0,
        status_503=status_503 + statuses[503],
        status_429=statuses[429],
        requests_after_recovery=sum(statuses.values()),
        received=len(set(got) & emails),
        lost=len(emails - set(got)),
        duplicates=sum(n - 1 for n in got.values()),
        delivered_rows=counts["delivered"],
        dead_rows=counts["dead"],
        max_attempts=max_attempts,
        peak_requests_1s=_peak(arrivals),
    )


async def drain_part(
    databases: list[str],
    leads: int,
    outage_s: float,
    limit_per_s: int,
    postgres: str,
    workdir: Path,
) -> list[DrainResult]:
    results = []
    for database in databases:
        if database == "sqlite":
            url = f"sqlite:///{workdir / f'drain-{uuid.uuid4().hex[:8]}.sqlite'}"
            result = await run_drain(database, url, leads, outage_s, limit_per_s)
        else:
            async with throwaway_postgres(postgres) as url:
                result = await run_drain(database, url, leads, outage_s, limit_per_s)
        results.append(result)
        print(
            f"  drain {database}: {result.delivered_rows}/{leads} delivered in "
            f"{result.drain_s:.1f} s",
            flush=True,
        )
    return results


# --- report --------------------------------------------------------------------------------


def _latency_lines(r: LatencyResult) -> Iterator[str]:
    yield (
        f"bookings {r.bookings} (booked {r.booked}, failed {r.failed}); leads in the outbox "
        f"{r.leads_in_outbox}; contacts at the stub {r.contacts}, duplicates {r.duplicates}, "
        f"missing {r.missing}"
    )
    yield (
        f"lead committed -> HubSpot received: p50 {r.confirmed_p50_ms:.0f} ms, "
        f"p95 {r.confirmed_p95_ms:.0f} ms, max {r.confirmed_max_ms:.0f} ms"
    )
    yield (
        f"lead committed -> row marked delivered: p50 {r.marked_p50_ms:.0f} ms, "
        f"p95 {r.marked_p95_ms:.0f} ms"
    )
    yield (
        f"upserts without the bearer token {r.wrong_token}, without a mapped property "
        f"({', '.join(MAPPED)}) {r.missing_properties}"
    )
    for failure in r.failures:
        yield f"  failure: {failure}"


def _drain_table(results: list[DrainResult]) -> Iterator[str]:
    yield (
        f"{'database':<10} {'leads':>5} {'outage':>6} {'503s':>5} {'drain s':>7} "
        f"{'deliv/s':>7} {'429s':>5} {'peak/s':>6} {'received':>8} {'lost':>4} "
        f"{'dupes':>5} {'dead':>4} {'max att':>7}"
    )
    for r in results:
        yield (
            f"{r.database:<10} {r.leads:>5} {r.outage_s:>5.0f}s {r.status_503:>5} "
            f"{r.drain_s:>7.1f} {r.deliveries_per_s:>7.2f} {r.status_429:>5} "
            f"{r.peak_requests_1s:>6} {r.received:>8} {r.lost:>4} {r.duplicates:>5} "
            f"{r.dead_rows:>4} {r.max_attempts:>7}"
        )


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.integrations", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--parts", default="latency,drain", help="comma-separated: latency, drain")
    parser.add_argument("--databases", default="sqlite", help="drain runs: sqlite, postgresql")
    parser.add_argument(
        "--bookings", type=int, help=f"web chat bookings (default 30; quick 10; max {MAX_BOOKINGS})"
    )
    parser.add_argument("--leads", type=int, help="leads piled up (default 1000; quick 200)")
    parser.add_argument("--outage-s", type=float, help="503 period (default 10; quick 4)")
    parser.add_argument(
        "--limit-per-s", type=int, default=10, help="the stub's rate limit after recovery"
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server for the throwaway databases (loopback)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer bookings and leads")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    bookings = args.bookings if args.bookings is not None else (10 if args.quick else 30)
    leads = args.leads if args.leads is not None else (200 if args.quick else 1000)
    outage_s = args.outage_s if args.outage_s is not None else (4.0 if args.quick else 10.0)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    databases = ["postgresql" if d == "postgres" else d for d in databases]
    if not parts or parts - {"latency", "drain"}:
        parser.error("--parts takes latency and/or drain")
    if "drain" in parts and (not databases or set(databases) - {"sqlite", "postgresql"}):
        parser.error("--databases takes sqlite and/or postgresql")
    if not 0 < bookings <= MAX_BOOKINGS:
        parser.error(f"--bookings must be in [1, {MAX_BOOKINGS}]")
    if not 0 < leads <= MAX_LEADS:
        parser.error(f"--leads must be in [1, {MAX_LEADS}]")
    if outage_s < 0 or args.limit_per_s < 1:
        parser.error("--outage-s must be >= 0 and --limit-per-s >= 1")
    if not _loopback(args.postgres_url):
        parser.error("--postgres-url must be on loopback")
    postgres = pg_server(args.postgres_url)
    if "drain" in parts and "postgresql" in databases:
        check_postgres(postgres, "leave out --databases postgresql")

    print(
        f"integrations bench: latency {bookings} web chat bookings; drain {leads} leads after "
        f"a {outage_s:g} s outage, stub limit {args.limit_per_s}/s, {','.join(databases)}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    # The drain's worker runs here: its per-retry warnings (hundreds during the
    # outage) are what the bench counts, not what it prints.
    logging.getLogger("engine.outbox").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-integrations-"))
    latency: LatencyResult | None = None
    drains: list[DrainResult] = []
    try:
        if "latency" in parts:
            latency = asyncio.run(run_latency(bookings, workdir))
            print(f"  latency: {latency.booked} booked, {latency.contacts} contacts", flush=True)
        if "drain" in parts:
            drains = asyncio.run(
                drain_part(databases, leads, outage_s, args.limit_per_s, postgres, workdir)
            )
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if latency is not None:
        print("\nLead captured -> provider confirmed (healthy HubSpot stub, real gateway, SQLite):")
        for line in _latency_lines(latency):
            print(line)
    if drains:
        print(
            f"\nDrain after an outage (HubSpot 503 for the outage, then 429 + Retry-After "
            f"beyond {args.limit_per_s}/s; the deliverer paces 9/s):"
        )
        for line in _drain_table(drains):
            print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "latency": asdict(latency) if latency is not None else None,
            "drain": [asdict(r) for r in drains],
        }
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    ok = (latency is None or latency.ok) and all(r.ok for r in drains)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

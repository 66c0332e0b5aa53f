"""``gateway db upgrade|current`` and ``gateway outbox list|show|retry|purge``,
run through the typer app on a real database (embedded SQLite, and PostgreSQL),
plus the outbox gauges the worker keeps on ``/metrics``.

The outbox is filled through the real :class:`~engine.outbox.Outbox`
(``enqueue``, ``claim``, ``settle``) with a clock set back in time, so rows have
known states, attempts, errors and ages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner, Result

from engine.db.database import Database
from engine.db.schema import OUTBOX
from engine.errors import StoreError
from engine.outbox import Deliverer, Outbox, OutboxItem, OutboxRow, OutboxWorker, WorkerOptions
from engine.payloads import CallAction, EscalationNotice, OutboxPayload
from engine.tools.notify import Escalation
from gateway.cli import app

REPO = Path(__file__).resolve().parents[1]
HEAD = Database.head_revision()
DAY_S = 86400.0
LONG_ERROR = "ToolError: slack answered 404\n" + "no such webhook; " * 20


class Clock:
    """Epoch seconds, ``offset_s`` away from the real time (the CLI reads the real one)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@dataclass(frozen=True)
class Spec:
    """One row to create: enqueued ``age_s`` ago, then settled ``settled_s`` ago."""

    kind: str
    client_id: str
    age_s: float
    state: str  # the state to leave it in; "pending" + error: a failed attempt
    settled_s: float = 0.0
    error: str | None = None


# Row ids follow this order (1..6).
ROWS = [
    Spec("notify.slack", "spa-del-sol", 10 * DAY_S, "delivered", settled_s=9 * DAY_S),
    Spec("notify.email", "spa-del-sol", 2 * 3600, "delivered", settled_s=3600),
    Spec("notify.slack", "other-spa", 3 * DAY_S, "dead", settled_s=3 * DAY_S, error=LONG_ERROR),
    Spec("notify.email", "spa-del-sol", 300, "pending", settled_s=290, error="SMTP timeout"),
    Spec("notify.slack", "spa-del-sol", 8 * DAY_S, "dead", settled_s=8 * DAY_S, error="410 Gone"),
    Spec("twilio.call", "spa-del-sol", 60, "untouched"),
]


def _payload(spec: Spec, n: int) -> OutboxPayload:
    """Row ``n``'s payload: its reason (or call) names a customer, Иван."""
    if spec.kind == "twilio.call":
        return CallAction(call_sid=f"CA-{n}-Иван", action="hangup")
    esc = Escalation(
        client_id=spec.client_id,
        client_name="Spa del Sol",
        channel="web",
        session_id=f"s-{n}",
        reason=f"row {n}: Иван asked for a person",
        who="Иван",
        contact=None,
        email=None,
        fields={},
        transcript=(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        escalation_id=f"esc-{n}",
    )
    return EscalationNotice(kind=spec.kind, escalation=esc)  # type: ignore[arg-type]


def _reason(payload: dict[str, object]) -> object:
    return json.loads(str(payload["escalation"]))["reason"]


async def _fill(db: Database) -> None:
    """Create :data:`ROWS` through the real outbox (each claimed just after it is enqueued)."""
    clock = Clock()
    outbox = Outbox(db, clock=clock)
    for n, spec in enumerate(ROWS, 1):
        clock.offset_s = -spec.age_s
        payload = _payload(spec, n)
        assert await outbox.enqueue([OutboxItem(spec.client_id, f"key-{n}", payload)])
        if spec.state == "untouched":
            continue
        (claimed,) = await outbox.claim("test-worker", 1, 60.0)
        assert claimed.id == n
        clock.offset_s = -spec.settled_s
        retry_at = clock() + DAY_S if spec.state == "pending" else None
        assert await outbox.settle(
            n,
            "test-worker",
            spec.state,  # type: ignore[arg-type]
            error=spec.error,
            next_attempt_ts=retry_at,
        )


def _fill_url(url: str) -> None:
    async def run() -> None:
        db = Database.open(url)
        try:
            await _fill(db)
        finally:
            await db.close()

    asyncio.run(run())


def _rows(url: str) -> dict[int, OutboxRow]:
    async def run() -> dict[int, OutboxRow]:
        db = Database.open(url)
        try:
            return {r.id: r for r in await Outbox(db).list(limit=1000)}
        finally:
            await db.close()

    return asyncio.run(run())


@dataclass
class Cli:
    """The typer app with the environment of one deployment."""

    env: dict[str, str | None]
    data_dir: Path

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'gateway.sqlite'}"

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.exit_code == 0, (args, result.output)
        return result.output


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    data_dir = tmp_path / "data"
    env: dict[str, str | None] = {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_CLIENTS_DIR": str(REPO / "clients"),
        "DATABASE_URL": None,
        "REDIS_URL": None,
        "COLUMNS": "200",  # rich's usage-error box: one line per message
    }
    return Cli(env, data_dir)


@pytest.fixture
def filled(cli: Cli) -> Cli:
    """``gateway db upgrade`` on an empty data folder, then :data:`ROWS`."""
    cli.ok("db", "upgrade")
    _fill_url(cli.sqlite_url)
    return cli


# -- gateway db --------------------------------------------------------------------------
def test_db_current_on_empty_data_dir_exits_1_without_creating_it(cli: Cli) -> None:
    result = cli("db", "current")
    assert result.exit_code == 1, result.output
    assert "current:  (empty)" in result.output
    assert f"head:     {HEAD}" in result.output
    assert "run `gateway db upgrade`" in result.output
    assert not (cli.data_dir / "gateway.sqlite").exists()


def test_db_upgrade_creates_schema_and_current_reports_head(cli: Cli) -> None:
    out = cli.ok("db", "upgrade")
    db_file = cli.data_dir / "gateway.sqlite"
    assert out.strip() == (
        f"the embedded SQLite database {db_file} (GATEWAY_DATA_DIR): (empty) -> {HEAD}"
    )
    with sqlite3.connect(db_file) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"outbox", "leads", "bookings", "sessions"} <= tables, tables
    assert revision == HEAD

    out = cli.ok("db", "current")
    assert f"current:  {HEAD}" in out
    assert f"head:     {HEAD}" in out
    assert "already at" in cli.ok("db", "upgrade")


def test_db_current_on_empty_existing_database_exits_1(cli: Cli) -> None:
    cli.data_dir.mkdir()
    sqlite3.connect(cli.data_dir / "gateway.sqlite").close()  # a file, no schema
    result = cli("db", "current")
    assert result.exit_code == 1, result.output
    assert "current:  (empty)" in result.output


def test_unreachable_postgres_is_one_line_naming_it(cli: Cli) -> None:
    cli.env["DATABASE_URL"] = "postgresql://gw:s3cret-pw@127.0.0.1:1/gateway"  # nothing listens
    for args in (("db", "current"), ("outbox", "list")):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith("error: cannot use the PostgreSQL database 'gateway' at ")
        assert "127.0.0.1:1" in lines[0]
        assert "s3cret-pw" not in lines[0]


def test_bad_database_url_is_usage_error(cli: Cli) -> None:
    cli.env["DATABASE_URL"] = "mysql://db.example/gateway"
    result = cli("outbox", "list")
    assert result.exit_code == 2, result.output
    assert "DATABASE_URL: unsupported database URL scheme 'mysql'" in result.output


def test_outbox_commands_need_a_migrated_database(cli: Cli) -> None:
    result = cli("outbox", "list")
    assert result.exit_code == 1, result.output
    assert "does not exist yet: run `gateway db upgrade`" in result.output
    assert not (cli.data_dir / "gateway.sqlite").exists()  # inspecting creates nothing

    cli.data_dir.mkdir()
    sqlite3.connect(cli.data_dir / "gateway.sqlite").close()
    result = cli("outbox", "retry")
    assert result.exit_code == 1, result.output
    assert f"has schema (none), this gateway needs {HEAD}: run `gateway db upgrade`" in (
        result.output
    )


# -- gateway outbox list / show ----------------------------------------------------------
def _table(output: str) -> dict[int, list[str]]:
    """Rows of the list table by id: the cells split on runs of 2+ spaces."""
    import re

    lines = output.strip().splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == [
        "ID",
        "KIND",
        "CLIENT",
        "STATE",
        "ATTEMPTS",
        "AGE",
        "LAST ERROR",
    ]
    rows = {}
    for line in lines[1:]:
        if line.startswith("("):
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows[int(cells[0])] = cells[1:]
    return rows


def test_list_shows_every_row_newest_first(filled: Cli) -> None:
    out = filled.ok("outbox", "list")
    table = _table(out)
    assert list(table) == [6, 5, 4, 3, 2, 1]
    assert table[6] == ["twilio.call", "spa-del-sol", "pending", "0", "1m"]
    assert table[4] == ["notify.email", "spa-del-sol", "pending", "1", "5m", "SMTP timeout"]
    assert table[2] == ["notify.email", "spa-del-sol", "delivered", "1", "2h"]
    assert table[1][:4] == ["notify.slack", "spa-del-sol", "delivered", "1"]
    assert table[1][4] in ("10d", "10d0h")
    kind, client, state, attempts, age, error = table[3]
    assert (kind, client, state, attempts, age) == ("notify.slack", "other-spa", "dead", "1", "3d")
    # The error, on one line and cut short.
    assert error.startswith("ToolError: slack answered 404 no such webhook;")
    assert error.endswith("…") and len(error) <= 72
    assert "Иван" not in out  # payloads only in show / --json


def test_list_filters_and_limit(filled: Cli) -> None:
    assert list(_table(filled.ok("outbox", "list", "--state", "dead"))) == [5, 3]
    assert list(_table(filled.ok("outbox", "list", "--client", "other-spa"))) == [3]
    both = filled.ok("outbox", "list", "--client", "spa-del-sol", "--state", "pending")
    assert list(_table(both)) == [6, 4]
    limited = filled.ok("outbox", "list", "--limit", "2")
    assert list(_table(limited)) == [6, 5]
    assert "(the newest 2; --limit for more)" in limited
    assert filled.ok("outbox", "list", "--client", "nobody").strip() == "no outbox rows match"

    result = filled("outbox", "list", "--state", "lost")
    assert result.exit_code == 2, result.output
    assert "--state" in result.output


def test_list_json_has_full_rows(filled: Cli) -> None:
    rows = json.loads(filled.ok("outbox", "list", "--json", "--state", "dead"))
    assert [r["id"] for r in rows] == [5, 3]
    assert rows[1]["last_error"] == LONG_ERROR
    assert _reason(rows[1]["payload"]) == "row 3: Иван asked for a person"
    assert rows[1]["idempotency_key"] == "key-3"
    assert json.loads(filled.ok("outbox", "list", "--json", "--client", "x")) == []


def test_show_prints_the_full_row(filled: Cli) -> None:
    row = json.loads(filled.ok("outbox", "show", "4"))
    assert row["id"] == 4
    assert row["state"] == "pending"
    assert row["attempts"] == 1
    assert row["last_error"] == "SMTP timeout"
    assert row["kind"] == "notify.email"
    assert _reason(row["payload"]) == "row 4: Иван asked for a person"
    assert row["next_attempt_ts"] > time.time() + DAY_S / 2  # waiting out its backoff

    result = filled("outbox", "show", "99")
    assert result.exit_code == 1, result.output
    assert "error: no outbox row with id 99" in result.output


# -- gateway outbox retry ----------------------------------------------------------------
def test_retry_dead_rows(filled: Cli) -> None:
    out = filled.ok("outbox", "retry", "--client", "spa-del-sol")
    assert out.strip() == "retried 1 dead row"
    rows = _rows(filled.sqlite_url)
    assert (rows[5].state, rows[5].attempts) == ("pending", 0)
    assert rows[5].next_attempt_ts <= time.time()  # due now
    assert rows[3].state == "dead"  # another client's

    assert filled.ok("outbox", "retry").strip() == "retried 1 dead row"
    assert _rows(filled.sqlite_url)[3].state == "pending"
    assert filled.ok("outbox", "retry").strip() == "retried 0 dead rows"


def test_retry_by_id(filled: Cli) -> None:
    out = filled.ok("outbox", "retry", "3", "2")
    assert "#2 not retried: it is delivered, not dead" in out
    assert out.strip().endswith("retried 1 dead row")
    rows = _rows(filled.sqlite_url)
    assert rows[3].state == "pending"
    assert rows[5].state == "dead"  # not named
    assert rows[2].state == "delivered"

    # A row waiting out its backoff, made due now.
    assert "retried 1 pending row" in filled.ok("outbox", "retry", "--state", "pending", "4")
    assert _rows(filled.sqlite_url)[4].next_attempt_ts <= time.time()


def test_retry_unknown_id_changes_nothing(filled: Cli) -> None:
    result = filled("outbox", "retry", "5", "77", "78")
    assert result.exit_code == 1, result.output
    assert "error: no outbox rows with ids 77, 78; nothing changed" in result.output
    assert _rows(filled.sqlite_url)[5].state == "dead"


# -- gateway outbox purge ----------------------------------------------------------------
def test_purge_delivered_older_than(filled: Cli) -> None:
    assert filled.ok("outbox", "purge", "--older-than", "7d").strip() == ("purged 1 delivered row")
    assert sorted(_rows(filled.sqlite_url)) == [2, 3, 4, 5, 6]
    assert filled.ok("outbox", "purge", "--older-than", "90m").strip() == (
        "purged 0 delivered rows"
    )
    assert filled.ok("outbox", "purge", "--older-than", "30m").strip() == "purged 1 delivered row"
    assert sorted(_rows(filled.sqlite_url)) == [3, 4, 5, 6]


def test_purge_dead_by_client_and_id(filled: Cli) -> None:
    out = filled.ok("outbox", "purge", "--state", "dead", "--client", "other-spa")
    assert out.strip() == "purged 1 dead row"
    out = filled.ok("outbox", "purge", "--state", "dead", "5", "4")
    assert "#4 not purged: it is pending, not dead" in out
    assert out.strip().endswith("purged 1 dead row")
    assert sorted(_rows(filled.sqlite_url)) == [1, 2, 4, 6]


def test_purge_never_touches_pending_rows(filled: Cli) -> None:
    for state in ("pending", "delivering"):
        result = filled("outbox", "purge", "--state", state)
        assert result.exit_code == 2, result.output
        assert f"error: {state} rows are never purged" in result.output
    filled.ok("outbox", "purge")
    filled.ok("outbox", "purge", "--state", "dead")
    rows = _rows(filled.sqlite_url)
    assert sorted(rows) == [4, 6]
    assert {r.state for r in rows.values()} == {"pending"}


@pytest.mark.parametrize("bad", ["7", "7x", "d", "-3d", "1w", ""])
def test_purge_bad_duration_is_usage_error(filled: Cli, bad: str) -> None:
    result = filled("outbox", "purge", "--older-than", bad)
    assert result.exit_code == 2, result.output
    assert "is not a duration: use e.g. 7d, 12h, 30m or 90s" in result.output
    assert len(_rows(filled.sqlite_url)) == len(ROWS)


def test_purge_unknown_id(filled: Cli) -> None:
    result = filled("outbox", "purge", "1", "42")
    assert result.exit_code == 1, result.output
    assert "error: no outbox row with id 42; nothing changed" in result.output
    assert 1 in _rows(filled.sqlite_url)


# -- PostgreSQL --------------------------------------------------------------------------
@pytest.mark.postgres
def test_db_upgrade_and_outbox_list_on_postgres(cli: Cli, postgres_url: str) -> None:
    cli.env["DATABASE_URL"] = postgres_url
    name = postgres_url.rsplit("/", 1)[1]
    result = cli("db", "current")
    assert result.exit_code == 1, result.output
    assert "current:  (empty)" in result.output

    out = cli.ok("db", "upgrade")
    assert out.startswith(f"the PostgreSQL database {name!r} at ")
    assert out.strip().endswith(f"(DATABASE_URL): (empty) -> {HEAD}")
    assert f"current:  {HEAD}" in cli.ok("db", "current")

    _fill_url(postgres_url)
    table = _table(cli.ok("outbox", "list", "--state", "dead"))
    assert list(table) == [5, 3]
    assert table[5] == ["notify.slack", "spa-del-sol", "dead", "1", "8d", "410 Gone"]
    assert cli.ok("outbox", "retry", "5").strip() == "retried 1 dead row"
    assert cli.ok("outbox", "purge", "--older-than", "7d").strip() == "purged 1 delivered row"
    assert sorted(_rows(postgres_url)) == [2, 3, 4, 5, 6]
    assert not (cli.data_dir / "gateway.sqlite").exists()  # DATABASE_URL, not the data dir


# -- the worker's gauges -----------------------------------------------------------------
class HeldDeliverer(Deliverer):
    """Delivers ``kind`` rows when the test lets it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.release = asyncio.Event()

    async def deliver(self, row: OutboxRow) -> None:
        await self.release.wait()


def _gauge(state: str | None = None) -> float | None:
    if state is None:
        return REGISTRY.get_sample_value("gateway_outbox_oldest_pending_seconds")
    return REGISTRY.get_sample_value("gateway_outbox_items", {"state": state})


async def _until(what: str, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database.embedded(tmp_path)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


async def test_worker_updates_outbox_gauges(database: Database) -> None:
    await _fill(database)  # 2 delivered, 2 dead, row 4 pending until tomorrow, row 6 due now
    outbox = Outbox(database)
    held = HeldDeliverer("twilio.call")
    worker = OutboxWorker(outbox, [held], WorkerOptions(poll_s=0.05, stats_s=0.05))
    worker.start()
    try:
        # Row 6 (a minute old) is claimed and held: delivering.
        await _until("row 6 delivering", lambda: _gauge("delivering") == 1)
        assert [_gauge(s) for s in ("pending", "delivered", "dead")] == [1, 2, 2]
        oldest = _gauge()
        assert oldest is not None and 300 <= oldest < 330  # row 4, five minutes old

        held.release.set()
        await _until("row 6 delivered", lambda: _gauge("delivered") == 3)
        assert [_gauge(s) for s in ("pending", "delivering", "dead")] == [1, 0, 2]

        async with database.write() as conn:
            await conn.execute(OUTBOX.delete())
        await _until("an empty outbox", lambda: _gauge("delivered") == 0 and _gauge() == 0)
        assert [_gauge(s) for s in ("pending", "delivering", "dead")] == [0, 0, 0]
    finally:
        await worker.stop()


class BrokenStats(Outbox):
    async def stats(self) -> tuple[dict[str, int], float]:
        raise StoreError("database read failed (sqlite): OperationalError")


async def test_gauge_errors_are_logged_not_fatal(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.outbox")
    outbox = BrokenStats(database)
    held = HeldDeliverer("twilio.call")
    held.release.set()
    worker = OutboxWorker(outbox, [held], WorkerOptions(poll_s=0.05, stats_s=0.05))
    worker.start()
    try:
        await outbox.enqueue(
            [OutboxItem("spa-del-sol", "k", CallAction(call_sid="CA1", action="hangup"))]
        )

        def failures() -> int:
            return sum("reading the outbox gauges failed" in r.getMessage() for r in caplog.records)

        await _until("a few failed gauge reads", lambda: failures() >= 3)
        row = await outbox.get(1)
        assert row is not None and row.state == "delivered"  # the worker went on
    finally:
        await worker.stop()
    assert "outbox: reading the outbox gauges failed: database read failed (sqlite)" in (
        caplog.text
    )
    assert worker._task is not None and worker._task.exception() is None

"""The outbox (``engine.outbox``): the table's repository and the delivering worker.

Every test runs on SQLite and on a real PostgreSQL (``database_url``). Time is
a fake clock (epoch seconds) shared by the outbox and the worker; deliverers
are fakes implementing :class:`Deliverer` (no network). Tests that start the
worker's loop assert outcomes with generous timeouts, never durations.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from fakes import FakeClock

from engine.db.database import Database
from engine.db.fast import Tx
from engine.errors import GatewayError, ToolError
from engine.outbox import Deliverer, Outbox, OutboxItem, OutboxRow, OutboxWorker, WorkerOptions
from engine.payloads import TwilioMessage, UnreadablePayload

T0 = 1_800_000_000.0
CLIENT = "spa-del-sol"
KIND = "message.twilio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def outbox(db: Database, clock: FakeClock) -> Outbox:
    return Outbox(db, clock=clock)


def message(text: str = "Call back 王伟") -> TwilioMessage:
    return TwilioMessage(to="+14155550100", parts=({"Body": text},), text=text)


def item(key: str = "esc-1:slack", text: str = "Call back 王伟") -> OutboxItem:
    return OutboxItem(CLIENT, key, message(text))


async def insert_raw(outbox: Outbox, key: str, kind: str, payload: str) -> None:
    """A row as another version (or a damaged database) might hold it."""

    async def body(tx: Tx) -> int:
        return await tx.execute(
            "INSERT INTO outbox (idempotency_key, client_id, kind, payload, state, attempts,"
            " next_attempt_ts, created_ts, updated_ts)"
            " VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
            key,
            CLIENT,
            kind,
            payload,
            outbox.clock(),
        )

    assert await outbox.db.fast.transaction(body) == 1


async def enqueue(outbox: Outbox, *items: OutboxItem) -> int:
    """Enqueue in a transaction of the caller's, as a turn commit does (no wake)."""

    async def body(tx: Tx) -> int:
        return await outbox.enqueue_in(tx, items)

    return await outbox.db.fast.transaction(body)


async def only_row(outbox: Outbox) -> OutboxRow:
    rows = await outbox.list()
    assert len(rows) == 1, rows
    return rows[0]


# -- fake deliverers ----------------------------------------------------------------------


class Recording(Deliverer):
    kind = KIND

    def __init__(self) -> None:
        self.seen: list[OutboxRow] = []

    async def deliver(self, row: OutboxRow) -> None:
        self.seen.append(row)


class Failing(Deliverer):
    """Raises ``error`` on every delivery."""

    kind = KIND

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    async def deliver(self, row: OutboxRow) -> None:
        self.calls += 1
        raise self.error


class RateLimited(ToolError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("slack", "429 Too Many Requests", retryable=True)
        self.retry_after_s = retry_after_s


class Slow(Deliverer):
    """Takes ``seconds`` per delivery; ``started`` is set when the first begins."""

    kind = KIND

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.finished: list[int] = []

    async def deliver(self, row: OutboxRow) -> None:
        self.started.set()
        await asyncio.sleep(self.seconds)
        self.finished.append(row.id)


class Throttled(Recording):
    rate_per_s = 5.0


def worker_for(outbox: Outbox, *deliverers: Deliverer, **options: Any) -> OutboxWorker:
    return OutboxWorker(
        outbox,
        list(deliverers),
        WorkerOptions(**{"base_backoff_s": 2.0, "max_backoff_s": 60.0, **options}),
        rng=random.Random(0),
    )


async def wait_for_state(outbox: Outbox, row_id: int, state: str, timeout_s: float = 10) -> None:
    async def poll() -> None:
        while True:
            row = await outbox.get(row_id)
            if row is not None and row.state == state:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


# -- the repository -----------------------------------------------------------------------


async def test_enqueue_is_idempotent_by_key(outbox: Outbox) -> None:
    assert await enqueue(outbox, item(text="first"), item(text="second")) == 1
    assert await enqueue(outbox, item(text="third")) == 0
    assert await enqueue(outbox, item("esc-1:email", text="mail")) == 1

    rows = {r.key: r for r in await outbox.list()}
    assert set(rows) == {"esc-1:slack", "esc-1:email"}
    slack = rows["esc-1:slack"]
    assert slack.payload == message("first")
    assert (slack.state, slack.attempts, slack.client_id, slack.kind) == (
        "pending",
        0,
        CLIENT,
        KIND,
    )
    assert slack.next_attempt_ts == slack.created_ts == T0


async def test_enqueue_in_a_rolled_back_transaction_leaves_nothing(outbox: Outbox) -> None:
    async def body(tx: Tx) -> None:
        await outbox.enqueue_in(tx, [item()])
        raise RuntimeError("the turn failed")

    with pytest.raises(RuntimeError):
        await outbox.db.fast.transaction(body)
    assert await outbox.list() == []


async def test_enqueue_outside_a_turn_wakes_the_worker(outbox: Outbox) -> None:
    assert await outbox.enqueue([item(text="Call back 王伟")]) == 1
    await asyncio.wait_for(outbox.wait(30), 5)
    assert (await only_row(outbox)).payload == message("Call back 王伟")


async def test_claim_marks_delivering_and_counts_the_attempt(outbox: Outbox) -> None:
    await enqueue(outbox, item())
    [row] = await outbox.claim("w1", limit=10, claim_s=60)
    assert row.state == "delivering"
    assert row.attempts == 1
    assert row.key == "esc-1:slack"
    assert (await only_row(outbox)).state == "delivering"


async def test_claim_takes_only_due_rows_up_to_the_limit(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, *(item(f"k{i}") for i in range(5)))
    first = await outbox.claim("w1", limit=3, claim_s=60)
    assert len(first) == 3
    rest = await outbox.claim("w2", limit=10, claim_s=60)
    assert len(rest) == 2
    assert {r.id for r in first}.isdisjoint(r.id for r in rest)
    assert await outbox.claim("w3", limit=10, claim_s=60) == []

    # A row due later is not claimed before its time.
    assert await outbox.settle(rest[0].id, "w2", "pending", next_attempt_ts=T0 + 30)
    assert await outbox.claim("w3", limit=10, claim_s=60) == []
    clock.advance(30)
    [again] = await outbox.claim("w3", limit=10, claim_s=60)
    assert again.id == rest[0].id


async def test_a_claimed_row_is_redelivered_after_its_claim_lapses(
    outbox: Outbox, clock: FakeClock
) -> None:
    await enqueue(outbox, item())
    [row] = await outbox.claim("w1", limit=10, claim_s=60)

    clock.advance(60)
    assert await outbox.claim("w2", limit=10, claim_s=60) == []
    clock.advance(1)  # w1 died holding the claim
    [again] = await outbox.claim("w2", limit=10, claim_s=60)
    assert again.id == row.id
    assert again.attempts == 2

    # w1 comes back and reports: the row is no longer its to settle.
    assert await outbox.settle(row.id, "w1", "delivered") is False
    assert (await only_row(outbox)).state == "delivering"
    assert await outbox.settle(row.id, "w2", "delivered") is True
    settled = await only_row(outbox)
    assert (settled.state, settled.delivered_ts) == ("delivered", clock.now)
    assert await outbox.settle(row.id, "w2", "delivered") is False


async def test_concurrent_claims_by_two_replicas_are_disjoint(
    database_url: str, outbox: Outbox, clock: FakeClock
) -> None:
    await enqueue(outbox, *(item(f"k{i:02d}") for i in range(40)))
    dbs = [Database.open(database_url), Database.open(database_url)]
    try:
        replicas = [Outbox(d, clock=clock) for d in dbs]

        async def drain(replica: Outbox, worker_id: str) -> list[int]:
            taken: list[int] = []
            while rows := await replica.claim(worker_id, limit=4, claim_s=60):
                taken.extend(r.id for r in rows)
                await asyncio.sleep(0)
            return taken

        a, b = await asyncio.gather(drain(replicas[0], "w1"), drain(replicas[1], "w2"))
    finally:
        for d in dbs:
            await d.close()
    assert set(a).isdisjoint(b)
    assert len(a) + len(b) == 40
    assert {r.id for r in await outbox.list(limit=100)} == set(a) | set(b)
    assert all(r.attempts == 1 for r in await outbox.list(limit=100))


async def test_retry_brings_dead_rows_back(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, item("a"), item("b"))
    rows = await outbox.claim("w1", limit=10, claim_s=60)
    for row in rows:
        assert await outbox.settle(row.id, "w1", "dead", error="slack: 404 no_service")
    clock.advance(10)

    assert await outbox.retry(ids=[rows[0].id]) == 1
    revived = await outbox.get(rows[0].id)
    assert revived is not None
    assert (revived.state, revived.attempts, revived.next_attempt_ts) == ("pending", 0, clock.now)
    assert await outbox.retry(client_id="another-client") == 0
    assert await outbox.retry() == 1
    assert {r.state for r in await outbox.list()} == {"pending"}
    assert len(await outbox.claim("w1", limit=10, claim_s=60)) == 2


async def test_purge_removes_old_settled_rows_only(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, item("delivered"), item("dead"))
    claimed = {r.key: r for r in await outbox.claim("w1", limit=2, claim_s=60)}
    assert await outbox.settle(claimed["delivered"].id, "w1", "delivered")
    assert await outbox.settle(claimed["dead"].id, "w1", "dead", error="permanent")
    await enqueue(outbox, item("pending"))
    clock.advance(100)

    with pytest.raises(ValueError, match="only delivered or dead"):
        await outbox.purge(state="pending")
    with pytest.raises(ValueError):
        await outbox.purge(state="delivering")
    assert await outbox.purge(older_than_s=200) == 0
    assert await outbox.purge(state="dead", older_than_s=200) == 0
    assert await outbox.purge(older_than_s=50) == 1
    assert await outbox.purge(state="dead", older_than_s=50) == 1
    assert [r.state for r in await outbox.list()] == ["pending"]


async def test_stats_count_states_and_the_oldest_undelivered_age(
    outbox: Outbox, clock: FakeClock
) -> None:
    assert await outbox.stats() == (
        {"pending": 0, "delivering": 0, "delivered": 0, "dead": 0},
        0.0,
    )
    await enqueue(outbox, item("a"))
    clock.advance(10)
    await enqueue(outbox, item("b"), item("c"), item("d"))
    [first] = await outbox.claim("w1", limit=1, claim_s=60)
    assert first.key == "a"
    clock.advance(5)
    counts, oldest = await outbox.stats()
    assert counts == {"pending": 3, "delivering": 1, "delivered": 0, "dead": 0}
    assert oldest == pytest.approx(15.0)

    await outbox.settle(first.id, "w1", "delivered")
    counts, oldest = await outbox.stats()
    assert counts == {"pending": 3, "delivering": 0, "delivered": 1, "dead": 0}
    assert oldest == pytest.approx(5.0)


# -- the worker ---------------------------------------------------------------------------


async def test_success_is_delivered_once(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, item())
    deliverer = Recording()
    worker = worker_for(outbox, deliverer)

    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert [r.key for r in deliverer.seen] == ["esc-1:slack"]
    assert deliverer.seen[0].payload == message("Call back 王伟")
    row = await only_row(outbox)
    assert (row.state, row.attempts, row.delivered_ts, row.last_error) == (
        "delivered",
        1,
        clock.now,
        None,
    )


async def test_retryable_failure_backs_off_exponentially_with_jitter(
    outbox: Outbox, clock: FakeClock
) -> None:
    await enqueue(outbox, item())
    deliverer = Failing(ToolError("slack", "503 Service Unavailable", retryable=True))
    worker = worker_for(outbox, deliverer, base_backoff_s=2.0, max_backoff_s=60.0)

    for attempt in (1, 2, 3, 4):
        assert await worker.run_once() == 1
        row = await only_row(outbox)
        assert row.state == "pending"
        assert row.attempts == attempt
        assert row.last_error == "slack: 503 Service Unavailable"
        assert clock.now <= row.next_attempt_ts <= clock.now + 2.0 * 2 ** (attempt - 1)
        assert await worker.run_once() == 0  # not due yet
        clock.now = row.next_attempt_ts
    assert deliverer.calls == 4


async def test_backoff_is_capped(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, item())
    worker = worker_for(
        outbox, Failing(ToolError("slack", "503", retryable=True)), max_backoff_s=3.0
    )
    for _ in range(6):
        assert await worker.run_once() == 1
        row = await only_row(outbox)
        assert clock.now <= row.next_attempt_ts <= clock.now + 3.0
        clock.now = row.next_attempt_ts


async def test_retry_after_from_the_vendor_is_honoured(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, item())
    worker = worker_for(outbox, Failing(RateLimited(retry_after_s=30)))
    assert await worker.run_once() == 1
    row = await only_row(outbox)
    assert row.state == "pending"
    assert row.next_attempt_ts >= clock.now + 30
    clock.advance(29)
    assert await worker.run_once() == 0


async def test_permanent_failure_is_dead_at_once(outbox: Outbox) -> None:
    await enqueue(outbox, item())
    deliverer = Failing(ToolError("slack", "404 no_service", retryable=False))
    worker = worker_for(outbox, deliverer)
    assert await worker.run_once() == 1
    row = await only_row(outbox)
    assert (row.state, row.attempts, row.last_error) == ("dead", 1, "slack: 404 no_service")
    assert await worker.run_once() == 0
    assert deliverer.calls == 1


async def test_other_gateway_errors_are_permanent(outbox: Outbox) -> None:
    await enqueue(outbox, item())
    worker = worker_for(outbox, Failing(GatewayError("client config has no escalation target")))
    assert await worker.run_once() == 1
    assert (await only_row(outbox)).state == "dead"


async def test_row_is_dead_after_max_attempts(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, item())
    deliverer = Failing(ToolError("smtp", "connection refused", retryable=True))
    worker = worker_for(outbox, deliverer, max_attempts=3)
    states = []
    for _ in range(3):
        assert await worker.run_once() == 1
        row = await only_row(outbox)
        states.append(row.state)
        clock.now = max(clock.now, row.next_attempt_ts)
    assert states == ["pending", "pending", "dead"]
    assert (await only_row(outbox)).attempts == 3
    clock.advance(3600)
    assert await worker.run_once() == 0
    assert deliverer.calls == 3


async def test_row_older_than_max_age_is_dead_on_failure(outbox: Outbox, clock: FakeClock) -> None:
    await enqueue(outbox, item())
    clock.advance(1000)
    worker = worker_for(outbox, Failing(ToolError("slack", "503", retryable=True)), max_age_s=500)
    assert await worker.run_once() == 1
    row = await only_row(outbox)
    assert (row.state, row.attempts) == ("dead", 1)


async def test_an_old_row_that_succeeds_is_still_delivered(
    outbox: Outbox, clock: FakeClock
) -> None:
    await enqueue(outbox, item())
    clock.advance(1000)
    assert await worker_for(outbox, Recording(), max_age_s=500).run_once() == 1
    assert (await only_row(outbox)).state == "delivered"


async def test_kind_without_a_deliverer_is_retried_not_lost(
    outbox: Outbox, clock: FakeClock
) -> None:
    await insert_raw(outbox, "page-1", "notify.pager", '{"text": "a newer version\'s kind"}')
    worker = worker_for(outbox, Recording())
    assert await worker.run_once() == 1
    row = await only_row(outbox)
    assert row.state == "pending"
    assert row.last_error is not None and "no deliverer for kind 'notify.pager'" in row.last_error
    assert row.next_attempt_ts >= clock.now


async def test_a_payload_that_does_not_parse_is_dead_and_the_others_are_delivered(
    outbox: Outbox,
) -> None:
    await enqueue(outbox, item("a"))
    # message.twilio without its 'to' and with empty parts (another version's
    # shape, or a damaged row), and one that is not even JSON
    await insert_raw(outbox, "bad", KIND, '{"channel": "whatsapp", "parts": [], "text": "hi"}')
    await insert_raw(outbox, "garbled", KIND, '{"to": "+1415')
    await enqueue(outbox, item("b"))
    deliverer = Recording()
    worker = worker_for(outbox, deliverer)

    assert await worker.run_once() == 4
    assert sorted(r.key for r in deliverer.seen) == ["a", "b"]  # never handed the bad ones
    rows = {r.key: r for r in await outbox.list()}
    assert (rows["a"].state, rows["b"].state) == ("delivered", "delivered")
    bad, garbled = rows["bad"], rows["garbled"]
    assert (bad.state, bad.attempts, garbled.state) == ("dead", 1, "dead")
    assert bad.last_error == (
        "outbox: payload of kind 'message.twilio' does not parse: to: Field required;"
        " parts: Tuple should have at least 1 item after validation, not 0"
    )
    assert garbled.last_error == (
        "outbox: payload of kind 'message.twilio' does not parse: not valid JSON (JSONDecodeError)"
    )
    # the operator still sees what is stored
    assert isinstance(bad.payload, UnreadablePayload)
    assert bad.as_json()["payload"] == {"channel": "whatsapp", "parts": [], "text": "hi"}
    assert garbled.as_json()["payload"] == '{"to": "+1415'
    assert garbled.as_json()["payload_error"] == garbled.last_error.removeprefix("outbox: ")
    assert "payload_error" not in rows["a"].as_json()


async def test_a_bug_in_a_deliverer_is_retried(outbox: Outbox) -> None:
    await enqueue(outbox, item())
    worker = worker_for(outbox, Failing(KeyError("escalation")))
    assert await worker.run_once() == 1
    row = await only_row(outbox)
    assert row.state == "pending"
    assert row.last_error == "KeyError: 'escalation'"


async def test_rate_limited_kind_still_delivers_every_row(outbox: Outbox) -> None:
    await enqueue(outbox, item("a"), item("b"), item("c"))
    deliverer = Throttled()
    assert await worker_for(outbox, deliverer).run_once() == 3
    assert sorted(r.key for r in deliverer.seen) == ["a", "b", "c"]
    assert {r.state for r in await outbox.list()} == {"delivered"}


async def test_stop_waits_for_an_in_flight_delivery(outbox: Outbox) -> None:
    await enqueue(outbox, item())
    deliverer = Slow(0.2)
    worker = worker_for(outbox, deliverer, poll_s=0.05, drain_s=10)
    worker.start()
    try:
        await asyncio.wait_for(deliverer.started.wait(), 10)
    finally:
        await worker.stop()
    row = await only_row(outbox)
    assert deliverer.finished == [row.id]
    assert row.state == "delivered"


async def test_delivery_cut_off_at_shutdown_is_redelivered_after_its_claim(
    outbox: Outbox, clock: FakeClock
) -> None:
    await enqueue(outbox, item())
    stuck = Slow(3600)
    worker = worker_for(outbox, stuck, poll_s=0.05, drain_s=0.05, claim_s=60)
    worker.start()
    try:
        await asyncio.wait_for(stuck.started.wait(), 10)
    finally:
        await worker.stop()
    assert stuck.finished == []
    assert (await only_row(outbox)).state == "delivering"

    clock.advance(61)
    deliverer = Recording()
    assert await worker_for(outbox, deliverer).run_once() == 1
    row = await only_row(outbox)
    assert (row.state, row.attempts) == ("delivered", 2)
    assert len(deliverer.seen) == 1


class ObservedOutbox(Outbox):
    """An Outbox that tells the test when a claim came back empty."""

    def __init__(self, db: Database, clock: FakeClock) -> None:
        super().__init__(db, clock=clock)
        self.idle = asyncio.Event()

    async def claim(self, worker_id: str, limit: int, claim_s: float) -> list[OutboxRow]:
        rows = await super().claim(worker_id, limit, claim_s)
        if not rows:
            self.idle.set()
        return rows


async def test_wake_makes_a_started_worker_deliver_promptly(db: Database, clock: FakeClock) -> None:
    outbox = ObservedOutbox(db, clock)
    deliverer = Recording()
    # The poll is far longer than the test's timeout: only wake() can do it.
    worker = OutboxWorker(outbox, [deliverer], WorkerOptions(poll_s=600))
    worker.start()
    try:
        await asyncio.wait_for(outbox.idle.wait(), 10)  # the worker found nothing
        await enqueue(outbox, item())
        outbox.wake()
        row = (await outbox.list())[0]
        await wait_for_state(outbox, row.id, "delivered", timeout_s=10)
    finally:
        await worker.stop()
    assert [r.key for r in deliverer.seen] == ["esc-1:slack"]


async def test_housekeeping_runs_on_the_workers_first_pass(outbox: Outbox) -> None:
    ran = asyncio.Event()
    # "every housekeeping_s" must not mean "once the host has been up that long".
    worker = OutboxWorker(
        outbox, [Recording()], WorkerOptions(poll_s=0.05, housekeeping_s=1e9), housekeeping=ran.set
    )
    worker.start()
    try:
        await asyncio.wait_for(ran.wait(), 3)
    finally:
        await worker.stop()


async def test_failing_housekeeping_does_not_stop_the_worker(outbox: Outbox) -> None:
    failed = asyncio.Event()

    async def housekeeping() -> None:
        failed.set()
        raise RuntimeError("purge failed")

    deliverer = Recording()
    # housekeeping_s=0 runs it on every pass, whatever the host's uptime.
    worker = OutboxWorker(
        outbox,
        [deliverer],
        WorkerOptions(poll_s=0.05, housekeeping_s=0),
        housekeeping=housekeeping,
    )
    worker.start()
    try:
        await asyncio.wait_for(failed.wait(), 10)
        await enqueue(outbox, item())
        outbox.wake()
        row = (await outbox.list())[0]
        await wait_for_state(outbox, row.id, "delivered", timeout_s=10)
    finally:
        await worker.stop()
    assert len(deliverer.seen) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"poll_s": 0},
        {"claim_s": -1},
        {"base_backoff_s": 0},
        {"drain_s": 0},
        {"batch": 0},
        {"concurrency": 0},
        {"max_attempts": 0},
        {"stats_s": 0},
    ],
)
def test_worker_options_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="WorkerOptions"):
        WorkerOptions(**options)

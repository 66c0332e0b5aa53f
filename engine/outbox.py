"""The outbox: side effects delivered exactly once, even when the process dies.

A turn never calls a vendor. It writes what must happen — a Slack message,
an email, a Twilio call update — as an outbox row, in the same transaction as
the rest of the turn (:mod:`engine.commit`), keyed by an **idempotency key**
(``enqueue_in`` ignores a key it already holds). The :class:`OutboxWorker`
(one per replica, owned by the app's lifespan) delivers rows:

- **claim**: rows ``pending`` and due, or ``delivering`` whose claim expired
  (the replica delivering them died), are claimed for ``claim_s`` seconds;
  on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so replicas never take the
  same row;
- **deliver** with the row's kind's :class:`Deliverer`, which gets the key to
  pass on where the vendor supports idempotency, and the row's payload parsed
  (:mod:`engine.payloads`: one frozen type per shape, read once with the row);
  a payload that does not parse is never handed to a deliverer: the row goes
  ``dead`` at once, its ``last_error`` naming the kind and the problem;
- **success** -> ``delivered``; a retryable failure -> ``pending`` again after
  an exponential backoff with full jitter (``base_backoff_s * 2**attempts``,
  capped at ``max_backoff_s``), or the vendor's ``Retry-After`` when it sent
  one; a permanent failure, ``max_attempts`` attempts, or a row older than
  ``max_age_s`` -> ``dead`` (``gateway outbox retry`` brings it back);
- **rate limits** per kind (token buckets, deliveries per second);
- **shutdown**: stop claiming, let in-flight deliveries finish for up to
  ``drain_s`` seconds; anything cut off is redelivered after its claim lapses.

A delivery that succeeded at the vendor but whose ``delivered`` mark was lost
(a crash between the two) is delivered again: at-least-once at the vendor,
made exactly-once wherever the vendor honours the idempotency key (email
``Message-ID``, Twilio call updates are idempotent by nature).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import sqlalchemy as sa
from prometheus_client import Counter

from engine.db.database import Database
from engine.db.fast import Row, Tx
from engine.db.schema import OUTBOX
from engine.errors import GatewayError, StoreError, ToolError
from engine.logs import describe
from engine.metrics import OUTBOX_ITEMS, OUTBOX_OLDEST_PENDING_SECONDS
from engine.payloads import (
    OutboxPayload,
    Payload,
    UnreadablePayload,
    read_payload,
    stored_payload,
)

__all__ = [
    "Deliverer",
    "Outbox",
    "OutboxItem",
    "OutboxPayload",
    "OutboxRow",
    "OutboxWorker",
    "WorkerOptions",
]

log = logging.getLogger("engine.outbox")

State = Literal["pending", "delivering", "delivered", "dead"]
STATES: tuple[State, ...] = ("pending", "delivering", "delivered", "dead")

DELIVERIES = Counter(
    "gateway_outbox_deliveries_total",
    "Outbox delivery attempts by kind and result (delivered, retry, dead)",
    ["kind", "result"],
)


P = TypeVar("P", bound=Payload)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A side effect to deliver: ``payload`` says what (its type gives the row's
    kind); ``key`` is the idempotency key (the same effect always gets the same key)."""

    client_id: str
    key: str
    payload: OutboxPayload

    @property
    def kind(self) -> str:
        return self.payload.kind


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A row of the outbox. ``payload``: parsed when the row was read, or an
    :class:`~engine.payloads.UnreadablePayload` when it does not parse."""

    id: int
    key: str
    client_id: str
    kind: str
    payload: OutboxPayload | UnreadablePayload
    state: str
    attempts: int
    next_attempt_ts: float
    last_error: str | None
    created_ts: float
    updated_ts: float
    delivered_ts: float | None

    def as_json(self) -> dict[str, object]:
        """The row for the admin views: the payload as stored (JSON), and for a
        payload that does not parse, ``payload_error`` saying why."""
        out: dict[str, object] = {
            "id": self.id,
            "idempotency_key": self.key,
            "client_id": self.client_id,
            "kind": self.kind,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_ts": self.next_attempt_ts,
            "last_error": self.last_error,
            "created_ts": self.created_ts,
            "updated_ts": self.updated_ts,
            "delivered_ts": self.delivered_ts,
        }
        if isinstance(self.payload, UnreadablePayload):
            out["payload"] = self.payload.as_json()
            out["payload_error"] = self.payload.error
        else:
            out["payload"] = stored_payload(self.payload)
        return out

    def payload_as(self, payload_type: type[P]) -> P:
        """The payload, if it is a ``payload_type`` (a deliverer's narrowing); else
        a non-retryable ToolError naming the kind (the row goes dead)."""
        payload = self.payload
        if isinstance(payload, payload_type):
            return payload
        if isinstance(payload, UnreadablePayload):
            raise ToolError(self.kind, payload.error, retryable=False)
        raise ToolError(
            self.kind,
            f"outbox row #{self.id}: the payload is a {type(payload).__name__},"
            f" not a {payload_type.__name__}",
            retryable=False,
        )


_ROW_COLUMNS = (
    "id, idempotency_key, client_id, kind, payload, state, attempts, next_attempt_ts,"
    " last_error, created_ts, updated_ts, delivered_ts"
)


def _row_of(r: Row) -> OutboxRow:
    return OutboxRow(
        id=int(r[0]),
        key=str(r[1]),
        client_id=str(r[2]),
        kind=str(r[3]),
        payload=read_payload(str(r[3]), str(r[4])),
        state=str(r[5]),
        attempts=int(r[6]),
        next_attempt_ts=float(r[7]),
        last_error=None if r[8] is None else str(r[8]),
        created_ts=float(r[9]),
        updated_ts=float(r[10]),
        delivered_ts=None if r[11] is None else float(r[11]),
    )


def _row(r: sa.Row[tuple[object, ...]]) -> OutboxRow:
    m = r._mapping
    return OutboxRow(
        id=int(m["id"]),
        key=str(m["idempotency_key"]),
        client_id=str(m["client_id"]),
        kind=str(m["kind"]),
        payload=read_payload(str(m["kind"]), str(m["payload"])),
        state=str(m["state"]),
        attempts=int(m["attempts"]),
        next_attempt_ts=float(m["next_attempt_ts"]),
        last_error=None if m["last_error"] is None else str(m["last_error"]),
        created_ts=float(m["created_ts"]),
        updated_ts=float(m["updated_ts"]),
        delivered_ts=None if m["delivered_ts"] is None else float(m["delivered_ts"]),
    )


class Outbox:
    """The outbox table: enqueue (inside a transaction), claim, settle, inspect.

    ``clock``: epoch seconds (tests move it). ``on_enqueue``: called after a
    commit that enqueued something, to wake this replica's worker.
    """

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell this replica's worker that rows are waiting (call after the commit)."""
        self._wake.set()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()

    async def enqueue_in(self, tx: Tx, items: Sequence[OutboxItem]) -> int:
        """Insert ``items`` in the caller's transaction; a key already present is
        skipped (that effect is already on its way). Returns rows inserted."""
        inserted = 0
        now = self.clock()
        for item in items:
            inserted += await tx.execute(
                "INSERT INTO outbox (idempotency_key, client_id, kind, payload, state, attempts,"
                " next_attempt_ts, created_ts, updated_ts)"
                " VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)"
                " ON CONFLICT (idempotency_key) DO NOTHING",
                item.key,
                item.client_id,
                item.kind,
                json.dumps(stored_payload(item.payload), ensure_ascii=False),
                now,
            )
        return inserted

    async def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Enqueue outside a turn (its own transaction) and wake the worker."""

        async def write(tx: Tx) -> int:
            return await self.enqueue_in(tx, items)

        count = await self.db.fast.transaction(write)
        self.wake()
        return count

    async def claim(self, worker_id: str, limit: int, claim_s: float) -> list[OutboxRow]:
        """Take up to ``limit`` due rows for ``claim_s`` seconds (PostgreSQL:
        ``FOR UPDATE SKIP LOCKED``, so two replicas never take the same row)."""
        now = self.clock()
        lock = "" if self.db.is_sqlite else " FOR UPDATE SKIP LOCKED"

        async def write(tx: Tx) -> list[Row]:
            return await tx.fetchall(
                "UPDATE outbox SET state = 'delivering', attempts = attempts + 1,"
                " claimed_until_ts = $1, claimed_by = $2, updated_ts = $3"
                " WHERE id IN (SELECT id FROM outbox WHERE"
                " (state = 'pending' AND next_attempt_ts <= $3)"
                " OR (state = 'delivering' AND claimed_until_ts < $3)"
                f" ORDER BY next_attempt_ts LIMIT $4{lock})"
                f" RETURNING {_ROW_COLUMNS}",
                now + claim_s,
                worker_id,
                now,
                limit,
            )

        rows = [_row_of(r) for r in await self.db.fast.transaction(write)]
        return sorted(rows, key=lambda r: (r.next_attempt_ts, r.id))

    async def settle(
        self,
        row_id: int,
        worker_id: str,
        state: State,
        *,
        error: str | None = None,
        next_attempt_ts: float | None = None,
    ) -> bool:
        """Record a delivery's outcome, if this worker still holds the claim."""
        now = self.clock()

        async def write(tx: Tx) -> int:
            return await tx.execute(
                "UPDATE outbox SET state = $3, updated_ts = $4, claimed_until_ts = NULL,"
                " claimed_by = NULL, last_error = $5,"
                " delivered_ts = COALESCE($7, delivered_ts),"
                " next_attempt_ts = COALESCE($6, next_attempt_ts)"
                " WHERE id = $1 AND state = 'delivering' AND claimed_by = $2",
                row_id,
                worker_id,
                state,
                now,
                error,
                next_attempt_ts,
                now if state == "delivered" else None,
            )

        return bool(await self.db.fast.transaction(write))

    # -- inspection and operator commands ----------------------------------------------
    async def list(
        self, *, client_id: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[OutboxRow]:
        query = sa.select(OUTBOX).order_by(OUTBOX.c.id.desc()).limit(limit)
        if client_id:
            query = query.where(OUTBOX.c.client_id == client_id)
        if state:
            query = query.where(OUTBOX.c.state == state)
        async with self.db.read() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def get(self, row_id: int) -> OutboxRow | None:
        async with self.db.read() as conn:
            r = (await conn.execute(sa.select(OUTBOX).where(OUTBOX.c.id == row_id))).first()
        return None if r is None else _row(r)

    def _filter(
        self, query: sa.Update | sa.Delete, client_id: str | None, ids: Sequence[int]
    ) -> sa.Update | sa.Delete:
        if client_id:
            query = query.where(OUTBOX.c.client_id == client_id)
        if ids:
            query = query.where(OUTBOX.c.id.in_(list(ids)))
        return query

    async def retry(
        self, *, client_id: str | None = None, state: str = "dead", ids: Sequence[int] = ()
    ) -> int:
        """Make rows in ``state`` (default: dead) pending again, due now, with a fresh
        attempt count. Returns how many."""
        now = self.clock()
        query = (
            OUTBOX.update()
            .where(OUTBOX.c.state == state)
            .values(state="pending", attempts=0, next_attempt_ts=now, updated_ts=now)
        )
        async with self.db.write() as conn:
            result = await conn.execute(self._filter(query, client_id, ids))
        self.wake()
        return int(result.rowcount or 0)

    async def purge(
        self,
        *,
        client_id: str | None = None,
        state: str = "delivered",
        older_than_s: float = 0.0,
        ids: Sequence[int] = (),
    ) -> int:
        """Delete rows in ``state`` (``delivered`` or ``dead``) last touched more than
        ``older_than_s`` seconds ago. Pending rows are never purged."""
        if state not in ("delivered", "dead"):
            raise ValueError("only delivered or dead rows can be purged")
        query = (
            OUTBOX.delete()
            .where(OUTBOX.c.state == state)
            .where(OUTBOX.c.updated_ts <= self.clock() - older_than_s)
        )
        async with self.db.write() as conn:
            result = await conn.execute(self._filter(query, client_id, ids))
        return int(result.rowcount or 0)

    async def stats(self) -> tuple[dict[str, int], float]:
        """Rows per state, and the age in seconds of the oldest row not yet delivered."""
        async with self.db.read() as conn:
            counts = {
                r.state: int(r.n)
                for r in await conn.execute(
                    sa.select(OUTBOX.c.state, sa.func.count().label("n")).group_by(OUTBOX.c.state)
                )
            }
            oldest = (
                await conn.execute(
                    sa.select(sa.func.min(OUTBOX.c.created_ts)).where(
                        OUTBOX.c.state.in_(("pending", "delivering"))
                    )
                )
            ).scalar_one_or_none()
        age = 0.0 if oldest is None else max(0.0, self.clock() - float(oldest))
        return {s: counts.get(s, 0) for s in STATES}, age


class Deliverer(ABC):
    """Delivers one kind of outbox row. Raise :class:`~engine.errors.ToolError`
    (``retryable`` decides retry vs dead; an attribute ``retry_after_s`` is
    honoured) or any GatewayError; other exceptions count as retryable bugs.
    The row's payload is parsed already: take it with
    ``row.payload_as(ItsType)`` (a row whose payload does not parse never
    reaches a deliverer)."""

    kind: str
    rate_per_s: float | None = None
    """Deliveries per second allowed for this kind on one replica (None: no limit)."""

    @abstractmethod
    async def deliver(self, row: OutboxRow) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Times in seconds. Validated on construction."""

    poll_s: float = 1.0
    claim_s: float = 60.0
    batch: int = 16
    concurrency: int = 8
    max_attempts: int = 12
    max_age_s: float = 2 * 24 * 3600
    base_backoff_s: float = 1.0
    max_backoff_s: float = 15 * 60
    drain_s: float = 10.0
    housekeeping_s: float = 300.0
    stats_s: float = 5.0
    """How often the worker refreshes the ``gateway_outbox_items`` and
    ``gateway_outbox_oldest_pending_seconds`` gauges from the table."""

    def __post_init__(self) -> None:
        for name in ("poll_s", "claim_s", "base_backoff_s", "max_backoff_s", "drain_s", "stats_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"WorkerOptions.{name} must be > 0")
        if self.batch < 1 or self.concurrency < 1 or self.max_attempts < 1:
            raise ValueError("WorkerOptions.batch, concurrency and max_attempts must be >= 1")


@dataclass
class _Bucket:
    rate: float
    tokens: float = 1.0
    at: float = field(default_factory=time.monotonic)

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


class OutboxWorker:
    """Claims and delivers outbox rows until stopped. One per replica.

    ``housekeeping``: called every ``options.housekeeping_s`` (purging expired
    sessions and marks), errors logged, never fatal. The outbox gauges
    (:mod:`engine.metrics`) are refreshed every ``options.stats_s`` the same way.
    """

    def __init__(
        self,
        outbox: Outbox,
        deliverers: Sequence[Deliverer],
        options: WorkerOptions | None = None,
        *,
        housekeeping: Callable[[], object] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.deliverers = {d.kind: d for d in deliverers}
        self.options = options or WorkerOptions()
        self.housekeeping = housekeeping
        self.id = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:8]}"
        self._rng = rng or random.Random()
        self._buckets = {
            d.kind: _Bucket(d.rate_per_s) for d in deliverers if d.rate_per_s is not None
        }
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self) -> None:
        """Stop claiming; wait up to ``drain_s`` for in-flight deliveries, then cancel them."""
        self._stopping.set()
        self.outbox.wake()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=self.options.drain_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim one batch and deliver it (tests and ``gateway outbox`` use this)."""
        rows = await self.outbox.claim(self.id, self.options.batch, self.options.claim_s)
        await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _run(self) -> None:
        last_housekeeping = -math.inf
        last_stats = -math.inf
        while not self._stopping.is_set():
            claimed = 0
            try:
                free = max(1, min(self.options.batch, self._free_slots()))
                rows = await self.outbox.claim(self.id, free, self.options.claim_s)
                claimed = len(rows)
                for row in rows:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._deliver_slot(row))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                if time.monotonic() - last_housekeeping > self.options.housekeeping_s:
                    last_housekeeping = time.monotonic()
                    await self._housekeeping()
            except StoreError as exc:
                log.warning("outbox: claim failed: %s", exc)
            except Exception as exc:
                log.error("outbox: worker loop error: %s", describe(exc))
            if time.monotonic() - last_stats >= self.options.stats_s:
                last_stats = time.monotonic()
                await self._update_gauges()
            if claimed == 0 and not self._stopping.is_set():
                await self.outbox.wait(self.options.poll_s)

    def _free_slots(self) -> int:
        return self.options.concurrency - len(self._inflight)

    async def _housekeeping(self) -> None:
        if self.housekeeping is None:
            return
        try:
            result = self.housekeeping()
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            log.warning("outbox: housekeeping failed: %s", type(exc).__name__)

    async def _update_gauges(self) -> None:
        try:
            counts, oldest_s = await self.outbox.stats()
        except StoreError as exc:
            log.warning("outbox: reading the outbox gauges failed: %s", exc)
            return
        except Exception as exc:
            log.error("outbox: reading the outbox gauges failed: %s", describe(exc))
            return
        for state, count in counts.items():
            OUTBOX_ITEMS.labels(state).set(count)
        OUTBOX_OLDEST_PENDING_SECONDS.set(oldest_s)

    async def _deliver_slot(self, row: OutboxRow) -> None:
        try:
            await self._deliver(row)
        finally:
            self._slots.release()

    async def _deliver(self, row: OutboxRow) -> None:
        opts = self.options
        deliverer = self.deliverers.get(row.kind)
        retryable, retry_after, reason = True, None, ""
        try:
            if deliverer is None:
                raise ToolError("outbox", f"no deliverer for kind {row.kind!r}", retryable=True)
            if isinstance(row.payload, UnreadablePayload):
                # Another version's row, or a damaged one: no retry will parse it.
                # Dead with the reason; `gateway outbox retry` once it is fixed.
                raise ToolError("outbox", row.payload.error, retryable=False)
            bucket = self._buckets.get(row.kind)
            if bucket is not None:
                await bucket.take()
            await deliverer.deliver(row)
        except asyncio.CancelledError:
            raise
        except ToolError as exc:
            retryable, reason = exc.retryable, str(exc)
            retry_after = getattr(exc, "retry_after_s", None)
        except GatewayError as exc:
            retryable, reason = False, str(exc)
        except Exception as exc:
            log.error("outbox: %s delivery %d raised %s", row.kind, row.id, describe(exc))
            reason = f"{type(exc).__name__}: {exc}"
        else:
            await self._settle(row, "delivered")
            DELIVERIES.labels(row.kind, "delivered").inc()
            log.info("outbox: delivered %s #%d (attempt %d)", row.kind, row.id, row.attempts)
            return
        now = self.outbox.clock()
        too_old = now - row.created_ts > opts.max_age_s
        if not retryable or row.attempts >= opts.max_attempts or too_old:
            await self._settle(row, "dead", error=reason)
            DELIVERIES.labels(row.kind, "dead").inc()
            log.error(
                "outbox: %s #%d is dead after %d attempt(s): %s",
                row.kind,
                row.id,
                row.attempts,
                reason,
            )
            return
        backoff = self._backoff(row.attempts)
        delay = max(backoff, retry_after) if retry_after is not None else backoff
        await self._settle(row, "pending", error=reason, next_attempt_ts=now + delay)
        DELIVERIES.labels(row.kind, "retry").inc()
        log.warning(
            "outbox: %s #%d failed (attempt %d), retry in %.1f s: %s",
            row.kind,
            row.id,
            row.attempts,
            delay,
            reason,
        )

    def _backoff(self, attempts: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempts-1))], at least 50 ms."""
        opts = self.options
        ceiling = min(opts.max_backoff_s, opts.base_backoff_s * 2 ** max(0, attempts - 1))
        return max(0.05, self._rng.uniform(0, ceiling))

    async def _settle(
        self,
        row: OutboxRow,
        state: State,
        *,
        error: str | None = None,
        next_attempt_ts: float | None = None,
    ) -> None:
        try:
            ok = await self.outbox.settle(
                row.id,
                self.id,
                state,
                error=error and error[:2000],
                next_attempt_ts=next_attempt_ts,
            )
        except StoreError as exc:
            # The claim lapses and the row is delivered again: at-least-once.
            log.error("outbox: could not record %s for #%d: %s", state, row.id, exc)
            return
        if not ok:
            log.warning("outbox: #%d was reclaimed by another worker meanwhile", row.id)

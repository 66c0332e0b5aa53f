"""The messaging inbox and worker on the real engine and database: every
message answered exactly once, retries are no-ops in every state, bursts
merged into one turn, provider order kept, a message arriving mid-turn
answered next, and a lease that ran out taken over without a second reply."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from channels.whatsapp.inbox import InboundClaimLost, Inbox, ThreadKey
from channels.whatsapp.models import InboundMessage
from channels.whatsapp.worker import MessagingWorker, ReplyHook
from engine.contract import TurnOptions
from engine.db.fast import Tx
from engine.messages import Channel, NormalizedMessage
from engine.session import SessionKey, Turn
from gateway.app import Gateway

CLIENT = "spa-del-sol"
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
ANA = "+14155550142"
BUSINESS = "+14155550123"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gw_options() -> dict[str, object]:
    """``gw`` (tests/conftest.py) at :data:`NOW`."""
    return {"clock": lambda: NOW}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def inbox_of(gw: Gateway, clock: Clock, lease_s: float = 60.0) -> Inbox:
    return Inbox(gw.db, gw.locks, clock=clock, lease_s=lease_s)


def worker_of(gw: Gateway, inbox: Inbox) -> MessagingWorker:
    return MessagingWorker(inbox, gw.registry, gw.engine, gw.outbox)


def msg(message_id: str, text: str, ts: float, sender: str = ANA) -> InboundMessage:
    return InboundMessage(
        provider="twilio",
        channel="whatsapp",
        client_id=CLIENT,
        message_id=message_id,
        sender=sender,
        kind="text",
        text=text,
        business=BUSINESS,
        timestamp=ts,
    )


async def replies(gw: Gateway) -> list[dict[str, object]]:
    async def read(tx: Tx) -> list[tuple[object, ...]]:
        return await tx.fetchall(
            "SELECT idempotency_key, kind, payload FROM outbox WHERE kind = 'message.twilio'"
            " ORDER BY id"
        )

    rows = await gw.db.fast.query(read)
    return [{"key": r[0], **json.loads(str(r[2]))} for r in rows]


async def user_lines(gw: Gateway, sender: str = ANA) -> list[str]:
    loaded = await gw.store.load(SessionKey(CLIENT, "whatsapp", sender))
    assert loaded is not None
    return [t.text for t in loaded.session.transcript if isinstance(t, Turn) and t.role == "user"]


async def answer_all(worker: MessagingWorker) -> int:
    started = await worker.look()
    await worker.idle()
    return started


async def test_each_message_is_answered_once_and_retries_in_every_state_are_no_ops(
    gw: Gateway, clock: Clock
) -> None:
    inbox = inbox_of(gw, clock)
    worker = worker_of(gw, inbox)
    first = msg("SM1", "I'd like to book a massage", clock.now)
    assert await inbox.record(first) is True
    assert await inbox.record(first) is False  # a retry while received
    clock.now += 2  # past the burst window
    assert await answer_all(worker) == 1
    assert await inbox.states("twilio", "SM1") == "replied"
    assert await inbox.record(first) is False  # a retry after the reply
    clock.now += 2
    assert await answer_all(worker) == 0
    (reply,) = await replies(gw)
    assert reply["key"] == "reply:twilio:SM1" and reply["to"] == ANA
    assert reply["from"] == f"whatsapp:{BUSINESS}"
    assert await user_lines(gw) == ["I'd like to book a massage"]


async def test_a_burst_is_one_turn_in_the_provider_s_order(gw: Gateway, clock: Clock) -> None:
    inbox = inbox_of(gw, clock)
    worker = worker_of(gw, inbox)
    sent = clock.now
    # arrival order differs from the order they were sent in
    await inbox.record(msg("SM3", "on Friday at 2pm", sent + 2))
    await inbox.record(msg("SM1", "Hi, I'm Maria Lopez", sent))
    clock.now += 0.5
    assert await answer_all(worker) == 0  # still inside the burst window
    await inbox.record(msg("SM2", "a deep tissue massage please", sent + 1))
    clock.now += 1.0
    assert await answer_all(worker) == 0  # the window restarts with each message
    clock.now += 1.6
    assert await answer_all(worker) == 1
    assert await user_lines(gw) == [
        "Hi, I'm Maria Lopez\na deep tissue massage please\non Friday at 2pm"
    ]
    (reply,) = await replies(gw)
    assert reply["key"] == "reply:twilio:SM1"  # keyed by the first message answered
    for message_id in ("SM1", "SM2", "SM3"):
        assert await inbox.states("twilio", message_id) == "replied"


async def test_a_message_that_arrives_mid_turn_is_answered_next(gw: Gateway, clock: Clock) -> None:
    inbox = inbox_of(gw, clock)
    worker = worker_of(gw, inbox)
    await inbox.record(msg("SM1", "I'd like to book a massage", clock.now))
    clock.now += 2
    key = ThreadKey(CLIENT, "whatsapp", ANA)
    claim = await inbox.claim(key)
    assert claim is not None
    await inbox.record(msg("SM2", "Maria Lopez", clock.now))  # while the turn runs
    assert await inbox.claim(key) is None  # one writer per conversation
    await worker._run(gw.registry.get(CLIENT), claim)  # type: ignore[arg-type]
    assert await inbox.states("twilio", "SM2") == "received"
    clock.now += 2
    assert await answer_all(worker) == 1
    assert await user_lines(gw) == ["I'd like to book a massage", "Maria Lopez"]
    assert [r["key"] for r in await replies(gw)] == ["reply:twilio:SM1", "reply:twilio:SM2"]


async def test_a_lease_that_ran_out_is_taken_over_and_the_late_turn_rolls_back(
    gw: Gateway, clock: Clock
) -> None:
    inbox = inbox_of(gw, clock, lease_s=30)
    await inbox.record(msg("SM1", "I'd like to book a massage", clock.now))
    clock.now += 2
    key = ThreadKey(CLIENT, "whatsapp", ANA)
    slow = await inbox.claim(key)  # a replica that stalls (or dies) mid-turn
    assert slow is not None
    clock.now += 31
    worker = worker_of(gw, inbox)
    assert await answer_all(worker) == 1  # another replica takes it over
    client = gw.registry.get(CLIENT)
    assert client is not None
    late = gw.engine.stream_turn(
        NormalizedMessage(
            client_id=CLIENT,
            channel=Channel.WHATSAPP,
            session_id=ANA,
            text="I'd like to book a massage",
        ),
        TurnOptions(on_commit=ReplyHook(inbox, client, slow)),
    )
    with pytest.raises(InboundClaimLost):
        async for _event in late:
            pass
    assert len(await replies(gw)) == 1  # one reply, from the replica that holds it
    assert await user_lines(gw) == ["I'd like to book a massage"]  # the late turn left nothing


async def test_two_workers_never_answer_one_conversation_twice(gw: Gateway, clock: Clock) -> None:
    inbox = inbox_of(gw, clock)
    a, b = worker_of(gw, inbox), worker_of(gw, inbox)
    for n in range(5):
        await inbox.record(msg(f"SM{n}", f"message {n}", clock.now, sender=f"+1415555010{n}"))
    clock.now += 2
    await a.look()
    await b.look()
    await a.idle()
    await b.idle()
    keys = [r["key"] for r in await replies(gw)]
    assert sorted(keys) == sorted(f"reply:twilio:SM{n}" for n in range(5))

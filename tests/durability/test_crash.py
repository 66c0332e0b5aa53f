"""Every side effect exactly once, even when the process dies: the real gateway is
SIGKILLed at a chosen step (``gateway_proc.py``), restarted on the same data, and
the customer's widget does what it does after a reconnect (resume, resend the
unanswered message with the same id).

Regression (found by fault injection): a gateway killed while the lead was being
written left an orphan booking and no lead, the visitor then waited ~28 s on
the dead process's Redis lock, and the widget's resend was swallowed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web.chat_client import ChatClient, open_chat

from .procs import ADMIN_TOKEN, GatewayProcess, SlackStub, slack_stub

CLIENT = "spa-del-sol"
NOW = "2026-12-07T17:00:00+00:00"  # Monday 09:00 in Los Angeles
EVERYTHING = (
    "I'd like to book a Manicure on December 15 at 2:30 pm. I'm Maria Lopez, "
    "415 555 0134, maria@example.com"
)
HANDOFF = "I'd like to talk to a person, my name is Maria Lopez and my number is 415 555 0134"

pytestmark = pytest.mark.redis


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with slack_stub() as running:
        yield running


@pytest.fixture
def env(clients_dir: Path, data_dir: Path, redis_url: str, stub: SlackStub) -> dict[str, str]:
    return {
        "GATEWAY_CLIENTS_DIR": str(clients_dir),
        "GATEWAY_DATA_DIR": str(data_dir),
        "REDIS_URL": redis_url,
        "GATEWAY_LOCK_LEASE_S": "1",
        "GATEWAY_TEST_NOW": NOW,
        "GATEWAY_LOG_LEVEL": "INFO",
        "SPA_SLACK_WEBHOOK_URL": stub.url,
        "GATEWAY_OUTBOX_BASE_BACKOFF_S": "0.05",
        "GATEWAY_OUTBOX_CLAIM_S": "2",
    }


def start(env: dict[str, str], log: Path, crash_at: str | None = None) -> GatewayProcess:
    extra = {"GATEWAY_TEST_CRASH_AT": crash_at} if crash_at else {}
    return GatewayProcess({**env, **extra}, log)


def chat_url(gw: GatewayProcess) -> str:
    return f"{gw.ws_url}/web/chat/{CLIENT}"


async def killed_mid_turn(chat: ChatClient, text: str, msg_id: str) -> None:
    """Send a message whose turn kills the server: the socket closes, no reply."""
    await chat.message(text, msg_id)
    with pytest.raises(Exception) as caught:
        await chat.reply()
    assert "ConnectionClosed" in type(caught.value).__name__, caught.value


def bookings(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "gateway.sqlite") as db:
        return db.execute("SELECT booking_id, start_iso FROM bookings").fetchall()


async def test_killed_while_writing_the_lead_leaves_nothing_and_the_resend_books_once(
    env: dict[str, str], tmp_path: Path, data_dir: Path
) -> None:
    crashing = start(env, tmp_path / "gw1.log", crash_at="lead_write")
    try:
        async with open_chat(chat_url(crashing)) as chat:
            sid = (await chat.session())["session_id"]
            confirm = await chat.ask(EVERYTHING, "m-1")
            assert confirm[-1]["metadata"]["expecting"] == "confirmation", confirm[-1]["text"]
            cursor = confirm[-1]["event_id"]
            await killed_mid_turn(chat, "yes", "m-2")
        assert crashing.wait_killed() == -9
    finally:
        crashing.stop()

    # Nothing of the killed turn survived: no orphan booking, no lead.
    assert bookings(data_dir) == []

    gw = start(env, tmp_path / "gw2.log")
    try:
        async with open_chat(chat_url(gw)) as chat:
            resumed = await chat.resume(sid, cursor)
            assert resumed["resumed"] is True
            # The widget resends the unanswered message with its id: answered, once.
            # (The dead process's Redis lock lease has lapsed: not "busy".)
            done = await chat.ask("yes", "m-2")
            assert done[-1]["metadata"]["state"] == "booked", done[-1]["text"]
            booking_id = done[-1]["metadata"]["booking_id"]
        leads = await asyncio.to_thread(gw.admin, "leads", client_id=CLIENT)
    finally:
        gw.stop()
    assert [(b[0]) for b in bookings(data_dir)] == [booking_id]
    assert [(lead["booking_id"], lead["name"]) for lead in leads] == [(booking_id, "Maria Lopez")]


async def test_killed_after_the_commit_the_escalation_is_still_delivered_once(
    env: dict[str, str], tmp_path: Path, stub: SlackStub
) -> None:
    crashing = start(env, tmp_path / "gw1.log", crash_at="after_commit")
    try:
        async with open_chat(chat_url(crashing)) as chat:
            sid = (await chat.session())["session_id"]
            await killed_mid_turn(chat, HANDOFF, "m-1")
        assert crashing.wait_killed() == -9
    finally:
        crashing.stop()
    assert stub.received == []  # killed before the worker could deliver

    gw = start(env, tmp_path / "gw2.log")
    try:
        posts = await asyncio.to_thread(stub.wait_for, 1)
        async with open_chat(chat_url(gw)) as chat:
            await chat.resume(sid, 0)
            replayed = await chat.reply()  # the committed answer comes by replay
            assert replayed[-1]["metadata"]["state"] == "closed"
            assert {"type": "escalated", "target": None} in replayed[-1]["actions"]
            # Resending the same message is not a second escalation.
            await chat.send({"type": "message", "text": HANDOFF, "id": "m-1"})
            # A new message while the team holds the conversation is recorded and
            # passed on to them, not answered by the bot.
            again = await chat.ask("hello", "m-2")
            assert again[-1]["reply_to"] == "m-2" and again[-1]["text"] == ""
            assert again[-1]["metadata"]["state"] == "pending_human"
            held = await asyncio.to_thread(stub.wait_for, 2)
        leads = await asyncio.to_thread(gw.admin, "leads", client_id=CLIENT)
    finally:
        gw.stop()
    escalations = [p for p in held if "asked for a person" in str(p)]
    assert len(posts) == 1 and len(escalations) == 1 and len(stub.received) == 2
    text = str(posts[0])
    assert "Maria Lopez" in text and "+14155550134" in text
    assert [lead["status"] for lead in leads] == ["callback_requested"]


async def test_killed_after_the_vendor_accepted_the_row_is_redelivered_not_lost(
    env: dict[str, str], tmp_path: Path, stub: SlackStub
) -> None:
    """The vendor got it but the process died before recording that: the claim
    lapses and another worker delivers it again (at-least-once at a vendor with
    no idempotency key, like a Slack webhook), never zero times."""
    crashing = start(env, tmp_path / "gw1.log", crash_at="after_delivery")
    try:
        async with open_chat(chat_url(crashing)) as chat:
            await chat.session()
            reply = await chat.ask(HANDOFF, "m-1")
            assert reply[-1]["metadata"]["state"] == "closed"
        assert crashing.wait_killed() == -9
    finally:
        crashing.stop()
    assert len(stub.received) == 1

    gw = start(env, tmp_path / "gw2.log")
    try:
        posts = await asyncio.to_thread(stub.wait_for, 2)
        rows: Any = None
        for _ in range(100):
            rows = await asyncio.to_thread(_outbox_states, Path(env["GATEWAY_DATA_DIR"]))
            if rows.get("notify.slack") == "delivered":
                break
            await asyncio.sleep(0.1)
    finally:
        gw.stop()
    assert posts[0] == posts[1]  # the same escalation, not a new one
    assert rows["notify.slack"] == "delivered"


def _outbox_states(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "gateway.sqlite") as db:
        return dict(db.execute("SELECT kind, state FROM outbox").fetchall())


async def test_killed_after_a_staff_reply_committed_the_retry_posts_it_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Staff's reply is durable before anything else happens: the process dies
    after its commit (no push to the widget, no HTTP answer); the admin tool
    retries with the same id and the customer sees the reply exactly once."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    crashing = start(env, tmp_path / "gw1.log", crash_at="after_staff_reply")
    try:
        async with open_chat(chat_url(crashing)) as chat:
            sid = (await chat.session())["session_id"]
            escalated = await chat.ask(HANDOFF, "m-1")
            assert escalated[-1]["metadata"]["handoff"] == "pending_human"
        conversation = f"{CLIENT}:web:{sid}"
        reply = {"text": "Hi Maria, Ana from the front desk here.", "id": "r-1"}
        async with httpx.AsyncClient(headers=headers, timeout=10) as http:
            with pytest.raises(httpx.HTTPError):  # the process died before answering
                await http.post(
                    f"{crashing.url}/admin/api/conversations/{conversation}/reply", json=reply
                )
        assert crashing.wait_killed() == -9
    finally:
        crashing.stop()

    gw = start(env, tmp_path / "gw2.log")
    try:
        async with httpx.AsyncClient(headers=headers, timeout=10) as http:
            retried = await http.post(
                f"{gw.url}/admin/api/conversations/{conversation}/reply", json=reply
            )
        assert retried.status_code == 200, retried.text
        assert retried.json()["duplicate"] is True
        async with open_chat(chat_url(gw)) as chat:
            await chat.resume(sid, 0)

            def is_staff(event: dict[str, Any]) -> bool:
                return (event.get("metadata") or {}).get("from") == "staff"

            while not is_staff(await chat.recv()):  # the replay, up to the reply
                pass
            with pytest.raises(TimeoutError):  # and nothing after it: no second copy
                await asyncio.wait_for(chat.recv(), 1.0)
        record = await asyncio.to_thread(gw.admin, f"conversations/{conversation}")
    finally:
        gw.stop()
    staff = [e for e in chat.seen if is_staff(e)]
    assert [e["text"] for e in staff] == [reply["text"]]
    lines = [line for line in record["transcript"] if line.get("staff")]
    assert [line["text"] for line in lines] == [reply["text"]]

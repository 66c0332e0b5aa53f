"""The atomic turn commit under injected faults, on SQLite and on PostgreSQL.

A turn's effects (session, processed mark, replay events, booking, lead,
notifications) are written together or not at all. Regression (tried as a new
user would): when the CRM raised after the calendar booked, the session went
back to ``confirming`` but the booking stayed, so the next "yes" got "already
booked" against the customer's own booking and no lead was recorded.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.errors import DuplicateMessageError, StoreError
from engine.payloads import CallAction
from engine.session import SessionKey
from gateway.app import Gateway

CLIENT = "spa-del-sol"
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
EVERYTHING = (
    "I'd like to book a Manicure on December 15 at 2:30 pm. I'm Maria Lopez, "
    "415 555 0134, maria@example.com"
)


@pytest.fixture
def gw_options(database_url: str) -> dict[str, object]:
    """``gw`` (tests/conftest.py) on ``database_url``, at :data:`NOW`."""
    return {"database_url": database_url, "clock": lambda: NOW}


async def turn(gw: Gateway, session: str, text: str, msg_id: str | None = None) -> Any:
    return await gw.engine.handle_turn(CLIENT, "web", None, session, text, message_id=msg_id)


async def count(gw: Gateway, table: str) -> int:
    async with gw.db.read() as conn:
        return int((await conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())


async def confirming(gw: Gateway, session: str) -> None:
    reply = await turn(gw, session, EVERYTHING, "m-1")
    assert reply.metadata.expecting == "confirmation", reply.text


async def test_a_failure_while_writing_the_lead_leaves_no_booking_and_the_retry_books_once(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    await confirming(gw, "s-1")
    real = type(gw.leads).record_in

    async def failing(self: Any, conn: Any, record: Any, turn_id: str) -> None:
        raise StoreError("leads table unavailable (test)")

    monkeypatch.setattr(type(gw.leads), "record_in", failing)
    with pytest.raises(StoreError):
        await turn(gw, "s-1", "yes", "m-2")
    assert await count(gw, "bookings") == 0  # no orphan booking
    loaded = await gw.store.load(SessionKey(CLIENT, "web", "s-1"))
    assert loaded is not None
    assert loaded.session.purpose_state["lead_capture"]["stage"] == "confirming"

    monkeypatch.setattr(type(gw.leads), "record_in", real)
    done = await turn(gw, "s-1", "yes", "m-2")  # the same message, retried
    assert done.metadata.state == "booked", done.text
    [lead] = await gw.leads.list_leads(CLIENT)
    assert lead.lead.booking_id == done.metadata.purpose_data["booking_id"]
    assert await count(gw, "bookings") == 1


async def test_a_calendar_that_fails_before_the_commit_changes_nothing(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    await confirming(gw, "s-1")

    async def down(*_: Any, **__: Any) -> Any:
        raise StoreError("calendar unreachable (test)")

    monkeypatch.setattr(gw.calendar, "busy", down)
    with pytest.raises(StoreError):
        await turn(gw, "s-1", "yes", "m-2")
    monkeypatch.undo()
    assert await count(gw, "bookings") == 0
    assert not await gw.store.processed(SessionKey(CLIENT, "web", "s-1"), "m-2")
    assert (await turn(gw, "s-1", "yes", "m-2")).metadata.state == "booked"


async def test_an_agent_bug_answers_with_the_fallback_and_writes_no_effect(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    await confirming(gw, "s-1")
    agent = gw.engine.agents["lead_capture"]
    original = type(agent).handle

    async def buggy(self: Any, ctx: Any) -> Any:
        ctx.effects.book(NOW, NOW, "Manicure")  # requested, then the agent crashes
        raise ZeroDivisionError

    monkeypatch.setattr(type(agent), "handle", buggy)
    reply = await turn(gw, "s-1", "yes", "m-2")
    assert reply.metadata.state == "fallback"
    assert await count(gw, "bookings") == 0 and await gw.leads.list_leads(CLIENT) == []
    monkeypatch.setattr(type(agent), "handle", original)
    assert (await turn(gw, "s-1", "yes", "m-3")).metadata.state == "booked"


async def test_a_lone_surrogate_in_the_confirmation_books_once(gw: Gateway) -> None:
    """Regression: "yes \\ud800" wrote the booking and lead, then failed to save
    the session, so the retry made a second booking and lead."""
    await confirming(gw, "s-1")
    done = await turn(gw, "s-1", "yes \ud800", "m-2")
    assert done.metadata.state == "booked", done.text
    again = await turn(gw, "s-1", "yes \ud800", "m-3")
    assert (
        again.metadata.state != "booked"
        or again.metadata.purpose_data.get("booking_id") == done.metadata.purpose_data["booking_id"]
    )
    assert await count(gw, "bookings") == 1
    assert len(await gw.leads.list_leads(CLIENT)) == 1
    loaded = await gw.store.load(SessionKey(CLIENT, "web", "s-1"))
    assert loaded is not None
    said = [t.text for t in loaded.session.transcript if t.role == "user"]
    assert said[-2:] == ["yes \ufffd", "yes \ufffd"]


async def test_a_message_id_is_consumed_once(gw: Gateway) -> None:
    await confirming(gw, "s-1")
    await turn(gw, "s-1", "yes", "m-2")
    with pytest.raises(DuplicateMessageError):
        await turn(gw, "s-1", "yes", "m-2")
    assert await count(gw, "bookings") == 1


async def test_two_conversations_racing_for_one_slot_book_it_once(gw: Gateway) -> None:
    await asyncio.gather(confirming(gw, "s-1"), confirming(gw, "s-2"))
    one, two = await asyncio.gather(turn(gw, "s-1", "yes", "m-2"), turn(gw, "s-2", "yes", "m-2"))
    states = sorted([one.metadata.state, two.metadata.state])
    assert states == ["booked", "collecting"], (one.text, two.text)
    loser = one if one.metadata.state == "collecting" else two
    assert loser.metadata.expecting == "time" and "booked" in loser.text
    assert await count(gw, "bookings") == 1
    assert len(await gw.leads.list_leads(CLIENT)) == 1


async def test_a_conversation_whose_session_expired_continues_its_log(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: after the session store lost a session, the durable transcript
    of that conversation was overwritten. The log is append-only now."""
    await turn(gw, "s-1", "I'd like to book a massage", "m-1")
    await turn(gw, "s-1", "Maria Lopez", "m-2")
    async with gw.db.write() as conn:  # the session state is lost, the log stays
        await conn.execute(sa.text("DELETE FROM sessions"))
    await turn(gw, "s-1", "hello again", "m-3")
    [record] = await gw.conversations.list(CLIENT)
    texts = [line["text"] for line in record.transcript if line["role"] == "user"]
    assert texts == ["I'd like to book a massage", "Maria Lopez", "hello again"]


async def test_a_requested_delivery_is_queued_by_the_commit_and_only_by_it(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = gw.engine.agents["lead_capture"]
    original = type(agent).handle

    async def delivering(self: Any, ctx: Any) -> Any:
        ctx.effects.deliver(CallAction(call_sid="CA1", action="hangup"))
        return await original(self, ctx)

    monkeypatch.setattr(type(agent), "handle", delivering)
    real_record = type(gw.leads).record_in

    async def failing(self: Any, tx: Any, record: Any, turn_id: str) -> None:
        raise StoreError("leads table unavailable (test)")

    await confirming(gw, "s-1")
    monkeypatch.setattr(type(gw.leads), "record_in", failing)
    with pytest.raises(StoreError):
        await turn(gw, "s-1", "yes", "m-2")
    rows = await gw.outbox.list(client_id=CLIENT)
    assert [r.kind for r in rows] == ["twilio.call"]  # only the first turn's, committed

    monkeypatch.setattr(type(gw.leads), "record_in", real_record)
    await turn(gw, "s-1", "yes", "m-2")
    rows = await gw.outbox.list(client_id=CLIENT)
    assert len(rows) == 2 and len({r.key for r in rows}) == 2
    assert all(r.state == "pending" and r.payload.call_sid == "CA1" for r in rows)


async def test_the_channel_context_is_typed_and_kept_across_turns(gw: Gateway) -> None:
    from engine.messages import ChannelContext

    first = ChannelContext(caller_number="+14155550123", call_sid="CA" + "1" * 32)
    await gw.engine.handle_turn(CLIENT, "phone", None, "CA-1", "hello", first)
    await gw.engine.handle_turn(
        CLIENT, "phone", None, "CA-1", "I'd like a massage", ChannelContext(called_number="+1415")
    )
    gw.store.forget(SessionKey(CLIENT, "phone", "CA-1"))  # read it back from the database
    loaded = await gw.store.load(SessionKey(CLIENT, "phone", "CA-1"))
    assert loaded is not None
    assert loaded.session.context == ChannelContext(
        caller_number="+14155550123", call_sid="CA" + "1" * 32, called_number="+1415"
    )

"""The handoff to a person, in-process on the real engine and database: the
state machine, what the customer is told (opening hours, pinned clocks), the
silent bot while a person holds the conversation, staff replies (idempotent)
and release, the Slack notice's question and link."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.errors import UnknownSessionError
from engine.outbox import OutboxRow
from engine.staff import TakeoverRefused
from engine.takeover import InvalidTakeover, reply_here_text, transition
from engine.tools.notify import Escalation
from gateway.app import Gateway
from providers.notify.slack import render_slack

CLIENT = "spa-del-sol"
TZ = ZoneInfo("America/Los_Angeles")
OPEN = datetime(2026, 12, 2, 10, 0, tzinfo=TZ)  # a Wednesday, open 9-19
SATURDAY_NIGHT = datetime(2026, 11, 28, 20, 0, tzinfo=TZ)  # closed; Sunday closed too
SUNDAY = datetime(2026, 11, 29, 12, 0, tzinfo=TZ)  # closed; Monday opens at 9


@pytest.fixture
def gw_at(open_gw: Any) -> Callable[[datetime], AsyncIterator[Gateway]]:
    async def start(now: datetime) -> AsyncIterator[Gateway]:
        async with open_gw(
            clock=lambda: now, GATEWAY_PUBLIC_URL="https://gw.example.test"
        ) as gateway:
            yield gateway

    return start


@pytest.fixture
async def gw(gw_at: Callable[[datetime], AsyncIterator[Gateway]]) -> AsyncIterator[Gateway]:
    async for gateway in gw_at(OPEN):
        yield gateway


async def _outbox(gw: Gateway) -> list[OutboxRow]:
    """The client's outbox rows, newest first."""
    return await gw.outbox.list(client_id=CLIENT)


def test_the_transition_table() -> None:
    assert transition("bot", "escalated") == "pending_human"
    assert transition("pending_human", "staff_reply") == "human"
    assert transition("human", "release") == "resolved"
    assert transition("resolved", "customer_message") == "bot"
    assert transition("human", "customer_message") == "human"
    with pytest.raises(InvalidTakeover):
        transition("bot", "nonsense")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (OPEN, "Someone from Spa del Sol will reply here shortly."),
        (
            SUNDAY,
            "We're closed right now; someone from Spa del Sol will reply here "
            "when we open tomorrow at 9 AM.",
        ),
        (
            SATURDAY_NIGHT,
            "We're closed right now; someone from Spa del Sol will reply here "
            "when we open on Monday at 9 AM.",
        ),
        (
            datetime(2026, 12, 2, 7, 30, tzinfo=TZ),
            "We're closed right now; someone from Spa del Sol will reply here "
            "when we open today at 9 AM.",
        ),
    ],
)
async def test_the_customer_is_told_when_someone_will_reply(
    gw_at: Callable[[datetime], AsyncIterator[Gateway]], now: datetime, expected: str
) -> None:
    async for gw in gw_at(now):
        client = gw.registry.get(CLIENT)
        assert client is not None
        assert reply_here_text(client, now) == expected
        await gw.engine.handle_turn(CLIENT, "web", None, "s1", "can I talk to someone?")
        r = await gw.engine.handle_turn(CLIENT, "web", None, "s1", "here")
        assert r.text == "Done — I've passed this on. " + expected
        assert r.metadata.purpose_data["handoff"] == "pending_human"


async def test_a_callback_number_keeps_the_call_back_wording(
    gw_at: Callable[[datetime], AsyncIterator[Gateway]],
) -> None:
    async for gw in gw_at(SUNDAY):
        r = await gw.engine.handle_turn(
            CLIENT, "web", None, "s1", "can someone call me? 415 555 0134"
        )
        assert r.text == (
            "Done — someone from Spa del Sol will call you back at +1 415-555-0134 "
            "as soon as they can. We open again tomorrow at 9 AM."
        )


async def test_while_a_person_holds_it_the_bot_is_silent_and_staff_are_told(gw: Gateway) -> None:
    await gw.engine.handle_turn(CLIENT, "web", None, "s1", "Can a person help me with a gift card?")
    await gw.engine.handle_turn(CLIENT, "web", None, "s1", "here")
    before = len(await _outbox(gw))
    r = await gw.engine.handle_turn(CLIENT, "web", None, "s1", "hello? anyone?")
    assert r.text == "" and r.quick_replies == ()
    assert r.metadata.state == "pending_human" and r.metadata.purpose_data["handoff"] == (
        "pending_human"
    )
    rows = await _outbox(gw)
    assert len(rows) == before + 1  # one notice per message (email; Slack is unset here)
    notice = rows[0].payload.escalation
    assert notice.reason == "wrote while waiting for a person"
    assert notice.question == "hello? anyone?"
    assert notice.link == "https://gw.example.test/admin/api/conversations/spa-del-sol:web:s1"
    [record] = await gw.conversations.list(CLIENT)
    assert record.takeover == "pending_human"
    assert record.transcript[-1]["text"] == "hello? anyone?"


async def test_staff_reply_is_idempotent_then_release_gives_the_bot_back(gw: Gateway) -> None:
    await gw.engine.handle_turn(CLIENT, "web", None, "s1", "can I talk to someone?")
    await gw.engine.handle_turn(CLIENT, "web", None, "s1", "here")
    first = await gw.staff.reply(CLIENT, "web", "s1", "Hi, Ana here.", reply_id="r1")
    again = await gw.staff.reply(CLIENT, "web", "s1", "Hi, Ana here.", reply_id="r1")
    assert (first.state, first.duplicate, again.duplicate) == ("human", False, True)
    record = await gw.conversations.get(first.key)
    assert record is not None and record.takeover == "human"
    staff = [line for line in record.transcript if line["staff"]]
    assert [line["text"] for line in staff] == ["Hi, Ana here."]
    r = await gw.engine.handle_turn(CLIENT, "web", None, "s1", "thanks!")
    assert r.text == "" and r.metadata.state == "human"
    assert await gw.staff.release(CLIENT, "web", "s1") == "resolved"
    assert await gw.staff.release(CLIENT, "web", "s1") == "resolved"  # harmless twice
    r = await gw.engine.handle_turn(CLIENT, "web", None, "s1", "hello")
    assert r.text and r.metadata.purpose == "router"
    record = await gw.conversations.get(first.key)
    assert record is not None and record.takeover == "bot"


async def test_staff_replies_need_a_live_chat_session(gw: Gateway) -> None:
    with pytest.raises(TakeoverRefused, match="transferred"):
        await gw.staff.reply(CLIENT, "phone", "CA123", "hello")
    with pytest.raises(UnknownSessionError):
        await gw.staff.reply(CLIENT, "web", "nobody", "hello")


def test_the_slack_notice_has_the_question_and_the_link() -> None:
    esc = Escalation(
        client_id=CLIENT,
        client_name="Spa del Sol",
        channel="web",
        session_id="s1",
        reason="asked for a person",
        who=None,
        contact=None,
        email=None,
        fields={},
        transcript=(("user", "Do you sell <gift> cards?"),),
        created_at=OPEN,
        escalation_id="e1",
        question="Do you sell <gift> cards?",
        link="https://gw.example.test/admin/api/conversations/spa-del-sol:web:s1",
    )
    blocks = str(render_slack(esc)["blocks"])
    assert "*Question*\\n>Do you sell &lt;gift&gt; cards?" in blocks
    assert "<https://gw.example.test/admin/api/conversations/spa-del-sol:web:s1|Open" in blocks
    assert Escalation.from_json(esc.to_json()) == esc
    assert "Open the conversation" not in str(render_slack(replace(esc, link=None)))

"""On a call, the email said spelled — or sent by text message instead
(``purposes/lead_capture/email_by_text.py``), played through the real engine
on the phone channel; the SMS is an outbox row committed with the booking."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine import ConversationResponse
from engine.commit import TurnCommit
from engine.config import ClientConfig
from engine.errors import DuplicateMessageError, SlotTakenError
from engine.messages import ChannelContext
from engine.outbox import OutboxRow
from gateway.app import Gateway
from purposes.lead_capture import email_by_text
from purposes.lead_capture.state import LeadState

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=TZ)  # as conftest.py: Saturday 11:00
CLIENT = "spa-del-sol"
CALLER = "+16175550147"
SMS_FROM = "+14155550199"
SMS_CHANNEL = f"""  sms:
    twilio:
      account_sid: AC00000000000000000000000000000000
      auth_token: test-token
      from: "{SMS_FROM}"
"""
UNREAD = "Maria. Lopas."
"""What Whisper tiny.en makes of "maria dot lopez at example dot com"."""


async def call(
    gw: Gateway, text: str, session: str = "c1", *, message_id: str | None = None
) -> ConversationResponse:
    context = ChannelContext(caller_number=CALLER, called_number="+14155550100")
    return await gw.engine.handle_turn(
        CLIENT, "phone", None, session, text, context, message_id=message_id
    )


async def sms_rows(gw: Gateway) -> list[OutboxRow]:
    return [row for row in await gw.outbox.list(client_id=CLIENT) if row.kind == "message.twilio"]


Start = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_gw: Any) -> Start:
    """A gateway on a copy of the clients; ``sms``: spa-del-sol has an SMS
    channel with its own Twilio account (else none: the phone number's
    account is unset too)."""
    for name in ("SPA_TWILIO_ACCOUNT_SID", "SPA_TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    @asynccontextmanager
    async def run(*, sms: bool) -> AsyncIterator[Gateway]:
        clients = tmp_path / "clients"
        shutil.copytree(REPO / "clients", clients)
        config = clients / CLIENT / "config.yaml"
        text = config.read_text(encoding="utf-8")
        anchor = "  web:\n"
        assert anchor in text
        if sms:
            config.write_text(text.replace(anchor, SMS_CHANNEL + anchor), encoding="utf-8")
        async with open_gw(
            clients_dir=clients, data_dir=tmp_path / "data", clock=lambda: NOW
        ) as gateway:
            yield gateway

    return run


async def to_email(gw: Gateway) -> ConversationResponse:
    """A call up to the email question."""
    await call(gw, "I'd like to book a manicure")
    await call(gw, "My name is Maria Lopez")
    return await call(gw, "Yes, that's fine")


# --- wording and state ---------------------------------------------------------------


def test_sms_wording_in_one_place() -> None:
    client = ClientConfig.model_validate(
        {"client_id": "x", "name": "Spa del Sol", "timezone": "America/Los_Angeles"}
    )
    start = datetime(2026, 11, 23, 10, 30, tzinfo=TZ)
    assert email_by_text.sms_text(client, "Manicure", start) == (
        "Spa del Sol: thanks for booking Manicure on Monday, November 23 at 10:30 AM. "
        "Reply to this text with your email address and we'll add it to your booking."
    )


@pytest.mark.parametrize(
    "said",
    ["text me", "Send me a link.", "Text it to me.", "Can you text me?", "Skip.", "by text please"],
)
def test_text_me_phrases(said: str) -> None:
    assert email_by_text.chose_text(said, LeadState())


def test_yes_only_right_after_the_offer() -> None:
    assert not email_by_text.chose_text("yes", LeadState())
    assert email_by_text.chose_text("Yes, please.", LeadState(email_by_text="offered"))
    assert not email_by_text.chose_text("maria at example dot com", LeadState())


def test_sessions_saved_before_email_by_text_still_load() -> None:
    old = {"stage": "collecting", "slots": {"name": "Ana"}, "expecting": "email"}
    st = LeadState.model_validate(old)
    assert st.email_by_text is None and not email_by_text.settled(st)


# --- on a call -----------------------------------------------------------------------


async def test_the_phone_prompt_asks_for_it_spelled(gw: Gateway) -> None:
    r = await to_email(gw)
    assert r.metadata.expecting == "email"
    assert r.text.endswith(
        "What's your email address? Spelling it out letter by letter works best."
    )


async def test_spelled_email_happy_path(gw: Gateway) -> None:
    await to_email(gw)
    r = await call(gw, "M-A-R-I-A dot L-O-P-E-Z at example dot com")
    assert r.metadata.slots["email"] == "maria.lopez@example.com"
    assert "Got your email: m a r i a dot l o p e z at example dot com." in r.text
    r = await call(gw, "Monday at ten thirty am")
    assert "email m a r i a dot l o p e z at example dot com" in r.text
    r = await call(gw, "yes")
    assert r.metadata.state == "booked"
    assert await sms_rows(gw) == []
    (lead,) = await gw.leads.list_leads(CLIENT)
    assert lead.lead.fields["email"] == "maria.lopez@example.com"
    assert "email_by_text" not in lead.lead.fields


async def test_failed_email_then_spelled(gw: Gateway) -> None:
    await to_email(gw)
    r = await call(gw, UNREAD)
    assert r.metadata.expecting == "email" and "email" not in r.metadata.slots
    assert r.text == (
        "Sorry, I didn't get that email. Could you spell it, letter by letter — like m a r i a,"
        " at, example dot com? Or I can text you a link to type it instead."
    )
    r = await call(gw, "m a r i a dot l o p e z at example dot com")
    assert r.metadata.slots["email"] == "maria.lopez@example.com"
    assert r.metadata.expecting == "time"
    r = await call(gw, "Monday at 10:30 am")
    assert "email m a r i a dot l o p e z" in r.text and "by text" not in r.text


async def test_three_failures_offer_text_first_then_a_person(gw: Gateway) -> None:
    await to_email(gw)
    await call(gw, UNREAD)
    await call(gw, "Maria. Lopas. Example.")
    r = await call(gw, "Maria Lopas")
    assert r.metadata.expecting == "email"
    text_offer = r.text.index("I can text you a link")
    person = r.text.index("someone from the team can call you back")
    assert text_offer < person


async def test_text_me_books_with_one_sms(start: Start) -> None:
    async with start(sms=True) as gw:
        await to_email(gw)
        await call(gw, UNREAD)
        r = await call(gw, "Text me")
        assert "email" not in r.metadata.slots and r.metadata.expecting == "time"
        assert r.text.startswith(email_by_text.ACK)
        r = await call(gw, "Monday at ten thirty am")
        assert r.metadata.expecting == "confirmation"
        assert "phone 6 1 7, 5 5 5, 0 1 4 7, email by text message" in r.text
        assert await sms_rows(gw) == []  # nothing is sent before the booking
        r = await call(gw, "yes")
        assert r.metadata.state == "booked"
        assert "I've sent you a text" in r.text
        booking_id = str(r.metadata.purpose_data["booking_id"])
        (row,) = await sms_rows(gw)
        body = (
            "Spa del Sol: thanks for booking Manicure on Monday, November 23 at 10:30 AM. "
            "Reply to this text with your email address and we'll add it to your booking."
        )
        assert row.key == email_by_text.outbox_key(CLIENT, booking_id)
        assert row.as_json()["payload"] == {
            "channel": "sms",
            "to": CALLER,
            "from": SMS_FROM,
            "parts": [{"Body": body}],
            "text": body,
        }
        (lead,) = await gw.leads.list_leads(CLIENT)
        fields = lead.lead.fields
        assert fields["name"] == "Maria Lopez" and fields["phone"] == CALLER
        assert fields["service"] == "Manicure" and fields["time"].startswith("2026-11-23T10:30")
        assert "email" not in fields and fields["email_by_text"] == "texted"
        assert lead.as_json()["email"] is None
        assert lead.lead.booking_id == booking_id


async def test_yes_to_the_offer_and_no_sms_channel_records_the_request(start: Start) -> None:
    async with start(sms=False) as gw:
        await to_email(gw)
        await call(gw, UNREAD)
        r = await call(gw, "Yes, please.")
        assert r.metadata.expecting == "time" and "email" not in r.metadata.slots
        await call(gw, "Monday at 10:30 am")
        r = await call(gw, "yes")
        assert r.metadata.state == "booked"
        assert "Someone from the team will text you" in r.text
        assert await sms_rows(gw) == []
        (lead,) = await gw.leads.list_leads(CLIENT)
        fields = lead.lead.fields
        assert fields["email_by_text"] == "requested"
        assert fields["name"] == "Maria Lopez" and fields["phone"] == CALLER
        assert fields["service"] == "Manicure" and "time" in fields
        assert "email" not in fields


async def test_email_said_after_all_cancels_the_text(start: Start) -> None:
    async with start(sms=True) as gw:
        await to_email(gw)
        await call(gw, "skip")
        r = await call(gw, "Monday at 10:30 am")
        assert "email by text message" in r.text
        r = await call(gw, "no, my email is m a r i a at example dot com")
        assert r.metadata.slots["email"] == "maria@example.com"
        assert "email m a r i a at example dot com" in r.text
        r = await call(gw, "yes")
        assert r.metadata.state == "booked" and await sms_rows(gw) == []


async def test_a_retried_turn_texts_once(start: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    async with start(sms=True) as gw:
        await to_email(gw)
        await call(gw, "can you text me")
        await call(gw, "Monday at 10:30 am")
        committer = gw.engine.committer
        commit = committer.commit
        asked: list[str] = []

        async def flaky(client: ClientConfig, turn: TurnCommit) -> int:
            keys = [d.key for d in turn.effects.deliveries if d.kind == "message.twilio"]
            asked.extend(keys)
            if len(asked) == 1:  # the first attempt's SMS is already out; the commit fails
                await gw.outbox.enqueue(turn.effects.deliveries)
                committer.sessions.forget(turn.session.key)  # as a failed commit does
                raise SlotTakenError("2026-11-23T10:30:00-08:00")
            return await commit(client, turn)

        monkeypatch.setattr(committer, "commit", flaky)
        r = await call(gw, "yes", message_id="m-yes")
        assert r.metadata.state == "booked"
        assert len(asked) == 2 and asked[0] == asked[1]  # the retry asked for the same text
        (row,) = await sms_rows(gw)
        assert row.key == asked[0]
        # the same message delivered again is not a new turn
        with pytest.raises(DuplicateMessageError):
            await call(gw, "yes", message_id="m-yes")
        assert len(await sms_rows(gw)) == 1


async def test_web_text_me_is_unchanged(gw: Gateway) -> None:
    async def say(text: str) -> ConversationResponse:
        return await gw.engine.handle_turn(CLIENT, "web", None, "w1", text)

    await say("I'd like to book a manicure")
    await say("Maria Lopez")
    r = await say("415-555-0142")
    assert r.text.endswith("What's your email address?")
    r = await say("text me")
    assert r.metadata.expecting == "email" and "text you" not in r.text

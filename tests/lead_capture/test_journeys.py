"""Conversations that move between purposes and come back, on the real engine
with the spa-del-sol client (offline): a booking interrupted by a question and
resumed, two bookings in one conversation, "never mind", a stuck conversation
handed to a person."""

from __future__ import annotations

import pytest

from engine import ConversationResponse
from engine.session import HandoffItem, SessionKey
from gateway.app import Gateway

CLIENT = "spa-del-sol"


async def say(
    gw: Gateway, text: str, session: str = "s1", channel: str = "web"
) -> ConversationResponse:
    return await gw.engine.handle_turn(CLIENT, channel, None, session, text)


@pytest.mark.parametrize("channel", ["web", "phone", "whatsapp"])
async def test_a_question_mid_booking_is_answered_and_the_booking_resumes_on_every_channel(
    gw: Gateway, channel: str
) -> None:
    async def say(text: str) -> ConversationResponse:
        return await gw.engine.handle_turn(CLIENT, channel, None, "s1", text)

    r = await say("I'd like to book a deep tissue massage")
    assert r.metadata.expecting == "name"
    r = await say("Do you have parking?")
    # support answers (from the knowledge), then the booking picks up where it was
    answer, _, rest = r.text.partition("Now, back to your booking: ")
    assert answer.strip() and rest == "may I have your name?"
    assert r.metadata.purpose == "lead_capture" and r.metadata.expecting == "name"
    assert r.metadata.slots == {"service": "Deep Tissue Massage"}
    r = await say("Maria Lopez")
    assert r.metadata.expecting == "phone"
    r = await say("415 555 0134, maria@example.com, Friday at 2pm")
    assert r.metadata.expecting == "confirmation"
    r = await say("what's your cancellation policy?")
    answer, _, rest = r.text.partition("Now, back to your booking: ")
    assert answer.strip() and "Shall I book it?" in rest
    assert r.metadata.expecting == "confirmation"
    r = await say("yes")
    assert r.metadata.state == "booked" and [a.type for a in r.actions] == ["booked"]
    (lead,) = await gw.leads.list_leads(CLIENT)
    assert lead.lead.service == "Deep Tissue Massage"
    assert lead.lead.start == "2026-11-27T14:00:00-08:00"
    loaded = await gw.store.load(SessionKey(CLIENT, channel, "s1"))
    assert loaded is not None and loaded.session.suspended == []
    moves = [(i.target, i.reason) for i in loaded.session.transcript if isinstance(i, HandoffItem)]
    assert ("lead_capture", "resume") in moves


async def test_two_services_in_one_conversation_are_both_booked(gw: Gateway) -> None:
    r = await say(gw, "I'm Ana Ruiz, 415 555 0142, ana@example.com, Swedish massage Friday at 11am")
    assert r.metadata.expecting == "confirmation"
    r = await say(gw, "can I also book a manicure?")
    # the massage is not replaced: the manicure is queued after it
    assert "Manicure" in r.text and "right after" in r.text
    assert r.metadata.slots["service"] == "Swedish Massage"
    assert r.metadata.expecting == "confirmation"
    r = await say(gw, "yes")
    assert [a.type for a in r.actions] == ["booked"]
    assert "You're booked! Swedish Massage" in r.text and "Now for your Manicure" in r.text
    assert r.metadata.expecting == "time"
    assert r.metadata.slots["service"] == "Manicure" and r.metadata.slots["name"] == "Ana Ruiz"
    r = await say(gw, "Friday at 3pm")
    assert r.metadata.expecting == "confirmation" and "Manicure" in r.text
    r = await say(gw, "yes")
    assert r.metadata.state == "booked"
    leads = await gw.leads.list_leads(CLIENT)
    assert sorted(lead.lead.service or "" for lead in leads) == ["Manicure", "Swedish Massage"]
    assert {lead.lead.fields["phone"] for lead in leads} == {"+14155550142"}


async def test_never_mind_leaves_the_journey(gw: Gateway) -> None:
    await say(gw, "book a facial")
    r = await say(gw, "never mind")
    assert r.metadata.state == "closed" and "stopped the booking" in r.text
    r = await say(gw, "hello")
    assert r.metadata.purpose == "router" and "How can I help" in r.text
    assert await gw.leads.list_leads(CLIENT) == []


async def test_never_mind_during_a_callback_request_leaves_it(gw: Gateway) -> None:
    r = await say(gw, "can someone call me?")
    assert r.metadata.purpose == "human" and r.metadata.expecting == "phone"
    r = await say(gw, "never mind")
    assert r.metadata.state == "closed" and "won't pass it on" in r.text
    assert await gw.leads.list_leads(CLIENT) == []


async def test_a_frustrated_customer_is_handed_to_a_person(gw: Gateway) -> None:
    await say(gw, "book a signature facial")
    r = await say(gw, "ugh you're not listening")
    # first time: an apology and the offer of a person, the booking goes on
    assert r.text.startswith("Sorry about that.")
    assert any(q.title == "Talk to a person" for q in r.quick_replies)
    r = await say(gw, "this is useless")
    assert r.metadata.purpose == "human" and r.metadata.expecting == "phone"
    r = await say(gw, "415 555 0177")
    assert [a.type for a in r.actions] == ["escalated"]
    (lead,) = await gw.leads.list_leads(CLIENT)
    assert lead.lead.status == "callback_requested"
    # what the booking had collected goes with the escalation
    assert lead.lead.service == "Signature Facial"


async def test_a_bot_repeating_itself_brings_in_a_person(gw: Gateway) -> None:
    await say(gw, "book a manicure")
    await say(gw, "Lee Park")
    await say(gw, "415 555 0101")
    texts = [(await say(gw, "yes")).text for _ in range(3)]
    # "yes" is no email: the same question three times, then a person
    assert texts[0] == texts[1]
    r = await say(gw, "yes")
    assert r.metadata.purpose == "human"
    assert [a.type for a in r.actions] == ["escalated"]
    (lead,) = await gw.leads.list_leads(CLIENT)
    assert lead.lead.fields["phone"] == "+14155550101"
    # a person holds it now: the bot stays silent until staff release it
    r = await say(gw, "hello")
    assert r.text == "" and r.metadata.state == "pending_human"
    assert await gw.staff.release(CLIENT, "web", "s1") == "resolved"
    # then the stuck booking no longer holds the conversation
    r = await say(gw, "hello")
    assert r.metadata.purpose == "router"


async def test_an_unsure_answer_with_a_question_mark_is_still_an_answer(gw: Gateway) -> None:
    await say(gw, "book a manicure")
    r = await say(gw, "Maria Lopez?")
    assert r.metadata.slots.get("name") == "Maria Lopez" and r.metadata.expecting == "phone"
    assert "back to your booking" not in r.text


async def test_small_talk_gets_a_short_polite_reply(gw: Gateway) -> None:
    r = await say(gw, "how are you?", "talk")
    assert r.metadata.purpose == "router" and r.text.startswith("I'm doing well")
    assert "How can I help" in r.text and r.quick_replies
    r = await say(gw, "are you a bot?", "talk")
    assert "virtual assistant for Spa del Sol" in r.text

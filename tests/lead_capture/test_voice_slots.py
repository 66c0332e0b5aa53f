"""Hard slots said on a call (issue 12): spoken forms (``spoken.py``), the
caller-ID offer, read-backs and corrections, played through the real engine
on the phone channel."""

from __future__ import annotations

import pytest

from engine import ConversationResponse
from engine.messages import ChannelContext
from engine.phones import say_phone
from gateway.app import Gateway
from purposes.lead_capture.spoken import (
    digits,
    email_words,
    letters,
    merge_name,
    respell_name,
    say_email,
    spell,
    typed,
)
from purposes.lead_capture.state import LeadState
from purposes.lead_capture.validators import find_email, find_name, find_phone

CLIENT = "spa-del-sol"
CALLER = "+16175550147"


async def call(
    gw: Gateway, text: str, session: str = "c1", caller: str | None = CALLER
) -> ConversationResponse:
    context = ChannelContext(caller_number=caller)
    return await gw.engine.handle_turn(CLIENT, "phone", None, session, text, context)


# --- spoken.py ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "e164"),
    [
        ("six one seven five five five oh one four seven", "+16175550147"),
        ("six one seven, five five five, zero one four seven", "+16175550147"),
        ("six one seven five five five o one four seven", "+16175550147"),
        ("six one seven double five five oh one four seven", "+16175550147"),
        ("six one seven triple five oh one four seven", "+16175550147"),
        ("617-555-0147", "+16175550147"),
        ("6-1-7-5-5-5-0-1-4-7", "+16175550147"),
        ("6 1 7 5 5 5 0 1 4 7.", "+16175550147"),
        ("my number is six seventeen, five five five, oh one forty seven", "+16175550147"),
        ("It's four one five, five five five, oh one three four.", "+14155550134"),
        ("eight hundred five five five one two one two", "+18005551212"),
        ("plus four four two zero seven nine four six zero nine five eight", "+442079460958"),
        ("(415) 555-0134", "+14155550134"),
    ],
)
def test_spoken_phone_numbers_become_numbers(said: str, e164: str) -> None:
    phone, err, _rest = find_phone(typed(said, "phone"), "US", True)
    assert err is None and phone == e164, typed(said, "phone")


@pytest.mark.parametrize(
    ("said", "email"),
    [
        ("m a r i a dot l o p e z at example dot com", "maria.lopez@example.com"),
        ("Maria.Lopez at example.com", "maria.lopez@example.com"),
        ("M-A-R-I-A dot lopez at gmail dot com", "maria.lopez@gmail.com"),
        ("it's maria underscore lopez at gmail dot com", "maria_lopez@gmail.com"),
        ("ana dash lee at ruiz dot dev", "ana-lee@ruiz.dev"),
        ("ana plus spa at x dot io", "ana+spa@x.io"),
        ("maria eighty seven at gmail dot com", "maria87@gmail.com"),
        ("email me at ana at gmail dot com", "ana@gmail.com"),
        ("my email is maria at example.co.uk", "maria@example.co.uk"),
        ("maria@example.com", "maria@example.com"),
    ],
)
def test_spoken_emails_become_addresses(said: str, email: str) -> None:
    found, err, _rest = find_email(typed(said, "email"), True)
    assert err is None and found == email, typed(said, "email")
    # the "… at … dot com" shape is clear enough without being asked for it
    assert find_email(typed(said), False)[0] == email


@pytest.mark.parametrize(
    ("said", "name"),
    [
        ("My name is Maria Lopez, L-O-P-E-Z", "Maria Lopez"),
        ("My name is Maria Lopes, L-O-P-E-Z", "Maria Lopez"),
        ("Maria Lopes, that's L O P E Z", "Maria Lopez"),
        ("maria lopes, spelled l o p e z", "Maria Lopez"),
        ("It's Sean, S-E-A-N", "Sean"),
        ("M A R I A", "Maria"),
    ],
)
def test_spelled_names(said: str, name: str) -> None:
    assert find_name(typed(said, "name"), expecting=True) == name


def test_letters_numbers_and_pass_through() -> None:
    assert letters("L as in Larry") == "l"
    assert letters("J O as in Oscar H N") == "john"
    assert letters("Lopez with a z") == "Lopez"
    assert letters("at 3 p.m.") == "at 3 pm"
    assert digits("double five") == "55"
    assert digits("Friday at two thirty") == "Friday at 2:30"
    assert digits("ten thirty am") == "10:30 am"
    assert respell_name("no spelling here") == "no spelling here"
    assert email_words("maria at gmail", expecting=False) == "maria at gmail"
    for text in [
        "I'd like one massage",
        "Can I book for 2026-11-27 at 10:30",
        "yes",
        "no",
        "Maria Lopez",
        "maria.lopez@example.com",
        "+16175550147",
        "Oh, and I'd like a facial",
        "I am calling about a booking",
    ]:
        assert typed(text) == text
        assert typed(typed(text)) == typed(text)


def test_merge_name() -> None:
    assert merge_name("Maria Lopes", "Lopez") == "Maria Lopez"
    assert merge_name("Maria Lopez", "Ana Ruiz") == "Ana Ruiz"
    assert merge_name("Maria Lopez", "Bob") == "Bob"
    assert merge_name(None, "Lopez") == "Lopez"


def test_read_backs() -> None:
    assert say_phone("+16175550147", "US") == "6 1 7, 5 5 5, 0 1 4 7"
    assert say_phone("+442079460958", "US") == "plus 4 4, 2 0, 7 9 4 6, 0 9 5 8"
    assert say_email("maria.lopez@example.com") == "m a r i a dot l o p e z at example dot com"
    assert say_email("ana_lee+spa@x.io") == "a n a underscore l e e plus s p a at x dot i o"
    assert spell("Lopez") == "L O P E Z"


def test_sessions_saved_before_the_caller_offer_still_load() -> None:
    old = {"stage": "collecting", "slots": {"name": "Ana"}, "expecting": "phone"}
    st = LeadState.model_validate(old)
    assert st.caller_offer is None and st.slots == {"name": "Ana"}


# --- on a call ---------------------------------------------------------------------


async def test_caller_id_yes_and_a_spelled_email(gw: Gateway) -> None:
    await call(gw, "I'd like to book a manicure")
    r = await call(gw, "My name is Maria Lopes, L-O-P-E-Z")
    assert r.metadata.slots["name"] == "Maria Lopez"
    assert r.metadata.expecting == "phone"
    assert "Is the number you're calling from, ending 0147, the best one to reach you?" in r.text
    r = await call(gw, "Yeah, that's fine")
    assert r.metadata.slots["phone"] == CALLER and r.metadata.expecting == "email"
    assert "number you're calling from" in r.text
    r = await call(gw, "m a r i a dot l o p e z at example dot com")
    assert r.metadata.slots["email"] == "maria.lopez@example.com"
    assert "m a r i a dot l o p e z at example dot com" in r.text
    r = await call(gw, "Monday at ten thirty am")
    assert r.metadata.expecting == "confirmation"
    assert "Maria Lopez, that's L O P E Z" in r.text
    assert "phone 6 1 7, 5 5 5, 0 1 4 7" in r.text
    assert "email m a r i a dot l o p e z at example dot com" in r.text
    r = await call(gw, "yes")
    assert r.metadata.state == "booked"
    (lead,) = await gw.leads.list_leads(CLIENT)
    assert lead.lead.fields["phone"] == CALLER
    assert lead.lead.fields["email"] == "maria.lopez@example.com"


async def test_caller_id_no_then_a_spoken_number(gw: Gateway) -> None:
    await call(gw, "I'd like to book a manicure")
    r = await call(gw, "Maria Lopez")
    assert "ending 0147" in r.text
    r = await call(gw, "no")
    assert r.metadata.expecting == "phone" and "phone" not in r.metadata.slots
    assert r.text == "What's the best number to reach you?"
    r = await call(gw, "six one seven double five five oh one four eight")
    assert r.metadata.slots["phone"] == "+16175550148"
    assert "Got your number: 6 1 7, 5 5 5, 0 1 4 8." in r.text


async def test_caller_id_answered_with_another_number(gw: Gateway) -> None:
    await call(gw, "I'd like to book a manicure")
    await call(gw, "Maria Lopez")
    r = await call(gw, "no, it's four one five, five five five, oh one three four")
    assert r.metadata.slots["phone"] == "+14155550134" and r.metadata.expecting == "email"
    assert "4 1 5, 5 5 5, 0 1 3 4" in r.text


async def test_no_caller_id_asks_as_before(gw: Gateway) -> None:
    await call(gw, "I'd like to book a manicure", caller=None)
    r = await call(gw, "Maria Lopez", caller=None)
    assert r.text.endswith("What's the best phone number to reach you?")


async def test_corrections_after_the_read_back(gw: Gateway) -> None:
    await call(gw, "I'd like to book a manicure")
    await call(gw, "My name is Maria Lopes")
    await call(gw, "yes")
    await call(gw, "maria at example dot com")
    r = await call(gw, "Monday at 10:30 am")
    assert r.metadata.expecting == "confirmation"
    assert "Maria Lopes, that's L O P E S" in r.text
    r = await call(gw, "no, it's six one seven five five five oh one four eight")
    assert r.metadata.slots["phone"] == "+16175550148"
    assert r.metadata.expecting == "confirmation"
    assert "I've updated your number to 6 1 7, 5 5 5, 0 1 4 8." in r.text
    assert "Shall I book it?" in r.text
    r = await call(gw, "no, my email is m a r i a dot l o p e z at gmail dot com")
    assert r.metadata.slots["email"] == "maria.lopez@gmail.com"
    assert "m a r i a dot l o p e z at gmail dot com" in r.text and "Shall I book" in r.text
    r = await call(gw, "no, the number is 617 555 0149")
    assert r.metadata.slots["phone"] == "+16175550149" and r.metadata.expecting == "confirmation"
    r = await call(gw, "it's Lopez with a z")
    assert r.metadata.slots["name"] == "Maria Lopez"
    assert "Maria Lopez, that's L O P E Z" in r.text and r.metadata.expecting == "confirmation"
    r = await call(gw, "yes")
    assert r.metadata.state == "booked"


async def test_web_replies_are_unchanged(gw: Gateway) -> None:
    r = await gw.engine.handle_turn(
        CLIENT,
        "web",
        None,
        "w1",
        "I'm Lee Chen, 415-555-0142, lee@chen.org, a swedish massage tuesday at 10am",
    )
    assert "phone +1 415-555-0142, email lee@chen.org" in r.text
    assert "that's" not in r.text


@pytest.mark.parametrize(
    ("heard", "email"),
    [
        # how Whisper writes a spelled or spoken address, from bench.speech_accuracy runs
        ("M-A-R-I-A.L-O-P-E-Z at example.com.", "maria.lopez@example.com"),
        ("M-a-r-i-a dot l-o-p-e-z at example dot com.", "maria.lopez@example.com"),
        ("Maria. Lopez at example.com.", "maria.lopez@example.com"),
        ("Maria dot Lopez at example dot com.", "maria.lopez@example.com"),
        ("My email is Maria Lopez at example.com.", "marialopez@example.com"),
        ("No, my email is m-a-r-a-dot-l-o-p-e-z at example dot com.", "mara.lopez@example.com"),
        ("Sem under score lee at yahoo dot com.", "sem_lee@yahoo.com"),
        ("my email is ana at gmail dot com", "ana@gmail.com"),
        ("maria.lopez@example.com", "maria.lopez@example.com"),
    ],
)
def test_whisper_forms_of_an_address_read_as_the_address(heard: str, email: str) -> None:
    found, error, _rest = find_email(typed(heard, "email"), True)
    assert (found, error) == (email, None)

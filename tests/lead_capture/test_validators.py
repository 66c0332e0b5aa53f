from __future__ import annotations

import unicodedata
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.config import Service
from purposes.lead_capture.validators import (
    find_email,
    find_name,
    find_phone,
    find_service,
    find_when,
    is_no,
    is_yes,
)

NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))

SERVICES = (
    Service(name="Swedish Massage", duration_minutes=60, aliases=("massage", "relaxing massage")),
    Service(
        name="Deep Tissue Massage", duration_minutes=90, aliases=("deep tissue", "sports massage")
    ),
    Service(name="Signature Facial", duration_minutes=50, aliases=("facial",)),
    Service(name="Manicure", duration_minutes=30, aliases=("nails",)),
)


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("(415) 555-0134", "+14155550134"),
        ("my number is 415.555.0134 thanks", "+14155550134"),
        ("+1 415 555 2671", "+14155552671"),
        ("4155550134", "+14155550134"),
    ],
)
def test_phone_to_e164(text: str, e164: str) -> None:
    phone, error, _rest = find_phone(text, "US", expecting=True)
    assert (phone, error) == (e164, None)


def test_phone_uses_client_region() -> None:
    phone, error, _ = find_phone("020 7946 0958", "GB", expecting=True)
    assert (phone, error) == ("+442079460958", None)


@pytest.mark.parametrize("text", ["415 555 013", "555-0134", "12345"])
def test_incomplete_phone_explains_and_shows_format(text: str) -> None:
    phone, error, _ = find_phone(text, "US", expecting=True)
    assert phone is None and error is not None
    assert error.slot == "phone" and "area code" in error.message


def test_time_is_not_taken_for_a_phone_number() -> None:
    phone, error, _ = find_phone("friday at 10:30 on 11/27", "US", expecting=False)
    assert (phone, error) == (None, None)


def test_email_valid_invalid_and_spoken() -> None:
    assert (
        find_email("it's Maria.Lopez@Example.com", expecting=True)[0] == "Maria.Lopez@example.com"
    )
    email, error, _ = find_email("maria@example", expecting=True)
    assert email is None and error is not None and "name@example.com" in error.message
    assert find_email("maria at example dot com", expecting=True)[0] == "maria@example.com"


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("o'brien@example.com", "o'brien@example.com"),
        ("my email is o'brien@example.com thanks", "o'brien@example.com"),
        ("it's O'Brien+spa@Example.COM!", "O'Brien+spa@example.com"),
        ("o’brien@example.com", "o’brien@example.com"),  # a phone's typographic apostrophe
        ("a.b-c_d+e!#$%&*/=?^`{|}~@x.io", "a.b-c_d+e!#$%&*/=?^`{|}~@x.io"),  # RFC 5322 atext
        ("my email is 'ann@x.com'.", "ann@x.com"),
        ('my email is "ann@x.com".', "ann@x.com"),
        ("‘ann@x.com’", "ann@x.com"),
        ("“ann@x.com”", "ann@x.com"),
        ("email: ann@x.com, thanks", "ann@x.com"),
        ("(ann@x.com)", "ann@x.com"),
        ("<ann@x.com>", "ann@x.com"),
        ("*ann@x.com*", "ann@x.com"),
        ("josé@example.com", "josé@example.com"),
    ],
)
def test_email_local_part_keeps_rfc_5322_characters(text: str, email: str) -> None:
    found, error, rest = find_email(text, expecting=False)
    assert (found, error) == (email, None)
    assert "@" not in rest


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("I'd like a massage", "Swedish Massage"),
        ("deep tissue massage please", "Deep Tissue Massage"),
        ("a sports massage", "Deep Tissue Massage"),
        ("can I get a masage", "Swedish Massage"),
        ("my nails done", "Manicure"),
        ("signature facial", "Signature Facial"),
    ],
)
def test_service_fuzzy_match(text: str, name: str) -> None:
    svc, _score, _near = find_service(text, SERVICES)
    assert svc is not None and svc.name == name


def test_unknown_service_and_near_miss() -> None:
    assert find_service("a haircut", SERVICES)[0] is None
    svc, _score, near = find_service("signture facal", SERVICES)
    assert svc is not None or (near is not None and near.name == "Signature Facial")


@pytest.mark.parametrize(
    ("text", "expecting", "name"),
    [
        ("my name is maria lopez", False, "Maria Lopez"),
        ("Hi, I'm Maria López and I want a facial", False, "Maria López"),
        ("I'm looking for a massage", False, None),
        ("Maria", True, "Maria"),
        ("sure, it's John O'Neil", True, "John O'Neil"),
        ("yes", True, None),
        ("tomorrow at 3", True, None),
        ("Łukasz Nowak", True, "Łukasz Nowak"),
        ("Иван Петров", True, "Иван Петров"),
        ("иван петров", True, "Иван Петров"),
        ("王伟", True, "王伟"),
        ("Nguyễn Văn An", True, "Nguyễn Văn An"),
        (unicodedata.normalize("NFD", "Nguyễn Văn An"), True, "Nguyễn Văn An"),  # stored NFC
        ("محمد علي", True, "محمد علي"),
        ("राहुल शर्मा", True, "राहुल शर्मा"),  # vowel signs are combining marks
        ("Seán O'Brien", True, "Seán O'Brien"),
        ("Anne-Marie Dubois", True, "Anne-Marie Dubois"),
        ("I'm Иван Петров", False, "Иван Петров"),
        ("my name is 王伟。", False, "王伟"),
        ("this is محمد علي، I need a massage", False, "محمد علي"),
        ("I'm looking for a massage, my name is Łukasz Nowak", False, "Łukasz Nowak"),
        # still not names
        ("I'm ann@x.com", False, None),
        ("I'm R2D2", False, None),
        ("R2D2", True, None),
        ("王伟123", True, None),
        ("ann_lee", True, None),
        ("415 555 0134", True, None),
        ("massage", True, None),
    ],
)
def test_names(text: str, expecting: bool, name: str | None) -> None:
    assert find_name(text, expecting) == name


@pytest.mark.parametrize(
    ("text", "day", "hour", "minute", "part"),
    [
        ("tomorrow at 3pm", date(2026, 11, 22), 15, 0, None),
        ("next Tuesday morning", date(2026, 11, 24), None, 0, "morning"),
        ("Friday 10:30", date(2026, 11, 27), 10, 30, None),
        ("Nov 27 at 2", date(2026, 11, 27), 2, 0, None),
        ("on the 30th at noon", date(2026, 11, 30), 12, 0, None),
        ("Dec 3 at 4:15 p.m.", date(2026, 12, 3), 16, 15, None),
        ("thursday", date(2026, 11, 26), None, 0, None),
        ("at 5pm", None, 17, 0, None),
    ],
)
def test_when(text: str, day: date | None, hour: int | None, minute: int, part: str | None) -> None:
    when, _rest = find_when(text, NOW)
    assert when is not None
    assert (when.day, when.hour, when.minute, when.part) == (day, hour, minute, part)


def test_no_time_in_plain_text() -> None:
    assert find_when("Maria Lopez", NOW)[0] is None


def test_yes_no() -> None:
    assert is_yes("Yes please") and is_yes("sounds good") and not is_yes("no")
    assert is_no("nope, wrong day") and not is_no("yes")

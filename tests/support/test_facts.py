"""Config facts over the shipped spa-del-sol client (America/Los_Angeles, en-US):
Mon–Wed 9–19, Thu–Fri 9–21, Sat 10–17, closed Sunday; four services."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine.config import ClientConfig, load_client
from purposes.support.facts import Fact, answer_fact, format_price

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("America/Los_Angeles")
SATURDAY_11 = datetime(2026, 11, 21, 11, 0, tzinfo=TZ)


@pytest.fixture(scope="module")
def spa() -> ClientConfig:
    config, problems = load_client(REPO / "clients" / "spa-del-sol")
    assert config is not None, problems
    return config


def ask(spa: ClientConfig, question: str, now: datetime = SATURDAY_11) -> Fact:
    fact = answer_fact(question, spa, now)
    assert fact is not None, question
    return fact


def test_closing_time_for_a_day(spa: ClientConfig) -> None:
    fact = ask(spa, "What time do you close on Thursdays?")
    assert fact.kind == "hours"
    assert fact.source == "config: business_hours"
    assert fact.confidence == 1.0
    assert "close at 9 PM" in fact.text
    assert "Thursday" in fact.text


def test_closed_sunday(spa: ClientConfig) -> None:
    fact = ask(spa, "are you open Sunday?")
    assert fact.text.startswith("No, we're closed on Sundays")
    assert "Monday" in fact.text  # when it opens again


def test_are_you_closed_on_an_open_day_says_no(spa: ClientConfig) -> None:
    assert ask(spa, "are you closed on mondays?").text.startswith("No, on Mondays we're open")


def test_tomorrow_is_relative_to_now_in_the_client_timezone(spa: ClientConfig) -> None:
    # Saturday 11:00 in LA: tomorrow is Sunday (closed)
    assert "closed tomorrow (Sunday)" in ask(spa, "when do you open tomorrow?").text
    # Sunday 08:00 in LA is 16:00 UTC: tomorrow is Monday
    sunday = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
    text = ask(spa, "when do you open tomorrow?", sunday).text
    assert text == "Tomorrow (Monday) we open at 9 AM and close at 7 PM."


def test_the_week_is_compact(spa: ClientConfig) -> None:
    fact = ask(spa, "what are your hours?")
    assert fact.text == (
        "Our hours are Mon–Wed 9 AM–7 PM, Thu–Fri 9 AM–9 PM, Sat 10 AM–5 PM, closed Sunday."
    )
    assert fact.spoken is not None
    assert "–" not in fact.spoken and "Monday to Wednesday" in fact.spoken


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 21, 11, 0, tzinfo=TZ), "Yes, we're open now until 5 PM today."),
        (datetime(2026, 11, 23, 8, 0, tzinfo=TZ), "We're closed right now; we open today at 9 AM."),
        (
            datetime(2026, 11, 21, 18, 0, tzinfo=TZ),
            "We're closed right now; we open again on Monday at 9 AM.",
        ),
        (
            datetime(2026, 11, 22, 9, 0, tzinfo=TZ),
            "We're closed right now; we open again tomorrow at 9 AM.",
        ),
    ],
)
def test_open_now(spa: ClientConfig, now: datetime, expected: str) -> None:
    fact = ask(spa, "Are you open right now?", now)
    assert fact.kind == "open_now"
    assert fact.text == expected


def test_open_at_a_given_time(spa: ClientConfig) -> None:
    assert ask(spa, "Are you open at 8pm on Friday?").text.startswith("Yes, on Fridays")
    assert ask(spa, "are you open at 6pm on saturday?").text.startswith(
        "No, on Saturdays we close at 5 PM"
    )


def test_weekend_lists_both_days(spa: ClientConfig) -> None:
    text = ask(spa, "are you open this weekend?").text
    assert "Saturdays we're open 10 AM–5 PM" in text and "closed on Sundays" in text


def test_price_in_the_client_currency(spa: ClientConfig) -> None:
    fact = ask(spa, "how much is a facial?")
    assert fact.kind == "price"
    assert fact.source == "config: services"
    assert fact.text == "The Signature Facial is $85 (50 minutes)."
    assert fact.spoken == "The Signature Facial is 85 dollars (50 minutes)."


def test_duration(spa: ClientConfig) -> None:
    fact = ask(spa, "how long is the deep tissue massage?")
    assert fact.kind == "duration"
    assert fact.text.startswith("The Deep Tissue Massage takes 90 minutes")


def test_a_generic_alias_mentions_the_other_matching_services(spa: ClientConfig) -> None:
    text = ask(spa, "how much is a massage?").text
    assert "Swedish Massage is $95" in text and "Deep Tissue Massage" in text


def test_typos_and_several_services(spa: ClientConfig) -> None:
    text = ask(spa, "how much for a manicur and two facials?").text
    assert "Manicure $35" in text and "Signature Facial $85" in text


def test_service_list_and_price_list(spa: ClientConfig) -> None:
    listed = ask(spa, "What services do you offer?")
    assert listed.kind == "services"
    assert all(s.name in listed.text for s in spa.services)
    prices = ask(spa, "what are your prices?")
    assert prices.kind == "price"
    assert "$95" in prices.text and "$35" in prices.text


def test_offered_service(spa: ClientConfig) -> None:
    assert ask(spa, "do you do facials?").text.startswith("Yes, we offer Signature Facial")


def test_an_alias_followed_by_a_known_word_is_still_the_service(spa: ClientConfig) -> None:
    assert "Signature Facial" in ask(spa, "how much is a facial treatment on Saturday?").text


@pytest.mark.parametrize(
    "question",
    [
        "is there parking?",
        "do you take my insurance?",
        "how late can I cancel?",
        "is there a cancellation fee for a facial?",
        "how much is a gift card?",
        "are you open on Christmas?",
        "how much is a hot stone massage?",  # not a listed service: no nearest guess
        "how much is your massage oil?",  # an alias made into another noun: a product
        "do you sell facial serum?",
        "do you have treatments for acne?",
        "is the pool open on sundays?",
        "Is the spa wheelchair accessible?",
        "can my 14-year-old get a facial?",
        "",
    ],
)
def test_other_questions_are_left_to_retrieval(spa: ClientConfig, question: str) -> None:
    assert answer_fact(question, spa, SATURDAY_11) is None


def test_a_service_without_a_price_is_left_to_retrieval(spa: ClientConfig) -> None:
    services = tuple(s.model_copy(update={"price": None}) for s in spa.services)
    client = spa.model_copy(update={"services": services})
    assert answer_fact("how much is a manicure?", client, SATURDAY_11) is None
    assert ask(client, "how long is a manicure?").text.startswith("The Manicure takes 30 minutes")


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("en-US", "$95"), ("es-ES", "95 €"), ("en-GB", "£95.50"), ("de-DE", "95,50 €")],
)
def test_format_price(locale: str, expected: str) -> None:
    amount = 95.5 if expected.endswith(("50", "50 €")) else 95
    assert format_price(amount, locale) == expected


def test_euro_client(spa: ClientConfig) -> None:
    client = spa.model_copy(update={"locale": "es-ES", "timezone": "Europe/Madrid"})
    assert ask(client, "how much is a facial?").text == "The Signature Facial is 85 € (50 minutes)."
    assert "21:00" in ask(client, "what time do you close on thursday?").text

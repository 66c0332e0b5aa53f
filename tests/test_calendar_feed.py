"""The iCalendar feed of a client's local bookings, on the real gateway (uvicorn):
a booking made on web chat appears in ``GET /calendar/{client_id}.ics?token=``
as one VEVENT with its times, summary and a UID that stays the same from one
fetch to the next; a missing or wrong token, or a client with no
``booking.ics_token``, is a 404 that does not tell whether the client exists."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from icalendar import Calendar
from web.chat_client import ChatClient, open_chat

CLIENT = "spa-del-sol"
TOKEN = "feed-token-0123456789abcdef"
OPEN = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # Wednesday


def _set_ics_token(clients_dir: Path, client: str, token: str) -> None:
    config = clients_dir / client / "config.yaml"
    text = config.read_text()
    anchor = "booking:\n"
    assert anchor in text
    config.write_text(text.replace(anchor, f"{anchor}  ics_token: {token}\n", 1))


@pytest.fixture
def feed_clients(clients_dir: Path) -> Path:
    _set_ics_token(clients_dir, CLIENT, TOKEN)
    return clients_dir


async def _ask(chat: ChatClient, text: str) -> dict[str, Any]:
    return (await chat.ask(text))[-1]


async def _book(ws_url: str) -> None:
    async with open_chat(f"{ws_url}/web/chat/{CLIENT}") as chat:
        await chat.session()
        for text in (
            "I'd like to book a massage",
            "Ana Ruiz",
            "617 555 0101",
            "ana@example.com",
            "Friday at 2pm",
        ):
            await _ask(chat, text)
        done = await _ask(chat, "yes")
        assert done["metadata"]["state"] == "booked", done["text"]


async def test_a_web_booking_is_in_the_feed_with_a_stable_uid(
    running_gateway: Any, feed_clients: Path
) -> None:
    with running_gateway(clock=lambda: OPEN) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            empty = await http.get(f"/calendar/{CLIENT}.ics", params={"token": TOKEN})
            await _book(gw.ws_url)
            first = await http.get(f"/calendar/{CLIENT}.ics", params={"token": TOKEN})
            second = await http.get(f"/calendar/{CLIENT}.ics", params={"token": TOKEN})

    assert empty.status_code == 200, empty.text
    assert Calendar.from_ical(empty.content).walk("VEVENT") == []
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "text/calendar; charset=utf-8"

    cal = Calendar.from_ical(first.content)
    assert str(cal["X-WR-CALNAME"]) == "Spa del Sol bookings"
    assert str(cal["VERSION"]) == "2.0" and "PRODID" in cal
    assert "REFRESH-INTERVAL" in cal and "X-PUBLISHED-TTL" in cal
    (event,) = cal.walk("VEVENT")
    # Friday 2026-12-04 14:00 in Los Angeles, a 60-minute Swedish Massage.
    start = datetime(2026, 12, 4, 14, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert event.decoded("DTSTART") == start
    assert event.decoded("DTSTART").astimezone(UTC) == datetime(2026, 12, 4, 22, 0, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2026, 12, 4, 15, 0, tzinfo=start.tzinfo)
    assert str(event["SUMMARY"]) == "Swedish Massage — Ana Ruiz"
    description = str(event["DESCRIPTION"])
    assert "+16175550101" in description.replace(" ", "").replace("-", "")
    assert "ana@example.com" in description and "web" in description
    assert str(event["STATUS"]) == "CONFIRMED"
    assert "DTSTAMP" in event and "SEQUENCE" in event
    uid = str(event["UID"])
    assert uid.endswith("@bookings.gateway.invalid") and len(uid) > len("@bookings.gateway.invalid")

    (again,) = Calendar.from_ical(second.content).walk("VEVENT")
    assert str(again["UID"]) == uid
    assert again.decoded("DTSTAMP") == event.decoded("DTSTAMP")


async def test_a_missing_or_wrong_token_is_not_found(
    running_gateway: Any, feed_clients: Path
) -> None:
    with running_gateway(clock=lambda: OPEN) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            answers = {
                "missing": await http.get(f"/calendar/{CLIENT}.ics"),
                "empty": await http.get(f"/calendar/{CLIENT}.ics", params={"token": ""}),
                "wrong": await http.get(
                    f"/calendar/{CLIENT}.ics", params={"token": TOKEN[:-1] + "x"}
                ),
                "prefix": await http.get(f"/calendar/{CLIENT}.ics", params={"token": TOKEN[:8]}),
                "no such client": await http.get("/calendar/nobody.ics", params={"token": TOKEN}),
                "right": await http.get(f"/calendar/{CLIENT}.ics", params={"token": TOKEN}),
            }
    assert answers.pop("right").status_code == 200
    for case, answer in answers.items():
        assert answer.status_code == 404, case
    bodies = {answer.text for answer in answers.values()}
    assert len(bodies) == 1  # nothing tells a wrong token from an unknown client


async def test_a_client_without_an_ics_token_has_no_feed(
    running_gateway: Any, feed_clients: Path
) -> None:
    # bright-smile-dental has no booking.ics_token: no token opens its feed.
    with running_gateway(clock=lambda: OPEN) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            for params in ({}, {"token": ""}, {"token": TOKEN}, {"token": "\x00"}):
                answer = await http.get("/calendar/bright-smile-dental.ics", params=params)
                assert answer.status_code == 404, params

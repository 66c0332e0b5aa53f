"""A returning web visitor, end to end on the real gateway (uvicorn): the chat
URL carries the widget's visitor id (``?visitor_id=``); a second conversation
from the same browser is welcomed back with the details on file and not asked
for them; ``DELETE /admin/api/contacts`` forgets the visitor everywhere and
leaves another visitor's data alone."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from web.chat_client import ChatClient, open_chat

CLIENT = "spa-del-sol"
ADMIN = {"Authorization": "Bearer test-admin-token"}
OPEN = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # Wednesday
ANA_BROWSER = "3f0c2a9e-6b1d-4c7a-9e55-0d2b7f1a8c44"
BOB_BROWSER = "b0b0b0b0-1111-4222-8333-444455556666"


async def ask(chat: ChatClient, text: str) -> dict[str, Any]:
    return (await chat.ask(text))[-1]


async def book(chat: ChatClient, name: str, phone: str, email: str, when: str) -> None:
    await chat.session()
    for text in ("I'd like to book a massage", name, phone, email, when):
        await ask(chat, text)
    done = await ask(chat, "yes")
    assert done["metadata"]["state"] == "booked", done["text"]


async def test_a_returning_visitor_is_welcomed_back_then_forgotten(running_gateway: Any) -> None:
    with running_gateway(clock=lambda: OPEN) as gw:
        chat_url = f"{gw.ws_url}/web/chat/{CLIENT}"
        async with open_chat(f"{chat_url}?visitor_id={ANA_BROWSER}") as chat:
            await book(chat, "Ana Ruiz", "617 555 0101", "ana@example.com", "Friday at 2pm")
        async with open_chat(f"{chat_url}?visitor_id={BOB_BROWSER}") as chat:
            await book(chat, "Bob Stone", "617 555 0199", "bob@example.com", "Friday at 4pm")

        async with open_chat(f"{chat_url}?visitor_id={ANA_BROWSER}") as chat:
            await chat.session()
            reply = await ask(chat, "Can I book a facial?")
            assert reply["text"].startswith(
                "Welcome back, Ana! I have +1 617-555-0101 and ana@example.com on file"
            )
            assert reply["metadata"]["expecting"] == "time"
            assert reply["metadata"]["slots"]["email"] == "ana@example.com"

        async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http:
            params = {"client_id": CLIENT, "email": "ana@example.com"}
            gone = await http.delete("/admin/api/contacts", params=params)
            assert gone.status_code == 200, gone.text
            deleted = gone.json()["deleted"]
            assert deleted["contacts"] == 1 and deleted["leads"] == 1
            assert deleted["conversations"] == 2 and deleted["bookings"] == 1

            leads = (await http.get("/admin/api/leads", params={"client_id": CLIENT})).json()
            assert [lead["name"] for lead in leads] == ["Bob Stone"]
            conversations = await http.get("/admin/api/conversations", params={"client_id": CLIENT})
            assert len(conversations.json()) == 1
            assert "ana@example.com" not in conversations.text

            again = await http.delete("/admin/api/contacts", params=params)
            assert again.status_code == 200 and set(again.json()["deleted"].values()) == {0}
            # "+" unencoded in a query string arrives as a space: still understood.
            by_phone = await http.delete(
                f"/admin/api/contacts?client_id={CLIENT}&phone=+16175550101"
            )
            assert by_phone.status_code == 200, by_phone.text
            for bad in ({"client_id": CLIENT}, {"client_id": CLIENT, "phone": "12"}):
                assert (await http.delete("/admin/api/contacts", params=bad)).status_code == 422
            unknown = await http.delete(
                "/admin/api/contacts", params={"client_id": "nope", "email": "a@b.co"}
            )
            assert unknown.status_code == 404
            async with httpx.AsyncClient(base_url=gw.url) as stranger:
                anonymous = await stranger.delete("/admin/api/contacts", params=params)
            assert anonymous.status_code == 401

        async with open_chat(f"{chat_url}?visitor_id={ANA_BROWSER}") as chat:
            await chat.session()
            reply = await ask(chat, "Can I book a facial?")
            assert "Welcome back" not in reply["text"]
            assert reply["metadata"]["expecting"] == "name"
        async with open_chat(f"{chat_url}?visitor_id={BOB_BROWSER}") as chat:
            await chat.session()
            reply = await ask(chat, "Can I book a facial?")
            assert reply["text"].startswith("Welcome back, Bob!")

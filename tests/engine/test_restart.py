"""A web chat survives a gateway restart, on every deployment.

The real gateway runs under uvicorn (``running_gateway``): embedded (SQLite,
no Redis), with Redis locks, and on PostgreSQL + Redis. A visitor starts booking over the web chat websocket (DESIGN.md "Web chat
protocol"), gives name and phone, and then the gateway goes down under the
open connection. A *new* gateway instance comes up on the same Redis and data
folder; the visitor reconnects with ``{"type":"resume",...}`` as the first
frame, gets the events it missed replayed, and finishes the booking. The flow
must remember the name and phone (``metadata.slots``) and the booking must
land in the calendar/CRM (admin API).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

CLIENT_ID = "spa-del-sol"
ORIGIN = Origin("http://localhost:8080")  # listed in the client's web.allowed_origins
RECV_TIMEOUT_S = 15.0

# Monday 2026-12-07, 09:00 in Los Angeles (the client's timezone): the engine's
# "now" for both gateway instances, so the requested slot is always bookable.
NOW = datetime(2026, 12, 7, 17, 0, tzinfo=UTC)
SLOT_TEXT = "December 15 at 2:30 pm"
SLOT_ISO_PREFIX = "2026-12-15T14:30"

NAME = "Maria Lopez"
PHONE_TEXT = "415 555 0134"
PHONE_E164 = "+14155550134"
EMAIL = "maria@example.com"
SERVICE = "Manicure"


class Chat:
    """One websocket connection speaking the web chat protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def recv(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT_S)
        assert isinstance(raw, str), "the server must send JSON text frames"
        event: dict[str, Any] = json.loads(raw)
        assert isinstance(event.get("event_id"), int), event
        self.events.append(event)
        return event

    async def recv_until(self, kind: str) -> dict[str, Any]:
        while True:
            event = await self.recv()
            if event["type"] == "error":
                raise AssertionError(f"error event while waiting for {kind!r}: {event}")
            if event["type"] == kind:
                return event

    async def say(self, text: str) -> dict[str, Any]:
        """Send a message; return its ``complete`` event (tokens must add up to it)."""
        await self.ws.send(json.dumps({"type": "message", "text": text, "id": uuid.uuid4().hex}))
        start = len(self.events)
        complete = await self.recv_until("complete")
        tokens = [e["content"] for e in self.events[start:] if e["type"] == "token"]
        assert "".join(tokens) == complete["text"], (tokens, complete["text"])
        return complete

    @property
    def last_event_id(self) -> int:
        return max(int(e["event_id"]) for e in self.events if e["type"] != "error")


def _ws_url(gw: Any) -> str:
    return f"{gw.ws_url}/web/chat/{CLIENT_ID}"


def _expect(complete: dict[str, Any], expecting: str | None) -> dict[str, str]:
    metadata = complete["metadata"]
    assert metadata["expecting"] == expecting, (complete["text"], metadata)
    slots: dict[str, str] = metadata["slots"]
    return slots


def _assert_increasing(events: list[dict[str, Any]]) -> None:
    ids = [e["event_id"] for e in events if e["type"] not in ("session", "error")]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), ids


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgresql+redis", marks=[pytest.mark.redis, pytest.mark.postgres]),
    ]
)
def deployment(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of a deployment: embedded SQLite and local locks (regression: a
    restart without Redis used to wipe the conversation), SQLite + Redis locks,
    PostgreSQL + Redis."""
    settings: dict[str, Any] = {}
    if "redis" in request.param:
        settings["REDIS_URL"] = request.getfixturevalue("redis_url")
    if request.param.startswith("postgresql"):
        settings["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    return settings


async def test_web_chat_resumes_after_gateway_restart(
    running_gateway: Callable[..., AbstractContextManager[Any]], deployment: dict[str, Any]
) -> None:
    def start() -> Any:
        return stack.enter_context(running_gateway(clock=lambda: NOW, **deployment))

    with ExitStack() as stack:
        # --- first gateway: start booking, give name and phone -------------------
        first = await asyncio.to_thread(start)
        async with httpx.AsyncClient(timeout=10) as http:
            ready = (await http.get(f"{first.url}/readyz")).json()
        assert ready["status"] == "ready", ready
        assert ready["store"]["backend"] == (
            "postgresql" if "DATABASE_URL" in deployment else "sqlite"
        ), ready
        assert ready["locks"]["backend"] == ("redis" if "REDIS_URL" in deployment else "local")

        async with connect(_ws_url(first), origin=ORIGIN) as ws:
            chat = Chat(ws)
            reply = await chat.say("Hi, I'd like to book an appointment")
            assert reply["metadata"]["purpose"] == "lead_capture", reply
            session = next(e for e in chat.events if e["type"] == "session")
            session_id = session["session_id"]
            assert isinstance(session_id, str) and session_id

            _expect(reply, "name")
            slots = _expect(await chat.say(NAME), "phone")
            assert slots["name"] == NAME
            before_phone = chat.last_event_id
            slots = _expect(await chat.say(PHONE_TEXT), "email")
            assert slots == {"name": NAME, "phone": PHONE_E164}
            last_complete = chat.events[-1]
            _assert_increasing(chat.events)

            # --- the gateway goes down under the open connection ------------------
            await asyncio.to_thread(stack.close)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)

        # --- a new gateway instance on the same Redis and data folder ------------
        second = await asyncio.to_thread(start)

        async with connect(_ws_url(second), origin=ORIGIN) as ws:
            chat2 = Chat(ws)
            # Resume from just before the phone answer: the reply to it is replayed.
            await ws.send(
                json.dumps(
                    {"type": "resume", "session_id": session_id, "last_event_id": before_phone}
                )
            )
            hello = await chat2.recv()
            assert hello["type"] == "session", hello
            assert hello["session_id"] == session_id
            replayed = await chat2.recv_until("complete")
            assert replayed["event_id"] == last_complete["event_id"]
            assert replayed["text"] == last_complete["text"]
            assert replayed["metadata"]["slots"] == {"name": NAME, "phone": PHONE_E164}
            assert all(
                e["event_id"] > before_phone for e in chat2.events if e["type"] != "session"
            ), chat2.events

            # --- continue: the form remembers name and phone ----------------------
            reply = await chat2.say(EMAIL)
            assert reply["event_id"] > last_complete["event_id"]
            slots = _expect(reply, "service")
            assert slots == {"name": NAME, "phone": PHONE_E164, "email": EMAIL}
            slots = _expect(await chat2.say(SERVICE), "time")
            assert slots["service"] == SERVICE
            reply = await chat2.say(SLOT_TEXT)
            slots = _expect(reply, "confirmation")
            assert slots["time"].startswith(SLOT_ISO_PREFIX), slots
            done = await chat2.say("yes")
            _assert_increasing(chat2.events)

        metadata = done["metadata"]
        assert metadata["state"] == "booked", done
        assert metadata["expecting"] is None
        assert metadata["slots"]["name"] == NAME
        assert metadata["slots"]["phone"] == PHONE_E164
        assert metadata["booking_id"], metadata
        assert {"type": "booked", "target": metadata["booking_id"]} in done["actions"]

        # The lead, with the details given before the restart, is in the CRM.
        async with httpx.AsyncClient(timeout=10) as http:
            leads = await http.get(
                f"{second.url}/admin/api/leads",
                params={"client_id": CLIENT_ID},
                headers={"Authorization": "Bearer test-admin-token"},
            )
        assert leads.status_code == 200, leads.text
        booked = [lead for lead in leads.json() if lead["booking_id"] == metadata["booking_id"]]
        assert len(booked) == 1, leads.json()
        assert booked[0]["session_id"] == session_id
        assert booked[0]["status"] == "booked"
        assert (booked[0]["name"], booked[0]["phone"], booked[0]["email"]) == (
            NAME,
            PHONE_E164,
            EMAIL,
        )
        assert booked[0]["start"].startswith(SLOT_ISO_PREFIX)

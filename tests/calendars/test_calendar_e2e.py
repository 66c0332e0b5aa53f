"""End to end through the served gateway (uvicorn, web chat, the real outbox
worker) with a client on ``google_calendar`` against the Google stub: a time
Google holds is refused with alternatives, a free one books, the event reaches
the stub once; a slot taken in Google before the push shows in
``GET /admin/api/calendar/conflicts``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.calendars.test_google_calendar import CAL, GoogleStub
from tests.web.chat_client import open_chat

CLIENT = "spa-del-sol"
ADMIN = {"Authorization": "Bearer test-admin-token"}
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))


@pytest.fixture
def google() -> Iterator[tuple[GoogleStub, bytes]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    server = GoogleStub(public).start()
    try:
        yield server, private
    finally:
        server.stop()


@pytest.fixture
def google_clients(clients_dir: Path, google: tuple[GoogleStub, bytes]) -> Path:
    stub, private = google
    folder = clients_dir / CLIENT
    (folder / "sa.json").write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "svc@proj.iam.gserviceaccount.com",
                "private_key": private.decode(),
                "private_key_id": "k1",
                "token_uri": stub.url + "/token",
            }
        )
    )
    config = folder / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "  provider: local                  # local | google_calendar | calendly\n"
    assert old in text
    config.write_text(
        text.replace(
            old,
            "  provider: google_calendar\n  google_calendar:\n"
            f"    calendar_id: {CAL}\n    service_account_file: sa.json\n",
        ),
        encoding="utf-8",
    )
    return clients_dir


async def _chat(url: str, lines: list[str]) -> list[str]:
    replies = []
    async with open_chat(f"{url}/web/chat/{CLIENT}") as chat:
        await chat.session()
        for text in lines:
            events = await chat.ask(text)
            assert events[-1]["type"] == "complete"
            replies.append(str(events[-1]["text"]))
    return replies


async def _until(check: Any, what: str, timeout_s: float = 15.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.1)
    raise AssertionError(what)  # pragma: no cover


async def test_google_busy_refused_free_booked_pushed_once_and_conflict_listed(
    running_gateway: Any, google_clients: Path, google: tuple[GoogleStub, bytes]
) -> None:
    stub, _ = google
    # Friday 2026-11-27, 14:00-16:00 local is busy in Google (22:00-24:00Z).
    stub.busy = [("2026-11-27T22:00:00Z", "2026-11-28T00:00:00Z")]
    with running_gateway(
        GOOGLE_CALENDAR_BASE_URL=stub.url,
        GOOGLE_OAUTH_TOKEN_URL=stub.url + "/token",
        GATEWAY_OUTBOX_POLL_S=0.1,
        GATEWAY_OUTBOX_BASE_BACKOFF_S=0.2,
        clock=lambda: NOW,
    ) as gw:
        opening = [
            "I'd like to book a massage",
            "Maria Lopez",
            "415 555 0134",
            "maria@example.com",
        ]
        replies = await _chat(gw.ws_url, [*opening, "Friday at 2pm", "Friday at 4pm", "yes"])
        refused, offered, booked = replies[-3:]
        assert "2:00 PM is already booked" in refused, replies
        alternatives = refused.split("nearest free times are", 1)[1]
        assert "Nov 27, 4:00 PM" in alternatives and "Nov 27, 1:00 PM" in alternatives
        for taken in ("2:00 PM", "2:30 PM", "3:00 PM", "3:30 PM", "1:30 PM"):
            assert f"Nov 27, {taken}" not in alternatives, alternatives
        assert "4:00 PM" in offered and "Shall I book it?" in offered, replies
        assert "booked" in booked.lower(), replies

        async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http:

            async def pushed() -> bool:
                return stub.inserts >= 1

            await _until(pushed, "the booking reaches Google")
            await asyncio.sleep(0.5)  # a second push would come now
            assert stub.inserts == 1
            (event,) = stub.events.values()
            assert event["start"]["dateTime"] == "2026-11-27T16:00:00-08:00"
            assert "Maria Lopez" in event["summary"]

            # Taken in Google between the chat and the push: a conflict, listed.
            stub.fail_inserts = [503]  # the first push fails; by its retry the slot is gone
            second = await _chat(gw.ws_url, [*opening, "Monday at 10am", "yes"])
            assert "You're booked" in second[-1] and "Monday, November 23" in second[-1], second
            stub.busy.append(("2026-11-23T18:00:00Z", "2026-11-23T19:00:00Z"))

            async def conflicts() -> list[dict[str, Any]]:
                resp = await http.get("/admin/api/calendar/conflicts", params={"client_id": CLIENT})
                assert resp.status_code == 200, resp.text
                rows: list[dict[str, Any]] = resp.json()
                return rows if rows and rows[0]["state"] == "dead" else []

            (conflict,) = await _until(conflicts, "the conflict is listed")
            assert conflict["start"] == "2026-11-23T10:00:00-08:00"
            assert conflict["name"] == "Maria Lopez"
            assert "busy" in conflict["reason"]
            assert stub.inserts == 1
            assert (
                await http.get("/admin/api/calendar/conflicts", params={"client_id": "x"})
            ).status_code == 404
        async with httpx.AsyncClient(base_url=gw.url) as anonymous:
            resp = await anonymous.get(
                "/admin/api/calendar/conflicts", params={"client_id": CLIENT}
            )
            assert resp.status_code == 401

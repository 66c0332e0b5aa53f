"""A person at the business answers in the customer's web chat, end to end on
the real gateway (uvicorn), a Slack webhook stub and a local SMTP server
(``aiosmtpd``): ask for a human -> Slack and email get the notice (with the
question and the conversation link) -> the customer's next message is recorded,
not answered -> a staff reply through the admin API appears on the open socket
-> release -> the bot answers again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from durability.procs import Inbox, SlackStub, slack_stub, smtp_inbox, wait_until

from web.chat_client import open_chat, reply_text

CLIENT = "spa-del-sol"
ADMIN = {"Authorization": "Bearer test-admin-token"}
PUBLIC = "https://gw.example.test"
OPEN = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # Wednesday


@pytest.fixture
def inbox() -> Iterator[tuple[str, Inbox]]:
    with smtp_inbox() as served:
        yield served


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStub]:
    with slack_stub() as stub:
        monkeypatch.setenv("SPA_SLACK_WEBHOOK_URL", stub.url)
        yield stub


async def test_staff_answer_in_the_open_widget_then_hand_back(
    running_gateway: Any, slack: SlackStub, inbox: tuple[str, Inbox]
) -> None:
    smtp_url, mailbox = inbox
    settings = {"GATEWAY_SMTP_URL": smtp_url, "GATEWAY_PUBLIC_URL": PUBLIC}
    with running_gateway(clock=lambda: OPEN, **settings) as gw:
        async with (
            open_chat(f"{gw.ws_url}/web/chat/{CLIENT}") as chat,
            httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http,
        ):
            sid = (await chat.session())["session_id"]
            conv = f"{CLIENT}:web:{sid}"
            asked = await chat.ask("Can I talk to someone about a gift card?", "m-1")
            assert asked[-1]["metadata"]["expecting"] == "phone"
            done = (await chat.ask("here is fine", "m-2"))[-1]
            assert "will reply here shortly" in done["text"]
            assert done["metadata"]["handoff"] == "pending_human"

            await asyncio.to_thread(wait_until, lambda: len(slack.received) == 1)
            await asyncio.to_thread(wait_until, lambda: len(mailbox.messages) == 1)
            notice = str(slack.received[0])
            assert "gift card" in notice  # the question
            assert f"{PUBLIC}/admin/api/conversations/{conv}" in notice
            body = mailbox.messages[0].get_body(("plain",))
            assert body is not None and f"{PUBLIC}/admin/api/conversations/{conv}" in (
                body.get_content()
            )

            # The customer writes again: recorded and notified, not answered.
            held = await chat.ask("Are you there?", "m-3")
            assert [e["type"] for e in held] == ["complete"]
            assert held[0]["text"] == "" and held[0]["metadata"]["state"] == "pending_human"
            await asyncio.to_thread(wait_until, lambda: len(slack.received) == 2)
            assert "Are you there?" in str(slack.received[1])

            # Staff reply through the admin API: pushed to the idle socket.
            posted = await http.post(
                f"/admin/api/conversations/{conv}/reply",
                json={"text": "Hi, this is Ana from Spa del Sol.", "id": "r-1"},
            )
            assert posted.status_code == 200, posted.text
            assert posted.json()["handoff"] == "human"
            pushed = await chat.recv()
            assert pushed["type"] == "complete"
            assert pushed["text"] == "Hi, this is Ana from Spa del Sol."
            assert pushed["metadata"]["from"] == "staff"
            assert pushed["metadata"]["handoff"] == "human"
            assert pushed["event_id"] == posted.json()["event_id"]
            retried = await http.post(
                f"/admin/api/conversations/{conv}/reply",
                json={"text": "Hi, this is Ana from Spa del Sol.", "id": "r-1"},
            )
            assert retried.status_code == 200 and retried.json()["duplicate"] is True

            listed = await http.get("/admin/api/conversations", params={"client_id": CLIENT})
            [record] = [c for c in listed.json() if c["id"] == conv]
            assert record["handoff"] == "human"
            staff = [line["text"] for line in record["transcript"] if line["staff"]]
            assert staff == ["Hi, this is Ana from Spa del Sol."]  # posted once
            one = await http.get(f"/admin/api/conversations/{conv}")
            assert one.status_code == 200 and one.json()["handoff"] == "human"

            released = await http.post(f"/admin/api/conversations/{conv}/release")
            assert released.status_code == 200 and released.json()["handoff"] == "resolved"
            note = await chat.recv()
            assert note["type"] == "complete" and note["text"] == ""
            assert note["metadata"]["state"] == "resolved"

            again = await chat.ask("hello", "m-4")
            assert reply_text(again) and again[-1]["metadata"]["purpose"] == "router"
            ids = [e["event_id"] for e in chat.seen]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)

            # A socket that was away gets the staff reply on resume.
            await http.post(f"/admin/api/conversations/{conv}/reply", json={"text": "Still here."})
            await chat.recv()  # pushed here too
        last = again[-1]["event_id"]
        async with open_chat(f"{gw.ws_url}/web/chat/{CLIENT}") as back:
            await back.resume(sid, last)
            replayed = await back.recv()
            assert replayed["text"] == "Still here." and replayed["metadata"]["from"] == "staff"


async def test_staff_reply_errors(running_gateway: Any) -> None:
    with running_gateway() as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http:
            phone = await http.post(
                f"/admin/api/conversations/{CLIENT}:phone:CA123/reply", json={"text": "hi"}
            )
            assert phone.status_code == 409 and "transferred" in phone.json()["detail"]
            for conv in (f"{CLIENT}:web:nobody", "nonsense", "no-such-client:web:x"):
                r = await http.post(f"/admin/api/conversations/{conv}/reply", json={"text": "hi"})
                assert r.status_code == 404, (conv, r.text)
            r = await http.post(f"/admin/api/conversations/{CLIENT}:web:nobody/release")
            assert r.status_code == 404
            r = await http.post(
                f"/admin/api/conversations/{CLIENT}:web:nobody/reply", json={"text": ""}
            )
            assert r.status_code == 422
            r = await http.post(
                f"/admin/api/conversations/{CLIENT}:web:nobody/reply",
                json={"text": "hi"},
                headers={"Authorization": "Bearer wrong"},
            )
            assert r.status_code == 401

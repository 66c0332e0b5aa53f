"""Approving a booking through the admin API, end to end on the real gateway
(uvicorn): the customer's *yes* in the widget asks staff (Slack webhook stub)
instead of booking; ``GET /admin/api/approvals`` lists it; ``POST`` approve
books it once — a second POST is a duplicate, a decline after it is a 409 —
and the news is pushed to the open widget."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from durability.procs import SlackStub, slack_stub, wait_until

from web.chat_client import open_chat, reply_text

CLIENT = "spa-del-sol"
ADMIN = {"Authorization": "Bearer test-admin-token"}
PUBLIC = "https://gw.example.test"
OPEN = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # Wednesday


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStub]:
    with slack_stub() as stub:
        monkeypatch.setenv("SPA_SLACK_WEBHOOK_URL", stub.url)
        yield stub


@pytest.fixture
def approval_clients(clients_dir: Path) -> Path:
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    anchor = "    min_notice_hours: 2\n"
    assert anchor in text
    config.write_text(
        text.replace(
            anchor,
            anchor + "  approval:\n    services: [Deep Tissue Massage]\n    fallback: decline\n",
        ),
        encoding="utf-8",
    )
    return clients_dir


async def test_approve_through_the_admin_api_books_once_and_tells_the_widget(
    running_gateway: Any, slack: SlackStub, approval_clients: Path
) -> None:
    with running_gateway(clock=lambda: OPEN, GATEWAY_PUBLIC_URL=PUBLIC) as gw:
        async with (
            open_chat(f"{gw.ws_url}/web/chat/{CLIENT}") as chat,
            httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http,
        ):
            await chat.session()
            await chat.ask(
                "I'm Maria Lopez, can I book a deep tissue massage Friday at 2pm? "
                "maria@example.com",
                "m-1",
            )
            summary = reply_text(await chat.ask("415 555 0134", "m-2"))
            assert "needs the team's OK" in summary
            asked = (await chat.ask("yes", "m-3"))[-1]
            assert asked["metadata"]["state"] == "awaiting_approval"
            assert "I'll message you here" in asked["text"]

            listed = await http.get(
                "/admin/api/approvals", params={"client_id": CLIENT, "state": "pending"}
            )
            assert listed.status_code == 200, listed.text
            [pending] = listed.json()
            url = f"/admin/api/approvals/{pending['id']}"
            assert pending["summary"].startswith("Deep Tissue Massage on Friday")
            await asyncio.to_thread(wait_until, lambda: len(slack.received) == 1)
            assert f"{PUBLIC}{url}" in str(slack.received[0])
            assert (await http.get("/admin/api/leads", params={"client_id": CLIENT})).json() == []

            posted = await http.post(url, json={"decision": "approve"})
            assert posted.status_code == 200, posted.text
            body = posted.json()
            assert body["state"] == "approved" and body["outcome"] == "booked"
            assert body["duplicate"] is False and body["delivery"] == "web"
            pushed = await chat.recv()
            assert pushed["type"] == "complete"
            assert "the team confirmed your Deep Tissue Massage" in pushed["text"]
            assert pushed["metadata"]["from"] == "approval"
            assert pushed["metadata"]["booking_id"] == body["result"]["booking_id"]

            again = await http.post(url, json={"decision": "approve"})
            assert again.status_code == 200 and again.json()["duplicate"] is True
            assert again.json()["result"] == body["result"]
            refused = await http.post(url, json={"decision": "decline"})
            assert refused.status_code == 409
            assert refused.json()["approval"]["state"] == "approved"
            leads = (await http.get("/admin/api/leads", params={"client_id": CLIENT})).json()
            assert [lead["status"] for lead in leads] == ["booked"]

            assert (await http.post(url, json={"decision": "maybe"})).status_code == 422
            assert (
                await http.post("/admin/api/approvals/nope", json={"decision": "approve"})
            ).status_code == 404
        async with httpx.AsyncClient(base_url=gw.url) as anonymous:
            assert (await anonymous.get(url)).status_code == 401

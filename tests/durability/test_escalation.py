"""A customer asks for a person: the business really is notified.

Regression: the ``escalated`` action said a human was notified, but no notifier
existed. Now the handoff turn commits a ``callback_requested`` lead and one
outbox row per configured target, and the gateway's outbox worker delivers
them: a Slack incoming webhook (a local stub that fails at first, as Slack
sometimes does) and an email through SMTP (a local ``aiosmtpd`` server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from web.chat_client import open_chat

from .procs import Inbox, SlackStub, slack_stub, smtp_inbox, wait_until

CLIENT = "spa-del-sol"
ADMIN = {"Authorization": "Bearer test-admin-token"}


@pytest.fixture
def inbox() -> Iterator[tuple[str, Inbox]]:
    with smtp_inbox() as served:
        yield served


@pytest.fixture
def flaky_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStub]:
    with slack_stub(fail_first=2) as stub:
        monkeypatch.setenv("SPA_SLACK_WEBHOOK_URL", stub.url)
        yield stub


async def test_a_request_for_a_person_reaches_slack_despite_failures_and_email(
    running_gateway: Any, flaky_slack: SlackStub, inbox: tuple[str, Inbox]
) -> None:
    smtp_url, mailbox = inbox
    settings = {
        "GATEWAY_SMTP_URL": smtp_url,
        "GATEWAY_OUTBOX_BASE_BACKOFF_S": "0.05",
        "GATEWAY_OUTBOX_MAX_BACKOFF_S": "0.2",
    }
    with running_gateway(**settings) as gw:
        async with open_chat(f"{gw.ws_url}/web/chat/{CLIENT}") as chat:
            sid = (await chat.session())["session_id"]
            await chat.ask("Hi, I'm Иван Петров and I'd like to book a facial", "m-1")
            reply = await chat.ask("Actually can a real person call me? 415 555 0134", "m-2")
        done = reply[-1]
        assert done["metadata"]["state"] == "closed", done["text"]
        assert {"type": "escalated", "target": None} in done["actions"]

        await asyncio.to_thread(wait_until, lambda: len(flaky_slack.received) == 1)
        await asyncio.to_thread(wait_until, lambda: len(mailbox.messages) == 1)
        async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http:
            leads = (await http.get("/admin/api/leads", params={"client_id": CLIENT})).json()
            metrics = (await http.get("/metrics")).text
    assert flaky_slack.failed == 2  # two 503s, then delivered: retried, not lost
    assert len(flaky_slack.received) == 1  # and not duplicated
    slack = str(flaky_slack.received[0])
    assert "Иван Петров" in slack and "+14155550134" in slack
    assert "real person" in slack  # the transcript excerpt
    [email] = mailbox.messages
    assert email["To"] == "frontdesk@spadelsol.example"
    assert "Spa del Sol" in email["Subject"]
    body = email.get_body(("plain",))
    assert body is not None and "Иван Петров" in body.get_content()
    assert [(lead["status"], lead["session_id"]) for lead in leads] == [("callback_requested", sid)]
    assert 'gateway_outbox_deliveries_total{kind="notify.slack",result="retry"}' in metrics
    assert 'gateway_outbox_deliveries_total{kind="notify.slack",result="delivered"}' in metrics

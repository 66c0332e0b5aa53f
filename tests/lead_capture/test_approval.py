"""Bookings that need a person's approval (``booking.approval``), on the real
engine and database: held not booked until approved; approve books once
(however often it is sent); decline; the timeout fallback both ways; a
service without the rule books as before; the staff notice reaches a Slack
webhook stub with the approve/decline call."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from durability.procs import slack_stub

from engine import ConversationResponse
from engine.decisions import DecisionRefused
from engine.outbox import OutboxWorker
from engine.session import SessionKey
from engine.tools.notify import Escalation
from gateway.app import Gateway
from gateway.approvals import decide
from gateway.deliveries import SlackDeliverer
from providers.notify.slack import render_slack

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=TZ)  # Saturday, open 10-17
CLIENT = "spa-del-sol"
PUBLIC = "https://gw.example.test"
APPROVAL = """
  approval:
    services: [Deep Tissue Massage]
    within_hours: 24
    timeout_minutes: 60
    fallback: {fallback}
"""


class Clock:
    """The engine's now, movable by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _clients(tmp_path: Path, fallback: str) -> Path:
    clients = tmp_path / "clients"
    shutil.copytree(REPO / "clients", clients, ignore=shutil.ignore_patterns("knowledge"))
    config = clients / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    anchor = "    min_notice_hours: 2\n"
    assert anchor in text
    config.write_text(
        text.replace(anchor, anchor + APPROVAL.format(fallback=fallback)), encoding="utf-8"
    )
    return clients


@pytest.fixture
def start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_gw: Any
) -> Callable[[str], AsyncIterator[tuple[Gateway, Clock]]]:
    monkeypatch.setenv("SPA_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/services/T000/B000/secret")

    async def run(fallback: str = "decline") -> AsyncIterator[tuple[Gateway, Clock]]:
        clock = Clock(NOW)
        async with open_gw(
            clients_dir=_clients(tmp_path, fallback),
            data_dir=tmp_path / "data",
            clock=clock,
            GATEWAY_PUBLIC_URL=PUBLIC,
        ) as gateway:
            yield gateway, clock

    return run


@pytest.fixture
async def gw(
    start: Callable[[str], AsyncIterator[tuple[Gateway, Clock]]],
) -> AsyncIterator[tuple[Gateway, Clock]]:
    async for pair in start("decline"):
        yield pair


async def say(gw: Gateway, text: str, session: str = "s1") -> ConversationResponse:
    return await gw.engine.handle_turn(CLIENT, "web", "lead_capture", session, text)


async def _ask_for_deep_tissue(gw: Gateway, session: str = "s1") -> ConversationResponse:
    """A full booking of a Deep Tissue Massage (needs approval) up to the *yes*."""
    r = await say(
        gw,
        "Hi, I'm Maria Lopez. Can I book a deep tissue massage Monday at 10am? "
        "Email maria@example.com",
        session,
    )
    r = await say(gw, "(415) 555-0134", session)
    assert r.metadata.expecting == "confirmation"
    assert "needs the team's OK" in r.text and "shall I ask them?" in r.text
    return await say(gw, "yes", session)


async def _booked(gw: Gateway) -> list[tuple[str, str]]:
    async def read(tx: object) -> list[tuple[str, str]]:
        rows = await tx.fetchall(  # type: ignore[attr-defined]
            "SELECT booking_id, status FROM bookings WHERE client_id = $1", CLIENT
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    return await gw.db.fast.query(read)


async def _pending_id(gw: Gateway) -> str:
    assert gw.decisions is not None
    pending = await gw.decisions.approvals.list(client_id=CLIENT, state="pending")
    assert len(pending) == 1
    return pending[0].approval_id


async def test_a_booking_needing_approval_is_held_not_booked(
    gw: tuple[Gateway, Clock],
) -> None:
    gateway, _clock = gw
    r = await _ask_for_deep_tissue(gateway)
    assert r.metadata.state == "awaiting_approval"
    assert "I've asked them to confirm it" in r.text
    assert "I'll message you here as soon as they do" in r.text
    assert not r.actions  # nothing booked
    assert await gateway.leads.list_leads(CLIENT) == []
    [(hold_id, status)] = await _booked(gateway)
    assert status == "held"
    approval_id = await _pending_id(gateway)
    assert gateway.decisions is not None
    approval = await gateway.decisions.approvals.get(approval_id)
    assert approval is not None and approval.hold_id == hold_id
    assert approval.deadline_ts == (NOW + timedelta(minutes=60)).timestamp()
    # the held time is busy for another customer
    other = await say(
        gateway, "I'm Ana Ruiz, a swedish massage Monday at 10am please", session="s2"
    )
    assert "already booked" in other.text
    # while waiting, the customer hears where things stand
    r = await say(gateway, "any news?")
    assert "still waiting for the team to confirm" in r.text

    # staff were notified with how to decide
    rows = [
        row for row in await gateway.outbox.list(client_id=CLIENT) if row.kind == "notify.slack"
    ]
    assert len(rows) == 1
    esc: Escalation = rows[0].payload.escalation
    assert esc.approval is not None
    assert esc.approval.url == f"{PUBLIC}/admin/api/approvals/{approval_id}"
    assert "needs approval" in esc.reason and "Deep Tissue Massage" in esc.reason
    slack = str(render_slack(esc))
    assert "Needs your decision" in slack and '"decision": "approve"' in slack


async def test_approve_books_once_however_often_it_is_sent(gw: tuple[Gateway, Clock]) -> None:
    gateway, _clock = gw
    await _ask_for_deep_tissue(gateway)
    approval_id = await _pending_id(gateway)
    first = await decide(gateway.decisions, gateway.bus, approval_id, "approve", "See you Monday!")
    again = await decide(gateway.decisions, gateway.bus, approval_id, "approve")
    assert not first.duplicate and again.duplicate
    assert first.approval.state == again.approval.state == "approved"
    assert first.approval.outcome == "booked"
    assert first.approval.result == again.approval.result
    [(booking_id, status)] = await _booked(gateway)
    assert status == "booked" and first.approval.result["booking_id"] == booking_id
    [lead] = await gateway.leads.list_leads(CLIENT)
    assert lead.lead.status == "booked" and lead.lead.booking_id == booking_id
    # the customer got the news in their conversation, once
    record = await gateway.conversations.get(_key())
    assert record is not None
    told = [str(t["text"]) for t in record.transcript if "the team confirmed" in str(t["text"])]
    assert len(told) == 1 and "See you Monday!" in told[0]
    # declining afterwards is refused: it was approved
    late = await decide(gateway.decisions, gateway.bus, approval_id, "decline")
    assert late.duplicate and late.approval.state == "approved"
    r = await say(gateway, "thanks!")
    assert "You're welcome" in r.text


async def test_decline_tells_the_customer_and_offers_other_times(
    gw: tuple[Gateway, Clock],
) -> None:
    gateway, _clock = gw
    await _ask_for_deep_tissue(gateway)
    approval_id = await _pending_id(gateway)
    result = await decide(
        gateway.decisions, gateway.bus, approval_id, "decline", "Our therapist is away Monday"
    )
    assert result.approval.state == "declined" and result.approval.outcome == "declined"
    assert [status for _id, status in await _booked(gateway)] == ["released"]
    [lead] = await gateway.leads.list_leads(CLIENT)
    assert lead.lead.status == "declined" and lead.lead.booking_id is None
    session = await gateway.store.load(_key())
    assert session is not None
    said = session.session.lines()[-1].text
    assert "the team can't confirm your Deep Tissue Massage" in said
    assert "Our therapist is away Monday" in said
    assert "nearest free times" in said
    # the flow asks for another time: a new one is taken (and again needs approval)
    r = await say(gateway, "Tuesday at 2pm")
    assert r.metadata.expecting == "confirmation"
    assert r.metadata.slots["name"] == "Maria Lopez"


def _key() -> SessionKey:
    return SessionKey(CLIENT, "web", "s1")


@pytest.mark.parametrize("fallback", ["decline", "take_message"])
async def test_timeout_applies_the_fallback_once(
    start: Callable[[str], AsyncIterator[tuple[Gateway, Clock]]], fallback: str
) -> None:
    async for gateway, clock in start(fallback):
        await _ask_for_deep_tissue(gateway)
        approval_id = await _pending_id(gateway)
        assert gateway.decisions is not None
        with pytest.raises(DecisionRefused):
            await gateway.decisions.decide(approval_id, "expire")  # not due yet
        assert await gateway.decisions.expire_due() == []
        clock.now = NOW + timedelta(minutes=61)
        settled = await gateway.decisions.expire_due()
        assert [s.approval.approval_id for s in settled] == [approval_id]
        assert await gateway.decisions.expire_due() == []  # once
        approval = settled[0].approval
        assert approval.state == "expired" and approval.decided_by == "timeout"
        [lead] = await gateway.leads.list_leads(CLIENT)
        session = await gateway.store.load(_key())
        assert session is not None
        said = session.session.lines()[-1].text
        if fallback == "decline":
            assert approval.outcome == "declined" and lead.lead.status == "declined"
            assert "couldn't confirm your Deep Tissue Massage" in said
        else:
            assert approval.outcome == "callback"
            assert lead.lead.status == "callback_requested"
            assert "someone will call you back at +1 415-555-0134" in said
            notices = [
                row.payload.escalation
                for row in await gateway.outbox.list(client_id=CLIENT)
                if row.kind == "notify.slack"
            ]
            assert any("please call back" in n.reason for n in notices)
        assert [status for _id, status in await _booked(gateway)] == ["released"]
        # staff deciding after the deadline get the outcome, nothing more
        late = await decide(gateway.decisions, gateway.bus, approval_id, "approve")
        assert late.duplicate and late.approval.state == "expired"
        assert len(await gateway.leads.list_leads(CLIENT)) == 1


async def test_short_notice_is_asked_for_instead_of_refused(gw: tuple[Gateway, Clock]) -> None:
    gateway, _clock = gw
    # 12:00 today is inside min_notice_hours (2) and within_hours (24)
    r = await say(gateway, "I'm Ana Ruiz, can I get a manicure today at 12pm? ana@ruiz.dev")
    r = await say(gateway, "415 555 0188")
    assert r.metadata.expecting == "confirmation"
    assert "less than 24 hours away" in r.text
    r = await say(gateway, "yes")
    assert r.metadata.state == "awaiting_approval"
    # the customer withdraws: the hold is released, nothing booked
    r = await say(gateway, "cancel")
    assert "withdrawn" in r.text
    assert [status for _id, status in await _booked(gateway)] == ["released"]
    assert gateway.decisions is not None
    [approval] = await gateway.decisions.approvals.list(client_id=CLIENT)
    assert approval.state == "withdrawn"
    late = await decide(gateway.decisions, gateway.bus, approval.approval_id, "approve")
    assert late.duplicate and late.approval.state == "withdrawn"


async def test_a_service_without_the_rule_books_as_before(gw: tuple[Gateway, Clock]) -> None:
    gateway, _clock = gw
    r = await say(gateway, "I'm Ana Ruiz, a swedish massage on Friday at 2pm please, ana@ruiz.dev")
    r = await say(gateway, "415 555 0188")
    assert "Shall I book it?" in r.text
    r = await say(gateway, "yes")
    assert r.metadata.state == "booked" and [a.type for a in r.actions] == ["booked"]
    assert gateway.decisions is not None
    assert await gateway.decisions.approvals.list(client_id=CLIENT) == []


async def test_approve_when_the_hold_is_gone_and_the_slot_taken(
    gw: tuple[Gateway, Clock],
) -> None:
    gateway, _clock = gw
    await _ask_for_deep_tissue(gateway)
    approval_id = await _pending_id(gateway)

    async def steal(tx: object) -> None:  # someone released the hold and booked it
        await tx.execute(  # type: ignore[attr-defined]
            "UPDATE bookings SET booking_id = 'someone-else', status = 'booked' WHERE client_id = $1",
            CLIENT,
        )

    await gateway.db.fast.transaction(steal)
    result = await decide(gateway.decisions, gateway.bus, approval_id, "approve")
    assert result.approval.state == "approved" and result.approval.outcome == "slot_taken"
    assert await gateway.leads.list_leads(CLIENT) == []
    session = await gateway.store.load(_key())
    assert session is not None
    assert "taken in the meantime" in session.session.lines()[-1].text
    r = await say(gateway, "Tuesday at 2pm")
    assert r.metadata.expecting == "confirmation"


async def test_the_slack_stub_receives_the_request(gw: tuple[Gateway, Clock]) -> None:
    gateway, _clock = gw
    with slack_stub() as stub:
        await _ask_for_deep_tissue(gateway)
        approval_id = await _pending_id(gateway)
        async with httpx.AsyncClient() as http:
            worker = OutboxWorker(
                gateway.outbox, [SlackDeliverer(gateway.registry, http, stub.url)]
            )
            assert await worker.run_once() >= 1
        [posted] = stub.received
        text = str(posted)
        assert "Needs your decision" in text
        assert f"{PUBLIC}/admin/api/approvals/{approval_id}" in text


async def test_two_concurrent_approvals_book_once_on_each_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, open_gw: Any
) -> None:
    monkeypatch.setenv("SPA_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/services/T000/B000/secret")
    async with open_gw(
        clients_dir=_clients(tmp_path, "decline"),
        data_dir=tmp_path / "data",
        database_url=database_url,
        clock=Clock(NOW),
    ) as gateway:
        await _ask_for_deep_tissue(gateway)
        approval_id = await _pending_id(gateway)
        first, second = await asyncio.gather(
            decide(gateway.decisions, gateway.bus, approval_id, "approve"),
            decide(gateway.decisions, gateway.bus, approval_id, "approve"),
        )
        assert sorted([first.duplicate, second.duplicate]) == [False, True]
        assert [status for _id, status in await _booked(gateway)] == ["booked"]
        assert [lead.lead.status for lead in await gateway.leads.list_leads(CLIENT)] == ["booked"]


async def test_forgetting_the_customer_removes_a_pending_request_and_frees_its_slot(
    gw: tuple[Gateway, Clock],
) -> None:
    gateway, _clock = gw
    await _ask_for_deep_tissue(gateway)
    assert gateway.decisions is not None
    await _pending_id(gateway)
    report = await gateway.contacts.forget(CLIENT, email="maria@example.com")
    assert report.approvals == 1
    assert await gateway.decisions.approvals.list(client_id=CLIENT, state="pending") == []
    [(_hold, status)] = await _booked(gateway)
    assert status == "released"  # nobody will decide it now: the time is free again
    other = await say(
        gateway, "I'm Ana Ruiz, a swedish massage Monday at 10am please", session="s2"
    )
    assert "already booked" not in other.text

"""Memory across conversations (engine/contacts.py), through the real engine on
a real database (embedded SQLite and PostgreSQL): a returning contact is
recognised and not asked again, the contact is written with the turn's commit
or not at all, agents get summaries of earlier conversations, retention and
``forget`` (store, CLI) delete what they should and nothing else.

The clock is pinned to Saturday 2026-11-21 11:00 in Los Angeles (spa-del-sol
is open 10-17), so "Friday at 2pm" is 2026-11-27 14:00 (the engine's clock; rows
are timestamped with the real one).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from typer.testing import CliRunner

from engine.agents import Agent, AgentReply, TurnContext
from engine.config import ClientConfig, MemoryConfig
from engine.contacts import KnownContact, contact_key, normalize_phone
from engine.db.database import Database
from engine.db.schema import METADATA
from engine.errors import StoreError
from engine.messages import ChannelContext, ConversationResponse
from engine.session import ConversationSession, SessionKey
from gateway.app import Gateway, _housekeeping, open_gateway
from gateway.cli import app as cli_app
from gateway.settings import Settings
from purposes.lead_capture import LeadCaptureAgent
from purposes.support import SupportAgent

REPO = Path(__file__).resolve().parents[2]
SPA = "spa-del-sol"
DENTAL = "bright-smile-dental"
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
ANA = "+16175550101"
BOB = "+16175550199"
DAY_S = 86400.0
BOB_DETAILS = {
    "name": "Bob Stone",
    "phone": "617 555 0199",
    "email": "bob@example.com",
    "when": "Friday at 4pm",
}


def settings(data_dir: Path, database_url: str | None) -> Settings:
    return Settings(
        GATEWAY_CLIENTS_DIR=REPO / "clients",
        GATEWAY_DATA_DIR=data_dir,
        DATABASE_URL=database_url,
        REDIS_URL=None,
        _env_file=None,
    )


@pytest.fixture
def gw_options(database_url: str) -> dict[str, object]:
    """``gw`` (tests/conftest.py) on ``database_url``, at :data:`NOW`."""
    return {"database_url": database_url, "clock": lambda: NOW}


def caller(number: str) -> ChannelContext:
    return ChannelContext(caller_number=number)


async def say(
    gw: Gateway,
    text: str,
    session: str,
    context: ChannelContext | None = None,
    *,
    channel: str = "phone",
    client: str = SPA,
) -> ConversationResponse:
    return await gw.engine.handle_turn(client, channel, None, session, text, context)


async def first_booking(
    gw: Gateway,
    session: str,
    context: ChannelContext,
    *,
    channel: str = "phone",
    name: str = "Ana Ruiz",
    phone: str = "617 555 0101",
    email: str = "ana@example.com",
    when: str = "Friday at 2pm",
) -> None:
    """A new contact books a massage, asked for every detail in turn."""
    script = [
        ("I'd like to book a massage", "name"),
        (name, "phone"),
        (phone, "email"),
        (email, "time"),
        (when, "confirmation"),
        ("yes", None),
    ]
    for text, expecting in script:
        r = await say(gw, text, session, context, channel=channel)
        assert r.metadata.expecting == expecting, (text, r.text)
    assert r.metadata.state == "booked"


async def rows(gw: Gateway, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with gw.db.read() as conn:
        return [tuple(r) for r in await conn.execute(sa.text(sql), params)]


# -- recognition --------------------------------------------------------------------------


async def test_a_returning_caller_is_welcomed_back_and_not_asked_again(gw: Gateway) -> None:
    await first_booking(gw, "CA-1", caller(ANA))

    r = await say(gw, "Hi, I want to book a facial", "CA-2", caller(ANA))
    assert r.text.startswith(
        "Welcome back, Ana! I have 6 1 7, 5 5 5, 0 1 0 1 and your email on file — "
        "I'll use those unless something changed."
    )
    # Nothing is asked again; the e-mail on file is never read out to a caller
    # (caller ID can be spoofed).
    assert "ana@example.com" not in r.text
    assert r.metadata.expecting == "time"
    assert r.metadata.slots["name"] == "Ana Ruiz"
    assert r.metadata.slots["phone"] == ANA
    assert r.metadata.slots["email"] == "ana@example.com"
    r = await say(gw, "Saturday at 3pm", "CA-2", caller(ANA))
    assert r.metadata.expecting == "confirmation"
    # The summary confirmed before booking lists the details on file.
    # On a call it is read back digit by digit, the surname spelled (issue 12).
    assert "for Ana Ruiz, that's R U I Z — phone 6 1 7, 5 5 5, 0 1 0 1, email on file" in r.text
    r = await say(gw, "yes", "CA-2", caller(ANA))
    assert r.metadata.state == "booked"
    leads = [lead.as_json() for lead in await gw.leads.list_leads(SPA)]
    assert [(lead["name"], lead["phone"], lead["service"]) for lead in leads] == [
        ("Ana Ruiz", ANA, "Swedish Massage"),
        ("Ana Ruiz", ANA, "Signature Facial"),
    ]


async def test_another_number_is_not_recognised_and_a_correction_wins(gw: Gateway) -> None:
    await first_booking(gw, "CA-1", caller(ANA))
    r = await say(gw, "I'd like to book a massage", "CA-2", caller(BOB))
    assert "Welcome back" not in r.text and r.metadata.expecting == "name"

    # Ana again, with a new email in her first message: the new value is taken.
    r = await say(gw, "Book a facial please, my email is ana.ruiz@example.org", "CA-3", caller(ANA))
    assert "Welcome back, Ana!" in r.text
    assert r.metadata.slots["email"] == "ana.ruiz@example.org"
    assert r.metadata.expecting == "time"


@pytest.mark.parametrize("name", ["王伟", "محمد علي", "Łukasz Nowak", "Nguyễn Văn An"])
async def test_names_in_any_script_are_remembered(gw: Gateway, name: str) -> None:
    await first_booking(gw, "CA-1", caller(ANA), name=name)
    r = await say(gw, "I'd like to book a facial", "CA-2", caller(ANA))
    assert r.text.startswith(f"Welcome back, {name.split()[0]}!"), r.text
    assert r.metadata.slots["name"] == name
    assert r.metadata.expecting == "time"


async def test_a_web_visitor_is_recognised_by_visitor_id(gw: Gateway) -> None:
    visitor = ChannelContext(visitor_id="v-1f3a9c2e7b5d4e6f")
    await first_booking(gw, "web-1", visitor, channel="web")
    r = await say(gw, "I'd like to book a manicure", "web-2", visitor, channel="web")
    assert r.text.startswith("Welcome back, Ana!")
    assert r.metadata.expecting == "time"
    # No visitor id, or another one: a new person.
    for other in (None, ChannelContext(visitor_id="v-0000000000000000")):
        r = await say(gw, "I'd like to book a manicure", f"web-{other}", other, channel="web")
        assert "Welcome back" not in r.text and r.metadata.expecting == "name"
    # The visitor id is stored hashed (it lets its browser resume the chat).
    keys = [k for (k,) in await rows(gw, "SELECT contact_key FROM contacts")]
    assert keys == [contact_key("web", visitor)] and "v-1f3a9c2e" not in str(keys)


class Spy(Agent):
    """Records the contact each turn shows it."""

    purpose = "spy"

    def __init__(self) -> None:
        self.seen: list[KnownContact | None] = []

    async def handle(self, ctx: TurnContext) -> AgentReply:
        self.seen.append(ctx.contact)
        return AgentReply(text="ok")


async def test_agents_get_summaries_of_earlier_conversations_only(gw: Gateway) -> None:
    await first_booking(gw, "CA-1", caller(ANA))
    # A second conversation that only asks about a service, in the customer's words.
    await say(gw, "Does the facial hurt? My skin is very sensitive", "CA-2", caller(ANA))
    spy = Spy()
    gw.engine.replace_agents([LeadCaptureAgent(), SupportAgent(), spy])

    await gw.engine.handle_turn(SPA, "phone", "spy", "CA-3", "hello", caller(ANA))
    contact = spy.seen[-1]
    assert contact is not None and contact.returning
    assert (contact.name, contact.phone, contact.email) == ("Ana Ruiz", ANA, "ana@example.com")
    lines = [h.text for h in contact.history]
    # Dated when the conversation happened (the session's wall-clock creation).
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d, phone: booked Swedish Massage for Nov 27, 2:00 PM", lines[-1]
    )
    assert len(lines) == 2 and "Signature Facial" in lines[0]
    # Canonical values only: nothing the customer typed beyond name and contact.
    assert "sensitive" not in contact.summary() and "hurt" not in contact.summary()
    assert contact.summary().startswith("- ") and ", phone: " in contact.summary()

    # Within its own conversation, a conversation is not "earlier".
    await gw.engine.handle_turn(SPA, "phone", "spy", "CA-3", "hello again", caller(ANA))
    again = spy.seen[-1]
    assert again is not None and len(again.history) == 2


async def test_nothing_is_remembered_when_memory_is_off_or_for_test_chats(gw: Gateway) -> None:
    client = gw.registry.clients[SPA]
    gw.registry.clients[SPA] = client.model_copy(update={"memory": MemoryConfig(enabled=False)})
    await first_booking(gw, "CA-1", caller(ANA))
    r = await say(gw, "I'd like to book a facial", "CA-2", caller(ANA))
    assert "Welcome back" not in r.text and r.metadata.expecting == "name"
    assert await rows(gw, "SELECT contact_key FROM contacts") == []

    gw.registry.clients[SPA] = client
    await gw.engine.handle_turn(
        SPA, "phone", None, "CA-3", "book a massage", caller(BOB), test=True
    )
    assert await rows(gw, "SELECT contact_key FROM contacts") == []


# -- atomic with the turn -----------------------------------------------------------------


async def test_a_turn_that_fails_to_commit_leaves_no_contact(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = gw.contacts
    real = store.remember_in

    async def remember_then_fail(*args: object, **kwargs: object) -> bool:
        await real(*args, **kwargs)  # type: ignore[arg-type]
        raise StoreError("database write failed (test): the disk is full")

    monkeypatch.setattr(store, "remember_in", remember_then_fail)
    with pytest.raises(StoreError):
        await say(gw, "Hi, I'm Ana Ruiz and I'd like to book a massage", "CA-1", caller(ANA))
    assert await rows(gw, "SELECT contact_key FROM contacts") == []
    assert await rows(gw, "SELECT session_id FROM contact_conversations") == []
    assert await rows(gw, "SELECT session_id FROM conversations") == []

    monkeypatch.undo()  # the same message again commits, contact and all
    await say(gw, "Hi, I'm Ana Ruiz and I'd like to book a massage", "CA-1", caller(ANA))
    assert await rows(gw, "SELECT contact_key, name, phone FROM contacts") == [
        (f"tel:{ANA}", "Ana Ruiz", ANA)
    ]


# -- retention ----------------------------------------------------------------------------


async def test_housekeeping_deletes_contacts_and_transcripts_past_retention(gw: Gateway) -> None:
    await first_booking(gw, "CA-old", caller(ANA))
    await first_booking(gw, "CA-new", caller(BOB), **BOB_DETAILS)
    await say(gw, "hello", "CA-other", caller(ANA), client=DENTAL)
    long_ago = time.time() - 366 * DAY_S
    async with gw.db.write() as conn:
        for sql in (
            "UPDATE contacts SET last_seen_ts = :t WHERE contact_key = :k AND client_id = :c",
            "UPDATE contact_conversations SET updated_ts = :t"
            " WHERE contact_key = :k AND client_id = :c",
        ):
            await conn.execute(sa.text(sql), {"t": long_ago, "k": f"tel:{ANA}", "c": SPA})
        await conn.execute(
            sa.text("UPDATE conversations SET updated_ts = :t WHERE session_id = 'CA-old'"),
            {"t": long_ago},
        )
    await _housekeeping(gw)

    # Expired everywhere it was: spa-del-sol's contact and its old transcript.
    assert await rows(gw, "SELECT client_id, contact_key FROM contacts ORDER BY client_id") == [
        (DENTAL, f"tel:{ANA}"),  # another client's contact is its own (seen today)
        (SPA, f"tel:{BOB}"),
    ]
    assert await rows(gw, "SELECT session_id FROM conversations ORDER BY session_id") == [
        ("CA-new",),
        ("CA-other",),
    ]
    lines = await rows(gw, "SELECT DISTINCT session_id FROM conversation_messages")
    assert sorted(lines) == [("CA-new",), ("CA-other",)]
    assert len(await gw.leads.list_leads(SPA)) == 2  # leads are business records: kept

    # A recognised contact past retention is unknown even before housekeeping runs.
    client = gw.registry.clients[SPA]
    session = ConversationSession.new(SessionKey(SPA, "phone", "CA-x"))
    session.context = caller(BOB)
    assert await gw.contacts.recognise(client, session) is not None
    short = client.model_copy(update={"memory": MemoryConfig(retention_days=1)})
    async with gw.db.write() as conn:
        await conn.execute(sa.text("UPDATE contacts SET last_seen_ts = :t"), {"t": long_ago})
    assert await gw.contacts.recognise(short, session) is None

    # Memory switched off: the client's contacts go at the next run.
    off = client.model_copy(update={"memory": MemoryConfig(enabled=False)})
    await gw.contacts.purge_expired([off])
    assert await rows(gw, "SELECT client_id FROM contacts") == [(DENTAL,)]


# -- forget -------------------------------------------------------------------------------


async def fill_two_people(gw: Gateway) -> None:
    """Ana: a booked call, a web chat with the same number, a call asking for a
    person (an escalation in the outbox) and a call trace; a call to another
    client. Bob: a booked call."""
    await first_booking(gw, "CA-ana", caller(ANA))
    web = ChannelContext(visitor_id="v-ana-0123456789")
    await first_booking(gw, "web-ana", web, channel="web", when="Friday at 11am")
    r = await say(gw, "Can I talk to someone please?", "CA-ana-2", caller(ANA))
    assert "escalated" in [a.type for a in r.actions]
    await gw.call_traces.save("CA-ana-2", SPA, {"call_sid": "CA-ana-2", "turns": []})
    await say(gw, "hello", "CA-ana-dental", caller(ANA), client=DENTAL)
    await first_booking(gw, "CA-bob", caller(BOB), **BOB_DETAILS)
    await gw.call_traces.save("CA-bob", SPA, {"call_sid": "CA-bob", "turns": []})


async def test_forget_deletes_one_persons_data_everywhere_and_nothing_else(gw: Gateway) -> None:
    await fill_two_people(gw)
    assert await rows(gw, "SELECT count(*) FROM outbox WHERE client_id = :c", c=SPA) != [(0,)]

    report = await gw.contacts.forget(SPA, phone=ANA)
    counts = report.counts()
    assert counts["contacts"] == 2  # the caller and the web visitor who gave the number
    assert counts["sessions"] == 3 and counts["conversations"] == 3
    assert counts["leads"] == 3  # two bookings and the callback request
    assert counts["bookings"] == 2 and counts["call_traces"] == 1 and counts["outbox"] >= 1
    assert counts["messages"] > 0

    leads = [lead.as_json() for lead in await gw.leads.list_leads(SPA)]
    assert [lead["name"] for lead in leads] == ["Bob Stone"]
    spa_conversations = await gw.conversations.list(SPA)
    assert [c.session_id for c in spa_conversations] == ["CA-bob"]
    assert await rows(gw, "SELECT client_id, contact_key FROM contacts ORDER BY client_id") == [
        (DENTAL, f"tel:{ANA}"),
        (SPA, f"tel:{BOB}"),
    ]
    assert await rows(gw, "SELECT call_sid FROM call_traces") == [("CA-bob",)]
    assert await rows(gw, "SELECT count(*) FROM outbox WHERE client_id = :c", c=SPA) == [(0,)]
    # Ana's appointments stay in the calendar, without her name.
    names = await rows(gw, "SELECT name FROM bookings WHERE client_id = :c ORDER BY name", c=SPA)
    assert names == [("",), ("",), ("Bob Stone",)]
    # The other client's conversation with Ana is that client's to forget.
    assert [c.session_id for c in await gw.conversations.list(DENTAL)] == ["CA-ana-dental"]
    # Nothing about her is left to find.
    for table, column in (
        ("sessions", "data"),
        ("conversation_messages", "text"),
        ("leads", "fields"),
        ("outbox", "payload"),
    ):
        found = await rows(
            gw,
            f"SELECT count(*) FROM {table} WHERE client_id = :c AND {column} LIKE :p",
            c=SPA,
            p="%ana@example.com%",
        )
        assert found == [(0,)], table

    # She calls again: a stranger.
    r = await say(gw, "I'd like to book a facial", "CA-ana-3", caller(ANA))
    assert "Welcome back" not in r.text and r.metadata.expecting == "name"

    again = await gw.contacts.forget(SPA, phone=ANA, email="ANA@example.com")
    assert again.counts()["leads"] == 0 and again.counts()["conversations"] == 1  # the new call
    assert (await gw.contacts.forget(SPA, phone=ANA)).total == 0  # idempotent


async def test_forget_by_email_finds_the_web_visitor(gw: Gateway) -> None:
    await fill_two_people(gw)
    report = await gw.contacts.forget(SPA, email="Ana@Example.com")
    assert report.counts()["contacts"] == 2
    # Her calls come with her contact (whose email it is): the callback
    # request, which held only her number, goes too.
    assert report.counts()["leads"] == 3 and report.counts()["sessions"] == 3
    assert [r.lead.fields["name"] for r in await gw.leads.list_leads(SPA)] == ["Bob Stone"]


def test_forget_refuses_a_malformed_or_missing_person() -> None:
    assert normalize_phone(" +1 (617) 555-0101 ") == ANA
    for bad in ("6175550101", "+1 555", "call me"):
        with pytest.raises(ValueError):
            normalize_phone(bad)


# -- the CLI --------------------------------------------------------------------------------


def test_gateway_contacts_forget(tmp_path: Path, database_url: str) -> None:
    async def fill() -> None:
        async with open_gateway(settings(tmp_path, database_url), clock=lambda: NOW) as gw:
            await fill_two_people(gw)

    asyncio.run(fill())
    env: dict[str, str | None] = {
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_CLIENTS_DIR": str(REPO / "clients"),
        "DATABASE_URL": database_url,
        "REDIS_URL": None,
    }
    runner = CliRunner()
    args = ["contacts", "forget", "--client", SPA, "--phone", ANA]
    result = runner.invoke(cli_app, args, env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"forgot the person for {SPA}:")
    assert "  contacts           2 deleted" in result.output
    assert "  bookings           2 name cleared" in result.output

    result = runner.invoke(cli_app, [*args, "--email", "ana@example.com", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["deleted"].values()) == {0}

    for bad in (["--phone", "617-555-0101"], ["--email", "nobody"], []):
        result = runner.invoke(cli_app, ["contacts", "forget", "--client", SPA, *bad], env=env)
        assert result.exit_code == 2, result.output

    async def left() -> list[str | None]:
        async with open_gateway(settings(tmp_path, database_url)) as gw:
            return [lead.lead.fields.get("name") for lead in await gw.leads.list_leads(SPA)]

    assert asyncio.run(left()) == ["Bob Stone"]


# -- config and schema ----------------------------------------------------------------------


def test_memory_config_defaults_and_limits() -> None:
    base = {"client_id": "x", "name": "X", "timezone": "UTC"}
    assert ClientConfig.model_validate(base).memory == MemoryConfig(
        enabled=True, retention_days=365
    )
    parsed = ClientConfig.model_validate({**base, "memory": {"retention_days": 30}})
    assert parsed.memory.retention_days == 30 and parsed.memory.enabled
    with pytest.raises(ValidationError, match="retention_days"):
        ClientConfig.model_validate({**base, "memory": {"retention_days": 0}})


@pytest.mark.unseeded  # runs the migrations itself, on an empty database
async def test_the_migration_creates_what_the_schema_declares(db: Database) -> None:
    def diff(sync_conn: sa.Connection) -> list[object]:
        found = compare_metadata(MigrationContext.configure(sync_conn), METADATA)
        return [d for d in found if "contact" in repr(d)]

    async with db.read() as conn:
        assert await conn.run_sync(diff) == []

"""Memory across conversations: returning contacts, per client.

A **contact** is one person a client's receptionist talked to, keyed by what
the channel knows about them (:func:`contact_key`)::

    phone, whatsapp   tel:+14155550134      the caller's / sender's E.164 number
    whatsapp          wa:<wa_id>            when no E.164 number came with it
    web               web:<sha256 prefix>   the widget's visitor id, hashed
                                            (``?visitor_id=`` on the chat URL)

A web visitor without a visitor id, or a call with the caller ID withheld,
has no key: nothing is remembered. Keys never cross channels except phone and
WhatsApp on the same number; a number *typed* in a web chat does not make a
later caller from that number "known" (anyone can type any number).

What is kept (tables ``contacts`` and ``contact_conversations``):

- name, phone (E.164), email: the latest values the conversation's flows
  collected (lead-capture slots, the ``human`` agent's fields, the leads the
  turn recorded), the caller's number when nothing else gave a phone;
- first and last seen;
- per conversation: its local date, channel, outcome (``booked``, ``lead``,
  ``escalated``...), the service and a one-line summary built only from
  those canonical values — never the customer's own words.

Writes happen inside the turn's atomic commit (:meth:`ContactStore.remember_in`,
called by :class:`engine.commit.Committer`): a turn that does not commit
leaves no contact. A turn's agents see the contact as it was when the turn
started (:meth:`ContactStore.recognise` -> ``TurnContext.contact``), with the
summaries of its *earlier* conversations (this one left out).

Retention (``memory.retention_days`` in the client config): the gateway's
housekeeping deletes contacts not seen for that long, and the client's
transcripts, sessions and call traces older than that
(:meth:`ContactStore.purge_expired`). With ``memory.enabled: false`` nothing
is remembered and housekeeping deletes the client's contacts.

Forgetting one person (:meth:`ContactStore.forget`; ``gateway contacts
forget``, ``DELETE /admin/api/contacts``) deletes, for one client, every
record that holds their phone number or email: contact rows, sessions (with
replay events and processed marks), conversation transcripts, leads, phone
call traces and outbox rows; bookings stay in the calendar with the name
cleared. Idempotent.

Test conversations (``gateway chat``) are neither remembered nor recognised.
Log lines carry client ids and counts, never the person's details.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.config import ClientConfig
from engine.db.database import Database
from engine.db.fast import Tx
from engine.db.schema import (
    APPROVALS,
    BOOKINGS,
    CALL_TRACES,
    CONTACT_CONVERSATIONS,
    CONTACTS,
    CONVERSATION_MESSAGES,
    CONVERSATIONS,
    LEADS,
    OUTBOX,
    PROCESSED_MESSAGES,
    SESSION_EVENTS,
    SESSIONS,
)
from engine.errors import StoreError
from engine.messages import ChannelContext
from engine.session import ConversationSession, SessionKey

__all__ = [
    "HISTORY",
    "ContactDetails",
    "ContactStore",
    "ConversationSummary",
    "ForgetReport",
    "KnownContact",
    "contact_details",
    "contact_key",
    "normalize_email",
    "normalize_phone",
]

log = logging.getLogger("engine.contacts")

HISTORY = 5
"""Earlier conversations a :class:`KnownContact` carries (newest first)."""
DAY_S = 86400.0
PURGE_BATCH = 500
"""Old conversations one housekeeping run deletes per client (the next run
goes on), so a first run on a large backlog does not hold the write lock long."""

_E164 = re.compile(r"\+[1-9]\d{1,14}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_VISITOR = re.compile(r"[A-Za-z0-9_-]{8,128}")
_MAX_NAME = 200


def contact_key(channel: str, context: ChannelContext) -> str | None:
    """The contact key of a conversation, or None when the channel does not
    identify the person (see the module docstring for the forms)."""
    if channel in ("phone", "whatsapp", "sms"):
        number = context.caller_number
        if number and _E164.fullmatch(number):
            return f"tel:{number}"
        if channel == "whatsapp" and context.whatsapp_id:
            return f"wa:{context.whatsapp_id[:120]}"
        return None
    if channel == "web" and context.visitor_id and _VISITOR.fullmatch(context.visitor_id):
        # Hashed: the visitor id is a bearer token of the browser holding it.
        return "web:" + hashlib.sha256(context.visitor_id.encode()).hexdigest()[:40]
    return None


def normalize_phone(value: str) -> str:
    """``value`` as E.164 (``+14155550134``); it must start with ``+`` and the
    country code. Raises ValueError saying what to send."""
    text = value.strip()
    if not text.startswith("+"):
        raise ValueError("give the phone number in E.164 form, with + and the country code")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number: use E.164, like +14155550134") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number: use E.164, like +14155550134")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(value: str) -> str:
    """``value`` stripped and lower-cased. Raises ValueError if it is not an address."""
    text = value.strip().lower()
    if not _EMAIL.fullmatch(text):
        raise ValueError("not an email address")
    return text


# -- what a contact is ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One earlier conversation, in canonical values only.

    ``date``: ISO date in the client's timezone; ``outcome``: the
    conversation's last notable outcome (``booked``, ``lead``,
    ``escalated``...) or None; ``service``: a service name from the client
    config; ``line``: what happened, e.g. ``booked Swedish Massage for Nov
    27, 2:00 PM``."""

    date: str
    channel: str
    outcome: str | None
    service: str | None
    line: str

    @property
    def text(self) -> str:
        """``2026-11-21, web: booked Swedish Massage for Nov 27, 2:00 PM``."""
        return f"{self.date}, {self.channel}: {self.line}"


@dataclass(frozen=True, slots=True)
class KnownContact:
    """A contact the client's store knew when the turn started.

    ``phone`` is E.164; ``first_seen``/``last_seen`` are aware datetimes (UTC);
    ``history``: summaries of earlier conversations, newest first (at most
    :data:`HISTORY`; the current conversation is not among them)."""

    key: str
    name: str | None
    phone: str | None
    email: str | None
    first_seen: datetime
    last_seen: datetime
    history: tuple[ConversationSummary, ...] = ()

    @property
    def returning(self) -> bool:
        """True when the contact had a conversation before this one."""
        return bool(self.history)

    def summary(self) -> str:
        """The earlier conversations as lines for an agent's instructions
        (empty when there were none)."""
        return "\n".join(f"- {h.text}" for h in self.history)


@dataclass(frozen=True, slots=True)
class ContactDetails:
    """What a conversation collected about the person (validated values)."""

    name: str | None = None
    phone: str | None = None
    email: str | None = None

    def __bool__(self) -> bool:
        return bool(self.name or self.phone or self.email)


def _bags(session: ConversationSession) -> Iterator[Mapping[str, object]]:
    """The flows' collected values: each purpose state's ``slots`` and
    ``fields`` mappings, the conversation's current purpose first."""
    states = session.purpose_state
    order = sorted(states, key=lambda name: name != session.purpose)
    for name in order:
        state = states[name]
        for bag in (state.get("slots"), state.get("fields")):
            if isinstance(bag, dict):
                yield bag


def _valid(slot: str, value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if slot == "phone":
        return value if _E164.fullmatch(value) else None
    if slot == "email":
        return value if _EMAIL.fullmatch(value) and len(value) <= 320 else None
    return value if len(value) <= _MAX_NAME else None


def contact_details(
    session: ConversationSession, extra: Iterable[Mapping[str, str]] = ()
) -> ContactDetails:
    """Name, phone and email from the session's flows and ``extra`` (the fields
    of the leads this turn recorded); the caller's number when no phone was
    collected."""
    found: dict[str, str] = {}
    for bag in (*extra, *_bags(session)):
        for slot in ("name", "phone", "email"):
            if slot not in found and (value := _valid(slot, bag.get(slot))) is not None:
                found[slot] = value
    caller = session.context.caller_number
    if "phone" not in found and caller and _E164.fullmatch(caller):
        found["phone"] = caller
    return ContactDetails(found.get("name"), found.get("phone"), found.get("email"))


def _first(session: ConversationSession, slot: str) -> str | None:
    for bag in _bags(session):
        value = bag.get(slot)
        if isinstance(value, str) and value:
            return value
    return None


def _when(iso: str | None) -> str | None:
    if not iso:
        return None
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return None
    hour = at.hour % 12 or 12
    return f"{at:%b} {at.day}, {hour}:{at:%M} {'AM' if at.hour < 12 else 'PM'}"


def summarize(client: ClientConfig, session: ConversationSession) -> ConversationSummary:
    """The one-line summary of ``session`` (canonical values only)."""
    named = _first(session, "service")
    svc = client.service(named) if named else None
    service = svc.name if svc else None
    when = _when(_first(session, "time"))
    outcome = session.outcome
    about = f" about {service}" if service else ""
    if outcome == "booked":
        line = f"booked {service or 'an appointment'}" + (f" for {when}" if when else "")
    elif outcome == "lead":
        line = "left their details" + about
    elif outcome == "escalated":
        line = "asked for a person" + about
    elif outcome:
        line = re.sub(r"[^a-z0-9 ]", " ", outcome.lower()).strip()[:40] + about
    elif service:
        line = f"asked about {service}"
    else:
        line = "asked a question" if session.purpose == "support" else "talked"
    date = session.created_at.astimezone(client.tz).date().isoformat()
    return ConversationSummary(date, session.channel, outcome, service, line[:500])


# -- forgetting ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What :meth:`ContactStore.forget` deleted: row counts per kind, and the
    conversations whose data went (``keys``, for evicting cached sessions)."""

    contacts: int = 0
    sessions: int = 0
    conversations: int = 0
    messages: int = 0
    """Transcript lines."""
    leads: int = 0
    bookings: int = 0
    """Bookings kept in the calendar with their name cleared."""
    call_traces: int = 0
    outbox: int = 0
    approvals: int = 0
    """Approval requests (they hold the booking's details); a pending one's
    held slot is released."""
    keys: tuple[SessionKey, ...] = field(default=(), compare=False)

    def counts(self) -> dict[str, int]:
        return {
            "contacts": self.contacts,
            "sessions": self.sessions,
            "conversations": self.conversations,
            "messages": self.messages,
            "leads": self.leads,
            "bookings": self.bookings,
            "call_traces": self.call_traces,
            "outbox": self.outbox,
            "approvals": self.approvals,
        }

    @property
    def total(self) -> int:
        return sum(self.counts().values())


@dataclass(frozen=True, slots=True)
class _Person:
    phone: str | None
    email: str | None

    def mentioned_in(self, text: str) -> bool:
        """``text`` holds the phone number (not as part of a longer one) or the email."""
        if self.phone and re.search(re.escape(self.phone) + r"(?!\d)", text):
            return True
        if self.email:
            pattern = r"(?<![\w.+-])" + re.escape(self.email) + r"(?![\w.-])"
            if re.search(pattern, text, re.IGNORECASE):
                return True
        return False

    def like(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
        """A cheap SQL prefilter for :meth:`mentioned_in`."""
        conditions: list[sa.ColumnElement[bool]] = []
        if self.phone:
            conditions.append(column.contains(self.phone, autoescape=True))
        if self.email:
            conditions.append(sa.func.lower(column).contains(self.email, autoescape=True))
        return sa.or_(*conditions)


def _session_of(payload: str) -> tuple[str, str] | None:
    """The (channel, session_id) an outbox payload names (escalation notices)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    inner = data.get("escalation") if isinstance(data, dict) else None
    if isinstance(inner, dict):
        channel, session_id = inner.get("channel"), inner.get("session_id")
        if isinstance(channel, str) and isinstance(session_id, str):
            return channel, session_id
    return None


# -- the store ---------------------------------------------------------------------------


class ContactStore:
    """Contacts in the gateway's database. ``clock``: epoch seconds (tests move it)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def recognise(
        self, client: ClientConfig, session: ConversationSession
    ) -> KnownContact | None:
        """The contact this conversation's channel identifies, if the store knows
        it (and it is within retention); None otherwise, or when the read
        failed (logged: a turn never fails for want of memory)."""
        if not client.memory.enabled or session.test:
            return None
        key = contact_key(session.channel, session.context)
        if key is None:
            return None
        client_id = client.client_id
        cutoff = self.clock() - client.memory.retention_days * DAY_S

        async def read(tx: Tx) -> tuple[tuple[object, ...] | None, list[tuple[object, ...]]]:
            row = await tx.fetchone(
                "SELECT name, phone, email, first_seen_iso, last_seen_iso FROM contacts"
                " WHERE client_id = $1 AND contact_key = $2 AND last_seen_ts >= $3",
                client_id,
                key,
                cutoff,
            )
            if row is None:
                return None, []
            rows = await tx.fetchall(
                "SELECT channel, session_id, date_iso, outcome, service, line"
                " FROM contact_conversations WHERE client_id = $1 AND contact_key = $2"
                " ORDER BY updated_ts DESC LIMIT $3",
                client_id,
                key,
                HISTORY + 1,
            )
            return row, rows

        try:
            row, rows = await self.db.fast.query(read)
        except StoreError as exc:
            log.warning("contacts: recognition skipped: client=%s error=%s", client_id, exc)
            return None
        if row is None:
            return None
        history = tuple(
            ConversationSummary(str(r[2]), str(r[0]), _opt(r[3]), _opt(r[4]), str(r[5]))
            for r in rows
            if (r[0], r[1]) != (session.channel, session.session_id)
        )[:HISTORY]
        return KnownContact(
            key=key,
            name=_opt(row[0]),
            phone=_opt(row[1]),
            email=_opt(row[2]),
            first_seen=datetime.fromisoformat(str(row[3])),
            last_seen=datetime.fromisoformat(str(row[4])),
            history=history,
        )

    async def remember_in(
        self,
        tx: Tx,
        client: ClientConfig,
        session: ConversationSession,
        extra: Iterable[Mapping[str, str]] = (),
    ) -> bool:
        """Upsert the conversation's contact and its summary line, in the caller's
        transaction (the turn's commit). ``extra``: the fields of the leads the
        turn recorded. A value the conversation did not give keeps the stored
        one. Returns False (writing nothing) when memory is off, the
        conversation is a test, its channel does not identify the person or
        nothing about them is known."""
        if not client.memory.enabled or session.test:
            return False
        key = contact_key(session.channel, session.context)
        if key is None:
            return False
        details = contact_details(session, extra)
        if not details:
            return False
        now = self.clock()
        now_iso = datetime.fromtimestamp(now, UTC).isoformat()
        await tx.execute(
            "INSERT INTO contacts (client_id, contact_key, name, phone, email, first_seen_iso,"
            " last_seen_iso, last_seen_ts) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)"
            " ON CONFLICT (client_id, contact_key) DO UPDATE SET"
            " name = COALESCE(excluded.name, contacts.name),"
            " phone = COALESCE(excluded.phone, contacts.phone),"
            " email = COALESCE(excluded.email, contacts.email),"
            " last_seen_iso = excluded.last_seen_iso, last_seen_ts = excluded.last_seen_ts",
            client.client_id,
            key,
            details.name,
            details.phone,
            details.email,
            now_iso,
            now,
        )
        summary = summarize(client, session)
        await tx.execute(
            "INSERT INTO contact_conversations (client_id, contact_key, channel, session_id,"
            " date_iso, outcome, service, line, updated_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (client_id, contact_key, channel, session_id) DO UPDATE SET"
            " outcome = excluded.outcome, service = excluded.service, line = excluded.line,"
            " updated_ts = excluded.updated_ts",
            client.client_id,
            key,
            session.channel,
            session.session_id,
            summary.date,
            summary.outcome,
            summary.service,
            summary.line,
            now,
        )
        return True

    # -- retention ---------------------------------------------------------------------------

    async def purge_expired(self, clients: Iterable[ClientConfig]) -> int:
        """Apply each client's ``memory`` settings: delete contacts not seen for
        ``retention_days`` (every contact when memory is off) and the
        client's transcripts, sessions and call traces older than that.
        Returns rows deleted. Raises StoreError."""
        now = self.clock()
        total = 0
        async with self.db.write() as conn:
            for client in clients:
                total += await self._purge_client(conn, client, now)
        if total:
            log.info("contacts: retention purge deleted %d row(s)", total)
        return total

    @staticmethod
    async def _purge_client(conn: AsyncConnection, client: ClientConfig, now: float) -> int:
        cid = client.client_id
        cutoff = now - client.memory.retention_days * DAY_S
        forget_all = not client.memory.enabled
        total = 0

        async def run(statement: sa.Executable) -> None:
            nonlocal total
            total += (await conn.execute(statement)).rowcount or 0

        links, people = CONTACT_CONVERSATIONS, CONTACTS
        if forget_all:
            await run(links.delete().where(links.c.client_id == cid))
            await run(people.delete().where(people.c.client_id == cid))
        else:
            await run(links.delete().where(links.c.client_id == cid, links.c.updated_ts < cutoff))
            await run(
                people.delete().where(people.c.client_id == cid, people.c.last_seen_ts < cutoff)
            )
            # A contact that went takes its remaining links with it.
            alive = sa.select(people.c.contact_key).where(
                people.c.client_id == links.c.client_id,
                people.c.contact_key == links.c.contact_key,
            )
            await run(links.delete().where(links.c.client_id == cid, ~alive.exists()))
        old = (
            await conn.execute(
                sa.select(CONVERSATIONS.c.channel, CONVERSATIONS.c.session_id)
                .where(CONVERSATIONS.c.client_id == cid, CONVERSATIONS.c.updated_ts < cutoff)
                .limit(PURGE_BATCH)
            )
        ).all()
        for channel, session_id in old:
            for table in (CONVERSATION_MESSAGES, CONVERSATIONS):
                await run(
                    table.delete().where(
                        table.c.client_id == cid,
                        table.c.channel == channel,
                        table.c.session_id == session_id,
                    )
                )
        # Sessions normally expire long before (their replay events go with the
        # store's own purge); a long session TTL must not outlive retention.
        await run(
            SESSIONS.delete().where(SESSIONS.c.client_id == cid, SESSIONS.c.updated_ts < cutoff)
        )
        await run(
            CALL_TRACES.delete().where(
                CALL_TRACES.c.client_id == cid, CALL_TRACES.c.updated_ts < cutoff
            )
        )
        return total

    # -- forgetting ----------------------------------------------------------------------------

    async def forget(
        self, client_id: str, *, phone: str | None = None, email: str | None = None
    ) -> ForgetReport:
        """Delete one person's data for ``client_id``, found by ``phone`` (E.164)
        and/or ``email`` (see the module docstring), in one transaction.
        Raises ValueError when neither is given or one is malformed, StoreError
        when the database fails (nothing was deleted then)."""
        if phone is None and email is None:
            raise ValueError("name the person: a phone number and/or an email")
        person = _Person(
            normalize_phone(phone) if phone is not None else None,
            normalize_email(email) if email is not None else None,
        )
        async with self.db.write() as conn:
            report = await _forget(conn, client_id, person)
        log.info(
            "contacts: forgot a person: client=%s %s",
            client_id,
            " ".join(f"{k}={v}" for k, v in report.counts().items()),
        )
        return report


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


async def _forget(conn: AsyncConnection, cid: str, person: _Person) -> ForgetReport:
    counts = dict.fromkeys(ForgetReport().counts(), 0)

    async def run(kind: str | None, statement: sa.Executable) -> None:
        result = await conn.execute(statement)
        if kind is not None:
            counts[kind] += result.rowcount or 0

    # 1. Who they are: contact rows by number, key or email.
    matches: list[sa.ColumnElement[bool]] = []
    if person.phone:
        matches += [
            CONTACTS.c.phone == person.phone,
            CONTACTS.c.contact_key == f"tel:{person.phone}",
        ]
    if person.email:
        matches.append(sa.func.lower(CONTACTS.c.email) == person.email)
    contact_keys = {
        r[0]
        for r in await conn.execute(
            sa.select(CONTACTS.c.contact_key).where(CONTACTS.c.client_id == cid, sa.or_(*matches))
        )
    }
    if person.phone:
        contact_keys.add(f"tel:{person.phone}")

    # 2. Their conversations: linked to a contact, or holding the phone/email
    # in the session, the transcript or a lead.
    keys: set[tuple[str, str]] = set()
    links = CONTACT_CONVERSATIONS
    for channel, session_id in await conn.execute(
        sa.select(links.c.channel, links.c.session_id).where(
            links.c.client_id == cid, links.c.contact_key.in_(sorted(contact_keys))
        )
    ):
        keys.add((channel, session_id))
    for channel, session_id, data in await conn.execute(
        sa.select(SESSIONS.c.channel, SESSIONS.c.session_id, SESSIONS.c.data).where(
            SESSIONS.c.client_id == cid, person.like(SESSIONS.c.data)
        )
    ):
        if person.mentioned_in(data):
            keys.add((channel, session_id))
    lines = CONVERSATION_MESSAGES
    for channel, session_id, text in await conn.execute(
        sa.select(lines.c.channel, lines.c.session_id, lines.c.text).where(
            lines.c.client_id == cid, person.like(lines.c.text)
        )
    ):
        if person.mentioned_in(text):
            keys.add((channel, session_id))
    lead_ids: set[str] = set()
    booking_ids: set[str] = set()
    for lead_id, channel, session_id, fields, booking_id in await conn.execute(
        sa.select(
            LEADS.c.lead_id, LEADS.c.channel, LEADS.c.session_id, LEADS.c.fields, LEADS.c.booking_id
        ).where(LEADS.c.client_id == cid, person.like(LEADS.c.fields))
    ):
        if person.mentioned_in(fields):
            lead_ids.add(lead_id)
            keys.add((channel, session_id))
            if booking_id:
                booking_ids.add(booking_id)

    # 3. Outbox rows carrying them (escalation notices name the conversation).
    outbox_ids = [
        row_id
        for row_id, payload in await conn.execute(
            sa.select(OUTBOX.c.id, OUTBOX.c.payload).where(OUTBOX.c.client_id == cid)
        )
        if person.mentioned_in(payload) or _session_of(payload) in keys
    ]

    # 4. Delete.
    for channel, session_id in sorted(keys):

        def where(
            table: sa.Table, ch: str = channel, sid: str = session_id
        ) -> sa.ColumnElement[bool]:
            return sa.and_(
                table.c.client_id == cid, table.c.channel == ch, table.c.session_id == sid
            )

        for (booking_id,) in await conn.execute(sa.select(LEADS.c.booking_id).where(where(LEADS))):
            if booking_id:
                booking_ids.add(booking_id)
        await run("sessions", SESSIONS.delete().where(where(SESSIONS)))
        await run(None, SESSION_EVENTS.delete().where(where(SESSION_EVENTS)))
        await run(None, PROCESSED_MESSAGES.delete().where(where(PROCESSED_MESSAGES)))
        await run("messages", lines.delete().where(where(lines)))
        await run("conversations", CONVERSATIONS.delete().where(where(CONVERSATIONS)))
        await run("leads", LEADS.delete().where(where(LEADS)))
        await run(
            "bookings",
            BOOKINGS.update().where(where(BOOKINGS), BOOKINGS.c.name != "").values(name=""),
        )
        for (hold_id,) in await conn.execute(
            sa.select(APPROVALS.c.hold_id).where(where(APPROVALS), APPROVALS.c.state == "pending")
        ):
            if hold_id:  # nobody will decide it now: free the slot it held
                await run(
                    None,
                    BOOKINGS.update()
                    .where(BOOKINGS.c.booking_id == hold_id, BOOKINGS.c.status == "held")
                    .values(status="released"),
                )
        await run("approvals", APPROVALS.delete().where(where(APPROVALS)))
        await run(None, links.delete().where(where(links)))
        if channel == "phone":  # a call's session id is its Call SID
            await run(
                "call_traces",
                CALL_TRACES.delete().where(
                    CALL_TRACES.c.client_id == cid, CALL_TRACES.c.call_sid == session_id
                ),
            )
    if lead_ids:
        await run(
            "leads",
            LEADS.delete().where(LEADS.c.client_id == cid, LEADS.c.lead_id.in_(sorted(lead_ids))),
        )
    if booking_ids:
        await run(
            "bookings",
            BOOKINGS.update()
            .where(
                BOOKINGS.c.client_id == cid,
                BOOKINGS.c.booking_id.in_(sorted(booking_ids)),
                BOOKINGS.c.name != "",
            )
            .values(name=""),
        )
    if outbox_ids:
        await run("outbox", OUTBOX.delete().where(OUTBOX.c.id.in_(outbox_ids)))
    await run(
        None,
        links.delete().where(
            links.c.client_id == cid, links.c.contact_key.in_(sorted(contact_keys))
        ),
    )
    await run(
        "contacts",
        CONTACTS.delete().where(
            CONTACTS.c.client_id == cid, CONTACTS.c.contact_key.in_(sorted(contact_keys))
        ),
    )
    return ForgetReport(**counts, keys=tuple(SessionKey(cid, ch, sid) for ch, sid in sorted(keys)))

"""One atomic turn commit: everything a turn changed, together or not at all.

In one database transaction (:meth:`Committer.commit`):

1. the **processed mark** of the inbound message id (a second commit for the
   same id fails with DuplicateMessageError),
2. the **session**, saved only if still at the version the turn loaded
   (CommitConflict otherwise),
3. the **bookings** the turn asked for, re-checked against the calendar under
   the client's calendar lock (SlotTakenError),
4. the **leads** in the ledger,
5. the session's **replay events** (what the web channel sends),
6. the **conversation log** lines,
7. the **outbox** rows: escalation notices, CRM pushes (one per lead when
   ``crm.provider`` is a vendor) and other deliveries,
8. the **approval** requests the turn made (:mod:`engine.approvals`) and the
   ones it settled, each settlement conditional on the request still being
   pending (ApprovalSettled otherwise), with its slot hold confirmed or
   released.
9. the **contact** the conversation identifies, with its summary line
   (:mod:`engine.contacts`), on turns with a customer message.

Any failure rolls all of it back: a failed turn leaves nothing behind and can
be retried with the same message id. After the commit the outbox worker is
woken to deliver.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import quote

from engine.approvals import ApprovalStore
from engine.config import ClientConfig
from engine.contacts import ContactStore
from engine.db.database import Database
from engine.db.fast import Tx
from engine.effects import Effects, EscalationRequest
from engine.errors import SlotTakenError
from engine.messages import ConversationResponse
from engine.outbox import Outbox, OutboxItem
from engine.payloads import EscalationNotice, LeadPush
from engine.session import ConversationSession, SessionKey, SessionStore, Turn
from engine.tools.calendar import LocalCalendar
from engine.tools.conversations import ConversationLog, conversation_id
from engine.tools.crm import VENDOR_CRMS, LeadLedger, crm_outbox_key

if TYPE_CHECKING:
    from engine.tools.notify import ApprovalAsk

__all__ = ["Committer", "TurnCommit", "escalation_items"]

TRANSCRIPT_EXCERPT = 8
_E164 = re.compile(r"\+[1-9]\d{1,14}")


@dataclass(slots=True)
class TurnCommit:
    """What one turn writes. ``version``: the session row's version the turn
    loaded (None: a new session)."""

    session: ConversationSession
    version: int | None
    turn_id: str
    message_id: str | None
    effects: Effects
    lines: Sequence[Turn]
    purpose: str | None
    events: Sequence[tuple[int, str]] = ()
    last_event_id: int = 0
    hook: CommitHook | None = None
    """The channel's own writes, in the same transaction (see :class:`CommitHook`)."""
    response: ConversationResponse | None = None
    """The turn's final response (what ``hook`` renders)."""


class CommitHook(Protocol):
    """What a channel writes with a turn, atomically: called inside the turn's
    transaction with the final response; returns outbox rows to enqueue with
    it (the messaging channels' reply sends). May raise to roll the whole
    turn back (a lost inbound-message lease: another replica owns it now)."""

    async def __call__(self, tx: Tx, response: ConversationResponse) -> Sequence[OutboxItem]: ...


def conversation_link(public_url: str | None, key: SessionKey) -> str | None:
    """``<public_url>/admin/api/conversations/<id>``, or None without a public URL."""
    if not public_url:
        return None
    return (
        f"{public_url.rstrip('/')}/admin/api/conversations/{quote(conversation_id(key), safe=':')}"
    )


def escalation_items(
    client: ClientConfig,
    session: ConversationSession,
    request: EscalationRequest,
    public_url: str | None = None,
) -> list[OutboxItem]:
    """The outbox rows that notify ``client``'s staff: one per notifier route of
    the request (the client's tools: ``escalation.to_slack_webhook`` ->
    ``notify.slack``, ``escalation.to_email`` -> ``notify.email``). The target
    itself is read from the client config when delivering, so a fixed config
    fixes a retry. The notice carries the customer's last message as the
    question and, with ``public_url`` (``GATEWAY_PUBLIC_URL``), a link to the
    conversation in the admin API."""
    from engine.tools.notify import Channel, Escalation

    lines = session.lines()
    # The question: the customer's latest line that asks something (the last
    # line may only answer "what's your number?"), else their latest line.
    said = [t.text for t in lines if t.role == "user"][-4:]
    question = next((t for t in reversed(said) if "?" in t), said[-1] if said else None)
    contact = request.contact if request.contact and _E164.fullmatch(request.contact) else None
    esc = Escalation(
        escalation_id=request.escalation_id,
        client_id=client.client_id,
        client_name=client.name,
        channel=cast(Channel, session.channel),
        session_id=session.session_id,
        reason=request.reason,
        who=request.who,
        contact=contact,
        email=request.email,
        fields=dict(request.fields),
        transcript=tuple(
            (t.role, t.text) for t in lines[-TRANSCRIPT_EXCERPT:] if t.role != "system"
        ),
        created_at=datetime.now(UTC),
        question=question,
        link=conversation_link(public_url, session.key),
        approval=_approval_ask(client, request, public_url),
    )
    return [
        OutboxItem(
            client.client_id,
            f"{request.escalation_id}:{route.name}",
            EscalationNotice(kind=route.outbox_kind, escalation=esc),
        )
        for route in request.notifiers
    ]


def _approval_ask(
    client: ClientConfig, request: EscalationRequest, public_url: str | None
) -> ApprovalAsk | None:
    from engine.tools.notify import ApprovalAsk

    ask = request.approval
    if ask is None:
        return None
    url = (
        f"{public_url.rstrip('/')}/admin/api/approvals/{quote(ask.approval_id)}"
        if public_url
        else None
    )
    deadline = datetime.fromtimestamp(ask.deadline_ts, client.tz)
    return ApprovalAsk(ask.approval_id, url, deadline, ask.fallback)


def crm_items(client: ClientConfig, effects: Effects) -> list[OutboxItem]:
    """One ``crm.<provider>`` row per lead when ``crm.provider`` is a vendor
    (:data:`~engine.tools.crm.VENDOR_CRMS`): the lead record with its
    ``crm.map``'ed properties, keyed by the lead id. Test conversations' leads
    stay in the ledger only."""
    provider = client.crm.provider
    if provider not in VENDOR_CRMS:
        return []
    return [
        OutboxItem(
            client.client_id,
            crm_outbox_key(r.lead_id),
            LeadPush.model_validate({**r.as_json(), "kind": f"crm.{provider}"}),
        )
        for r in effects.leads
        if not r.test
    ]


class Committer:
    def __init__(
        self,
        db: Database,
        sessions: SessionStore,
        calendar: LocalCalendar,
        ledger: LeadLedger,
        conversations: ConversationLog,
        outbox: Outbox,
        *,
        public_url: str | None = None,
        contacts: ContactStore | None = None,
    ) -> None:
        """``public_url``: ``GATEWAY_PUBLIC_URL``, for the conversation link in
        escalation notices (none without it). ``contacts``: the returning-contact
        store (one on ``db`` by default)."""
        self.contacts = contacts or ContactStore(db)
        self.public_url = public_url
        self.db = db
        self.sessions = sessions
        self.calendar = calendar
        self.ledger = ledger
        self.conversations = conversations
        self.outbox = outbox

    async def commit(self, client: ClientConfig, turn: TurnCommit) -> int:
        """Write ``turn`` atomically; returns the session's new version.

        Raises DuplicateMessageError, CommitConflict, SlotTakenError (all rolled
        back) or StoreError (the database failed; nothing was written).
        """
        session, effects = turn.session, turn.effects
        items: list[OutboxItem] = list(effects.deliveries)
        for request in effects.escalations:
            items.extend(escalation_items(client, session, request, self.public_url))
        items.extend(crm_items(client, effects))
        key = session.key
        woken: list[bool] = []

        async def write(tx: Tx) -> int:
            woken.clear()  # a retried transaction starts over
            if turn.message_id is not None:
                await self.sessions.mark_processed_in(tx, key, turn.message_id, turn.turn_id)
            version = await self.sessions.save_in(tx, session, turn.version, turn.last_event_id)
            for booking in effects.bookings:
                await self.calendar.book_in(tx, booking)
            for lead in effects.leads:
                await self.ledger.record_in(tx, lead, turn.turn_id)
            for request in effects.approvals:
                await ApprovalStore.create_in(tx, request)
            for settled in effects.settlements:
                hold_id = await ApprovalStore.settle_in(tx, settled)
                if hold_id is not None:
                    held = await self.calendar.settle_hold_in(
                        tx, hold_id, confirm=settled.confirm_hold
                    )
                    if settled.confirm_hold and not held:
                        raise SlotTakenError(hold_id)
            await self.sessions.append_events_in(tx, key, turn.events)
            await self.conversations.append_in(
                tx, session, turn.lines, turn.purpose, new=turn.version is None
            )
            if any(line.role == "user" for line in turn.lines):
                await self.contacts.remember_in(
                    tx, client, session, [r.lead.fields for r in effects.leads]
                )
            own = list(items)
            if turn.hook is not None and turn.response is not None:
                own.extend(await turn.hook(tx, turn.response))
            if own:
                await self.outbox.enqueue_in(tx, own)
                woken.append(True)
            return version

        try:
            version = await self.db.fast.transaction(write)
        except BaseException:
            self.sessions.forget(key)
            raise
        self.sessions.remember(session, version, turn.last_event_id, turn.message_id)
        if woken:
            self.outbox.wake()
        return version

    async def commit_heard(
        self,
        session: ConversationSession,
        version: int,
        last_event_id: int,
        line_id: str | None,
        heard: str,
    ) -> None:
        """Save a session whose last reply was cut, and mark the logged line."""
        key: SessionKey = session.key

        async def write(tx: Tx) -> int:
            saved = await self.sessions.save_in(tx, session, version, last_event_id)
            if line_id is not None:
                await self.conversations.mark_cut_in(tx, key, line_id, heard)
            return saved

        try:
            new_version = await self.db.fast.transaction(write)
        except BaseException:
            self.sessions.forget(key)
            raise
        self.sessions.remember(session, new_version, last_event_id, None)

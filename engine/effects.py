"""What a turn asks the world to do: bookings, leads, escalations, deliveries.

Agents never call a vendor or write a record themselves. They *request*
effects on ``ctx.effects`` (:class:`Effects`); the engine writes every request
in the turn's one atomic commit (:mod:`engine.commit`) — or none of them, if
the turn fails. Ids are derived from the turn id, so a turn retried after a
conflict asks for the very same booking, lead and notifications, and an
effect can never be written twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from engine.approvals import Fallback, NewApproval, Settlement
from engine.outbox import OutboxItem
from engine.payloads import OutboxPayload
from engine.session import SessionKey
from engine.tools.calendar import Booking, BookingRequest
from engine.tools.crm import Lead, LeadRecord, new_record
from engine.tools.registry import NotifierRoute

__all__ = ["Effects", "EscalationRequest"]


@dataclass(frozen=True, slots=True)
class EscalationRequest:
    """Tell the business a person is needed. ``reason``: a short phrase for staff
    ("asked for a person"); ``fields``: what the flow captured."""

    escalation_id: str
    reason: str
    who: str | None = None
    contact: str | None = None
    email: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    notifiers: tuple[NotifierRoute, ...] = ()
    """The client's routes to its staff (its ``Tools.notifiers``): one outbox row each."""
    approval: NewApproval | None = None
    """Set when the notice asks staff to approve or decline a request."""


@dataclass(slots=True)
class Effects:
    """The effects one turn requested, in order. Reset when a turn is retried."""

    turn_id: str
    key: SessionKey
    test: bool = False
    notifiers: tuple[NotifierRoute, ...] = ()
    """Where an escalation goes (the client's ``Tools.notifiers``)."""
    bookings: list[BookingRequest] = field(default_factory=list)
    leads: list[LeadRecord] = field(default_factory=list)
    escalations: list[EscalationRequest] = field(default_factory=list)
    deliveries: list[OutboxItem] = field(default_factory=list)
    approvals: list[NewApproval] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)
    _count: int = 0

    def _id(self, kind: str) -> str:
        self._count += 1
        digest = hashlib.sha256(f"{self.turn_id}:{kind}:{self._count}".encode()).hexdigest()
        return digest[:12]

    def book(
        self,
        start: datetime,
        end: datetime,
        service: str,
        name: str = "",
        *,
        capacity: int = 1,
        hold: bool = False,
    ) -> str:
        """Ask for ``[start, end)`` (aware datetimes); returns the booking id it will
        have. If the slot is taken when the turn commits, the commit raises
        SlotTakenError and the engine runs the turn again (the agent's
        availability check then sees the booking that won). ``hold``: only hold
        the slot while a person approves (:meth:`request_approval`)."""
        booking = Booking(self._id("booking"), self.key.client_id, start, end, service, name)
        self.bookings.append(
            BookingRequest(
                booking,
                channel=self.key.channel,
                session_id=self.key.session_id,
                turn_id=self.turn_id,
                capacity=capacity,
                test=self.test,
                hold=hold,
            )
        )
        return booking.booking_id

    def record_lead(self, lead: Lead, field_map: dict[str, str]) -> str:
        """Record ``lead`` in the lead ledger (``crm.map`` applied); returns its id."""
        record = new_record(lead, self._id("lead"), field_map, self.test)
        self.leads.append(record)
        return record.lead_id

    def escalate(
        self,
        reason: str,
        *,
        who: str | None = None,
        contact: str | None = None,
        email: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> str:
        """Notify the business (through each of the client's notifier routes: its
        ``escalation`` Slack webhook and/or email) with who, the reason, what was
        captured and a transcript excerpt."""
        request = EscalationRequest(
            self._id("escalation"), reason, who, contact, email, dict(fields or {}), self.notifiers
        )
        self.escalations.append(request)
        return request.escalation_id

    def request_approval(
        self,
        purpose: str,
        summary: str,
        reason: str,
        details: dict[str, str],
        *,
        hold_id: str | None,
        fallback: Fallback,
        created_ts: float,
        deadline_ts: float,
        who: str | None = None,
        contact: str | None = None,
        email: str | None = None,
    ) -> str:
        """Ask a person to approve something (:mod:`engine.approvals`): a
        ``pending`` request row, and a notice with approve/decline instructions
        through each of the client's notifier routes. Returns the request's id."""
        key = self.key
        request = NewApproval(
            self._id("approval"),
            key.client_id,
            key.channel,
            key.session_id,
            purpose,
            summary,
            reason,
            dict(details),
            hold_id,
            fallback,
            created_ts,
            deadline_ts,
            self.turn_id,
            self.test,
        )
        self.approvals.append(request)
        self.escalations.append(
            EscalationRequest(
                f"{request.approval_id}-ask",
                f"needs approval: {summary} ({reason})",
                who,
                contact,
                email,
                dict(details),
                self.notifiers,
                request,
            )
        )
        return request.approval_id

    def settle_approval(self, settlement: Settlement) -> None:
        """Settle a pending approval request with this turn (its hold confirmed
        or released); the commit fails with ApprovalSettled if it is not pending."""
        self.settlements.append(settlement)

    def deliver(self, payload: OutboxPayload, key: str | None = None) -> str:
        """Any other outbox delivery (:mod:`engine.payloads`: a message to send, a
        call action...); ``key`` defaults to one derived from the turn."""
        item = OutboxItem(self.key.client_id, key or self._id(payload.kind), payload)
        self.deliveries.append(item)
        return item.key

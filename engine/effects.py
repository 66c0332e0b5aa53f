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

from engine.outbox import OutboxItem
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
    ) -> str:
        """Ask for ``[start, end)`` (aware datetimes); returns the booking id it will
        have. If the slot is taken when the turn commits, the commit raises
        SlotTakenError and the engine runs the turn again (the agent's
        availability check then sees the booking that won)."""
        booking = Booking(self._id("booking"), self.key.client_id, start, end, service, name)
        self.bookings.append(
            BookingRequest(
                booking,
                channel=self.key.channel,
                session_id=self.key.session_id,
                turn_id=self.turn_id,
                capacity=capacity,
                test=self.test,
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

    def deliver(self, kind: str, payload: dict[str, object], key: str | None = None) -> str:
        """Any other outbox delivery; ``key`` defaults to one derived from the turn."""
        item = OutboxItem(kind, self.key.client_id, key or self._id(kind), payload)
        self.deliveries.append(item)
        return item.key

"""Lead capture's state, kept as JSON in ``session.purpose_state["lead_capture"]``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = ["CONFIRMATION", "LeadState", "Stage"]

CONFIRMATION = "confirmation"
"""What the flow expects while it waits for a yes/no on the summary."""


class Stage(StrEnum):
    """Where the flow is (FLOW.md)."""

    COLLECTING = "collecting"
    CONFIRMING = "confirming"
    HANDOFF = "handoff"
    """Legacy: sessions saved before escalation moved to the ``human`` agent."""
    AWAITING_APPROVAL = "awaiting_approval"
    """Confirmed, but a person at the business approves it first (``approval.py``)."""
    BOOKED = "booked"
    CLOSED = "closed"


class LeadState(BaseModel):
    """The flow's state, kept in ``session.purpose_state["lead_capture"]``."""

    stage: Stage = Stage.COLLECTING
    slots: dict[str, str] = Field(default_factory=dict)
    expecting: str | None = None
    failures: dict[str, int] = Field(default_factory=dict)
    pending_day: str | None = None
    """ISO date the user named without a clock time yet."""
    choices: list[str] = Field(default_factory=list)
    """Values of the last quick replies, so "2" picks the second one."""
    human_offered: bool = False
    started: bool = False
    booking_id: str | None = None
    lead_id: str | None = None
    approval_id: str | None = None
    """The approval request this booking waits on (stage ``awaiting_approval``)."""
    unread: list[str] = Field(default_factory=list)
    """Slots filled from memory that are never read out on a call (the e-mail
    on file: caller ID can be spoofed); cleared when the customer gives one."""
    queued: list[str] = Field(default_factory=list)
    """Further services asked for during this booking ("can I also book a
    manicure?"), booked one after another with the same contact details."""
    caller_offer: str | None = None
    """On a call, the caller ID offered for the phone slot ("Is the number
    you're calling from, ending 0147, the best one to reach you?"): None
    (not offered), ``offered`` (waiting for the answer), ``accepted`` or
    ``declined``. Absent in sessions saved before it, which load as None."""
    email_by_text: str | None = None
    """On a call, the email by text message instead of said (``email_by_text.py``):
    None (asked for as usual), ``offered`` (the retry offered to text: "yes"
    takes it), ``requested`` (settled: the booking texts the caller, or
    records the request on the lead), then ``texted`` or ``noted`` once a
    booking did (a further booking in the same conversation keeps it, without
    a second text). Absent in sessions saved before it, which load as None."""

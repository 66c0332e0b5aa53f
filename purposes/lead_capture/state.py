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
    queued: list[str] = Field(default_factory=list)
    """Further services asked for during this booking ("can I also book a
    manicure?"), booked one after another with the same contact details."""

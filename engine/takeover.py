"""Who answers a conversation: the bot or a person. Named states, a transition
table and the "what happens next" wording. (The signal that wakes a web socket
on a staff reply is :mod:`engine.bus`.)

Words: a **takeover** is a person at the business taking a conversation over;
a **handoff** is an agent passing control to another agent
(:class:`engine.agents.HandoffRequest`). The wire and database keep the name
they always had for the takeover state: ``handoff`` (the admin JSON, the
widget's ``metadata.handoff``, the session JSON and the ``handoff`` column).

States (``ConversationSession.takeover``, also on the conversation log row that
``GET /admin/api/conversations`` reads as ``handoff``)::

    bot            the agents answer (the default)
    pending_human  the human agent escalated; staff were notified, none replied yet
    human          staff replied through the admin API; they hold the conversation
    resolved       staff released it; the bot answers again from the next message

Diagram (mermaid)::

    stateDiagram-v2
        [*] --> bot
        bot --> pending_human: escalated (the human agent hands back "escalate")
        bot --> human: staff_reply
        pending_human --> human: staff_reply
        human --> human: staff_reply
        resolved --> human: staff_reply
        pending_human --> resolved: release
        human --> resolved: release
        resolved --> bot: customer_message (the bot answers it)
        pending_human --> pending_human: customer_message (recorded, notified, no reply)
        human --> human: customer_message (recorded, notified, no reply)

While ``pending_human`` or ``human`` the bot is silent on web and WhatsApp:
the customer's message is recorded (transcript and conversation log) and
notified to staff (one outbox notice per message, ``notify.slack`` /
``notify.email``: staff see each message as it comes, and an outage loses
none), and the turn's reply is empty. On the phone a person cannot type into a
live call (the call is transferred, or a person calls back), so phone turns
are always answered by the bot; the state is still recorded.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Literal, get_args

from engine.config import DAYS, ClientConfig

__all__ = [
    "HELD",
    "InvalidTakeover",
    "TakeoverEvent",
    "TakeoverState",
    "is_open",
    "next_opening",
    "reply_here_text",
    "transition",
]

log = logging.getLogger("engine.takeover")

TakeoverState = Literal["bot", "pending_human", "human", "resolved"]
TakeoverEvent = Literal["escalated", "staff_reply", "release", "customer_message"]
STATES: tuple[TakeoverState, ...] = get_args(TakeoverState)
HELD: frozenset[str] = frozenset({"pending_human", "human"})
"""States in which the bot stays silent (web, WhatsApp)."""

_TRANSITIONS: dict[tuple[TakeoverState, TakeoverEvent], TakeoverState] = {
    ("bot", "escalated"): "pending_human",
    ("resolved", "escalated"): "pending_human",
    ("pending_human", "escalated"): "pending_human",
    ("human", "escalated"): "human",
    ("bot", "staff_reply"): "human",
    ("pending_human", "staff_reply"): "human",
    ("human", "staff_reply"): "human",
    ("resolved", "staff_reply"): "human",
    ("pending_human", "release"): "resolved",
    ("human", "release"): "resolved",
    ("resolved", "release"): "resolved",
    ("bot", "release"): "bot",
    ("bot", "customer_message"): "bot",
    ("resolved", "customer_message"): "bot",
    ("pending_human", "customer_message"): "pending_human",
    ("human", "customer_message"): "human",
}


class InvalidTakeover(ValueError):
    """No transition from ``state`` on ``event`` (the table above has none)."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"no takeover transition from {state!r} on {event!r}")
        self.state, self.event = state, event


def transition(state: TakeoverState, event: TakeoverEvent) -> TakeoverState:
    """The state after ``event`` in ``state``; raises :class:`InvalidTakeover`."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTakeover(state, event) from None


# --------------------------------------------------------------------------- opening hours


def is_open(client: ClientConfig, now: datetime) -> bool:
    """True if ``now`` (aware) falls inside today's ``business_hours`` in the
    client's timezone. A client without any hours is taken as always open."""
    if not client.business_hours:
        return True
    local = now.astimezone(client.tz)
    hours = client.business_hours.get(DAYS[local.weekday()])
    return hours is not None and hours.open <= local.time() < hours.close


def next_opening(client: ClientConfig, now: datetime) -> datetime | None:
    """The next opening time after ``now`` (aware, client timezone) within a
    week; None when no day has hours."""
    local = now.astimezone(client.tz)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        hours = client.business_hours.get(DAYS[day.weekday()])
        if hours is None:
            continue
        start = datetime.combine(day, hours.open, tzinfo=client.tz)
        if start > local:
            return start
    return None


def _clock(at: datetime) -> str:
    hour = at.hour % 12 or 12
    minutes = f":{at.minute:02d}" if at.minute else ""
    return f"{hour}{minutes} {'AM' if at.hour < 12 else 'PM'}"


def _when(opening: datetime, now: datetime) -> str:
    """``today at 9 AM``, ``tomorrow at 9 AM``, ``on Monday at 9:30 AM``."""
    days = (opening.date() - now.astimezone(opening.tzinfo).date()).days
    day = "today" if days == 0 else "tomorrow" if days == 1 else f"on {opening:%A}"
    return f"{day} at {_clock(opening)}"


def reply_here_text(client: ClientConfig, now: datetime) -> str:
    """What the customer is told once a person was asked for (web, WhatsApp):
    during opening hours someone will reply here shortly; outside them, when."""
    if is_open(client, now):
        return f"Someone from {client.name} will reply here shortly."
    opening = next_opening(client, now)
    if opening is None:
        return f"Someone from {client.name} will reply here as soon as they can."
    return (
        f"We're closed right now; someone from {client.name} will reply here "
        f"when we open {_when(opening, now)}."
    )


def reopening_text(client: ClientConfig, now: datetime) -> str:
    """`` We open again tomorrow at 9 AM.`` outside opening hours, else empty."""
    if is_open(client, now):
        return ""
    opening = next_opening(client, now)
    return f" We open again {_when(opening, now)}." if opening else ""

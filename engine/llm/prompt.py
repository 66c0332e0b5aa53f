"""What every agent's instructions start with: the business, in the model's words.

:func:`business_brief` renders a client's name, services (duration, price),
opening hours, booking rules, tone and its own instructions, plus the local
date and time and the next two weeks as dates (so "Saturday" resolves to a
date). Agents append their own task and state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from engine.config import ClientConfig
from engine.llm.types import LlmMessage
from engine.session import Turn

__all__ = ["business_brief", "conversation"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hours(client: ClientConfig) -> str:
    lines = []
    for day in _DAYS:
        hours = client.business_hours.get(day)
        if hours is None:
            lines.append(f"{day.title()}: closed")
        else:
            lines.append(
                f"{day.title()}: {hours.open.strftime('%H:%M')}-{hours.close.strftime('%H:%M')}"
            )
    return "; ".join(lines)


def business_brief(client: ClientConfig, now: datetime, channel: str, *, earlier: str = "") -> str:
    """The shared part of every agent's instructions for ``client`` at ``now``
    (timezone-aware) on ``channel`` (``phone``: spoken replies). ``earlier``:
    one line per earlier conversation of a returning contact
    (:meth:`engine.contacts.KnownContact.summary`)."""
    local = now.astimezone(client.tz)
    services = "\n".join(
        f"- {s.name}: {s.duration_minutes} min"
        + (f", ${s.price:g}" if s.price is not None else "")
        + (f" (also called: {', '.join(s.aliases)})" if s.aliases else "")
        for s in client.services
    )
    upcoming = ", ".join(
        f"{(local + timedelta(days=i)).strftime('%a')} {(local + timedelta(days=i)).date().isoformat()}"
        for i in range(14)
    )
    rules = client.booking.rules
    form = (
        "Replies are spoken on a phone call: one or two short sentences, no lists, "
        "no markdown, no URLs, no emoji."
        if channel == "phone"
        else "Replies are chat messages: short, plain text, no markdown headings."
    )
    parts = [
        f"You are the receptionist of {client.name}, a small business. Tone: {client.llm.tone}.",
        form,
        f"Now it is {local.strftime('%A %Y-%m-%d %H:%M')} ({client.timezone}). "
        f"The next 14 days: {upcoming}.",
        f"Opening hours (local time): {_hours(client)}.",
        f"Services:\n{services}" if services else "",
        f"Bookings need at least {rules.min_notice_hours:g} hours' notice."
        if rules.min_notice_hours
        else "",
        "Never invent prices, times, availability or policies: use only what is given here "
        "or returned by a tool.",
        f"The business's own instructions: {client.llm.instructions}"
        if client.llm.instructions
        else "",
        f"This customer has talked to {client.name} before:\n{earlier}" if earlier else "",
    ]
    return "\n".join(p for p in parts if p)


def conversation(lines: Sequence[Turn], max_lines: int = 12) -> tuple[LlmMessage, ...]:
    """The last ``max_lines`` user/assistant lines as model messages: roles
    ``user``/``model``, consecutive lines of one role joined, starting with
    the user (Gemini expects the conversation to open with a user turn)."""
    out: list[LlmMessage] = []
    for line in lines[-max_lines:]:
        if line.role not in ("user", "assistant") or not line.text:
            continue
        role: Literal["user", "model"] = "user" if line.role == "user" else "model"
        if out and out[-1].role == role:
            out[-1] = LlmMessage(role, out[-1].text + "\n" + line.text)
        else:
            out.append(LlmMessage(role, line.text))
    while out and out[0].role != "user":
        out.pop(0)
    return tuple(out)

"""The coordinator: picks the purpose agent for a conversation that has none.

Offline rules (no LLM): a message about booking, a service name or a time goes
to ``lead_capture``; a question (``?``, *where*, *how much*, *policy*...) goes
to ``support``. When the chosen purpose has no agent loaded (``support`` is not
built yet), the router says so plainly and offers what it can do instead,
rather than pretending. An unclear first message gets a short menu.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz import fuzz

from engine.config import ClientConfig
from engine.messages import QuickReply

__all__ = ["RouteDecision", "Router", "wants_human"]

_BOOKING = re.compile(
    r"\b(book|booking|appointment|appt|schedule|reserve|reservation|slot|availability|available"
    r"|come in|sign me up|make an? (?:appointment|booking))\b",
    re.IGNORECASE,
)
_QUESTION = re.compile(
    r"(\?|^\s*(where|what|when|how|why|who|which|is|are|do|does|can|could)\b"
    r"|\b(policy|parking|located|location|address|price|prices|cost|gift card|accessible|refund|cancel)\b)",
    re.IGNORECASE,
)
_THANKS = re.compile(
    r"^\s*(thanks|thank you|thx|ty|cheers|great|perfect|awesome|bye|goodbye|see you|that's all|ok|okay)\b",
    re.IGNORECASE,
)
_HUMAN = re.compile(
    r"\b(human|real person|a person|someone|somebody|an agent|the staff|manager|receptionist|"
    r"representative|operator|call me back|callback|call back)\b",
    re.IGNORECASE,
)


def wants_human(text: str) -> bool:
    """True when the user asks for a person (shared by the router and the flows)."""
    return _HUMAN.search(text) is not None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """``purpose`` to hand the message to, or ``None`` with the router's own reply."""

    purpose: str | None
    text: str = ""
    quick_replies: tuple[QuickReply, ...] = ()
    wants_human: bool = False


class Router:
    def mentions_service(self, text: str, client: ClientConfig) -> bool:
        low = text.lower()
        for svc in client.services:
            for name in (svc.name, *svc.aliases):
                if fuzz.partial_ratio(name.lower(), low) >= 90 and len(name) >= 4:
                    return True
        return False

    def route(self, text: str, client: ClientConfig, available: tuple[str, ...]) -> RouteDecision:
        booking = bool(_BOOKING.search(text)) or self.mentions_service(text, client)
        question = bool(_QUESTION.search(text))
        if _THANKS.match(text) and not booking and not question:
            return RouteDecision(
                None,
                text="You're welcome! Is there anything else I can help you with?",
                quick_replies=self._menu(available, human=False),
            )
        if wants_human(text) and not booking:
            return RouteDecision(None, wants_human=True)
        # "Can I book a massage?" is a booking, not a support question.
        if booking and "lead_capture" in available:
            return RouteDecision("lead_capture")
        if question:
            if "support" in available:
                return RouteDecision("support")
            return RouteDecision(
                None,
                text=(
                    f"I'm not able to answer questions about {client.name} in this chat yet. "
                    "I can book an appointment for you, or pass your question on to the team."
                ),
                quick_replies=self._menu(available, human=True),
            )
        services = ", ".join(s.name for s in client.services[:4])
        offer = f" We offer {services}." if services else ""
        return RouteDecision(
            None,
            text=f"Hi! This is {client.name}.{offer} How can I help you today?",
            quick_replies=self._menu(available, human=False),
        )

    @staticmethod
    def _menu(available: tuple[str, ...], *, human: bool) -> tuple[QuickReply, ...]:
        items: list[QuickReply] = []
        if "lead_capture" in available:
            items.append(
                QuickReply(title="Book an appointment", value="I'd like to book an appointment")
            )
        if "support" in available:
            items.append(QuickReply(title="Ask a question", value="I have a question"))
        if human or "support" not in available:
            items.append(QuickReply(title="Talk to a person", value="I'd like to talk to a person"))
        return tuple(items)

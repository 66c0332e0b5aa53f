"""The multi-agent core's interfaces: purpose agents, their context and replies.

A purpose agent (``purposes/lead_capture``, ``purposes/support``) implements
:class:`Agent`. The engine gives it a :class:`TurnContext` and gets back an
:class:`AgentReply`. An agent that takes a conversation keeps it across turns
(a *journey*) until its reply carries a :class:`Handback`, which returns
control to the router.

Agents keep their own state in ``session.purpose_state[purpose]`` (JSON) and
validate it into their typed model; they never see vendor payloads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal

from engine.config import ClientConfig
from engine.effects import Effects
from engine.messages import Action, NormalizedMessage, QuickReply
from engine.session import ConversationSession
from engine.tools import Tools

__all__ = ["Agent", "AgentReply", "Handback", "TurnContext"]


@dataclass(slots=True)
class TurnContext:
    """What an agent sees for one turn. ``session`` is the agent's to mutate;
    the engine saves it only if the agent returns normally."""

    client: ClientConfig
    session: ConversationSession
    message: NormalizedMessage
    tools: Tools
    now: datetime
    """Timezone-aware current time (the engine's clock, injectable in tests)."""
    effects: Effects
    """Where the agent requests bookings, leads, escalations and deliveries; the
    engine commits them with the turn (never call a vendor from an agent)."""
    available_purposes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Handback:
    """The agent releases the conversation back to the router.

    ``reason``: ``done`` (goal reached), ``out_of_scope`` (the user wants
    something else; the router should look at ``message`` again), or
    ``escalated`` (a human takes over).
    """

    reason: Literal["done", "out_of_scope", "escalated"]
    note: str = ""


@dataclass(frozen=True, slots=True)
class AgentReply:
    text: str
    quick_replies: tuple[QuickReply, ...] = ()
    actions: tuple[Action, ...] = ()
    expecting: str | None = None
    slots: dict[str, str] = field(default_factory=dict)
    confidence: float | None = None
    state: str | None = None
    handback: Handback | None = None
    outcome: str | None = None
    """Set when the conversation reaches a notable outcome (``booked``...)."""
    lead_id: str | None = None
    booking_id: str | None = None


class Agent(ABC):
    """A purpose flow. Subclasses set ``purpose`` and implement :meth:`handle`."""

    purpose: ClassVar[str]

    @abstractmethod
    async def handle(self, ctx: TurnContext) -> AgentReply:
        """Run one turn. May raise; the engine then answers with its fallback
        and keeps the session as it was before the turn."""

    async def stream(self, ctx: TurnContext) -> AsyncIterator[str | AgentReply]:
        """Yield text deltas, then the final :class:`AgentReply`.

        The default runs :meth:`handle` and streams its text word-group by
        word-group; LLM-backed agents override this to stream as they generate.
        """
        reply = await self.handle(ctx)
        for piece in chunk_text(reply.text):
            yield piece
        yield reply


def chunk_text(text: str, words_per_chunk: int = 4) -> list[str]:
    """Split ``text`` into deltas of a few words that concatenate back to it."""
    if not text:
        return []
    parts: list[str] = []
    start = 0
    count = 0
    for i, ch in enumerate(text):
        if ch == " ":
            count += 1
            if count == words_per_chunk:
                parts.append(text[start : i + 1])
                start = i + 1
                count = 0
    if start < len(text):
        parts.append(text[start:])
    return parts

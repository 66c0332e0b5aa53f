"""The multi-agent core's interfaces: agents, their turn context and replies.

A purpose agent (``purposes/lead_capture``, later ``purposes/support``)
implements :class:`Agent`. The coordinator (:mod:`engine.coordinator`) gives
it a :class:`TurnContext` and gets back an :class:`AgentReply`, streamed
through :meth:`Agent.stream` as typed events (:data:`engine.messages.AgentEvent`)
ending with the reply.

Control between agents, in the field's terms:

- **journey**: an agent that answers without a handback keeps the
  conversation; the next message goes straight to it.
- **handoff** (:class:`HandoffRequest`): control moves to another agent (or back to
  the router when ``target`` is None), which answers the *same* message. With
  ``suspend`` the handing agent's journey is kept on a stack and resumed
  (:meth:`Agent.resume`) when the interruption is over — "a question
  mid-booking" does not lose the booking.
- **delegation** (:meth:`TurnContext.delegate`): an agent runs another agent
  as a tool for one message and gets a structured :class:`Handback` back;
  control stays with the caller.
- **handback** (:class:`Handback`): the agent releases the conversation with a
  status and a summary.
- **escalation** to a person is an engine tool (:meth:`TurnContext.escalate`),
  served by the built-in ``human`` agent (:mod:`engine.escalation`).

Agents keep their own state in ``session.purpose_state[purpose]`` (JSON) and
validate it into their typed model; they never see vendor payloads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from engine.config import ClientConfig
from engine.contacts import KnownContact
from engine.effects import Effects
from engine.llm.model import TurnModel
from engine.messages import (
    Action,
    AgentEvent,
    JsonScalar,
    NormalizedMessage,
    QuickReply,
    Source,
    TextDelta,
)
from engine.session import ConversationSession
from engine.tools import Tools

__all__ = [
    "Agent",
    "AgentReply",
    "Handback",
    "HandbackStatus",
    "HandoffRequest",
    "TurnContext",
    "chunk_text",
]

HUMAN = "human"
"""The built-in agent that hands a conversation to a person (engine.escalation)."""


class HandbackStatus(StrEnum):
    """How an agent ends its part of the conversation (structured handback)."""

    COMPLETED = "completed"
    """The goal was reached (a booking made, a question answered)."""
    NEEDS_MORE_INFO = "needs_more_info"
    """The agent could not finish without something the user did not give."""
    UNCERTAIN = "uncertain"
    """The agent answered but is not confident (e.g. knowledge did not cover it)."""
    ESCALATE = "escalate"
    """A person should take over."""
    PARTIAL = "partial"
    """Part of the goal was reached (one of two bookings)."""
    FAILED = "failed"
    """The agent could not do it (the user called it off, a tool failed...)."""


@dataclass(frozen=True, slots=True)
class Handback:
    """The agent releases the conversation (or, delegated, returns its result).

    ``summary``: one line for the next agent and the logs (no personal data
    needed); ``text``: the delegated agent's answer for the user, when any.
    """

    status: HandbackStatus
    summary: str = ""
    text: str = ""
    data: Mapping[str, JsonScalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    """Move control to ``target`` (an agent name; None: let the router choose,
    never picking the handing agent again) for the same message.

    ``suspend``: keep the handing agent's journey and resume it once the
    interruption is over. ``fields``: what the target may use (e.g. the name
    and phone already collected, for the ``human`` agent).
    """

    target: str | None = None
    reason: str = ""
    suspend: bool = False
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class TurnContext:
    """What an agent sees for one turn. ``session`` is the agent's to mutate;
    the engine saves it only if the turn commits."""

    client: ClientConfig
    session: ConversationSession
    message: NormalizedMessage
    tools: Tools
    """This client's tools (calendar, CRM...), per its config."""
    now: datetime
    """Timezone-aware current time (the engine's clock, injectable in tests)."""
    effects: Effects
    """Where the agent requests bookings, leads, escalations and deliveries; the
    engine commits them with the turn (never call a vendor from an agent)."""
    available_purposes: tuple[str, ...] = ()
    handoff: HandoffRequest | None = None
    """The handoff that brought this agent in this turn, if any."""
    delegate_fn: Callable[[str, str, str], Awaitable[Handback]] | None = None
    llm: TurnModel | None = None
    """The client's language model for this turn, under the channel's latency
    budget; None when the client runs offline (``llm.provider: offline``, or
    no API key). An agent that uses it falls back to its offline logic on
    any :class:`~engine.llm.LlmError` (the turn then commits exactly as an
    offline turn would)."""
    contact: KnownContact | None = None
    """The returning contact this conversation's channel identifies (same
    number, WhatsApp id or widget visitor id), as stored when the turn
    started, with summaries of earlier conversations; None when unknown or
    the client's ``memory`` is off (:mod:`engine.contacts`)."""

    @property
    def text(self) -> str:
        return self.message.text

    async def delegate(self, target: str, text: str, reason: str = "") -> Handback:
        """Run agent ``target`` on ``text`` as a tool and return its structured
        handback; control stays with the caller. ``FAILED`` when there is no
        such agent or it failed."""
        if self.delegate_fn is None:
            return Handback(HandbackStatus.FAILED, summary="delegation unavailable")
        return await self.delegate_fn(target, text, reason)

    def escalate(self, reason: str, **fields: str) -> AgentReply:
        """The reply that hands this conversation to a person (the ``human``
        agent takes the same message; it collects a callback number if needed,
        records a ``callback_requested`` lead, notifies the business and, on a
        call, transfers). Return it from :meth:`Agent.handle`."""
        return AgentReply(text="", handoff=HandoffRequest(HUMAN, reason=reason, fields=fields))


@dataclass(frozen=True, slots=True)
class AgentReply:
    """One agent's answer to one message.

    ``metadata``: purpose-specific facts the channels may show
    (lead capture: ``lead_id``, ``booking_id``); the generic fields are the
    reply's own. ``handoff`` / ``handback``: see the module docstring; an
    empty ``text`` with a handoff means "not mine, let the target answer".
    """

    text: str
    quick_replies: tuple[QuickReply, ...] = ()
    actions: tuple[Action, ...] = ()
    expecting: str | None = None
    slots: Mapping[str, str] = field(default_factory=dict)
    confidence: float | None = None
    state: str | None = None
    handback: Handback | None = None
    handoff: HandoffRequest | None = None
    outcome: str | None = None
    """Set when the conversation reaches a notable outcome (``booked``...)."""
    sources: tuple[Source, ...] = ()
    """What the answer was drawn from (knowledge passages, config facts)."""
    metadata: Mapping[str, JsonScalar] = field(default_factory=dict)


class Agent(ABC):
    """An agent. Subclasses set ``purpose`` and implement :meth:`handle`.

    ``menu``: the choice the router offers for it (None: not offered);
    ``offer``: what it does, as the router says it ("book an appointment").
    ``streams_live``: its deltas are generated progressively (an LLM), so the
    engine forwards them before the turn commits and withdraws them with a
    :class:`~engine.messages.Discard` if the turn then fails or conflicts;
    rule agents compute the whole reply first and are streamed after commit.
    """

    purpose: ClassVar[str]
    menu: ClassVar[QuickReply | None] = None
    offer: ClassVar[str] = ""
    streams_live: ClassVar[bool] = False

    def live(self, ctx: TurnContext) -> bool:
        """Whether this turn's deltas are generated progressively (sent before
        the commit, withdrawn by a Discard if it fails); ``streams_live`` by
        default. An agent that uses a model only when the client has one
        answers per turn."""
        return self.streams_live

    def intent(self, text: str, client: ClientConfig) -> float:
        """How sure this agent is that a new message is for it, in [0, 1]
        (offline routing). 0 by default: only reached by name."""
        return 0.0

    @abstractmethod
    async def handle(self, ctx: TurnContext) -> AgentReply:
        """Run one turn. May raise; the engine then answers with its fallback
        and keeps the session as it was before the turn."""

    def handoff_fields(self, ctx: TurnContext) -> Mapping[str, str]:
        """What this agent collected that a person taking over should get
        (name, phone...); used when the coordinator escalates a stuck journey."""
        return {}

    async def resume(self, ctx: TurnContext, summary: str) -> AgentReply | None:
        """Pick up a journey suspended for an interruption (``summary``: how it
        ended). Return the re-prompt (where the journey was), or None when
        there is nothing left to resume. The default resumes nothing."""
        return None

    async def stream(self, ctx: TurnContext) -> AsyncIterator[AgentEvent | AgentReply]:
        """Yield events (text deltas, tool calls/results...), then the final
        :class:`AgentReply`.

        The default runs :meth:`handle` and streams its text word-group by
        word-group; LLM-backed agents override this to stream as they generate.
        """
        reply = await self.handle(ctx)
        for piece in chunk_text(reply.text):
            yield TextDelta(piece)
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

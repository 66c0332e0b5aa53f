"""The engine's typed vocabulary: what comes in, what goes out.

Adapters turn vendor payloads into :class:`NormalizedMessage` and render
:class:`ConversationResponse` back into their channel's format. Nothing past an
adapter sees vendor JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Action",
    "AgentEvent",
    "Channel",
    "ChannelContext",
    "ConversationResponse",
    "Discard",
    "Handoff",
    "NormalizedMessage",
    "QuickReply",
    "ResponseMetadata",
    "Source",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "TurnEvent",
]


class Channel(StrEnum):
    """The channel a conversation runs on (its value is the wire and database name)."""

    PHONE = "phone"
    WHATSAPP = "whatsapp"
    WEB = "web"
    SMS = "sms"

    @classmethod
    def parse(cls, name: str) -> Channel:
        """The channel named ``name``; ValueError naming the known ones otherwise."""
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown channel {name!r}; use one of {known}") from None


CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)

JsonScalar = str | int | float | bool | None


class ChannelContext(BaseModel):
    """What the channel knows about the conversation, typed (never vendor payloads).

    Set by the adapter on each turn and kept in the session (a field set once
    stays until a later turn sets it again). Phone numbers are E.164
    (``+14155550123``).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    caller_number: str | None = None
    """The customer's number: the phone caller's ID, the WhatsApp/SMS sender."""
    called_number: str | None = None
    """The business's number the customer reached."""
    call_sid: str | None = None
    """Twilio's Call SID of a phone call."""
    whatsapp_id: str | None = None
    """The customer's WhatsApp id (``wa_id``)."""
    web_origin: str | None = None
    """The page origin a web chat runs on (``https://spadelsol.example``)."""
    visitor_id: str | None = None
    """A web visitor's stable id, when the widget has one."""

    def merged(self, newer: ChannelContext | None) -> ChannelContext:
        """This context with every field ``newer`` sets taken from it."""
        if newer is None:
            return self
        changes = newer.model_dump(exclude_none=True)
        return self.model_copy(update=changes) if changes else self


@dataclass(frozen=True, slots=True)
class NormalizedMessage:
    """One inbound user message, channel-independent: what every channel hands
    the engine (:class:`engine.contract.TurnEngine`).

    ``session_id``: the conversation within the client and channel (a web
    session id, a WhatsApp/SMS sender's number, a call's id). ``text``: the
    user's words; for calls and voice notes the final transcript
    (``modality="speech"``). ``sender``: the customer as the channel knows
    them (an E.164 number, a web visitor id), when known. ``message_id``: the
    channel's id of the message (a wamid, a Twilio MessageSid, a web frame
    id); a committed turn consumes it exactly once. ``context`` carries the
    channel facts the flows may use (:class:`ChannelContext`). ``purpose``:
    set by the engine for the agents (channels pass it in ``TurnOptions``).
    """

    client_id: str
    channel: Channel
    session_id: str
    text: str
    purpose: str | None = None
    message_id: str | None = None
    context: ChannelContext = field(default_factory=ChannelContext)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sender: str | None = None
    modality: Literal["text", "speech"] = "text"


class QuickReply(BaseModel):
    """A choice the channel renders as a button, a numbered item or a DTMF key.

    ``value`` is the text sent back as the user's message when it is chosen.
    """

    model_config = ConfigDict(frozen=True)

    title: str
    value: str


class Action(BaseModel):
    """Something the channel must do besides saying ``text``.

    Types: ``transfer`` (``target`` = E.164 number), ``end_call``,
    ``escalated`` (a human was notified), ``booked`` (``target`` = booking id).
    """

    model_config = ConfigDict(frozen=True)

    type: Literal["transfer", "end_call", "escalated", "booked"]
    target: str | None = None


class Source(BaseModel):
    """Where an answer came from: a knowledge ``file`` (relative to the client's
    knowledge folder) with its ``section`` heading path and PDF ``page``, or
    ``file="config"`` with the config key in ``section``; ``score`` is the
    retrieval score (1.0 for config facts)."""

    model_config = ConfigDict(frozen=True)

    file: str
    section: str = ""
    page: int | None = None
    score: float | None = None


class ResponseMetadata(BaseModel):
    """Per DESIGN.md: at least purpose, expecting, slots, confidence."""

    model_config = ConfigDict(frozen=True)

    purpose: str | None = None
    expecting: str | None = None
    """The slot name the flow waits for next, or None."""
    slots: dict[str, str] = Field(default_factory=dict)
    """Slots filled so far, canonical values (E.164 phone, ISO-8601 time...)."""
    confidence: float | None = None
    state: str | None = None
    """The flow's named state after this turn (e.g. ``collecting``, ``booked``)."""
    sources: tuple[Source, ...] = ()
    """What an answer was drawn from, best first (support answers; empty otherwise)."""
    purpose_data: dict[str, JsonScalar] = Field(default_factory=dict)
    """Facts specific to the purpose that answered (lead capture: ``lead_id``,
    ``booking_id``). Channels render them beside the generic fields (the web
    protocol puts them in ``metadata`` itself)."""


class ConversationResponse(BaseModel):
    """The reply to one turn, as returned by ``handle_turn``."""

    model_config = ConfigDict(frozen=True)

    text: str
    quick_replies: tuple[QuickReply, ...] = ()
    actions: tuple[Action, ...] = ()
    metadata: ResponseMetadata = ResponseMetadata()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A streamed piece of the reply text, yielded before the final response."""

    content: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """An agent calls a tool (``name``) with JSON ``arguments``; ``call_id`` pairs it
    with its :class:`ToolResult`. Internal: channels do not show it to customers."""

    call_id: str
    name: str
    arguments: dict[str, JsonScalar | list[JsonScalar] | dict[str, JsonScalar]] = field(
        default_factory=dict
    )


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What the tool ``name`` returned for ``call_id``: a JSON-able ``result``, or
    ``error`` (a short, user-data-free reason) when it failed."""

    call_id: str
    name: str
    result: object = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Handoff:
    """Control moves between agents within a turn.

    ``mode``: ``handoff`` (``target`` takes the conversation) or ``delegate``
    (``target`` runs as a tool and its handback returns to ``source``);
    ``resume`` marks a return to a suspended journey. Internal, like ToolCall.
    """

    source: str
    target: str
    mode: Literal["handoff", "delegate", "resume", "handback"] = "handoff"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Discard:
    """Withdraw every :class:`TextDelta` streamed so far in this turn.

    Emitted when streamed text turns out not to be the reply (the agent failed
    mid-stream, or the turn's commit conflicted and the turn runs again). The
    web channel sends ``{"type":"discard"}``; the phone stops speaking it. The
    deltas that follow, and the final response, replace it.
    """

    reason: Literal["failed", "conflict", "rejected"] = "failed"
    """``failed``: the agent failed mid-stream; ``conflict``: the commit
    conflicted and the turn runs again; ``rejected``: a model's streamed
    wording failed its checks and the flow's own wording replaces it."""


AgentEvent = TextDelta | ToolCall | ToolResult | Handoff | Discard
"""What agents stream besides their final reply."""

TurnEvent = TextDelta | ToolCall | ToolResult | Handoff | Discard | ConversationResponse
"""What :func:`engine.Engine.stream_turn` yields: events, then one final response."""

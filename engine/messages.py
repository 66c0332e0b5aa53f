"""The engine's typed vocabulary: what comes in, what goes out.

Adapters turn vendor payloads into :class:`NormalizedMessage` and render
:class:`ConversationResponse` back into their channel's format. Nothing past an
adapter sees vendor JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Action",
    "Channel",
    "ConversationResponse",
    "NormalizedMessage",
    "QuickReply",
    "ResponseMetadata",
    "TextDelta",
    "TurnEvent",
]

Channel = Literal["phone", "whatsapp", "web"]
CHANNELS: tuple[Channel, ...] = ("phone", "whatsapp", "web")
PURPOSES = ("lead_capture", "support")

JsonScalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class NormalizedMessage:
    """One inbound user message, channel-independent.

    ``text`` is cleaned user text (for calls: the final transcript). ``context``
    carries channel facts the flows may use, e.g. ``caller_number`` (E.164) on
    phone and WhatsApp; never vendor payloads.
    """

    client_id: str
    channel: Channel
    session_id: str
    text: str
    purpose: str | None = None
    message_id: str | None = None
    context: dict[str, str] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


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
    lead_id: str | None = None
    booking_id: str | None = None


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


TurnEvent = TextDelta | ConversationResponse
"""What :func:`engine.Engine.stream_turn` yields: deltas, then one response."""

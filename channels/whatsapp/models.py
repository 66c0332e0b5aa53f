"""The messaging channels' vocabulary, vendor-neutral: what a webhook carried
(:class:`InboundMessage`, :class:`StatusUpdate`) and what is sent back
(:class:`OutboundMessage`).

Codecs (``twilio_codec.py``, ``meta_codec.py``) are the only modules that know
vendor field names; everything after them (the inbox, the turn, the sender)
works on these types.

Providers and channels:

======================  ===========  ==========================================
``provider``            ``channel``  webhook
======================  ===========  ==========================================
``twilio``              whatsapp     ``POST /twilio/whatsapp/{client_id}``
``twilio``              sms          ``POST /twilio/sms/{client_id}``
``meta``                whatsapp     ``GET/POST /meta/whatsapp/{client_id}``
======================  ===========  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engine.messages import QuickReply

__all__ = [
    "InboundKind",
    "InboundMessage",
    "Media",
    "MessagingChannel",
    "OutboundMessage",
    "Provider",
    "StatusUpdate",
]

Provider = Literal["twilio", "meta"]
MessagingChannel = Literal["whatsapp", "sms"]
InboundKind = Literal[
    "text",
    "button",
    "list",
    "audio",
    "image",
    "document",
    "video",
    "sticker",
    "location",
    "contacts",
    "reaction",
    "unsupported",
]


@dataclass(frozen=True, slots=True)
class Media:
    """An attachment: ``ref`` is a URL (Twilio ``MediaUrl{N}``) or a media id
    (Meta ``audio.id``); ``content_type`` as the provider gave it
    (``audio/ogg``)."""

    ref: str
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One customer message from a webhook.

    ``message_id``: the provider's id (Twilio ``MessageSid``, Meta ``wamid``),
    the dedupe key with ``provider``. ``sender``: the customer's number in
    E.164 (``+14155550123``), the conversation's key; ``wa_id`` and
    ``profile_name`` when WhatsApp gives them. ``business``: the number (or
    Meta phone-number id) the customer wrote to. ``text``: what the engine
    should read (a button's or list row's title, a location as words; empty
    for media until transcribed). ``choice_id``: the payload of a button or
    list row. ``timestamp``: the provider's send time, epoch seconds
    (ordering), or the arrival time when the provider gives none.
    """

    provider: Provider
    channel: MessagingChannel
    client_id: str
    message_id: str
    sender: str
    kind: InboundKind
    text: str = ""
    choice_id: str | None = None
    media: tuple[Media, ...] = ()
    wa_id: str | None = None
    profile_name: str | None = None
    business: str | None = None
    timestamp: float = 0.0
    reply_to: str | None = None
    """The message this one replies to (Meta ``context.id``, a reaction's target)."""


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A delivery status of a message the gateway sent: ``sent``,
    ``delivered``, ``read``, ``failed`` (``undelivered`` maps to failed);
    ``error_code``/``error_title`` from the provider when it failed."""

    provider: Provider
    client_id: str
    message_id: str
    status: Literal["queued", "sent", "delivered", "read", "failed"]
    recipient: str | None = None
    error_code: str | None = None
    error_title: str | None = None
    timestamp: float = 0.0


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A reply to send: ``text`` and the choices offered (rendered as Meta
    interactive buttons/list, or a numbered list for Twilio and SMS)."""

    text: str
    quick_replies: tuple[QuickReply, ...] = field(default_factory=tuple)

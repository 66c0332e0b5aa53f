"""Twilio Messaging wire codec (WhatsApp and SMS): webhook forms <-> typed messages.

This module and :mod:`channels.whatsapp.meta_codec` are the only places that
read or write vendor field names of the messaging channels. It is pure: no I/O,
no clock (the caller passes ``now``).

From Twilio, ``application/x-www-form-urlencoded`` (Twilio, "Twilio's request to
your incoming message Webhook URL",
https://www.twilio.com/docs/messaging/guides/webhook-request)::

    MessageSid=SM...&SmsMessageSid=SM...&AccountSid=AC...&From=whatsapp:+14155550123
    &To=whatsapp:+14155238886&Body=Hi&NumMedia=1&MediaUrl0=https://api.twilio.com/...
    &MediaContentType0=audio/ogg&ProfileName=Ana&WaId=14155550123
    &ButtonPayload=...&ButtonText=...&Latitude=..&Longitude=..&Address=..&Label=..
    &OriginalRepliedMessageSid=SM...

SMS uses plain E.164 numbers in ``From``/``To``; WhatsApp prefixes them with
``whatsapp:``. Twilio adds parameters without notice, so unknown fields are
ignored. A status callback ("Outbound Message Status in Status Callbacks")
carries ``MessageStatus`` (and the older ``SmsStatus``), ``ErrorCode`` and
``ErrorMessage`` but no ``Body``/``NumMedia``.

To Twilio (``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``):
``To``, ``From`` (or ``MessagingServiceSid``), ``Body`` (at most 1,600
characters), or ``ContentSid`` + ``ContentVariables`` for an approved WhatsApp
template outside the 24-hour customer-service window.

The text helpers (:func:`split_text`, :func:`shorten`, :func:`clean_text`,
:func:`text_units`) are shared with the Meta codec. Anything malformed raises
:class:`CodecError`, whose message never contains customer text or numbers.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Final, Literal

from channels.whatsapp.choices import DEFAULT_HINT, numbered_text
from channels.whatsapp.models import (
    InboundKind,
    InboundMessage,
    Media,
    MessagingChannel,
    OutboundMessage,
    StatusUpdate,
)

__all__ = [
    "MAX_MEDIA",
    "TWILIO_BODY_LIMIT",
    "CodecError",
    "account_sid",
    "clean_text",
    "parse_twilio",
    "shorten",
    "split_text",
    "template_text",
    "text_units",
    "twilio_send_params",
    "twilio_template_params",
]

TWILIO_BODY_LIMIT: Final = 1600
"""Largest ``Body`` Twilio accepts, in characters (counted as UTF-16 code units here)."""
MAX_MEDIA: Final = 10
"""Twilio sends at most 10 attachments (``MediaUrl0`` .. ``MediaUrl9``)."""
TEMPLATE_TEXT_LIMIT: Final = 1024
"""Longest template variable sent: a WhatsApp template body holds 1,024 characters."""

_WHATSAPP_PREFIX: Final = "whatsapp:"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SID = re.compile(r"[A-Za-z0-9]{2,64}")
_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
_MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")

_Status = Literal["queued", "sent", "delivered", "read", "failed"]

# Twilio's message statuses ("MessageEnumStatus") onto ours.
_STATUSES: Final[dict[str, _Status]] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}


class CodecError(ValueError):
    """A webhook or reply that cannot be turned into the other format.

    Attributes:
        reason: what is wrong, e.g. ``"missing MessageSid"``; names fields, never
            customer text or numbers, so it can be logged and returned in a 400.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- text helpers shared by both codecs -------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SENTENCE_END = re.compile(r"(?<![0-9])[.!?…][\"'”’»)\]]*(?=\s)|[。！？][\"'”’」』)\]]*")


def clean_text(text: str) -> str:
    """``text`` safe to store and send: lone UTF-16 surrogates (which cannot be
    encoded as UTF-8) become U+FFFD, control characters other than tab and
    newline are dropped, CRLF becomes LF. Leading/trailing whitespace is kept."""
    text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def text_units(text: str) -> int:
    """Length in UTF-16 code units: how Twilio and Meta count characters (an
    emoji outside the BMP counts 2). Never smaller than ``len(text)``."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _fit(text: str, limit: int) -> int:
    """The largest ``n`` with ``text_units(text[:n]) <= limit``."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            return i
    return len(text)


def _joins_previous(ch: str) -> bool:
    """True for characters that belong to the one before them (combining marks,
    zero-width joiner, variation selectors, skin tones): never cut before them."""
    return (
        unicodedata.combining(ch) != 0
        or ch in "\u200d\ufe0e\ufe0f"
        or "\U0001f3fb" <= ch <= "\U0001f3ff"
        or "\U000e0020" <= ch <= "\U000e007f"
    )


def _cut(text: str, limit: int) -> int:
    """Where to end the first part of ``text`` (longer than ``limit``): the last
    paragraph break, line break, sentence end or space in the second half of
    the window, else any space, else a hard cut that keeps clusters whole."""
    end = _fit(text, limit)
    window = text[:end]
    floor = end // 2
    for sep in ("\n\n", "\n"):
        at = window.rfind(sep)
        if at >= floor:
            return at
    sentence_ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() >= floor]
    if sentence_ends:
        return sentence_ends[-1]
    spaces = [i for i, ch in enumerate(window) if ch.isspace() and i > 0]
    if spaces:
        return spaces[-1]
    cut = end
    while cut > 1 and _joins_previous(text[cut]):
        cut -= 1
    return cut if cut > 0 else 1


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into stripped parts of at most ``limit`` UTF-16 units each,
    in order, preferring paragraph, line and sentence boundaries, then word
    boundaries; a word longer than ``limit`` is cut. Empty text gives ``[]``.

    Every part is a substring of ``text`` (only whitespace between parts is lost).
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    rest = text.strip()
    parts: list[str] = []
    while text_units(rest) > limit:
        cut = _cut(rest, limit)
        head = rest[:cut].rstrip()
        parts.append(head)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def shorten(text: str, limit: int) -> tuple[str, str]:
    """``text`` (whitespace collapsed) cut to at most ``limit`` UTF-16 units on a
    word boundary with ``"…"`` appended, and the rest that was cut off (``""``
    when it fits). A single long word is cut inside it."""
    flat = " ".join(text.split())
    if text_units(flat) <= limit:
        return flat, ""
    room = _fit(flat, limit - 1)
    space = flat.rfind(" ", 0, room + 1)
    head = flat[:space] if space > 0 else flat[:room]
    while len(head) > 1 and _joins_previous(flat[len(head)]):
        head = head[:-1]
    head = head.rstrip(" ,;:-–—")
    rest = flat[len(head) :].lstrip(" ,;:-–—")
    return head + "…", rest


def template_text(text: str, limit: int = TEMPLATE_TEXT_LIMIT) -> str:
    """``text`` as a template variable: WhatsApp rejects variables with newlines,
    tabs or more than four spaces in a row, so whitespace runs become one space;
    cut to ``limit`` on a word boundary."""
    return shorten(clean_text(text), limit)[0]


# --- numbers ----------------------------------------------------------------------------


def _number(raw: str, channel: MessagingChannel, name: str) -> str:
    """``raw`` (``whatsapp:+E164`` or ``+E164``) as E.164, checked against the channel."""
    value = raw.strip()
    if channel == "whatsapp":
        if not value.startswith(_WHATSAPP_PREFIX):
            raise CodecError(f"{name} is not a whatsapp: address")
        value = value[len(_WHATSAPP_PREFIX) :]
    elif value.startswith(_WHATSAPP_PREFIX):
        raise CodecError(f"{name} is a whatsapp: address on the SMS channel")
    if not _E164.fullmatch(value):
        raise CodecError(f"{name} is not an E.164 number")
    return value


def _e164(raw: str, name: str) -> str:
    """A number given by the gateway (``+E164`` or ``whatsapp:+E164``) as E.164."""
    value = raw.strip().removeprefix(_WHATSAPP_PREFIX)
    if not _E164.fullmatch(value):
        raise CodecError(f"{name} is not an E.164 number")
    return value


# --- inbound ----------------------------------------------------------------------------


def account_sid(form: Mapping[str, str]) -> str | None:
    """The ``AccountSid`` of a webhook form, to compare with the client's config."""
    value = form.get("AccountSid", "").strip()
    return value or None


def _media_kind(content_type: str) -> InboundKind:
    base = content_type.split(";", 1)[0].strip().lower()
    if base.startswith("audio/"):
        return "audio"
    if base.startswith("image/"):
        return "image"
    if base.startswith("video/"):
        return "video"
    if base in ("text/vcard", "text/x-vcard"):
        return "contacts"
    return "document"


def _coordinate(form: Mapping[str, str], name: str, bound: float) -> float:
    try:
        value = float(form[name])
    except ValueError:
        raise CodecError(f"{name} is not a number") from None
    if not -bound <= value <= bound:
        raise CodecError(f"{name} is out of range")
    return value


def _location_text(form: Mapping[str, str]) -> str:
    lat = _coordinate(form, "Latitude", 90.0)
    lng = _coordinate(form, "Longitude", 180.0)
    words = [clean_text(form.get(k, "")).strip() for k in ("Label", "Address")]
    place = ", ".join(w for w in words if w)
    return f"Location: {place}" if place else f"Location: {lat:g},{lng:g}"


def _status_update(
    form: Mapping[str, str], client_id: str, sid: str, raw: str, now: float
) -> StatusUpdate:
    status = _STATUSES.get(raw.strip().lower())
    if status is None:
        raise CodecError("unknown MessageStatus")
    recipient = form.get("To", "").strip().removeprefix(_WHATSAPP_PREFIX)
    code = form.get("ErrorCode", "").strip()
    title = clean_text(form.get("ErrorMessage", "")).strip()
    return StatusUpdate(
        provider="twilio",
        client_id=client_id,
        message_id=sid,
        status=status,
        recipient=recipient if _E164.fullmatch(recipient) else None,
        error_code=code or None,
        error_title=title or None,
        timestamp=now,
    )


def parse_twilio(
    form: Mapping[str, str], client_id: str, channel: MessagingChannel, *, now: float
) -> InboundMessage | StatusUpdate:
    """One Twilio messaging webhook form as an :class:`InboundMessage`, or a
    status callback as a :class:`StatusUpdate`.

    Args:
        form: the decoded form fields (one value per name).
        client_id: the client the webhook URL belongs to.
        channel: ``"whatsapp"`` (numbers must be ``whatsapp:+E164``) or ``"sms"``
            (plain ``+E164``).
        now: the arrival time, epoch seconds: Twilio gives no send time, so it
            is the message's ``timestamp``.

    ``kind``: ``button`` when ``ButtonPayload``/``ButtonText`` is present (``text``
    = the button's text, ``choice_id`` = its payload); ``location`` when
    ``Latitude``/``Longitude`` are (``text`` = ``"Location: <label, address>"`` or
    ``"Location: <lat>,<lng>"``); else by the first attachment's content type
    (``audio``, ``image``, ``video``, ``contacts`` for vCards, else
    ``document``); else ``text``; ``unsupported`` when there is nothing at all
    (WhatsApp message types Twilio does not pass on arrive so).

    Raises:
        CodecError: no ``MessageSid``/``SmsMessageSid`` or ``From``, a number that
            is not E.164 or not of this channel, ``NumMedia`` or a coordinate that
            is not a number, an unknown status.
    """
    sid = (form.get("MessageSid") or form.get("SmsMessageSid") or "").strip()
    if not sid:
        raise CodecError("missing MessageSid")
    if not _SID.fullmatch(sid):
        raise CodecError("MessageSid is malformed")
    status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if status and "Body" not in form and "NumMedia" not in form:
        return _status_update(form, client_id, sid, status, now)

    raw_from = form.get("From", "")
    if not raw_from.strip():
        raise CodecError("missing From")
    sender = _number(raw_from, channel, "From")
    raw_to = form.get("To", "")
    business = _number(raw_to, channel, "To") if raw_to.strip() else None

    try:
        num_media = int(form.get("NumMedia", "0") or "0")
    except ValueError:
        raise CodecError("NumMedia is not a number") from None
    if num_media < 0:
        raise CodecError("NumMedia is negative")
    media = tuple(
        Media(ref=form[f"MediaUrl{i}"].strip(), content_type=form.get(f"MediaContentType{i}", ""))
        for i in range(min(num_media, MAX_MEDIA))
        if form.get(f"MediaUrl{i}", "").strip()
    )

    body = clean_text(form.get("Body", "")).strip()
    payload = clean_text(form.get("ButtonPayload", "")).strip()
    button_text = clean_text(form.get("ButtonText", "")).strip()
    choice_id: str | None = None
    kind: InboundKind
    text = body
    if payload or button_text:
        kind, text, choice_id = "button", button_text or body, payload or None
    elif form.get("Latitude", "").strip() and form.get("Longitude", "").strip():
        kind, text = "location", _location_text(form)
    elif media:
        kind = _media_kind(media[0].content_type)
    elif body:
        kind = "text"
    else:
        kind = "unsupported"

    wa_id = form.get("WaId", "").strip() if channel == "whatsapp" else ""
    profile = clean_text(form.get("ProfileName", "")).strip() if channel == "whatsapp" else ""
    reply_to = form.get("OriginalRepliedMessageSid", "").strip()
    return InboundMessage(
        provider="twilio",
        channel=channel,
        client_id=client_id,
        message_id=sid,
        sender=sender,
        kind=kind,
        text=text,
        choice_id=choice_id,
        media=media,
        wa_id=wa_id or None,
        profile_name=profile or None,
        business=business,
        timestamp=now,
        reply_to=reply_to or None,
    )


# --- outbound ---------------------------------------------------------------------------


def _addresses(channel: MessagingChannel, to: str, from_: str) -> dict[str, str]:
    prefix = _WHATSAPP_PREFIX if channel == "whatsapp" else ""
    params = {"To": prefix + _e164(to, "to")}
    sender = from_.strip()
    if _MESSAGING_SERVICE_SID.fullmatch(sender):
        params["MessagingServiceSid"] = sender
    else:
        params["From"] = prefix + _e164(sender, "from_")
    return params


def twilio_send_params(
    msg: OutboundMessage,
    *,
    channel: MessagingChannel,
    to: str,
    from_: str,
    hint: str = DEFAULT_HINT,
) -> list[dict[str, str]]:
    """The Messages API form parameters for ``msg``: one dict per message to send,
    in order.

    Quick replies become a numbered list under the text (``"1. Yes, book it"``)
    followed by ``hint`` (``"Reply with a number."``; pass the client's language).
    Text longer than :data:`TWILIO_BODY_LIMIT` is split at paragraph, line and
    sentence boundaries, then between words. No text and no choices: ``[]``.

    Args:
        to: the customer's number, ``+E164`` (a ``whatsapp:`` prefix is accepted).
        from_: the business's number, ``+E164``, or a Messaging Service SID
            (``MG...``, sent as ``MessagingServiceSid``).

    Raises:
        CodecError: ``to`` or ``from_`` is not an E.164 number.
    """
    addresses = _addresses(channel, to, from_)
    text = clean_text(msg.text)
    if msg.quick_replies:
        text = numbered_text(text, msg.quick_replies, hint)
    return [{**addresses, "Body": part} for part in split_text(text, TWILIO_BODY_LIMIT)]


def twilio_template_params(to: str, from_: str, content_sid: str, text: str) -> dict[str, str]:
    """The Messages API parameters of an approved WhatsApp template (Twilio
    Content API), for a send outside the 24-hour window: ``ContentSid`` and
    ``ContentVariables`` = ``{"1": text}`` (``text`` flattened to one line and
    cut to 1,024 characters, see :func:`template_text`).

    Raises:
        CodecError: a number is not E.164, or ``content_sid`` is not ``HX`` + 32 hex.
    """
    if not _CONTENT_SID.fullmatch(content_sid.strip()):
        raise CodecError("content_sid is not a Content SID (HX...)")
    params = _addresses("whatsapp", to, from_)
    params["ContentSid"] = content_sid.strip()
    params["ContentVariables"] = json.dumps({"1": template_text(text)}, ensure_ascii=False)
    return params

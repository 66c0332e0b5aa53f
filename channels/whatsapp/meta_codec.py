"""Meta WhatsApp Cloud API wire codec: webhook JSON <-> typed messages, and the
Graph ``POST /{phone_number_id}/messages`` bodies.

Pure (no I/O). Shapes follow Meta's "messages webhook reference" and "Status
messages webhook reference"
(https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages)::

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA_ID>", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
        "messages": [{"from": "16505551234", "id": "wamid....", "timestamp": "1749416383",
                      "type": "text", "text": {"body": "..."},
                      "context": {"from": "15550783881", "id": "wamid...."}}],
        "statuses": [{"id": "wamid....", "status": "delivered", "timestamp": "1749416400",
                      "recipient_id": "16505551234",
                      "errors": [{"code": 131026, "title": "Message undeliverable"}]}]}}]}]}

Message types read: ``text``, ``interactive`` (``button_reply``/``list_reply``),
``button`` (a template's quick reply), ``audio`` (``voice`` true for a voice
note), ``image``, ``document``, ``video``, ``sticker``, ``location``,
``reaction``, ``contacts``; any other type is ``unsupported``.

Sending ("Interactive reply buttons messages", "Interactive list messages",
"Typing indicators"): text bodies at most 4,096 characters; up to 3 reply
buttons (titles at most 20 characters, body at most 1,024); a list of up to 10
rows (button label 20, row title 24, row description 72). More than 10 choices
go as a numbered list in text, like Twilio's.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from channels.whatsapp.choices import DEFAULT_HINT, choice_title, numbered_text, reply_id
from channels.whatsapp.models import (
    InboundKind,
    InboundMessage,
    Media,
    OutboundMessage,
    StatusUpdate,
)
from channels.whatsapp.twilio_codec import (
    CodecError,
    clean_text,
    shorten,
    split_text,
    template_text,
    text_units,
)
from engine.messages import QuickReply

__all__ = [
    "BODY_LIMIT",
    "MAX_BUTTONS",
    "MAX_ROWS",
    "TEXT_LIMIT",
    "CodecError",
    "meta_read_payload",
    "meta_send_payloads",
    "meta_template_payload",
    "parse_meta",
]

log = logging.getLogger("channels.whatsapp.meta_codec")

TEXT_LIMIT: Final = 4096
"""Longest ``text.body``, in characters (counted as UTF-16 code units here)."""
BODY_LIMIT: Final = 1024
"""Longest interactive ``body.text`` (reply buttons; used for lists too)."""
MAX_BUTTONS: Final = 3
BUTTON_TITLE_LIMIT: Final = 20
MAX_ROWS: Final = 10
ROW_TITLE_LIMIT: Final = 24
ROW_DESCRIPTION_LIMIT: Final = 72
LIST_BUTTON_LIMIT: Final = 20

_Status = Literal["queued", "sent", "delivered", "read", "failed"]
_STATUSES: Final[dict[str, _Status]] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    # A voice note the customer played has been read.
    "played": "read",
    "failed": "failed",
}
_MEDIA_TYPES: Final[frozenset[InboundKind]] = frozenset(
    {"audio", "image", "document", "video", "sticker"}
)
_WA_ID = re.compile(r"[1-9][0-9]{6,14}")
_TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:_[A-Za-z]{2,4})?")


class _Skip(Exception):
    """One malformed message or status: skipped, the rest of the webhook kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- inbound ----------------------------------------------------------------------------


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CodecError(f"{name} is not a list")
    return value


def _map(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Skip(f"{name} is not an object")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str:
    """A string field, cleaned and stripped; ``""`` when absent or not a string."""
    value = obj.get(key)
    return clean_text(value).strip() if isinstance(value, str) else ""


def _timestamp(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Skip("timestamp is missing")
    try:
        seconds = float(value)
    except ValueError:
        raise _Skip("timestamp is not a number") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _Skip("timestamp is out of range")
    return seconds


def _location(loc: Mapping[str, Any]) -> str:
    lat, lng = loc.get("latitude"), loc.get("longitude")
    place = ", ".join(w for w in (_str(loc, "name"), _str(loc, "address")) if w)
    if place:
        return f"Location: {place}"
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lng))
    if not numeric:
        raise _Skip("location has no coordinates")
    return f"Location: {lat:g},{lng:g}"


def _contacts_text(cards: Any) -> str:
    lines = []
    for card in cards if isinstance(cards, list) else []:
        if not isinstance(card, Mapping):
            continue
        name = card.get("name")
        formatted = _str(name, "formatted_name") if isinstance(name, Mapping) else ""
        phones = [_str(p, "phone") for p in card.get("phones") or [] if isinstance(p, Mapping)]
        words = [formatted, *[p for p in phones if p]]
        if any(words):
            lines.append(" ".join(w for w in words if w))
    return "Contact: " + "; ".join(lines) if lines else "Contact"


def _message(
    raw: Any, client_id: str, business: str | None, names: Mapping[str, str]
) -> InboundMessage:
    msg = _map(raw, "message")
    message_id = _str(msg, "id")
    if not message_id or len(message_id) > 512:
        raise _Skip("id is missing")
    wa_id = _str(msg, "from")
    if not _WA_ID.fullmatch(wa_id):
        raise _Skip("from is not a WhatsApp number")
    timestamp = _timestamp(msg.get("timestamp"))
    type_ = _str(msg, "type")

    kind: InboundKind = "unsupported"
    text = ""
    choice_id: str | None = None
    media: tuple[Media, ...] = ()
    reply_to: str | None = None
    body = msg.get(type_) if type_ else None
    content: Mapping[str, Any] = body if isinstance(body, Mapping) else {}

    if type_ == "text":
        kind, text = "text", _str(content, "body")
    elif type_ == "interactive":
        sub = _str(content, "type")
        reply = content.get(sub)
        if sub in ("button_reply", "list_reply") and isinstance(reply, Mapping):
            kind = "button" if sub == "button_reply" else "list"
            text, choice_id = _str(reply, "title"), _str(reply, "id") or None
    elif type_ == "button":
        kind, text = "button", _str(content, "text")
        choice_id = _str(content, "payload") or None
    elif type_ in _MEDIA_TYPES:
        ref = _str(content, "id")
        if not ref:
            raise _Skip(f"{type_} has no media id")
        kind = type_
        media = (Media(ref=ref, content_type=_str(content, "mime_type")),)
        text = _str(content, "caption")
    elif type_ == "location" and content:
        kind, text = "location", _location(content)
    elif type_ == "reaction" and content:
        kind, text = "reaction", _str(content, "emoji")
        reply_to = _str(content, "message_id") or None
    elif type_ == "contacts":
        kind, text = "contacts", _contacts_text(body)

    context = msg.get("context")
    if reply_to is None and isinstance(context, Mapping):
        reply_to = _str(context, "id") or None
    return InboundMessage(
        provider="meta",
        channel="whatsapp",
        client_id=client_id,
        message_id=message_id,
        sender="+" + wa_id,
        kind=kind,
        text=text,
        choice_id=choice_id,
        media=media,
        wa_id=wa_id,
        profile_name=names.get(wa_id) or (next(iter(names.values())) if len(names) == 1 else None),
        business=business,
        timestamp=timestamp,
        reply_to=reply_to,
    )


def _status(raw: Any, client_id: str) -> StatusUpdate | None:
    st = _map(raw, "status")
    message_id = _str(st, "id")
    if not message_id:
        raise _Skip("status id is missing")
    status = _STATUSES.get(_str(st, "status"))
    if status is None:
        return None  # e.g. "deleted": nothing the sender tracks
    recipient = _str(st, "recipient_id")
    code = title = None
    errors = st.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        first = errors[0]
        raw_code = first.get("code")
        code = str(raw_code) if isinstance(raw_code, int | str) and raw_code != "" else None
        title = _str(first, "title") or _str(first, "message") or None
    return StatusUpdate(
        provider="meta",
        client_id=client_id,
        message_id=message_id,
        status=status,
        recipient="+" + recipient if _WA_ID.fullmatch(recipient) else None,
        error_code=code,
        error_title=title,
        timestamp=_timestamp(st.get("timestamp")),
    )


def _profile_names(contacts: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    for contact in contacts if isinstance(contacts, list) else []:
        if not isinstance(contact, Mapping):
            continue
        profile = contact.get("profile")
        name = _str(profile, "name") if isinstance(profile, Mapping) else ""
        wa_id = _str(contact, "wa_id")
        if wa_id and name:
            names[wa_id] = name
    return names


def parse_meta(
    payload: Mapping[str, Any], client_id: str
) -> tuple[list[InboundMessage], list[StatusUpdate]]:
    """The customer messages and delivery statuses of one Cloud API webhook, in
    payload order.

    ``sender`` is ``"+" + from``; ``business`` the ``metadata.phone_number_id``;
    ``timestamp`` the message's send time (epoch seconds); ``reply_to`` the
    ``context.id`` (or a reaction's ``message_id``). Statuses ``sent``,
    ``delivered``, ``read`` (``played`` counts as read) and ``failed`` are
    returned, with ``errors[0].code``/``title``; others are ignored. Changes of
    fields other than ``messages`` (template or account updates) are ignored.

    A malformed message or status (no id, a ``from`` that is not a number, no
    timestamp, a media message without a media id) is skipped and logged by
    reason only; the rest are returned.

    Raises:
        CodecError: ``object`` is not ``whatsapp_business_account``, or
            ``entry``/``changes``/``value`` do not have the documented structure.
    """
    if not isinstance(payload, Mapping) or payload.get("object") != "whatsapp_business_account":
        raise CodecError("object is not whatsapp_business_account")
    if not isinstance(payload.get("entry"), list):
        raise CodecError("entry is not a list")
    messages: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    skipped: list[str] = []
    for entry in payload["entry"]:
        if not isinstance(entry, Mapping):
            raise CodecError("entry item is not an object")
        for change in _list(entry.get("changes"), "changes"):
            if not isinstance(change, Mapping) or not isinstance(change.get("value"), Mapping):
                raise CodecError("change has no value object")
            if change.get("field", "messages") != "messages":
                continue
            value = change["value"]
            metadata = value.get("metadata")
            business = (
                _str(metadata, "phone_number_id") or None if isinstance(metadata, Mapping) else None
            )
            names = _profile_names(value.get("contacts"))
            for raw in _list(value.get("messages"), "messages"):
                try:
                    messages.append(_message(raw, client_id, business, names))
                except _Skip as exc:
                    skipped.append(exc.reason)
            for raw in _list(value.get("statuses"), "statuses"):
                try:
                    status = _status(raw, client_id)
                except _Skip as exc:
                    skipped.append(exc.reason)
                    continue
                if status is not None:
                    statuses.append(status)
    if skipped:
        log.warning(
            "meta webhook for client %s: skipped %d malformed item(s): %s",
            client_id,
            len(skipped),
            "; ".join(sorted(set(skipped))),
        )
    return messages, statuses


# --- outbound ---------------------------------------------------------------------------


def _digits(to: str) -> str:
    """The recipient as Meta wants it: the number's digits, no ``+``."""
    digits = to.strip().removeprefix("whatsapp:").removeprefix("+")
    if not _WA_ID.fullmatch(digits):
        raise CodecError("to is not an E.164 number")
    return digits


def _envelope(to: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}


def _text(to: str, body: str) -> dict[str, Any]:
    return {**_envelope(to), "type": "text", "text": {"preview_url": False, "body": body}}


def _lead_and_body(text: str) -> tuple[str, str]:
    """Split ``text`` into what goes first as plain text and the interactive body
    (at most :data:`BODY_LIMIT`), cut at the best boundary."""
    parts = split_text(text, BODY_LIMIT)
    if len(parts) <= 1:
        return "", text.strip()
    body = parts[-1]
    stripped = text.strip()
    return stripped[: stripped.rfind(body)].rstrip(), body


def _buttons(to: str, body: str, choices: Sequence[QuickReply]) -> dict[str, Any]:
    buttons = [
        {"type": "reply", "reply": {"id": reply_id(i, q.value), "title": choice_title(q)}}
        for i, q in enumerate(choices, 1)
    ]
    return {
        **_envelope(to),
        "type": "interactive",
        "interactive": {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}},
    }


def _row(index: int, choice: QuickReply) -> dict[str, str]:
    title, rest = shorten(choice_title(choice), ROW_TITLE_LIMIT)
    row = {"id": reply_id(index, choice.value), "title": title}
    if rest:
        row["description"] = shorten(rest, ROW_DESCRIPTION_LIMIT)[0]
    return row


def _list_message(to: str, body: str, choices: Sequence[QuickReply], label: str) -> dict[str, Any]:
    rows = [_row(i, q) for i, q in enumerate(choices, 1)]
    return {
        **_envelope(to),
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": body},
            "action": {"button": label, "sections": [{"rows": rows}]},
        },
    }


def _fits_buttons(choices: Sequence[QuickReply]) -> bool:
    titles = [choice_title(q) for q in choices]
    return (
        len(choices) <= MAX_BUTTONS
        and all(text_units(t) <= BUTTON_TITLE_LIMIT for t in titles)
        # Meta rejects two buttons with one title.
        and len({t.casefold() for t in titles}) == len(titles)
    )


def meta_send_payloads(
    msg: OutboundMessage,
    *,
    to: str,
    button_label: str = "Choose",
    hint: str = DEFAULT_HINT,
) -> list[dict[str, Any]]:
    """The Graph ``/{phone_number_id}/messages`` JSON bodies for ``msg``, in send order.

    * no choices: ``text`` messages, split at :data:`TEXT_LIMIT`;
    * up to 3 choices whose titles fit 20 characters (and differ): one
      ``interactive`` ``button`` message;
    * up to 10 choices: an ``interactive`` ``list`` (``button_label`` opens it;
      a long title is shortened on a word boundary with "…" and its rest becomes
      the row's description);
    * more: the numbered list of the text channels, then ``hint``.

    Buttons and list rows have ids from :func:`~channels.whatsapp.choices.reply_id`
    (``qr:<n>:<hash>``). An interactive body longer than :data:`BODY_LIMIT`
    sends its leading text as plain messages first; an empty text uses
    ``button_label`` as the body. No text and no choices: ``[]``.

    Raises:
        CodecError: ``to`` is not an E.164 number (``+`` optional).
    """
    digits = _digits(to)
    text = clean_text(msg.text).strip()
    choices = msg.quick_replies
    if not choices:
        return [_text(digits, part) for part in split_text(text, TEXT_LIMIT)]
    if len(choices) > MAX_ROWS or not all(choice_title(q) for q in choices):
        return [
            _text(digits, part)
            for part in split_text(numbered_text(text, choices, hint), TEXT_LIMIT)
        ]
    label = shorten(button_label, LIST_BUTTON_LIMIT)[0] or "Choose"
    lead, body = _lead_and_body(text or label)
    payloads = [_text(digits, part) for part in split_text(lead, TEXT_LIMIT)]
    if _fits_buttons(choices):
        payloads.append(_buttons(digits, body, choices))
    else:
        payloads.append(_list_message(digits, body, choices, label))
    return payloads


def meta_read_payload(message_id: str, typing: bool = True) -> dict[str, Any]:
    """Mark ``message_id`` (a received ``wamid``) read and, with ``typing``, show
    the typing indicator (dismissed by the reply or after 25 s)."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": message_id,
    }
    if typing:
        payload["typing_indicator"] = {"type": "text"}
    return payload


def meta_template_payload(to: str, name: str, language: str, text: str) -> dict[str, Any]:
    """An approved template message (for sends outside the 24-hour window) whose
    body's one variable ``{{1}}`` is ``text`` (flattened to one line and cut to
    1,024 characters: template variables may not hold newlines or tabs).

    Raises:
        CodecError: ``to`` is not E.164, ``name`` is not a template name
            (lowercase letters, digits, ``_``), ``language`` is not a code such
            as ``en`` or ``en_US``.
    """
    if not _TEMPLATE_NAME.fullmatch(name):
        raise CodecError("name is not a template name")
    if not _LANGUAGE.fullmatch(language):
        raise CodecError("language is not a language code")
    template: dict[str, Any] = {"name": name, "language": {"code": language}}
    variable = template_text(text)
    if variable:
        template["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": variable}]}
        ]
    return {**_envelope(_digits(to)), "type": "template", "template": template}

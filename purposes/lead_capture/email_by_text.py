"""On a call, the email address by text message instead of said.

Email addresses are the hardest thing to catch by voice. The phone prompt asks
for it spelled; when an answer can't be read, the retry asks again for it
spelled and offers to text instead (:data:`RETRY`). "Text me", "send me a
link", "skip" — or "yes" right after that offer — settle the slot that way
(``LeadState.email_by_text``), and the booking then asks for the address in
one SMS to the caller (:data:`SMS`) through the client's SMS channel
(``channels.sms``, account and number from ``twilio_for("sms")``). Without a
usable SMS channel the request is recorded on the lead instead
(``email_by_text: requested``) so staff can follow up; it is never lost.

The outbox key is derived from the booking (or lead) id, itself derived from
the turn id, so a retried turn asks for the very same text and the outbox
keeps one.
"""

from __future__ import annotations

import re
from datetime import datetime

from engine.agents import TurnContext
from engine.config import ClientConfig
from engine.payloads import TwilioMessage
from purposes.lead_capture.availability import format_when
from purposes.lead_capture.state import LeadState
from purposes.lead_capture.validators import is_yes

__all__ = [
    "ACK",
    "NOTED",
    "PROMPT",
    "RETRY",
    "RETRY_NO_TEXT",
    "SMS",
    "SUMMARY",
    "TEXTED",
    "can_text",
    "chose_text",
    "lead_marker",
    "outbox_key",
    "request",
    "settled",
    "sms_sender",
    "sms_text",
]

PROMPT = "What's your email address? Spelling it out letter by letter works best."
"""The email question on a call."""
RETRY = (
    "Sorry, I didn't get that email. Could you spell it, letter by letter — like m a r i a,"
    " at, example dot com? Or I can text you a link to type it instead."
)
"""An email answer on a call that couldn't be read: spell it, or have it texted."""
RETRY_NO_TEXT = (
    "Sorry, I didn't get that email. Could you spell it, letter by letter — like m a r i a,"
    " at, example dot com?"
)
"""The same, when there is no number to text."""
ACK = "No problem — I'll text you once we're done, and you can reply with your email."
"""Said when the caller chose to send the email by text."""
TEXTED = "I've sent you a text — just reply to it with your email address."
"""Said after booking when the SMS asking for the email is on its way."""
NOTED = "Someone from the team will text you for your email address."
"""Said after booking when there is no SMS channel (the lead carries the request)."""
SUMMARY = "email by text message"
"""The email's place in the summary read before booking."""
SMS = (
    "{business}: thanks for booking {service} on {when}. Reply to this text with your"
    " email address and we'll add it to your booking."
)
"""The text asking for the email (the reply's handling is not this flow's)."""
SMS_NO_TIME = (
    "{business}: thanks for your request for {service}. Reply to this text with your"
    " email address and we'll add it to your booking."
)
"""The same, for a lead without a time (``time`` not among the lead fields)."""

_TEXT_ME = re.compile(
    r"\b(?:text|txt|sms|message)\s+(?:me|it)\b"
    r"|\bsend\s+(?:me\s+|it\s+)?(?:a\s+|the\s+)?(?:link|text)\b"
    r"|\bby\s+(?:text|sms)\b"
    r"|\bskip\b",
    re.IGNORECASE,
)
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_MESSAGING_SERVICE = re.compile(r"MG[0-9a-fA-F]{32}")

SETTLED = ("requested", "texted", "noted")


def settled(st: LeadState) -> bool:
    """Is the email to come by text (the slot needs no asking)?"""
    return st.email_by_text in SETTLED and "email" not in st.slots


def chose_text(text: str, st: LeadState) -> bool:
    """Does this answer to the email question ask for it by text ("text me",
    "send me a link", "skip"; "yes" right after the offer)?"""
    return bool(_TEXT_ME.search(text)) or (st.email_by_text == "offered" and is_yes(text))


def can_text(ctx: TurnContext, fields: tuple[str, ...]) -> bool:
    """Is there a number to text: the phone is a lead field, or the call has a
    caller ID?"""
    caller = ctx.session.context.caller_number
    return "phone" in fields or bool(caller and _E164.fullmatch(caller))


def sms_sender(ctx: TurnContext) -> str | None:
    """The number (or Messaging Service SID) the SMS goes from, or None when the
    client's SMS channel is off or has no Twilio account: ``channels.sms``
    (``twilio_for("sms")``, the phone number's account by default), else the
    number the caller dialled."""
    channels = ctx.client.channels
    if not channels.sms.enabled:
        return None
    creds, _key = channels.twilio_for("sms")
    if creds is None or not creds.account_sid or not creds.auth_token:
        return None
    sms = channels.sms.twilio
    sender = (
        (sms.from_ if sms is not None else None)
        or channels.phone.twilio.from_
        or ctx.session.context.called_number
    )
    if sender and (_E164.fullmatch(sender) or _MESSAGING_SERVICE.fullmatch(sender)):
        return sender
    return None


def sms_text(client: ClientConfig, service: str | None, start: datetime | None) -> str:
    what = service or "your appointment"
    if start is None:
        return SMS_NO_TIME.format(business=client.name, service=what)
    return SMS.format(business=client.name, service=what, when=format_when(start))


def outbox_key(client_id: str, record_id: str) -> str:
    """The SMS's idempotency key: one per booking (or lead), so a retried turn
    (same turn id, same ids) cannot text twice."""
    return f"email-by-text:{client_id}:{record_id}"


def lead_marker(ctx: TurnContext, st: LeadState) -> str | None:
    """What the lead records about the email (``fields["email_by_text"]``):
    ``texted`` (an SMS asks for it), ``requested`` (no SMS channel: staff
    should ask) or None (the email was given, or not asked for)."""
    if not settled(st):
        return None
    if st.email_by_text == "requested":
        return "texted" if _route(ctx, st) is not None else "requested"
    return "texted" if st.email_by_text == "texted" else "requested"


def _route(ctx: TurnContext, st: LeadState) -> tuple[str, str] | None:
    """(to, from) for the SMS, or None when it cannot be sent."""
    to = st.slots.get("phone") or ctx.session.context.caller_number
    sender = sms_sender(ctx)
    if not to or not _E164.fullmatch(to) or sender is None:
        return None
    return to, sender


def request(ctx: TurnContext, st: LeadState, record_id: str, start: datetime | None) -> str | None:
    """After a booking (or lead) ``record_id`` whose email comes by text: the
    outbox SMS asking for it, once per conversation; returns its key, or None
    when none was sent (no SMS channel — the lead carries the request — or
    already texted). Moves ``st.email_by_text`` to ``texted`` or ``noted``."""
    if not settled(st) or st.email_by_text != "requested":
        return None
    route = _route(ctx, st)
    if route is None:
        st.email_by_text = "noted"
        return None
    to, sender = route
    text = sms_text(ctx.client, st.slots.get("service"), start)
    payload = TwilioMessage(channel="sms", to=to, from_=sender, parts=({"Body": text},), text=text)
    st.email_by_text = "texted"
    return ctx.effects.deliver(payload, outbox_key(ctx.client.client_id, record_id))

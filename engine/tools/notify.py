"""Escalation notices: tell a person at the business that a customer needs one.

An :class:`Escalation` is what the gateway knows when a conversation is handed
to a human (who, how to reach them, what was captured, the last lines said). It
serialises to JSON (:meth:`Escalation.to_json`) so an outbox row can hold it
until it is delivered, and is rendered for two destinations:

- **Slack**, through an incoming webhook (``escalation.to_slack_webhook``):
  :func:`render_slack` builds the Block Kit payload, :class:`SlackNotifier`
  POSTs it. Wire format from Slack's docs, "Sending messages using incoming
  webhooks" (``api.slack.com/messaging/webhooks``, "Handling errors") and the
  Block Kit reference (``api.slack.com/reference/block-kit/blocks``)::

      POST https://hooks.slack.com/services/T.../B.../<secret>
      Content-Type: application/json

      {"text": "<fallback>", "blocks": [...]}

  Slack answers ``200`` with the body ``ok``; a ``4xx`` with a short error
  string as the body (``400 invalid_payload``, ``403 invalid_token``,
  ``403 action_prohibited``, ``404 no_service``, ``404 channel_not_found``,
  ``410 channel_is_archived``...); ``429`` with ``Retry-After`` (seconds) when
  rate limited (about one message per second per webhook); ``5xx`` on outages.
  The webhook URL's path is a secret: it never appears in an error or a log
  line written here.

- **Email**, over SMTP (``escalation.to_email``, server from
  ``GATEWAY_SMTP_URL``): :func:`render_email` builds the message,
  :class:`EmailNotifier` sends it with ``aiosmtplib``. Reply codes follow
  RFC 5321 section 4.2: ``4yz`` is a transient failure (try again later),
  ``5yz`` a permanent one.

Neither notifier retries: one ``send`` is one attempt, and the caller (the
outbox) decides when to try again. Every failure is a :class:`DeliveryError`::

    ToolError (engine.errors)
    └── DeliveryError      tool="slack" | "email"; retryable; retry_after_s; status

``retryable`` is true for Slack ``429``/``5xx``/timeouts/connection errors and
for SMTP ``4yz`` replies/timeouts/connection errors; false for everything a
retry cannot fix (a revoked webhook, a refused recipient, wrong credentials).

Delivery is at least once. The email's ``Message-ID`` is derived from
``escalation_id`` so mail systems that deduplicate on it show a retried notice
once; Slack incoming webhooks have no idempotency key, so a retry after a lost
``200`` posts the notice twice.
"""

from __future__ import annotations

import email.errors
import hashlib
import ipaddress
import json
import logging
import re
import ssl
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal, get_args
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx

from engine.errors import ToolError
from engine.providers import CallOptions, Provider
from engine.tools.http import retry_after_s

__all__ = [
    "ApprovalAsk",
    "Channel",
    "DeliveryError",
    "EmailNotifier",
    "Escalation",
    "Notifier",
    "Role",
    "SlackNotifier",
    "SmtpSettings",
    "parse_smtp_url",
    "render_email",
    "render_slack",
]

log = logging.getLogger("engine.tools.notify")

Channel = Literal["phone", "whatsapp", "web", "sms"]
Role = Literal["user", "assistant", "system"]

_CHANNELS: frozenset[str] = frozenset(get_args(Channel))
_ROLES: frozenset[str] = frozenset(get_args(Role))
_CHANNEL_LABELS: dict[str, str] = {"phone": "phone call", "whatsapp": "WhatsApp", "web": "web chat"}
_ROLE_LABELS: dict[str, str] = {"user": "Customer", "assistant": "Receptionist", "system": "System"}

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# The id goes into mail headers and Slack text: printable ASCII, no spaces.
_ESCALATION_ID = re.compile(r"^[\x21-\x7e]{1,200}$")
# What may stand as the left part of a Message-ID as is (a plain dot-atom).
_MSGID_LEFT = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")

_JSON_VERSION = 1

# Slack Block Kit limits, in characters (Block Kit reference: header block,
# section block, text object).
SLACK_HEADER_MAX = 150
SLACK_SECTION_TEXT_MAX = 3000
SLACK_FIELD_TEXT_MAX = 2000
SLACK_FALLBACK_TEXT_MAX = 500  # Slack allows 40,000; a notification preview needs far less
_LINE_MAX = 500  # one transcript line or captured value, in characters
_SUBJECT_MAX = 200


# --------------------------------------------------------------------------- model


_FALLBACK_TEXT = {
    "decline": "the customer is told politely that it cannot be booked",
    "take_message": "the customer is told the team will call back (a callback lead)",
}


@dataclass(frozen=True, slots=True)
class ApprovalAsk:
    """The decision a notice asks staff for (:mod:`engine.approvals`).

    ``url``: ``GATEWAY_PUBLIC_URL/admin/api/approvals/{id}`` (None without a
    public URL: the notice names the path); ``deadline``: timezone-aware, when
    ``fallback`` (``decline`` | ``take_message``) applies without a decision.
    """

    approval_id: str
    url: str | None
    deadline: datetime
    fallback: str

    @property
    def target(self) -> str:
        return self.url or f"/admin/api/approvals/{self.approval_id}"

    def lines(self) -> list[str]:
        """Plain-text instructions (email; Slack wraps them in code spans)."""
        return [
            f'Approve: POST {self.target} with {{"decision": "approve"}}',
            f'Decline: POST {self.target} with {{"decision": "decline", "note": "..."}}',
            f"No decision by {self.deadline.isoformat(timespec='minutes')}: "
            + _FALLBACK_TEXT.get(self.fallback, self.fallback),
        ]

    def to_obj(self) -> dict[str, str | None]:
        return {
            "approval_id": self.approval_id,
            "url": self.url,
            "deadline": self.deadline.isoformat(),
            "fallback": self.fallback,
        }

    @classmethod
    def from_obj(cls, obj: object) -> ApprovalAsk | None:
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise ValueError("escalation JSON: 'approval' must be an object or null")
        return cls(
            approval_id=_str(obj, "approval_id"),
            url=_opt_str(obj, "url"),
            deadline=datetime.fromisoformat(_str(obj, "deadline")),
            fallback=_str(obj, "fallback"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalation:
    """One hand-over to a human, as the business should see it.

    ``channel`` is ``phone``, ``whatsapp`` or ``web``; ``reason`` is a short
    phrase that reads after "Customer" ("asked for a person", "stuck on phone
    number"). ``who`` is the customer's name, ``contact`` their phone number in
    E.164 (``+14155550123``), ``email`` their address, each ``None`` when not
    captured. ``fields`` holds every captured slot by lead-field name.
    ``transcript`` is the excerpt to show, oldest first: ``(role, text)`` pairs
    with ``role`` one of ``user``/``assistant``/``system``, normally the last
    eight lines. ``created_at`` is timezone-aware. ``escalation_id`` (printable
    ASCII, no spaces, at most 200 characters) is the idempotency key: the
    outbox row's id and the email's ``Message-ID``.

    Raises ``ValueError`` (naming the field, never echoing its value) when a
    field is out of shape.
    """

    client_id: str
    client_name: str
    channel: Channel
    session_id: str
    reason: str
    who: str | None
    contact: str | None
    email: str | None
    fields: dict[str, str]
    transcript: tuple[tuple[Role, str], ...]
    created_at: datetime
    escalation_id: str
    question: str | None = None
    """The customer's last message (what they want answered), when known."""
    link: str | None = None
    """The conversation in the admin API
    (``GATEWAY_PUBLIC_URL/admin/api/conversations/{id}``); None without a
    public URL."""
    approval: ApprovalAsk | None = None
    """Set when staff are asked to approve or decline (a booking outside the
    usual rules); the notice then says how, and what happens without an answer."""

    def __post_init__(self) -> None:
        for name in ("client_id", "client_name", "session_id", "reason"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"escalation: {name} must not be empty")
        if self.channel not in _CHANNELS:
            raise ValueError(f"escalation: channel must be one of {sorted(_CHANNELS)}")
        if not _ESCALATION_ID.match(self.escalation_id):
            raise ValueError(
                "escalation: escalation_id must be 1-200 printable ASCII characters without spaces"
            )
        if self.created_at.utcoffset() is None:
            raise ValueError("escalation: created_at must be timezone-aware")
        if self.link is not None and not re.match(r"^https?://[^\s<>|]+$", self.link):
            raise ValueError("escalation: link must be an http(s) URL without spaces")
        if self.contact is not None and not _E164.match(self.contact):
            raise ValueError("escalation: contact must be an E.164 phone number ('+' and digits)")
        fields = dict(self.fields)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
            raise ValueError("escalation: fields must map str to str")
        transcript = tuple((role, text) for role, text in self.transcript)
        for role, text in transcript:
            if role not in _ROLES or not isinstance(text, str):
                raise ValueError(
                    f"escalation: transcript lines must be (role, text) with role in {sorted(_ROLES)}"
                )
        # Copies, so the caller's dict cannot change a frozen escalation later.
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "transcript", transcript)

    def to_json(self) -> str:
        """This escalation as a JSON object (UTF-8 text, ``"v": 1``), for an outbox row."""
        return json.dumps(
            {
                "v": _JSON_VERSION,
                "escalation_id": self.escalation_id,
                "client_id": self.client_id,
                "client_name": self.client_name,
                "channel": self.channel,
                "session_id": self.session_id,
                "reason": self.reason,
                "who": self.who,
                "contact": self.contact,
                "email": self.email,
                "fields": self.fields,
                "transcript": [[role, text] for role, text in self.transcript],
                "created_at": self.created_at.isoformat(),
                "question": self.question,
                "link": self.link,
                "approval": self.approval.to_obj() if self.approval else None,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> Escalation:
        """Rebuild an escalation from :meth:`to_json` output.

        Raises ``ValueError`` when ``data`` is not such a JSON object (the
        message names the key at fault, not its content).
        """
        try:
            obj = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"escalation JSON: not valid JSON ({type(exc).__name__})") from exc
        if not isinstance(obj, dict):
            raise ValueError("escalation JSON: expected an object")
        if obj.get("v") != _JSON_VERSION:
            raise ValueError(f"escalation JSON: unsupported version (expected v={_JSON_VERSION})")
        try:
            transcript = obj["transcript"]
            fields = obj["fields"]
            if not isinstance(transcript, list) or not isinstance(fields, dict):
                raise ValueError("escalation JSON: transcript must be a list, fields an object")
            return cls(
                client_id=_str(obj, "client_id"),
                client_name=_str(obj, "client_name"),
                channel=obj["channel"],
                session_id=_str(obj, "session_id"),
                reason=_str(obj, "reason"),
                who=_opt_str(obj, "who"),
                contact=_opt_str(obj, "contact"),
                email=_opt_str(obj, "email"),
                fields=fields,
                transcript=tuple((line[0], line[1]) for line in transcript),
                created_at=datetime.fromisoformat(_str(obj, "created_at")),
                escalation_id=_str(obj, "escalation_id"),
                question=_opt_str(obj, "question"),
                link=_opt_str(obj, "link"),
                approval=ApprovalAsk.from_obj(obj.get("approval")),
            )
        except KeyError as exc:
            raise ValueError(f"escalation JSON: missing key {exc.args[0]!r}") from exc
        except (TypeError, IndexError) as exc:
            raise ValueError(
                "escalation JSON: a transcript line is not a [role, text] pair"
            ) from exc


def _str(obj: Mapping[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"escalation JSON: {key!r} must be a string")
    return value


def _opt_str(obj: Mapping[str, object], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"escalation JSON: {key!r} must be a string or null")
    return value


# --------------------------------------------------------------------------- errors


class DeliveryError(ToolError):
    """A notice could not be delivered.

    ``tool`` is ``"slack"`` or ``"email"``. ``retryable`` says whether trying
    again later may help. ``retry_after_s`` is the server's ``Retry-After`` in
    seconds (Slack ``429``/``503``), else ``None``. ``status`` is the HTTP
    status (Slack) or SMTP reply code (email), ``None`` for transport errors.
    """

    def __init__(
        self,
        tool: str,
        reason: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(tool, reason, retryable=retryable)
        self.retry_after_s = retry_after_s
        self.status = status


# --------------------------------------------------------------------------- interface


class Notifier(Provider):
    """Something that delivers an escalation to one destination.

    ``target`` is the destination in the notifier's own terms (a Slack webhook
    URL, an email address). :meth:`send` returns once the destination accepted
    the notice, or raises :class:`DeliveryError`. One attempt per call: the
    outbox retries (with the vendor's ``Retry-After``), so the provider base
    adds only its timeout and metrics here.
    """

    kind = "notifier"

    async def send(self, target: str, esc: Escalation, /) -> None:
        await self._call("send", lambda: self._send_impl(target, esc))

    @abstractmethod
    async def _send_impl(self, target: str, esc: Escalation, /) -> None:
        """One delivery attempt of :meth:`send`."""


# --------------------------------------------------------------------------- text helpers


def _one_line(text: str) -> str:
    """Collapse every run of whitespace (newlines too) into one space."""
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis if cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def _mrkdwn(text: str) -> str:
    """Escape Slack's control characters (``&``, ``<``, ``>``) in user text.

    Slack, "Formatting text for app surfaces", *Escaping text*: these three
    are replaced by HTML entities; nothing else needs escaping. This also keeps
    a customer from writing ``<!channel>`` or a link into the notice.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip_mrkdwn(text: str, limit: int) -> str:
    """Like :func:`_clip` for escaped text: never cut an ``&amp;`` in half."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    cut = re.sub(r"&[a-z]*$", "", cut)
    return cut.rstrip() + "…"


def _summary(esc: Escalation) -> str:
    who = esc.who or "name not given"
    return (
        f"{esc.client_name}: customer {_one_line(esc.reason)} "
        f"({_CHANNEL_LABELS[esc.channel]}) - {_one_line(who)}"
    )


# --------------------------------------------------------------------------- Slack


def render_slack(esc: Escalation) -> dict[str, object]:
    """The Slack incoming-webhook payload for ``esc``.

    Shape (Block Kit, ``api.slack.com/reference/block-kit/blocks``)::

        {"text": "<summary, the notification fallback>",
         "blocks": [
           {"type": "header", "text": {"type": "plain_text", "text": ...}},
           {"type": "section", "fields": [who, contact, channel, reason]},
           {"type": "section", "text": {"type": "mrkdwn", "text": "*Question* > ..."}},
           {"type": "section", "text": {"type": "mrkdwn", "text": "*Captured* ..."}},
           {"type": "section", "text": {"type": "mrkdwn", "text": "*Last lines* > ..."}},
           {"type": "section", "text": {"type": "mrkdwn",
                                        "text": "<link|Open the conversation> ..."}},
           {"type": "context", "elements": [session, escalation id, time]}],
         "unfurl_links": false, "unfurl_media": false}

    The *Question* section (the customer's last message) appears when
    ``question`` is set; the link section when ``link`` is (a
    ``GATEWAY_PUBLIC_URL`` is configured), with how staff answer in the chat.

    User text is escaped (``&``, ``<``, ``>``) in every ``mrkdwn`` text and
    clipped to Slack's limits: header 150 characters, section text 3,000,
    section field 2,000. When the transcript does not fit, the oldest lines
    are left out first.
    """
    channel = _CHANNEL_LABELS[esc.channel]
    header = _clip(_one_line(f"{esc.client_name}: customer {esc.reason}"), SLACK_HEADER_MAX)

    who = _mrkdwn(_clip(_one_line(esc.who), _LINE_MAX)) if esc.who else "_not given_"
    contact_lines = [_mrkdwn(v) for v in (esc.contact, esc.email) if v]
    contact = "\n".join(contact_lines) if contact_lines else "_none captured_"
    info_fields = [
        ("Who", who),
        ("Contact", contact),
        ("Channel", channel),
        ("Reason", _mrkdwn(_one_line(esc.reason))),
    ]

    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": _clip_mrkdwn(f"*{label}*\n{value}", SLACK_FIELD_TEXT_MAX),
                }
                for label, value in info_fields
            ],
        },
    ]
    if esc.approval:
        ask = esc.approval.lines()
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip_mrkdwn(
                        "*Needs your decision*\n"
                        + "\n".join(f"`{_mrkdwn(line)}`" for line in ask[:2])
                        + f"\n{_mrkdwn(ask[2])}",
                        SLACK_SECTION_TEXT_MAX,
                    ),
                },
            }
        )
    if esc.question:
        question = _mrkdwn(_clip(_one_line(esc.question), _LINE_MAX))
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Question*\n>{question}"}}
        )
    blocks += [
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_captured(esc)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_transcript(esc)}},
    ]
    if esc.link:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"<{esc.link}|Open the conversation> · reply with "
                    f"`POST {esc.link}/reply`, hand back with `POST {esc.link}/release`",
                },
            }
        )
    blocks += [
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _clip_mrkdwn(
                        f"Session `{_mrkdwn(esc.session_id)}` · "
                        f"escalation `{_mrkdwn(esc.escalation_id)}` · "
                        f"{esc.created_at.isoformat(timespec='seconds')}",
                        SLACK_FIELD_TEXT_MAX,
                    ),
                }
            ],
        },
    ]
    return {
        "text": _clip_mrkdwn(_mrkdwn(_summary(esc)), SLACK_FALLBACK_TEXT_MAX),
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


def _slack_captured(esc: Escalation) -> str:
    if not esc.fields:
        return "*Captured*\n_nothing yet_"
    lines = [
        f"• *{_mrkdwn(_one_line(key))}*: {_mrkdwn(_clip(_one_line(value), _LINE_MAX))}"
        for key, value in esc.fields.items()
    ]
    return _clip_mrkdwn("*Captured*\n" + "\n".join(lines), SLACK_SECTION_TEXT_MAX)


def _slack_transcript(esc: Escalation) -> str:
    if not esc.transcript:
        return "*Conversation*\n_no messages_"
    quoted = [
        f">*{_ROLE_LABELS[role]}:* {_mrkdwn(_clip(_one_line(text), _LINE_MAX))}"
        for role, text in esc.transcript
    ]
    # Keep the newest lines: walk back from the end while they fit.
    budget = SLACK_SECTION_TEXT_MAX - len("*Last 000 lines* (earlier lines left out)\n")
    kept: list[str] = []
    for line in reversed(quoted):
        if len(line) + 1 > budget:
            break
        kept.append(line)
        budget -= len(line) + 1
    kept.reverse()
    title = f"*Last {len(kept)} line{'s' if len(kept) != 1 else ''}*"
    if len(kept) < len(quoted):
        title += " (earlier lines left out)"
    return title + "\n" + "\n".join(kept)


class SlackNotifier(Notifier):
    """Post escalations to Slack incoming webhooks.

    ``http`` is owned by the caller (the gateway lifespan opens one); this
    class never opens or closes it. ``timeout_s`` bounds each POST (connect +
    send + answer), in seconds.
    """

    name = "slack"

    def __init__(self, http: httpx.AsyncClient, *, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._http = http
        self._timeout_s = timeout_s
        # The POST bounds itself; the base's bound is a backstop (and the metrics).
        self.options = CallOptions(timeout_s=timeout_s + 5.0, max_attempts=1)

    async def _send_impl(self, webhook_url: str, esc: Escalation, /) -> None:
        """POST :func:`render_slack` of ``esc`` to ``webhook_url``; one attempt.

        Returns on any ``2xx`` (Slack's body is ``ok``). Raises
        :class:`DeliveryError` with ``tool="slack"``: retryable for ``408``,
        ``429``, ``5xx``, timeouts and connection errors (``retry_after_s`` set
        from ``Retry-After``); not retryable for other statuses, naming the
        status and Slack's error text (``404: no_service``), and for a missing
        or non-http(s) webhook URL.
        """
        where = _webhook_label(webhook_url)
        if not webhook_url.strip():
            raise DeliveryError(
                "slack",
                "no webhook URL (escalation.to_slack_webhook is empty; is its "
                "environment variable set?)",
                retryable=False,
            )
        if where is None:
            raise DeliveryError(
                "slack",
                "the webhook URL is not an http(s) URL; check escalation.to_slack_webhook",
                retryable=False,
            )
        what = f"escalation {esc.escalation_id} to {where}"
        try:
            response = await self._http.post(
                webhook_url, json=render_slack(esc), timeout=httpx.Timeout(self._timeout_s)
            )
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                "slack",
                f"{what}: no answer within {self._timeout_s:g} s ({type(exc).__name__})",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise DeliveryError(
                "slack",
                f"{what}: cannot reach Slack ({type(exc).__name__}: "
                f"{_scrub(str(exc), webhook_url)})",
                retryable=True,
            ) from exc
        except httpx.InvalidURL as exc:
            raise DeliveryError(
                "slack",
                f"{what}: the webhook URL is malformed; check escalation.to_slack_webhook",
                retryable=False,
            ) from exc
        if response.is_success:
            log.info(
                "escalation %s delivered to slack (client=%s, channel=%s)",
                esc.escalation_id,
                esc.client_id,
                esc.channel,
            )
            return
        raise _slack_error(what, response, webhook_url)


_SLACK_HINTS: dict[str, str] = {
    "invalid_payload": "Slack rejected the message blocks (a rendering bug)",
    "invalid_token": "the webhook was revoked; create a new one",
    "no_service": "the webhook was removed or revoked; create a new one",
    "no_team": "the Slack workspace is gone; create a new webhook",
    "team_disabled": "the Slack workspace is disabled",
    "channel_not_found": "the webhook's channel no longer exists; create a new webhook",
    "channel_is_archived": "the webhook's channel is archived; unarchive it or create a new webhook",
    "action_prohibited": "a workspace admin restricts posting to that channel",
}


def _slack_error(what: str, response: httpx.Response, webhook_url: str) -> DeliveryError:
    status = response.status_code
    body = _scrub(_clip(_one_line(response.text), 200), webhook_url)
    reason = f"{what}: Slack answered HTTP {status}"
    if body:
        reason += f": {body}"
    hint = _SLACK_HINTS.get(body)
    retryable = status in (408, 429) or status >= 500
    if hint:
        reason += f" ({hint})"
    elif not retryable:
        reason += "; check escalation.to_slack_webhook"
    return DeliveryError(
        "slack",
        reason,
        retryable=retryable,
        retry_after_s=retry_after_s(response) if retryable else None,
        status=status,
    )


def _webhook_label(url: str) -> str | None:
    """``scheme://host/…``: the webhook's address without its secret path.

    ``None`` when ``url`` is not an http(s) URL with a host.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return f"{parts.scheme}://{host}/…"


def _scrub(text: str, url: str) -> str:
    """``text`` with the webhook URL and its path (the secret) blanked out."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    for secret in (url, url.strip(), path):
        if len(secret) > 1:
            text = text.replace(secret, "…")
    return text


# --------------------------------------------------------------------------- email


def render_email(esc: Escalation, to_addr: str, from_addr: str) -> EmailMessage:
    """The notice for ``esc`` as a plain-text email from ``from_addr`` to ``to_addr``.

    Headers: ``Subject: [<client name>] Customer <reason> (<channel>)``,
    ``From`` (display name "<client name> receptionist"), ``To``, ``Date``
    (``created_at``), ``Message-ID: <escalation.<id>@<from domain>>`` (the
    same for every retry of one escalation; an id that is not a plain dot-atom
    is replaced by its SHA-256), ``X-Gateway-Escalation-Id``,
    ``X-Gateway-Client-Id`` and ``Auto-Submitted: auto-generated`` (RFC 3834,
    so auto-responders stay quiet). The body is UTF-8, quoted-printable, so
    any name survives any relay; non-ASCII headers are RFC 2047-encoded when
    sent.

    Raises ``ValueError`` when ``to_addr`` or ``from_addr`` is not an email
    address.
    """
    try:
        sender = Address(
            display_name=f"{_one_line(esc.client_name)} receptionist", addr_spec=from_addr
        )
        recipient = Address(addr_spec=to_addr)
    except (ValueError, IndexError, email.errors.HeaderParseError) as exc:
        raise ValueError(
            "email notice: the sender or recipient is not an email address "
            "(check escalation.to_email and the From address)"
        ) from exc

    msg = EmailMessage()
    msg["Subject"] = _clip(
        _one_line(f"[{esc.client_name}] Customer {esc.reason} ({esc.channel})"), _SUBJECT_MAX
    )
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = format_datetime(esc.created_at)
    msg["Message-ID"] = _message_id(esc.escalation_id, sender.domain)
    msg["X-Gateway-Escalation-Id"] = esc.escalation_id
    msg["X-Gateway-Client-Id"] = _one_line(esc.client_id)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(_email_body(esc), charset="utf-8", cte="quoted-printable")
    return msg


def _message_id(escalation_id: str, domain: str) -> str:
    left = escalation_id
    if not _MSGID_LEFT.match(left) or len(left) > 64:
        left = hashlib.sha256(escalation_id.encode()).hexdigest()[:40]
    return f"<escalation.{left}@{domain or 'gateway.invalid'}>"


def _email_body(esc: Escalation) -> str:
    def line(text: str) -> str:
        return _clip(_one_line(text), _LINE_MAX)

    channel = _CHANNEL_LABELS[esc.channel]
    out = [
        f"A customer on {channel} {line(esc.reason)}.",
        "",
        f"Who:      {line(esc.who) if esc.who else '(not given)'}",
        f"Phone:    {esc.contact or '(not given)'}",
        f"Email:    {line(esc.email) if esc.email else '(not given)'}",
        f"Channel:  {channel}",
        f"Reason:   {line(esc.reason)}",
    ]
    if esc.question:
        out += [f"Question: {line(esc.question)}"]
    if esc.link:
        out += [f"Open:     {esc.link}"]
    if esc.approval:
        out += ["", "Needs your decision", *(f"  {line}" for line in esc.approval.lines())]
    out += [
        "",
        "Captured",
    ]
    out += [f"  {line(k)}: {line(v)}" for k, v in esc.fields.items()] or ["  (nothing yet)"]
    out += ["", f"Last {len(esc.transcript)} lines" if esc.transcript else "Conversation"]
    out += [f"  {_ROLE_LABELS[role]}: {line(text)}" for role, text in esc.transcript] or [
        "  (no messages)"
    ]
    out += [
        "",
        "--",
        f"Session {esc.session_id} · escalation {esc.escalation_id} · "
        f"{esc.created_at.isoformat(timespec='seconds')}",
        "",
    ]
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """An SMTP server as given by ``GATEWAY_SMTP_URL`` (see :func:`parse_smtp_url`).

    ``use_tls`` is implicit TLS from the first byte (``smtps``). ``start_tls``
    is ``True`` (STARTTLS required), ``False`` (never) or ``None`` (used when
    the server offers it). ``port`` is a TCP port.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool | None = None

    @property
    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***`` (for messages and logs)."""
        scheme = "smtps" if self.use_tls else "smtp"
        auth = f"{self.username}:***@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"


_SMTP_FORMS = (
    "expected smtp://[user:password@]host[:port] (STARTTLS; port 25 by default) or "
    "smtps://[user:password@]host[:port] (implicit TLS; port 465 by default), "
    "with special characters in user and password percent-encoded ('@' as %40, '/' as %2F)"
)


def parse_smtp_url(url: str) -> SmtpSettings:
    """Read ``GATEWAY_SMTP_URL``.

    Forms: ``smtp://user:pass@host:587`` (login after STARTTLS, which port 587
    requires), ``smtps://user:pass@host:465`` (implicit TLS),
    ``smtp://host:25`` (no login; STARTTLS when the server offers it). User
    and password are percent-decoded. With credentials, ``smtp://`` requires
    STARTTLS on any port unless the host is a loopback address, so a password
    never crosses a network in clear.

    Raises ``ValueError`` naming what is wrong and the expected forms; the
    password is never part of the message.
    """
    shown = _redact_url(url)
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"SMTP URL {shown!r}: the port is not a number from 1 to 65535; {_SMTP_FORMS}"
        ) from exc
    if scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP URL {shown!r}: the scheme must be smtp or smtps; {_SMTP_FORMS}")
    if not host:
        raise ValueError(f"SMTP URL {shown!r}: no host; {_SMTP_FORMS}")
    if port == 0:
        raise ValueError(f"SMTP URL {shown!r}: port 0 is not a port; {_SMTP_FORMS}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"SMTP URL {shown!r}: unexpected path, query or fragment after the host; {_SMTP_FORMS}"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if (username is None and password) or (username is not None and not password):
        raise ValueError(
            f"SMTP URL {shown!r}: give both a user and a password, or neither; {_SMTP_FORMS}"
        )
    use_tls = scheme == "smtps"
    if port is None:
        port = 465 if use_tls else 25
    start_tls: bool | None
    if use_tls:
        start_tls = False
    elif port == 587 or (username is not None and not _is_loopback(host)):
        start_tls = True
    else:
        start_tls = None
    return SmtpSettings(
        host=host,
        port=port,
        username=username,
        password=password,
        use_tls=use_tls,
        start_tls=start_tls,
    )


def _redact_url(url: str) -> str:
    """``url`` with anything between ``user:`` and the last ``@`` replaced by ``***``."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hostpart}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_from(host: str) -> str:
    """``gateway@<host>``; an IP address becomes an RFC 5321 address literal."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"gateway@{host}"
    return f"gateway@[IPv6:{ip}]" if ip.version == 6 else f"gateway@[{ip}]"


class EmailNotifier(Notifier):
    """Email escalations through one SMTP server.

    ``smtp_url`` is ``GATEWAY_SMTP_URL`` (forms in :func:`parse_smtp_url`;
    ``ValueError`` when malformed). ``from_addr`` is the envelope and header
    sender, by default ``gateway@<SMTP host>``. ``timeout_s`` bounds each SMTP
    step (connect, each command), in seconds. One connection per :meth:`send`:
    escalations are rare, and a fresh connection never finds a stale one.
    """

    name = "email"

    def __init__(
        self, smtp_url: str, from_addr: str | None = None, *, timeout_s: float = 10.0
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.settings = parse_smtp_url(smtp_url)
        self.from_addr = from_addr or _default_from(self.settings.host)
        try:
            Address(addr_spec=self.from_addr)
        except (ValueError, IndexError, email.errors.HeaderParseError) as exc:
            raise ValueError("EmailNotifier: from_addr is not an email address") from exc
        self._timeout_s = timeout_s
        # Each SMTP step bounds itself; the base's bound covers a whole session.
        self.options = CallOptions(timeout_s=6 * timeout_s + 5.0, max_attempts=1)

    async def _send_impl(self, to_addr: str, esc: Escalation, /) -> None:
        """Email :func:`render_email` of ``esc`` to ``to_addr``; one attempt.

        Raises :class:`DeliveryError` with ``tool="email"`` and ``status`` the
        SMTP reply code when there is one: retryable for ``4yz`` replies
        (RFC 5321 4.2.1, transient), timeouts, refused or dropped connections;
        not retryable for ``5yz`` replies (permanent: unknown recipient, bad
        credentials...), a TLS certificate that does not verify, a server
        without STARTTLS when it is required, or an invalid ``to_addr``.
        """
        server = self.settings.redacted_url
        what = f"escalation {esc.escalation_id} via {server}"
        try:
            message = render_email(esc, to_addr, self.from_addr)
        except ValueError as exc:
            raise DeliveryError("email", f"{what}: {exc}", retryable=False) from exc
        s = self.settings
        try:
            await aiosmtplib.send(
                message,
                sender=self.from_addr,
                recipients=[to_addr],
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                use_tls=s.use_tls,
                start_tls=s.start_tls,
                timeout=self._timeout_s,
            )
        except aiosmtplib.SMTPException as exc:
            raise _smtp_error(what, exc) from exc
        except OSError as exc:  # raised below aiosmtplib's own mapping (TLS upgrade)
            raise _cert_error(what, exc) or DeliveryError(
                "email", f"{what}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        log.info(
            "escalation %s delivered by email (client=%s, channel=%s)",
            esc.escalation_id,
            esc.client_id,
            esc.channel,
        )


def _smtp_error(what: str, exc: aiosmtplib.SMTPException) -> DeliveryError:
    """Map an aiosmtplib error by RFC 5321 reply class: 4yz transient, 5yz permanent."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {_clip(_one_line(r.message), 200)}" for r in exc.recipients)
        return DeliveryError(
            "email",
            f"{what}: recipient refused: {detail}",
            retryable=all(400 <= code < 500 for code in codes),
            status=codes[0] if codes else None,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code
        reply = f"{code} {_clip(_one_line(exc.message), 200)}"
        step = {
            aiosmtplib.SMTPAuthenticationError: "login refused",
            aiosmtplib.SMTPSenderRefused: "sender refused",
            aiosmtplib.SMTPRecipientRefused: "recipient refused",
            aiosmtplib.SMTPDataError: "message refused",
            aiosmtplib.SMTPHeloError: "greeting refused",
            aiosmtplib.SMTPConnectResponseError: "connection refused by the server",
        }.get(type(exc), "server error")
        permanent = 500 <= code < 600
        reason = f"{what}: {step}: {reply}"
        if permanent and isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            reason += "; check the user and password in GATEWAY_SMTP_URL"
        elif permanent and isinstance(exc, aiosmtplib.SMTPSenderRefused):
            reason += "; the server does not accept this From address"
        return DeliveryError("email", reason, retryable=not permanent, status=code)
    cert_error = _cert_error(what, exc)
    if cert_error is not None:
        return cert_error
    if isinstance(
        exc,
        aiosmtplib.SMTPTimeoutError
        | aiosmtplib.SMTPConnectError
        | aiosmtplib.SMTPServerDisconnected,
    ):
        return DeliveryError("email", f"{what}: {type(exc).__name__}: {exc}", retryable=True)
    # SMTPNotSupported and the base class: STARTTLS or AUTH missing on the
    # server, or options that do not fit together. Configuration, not luck.
    return DeliveryError(
        "email",
        f"{what}: {type(exc).__name__}: {exc}; check GATEWAY_SMTP_URL against the server",
        retryable=False,
    )


def _cert_error(what: str, exc: BaseException) -> DeliveryError | None:
    """A non-retryable error if ``exc`` is, or was caused by, a failed certificate check."""
    seen: BaseException | None = exc
    for _ in range(3):  # the SSL error sits at most a couple of links down
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return DeliveryError(
                "email",
                f"{what}: the server's TLS certificate does not verify "
                f"({seen.verify_message}); check the host in GATEWAY_SMTP_URL",
                retryable=False,
            )
        seen = seen.__cause__ or seen.__context__
    return None

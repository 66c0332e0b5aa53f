"""Escalation notices: tell a person at the business that a customer needs one.

An :class:`Escalation` is what the gateway knows when a conversation is handed
to a human (who, how to reach them, what was captured, the last lines said). It
serialises to JSON (:meth:`Escalation.to_json`) so an outbox row can hold it
until it is delivered. A :class:`Notifier` delivers it to one destination; the
vendor notifiers are providers: Slack incoming webhooks
(:mod:`providers.notify.slack`) and email over SMTP
(:mod:`providers.notify.email`).

Neither notifier retries: one ``send`` is one attempt, and the caller (the
outbox) decides when to try again. Every failure is a :class:`DeliveryError`::

    ToolError (engine.errors)
    └── DeliveryError      tool="slack" | "email"; retryable; retry_after_s; status
"""

from __future__ import annotations

import json
import logging
import re
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from engine.errors import ToolError
from engine.providers import Provider

__all__ = [
    "ApprovalAsk",
    "Channel",
    "DeliveryError",
    "Escalation",
    "NoticeKind",
    "Notifier",
    "Role",
]

log = logging.getLogger("engine.tools.notify")

Channel = Literal["phone", "whatsapp", "web", "sms"]
NoticeKind = Literal["notify.slack", "notify.email"]
"""The outbox kinds that deliver an escalation notice (:class:`engine.payloads.EscalationNotice`)."""
Role = Literal["user", "assistant", "system"]

_CHANNELS: frozenset[str] = frozenset(get_args(Channel))
_ROLES: frozenset[str] = frozenset(get_args(Role))

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# The id goes into mail headers and Slack text: printable ASCII, no spaces.
_ESCALATION_ID = re.compile(r"^[\x21-\x7e]{1,200}$")

_JSON_VERSION = 1


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

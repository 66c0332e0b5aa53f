"""What an outbox row asks for: one frozen type per payload shape, parsed once.

An outbox row (:mod:`engine.outbox`) holds a ``kind`` column and a JSON
``payload``. These types are that payload, in the domain's words; the
:data:`OutboxPayload` union is discriminated by ``kind``:

==========================================================  ==========================
kind                                                        payload
==========================================================  ==========================
``notify.slack``, ``notify.email``                          :class:`EscalationNotice`
``twilio.call``                                             :class:`CallAction`
``crm.hubspot``, ``crm.pipedrive``, ``crm.airtable``,       :class:`LeadPush`
``crm.webhook``
``message.twilio``                                          :class:`TwilioMessage`
``message.meta``                                            :class:`MetaMessage`
``read.meta``                                               :class:`ReadReceipt`
``calendar.google``, ``calendar.calendly``                  :class:`CalendarPush`
==========================================================  ==========================

**Storage.** The row's JSON is :func:`stored_payload`: the fields under the
keys the rows have always used (``from`` for a Twilio sender, the escalation
as its own JSON text), without ``kind`` (that is the row's column). Reading a
row (:func:`read_payload`) puts the column's kind back and validates: keys a
newer version added are ignored; a payload that does not parse comes back as
an :class:`UnreadablePayload` naming the kind and the problem (never the
values: payloads hold phone numbers and messages), which the worker
dead-letters instead of delivering.

This module imports no provider or channel: the vendors' names appear only as
the kinds that say which deliverer sends a row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from engine.tools.notify import Escalation, NoticeKind

__all__ = [
    "CalendarKind",
    "CalendarPush",
    "CallAction",
    "CrmKind",
    "EscalationNotice",
    "LeadPush",
    "MessageSend",
    "MetaMessage",
    "NoticeKind",
    "OutboxPayload",
    "Payload",
    "PayloadError",
    "ReadReceipt",
    "TwilioMessage",
    "UnreadablePayload",
    "parse_payload",
    "payload_kinds",
    "read_payload",
    "stored_payload",
]

CrmKind = Literal["crm.hubspot", "crm.pipedrive", "crm.airtable", "crm.webhook"]
CalendarKind = Literal["calendar.google", "calendar.calendly"]


class Payload(BaseModel):
    """The base of every payload type: frozen; keys it does not know (a newer
    version's) ignored; fields set by name or by their stored key."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )


# -- field types ---------------------------------------------------------------------------


def _escalation(value: object) -> Escalation:
    if isinstance(value, Escalation):
        return value
    if isinstance(value, str | bytes):
        return Escalation.from_json(value)  # ValueError names the key at fault
    raise ValueError("must be an escalation's JSON text")


def _escalation_text(value: Escalation) -> str:
    return value.to_json()


EscalationField = Annotated[
    Escalation,
    PlainValidator(_escalation),
    PlainSerializer(_escalation_text, return_type=str, when_used="json"),
]
"""An :class:`~engine.tools.notify.Escalation`, stored as its own JSON text
(:meth:`~engine.tools.notify.Escalation.to_json`, a string inside the row)."""


def _iso(value: datetime) -> str:
    return value.isoformat()


IsoDatetime = Annotated[AwareDatetime, PlainSerializer(_iso, return_type=str, when_used="json")]
"""A timezone-aware instant, stored as :meth:`datetime.isoformat` writes it."""


def _e164(value: str) -> str:
    number = value.removeprefix("whatsapp:")
    if not number.startswith("+"):
        raise ValueError("must be a number in E.164 ('+' and digits)")
    return number


Number = Annotated[str, AfterValidator(_e164)]
"""A phone number in E.164; a ``whatsapp:`` prefix is dropped."""


# -- the payloads -------------------------------------------------------------------------


class EscalationNotice(Payload):
    """Tell the business's staff a customer needs a person: one row per notifier
    route (``notify.slack``, ``notify.email``). The target (webhook URL, address)
    is read from the client's config when delivering."""

    kind: NoticeKind
    escalation: EscalationField


class CallAction(Payload):
    """Transfer a live call to ``target`` (E.164) or hang it up, through the
    telephony vendor's REST API (``twilio.call``). ``expires_ts`` (epoch
    seconds): after it the call is over and the action pointless."""

    kind: Literal["twilio.call"] = "twilio.call"
    call_sid: str = Field(min_length=1)
    action: Literal["transfer", "hangup"]
    target: str | None = None
    expires_ts: float | None = None

    @model_validator(mode="after")
    def _transfer_has_a_target(self) -> CallAction:
        if self.action == "transfer" and not self.target:
            raise ValueError("a transfer needs a target number")
        return self


class LeadPush(Payload):
    """A captured lead pushed to the client's vendor CRM (``crm.<provider>``):
    the lead record as the ledger holds it (:meth:`engine.tools.crm.LeadRecord.as_json`),
    with its ``crm.map``'ed ``properties``."""

    kind: CrmKind
    lead_id: str = Field(min_length=1)
    client_id: str = ""
    channel: str = ""
    session_id: str = ""
    status: str = ""
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    service: str | None = None
    start: str | None = None
    end: str | None = None
    booking_id: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, str | None]
    created_at: str | None = None
    test: bool = False

    def pushed_properties(self) -> dict[str, str]:
        """The properties to send: empty values dropped."""
        return {k: v for k, v in self.properties.items() if v}


class MessageSend(Payload):
    """A reply to send to a messaging customer, in ``parts`` (each one message
    as the vendor takes it: Twilio form parameters, Meta JSON bodies), in order.
    ``text``: the reply as plain text (a template's body variable when the
    24-hour window is closed). ``to``: E.164. The kinds are its subclasses."""

    channel: Literal["whatsapp", "sms"] = "whatsapp"
    to: Number
    parts: tuple[Mapping[str, JsonValue], ...] = Field(min_length=1)
    text: str = ""


class TwilioMessage(MessageSend):
    """``message.twilio``: WhatsApp or SMS through Twilio. ``from_`` (key
    ``from``): the sender; None: the client's configured number."""

    kind: Literal["message.twilio"] = "message.twilio"
    from_: str | None = Field(default=None, alias="from")


class MetaMessage(MessageSend):
    """``message.meta``: WhatsApp through Meta's Cloud API, from
    ``phone_number_id`` (None: the client's configured one)."""

    kind: Literal["message.meta"] = "message.meta"
    channel: Literal["whatsapp"] = "whatsapp"
    phone_number_id: str | None = None


class ReadReceipt(Payload):
    """``read.meta``: mark a customer's WhatsApp message read (Meta)."""

    kind: Literal["read.meta"] = "read.meta"
    message_id: str = Field(min_length=1)
    phone_number_id: str | None = None


class CalendarPush(Payload):
    """A booking pushed to the client's vendor calendar (``calendar.google``,
    ``calendar.calendly``), keyed by its id."""

    kind: CalendarKind
    booking_id: str = Field(min_length=1)
    start: IsoDatetime
    end: IsoDatetime
    service: str = ""
    name: str = ""


OutboxPayload = Annotated[
    EscalationNotice
    | CallAction
    | LeadPush
    | TwilioMessage
    | MetaMessage
    | ReadReceipt
    | CalendarPush,
    Field(discriminator="kind"),
]
"""Any outbox row's payload, told apart by its ``kind``."""

_ADAPTER: TypeAdapter[OutboxPayload] = TypeAdapter(OutboxPayload)
_MODELS: tuple[type[Payload], ...] = (
    EscalationNotice,
    CallAction,
    LeadPush,
    TwilioMessage,
    MetaMessage,
    ReadReceipt,
    CalendarPush,
)
_KINDS: dict[str, type[Payload]] = {
    kind: model for model in _MODELS for kind in get_args(model.model_fields["kind"].annotation)
}


def payload_kinds() -> tuple[str, ...]:
    """Every kind an outbox row can have, sorted."""
    return tuple(sorted(_KINDS))


# -- reading and writing -------------------------------------------------------------------


class PayloadError(ValueError):
    """A payload that does not parse. ``kind``: the row's; ``problem``: what is
    wrong, naming fields, never their values."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(f"payload of kind {kind!r} does not parse: {problem}")
        self.kind, self.problem = kind, problem


@dataclass(frozen=True, slots=True)
class UnreadablePayload:
    """A row's payload that does not parse (written by another version, or
    damaged): kept as it is stored (``raw``) so an operator can see it; the
    worker dead-letters the row with ``error`` (which names the kind and the
    problem, never the values)."""

    kind: str
    raw: str
    error: str

    def as_json(self) -> object:
        """The stored payload as JSON (the raw text when it is not JSON)."""
        try:
            value: object = json.loads(self.raw)
        except ValueError:
            return self.raw
        return value


def _problems(exc: ValidationError, kind: str) -> str:
    out = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [str(part) for part in error["loc"]]
        if loc and loc[0] == kind:  # the union's tag
            loc = loc[1:]
        where, msg = ".".join(loc), str(error["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {msg}" if where else msg)
    return "; ".join(out)


def parse_payload(kind: str, data: Mapping[str, Any]) -> OutboxPayload:
    """The payload of a row of ``kind`` whose JSON is ``data`` (the ``kind`` key,
    if any, is the row's). Raises :class:`PayloadError`."""
    if kind not in _KINDS:
        raise PayloadError(kind, f"no payload type has this kind (known: {', '.join(_KINDS)})")
    try:
        return _ADAPTER.validate_python({**data, "kind": kind})
    except ValidationError as exc:
        raise PayloadError(kind, _problems(exc, kind)) from None


def read_payload(kind: str, raw: str) -> OutboxPayload | UnreadablePayload:
    """The payload of a stored row; never raises (see :class:`UnreadablePayload`)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        error = PayloadError(kind, f"not valid JSON ({type(exc).__name__})")
        return UnreadablePayload(kind, raw, str(error))
    if not isinstance(data, dict):
        error = PayloadError(kind, f"a JSON {type(data).__name__}, not an object")
        return UnreadablePayload(kind, raw, str(error))
    try:
        return parse_payload(kind, data)
    except PayloadError as exc:
        return UnreadablePayload(kind, raw, str(exc))
    except Exception as exc:  # a validator's bug must not stop the worker claiming rows
        error = PayloadError(kind, f"{type(exc).__name__} while parsing it")
        return UnreadablePayload(kind, raw, str(error))


def stored_payload(payload: OutboxPayload) -> dict[str, Any]:
    """The JSON object a row stores for ``payload`` (without ``kind``: the column)."""
    return payload.model_dump(mode="json", by_alias=True, exclude={"kind"})

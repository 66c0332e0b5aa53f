"""Client configuration: one folder per client business under ``clients/``.

``clients/<client_id>/config.yaml`` is validated at start-up into the frozen
models below. The reference example is ``shared/spec/example-client/`` and the
schema accepts it as it stands. A key the schema does not know (a typo such as
``booking.slot_minute``) is left out of the models and reported as a warning
with a did-you-mean suggestion; the client still serves
(``gateway clients validate --strict`` fails on it). Keys of free-form
mappings (``crm.map``) are the client's own and never reported.

``timezone`` is required: times are local, and a silent UTC would offer
slots hours off.

Secrets are written as ``${ENV_VAR}``. An unset variable leaves that value
``None``: the feature that needs it is off for that client, and the loader
reports it as a :class:`ConfigProblem` with ``severity="warning"``; the client
still serves.

An invalid folder (bad YAML, a wrong type, an unknown timezone...) is reported
with file, key and reason and skipped; the other clients load as usual.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from rapidfuzz import fuzz, process, utils

__all__ = [
    "BookingConfig",
    "ChannelsConfig",
    "ClientConfig",
    "ClientRegistry",
    "ConfigProblem",
    "MemoryConfig",
    "Service",
    "load_client",
    "load_clients",
]

Purpose = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
"""A purpose name: ``auto`` (the router decides) or an agent the gateway
registers (``lead_capture``...); checked against the engine's registry at
start-up (:meth:`ClientConfig.unknown_purposes`)."""
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class _Frozen(BaseModel):
    # "ignore", not "forbid": an unknown key is a warning (see _unknown_keys), not a
    # validation error that would take the client down.
    model_config = ConfigDict(frozen=True, extra="ignore")


def _hhmm(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int):  # YAML 1.1 reads 09:00 unquoted as sexagesimal minutes
        return time(value // 60, value % 60)
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,2}:\d{2}", value.strip()):
        raise ValueError(f"expected a time as 'HH:MM', got {value!r}")
    hours, minutes = (int(p) for p in value.strip().split(":"))
    if hours == 24 and minutes == 0:
        return time(23, 59, 59)
    return time(hours, minutes)


HHMM = Annotated[time, BeforeValidator(_hhmm)]


class OpeningHours(_Frozen):
    """One day's opening interval, local time. ``close`` is exclusive."""

    open: HHMM
    close: HHMM


def _parse_hours(value: object) -> dict[str, OpeningHours | None]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of day -> [open, close] or 'closed'")
    result: dict[str, OpeningHours | None] = {}
    for raw_day, spec in value.items():
        day = str(raw_day).strip().lower()[:3]
        if day not in DAYS:
            raise ValueError(f"unknown day {raw_day!r}; use one of {', '.join(DAYS)}")
        if spec is None or (isinstance(spec, str) and spec.strip().lower() == "closed"):
            result[day] = None
            continue
        if not isinstance(spec, list | tuple) or len(spec) != 2:
            raise ValueError(f'{raw_day}: expected ["HH:MM", "HH:MM"] or \'closed\'')
        hours = OpeningHours(open=spec[0], close=spec[1])
        if hours.close <= hours.open:
            raise ValueError(f"{raw_day}: closing time must be after opening time")
        result[day] = hours
    return result


class Service(_Frozen):
    name: str = Field(min_length=1)
    duration_minutes: int = Field(default=60, gt=0, le=24 * 60)
    price: float | None = Field(default=None, ge=0)
    aliases: tuple[str, ...] = ()
    description: str | None = None


class TwilioCredentials(_Frozen):
    account_sid: str | None = None
    auth_token: str | None = None
    from_: str | None = Field(default=None, alias="from")


class MetaCredentials(_Frozen):
    app_secret: str | None = None
    verify_token: str | None = None
    access_token: str | None = None
    phone_number_id: str | None = None


_DEFAULT_BACKCHANNELS = (
    "mm-hm",
    "mhm",
    "mm",
    "hmm",
    "uh-huh",
    "uh huh",
    "okay",
    "ok",
    "yeah",
    "yes",
    "yep",
    "right",
    "sure",
    "i see",
    "got it",
    "alright",
    "all right",
)


class TurnTakingConfig(_Frozen):
    """``channels.phone.turn_taking``: when a caller's turn starts and ends, and barge-in.

    Durations in milliseconds unless the name says ``_s``. See
    :mod:`channels.phone.turns` for how each is used.
    """

    vad_aggressiveness: int = Field(default=2, ge=0, le=3)
    """WebRTC VAD mode: 0 (most sensitive) .. 3 (fewest false alarms on noise)."""
    min_speech_ms: int = Field(default=200, ge=20, le=2000)
    """Speech needed before a caller turn starts while the bot is silent."""
    endpoint_silence_ms: int = Field(default=500, ge=100, le=5000)
    """Silence after speech that ends the caller's turn (endpointing)."""
    pause_silence_ms: int = Field(default=200, ge=0, le=5000)
    """Silence after which the caller's words so far are decoded speculatively
    (Whisper), so the transcript is ready when the turn ends (0: never)."""
    early_end: bool = True
    """End the caller's turn at that pause, before ``endpoint_silence_ms``, when
    the speculative transcript is a complete answer to what was asked ("yes"
    to a yes/no question, a whole phone number, an email, a day and time)."""
    barge_in_onset_ms: int = Field(default=60, ge=20, le=1000)
    """Speech over the bot's audio that pauses it at once (Twilio ``clear``)."""
    barge_in_min_ms: int = Field(default=700, ge=20, le=3000)
    """Speech over the bot's audio that makes the interruption final; shorter
    speech that transcribes to a backchannel lets the bot carry on."""
    backchannel_silence_ms: int = Field(default=250, ge=60, le=2000)
    """Silence that ends a short interjection while the bot is paused."""
    backchannels: tuple[str, ...] = _DEFAULT_BACKCHANNELS
    """Short words that do not interrupt the bot ("mm-hm", "okay")."""
    silence_timeout_s: float = Field(default=8.0, gt=0, le=120)
    """Caller silence before the reprompt."""


class PhoneChannel(_Frozen):
    enabled: bool = True
    purpose: Purpose = "lead_capture"
    greeting: str | None = None
    twilio: TwilioCredentials = TwilioCredentials()
    reprompt: str = "Are you still there? How can I help you?"
    """Said when the caller stays silent for ``turn_taking.silence_timeout_s``."""
    max_reprompts: int = Field(default=2, ge=0, le=10)
    """Reprompts in a row before :attr:`goodbye` and hang-up."""
    goodbye: str = "I'll let you go for now. Feel free to call back any time. Goodbye!"
    """Said before hanging up after silence, or at :attr:`max_call_minutes`."""
    filler: tuple[str, ...] = ("One moment.", "Let me check that.")
    """Short lines said (in turn) when a reply is slower than :attr:`filler_after_ms`."""
    filler_after_ms: int = Field(default=1200, ge=100, le=10_000)
    max_call_minutes: float = Field(default=30.0, gt=0, le=240)
    """Longest call; then the bot says :attr:`goodbye` and hangs up."""
    turn_taking: TurnTakingConfig = TurnTakingConfig()


class MessageTemplate(_Frozen):
    """The approved template a WhatsApp send outside the 24-hour customer-service
    window must use: Twilio's ``content_sid`` (``HX...``), or Meta's template
    ``name`` and ``language`` (``en_US``). Its one body variable gets the text."""

    content_sid: str | None = None
    name: str | None = None
    language: str = "en_US"


class WhatsAppChannel(_Frozen):
    """``channels.whatsapp``: the Twilio sender and/or the Meta Cloud API number.

    ``burst_window_ms``: messages of one conversation sent within this window
    are answered as one turn. ``template``: what a send outside the 24-hour
    window uses (none: such a send is dead-lettered, never dropped silently).
    """

    enabled: bool = True
    purpose: Purpose = "auto"
    twilio: TwilioCredentials | None = None
    meta: MetaCredentials | None = None
    burst_window_ms: int = Field(default=1500, ge=0, le=30_000)
    template: MessageTemplate | None = None


class SmsChannel(_Frozen):
    """``channels.sms``: plain SMS to the business's number through Twilio
    Messaging (``twilio`` defaults to ``channels.phone.twilio``; ``from``: the
    number replies are sent from, default the number the customer texted)."""

    enabled: bool = True
    purpose: Purpose = "auto"
    twilio: TwilioCredentials | None = None
    burst_window_ms: int = Field(default=1500, ge=0, le=30_000)


class WebChannel(_Frozen):
    enabled: bool = True
    purpose: Purpose = "auto"
    greeting: str | None = None
    allowed_origins: tuple[str, ...] = ()
    """Origins allowed to open the chat websocket. Empty means any origin;
    ``"*"`` as an entry also means any origin."""


class ChannelsConfig(_Frozen):
    phone: PhoneChannel = PhoneChannel()
    whatsapp: WhatsAppChannel = WhatsAppChannel()
    web: WebChannel = WebChannel()
    sms: SmsChannel = SmsChannel()

    def twilio_for(self, channel: str) -> tuple[TwilioCredentials | None, str]:
        """The Twilio account of a messaging ``channel`` and the config key it
        comes from: WhatsApp ``channels.whatsapp.twilio``; SMS
        ``channels.sms.twilio`` when it names an account, else the phone
        number's ``channels.phone.twilio``."""
        if channel == "whatsapp":
            return self.whatsapp.twilio, "channels.whatsapp.twilio"
        if self.sms.twilio is not None and self.sms.twilio.account_sid:
            return self.sms.twilio, "channels.sms.twilio"
        return self.phone.twilio, "channels.phone.twilio"


class BookingRules(_Frozen):
    lead_fields: tuple[str, ...] = ("name", "phone", "email", "service", "time")
    min_notice_hours: float = Field(default=2, ge=0)
    max_days_ahead: int = Field(default=90, gt=0)

    @field_validator("lead_fields")
    @classmethod
    def _known_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {"name", "phone", "email", "service", "time", "notes"}
        unknown = [f for f in value if f not in known]
        if unknown:
            raise ValueError(f"unknown lead field(s) {unknown}; known: {sorted(known)}")
        if len(set(value)) != len(value):
            raise ValueError("lead_fields lists a field twice")
        return value


def _provider_name(value: object) -> str:
    """A provider's name as the tool registry knows it (``local``, ``google_calendar``).

    Only its shape is checked here; whether a provider of that name is
    registered is the tool registry's check (``engine.tools.ToolRegistry``),
    reported with this file and key when the gateway starts.
    """
    name = value.strip().lower() if isinstance(value, str) else ""
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,40}", name):
        raise ValueError(f"expected a provider name such as 'local', got {value!r}")
    return name


ProviderName = Annotated[str, BeforeValidator(_provider_name)]


class ApprovalConfig(_Frozen):
    """``booking.approval``: bookings a person at the business confirms first
    (``purposes/lead_capture/approval.py``). By default nothing needs approval.

    ``services``: service names that always need approval. ``within_hours``:
    a start sooner than this many hours away needs approval (0: off); while
    it is set, a start inside ``rules.min_notice_hours`` is asked for instead
    of refused. ``timeout_minutes``: how long staff have to decide (never past
    the booking's start); then ``fallback`` applies: ``decline`` (a polite
    no) or ``take_message`` (a ``callback_requested`` lead; staff call back).
    """

    services: tuple[str, ...] = ()
    within_hours: float = Field(default=0, ge=0, le=24 * 90)
    timeout_minutes: int = Field(default=60, gt=0, le=7 * 24 * 60)
    fallback: Literal["decline", "take_message"] = "take_message"

    @property
    def enabled(self) -> bool:
        return bool(self.services) or self.within_hours > 0


class GoogleCalendarBooking(_Frozen):
    """``booking.google_calendar``: the calendar (its id, ``...@group.calendar.google.com``
    or an address) shared with a service account, and that account's JSON key file
    (a path relative to the client folder, or absolute)."""

    calendar_id: str = Field(min_length=1, description="the Google Calendar id")
    service_account_file: str = Field(
        min_length=1, description="the service account's JSON key file"
    )


class CalendlyBooking(_Frozen):
    """``booking.calendly``: a personal access token (or OAuth token) and the event
    type bookings are made for (its URI ``https://api.calendly.com/event_types/...``
    or its uuid)."""

    token: str = Field(min_length=1, description="the Calendly personal access token")
    event_type: str = Field(min_length=1, description="the event type's URI or uuid")


_CALENDAR_BLOCKS: dict[str, type[_Frozen]] = {
    "google_calendar": GoogleCalendarBooking,
    "calendly": CalendlyBooking,
}


class BookingConfig(_Frozen):
    provider: ProviderName = "local"
    """The calendar: ``local`` (bookings in the gateway's database), or another
    provider registered in the gateway."""
    slot_minutes: int = Field(default=30, gt=0, le=240)
    rules: BookingRules = BookingRules()
    approval: ApprovalConfig = ApprovalConfig()
    ics_token: str | None = Field(default=None, min_length=16, max_length=200)
    """Secret of the client's iCalendar feed, ``GET /calendar/{client_id}.ics?token=``
    (at least 16 characters; usually ``${ENV_VAR}``). Unset: no feed."""
    google_calendar: GoogleCalendarBooking | None = Field(default=None, validate_default=True)
    """Required when ``provider: google_calendar``."""
    calendly: CalendlyBooking | None = Field(default=None, validate_default=True)
    """Required when ``provider: calendly``."""

    @field_validator("google_calendar", "calendly")
    @classmethod
    def _chosen_calendar(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.data.get("provider") == info.field_name:
            keys = ", ".join(
                name
                for name, f in _CALENDAR_BLOCKS[str(info.field_name)].model_fields.items()
                if f.is_required()
            )
            raise ValueError(
                f"required when booking.provider is {info.field_name!r} (keys: {keys})"
            )
        return value


class HubspotCrm(_Frozen):
    """``crm.hubspot``: a HubSpot private app's access token (scopes
    ``crm.objects.contacts.read`` and ``.write``)."""

    access_token: str = Field(min_length=1, description="the HubSpot private app access token")


class PipedriveCrm(_Frozen):
    """``crm.pipedrive``: the API token (Settings > Personal preferences > API)."""

    api_token: str = Field(min_length=1, description="the Pipedrive API token")
    company_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,63}$")
    """``acme`` for ``acme.pipedrive.com``: calls go to that host (optional)."""


class AirtableCrm(_Frozen):
    """``crm.airtable``: a personal access token (scopes ``data.records:read``,
    ``data.records:write``, ``schema.bases:read``), the base and the table."""

    token: str = Field(min_length=1, description="the Airtable personal access token")
    base_id: str = Field(pattern=r"^app[A-Za-z0-9]{3,40}$", description="the base id, app...")
    table: str = Field(min_length=1, description="the table's name or id (tbl...)")


def _webhook_secret(value: object) -> object:
    """``whsec_`` + base64 of at least 24 random bytes (the Standard Webhooks form)."""
    if not isinstance(value, str):
        return value
    raw = value.strip()
    if not raw.startswith("whsec_"):
        raise ValueError("expected a Standard Webhooks secret 'whsec_<base64>'")
    try:
        key = base64.b64decode(raw.removeprefix("whsec_") + "==", validate=False)
    except ValueError as exc:
        raise ValueError("the part after 'whsec_' is not base64") from exc
    if len(key) < 24:
        raise ValueError("the secret must hold at least 24 bytes (32 recommended)")
    return raw


class WebhookCrm(_Frozen):
    """``crm.webhook``: every lead POSTed as JSON to ``url``, signed per Standard
    Webhooks with ``secret`` (``whsec_<base64>``)."""

    url: str = Field(pattern=r"^https?://\S+$", description="the receiver's http(s) URL")
    secret: Annotated[str, BeforeValidator(_webhook_secret)] = Field(
        description="the signing secret, 'whsec_' + base64 (at least 24 bytes)"
    )


class CrmConfig(_Frozen):
    provider: ProviderName = "local"
    """Where leads are kept: ``local`` (the gateway's lead ledger), or another
    provider registered in the gateway (``hubspot``, ``pipedrive``, ``airtable``,
    ``webhook``: every lead is kept in the ledger too and pushed there through
    the outbox). The chosen vendor's block below is required."""
    map: dict[str, str] = Field(default_factory=dict)
    """Lead field -> CRM property name (e.g. ``name: full_name``)."""
    hubspot: HubspotCrm | None = Field(default=None, validate_default=True)
    pipedrive: PipedriveCrm | None = Field(default=None, validate_default=True)
    airtable: AirtableCrm | None = Field(default=None, validate_default=True)
    webhook: WebhookCrm | None = Field(default=None, validate_default=True)

    @field_validator("hubspot", "pipedrive", "airtable", "webhook")
    @classmethod
    def _chosen_block(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.data.get("provider") == info.field_name:
            keys = ", ".join(
                name
                for name, f in _BLOCK_MODELS[str(info.field_name)].model_fields.items()
                if f.is_required()
            )
            raise ValueError(f"required when crm.provider is {info.field_name!r} (keys: {keys})")
        return value


_BLOCK_MODELS: dict[str, type[_Frozen]] = {
    "hubspot": HubspotCrm,
    "pipedrive": PipedriveCrm,
    "airtable": AirtableCrm,
    "webhook": WebhookCrm,
}


class SupportConfig(_Frozen):
    knowledge_dir: str = "knowledge"
    min_confidence: float = Field(default=0.55, ge=0, le=1)


class EscalationConfig(_Frozen):
    to_slack_webhook: str | None = None
    to_email: str | None = None
    phone_transfer_number: str | None = None


class LlmPrices(_Frozen):
    """USD per million tokens, for the cost estimate in ``/metrics``."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class LlmConfig(_Frozen):
    """``llm``: which model answers (``offline``: the rule engine; ``gemini``
    with ``GEMINI_API_KEY`` set: Gemini ``model``, the offline engine as the
    fallback of every turn).

    ``first_token_s``: seconds a model call may take to its first streamed
    chunk, per channel (``default`` for the rest; 1.5 on the phone, 3
    elsewhere); ``total_s``: seconds the model may use in one turn. Past either,
    the offline engine answers that turn. ``prices``: per million tokens
    (default: the model's list price, ``engine.llm.usage``). ``tone`` and
    ``instructions``: see the fields.
    """

    provider: Literal["offline", "gemini"] = "offline"
    model: str = "gemini-2.5-flash"
    first_token_s: dict[str, float] = Field(default_factory=lambda: {"phone": 1.5, "default": 3.0})
    total_s: float = Field(10.0, gt=0, le=60)
    prices: LlmPrices | None = None
    tone: str = Field("warm, concise and professional", max_length=200)
    """How the assistant sounds, put in every agent's instructions."""
    instructions: str = Field("", max_length=4000)
    """The business's own rules for the assistant ("never discuss pricing of
    packages by phone"), put in every agent's instructions."""

    def first_token_for(self, channel: str) -> float:
        """The first-token budget of ``channel``, in seconds."""
        return self.first_token_s.get(channel, self.first_token_s.get("default", 3.0))


class SpeechProviderConfig(_Frozen):
    """``voice.stt`` / ``voice.tts``: which engine, which model or voice.

    ``phrases`` (STT only): extra words and phrases the recogniser is biased
    towards, on top of the client's service names and aliases.
    """

    provider: str = "auto"
    model: str | None = None
    voice: str | None = None
    phrases: tuple[str, ...] = ()


class VoiceConfig(_Frozen):
    stt: SpeechProviderConfig = SpeechProviderConfig()
    tts: SpeechProviderConfig = SpeechProviderConfig()


class MemoryConfig(_Frozen):
    """``memory``: recognising a returning contact (same phone number, WhatsApp
    id or widget visitor id) and how long personal data is kept.

    ``enabled``: remember contacts (name, phone, email, short summaries of
    earlier conversations; :mod:`engine.contacts`); off: nothing is
    remembered and housekeeping deletes what was. ``retention_days``: a
    contact not seen for this many days is deleted, and so are the client's
    conversation transcripts, sessions and call traces older than that.
    """

    enabled: bool = True
    retention_days: int = Field(default=365, ge=1, le=3650)


class ClientConfig(_Frozen):
    """A client business, as read from ``clients/<client_id>/config.yaml``."""

    client_id: str
    name: str
    locale: str = "en-US"
    timezone: str = Field(description="an IANA name such as Europe/Madrid")
    business_hours: Annotated[dict[str, OpeningHours | None], BeforeValidator(_parse_hours)] = (
        Field(default_factory=dict)
    )
    services: tuple[Service, ...] = ()
    channels: ChannelsConfig = ChannelsConfig()
    booking: BookingConfig = BookingConfig()
    crm: CrmConfig = CrmConfig()
    support: SupportConfig = SupportConfig()
    escalation: EscalationConfig = EscalationConfig()
    llm: LlmConfig = LlmConfig()
    voice: VoiceConfig = VoiceConfig()
    memory: MemoryConfig = MemoryConfig()
    folder: Path | None = Field(default=None, exclude=True)

    @field_validator("client_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _CLIENT_ID.match(value):
            raise ValueError("use lowercase letters, digits, '-' or '_' (max 63 chars)")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA timezone {value!r}") from exc
        return value

    @field_validator("locale")
    @classmethod
    def _valid_locale(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z]{2})?", value):
            raise ValueError(f"expected a locale like 'en-US', got {value!r}")
        return value.replace("_", "-")

    @field_validator("services")
    @classmethod
    def _unique_services(cls, value: tuple[Service, ...]) -> tuple[Service, ...]:
        names = [s.name.casefold() for s in value]
        if len(set(names)) != len(names):
            raise ValueError("two services share a name")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def region(self) -> str:
        """ISO 3166 region from the locale (``en-US`` -> ``US``), for phone parsing."""
        parts = self.locale.split("-")
        return parts[1].upper() if len(parts) > 1 else "US"

    @property
    def language(self) -> str:
        return self.locale.split("-")[0]

    def service(self, name: str) -> Service | None:
        for svc in self.services:
            if svc.name == name:
                return svc
        return None

    def unknown_purposes(self, known: tuple[str, ...]) -> list[str]:
        """``channels.<name>.purpose: value`` entries naming no purpose in ``known``
        (besides ``auto``), for a start-up warning."""
        out = []
        for name in ("phone", "whatsapp", "web", "sms"):
            purpose = getattr(self.channels, name).purpose
            if purpose != "auto" and purpose not in known:
                out.append(f"channels.{name}.purpose: {purpose}")
        return out

    def purpose_for(self, channel: str) -> str:
        chan = getattr(self.channels, channel, None)
        return str(getattr(chan, "purpose", "auto"))


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a client folder.

    ``key`` is a dotted path (``booking.rules.lead_fields``) or ``""`` for
    whole-file problems. ``severity="error"`` means the client was skipped;
    ``"warning"`` means it serves, with a feature off or an unknown key ignored.
    """

    file: str
    key: str
    reason: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{self.severity}: {where}: {self.reason}"


@dataclass
class ClientRegistry:
    """Every client that loaded, and every problem found while loading."""

    clients: dict[str, ClientConfig] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    def get(self, client_id: str) -> ClientConfig | None:
        return self.clients.get(client_id)

    @property
    def errors(self) -> list[ConfigProblem]:
        return [p for p in self.problems if p.severity == "error"]


def _expand_env(node: Any, path: str, file: str, unset: list[ConfigProblem]) -> Any:
    if isinstance(node, dict):
        return {
            k: _expand_env(v, f"{path}.{k}" if path else str(k), file, unset)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", file, unset) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        missing = [name for name in _ENV_REF.findall(node) if not os.environ.get(name)]
        if missing:
            reason = f"${{{missing[0]}}} is not set; this feature is off"
            for i, seen in enumerate(unset):
                if seen.reason == reason:  # one line per variable, naming every key
                    unset[i] = ConfigProblem(file, f"{seen.key}, {path}", reason, "warning")
                    break
            else:
                unset.append(ConfigProblem(file, path, reason, "warning"))
            return None
        return _ENV_REF.sub(lambda m: os.environ[m.group(1)], node)
    return node


def _key_of(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in {"list[...]", "tuple[...]"}:
            continue
        else:
            out += f".{part}" if out else part
    return out


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``; other unions stay as they are."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [a for a in get_args(annotation) if a is not NoneType]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_model(shape: Any) -> bool:
    return get_origin(shape) is None and isinstance(shape, type) and issubclass(shape, BaseModel)


def _file_keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The keys a config file may use for ``model``: aliases where set (``from``),
    without fields the loader fills in itself (``exclude=True``: ``folder``)."""
    return {
        info.alias or name: info for name, info in model.model_fields.items() if not info.exclude
    }


def _unknown_keys(
    model: type[BaseModel], data: dict[Any, Any], path: str, file: str
) -> list[ConfigProblem]:
    """A warning for every key in ``data`` (and below) that ``model`` does not know.

    Walks the raw YAML beside the schema, so typos are reported even when
    validation fails (``timezon`` explains a missing ``timezone``).
    """
    known = _file_keys(model)
    problems: list[ConfigProblem] = []
    for raw_key, value in data.items():
        key = str(raw_key)
        where = f"{path}.{key}" if path else key
        info = known.get(key)
        if info is None:
            problems.append(ConfigProblem(file, where, _unknown_reason(key, known), "warning"))
        else:
            problems += _unknown_below(info.annotation, value, where, file)
    return problems


def _unknown_below(annotation: Any, value: Any, path: str, file: str) -> list[ConfigProblem]:
    shape = _unwrap(annotation)
    if _is_model(shape) and isinstance(value, dict):
        return _unknown_keys(shape, value, path, file)
    origin, args = get_origin(shape), get_args(shape)
    problems: list[ConfigProblem] = []
    if origin in (tuple, list) and args and isinstance(value, list):
        for i, item in enumerate(value):
            problems += _unknown_below(args[0], item, f"{path}[{i}]", file)
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        # The mapping's own keys are free-form (crm.map) or checked by its
        # validator (business_hours days); only model values below are walked.
        for key, item in value.items():
            problems += _unknown_below(args[1], item, f"{path}.{key}", file)
    return problems


def _unknown_reason(key: str, known: dict[str, FieldInfo]) -> str:
    match = process.extractOne(
        key, list(known), scorer=fuzz.ratio, processor=utils.default_process, score_cutoff=60
    )
    if match is not None:
        return f"unknown key; did you mean {match[0]!r}?"
    return f"unknown key; expected one of: {', '.join(known)}"


def _required_reason(loc: tuple[int | str, ...]) -> str:
    """``required``, with the field's description when it has one (``timezone``)."""
    annotation: Any = ClientConfig
    info: FieldInfo | None = None
    for part in loc:
        shape = _unwrap(annotation)
        if isinstance(part, int) and get_origin(shape) in (tuple, list):
            annotation = get_args(shape)[0]
        elif isinstance(part, str) and _is_model(shape) and part in _file_keys(shape):
            info = _file_keys(shape)[part]
            annotation = info.annotation
        else:
            return "required"
    return f"required: {info.description}" if info and info.description else "required"


def load_client(folder: Path) -> tuple[ClientConfig | None, list[ConfigProblem]]:
    """Load one client folder. Returns the config (or None) and its problems."""
    file = folder / "config.yaml"
    shown = str(file)
    if not file.is_file():
        return None, [ConfigProblem(shown, "", "missing config.yaml")]
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        return None, [ConfigProblem(shown, "", f"invalid YAML{where}: {reason}")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigProblem(shown, "", f"cannot read file: {exc}")]
    if not isinstance(raw, dict):
        return None, [ConfigProblem(shown, "", "expected a mapping at the top level")]
    problems: list[ConfigProblem] = []
    data = _expand_env(raw, "", shown, problems)
    problems += _unknown_keys(ClientConfig, data, "", shown)
    data.setdefault("client_id", folder.name)
    try:
        config = ClientConfig.model_validate({**data, "folder": folder})
    except ValidationError as exc:
        for err in exc.errors():
            key = _key_of(err["loc"])
            if err["type"] == "missing":
                msg = _required_reason(err["loc"])
            else:
                msg = err["msg"].removeprefix("Value error, ")
            problems.append(ConfigProblem(shown, key, msg))
        return None, problems
    if config.client_id != folder.name:
        problems.append(
            ConfigProblem(
                shown, "client_id", f"{config.client_id!r} differs from folder name {folder.name!r}"
            )
        )
        return None, problems
    if not config.services and "service" in config.booking.rules.lead_fields:
        problems.append(
            ConfigProblem(shown, "services", "lead_fields asks for a service but none is listed")
        )
        return None, problems
    names = {svc.name.casefold() for svc in config.services}
    unknown = [n for n in config.booking.approval.services if n.casefold() not in names]
    if unknown:  # an approval rule that matches nothing would book without asking
        problems.append(
            ConfigProblem(
                shown, "booking.approval.services", f"no service named {', '.join(unknown)}"
            )
        )
        return None, problems
    knowledge = folder / config.support.knowledge_dir
    if not knowledge.is_dir():
        problems.append(
            ConfigProblem(
                shown,
                "support.knowledge_dir",
                f"folder {knowledge} not found; support has no knowledge",
                "warning",
            )
        )
    return config, problems


def load_clients(clients_dir: Path) -> ClientRegistry:
    """Load every ``clients_dir/*/config.yaml``; broken folders are reported and skipped."""
    registry = ClientRegistry()
    if not clients_dir.is_dir():
        registry.problems.append(ConfigProblem(str(clients_dir), "", "clients folder not found"))
        return registry
    for folder in sorted(
        p for p in clients_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    ):
        config, problems = load_client(folder)
        registry.problems.extend(problems)
        if config is not None:
            registry.clients[config.client_id] = config
    return registry

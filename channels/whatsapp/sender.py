"""Outbound WhatsApp and SMS: the outbox deliverers that send what a turn enqueued.

The turn renders the reply with the codecs (:mod:`channels.whatsapp.twilio_codec`,
:mod:`channels.whatsapp.meta_codec`) and enqueues one outbox row per reply; the
:class:`~engine.outbox.OutboxWorker` hands it to one of these. Kinds and payloads
(:mod:`engine.payloads`: :class:`~engine.payloads.TwilioMessage`,
:class:`~engine.payloads.MetaMessage`, :class:`~engine.payloads.ReadReceipt`;
stored as below; a row whose payload does not parse is dead-lettered by the
worker and never reaches these):

``message.twilio``
    ``{"channel": "whatsapp"|"sms", "to": "+E164", "from"?: "whatsapp:+E164"|"+E164",
    "parts": [{form params}, ...], "text": "<plain text>"}``. Each part is POSTed
    in order to Twilio's Messages API (``POST {TWILIO_BASE_URL}/2010-04-01/
    Accounts/{AccountSid}/Messages.json``, form-encoded, basic auth; answer
    ``201`` with the Message resource's ``sid``), with ``To``/``From`` filled
    in when a part lacks them (``from`` absent: ``channels.whatsapp.twilio.from``,
    for SMS ``channels.sms.twilio.from`` or ``channels.phone.twilio.from``) and
    ``StatusCallback={GATEWAY_PUBLIC_URL}/twilio/status/{client_id}`` when a
    public URL is set. Credentials: ``channels.whatsapp.twilio``; SMS
    ``channels.sms.twilio``, else ``channels.phone.twilio``.
``message.meta``
    ``{"to": "+E164", "phone_number_id"?: "...", "parts": [{json body}, ...],
    "text": "<plain text>"}``. Each part is POSTed to the Cloud API
    (``POST {META_GRAPH_BASE_URL}/v21.0/{phone_number_id}/messages``,
    ``Authorization: Bearer {channels.whatsapp.meta.access_token}``; answer
    ``{"messages": [{"id": "wamid..."}]}``).
``read.meta``
    ``{"message_id": "wamid...", "phone_number_id"?: "..."}`` (older rows hold
    Meta's whole request body; its other keys are ignored): mark a customer's
    message read and show the typing indicator (only while it is fresh: Meta
    drops the indicator after 25 s). Best effort: one attempt; a failure to
    send is logged and the row settles as delivered, never dead-lettered.

**Exactly which parts were sent.** Each accepted part is recorded in
``outbound_messages`` (:mod:`channels.whatsapp.statuses`) as ``queued``
with ``outbox_key = "<row key>#<part index>"`` (``#template`` for a template),
and a retry skips the parts found there: a multi-part reply whose third part
failed resends only the third. A crash between the provider's answer and that
record resends the part (at-least-once: neither API takes an idempotency key).

**The 24-hour customer-service window** (WhatsApp only; SMS has none). Free-form
messages reach a WhatsApp user only within 24 hours of their last message
(``messaging_threads.last_inbound_ts``). Outside it, or when Meta answers error
``131047`` ("re-engagement message") or Twilio ``63016``, the reply goes as the
client's approved template ``channels.whatsapp.template`` (Twilio
``content_sid``; Meta ``name`` + ``language``) with the reply's ``text`` as its
body variable. Without a template the row fails non-retryably ("outside the
24-hour window and no template configured") and is dead-lettered: visible in
``gateway outbox list``, never dropped silently.

**Errors**, mapped here into :class:`SendError` (a
:class:`~engine.errors.ToolError`): ``429`` (Twilio ``20429``), Meta's
throughput codes (``4``, ``80007``, ``130429``, ``131056`` pair rate limit,
retried after 6 s, Meta's documented one message per 6 s to one user) and
its transient codes (``1``, ``2``, ``131000``, ``131016``, ``133004``),
``5xx``, timeouts and network errors are retryable, with the answer's
``Retry-After`` honoured by the outbox; ``401``/``403`` and other ``4xx`` are
not, and the reason names the HTTP status, the vendor's code and what to
check. Reasons and logs never carry message text, and phone numbers in a
vendor's error message are masked.

**Pacing.** :data:`RATE_PER_S` deliveries per second per kind per replica (the
outbox's token bucket): well under Meta's default Cloud API throughput of 80
messages per second per business number and Twilio's per-account API
concurrency, so several replicas stay under them too; per-recipient pacing is
Meta's (``131056``, retried).

Sources: Twilio "Message resource" (``/docs/messaging/api/message-resource``)
and error dictionary; Meta "WhatsApp Cloud API: messages", "Typing indicators",
"Error codes" (developers.facebook.com/docs/whatsapp/cloud-api).
"""

from __future__ import annotations

import logging
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import sqlalchemy as sa

from channels.whatsapp.models import MessagingChannel, Provider
from channels.whatsapp.statuses import record_sent, sent_keys
from engine.config import ClientConfig, ClientRegistry, MessageTemplate, TwilioCredentials
from engine.db.database import Database
from engine.db.schema import MESSAGING_THREADS
from engine.errors import StoreError, ToolError
from engine.logs import describe
from engine.outbox import Deliverer, OutboxRow
from engine.payloads import MessageSend, MetaMessage, ReadReceipt, TwilioMessage
from providers.http import retry_after_s

__all__ = [
    "DEFAULT_META_BASE_URL",
    "DEFAULT_TWILIO_BASE_URL",
    "META_API_VERSION",
    "RATE_PER_S",
    "WINDOW_S",
    "MetaMessageDeliverer",
    "MetaReadDeliverer",
    "SendError",
    "TwilioMessageDeliverer",
    "WindowClosedError",
    "messaging_deliverers",
]

log = logging.getLogger("channels.whatsapp.sender")

DEFAULT_TWILIO_BASE_URL = "https://api.twilio.com"
DEFAULT_META_BASE_URL = "https://graph.facebook.com"
META_API_VERSION = "v21.0"

RATE_PER_S = 20.0
"""Deliveries per second of each kind on one replica (see the module docstring)."""

WINDOW_S = 24 * 3600.0
"""WhatsApp's customer-service window, in seconds after the customer's last message."""
WINDOW_MARGIN_S = 60.0
"""A send this close to the window's end already uses the template (it may land after)."""

TYPING_FRESH_S = 20.0
"""A ``read.meta`` row older than this (seconds) marks read without the typing
indicator: Meta hides the indicator after 25 s, and a late one would mislead."""

TIMEOUT_S = 10.0
"""Per HTTP request to a provider (connect + send + answer), seconds."""

PAIR_RATE_LIMIT_RETRY_S = 6.0
"""Meta ``131056``: one message per 6 s from a business number to one user."""

_META_RETRYABLE = {1, 2, 4, 80007, 130429, 131000, 131016, 131056, 133004}
_META_WINDOW = 131047
_TWILIO_WINDOW = 63016
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_NUMBER = re.compile(r"\+?\d[\d\s().-]{5,}\d")


class SendError(ToolError):
    """A send to Twilio or Meta failed.

    ``http_status``: None for a transport error (refused, timed out);
    ``code``: the vendor's error code when its body had one;
    ``retry_after_s``: seconds, honoured by the outbox.
    """

    def __init__(
        self,
        provider: Provider,
        reason: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(provider, reason, retryable=retryable)
        self.provider = provider
        self.http_status = http_status
        self.code = code
        self.retry_after_s = retry_after_s


class WindowClosedError(SendError):
    """The provider refused a free-form message: the 24-hour window is closed
    (Meta ``131047``, Twilio ``63016``). The sender falls back to the template."""


def _client(registry: ClientRegistry, row: OutboxRow) -> ClientConfig:
    client = registry.get(row.client_id)
    if client is None:
        raise ToolError(row.kind, f"client {row.client_id!r} is not loaded", retryable=False)
    return client


def _malformed(row: OutboxRow, what: str) -> ToolError:
    return ToolError(row.kind, f"outbox row #{row.id}: payload {what}", retryable=False)


def _bare(number: str) -> str:
    return number.removeprefix("whatsapp:")


def _mask(text: str) -> str:
    """A vendor's error message with phone numbers masked (Twilio quotes the ``To``)."""
    return _NUMBER.sub("<number>", text)[:300]


class _MessageDeliverer(Deliverer):
    """The shared flow of ``message.*``: window check, parts in order with their
    ledger, template fallback. Subclasses post one part or one template."""

    provider: Provider
    payload_type: ClassVar[type[MessageSend]]
    rate_per_s = RATE_PER_S

    def __init__(
        self,
        registry: ClientRegistry,
        http: httpx.AsyncClient,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.http = http
        self.db = db
        self.clock = clock

    async def deliver(self, row: OutboxRow) -> None:
        client = _client(self.registry, row)
        job = row.payload_as(self.payload_type)
        try:
            await self._deliver(client, row, job)
        except StoreError as exc:
            # Bookkeeping failed, not the vendor: retry (a sent part may go twice).
            raise ToolError(row.kind, f"recording the send failed: {exc}", retryable=True) from exc

    async def _deliver(self, client: ClientConfig, row: OutboxRow, job: MessageSend) -> None:
        keys = [f"{row.key}#{i}" for i in range(len(job.parts))]
        template_key = f"{row.key}#template"
        done = await sent_keys(self.db, [*keys, template_key])
        if template_key in done or done.issuperset(keys):
            return  # a redelivery of a row already sent (its delivered mark was lost)
        if job.channel == "whatsapp" and not await self._window_open(row.client_id, job.to):
            await self._template(client, row, job, template_key, "the 24-hour window is closed")
            return
        for index, (part, key) in enumerate(zip(job.parts, keys, strict=True)):
            if key in done:
                continue
            what = f"part {index + 1}/{len(job.parts)} of outbox #{row.id}"
            try:
                message_id = await self._send_part(client, row, job, part, what)
            except WindowClosedError:
                await self._template(
                    client, row, job, template_key, "the provider reports the window closed"
                )
                return
            await self._record(row, job, message_id, key)
            log.info("%s: sent %s as %s", row.kind, what, message_id)

    async def _window_open(self, client_id: str, to: str) -> bool:
        t = MESSAGING_THREADS.c
        query = sa.select(t.last_inbound_ts).where(
            t.client_id == client_id, t.channel == "whatsapp", t.sender == to
        )
        async with self.db.read() as conn:
            last = (await conn.execute(query)).scalar_one_or_none()
        return last is not None and self.clock() - float(last) < WINDOW_S - WINDOW_MARGIN_S

    async def _template(
        self, client: ClientConfig, row: OutboxRow, job: MessageSend, key: str, why: str
    ) -> None:
        template = client.channels.whatsapp.template
        if template is None:
            raise SendError(
                self.provider,
                f"outbox #{row.id}: outside the 24-hour window and no template configured "
                f"({why}); set channels.whatsapp.template to reach this customer, then "
                "`gateway outbox retry`",
                retryable=False,
            )
        if not job.text.strip():
            raise _malformed(row, "has no text for the template's body variable")
        what = f"template for outbox #{row.id}"
        message_id = await self._send_template(client, row, job, template, what)
        await self._record(row, job, message_id, key)
        log.info("%s: %s sent as %s (%s)", row.kind, what, message_id, why)

    async def _record(self, row: OutboxRow, job: MessageSend, message_id: str, key: str) -> None:
        await record_sent(
            self.db,
            provider=self.provider,
            message_id=message_id,
            client_id=row.client_id,
            channel=job.channel,
            recipient=job.to,
            outbox_key=key,
            ts=self.clock(),
        )

    @abstractmethod
    async def _send_part(
        self,
        client: ClientConfig,
        row: OutboxRow,
        job: MessageSend,
        part: Mapping[str, Any],
        what: str,
    ) -> str:
        """POST one part; the provider's message id."""

    @abstractmethod
    async def _send_template(
        self,
        client: ClientConfig,
        row: OutboxRow,
        job: MessageSend,
        template: MessageTemplate,
        what: str,
    ) -> str:
        """POST the template carrying ``job.text``; the provider's message id."""


# -- Twilio ------------------------------------------------------------------------------


class TwilioMessageDeliverer(_MessageDeliverer):
    """``message.twilio``: WhatsApp or SMS through Twilio's Messages API."""

    kind = "message.twilio"
    provider: Provider = "twilio"
    payload_type = TwilioMessage

    def __init__(
        self,
        registry: ClientRegistry,
        http: httpx.AsyncClient,
        db: Database,
        *,
        base_url: str | None = None,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(registry, http, db, clock=clock)
        self.base_url = (base_url or DEFAULT_TWILIO_BASE_URL).rstrip("/")
        self.public_url = public_url.rstrip("/") if public_url else None

    def _account(self, client: ClientConfig, job: MessageSend) -> tuple[TwilioCredentials, str]:
        """The credentials and the config key they came from."""
        creds, key = client.channels.twilio_for(job.channel)
        return creds or TwilioCredentials(), key

    def _sender(self, client: ClientConfig, row: OutboxRow, job: MessageSend) -> str:
        sender = (job.from_ if isinstance(job, TwilioMessage) else None) or None
        if sender is None and job.channel == "whatsapp":
            sender = (client.channels.whatsapp.twilio or TwilioCredentials()).from_
        elif sender is None:
            sms = client.channels.sms.twilio
            sender = (sms.from_ if sms is not None else None) or client.channels.phone.twilio.from_
        if not sender:
            key = "whatsapp" if job.channel == "whatsapp" else "sms"
            raise SendError(
                "twilio",
                f"outbox #{row.id}: no sender number: set channels.{key}.twilio.from",
                retryable=False,
            )
        return sender

    def _form(
        self, client: ClientConfig, row: OutboxRow, job: MessageSend, part: Mapping[str, Any]
    ) -> dict[str, str]:
        form = {str(k): str(v) for k, v in part.items() if v is not None}
        form.setdefault("To", _address(job.channel, job.to))
        if "From" not in form and "MessagingServiceSid" not in form:
            sender = self._sender(client, row, job)
            if _SERVICE_SID.fullmatch(sender):
                form["MessagingServiceSid"] = sender
            else:
                form["From"] = _address(job.channel, sender)
        if self.public_url:
            form.setdefault("StatusCallback", f"{self.public_url}/twilio/status/{row.client_id}")
        return form

    async def _send_part(
        self,
        client: ClientConfig,
        row: OutboxRow,
        job: MessageSend,
        part: Mapping[str, Any],
        what: str,
    ) -> str:
        return await self._post(client, job, self._form(client, row, job, part), what)

    async def _send_template(
        self,
        client: ClientConfig,
        row: OutboxRow,
        job: MessageSend,
        template: MessageTemplate,
        what: str,
    ) -> str:
        from channels.whatsapp.twilio_codec import twilio_template_params

        if not template.content_sid:
            raise SendError(
                "twilio",
                f"outbox #{row.id}: outside the 24-hour window and no template configured "
                "for Twilio: set channels.whatsapp.template.content_sid (HX...)",
                retryable=False,
            )
        try:
            params = twilio_template_params(
                job.to, self._sender(client, row, job), template.content_sid, job.text
            )
        except ValueError as exc:  # the codec's CodecError: names fields, never values
            raise SendError(
                "twilio", f"{what}: cannot build the template: {exc}", retryable=False
            ) from exc
        return await self._post(client, job, self._form(client, row, job, params), what)

    async def _post(
        self, client: ClientConfig, job: MessageSend, form: dict[str, str], what: str
    ) -> str:
        creds, creds_key = self._account(client, job)
        if not creds.account_sid or not creds.auth_token:
            missing = "account_sid" if not creds.account_sid else "auth_token"
            raise SendError(
                "twilio",
                f"{what}: {creds_key}.{missing} is not set (its environment variable is unset)",
                retryable=False,
            )
        url = (
            f"{self.base_url}/2010-04-01/Accounts/{quote(creds.account_sid, safe='')}/Messages.json"
        )
        try:
            response = await self.http.post(
                url,
                data=form,
                auth=httpx.BasicAuth(creds.account_sid, creds.auth_token),
                headers={"Accept": "application/json"},
                timeout=TIMEOUT_S,
            )
        except httpx.TransportError as exc:
            raise SendError(
                "twilio",
                f"{what}: cannot reach Twilio at {self.base_url} ({type(exc).__name__})",
                retryable=True,
            ) from exc
        if response.is_success:
            sid = _json_field(response, "sid")
            if sid is None:
                raise SendError(
                    "twilio",
                    f"{what}: Twilio answered HTTP {response.status_code} without a message "
                    "sid; the message may have been sent, so it is not sent again",
                    retryable=False,
                    http_status=response.status_code,
                )
            return sid
        raise _twilio_error(what, response, creds_key)


def _address(channel: MessagingChannel, number: str) -> str:
    """``whatsapp:+E164`` for WhatsApp (Twilio's channel address), ``+E164`` for SMS."""
    bare = _bare(number)
    return f"whatsapp:{bare}" if channel == "whatsapp" else bare


def _json_field(response: httpx.Response, name: str) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def _twilio_error(what: str, response: httpx.Response, creds_key: str) -> SendError:
    """Twilio's error answer (JSON ``code``/``message``/``more_info``/``status``) -> SendError."""
    status = response.status_code
    code: int | None = None
    message = more_info = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), int) else None
        message = str(body.get("message") or "")
        more_info = str(body.get("more_info") or "")
    reason = f"{what} failed: HTTP {status}, Twilio error {code if code is not None else '?'}"
    if message:
        reason += f": {_mask(message)}"
    if more_info:
        reason += f" (see {more_info})"
    if status == 401:
        reason += f"; check {creds_key}.account_sid / auth_token"
    elif code == 21610:
        reason += "; the recipient has opted out (STOP)"
    retryable = status == 429 or status >= 500
    error_type = WindowClosedError if code == _TWILIO_WINDOW else SendError
    return error_type(
        "twilio",
        reason,
        retryable=retryable,
        http_status=status,
        code=code,
        retry_after_s=retry_after_s(response) if retryable else None,
    )


# -- Meta --------------------------------------------------------------------------------


class _MetaAccount:
    """A client's Cloud API number: posts JSON to ``/{phone_number_id}/messages``."""

    def __init__(
        self, http: httpx.AsyncClient, base_url: str, token: str, phone_number_id: str
    ) -> None:
        self.http = http
        self.url = f"{base_url}/{META_API_VERSION}/{quote(phone_number_id, safe='')}/messages"
        self.token = token
        self.base_url = base_url

    @classmethod
    def of(
        cls,
        http: httpx.AsyncClient,
        base_url: str,
        client: ClientConfig,
        row: OutboxRow,
        phone_number_id: str | None,
    ) -> _MetaAccount:
        """``phone_number_id``: the row's (None: the client's configured one)."""
        meta = client.channels.whatsapp.meta
        number_id = phone_number_id or (meta.phone_number_id if meta else None)
        token = meta.access_token if meta else None
        if not token or not number_id:
            missing = "access_token" if not token else "phone_number_id"
            raise SendError(
                "meta",
                f"outbox #{row.id}: channels.whatsapp.meta.{missing} is not set "
                "(or its environment variable is unset)",
                retryable=False,
            )
        return cls(http, base_url, token, number_id)

    async def post(self, body: Mapping[str, Any], what: str) -> httpx.Response:
        try:
            response = await self.http.post(
                self.url,
                json=dict(body),
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=TIMEOUT_S,
            )
        except httpx.TransportError as exc:
            raise SendError(
                "meta",
                f"{what}: cannot reach the Graph API at {self.base_url} ({type(exc).__name__})",
                retryable=True,
            ) from exc
        if not response.is_success:
            raise _meta_error(what, response)
        return response

    async def send(self, body: Mapping[str, Any], what: str) -> str:
        response = await self.post(body, what)
        try:
            wamid = response.json()["messages"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError):
            wamid = None
        if not isinstance(wamid, str) or not wamid:
            raise SendError(
                "meta",
                f"{what}: the Graph API answered HTTP {response.status_code} without "
                "messages[0].id; the message may have been sent, so it is not sent again",
                retryable=False,
                http_status=response.status_code,
            )
        return wamid


def _meta_error(what: str, response: httpx.Response) -> SendError:
    """The Graph API's error answer (``{"error": {"message", "type", "code",
    "error_subcode", "fbtrace_id"}}``) -> SendError."""
    status = response.status_code
    code: int | None = None
    message = trace = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), int) else None
        message = str(error.get("message") or "")
        trace = str(error.get("fbtrace_id") or "")
    reason = f"{what} failed: HTTP {status}, Meta error {code if code is not None else '?'}"
    if message:
        reason += f": {_mask(message)}"
    if trace:
        reason += f" (fbtrace_id {trace})"
    if status == 401 or code == 190:
        reason += "; check channels.whatsapp.meta.access_token (expired or revoked?)"
    elif status == 403 or code in (10, 200):
        reason += "; the access token lacks whatsapp_business_messaging permission"
    retryable = status == 429 or status >= 500 or code in _META_RETRYABLE
    if status == 401 or code == 190:
        retryable = False
    after = retry_after_s(response) if retryable else None
    if after is None and code == 131056:
        after = PAIR_RATE_LIMIT_RETRY_S
    error_type = WindowClosedError if code == _META_WINDOW else SendError
    return error_type(
        "meta",
        reason,
        retryable=retryable and error_type is SendError,
        http_status=status,
        code=code,
        retry_after_s=after,
    )


class MetaMessageDeliverer(_MessageDeliverer):
    """``message.meta``: WhatsApp through Meta's Cloud API."""

    kind = "message.meta"
    provider: Provider = "meta"
    payload_type = MetaMessage

    def __init__(
        self,
        registry: ClientRegistry,
        http: httpx.AsyncClient,
        db: Database,
        *,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(registry, http, db, clock=clock)
        self.base_url = (base_url or DEFAULT_META_BASE_URL).rstrip("/")

    async def _send_part(
        self,
        client: ClientConfig,
        row: OutboxRow,
        job: MessageSend,
        part: Mapping[str, Any],
        what: str,
    ) -> str:
        return await self._meta_account(client, row, job).send(part, what)

    def _meta_account(self, client: ClientConfig, row: OutboxRow, job: MessageSend) -> _MetaAccount:
        number_id = job.phone_number_id if isinstance(job, MetaMessage) else None
        return _MetaAccount.of(self.http, self.base_url, client, row, number_id)

    async def _send_template(
        self,
        client: ClientConfig,
        row: OutboxRow,
        job: MessageSend,
        template: MessageTemplate,
        what: str,
    ) -> str:
        from channels.whatsapp.meta_codec import meta_template_payload

        if not template.name:
            raise SendError(
                "meta",
                f"outbox #{row.id}: outside the 24-hour window and no template configured "
                "for Meta: set channels.whatsapp.template.name (and language)",
                retryable=False,
            )
        try:
            body = meta_template_payload(job.to, template.name, template.language, job.text)
        except ValueError as exc:  # the codec's error: names fields, never values
            raise SendError(
                "meta", f"{what}: cannot build the template: {exc}", retryable=False
            ) from exc
        return await self._meta_account(client, row, job).send(body, what)


class MetaReadDeliverer(Deliverer):
    """``read.meta``: mark a customer's message read (+ typing indicator). Best
    effort: any failure is logged and the row settles, never retried."""

    kind = "read.meta"
    rate_per_s = RATE_PER_S

    def __init__(
        self,
        registry: ClientRegistry,
        http: httpx.AsyncClient,
        *,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.http = http
        self.base_url = (base_url or DEFAULT_META_BASE_URL).rstrip("/")
        self.clock = clock

    async def deliver(self, row: OutboxRow) -> None:
        try:
            await self._deliver(row)
        except ToolError as exc:
            log.warning("read.meta: outbox #%d dropped (best effort): %s", row.id, exc)
        except Exception as exc:
            log.error("read.meta: outbox #%d dropped after %s", row.id, describe(exc))

    async def _deliver(self, row: OutboxRow) -> None:
        from channels.whatsapp.meta_codec import meta_read_payload

        receipt = row.payload_as(ReadReceipt)
        client = _client(self.registry, row)
        typing = self.clock() - row.created_ts <= TYPING_FRESH_S
        account = _MetaAccount.of(self.http, self.base_url, client, row, receipt.phone_number_id)
        await account.post(
            meta_read_payload(receipt.message_id, typing=typing), f"read.meta #{row.id}"
        )


def messaging_deliverers(
    registry: ClientRegistry,
    http: httpx.AsyncClient,
    db: Database,
    *,
    twilio_base_url: str | None = None,
    meta_base_url: str | None = None,
    public_url: str | None = None,
) -> list[Deliverer]:
    """The three messaging deliverers, for :func:`gateway.deliveries.deliverers`."""
    return [
        TwilioMessageDeliverer(registry, http, db, base_url=twilio_base_url, public_url=public_url),
        MetaMessageDeliverer(registry, http, db, base_url=meta_base_url),
        MetaReadDeliverer(registry, http, base_url=meta_base_url),
    ]

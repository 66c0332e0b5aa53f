"""The outbox's deliverers: one per kind of side effect, wired here (the composition root).

Kinds today:

``notify.slack``
    An escalation to the client's ``escalation.to_slack_webhook`` (Slack
    incoming webhook, JSON with blocks). Rate: 1 per second per replica
    (Slack's documented webhook limit).
``notify.email``
    An escalation emailed to ``escalation.to_email`` through
    ``GATEWAY_SMTP_URL``; the ``Message-ID`` is derived from the escalation id,
    so a redelivery is recognisably the same message.
``message.twilio``, ``message.meta``, ``read.meta``
    WhatsApp and SMS replies, and read receipts
    (:mod:`channels.whatsapp.sender`; 20 per second per kind).
``crm.hubspot``, ``crm.pipedrive``, ``crm.airtable``, ``crm.webhook``
    A captured lead pushed to the client's ``crm.provider`` (one row per lead,
    key ``crm:<lead id>``), with the vendor's own idempotency
    (:mod:`providers.crm`; base URLs ``HUBSPOT_BASE_URL``, ``PIPEDRIVE_BASE_URL``,
    ``AIRTABLE_BASE_URL``).
``calendar.google``, ``calendar.calendly``
    A booking pushed to the client's Google Calendar (a deterministic event id)
    or Calendly (after looking for the same invitee's event), key
    ``calendar:<booking id>``; a slot taken there meanwhile marks the booking
    ``conflict`` and notifies the business (:mod:`providers.calendars`).
``twilio.call``
    A live call update (``transfer`` to a number, ``hangup``) through
    Twilio's REST API with the client's credentials. Pointless once the call
    is over: a row past its ``expires_ts`` goes dead instead of being sent.

The target (webhook URL, address, credentials) is read from the client's
config at delivery time, so fixing a config and retrying a dead row works.
Each deliverer takes its row's payload already parsed (:mod:`engine.payloads`),
with ``row.payload_as(...)``.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import httpx

import providers.crm
from engine.config import ClientConfig, ClientRegistry
from engine.db.database import Database
from engine.errors import ToolError
from engine.outbox import Deliverer, OutboxRow
from engine.payloads import CallAction, EscalationNotice
from engine.tools.notify import Escalation
from providers.notify.email import EmailNotifier
from providers.notify.slack import SlackNotifier
from providers.urls import VendorUrls

__all__ = ["EmailDeliverer", "SlackDeliverer", "TwilioCallDeliverer", "deliverers"]


def _client(registry: ClientRegistry, row: OutboxRow) -> ClientConfig:
    client = registry.get(row.client_id)
    if client is None:
        raise ToolError(row.kind, f"client {row.client_id!r} is not loaded", retryable=False)
    return client


def _escalation(row: OutboxRow) -> Escalation:
    return row.payload_as(EscalationNotice).escalation


class SlackDeliverer(Deliverer):
    kind = "notify.slack"
    rate_per_s = 1.0

    def __init__(
        self, registry: ClientRegistry, http: httpx.AsyncClient, base_url: str | None = None
    ) -> None:
        self.registry = registry
        self.notifier = SlackNotifier(http)
        self.base_url = base_url

    def _url(self, url: str) -> str:
        if not self.base_url:
            return url
        base, parts = urlsplit(self.base_url), urlsplit(url)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))

    async def deliver(self, row: OutboxRow) -> None:
        client = _client(self.registry, row)
        url = client.escalation.to_slack_webhook
        if not url:
            raise ToolError(
                "slack", "escalation.to_slack_webhook is not set for this client", retryable=False
            )
        await self.notifier.send(self._url(url), _escalation(row))


class EmailDeliverer(Deliverer):
    kind = "notify.email"
    rate_per_s = 2.0

    def __init__(self, registry: ClientRegistry, notifier: EmailNotifier | None) -> None:
        self.registry = registry
        self.notifier = notifier

    async def deliver(self, row: OutboxRow) -> None:
        client = _client(self.registry, row)
        to_addr = client.escalation.to_email
        if not to_addr:
            raise ToolError("email", "escalation.to_email is not set for this client")
        if self.notifier is None:
            # Retryable: setting GATEWAY_SMTP_URL and restarting delivers it.
            raise ToolError("email", "GATEWAY_SMTP_URL is not set", retryable=True)
        await self.notifier.send(to_addr, _escalation(row))


class TwilioCallDeliverer(Deliverer):
    """Payload: :class:`~engine.payloads.CallAction`."""

    kind = "twilio.call"

    def __init__(
        self, registry: ClientRegistry, http: httpx.AsyncClient, base_url: str | None
    ) -> None:
        self.registry = registry
        self.http = http
        self.base_url = base_url

    async def deliver(self, row: OutboxRow) -> None:
        from channels.phone.rest import TwilioCalls

        action = row.payload_as(CallAction)
        client = _client(self.registry, row)
        if action.expires_ts is not None and time.time() > action.expires_ts:
            raise ToolError("twilio", "the call action expired before it could be delivered")
        calls = TwilioCalls.for_client(self.http, client, base_url=self.base_url)
        if action.action == "transfer":
            await calls.transfer(action.call_sid, action.target or "")
        else:
            await calls.hangup(action.call_sid)


def deliverers(
    registry: ClientRegistry,
    http: httpx.AsyncClient,
    *,
    smtp: EmailNotifier | None,
    slack_base_url: str | None,
    twilio_base_url: str | None,
    db: Database | None = None,
    meta_base_url: str | None = None,
    public_url: str | None = None,
    vendor_urls: VendorUrls | None = None,
) -> list[Deliverer]:
    """Every kind's deliverer. ``db``: the messaging kinds (``message.twilio``,
    ``message.meta``, ``read.meta``; :mod:`channels.whatsapp.sender`) record what
    they sent there, so they are wired only with it. ``vendor_urls``: the CRM and
    calendar vendors' base URLs (default: the vendors' own)."""
    urls = vendor_urls or VendorUrls()
    out: list[Deliverer] = [
        SlackDeliverer(registry, http, slack_base_url),
        EmailDeliverer(registry, smtp),
        TwilioCallDeliverer(registry, http, twilio_base_url),
        *providers.crm.crm_deliverers(registry, http, urls),
    ]
    if db is not None:
        from channels.whatsapp.sender import messaging_deliverers

        out += messaging_deliverers(
            registry,
            http,
            db,
            twilio_base_url=twilio_base_url,
            meta_base_url=meta_base_url,
            public_url=public_url,
        )
        # Vendor calendar pushes (calendar.google, calendar.calendly).
        from providers.calendars import Endpoints, calendar_deliverers

        out += calendar_deliverers(registry, http, db, Endpoints.of_urls(urls))
    return out

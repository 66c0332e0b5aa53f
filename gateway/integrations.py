"""The vendor providers, listed: the client tools they plug into, and what
``gateway integrations check`` runs, one credentials-and-reachability check per
configured vendor provider (CRM, calendar).

A check takes the client, an HTTP client and the vendors' base URLs, and
returns the problems it found as readable lines ("HubSpot answered 401: the
access token is invalid or expired (crm.hubspot.access_token in
clients/spa/config.yaml)"). An empty list means the provider answered and the
credentials work. A check never sends a lead or books anything: it reads (an
account, a calendar, a table's fields) or asks a dry-run endpoint.

    problems = await run_checks(client, http, vendor_urls(settings))   # [(kind, name, [lines])]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import httpx

from engine.config import ClientConfig
from engine.tools import LeadLedger, LocalCalendar, ToolRegistry, embedded_tools
from gateway.settings import Settings
from providers.calendars import (
    Endpoints,
    check_calendly,
    check_google_calendar,
    register_calendars,
)
from providers.crm.airtable import check_airtable
from providers.crm.hubspot import check_hubspot
from providers.crm.pipedrive import check_pipedrive
from providers.crm.webhook import check_webhook
from providers.urls import VendorUrls

__all__ = ["CHECKS", "Check", "IntegrationKind", "run_checks", "tool_registry", "vendor_urls"]

IntegrationKind = Literal["crm", "calendar"]
Check = Callable[[ClientConfig, httpx.AsyncClient, VendorUrls], Awaitable[list[str]]]

CHECKS: Mapping[tuple[IntegrationKind, str], Check] = {
    ("crm", "hubspot"): check_hubspot,
    ("crm", "pipedrive"): check_pipedrive,
    ("crm", "airtable"): check_airtable,
    ("crm", "webhook"): check_webhook,
    ("calendar", "google_calendar"): check_google_calendar,
    ("calendar", "calendly"): check_calendly,
}
"""Every vendor provider's check, by (kind, its ``crm.provider`` / ``booking.provider`` name)."""


def vendor_urls(settings: Settings) -> VendorUrls:
    """The vendors' base URLs the settings override (``HUBSPOT_BASE_URL``...)."""
    return VendorUrls(
        hubspot_base_url=settings.hubspot_base_url,
        pipedrive_base_url=settings.pipedrive_base_url,
        airtable_base_url=settings.airtable_base_url,
        google_calendar_base_url=settings.google_calendar_base_url,
        google_oauth_token_url=settings.google_oauth_token_url,
        calendly_base_url=settings.calendly_base_url,
    )


def tool_registry(
    calendar: LocalCalendar | None = None,
    ledger: LeadLedger | None = None,
    urls: VendorUrls | None = None,
) -> ToolRegistry:
    """The embedded tools (:func:`engine.tools.embedded_tools`) plus the vendor
    calendars (``google_calendar``, ``calendly``). Without ``calendar`` and
    ``ledger`` it knows the provider names only (config validation)."""
    tools = embedded_tools(calendar, ledger)
    register_calendars(tools, calendar, endpoints=Endpoints.of_urls(urls or VendorUrls()))
    return tools


def _configured(client: ClientConfig) -> list[tuple[IntegrationKind, str]]:
    return [("crm", client.crm.provider), ("calendar", client.booking.provider)]


async def run_checks(
    client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
) -> list[tuple[IntegrationKind, str, list[str]]]:
    """Run the checks of the client's configured providers (``local`` ones have none).

    Returns ``(kind, provider, problems)`` per configured vendor provider; a
    provider without a check reports that as its problem. A check that raises is
    reported as a problem too (its type and message), never raised.
    """
    results: list[tuple[IntegrationKind, str, list[str]]] = []
    for kind, provider in _configured(client):
        if provider == "local":
            continue
        check = CHECKS.get((kind, provider))
        if check is None:
            results.append((kind, provider, [f"no check is registered for {kind} {provider!r}"]))
            continue
        try:
            problems = await check(client, http, urls)
        except Exception as exc:  # a broken check must not hide the others
            problems = [f"the check failed: {type(exc).__name__}: {exc}"]
        results.append((kind, provider, problems))
    return results

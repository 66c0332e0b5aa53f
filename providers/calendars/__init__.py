"""Vendor calendars behind the calendar interface: ``google_calendar`` and
``calendly``. See :mod:`providers.calendars.common` for how a booking reaches the
vendor exactly once and what happens when the vendor refuses it."""

from __future__ import annotations

import httpx

from engine.config import ClientConfig, ClientRegistry
from engine.db.database import Database
from engine.outbox import Deliverer
from engine.tools.calendar import Calendar, LocalCalendar
from engine.tools.registry import ToolRegistry
from providers.calendars.calendly import CalendlyCalendar, CalendlyDeliverer, check_calendly
from providers.calendars.common import (
    KIND_OF,
    BusyCache,
    Endpoints,
    ProviderDirectory,
    push_hook,
)
from providers.calendars.google import (
    GoogleCalendar,
    GoogleCalendarDeliverer,
    check_google_calendar,
)

__all__ = [
    "Endpoints",
    "calendar_deliverers",
    "check_calendly",
    "check_google_calendar",
    "register_calendars",
]

_CACHE = BusyCache()
"""Vendor busy times, shared by the readers and the deliverers of this process
(a push clears its client's entries)."""


def register_calendars(
    tools: ToolRegistry,
    local: LocalCalendar | None,
    *,
    http: httpx.AsyncClient | None = None,
    endpoints: Endpoints | None = None,
) -> None:
    """Register ``google_calendar`` and ``calendly`` on ``tools``; with ``local``,
    its commit hook enqueues each booking's push. Without ``local`` the names
    are known for validation only. ``endpoints``: the vendors' base URLs (the
    gateway passes its Settings'; default: the vendors' own)."""
    directory = ProviderDirectory()
    shared: list[httpx.AsyncClient] = [http] if http is not None else []
    urls = endpoints or Endpoints()

    def client_http() -> httpx.AsyncClient:
        if not shared:
            shared.append(httpx.AsyncClient())
        return shared[0]

    if local is not None:
        local.on_booked.append(push_hook(directory, local.db))

    def google(client: ClientConfig) -> Calendar:
        if local is None:
            raise RuntimeError("embedded_tools() was built for validation only")
        directory.kinds[client.client_id] = KIND_OF["google_calendar"]
        return GoogleCalendar(client, local, client_http(), urls, _CACHE)

    def calendly(client: ClientConfig) -> Calendar:
        if local is None:
            raise RuntimeError("embedded_tools() was built for validation only")
        directory.kinds[client.client_id] = KIND_OF["calendly"]
        return CalendlyCalendar(client, local, client_http(), urls, _CACHE)

    tools.register_calendar("google_calendar", google)
    tools.register_calendar("calendly", calendly)


def calendar_deliverers(
    registry: ClientRegistry,
    http: httpx.AsyncClient,
    db: Database,
    endpoints: Endpoints | None = None,
) -> list[Deliverer]:
    """The push deliverers (``calendar.google``, ``calendar.calendly``)."""
    urls = endpoints or Endpoints()
    return [
        GoogleCalendarDeliverer(registry, http, db, urls, _CACHE),
        CalendlyDeliverer(registry, http, db, urls, _CACHE),
    ]

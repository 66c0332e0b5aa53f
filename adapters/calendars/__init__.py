"""Vendor calendars behind the calendar interface: ``google_calendar`` (and,
later, ``calendly``). See :mod:`adapters.calendars.common` for how a booking
reaches the vendor exactly once and what happens when the vendor refuses it."""

from __future__ import annotations

import httpx

from adapters.calendars.common import (
    KIND_OF,
    BusyCache,
    Endpoints,
    ProviderDirectory,
    push_hook,
)
from adapters.calendars.google import (
    GoogleCalendar,
    GoogleCalendarDeliverer,
    check_google_calendar,
)
from engine.config import ClientConfig, ClientRegistry
from engine.db.database import Database
from engine.outbox import Deliverer
from engine.tools.calendar import Calendar, LocalCalendar
from engine.tools.registry import ToolRegistry

__all__ = ["Endpoints", "calendar_deliverers", "register_calendars"]

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
    """Register ``google_calendar`` on ``tools``; with ``local``, its commit hook
    enqueues each booking's push. Without ``local`` the names are known for
    validation only."""
    directory = ProviderDirectory()
    shared: list[httpx.AsyncClient] = [http] if http is not None else []

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
        return GoogleCalendar(client, local, client_http(), endpoints or Endpoints.of(), _CACHE)

    tools.register_calendar("google_calendar", google)
    try:
        from gateway.integrations import register_check

        register_check("calendar", "google_calendar", check_google_calendar)
    except ImportError:  # pragma: no cover - the engine used without the gateway
        pass


def calendar_deliverers(
    registry: ClientRegistry,
    http: httpx.AsyncClient,
    db: Database,
    endpoints: Endpoints | None = None,
) -> list[Deliverer]:
    """The push deliverers (``calendar.google``)."""
    return [GoogleCalendarDeliverer(registry, http, db, endpoints or Endpoints.of(), _CACHE)]

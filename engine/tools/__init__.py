"""Tools the purpose flows use: the calendar (reads; bookings are requested as
effects), the lead store (CRM), the conversation log and the escalation notifiers.

Each client gets its own set (:class:`ToolRegistry`, by ``booking.provider``,
``crm.provider`` and the ``escalation`` block). The embedded ones keep their
data in the gateway's database (embedded SQLite under ``GATEWAY_DATA_DIR``, or
PostgreSQL); vendor implementations plug in behind the same interfaces, whose
public methods own timeouts, retries and metrics (:mod:`engine.providers`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from engine.config import ClientConfig
from engine.tools.calendar import Booking, BookingRequest, Calendar, LocalCalendar
from engine.tools.conversations import ConversationLog, ConversationRecord
from engine.tools.crm import VENDOR_CRMS, Crm, Lead, LeadLedger, LeadRecord, map_properties
from engine.tools.registry import (
    EMAIL,
    SLACK,
    CalendarFactory,
    CrmFactory,
    KnowledgeFactory,
    NotifierRoute,
    ToolRegistry,
    Tools,
)

__all__ = [
    "EMAIL",
    "SLACK",
    "Booking",
    "BookingRequest",
    "Calendar",
    "CalendarFactory",
    "ConversationLog",
    "ConversationRecord",
    "Crm",
    "CrmFactory",
    "KnowledgeFactory",
    "Lead",
    "LeadLedger",
    "LeadRecord",
    "LocalCalendar",
    "NotifierRoute",
    "ToolRegistry",
    "Tools",
    "embedded_tools",
    "map_properties",
]


_P = TypeVar("_P")


def embedded_tools(
    calendar: LocalCalendar | None = None,
    ledger: LeadLedger | None = None,
) -> ToolRegistry:
    """The registry with the built-in providers: ``local`` calendar and CRM (the
    shared instances given, one database for every client), Slack and email
    notifiers. The vendor calendars are added by the gateway
    (:func:`gateway.integrations.tool_registry`). Without instances it knows the
    provider names only (what
    ``gateway clients validate`` checks configs against); building a client's
    tools then raises RuntimeError."""

    def shared(instance: _P | None) -> Callable[[ClientConfig], _P]:
        def build(_client: ClientConfig) -> _P:
            if instance is None:
                raise RuntimeError("embedded_tools() was built for validation only")
            return instance

        return build

    registry = ToolRegistry()
    registry.register_calendar("local", shared(calendar))
    registry.register_crm("local", shared(ledger))
    # Vendor CRMs: leads are kept in the ledger (what the tools read) and pushed
    # to the vendor by the outbox (kind ``crm.<name>``, gateway.deliveries).
    for name in VENDOR_CRMS:
        registry.register_crm(name, shared(ledger))
    registry.register_notifier(SLACK)
    registry.register_notifier(EMAIL)
    return registry

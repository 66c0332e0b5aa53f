"""Tools the purpose flows use: the calendar (reads; bookings are requested as
effects), the lead ledger, the conversation log and the escalation notifier.

Each keeps its data in the gateway's database (embedded SQLite under
``GATEWAY_DATA_DIR``, or PostgreSQL); vendor implementations plug in behind
the same interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import ClientConfig

from engine.tools.calendar import Booking, BookingRequest, Calendar, LocalCalendar
from engine.tools.conversations import ConversationLog, ConversationRecord
from engine.tools.crm import Lead, LeadLedger, LeadRecord, map_properties

__all__ = [
    "Booking",
    "BookingRequest",
    "Calendar",
    "ConversationLog",
    "ConversationRecord",
    "Lead",
    "LeadLedger",
    "LeadRecord",
    "LocalCalendar",
    "ToolRegistry",
    "Tools",
    "map_properties",
]


@dataclass(frozen=True, slots=True)
class Tools:
    """What agents read during a turn. Writes are effects (``ctx.effects``)."""

    calendar: Calendar


class ToolRegistry:
    """Each client's tools, per its config (placeholder: one shared set)."""

    def __init__(self, shared: Tools) -> None:
        self._shared = shared

    def for_client(self, client: ClientConfig) -> Tools:
        return self._shared

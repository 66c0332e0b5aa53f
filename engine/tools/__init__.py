"""Tools the purpose flows use: calendar, CRM, conversation log.

Each is a small ABC with a local SQLite implementation (the embedded default,
under ``GATEWAY_DATA_DIR``); vendor implementations plug in behind the same
interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.tools.calendar import Booking, Calendar, LocalCalendar
from engine.tools.conversations import ConversationLog, ConversationRecord
from engine.tools.crm import Crm, Lead, LeadRecord, LocalCrm

__all__ = [
    "Booking",
    "Calendar",
    "ConversationLog",
    "ConversationRecord",
    "Crm",
    "Lead",
    "LeadRecord",
    "LocalCalendar",
    "LocalCrm",
    "Tools",
]


@dataclass(frozen=True, slots=True)
class Tools:
    calendar: Calendar
    crm: Crm

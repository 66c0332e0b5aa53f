"""CRM tool: where captured leads are recorded.

:class:`LocalCrm` writes leads to SQLite (``data/crm.sqlite``). It is also the
lead ledger the admin API reads: every lead is recorded locally first, so a
lead is never lost even when a vendor CRM is down. ``crm.map`` from the client
config renames lead fields to CRM property names (``name -> full_name``); the
mapped properties are stored with the lead as they would be pushed.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import ToolError
from engine.tools._sqlite import SqliteFile

__all__ = ["Crm", "Lead", "LeadRecord", "LocalCrm"]


@dataclass(frozen=True, slots=True)
class Lead:
    """A captured lead. ``phone`` is E.164, ``start`` ISO-8601 with the client's
    UTC offset; ``fields`` holds every collected slot by lead-field name."""

    client_id: str
    channel: str
    session_id: str
    fields: dict[str, str]
    status: str = "booked"
    """``booked``, ``new`` (no booking yet) or ``callback_requested``."""
    booking_id: str | None = None
    service: str | None = None
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, slots=True)
class LeadRecord:
    lead_id: str
    lead: Lead
    properties: dict[str, str]
    created_at: str
    extra: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        lead = self.lead
        return {
            "lead_id": self.lead_id,
            "client_id": lead.client_id,
            "channel": lead.channel,
            "session_id": lead.session_id,
            "status": lead.status,
            "name": lead.fields.get("name"),
            "phone": lead.fields.get("phone"),
            "email": lead.fields.get("email"),
            "service": lead.service or lead.fields.get("service"),
            "start": lead.start or lead.fields.get("time"),
            "end": lead.end,
            "booking_id": lead.booking_id,
            "fields": lead.fields,
            "properties": self.properties,
            "created_at": self.created_at,
        }


class Crm(ABC):
    @abstractmethod
    async def record_lead(self, lead: Lead, field_map: dict[str, str]) -> LeadRecord:
        """Record ``lead``; ``field_map`` is the client's ``crm.map``. Raises ToolError."""

    @abstractmethod
    async def list_leads(self, client_id: str) -> list[LeadRecord]:
        """Leads of one client, oldest first."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
  lead_id TEXT PRIMARY KEY,
  client_id TEXT NOT NULL,
  channel TEXT NOT NULL,
  session_id TEXT NOT NULL,
  status TEXT NOT NULL,
  booking_id TEXT,
  service TEXT,
  start_iso TEXT,
  end_iso TEXT,
  fields TEXT NOT NULL,
  properties TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS leads_client ON leads (client_id, created_at);
"""


def map_properties(fields: dict[str, str], field_map: dict[str, str]) -> dict[str, str]:
    """Apply ``crm.map``: mapped fields take the CRM's name, others keep theirs."""
    return {field_map.get(k, k): v for k, v in fields.items()}


class LocalCrm(Crm):
    def __init__(self, path: Path) -> None:
        try:
            self._db = SqliteFile(path, _SCHEMA)
        except sqlite3.Error as exc:
            raise ToolError("crm", f"cannot open {path}: {exc}") from exc

    async def record_lead(self, lead: Lead, field_map: dict[str, str]) -> LeadRecord:
        record = LeadRecord(
            lead_id=uuid.uuid4().hex[:12],
            lead=lead,
            properties=map_properties(lead.fields, field_map),
            created_at=datetime.now(UTC).isoformat(),
        )

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO leads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.lead_id,
                    lead.client_id,
                    lead.channel,
                    lead.session_id,
                    lead.status,
                    lead.booking_id,
                    lead.service,
                    lead.start,
                    lead.end,
                    json.dumps(lead.fields),
                    json.dumps(record.properties),
                    record.created_at,
                ),
            )

        try:
            await self._db.run(insert)
        except sqlite3.Error as exc:
            raise ToolError("crm", f"recording lead failed: {exc}", retryable=True) from exc
        return record

    async def list_leads(self, client_id: str) -> list[LeadRecord]:
        def query(conn: sqlite3.Connection) -> list[LeadRecord]:
            rows = conn.execute(
                "SELECT lead_id, client_id, channel, session_id, status, booking_id, service,"
                " start_iso, end_iso, fields, properties, created_at FROM leads"
                " WHERE client_id = ? ORDER BY created_at",
                (client_id,),
            ).fetchall()
            return [
                LeadRecord(
                    lead_id=r[0],
                    lead=Lead(
                        client_id=r[1],
                        channel=r[2],
                        session_id=r[3],
                        status=r[4],
                        booking_id=r[5],
                        service=r[6],
                        start=r[7],
                        end=r[8],
                        fields=json.loads(r[9]),
                    ),
                    properties=json.loads(r[10]),
                    created_at=r[11],
                )
                for r in rows
            ]

        return await self._db.run(query)

    def close(self) -> None:
        self._db.close()

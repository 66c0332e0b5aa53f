"""The lead ledger: every captured lead, kept by the gateway itself.

The ledger (table ``leads``) is what ``/admin/api/leads`` reads. A lead is
written inside the turn's atomic commit (:meth:`LeadLedger.record_in`), with
the booking it belongs to, so a lead is never lost and never written twice,
whatever fails around it. Pushing leads to a vendor CRM (HubSpot, ...) is a
separate outbox delivery, not this table. ``crm.map`` from the client config
renames lead fields to CRM property names (``name -> full_name``); the mapped
properties are stored with the lead as they would be pushed.

:class:`Crm` is the interface a client's ``crm.provider`` names; its public
reads own the timeout, retries and metrics (:mod:`engine.providers`). The
ledger is the ``local`` one.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from engine.db.database import Database
from engine.db.fast import Tx
from engine.db.schema import LEADS
from engine.providers import CallOptions, Provider

__all__ = [
    "VENDOR_CRMS",
    "Crm",
    "Lead",
    "LeadLedger",
    "LeadRecord",
    "crm_outbox_key",
    "map_properties",
]

VENDOR_CRMS = ("hubspot", "pipedrive", "airtable", "webhook")
"""``crm.provider`` names whose leads are pushed to the vendor through the outbox
(kind ``crm.<provider>``, one row per lead, key :func:`crm_outbox_key`); the
ledger keeps every lead as well and is what the admin API reads."""


def crm_outbox_key(lead_id: str) -> str:
    """The outbox idempotency key of a lead's push to the vendor CRM."""
    return f"crm:{lead_id}"


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
    test: bool = False
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
            "test": self.test,
        }


def map_properties(fields: dict[str, str], field_map: dict[str, str]) -> dict[str, str]:
    """Apply ``crm.map``: mapped fields take the CRM's name, others keep theirs."""
    return {field_map.get(k, k): v for k, v in fields.items()}


class Crm(Provider):
    """Where a client's leads are kept (``crm.provider``). Reads only: a lead is
    recorded by the turn's commit (an effect), never by an agent directly."""

    kind = "crm"

    async def list_leads(self, client_id: str, *, include_test: bool = False) -> list[LeadRecord]:
        """Leads of one client, oldest first; test conversations' leads only if asked.
        Raises StoreError or ToolError (``retryable`` on a timeout)."""
        return await self._call(
            "list_leads", lambda: self._list_leads_impl(client_id, include_test=include_test)
        )

    @abstractmethod
    async def _list_leads_impl(self, client_id: str, *, include_test: bool) -> list[LeadRecord]:
        """One attempt of :meth:`list_leads`."""


class LeadLedger(Crm):
    """Leads in the gateway's database (``crm.provider: local``)."""

    name = "local"
    # Reads retry a dropped connection once themselves (Database.retry_once).
    options = CallOptions(timeout_s=30.0, max_attempts=1)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_in(self, tx: Tx, record: LeadRecord, turn_id: str) -> None:
        """Insert ``record`` in the caller's transaction (the turn's commit)."""
        lead = record.lead
        await tx.execute(
            "INSERT INTO leads (lead_id, client_id, channel, session_id, status, booking_id,"
            " service, start_iso, end_iso, fields, properties, turn_id, test, created_iso,"
            " created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
            " $15)",
            record.lead_id,
            lead.client_id,
            lead.channel,
            lead.session_id,
            lead.status,
            lead.booking_id,
            lead.service,
            lead.start,
            lead.end,
            json.dumps(lead.fields, ensure_ascii=False),
            json.dumps(record.properties, ensure_ascii=False),
            turn_id,
            record.test,
            record.created_at,
            datetime.fromisoformat(record.created_at).timestamp(),
        )

    async def _list_leads_impl(self, client_id: str, *, include_test: bool) -> list[LeadRecord]:
        async def run() -> list[LeadRecord]:
            query = sa.select(LEADS).where(LEADS.c.client_id == client_id)
            if not include_test:
                query = query.where(LEADS.c.test == sa.false())
            async with self.db.read() as conn:
                rows = await conn.execute(query.order_by(LEADS.c.created_ts))
                return [
                    LeadRecord(
                        lead_id=r.lead_id,
                        lead=Lead(
                            client_id=r.client_id,
                            channel=r.channel,
                            session_id=r.session_id,
                            status=r.status,
                            booking_id=r.booking_id,
                            service=r.service,
                            start=r.start_iso,
                            end=r.end_iso,
                            fields=json.loads(r.fields),
                        ),
                        properties=json.loads(r.properties),
                        created_at=r.created_iso,
                        test=bool(r.test),
                    )
                    for r in rows
                ]

        return await self.db.retry_once("leads read", run)


def new_record(lead: Lead, lead_id: str, field_map: dict[str, str], test: bool) -> LeadRecord:
    """The ledger row for ``lead`` (``crm.map`` applied)."""
    return LeadRecord(
        lead_id=lead_id,
        lead=lead,
        properties=map_properties(lead.fields, field_map),
        created_at=datetime.now(UTC).isoformat(),
        test=test,
    )

"""Airtable (``crm.provider: airtable``): each lead upserted as a record.

``PATCH /v0/{base_id}/{table}`` with ``performUpsert: {fieldsToMergeOn:
[<email field>]}`` and ``typecast: true``: Airtable's own idempotency, so a
redelivered row updates the record it created. The merge field is the lead's
``email`` under its ``crm.map`` name; a lead with no email merges on its phone
field, one with neither on its name. The record's fields are the lead's
``crm.map``'ed properties, so the table needs a field of each mapped name
(``gateway integrations check`` lists the missing ones).

Auth: ``Authorization: Bearer <crm.airtable.token>``. Base URL: ``AIRTABLE_BASE_URL``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from engine.config import AirtableCrm, ClientConfig, ClientRegistry
from engine.outbox import Deliverer, OutboxRow
from providers.crm.http import CrmError, config_file, lead_of, send
from providers.urls import VendorUrls

__all__ = ["DEFAULT_BASE_URL", "AirtableDeliverer", "check_airtable"]

DEFAULT_BASE_URL = "https://api.airtable.com"
KEY = "crm.airtable.token"


def _block(client: ClientConfig) -> AirtableCrm:
    block = client.crm.airtable
    if block is None:
        raise CrmError(
            "airtable", f"crm.airtable is not set in {config_file(client)}", retryable=False
        )
    return block


class AirtableDeliverer(Deliverer):
    kind = "crm.airtable"
    rate_per_s = 5.0
    """Airtable: 5 requests per second per base."""

    def __init__(
        self, registry: ClientRegistry, http: httpx.AsyncClient, base_url: str | None = None
    ) -> None:
        self.registry = registry
        self.http = http
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")

    async def deliver(self, row: OutboxRow) -> None:
        client = self.registry.get(row.client_id)
        if client is None:
            raise CrmError("airtable", f"client {row.client_id!r} is not loaded", retryable=False)
        block = _block(client)
        lead = lead_of(row)
        props = lead.pushed_properties()
        field_map = client.crm.map
        merge: str | None = None
        for name, value in (("email", lead.email), ("phone", lead.phone), ("name", lead.name)):
            if value:
                merge = field_map.get(name, name)
                props.setdefault(merge, value)
                break
        body: dict[str, Any] = {"records": [{"fields": props}], "typecast": True}
        url = f"{self.base_url}/v0/{quote(block.base_id)}/{quote(block.table, safe='')}"
        headers = {"Authorization": f"Bearer {block.token}"}
        if merge is None:
            await send(self.http, "airtable", client, KEY, "POST", url, json=body, headers=headers)
            return
        body["performUpsert"] = {"fieldsToMergeOn": [merge]}
        await send(self.http, "airtable", client, KEY, "PATCH", url, json=body, headers=headers)


async def check_airtable(
    client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
) -> list[str]:
    """``GET /v0/meta/bases/{base_id}/tables``: the token reads the base, the
    table exists and has a field for each mapped lead field."""
    block = _block(client)
    base = (urls.airtable_base_url or DEFAULT_BASE_URL).rstrip("/")
    try:
        response = await send(
            http,
            "airtable",
            client,
            KEY,
            "GET",
            f"{base}/v0/meta/bases/{quote(block.base_id)}/tables",
            headers={"Authorization": f"Bearer {block.token}"},
        )
    except CrmError as exc:
        return [exc.reason]
    try:
        tables = response.json().get("tables", [])
    except (ValueError, AttributeError):
        return ["Airtable answered without a table list"]
    table = next(
        (t for t in tables if isinstance(t, dict) and block.table in (t.get("id"), t.get("name"))),
        None,
    )
    if table is None:
        return [
            f"table {block.table!r} is not in base {block.base_id}"
            f" (crm.airtable.table in {config_file(client)})"
        ]
    have = {f.get("name") for f in table.get("fields", []) if isinstance(f, dict)}
    wanted = [client.crm.map.get(k, k) for k in client.booking.rules.lead_fields]
    missing = [name for name in wanted if name not in have]
    if missing:
        return [
            f"table {block.table!r} has no field named {', '.join(map(repr, missing))}"
            f" (crm.map in {config_file(client)})"
        ]
    return []

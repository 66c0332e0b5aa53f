"""HubSpot (``crm.provider: hubspot``): each lead upserted as a CRM v3 contact.

- With an email: ``POST /crm/v3/objects/contacts/batch/upsert`` with
  ``idProperty: email`` — HubSpot's own idempotency, so a redelivered row
  updates the same contact instead of creating a second one. Where that
  endpoint is missing (404/405: an older API or a narrower stub), create
  (``POST /crm/v3/objects/contacts``) and on 409 update by email (``PATCH
  .../contacts/{email}?idProperty=email``): idempotent too.
- Phone-only leads (no email; HubSpot can only upsert on a unique property):
  ``POST /crm/v3/objects/contacts/search`` on the phone property, then
  ``PATCH`` the contact found or ``POST /crm/v3/objects/contacts``. HubSpot's
  search index lags writes by a few seconds, so a redelivery within seconds
  of a lost acknowledgement could create a duplicate; documented choice.

Auth: ``Authorization: Bearer <crm.hubspot.access_token>`` (a private app's
token). The properties sent are the lead's ``crm.map``'ed properties, so the map
must name HubSpot properties that exist (``name: firstname``, ...); HubSpot
rejects unknown ones (400, dead with its message). Base URL: ``HUBSPOT_BASE_URL``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from engine.config import ClientConfig, ClientRegistry
from engine.outbox import Deliverer, OutboxRow
from providers.crm.http import CrmError, config_file, lead_of, send, vendor_message
from providers.urls import VendorUrls

__all__ = ["DEFAULT_BASE_URL", "HubspotDeliverer", "check_hubspot"]

DEFAULT_BASE_URL = "https://api.hubapi.com"
KEY = "crm.hubspot.access_token"


def _token(client: ClientConfig) -> str:
    block = client.crm.hubspot
    if block is None:
        raise CrmError("hubspot", f"{KEY} is not set in {config_file(client)}", retryable=False)
    return block.access_token


class HubspotDeliverer(Deliverer):
    kind = "crm.hubspot"
    rate_per_s = 9.0
    """HubSpot private apps: 100 requests per 10 s (Free/Starter)."""

    def __init__(
        self, registry: ClientRegistry, http: httpx.AsyncClient, base_url: str | None = None
    ) -> None:
        self.registry = registry
        self.http = http
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")

    async def deliver(self, row: OutboxRow) -> None:
        client = self.registry.get(row.client_id)
        if client is None:
            raise CrmError("hubspot", f"client {row.client_id!r} is not loaded", retryable=False)
        headers = {"Authorization": f"Bearer {_token(client)}"}
        lead = lead_of(row)
        props = lead.pushed_properties()
        email = lead.email
        if email:
            # the standard ``email`` property is set too, whatever crm.map calls the field
            properties = {"email": email, **props}
            body = {"inputs": [{"idProperty": "email", "id": email, "properties": properties}]}
            response = await send(
                self.http,
                "hubspot",
                client,
                KEY,
                "POST",
                f"{self.base_url}/crm/v3/objects/contacts/batch/upsert",
                json=body,
                headers=headers,
                accept=(404, 405),
            )
            if response.status_code in (404, 405):  # no batch upsert here: create, 409 -> update
                await self._create_or_update(client, headers, email, props)
                return
            _raise_partial(response)
            return
        phone = lead.phone
        if not phone:
            raise CrmError("hubspot", "the lead has neither email nor phone", retryable=False)
        found = await self._find_by_phone(
            client, headers, client.crm.map.get("phone", "phone"), phone
        )
        if found is not None:
            await send(
                self.http,
                "hubspot",
                client,
                KEY,
                "PATCH",
                f"{self.base_url}/crm/v3/objects/contacts/{found}",
                json={"properties": props},
                headers=headers,
            )
            return
        await send(
            self.http,
            "hubspot",
            client,
            KEY,
            "POST",
            f"{self.base_url}/crm/v3/objects/contacts",
            json={"properties": props},
            headers=headers,
        )

    async def _create_or_update(
        self, client: ClientConfig, headers: dict[str, str], email: str, props: dict[str, str]
    ) -> None:
        """HubSpot's other idempotent path: ``POST /crm/v3/objects/contacts``; a 409
        (a contact with that email exists, e.g. from a lost answer) becomes a
        ``PATCH`` of the contact HubSpot names ("Existing ID: 123"), or of
        ``/crm/v3/objects/contacts/{email}?idProperty=email``."""
        properties = {"email": email, **props}
        created = await send(
            self.http,
            "hubspot",
            client,
            KEY,
            "POST",
            f"{self.base_url}/crm/v3/objects/contacts",
            json={"properties": properties},
            headers=headers,
            accept=(409,),
        )
        if created.status_code == 409:
            # HubSpot names the contact: "Contact already exists. Existing ID: 12345"
            existing = re.search(r"Existing ID:\s*(\d+)", vendor_message(created))
            path, params = (
                (existing.group(1), {})
                if existing
                else (quote(email, safe="@"), {"idProperty": "email"})
            )
            await send(
                self.http,
                "hubspot",
                client,
                KEY,
                "PATCH",
                f"{self.base_url}/crm/v3/objects/contacts/{path}",
                params=params,
                json={"properties": properties},
                headers=headers,
            )

    async def _find_by_phone(
        self, client: ClientConfig, headers: dict[str, str], prop: str, phone: str
    ) -> str | None:
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": prop, "operator": "EQ", "value": phone}]}
            ],
            "properties": [prop],
            "limit": 1,
        }
        response = await send(
            self.http,
            "hubspot",
            client,
            KEY,
            "POST",
            f"{self.base_url}/crm/v3/objects/contacts/search",
            json=body,
            headers=headers,
        )
        results = _json(response).get("results")
        if isinstance(results, list) and results and isinstance(results[0], dict):
            return str(results[0].get("id"))
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _raise_partial(response: httpx.Response) -> None:
    """A batch answered 207 (multi-status) carries per-input ``errors``."""
    errors = _json(response).get("errors")
    if response.status_code == 207 or errors:
        detail = (
            "; ".join(str(e.get("message")) for e in errors or [] if isinstance(e, dict))
            or "multi-status without detail"
        )
        raise CrmError("hubspot", f"HubSpot rejected the lead: {detail}", retryable=False)


async def check_hubspot(
    client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
) -> list[str]:
    """Read one contact (``GET /crm/v3/objects/contacts?limit=1``): token and reach."""
    base = (urls.hubspot_base_url or DEFAULT_BASE_URL).rstrip("/")
    try:
        await send(
            http,
            "hubspot",
            client,
            KEY,
            "GET",
            f"{base}/crm/v3/objects/contacts",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {_token(client)}"},
        )
    except CrmError as exc:
        return [exc.reason]
    return []

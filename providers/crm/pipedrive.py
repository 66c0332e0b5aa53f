"""Pipedrive (``crm.provider: pipedrive``): a person and a lead per captured lead.

1. ``GET /persons/search?term=<email>&fields=email&exact_match=true`` (the phone
   when there is no email): the person, if Pipedrive already has them;
2. else ``POST /persons`` (name, email, phone);
3. ``GET /leads?person_id=<id>``: a lead whose title carries ``[<lead id>]`` is
   this one, delivered before (a redelivery stops here);
4. else ``POST /leads`` titled ``<service> — <name> [<lead id>]`` with the
   person, and the ``crm.map``'ed properties that are not name/email/phone as
   its fields (map lead fields to Pipedrive custom field keys).

Auth: the ``api_token`` query parameter (``crm.pipedrive.api_token``). Base URL:
``PIPEDRIVE_BASE_URL``, else ``https://<company_domain>.pipedrive.com/api/v1``
when set, else ``https://api.pipedrive.com/v1``.
"""

from __future__ import annotations

from typing import Any

import httpx

from engine.config import ClientConfig, ClientRegistry
from engine.outbox import Deliverer, OutboxRow
from providers.crm.http import CrmError, config_file, lead_of, send
from providers.urls import VendorUrls

__all__ = ["DEFAULT_BASE_URL", "PipedriveDeliverer", "check_pipedrive"]

DEFAULT_BASE_URL = "https://api.pipedrive.com/v1"
KEY = "crm.pipedrive.api_token"
_STANDARD = {"name", "email", "phone"}


def _base(client: ClientConfig, override: str | None) -> str:
    if override:
        return override.rstrip("/")
    block = client.crm.pipedrive
    if block is not None and block.company_domain:
        return f"https://{block.company_domain}.pipedrive.com/api/v1"
    return DEFAULT_BASE_URL


def _token(client: ClientConfig) -> str:
    block = client.crm.pipedrive
    if block is None:
        raise CrmError("pipedrive", f"{KEY} is not set in {config_file(client)}", retryable=False)
    return block.api_token


def _data(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("data") if isinstance(body, dict) else None


class PipedriveDeliverer(Deliverer):
    kind = "crm.pipedrive"
    rate_per_s = 5.0

    def __init__(
        self, registry: ClientRegistry, http: httpx.AsyncClient, base_url: str | None = None
    ) -> None:
        self.registry = registry
        self.http = http
        self.base_url = base_url

    async def deliver(self, row: OutboxRow) -> None:
        client = self.registry.get(row.client_id)
        if client is None:
            raise CrmError("pipedrive", f"client {row.client_id!r} is not loaded", retryable=False)
        base, token = _base(client, self.base_url), _token(client)

        async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            params = {**kwargs.pop("params", {}), "api_token": token}
            return await send(
                self.http,
                "pipedrive",
                client,
                KEY,
                method,
                f"{base}{path}",
                params=params,
                **kwargs,
            )

        record = lead_of(row)
        props = record.pushed_properties()
        email, phone = record.email or None, record.phone or None
        name = record.name or email or phone or "Unknown"
        person_id: object = None
        term, fields = (email, "email") if email else (phone, "phone")
        if term:
            found = _data(
                await call(
                    "GET",
                    "/persons/search",
                    params={"term": term, "fields": fields, "exact_match": "true", "limit": 1},
                )
            )
            items = found.get("items") if isinstance(found, dict) else None
            if isinstance(items, list) and items:
                item = items[0].get("item") if isinstance(items[0], dict) else None
                if isinstance(item, dict):
                    person_id = item.get("id")
        if person_id is None:
            person: dict[str, Any] = {"name": name}
            if email:
                person["email"] = [{"value": email, "primary": True, "label": "work"}]
            if phone:
                person["phone"] = [{"value": phone, "primary": True, "label": "mobile"}]
            created = _data(await call("POST", "/persons", json=person))
            person_id = created.get("id") if isinstance(created, dict) else None
            if person_id is None:
                raise CrmError(
                    "pipedrive", "Pipedrive created a person without an id", retryable=True
                )
        marker = f"[{record.lead_id}]"
        leads = _data(await call("GET", "/leads", params={"person_id": person_id, "limit": 500}))
        if isinstance(leads, list) and any(
            isinstance(lead, dict) and marker in str(lead.get("title", "")) for lead in leads
        ):
            return  # delivered before; the acknowledgement was lost
        service = record.service or "Lead"
        body: dict[str, Any] = {
            k: v for k, v in props.items() if k not in _STANDARD and k not in ("title", "person_id")
        }
        body.update({"title": f"{service} — {name} {marker}", "person_id": person_id})
        await call("POST", "/leads", json=body)


async def check_pipedrive(
    client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
) -> list[str]:
    """``GET /users/me``: the token works and the company is reachable."""
    base = _base(client, urls.pipedrive_base_url)
    try:
        await send(
            http,
            "pipedrive",
            client,
            KEY,
            "GET",
            f"{base}/users/me",
            params={"api_token": _token(client)},
        )
    except CrmError as exc:
        return [exc.reason]
    return []

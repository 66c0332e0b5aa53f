"""Vendor CRMs as outbox delivery kinds (``crm.<provider>``): HubSpot, Pipedrive,
Airtable and a signed webhook. The turn's commit enqueues one row per lead
(keyed ``crm:<lead id>``, :func:`engine.commit.crm_items`); these deliverers
push it with the vendor's own idempotency, reading the credentials from the
client's config at delivery time (fix the config, ``gateway outbox retry``).
Each module also has its credentials-and-reachability check (``check_<vendor>``),
which :mod:`gateway.integrations` lists for ``gateway integrations check``.
"""

from __future__ import annotations

import httpx

from engine.config import ClientRegistry
from engine.outbox import Deliverer
from providers.crm.airtable import AirtableDeliverer
from providers.crm.hubspot import HubspotDeliverer
from providers.crm.pipedrive import PipedriveDeliverer
from providers.crm.webhook import WebhookDeliverer
from providers.urls import VendorUrls

__all__ = [
    "AirtableDeliverer",
    "HubspotDeliverer",
    "PipedriveDeliverer",
    "WebhookDeliverer",
    "crm_deliverers",
]


def crm_deliverers(
    registry: ClientRegistry,
    http: httpx.AsyncClient,
    urls: VendorUrls | None = None,
) -> list[Deliverer]:
    """One deliverer per vendor CRM kind (base URLs from ``urls``; the vendors' own
    for what it leaves None)."""
    urls = urls or VendorUrls()
    return [
        HubspotDeliverer(registry, http, urls.hubspot_base_url),
        PipedriveDeliverer(registry, http, urls.pipedrive_base_url),
        AirtableDeliverer(registry, http, urls.airtable_base_url),
        WebhookDeliverer(registry, http),
    ]

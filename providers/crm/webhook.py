"""The signed webhook (``crm.provider: webhook``): each lead POSTed as JSON to
``crm.webhook.url``, signed per Standard Webhooks (https://www.standardwebhooks.com).

Body (UTF-8 JSON)::

    {"type": "lead.created", "timestamp": "<the lead's created_at>", "data": {<the lead>}}

Headers: ``webhook-id`` (``lead_<lead id>``: the same on every retry, so the
receiver de-duplicates on it), ``webhook-timestamp`` (this attempt's Unix
seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>" keyed with the base64-decoded part of
``whsec_...``>``). A receiver verifies with any Standard Webhooks library, e.g.
``standardwebhooks.Webhook(secret).verify(body, headers)``.

Any 2xx is delivered; 401/403 (the receiver refused the signature) and 4xx
dead; 408/429/5xx, timeouts and connection errors retried (``Retry-After``
honoured).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from engine.config import ClientConfig, ClientRegistry, WebhookCrm
from engine.outbox import Deliverer, OutboxRow
from engine.payloads import stored_payload
from providers.crm.http import CrmError, config_file, lead_of, send
from providers.urls import VendorUrls

__all__ = ["WebhookDeliverer", "check_webhook", "signed_request"]

KEY = "crm.webhook.secret"


def _block(client: ClientConfig) -> WebhookCrm:
    block = client.crm.webhook
    if block is None:
        raise CrmError(
            "webhook", f"crm.webhook is not set in {config_file(client)}", retryable=False
        )
    return block


def signed_request(
    secret: str, lead_id: str, payload: dict[str, object], now: datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt to deliver ``payload`` (a lead record)."""
    when = now or datetime.now(UTC)
    body = json.dumps(
        {"type": "lead.created", "timestamp": payload.get("created_at"), "data": payload},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    msg_id = f"lead_{lead_id}"
    signature = Webhook(secret).sign(msg_id, when, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }
    return body.encode(), headers


class WebhookDeliverer(Deliverer):
    kind = "crm.webhook"

    def __init__(self, registry: ClientRegistry, http: httpx.AsyncClient) -> None:
        self.registry = registry
        self.http = http

    async def deliver(self, row: OutboxRow) -> None:
        client = self.registry.get(row.client_id)
        if client is None:
            raise CrmError("webhook", f"client {row.client_id!r} is not loaded", retryable=False)
        block = _block(client)
        lead = lead_of(row)
        body, headers = signed_request(block.secret, lead.lead_id, stored_payload(lead))
        await send(
            self.http, "webhook", client, KEY, "POST", block.url, content=body, headers=headers
        )


async def check_webhook(
    client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
) -> list[str]:
    """Reachability only (``HEAD`` the URL; any HTTP answer counts): a signed test
    POST would be a lead the receiver has to ignore."""
    block = _block(client)
    try:
        await http.request("HEAD", block.url, timeout=10.0)
    except httpx.HTTPError as exc:
        return [f"the webhook URL {block.url} is unreachable: {type(exc).__name__}: {exc}"]
    return []

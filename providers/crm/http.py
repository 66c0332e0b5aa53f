"""What every CRM adapter shares: one HTTP call with the vendor errors mapped at
the boundary, so the outbox worker knows what to do with a failure.

=============================  ==========================================
the vendor answered            the outbox row
=============================  ==========================================
2xx (or a status the caller    delivered (the adapter goes on)
accepts, e.g. HubSpot 409)
401 / 403                      dead at once: the reason names the client,
                               its config file and the key to fix
429, 5xx, 408, timeout,        pending again, after the vendor's
connection error               ``Retry-After`` when it sent one
400, 404, 422, other 4xx       dead, with the vendor's own message
=============================  ==========================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from engine.config import ClientConfig
from engine.errors import ToolError
from engine.outbox import OutboxRow
from engine.payloads import LeadPush
from providers.http import retry_after_s

__all__ = [
    "CrmError",
    "config_file",
    "lead_of",
    "send",
    "vendor_message",
]

TIMEOUT = httpx.Timeout(15.0, connect=5.0)
RETRYABLE = frozenset({408, 425, 429})


class CrmError(ToolError):
    """A push to a vendor CRM failed. ``retry_after_s``: the vendor's
    ``Retry-After`` (the outbox waits at least that long)."""

    def __init__(
        self,
        vendor: str,
        reason: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"crm.{vendor}", reason, retryable=retryable)
        self.retry_after_s = retry_after_s
        self.status = status


def config_file(client: ClientConfig) -> str:
    folder = client.folder
    return (
        str(folder / "config.yaml")
        if folder is not None
        else f"clients/{client.client_id}/config.yaml"
    )


def vendor_message(response: httpx.Response) -> str:
    """The vendor's own error text: HubSpot ``message``, Pipedrive ``error`` (+
    ``error_info``), Airtable ``error.message`` / ``error``; else the body's start."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            parts = [str(error.get(k)) for k in ("type", "message") if error.get(k)]
            if parts:
                return ": ".join(parts)
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        if isinstance(error, str) and error:
            info = body.get("error_info")
            return f"{error} ({info})" if isinstance(info, str) and info else error
    return json.dumps(body, ensure_ascii=False)[:300]


async def send(
    http: httpx.AsyncClient,
    vendor: str,
    client: ClientConfig,
    credential_key: str,
    method: str,
    url: str,
    *,
    accept: Iterable[int] = (),
    **kwargs: Any,
) -> httpx.Response:
    """One call to the vendor, errors mapped (see the module's table).
    ``credential_key``: the config key a 401/403 tells the operator to fix
    (``crm.hubspot.access_token``). Returns 2xx responses and ``accept``ed ones."""
    label = _LABELS.get(vendor, vendor)
    kwargs.setdefault("timeout", TIMEOUT)
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise CrmError(vendor, f"{label} timed out ({type(exc).__name__})", retryable=True) from exc
    except httpx.TransportError as exc:
        raise CrmError(
            vendor, f"{label} is unreachable: {type(exc).__name__}: {exc}", retryable=True
        ) from exc
    status = response.status_code
    if 200 <= status < 300 or status in set(accept):
        return response
    message = vendor_message(response)
    if status in (401, 403):
        raise CrmError(
            vendor,
            f"{label} answered {status} ({message}): the credentials of client"
            f" {client.client_id!r} were refused; fix {credential_key} in {config_file(client)}"
            " and retry the row (gateway outbox retry)",
            retryable=False,
            status=status,
        )
    if status in RETRYABLE or status >= 500:
        raise CrmError(
            vendor,
            f"{label} answered {status}: {message}",
            retryable=True,
            retry_after_s=retry_after_s(response),
            status=status,
        )
    raise CrmError(vendor, f"{label} rejected the lead ({status}): {message}", retryable=False)


def lead_of(row: OutboxRow) -> LeadPush:
    """The row's lead (:class:`~engine.payloads.LeadPush`); its
    :meth:`~engine.payloads.LeadPush.pushed_properties` are the ``crm.map``'ed
    properties to send (empty values dropped)."""
    return row.payload_as(LeadPush)


_LABELS = {"hubspot": "HubSpot", "pipedrive": "Pipedrive", "airtable": "Airtable"}

"""What ``gateway integrations check`` runs: one credentials-and-reachability check
per configured vendor provider (CRM, calendar), registered by the provider's module.

A check takes the client, an HTTP client and the settings, and returns the
problems it found as readable lines ("HubSpot answered 401: the access token
is invalid or expired (crm.hubspot.access_token in clients/spa/config.yaml)").
An empty list means the provider answered and the credentials work. A check
never sends a lead or books anything: it reads (an account, a calendar, a
table's fields) or asks a dry-run endpoint.

    register_check("crm", "hubspot", check_hubspot)
    problems = await run_checks(client, http, settings)   # [(kind, name, [lines])]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

import httpx

from engine.config import ClientConfig

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["Check", "IntegrationKind", "register_check", "registered", "run_checks"]

IntegrationKind = Literal["crm", "calendar"]
Check = Callable[[ClientConfig, httpx.AsyncClient, "Settings"], Awaitable[list[str]]]

_CHECKS: dict[tuple[IntegrationKind, str], Check] = {}


def register_check(kind: IntegrationKind, provider: str, check: Check) -> None:
    """Register the check of ``provider`` (its ``crm.provider`` / ``booking.provider``
    name). Registering a name twice replaces the check (module reloads in tests)."""
    _CHECKS[(kind, provider)] = check


def registered() -> dict[tuple[IntegrationKind, str], Check]:
    """Every registered check, by (kind, provider name)."""
    return dict(_CHECKS)


def _configured(client: ClientConfig) -> list[tuple[IntegrationKind, str]]:
    return [("crm", client.crm.provider), ("calendar", client.booking.provider)]


async def run_checks(
    client: ClientConfig, http: httpx.AsyncClient, settings: Settings
) -> list[tuple[IntegrationKind, str, list[str]]]:
    """Run the checks of the client's configured providers (``local`` ones have none).

    Returns ``(kind, provider, problems)`` per configured vendor provider; a
    provider with no registered check reports that as its problem. A check that
    raises is reported as a problem too (its type and message), never raised.
    """
    results: list[tuple[IntegrationKind, str, list[str]]] = []
    for kind, provider in _configured(client):
        if provider == "local":
            continue
        check = _CHECKS.get((kind, provider))
        if check is None:
            results.append((kind, provider, [f"no check is registered for {kind} {provider!r}"]))
            continue
        try:
            problems = await check(client, http, settings)
        except Exception as exc:  # a broken check must not hide the others
            problems = [f"the check failed: {type(exc).__name__}: {exc}"]
        results.append((kind, provider, problems))
    return results

"""Where the vendor APIs are: their base URLs, overridable for tests and
regional endpoints. The gateway fills one :class:`VendorUrls` from its settings
(``HUBSPOT_BASE_URL``...); every field left None means the vendor's own
public URL, which each provider module names as its default."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VendorUrls"]


@dataclass(frozen=True, slots=True)
class VendorUrls:
    """Base URLs of the vendor APIs (None: the vendor's public default)."""

    hubspot_base_url: str | None = None
    pipedrive_base_url: str | None = None
    airtable_base_url: str | None = None
    google_calendar_base_url: str | None = None
    google_oauth_token_url: str | None = None
    calendly_base_url: str | None = None

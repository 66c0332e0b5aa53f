"""HTTP helpers shared by the vendor providers and channels (Twilio, Slack, the CRMs, calendars)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

__all__ = ["retry_after_s"]


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The response's ``Retry-After``, in seconds from ``now``; None when absent or
    unreadable. Both forms of RFC 9110 section 10.2.3: delta-seconds (``120``) and
    an HTTP date (``Wed, 21 Oct 2026 07:28:00 GMT``; a date in the past gives 0)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if seconds >= 0 else None

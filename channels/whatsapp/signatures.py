"""Webhook signature checks of the messaging providers. Pure functions: they never
raise, and anything missing or malformed is simply not valid.

Twilio ("Webhooks security", https://www.twilio.com/docs/usage/webhooks/webhooks-security):
``X-Twilio-Signature`` is base64(HMAC-SHA1(auth token, URL + the POST
parameters sorted by name, each as name + value)). The URL is the full public
URL Twilio called, query string included; behind a proxy build it from
``GATEWAY_PUBLIC_URL`` + path + query, never from ``X-Forwarded-*``. Twilio's SDK
accepts the URL with and without the default port (Twilio signs inconsistently
there); we also accept the path with and without a trailing slash, which
frameworks and proxies add or strip.

Meta ("Webhooks: Event notifications", payload validation): ``X-Hub-Signature-256:
sha256=<hex>`` is HMAC-SHA256(app secret, the raw request body), compared in
constant time. Check it on the bytes as received, before any JSON parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

__all__ = ["valid_meta", "valid_twilio"]

_META_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def _slash_variants(url: str) -> list[str]:
    """``url`` as given, then with its path's trailing slash toggled."""
    parts = urlsplit(url)
    path = parts.path
    toggled = path[:-1] if path.endswith("/") and len(path) > 1 else path + "/"
    return [url, urlunsplit(parts._replace(path=toggled))]


def valid_twilio(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """True when ``signature`` (the ``X-Twilio-Signature`` header) signs ``url``
    and the form ``params`` with ``auth_token``.

    Args:
        url: the full public URL Twilio requested, query string included.
        params: the POST form fields (for a GET webhook, ``{}``: the query is in ``url``).
    """
    if not auth_token or not signature or not signature.strip():
        return False
    try:
        validator = RequestValidator(auth_token)
        form = dict(params)
        return any(
            validator.validate(candidate, form, signature.strip())
            for candidate in _slash_variants(url)
        )
    except (ValueError, TypeError, UnicodeError):
        # A URL that does not parse (bad port), text that is not encodable.
        return False


def valid_meta(app_secret: str, raw_body: bytes, header: str | None) -> bool:
    """True when ``header`` (``X-Hub-Signature-256``, ``sha256=<64 hex>``) is the
    HMAC-SHA256 of ``raw_body`` keyed with the app secret."""
    if not app_secret or not header:
        return False
    match = _META_SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    try:
        key = app_secret.encode("utf-8")
    except UnicodeError:
        return False
    expected = hmac.new(key, raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())

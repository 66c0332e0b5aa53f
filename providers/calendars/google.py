"""Google Calendar (``booking.provider: google_calendar``).

- Auth: the service account's JSON key (``booking.google_calendar.service_account_file``)
  signs a JWT bearer grant (RFC 7523, ``google-auth``'s signer) posted to the token
  endpoint (``GOOGLE_OAUTH_TOKEN_URL``); the access token is kept until shortly
  before it expires.
- Busy: ``POST {base}/calendar/v3/freeBusy`` for the calendar, cached 30 s per
  client and range, merged with the local bookings and holds.
- Push: ``POST {base}/calendar/v3/calendars/{id}/events`` with the event id
  derived from the booking id (base32hex), so a retry answers 409 (already
  there) = success. Before inserting, a fresh free/busy read of the slot: busy
  and not our event = the slot was taken there -> conflict.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx

from engine.config import ClientConfig
from engine.errors import ToolError
from engine.outbox import OutboxRow
from engine.payloads import CalendarPush
from engine.providers import CallOptions
from engine.tools.calendar import LocalCalendar
from providers.calendars.common import (
    GOOGLE_KIND,
    BusyCache,
    Endpoints,
    VendorCalendar,
    VendorDeliverer,
    booking_status,
    config_file,
    lead_contact,
    mark_conflict,
    transport_error,
    vendor_error,
)
from providers.urls import VendorUrls

__all__ = ["GoogleCalendar", "GoogleCalendarDeliverer", "check_google_calendar", "event_id"]

SCOPE = "https://www.googleapis.com/auth/calendar"
VENDOR = "google_calendar"


def event_id(booking_id: str) -> str:
    """A Google event id for ``booking_id``: base32hex (a-v, 0-9), lowercase, 5-1024
    characters, the same for every retry."""
    digest = hashlib.sha256(f"gateway-booking:{booking_id}".encode()).digest()
    return "g0" + base64.b32hexencode(digest).decode().rstrip("=").lower()


def _key_path(client: ClientConfig) -> Path:
    assert client.booking.google_calendar is not None
    path = Path(client.booking.google_calendar.service_account_file)
    if not path.is_absolute() and client.folder is not None:
        path = client.folder / path
    return path


class GoogleAuth:
    """Access tokens for one service account key file."""

    def __init__(self, client: ClientConfig, http: httpx.AsyncClient, token_url: str) -> None:
        self.client = client
        self.http = http
        self.token_url = token_url
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    def _assertion(self) -> str:
        from google.auth import jwt
        from google.oauth2 import service_account

        path = _key_path(self.client)
        try:
            creds = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(path)
            )
        except (OSError, ValueError) as exc:
            raise ToolError(
                VENDOR,
                f"cannot read booking.google_calendar.service_account_file ({path}) in "
                f"{config_file(self.client)}: {exc}",
                retryable=False,
            ) from exc
        now = int(time.time())
        payload = {
            "iss": creds.service_account_email,
            "scope": SCOPE,
            "aud": self.token_url,
            "iat": now,
            "exp": now + 3600,
        }
        token: bytes = jwt.encode(creds.signer, payload)  # type: ignore[no-untyped-call]
        return token.decode()

    async def token(self) -> str:
        async with self._lock:
            if self._token is not None and self._token[1] > time.time() + 60:
                return self._token[0]
            assertion = self._assertion()
            try:
                resp = await self.http.post(
                    self.token_url,
                    data={
                        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": assertion,
                    },
                    timeout=10.0,
                )
            except httpx.HTTPError as exc:
                raise transport_error(VENDOR, exc) from exc
            if resp.status_code in (400, 401, 403):
                raise ToolError(
                    VENDOR,
                    f"the token endpoint refused the service account ({resp.status_code}): check "
                    f"booking.google_calendar.service_account_file in {config_file(self.client)}: "
                    f"{resp.text[:200]}",
                    retryable=False,
                )
            if resp.status_code != 200:
                raise vendor_error(VENDOR, resp, "booking.google_calendar.service_account_file")
            body = resp.json()
            self._token = (
                str(body["access_token"]),
                time.time() + float(body.get("expires_in", 3600)),
            )
            return self._token[0]

    def forget(self) -> None:
        self._token = None


class GoogleApi:
    def __init__(self, client: ClientConfig, http: httpx.AsyncClient, endpoints: Endpoints) -> None:
        assert client.booking.google_calendar is not None
        self.client = client
        self.http = http
        self.base = endpoints.google_base.rstrip("/") + "/calendar/v3"
        self.calendar_id = client.booking.google_calendar.calendar_id
        self.auth = GoogleAuth(client, http, endpoints.google_token_url)
        self.credential = (
            f"booking.google_calendar (calendar_id / service_account_file) in {config_file(client)}"
        )

    async def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        token = await self.auth.token()
        try:
            resp = await self.http.request(
                method,
                self.base + path,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10.0,
                **kwargs,  # type: ignore[arg-type]
            )
        except httpx.HTTPError as exc:
            raise transport_error(VENDOR, exc) from exc
        if resp.status_code == 401:
            self.auth.forget()  # an expired token: a retry gets a new one
        return resp

    async def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        resp = await self.request(
            "POST",
            "/freeBusy",
            json={
                "timeMin": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "timeMax": end.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "items": [{"id": self.calendar_id}],
            },
        )
        if resp.status_code != 200:
            raise vendor_error(VENDOR, resp, self.credential)
        cal = (resp.json().get("calendars") or {}).get(self.calendar_id) or {}
        errors = cal.get("errors") or []
        if errors:
            reasons = ", ".join(str(e.get("reason")) for e in errors)
            raise ToolError(
                VENDOR,
                f"freeBusy for {self.calendar_id!r}: {reasons} (is the calendar shared with the "
                f"service account? {self.credential})",
                retryable=any(e.get("reason") == "backendError" for e in errors),
            )
        return [
            (
                datetime.fromisoformat(str(b["start"]).replace("Z", "+00:00")),
                datetime.fromisoformat(str(b["end"]).replace("Z", "+00:00")),
            )
            for b in cal.get("busy") or []
        ]


class GoogleCalendar(VendorCalendar):
    """Free/busy: the local bookings plus what the Google calendar holds."""

    name = "google_calendar"
    label = "Google free/busy"
    options = CallOptions(timeout_s=15.0, max_attempts=2)

    def __init__(
        self,
        client: ClientConfig,
        local: LocalCalendar,
        http: httpx.AsyncClient,
        endpoints: Endpoints,
        cache: BusyCache,
    ) -> None:
        api = GoogleApi(client, http, endpoints)
        super().__init__(client, local, api, api.calendar_id, cache)


class GoogleCalendarDeliverer(VendorDeliverer[GoogleApi]):
    """Pushes ``calendar.google`` rows: one event per booking, exactly once."""

    kind = GOOGLE_KIND

    def _new_api(self, client: ClientConfig) -> GoogleApi:
        return GoogleApi(client, self.http, self.endpoints)

    async def deliver(self, row: OutboxRow) -> None:
        client = self.registry.clients.get(row.client_id)
        if client is None or client.booking.google_calendar is None:
            raise ToolError(VENDOR, f"client {row.client_id!r} has no booking.google_calendar")
        push = row.payload_as(CalendarPush)
        booking_id = push.booking_id
        status = await booking_status(self.db, booking_id)
        if status not in ("booked", "held"):
            raise ToolError(VENDOR, f"booking {booking_id} is {status or 'gone'}: not pushed")
        api = self._api(client)
        eid = event_id(booking_id)
        start, end = push.start, push.end
        cal = quote(api.calendar_id, safe="")
        busy = await api.busy(start, end)
        if busy:
            resp = await api.request("GET", f"/calendars/{cal}/events/{eid}")
            if resp.status_code == 200 and resp.json().get("status") != "cancelled":
                return  # pushed before (the delivered mark was lost)
            if resp.status_code not in (404, 410, 200):
                raise vendor_error(VENDOR, resp, api.credential)
            await mark_conflict(
                self.db,
                self.registry,
                row.client_id,
                booking_id,
                "Google Calendar",
                f"{start.isoformat()} is busy in calendar {api.calendar_id}",
            )
            raise ToolError(
                VENDOR,
                f"conflict: {start.isoformat()} is already busy in Google Calendar; booking "
                f"{booking_id} marked conflict and the business notified",
            )
        contact = await lead_contact(self.db, booking_id)
        service = push.service or "Appointment"
        name = push.name or contact.get("name") or ""
        details = "\n".join(f"{k}: {v}" for k, v in sorted(contact.items()))
        body = {
            "id": eid,
            "summary": f"{service} - {name}" if name else service,
            "description": f"Booked by the receptionist (booking {booking_id}).\n{details}",
            "start": {"dateTime": start.isoformat(), "timeZone": client.timezone},
            "end": {"dateTime": end.isoformat(), "timeZone": client.timezone},
        }
        resp = await api.request("POST", f"/calendars/{cal}/events", json=body)
        if resp.status_code in (200, 201, 409):
            # 409: an event with this id exists: ours, from an earlier attempt.
            if self.cache is not None:
                self.cache.forget(row.client_id)
            return
        raise vendor_error(VENDOR, resp, api.credential)


async def check_google_calendar(
    client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
) -> list[str]:
    """Reads the calendar (``GET calendars/{id}``); problem lines, empty when fine."""
    where = config_file(client)
    if client.booking.google_calendar is None:
        return [f"booking.google_calendar is missing in {where}"]
    path = _key_path(client)
    if not path.is_file():
        return [f"booking.google_calendar.service_account_file: {path} does not exist ({where})"]
    endpoints = Endpoints.of_urls(urls)
    api = GoogleApi(client, http, endpoints)
    try:
        resp = await api.request("GET", f"/calendars/{quote(api.calendar_id, safe='')}")
    except ToolError as exc:
        return [str(exc)]
    if resp.status_code == 200:
        return []
    if resp.status_code == 404:
        return [
            f"Google Calendar answered 404: calendar {api.calendar_id!r} not found or not shared "
            f"with the service account (booking.google_calendar.calendar_id in {where})"
        ]
    return [f"Google Calendar answered {vendor_error(VENDOR, resp, api.credential)!s}"]

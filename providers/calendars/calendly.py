"""Calendly (``booking.provider: calendly``), API v2 (``CALENDLY_BASE_URL``).

- Auth: ``Authorization: Bearer <booking.calendly.token>`` (a personal access
  token or an OAuth token).
- Busy: ``GET {base}/event_type_available_times?event_type=<uri>&start_time=&end_time=``
  (``start_time`` must be in the future; at most 7 days per request, so longer
  ranges are split), each available start lasting the event type's ``duration``
  (``GET {base}/event_types/{uuid}``); what is not available there is busy.
  Cached 30 s per client and range, merged with the local bookings and holds.
- Push: the Scheduling API, ``POST {base}/invitees`` (Create Event Invitee).
  It takes no idempotency key, so each attempt first lists the events already
  booked for the invitee at that time (``GET {base}/scheduled_events?user=
  &invitee_email=&min_start_time=&max_start_time=&status=active``, the user from
  ``GET {base}/users/me``): one there = pushed before. A start Calendly refuses
  as not available = the slot was taken there -> conflict.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from engine.config import ClientConfig
from engine.errors import ToolError
from engine.outbox import OutboxRow
from engine.payloads import CalendarPush
from engine.providers import CallOptions
from engine.tools.calendar import LocalCalendar
from providers.calendars.common import (
    CALENDLY_KIND,
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

__all__ = ["CalendlyCalendar", "CalendlyDeliverer", "check_calendly"]

VENDOR = "calendly"
MAX_RANGE = timedelta(days=7)
"""The span ``event_type_available_times`` accepts per request (7 days in the v2
docs; Calendly raised it to 31 in July 2026: 7 works with both)."""


def utcnow() -> datetime:
    """Now (tests pin it): Calendly is asked about the future only."""
    return datetime.now(UTC)


def _z(value: datetime) -> str:
    """UTC, ISO 8601 with ``Z`` (``2026-11-24T22:00:00.000000Z``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class CalendlyApi:
    """One client's Calendly account and event type."""

    def __init__(self, client: ClientConfig, http: httpx.AsyncClient, endpoints: Endpoints) -> None:
        assert client.booking.calendly is not None
        self.client = client
        self.http = http
        self.base = endpoints.calendly_base.rstrip("/")
        self.token = client.booking.calendly.token
        raw = client.booking.calendly.event_type.strip().rstrip("/")
        self.event_type_uuid = raw.rsplit("/", 1)[-1]
        self.event_type_uri = raw if raw.startswith("http") else f"{self.base}/event_types/{raw}"
        self.credential = f"booking.calendly.token in {config_file(client)}"
        self._duration: timedelta | None = None
        self._user: str | None = None
        self._lock = asyncio.Lock()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(
                method,
                self.base + path,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=10.0,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise transport_error(VENDOR, exc) from exc

    async def resource(self, path: str, what: str) -> dict[str, Any]:
        """``GET`` a single resource (``{"resource": {...}}``)."""
        resp = await self.request("GET", path)
        if resp.status_code == 404:
            raise ToolError(
                VENDOR,
                f"{what} not found (404): check booking.calendly.event_type in "
                f"{config_file(self.client)}",
                retryable=False,
            )
        if resp.status_code != 200:
            raise vendor_error(VENDOR, resp, self.credential)
        body = resp.json().get("resource")
        if not isinstance(body, dict):
            raise ToolError(VENDOR, f"{what}: no resource in the answer", retryable=True)
        return body

    async def duration(self) -> timedelta:
        async with self._lock:
            if self._duration is None:
                event_type = await self.resource(
                    f"/event_types/{self.event_type_uuid}", "the event type"
                )
                self._duration = timedelta(minutes=int(event_type.get("duration") or 30))
            return self._duration

    async def user(self) -> str:
        if self._user is None:
            me = await self.resource("/users/me", "the token's user")
            self._user = str(me["uri"])
        return self._user

    async def available_starts(self, start: datetime, end: datetime) -> list[datetime]:
        """Available start times in ``[start, end)``, in requests of at most 7 days."""
        out: list[datetime] = []
        t0 = start
        while t0 < end:
            t1 = min(end, t0 + MAX_RANGE)
            resp = await self.request(
                "GET",
                "/event_type_available_times",
                params={
                    "event_type": self.event_type_uri,
                    "start_time": _z(t0),
                    "end_time": _z(t1),
                },
            )
            if resp.status_code != 200:
                raise vendor_error(VENDOR, resp, self.credential)
            for item in resp.json().get("collection") or []:
                if item.get("status", "available") == "available" and item.get(
                    "invitees_remaining", 1
                ):
                    out.append(_parse(item["start_time"]))
            t0 = t1
        return sorted(set(out))

    async def busy(
        self, start: datetime, end: datetime, now: datetime | None = None
    ) -> list[tuple[datetime, datetime]]:
        """The parts of ``[start, end)`` Calendly does not offer (from now on: the
        past is not Calendly's to answer, and it refuses to be asked)."""
        now = now or utcnow()
        begin = max(start, now + timedelta(seconds=5))
        if begin >= end:
            return []
        length = await self.duration()
        free: list[tuple[datetime, datetime]] = []
        for s in await self.available_starts(begin, end):
            e = s + length
            if free and s <= free[-1][1]:
                free[-1] = (free[-1][0], max(free[-1][1], e))
            else:
                free.append((s, e))
        busy: list[tuple[datetime, datetime]] = []
        cursor = begin
        for s, e in free:
            if s > cursor:
                busy.append((cursor, min(s, end)))
            cursor = max(cursor, e)
            if cursor >= end:
                break
        if cursor < end:
            busy.append((cursor, end))
        return [(s, e) for s, e in busy if s < e]


class CalendlyCalendar(VendorCalendar):
    """Free/busy: the local bookings plus what Calendly does not offer."""

    name = "calendly"
    label = "Calendly availability"
    options = CallOptions(timeout_s=20.0, max_attempts=2)

    def __init__(
        self,
        client: ClientConfig,
        local: LocalCalendar,
        http: httpx.AsyncClient,
        endpoints: Endpoints,
        cache: BusyCache,
    ) -> None:
        api = CalendlyApi(client, http, endpoints)
        super().__init__(client, local, api, api.event_type_uri, cache)


def _refused_slot(resp: httpx.Response) -> bool:
    """Calendly's answer to a start time that is not (or no longer) available:
    a 4xx naming ``start_time`` or saying the time is unavailable."""
    if resp.status_code not in (400, 409, 422):
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    details = body.get("details") if isinstance(body, dict) else None
    if isinstance(details, list) and any(
        isinstance(d, dict) and d.get("parameter") == "start_time" for d in details
    ):
        return True
    text = resp.text.lower()
    return "not available" in text or "no longer available" in text or "unavailable" in text


class CalendlyDeliverer(VendorDeliverer[CalendlyApi]):
    """Pushes ``calendar.calendly`` rows: one invitee (event) per booking."""

    kind = CALENDLY_KIND
    rate_per_s = 1.0  # Create Event Invitee: 10 per user per minute on paid plans

    def _new_api(self, client: ClientConfig) -> CalendlyApi:
        return CalendlyApi(client, self.http, self.endpoints)

    async def _booked_before(self, api: CalendlyApi, email: str, start: datetime) -> bool:
        resp = await api.request(
            "GET",
            "/scheduled_events",
            params={
                "user": await api.user(),
                "invitee_email": email,
                "min_start_time": _z(start - timedelta(seconds=1)),
                "max_start_time": _z(start + timedelta(seconds=1)),
                "status": "active",
            },
        )
        if resp.status_code != 200:
            raise vendor_error(VENDOR, resp, api.credential)
        for event in resp.json().get("collection") or []:
            same_type = event.get("event_type") in (None, api.event_type_uri) or str(
                event.get("event_type", "")
            ).endswith("/" + api.event_type_uuid)
            if same_type and abs((_parse(event["start_time"]) - start).total_seconds()) < 1:
                return True
        return False

    async def deliver(self, row: OutboxRow) -> None:
        client = self.registry.clients.get(row.client_id)
        if client is None or client.booking.calendly is None:
            raise ToolError(VENDOR, f"client {row.client_id!r} has no booking.calendly")
        push = row.payload_as(CalendarPush)
        booking_id = push.booking_id
        status = await booking_status(self.db, booking_id)
        if status not in ("booked", "held"):
            raise ToolError(VENDOR, f"booking {booking_id} is {status or 'gone'}: not pushed")
        api = self._api(client)
        start = push.start
        contact = await lead_contact(self.db, booking_id)
        email = contact.get("email") or ""
        name = push.name or contact.get("name") or "Customer"
        if not email:
            raise ToolError(
                VENDOR,
                f"booking {booking_id} has no email: Calendly needs the invitee's email",
                retryable=False,
            )
        if await self._booked_before(api, email, start):
            return  # pushed before (the answer or the delivered mark was lost)
        body: dict[str, Any] = {
            "event_type": api.event_type_uri,
            "start_time": _z(start),
            "invitee": {"name": name, "email": email, "timezone": client.timezone},
        }
        phone = contact.get("phone")
        if phone and phone.startswith("+"):
            body["invitee"]["text_reminder_number"] = phone
        resp = await api.request("POST", "/invitees", json=body)
        if resp.status_code in (200, 201):
            if self.cache is not None:
                self.cache.forget(row.client_id)
            return
        if _refused_slot(resp):
            await mark_conflict(
                self.db,
                self.registry,
                row.client_id,
                booking_id,
                "Calendly",
                f"{start.isoformat()} is not available in Calendly: {resp.text[:200]}",
            )
            raise ToolError(
                VENDOR,
                f"conflict: {start.isoformat()} is not available in Calendly; booking "
                f"{booking_id} marked conflict and the business notified",
            )
        raise vendor_error(VENDOR, resp, api.credential)


async def check_calendly(
    client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
) -> list[str]:
    """Reads the token's user (``GET /users/me``) and the event type
    (``GET /event_types/{uuid}``); problem lines, empty when fine."""
    if client.booking.calendly is None:
        return [f"booking.calendly is missing in {config_file(client)}"]
    api = CalendlyApi(client, http, Endpoints.of_urls(urls))
    try:
        await api.user()
        await api.resource(f"/event_types/{api.event_type_uuid}", "the event type")
    except ToolError as exc:
        return [f"Calendly: {exc}"]
    return []

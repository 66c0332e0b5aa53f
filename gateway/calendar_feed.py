"""A client's local bookings as an iCalendar feed (RFC 5545), for Google/Apple Calendar.

``GET /calendar/{client_id}.ics?token=...`` serves the bookings the local
calendar holds for the client (table ``bookings``), from 30 days ago onwards:
one ``VEVENT`` per booking with a stable ``UID`` (``<booking_id>@<domain>``),
so a calendar app that polls the feed updates its events instead of adding
copies. A booked slot is ``CONFIRMED``, a slot held while a person approves
it ``TENTATIVE``, and a released hold ``CANCELLED`` (so an app that showed the
hold removes it). Test bookings are left out.

The feed is on only for a client whose ``booking.ics_token`` is set, and only
with that token in the query (compared in constant time). Anything else — no
such client, no token configured, a missing or wrong token — is the same 404,
so the URL does not reveal which clients exist.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Query, Response
from icalendar import Calendar, Event, vDuration

from engine.config import ClientConfig, ClientRegistry
from engine.db.database import Database
from engine.db.fast import Row, Tx

__all__ = ["FEED_HORIZON", "UID_DOMAIN", "CalendarFeedDeps", "calendar_router", "render_feed"]

UID_DOMAIN = "bookings.gateway.invalid"
"""The right-hand side of every event's ``UID`` (``<booking_id>@<domain>``)."""
FEED_HORIZON = timedelta(days=30)
"""How far back the feed reaches; every future booking is in it."""
REFRESH = timedelta(minutes=15)
MEDIA_TYPE = "text/calendar; charset=utf-8"

_STATUS = {"booked": "CONFIRMED", "held": "TENTATIVE", "released": "CANCELLED"}
# A released hold is a change to an event a subscriber may have seen as TENTATIVE.
_SEQUENCE = {"booked": 0, "held": 0, "released": 1}


def _not_found() -> HTTPException:
    return HTTPException(404, "Not Found")


def _authorized(client: ClientConfig | None, token: str | None) -> bool:
    expected = client.booking.ics_token if client is not None else None
    # Compare even when there is nothing to compare with: same work, same answer.
    given = (token or "").encode()
    ok = hmac.compare_digest(given, (expected or "\x00").encode())
    return ok and bool(expected) and bool(token)


async def _rows(db: Database, client_id: str, since: datetime) -> list[Row]:
    async def read(tx: Tx) -> list[Row]:
        return await tx.fetchall(
            "SELECT b.booking_id, b.start_iso, b.end_iso, b.service, b.name, b.channel,"
            " b.status, b.created_iso, l.fields"
            " FROM bookings b LEFT JOIN leads l"
            " ON l.booking_id = b.booking_id AND l.client_id = b.client_id"
            " WHERE b.client_id = $1 AND b.end_ts > $2 AND b.test = $3"
            " ORDER BY b.start_ts, b.booking_id, l.created_ts DESC",
            client_id,
            since.timestamp(),
            False,
        )

    return await db.fast.query(read)


def _fields(raw: object) -> dict[str, object]:
    if not raw:
        return {}
    try:
        found = json.loads(str(raw))
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def render_feed(client: ClientConfig, rows: list[Row], now: datetime) -> bytes:
    """The VCALENDAR of ``rows`` (bookings joined with their lead's fields)."""
    cal = Calendar()
    cal.add("prodid", "-//channel gateway//bookings feed//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", f"{client.name} bookings")
    cal.add("x-wr-timezone", client.timezone)
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", vDuration(REFRESH))
    seen: set[str] = set()
    for booking_id, start_iso, end_iso, service, name, channel, status, created, raw in rows:
        if booking_id in seen:  # one event per booking, with its newest lead's fields
            continue
        seen.add(booking_id)
        fields = _fields(raw)
        who = str(name or fields.get("name") or "").strip()
        event = Event()
        event.add("uid", f"{booking_id}@{UID_DOMAIN}")
        event.add("dtstamp", _utc(created) if created else now)
        event.add("created", _utc(created) if created else now)
        event.add("dtstart", _utc(start_iso))
        event.add("dtend", _utc(end_iso))
        event.add("summary", f"{service} — {who}" if who else str(service))
        lines = [f"Booked by {who}" if who else "Booking"]
        for label, key in (("Phone", "phone"), ("Email", "email")):
            if fields.get(key):
                lines.append(f"{label}: {fields[key]}")
        if channel:
            lines.append(f"Channel: {channel}")
        lines.append(f"Booking id: {booking_id}")
        event.add("description", "\n".join(lines))
        event.add("status", _STATUS.get(str(status), "CONFIRMED"))
        event.add("sequence", _SEQUENCE.get(str(status), 0))
        event.add("transp", "TRANSPARENT" if status == "released" else "OPAQUE")
        cal.add_component(event)
    ical: bytes = cal.to_ical()
    return ical


def _utc(iso: object) -> datetime:
    when = datetime.fromisoformat(str(iso))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class CalendarFeedDeps:
    """What the iCalendar feed reads: the clients, the database of local bookings
    and the engine's clock (pinned in tests, as the bookings were made by it)."""

    registry: ClientRegistry
    db: Database
    clock: Callable[[], datetime]


def calendar_router(deps: Callable[[], CalendarFeedDeps]) -> APIRouter:
    """``GET /calendar/{client_id}.ics?token=``: the client's iCalendar feed."""
    router = APIRouter()

    @router.get(
        "/calendar/{client_id}.ics",
        response_class=Response,
        responses={200: {"content": {"text/calendar": {}}}, 404: {}},
    )
    async def feed(client_id: str, token: str | None = Query(default=None)) -> Response:
        feed_deps = deps()
        client = feed_deps.registry.get(client_id)
        if not _authorized(client, token) or client is None:
            raise _not_found()
        # The engine's notion of now (pinned in tests), as the bookings were made by it.
        now = feed_deps.clock().astimezone(UTC).replace(microsecond=0)
        rows = await _rows(feed_deps.db, client.client_id, now - FEED_HORIZON)
        return Response(
            render_feed(client, rows, now),
            media_type=MEDIA_TYPE,
            headers={
                "Cache-Control": "private, max-age=300",
                "Content-Disposition": f'inline; filename="{client.client_id}.ics"',
            },
        )

    return router

"""Calendly provider against a local stub of Calendly's API v2: users/me, event
types, event_type_available_times, scheduled_events and the Scheduling API's
Create Event Invitee (``POST /invitees``), with its documented shapes
(``{"resource": ...}``, ``{"collection": [...], "pagination": {...}}``, resource
URIs, ``{"title", "message", "details"}`` errors). The real engine and outbox rows."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

import providers.calendars.calendly as calendly_module
from engine.errors import ToolError
from engine.outbox import Deliverer, OutboxRow
from engine.tools.calendar import Booking, BookingRequest
from gateway.app import Gateway
from gateway.integrations import vendor_urls
from providers.calendars import Endpoints, calendar_deliverers
from providers.calendars.common import list_conflicts
from tests.stub_server import StubServer

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=TZ)
TOKEN = "cal-pat-1"
ET = "ET0000000001"
USER = "U0000000001"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CalendlyStub(StubServer):
    """Offers the event type (60 min) every 30 minutes, 08:00-20:00 local, except
    where ``taken`` or a booked event overlaps."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[tuple[datetime, datetime]] = []
        self.events: list[dict[str, Any]] = []
        self.fail: list[int] = []
        self.drop_invitee_answer = False
        self.creates = 0
        self.available_ranges: list[tuple[datetime, datetime]] = []
        self.lock = threading.Lock()

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if status == 429:
            h.send_header("Retry-After", "9")
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, status: int, param: str, message: str) -> None:
        self._reply(
            h,
            status,
            {
                "title": "Invalid Argument",
                "message": "The supplied parameters are invalid.",
                "details": [{"parameter": param, "message": message}],
            },
        )

    def _free(self, start: datetime, length: timedelta) -> bool:
        local = start.astimezone(TZ)
        if not (
            local.hour >= 8 and (local + length).hour * 60 + (local + length).minute <= 20 * 60
        ):
            return False
        busy = self.taken + [(_ts(e["start_time"]), _ts(e["end_time"])) for e in self.events]
        return all(not (s < start + length and e > start) for s, e in busy)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        parts = urlsplit(h.path)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        base = self.url
        with self.lock:
            if h.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(
                    h, 401, {"title": "Unauthenticated", "message": "The access token is invalid"}
                )
            if self.fail:
                status = self.fail.pop(0)
                return self._reply(h, status, {"title": "Injected", "message": "injected"})
            if path == "/users/me" and method == "GET":
                return self._reply(
                    h,
                    200,
                    {
                        "resource": {
                            "uri": f"{base}/users/{USER}",
                            "name": "Spa del Sol",
                            "timezone": "America/Los_Angeles",
                            "current_organization": f"{base}/organizations/O1",
                        }
                    },
                )
            if path == f"/event_types/{ET}" and method == "GET":
                return self._reply(
                    h,
                    200,
                    {
                        "resource": {
                            "uri": f"{base}/event_types/{ET}",
                            "name": "Massage",
                            "duration": 60,
                            "active": True,
                            "kind": "solo",
                        }
                    },
                )
            if path.startswith("/event_types/"):
                return self._reply(h, 404, {"title": "Resource Not Found", "message": "nope"})
            if path == "/event_type_available_times" and method == "GET":
                assert query["event_type"] == f"{base}/event_types/{ET}"
                t0, t1 = _ts(query["start_time"]), _ts(query["end_time"])
                if t0 <= NOW:
                    return self._error(h, 400, "start_time", "must be in the future")
                if t1 - t0 > timedelta(days=7):
                    return self._error(
                        h, 400, "end_time", "date range can be no greater than 1 week"
                    )
                self.available_ranges.append((t0, t1))
                slots = []
                cursor = t0.astimezone(TZ).replace(minute=0, second=0, microsecond=0)
                while cursor < t1:
                    if cursor >= t0 and self._free(cursor, timedelta(minutes=60)):
                        slots.append(
                            {
                                "status": "available",
                                "invitees_remaining": 1,
                                "start_time": _z(cursor),
                                "scheduling_url": f"https://calendly.com/spa/massage/{cursor:%Y-%m-%dT%H:%M}",
                            }
                        )
                    cursor += timedelta(minutes=30)
                return self._reply(h, 200, {"collection": slots})
            if path == "/scheduled_events" and method == "GET":
                assert query["user"] == f"{base}/users/{USER}"
                lo, hi = _ts(query["min_start_time"]), _ts(query["max_start_time"])
                found = [
                    e
                    for e in self.events
                    if e["invitee_email"] == query.get("invitee_email")
                    and lo <= _ts(e["start_time"]) <= hi
                    and e["status"] == query.get("status", e["status"])
                ]
                public = [{k: v for k, v in e.items() if k != "invitee_email"} for e in found]
                return self._reply(
                    h,
                    200,
                    {
                        "collection": public,
                        "pagination": {
                            "count": len(public),
                            "next_page": None,
                            "previous_page": None,
                            "next_page_token": None,
                            "previous_page_token": None,
                        },
                    },
                )
            if path == "/invitees" and method == "POST":
                body = json.loads(raw)
                assert body["event_type"] == f"{base}/event_types/{ET}"
                start = _ts(body["start_time"])
                invitee = body["invitee"]
                assert invitee["email"] and invitee["name"] and invitee["timezone"]
                if not self._free(start, timedelta(minutes=60)):
                    return self._error(
                        h, 400, "start_time", "The selected time is no longer available."
                    )
                self.creates += 1
                event_uuid = uuid.uuid4().hex
                event = {
                    "uri": f"{base}/scheduled_events/{event_uuid}",
                    "name": "Massage",
                    "status": "active",
                    "start_time": _z(start),
                    "end_time": _z(start + timedelta(minutes=60)),
                    "event_type": f"{base}/event_types/{ET}",
                    "invitee_email": invitee["email"],
                }
                self.events.append(event)
                if self.drop_invitee_answer:
                    self.drop_invitee_answer = False
                    h.close_connection = True
                    return None  # created, but the answer is lost
                return self._reply(
                    h,
                    201,
                    {
                        "resource": {
                            "uri": f"{event['uri']}/invitees/{uuid.uuid4().hex}",
                            "event": event["uri"],
                            "email": invitee["email"],
                            "name": invitee["name"],
                            "status": "active",
                            "timezone": invitee["timezone"],
                        }
                    },
                )
        return self._reply(h, 404, {"title": "Resource Not Found", "message": "no route"})


@pytest.fixture
def stub(serve_stub: Any) -> CalendlyStub:
    return serve_stub(CalendlyStub())


@pytest.fixture
async def gw(
    tmp_path: Path, stub: CalendlyStub, monkeypatch: pytest.MonkeyPatch, open_gw: Any
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("CALENDLY_BASE_URL", stub.url)
    monkeypatch.setattr(calendly_module, "utcnow", lambda: NOW.astimezone(UTC))
    clients = tmp_path / "clients"
    shutil.copytree(REPO / "clients", clients)
    config = clients / "spa-del-sol" / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "  provider: local                  # local | google_calendar | calendly\n"
    assert old in text
    text = text.replace(
        old, f"  provider: calendly\n  calendly:\n    token: {TOKEN}\n    event_type: {ET}\n"
    )
    config.write_text(text, encoding="utf-8")
    async with open_gw(
        clients_dir=clients, data_dir=tmp_path / "data", clock=lambda: NOW
    ) as gateway:
        assert "spa-del-sol" in gateway.registry.clients, gateway.registry.problems
        yield gateway


def _client(gw: Gateway) -> Any:
    return gw.registry.clients["spa-del-sol"]


def _deliverer(gw: Gateway) -> Deliverer:
    (deliverer,) = [
        d
        for d in calendar_deliverers(
            gw.registry, httpx.AsyncClient(), gw.db, Endpoints.of_urls(vendor_urls(gw.settings))
        )
        if d.kind == "calendar.calendly"
    ]
    return deliverer


async def _book(gw: Gateway, booking_id: str, start: datetime) -> None:
    """A booking and its lead (with the email Calendly needs), as a turn's commit writes them."""
    client = _client(gw)
    gw.engine.tools.for_client(client)  # as a turn does: the client's calendar is built
    end = start + timedelta(minutes=60)
    booking = Booking(booking_id, client.client_id, start, end, "Swedish Massage", "Ana Ruiz")
    request = BookingRequest(booking, channel="web", session_id="s1", turn_id="t-" + booking_id)
    fields = {"name": "Ana Ruiz", "phone": "+14155550134", "email": "ana@example.com"}

    async def write(tx: Any) -> None:
        await gw.calendar.book_in(tx, request)
        await tx.execute(
            "INSERT INTO leads (lead_id, client_id, channel, session_id, status, booking_id,"
            " service, start_iso, end_iso, fields, properties, turn_id, test, created_iso,"
            " created_ts) VALUES ($1, $2, 'web', 's1', 'booked', $3, 'Swedish Massage', $4,"
            " $5, $6, '{}', $7, $8, $9, $10)",
            "lead-" + booking_id,
            client.client_id,
            booking_id,
            start.isoformat(),
            end.isoformat(),
            json.dumps(fields),
            "t-" + booking_id,
            False,
            NOW.isoformat(),
            NOW.timestamp(),
        )

    await gw.db.fast.transaction(write)


async def _rows(gw: Gateway, kind: str) -> list[OutboxRow]:
    return [r for r in await gw.outbox.list() if r.kind == kind]


async def test_availability_excludes_what_calendly_does_not_offer(
    gw: Gateway, stub: CalendlyStub
) -> None:
    from purposes.lead_capture.availability import Availability

    monday = datetime(2026, 11, 23, 0, 0, tzinfo=TZ)
    stub.taken = [(monday.replace(hour=10), monday.replace(hour=12))]
    tools = gw.engine.tools.for_client(_client(gw))
    avail = Availability(_client(gw), tools.calendar, NOW)
    slots = await avail.free_slots(60, day=monday.date(), limit=40)
    starts = {s.astimezone(TZ).hour * 60 + s.astimezone(TZ).minute for s in slots}
    assert 9 * 60 in starts and 12 * 60 in starts, sorted(starts)
    for minute in (9 * 60 + 30, 10 * 60, 10 * 60 + 30, 11 * 60, 11 * 60 + 30):
        assert minute not in starts
    problem = await avail.problem(monday.replace(hour=10), 60, "Swedish Massage")
    assert problem is not None and problem.code == "taken"


async def test_long_ranges_are_asked_in_weeks_from_now_on(gw: Gateway, stub: CalendlyStub) -> None:
    tools = gw.engine.tools.for_client(_client(gw))
    start = NOW - timedelta(days=1)  # the past is not asked (Calendly refuses it)
    busy = await tools.calendar.busy("spa-del-sol", start, NOW + timedelta(days=10))
    assert len(stub.available_ranges) == 2
    assert all(t0 > NOW and t1 - t0 <= timedelta(days=7) for t0, t1 in stub.available_ranges)
    assert busy and all(b.start >= NOW for b in busy)  # nights are not offered
    n = len(stub.available_ranges)
    await tools.calendar.busy("spa-del-sol", start, NOW + timedelta(days=10))
    assert len(stub.available_ranges) == n  # cached


async def test_booking_pushed_once_across_503_429_and_a_lost_answer(
    gw: Gateway, stub: CalendlyStub
) -> None:
    start = datetime(2026, 11, 24, 14, 0, tzinfo=TZ)
    await _book(gw, "b-1", start)
    (row,) = await _rows(gw, "calendar.calendly")
    assert row.key == "calendar:b-1"
    deliverer = _deliverer(gw)
    stub.fail = [503]
    with pytest.raises(ToolError) as err:
        await deliverer.deliver(row)
    assert err.value.retryable
    stub.fail = [429]
    with pytest.raises(ToolError) as err:
        await deliverer.deliver(row)
    assert err.value.retryable and getattr(err.value, "retry_after_s", None) == 9
    stub.drop_invitee_answer = True
    with pytest.raises(ToolError) as err:
        await deliverer.deliver(row)  # created there, the answer lost
    assert err.value.retryable
    await deliverer.deliver(row)  # found by the invitee's email and time: not created again
    await deliverer.deliver(row)  # the delivered mark was lost: delivered again
    assert stub.creates == 1 and len(stub.events) == 1
    assert stub.events[0]["start_time"] == _z(start)
    assert await gw.calendar.status("b-1") == "booked"


async def test_unauthorized_is_dead_naming_the_token(gw: Gateway, stub: CalendlyStub) -> None:
    await _book(gw, "b-2", datetime(2026, 11, 24, 15, 0, tzinfo=TZ))
    (row,) = await _rows(gw, "calendar.calendly")
    stub.fail = [401]
    with pytest.raises(ToolError) as err:
        await _deliverer(gw).deliver(row)
    assert not err.value.retryable
    assert "booking.calendly.token" in str(err.value)
    assert stub.creates == 0


async def test_taken_slot_is_a_conflict_listed_and_notified(
    gw: Gateway, stub: CalendlyStub
) -> None:
    start = datetime(2026, 11, 24, 11, 0, tzinfo=TZ)
    await _book(gw, "b-3", start)
    (row,) = await _rows(gw, "calendar.calendly")
    stub.taken = [(start + timedelta(minutes=30), start + timedelta(minutes=90))]  # taken there
    with pytest.raises(ToolError) as err:
        await _deliverer(gw).deliver(row)
    assert not err.value.retryable and "conflict" in str(err.value)
    assert stub.creates == 0
    assert await gw.calendar.status("b-3") == "conflict"
    notices = [r for r in await gw.outbox.list() if r.kind.startswith("notify.")]
    assert notices and all(r.key.startswith("b-3-calendar-conflict:") for r in notices)
    assert "Calendly" in notices[0].payload.escalation.reason
    (conflict,) = await list_conflicts(gw.db, "spa-del-sol")
    assert conflict["booking_id"] == "b-3" and conflict["start"] == start.isoformat()
    assert conflict["provider"] == "calendar.calendly"


async def test_integration_check(gw: Gateway, stub: CalendlyStub) -> None:
    from providers.calendars.calendly import check_calendly

    async with httpx.AsyncClient() as http:
        assert await check_calendly(_client(gw), http, gw.settings) == []
        stub.fail = [401]
        (problem,) = await check_calendly(_client(gw), http, gw.settings)
        assert "401" in problem and "booking.calendly.token" in problem

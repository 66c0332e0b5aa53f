"""Google Calendar provider against a local stub of Google's token endpoint,
freeBusy and events.insert (the real engine and outbox rows)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from engine.errors import ToolError
from engine.outbox import Deliverer, OutboxRow
from engine.tools.calendar import Booking, BookingRequest
from gateway.app import Gateway
from gateway.integrations import vendor_urls
from providers.calendars import Endpoints, calendar_deliverers
from providers.calendars.google import event_id
from tests.stub_server import StubServer

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=TZ)
CAL = "spa@group.calendar.google.com"


class GoogleStub(StubServer):
    def __init__(self, public_pem: bytes) -> None:
        super().__init__()
        self.public_pem = public_pem
        self.busy: list[tuple[str, str]] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.fail: list[int] = []
        self.fail_inserts: list[int] = []
        self.inserts = 0
        self.lock = threading.Lock()

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if status == 429:
            h.send_header("Retry-After", "7")
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        path = h.path.split("?")[0]
        with self.lock:
            if path == "/token":
                form = parse_qs(raw.decode())
                assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
                try:
                    claims = jwt.decode(form["assertion"][0], certs=self.public_pem.decode())
                except ValueError:
                    return self._reply(h, 400, {"error": "invalid_grant"})
                assert claims["iss"] == "svc@proj.iam.gserviceaccount.com"
                assert "calendar" in claims["scope"]
                return self._reply(h, 200, {"access_token": "tok-1", "expires_in": 3600})
            if h.headers.get("Authorization") != "Bearer tok-1":
                return self._reply(h, 401, {"error": {"code": 401}})
            if self.fail:
                return self._reply(h, self.fail.pop(0), {"error": {"message": "injected"}})
            if path == "/calendar/v3/freeBusy":
                body = json.loads(raw)
                t0, t1 = body["timeMin"], body["timeMax"]
                busy = [
                    {"start": s, "end": e}
                    for s, e in self.busy
                    if _ts(s) < _ts(t1) and _ts(e) > _ts(t0)
                ]
                busy += [
                    {"start": ev["start"]["dateTime"], "end": ev["end"]["dateTime"]}
                    for ev in self.events.values()
                    if _ts(ev["start"]["dateTime"]) < _ts(t1)
                    and _ts(ev["end"]["dateTime"]) > _ts(t0)
                ]
                return self._reply(h, 200, {"calendars": {body["items"][0]["id"]: {"busy": busy}}})
            prefix = "/calendar/v3/calendars/spa%40group.calendar.google.com"
            if path == prefix and method == "GET":
                return self._reply(h, 200, {"id": CAL})
            if path == prefix + "/events" and method == "POST":
                if self.fail_inserts:
                    status = self.fail_inserts.pop(0)
                    return self._reply(h, status, {"error": {"message": "injected"}})
                body = json.loads(raw)
                if body["id"] in self.events:
                    return self._reply(h, 409, {"error": {"code": 409, "message": "duplicate"}})
                self.inserts += 1
                self.events[body["id"]] = body
                return self._reply(h, 200, body)
            if path.startswith(prefix + "/events/") and method == "GET":
                ev = self.events.get(path.rsplit("/", 1)[1])
                return self._reply(h, 200 if ev else 404, ev or {"error": {"code": 404}})
        return self._reply(h, 404, {"error": "no route"})


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def key_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    crypt.RSASigner.from_string(private)  # the key google-auth will sign with
    return private, public


@pytest.fixture
def stub(key_pair: tuple[bytes, bytes], serve_stub: Any) -> GoogleStub:
    return serve_stub(GoogleStub(key_pair[1]))


@pytest.fixture
async def gw(
    tmp_path: Path,
    stub: GoogleStub,
    key_pair: tuple[bytes, bytes],
    monkeypatch: pytest.MonkeyPatch,
    open_gw: Any,
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("GOOGLE_CALENDAR_BASE_URL", stub.url)
    monkeypatch.setenv("GOOGLE_OAUTH_TOKEN_URL", stub.url + "/token")
    clients = tmp_path / "clients"
    shutil.copytree(REPO / "clients", clients)
    folder = clients / "spa-del-sol"
    (folder / "sa.json").write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "svc@proj.iam.gserviceaccount.com",
                "private_key": key_pair[0].decode(),
                "private_key_id": "k1",
                "token_uri": stub.url + "/token",
            }
        )
    )
    config = folder / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "  provider: local                  # local | google_calendar | calendly\n"
    assert old in text
    text = text.replace(
        old,
        "  provider: google_calendar\n  google_calendar:\n"
        f"    calendar_id: {CAL}\n    service_account_file: sa.json\n",
    )
    config.write_text(text, encoding="utf-8")
    async with open_gw(
        clients_dir=clients, data_dir=tmp_path / "data", clock=lambda: NOW
    ) as gateway:
        assert "spa-del-sol" in gateway.registry.clients, gateway.registry.problems
        yield gateway


def _client(gw: Gateway) -> Any:
    return gw.registry.clients["spa-del-sol"]


async def _book(gw: Gateway, booking_id: str, start: datetime, minutes: int = 60) -> None:
    client = _client(gw)
    gw.engine.tools.for_client(client)  # as a turn does: the client's calendar is built
    booking = Booking(
        booking_id, client.client_id, start, start + timedelta(minutes=minutes), "Massage", "Ana"
    )
    request = BookingRequest(booking, channel="web", session_id="s1", turn_id="t-" + booking_id)

    async def write(tx: Any) -> None:
        await gw.calendar.book_in(tx, request)

    await gw.db.fast.transaction(write)


def _deliverer(gw: Gateway, http: Any) -> Deliverer:
    """The ``calendar.google`` deliverer, on the gateway's base URLs (its Settings)."""
    (deliverer,) = [
        d
        for d in calendar_deliverers(
            gw.registry, http, gw.db, Endpoints.of_urls(vendor_urls(gw.settings))
        )
        if d.kind == "calendar.google"
    ]
    return deliverer


async def _rows(gw: Gateway, kind: str) -> list[OutboxRow]:
    return [r for r in await gw.outbox.list() if r.kind == kind]


async def test_availability_excludes_google_busy(gw: Gateway, stub: GoogleStub) -> None:
    from purposes.lead_capture.availability import Availability

    monday = datetime(2026, 11, 23, 0, 0, tzinfo=TZ)
    stub.busy = [("2026-11-23T18:00:00Z", "2026-11-23T20:00:00Z")]  # 10:00-12:00 local
    tools = gw.engine.tools.for_client(_client(gw))
    avail = Availability(_client(gw), tools.calendar, NOW)
    slots = await avail.free_slots(60, day=monday.date(), limit=40)
    starts = {s.astimezone(TZ).hour * 60 + s.astimezone(TZ).minute for s in slots}
    assert slots, "some slots are free"
    for minute in (10 * 60, 10 * 60 + 30, 11 * 60, 11 * 60 + 30):
        assert minute not in starts
    problem = await avail.problem(monday.replace(hour=10), 60, "Massage")
    assert problem is not None and problem.code == "taken"


async def test_booking_pushed_once_despite_503_and_retry(gw: Gateway, stub: GoogleStub) -> None:
    start = datetime(2026, 11, 24, 14, 0, tzinfo=TZ)
    await _book(gw, "b-1", start)
    rows = await _rows(gw, "calendar.google")
    assert len(rows) == 1 and rows[0].key == "calendar:b-1"
    deliverer = _deliverer(gw, __import__("httpx").AsyncClient())
    stub.fail = [503]
    with pytest.raises(ToolError) as err:
        await deliverer.deliver(rows[0])
    assert err.value.retryable
    stub.fail = [429]
    with pytest.raises(ToolError) as err:
        await deliverer.deliver(rows[0])
    assert err.value.retryable and getattr(err.value, "retry_after_s", None) == 7
    await deliverer.deliver(rows[0])
    await deliverer.deliver(rows[0])  # the delivered mark was lost: delivered again
    assert stub.inserts == 1
    assert event_id("b-1") in stub.events
    assert 5 <= len(event_id("b-1")) <= 1024 and set(event_id("b-1")) <= set(
        "abcdefghijklmnopqrstuv0123456789"
    )


async def test_unauthorized_is_not_retryable(gw: Gateway, stub: GoogleStub) -> None:
    await _book(gw, "b-2", datetime(2026, 11, 24, 15, 0, tzinfo=TZ))
    (row,) = await _rows(gw, "calendar.google")
    import httpx

    deliverer = _deliverer(gw, httpx.AsyncClient())
    stub.fail = [401]
    with pytest.raises(ToolError) as err:
        await deliverer.deliver(row)
    assert not err.value.retryable
    assert "booking.google_calendar" in str(err.value)


async def test_conflict_marked_and_business_notified(gw: Gateway, stub: GoogleStub) -> None:
    import httpx

    start = datetime(2026, 11, 24, 11, 0, tzinfo=TZ)
    await _book(gw, "b-3", start)
    (row,) = await _rows(gw, "calendar.google")
    stub.busy = [("2026-11-24T19:00:00Z", "2026-11-24T19:30:00Z")]  # taken there meanwhile
    deliverer = _deliverer(gw, httpx.AsyncClient())
    with pytest.raises(ToolError) as err:
        await deliverer.deliver(row)
    assert not err.value.retryable and "conflict" in str(err.value)
    assert stub.inserts == 0
    assert await gw.calendar.status("b-3") == "conflict"
    notices = [r for r in await gw.outbox.list() if r.kind.startswith("notify.")]
    assert notices, "an escalation notice is enqueued"
    assert all(r.key.startswith("b-3-calendar-conflict:") for r in notices)
    assert "refused" in notices[0].payload.escalation.reason

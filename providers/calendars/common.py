"""What the vendor calendars share: base URLs, error mapping, the busy cache,
the push hook and the conflict path.

A booking is a row of the local calendar, written by the turn's commit (the
source of truth: no double booking, exactly once). When it becomes ``booked``
the commit also enqueues, in the same transaction, an outbox row
``calendar.google`` / ``calendar.calendly`` keyed ``calendar:<booking_id>``
(:func:`push_hook`); a deliverer pushes it to the vendor. If the vendor refuses
the slot (taken there meanwhile), :func:`mark_conflict` sets the booking's
``status`` to ``conflict`` (listed by ``GET /admin/api/calendar/conflicts``)
and enqueues an escalation notice to the business through its notifiers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar, cast

import httpx

from engine.config import ClientConfig, ClientRegistry
from engine.db.database import Database
from engine.db.fast import Tx
from engine.errors import ToolError
from engine.outbox import Deliverer, Outbox, OutboxItem
from engine.payloads import CalendarKind, CalendarPush, EscalationNotice
from engine.tools.calendar import Booking, Calendar, LocalCalendar
from engine.tools.registry import EMAIL, SLACK
from providers.urls import VendorUrls

__all__ = [
    "BusyCache",
    "Endpoints",
    "ProviderDirectory",
    "config_file",
    "list_conflicts",
    "mark_conflict",
    "push_hook",
    "push_key",
    "vendor_error",
]

log = logging.getLogger("providers.calendars")

GOOGLE_KIND: CalendarKind = "calendar.google"
CALENDLY_KIND: CalendarKind = "calendar.calendly"
KIND_OF: dict[str, CalendarKind] = {"google_calendar": GOOGLE_KIND, "calendly": CALENDLY_KIND}
GOOGLE_BASE = "https://www.googleapis.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
CALENDLY_BASE = "https://api.calendly.com"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Vendor base URLs (``GOOGLE_CALENDAR_BASE_URL``, ``GOOGLE_OAUTH_TOKEN_URL``,
    ``CALENDLY_BASE_URL``); tests point them at local stubs."""

    google_base: str = GOOGLE_BASE
    google_token_url: str = GOOGLE_TOKEN_URL
    calendly_base: str = CALENDLY_BASE

    @classmethod
    def of(
        cls,
        google_base: str | None = None,
        google_token_url: str | None = None,
        calendly_base: str | None = None,
    ) -> Endpoints:
        """The given values (the gateway reads them from its settings), else the
        vendors' own."""
        return cls(
            (google_base or GOOGLE_BASE).rstrip("/"),
            google_token_url or GOOGLE_TOKEN_URL,
            (calendly_base or CALENDLY_BASE).rstrip("/"),
        )

    @classmethod
    def of_urls(cls, urls: VendorUrls) -> Endpoints:
        """The calendar vendors' URLs of ``urls``; the ones it leaves None: defaults."""
        return cls.of(
            urls.google_calendar_base_url, urls.google_oauth_token_url, urls.calendly_base_url
        )


def config_file(client: ClientConfig) -> str:
    if client.folder is not None:
        return str(client.folder / "config.yaml")
    return f"clients/{client.client_id}/config.yaml"


def push_key(booking_id: str) -> str:
    return f"calendar:{booking_id}"


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def vendor_error(vendor: str, resp: httpx.Response, credential: str) -> ToolError:
    """Map a vendor's error answer: 401/403 not retryable (naming ``credential``,
    the config key to fix), 408/429/5xx retryable (``retry_after_s`` from
    ``Retry-After``), anything else not retryable."""
    status = resp.status_code
    body = resp.text[:300]
    if status in (401, 403):
        err = ToolError(
            vendor,
            f"answered {status}: check {credential} (invalid, expired or lacking access): {body}",
            retryable=False,
        )
    elif status in (408, 429) or status >= 500:
        err = ToolError(vendor, f"answered {status}: {body}", retryable=True)
        err.retry_after_s = _retry_after(resp)  # type: ignore[attr-defined]
    else:
        err = ToolError(vendor, f"answered {status}: {body}", retryable=False)
    err.status = status  # type: ignore[attr-defined]
    return err


def transport_error(vendor: str, exc: httpx.HTTPError) -> ToolError:
    return ToolError(vendor, f"unreachable: {type(exc).__name__}: {exc}", retryable=True)


class BusyCache:
    """A vendor's busy intervals per (client, range), kept ``ttl_s`` seconds. The
    last answer stays available (``stale``) for when the vendor is down."""

    def __init__(self, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: dict[
            tuple[str, float, float], tuple[float, list[tuple[datetime, datetime]]]
        ] = {}

    def get(self, key: tuple[str, float, float]) -> list[tuple[datetime, datetime]] | None:
        hit = self._data.get(key)
        if hit is None or self.clock() - hit[0] > self.ttl_s:
            return None
        return hit[1]

    def stale(self, key: tuple[str, float, float]) -> list[tuple[datetime, datetime]] | None:
        hit = self._data.get(key)
        return None if hit is None else hit[1]

    def put(self, key: tuple[str, float, float], value: list[tuple[datetime, datetime]]) -> None:
        if len(self._data) > 2000:
            self._data.clear()
        self._data[key] = (self.clock(), value)

    def forget(self, client_id: str) -> None:
        """Drop ``client_id``'s entries (keyed by the client id, or by a scope
        ending ``|<client_id>``: see :func:`cache_scope`)."""
        suffix = "|" + client_id
        for key in [k for k in self._data if k[0] == client_id or k[0].endswith(suffix)]:
            del self._data[key]


def cache_scope(vendor: str, base: str, account: str, client_id: str) -> str:
    """A :class:`BusyCache` key's first part: the vendor, its base URL and the
    calendar (or event type) as well as the client, so two providers or two
    gateways in one process never read each other's entries."""
    return f"{vendor}|{base}|{account}|{client_id}"


ApiT = TypeVar("ApiT")


class BusyApi(Protocol):
    """A vendor API as a calendar reads it: its base URL and its busy intervals."""

    base: str

    async def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]: ...


class VendorCalendar(Calendar):
    """Free/busy: the local bookings and holds plus what the vendor's calendar holds.

    The vendor's answer is cached (``cache``, 30 s) per scope and range; when
    the vendor fails, the last answer (or none) is used with one warning line:
    the local rules still hold, and a slot taken there meanwhile comes back
    as a conflict when the booking is pushed. Subclasses set ``name``,
    ``options`` and ``label``, and pass their API and account id.
    """

    label = "vendor"
    """How log lines name the vendor ("Google free/busy")."""

    def __init__(
        self,
        client: ClientConfig,
        local: LocalCalendar,
        api: BusyApi,
        account: str,
        cache: BusyCache,
    ) -> None:
        self.client = client
        self.local = local
        self.api = api
        self.account = account
        self.cache = cache

    async def _busy_impl(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        local = await self.local.busy(client_id, start, end)
        scope = cache_scope(self.name, self.api.base, self.account, client_id)
        key = (scope, start.timestamp(), end.timestamp())
        remote = self.cache.get(key)
        if remote is None:
            try:
                remote = await self.api.busy(start, end)
                self.cache.put(key, remote)
            except ToolError as exc:
                remote = self.cache.stale(key) or []
                log.warning("calendar: %s for %s failed: %s", self.label, client_id, exc)
        extra = [
            Booking(f"{self.name}-busy-{i}", client_id, s, e, "busy")
            for i, (s, e) in enumerate(remote)
            if s < end and e > start
        ]
        return sorted(local + extra, key=lambda b: b.start)


class VendorDeliverer(Deliverer, Generic[ApiT]):
    """A calendar push deliverer: its dependencies and one vendor API per client,
    rebuilt when the client's config object changes. Subclasses set ``kind``,
    implement ``deliver`` and ``_new_api``."""

    def __init__(
        self,
        registry: ClientRegistry,
        http: httpx.AsyncClient,
        db: Database,
        endpoints: Endpoints,
        cache: BusyCache | None = None,
    ) -> None:
        self.registry = registry
        self.http = http
        self.db = db
        self.endpoints = endpoints
        self.cache = cache
        self._apis: dict[str, tuple[ClientConfig, ApiT]] = {}

    def _new_api(self, client: ClientConfig) -> ApiT:
        raise NotImplementedError

    def _api(self, client: ClientConfig) -> ApiT:
        hit = self._apis.get(client.client_id)
        if hit is not None and hit[0] is client:
            return hit[1]
        api = self._new_api(client)
        self._apis[client.client_id] = (client, api)
        return api


class ProviderDirectory:
    """Which clients use which vendor calendar (filled as their tools are built),
    so the commit's hook knows which push to enqueue."""

    def __init__(self) -> None:
        self.kinds: dict[str, CalendarKind] = {}


def push_hook(
    directory: ProviderDirectory, db: Database
) -> Callable[[Tx, Booking], Awaitable[None]]:
    """The local calendar's ``on_booked`` hook: enqueue the vendor push in the
    committing transaction (idempotent: keyed by the booking id)."""
    outbox = Outbox(db)

    async def hook(tx: Tx, booking: Booking) -> None:
        kind = directory.kinds.get(booking.client_id)
        if kind is None:
            return
        await outbox.enqueue_in(
            tx,
            [
                OutboxItem(
                    booking.client_id,
                    push_key(booking.booking_id),
                    CalendarPush(
                        kind=kind,
                        booking_id=booking.booking_id,
                        start=booking.start,
                        end=booking.end,
                        service=booking.service,
                        name=booking.name,
                    ),
                )
            ],
        )

    return hook


async def booking_status(db: Database, booking_id: str) -> str | None:
    async def read(tx: Tx) -> object:
        return await tx.fetchone("SELECT status FROM bookings WHERE booking_id = $1", booking_id)

    row = await db.fast.query(read)
    return None if row is None else str(row[0])  # type: ignore[index]


async def lead_contact(db: Database, booking_id: str) -> dict[str, str]:
    """The captured fields of the lead that booked ``booking_id`` (email, phone...)."""
    import json

    async def read(tx: Tx) -> object:
        return await tx.fetchone(
            "SELECT fields FROM leads WHERE booking_id = $1 ORDER BY created_iso DESC", booking_id
        )

    row = await db.fast.query(read)
    if row is None:
        return {}
    try:
        fields = json.loads(row[0])  # type: ignore[index]
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in fields.items() if v} if isinstance(fields, dict) else {}


async def mark_conflict(
    db: Database,
    registry: ClientRegistry,
    client_id: str,
    booking_id: str,
    vendor: str,
    reason: str,
) -> None:
    """The vendor refused a booking the customer was told about: set the booking's
    status to ``conflict`` and enqueue an escalation notice through each of the
    client's notifiers (Slack / email), in one transaction. Idempotent."""
    from engine.tools.notify import Escalation

    client = registry.clients.get(client_id)
    payload_fields: dict[str, str] = {}

    async def read(tx: Tx) -> object:
        return await tx.fetchone(
            "SELECT start_iso, service, name, channel, session_id FROM bookings"
            " WHERE booking_id = $1",
            booking_id,
        )

    row = await db.fast.query(read)
    items: list[OutboxItem] = []
    if row is not None and client is not None:
        values = cast("Sequence[object]", row)
        start_iso, service, name, channel, session_id = (str(v or "") for v in values)
        contact = await lead_contact(db, booking_id)
        payload_fields = {"booking_id": booking_id, "time": start_iso, "service": service}
        phone = contact.get("phone")
        esc = Escalation(
            client_id=client_id,
            client_name=client.name,
            channel=channel if channel in ("phone", "whatsapp", "web", "sms") else "web",  # type: ignore[arg-type]
            session_id=session_id or booking_id,
            reason=(
                f"has a booking ({service or 'appointment'} at {start_iso}) that {vendor} "
                f"refused: {reason[:200]}. Please call them to rebook"
            ),
            who=name or contact.get("name") or None,
            contact=phone if phone and phone.startswith("+") else None,
            email=contact.get("email") or None,
            fields=payload_fields,
            transcript=(),
            created_at=datetime.now(UTC),
            escalation_id=f"{booking_id}-calendar-conflict",
        )
        for route in (SLACK, EMAIL):
            if getattr(client.escalation, route.config_key):
                items.append(
                    OutboxItem(
                        client_id,
                        f"{booking_id}-calendar-conflict:{route.name}",
                        EscalationNotice(kind=route.outbox_kind, escalation=esc),
                    )
                )
    outbox = Outbox(db)

    async def write(tx: Tx) -> int:
        await tx.execute(
            "UPDATE bookings SET status = 'conflict' WHERE booking_id = $1"
            " AND status IN ('booked', 'held')",
            booking_id,
        )
        return await outbox.enqueue_in(tx, items)

    await db.fast.transaction(write)
    if items:
        outbox.wake()
    log.error(
        "calendar: %s refused booking %s of %s: %s (marked conflict, %d notice(s))",
        vendor,
        booking_id,
        client_id,
        reason,
        len(items),
    )


async def list_conflicts(db: Database, client_id: str) -> list[dict[str, object]]:
    """The client's bookings in status ``conflict``, by start, each with its
    push's outbox row state and last error (why the vendor refused it)."""

    async def read(tx: Tx) -> object:
        return await tx.fetchall(
            "SELECT b.booking_id, b.start_iso, b.end_iso, b.service, b.name, b.channel,"
            " b.session_id, o.kind, o.state, o.last_error"
            " FROM bookings b LEFT JOIN outbox o"
            " ON o.idempotency_key = 'calendar:' || b.booking_id"
            " WHERE b.client_id = $1 AND b.status = 'conflict' ORDER BY b.start_ts",
            client_id,
        )

    rows = cast("Sequence[Sequence[object]]", await db.fast.query(read))
    return [
        {
            "booking_id": r[0],
            "start": r[1],
            "end": r[2],
            "service": r[3],
            "name": r[4],
            "channel": r[5],
            "session_id": r[6],
            "provider": r[7],
            "state": r[8],
            "reason": r[9],
        }
        for r in rows
    ]

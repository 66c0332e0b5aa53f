"""Calendar tool: free/busy and bookings.

:class:`LocalCalendar` keeps bookings in the gateway's database (table
``bookings``). A booking is written only inside a turn's atomic commit
(:meth:`LocalCalendar.book_in`): it takes the client's calendar lock row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's one write lock), re-checks
overlap and inserts, so two conversations racing for one slot — on one
replica or on several sharing a PostgreSQL — can never both get it: the loser's
commit raises :class:`~engine.errors.SlotTakenError` and is rolled back whole.

A booking's ``status``: ``booked``; ``held`` while a person approves it
(:mod:`engine.approvals`: busy for everyone else), then ``booked`` or
``released``. Only ``booked`` and ``held`` rows take up time.

Reads go through :class:`Calendar`'s public methods, which own the timeout,
retries and metrics (:mod:`engine.providers`); a calendar implements the
``_..._impl`` behind them. Which calendar a client uses is its
``booking.provider`` (:class:`engine.tools.ToolRegistry`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from engine.db.database import Database
from engine.db.fast import Row, Tx
from engine.errors import SlotTakenError
from engine.providers import CallOptions, Provider

__all__ = ["Booking", "BookingRequest", "Calendar", "LocalCalendar"]


@dataclass(frozen=True, slots=True)
class Booking:
    """A booked interval. ``start``/``end`` are timezone-aware; ``end`` exclusive."""

    booking_id: str
    client_id: str
    start: datetime
    end: datetime
    service: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class BookingRequest:
    """A booking a turn asks for; written by the turn's commit or not at all.

    ``booking_id`` is derived from the turn id, so a retried turn asks for the
    same booking. ``capacity``: how many bookings may overlap it (1: one
    resource per client).
    """

    booking: Booking
    channel: str
    session_id: str
    turn_id: str
    capacity: int = 1
    test: bool = False
    hold: bool = False
    """Hold the slot (status ``held``) while a person approves the booking
    (:mod:`engine.approvals`): busy for everyone else, not yet a booking;
    :meth:`LocalCalendar.settle_hold_in` confirms or releases it."""


class Calendar(Provider):
    """Free/busy of one business's bookable time (``booking.provider``)."""

    kind = "calendar"

    async def busy(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        """Bookings overlapping ``[start, end)`` (timezone-aware; ``end`` exclusive),
        by start. Raises StoreError or ToolError (``retryable`` on a timeout)."""
        return await self._call("busy", lambda: self._busy_impl(client_id, start, end))

    @abstractmethod
    async def _busy_impl(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        """One attempt of :meth:`busy`."""


def _booking(m: sa.RowMapping) -> Booking:
    return Booking(
        booking_id=str(m["booking_id"]),
        client_id=str(m["client_id"]),
        start=datetime.fromisoformat(str(m["start_iso"])),
        end=datetime.fromisoformat(str(m["end_iso"])),
        service=str(m["service"]),
        name=str(m["name"]),
    )


class LocalCalendar(Calendar):
    """The embedded calendar, in the gateway's database (``booking.provider: local``)."""

    name = "local"
    # The database layer retries a dropped connection itself; a slow read is
    # not helped by asking again.
    options = CallOptions(timeout_s=5.0, max_attempts=1)

    def __init__(self, db: Database) -> None:
        self.db = db
        self.on_booked: list[Callable[[Tx, Booking], Awaitable[None]]] = []
        """Called in the committing transaction when a booking becomes ``booked``
        (written, or a hold confirmed): a vendor calendar enqueues its push there
        (:mod:`providers.calendars`), atomically with the booking."""

    async def _busy_impl(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        async def read(tx: Tx) -> list[Row]:
            return await tx.fetchall(
                "SELECT booking_id, client_id, start_iso, end_iso, service, name FROM bookings"
                " WHERE client_id = $1 AND status IN ('booked', 'held')"
                " AND start_ts < $2 AND end_ts > $3"
                " ORDER BY start_ts",
                client_id,
                end.timestamp(),
                start.timestamp(),
            )

        return [
            Booking(
                booking_id=r[0],
                client_id=r[1],
                start=datetime.fromisoformat(r[2]),
                end=datetime.fromisoformat(r[3]),
                service=r[4],
                name=r[5],
            )
            for r in await self.db.fast.query(read)
        ]

    async def book_in(self, tx: Tx, request: BookingRequest) -> None:
        """Write ``request`` in the caller's transaction. Raises SlotTakenError when
        ``capacity`` bookings already overlap it (the caller rolls back)."""
        booking = request.booking
        if not self.db.is_sqlite:
            # SQLite transactions here are BEGIN IMMEDIATE: writers are already serial.
            await tx.execute(
                "INSERT INTO calendar_locks (client_id) VALUES ($1) ON CONFLICT DO NOTHING",
                booking.client_id,
            )
            await tx.fetchone(
                "SELECT client_id FROM calendar_locks WHERE client_id = $1 FOR UPDATE",
                booking.client_id,
            )
        row = await tx.fetchone(
            "SELECT COUNT(*) FROM bookings WHERE client_id = $1"
            " AND status IN ('booked', 'held')"
            " AND start_ts < $2 AND end_ts > $3",
            booking.client_id,
            booking.end.timestamp(),
            booking.start.timestamp(),
        )
        if row is not None and int(row[0]) >= request.capacity:
            raise SlotTakenError(booking.start.isoformat())
        await tx.execute(
            "INSERT INTO bookings (booking_id, client_id, start_ts, end_ts, start_iso, end_iso,"
            " service, name, channel, session_id, turn_id, status, test, created_iso)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $14, $12, $13)",
            booking.booking_id,
            booking.client_id,
            booking.start.timestamp(),
            booking.end.timestamp(),
            booking.start.isoformat(),
            booking.end.isoformat(),
            booking.service,
            booking.name,
            request.channel,
            request.session_id,
            request.turn_id,
            request.test,
            datetime.now(UTC).isoformat(),
            "held" if request.hold else "booked",
        )
        if not request.hold:
            for hook in self.on_booked:
                await hook(tx, booking)

    async def settle_hold_in(self, tx: Tx, booking_id: str, *, confirm: bool) -> bool:
        """Turn a held slot into a booking (``confirm``) or release it, in the
        caller's transaction. False when ``booking_id`` is not held (released
        already, or never held)."""
        changed = await tx.execute(
            "UPDATE bookings SET status = $2 WHERE booking_id = $1 AND status = 'held'",
            booking_id,
            "booked" if confirm else "released",
        )
        if changed and confirm and self.on_booked:
            row = await tx.fetchone(
                "SELECT booking_id, client_id, start_iso, end_iso, service, name"
                " FROM bookings WHERE booking_id = $1",
                booking_id,
            )
            if row is not None:
                booking = Booking(
                    row[0],
                    row[1],
                    datetime.fromisoformat(row[2]),
                    datetime.fromisoformat(row[3]),
                    row[4],
                    row[5],
                )
                for hook in self.on_booked:
                    await hook(tx, booking)
        return bool(changed)

    async def status(self, booking_id: str) -> str | None:
        """``booked``, ``held``, ``released`` or None (no such booking)."""

        async def read(tx: Tx) -> Row | None:
            return await tx.fetchone(
                "SELECT status FROM bookings WHERE booking_id = $1", booking_id
            )

        row = await self.db.fast.query(read)
        return None if row is None else str(row[0])

"""Calendar tool: free/busy and bookings.

:class:`LocalCalendar` keeps bookings in the gateway's database (table
``bookings``). A booking is written only inside a turn's atomic commit
(:meth:`LocalCalendar.book_in`): it takes the client's calendar lock row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's one write lock), re-checks
overlap and inserts, so two conversations racing for one slot — on one
replica or on several sharing a PostgreSQL — can never both get it: the loser's
commit raises :class:`~engine.errors.SlotTakenError` and is rolled back whole.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.db.database import Database
from engine.db.schema import BOOKINGS, CALENDAR_LOCKS
from engine.errors import SlotTakenError

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


class Calendar(ABC):
    @abstractmethod
    async def busy(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        """Bookings overlapping ``[start, end)``. Raises StoreError/ToolError."""


def _booking(m: sa.RowMapping) -> Booking:
    return Booking(
        booking_id=str(m["booking_id"]),
        client_id=str(m["client_id"]),
        start=datetime.fromisoformat(str(m["start_iso"])),
        end=datetime.fromisoformat(str(m["end_iso"])),
        service=str(m["service"]),
        name=str(m["name"]),
    )


_COLUMNS = (
    BOOKINGS.c.booking_id,
    BOOKINGS.c.client_id,
    BOOKINGS.c.start_iso,
    BOOKINGS.c.end_iso,
    BOOKINGS.c.service,
    BOOKINGS.c.name,
)


def _overlapping(client_id: str, start: datetime, end: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        BOOKINGS.c.client_id == client_id,
        BOOKINGS.c.status == "booked",
        BOOKINGS.c.start_ts < end.timestamp(),
        BOOKINGS.c.end_ts > start.timestamp(),
    )


class LocalCalendar(Calendar):
    """The embedded calendar, in the gateway's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def busy(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        async def run() -> list[Booking]:
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(*_COLUMNS)
                    .where(_overlapping(client_id, start, end))
                    .order_by(BOOKINGS.c.start_ts)
                )
                return [_booking(r._mapping) for r in rows]

        return await self.db.retry_once("calendar read", run)

    async def book_in(self, conn: AsyncConnection, request: BookingRequest) -> None:
        """Write ``request`` in the caller's transaction. Raises SlotTakenError when
        ``capacity`` bookings already overlap it (the caller rolls back)."""
        booking = request.booking
        if self.db.is_sqlite:
            # SQLite transactions here are BEGIN IMMEDIATE: writers are already serial.
            pass
        else:
            await conn.execute(
                sa.text(
                    "INSERT INTO calendar_locks (client_id) VALUES (:c) ON CONFLICT DO NOTHING"
                ),
                {"c": booking.client_id},
            )
            await conn.execute(
                sa.select(CALENDAR_LOCKS.c.client_id)
                .where(CALENDAR_LOCKS.c.client_id == booking.client_id)
                .with_for_update()
            )
        overlapping = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(BOOKINGS)
                .where(_overlapping(booking.client_id, booking.start, booking.end))
            )
        ).scalar_one()
        if overlapping >= request.capacity:
            raise SlotTakenError(booking.start.isoformat())
        await conn.execute(
            BOOKINGS.insert().values(
                booking_id=booking.booking_id,
                client_id=booking.client_id,
                start_ts=booking.start.timestamp(),
                end_ts=booking.end.timestamp(),
                start_iso=booking.start.isoformat(),
                end_iso=booking.end.isoformat(),
                service=booking.service,
                name=booking.name,
                channel=request.channel,
                session_id=request.session_id,
                turn_id=request.turn_id,
                status="booked",
                test=request.test,
                created_iso=datetime.now(UTC).isoformat(),
            )
        )

    async def list(self, client_id: str) -> list[Booking]:
        """Every booked interval of a client, soonest first."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(*_COLUMNS)
                .where(BOOKINGS.c.client_id == client_id, BOOKINGS.c.status == "booked")
                .order_by(BOOKINGS.c.start_ts)
            )
            return [_booking(r._mapping) for r in rows]

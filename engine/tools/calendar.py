"""Calendar tool: free/busy and booking.

:class:`LocalCalendar` keeps bookings in SQLite (``data/calendar.sqlite``).
Booking runs in one ``BEGIN IMMEDIATE`` transaction that re-checks overlap, so
two conversations racing for one slot cannot both get it: the loser gets
:class:`~engine.errors.SlotTakenError` and the flow offers other times.
"""

from __future__ import annotations

import sqlite3
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import SlotTakenError, ToolError
from engine.tools._sqlite import SqliteFile

__all__ = ["Booking", "Calendar", "LocalCalendar"]


@dataclass(frozen=True, slots=True)
class Booking:
    """A booked interval. ``start``/``end`` are timezone-aware; ``end`` exclusive."""

    booking_id: str
    client_id: str
    start: datetime
    end: datetime
    service: str
    name: str = ""


class Calendar(ABC):
    @abstractmethod
    async def busy(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        """Bookings overlapping ``[start, end)``."""

    @abstractmethod
    async def book(
        self,
        client_id: str,
        start: datetime,
        end: datetime,
        service: str,
        name: str = "",
        capacity: int = 1,
    ) -> Booking:
        """Book ``[start, end)``. Raises SlotTakenError when ``capacity``
        bookings already overlap it, ToolError when the calendar fails."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
  booking_id TEXT PRIMARY KEY,
  client_id TEXT NOT NULL,
  start_ts REAL NOT NULL,
  end_ts REAL NOT NULL,
  start_iso TEXT NOT NULL,
  end_iso TEXT NOT NULL,
  service TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_client_time ON bookings (client_id, start_ts);
"""


def _row(row: tuple[str, str, str, str, str, str]) -> Booking:
    return Booking(
        booking_id=row[0],
        client_id=row[1],
        start=datetime.fromisoformat(row[2]),
        end=datetime.fromisoformat(row[3]),
        service=row[4],
        name=row[5],
    )


class LocalCalendar(Calendar):
    """SQLite calendar at ``path``."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = SqliteFile(path, _SCHEMA)
        except sqlite3.Error as exc:
            raise ToolError("calendar", f"cannot open {path}: {exc}") from exc

    async def busy(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        def query(conn: sqlite3.Connection) -> list[Booking]:
            rows = conn.execute(
                "SELECT booking_id, client_id, start_iso, end_iso, service, name FROM bookings"
                " WHERE client_id = ? AND start_ts < ? AND end_ts > ? ORDER BY start_ts",
                (client_id, end.timestamp(), start.timestamp()),
            ).fetchall()
            return [_row(r) for r in rows]

        return await self._db.run(query)

    async def book(
        self,
        client_id: str,
        start: datetime,
        end: datetime,
        service: str,
        name: str = "",
        capacity: int = 1,
    ) -> Booking:
        booking = Booking(uuid.uuid4().hex[:12], client_id, start, end, service, name)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                (overlapping,) = conn.execute(
                    "SELECT COUNT(*) FROM bookings WHERE client_id = ? AND start_ts < ? AND end_ts > ?",
                    (client_id, end.timestamp(), start.timestamp()),
                ).fetchone()
                if overlapping >= capacity:
                    raise SlotTakenError(start.isoformat())
                conn.execute(
                    "INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        booking.booking_id,
                        client_id,
                        start.timestamp(),
                        end.timestamp(),
                        start.isoformat(),
                        end.isoformat(),
                        service,
                        name,
                        datetime.now(UTC).isoformat(),
                    ),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        try:
            await self._db.run(insert)
        except sqlite3.Error as exc:
            raise ToolError("calendar", f"booking failed: {exc}", retryable=True) from exc
        return booking

    def close(self) -> None:
        self._db.close()

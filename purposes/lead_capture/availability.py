"""When a service can be booked: business hours, notice, horizon and existing bookings.

All reasoning is in the client's timezone (``ClientConfig.timezone``); times
handed out are timezone-aware. Slots start on the ``booking.slot_minutes``
grid from opening time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from engine.config import DAYS, ClientConfig
from engine.tools import Booking, Calendar

__all__ = ["Availability", "Problem", "format_day", "format_when"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a start time does not work: ``code`` plus a sentence for the user."""

    code: str
    message: str


def format_when(dt: datetime) -> str:
    """``Friday, November 27 at 10:30 AM``."""
    clock = dt.strftime("%I:%M %p").lstrip("0")
    return f"{dt.strftime('%A, %B')} {dt.day} at {clock}"


def format_short(dt: datetime) -> str:
    """``Fri Nov 27, 10:30 AM`` (quick-reply titles)."""
    clock = dt.strftime("%I:%M %p").lstrip("0")
    return f"{dt.strftime('%a %b')} {dt.day}, {clock}"


def format_day(d: date) -> str:
    return f"{d.strftime('%A, %B')} {d.day}"


def _clock(t: time) -> str:
    return t.strftime("%I:%M %p").lstrip("0")


class Availability:
    def __init__(self, client: ClientConfig, calendar: Calendar, now: datetime) -> None:
        self.client = client
        self.calendar = calendar
        self.tz = client.tz
        self.now = now.astimezone(self.tz)
        rules = client.booking.rules
        self.earliest = self.now + timedelta(hours=rules.min_notice_hours)
        self.latest = self.now + timedelta(days=rules.max_days_ahead)
        self.step = timedelta(minutes=client.booking.slot_minutes)

    def hours(self, day: date) -> tuple[datetime, datetime] | None:
        spec = self.client.business_hours.get(DAYS[day.weekday()])
        if spec is None:
            return None
        return (
            datetime.combine(day, spec.open, self.tz),
            datetime.combine(day, spec.close, self.tz),
        )

    def open_days(self) -> str:
        names = {
            "mon": "Monday",
            "tue": "Tuesday",
            "wed": "Wednesday",
            "thu": "Thursday",
            "fri": "Friday",
            "sat": "Saturday",
            "sun": "Sunday",
        }
        days = [names[d] for d in DAYS if self.client.business_hours.get(d) is not None]
        return ", ".join(days)

    def resolve_hour(self, day: date, hour: int, minute: int, ambiguous: bool) -> datetime:
        """Pick am or pm for an ambiguous clock time: the one within opening hours."""
        candidates = [hour]
        if ambiguous and hour < 12:
            candidates.append(hour + 12)
        elif ambiguous and hour == 12:
            candidates = [12]
        opening = self.hours(day)
        for h in candidates:
            dt = datetime.combine(day, time(h, minute), self.tz)
            if opening and opening[0] <= dt < opening[1]:
                return dt
        # Nothing fits: for small hours people mean the afternoon ("at 3").
        h = hour + 12 if ambiguous and 1 <= hour <= 7 else hour
        return datetime.combine(day, time(h, minute), self.tz)

    async def problem(self, start: datetime, minutes: int, service: str) -> Problem | None:
        """Why ``start`` (for ``minutes``) cannot be booked, or None if it can."""
        start = start.astimezone(self.tz)
        end = start + timedelta(minutes=minutes)
        if start < self.now:
            return Problem("past", f"{format_when(start)} has already passed.")
        if start < self.earliest and not self.client.booking.approval.within_hours:
            notice = self.client.booking.rules.min_notice_hours
            hours = f"{notice:g} hour{'s' if notice != 1 else ''}"
            return Problem(
                "too_soon",
                f"We need at least {hours}' notice, so {format_when(start)} is too soon.",
            )
        if start > self.latest:
            return Problem(
                "too_far",
                f"We only take bookings up to {self.client.booking.rules.max_days_ahead} days ahead.",
            )
        opening = self.hours(start.date())
        day_name = start.strftime("%A")
        if opening is None:
            return Problem(
                "closed", f"We're closed on {day_name}s (we're open {self.open_days()})."
            )
        open_at, close_at = opening
        if start < open_at or end > close_at:
            what = f"a {minutes}-minute {service}" if service else f"a {minutes}-minute appointment"
            return Problem(
                "outside_hours",
                f"On {day_name}s we're open {_clock(open_at.time())} to {_clock(close_at.time())}, "
                f"and {what} starting {_clock(start.time())} doesn't fit in that.",
            )
        busy = await self.calendar.busy(self.client.client_id, start, end)
        if busy:
            return Problem("taken", f"{format_when(start)} is already booked.")
        return None

    def approval_needed(self, start: datetime | None, service: str) -> Problem | None:
        """Why booking ``service`` at ``start`` needs a person's OK first
        (``booking.approval``; the message reads after "because"), or None.
        While ``within_hours`` is set, a start inside ``min_notice_hours`` is
        asked for (here) rather than refused (:meth:`problem`)."""
        rules = self.client.booking.approval
        if service and service.casefold() in {name.casefold() for name in rules.services}:
            return Problem("service", f"the team confirms {service} bookings personally")
        if start is not None and rules.within_hours > 0:
            window = max(rules.within_hours, self.client.booking.rules.min_notice_hours)
            if start.astimezone(self.tz) < self.now + timedelta(hours=window):
                hours = f"{window:g} hour{'s' if window != 1 else ''}"
                return Problem("short_notice", f"it's less than {hours} away")
        return None

    async def free_slots(
        self,
        minutes: int,
        *,
        near: datetime | None = None,
        day: date | None = None,
        window: tuple[time, time] | None = None,
        limit: int = 4,
        horizon_days: int = 14,
    ) -> list[datetime]:
        """Free starts for a ``minutes``-long service, chronological.

        ``day`` (+ optional ``window`` of local times): only that day. ``near``:
        the ``limit`` free starts closest to it. Neither: the earliest ones.
        """
        first_day = day or max(
            self.earliest.date(), (near or self.earliest).date() - timedelta(days=3)
        )
        last_day = day or min(first_day + timedelta(days=horizon_days), self.latest.date())
        if near is not None and near.date() < self.earliest.date():
            first_day = self.earliest.date()
        range_start = datetime.combine(first_day, time(0), self.tz)
        range_end = datetime.combine(last_day + timedelta(days=1), time(0), self.tz)
        bookings = await self.calendar.busy(self.client.client_id, range_start, range_end)
        duration = timedelta(minutes=minutes)
        found: list[datetime] = []
        current = first_day
        while current <= last_day:
            opening = self.hours(current)
            if opening:
                start, close_at = opening
                while start + duration <= close_at:
                    if self._fits(start, duration, bookings, window):
                        found.append(start)
                    start += self.step
            current += timedelta(days=1)
            if near is None and len(found) >= limit:
                break
        if near is not None:
            # People who name a time mostly accept a later one over an earlier one.
            found.sort(key=lambda s: (s - near).total_seconds() * (1 if s >= near else -2))
            return sorted(found[:limit])
        return found[:limit]

    def _fits(
        self,
        start: datetime,
        duration: timedelta,
        bookings: list[Booking],
        window: tuple[time, time] | None,
    ) -> bool:
        if start < self.earliest or start > self.latest:
            return False
        if window and not (window[0] <= start.time() < window[1]):
            return False
        end = start + duration
        return not any(b.start < end and b.end > start for b in bookings)

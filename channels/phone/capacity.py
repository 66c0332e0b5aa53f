"""Phone capacity: how many calls this replica carries at once.

Speech models run on the replica's own CPU, so capacity is per replica (per
process: run one gateway process per replica), unlike the live-call registry of
:mod:`channels.phone.admission`, which replicas may share through Redis. A line
is taken in two steps::

    voice webhook   admit(call_sid)   a reservation, RESERVATION_S at most; False when full
    media stream    line(call_sid)    held while the stream lives (the reservation turns
                                      into it); released when the stream ends
    stream refused  drop(call_sid)    a reservation whose stream was refused is given back

Counting reservations closes the gap between the webhook's answer and the
stream's ``start`` (a second or two), so a burst of webhooks cannot admit more
calls than ``max_calls``. A reservation whose stream never comes (the caller hung
up while it rang, Twilio could not connect) frees itself after
:data:`RESERVATION_S`. A stream is never refused for capacity: when it starts
(its webhook may have reached another replica, or its reservation expired) it
holds a line even past ``max_calls``; only new calls are turned away.

Everything runs on the event loop: :meth:`CallCapacity.admit` checks and
reserves without awaiting, so concurrent webhooks cannot both take the last line.

Metrics: ``gateway_phone_calls_live`` (lines held in this process: streams plus
reservations), ``gateway_phone_calls_capacity`` (``max_calls``; ``+Inf`` when
unlimited) and ``gateway_phone_calls_refused_total{reason="busy"}``.
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

__all__ = [
    "DEFAULT_MAX_CALLS",
    "RESERVATION_S",
    "CallCapacity",
    "Lines",
]

DEFAULT_MAX_CALLS = 8
"""Concurrent calls a replica takes when ``GATEWAY_PHONE_MAX_CALLS`` is unset."""
RESERVATION_S = 30.0
"""How long a webhook's line waits for its media stream to start, in seconds."""

CALLS_LIVE = Gauge(
    "gateway_phone_calls_live",
    "Phone calls this process carries: live media streams plus webhook reservations "
    "waiting for their stream",
)
CALLS_CAPACITY = Gauge(
    "gateway_phone_calls_capacity",
    "Concurrent phone calls this process takes (GATEWAY_PHONE_MAX_CALLS; +Inf: unlimited)",
)
CALLS_REFUSED = Counter(
    "gateway_phone_calls_refused_total",
    "Incoming phone calls turned away by the voice webhook, by reason (busy: no free line)",
    ["reason"],
)

_instances: weakref.WeakSet[CallCapacity] = weakref.WeakSet()
CALLS_LIVE.set_function(lambda: float(sum(lines.snapshot().live_calls for lines in _instances)))


@dataclass(frozen=True, slots=True)
class Lines:
    """A snapshot of a replica's lines. ``max_calls`` 0 means unlimited."""

    streaming: int
    reserved: int
    max_calls: int

    @property
    def live_calls(self) -> int:
        """Lines held: live streams plus reservations."""
        return self.streaming + self.reserved

    @property
    def headroom(self) -> int | None:
        """New calls that would still be admitted now; None when unlimited."""
        return max(0, self.max_calls - self.live_calls) if self.max_calls else None

    @property
    def full(self) -> bool:
        return self.headroom == 0

    def as_json(self) -> dict[str, int | bool | None]:
        """For ``/readyz``: ``max_calls`` and ``headroom`` are null when unlimited."""
        return {
            "live_calls": self.live_calls,
            "streaming": self.streaming,
            "reserved": self.reserved,
            "max_calls": self.max_calls or None,
            "headroom": self.headroom,
            "full": self.full,
        }


class CallCapacity:
    """This replica's phone lines: at most ``max_calls`` at once (0: unlimited).

    ``clock`` is monotonic seconds (tests move it to expire reservations).
    """

    def __init__(
        self,
        max_calls: int = DEFAULT_MAX_CALLS,
        *,
        reservation_s: float = RESERVATION_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_calls < 0:
            raise ValueError(f"max_calls must be 0 (unlimited) or more, got {max_calls}")
        if reservation_s <= 0:
            raise ValueError(f"reservation_s must be positive, got {reservation_s}")
        self.max_calls = max_calls
        self.reservation_s = reservation_s
        self.clock = clock
        self._reserved: dict[str, float] = {}  # call_sid -> when the reservation lapses
        self._streaming: Tally[str] = Tally()
        _instances.add(self)
        CALLS_CAPACITY.set(max_calls or math.inf)

    def admit(self, call_sid: str) -> bool:
        """Reserve a line for a new call; False (counted as ``busy``) when none is free.

        A call that already holds a line (Twilio re-sent its webhook) is admitted
        again without taking another.
        """
        now = self.clock()
        self._expire(now)
        if call_sid in self._reserved or call_sid in self._streaming:
            return True
        if self.max_calls and len(self._reserved) + len(self._streaming) >= self.max_calls:
            CALLS_REFUSED.labels("busy").inc()
            return False
        self._reserved[call_sid] = now + self.reservation_s
        return True

    @contextlib.asynccontextmanager
    async def line(self, call_sid: str) -> AsyncIterator[None]:
        """Held while the call's media stream lives; takes over its reservation."""
        self._reserved.pop(call_sid, None)
        self._streaming[call_sid] += 1
        try:
            yield
        finally:
            self._streaming[call_sid] -= 1
            if self._streaming[call_sid] <= 0:
                del self._streaming[call_sid]

    def drop(self, call_sid: str | None) -> None:
        """Give back the reservation of ``call_sid``, if it has one (its stream was refused)."""
        if call_sid is not None:
            self._reserved.pop(call_sid, None)

    def snapshot(self) -> Lines:
        """Lines held now (lapsed reservations not counted)."""
        now = self.clock()
        reserved = sum(1 for until in self._reserved.values() if until > now)
        return Lines(len(self._streaming), reserved, self.max_calls)

    def _expire(self, now: float) -> None:
        for call_sid in [sid for sid, until in self._reserved.items() if until <= now]:
            del self._reserved[call_sid]

"""Per-connection limits of the web chat channel."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SourceLimiter", "TokenBucket", "WebLimits"]


@dataclass(frozen=True)
class WebLimits:
    """Limits applied to every web chat connection (set by the gateway from settings).

    ``max_frame_bytes``: largest accepted client frame, in UTF-8 bytes.
    ``max_text_chars``: longest accepted message text, in characters.
    ``rate_per_s``: sustained message frames per second per connection.
    ``rate_burst``: message frames a connection may send at once before the rate applies.
    ``resume_wait_s``: how long, in seconds, the server waits for a client's first
    frame (a possible ``resume``) before announcing a new session.
    """

    max_frame_bytes: int = 8192
    max_text_chars: int = 2000
    rate_per_s: float = 2.0
    rate_burst: int = 10
    resume_wait_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_frame_bytes <= 0 or self.max_text_chars <= 0:
            raise ValueError("max_frame_bytes and max_text_chars must be > 0")
        if self.rate_per_s <= 0 or self.rate_burst <= 0:
            raise ValueError("rate_per_s and rate_burst must be > 0")
        if self.resume_wait_s < 0:
            raise ValueError("resume_wait_s must be >= 0")


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate_per_s`` tokens per second.

    ``clock`` returns monotonic seconds (tests pass a fake).
    """

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after_s(self) -> float:
        """Seconds until the next token is available (0 if one is)."""
        return max(0.0, (1.0 - self._tokens) / self.rate_per_s)


class SourceLimiter:
    """A token bucket per source address, for new conversations.

    ``per_min``: new sessions one source may start per minute; a burst of
    twice that is allowed. At most ``max_sources`` buckets are kept (the
    least recently used are forgotten), so the limiter itself cannot be
    flooded. Per replica: behind a load balancer each replica counts its own.
    """

    def __init__(
        self, per_min: float, max_sources: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_min <= 0:
            raise ValueError("per_min must be > 0")
        self.per_min = per_min
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket(self, source: str) -> TokenBucket:
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            bucket = TokenBucket(self.per_min / 60.0, max(1, int(2 * self.per_min)), self._clock)
            while len(self._buckets) >= self.max_sources:
                self._buckets.pop(next(iter(self._buckets)))
        self._buckets[source] = bucket  # most recently used last
        return bucket

    def take(self, source: str) -> bool:
        return self._bucket(source).take()

    def retry_after_s(self, source: str) -> float:
        return self._bucket(source).retry_after_s()

"""How much caller audio a call takes in: real time plus a small burst.

Twilio streams the caller's line in real time, 20 ms (160 bytes of 8 kHz
mu-law) per ``media`` message. A peer that sends faster than that is not
Twilio, or is a line catching up after a stall; either way the excess is
dropped before it is reframed and run through the VAD, so a flood costs
each socket little more than parsing its (size-capped) frames. A token bucket in seconds of audio: it fills at one
second per second, up to ``burst_s``; a payload that does not fit is dropped
whole. Time is passed in (never read from a clock here).
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.speech.audio import TWILIO_SAMPLE_RATE_HZ

__all__ = ["BURST_S", "AudioBudget"]

BURST_S = 10.0
"""Audio a call may send ahead of real time, in seconds. Twilio streams in
real time; 10 s lets a simulated caller that sends a whole utterance at once
(test harnesses, load generators) lose nothing, and still bounds what a
flood costs: at most 10 s of audio, then real time."""


@dataclass(slots=True)
class AudioBudget:
    """Admits inbound mu-law payloads at real time (8000 bytes per second) plus ``burst_s``.

    Attributes:
        dropped_s: audio dropped so far, in seconds.
        dropped_payloads: payloads dropped so far.
    """

    started_at: float
    burst_s: float = BURST_S
    dropped_s: float = 0.0
    dropped_payloads: int = 0
    _level_s: float = -1.0
    _at: float = 0.0

    def __post_init__(self) -> None:
        if self.burst_s <= 0:
            raise ValueError(f"burst_s must be positive, got {self.burst_s}")
        self._level_s, self._at = self.burst_s, self.started_at

    def admit(self, payload_bytes: int, now: float) -> bool:
        """True if a payload of ``payload_bytes`` (8 kHz mu-law) arriving at ``now``
        (monotonic s) fits; otherwise it is counted as dropped."""
        seconds = payload_bytes / TWILIO_SAMPLE_RATE_HZ
        self._level_s = min(self.burst_s, self._level_s + max(0.0, now - self._at))
        self._at = max(self._at, now)
        if seconds <= self._level_s + 1e-9:  # float sums of 20 ms frames round a little
            self._level_s -= seconds
            return True
        self.dropped_s += seconds
        self.dropped_payloads += 1
        return False

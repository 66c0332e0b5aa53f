"""Is this inbound audio our own voice coming back? (line-echo detection for barge-in)

On a phone call the caller's line carries some echo of what the bot plays:
the handset's acoustic path, a speakerphone, a hybrid in the network. To a
voice activity detector that echo is speech, and acting on it would make the
bot interrupt itself. Since we know exactly what we played, we can recognise
it: :class:`EchoDetector` keeps the last ``history_ms`` of played audio and
computes the normalised cross-correlation between the latest ``window_ms`` of
inbound audio and every lag of that history (one FFT per check). Echo is a
delayed, attenuated, filtered copy of the playback, so it correlates strongly
(0.8-1.0 even after mu-law coding) whatever its level; a caller talking over
the echo does not (their voice dominates the window), so their barge-in still
counts.

Audio: PCM16 mono at ``sample_rate_hz`` (8 kHz on the phone path). Cost: one
real FFT of ``history + window`` samples (8 kHz, 1500 ms + 100 ms: 16384 points,
about 0.2 ms) per :meth:`EchoDetector.is_echo` call; callers only ask about
frames that would otherwise count as speech, while playback is recent.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["EchoDetector"]


class EchoDetector:
    """Recognises inbound frames that are echo of recently played audio.

    Args:
        sample_rate_hz: rate of both the played and the inbound PCM16.
        history_ms: played audio kept; must cover Twilio's playout lead plus
            the echo path delay (default 1500 ms, room for a lagging inbound stream).
        window_ms: inbound audio compared per check (default 100 ms).
        threshold: normalised correlation at or above which the window is echo.
            Measured with espeak speech through mu-law: echo reads 0.8-1.0
            (also low-pass filtered, or 20 dB down); a different utterance of
            the same voice above 0.7 in about 2 % of frames.
        min_played_dbfs: played audio quieter than this in the history means
            there is nothing to echo (returns False without computing).

    Raises:
        ValueError: non-positive durations or a threshold outside (0, 1).
    """

    def __init__(
        self,
        sample_rate_hz: int = 8000,
        *,
        history_ms: int = 1500,
        window_ms: int = 100,
        threshold: float = 0.7,
        min_played_dbfs: float = -60.0,
    ) -> None:
        if history_ms <= 0 or window_ms <= 0:
            raise ValueError("history_ms and window_ms must be positive")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.sample_rate_hz = sample_rate_hz
        self.threshold = threshold
        self._history_len = sample_rate_hz * history_ms // 1000
        self._window_len = sample_rate_hz * window_ms // 1000
        # raw PCM16 chunks; converted to floats only when a check needs them
        self._played: deque[bytes] = deque()
        self._played_len = 0
        self._inbound: deque[bytes] = deque()
        self._inbound_len = 0
        self._timeline_end: float | None = None  # when the played audio so far ends
        self._min_played_power = (32768.0 * 10 ** (min_played_dbfs / 20)) ** 2
        self.last_correlation = 0.0
        """The correlation found by the last :meth:`is_echo` that computed one."""

    def note_played(self, pcm: bytes, now: float | None = None) -> None:
        """Record audio as it is sent to the caller (PCM16 bytes, any length).

        ``now`` (seconds, monotonic): when it was sent. The history is kept as
        a playout timeline: a pause since the previous audio ended is filled
        with silence, so the echo of a reply's first words lines up with
        "silence, then those words" instead of with the previous reply.
        """
        if now is not None:
            if self._timeline_end is not None and now > self._timeline_end:
                gap = min(
                    self._history_len, round((now - self._timeline_end) * self.sample_rate_hz)
                )
                if gap > 0:
                    self._push(self._played, bytes(2 * gap), self._history_len, is_played=True)
            elif self._timeline_end is None:
                self._push(
                    self._played, bytes(2 * self._history_len), self._history_len, is_played=True
                )
            start = now if self._timeline_end is None else max(now, self._timeline_end)
            self._timeline_end = start + len(pcm) / 2 / self.sample_rate_hz
        self._push(self._played, pcm, self._history_len, is_played=True)

    def note_inbound(self, pcm: bytes) -> None:
        """Record an inbound frame (PCM16); :meth:`is_echo` judges the latest window."""
        self._push(self._inbound, pcm, self._window_len, is_played=False)

    def reset_playback(self) -> None:
        """Forget played audio (e.g. long after playback stopped)."""
        self._played.clear()
        self._played_len = 0
        self._timeline_end = None

    def is_echo(self) -> bool:
        """True if the latest inbound window is explained by the played history."""
        if self._inbound_len < self._window_len or not self._played_len:
            return False
        played = np.frombuffer(b"".join(self._played), dtype="<i2").astype(np.float64)
        if float(np.mean(played * played)) < self._min_played_power:
            return False
        inbound = np.frombuffer(b"".join(self._inbound), dtype="<i2").astype(np.float64)
        window = inbound[-self._window_len :]
        window = window - window.mean()
        window_norm = float(np.sqrt(np.dot(window, window)))
        if window_norm <= 0.0 or played.size < window.size:
            return False
        n = 1 << int(played.size + window.size - 1).bit_length()
        # Cross-correlation of the window against every lag of the history.
        xcorr = np.fft.irfft(np.fft.rfft(played, n) * np.conj(np.fft.rfft(window, n)), n)
        valid = played.size - window.size + 1
        dots = xcorr[:valid]
        energy = np.concatenate(([0.0], np.cumsum(played * played)))
        sums = np.concatenate(([0.0], np.cumsum(played)))
        seg_energy = energy[window.size :] - energy[:valid]
        seg_sum = sums[window.size :] - sums[:valid]
        seg_var = np.maximum(seg_energy - seg_sum * seg_sum / window.size, 1e-9)
        ncc = np.abs(dots) / (np.sqrt(seg_var) * window_norm)
        self.last_correlation = float(ncc.max())
        return self.last_correlation >= self.threshold

    def _push(self, buf: deque[bytes], pcm: bytes, limit: int, *, is_played: bool) -> None:
        if len(pcm) % 2:
            raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")
        buf.append(pcm)
        size = (self._played_len if is_played else self._inbound_len) + len(pcm) // 2
        while buf and size - len(buf[0]) // 2 >= limit:
            size -= len(buf.popleft()) // 2
        if is_played:
            self._played_len = size
        else:
            self._inbound_len = size

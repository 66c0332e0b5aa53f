"""Voice activity detection on fixed-size PCM frames, and frame energy.

A :class:`VoiceActivityDetector` answers "is this frame speech?" for one
frame of PCM16 mono audio. :class:`WebRtcVad` wraps the WebRTC GMM detector
(``webrtcvad``, installed as ``webrtcvad-wheels``), which accepts 10, 20 or
30 ms frames at 8, 16, 32 or 48 kHz; the phone path uses 20 ms frames at
8 kHz (320 bytes) or 16 kHz (640 bytes). :class:`EnergyVad` is a plain
level threshold, useful as a fake in tests and as a backstop.

WebRTC's detector calls loud broadband noise (hiss, static, white noise at
-20 dBFS) speech on every frame. :class:`WebRtcVad` therefore also gates on
spectral flatness (geometric over arithmetic mean of the power spectrum,
Welch-averaged over 8 ms segments): noise is flat (close to 1), voiced speech
is peaky (close to 0). On espeak speech sent through the phone path, a gate
at 0.75 rejects every white-noise frame and about 10 % of speech frames, the
noise-like fricatives, which turn-taking tolerates as short gaps.

WebRTC keeps adaptive noise estimates and a hangover across frames, so use
one detector per call: they are cheap (about 2 µs per frame, plus about
0.1 ms for the flatness check on frames WebRTC calls speech).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import webrtcvad

from providers.speech.audio import FRAME_MS, frame_bytes

__all__ = [
    "SILENCE_DBFS",
    "VOICED_PERIODICITY",
    "EnergyVad",
    "VoiceActivityDetector",
    "WebRtcVad",
    "frame_energy_dbfs",
    "periodicity",
    "spectral_flatness",
]

SILENCE_DBFS = -100.0
"""The level reported for digital silence (the log of zero is clamped here)."""

_WEBRTC_RATES_HZ = (8000, 16000, 32000, 48000)

VOICED_PERIODICITY = 0.4
"""A 40 ms window at or above this :func:`periodicity` is voiced. Measured on
the 8 kHz mu-law path: about 60 % of espeak speech frames the VAD accepts
(vowels and voiced consonants) are above it; pink, white and brown noise at
-25 dBFS never are (their maximum was 0.27)."""


def frame_energy_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dBFS (0 dBFS = a full-scale square wave).

    A full-scale sine reads about -3 dBFS; silence (or empty input) reads
    :data:`SILENCE_DBFS`.

    Raises:
        ValueError: odd byte count.
    """
    if len(pcm) % 2:
        raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")
    if not pcm:
        return SILENCE_DBFS
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = math.sqrt(float(np.mean(samples * samples)))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))


def spectral_flatness(pcm: bytes, sample_rate_hz: int) -> float:
    """Spectral flatness of a PCM16 frame, 0 (a pure tone) to 1 (white noise).

    The power spectrum is averaged over 8 ms Hann-windowed segments with 50 %
    overlap (Welch), without the DC bin, before taking the ratio of its
    geometric to arithmetic mean. Digital silence reads 1.
    """
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    segment = max(16, sample_rate_hz * 8 // 1000)
    if samples.size < segment:
        segment = samples.size
    if segment < 4:
        return 1.0
    segments = np.lib.stride_tricks.sliding_window_view(samples, segment)[:: segment // 2]
    spectra = np.fft.rfft(segments * np.hanning(segment), axis=1)
    power = np.mean(spectra.real**2 + spectra.imag**2, axis=0)[1:]
    power += 1e-3  # keeps log() finite; far below any audible level
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


def periodicity(
    pcm: bytes, sample_rate_hz: int, *, min_pitch_hz: float = 60.0, max_pitch_hz: float = 400.0
) -> float:
    """How periodic PCM16 audio is in the voice pitch range, 0 (noise) to 1 (a pure pulse train).

    The peak of the normalised autocorrelation at lags between
    ``1/max_pitch_hz`` and ``1/min_pitch_hz``, after a first-difference
    pre-emphasis that whitens pink and brown noise (whose raw autocorrelation
    stays high at short lags). Pass at least 40 ms (two 20 ms frames) so a
    60 Hz pitch period fits twice. Silence reads 0.
    """
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if samples.size < 8:
        return 0.0
    x = samples[1:] - 0.97 * samples[:-1]
    x -= x.mean()
    lo = max(1, int(sample_rate_hz / max_pitch_hz))
    hi = min(x.size // 2, int(sample_rate_hz / min_pitch_hz))
    if hi <= lo:
        return 0.0
    n = 1 << int(2 * x.size - 1).bit_length()
    spectrum = np.fft.rfft(x, n)
    acf = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n)[: hi + 1]
    if acf[0] <= 1e-6:
        return 0.0
    # Each lag is normalised by the energy of the two overlapping parts.
    energy = np.cumsum(x * x)
    total = energy[-1]
    lags = np.arange(lo, hi + 1)
    head = energy[x.size - 1 - lags]  # x[0 : N - lag]
    tail = total - energy[lags - 1]  # x[lag : N]
    ncc = acf[lo : hi + 1] / np.sqrt(np.maximum(head * tail, 1e-12))
    return float(max(0.0, ncc.max()))


class VoiceActivityDetector(ABC):
    """Decides per frame whether it contains speech.

    Frames are PCM16 mono of exactly ``frame_ms`` milliseconds at the given
    sample rate (e.g. 20 ms at 8 kHz = 320 bytes).
    """

    frame_ms: int = FRAME_MS

    def is_speech(self, pcm: bytes, sample_rate_hz: int) -> bool:
        """True if the frame is speech.

        Raises:
            ValueError: unsupported sample rate or a frame of the wrong size.
        """
        expected = frame_bytes(sample_rate_hz, self.frame_ms)
        if len(pcm) != expected:
            raise ValueError(
                f"expected a {self.frame_ms} ms frame of {sample_rate_hz} Hz PCM16 "
                f"({expected} bytes), got {len(pcm)} bytes"
            )
        return self._is_speech(pcm, sample_rate_hz)

    @abstractmethod
    def _is_speech(self, pcm: bytes, sample_rate_hz: int) -> bool: ...


class WebRtcVad(VoiceActivityDetector):
    """WebRTC VAD with a spectral-flatness noise gate.

    Args:
        aggressiveness: 0 (least aggressive about filtering out non-speech,
            most sensitive) to 3 (most aggressive: fewer false alarms on noise,
            more missed soft speech).
        frame_ms: 10, 20 or 30.
        max_flatness: frames flatter than this are not speech (see
            :func:`spectral_flatness`); None turns the gate off.
    """

    def __init__(
        self,
        aggressiveness: int = 2,
        *,
        frame_ms: int = FRAME_MS,
        max_flatness: float | None = 0.75,
    ) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {frame_ms}")
        if max_flatness is not None and not 0.0 < max_flatness <= 1.0:
            raise ValueError(f"max_flatness must be in (0, 1], got {max_flatness}")
        self.aggressiveness = aggressiveness
        self.frame_ms = frame_ms
        self.max_flatness = max_flatness
        self._vad = webrtcvad.Vad(aggressiveness)

    def _is_speech(self, pcm: bytes, sample_rate_hz: int) -> bool:
        if sample_rate_hz not in _WEBRTC_RATES_HZ:
            raise ValueError(
                f"WebRTC VAD supports {', '.join(map(str, _WEBRTC_RATES_HZ))} Hz, "
                f"got {sample_rate_hz}"
            )
        if not self._vad.is_speech(pcm, sample_rate_hz):
            return False
        return self.max_flatness is None or (
            spectral_flatness(pcm, sample_rate_hz) <= self.max_flatness
        )


class EnergyVad(VoiceActivityDetector):
    """Speech = frame level at or above ``threshold_dbfs``. No spectral check:
    loud noise counts as speech. For tests and as a simple fallback."""

    def __init__(self, threshold_dbfs: float = -40.0, *, frame_ms: int = FRAME_MS) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.frame_ms = frame_ms

    def _is_speech(self, pcm: bytes, sample_rate_hz: int) -> bool:
        return frame_energy_dbfs(pcm) >= self.threshold_dbfs

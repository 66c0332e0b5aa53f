"""Audio primitives: G.711 mu-law, streaming resampling, fixed-size framing.

Conventions used across ``providers.speech`` and ``channels.phone``:

* "PCM" means signed 16-bit little-endian mono samples (``int16``), 2 bytes
  per sample, as raw ``bytes``.
* "mu-law" means ITU-T G.711 mu-law, 1 byte per sample, mono. Twilio Media
  Streams carry 8 kHz mu-law in 20 ms frames of 160 bytes.
* Sample rates are integers in Hz; durations are in milliseconds unless the
  name says ``_s``.

The mu-law codec uses numpy lookup tables and reproduces CPython's
``audioop.ulaw2lin`` / ``audioop.lin2ulaw`` bit for bit (``audioop`` is
deprecated and removed in Python 3.13). The encoder follows the classic
14-bit algorithm from the Sun/CCITT reference (``g711.c``) that ``audioop``
uses: take the top 14 bits of the sample, clip the magnitude to 8159, add the
bias 33, pick the segment from the position of the highest set bit, keep four
mantissa bits and complement the code word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "FRAME_MS",
    "TWILIO_FRAME_BYTES",
    "TWILIO_SAMPLE_RATE_HZ",
    "ULAW_SILENCE",
    "AudioChunk",
    "FrameBuffer",
    "Resampler",
    "frame_bytes",
    "pcm16_to_float32",
    "pcm16_to_ulaw",
    "resample",
    "ulaw_to_pcm16",
]

TWILIO_SAMPLE_RATE_HZ = 8000
"""Sample rate of Twilio Media Streams audio, in Hz."""
FRAME_MS = 20
"""Frame duration used on the phone path, in ms (Twilio sends 20 ms media chunks)."""
TWILIO_FRAME_BYTES = 160
"""One 20 ms frame of 8 kHz mu-law, in bytes."""
ULAW_SILENCE = 0xFF
"""The mu-law code of digital silence (decodes to 0)."""

_BIAS = 0x84
_CLIP_14BIT = 8159


def _build_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    """mu-law code for every int16 value, indexed by the value viewed as uint16."""
    samples = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    value14 = samples >> 2  # arithmetic shift: the top 14 bits, rounding toward -inf
    negative = value14 < 0
    magnitude = np.minimum(np.where(negative, -value14, value14), _CLIP_14BIT) + (_BIAS >> 2)
    # Segment = index of the first segment end (0x3F, 0x7F, ... 0x1FFF) >= magnitude;
    # 8 when none is (the clipped maximum plus the bias lands there).
    segment = np.searchsorted(
        np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), magnitude
    )
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)  # past the last segment: the largest code
    mask = np.where(negative, 0x7F, 0xFF)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


_ULAW_DECODE = _build_decode_table()
_ULAW_ENCODE = _build_encode_table()


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode G.711 mu-law (1 byte/sample) to PCM int16 (2 bytes/sample).

    Matches ``audioop.ulaw2lin(ulaw, 2)`` exactly.
    """
    codes = np.frombuffer(ulaw, dtype=np.uint8)
    return _ULAW_DECODE[codes].astype("<i2").tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode PCM int16 (2 bytes/sample) to G.711 mu-law (1 byte/sample).

    Matches ``audioop.lin2ulaw(pcm, 2)`` bit for bit.

    Raises:
        ValueError: ``pcm`` has an odd number of bytes.
    """
    samples = _pcm_array(pcm)
    return _ULAW_ENCODE[samples.view(np.uint16)].tobytes()


def pcm16_to_float32(pcm: bytes) -> npt.NDArray[np.float32]:
    """PCM int16 bytes -> float32 samples in [-1, 1)."""
    return _pcm_array(pcm).astype(np.float32) / 32768.0


def frame_bytes(sample_rate_hz: int, frame_ms: int = FRAME_MS, *, sample_width: int = 2) -> int:
    """Size in bytes of one frame: e.g. 20 ms of 8 kHz PCM16 is 320 bytes."""
    return sample_rate_hz * frame_ms // 1000 * sample_width


def _pcm_array(pcm: bytes) -> npt.NDArray[np.int16]:
    if len(pcm) % 2:
        raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2")


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of PCM audio: int16 little-endian mono ``pcm`` at ``sample_rate_hz`` (Hz).

    Raises:
        ValueError: odd byte count or a non-positive sample rate.
    """

    pcm: bytes
    sample_rate_hz: int

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if len(self.pcm) % 2:
            raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(self.pcm)}")

    @property
    def num_samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration_ms(self) -> float:
        """Duration in milliseconds."""
        return self.num_samples * 1000.0 / self.sample_rate_hz


class Resampler:
    """Streaming PCM16 resampler (a thin wrapper around ``soxr.ResampleStream``).

    Feed consecutive pieces of one continuous signal to :meth:`process` and call
    :meth:`flush` once at its end. Pieces may have any even length; the output
    of all calls together has ``round(n_in * out_rate / in_rate)`` samples.
    When both rates are equal, audio passes through unchanged. Not thread-safe:
    one instance per stream.

    Args:
        in_rate_hz: input sample rate in Hz.
        out_rate_hz: output sample rate in Hz.
        quality: soxr quality (``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"``, ``"VHQ"``).
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int, *, quality: str = "HQ") -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate_hz} -> {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._quality = quality
        self._stream: soxr.ResampleStream | None = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.in_rate_hz == self.out_rate_hz:
            return None
        return soxr.ResampleStream(
            self.in_rate_hz, self.out_rate_hz, 1, dtype="int16", quality=self._quality
        )

    def process(self, pcm: bytes) -> bytes:
        """Resample the next piece of PCM16 audio; returns what is ready so far."""
        samples = _pcm_array(pcm)
        if self._stream is None:
            return pcm
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(samples)
        return out.astype("<i2").tobytes()

    def flush(self) -> bytes:
        """End the signal: return the samples still held inside, and reset for a new signal."""
        if self._stream is None:
            return b""
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(
            np.zeros(0, dtype=np.int16), last=True
        )
        self._stream = self._new_stream()
        return out.astype("<i2").tobytes()


def resample(pcm: bytes, in_rate_hz: int, out_rate_hz: int) -> bytes:
    """Resample a whole PCM16 signal in one go (see :class:`Resampler`)."""
    resampler = Resampler(in_rate_hz, out_rate_hz)
    return resampler.process(pcm) + resampler.flush()


class FrameBuffer:
    """Re-chunks a byte stream into frames of exactly ``size`` bytes.

    ``push`` returns every complete frame available; the remainder waits for
    the next push. ``drain(pad=...)`` returns the last partial frame padded
    to full size (or nothing when empty).
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"frame size must be positive, got {size}")
        self.size = size
        self._pending = bytearray()

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        self._pending += data
        whole = len(self._pending) // self.size * self.size
        if not whole:
            return []
        frames = [bytes(self._pending[i : i + self.size]) for i in range(0, whole, self.size)]
        del self._pending[:whole]
        return frames

    def drain(self, pad: int) -> bytes | None:
        """The buffered partial frame padded with byte value ``pad``, or None if empty."""
        if not self._pending:
            return None
        frame = bytes(self._pending) + bytes([pad]) * (self.size - len(self._pending))
        self._pending.clear()
        return frame

    def clear(self) -> None:
        self._pending.clear()

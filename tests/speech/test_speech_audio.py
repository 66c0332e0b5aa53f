"""mu-law tables, resampling and framing."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import pytest

from providers.speech.audio import (
    TWILIO_FRAME_BYTES,
    ULAW_SILENCE,
    AudioChunk,
    FrameBuffer,
    Resampler,
    frame_bytes,
    pcm16_to_float32,
    pcm16_to_ulaw,
    resample,
    ulaw_to_pcm16,
)

ALL_INT16 = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def _audioop() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop is not available on this Python (removed in 3.13)")


def test_ulaw_decode_table_matches_audioop() -> None:
    audioop = _audioop()
    assert ulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_ulaw_encode_matches_audioop_for_every_int16_value() -> None:
    audioop = _audioop()
    assert pcm16_to_ulaw(ALL_INT16) == audioop.lin2ulaw(ALL_INT16, 2)


def test_ulaw_round_trip_is_stable_and_close() -> None:
    # decode(encode(decode(c))) == decode(c): every code decodes to a fixed point
    decoded = ulaw_to_pcm16(ALL_CODES)
    assert ulaw_to_pcm16(pcm16_to_ulaw(decoded)) == decoded
    # encoding then decoding loses at most the quantisation step of the segment
    original = np.frombuffer(ALL_INT16, dtype="<i2").astype(np.int32)
    restored = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(ALL_INT16)), dtype="<i2")
    error = np.abs(restored.astype(np.int32) - original)
    assert error.max() <= 1024  # the top segment's step
    small = np.abs(original) < 100
    assert error[small].max() <= 8  # the first segment's step (the encoder truncates)


def test_ulaw_silence_and_signs() -> None:
    assert pcm16_to_ulaw(b"\x00\x00") == bytes([ULAW_SILENCE])
    assert ulaw_to_pcm16(bytes([ULAW_SILENCE])) == b"\x00\x00"
    loud = np.array([20000, -20000], dtype="<i2").tobytes()
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(loud)), dtype="<i2")
    assert back[0] > 0 > back[1]


def test_encode_rejects_odd_byte_count() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_ulaw(b"\x00\x01\x02")


def test_audio_chunk_duration_and_validation() -> None:
    chunk = AudioChunk(b"\x00\x00" * 160, 8000)
    assert chunk.duration_ms == 20.0
    assert chunk.num_samples == 160
    with pytest.raises(ValueError):
        AudioChunk(b"\x00", 8000)
    with pytest.raises(ValueError):
        AudioChunk(b"", 0)


@pytest.mark.parametrize(("rate_in", "rate_out"), [(8000, 16000), (16000, 8000), (22050, 8000)])
def test_streaming_resampler_output_length(rate_in: int, rate_out: int) -> None:
    seconds = 1
    samples = np.sin(np.arange(rate_in * seconds) * 2 * np.pi * 440 / rate_in) * 8000
    pcm = samples.astype("<i2").tobytes()
    resampler = Resampler(rate_in, rate_out)
    piece = frame_bytes(rate_in)  # 20 ms pieces, as a call delivers them
    out = b"".join(resampler.process(pcm[i : i + piece]) for i in range(0, len(pcm), piece))
    out += resampler.flush()
    assert len(out) // 2 == rate_out * seconds
    assert len(resample(pcm, rate_in, rate_out)) // 2 == rate_out * seconds


def test_resampler_keeps_a_tone_at_its_frequency() -> None:
    rate_in, rate_out = 22050, 8000
    tone = (np.sin(np.arange(rate_in) * 2 * np.pi * 1000 / rate_in) * 10000).astype("<i2")
    out = np.frombuffer(resample(tone.tobytes(), rate_in, rate_out), dtype="<i2")
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * rate_out / len(out)
    assert abs(peak_hz - 1000) < 5


def test_resampler_same_rate_passes_through() -> None:
    pcm = np.arange(100, dtype="<i2").tobytes()
    resampler = Resampler(8000, 8000)
    assert resampler.process(pcm) == pcm
    assert resampler.flush() == b""


def test_frame_buffer_rechunks_and_pads() -> None:
    buffer = FrameBuffer(TWILIO_FRAME_BYTES)
    assert buffer.push(b"\x01" * 100) == []
    frames = buffer.push(b"\x02" * 300)
    assert [len(f) for f in frames] == [160, 160]
    assert len(buffer) == 80
    last = buffer.drain(pad=ULAW_SILENCE)
    assert last is not None and len(last) == 160 and last.endswith(bytes([ULAW_SILENCE]) * 80)
    assert buffer.drain(pad=0) is None


def test_float_conversion_range() -> None:
    values = pcm16_to_float32(np.array([-32768, 0, 32767], dtype="<i2").tobytes())
    assert values.dtype == np.float32
    assert values[0] == -1.0 and values[1] == 0.0 and values[2] < 1.0

"""Audio for simulated callers: espeak-ng speech, WAV files, a speech-like buzz, 20 ms frames.

All PCM here is 16-bit signed little-endian mono; rates are in Hz.

Test-only: production code never imports :mod:`testkit.phone`.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from providers.speech.audio import (
    TWILIO_FRAME_BYTES,
    TWILIO_SAMPLE_RATE_HZ,
    ULAW_SILENCE,
    pcm16_to_ulaw,
    resample,
)

__all__ = [
    "SILENT_FRAME",
    "read_wav",
    "speak",
    "synthesize",
    "trim_silence",
    "ulaw_frames",
    "voiced_buzz",
]

SILENT_FRAME = bytes([ULAW_SILENCE]) * TWILIO_FRAME_BYTES
"""20 ms of digital silence, 8 kHz mu-law: what a quiet line carries."""


def synthesize(
    text: str, *, voice: str = "en-us", words_per_minute: int = 165, trim: bool = True
) -> tuple[bytes, int]:
    """Speak ``text`` with espeak-ng (``espeak-ng -v <voice> --stdout``): (PCM16 mono, rate in Hz).

    Blocking (a subprocess, tens of ms): call it before the call, or through
    ``asyncio.to_thread``. ``trim`` cuts the near-silence (below about
    -42 dBFS) espeak leaves before and after the words, so the speech's own
    onset and end are the audio's.

    Raises:
        FileNotFoundError: espeak-ng is not installed (Debian package ``espeak-ng``).
        subprocess.CalledProcessError: espeak-ng failed.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed; apt-get install espeak-ng")
    wav = subprocess.run(
        [exe, "-v", voice, "-s", str(words_per_minute), "--stdout"],
        input=text.encode("utf-8"),
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    pcm, rate = _parse_wav(wav, "espeak-ng output")
    return (trim_silence(pcm) if trim else pcm), rate


_PIPER_VOICES: dict[str, object] = {}


def speak(
    text: str, voice: str = "espeak", *, models_dir: Path | None = None, repeatable: bool = True
) -> tuple[bytes, int]:
    """Speak ``text`` as a caller would: (PCM16 mono, rate in Hz), silence trimmed.

    ``voice``: ``"espeak"`` (espeak-ng, robotic but always there), or a Piper
    voice, neural: a name installed by ``gateway models install``
    (``en_US-joe-medium``, looked up in ``models_dir``) or a ``.onnx`` path.
    ``repeatable``: Piper without its sampling noise, so the same text gives
    the same audio on every run (tests and benchmarks compare like with like).
    Blocking (tens to hundreds of ms).

    Raises:
        FileNotFoundError: espeak-ng, or the Piper voice, is not installed.
    """
    if voice in ("espeak", "espeak-ng"):
        return synthesize(text)
    from providers.speech import models

    path = Path(voice) if voice.endswith(".onnx") else None
    if path is None:
        folder = models.resolve("piper", voice, models_dir)
        path = folder if folder is not None and folder.suffix == ".onnx" else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"Piper voice {voice!r} is not installed; `gateway models install {voice}`"
        )
    loaded = _PIPER_VOICES.get(str(path))
    if loaded is None:
        from piper import PiperVoice

        loaded = _PIPER_VOICES[str(path)] = PiperVoice.load(str(path))
    from piper import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if repeatable else None
    chunks = list(loaded.synthesize(text, syn_config=config))  # type: ignore[attr-defined]
    pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
    rate = int(chunks[0].sample_rate) if chunks else 22050
    return trim_silence(pcm), rate


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """A 16-bit PCM WAV file as (PCM16 mono, rate in Hz); stereo is averaged to mono.

    Raises:
        ValueError: not 16-bit PCM, or more than 2 channels.
        OSError, wave.Error: unreadable or not a WAV file.
    """
    return _parse_wav(Path(path).read_bytes(), str(path))


def trim_silence(pcm16: bytes, threshold: int = 256) -> bytes:
    """Cut leading and trailing samples quieter than ``threshold`` (int16 units; 256 ≈ -42 dBFS)."""
    samples = np.frombuffer(pcm16, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= threshold)
    if not loud.size:
        return b""
    return samples[loud[0] : loud[-1] + 1].tobytes()


def voiced_buzz(duration_ms: int, *, pitch_hz: float = 150.0, level_dbfs: float = -20.0) -> bytes:
    """A vowel-like buzz as PCM16 at 8000 Hz: ``duration_ms`` of speech without words.

    The harmonics of ``pitch_hz`` up to 3.8 kHz, weighted by three formant
    peaks (700, 1200 and 2500 Hz, an "ah"), scaled to ``level_dbfs`` RMS.
    Through the 8 kHz mu-law path the WebRTC VAD calls every frame of it
    speech at every aggressiveness, and its :func:`~providers.speech.vad.periodicity`
    is about 0.9 (voiced), so turn-taking and barge-in treat it as a caller
    talking; a real recogniser hears no words in it. Deterministic. Pair it
    with a scripted recogniser (:class:`testkit.speech.ScriptedSTT`)
    in tests where what was said is not what is under test.

    Raises:
        ValueError: a non-positive duration or pitch, or a level above 0 dBFS.
    """
    if duration_ms <= 0 or pitch_hz <= 0:
        raise ValueError(
            f"duration_ms and pitch_hz must be positive, got {duration_ms}, {pitch_hz}"
        )
    if level_dbfs > 0:
        raise ValueError(f"level_dbfs must be <= 0, got {level_dbfs}")
    rate = TWILIO_SAMPLE_RATE_HZ
    t = np.arange(rate * duration_ms // 1000) / rate
    signal = np.zeros(t.size)
    for k in range(1, int(3800 / pitch_hz) + 1):
        f = k * pitch_hz
        weight = (
            math.exp(-(((f - 700) / 300) ** 2))
            + 0.6 * math.exp(-(((f - 1200) / 300) ** 2))
            + 0.3 * math.exp(-(((f - 2500) / 400) ** 2))
            + 0.05
        )
        signal += weight * np.sin(2 * math.pi * f * t)
    rms = float(np.sqrt(np.mean(signal**2))) or 1.0
    signal *= 32768 * 10 ** (level_dbfs / 20) / rms
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def ulaw_frames(pcm16: bytes, sample_rate_hz: int) -> list[bytes]:
    """PCM16 mono as Twilio sends it: 8 kHz mu-law in 20 ms (160-byte) frames.

    The last frame is padded with silence.

    Raises:
        ValueError: odd byte count or a non-positive rate.
    """
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    if len(pcm16) % 2:
        raise ValueError("PCM16 audio must have an even number of bytes")
    ulaw = pcm16_to_ulaw(resample(pcm16, sample_rate_hz, TWILIO_SAMPLE_RATE_HZ))
    ulaw += bytes([ULAW_SILENCE]) * (-len(ulaw) % TWILIO_FRAME_BYTES)
    return [ulaw[i : i + TWILIO_FRAME_BYTES] for i in range(0, len(ulaw), TWILIO_FRAME_BYTES)]


def _parse_wav(data: bytes, what: str) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(data)) as reader:
        width, channels = reader.getsampwidth(), reader.getnchannels()
        rate = reader.getframerate()
        pcm = reader.readframes(reader.getnframes())
    if width != 2:
        raise ValueError(f"{what}: {8 * width}-bit samples; only 16-bit PCM is supported")
    if channels == 2:
        stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
        pcm = (stereo.sum(axis=1) // 2).astype("<i2").tobytes()
    elif channels != 1:
        raise ValueError(f"{what}: {channels} channels; use mono or stereo")
    return pcm, rate

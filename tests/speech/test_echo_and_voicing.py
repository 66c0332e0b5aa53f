"""Echo detection against our own playback, and the voicing measure used for barge-in."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
import pytest

from providers.speech.audio import pcm16_to_ulaw, resample, ulaw_to_pcm16
from providers.speech.echo import EchoDetector
from providers.speech.vad import VOICED_PERIODICITY, periodicity

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
FRAME = 320  # bytes: 20 ms of 8 kHz PCM16


def speech(text: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        pcm = resample(reader.readframes(reader.getnframes()), reader.getframerate(), 8000)
    return np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(pcm)), dtype="<i2").astype(np.float64)


def as_line(samples: np.ndarray) -> bytes:
    """Through mu-law, as Twilio delivers it."""
    clipped = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return ulaw_to_pcm16(pcm16_to_ulaw(clipped))


def pink_noise(n: int, dbfs: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2)) * 32768 * 10 ** (dbfs / 20)


def echo_decisions(
    played: np.ndarray, inbound: np.ndarray, delay_frames: int, judged: np.ndarray | None = None
) -> list[bool]:
    """Feed ``played`` as our playback and ``inbound`` (same timeline) as the caller's
    line, ``delay_frames`` later; return the detector's decision for each inbound frame
    that has audio in it (and, if ``judged`` is given, whose index is in it)."""
    detector = EchoDetector()
    played_bytes = as_line(played)
    inbound_bytes = as_line(inbound)
    decisions = []
    frames = len(inbound_bytes) // FRAME
    for i in range(frames):
        if i < len(played_bytes) // FRAME:
            detector.note_played(played_bytes[i * FRAME : (i + 1) * FRAME])
        if i >= delay_frames:
            index = i - delay_frames
            frame = inbound_bytes[index * FRAME : (index + 1) * FRAME]
            detector.note_inbound(frame)
            level = np.frombuffer(frame, dtype="<i2").astype(np.float64).std()
            echo = detector.is_echo()
            if level > 100 and (judged is None or index in judged):
                decisions.append(echo)
    return decisions


def frame_levels(samples: np.ndarray) -> np.ndarray:
    usable = samples[: samples.size // 160 * 160].reshape(-1, 160)
    return 10 * np.log10(np.mean(usable**2, axis=1) + 1e-9)


def test_attenuated_delayed_echo_of_our_voice_is_recognised() -> None:
    bot = speech("Thanks for calling Spa del Sol! How can I help you today?")
    for attenuation_db, delay_frames in ((6, 2), (20, 10), (0, 0)):
        echo = bot * 10 ** (-attenuation_db / 20)
        decisions = echo_decisions(bot, echo, delay_frames)
        assert sum(decisions) >= 0.9 * len(decisions), (attenuation_db, delay_frames)


def test_a_caller_talking_over_the_echo_is_not_echo() -> None:
    bot = speech("Thanks for calling Spa del Sol! How can I help you today?")
    caller = speech("Wait, I want to book a facial on Friday")
    n = max(bot.size, caller.size)
    bot = np.pad(bot, (0, n - bot.size))
    caller = np.pad(caller, (0, n - caller.size))
    echo = bot * 10 ** (-20 / 20)
    # judge the frames where the caller is clearly louder than the echo
    louder = np.flatnonzero(frame_levels(caller) >= frame_levels(echo) + 6)
    decisions = echo_decisions(bot, echo + caller, 3, judged=louder)
    assert len(decisions) > 50
    assert sum(decisions) <= 0.1 * len(decisions)
    # and the same voice saying other words is not taken for echo of it
    alone = echo_decisions(bot, caller, 3)
    assert sum(alone) <= 0.05 * len(alone)


def test_nothing_played_means_no_echo() -> None:
    detector = EchoDetector()
    caller = as_line(speech("hello there"))
    for i in range(len(caller) // FRAME):
        detector.note_inbound(caller[i * FRAME : (i + 1) * FRAME])
        assert not detector.is_echo()


def test_voicing_tells_speech_from_noise_the_vad_accepts() -> None:
    voice = as_line(speech("I would like to book a massage on Friday"))
    noise = as_line(pink_noise(8000 * 2, -25))
    window = 2 * FRAME
    voice_values = [
        periodicity(voice[i : i + window], 8000) for i in range(0, len(voice) - window, FRAME)
    ]
    noise_values = [
        periodicity(noise[i : i + window], 8000) for i in range(0, len(noise) - window, FRAME)
    ]
    assert max(noise_values) < VOICED_PERIODICITY
    assert np.mean(np.array(voice_values) >= VOICED_PERIODICITY) > 0.4
    assert periodicity(bytes(window), 8000) == 0.0

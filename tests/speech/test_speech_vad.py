"""VAD on synthetic speech, digital silence and white noise; frame levels."""

from __future__ import annotations

import numpy as np
import pytest
from speech_helpers import Speak, frames_of, white_noise

from providers.speech.audio import pcm16_to_ulaw, ulaw_to_pcm16
from providers.speech.vad import (
    SILENCE_DBFS,
    EnergyVad,
    WebRtcVad,
    frame_energy_dbfs,
    spectral_flatness,
)

SENTENCE = "I would like to book a massage on Friday afternoon, please."


def speech_fraction(vad: WebRtcVad, pcm: bytes, rate: int) -> float:
    return float(np.mean([vad.is_speech(f, rate) for f in frames_of(pcm, rate)]))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("aggressiveness", [0, 2, 3])
def test_webrtc_vad_separates_speech_silence_and_noise(
    speak: Speak, rate: int, aggressiveness: int
) -> None:
    speech = speak(SENTENCE, rate)
    if rate == 8000:  # the phone path: through mu-law and back
        speech = ulaw_to_pcm16(pcm16_to_ulaw(speech))
    voiced = [f for f in frames_of(speech, rate) if frame_energy_dbfs(f) > -35]
    silence = bytes(rate * 2)  # 1 s of digital silence
    noise = white_noise(3000, rate, rms=3000)  # loud hiss, about -21 dBFS

    assert speech_fraction(WebRtcVad(aggressiveness), b"".join(voiced), rate) > 0.8
    assert speech_fraction(WebRtcVad(aggressiveness), silence, rate) == 0.0
    assert speech_fraction(WebRtcVad(aggressiveness), noise, rate) < 0.05


def test_flatness_gate_is_what_rejects_loud_white_noise() -> None:
    noise = white_noise(2000, 8000, rms=3000)
    ungated = WebRtcVad(2, max_flatness=None)
    gated = WebRtcVad(2)
    assert speech_fraction(ungated, noise, 8000) > 0.5  # WebRTC alone calls hiss speech
    assert speech_fraction(gated, noise, 8000) < 0.05


def test_spectral_flatness_of_tone_and_noise() -> None:
    t = np.arange(160) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype("<i2").tobytes()
    assert spectral_flatness(tone, 8000) < 0.1
    assert spectral_flatness(white_noise(20, 8000, rms=3000), 8000) > 0.75


def test_vad_rejects_wrong_frame_size_and_rate() -> None:
    vad = WebRtcVad()
    with pytest.raises(ValueError, match="320 bytes"):
        vad.is_speech(b"\x00" * 100, 8000)
    with pytest.raises(ValueError, match="Hz"):
        vad.is_speech(b"\x00" * 440, 11025)
    with pytest.raises(ValueError, match="aggressiveness"):
        WebRtcVad(4)


def test_frame_energy_dbfs() -> None:
    full_square = np.array([32767, -32767] * 80, dtype="<i2").tobytes()
    assert frame_energy_dbfs(full_square) == pytest.approx(0.0, abs=0.01)
    t = np.arange(160) / 8000
    half_sine = (np.sin(2 * np.pi * 400 * t) * 16384).astype("<i2").tobytes()
    assert frame_energy_dbfs(half_sine) == pytest.approx(-9.03, abs=0.1)  # -6 dB - 3 dB
    assert frame_energy_dbfs(bytes(320)) == SILENCE_DBFS
    assert frame_energy_dbfs(b"") == SILENCE_DBFS


def test_energy_vad_threshold() -> None:
    vad = EnergyVad(threshold_dbfs=-40)
    assert vad.is_speech(white_noise(20, 8000, rms=1000), 8000)  # about -30 dBFS
    assert not vad.is_speech(white_noise(20, 8000, rms=100), 8000)  # about -50 dBFS

"""Fixtures for the speech tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from speech_helpers import Speak, espeak_pcm, have_espeak


@pytest.fixture
def speak(tmp_path: Path) -> Speak:
    """``speak(text, rate_hz)`` -> PCM16 of espeak-ng saying ``text``; skips without espeak-ng."""
    if not have_espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    counter = iter(range(1_000_000))

    def make(text: str, rate_hz: int) -> bytes:
        return espeak_pcm(text, rate_hz, tmp_path / f"utterance{next(counter)}.wav")

    return make

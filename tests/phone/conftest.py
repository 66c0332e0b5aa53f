"""Shared fixtures of the phone tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from adapters.speech.testing import FakeSpeech


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (instead of hanging) if a blocking websocket read never returns: 90 s per test."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("test took too long")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fake_speech(client: Any) -> Iterator[FakeSpeech]:
    """Fake speech providers on the app of the requesting module's ``client`` (a TestClient).

    Calls started during the test hear what ``fake_speech.stt`` is scripted
    to hear and speak through ``fake_speech.tts`` (a quiet tone, 10 ms per
    character, at once): no espeak-ng, no PocketSphinx, nothing that waits on
    the CPU. The app's own providers are put back afterwards.
    """
    phone = client.app.state.phone
    real = phone.speech_hub
    speech = FakeSpeech()
    phone.speech_hub = speech.hub()
    try:
        yield speech
    finally:
        phone.speech_hub = real

"""Shared fixtures of the phone tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from phone.fake_twilio import AUTH_TOKEN

from testkit.speech import FakeSpeech


@pytest.fixture(scope="module", autouse=True)
def twilio_auth_token() -> Iterator[str]:
    """The clients' Twilio auth token, set before a module's app loads its clients:
    the voice webhook signs with it and mints the stream tokens from it. Also a
    generous audio burst: the fake Twilio sends a caller's turn at once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPA_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        patch.setenv("BRIGHT_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        # The fake Twilio sends a caller's turn at once, not in real time.
        patch.setenv("GATEWAY_PHONE_AUDIO_BURST_S", "600")
        patch.setenv("GATEWAY_PHONE_MAX_CALLS", "0")  # capacity is tested in test_capacity
        yield AUTH_TOKEN


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

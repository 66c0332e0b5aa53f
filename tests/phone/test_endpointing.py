"""Speculative decoding and semantic end-of-turn on a call's inbound side.

The caller's turn is decoded at its first 200 ms pause; a turn that ends in
that pause uses that transcript instead of decoding again, and a caller who
resumes speaking gets a fresh decode. Whether a transcript is a complete
answer (so the turn may end at the pause) depends on what was asked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from phone.fake_twilio import SILENT_FRAME

from channels.phone.endpointing import complete_answer, stt_context
from channels.phone.inbound import Inbound
from channels.phone.turns import EndOfTurn, Pause, SpeechStarted, TurnConfig, TurnEvent
from providers.speech.stt import SpeechToText, SttStream, Transcript
from testkit.phone.audio import ulaw_frames, voiced_buzz

SERVICES = ("Swedish Massage", "massage", "Manicure")


@pytest.mark.parametrize(
    ("text", "expecting", "complete"),
    [
        ("Yes.", "confirmation", True),
        ("Yeah, that's right.", None, True),
        ("No.", "phone", True),  # "no" to the caller-ID offer
        ("617-555-0147.", "phone", True),
        ("six one seven, five five five, oh one four seven", "phone", True),
        ("617-555", "phone", False),
        ("maria.lopez at example.com.", "email", True),
        ("Maria dot Lopez at example dot", "email", False),
        ("Friday at 3 p.m.", "time", True),
        ("Friday at", "time", False),
        ("Friday", "time", False),
        ("A Swedish massage, please.", "service", True),
        ("What are your opening hours?", "name", True),
        ("Maria Lopez.", "name", False),  # the spelling often follows a breath
        ("I'd like to book a massage and", None, False),
        ("um", "confirmation", False),
        ("", "confirmation", False),
    ],
)
def test_complete_answers(text: str, expecting: str | None, complete: bool) -> None:
    assert complete_answer(text, expecting, SERVICES) is complete


def test_the_recogniser_gets_an_example_of_the_slot_asked() -> None:
    context = stt_context("phone")
    assert context is not None and "617-555-0123" in context
    assert "@" in (stt_context("email") or "")
    assert stt_context(None) is None and stt_context("confirmation") is None


class PeekingStream(SttStream):
    """Hears ``text`` for whatever it was fed; counts peeks and finalizations."""

    def __init__(self, owner: PeekingSTT) -> None:
        self.sample_rate_hz = 8000
        self.owner = owner
        self.fed = 0

    def feed(self, pcm: bytes) -> None:
        self.fed += len(pcm)

    async def peek(self) -> Transcript | None:
        self.owner.peeks.append(self.fed)
        return Transcript(self.owner.text, 0.9, self.fed / 16, "peeking")

    async def _finalize_impl(self) -> Transcript:
        self.owner.finalized += 1
        return Transcript(self.owner.text + " (final)", 0.9, self.fed / 16, "peeking")

    async def aclose(self) -> None:
        return None


class PeekingSTT(SpeechToText):
    name = "peeking"

    def __init__(self, text: str) -> None:
        self.text = text
        self.peeks: list[int] = []
        self.finalized = 0

    def _start_stream_impl(self, sample_rate_hz: int, *, session_id: str | None) -> SttStream:
        return PeekingStream(self)


class Caller:
    """Feeds an Inbound frame by frame on a virtual clock, acting on its events
    as the call does (open the stream, speculate at a pause, finalize at the end)."""

    def __init__(self, stt: PeekingSTT) -> None:
        self.now = 0.0
        self.inbound = Inbound(TurnConfig(), 2, stt, lambda: self.now, "CA-test")
        self.events: list[TurnEvent] = []
        self.heard: list[str] = []

    async def on_event(self, event: TurnEvent) -> None:
        self.events.append(event)
        match event:
            case Pause(pause=pause):
                speculation = self.inbound.speculate(pause)
                assert speculation is not None
                await speculation.task
            case EndOfTurn(pause=pause):
                stream = self.inbound.take_stt()
                speculation = self.inbound.take_speculation(pause)
                self.heard.append(await self.inbound.finalize(stream, speculation))
            case SpeechStarted(audio=audio):
                await self.inbound.open_stt(audio)

    async def play(self, frames: Iterator[bytes] | list[bytes]) -> None:
        for frame in frames:
            await self.inbound.feed(frame, self.on_event)
            self.now += 0.02


def speech(ms: int) -> list[bytes]:
    return ulaw_frames(voiced_buzz(ms), 8000)


def silence(ms: int) -> list[bytes]:
    return [SILENT_FRAME] * (ms // 20)


async def test_a_turn_ending_in_its_pause_uses_the_speculative_transcript() -> None:
    stt = PeekingSTT("yes")
    call = Caller(stt)
    await call.play(speech(800) + silence(700))
    assert [type(e).__name__ for e in call.events] == ["SpeechStarted", "Pause", "EndOfTurn"]
    assert len(stt.peeks) == 1 and stt.finalized == 0
    assert call.heard == ["yes"]


async def test_a_caller_who_goes_on_after_a_pause_is_decoded_again() -> None:
    stt = PeekingSTT("my name is")
    call = Caller(stt)
    await call.play(speech(800) + silence(300) + speech(600) + silence(700))
    pauses = [e for e in call.events if isinstance(e, Pause)]
    assert [p.pause for p in pauses] == [1, 2]
    assert len(stt.peeks) == 2 and stt.peeks[1] > stt.peeks[0]  # the second heard more
    assert stt.finalized == 0 and call.heard == ["my name is"]


async def test_without_a_speculation_the_stream_is_finalized() -> None:
    stt = PeekingSTT("yes")
    call = Caller(stt)

    async def no_speculation(event: TurnEvent) -> None:
        call.events.append(event)
        if isinstance(event, EndOfTurn):
            call.heard.append(await call.inbound.finalize(call.inbound.take_stt(), None))
        elif isinstance(event, SpeechStarted):
            await call.inbound.open_stt(event.audio)

    for frame in speech(800) + silence(700):
        await call.inbound.feed(frame, no_speculation)
        call.now += 0.02
    assert stt.finalized == 1 and call.heard == ["yes (final)"]

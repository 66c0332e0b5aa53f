"""The provider base (``engine.providers``): timeouts, retries of retryable errors,
metrics by kind/provider/outcome, and how the calendar, CRM, STT and TTS
interfaces run their ``_impl`` through it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from engine.errors import GatewayError, StoreError, ToolError
from engine.providers import CallOptions
from engine.tools import Booking, Calendar
from engine.tools.notify import DeliveryError
from providers.speech.audio import AudioChunk
from providers.speech.errors import SpeechError, SpeechUnavailableError, SttError, TtsError
from providers.speech.stt import SpeechToText, SttStream, Transcript
from providers.speech.tts import TextToSpeech

_names = itertools.count()
FAST = CallOptions(timeout_s=0.2, max_attempts=3, backoff_s=0.0, max_backoff_s=0.05)
START = datetime(2026, 12, 1, 10, tzinfo=UTC)


def unique(prefix: str) -> str:
    """A provider name of its own per test, so metric counts do not mix."""
    return f"{prefix}-{next(_names)}"


def calls(kind: str, provider: str, outcome: str) -> float:
    labels = {"kind": kind, "provider": provider, "outcome": outcome}
    return REGISTRY.get_sample_value("gateway_provider_calls_total", labels) or 0.0


def retries(kind: str, provider: str) -> float:
    labels = {"kind": kind, "provider": provider}
    return REGISTRY.get_sample_value("gateway_provider_retries_total", labels) or 0.0


class ScriptedCalendar(Calendar):
    """Each attempt of ``busy`` takes the next step: an error to raise, a delay
    in seconds to sleep (then answer), or None to answer at once."""

    def __init__(self, *steps: BaseException | float | None, options: CallOptions = FAST) -> None:
        self.name = unique("scripted")
        self.options = options
        self.steps = list(steps)
        self.attempts = 0

    async def _busy_impl(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        self.attempts += 1
        step = self.steps.pop(0) if self.steps else None
        if isinstance(step, BaseException):
            raise step
        if step is not None:
            await asyncio.sleep(step)
        return [Booking("b-1", client_id, start, end, "Checkup")]


def test_call_options_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        CallOptions(timeout_s=0)
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        CallOptions(max_attempts=0)
    with pytest.raises(ValueError, match=r"max_backoff_s \(0.1\) must be >= backoff_s \(1\)"):
        CallOptions(backoff_s=1, max_backoff_s=0.1)


async def test_a_retryable_error_is_retried_and_the_call_counts_once() -> None:
    calendar = ScriptedCalendar(ToolError("calendar", "503", retryable=True), None)
    assert len(await calendar.busy("spa", START, START)) == 1
    assert calendar.attempts == 2
    assert calls("calendar", calendar.name, "ok") == 1
    assert calls("calendar", calendar.name, "error") == 0
    assert retries("calendar", calendar.name) == 1


async def test_an_error_that_is_not_retryable_is_raised_at_once() -> None:
    calendar = ScriptedCalendar(ToolError("calendar", "401 bad token"), None)
    with pytest.raises(ToolError, match="401 bad token"):
        await calendar.busy("spa", START, START)
    assert calendar.attempts == 1
    assert calls("calendar", calendar.name, "error") == 1
    assert retries("calendar", calendar.name) == 0

    store_down = ScriptedCalendar(StoreError("database read failed (sqlite): DatabaseError"))
    with pytest.raises(StoreError):
        await store_down.busy("spa", START, START)
    assert store_down.attempts == 1


async def test_attempts_stop_at_max_attempts_with_the_last_error() -> None:
    calendar = ScriptedCalendar(
        *(ToolError("calendar", f"503 #{n}", retryable=True) for n in range(5))
    )
    with pytest.raises(ToolError, match="503 #2"):
        await calendar.busy("spa", START, START)
    assert calendar.attempts == FAST.max_attempts
    assert retries("calendar", calendar.name) == FAST.max_attempts - 1


async def test_a_slow_attempt_times_out_as_a_retryable_error_of_the_family() -> None:
    calendar = ScriptedCalendar(5.0, 5.0, 5.0)
    with pytest.raises(ToolError) as caught:
        await calendar.busy("spa", START, START)
    assert caught.value.retryable
    assert str(caught.value) == f"calendar: {calendar.name} busy: no answer within 0.2 s"
    assert calendar.attempts == 3
    assert calls("calendar", calendar.name, "timeout") == 1

    recovers = ScriptedCalendar(5.0, None)
    assert len(await recovers.busy("spa", START, START)) == 1
    assert calls("calendar", recovers.name, "ok") == 1
    assert calls("calendar", recovers.name, "timeout") == 0


async def test_a_short_retry_after_is_waited_out_and_a_long_one_is_left_to_the_caller() -> None:
    short = DeliveryError("crm", "429", retryable=True, retry_after_s=0.05)
    calendar = ScriptedCalendar(short, None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await calendar.busy("spa", START, START)
    assert loop.time() - started >= 0.05
    assert calendar.attempts == 2

    long = DeliveryError("crm", "429", retryable=True, retry_after_s=60)
    impatient = ScriptedCalendar(long, None)
    with pytest.raises(DeliveryError) as caught:
        await impatient.busy("spa", START, START)
    assert caught.value is long and impatient.attempts == 1


async def test_cancelling_a_call_passes_through_and_counts_as_cancelled() -> None:
    calendar = ScriptedCalendar(5.0, options=CallOptions(timeout_s=10))
    task = asyncio.create_task(calendar.busy("spa", START, START))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls("calendar", calendar.name, "cancelled") == 1


def test_speech_errors_are_gateway_errors() -> None:
    assert issubclass(SpeechError, GatewayError)
    for error in (SttError("x"), TtsError("x"), SpeechUnavailableError("piper", "missing")):
        assert isinstance(error, SpeechError) and not error.retryable
    assert TtsError("x", retryable=True).retryable


# -- TTS -------------------------------------------------------------------------------


class ScriptedTTS(TextToSpeech):
    """Each attempt plays the next script: chunks (bytes), errors to raise, or a
    float to sleep for, in order."""

    def __init__(self, *attempts: list[bytes | BaseException | float]) -> None:
        self.name = unique("tts")
        self.options = CallOptions(timeout_s=0.2, max_attempts=2, backoff_s=0, max_backoff_s=0)
        self.attempts = list(attempts)
        self.started = 0
        self.closed = 0

    async def _synthesize_impl(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        self.started += 1
        script = self.attempts.pop(0) if self.attempts else []
        try:
            for step in script:
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    continue
                yield AudioChunk(step, 8000)
        finally:
            self.closed += 1


async def collect(tts: TextToSpeech, text: str = "Hello there.") -> list[bytes]:
    async with contextlib.aclosing(tts.synthesize(text)) as chunks:
        return [chunk.pcm async for chunk in chunks]


async def test_tts_retries_a_retryable_failure_before_the_first_chunk() -> None:
    tts = ScriptedTTS([TtsError("engine busy", retryable=True)], [b"ab", b"cd"])
    assert await collect(tts) == [b"ab", b"cd"]
    assert tts.started == 2 and tts.closed == 2
    assert calls("tts", tts.name, "ok") == 1 and retries("tts", tts.name) == 1


async def test_tts_never_retries_once_audio_was_yielded() -> None:
    tts = ScriptedTTS([b"ab", TtsError("crashed", retryable=True)], [b"never"])
    with pytest.raises(TtsError, match="crashed"):
        await collect(tts)
    assert tts.started == 1
    assert calls("tts", tts.name, "error") == 1


async def test_tts_bounds_the_wait_for_each_chunk() -> None:
    tts = ScriptedTTS([b"ab", 5.0, b"late"])
    got: list[bytes] = []
    with pytest.raises(TtsError) as caught:
        async with contextlib.aclosing(tts.synthesize("Hello.")) as chunks:
            async for chunk in chunks:
                got.append(chunk.pcm)
    assert got == [b"ab"] and caught.value.retryable
    assert str(caught.value) == f"{tts.name}: synthesize gave no audio for 0.2 s"
    assert tts.closed == 1
    assert calls("tts", tts.name, "timeout") == 1


async def test_tts_closed_early_stops_the_synthesiser_and_counts_as_cancelled() -> None:
    tts = ScriptedTTS([b"ab", b"cd", b"ef"])
    async with contextlib.aclosing(tts.synthesize("Hello.")) as chunks:
        async for _chunk in chunks:
            break  # a barge-in
    assert tts.closed == 1
    assert calls("tts", tts.name, "cancelled") == 1


async def test_tts_blank_text_and_bad_input_keep_their_behaviour() -> None:
    tts = ScriptedTTS([])
    assert await collect(tts, "") == []
    assert calls("tts", tts.name, "ok") == 1

    class Refuses(ScriptedTTS):
        async def _synthesize_impl(self, text: str) -> AsyncGenerator[AudioChunk, None]:
            raise ValueError("text is too long")
            yield  # pragma: no cover

    refuses = Refuses()
    with pytest.raises(ValueError, match="too long"):
        await collect(refuses)
    assert calls("tts", refuses.name, "error") == 1


# -- STT -------------------------------------------------------------------------------


class ScriptedSTT(SpeechToText):
    def __init__(self, answer: Callable[[], Transcript], timeout_s: float = 0.2) -> None:
        self.name = unique("stt")
        self.options = CallOptions(timeout_s=timeout_s, max_attempts=1)
        self.answer = answer

    def _start_stream_impl(self, sample_rate_hz: int, *, session_id: str | None) -> SttStream:
        return _Stream(self, sample_rate_hz)


class _Stream(SttStream):
    def __init__(self, owner: ScriptedSTT, sample_rate_hz: int) -> None:
        self.owner, self.sample_rate_hz, self.fed = owner, sample_rate_hz, b""
        self.finalized = 0

    def feed(self, pcm: bytes) -> None:
        self.fed += pcm

    async def _finalize_impl(self) -> Transcript:
        self.finalized += 1
        await asyncio.sleep(0.01 if self.fed else 5.0)
        return self.owner.answer()

    async def aclose(self) -> None:
        return None


async def test_stt_finalize_runs_through_the_base_with_its_metrics() -> None:
    stt = ScriptedSTT(lambda: Transcript("book a massage", 0.9))
    assert (await stt.transcribe(b"\x00\x00" * 160, 8000)).text == "book a massage"
    stream = stt.start_stream(8000, session_id="CA1")
    assert stream.recogniser is stt
    assert calls("stt", stt.name, "ok") == 1


async def test_stt_finalize_that_takes_too_long_is_a_retryable_stt_error_tried_once() -> None:
    stt = ScriptedSTT(lambda: Transcript("never", 0.9))
    stream = stt.start_stream(8000)
    assert isinstance(stream, _Stream)
    with pytest.raises(SttError) as caught:
        await stream.finalize()  # nothing fed: the fake decodes "forever"
    assert caught.value.retryable and stream.finalized == 1
    assert calls("stt", stt.name, "timeout") == 1


async def test_stt_decoding_errors_are_not_retried() -> None:
    def broken() -> Transcript:
        raise SttError("decoder crashed")

    stt = ScriptedSTT(broken)
    stream = stt.start_stream(8000)
    stream.feed(b"\x00\x00")
    with pytest.raises(SttError, match="decoder crashed"):
        await stream.finalize()
    assert calls("stt", stt.name, "error") == 1

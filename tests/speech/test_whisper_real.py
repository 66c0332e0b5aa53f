"""Whisper tiny.en, the real weights, on the phone path (8 kHz mu-law) with Piper speech.

What the phone relies on: the short encoder window hears what the full 30 s
window hears, a speculative ``peek`` leaves the stream open and agrees with
``finalize``, the slot's context steers the format, decoding stays off the
event loop, and a looped phrase is said once. Keyword and normalised-text
assertions only (synthetic speech through a phone line is not word-perfect).

Skipped, with the reason, when ``gateway models install tiny.en
en_US-joe-medium`` has not run (``scripts/setup`` runs it).
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from channels.phone.endpointing import stt_context
from providers.speech import models
from providers.speech.audio import pcm16_to_ulaw, resample, ulaw_to_pcm16
from providers.speech.factory import make_stt
from providers.speech.whisper_stt import FasterWhisperSTT, collapse_repeats
from testkit.phone.audio import speak

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "data" / "models"
PHRASES = ["Spa del Sol", "Swedish Massage", "Deep Tissue Massage", "Signature Facial", "Manicure"]

pytestmark = pytest.mark.skipif(
    models.resolve("whisper", "tiny.en", MODELS) is None
    or models.resolve("piper", "en_US-joe-medium", MODELS) is None,
    reason=f"Whisper tiny.en / Piper en_US-joe-medium not installed in {MODELS}: "
    "`gateway models install tiny.en en_US-joe-medium` (scripts/setup does)",
)


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperSTT:
    stt = make_stt("auto", None, PHRASES, models_dir=MODELS)
    assert isinstance(stt, FasterWhisperSTT)
    return stt


def caller(text: str) -> bytes:
    """``text`` spoken by Piper as it reaches us on a call: 8 kHz PCM16 after mu-law."""
    pcm, rate = speak(text, "en_US-joe-medium", models_dir=MODELS)
    return ulaw_to_pcm16(pcm16_to_ulaw(resample(pcm, rate, 8000)))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.casefold()))


async def test_the_short_window_hears_what_the_full_window_hears(
    whisper: FasterWhisperSTT,
) -> None:
    audio = caller("I'd like to book a Swedish massage")
    short = await whisper.transcribe(audio, 8000)
    samples = np.frombuffer(resample(audio, 8000, 16000), "<i2").astype(np.float32) / 32768
    full, _confidence = whisper._decode_long(samples)
    assert {"book", "swedish", "massage"} <= words(short.text), short.text
    assert {"book", "swedish", "massage"} <= words(full), full
    assert short.provider == "faster-whisper" and 0.3 < short.confidence <= 1.0


async def test_a_peek_leaves_the_stream_open_and_agrees_with_finalize(
    whisper: FasterWhisperSTT,
) -> None:
    audio = caller("Friday at three pm")
    stream = whisper.start_stream(8000, context=stt_context("time"))
    for i in range(0, len(audio), 320):
        stream.feed(audio[i : i + 320])
    peeked = await stream.peek()
    assert peeked is not None
    stream.feed(bytes(320 * 10))  # the caller stays silent: 200 ms more
    final = await stream.finalize()
    await stream.aclose()
    assert {"friday", "3"} <= words(peeked.text), peeked.text
    assert words(final.text) == words(peeked.text)


async def test_the_slot_context_writes_a_spoken_number_as_digits(
    whisper: FasterWhisperSTT,
) -> None:
    audio = caller("six one seven, five five five, oh one four seven")
    stream = whisper.start_stream(8000, context=stt_context("phone"))
    stream.feed(audio)
    transcript = await stream.finalize()
    await stream.aclose()
    assert re.sub(r"\D", "", transcript.text) == "6175550147", transcript.text


async def test_decoding_runs_on_the_whisper_pool_not_the_event_loop(
    whisper: FasterWhisperSTT, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    decode = whisper._decode

    def spy(*args: object) -> tuple[str, float]:
        threads.add(threading.current_thread().name)
        return decode(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(whisper, "_decode", spy)
    audio = caller("yes")
    results = await asyncio.gather(*(whisper.transcribe(audio, 8000) for _ in range(3)))
    assert all("yes" in words(r.text) for r in results), results
    assert threads and all(name.startswith("whisper") for name in threads)
    assert threading.current_thread().name not in threads


def test_a_looped_phrase_is_said_once_but_digits_and_a_double_no_stay() -> None:
    assert collapse_repeats("Saturday at noon. Saturday at noon.") == "Saturday at noon."
    assert collapse_repeats("yes yes yes yes yes") == "yes"
    assert collapse_repeats("no, no") == "no, no"
    assert collapse_repeats("six one seven five five five") == "six one seven five five five"
    assert collapse_repeats("555 555 555") == "555 555 555"

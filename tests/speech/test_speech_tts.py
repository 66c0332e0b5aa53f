"""Text-to-speech (espeak-ng, the Piper fallback) and sentence splitting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from speech_helpers import frames_of, have_espeak

from providers.speech.audio import AudioChunk
from providers.speech.espeak_tts import EspeakTTS
from providers.speech.factory import make_tts
from providers.speech.tts import MAX_TEXT_CHARS, SentenceSplitter, split_sentences, split_text
from providers.speech.vad import frame_energy_dbfs

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")


async def collect(chunks: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    return [chunk async for chunk in chunks]


def espeak_children() -> list[int]:
    """PIDs of espeak-ng processes whose parent is this process (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and name.startswith("espeak"):
            found.append(int(entry))
    return found


@needs_espeak
async def test_espeak_streams_audio_of_plausible_duration() -> None:
    tts = EspeakTTS()
    text = "Thanks for calling Spa del Sol. How can I help you today?"
    chunks = await collect(tts.synthesize(text))
    assert len(chunks) > 1  # streamed, not one blob
    assert {c.sample_rate_hz for c in chunks} == {22050}
    duration_ms = sum(c.duration_ms for c in chunks)
    assert 2000 < duration_ms < 6000  # 11 words at ~165 words per minute
    pcm = b"".join(c.pcm for c in chunks)
    levels = [frame_energy_dbfs(f) for f in frames_of(pcm, 22050)]
    assert max(levels) > -30  # actually audible speech, not silence


@needs_espeak
async def test_longer_text_gives_longer_audio() -> None:
    tts = EspeakTTS()
    short = sum(c.duration_ms for c in await collect(tts.synthesize("Yes.")))
    long = sum(c.duration_ms for c in await collect(tts.synthesize("Yes. " * 6 + "Goodbye.")))
    assert 0 < short < long


@needs_espeak
async def test_text_is_never_parsed_as_options() -> None:
    chunks = await collect(EspeakTTS().synthesize("--stdout -v xx -w /tmp/oops.wav"))
    assert sum(c.duration_ms for c in chunks) > 500


@needs_espeak
async def test_closing_early_kills_the_synthesiser() -> None:
    tts = EspeakTTS(executable=shutil.which("espeak-ng"), chunk_ms=20)  # the spawn fallback
    assert tts.backend == "process"
    async with contextlib.aclosing(tts.synthesize("One two three. " * 40)) as chunks:
        async for _chunk in chunks:
            break
    assert espeak_children() == []


@needs_espeak
async def test_blank_and_oversized_text() -> None:
    tts = EspeakTTS()
    assert await collect(tts.synthesize("  \n\t ")) == []
    with pytest.raises(ValueError, match="at most"):
        await collect(tts.synthesize("a" * (MAX_TEXT_CHARS + 1)))


def test_espeak_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="voice"):
        EspeakTTS("-x")
    with pytest.raises(ValueError, match="words_per_minute"):
        EspeakTTS(words_per_minute=10)


@needs_espeak
def test_make_tts_defaults_to_espeak(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert isinstance(make_tts(), EspeakTTS)
        assert isinstance(make_tts("espeak", voice="en-gb"), EspeakTTS)
    assert not caplog.records
    with pytest.raises(ValueError, match="unknown TTS provider"):
        make_tts("polly")


@needs_espeak
@pytest.mark.parametrize("provider", ["piper", "auto"])
def test_missing_piper_voice_falls_back_with_one_log_line(
    provider: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    voice = str(tmp_path / f"missing-{provider}.onnx")
    with caplog.at_level(logging.DEBUG, logger="providers.speech"):
        tts = make_tts(provider, voice=voice)
    assert isinstance(tts, EspeakTTS)
    assert len(caplog.records) == 1
    assert "falling back to espeak-ng" in caplog.records[0].getMessage()


# --------------------------------------------------------------------------- sentences

REPLY = (
    "Hello! We open at 9 a.m. tomorrow. Dr. Lee can see you then. "
    "A massage is $95.50, is that okay? Great"
)
EXPECTED = [
    "Hello!",
    "We open at 9 a.m. tomorrow.",
    "Dr. Lee can see you then.",
    "A massage is $95.50, is that okay?",
    "Great",
]


def test_split_text() -> None:
    assert split_text(REPLY) == EXPECTED
    assert split_text("First line\nSecond line") == ["First line", "Second line"]
    assert split_text("No. We are closed on Sundays.") == ["No.", "We are closed on Sundays."]
    assert split_text("") == []


@pytest.mark.parametrize("delta_size", [1, 3, 7, 1000])
async def test_split_sentences_from_streamed_deltas(delta_size: int) -> None:
    async def deltas() -> AsyncIterator[str]:
        for i in range(0, len(REPLY), delta_size):
            yield REPLY[i : i + delta_size]

    assert [s async for s in split_sentences(deltas())] == EXPECTED


async def test_first_sentence_is_ready_before_the_text_ends() -> None:
    produced: list[str] = []
    more = asyncio.Event()

    async def deltas() -> AsyncIterator[str]:
        for delta in ["Sure", "! Let me", " check", " the calendar for you."]:
            produced.append(delta)
            yield delta
        await more.wait()
        yield " Anything else?"

    sentences = split_sentences(deltas())
    first = await anext(sentences)
    assert first == "Sure!"
    assert len(produced) < 4  # the rest was not generated yet
    more.set()
    assert [s async for s in sentences] == ["Let me check the calendar for you.", "Anything else?"]


def test_long_run_without_punctuation_is_cut_at_a_comma() -> None:
    splitter = SentenceSplitter(max_chars=60)
    text = "we have massages, facials, manicures, pedicures, and many other treatments for you"
    pieces = splitter.push(text)
    rest = splitter.flush()
    assert pieces and all(len(p) <= 60 for p in pieces)
    assert pieces[0].endswith(",")
    assert " ".join([*pieces, rest or ""]).split() == text.split()


def test_a_long_first_sentence_is_spoken_from_its_first_clause() -> None:
    from providers.speech.tts import SentenceSplitter, split_text

    summary = (
        "Here's what I have: a Swedish Massage (60 min, $95) on Friday, November 27 "
        "at 3:00 PM for Maria Lopez. Shall I book it?"
    )
    assert split_text(summary, first_clause_chars=12) == [
        "Here's what I have:",
        "a Swedish Massage (60 min, $95) on Friday, November 27 at 3:00 PM for Maria Lopez.",
        "Shall I book it?",
    ]
    # only the first sentence; never inside brackets; short sentences stay whole
    assert split_text(
        "Thanks, Maria. Is the number ending 0147, the best one?", first_clause_chars=12
    ) == [
        "Thanks, Maria.",
        "Is the number ending 0147, the best one?",
    ]
    assert split_text(summary) == [summary.split(" Shall")[0], "Shall I book it?"]
    # streamed: the clause goes out as soon as its sentence is known
    splitter = SentenceSplitter(first_clause_chars=12)
    assert splitter.push("Got your email: m a r i a at example dot com") == []
    assert splitter.push(". When?") == ["Got your email:", "m a r i a at example dot com."]

"""The synthesis engines: real Piper, in-process eSpeak NG, the audio cache, the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from speech_helpers import frames_of, have_espeak

from bench.tts import loop_lag_ms
from providers.speech import espeak_lib, models
from providers.speech import piper_tts as tts_module
from providers.speech.audio import AudioChunk, Resampler, resample
from providers.speech.espeak_tts import EspeakTTS
from providers.speech.piper_tts import PiperTTS
from providers.speech.tts import TextToSpeech, TtsCache, TtsError
from providers.speech.vad import frame_energy_dbfs
from testkit.speech import ToneTTS

REPO = Path(__file__).resolve().parents[2]
PIPER_VOICE = "en_US-joe-medium"
SENTENCES = [
    "Thanks for calling Spa del Sol, how can I help you today?",
    "May I have your name?",
    "We have a Swedish massage on Friday at three p.m.",
    "Sorry, I didn't catch that.",
]


def _piper_model() -> Path | None:
    for folder in (os.environ.get("GATEWAY_MODELS_DIR"), REPO / "data" / "models"):
        if folder:
            found = models.resolve("piper", PIPER_VOICE, Path(folder))
            if found is not None:
                return found
    return None


def _piper_importable() -> bool:
    try:
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


PIPER_MODEL = _piper_model()
needs_piper = pytest.mark.skipif(
    PIPER_MODEL is None or not _piper_importable(),
    reason=f"Piper voice {PIPER_VOICE} is not installed (gateway models install {PIPER_VOICE}) "
    "or piper-tts is missing",
)
needs_espeak_lib = pytest.mark.skipif(
    espeak_lib.shared_library() is None,
    reason=f"libespeak-ng cannot be loaded ({espeak_lib.load_failure()}); apt-get install espeak-ng",
)
needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")


async def collect(chunks: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    return [chunk async for chunk in chunks]


def pcm_of(chunks: list[AudioChunk]) -> bytes:
    return b"".join(c.pcm for c in chunks)


def audible(pcm: bytes, rate: int) -> bool:
    return max(frame_energy_dbfs(f) for f in frames_of(pcm, rate)) > -30


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> TtsCache:
    """Every synthesiser uses an empty cache for this test (the shared one is left alone)."""
    cache = TtsCache()
    monkeypatch.setattr(TextToSpeech, "cache", cache)
    return cache


# --------------------------------------------------------------------------- piper


@pytest.fixture(scope="module")
def piper() -> PiperTTS:
    assert PIPER_MODEL is not None
    return PiperTTS(str(PIPER_MODEL))


@needs_piper
async def test_piper_speaks_a_sentence(piper: PiperTTS, fresh_cache: TtsCache) -> None:
    chunks = await collect(piper.synthesize(SENTENCES[0]))
    assert {c.sample_rate_hz for c in chunks} == {22050} == {piper.sample_rate_hz}
    duration_ms = sum(c.duration_ms for c in chunks)
    assert 1500 < duration_ms < 6000  # 11 words
    assert audible(pcm_of(chunks), 22050)


@needs_piper
def test_piper_session_uses_one_intra_op_thread(piper: PiperTTS) -> None:
    options = piper._voice.session.get_session_options()
    assert options.intra_op_num_threads == tts_module.PIPER_INTRA_OP_THREADS == 1


@needs_piper
async def test_piper_runs_in_its_own_pool(
    piper: PiperTTS, fresh_cache: TtsCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    original = piper._next_chunk

    def spy(pieces: object) -> AudioChunk | None:
        threads.add(threading.current_thread().name)
        return original(pieces)  # type: ignore[arg-type]

    monkeypatch.setattr(piper, "_next_chunk", spy)
    await collect(piper.synthesize("Goodbye."))
    assert threads and all(name.startswith("piper") for name in threads)
    assert tts_module.piper_executor()._max_workers == tts_module._cores()


@needs_piper
@pytest.mark.alone  # a bound on the event loop's lag: other workers' CPU would add to it
async def test_piper_keeps_the_loop_running(piper: PiperTTS, fresh_cache: TtsCache) -> None:
    async def four() -> None:
        results = await asyncio.gather(*(collect(piper.synthesize(s)) for s in SENTENCES))
        assert all(results)

    lag_ms = await loop_lag_ms(four)
    assert lag_ms < 150, f"the event loop stalled {lag_ms:.0f} ms during Piper synthesis"


@needs_piper
async def test_piper_audio_is_cached(piper: PiperTTS, fresh_cache: TtsCache) -> None:
    first = await collect(piper.synthesize("May I have your name?"))
    started = time.perf_counter()
    again = await collect(piper.synthesize("May  I have your name?"))  # same once cleaned
    assert time.perf_counter() - started < 0.02
    assert again == first
    assert len(fresh_cache) == 1


# --------------------------------------------------------------------------- espeak (library)


@needs_espeak_lib
async def test_espeak_uses_the_library(fresh_cache: TtsCache) -> None:
    tts = EspeakTTS()
    assert tts.backend == "library"
    chunks = await collect(tts.synthesize(SENTENCES[0]))
    assert len(chunks) > 1 and {c.sample_rate_hz for c in chunks} == {22050}
    assert all(len(c.pcm) == 4410 for c in chunks[:-1])  # 100 ms chunks
    assert 2000 < sum(c.duration_ms for c in chunks) < 6000
    assert audible(pcm_of(chunks), 22050)


@needs_espeak_lib
@needs_espeak
async def test_library_and_process_give_the_same_audio_length(fresh_cache: TtsCache) -> None:
    library = EspeakTTS(chunk_ms=50)
    process = EspeakTTS(executable=shutil.which("espeak-ng"), chunk_ms=50)
    assert process.backend == "process"
    process.cache = None
    a = sum(c.duration_ms for c in await collect(library.synthesize(SENTENCES[2])))
    b = sum(c.duration_ms for c in await collect(process.synthesize(SENTENCES[2])))
    assert abs(a - b) < 0.05 * b


@needs_espeak_lib
@pytest.mark.alone  # a bound on the event loop's lag: other workers' CPU would add to it
async def test_espeak_library_keeps_the_loop_running(fresh_cache: TtsCache) -> None:
    tts = EspeakTTS()

    async def four() -> None:
        for _ in range(3):
            fresh_cache.clear()
            await asyncio.gather(*(collect(tts.synthesize(s)) for s in SENTENCES))

    lag_ms = await loop_lag_ms(four)
    assert lag_ms < 150, f"the event loop stalled {lag_ms:.0f} ms during espeak synthesis"


@needs_espeak_lib
async def test_closing_early_stops_the_library_job(fresh_cache: TtsCache) -> None:
    tts = EspeakTTS(chunk_ms=20)
    started = time.perf_counter()
    async with contextlib.aclosing(tts.synthesize("One two three. " * 200)) as chunks:
        async for _chunk in chunks:
            break
    # the worker is free again at once: a short job right after finishes quickly
    short = await collect(tts.synthesize("Yes."))
    assert short and time.perf_counter() - started < 1.0
    assert len(fresh_cache) == 1  # only "Yes.": a cut utterance is never cached


@needs_espeak_lib
async def test_unknown_espeak_voice_is_a_tts_error(fresh_cache: TtsCache) -> None:
    with pytest.raises(TtsError, match="no voice"):
        await collect(EspeakTTS("zz-nonexistent").synthesize("Hello."))
    assert await collect(EspeakTTS().synthesize("Hello."))  # the library still works


@needs_espeak
def test_without_the_library_espeak_spawns_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(espeak_lib, "shared_library", lambda: None)
    monkeypatch.setattr(espeak_lib, "load_failure", lambda: "OSError: not here")
    monkeypatch.setattr(models, "_ANNOUNCED", set())
    with caplog.at_level(logging.DEBUG, logger="providers.speech"):
        first, second = EspeakTTS(), EspeakTTS("en-gb")
    assert first.backend == second.backend == "process"
    assert len(caplog.records) == 1
    assert "spawning espeak-ng" in caplog.records[0].getMessage()


@needs_espeak
async def test_process_fallback_still_speaks(
    monkeypatch: pytest.MonkeyPatch, fresh_cache: TtsCache
) -> None:
    monkeypatch.setattr(espeak_lib, "shared_library", lambda: None)
    monkeypatch.setattr(models, "_ANNOUNCED", set())
    chunks = await collect(EspeakTTS().synthesize("Hello there."))
    assert chunks and {c.sample_rate_hz for c in chunks} == {22050}


# --------------------------------------------------------------------------- cache


class CountingTone(ToneTTS):
    """A tone synthesiser that opts into the cache."""

    name = "counting-tone"

    def __init__(self, voice: str = "a", **kwargs: float | int) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.voice = voice
        self.calls = 0

    def cache_key(self) -> tuple[object, ...]:
        return (self.name, self.voice)

    async def _synthesize_impl(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        self.calls += 1
        async for chunk in super()._synthesize_impl(text):
            await asyncio.sleep(0.001)
            yield chunk


def cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("gateway_tts_cache_total", {"result": result}) or 0.0


async def test_cache_hit_returns_identical_audio_without_synthesising() -> None:
    tts = CountingTone()
    tts.cache = TtsCache()
    hits, misses = cache_count("hit"), cache_count("miss")
    first = await collect(tts.synthesize("May I have your name?"))
    again = await collect(tts.synthesize(" May I have\tyour name? "))
    assert again == first and tts.calls == 1
    assert (cache_count("hit") - hits, cache_count("miss") - misses) == (1, 1)
    other_voice = CountingTone("b")
    other_voice.cache = tts.cache
    await collect(other_voice.synthesize("May I have your name?"))
    assert other_voice.calls == 1  # the voice is part of the key
    assert tts.cache.size_bytes == sum(len(c.pcm) for c in first) * 2


async def test_cache_evicts_least_recently_used_by_size() -> None:
    tts = CountingTone(sample_rate_hz=8000, ms_per_char=10)  # 10 chars: 100 ms, 1600 bytes
    tts.cache = TtsCache(max_bytes=4000, max_entry_bytes=4000)
    for text in ("aaaaaaaaaa", "bbbbbbbbbb"):
        await collect(tts.synthesize(text))
    assert tts.cache.size_bytes == 3200
    await collect(tts.synthesize("aaaaaaaaaa"))  # a hit: now the most recently used
    await collect(tts.synthesize("cccccccccc"))  # 4800 > 4000: evicts b, not a
    assert tts.calls == 3 and tts.cache.size_bytes == 3200
    await collect(tts.synthesize("aaaaaaaaaa"))
    assert tts.calls == 3
    await collect(tts.synthesize("bbbbbbbbbb"))
    assert tts.calls == 4


async def test_cache_skips_oversized_and_cut_utterances() -> None:
    tts = CountingTone(sample_rate_hz=8000, chunk_ms=20)
    tts.cache = TtsCache(max_bytes=10_000)  # entries up to 2500 bytes
    await collect(tts.synthesize("x" * 200))  # 2 s: 32000 bytes
    async with contextlib.aclosing(tts.synthesize("short")) as chunks:
        async for _chunk in chunks:
            break
    assert len(tts.cache) == 0
    disabled = CountingTone()
    disabled.cache = TtsCache(max_bytes=0)
    await collect(disabled.synthesize("hi"))
    await collect(disabled.synthesize("hi"))
    assert disabled.calls == 2


async def test_synthesisers_without_a_cache_key_are_never_cached() -> None:
    tone = ToneTTS()
    for _ in range(2):
        await collect(tone.synthesize("Hello."))
    assert tone.spoken == ["Hello.", "Hello."]


# --------------------------------------------------------------------------- resampling


def test_streaming_resample_to_8k_matches_one_shot_without_seams() -> None:
    rate = 22050
    t = np.arange(rate * 2) / rate  # 2 s of a 440 Hz tone, as a TTS would give it
    pcm = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2").tobytes()
    whole = resample(pcm, rate, 8000)
    resampler = Resampler(rate, 8000)
    pieces = [pcm[i : i + 4410] for i in range(0, len(pcm), 4410)]  # 100 ms chunks
    streamed = b"".join(resampler.process(p) for p in pieces) + resampler.flush()
    assert len(streamed) // 2 == len(whole) // 2 == round(len(pcm) / 2 * 8000 / rate) == 16000
    a = np.frombuffer(streamed, "<i2").astype(np.int32)
    b = np.frombuffer(whole, "<i2").astype(np.int32)
    assert np.abs(a - b).max() <= 2  # no clicks where the chunks meet
    # and no jumps a 440 Hz tone at 8 kHz cannot make (max step ~ 2*pi*440/8000*12000)
    assert np.abs(np.diff(a[100:-100])).max() < 4500

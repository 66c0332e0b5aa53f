"""Text-to-speech latency, speed and event-loop friendliness, per available provider.

    .venv/bin/python -m bench.tts [--runs 3] [--concurrency 4] [--models-dir data/models]

For each synthesiser that can be set up here -- eSpeak NG in process
(libespeak-ng), eSpeak NG spawned per sentence (the fallback), and Piper
with ``en_US-joe-medium`` when installed -- on typical receptionist
sentences, with the audio cache off unless stated:

* time to first audio, p50/p95 (one synthesis at a time), in ms;
* real-time factor: synthesis time / audio time (one at a time);
* event-loop blocking: the worst lateness of a 5 ms ticker task while
  ``--concurrency`` syntheses run at once, and their wall time;
* cache hit: time to first audio of a line already synthesised, in ms;
* the cost of getting the audio onto the phone path (soxr to 8 kHz, mu-law).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from providers.speech import espeak_lib
from providers.speech import models as speech_models
from providers.speech.audio import Resampler, pcm16_to_ulaw
from providers.speech.errors import SpeechUnavailableError
from providers.speech.espeak_tts import EspeakTTS
from providers.speech.piper_tts import PiperTTS
from providers.speech.tts import TextToSpeech, TtsCache

SENTENCES = [
    "Thanks for calling Spa del Sol, this is the virtual receptionist.",
    "How can I help you today?",
    "May I have your name?",
    "Sorry, I didn't catch that.",
    "We have a Swedish massage on Friday at three p.m. or at five thirty.",
    "Which one works better for you?",
    "It is sixty minutes and costs ninety five dollars.",
    "Great, you're all set for Friday at three.",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def first_and_total(tts: TextToSpeech, text: str) -> tuple[float, float, float, bytes, int]:
    """(first audio s, total s, audio s, pcm, rate) for one synthesis."""
    started = time.perf_counter()
    first: float | None = None
    pieces: list[bytes] = []
    rate = tts.sample_rate_hz
    async for chunk in tts.synthesize(text):
        if first is None:
            first = time.perf_counter() - started
        pieces.append(chunk.pcm)
        rate = chunk.sample_rate_hz
    total = time.perf_counter() - started
    pcm = b"".join(pieces)
    return first if first is not None else total, total, len(pcm) / 2 / rate, pcm, rate


async def loop_lag_ms(work: Callable[[], Awaitable[object]], tick_s: float = 0.005) -> float:
    """The worst lateness of a ``tick_s`` ticker while ``work`` runs, in ms."""
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(tick_s)
            worst = max(worst, time.perf_counter() - started - tick_s)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        await work()
    finally:
        stop.set()
        await task
    return worst * 1000


def providers(models_dir: Path) -> list[tuple[str, TextToSpeech]]:
    found: list[tuple[str, TextToSpeech]] = []
    if espeak_lib.shared_library() is not None:
        found.append(("espeak-ng (libespeak-ng, in process)", EspeakTTS()))
    else:
        print(f"skipped espeak-ng library: {espeak_lib.load_failure()}")
    program = shutil.which("espeak-ng")
    if program:
        found.append(("espeak-ng (spawned per sentence)", EspeakTTS(executable=program)))
    model = speech_models.resolve("piper", "en_US-joe-medium", models_dir)
    if model is None:
        print(f"skipped piper: en_US-joe-medium is not installed under {models_dir}")
    else:
        try:
            found.append(("piper en_US-joe-medium", PiperTTS(str(model))))
        except SpeechUnavailableError as exc:
            print(f"skipped piper: {exc.reason}")
    return found


async def bench(label: str, tts: TextToSpeech, runs: int, concurrency: int) -> None:
    tts.cache = None
    await first_and_total(tts, "Warm up.")
    firsts: list[float] = []
    totals: list[float] = []
    audio: list[float] = []
    convert_ms: list[float] = []
    for _ in range(runs):
        for sentence in SENTENCES:
            first, total, seconds, pcm, rate = await first_and_total(tts, sentence)
            firsts.append(first * 1000)
            totals.append(total)
            audio.append(seconds)
            started = time.perf_counter()
            resampler = Resampler(rate, 8000)
            pcm16_to_ulaw(resampler.process(pcm) + resampler.flush())
            convert_ms.append((time.perf_counter() - started) * 1000)

    async def together() -> None:
        for start in range(0, len(SENTENCES), concurrency):
            batch = SENTENCES[start : start + concurrency]
            await asyncio.gather(*(first_and_total(tts, s) for s in batch))

    started = time.perf_counter()
    lag = await loop_lag_ms(together)
    wall = time.perf_counter() - started

    tts.cache = TtsCache()
    await first_and_total(tts, SENTENCES[2])
    hits = [(await first_and_total(tts, SENTENCES[2]))[0] * 1000 for _ in range(20)]

    print(f"{label}: {len(SENTENCES)} sentences x {runs} runs")
    print(
        f"  first audio: p50 {statistics.median(firsts):.1f} ms, "
        f"p95 {percentile(firsts, 0.95):.1f} ms (audio per sentence: median "
        f"{statistics.median(audio) * 1000:.0f} ms)"
    )
    print(f"  real-time factor: {sum(totals) / sum(audio):.3f}")
    print(
        f"  {concurrency} at a time: loop blocked at most {lag:.1f} ms; "
        f"{len(SENTENCES)} sentences in {wall * 1000:.0f} ms"
    )
    print(f"  cache hit first audio: p50 {statistics.median(hits):.3f} ms")
    print(f"  to 8 kHz mu-law (soxr HQ): median {statistics.median(convert_ms):.2f} ms a sentence")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("GATEWAY_MODELS_DIR", "data/models")),
    )
    args = parser.parse_args()
    print(f"{len(os.sched_getaffinity(0))} cores")
    for label, tts in providers(args.models_dir):
        await bench(label, tts, args.runs, args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())

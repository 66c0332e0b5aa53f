"""Text-to-speech latency: time to the first audio chunk and to the whole sentence.

    .venv/bin/python bench/phone_tts.py

Measures :class:`providers.speech.tts.EspeakTTS` (the offline default) on
typical receptionist sentences, and the cost of getting its audio onto the
phone path (resampling to 8 kHz and mu-law encoding).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from providers.speech.audio import Resampler, pcm16_to_ulaw
from providers.speech.espeak_tts import EspeakTTS
from providers.speech.tts import split_text

REPLY = (
    "Thanks for calling Spa del Sol! I can book that for you. "
    "We have a Swedish massage on Friday at three p.m. or at five thirty. "
    "Which one works better for you? "
    "It is sixty minutes and costs ninety five dollars."
)


async def main() -> None:
    tts = EspeakTTS()
    sentences = split_text(REPLY)
    first_ms: list[float] = []
    total_ms: list[float] = []
    audio_ms: list[float] = []
    convert_ms: list[float] = []
    for _ in range(3):
        for sentence in sentences:
            started = time.perf_counter()
            first: float | None = None
            pcm = b""
            rate = tts.sample_rate_hz
            async for chunk in tts.synthesize(sentence):
                if first is None:
                    first = time.perf_counter()
                pcm += chunk.pcm
                rate = chunk.sample_rate_hz
            done = time.perf_counter()
            converted = time.perf_counter()
            resampler = Resampler(rate, 8000)
            pcm16_to_ulaw(resampler.process(pcm) + resampler.flush())
            convert_ms.append((time.perf_counter() - converted) * 1000)
            first_ms.append(((first or done) - started) * 1000)
            total_ms.append((done - started) * 1000)
            audio_ms.append(len(pcm) / 2 / rate * 1000)
    print(f"espeak-ng, {len(sentences)} sentences x 3 runs")
    print(f"  audio per sentence: median {statistics.median(audio_ms):.0f} ms")
    print(
        f"  time to first chunk: median {statistics.median(first_ms):.1f} ms, "
        f"max {max(first_ms):.1f} ms"
    )
    print(
        f"  whole sentence: median {statistics.median(total_ms):.1f} ms, "
        f"max {max(total_ms):.1f} ms "
        f"(real-time factor {sum(total_ms) / sum(audio_ms):.3f})"
    )
    print(f"  to 8 kHz mu-law: median {statistics.median(convert_ms):.2f} ms per sentence")


if __name__ == "__main__":
    asyncio.run(main())

"""Offline STT accuracy and speed on synthetic receptionist speech.

Synthesises each sentence with espeak-ng, sends it through the phone path
(22.05 kHz -> 8 kHz -> mu-law -> PCM16, or the clean 16 kHz path), streams
it into PocketSphinx in 20 ms frames paced like a live call would be (but
faster than real time), and reports word error rate, keyword recall, the
latency of ``finalize`` at the end of the turn, and the real-time factor
(decoding time / audio time, whole utterances at once, one thread).

    .venv/bin/python bench/phone_stt.py [--path phone|wide|both]

Synthetic speech from one voice is far easier than real callers: read the
numbers as a comparison between configurations, not as field accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from dataclasses import dataclass

from providers.speech.audio import pcm16_to_ulaw, resample, ulaw_to_pcm16
from providers.speech.espeak_tts import EspeakTTS
from providers.speech.pocketsphinx_stt import PocketSphinxSTT
from providers.speech.stt import SpeechToText

PHRASES = [
    "Swedish Massage",
    "massage",
    "relaxing massage",
    "full body massage",
    "Deep Tissue Massage",
    "deep tissue",
    "sports massage",
    "Signature Facial",
    "facial",
    "skin treatment",
    "Manicure",
    "nails",
    "Spa del Sol",
]

# (sentence, keywords that must be recognised)
CASES = [
    ("I would like a massage on Friday", ["massage", "friday"]),
    ("yes please", ["yes"]),
    ("no thanks", ["no"]),
    ("my number is five five five one two three four", ["five", "one", "two", "three", "four"]),
    ("can I book a deep tissue massage tomorrow at three pm", ["deep", "tissue", "tomorrow"]),
    ("do you have anything on Saturday morning", ["saturday", "morning"]),
    ("I'd like a manicure on Tuesday at ten thirty", ["manicure", "tuesday", "ten", "thirty"]),
    ("I want a facial next Wednesday", ["facial", "wednesday"]),
    ("is it possible to come in on Thursday afternoon", ["thursday", "afternoon"]),
    ("no", ["no"]),
    ("yes", ["yes"]),
    ("how much is a Swedish massage", ["swedish", "massage"]),
    ("can I speak to someone", ["speak", "someone"]),
    ("that's right", ["right"]),
    ("Monday at nine am", ["monday", "nine"]),
    ("I need to cancel my appointment", ["cancel", "appointment"]),
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


@dataclass
class Score:
    errors: int = 0
    ref_words: int = 0
    keywords: int = 0
    keywords_found: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0


async def synth(tts: EspeakTTS, text: str) -> tuple[bytes, int]:
    chunks = [c async for c in tts.synthesize(text)]
    return b"".join(c.pcm for c in chunks), chunks[0].sample_rate_hz


async def run(stt: SpeechToText, audio: list[tuple[bytes, int]], label: str) -> None:
    score = Score()
    finalize_ms: list[float] = []
    for (sentence, keywords), (pcm, rate) in zip(CASES, audio, strict=True):
        frame = rate * 20 // 1000 * 2
        stream = stt.start_stream(rate)
        started = time.perf_counter()
        for i in range(0, len(pcm), frame):
            stream.feed(pcm[i : i + frame])
            await asyncio.sleep(0.004)  # let the worker keep up, ~5x faster than live
        end = time.perf_counter()
        transcript = await stream.finalize()
        done = time.perf_counter()
        finalize_ms.append((done - end) * 1000)
        hyp = words(transcript.text)
        score.errors += edit_distance(words(sentence), hyp)
        score.ref_words += len(words(sentence))
        score.keywords += len(keywords)
        score.keywords_found += sum(k in hyp for k in keywords)
        score.audio_s += len(pcm) / 2 / rate
        score.decode_s += done - started
        print(f"  {sentence!r:60} -> {transcript.text!r} ({transcript.confidence:.2f})")
    started = time.perf_counter()
    for pcm, rate in audio:
        await stt.transcribe(pcm, rate)
    rtf = (time.perf_counter() - started) / score.audio_s
    print(
        f"{label}: WER {score.errors / score.ref_words:.1%}, keyword recall "
        f"{score.keywords_found}/{score.keywords} ({score.keywords_found / score.keywords:.0%}), "
        f"finalize median {statistics.median(finalize_ms):.0f} ms "
        f"(max {max(finalize_ms):.0f} ms), real-time factor {rtf:.2f}\n"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", choices=["phone", "wide", "both"], default="both")
    parser.add_argument(
        "--floor", type=float, nargs="*", help="other noise-floor RMS values to try"
    )
    args = parser.parse_args()
    tts = EspeakTTS("en-us")
    started = time.perf_counter()
    raw = [await synth(tts, sentence) for sentence, _ in CASES]
    synth_s = time.perf_counter() - started
    total_audio_s = sum(len(pcm) / 2 / rate for pcm, rate in raw)
    print(
        f"espeak-ng: {len(raw)} sentences, {total_audio_s:.1f} s of audio in {synth_s * 1000:.0f} ms "
        f"({synth_s / len(raw) * 1000:.0f} ms per sentence)\n"
    )
    wide = [(resample(pcm, rate, 16000), 16000) for pcm, rate in raw]
    phone = [(ulaw_to_pcm16(pcm16_to_ulaw(resample(pcm, rate, 8000))), 8000) for pcm, rate in raw]
    started = time.perf_counter()
    biased = PocketSphinxSTT(PHRASES)
    await biased.warm_up()
    print(
        f"domain model built and decoder loaded in {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    started = time.perf_counter()
    general = PocketSphinxSTT(bias=False)
    await general.warm_up()
    print(f"general model loaded in {(time.perf_counter() - started) * 1000:.0f} ms\n")
    floor = biased.noise_floor_rms
    if args.path in ("wide", "both"):
        await run(general, wide, f"16 kHz, general LM, noise floor {floor}")
        await run(biased, wide, f"16 kHz, domain-biased LM, noise floor {floor}")
    if args.path in ("phone", "both"):
        await run(general, phone, f"8 kHz mu-law, general LM, noise floor {floor}")
        await run(biased, phone, f"8 kHz mu-law, domain-biased LM, noise floor {floor}")
    for other in args.floor or []:
        variant = PocketSphinxSTT(PHRASES, noise_floor_rms=other)
        if args.path in ("wide", "both"):
            await run(variant, wide, f"16 kHz, domain-biased LM, noise floor {other}")
        if args.path in ("phone", "both"):
            await run(variant, phone, f"8 kHz mu-law, domain-biased LM, noise floor {other}")


if __name__ == "__main__":
    asyncio.run(main())

"""The fake speech providers (:mod:`testkit.speech`) keep the real interfaces' contracts."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from providers.speech.audio import AudioChunk
from providers.speech.errors import SttError
from providers.speech.providers import SttSpec, TtsSpec
from providers.speech.stt import SpeechToText, Transcript
from providers.speech.tts import MAX_TEXT_CHARS, TextToSpeech
from providers.speech.vad import frame_energy_dbfs
from testkit.speech import FakeSpeech, ScriptedSTT, ToneTTS, speech_hub

FRAME = b"\x00\x10" * 160  # 20 ms at 8 kHz


async def test_each_finalised_utterance_hears_the_next_line() -> None:
    stt = ScriptedSTT(["book a massage"], confidence=0.8)
    stt.queue(Transcript("Maria Lopez", 0.5, provider="whatever"))
    assert isinstance(stt, SpeechToText)

    dropped = stt.start_stream(8000, session_id="CA1")  # e.g. echo: abandoned, takes no line
    dropped.feed(FRAME)
    await dropped.aclose()

    first = stt.start_stream(8000, session_id="CA1")
    first.feed(FRAME)
    first.feed(FRAME)
    second = stt.start_stream(16000)
    second.feed(FRAME)
    assert await first.finalize() == Transcript("book a massage", 0.8, 40.0, "scripted")
    assert await second.finalize() == Transcript("Maria Lopez", 0.5, 10.0, "whatever")
    assert stt.pending == ()
    assert await stt.transcribe(FRAME, 8000) == Transcript("", 0.0, 20.0, "scripted")  # ran out

    assert stt.heard == ["book a massage", "Maria Lopez", ""]
    assert (stt.opened, stt.abandoned) == (4, 1)
    assert stt.recognised[0].pcm == FRAME * 2 and stt.recognised[0].session_id == "CA1"
    assert stt.recognised[1].sample_rate_hz == 16000


async def test_a_scripted_failure_is_raised_and_the_script_goes_on() -> None:
    stt = ScriptedSTT([SttError("decoder crashed"), "yes"])
    with pytest.raises(SttError, match="decoder crashed"):
        await stt.transcribe(FRAME, 8000)
    assert (await stt.transcribe(FRAME, 8000)).text == "yes"
    assert stt.heard == ["yes"] and stt.recognised[0].transcript is None


async def test_a_scripted_stream_keeps_the_streams_contract() -> None:
    stt = ScriptedSTT(["hi"])
    stream = stt.start_stream()
    with pytest.raises(ValueError, match="even"):
        stream.feed(b"\x00")
    await stream.finalize()
    with pytest.raises(RuntimeError):
        stream.feed(FRAME)
    with pytest.raises(RuntimeError):
        await stream.finalize()
    await stream.aclose()  # safe at any time
    assert stt.abandoned == 0
    with pytest.raises(ValueError):
        stt.start_stream(0)
    with pytest.raises(ValueError):
        ScriptedSTT(confidence=1.5)


async def synthesized(tts: TextToSpeech, text: str) -> list[AudioChunk]:
    async with contextlib.aclosing(tts.synthesize(text)) as chunks:
        return [chunk async for chunk in chunks]


async def test_the_tone_lasts_in_proportion_to_the_text_and_is_audible() -> None:
    tts = ToneTTS(ms_per_char=20, level_dbfs=-35, chunk_ms=100)
    short = await synthesized(tts, "Hello there.")  # 12 characters: 240 ms
    long = await synthesized(tts, "  Hello   there, how can I help?  ")  # 28 after cleaning
    assert sum(c.duration_ms for c in short) == pytest.approx(240)
    assert sum(c.duration_ms for c in long) == pytest.approx(560)
    assert [c.duration_ms for c in long] == pytest.approx([100, 100, 100, 100, 100, 60])
    assert {c.sample_rate_hz for c in short + long} == {8000}
    pcm = b"".join(c.pcm for c in long)
    assert frame_energy_dbfs(pcm) == pytest.approx(-35, abs=0.2)
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, dtype="<i2")))
    assert np.argmax(spectrum) * 8000 / (len(pcm) // 2) == pytest.approx(1000, abs=15)
    assert tts.spoken == ["Hello there.", "Hello there, how can I help?"]


async def test_the_tone_keeps_the_synthesisers_contract() -> None:
    tts = ToneTTS()
    assert await synthesized(tts, " \n ") == [] and tts.spoken == []
    with pytest.raises(ValueError, match="at most"):
        await synthesized(tts, "x" * (MAX_TEXT_CHARS + 1))
    for bad in ({"ms_per_char": 0}, {"tone_hz": 4000}, {"level_dbfs": 3}, {"chunk_ms": 0}):
        with pytest.raises(ValueError):
            ToneTTS(**bad)  # type: ignore[arg-type]


async def test_the_hub_hands_out_the_fakes_for_every_client() -> None:
    speech = FakeSpeech()
    hub = speech.hub()
    one = await hub.get(SttSpec("pocketsphinx", None, ("massage",)), TtsSpec("espeak", "en-us"))
    other = await hub.get(SttSpec("faster-whisper", "base.en"), TtsSpec("piper", "x.onnx"))
    assert one.stt is other.stt is speech.stt
    assert one.tts is other.tts is speech.tts
    mixed = await speech_hub(speech.stt, ToneTTS(ms_per_char=5)).get(SttSpec(), TtsSpec())
    assert mixed.stt is speech.stt and mixed.tts is not speech.tts

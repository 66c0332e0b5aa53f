"""Speech-to-text: PocketSphinx on synthetic speech, streaming, the factory's fallbacks."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import pocketsphinx
import pytest
from speech_helpers import Speak, build_tiny_whisper, frames_of

from providers.speech.audio import pcm16_to_ulaw, ulaw_to_pcm16
from providers.speech.errors import SpeechUnavailableError
from providers.speech.factory import make_stt
from providers.speech.pocketsphinx_stt import PocketSphinxSTT
from providers.speech.stt import SpeechToText, Transcript
from providers.speech.whisper_stt import FasterWhisperSTT

SPA_PHRASES = [
    "Swedish Massage",
    "massage",
    "relaxing massage",
    "Deep Tissue Massage",
    "deep tissue",
    "Signature Facial",
    "facial",
    "Manicure",
    "nails",
]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def phone_path(pcm8k: bytes) -> bytes:
    """What the gateway gets from Twilio: 8 kHz audio that went through mu-law."""
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm8k))


async def stream_frames(stt: SpeechToText, pcm: bytes, rate: int) -> Transcript:
    stream = stt.start_stream(rate)
    for frame in frames_of(pcm, rate):
        stream.feed(frame)
    return await stream.finalize()


@pytest.fixture(scope="module")
def sphinx() -> PocketSphinxSTT:
    return PocketSphinxSTT(SPA_PHRASES)


async def test_pocketsphinx_finds_keywords_on_the_phone_path(
    sphinx: PocketSphinxSTT, speak: Speak
) -> None:
    audio = phone_path(speak("I would like a massage on Friday", 8000))
    transcript = await stream_frames(sphinx, audio, 8000)
    assert {"massage", "friday"} <= words(transcript.text)
    assert transcript.provider == "pocketsphinx"
    assert 0.0 < transcript.confidence <= 1.0
    assert transcript.audio_ms == pytest.approx(len(audio) / 16, abs=20)


async def test_pocketsphinx_wideband_and_service_names(
    sphinx: PocketSphinxSTT, speak: Speak
) -> None:
    audio = speak("Can I book a deep tissue massage tomorrow at three pm", 16000)
    transcript = await sphinx.transcribe(audio, 16000)
    assert {"deep", "tissue", "tomorrow", "three"} <= words(transcript.text)


async def test_pocketsphinx_digits_on_the_phone_path(sphinx: PocketSphinxSTT, speak: Speak) -> None:
    audio = phone_path(speak("five five five, one two three four", 8000))
    transcript = await stream_frames(sphinx, audio, 8000)
    assert {"five", "one", "two", "three", "four"} <= words(transcript.text)


async def test_domain_biasing_beats_the_general_model(
    sphinx: PocketSphinxSTT, speak: Speak
) -> None:
    cases = [
        ("I would like a massage on Friday", {"massage", "friday"}),
        ("do you have anything on Saturday morning", {"saturday", "morning"}),
        ("I want a facial next Wednesday", {"facial", "wednesday"}),
        ("how much is a Swedish massage", {"swedish", "massage"}),
    ]
    general = PocketSphinxSTT(bias=False)
    found = {"biased": 0, "general": 0}
    for sentence, keywords in cases:
        audio = phone_path(speak(sentence, 8000))
        found["biased"] += len(keywords & words((await sphinx.transcribe(audio, 8000)).text))
        found["general"] += len(keywords & words((await general.transcribe(audio, 8000)).text))
    total = sum(len(k) for _, k in cases)
    assert found["biased"] >= total - 1
    assert found["biased"] > found["general"]


async def test_stream_lifecycle(sphinx: PocketSphinxSTT) -> None:
    empty = sphinx.start_stream(8000)
    assert await empty.finalize() == Transcript("", 0.0, 0.0, "pocketsphinx")
    with pytest.raises(RuntimeError):
        empty.feed(b"\x00\x00")
    with pytest.raises(RuntimeError):
        await empty.finalize()
    await empty.aclose()  # idempotent after finalize

    abandoned = sphinx.start_stream(8000)
    abandoned.feed(bytes(3200))
    with pytest.raises(ValueError, match="even"):
        abandoned.feed(b"\x00")
    await abandoned.aclose()
    await abandoned.aclose()
    with pytest.raises(RuntimeError):
        abandoned.feed(bytes(320))


async def test_decoding_runs_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch, speak: Speak, tmp_path: Path
) -> None:
    threads: set[int] = set()

    class RecordingDecoder(pocketsphinx.Decoder):  # type: ignore[misc]
        def process_raw(self, *args: Any, **kwargs: Any) -> Any:
            threads.add(threading.get_ident())
            return super().process_raw(*args, **kwargs)

    monkeypatch.setattr(pocketsphinx, "Decoder", RecordingDecoder)
    stt = PocketSphinxSTT(["pedicure"], cache_dir=tmp_path)  # its own decoder pool
    await stream_frames(stt, speak("a pedicure please", 8000), 8000)
    assert threads
    assert threading.get_ident() not in threads


def test_make_stt_defaults_to_pocketsphinx(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        stt = make_stt("auto", model=None, phrases=SPA_PHRASES)
    assert isinstance(stt, PocketSphinxSTT)
    assert not caplog.records
    assert isinstance(make_stt("pocketsphinx"), PocketSphinxSTT)
    with pytest.raises(ValueError, match="unknown STT provider"):
        make_stt("kaldi")


@pytest.mark.parametrize("provider", ["auto", "faster-whisper", "whisper"])
def test_missing_whisper_model_falls_back_with_one_log_line(
    provider: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / f"no-such-model-{provider}")
    with caplog.at_level(logging.DEBUG, logger="providers.speech"):
        stt = make_stt(provider, model=missing, phrases=SPA_PHRASES)
    assert isinstance(stt, PocketSphinxSTT)
    ours = [r for r in caplog.records if r.name.startswith("providers.speech")]
    assert len(ours) == 1
    assert ours[0].levelno == logging.WARNING
    assert "falling back to pocketsphinx" in ours[0].getMessage()


def test_broken_whisper_model_folder_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("faster_whisper")
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not a model")
    (folder / "config.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="providers.speech"):
        stt = make_stt("faster-whisper", model=str(folder))
    assert isinstance(stt, PocketSphinxSTT)
    assert len(caplog.records) == 1
    with pytest.raises(SpeechUnavailableError, match="failed to load"):
        FasterWhisperSTT(str(folder))  # the failure is remembered, not retried


async def test_faster_whisper_loads_once_and_streams(
    tmp_path: Path, speak: Speak, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("faster_whisper")
    folder = build_tiny_whisper(tmp_path / "tiny-whisper")
    with caplog.at_level(logging.WARNING, logger="providers.speech"):
        stt = make_stt("auto", model=str(folder), phrases=SPA_PHRASES)
    assert isinstance(stt, FasterWhisperSTT)
    assert not caplog.records
    again = FasterWhisperSTT(str(folder))
    assert again._model is stt._model  # loaded once, shared

    audio = phone_path(speak("I would like a massage on Friday", 8000))
    transcript = await stream_frames(stt, audio, 8000)
    # random weights: the text is noise, but the whole path ran for real
    assert transcript.provider == "faster-whisper"
    assert isinstance(transcript.text, str)
    assert 0.0 <= transcript.confidence <= 1.0
    assert transcript.audio_ms == pytest.approx(len(audio) / 16, abs=20)
    assert await stt.start_stream(8000).finalize() == Transcript("", 0.0, 0.0, "faster-whisper")

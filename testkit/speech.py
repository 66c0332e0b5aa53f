"""Fake speech providers for tests: the real interfaces, scripted results, no model.

* :class:`ScriptedSTT` — a :class:`~providers.speech.stt.SpeechToText` that
  answers the n-th finalised utterance with the n-th line of its script and
  keeps what each stream was fed.
* :class:`ToneTTS` — a :class:`~providers.speech.tts.TextToSpeech` that
  returns at once a quiet tone, ``ms_per_char`` of audio per character.
* :func:`speech_hub` — a :class:`~providers.speech.providers.SpeechHub` that
  hands given providers out for every client's settings; :class:`FakeSpeech`
  bundles the two fakes (the app reads its hub from ``app.state.speech_hub``)::

      speech = FakeSpeech(ScriptedSTT(["I'd like to book a massage"]))
      app.state.speech_hub = speech.hub()
      ...
      assert speech.stt.heard == ["I'd like to book a massage"]

Both implement the interfaces' ``_..._impl`` hooks, so calls go through the
real public methods (``start_stream``, ``finalize``, ``synthesize``) with the
base's timeouts and metrics (:mod:`engine.providers`). Both are deterministic
and independent of CPU speed: no threads, no clocks, no subprocesses; results
depend only on the order of calls. Use them where
what was said or how it sounds is not what is under test (call actions,
DTMF, traces, marks...); tests of recognition, synthesis and barge-in on
real speech keep the real providers.

Test-only: production code never imports this module.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field

import numpy as np

from providers.speech.audio import AudioChunk
from providers.speech.errors import SttError
from providers.speech.providers import SpeechHub
from providers.speech.stt import SpeechToText, SttStream, Transcript
from providers.speech.tts import MAX_TEXT_CHARS, TextToSpeech

__all__ = ["FakeSpeech", "Recognised", "ScriptedSTT", "ToneTTS", "speech_hub"]

ScriptLine = str | Transcript | SttError
"""A line of a :class:`ScriptedSTT` script: the text heard, a whole transcript, or a failure."""


@dataclass(frozen=True, slots=True)
class Recognised:
    """One finalised utterance of a :class:`ScriptedSTT`.

    Attributes:
        pcm: everything the stream was fed, PCM16 mono at ``sample_rate_hz``.
        sample_rate_hz: the stream's rate, in Hz.
        session_id: what the caller passed to ``start_stream`` (the call's id).
        transcript: what was answered; None when the script made it fail.
    """

    pcm: bytes
    sample_rate_hz: int
    session_id: str | None
    transcript: Transcript | None


class ScriptedSTT(SpeechToText):
    """A recogniser that hears what its script says, in order, one line per utterance.

    Each :meth:`SttStream.finalize` takes the next line: a string is heard
    with ``confidence``, a :class:`Transcript` is returned as it is (with the
    stream's ``audio_ms``), an :class:`SttError` is raised. When the script
    has run out, utterances are heard as nothing (``""``, confidence 0), as
    a real recogniser hears noise. Streams closed without ``finalize`` (a
    barge-in that turned out to be echo, a hang-up) take no line.

    Args:
        script: the lines, in the order utterances will be finalised.
        confidence: confidence of the lines given as strings, 0..1.

    Attributes:
        recognised: every finalised utterance, in order, with its audio.
        opened: streams started.
        abandoned: streams closed without being finalised.
    """

    name = "scripted"

    def __init__(self, script: Iterable[ScriptLine] = (), *, confidence: float = 0.9) -> None:
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        self.confidence = confidence
        self._script: deque[ScriptLine] = deque(script)
        self.recognised: list[Recognised] = []
        self.opened = 0
        self.abandoned = 0

    def queue(self, *lines: ScriptLine) -> None:
        """Add lines at the end of the script."""
        self._script.extend(lines)

    @property
    def pending(self) -> tuple[ScriptLine, ...]:
        """The lines not heard yet."""
        return tuple(self._script)

    @property
    def heard(self) -> list[str]:
        """The text of every utterance recognised so far (failures left out)."""
        return [r.transcript.text for r in self.recognised if r.transcript is not None]

    def _start_stream_impl(self, sample_rate_hz: int, *, session_id: str | None) -> SttStream:
        stream = _ScriptedStream(self, sample_rate_hz, session_id)
        self.opened += 1
        return stream

    def _answer(self, stream: _ScriptedStream) -> Transcript:
        line = self._script.popleft() if self._script else ""
        pcm = b"".join(stream.chunks)
        if isinstance(line, SttError):
            self.recognised.append(Recognised(pcm, stream.sample_rate_hz, stream.session_id, None))
            raise line
        if isinstance(line, Transcript):
            transcript = Transcript(line.text, line.confidence, stream.audio_ms, line.provider)
        else:
            confidence = self.confidence if line.strip() else 0.0
            transcript = Transcript(line, confidence, stream.audio_ms, self.name)
        self.recognised.append(
            Recognised(pcm, stream.sample_rate_hz, stream.session_id, transcript)
        )
        return transcript


class _ScriptedStream(SttStream):
    def __init__(self, owner: ScriptedSTT, sample_rate_hz: int, session_id: str | None) -> None:
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
        self.sample_rate_hz = sample_rate_hz
        self.session_id = session_id
        self.chunks: list[bytes] = []
        self._owner = owner
        self._state = "open"

    @property
    def audio_ms(self) -> float:
        return sum(len(c) for c in self.chunks) / 2 * 1000.0 / self.sample_rate_hz

    def feed(self, pcm: bytes) -> None:
        if self._state != "open":
            raise RuntimeError(f"cannot feed audio: the stream is {self._state}")
        if len(pcm) % 2:
            raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")
        if pcm:
            self.chunks.append(pcm)

    async def _finalize_impl(self) -> Transcript:
        if self._state != "open":
            raise RuntimeError(f"cannot finalize: the stream is {self._state}")
        self._state = "closed"
        return self._owner._answer(self)

    async def aclose(self) -> None:
        if self._state == "open":
            self._owner.abandoned += 1
        self._state = "closed"


class ToneTTS(TextToSpeech):
    """A synthesiser that speaks every text as a quiet tone, at once.

    The audio lasts ``ms_per_char`` per character of the (whitespace-collapsed)
    text, so longer replies play longer and the share of a reply a caller
    heard maps onto its words as with real speech. It is a tone rather than
    silence so the bot's audio is audible on the line, to a listener and to
    the gateway's level meter (its barge-in threshold follows what it
    played); at 1 kHz it does not correlate with a caller's voice or with
    :func:`testkit.phone.audio.voiced_buzz`.

    Args:
        ms_per_char: audio per character, in ms.
        tone_hz: the tone's frequency, in Hz (below half of ``sample_rate_hz``).
        level_dbfs: its RMS level, in dBFS.
        sample_rate_hz: the output rate, in Hz (8000: no resampling on the phone path).
        chunk_ms: size of the chunks yielded, in ms of audio.

    Attributes:
        spoken: every text synthesised, in order.

    Raises:
        ValueError: a setting out of range.
    """

    name = "tone"

    def __init__(
        self,
        *,
        ms_per_char: float = 10.0,
        tone_hz: float = 1000.0,
        level_dbfs: float = -35.0,
        sample_rate_hz: int = 8000,
        chunk_ms: int = 100,
    ) -> None:
        if ms_per_char <= 0 or chunk_ms <= 0 or sample_rate_hz <= 0:
            raise ValueError("ms_per_char, chunk_ms and sample_rate_hz must be positive")
        if not 0 < tone_hz < sample_rate_hz / 2:
            raise ValueError(f"tone_hz must be in (0, {sample_rate_hz / 2:g}), got {tone_hz}")
        if level_dbfs > 0:
            raise ValueError(f"level_dbfs must be <= 0, got {level_dbfs}")
        self.ms_per_char = ms_per_char
        self.tone_hz = tone_hz
        self.level_dbfs = level_dbfs
        self.sample_rate_hz = sample_rate_hz
        self.chunk_ms = chunk_ms
        self.spoken: list[str] = []

    def duration_ms(self, text: str) -> float:
        """How long ``text`` will sound, in ms (0 for blank text)."""
        return len(" ".join(text.split())) * self.ms_per_char

    async def _synthesize_impl(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        text = " ".join(text.split())
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(
                f"text is {len(text)} characters; synthesize at most {MAX_TEXT_CHARS} at a time"
            )
        if not text:
            return
        self.spoken.append(text)
        rate = self.sample_rate_hz
        samples = max(1, round(self.duration_ms(text) * rate / 1000))
        amplitude = 32768 * 10 ** (self.level_dbfs / 20) * math.sqrt(2)  # RMS -> peak
        tone = amplitude * np.sin(2 * math.pi * self.tone_hz * np.arange(samples) / rate)
        pcm = np.rint(tone).astype("<i2").tobytes()
        step = max(2, rate * self.chunk_ms // 1000 * 2)
        for start in range(0, len(pcm), step):
            yield AudioChunk(pcm[start : start + step], rate)


def speech_hub(stt: SpeechToText, tts: TextToSpeech) -> SpeechHub:
    """A :class:`SpeechHub` that hands out ``stt`` and ``tts`` for every client's settings."""

    def make_stt(*_spec: object, **_options: object) -> SpeechToText:
        return stt

    def make_tts(*_spec: object) -> TextToSpeech:
        return tts

    return SpeechHub(make_stt_fn=make_stt, make_tts_fn=make_tts)


@dataclass(frozen=True, slots=True)
class FakeSpeech:
    """A scripted recogniser and a tone synthesiser, as one app's calls use them."""

    stt: ScriptedSTT = field(default_factory=ScriptedSTT)
    tts: ToneTTS = field(default_factory=ToneTTS)

    def hub(self) -> SpeechHub:
        """A hub handing out these two for every client (see :func:`speech_hub`)."""
        return speech_hub(self.stt, self.tts)

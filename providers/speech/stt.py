"""Speech-to-text behind one streaming interface.

The caller opens a stream when the user starts speaking, feeds audio while
they speak, and finalises it at the end of their turn, so that at the endpoint
only the last bit of decoding remains::

    stt = make_stt("auto", model=None, phrases=["swedish massage", "facial"])  # providers.speech.factory
    stream = stt.start_stream(sample_rate_hz=8000)
    stream.feed(pcm16_frame)            # sync, cheap: queues work for a thread
    ...
    transcript = await stream.finalize()  # Transcript(text, confidence)

Providers:

* :class:`~providers.speech.pocketsphinx_stt.PocketSphinxSTT` — offline default; CMU PocketSphinx 5 with the
  US-English acoustic model shipped inside the wheel. By default it decodes
  with a small trigram model built from the client's phrases and the
  receptionist's built-in vocabulary (yes/no, digits, weekdays, times); see
  :mod:`providers.speech._domain_lm`. Decoding runs incrementally in a worker
  thread while the caller speaks.
* :class:`~providers.speech.whisper_stt.FasterWhisperSTT` — neural, via ``faster-whisper`` (extra
  ``pip install .[whisper]``); a model name (downloaded from the Hugging Face
  hub) or a local CTranslate2 model folder. Whisper is not a streaming model:
  audio is resampled and buffered as it arrives and decoded at ``finalize``.

All blocking work (model loading aside, which happens in :func:`make_stt` at
start-up) runs in an executor thread, never on the event loop. Loaded models
are cached per process and shared by every stream.

Errors: :class:`SpeechUnavailableError` when a provider cannot be set up
(missing package or model); :class:`SttError` when decoding fails or takes
longer than the recogniser's ``options.timeout_s`` (30 s by default).

A recogniser is an :class:`engine.providers.Provider` (kind ``stt``): the
public :meth:`SpeechToText.start_stream` and :meth:`SttStream.finalize` are
written once here and run the providers' ``_start_stream_impl`` and
``_finalize_impl``; ``finalize`` gets the base's timeout and metrics
(``gateway_provider_*{kind="stt"}``). It is never retried: the audio fed to
the stream is consumed by the attempt.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Executor
from dataclasses import dataclass

from engine.errors import GatewayError
from engine.providers import CallOptions, Provider
from providers.speech.audio import Resampler
from providers.speech.errors import SpeechUnavailableError, SttError

__all__ = [
    "STT_SAMPLE_RATE_HZ",
    "SpeechToText",
    "SpeechUnavailableError",
    "SttError",
    "SttStream",
    "Transcript",
]

logger = logging.getLogger(__name__)

STT_SAMPLE_RATE_HZ = 16000
"""The rate both recognisers decode at, in Hz; other input rates are resampled."""

WHISPER_WINDOW_MIN_S = 10.0
"""Shortest encoder window for Whisper, in s (see :meth:`FasterWhisperSTT._decode`)."""
WHISPER_WINDOW_MARGIN_S = 2.0
"""Silence after the audio inside Whisper's encoder window, in s."""
WHISPER_TOKENS_PER_S = 7
"""Most tokens Whisper may generate per second of audio (speech is ~3-5)."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """What was said in one utterance.

    Attributes:
        text: lowercase words for PocketSphinx, cased text for Whisper; ``""``
            when nothing was recognised.
        confidence: 0..1. A per-provider heuristic (see each provider), good for
            "ask again?" thresholds, not calibrated across providers.
        audio_ms: duration of the audio fed, in ms.
        provider: which recogniser produced it (``"pocketsphinx"``, ``"faster-whisper"``).
    """

    text: str
    confidence: float
    audio_ms: float = 0.0
    provider: str = ""


class SttStream(ABC):
    """One utterance being recognised. Use from one event loop; not reusable.

    ``feed`` accepts PCM16 mono at :attr:`sample_rate_hz` (any even length,
    typically 20 ms frames). ``finalize`` may be called once; ``aclose``
    abandons the stream without a result and is safe to call at any time.
    Implementations provide ``feed``, ``_finalize_impl`` and ``aclose``.
    """

    sample_rate_hz: int
    context: str | None = None
    """What the caller is likely to say (see :meth:`SpeechToText.start_stream`)."""
    recogniser: SpeechToText | None = None
    """The recogniser that opened the stream (set by :meth:`SpeechToText.start_stream`):
    its timeout and metrics apply to :meth:`finalize`."""

    @abstractmethod
    def feed(self, pcm: bytes) -> None:
        """Queue audio for recognition. Cheap; never blocks on decoding.

        Raises:
            RuntimeError: the stream was finalised or closed.
            ValueError: odd byte count.
        """

    async def finalize(self) -> Transcript:
        """Finish decoding and return the transcript.

        Raises:
            SttError: the recogniser failed, or took longer than its
                ``options.timeout_s`` (then ``retryable``).
            RuntimeError: called twice or after ``aclose``.
        """
        owner = self.recogniser
        if owner is None:
            return await self._finalize_impl()
        return await owner._call("recognize", self._finalize_impl)

    async def peek(self) -> Transcript | None:
        """A speculative transcript of the audio fed so far; the stream stays open.

        The phone decodes while the caller is silent inside the endpointing
        window, so the final transcript is ready when the turn ends (and can
        end it early). None: this recogniser does not support it (PocketSphinx
        decodes incrementally; its ``finalize`` is already quick).

        Raises:
            SttError: decoding failed.
        """
        return None

    async def _finalize_impl(self) -> Transcript:
        """One attempt of :meth:`finalize` (the only one: a stream is not reusable)."""
        # Not abstract, for streams written before this base that override
        # ``finalize`` itself (they go without the timeout and metrics).
        raise NotImplementedError(f"{type(self).__name__} does not implement _finalize_impl")

    @abstractmethod
    async def aclose(self) -> None:
        """Abandon the utterance and release the recogniser."""


class SpeechToText(Provider):
    """A speech recogniser; one instance serves many concurrent streams.

    Implementations provide ``_start_stream_impl`` (and streams implementing
    :class:`SttStream`); ``options.timeout_s`` bounds each ``finalize``.
    """

    kind = "stt"
    name: str = "stt"
    options = CallOptions(timeout_s=30.0, max_attempts=1)

    def start_stream(
        self,
        sample_rate_hz: int = 8000,
        *,
        session_id: str | None = None,
        context: str | None = None,
    ) -> SttStream:
        """Open a stream for one utterance of PCM16 mono at ``sample_rate_hz`` (Hz).

        ``session_id`` (e.g. the call's id) lets a recogniser adapt to one caller
        across their turns; it is never logged. ``context``: an example of what
        the caller is likely to say, written as it should be transcribed ("My
        number is 617-555-0123."); Whisper takes it as its prompt, which steers
        spelling and format (digits grouped, ``@`` and dots in an email).

        Raises:
            ValueError: ``sample_rate_hz`` is not positive.
        """
        stream = self._start_stream_impl(sample_rate_hz, session_id=session_id)
        stream.recogniser = self
        stream.context = context
        return stream

    def _start_stream_impl(self, sample_rate_hz: int, *, session_id: str | None) -> SttStream:
        """A new stream of this recogniser (see :meth:`start_stream`)."""
        # Not abstract, for recognisers written before this base that override
        # ``start_stream`` itself.
        raise NotImplementedError(f"{type(self).__name__} does not implement _start_stream_impl")

    def _timeout_error(self, operation: str, timeout_s: float) -> GatewayError:
        return SttError(
            f"{self.name}: {operation} took longer than {timeout_s:g} s", retryable=True
        )

    async def transcribe(
        self, pcm: bytes, sample_rate_hz: int, *, session_id: str | None = None
    ) -> Transcript:
        """Recognise a whole utterance at once (PCM16 mono at ``sample_rate_hz``)."""
        stream = self.start_stream(sample_rate_hz, session_id=session_id)
        try:
            stream.feed(pcm)
            return await stream.finalize()
        finally:
            await stream.aclose()

    async def warm_up(self) -> None:
        """Load whatever the first stream would otherwise load (optional)."""
        return None


class _WorkerStream(SttStream):
    """Queues fed audio and consumes it in order on an executor thread.

    Subclasses implement ``_consume`` (16 kHz PCM16, on the worker thread),
    ``_result`` (on the worker thread, after the last ``_consume``) and
    ``_release`` (on the worker thread, exactly once if a worker ever ran).
    """

    provider = "stt"

    def __init__(self, sample_rate_hz: int, executor: Executor | None) -> None:
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
        self.sample_rate_hz = sample_rate_hz
        self._executor = executor
        self._resampler = Resampler(sample_rate_hz, STT_SAMPLE_RATE_HZ)
        self._queue_lock = threading.Lock()
        self._worker_lock = threading.Lock()
        self._queue: list[bytes] = []
        self._work: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._state = "open"
        self._fed_bytes = 0
        self._released = False

    def feed(self, pcm: bytes) -> None:
        if self._state != "open":
            raise RuntimeError(f"cannot feed audio: the stream is {self._state}")
        if len(pcm) % 2:
            raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")
        if not pcm:
            return
        with self._queue_lock:
            self._queue.append(pcm)
        self._fed_bytes += len(pcm)
        if self._work is None or self._work.done():
            loop = asyncio.get_running_loop()
            self._work = loop.run_in_executor(self._executor, self._drain)

    async def _finalize_impl(self) -> Transcript:
        if self._state != "open":
            raise RuntimeError(f"cannot finalize: the stream is {self._state}")
        self._state = "finalizing"
        try:
            if self._work is not None:
                await self._work
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._finish)
        finally:
            self._state = "closed"

    async def aclose(self) -> None:
        self._state = "closed"
        if self._work is None and not self._released:
            self._released = True  # no worker ever ran: nothing was acquired
            return
        if self._work is not None:
            await asyncio.shield(self._work)
        if not self._released:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._release_once)

    @property
    def audio_ms(self) -> float:
        return self._fed_bytes / 2 * 1000.0 / self.sample_rate_hz

    async def peek(self) -> Transcript | None:
        if self._state != "open" or not self._supports_peek():
            return None
        audio_ms = self.audio_ms
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._peek_now, audio_ms)

    def _peek_now(self, audio_ms: float) -> Transcript | None:
        self._drain()
        with self._worker_lock:
            if self._error is not None or self._released:
                return None
            try:
                return self._partial(audio_ms)
            except Exception as exc:
                raise SttError(
                    f"{self.provider} failed to decode {audio_ms:.0f} ms of audio: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    def _supports_peek(self) -> bool:
        return False

    def _partial(self, audio_ms: float) -> Transcript | None:
        """The transcript of what was consumed so far (worker thread, lock held)."""
        return None

    def _drain(self) -> None:
        with self._worker_lock:
            while self._error is None:
                with self._queue_lock:
                    chunks, self._queue = self._queue, []
                if not chunks:
                    return
                try:
                    pcm = self._resampler.process(b"".join(chunks))
                    if pcm:
                        self._consume(pcm)
                except Exception as exc:  # recogniser failure: surfaced at finalize
                    self._error = exc

    def _finish(self) -> Transcript:
        try:
            self._drain()
            with self._worker_lock:
                if self._error is None:
                    try:
                        tail = self._resampler.flush()
                        if tail:
                            self._consume(tail)
                        return self._result()
                    except Exception as exc:
                        self._error = exc
                raise SttError(
                    f"{self.provider} failed to decode {self.audio_ms:.0f} ms of audio: "
                    f"{type(self._error).__name__}: {self._error}"
                ) from self._error
        finally:
            self._release_once()

    def _release_once(self) -> None:
        with self._worker_lock:
            if not self._released:
                self._released = True
                self._release()

    @abstractmethod
    def _consume(self, pcm16k: bytes) -> None: ...

    @abstractmethod
    def _result(self) -> Transcript: ...

    def _release(self) -> None:
        return None

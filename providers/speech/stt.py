"""Speech-to-text behind one streaming interface.

The caller opens a stream when the user starts speaking, feeds audio while
they speak, and finalises it at the end of their turn, so that at the endpoint
only the last bit of decoding remains::

    stt = make_stt("auto", model=None, phrases=["swedish massage", "facial"])
    stream = stt.start_stream(sample_rate_hz=8000)
    stream.feed(pcm16_frame)            # sync, cheap: queues work for a thread
    ...
    transcript = await stream.finalize()  # Transcript(text, confidence)

Providers:

* :class:`PocketSphinxSTT` — offline default; CMU PocketSphinx 5 with the
  US-English acoustic model shipped inside the wheel. By default it decodes
  with a small trigram model built from the client's phrases and the
  receptionist's built-in vocabulary (yes/no, digits, weekdays, times); see
  :mod:`providers.speech._domain_lm`. Decoding runs incrementally in a worker
  thread while the caller speaks.
* :class:`FasterWhisperSTT` — neural, via ``faster-whisper`` (extra
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
import hashlib
import logging
import math
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import GatewayError
from engine.providers import CallOptions, Provider
from providers.speech import _domain_lm
from providers.speech import models as _models
from providers.speech.audio import Resampler, pcm16_to_float32
from providers.speech.errors import SpeechUnavailableError, SttError
from providers.speech.models import announce as _announce

__all__ = [
    "STT_SAMPLE_RATE_HZ",
    "FasterWhisperSTT",
    "PocketSphinxSTT",
    "SpeechToText",
    "SpeechUnavailableError",
    "SttError",
    "SttStream",
    "Transcript",
    "make_stt",
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


# --------------------------------------------------------------------------- PocketSphinx

DEFAULT_NOISE_FLOOR_RMS = 60.0
"""RMS (int16 units, about -55 dBFS) of white noise added to audio before decoding.

The acoustic model was trained on 16 kHz speech recorded with some background
noise. Telephone audio resampled to 16 kHz has an empty 4-8 kHz band, and
synthetic or gated audio has stretches of digital silence; their log filterbank
energies fall far outside anything seen in training. A faint noise floor
brings them back in range. On espeak sentences sent through the 8 kHz mu-law
path, word error rate with the domain model drops from about 40 % to about
16 % (``bench/phone_stt.py``).
"""


class _CmuDict:
    """The pronunciation dictionary shipped with PocketSphinx, parsed once."""

    _lock = threading.Lock()
    _entries: dict[str, list[str]] | None = None

    @classmethod
    def entries(cls, path: Path) -> dict[str, list[str]]:
        with cls._lock:
            if cls._entries is None:
                entries: dict[str, list[str]] = {}
                with path.open(encoding="utf-8") as handle:
                    for line in handle:
                        word = line.split(" ", 1)[0]
                        entries.setdefault(word.split("(", 1)[0], []).append(line.rstrip("\n"))
                cls._entries = entries
            return cls._entries


class _DecoderPool:
    """Idle PocketSphinx decoders for one configuration, reused across streams.

    A decoder serves one utterance at a time; the pool hands each stream its
    own and takes it back afterwards.

    It also remembers cepstral means (CMN). PocketSphinx normalises features
    by a running mean that adapts during an utterance; starting from the
    model's generic initial value costs a lot of accuracy on telephone audio
    (WER 18 % -> 49 % on the benchmark). So each utterance starts from the
    mean left by the caller's previous utterance (``session_id``), else from
    the channel mean left by the last utterance on this pool. A cepstral mean
    is 13 numbers describing the channel; it carries no words.
    """

    def __init__(self, config: dict[str, Any], max_idle: int = 8, max_sessions: int = 512):
        self._config = config
        self._max_idle = max_idle
        self._max_sessions = max_sessions
        self._idle: list[Any] = []
        self._channel_cmn: str | None = None
        self._session_cmn: dict[str, str] = {}
        self._lock = threading.Lock()

    def acquire(self, session_id: str | None) -> Any:
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
            cmn = self._session_cmn.get(session_id) if session_id else None
            cmn = cmn or self._channel_cmn
        if decoder is None:
            from pocketsphinx import Decoder

            decoder = Decoder(**self._config, logfn=os.devnull)
        if cmn is not None:
            decoder.set_cmn(cmn)
        return decoder

    def release(self, decoder: Any, session_id: str | None) -> None:
        """Take back a decoder that finished an utterance, and remember its mean."""
        cmn = decoder.get_cmn()
        with self._lock:
            self._channel_cmn = cmn
            if session_id:
                self._session_cmn.pop(session_id, None)
                self._session_cmn[session_id] = cmn
                while len(self._session_cmn) > self._max_sessions:
                    del self._session_cmn[next(iter(self._session_cmn))]
            if len(self._idle) < self._max_idle:
                self._idle.append(decoder)

    def release_without_mean(self, decoder: Any) -> None:
        """Take back a decoder whose utterance was abandoned."""
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(decoder)


_POOLS: dict[tuple[tuple[str, Any], ...], _DecoderPool] = {}
_POOLS_LOCK = threading.Lock()


def _pool_for(config: dict[str, Any]) -> _DecoderPool:
    key = tuple(sorted(config.items()))
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = _DecoderPool(config)
        return pool


class PocketSphinxSTT(SpeechToText):
    """Offline recognition with CMU PocketSphinx 5 (US English).

    Args:
        phrases: the client's domain words and phrases (service names and
            aliases, staff names...). Words missing from the pronunciation
            dictionary are left out (their count is logged at debug level).
        bias: decode with the domain model built from ``phrases`` plus the
            built-in vocabulary (default). ``False`` uses the general
            US-English model shipped with PocketSphinx (much less accurate on
            receptionist calls; kept for comparison).
        noise_floor_rms: RMS in int16 units of the white noise mixed into the
            audio before decoding (see :data:`DEFAULT_NOISE_FLOOR_RMS`); 0 = off.
        cache_dir: where the generated model files are written (default: a
            ``gateway-speech`` folder in the system temp directory).
        executor: where decoding runs (default: the event loop's executor).

    Confidence is the hypothesis posterior probability, normalised per word
    (its geometric mean), so short and long utterances compare.

    Raises:
        SpeechUnavailableError: pocketsphinx is not installed.
    """

    name = "pocketsphinx"

    def __init__(
        self,
        phrases: Sequence[str] = (),
        *,
        bias: bool = True,
        noise_floor_rms: float = DEFAULT_NOISE_FLOOR_RMS,
        cache_dir: Path | None = None,
        executor: Executor | None = None,
    ) -> None:
        if noise_floor_rms < 0:
            raise ValueError(f"noise_floor_rms must be >= 0, got {noise_floor_rms}")
        self.noise_floor_rms = noise_floor_rms
        try:
            import pocketsphinx
        except ImportError as exc:  # pragma: no cover - it is a dev dependency
            raise SpeechUnavailableError(
                self.name, "pocketsphinx is not installed; pip install .[pocketsphinx]"
            ) from exc
        model_root = Path(pocketsphinx.get_model_path()) / "en-us"
        self._executor = executor
        self.bias = bias
        if bias:
            lm_path, dict_path = self._write_domain_model(
                model_root, phrases, cache_dir or Path(tempfile.gettempdir()) / "gateway-speech"
            )
        else:
            lm_path = model_root / "en-us.lm.bin"
            dict_path = model_root / "cmudict-en-us.dict"
        # No second (flat-lexicon) pass: it made end_utt take ~100 ms instead of
        # ~3 ms with no accuracy gain on the domain model (bench/phone_stt.py).
        self._pool = _pool_for(
            {
                "hmm": str(model_root / "en-us"),
                "lm": str(lm_path),
                "dict": str(dict_path),
                "fwdflat": False,
            }
        )

    @staticmethod
    def _write_domain_model(
        model_root: Path, phrases: Sequence[str], cache_dir: Path
    ) -> tuple[Path, Path]:
        pronunciations = _CmuDict.entries(model_root / "cmudict-en-us.dict")
        known: list[str] = []
        dropped = 0
        for phrase in phrases:
            words = _domain_lm.normalize_words(phrase)
            kept = [w for w in words if w in pronunciations]
            dropped += len(words) - len(kept)
            if kept:
                known.append(" ".join(kept))
        if dropped:
            logger.debug("pocketsphinx: %d phrase word(s) have no pronunciation; left out", dropped)
        sentences = [
            " ".join(w for w in s.split() if w in pronunciations)
            for s in _domain_lm.domain_sentences(known)
        ]
        extra = [w for w in _domain_lm.domain_vocabulary() if w in pronunciations]
        arpa = _domain_lm.build_arpa(sentences, extra_vocabulary=extra)
        vocabulary = sorted({w for s in sentences for w in s.split()} | set(extra))
        dictionary = "\n".join(line for w in vocabulary for line in pronunciations[w]) + "\n"

        digest = hashlib.sha256((arpa + dictionary).encode()).hexdigest()[:16]
        folder = cache_dir / "pocketsphinx" / digest
        folder.mkdir(parents=True, exist_ok=True)
        lm_path, dict_path = folder / "domain.arpa", folder / "domain.dict"
        for path, text in ((lm_path, arpa), (dict_path, dictionary)):
            if not path.exists():
                tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(path)  # atomic: concurrent writers produce identical files
        return lm_path, dict_path

    def _start_stream_impl(self, sample_rate_hz: int, *, session_id: str | None) -> SttStream:
        return _SphinxStream(
            sample_rate_hz, self._pool, self.noise_floor_rms, session_id, self._executor
        )

    async def warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        decoder = await loop.run_in_executor(self._executor, self._pool.acquire, None)
        self._pool.release_without_mean(decoder)


_SLICE_BYTES = STT_SAMPLE_RATE_HZ * 2 * 20 // 1000
"""20 ms of 16 kHz PCM16: the most audio handed to PocketSphinx per call."""


class _SphinxStream(_WorkerStream):
    provider = "pocketsphinx"

    def __init__(
        self,
        sample_rate_hz: int,
        pool: _DecoderPool,
        noise_floor_rms: float,
        session_id: str | None,
        executor: Executor | None,
    ) -> None:
        super().__init__(sample_rate_hz, executor)
        self._pool = pool
        self._session_id = session_id
        self._decoder: Any = None
        self._in_utterance = False
        self._noise_rms = noise_floor_rms
        self._rng = np.random.default_rng(0x5EED)

    def _consume(self, pcm16k: bytes) -> None:
        if self._decoder is None:
            self._decoder = self._pool.acquire(self._session_id)
            self._decoder.start_utt()
            self._in_utterance = True
        if self._noise_rms:
            samples = np.frombuffer(pcm16k, dtype="<i2").astype(np.float64)
            samples += self._rng.standard_normal(samples.size) * self._noise_rms
            pcm16k = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
        # process_raw holds the GIL for its whole call: small slices keep the
        # event loop thread responsive while a long utterance is decoded.
        for start in range(0, len(pcm16k), _SLICE_BYTES):
            self._decoder.process_raw(pcm16k[start : start + _SLICE_BYTES], False, False)

    def _result(self) -> Transcript:
        if self._decoder is None:
            return Transcript("", 0.0, self.audio_ms, self.provider)
        self._decoder.end_utt()
        self._in_utterance = False
        hyp = self._decoder.hyp()
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        if not text:
            return Transcript("", 0.0, self.audio_ms, self.provider)
        posterior = min(1.0, max(0.0, float(hyp.prob)))
        confidence = posterior ** (1.0 / len(text.split()))
        return Transcript(text, round(confidence, 4), self.audio_ms, self.provider)

    def _release(self) -> None:
        if self._decoder is None:
            return
        decoder, self._decoder = self._decoder, None
        if not self._in_utterance:
            self._pool.release(decoder, self._session_id)
            return
        try:  # abandoned mid-utterance: reuse the decoder, not its mean
            decoder.end_utt()
        except RuntimeError:
            return  # a decoder in an unknown state is not worth reusing
        self._pool.release_without_mean(decoder)


# --------------------------------------------------------------------------- faster-whisper

_WHISPER_MODELS: dict[tuple[str, str, str], Any] = {}
_WHISPER_FAILURES: dict[tuple[str, str, str], str] = {}
_WHISPER_LOCK = threading.Lock()


def _load_whisper_model(
    model: str,
    *,
    device: str,
    compute_type: str,
    download_root: str | None,
    local_files_only: bool,
    workers: int = 1,
) -> Any:
    """The shared ``faster_whisper.WhisperModel`` for ``model``, loaded on first use.

    ``workers`` decodes may run at once, each on one CPU thread.

    A failure is remembered too, so a missing model is not looked up on the
    hub again for every client that names it.

    Raises:
        SpeechUnavailableError: the package is missing or the model cannot load.
    """
    key = (model, device, compute_type)
    with _WHISPER_LOCK:
        if key in _WHISPER_MODELS:
            return _WHISPER_MODELS[key]
        if key in _WHISPER_FAILURES:
            raise SpeechUnavailableError("faster-whisper", _WHISPER_FAILURES[key])
        try:
            loaded = _load_whisper_uncached(
                model, device, compute_type, download_root, local_files_only, workers
            )
        except SpeechUnavailableError as exc:
            _WHISPER_FAILURES[key] = exc.reason
            raise
        _WHISPER_MODELS[key] = loaded
        return loaded


_WHISPER_POOLS: dict[int, ThreadPoolExecutor] = {}


def _whisper_pool(workers: int) -> ThreadPoolExecutor:
    """The process's Whisper decode threads (one pool per size, shared by every client)."""
    with _WHISPER_LOCK:
        pool = _WHISPER_POOLS.get(workers)
        if pool is None:
            pool = _WHISPER_POOLS[workers] = ThreadPoolExecutor(
                workers, thread_name_prefix="whisper"
            )
        return pool


def _looks_like_path(model: str) -> bool:
    """A folder rather than a hub name (``base.en``, ``Systran/faster-whisper-small``)."""
    return (
        model.startswith((".", "/", "~"))
        or model.count("/") > 1
        or Path(model).expanduser().exists()
    )


def _load_whisper_uncached(
    model: str,
    device: str,
    compute_type: str,
    download_root: str | None,
    local_files_only: bool,
    workers: int,
) -> Any:
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise SpeechUnavailableError(
            "faster-whisper", "faster-whisper is not installed; pip install .[whisper]"
        ) from exc
    location = model
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not (folder / "model.bin").is_file():
            raise SpeechUnavailableError(
                "faster-whisper", f"no CTranslate2 model (model.bin) in folder {model!r}"
            )
        location = str(folder)
    try:
        return WhisperModel(
            location,
            device=device,
            compute_type=compute_type,
            download_root=download_root,
            local_files_only=local_files_only,
            cpu_threads=1,
            num_workers=workers,
        )
    except Exception as exc:  # hub, file and runtime errors all mean "unavailable"
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SpeechUnavailableError(
            "faster-whisper", f"model {model!r} failed to load: {type(exc).__name__}: {first_line}"
        ) from exc


class FasterWhisperSTT(SpeechToText):
    """Neural recognition with faster-whisper (CTranslate2 Whisper models).

    Args:
        model: a model size/name (``"base.en"``, ``"small"``...; downloaded from
            the Hugging Face hub unless cached) or a folder holding a converted
            model (``model.bin``, ``config.json``, ``tokenizer.json``...).
        phrases: domain words passed to Whisper as ``hotwords``.
        language: ISO 639-1 code, or None to detect.
        device, compute_type: CTranslate2 placement, e.g. ``"cpu"``/``"int8"``.
        beam_size: 1 (greedy) keeps latency low on CPU.
        download_root, local_files_only: passed to ``WhisperModel``.
        executor: where inference runs (default: the process's Whisper decode
            pool of ``decoders`` threads).
        decoders: decodes that may run at once, each on one core (default: the
            cores, at most 4). More would only make each slower.

    Loading blocks (seconds); construct at start-up. The model is loaded once
    per process and shared. Confidence is ``exp`` of the mean token
    log-probability over segments, scaled by the chance it is speech.

    Raises:
        SpeechUnavailableError: faster-whisper missing or the model cannot load.
    """

    name = "faster-whisper"

    def __init__(
        self,
        model: str,
        *,
        phrases: Sequence[str] = (),
        language: str | None = "en",
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        download_root: str | None = None,
        local_files_only: bool = False,
        executor: Executor | None = None,
        decoders: int | None = None,
    ) -> None:
        self.model_name = model
        workers = decoders or max(1, min(4, os.cpu_count() or 1))
        self._model = _load_whisper_model(
            model,
            device=device,
            compute_type=compute_type,
            download_root=download_root,
            local_files_only=local_files_only,
            workers=workers,
        )
        self._language = language
        self._beam_size = beam_size
        # A prompt in the shape of a transcript ("Spa del Sol. Swedish Massage,
        # Facial.") biases spelling without teaching a style; see make_stt.
        listed = ", ".join(p.strip() for p in phrases if p.strip())[:500]
        self._hotwords = f"{listed}." if listed else None
        # One decode per core at a time, each on one core: concurrent calls
        # queue for a core instead of thrashing both (the decode pool).
        self._executor = executor or _whisper_pool(workers)
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        multilingual = bool(self._model.model.is_multilingual)
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=(language or "en") if multilingual else None,
        )
        prompt: list[int] = []
        if self._hotwords:  # as faster-whisper passes hotwords: a "previous text"
            prompt = [self._tokenizer.sot_prev, *self._tokenizer.encode(" " + self._hotwords)]
            prompt = prompt[: self._model.max_length // 2]
        self._prompt = [*prompt, *self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = get_suppressed_tokens(self._tokenizer, (-1,))
        self._prompts: dict[str, list[int]] = {}

    def _start_stream_impl(self, sample_rate_hz: int, *, session_id: str | None) -> SttStream:
        return _WhisperStream(sample_rate_hz, self, self._executor)

    async def warm_up(self) -> None:
        """Decode a second of silence on each decode thread (the first decode of
        a thread pays one-time set-up costs)."""
        loop = asyncio.get_running_loop()
        silence = np.zeros(STT_SAMPLE_RATE_HZ, dtype=np.float32)
        workers = getattr(self._executor, "_max_workers", 1)
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, self._decode, silence) for _ in range(workers))
        )

    def _prompt_for(self, context: str | None) -> list[int]:
        """The decoder prompt: the phrases and ``context`` as "previous text"."""
        if not context:
            return self._prompt
        prompt = self._prompts.get(context)
        if prompt is None:
            previous = " ".join(p for p in (self._hotwords, context.strip()) if p)
            tokens = self._tokenizer.encode(" " + previous)[-(self._model.max_length // 2 - 1) :]
            prompt = [
                self._tokenizer.sot_prev,
                *tokens,
                *self._tokenizer.sot_sequence,
                self._tokenizer.no_timestamps,
            ]
            if len(self._prompts) < 64:
                self._prompts[context] = prompt
        return prompt

    def _decode(
        self, audio: np.ndarray[Any, np.dtype[np.float32]], context: str | None = None
    ) -> tuple[str, float]:
        """``(text, confidence)`` of 16 kHz float32 mono ``audio`` (blocking; a worker thread).

        ``context``: the stream's context (see :meth:`SpeechToText.start_stream`).

        A phone turn is a few seconds long, but Whisper's encoder normally reads
        a 30 s window: that encoder pass is ~85 % of a tiny.en decode on CPU
        (~490 ms of ~590 ms on 2 cores). CTranslate2 accepts a shorter
        mel window, so an utterance is encoded in a window of
        max(:data:`WHISPER_WINDOW_MIN_S`, its length + :data:`WHISPER_WINDOW_MARGIN_S`)
        seconds, and at most :data:`WHISPER_TOKENS_PER_S` tokens per second of
        audio are generated: ~90 ms for a 3 s utterance on one core, with the
        same words (``bench/speech_accuracy.py`` compares the two). Below a
        10 s window Whisper, trained on 30 s windows, starts to repeat itself;
        repeats of three or more are collapsed anyway. Audio longer than the
        window allows goes through faster-whisper's normal 30 s decoding.
        """
        seconds = len(audio) / STT_SAMPLE_RATE_HZ
        if seconds + WHISPER_WINDOW_MARGIN_S > 30.0:
            return self._decode_long(audio)
        prompt = self._prompt_for(context)
        import ctranslate2

        window_s = max(WHISPER_WINDOW_MIN_S, math.ceil(seconds + WHISPER_WINDOW_MARGIN_S))
        frames = int(window_s * 100)  # 10 ms mel frames
        padded = np.zeros(frames * 160, dtype=np.float32)
        padded[: len(audio)] = audio
        features = self._model.feature_extractor(padded)[:, :frames]
        encoded = self._model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            to_cpu=False,
        )
        max_new = int(seconds * WHISPER_TOKENS_PER_S) + 8
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self._beam_size,
            max_length=min(self._model.max_length, len(prompt) + max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = collapse_repeats(self._tokenizer.decode(tokens).strip())
        # scores are the cumulated log-probability / length (length_penalty 1)
        avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        speech = 1.0 - float(result.no_speech_prob)
        confidence = math.exp(avg_logprob) * speech if text else 0.0
        return text, min(1.0, max(0.0, confidence))

    def _decode_long(self, audio: np.ndarray[Any, np.dtype[np.float32]]) -> tuple[str, float]:
        """faster-whisper's own decoding, 30 s windows (for audio that needs them)."""
        segments, _info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=self._beam_size,
            hotwords=self._hotwords,
            condition_on_previous_text=False,
            without_timestamps=True,
            # Greedy and deterministic: the sampling fallback (temperatures
            # 0.2..1.0) made hard phone transcripts differ run to run and can
            # decode up to six times; a phone turn cannot wait for that.
            temperature=0.0,
            # The phone channel's own VAD has already cut the utterance.
            vad_filter=False,
        )
        texts: list[str] = []
        scores: list[float] = []
        for segment in segments:  # a lazy generator: decoding happens here
            texts.append(segment.text.strip())
            speech = 1.0 - float(segment.no_speech_prob)
            scores.append(math.exp(float(segment.avg_logprob)) * speech)
        text = " ".join(t for t in texts if t)
        confidence = sum(scores) / len(scores) if scores else 0.0
        return text, min(1.0, max(0.0, confidence))


_NUMBERISH = frozenset(
    [
        "zero",
        "oh",
        "o",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "double",
        "triple",
    ]
)
"""Words a spoken number repeats ("five five five"): never collapsed."""


def collapse_repeats(text: str, *, max_span: int = 8) -> str:
    """``text`` with a looped phrase said once: a phrase of one or two words
    repeated three or more times in a row, or a longer one repeated at all.

    Whisper decoding a short window sometimes loops ("yes yes yes yes...",
    "Saturday at noon. Saturday at noon."); a caller's "no, no" and the digits
    of "five five five" stay. Phrases of up to ``max_span`` words are checked,
    case and punctuation ignored.
    """
    words = text.split()
    keys = [re.sub(r"[^\w']", "", w.casefold()) for w in words]
    i = 0
    while i < len(words):
        for span in range(1, max_span + 1):
            unit = keys[i : i + span]
            if len(unit) < span:
                break
            count = 1
            while keys[i + count * span : i + (count + 1) * span] == unit:
                count += 1
            numeric = all(k in _NUMBERISH or k.isdigit() for k in unit)
            if (count >= 3 or (count == 2 and span >= 3)) and not numeric:
                del words[i + span : i + count * span]
                del keys[i + span : i + count * span]
                break
        i += 1
    return " ".join(words)


class _WhisperStream(_WorkerStream):
    provider = "faster-whisper"

    def __init__(self, sample_rate_hz: int, owner: FasterWhisperSTT, executor: Executor | None):
        super().__init__(sample_rate_hz, executor)
        self._owner = owner
        self._pieces: list[np.ndarray[Any, np.dtype[np.float32]]] = []

    def _consume(self, pcm16k: bytes) -> None:
        self._pieces.append(pcm16_to_float32(pcm16k))

    def _result(self) -> Transcript:
        if not self._pieces:
            return Transcript("", 0.0, self.audio_ms, self.provider)
        audio = np.concatenate(self._pieces)
        self._pieces = []
        text, confidence = self._owner._decode(audio, self.context)
        return Transcript(text, round(confidence, 4), self.audio_ms, self.provider)

    def _supports_peek(self) -> bool:
        return True

    def _partial(self, audio_ms: float) -> Transcript | None:
        if not self._pieces:
            return Transcript("", 0.0, audio_ms, self.provider)
        self._pieces = [np.concatenate(self._pieces)]
        text, confidence = self._owner._decode(self._pieces[0], self.context)
        return Transcript(text, round(confidence, 4), audio_ms, self.provider)

    def _release(self) -> None:
        self._pieces = []


# --------------------------------------------------------------------------- factory

_PROVIDERS = ("auto", "faster-whisper", "pocketsphinx")
_HUB_DEFAULT = "base.en"
"""What ``faster-whisper`` without a model loads when none is installed locally
(downloaded from the Hugging Face hub: needs a network)."""


def _whisper_location(model: str | None, models_dir: Path | None) -> tuple[str, str]:
    """``(what to load, how to describe it)`` for a faster-whisper ``model`` setting.

    A model installed under ``models_dir`` (``gateway models install``) wins; a
    folder path is used as is; any other name is left to faster-whisper's hub
    download. No model: the first installed of ``AUTO_WHISPER_MODELS``, else
    :data:`_HUB_DEFAULT`.
    """
    if model is None:
        for name in _models.AUTO_WHISPER_MODELS:
            folder = _models.resolve("whisper", name, models_dir)
            if folder is not None:
                return str(folder), f"{name} from {folder.parent}"
        return _HUB_DEFAULT, f"{_HUB_DEFAULT} (hub download)"
    folder = _models.resolve("whisper", model, models_dir)
    if folder is not None:
        return str(folder), f"{model} from {folder.parent}"
    if _looks_like_path(model):
        return model, f"folder {model}"
    return model, f"{model} (hub download)"


def make_stt(
    provider: str = "auto",
    model: str | None = None,
    phrases: Sequence[str] = (),
    *,
    words: Sequence[str] = (),
    models_dir: Path | None = None,
    device: str = "cpu",
    compute_type: str = "int8",
    cache_dir: Path | None = None,
    executor: Executor | None = None,
) -> SpeechToText:
    """The recogniser for a client's ``voice.stt`` settings.

    Args:
        provider: ``"auto"``, ``"faster-whisper"`` (alias ``"whisper"``) or
            ``"pocketsphinx"`` (alias ``"sphinx"``). ``auto`` picks the best
            that is there: faster-whisper when ``model`` is set, or when
            ``tiny.en`` is installed in ``models_dir``; else PocketSphinx. It
            logs its choice once per process.
        model: faster-whisper model: a name installed in ``models_dir``
            (``tiny.en``, ``base``), a CTranslate2 folder path, or a hub name
            (downloaded by faster-whisper: needs a network). ``faster-whisper``
            without a model: the installed ``tiny.en``, else ``base.en`` from the hub.
        phrases: the client's domain phrases (business name, services,
            aliases...), used to bias either recogniser.
        words: more words a caller may say that PocketSphinx's domain model
            must know (the backchannels "mm-hm", "okay"). Not given to Whisper,
            which knows them: in its prompt they made it write "yeah," for "yes".
        models_dir: where ``gateway models install`` put models
            (``GATEWAY_MODELS_DIR``); None: names are never resolved locally.
        device, compute_type: faster-whisper placement (see :class:`FasterWhisperSTT`).
        cache_dir: where PocketSphinx writes its generated model files (e.g.
            under ``GATEWAY_DATA_DIR``; default: the system temp directory).
        executor: where decoding runs (default: the event loop's executor).

    When faster-whisper cannot be loaded (not installed, model missing, no
    network for a download), logs one warning line and returns PocketSphinx
    instead. Blocks while loading: call at start-up.

    Raises:
        ValueError: unknown provider.
        SpeechUnavailableError: no recogniser at all can be set up.
    """
    key = provider.strip().lower().replace("_", "-")
    key = {"whisper": "faster-whisper", "sphinx": "pocketsphinx"}.get(key, key)
    if key not in _PROVIDERS:
        raise ValueError(f"unknown STT provider {provider!r}; use one of {', '.join(_PROVIDERS)}")
    if key == "pocketsphinx":
        return PocketSphinxSTT([*phrases, *words], cache_dir=cache_dir, executor=executor)
    location, described = _whisper_location(model, models_dir)
    if key == "auto" and model is None and location == _HUB_DEFAULT:
        _announce(
            logger,
            "speech-to-text: auto chose pocketsphinx (no Whisper model installed; "
            "`gateway models install tiny.en` adds one)",
        )
        return PocketSphinxSTT([*phrases, *words], cache_dir=cache_dir, executor=executor)
    try:
        recogniser = FasterWhisperSTT(
            location, phrases=phrases, device=device, compute_type=compute_type, executor=executor
        )
    except SpeechUnavailableError as exc:
        hint = ""
        if model is not None and model in _models.CATALOGUE:
            hint = f"; `gateway models install {model}` installs it offline"
        _announce(
            logger,
            "speech-to-text: faster-whisper %s unavailable (%s)%s; falling back to pocketsphinx",
            described,
            exc.reason,
            hint,
            level=logging.WARNING,
        )
        return PocketSphinxSTT([*phrases, *words], cache_dir=cache_dir, executor=executor)
    if key == "auto":
        _announce(logger, "speech-to-text: auto chose faster-whisper (%s)", described)
    return recogniser

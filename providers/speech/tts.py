"""Text-to-speech behind one streaming interface, a cache, and a sentence splitter.

``await``-free for the caller until audio exists::

    tts = make_tts("auto", voice=None)
    async with contextlib.aclosing(tts.synthesize("Hello! How can I help?")) as chunks:
        async for chunk in chunks:      # AudioChunk(pcm, sample_rate_hz)
            player.add_pcm(chunk.pcm, chunk.sample_rate_hz)

Close the iterator (``aclosing``, or ``aclose()``) when you stop early, e.g.
on barge-in: that stops the synthesis (or kills the synthesiser process).

Providers (neither ever runs synthesis on the event loop):

* :class:`EspeakTTS` — offline default: eSpeak NG in process (``libespeak-ng``
  through ctypes, :mod:`providers.speech.espeak_lib`, one dedicated thread since
  the library is not thread-safe); robotic but instant (first audio well
  under 1 ms after the thread picks the job up, about 5 ms for a sentence).
  If the library cannot be loaded, it logs one line and spawns
  ``espeak-ng --stdout`` per sentence instead (about 8 ms of event-loop time
  per sentence for the spawn).
* :class:`PiperTTS` — neural voices via ``piper-tts`` (GPL-3, optional extra
  ``pip install .[piper]``); needs a voice ``.onnx`` file with its ``.json``.
  Inference runs in a dedicated pool of one thread per core
  (:func:`piper_executor`), one onnxruntime intra-op thread per synthesis, so
  concurrent calls share the cores instead of oversubscribing them. Piper
  speaks a sentence at a time: the first audio is the whole first sentence
  (PCM16 mono at the voice's rate, 22050 Hz for ``medium`` voices).

Both cache their audio: :class:`TtsCache`, an LRU of whole utterances keyed
by (provider, voice settings, text) and bounded in bytes (8 MB by default,
shared by all synthesisers), so a repeated line (greeting, reprompt) starts at
once. Hits and misses are counted in ``gateway_tts_cache_total{result}``.

:func:`split_sentences` turns an LLM's streamed text deltas into whole
sentences, so the first one can be spoken while the rest is generated.

A synthesiser is an :class:`engine.providers.Provider` (kind ``tts``): the
public :meth:`TextToSpeech.synthesize` is written once here and streams the
provider's ``_synthesize_impl``, with the base's metrics
(``gateway_provider_*{kind="tts"}``), a limit on the wait for each chunk
(``options.timeout_s``, 10 s by default) and, until the first chunk has been
yielded, a retry of errors that are ``retryable`` (a timeout is). A cache hit
is not a provider call: it skips those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import struct
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from engine.errors import GatewayError
from engine.providers import CallOptions, Provider
from providers.speech import espeak_lib
from providers.speech import models as _models
from providers.speech.audio import AudioChunk
from providers.speech.errors import SpeechUnavailableError, TtsError
from providers.speech.models import announce as _announce

__all__ = [
    "EspeakTTS",
    "PiperTTS",
    "SentenceSplitter",
    "TextToSpeech",
    "TtsCache",
    "TtsError",
    "make_tts",
    "piper_executor",
    "split_sentences",
    "split_text",
]

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4000
"""Longest text one ``synthesize`` call accepts; split longer replies into sentences."""

TTS_CACHE_EVENTS = Counter(
    "gateway_tts_cache_total",
    "Lookups in the text-to-speech audio cache, by result: hit, miss",
    ["result"],
)

DEFAULT_CACHE_BYTES = 8 * 1024 * 1024
"""Default bound of :class:`TtsCache`, in bytes of PCM (about 3 minutes at 22050 Hz)."""


class TtsCache:
    """An LRU of synthesised utterances, bounded by the bytes of audio it holds.

    Keys are ``(provider, *voice settings, text)`` tuples; values are the
    utterance's chunks as synthesised (PCM16 mono, each with its rate). An
    utterance larger than ``max_entry_bytes`` (default: a quarter of
    ``max_bytes``) is not kept, so one long reply cannot flush the short
    lines that repeat. Safe to share between threads and event loops.

    Args:
        max_bytes: the bound, in bytes of PCM; 0 disables the cache.
        max_entry_bytes: the largest utterance kept, in bytes.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, *, max_entry_bytes: int | None = None):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 4 if max_entry_bytes is None else max_entry_bytes
        self._entries: OrderedDict[tuple[object, ...], tuple[AudioChunk, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of PCM held now."""
        return self._bytes

    def get(self, key: tuple[object, ...]) -> tuple[AudioChunk, ...] | None:
        """The chunks stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            chunks = self._entries.get(key)
            if chunks is not None:
                self._entries.move_to_end(key)
            return chunks

    def put(self, key: tuple[object, ...], chunks: tuple[AudioChunk, ...]) -> bool:
        """Store ``chunks`` under ``key``, evicting the least recently used to fit.

        Returns whether they were stored (not when larger than ``max_entry_bytes``).
        """
        size = sum(len(chunk.pcm) for chunk in chunks)
        if not chunks or size > min(self.max_entry_bytes, self.max_bytes):
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= sum(len(chunk.pcm) for chunk in old)
            while self._entries and self._bytes + size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= sum(len(chunk.pcm) for chunk in evicted)
            self._entries[key] = chunks
            self._bytes += size
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


SHARED_CACHE = TtsCache()
"""The cache every synthesiser uses unless given its own (``tts.cache = ...``)."""


class TextToSpeech(Provider):
    """A speech synthesiser; one instance serves many concurrent calls.

    ``sample_rate_hz`` is the native output rate in Hz (every chunk also
    carries its own rate). Implementations provide ``_synthesize_impl``, and
    :meth:`cache_key` to have their audio cached in :attr:`cache`.
    """

    kind = "tts"
    name: str = "tts"
    sample_rate_hz: int = 22050
    options = CallOptions(timeout_s=10.0, max_attempts=2)
    cache: TtsCache | None = SHARED_CACHE
    """Where whole utterances are cached (None: never)."""

    def cache_key(self) -> tuple[object, ...] | None:
        """What besides the text determines the audio (provider, voice, settings).

        None (the default) keeps this synthesiser's audio out of the cache:
        test doubles and synthesisers whose output varies opt out this way.
        """
        return None

    async def synthesize(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        """Stream the audio for ``text`` as PCM16 mono chunks, in order.

        Yields nothing for blank text. Close the generator to stop early (that
        stops the synthesiser too).

        Raises:
            ValueError: text longer than :data:`MAX_TEXT_CHARS`.
            TtsError: the synthesiser failed, or gave no chunk within
                ``options.timeout_s`` (then ``retryable``). Retryable errors
                before the first chunk are retried (``options.max_attempts``).
        """
        settings = self.cache_key()
        cache = self.cache
        if settings is None or cache is None or cache.max_bytes == 0:
            async with contextlib.aclosing(self._synthesize_measured(text)) as fresh:
                async for chunk in fresh:
                    yield chunk
            return
        text = _clean(text)
        if not text:
            return
        key = (*settings, text)
        cached = cache.get(key)
        if cached is not None:
            TTS_CACHE_EVENTS.labels("hit").inc()
            for chunk in cached:
                yield chunk
            return
        TTS_CACHE_EVENTS.labels("miss").inc()
        kept: list[AudioChunk] = []
        async with contextlib.aclosing(self._synthesize_measured(text)) as fresh:
            async for chunk in fresh:
                kept.append(chunk)
                yield chunk
        cache.put(key, tuple(kept))  # reached only when the whole utterance was read

    async def _synthesize_measured(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        """:meth:`synthesize` without the cache: the provider, with metrics and retries."""
        with self._measure() as call:
            chunks, first = await self._attempts(
                "synthesize", lambda: self._first_chunk(text), self.options, call
            )
            if first is None:
                return
            async with contextlib.aclosing(chunks):
                yield first
                while True:
                    chunk = await self._attempt(
                        "synthesize", lambda: anext(chunks, None), self.options.timeout_s, call
                    )
                    if chunk is None:
                        return
                    yield chunk

    async def _first_chunk(
        self, text: str
    ) -> tuple[AsyncGenerator[AudioChunk, None], AudioChunk | None]:
        """A fresh ``_synthesize_impl`` stream and its first chunk (None: no audio)."""
        chunks = self._synthesize_impl(text)
        try:
            first = await anext(chunks, None)
        except BaseException:
            await chunks.aclose()
            raise
        if first is None:
            await chunks.aclose()
        return chunks, first

    def _synthesize_impl(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        """One attempt of :meth:`synthesize`: the chunks for ``text``, in order."""
        # Not abstract, for synthesisers written before this base that override
        # ``synthesize`` itself (they go without the timeout, retry and metrics).
        raise NotImplementedError(f"{type(self).__name__} does not implement _synthesize_impl")

    def _timeout_error(self, operation: str, timeout_s: float) -> GatewayError:
        return TtsError(
            f"{self.name}: {operation} gave no audio for {timeout_s:g} s", retryable=True
        )


def _clean(text: str) -> str:
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)
    text = " ".join(text.split())
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"text is {len(text)} characters; synthesize at most {MAX_TEXT_CHARS} at a time "
            "(split it with split_text)"
        )
    return text


# --------------------------------------------------------------------------- espeak-ng

_VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+./-]*$")


class EspeakTTS(TextToSpeech):
    """eSpeak NG, in process through ``libespeak-ng`` (or its program as a fallback).

    Args:
        voice: an espeak voice name (``espeak-ng --voices``), e.g. ``"en-us"``.
        words_per_minute: speaking rate (espeak ``-s``; 80-450).
        pitch: 0-99 (espeak ``-p``).
        executable: path of an ``espeak-ng`` program to spawn per sentence
            instead of using the library (default: the library; the program on
            ``PATH`` only when the library cannot be loaded, logged once).
        chunk_ms: size of the chunks yielded, in ms of audio.

    Output: PCM16 mono chunks at :attr:`sample_rate_hz` (22050 Hz for the
    standard voices), ``chunk_ms`` each but the last. :attr:`backend` says
    which path is used: ``"library"`` (one shared worker thread serialising
    calls into libespeak-ng; a sentence takes about 5 ms, so concurrent calls
    wait little) or ``"process"`` (an ``espeak-ng --stdout`` subprocess; its
    WAV header gives the rate, and audio is read until it exits).

    Raises:
        SpeechUnavailableError: neither libespeak-ng nor espeak-ng is installed.
        ValueError: a malformed voice name or out-of-range setting.
    """

    name = "espeak-ng"

    def __init__(
        self,
        voice: str = "en-us",
        *,
        words_per_minute: int = 165,
        pitch: int = 50,
        executable: str | None = None,
        chunk_ms: int = 100,
    ) -> None:
        if not _VOICE_NAME.match(voice):
            raise ValueError(f"not an espeak voice name: {voice!r}")
        if not 80 <= words_per_minute <= 450:
            raise ValueError(f"words_per_minute must be 80-450, got {words_per_minute}")
        if not 0 <= pitch <= 99:
            raise ValueError(f"pitch must be 0-99, got {pitch}")
        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.pitch = pitch
        self._chunk_ms = chunk_ms
        self._library = None if executable else espeak_lib.shared_library()
        self.backend = "library" if self._library is not None else "process"
        if self._library is not None:
            self.sample_rate_hz = self._library.sample_rate_hz
            return
        found = executable or shutil.which("espeak-ng")
        if not found:
            raise SpeechUnavailableError(
                self.name, "espeak-ng is not installed; apt-get install espeak-ng"
            )
        if not executable:
            _announce(
                logger,
                "text-to-speech: libespeak-ng could not be loaded (%s); "
                "spawning espeak-ng per sentence",
                espeak_lib.load_failure(),
                level=logging.WARNING,
            )
        self._argv = [found, "--stdout", "-v", voice, "-s", str(words_per_minute), "-p", str(pitch)]

    def cache_key(self) -> tuple[object, ...]:
        return (self.name, self.voice, self.words_per_minute, self.pitch)

    def _synthesize_impl(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        if self._library is not None:
            return self._synthesize_library(self._library, text)
        return self._synthesize_process(text)

    async def _synthesize_library(
        self, library: espeak_lib.EspeakLibrary, text: str
    ) -> AsyncGenerator[AudioChunk, None]:
        text = _clean(text)
        if not text:
            return
        loop = asyncio.get_running_loop()
        rate = library.sample_rate_hz
        chunk_bytes = max(2, rate * self._chunk_ms // 1000 * 2)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        pending = bytearray()  # touched by the worker thread only

        def hand_over(data: bytes | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, data)

        def sink(data: bytes) -> None:  # worker thread: one loop wake-up per chunk
            pending.extend(data)
            while len(pending) >= chunk_bytes:  # chunk_bytes is even
                hand_over(bytes(pending[:chunk_bytes]))
                del pending[:chunk_bytes]

        def finished(_: object) -> None:  # worker thread, after the last sink call
            if len(pending) >= 2:
                hand_over(bytes(pending[: len(pending) - len(pending) % 2]))
            hand_over(None)

        cancelled = threading.Event()
        job = library.synthesize(
            text,
            voice=self.voice,
            words_per_minute=self.words_per_minute,
            pitch=self.pitch,
            sink=sink,
            cancelled=cancelled,
        )
        job.add_done_callback(finished)
        try:
            while (data := await queue.get()) is not None:
                yield AudioChunk(data, rate)
            error = job.exception()
            if error is not None:
                raise TtsError(f"espeak-ng: {error}") from error
        finally:
            cancelled.set()  # stops the job at its next buffer, or before it starts

    async def _synthesize_process(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        text = _clean(text)
        if not text:
            return
        proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            # Text goes through stdin, never argv: no option injection, and it
            # fits the pipe buffer (MAX_TEXT_CHARS), so this cannot deadlock.
            proc.stdin.write(text.encode("utf-8"))
            await proc.stdin.drain()
            proc.stdin.close()
            rate = await _read_wav_header(proc.stdout)
            self.sample_rate_hz = rate
            chunk_bytes = max(2, rate * self._chunk_ms // 1000 * 2)
            pending = b""
            while True:
                data = await proc.stdout.read(chunk_bytes)
                if not data:
                    break
                pending += data
                if len(pending) >= chunk_bytes:
                    whole = len(pending) - len(pending) % 2
                    yield AudioChunk(pending[:whole], rate)
                    pending = pending[whole:]
            whole = len(pending) - len(pending) % 2
            if whole:
                yield AudioChunk(pending[:whole], rate)
            code = await proc.wait()
            if code != 0:
                raise TtsError(f"espeak-ng exited with status {code}")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _read_wav_header(stream: asyncio.StreamReader) -> int:
    """Read RIFF/WAVE chunks up to the ``data`` chunk; return the sample rate in Hz.

    Accepts only 16-bit mono PCM (format tag 1), which is what espeak writes.
    """
    try:
        riff = await stream.readexactly(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            raise TtsError("espeak-ng did not write a RIFF/WAVE header")
        rate: int | None = None
        while True:
            chunk_id, size = struct.unpack("<4sI", await stream.readexactly(8))
            if chunk_id == b"data":
                break
            body = await stream.readexactly(size + (size & 1))
            if chunk_id == b"fmt ":
                fmt_tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if fmt_tag != 1 or channels != 1 or bits != 16:
                    raise TtsError(
                        f"expected 16-bit mono PCM, got format {fmt_tag}, "
                        f"{channels} channel(s), {bits} bits"
                    )
    except asyncio.IncompleteReadError as exc:
        raise TtsError("espeak-ng output ended inside the WAV header") from exc
    if not rate:
        raise TtsError("WAV output has no fmt chunk before its data")
    return rate


# --------------------------------------------------------------------------- piper

PIPER_INTRA_OP_THREADS = 1
"""onnxruntime intra-op threads per Piper synthesis.

Measured on 2 cores with ``en_US-joe-medium`` (8 receptionist sentences, 4
at a time): 1 thread per synthesis and a pool of one thread per core
finished in 0.98 s (median latency 204 ms); 2 intra-op threads were faster
alone (138 ms vs 194 ms a sentence) but took 1.4-2.0 s together, the
threads of concurrent calls fighting over the cores.
"""

PIPER_THREAD_NICENESS = 10
"""Niceness added to Piper's pool threads (Linux), so the event loop wins the cores.

Measured with 4 concurrent syntheses on 2 busy cores: the worst lateness of
a 5 ms loop ticker had a median of 13 ms at normal priority and 5 ms at +10,
with no loss of throughput (the loop needs little CPU, but needs it at once).
"""

_PIPER_VOICES: dict[str, Any] = {}
_PIPER_FAILURES: dict[str, str] = {}
_PIPER_LOCK = threading.Lock()
_PIPER_POOL: ThreadPoolExecutor | None = None


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def piper_executor() -> ThreadPoolExecutor:
    """The pool Piper inference runs in: one thread per core, created on first use.

    Dedicated (not the event loop's default executor, which DNS lookups and
    ``to_thread`` calls share): syntheses beyond the core count queue here
    rather than slowing every running one down. Its threads run at a lower
    priority (:data:`PIPER_THREAD_NICENESS`) so the loop's pacing of phone
    audio is not kept waiting for a core.
    """
    global _PIPER_POOL
    with _PIPER_LOCK:
        if _PIPER_POOL is None:
            _PIPER_POOL = ThreadPoolExecutor(
                max_workers=_cores(), thread_name_prefix="piper", initializer=_lower_priority
            )
        return _PIPER_POOL


def _lower_priority() -> None:
    """Pool thread start-up: add :data:`PIPER_THREAD_NICENESS` to this thread (best effort)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PIPER_THREAD_NICENESS)


def _load_piper_voice(model_path: str, config_path: str | None) -> Any:
    """The shared ``PiperVoice`` for a model file, loaded once per process.

    Raises:
        SpeechUnavailableError: piper-tts missing, or the voice cannot load.
    """
    with _PIPER_LOCK:
        if model_path in _PIPER_VOICES:
            return _PIPER_VOICES[model_path]
        if model_path in _PIPER_FAILURES:
            raise SpeechUnavailableError("piper", _PIPER_FAILURES[model_path])
        try:
            voice = _load_piper_uncached(model_path, config_path)
        except SpeechUnavailableError as exc:
            _PIPER_FAILURES[model_path] = exc.reason
            raise
        _PIPER_VOICES[model_path] = voice
        return voice


def _load_piper_uncached(model_path: str, config_path: str | None) -> Any:
    try:
        from piper import PiperVoice
    except ImportError as exc:
        raise SpeechUnavailableError(
            "piper", "piper-tts is not installed; pip install .[piper]"
        ) from exc
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise SpeechUnavailableError("piper", f"no voice model file at {model_path!r}")
    try:
        return _piper_voice_with_options(PiperVoice, path, config_path)
    except Exception as exc:  # onnxruntime/json/file errors all mean "unavailable"
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SpeechUnavailableError(
            "piper", f"voice {model_path!r} failed to load: {type(exc).__name__}: {first_line}"
        ) from exc


def _piper_voice_with_options(piper_voice: Any, path: Path, config_path: str | None) -> Any:
    """``PiperVoice`` with an onnxruntime session of :data:`PIPER_INTRA_OP_THREADS` threads.

    ``PiperVoice.load`` takes no session options; piper-tts releases without
    a ``PiperConfig.from_dict`` get its default session instead.
    """
    import onnxruntime

    try:
        from piper.config import PiperConfig
    except ImportError:
        return piper_voice.load(str(path), config_path=config_path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = PIPER_INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    config_file = Path(config_path) if config_path else Path(f"{path}.json")
    config = PiperConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return piper_voice(config=config, session=session)


class PiperTTS(TextToSpeech):
    """Piper neural voices (``piper-tts``; GPL-3, installed as the ``piper`` extra).

    Args:
        model_path: the voice ``.onnx`` file; its config is ``<model>.onnx.json``
            unless ``config_path`` is given.
        executor: where inference runs (default: :func:`piper_executor`, one
            thread per core).

    Output: one chunk per sentence of the text (Piper synthesises whole
    sentences), PCM16 mono at :attr:`sample_rate_hz` (the voice's rate,
    22050 Hz for ``medium`` voices). Text-to-phonemes, inference and the
    conversion to PCM16 all run in the executor, never on the event loop.

    Raises:
        SpeechUnavailableError: piper-tts missing, or the voice cannot load.
    """

    name = "piper"

    def __init__(
        self,
        model_path: str,
        *,
        config_path: str | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._voice = _load_piper_voice(model_path, config_path)
        self.model_path = model_path
        config = getattr(self._voice, "config", None)
        self.sample_rate_hz = int(getattr(config, "sample_rate", 22050))
        self._executor = executor

    def cache_key(self) -> tuple[object, ...]:
        return (self.name, self.model_path)

    async def _synthesize_impl(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        text = _clean(text)
        if not text:
            return
        loop = asyncio.get_running_loop()
        executor = self._executor or piper_executor()
        pieces: Iterator[Any] = await loop.run_in_executor(executor, self._start, text)
        while True:
            chunk = await loop.run_in_executor(executor, self._next_chunk, pieces)
            if chunk is None:
                return
            yield chunk

    def _start(self, text: str) -> Iterator[Any]:
        try:
            return iter(self._voice.synthesize(text))
        except Exception as exc:
            raise TtsError(f"piper failed to start synthesis: {type(exc).__name__}") from exc

    def _next_chunk(self, pieces: Iterator[Any]) -> AudioChunk | None:
        """The next sentence's audio (executor thread); None after the last."""
        try:
            piece = next(pieces, None)
        except Exception as exc:
            raise TtsError(f"piper failed: {type(exc).__name__}: {exc}") from exc
        return None if piece is None else self._to_chunk(piece)

    def _to_chunk(self, piece: Any) -> AudioChunk:
        # piper-tts >= 1.3 yields AudioChunk objects; older releases yield raw bytes.
        if isinstance(piece, bytes | bytearray):
            return AudioChunk(bytes(piece), self.sample_rate_hz)
        pcm = getattr(piece, "audio_int16_bytes", None)
        if not isinstance(pcm, bytes):
            raise TtsError(f"piper yielded an unexpected {type(piece).__name__}")
        return AudioChunk(pcm, int(getattr(piece, "sample_rate", self.sample_rate_hz)))


# --------------------------------------------------------------------------- factory

_PROVIDERS = ("auto", "piper", "espeak")
_PIPER_VOICE_NAME = re.compile(r"^[a-z]{2,3}_[A-Z]{2}-[A-Za-z0-9_]+-(x_low|low|medium|high)$")
"""Piper's voice naming (``en_US-joe-medium``): such a name is never an espeak voice."""


def _piper_voice(voice: str | None, models_dir: Path | None) -> str | None:
    """The ``.onnx`` file for a Piper ``voice`` setting, or None when there is none.

    A voice installed under ``models_dir`` (``gateway models install``) wins,
    then an ``.onnx`` path; no voice: the first installed of ``AUTO_PIPER_VOICES``.
    """
    if voice is None:
        for name in _models.AUTO_PIPER_VOICES:
            found = _models.resolve("piper", name, models_dir)
            if found is not None:
                return str(found)
        return None
    found = _models.resolve("piper", voice, models_dir)
    if found is not None:
        return str(found)
    return voice if voice.endswith(".onnx") else None


def make_tts(
    provider: str = "auto", voice: str | None = None, *, models_dir: Path | None = None
) -> TextToSpeech:
    """The synthesiser for a client's ``voice.tts`` settings.

    Args:
        provider: ``"auto"``, ``"piper"`` or ``"espeak"`` (alias ``"espeak-ng"``).
            ``auto`` picks the best that is there: Piper when ``voice`` is an
            ``.onnx`` path or a voice installed in ``models_dir``, or (no voice
            set) when ``en_US-joe-medium`` is installed; else espeak. It logs
            its choice once per process.
        voice: a Piper voice name installed in ``models_dir``
            (``en_US-joe-medium``), a Piper ``.onnx`` path, or an espeak voice
            name (default ``en-us``).
        models_dir: where ``gateway models install`` put models
            (``GATEWAY_MODELS_DIR``); None: names are never resolved locally.

    When Piper cannot be loaded, logs one warning line and returns espeak.

    Raises:
        ValueError: unknown provider or malformed espeak voice name.
        SpeechUnavailableError: espeak-ng is not installed either.
    """
    key = provider.strip().lower().replace("_", "-")
    key = {"espeak-ng": "espeak"}.get(key, key)
    if key not in _PROVIDERS:
        raise ValueError(f"unknown TTS provider {provider!r}; use one of {', '.join(_PROVIDERS)}")
    if key == "espeak":
        return EspeakTTS(voice or "en-us")
    model_path = _piper_voice(voice, models_dir)
    piper_named = bool(voice) and (
        str(voice).endswith(".onnx") or bool(_PIPER_VOICE_NAME.match(str(voice)))
    )
    if key == "auto" and model_path is None and not piper_named:
        _announce(logger, "text-to-speech: auto chose espeak-ng (no Piper voice installed)")
        return EspeakTTS(voice or "en-us")
    try:
        if model_path is None:
            hint = "`gateway models install en_US-joe-medium` installs one"
            if voice:
                raise SpeechUnavailableError("piper", f"voice {voice!r} is not installed; {hint}")
            raise SpeechUnavailableError("piper", f"no voice configured or installed; {hint}")
        synthesiser = PiperTTS(model_path)
    except SpeechUnavailableError as exc:
        _announce(
            logger,
            "text-to-speech: piper unavailable (%s); falling back to espeak-ng",
            exc.reason,
            level=logging.WARNING,
        )
        return EspeakTTS()
    if key == "auto":
        _announce(logger, "text-to-speech: auto chose piper (%s)", Path(model_path).name)
    return synthesiser


# --------------------------------------------------------------------------- sentences

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "vs",
        "approx",
        "appt",
        "dept",
        "ave",
        "blvd",
        "rd",
    ]
)
_BOUNDARY = re.compile(r"([.!?…]+)([\"'”’)\]]*)(\s+)(?=(\S))|\n\s*")


_CLAUSE = re.compile(r"[,;:](?=\s)\s+|\s+[—–]\s+")
"""A clause boundary inside a sentence: a comma, semicolon or colon, or a spaced dash."""


class SentenceSplitter:
    """Incremental sentence segmentation of streamed text.

    ``push(delta)`` returns the sentences completed so far; ``flush()`` returns
    what is left at the end. A ``.`` ends a sentence only when followed by
    whitespace and a character that is not lowercase, and not after a known
    abbreviation or a single-letter initial ("Dr. Lee", "10 a.m. tomorrow",
    "J. Smith"); ``!``, ``?``, ``…`` and newlines always end one. A sentence
    longer than ``max_chars`` without a boundary is cut at the last comma (or
    space) so speech can start anyway.

    ``first_clause_chars``: the first sentence, when it is long, is cut after
    its first clause (a comma, colon, semicolon or dash at least this many
    characters in, outside brackets) so the first audio comes sooner: a
    synthesiser that renders whole sentences (Piper) takes about 4 ms per
    character before the first sample. None: never.
    """

    def __init__(self, max_chars: int = 240, *, first_clause_chars: int | None = None) -> None:
        if max_chars < 20:
            raise ValueError(f"max_chars must be at least 20, got {max_chars}")
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self._buffer = ""
        self._cut_first_clause = first_clause_chars is not None

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        while True:
            cut = self._find_boundary()
            if self._cut_first_clause and (cut is not None or len(self._buffer) > 120):
                self._cut_first_clause = False
                cut = self._first_clause(cut[0] if cut else len(self._buffer)) or cut
            if cut is None:
                break
            end, resume = cut
            sentence = self._buffer[:end].strip()
            self._buffer = self._buffer[resume:]
            if sentence:
                out.append(sentence)
        return out

    def flush(self) -> str | None:
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None

    def _first_clause(self, sentence_end: int) -> tuple[int, int] | None:
        """Where to cut the first sentence (ending at ``sentence_end``) after a clause."""
        shortest = self.first_clause_chars or 0
        sentence = self._buffer[:sentence_end]
        if len(sentence.strip()) < 2 * shortest + 10:
            return None
        for match in _CLAUSE.finditer(sentence, shortest):
            head = sentence[: match.start() + 1]
            if head.count("(") == head.count(")") and len(sentence) - match.end() >= 10:
                keeps_mark = match.group(0)[0] in ",;:"  # a dash is not spoken
                return match.start() + (1 if keeps_mark else 0), match.end()
        return None

    def _find_boundary(self) -> tuple[int, int] | None:
        for match in _BOUNDARY.finditer(self._buffer):
            if match.group(1) is None:  # newline
                if self._buffer[: match.start()].strip():
                    return match.start(), match.end()
                continue
            if "." in match.group(1) and not any(c in match.group(1) for c in "!?…"):
                following = match.group(4)
                previous = re.search(r"(\S+)$", self._buffer[: match.start()])
                word = previous.group(1).lower().strip("(\"'") if previous else ""
                if following.islower() or word in _ABBREVIATIONS:
                    continue
                if len(word) == 1 and word.isalpha():
                    continue
            return match.end(2), match.end(3)
        if len(self._buffer) > self.max_chars:
            head = self._buffer[: self.max_chars]
            split_at = max(head.rfind(", "), head.rfind("; "), head.rfind(": "))
            if split_at <= 0:
                split_at = head.rfind(" ")
            if split_at > 0:
                return split_at + 1, split_at + 1
            return self.max_chars, self.max_chars
        return None


async def split_sentences(
    text_stream: AsyncIterable[str], *, max_chars: int = 240
) -> AsyncIterator[str]:
    """Yield complete sentences from streamed text deltas (see :class:`SentenceSplitter`)."""
    splitter = SentenceSplitter(max_chars)
    async for delta in text_stream:
        for sentence in splitter.push(delta):
            yield sentence
    rest = splitter.flush()
    if rest:
        yield rest


def split_text(
    text: str, *, max_chars: int = 240, first_clause_chars: int | None = None
) -> list[str]:
    """The sentences of a whole text (same rules as :class:`SentenceSplitter`)."""
    splitter = SentenceSplitter(max_chars, first_clause_chars=first_clause_chars)
    sentences = splitter.push(text)
    rest = splitter.flush()
    return [*sentences, rest] if rest else sentences

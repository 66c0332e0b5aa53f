"""Piper text-to-speech (``piper-tts``, GPL-3: an opt-in extra): a voice ``.onnx``
with its ``.json`` config, loaded once per process, synthesised in a small
thread pool at lowered priority. The interface is :mod:`providers.speech.tts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from providers.speech.audio import AudioChunk
from providers.speech.errors import SpeechUnavailableError, TtsError
from providers.speech.tts import (
    TextToSpeech,
    _clean,
)

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

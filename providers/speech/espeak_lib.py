"""In-process eSpeak NG: ``libespeak-ng`` through ctypes, on one dedicated thread.

The library keeps global state and is not thread-safe, so every call to it
runs on a single worker thread (:class:`EspeakLibrary` owns it) and jobs are
serialised in arrival order. Synthesis runs with ``AUDIO_OUTPUT_SYNCHRONOUS``:
``espeak_Synth`` returns once the text is spoken, calling back with each
buffer of samples as it goes, so audio streams while the rest is synthesised.
ctypes drops the GIL during ``espeak_Synth``, so the event loop keeps running;
each buffer reaches the caller's ``sink`` on the worker thread (the caller
hands it over to its loop).

:func:`shared_library` loads the library once per process (Debian package
``libespeak-ng1``, pulled in by ``espeak-ng``); None when it cannot be loaded.
Output: PCM16 mono at :attr:`EspeakLibrary.sample_rate_hz` (22050 Hz).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["EspeakLibrary", "EspeakLibraryError", "shared_library"]

logger = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_END_PAUSE = 0x1000
_RATE = 1
_PITCH = 3
_EE_OK = 0
_BUFFER_MS = 50
"""Audio per synthesis callback, in ms."""

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakLibraryError(RuntimeError):
    """libespeak-ng refused a call (unknown voice, internal error)."""


class _Job:
    __slots__ = ("cancelled", "sink")

    def __init__(self, sink: Callable[[bytes], None], cancelled: threading.Event) -> None:
        self.sink = sink
        self.cancelled = cancelled


class EspeakLibrary:
    """``libespeak-ng`` loaded in this process, driven from one worker thread.

    Args:
        lib: the loaded ``CDLL``.

    Use :func:`shared_library` rather than building one: the library's state
    is per process.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak-ng")
        self._callback = _SynthCallback(self._on_audio)  # kept alive as long as self
        self._job: _Job | None = None
        self._settings: tuple[str, int, int] | None = None
        self.sample_rate_hz: int = self._executor.submit(self._initialize).result()

    def _initialize(self) -> int:
        rate = int(
            self._lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, None, _INITIALIZE_DONT_EXIT
            )
        )
        if rate <= 0:
            raise EspeakLibraryError(f"espeak_Initialize failed ({rate}); is espeak-ng-data there?")
        self._lib.espeak_SetSynthCallback(self._callback)
        return rate

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        words_per_minute: int,
        pitch: int,
        sink: Callable[[bytes], None],
        cancelled: threading.Event,
    ) -> Future[None]:
        """Queue ``text`` for synthesis; ``sink`` gets each PCM16 buffer, on the worker thread.

        Set ``cancelled`` to stop: a job not started yet is skipped, a running
        one ends at its next buffer. The future completes when the job is over;
        it raises :class:`EspeakLibraryError` for an unknown voice or a failed
        synthesis.
        """
        return self._executor.submit(
            self._run, text, voice, words_per_minute, pitch, _Job(sink, cancelled)
        )

    def _run(self, text: str, voice: str, words_per_minute: int, pitch: int, job: _Job) -> None:
        if job.cancelled.is_set():
            return
        settings = (voice, words_per_minute, pitch)
        if settings != self._settings:
            self._settings = None
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise EspeakLibraryError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_RATE, words_per_minute, 0)
            self._lib.espeak_SetParameter(_PITCH, pitch, 0)
            self._settings = settings
        data = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(data, len(data))
        self._job = job
        try:
            status = self._lib.espeak_Synth(
                buffer, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _END_PAUSE, None, None
            )
        finally:
            self._job = None
        if status != _EE_OK and not job.cancelled.is_set():
            raise EspeakLibraryError(f"espeak_Synth failed with status {status}")

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        """Synthesis callback (worker thread): 0 to go on, 1 to abort."""
        job = self._job
        if job is None or job.cancelled.is_set():
            return 1
        if count > 0 and wav:
            try:
                job.sink(ctypes.string_at(wav, count * 2))
            except Exception:  # a sink that fails (loop closed) stops this job only
                logger.debug("espeak-ng sink failed; aborting the job", exc_info=True)
                job.cancelled.set()
                return 1
        return 0


_SHARED: EspeakLibrary | None = None
_SHARED_FAILURE: str | None = None
_SHARED_LOCK = threading.Lock()


def shared_library() -> EspeakLibrary | None:
    """The process's :class:`EspeakLibrary`, loaded on first use; None when unavailable.

    Blocks for the first load (tens of ms); call it off the event loop then.
    Why it failed is in :func:`load_failure`.
    """
    global _SHARED, _SHARED_FAILURE
    with _SHARED_LOCK:
        if _SHARED is not None or _SHARED_FAILURE is not None:
            return _SHARED
        try:
            name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
            _SHARED = EspeakLibrary(ctypes.CDLL(name))
        except (OSError, AttributeError, EspeakLibraryError) as exc:
            _SHARED_FAILURE = f"{type(exc).__name__}: {exc}"
        return _SHARED


def load_failure() -> str | None:
    """Why :func:`shared_library` returned None (None if it loaded or was not tried)."""
    return _SHARED_FAILURE

"""espeak-ng text-to-speech (the offline default): in process through
``libespeak-ng`` (:mod:`providers.speech.espeak_lib`), else the ``espeak-ng``
command. The interface is :mod:`providers.speech.tts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import struct
import threading
from collections.abc import AsyncGenerator

from providers.speech import espeak_lib
from providers.speech.audio import AudioChunk
from providers.speech.errors import SpeechUnavailableError, TtsError
from providers.speech.models import announce as _announce
from providers.speech.tts import (
    TextToSpeech,
    _clean,
    logger,
)

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

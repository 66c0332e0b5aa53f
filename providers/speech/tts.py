"""Text-to-speech behind one streaming interface, a cache, and a sentence splitter.

``await``-free for the caller until audio exists::

    tts = make_tts("auto", voice=None)
    async with contextlib.aclosing(tts.synthesize("Hello! How can I help?")) as chunks:
        async for chunk in chunks:      # AudioChunk(pcm, sample_rate_hz)
            player.add_pcm(chunk.pcm, chunk.sample_rate_hz)

Close the iterator (``aclosing``, or ``aclose()``) when you stop early, e.g.
on barge-in: that stops the synthesis (or kills the synthesiser process).

Providers (neither ever runs synthesis on the event loop):

* :class:`~providers.speech.espeak_tts.EspeakTTS` — offline default: eSpeak NG in process (``libespeak-ng``
  through ctypes, :mod:`providers.speech.espeak_lib`, one dedicated thread since
  the library is not thread-safe); robotic but instant (first audio well
  under 1 ms after the thread picks the job up, about 5 ms for a sentence).
  If the library cannot be loaded, it logs one line and spawns
  ``espeak-ng --stdout`` per sentence instead (about 8 ms of event-loop time
  per sentence for the spawn).
* :class:`~providers.speech.piper_tts.PiperTTS` — neural voices via ``piper-tts`` (GPL-3, optional extra
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

import contextlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator

from prometheus_client import Counter

from engine.errors import GatewayError
from engine.providers import CallOptions, Provider
from providers.speech.audio import AudioChunk
from providers.speech.errors import TtsError

__all__ = [
    "SentenceSplitter",
    "TextToSpeech",
    "TtsCache",
    "TtsError",
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

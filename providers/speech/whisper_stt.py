"""Whisper speech-to-text via ``faster-whisper`` (CTranslate2): a model installed by
``gateway models install``, a local model folder or a hub name. Audio is resampled
and buffered as it arrives and decoded speculatively and at ``finalize``.
The interface is :mod:`providers.speech.stt`.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from providers.speech.audio import pcm16_to_float32
from providers.speech.errors import SpeechUnavailableError
from providers.speech.stt import (
    STT_SAMPLE_RATE_HZ,
    WHISPER_TOKENS_PER_S,
    WHISPER_WINDOW_MARGIN_S,
    WHISPER_WINDOW_MIN_S,
    SpeechToText,
    SttStream,
    Transcript,
    _WorkerStream,
)

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

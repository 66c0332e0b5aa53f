"""PocketSphinx speech-to-text (the offline default): CMU PocketSphinx 5 with the
US-English acoustic model shipped inside the wheel, decoding incrementally in a
worker thread with a small domain language model (:mod:`providers.speech._domain_lm`).
The interface is :mod:`providers.speech.stt`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from providers.speech import _domain_lm
from providers.speech.errors import SpeechUnavailableError
from providers.speech.stt import (
    STT_SAMPLE_RATE_HZ,
    SpeechToText,
    SttStream,
    Transcript,
    _WorkerStream,
    logger,
)

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

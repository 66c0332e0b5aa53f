"""Loaded-once speech providers, shared by every call that wants the same settings.

Models are big and slow to load (PocketSphinx's domain model takes ~0.5 s to
build, a faster-whisper model seconds), so a :class:`SpeechHub` builds each
distinct recogniser / synthesiser once, off the event loop, and hands the same
object to every call and every client asking for the same settings. Clients
with different domain phrases get different recognisers (each biased to its
own words); clients with the same settings share one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from providers.speech.factory import make_stt, make_tts
from providers.speech.stt import SpeechToText
from providers.speech.tts import TextToSpeech

__all__ = ["SpeechHub", "SpeechProviders", "SttSpec", "TtsSpec"]


@dataclass(frozen=True, slots=True)
class SttSpec:
    """What recogniser to build: see :func:`providers.speech.stt.make_stt`."""

    provider: str = "auto"
    model: str | None = None
    phrases: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    """Extra vocabulary for grammar-based recognisers (``make_stt(words=)``)."""


@dataclass(frozen=True, slots=True)
class TtsSpec:
    """What synthesiser to build: see :func:`providers.speech.tts.make_tts`."""

    provider: str = "auto"
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechProviders:
    """A recogniser and a synthesiser, as one call uses them."""

    stt: SpeechToText
    tts: TextToSpeech


class SpeechHub:
    """Builds and caches providers by spec (one instance of each distinct spec).

    Args:
        make_stt_fn, make_tts_fn: factories (tests inject fakes); they block,
            so they run in a worker thread.
        models_dir: where ``gateway models install`` put models
            (``Settings.models_dir``): model and voice names in the specs
            resolve there, and ``auto`` prefers what is installed. None: no
            local models (passed to the factories only when set).
    """

    def __init__(
        self,
        make_stt_fn: Callable[..., SpeechToText] = make_stt,
        make_tts_fn: Callable[..., TextToSpeech] = make_tts,
        *,
        models_dir: Path | None = None,
    ) -> None:
        self._make_stt = make_stt_fn
        self._make_tts = make_tts_fn
        self._factory_kwargs: dict[str, Path] = (
            {"models_dir": models_dir} if models_dir is not None else {}
        )
        self._stt: dict[SttSpec, asyncio.Task[SpeechToText]] = {}
        self._tts: dict[TtsSpec, asyncio.Task[TextToSpeech]] = {}

    async def get(self, stt: SttSpec, tts: TtsSpec) -> SpeechProviders:
        """The providers for these specs, built on first use (concurrent callers share it).

        Raises whatever the factories raise (``SpeechUnavailableError`` when no
        provider at all can be set up); a failed build is retried next time.
        """
        stt_task = self._stt.get(stt)
        if stt_task is None:
            stt_task = self._stt[stt] = asyncio.create_task(self._build_stt(stt))
        tts_task = self._tts.get(tts)
        if tts_task is None:
            tts_task = self._tts[tts] = asyncio.create_task(self._build_tts(tts))
        try:
            # shield: one caller hanging up must not cancel a build others wait for
            recogniser = await asyncio.shield(stt_task)
            synthesiser = await asyncio.shield(tts_task)
        except Exception:
            if stt_task.done() and not stt_task.cancelled() and stt_task.exception():
                self._stt.pop(stt, None)
            if tts_task.done() and not tts_task.cancelled() and tts_task.exception():
                self._tts.pop(tts, None)
            raise
        return SpeechProviders(recogniser, synthesiser)

    async def _build_stt(self, spec: SttSpec) -> SpeechToText:
        kwargs: dict[str, object] = dict(self._factory_kwargs)
        if spec.words:
            kwargs["words"] = _dedupe(spec.words)
        return await asyncio.to_thread(
            self._make_stt, spec.provider, spec.model, _dedupe(spec.phrases), **kwargs
        )

    async def _build_tts(self, spec: TtsSpec) -> TextToSpeech:
        return await asyncio.to_thread(
            self._make_tts, spec.provider, spec.voice, **self._factory_kwargs
        )


def _dedupe(phrases: Sequence[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for phrase in phrases:
        cleaned = " ".join(phrase.split())
        if cleaned:
            seen.setdefault(cleaned.casefold(), None)
    return tuple(seen)

"""The speech factories: the recogniser and the synthesiser for a client's
``voice.stt`` / ``voice.tts`` settings, ``auto`` picking the best that is
installed (``gateway models install``) and falling back, with one log line, to
the offline defaults (PocketSphinx, espeak-ng). The interfaces are
:mod:`providers.speech.stt` and :mod:`providers.speech.tts`; each vendor is its
own module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

from providers.speech import models as _models
from providers.speech.errors import SpeechUnavailableError
from providers.speech.espeak_tts import EspeakTTS
from providers.speech.models import announce as _announce
from providers.speech.piper_tts import PiperTTS
from providers.speech.pocketsphinx_stt import PocketSphinxSTT
from providers.speech.stt import SpeechToText
from providers.speech.tts import TextToSpeech
from providers.speech.whisper_stt import FasterWhisperSTT, _looks_like_path

__all__ = ["make_stt", "make_tts"]

# The loggers the recogniser and the synthesiser log under.
_STT_LOG = logging.getLogger("providers.speech.stt")
_TTS_LOG = logging.getLogger("providers.speech.tts")


# -- speech-to-text

_STT_PROVIDERS = ("auto", "faster-whisper", "pocketsphinx")
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
    if key not in _STT_PROVIDERS:
        raise ValueError(
            f"unknown STT provider {provider!r}; use one of {', '.join(_STT_PROVIDERS)}"
        )
    if key == "pocketsphinx":
        return PocketSphinxSTT([*phrases, *words], cache_dir=cache_dir, executor=executor)
    location, described = _whisper_location(model, models_dir)
    if key == "auto" and model is None and location == _HUB_DEFAULT:
        _announce(
            _STT_LOG,
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
            _STT_LOG,
            "speech-to-text: faster-whisper %s unavailable (%s)%s; falling back to pocketsphinx",
            described,
            exc.reason,
            hint,
            level=logging.WARNING,
        )
        return PocketSphinxSTT([*phrases, *words], cache_dir=cache_dir, executor=executor)
    if key == "auto":
        _announce(_STT_LOG, "speech-to-text: auto chose faster-whisper (%s)", described)
    return recogniser


# -- text-to-speech

_TTS_PROVIDERS = ("auto", "piper", "espeak")
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
    if key not in _TTS_PROVIDERS:
        raise ValueError(
            f"unknown TTS provider {provider!r}; use one of {', '.join(_TTS_PROVIDERS)}"
        )
    if key == "espeak":
        return EspeakTTS(voice or "en-us")
    model_path = _piper_voice(voice, models_dir)
    piper_named = bool(voice) and (
        str(voice).endswith(".onnx") or bool(_PIPER_VOICE_NAME.match(str(voice)))
    )
    if key == "auto" and model_path is None and not piper_named:
        _announce(_TTS_LOG, "text-to-speech: auto chose espeak-ng (no Piper voice installed)")
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
            _TTS_LOG,
            "text-to-speech: piper unavailable (%s); falling back to espeak-ng",
            exc.reason,
            level=logging.WARNING,
        )
        return EspeakTTS()
    if key == "auto":
        _announce(_TTS_LOG, "text-to-speech: auto chose piper (%s)", Path(model_path).name)
    return synthesiser

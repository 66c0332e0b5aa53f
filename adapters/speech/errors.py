"""Errors of the speech layer::

    SpeechError
    ├── SpeechUnavailableError   a provider cannot be set up here (package or model missing)
    ├── SttError                 recognising an utterance failed
    └── TtsError                 synthesising text failed

Vendor exceptions (pocketsphinx, CTranslate2, onnxruntime, hub clients) are
mapped into these where they are caught, with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["SpeechError", "SpeechUnavailableError", "SttError", "TtsError"]


class SpeechError(RuntimeError):
    """Base of the speech layer's errors."""


class SpeechUnavailableError(SpeechError):
    """A speech provider cannot be used here: ``reason`` says why and what to install."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider, self.reason = provider, reason


class SttError(SpeechError):
    """Decoding an utterance failed inside the recogniser."""


class TtsError(SpeechError):
    """Synthesis failed (the synthesiser crashed or produced malformed audio)."""

"""Errors of the speech layer, a branch of the gateway's one error tree
(:mod:`engine.errors`)::

    GatewayError
    └── SpeechError                  ``retryable``: may the same call succeed if tried again?
        ├── SpeechUnavailableError   a provider cannot be set up here (package or model missing)
        ├── SttError                 recognising an utterance failed (or ran out of time)
        └── TtsError                 synthesising text failed (or ran out of time)

Vendor exceptions (pocketsphinx, CTranslate2, onnxruntime, hub clients) are
mapped into these where they are caught, with ``raise ... from exc``. A
recogniser or synthesiser that runs out of time (:mod:`engine.providers`)
raises SttError / TtsError with ``retryable=True``.
"""

from __future__ import annotations

from engine.errors import GatewayError

__all__ = ["SpeechError", "SpeechUnavailableError", "SttError", "TtsError"]


class SpeechError(GatewayError):
    """Base of the speech layer's errors."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class SpeechUnavailableError(SpeechError):
    """A speech provider cannot be used here: ``reason`` says why and what to install."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider, self.reason = provider, reason


class SttError(SpeechError):
    """Decoding an utterance failed inside the recogniser."""


class TtsError(SpeechError):
    """Synthesis failed (the synthesiser crashed or produced malformed audio)."""

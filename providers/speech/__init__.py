"""The shared voice layer: audio formats, VAD, speech-to-text, text-to-speech.

Channel-independent: the phone adapter (and WhatsApp voice notes) build on
it. Of the engine it uses only the error tree (:class:`SpeechError` is a
``GatewayError``) and the provider base (:mod:`engine.providers`: timeouts,
retries and metrics around each recogniser's and synthesiser's ``_impl``).
See each module for units and shapes:

* :mod:`providers.speech.audio` — mu-law, resampling, framing, ``AudioChunk``
* :mod:`providers.speech.vad` — voice activity detection, frame energy
* :mod:`providers.speech.stt` — streaming STT (PocketSphinx, faster-whisper)
* :mod:`providers.speech.tts` — streaming TTS (espeak-ng, Piper), sentence splitting
* :mod:`providers.speech.errors` — the error tree
"""

from providers.speech.audio import AudioChunk, Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from providers.speech.errors import SpeechError, SpeechUnavailableError, SttError, TtsError
from providers.speech.factory import make_stt, make_tts
from providers.speech.stt import SpeechToText, SttStream, Transcript
from providers.speech.tts import TextToSpeech, split_sentences, split_text
from providers.speech.vad import VoiceActivityDetector, WebRtcVad, frame_energy_dbfs

__all__ = [
    "AudioChunk",
    "Resampler",
    "SpeechError",
    "SpeechToText",
    "SpeechUnavailableError",
    "SttError",
    "SttStream",
    "TextToSpeech",
    "Transcript",
    "TtsError",
    "VoiceActivityDetector",
    "WebRtcVad",
    "frame_energy_dbfs",
    "make_stt",
    "make_tts",
    "pcm16_to_ulaw",
    "split_sentences",
    "split_text",
    "ulaw_to_pcm16",
]

"""Helpers for the speech tests: synthetic speech, noise, framing."""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from providers.speech.audio import resample

Speak = Callable[[str, int], bytes]
"""``speak(text, rate_hz)`` -> PCM16 mono of espeak-ng saying ``text`` at ``rate_hz``."""


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_pcm(text: str, rate_hz: int, out: Path) -> bytes:
    """Synthesise ``text`` with ``espeak-ng -v en-us -w out.wav`` and resample to ``rate_hz``."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(out), text], check=True)
    with wave.open(str(out)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        pcm, native = wav.readframes(wav.getnframes()), wav.getframerate()
    return resample(pcm, native, rate_hz)


def white_noise(duration_ms: int, rate_hz: int, rms: float, seed: int = 1) -> bytes:
    """PCM16 white noise of the given RMS (int16 units)."""
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal(rate_hz * duration_ms // 1000) * rms
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def frames_of(pcm: bytes, rate_hz: int, frame_ms: int = 20) -> list[bytes]:
    """Whole frames of ``pcm`` (the tail shorter than a frame is dropped)."""
    size = rate_hz * frame_ms // 1000 * 2
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def build_tiny_whisper(folder: Path) -> Path:
    """Write a tiny, randomly initialised CTranslate2 Whisper model into ``folder``.

    It loads and runs like a real faster-whisper model (its text is random), so
    the loading, sharing and streaming code is exercised without a hub
    download. Needs faster-whisper (which brings ctranslate2 and tokenizers).
    """
    import json

    import tokenizers
    from ctranslate2.specs import model_spec, whisper_spec
    from tokenizers import Regex, decoders, models, pre_tokenizers

    width, ffn, mels = 64, 128, 80
    characters = list(" abcdefghijklmnopqrstuvwxyz'.,?!-0123456789")
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tokens = characters + specials + timestamps  # text tokens sort before <|endoftext|>
    vocab = {token: i for i, token in enumerate(tokens)}

    tokenizer = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(specials + timestamps)

    rng = np.random.default_rng(0)
    fixed_shapes = {
        "encoder/conv1/weight": (width, mels, 3),
        "encoder/conv1/bias": (width,),
        "encoder/conv2/weight": (width, width, 3),
        "encoder/conv2/bias": (width,),
        "encoder/position_encodings/encodings": (1500, width),
        "decoder/embeddings/weight": (len(tokens), width),
        "decoder/position_encodings/encodings": (448, width),
        "decoder/projection/weight": (len(tokens), width),
    }

    def fill(layer: object, name: str, value: object) -> None:
        attr = name.rsplit("/", 1)[1]
        if name in fixed_shapes:
            shape = fixed_shapes[name]
        elif value is None or (value == model_spec.OPTIONAL and attr == "bias"):
            if attr in ("gamma", "beta"):
                setattr(layer, attr, np.full(width, 1.0 if attr == "gamma" else 0.0, np.float32))
                return
            if "self_attention/linear_0" in name:
                shape = (3 * width, width)
            elif "/attention/linear_1" in name:
                shape = (2 * width, width)
            elif "ffn/linear_0" in name:
                shape = (ffn, width)
            elif "ffn/linear_1" in name:
                shape = (width, ffn)
            else:
                shape = (width, width)
            if attr == "bias":
                shape = shape[:1]
        else:
            return
        setattr(layer, attr, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    spec = whisper_spec.WhisperSpec(1, 2, 1, 2)
    model_spec.visit_spec(spec, fill)
    spec.register_vocabulary(tokens)
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [vocab[" "], vocab["<|endoftext|>"]]
    spec.config.lang_ids = []
    spec.config.alignment_heads = [(0, 0)]
    spec.validate()
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    tokenizer.save(str(folder / "tokenizer.json"))
    preprocessor = {"feature_size": mels, "sampling_rate": 16000, "hop_length": 160}
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder

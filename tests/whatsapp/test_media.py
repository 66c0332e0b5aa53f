"""Voice notes and media of the WhatsApp channel (``channels/whatsapp/media.py``).

* Decoding: audio encoded at test time with PyAV (Opus in Ogg as WhatsApp
  sends it, MP3, ADTS AAC, AMR-NB, M4A, WebM, WAV), decoded back.
* Transcription: an espeak-ng voice note, Ogg/Opus, recognised by the real
  offline recogniser (PocketSphinx biased to the client's services, as the
  phone path builds it); the flow around it (loading, cutting long notes,
  failures) with the scripted fake recogniser.
* Download: against stub servers speaking Twilio's and Meta's documented wire
  format (basic auth and a redirect to a CDN origin; Graph media lookup, then
  the signed URL with the Bearer token), on loopback ports.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from stub_server import StubServer

from channels.whatsapp.media import (
    SEGMENT_S,
    MediaError,
    decode_audio,
    fetch_media,
    transcribe_voice_note,
)
from channels.whatsapp.models import Media
from providers.speech.errors import SpeechUnavailableError, SttError
from providers.speech.factory import make_stt
from providers.speech.stt import STT_SAMPLE_RATE_HZ, SpeechToText
from testkit.speech import ScriptedSTT

SENTENCE = "I would like to book a massage"
SERVICES = ("swedish massage", "deep tissue massage", "facial", "manicure")
"""The domain phrases a spa client's recogniser is biased to (as ``speech_specs`` builds them)."""

# --------------------------------------------------------------------------- audio helpers


def _espeak_wav(text: str, folder: Path) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = folder / "spoken.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True)
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


def _encode(
    pcm: np.ndarray,
    rate_hz: int,
    *,
    container: str,
    codec: str,
    out_rate_hz: int,
    channels: int = 1,
    bit_rate: int | None = None,
) -> bytes:
    """``pcm`` (int16 mono) encoded with PyAV into ``container``/``codec`` at ``out_rate_hz``."""
    layout = "mono" if channels == 1 else "stereo"
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=out_rate_hz, layout=layout)
        assert isinstance(stream, av.audio.stream.AudioStream)
        if bit_rate:
            stream.bit_rate = bit_rate
        interleaved = np.repeat(pcm, channels)  # packed s16: L R L R ...
        frame = av.AudioFrame.from_ndarray(
            interleaved.reshape(1, -1).astype(np.int16), format="s16", layout=layout
        )
        frame.sample_rate = rate_hz
        fmt = stream.codec_context.format
        resampler = av.AudioResampler(
            format=fmt.name if fmt else "s16", layout=layout, rate=out_rate_hz
        )
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    return out.getvalue()


def _voice_note(pcm: np.ndarray, rate_hz: int) -> bytes:
    """Ogg/Opus, mono 48 kHz at 24 kbit/s: what WhatsApp's recorder sends."""
    return _encode(
        pcm, rate_hz, container="ogg", codec="libopus", out_rate_hz=48000, bit_rate=24000
    )


def _sox_encode(pcm: np.ndarray, rate_hz: int, *, file_type: str, folder: Path) -> bytes:
    """``pcm`` (int16 mono) encoded by sox as ``file_type`` (e.g. ``amr-nb``).

    PyAV's bundled FFmpeg has no AMR encoder (only the decoders), so AMR test data
    comes from sox with Debian's libsox-fmt-all (opencore-amr), as scripts/setup
    installs it.
    """
    if shutil.which("sox") is None:
        pytest.skip("sox is not installed (apt-get install sox libsox-fmt-all)")
    source, target = folder / "in.wav", folder / f"out.{file_type}"
    with wave.open(str(source), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate_hz)
        wav.writeframes(pcm.astype("<i2").tobytes())
    subprocess.run(
        ["sox", str(source), "-r", "8000", "-t", file_type, str(target)],
        check=True,
        capture_output=True,
    )
    return target.read_bytes()


def _tone(seconds: float, rate_hz: int = 16000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


@pytest.fixture
def spoken(tmp_path: Path) -> tuple[np.ndarray, int]:
    """espeak-ng saying :data:`SENTENCE`: int16 mono samples and their rate (22050 Hz)."""
    return _espeak_wav(SENTENCE, tmp_path)


# --------------------------------------------------------------------------- decoding


def test_an_opus_voice_note_decodes_to_mono_pcm_of_the_same_length(
    spoken: tuple[np.ndarray, int],
) -> None:
    pcm, rate = spoken
    note = _voice_note(pcm, rate)
    assert note.startswith(b"OggS")

    samples, rate_hz = decode_audio(note, "audio/ogg; codecs=opus")

    assert rate_hz == 48000  # Opus always decodes at 48 kHz
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert samples.size / rate_hz == pytest.approx(pcm.size / rate, abs=0.03)
    assert np.abs(samples).max() > 3000  # speech, not silence


@pytest.mark.parametrize(
    ("container", "codec", "rate_hz", "content_type", "slack_s"),
    [
        ("mp3", "mp3", 16000, "audio/mpeg", 0.06),
        ("adts", "aac", 16000, "audio/aac", 0.15),  # AAC priming and padding
        ("amr", "sox:amr-nb", 8000, "audio/amr", 0.03),
        ("mp4", "aac", 16000, "audio/mp4", 0.15),
        ("webm", "libopus", 48000, "audio/webm", 0.03),
        ("wav", "pcm_s16le", 16000, "audio/wav", 0.0),
    ],
)
def test_other_audio_formats_decode(
    container: str, codec: str, rate_hz: int, content_type: str, slack_s: float, tmp_path: Path
) -> None:
    if codec.startswith("sox:"):
        data = _sox_encode(_tone(2.0), 16000, file_type=codec[4:], folder=tmp_path)
    else:
        data = _encode(_tone(2.0), 16000, container=container, codec=codec, out_rate_hz=rate_hz)

    samples, got_rate = decode_audio(data, content_type)

    assert got_rate == rate_hz
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert 2.0 <= samples.size / got_rate <= 2.0 + slack_s + 1e-9


def test_stereo_is_mixed_down_to_one_channel() -> None:
    tone = _tone(1.0)
    data = _encode(tone, 16000, container="wav", codec="pcm_s16le", out_rate_hz=16000, channels=2)

    samples, rate_hz = decode_audio(data, "audio/wav")

    assert rate_hz == 16000 and samples.shape == (16000,)
    assert np.abs(samples.astype(int) - tone.astype(int)).max() <= 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is not audio",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n",  # playlist
        b"ffconcat version 1.0\nfile '/etc/passwd'\n",
        b"OggS" + bytes(200),  # an Ogg signature, then garbage
    ],
    ids=["empty", "text", "hls-playlist", "concat-list", "corrupt-ogg"],
)
def test_what_is_not_audio_is_refused(data: bytes) -> None:
    with pytest.raises(MediaError) as caught:
        decode_audio(data, "audio/ogg")
    assert caught.value.code == "undecodable" and not caught.value.retryable


def test_a_truncated_voice_note_is_undecodable_or_shorter(spoken: tuple[np.ndarray, int]) -> None:
    note = _voice_note(*spoken)
    with pytest.raises(MediaError) as caught:
        decode_audio(note[:40], "audio/ogg")  # the identification header, cut
    assert caught.value.code == "undecodable"

    # an upload cut inside its last Ogg page (pages hold about 1 s): what came is kept
    samples, rate_hz = decode_audio(note[:-10], "audio/ogg")
    assert 0.5 < samples.size / rate_hz < spoken[0].size / spoken[1] - 0.5


def test_a_voice_note_over_the_duration_bound_is_refused(spoken: tuple[np.ndarray, int]) -> None:
    with pytest.raises(MediaError) as caught:
        decode_audio(_voice_note(*spoken), "audio/ogg", max_duration_s=1.0)
    assert caught.value.code == "too_long" and not caught.value.retryable


# --------------------------------------------------------------------------- transcription


@pytest.fixture(scope="module")
def pocketsphinx() -> SpeechToText:
    """The offline recogniser, biased to a spa's services as a client's would be."""
    pytest.importorskip("pocketsphinx")
    return make_stt("pocketsphinx", None, SERVICES)


async def test_a_real_voice_note_is_transcribed_offline(
    spoken: tuple[np.ndarray, int], pocketsphinx: SpeechToText
) -> None:
    note = _voice_note(*spoken)

    async def load() -> SpeechToText:  # as from the app's speech hub
        return pocketsphinx

    text = await transcribe_voice_note(load, note, "audio/ogg; codecs=opus", session_id="conv-1")

    words = text.split()
    assert "book" in words and "massage" in words, text


async def test_the_recogniser_gets_the_whole_note_at_its_own_rate(
    spoken: tuple[np.ndarray, int],
) -> None:
    stt = ScriptedSTT(["I'd like to book a massage"])

    text = await transcribe_voice_note(stt, _voice_note(*spoken), "audio/ogg", session_id="c-9")

    assert text == "I'd like to book a massage"
    [heard] = stt.recognised
    assert heard.sample_rate_hz == STT_SAMPLE_RATE_HZ and heard.session_id == "c-9"
    assert len(heard.pcm) / 2 / STT_SAMPLE_RATE_HZ == pytest.approx(
        spoken[0].size / spoken[1], abs=0.03
    )
    assert stt.abandoned == 0


async def test_a_long_voice_note_is_recognised_in_pieces_cut_in_pauses() -> None:
    # 3 x (16 s of tone, 1 s of silence): 51 s, more than two pieces' worth
    rate = 16000
    block = np.concatenate([_tone(16.0, rate), np.zeros(rate, dtype=np.int16)])
    pcm = np.tile(block, 3)
    data = _encode(pcm, rate, container="wav", codec="pcm_s16le", out_rate_hz=rate)
    stt = ScriptedSTT(["first part", "", "third  part"])

    text = await transcribe_voice_note(stt, data, "audio/wav")

    assert text == "first part third part"  # blank pieces left out, spaces normalised
    pieces = [np.frombuffer(r.pcm, dtype="<i2") for r in stt.recognised]
    assert len(pieces) == 3
    assert all(p.size <= SEGMENT_S * rate for p in pieces)
    assert sum(p.size for p in pieces) == pcm.size  # nothing lost or repeated
    for piece in pieces[:-1]:  # each cut falls in a silence
        assert np.abs(piece[-80:]).max() == 0


async def test_no_recogniser_means_a_media_error_with_the_reason() -> None:
    async def load() -> SpeechToText:
        raise SpeechUnavailableError("pocketsphinx", "pocketsphinx is not installed")

    note = _encode(_tone(1.0), 16000, container="wav", codec="pcm_s16le", out_rate_hz=16000)
    with pytest.raises(MediaError) as caught:
        await transcribe_voice_note(load, note, "audio/wav")
    assert caught.value.code == "no_recogniser"
    assert "pocketsphinx is not installed" in caught.value.reason


async def test_a_recogniser_failure_keeps_its_retryability() -> None:
    stt = ScriptedSTT([SttError("pocketsphinx: finalize took too long", retryable=True)])
    note = _encode(_tone(1.0), 16000, container="wav", codec="pcm_s16le", out_rate_hz=16000)

    with pytest.raises(MediaError) as caught:
        await transcribe_voice_note(stt, note, "audio/wav")
    assert caught.value.code == "stt_failed" and caught.value.retryable


async def test_an_undecodable_note_never_reaches_the_recogniser() -> None:
    stt = ScriptedSTT(["never"])
    with pytest.raises(MediaError) as caught:
        await transcribe_voice_note(stt, b"not audio at all", "audio/ogg")
    assert caught.value.code == "undecodable"
    assert stt.opened == 0


# --------------------------------------------------------------------------- download stubs

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-" + "x" * 14
META_TOKEN = "EAAG-meta-access-token"
SIGNATURE = "hash=SECRETSIGNATURE"
NOTE = b"OggS" + bytes(range(256)) * 8
"""The stored media's bytes (only downloaded here, never decoded)."""


@dataclass
class _Seen:
    path: str
    headers: dict[str, str]


@dataclass
class _Stub(StubServer):
    """A loopback HTTP server; ``routes`` maps a path (query stripped) to a handler."""

    methods = ("GET",)
    protocol_version = "HTTP/1.0"  # some answers have no Content-Length

    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    seen: list[_Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.seen.append(_Seen(handler.path, {k.lower(): v for k, v in handler.headers.items()}))
        route = self.routes.get(handler.path.split("?", 1)[0])
        if route is None:
            _json(handler, 404, {"error": "no such stub route"})
        else:
            route(handler)


def _serve(stub: _Stub) -> Iterator[_Stub]:
    with stub:
        yield stub


def _json(handler: BaseHTTPRequestHandler, status: int, body: object, **headers: str) -> None:
    raw = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(raw)


def _bytes(
    handler: BaseHTTPRequestHandler, body: bytes, content_type: str, *, length: bool = True
) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    if length:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def cdn() -> Iterator[_Stub]:
    """Where media finally lives: Twilio's CDN, Meta's lookaside host (another origin)."""
    yield from _serve(_Stub())


@pytest.fixture
def twilio(cdn: _Stub) -> Iterator[_Stub]:
    """Twilio's REST API: media URLs behind basic auth, redirecting to a signed CDN URL."""
    stub = _Stub()
    expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    media_path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM{'1' * 32}/Media/ME{'2' * 32}"

    def media(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Authorization") != expected:
            _json(
                handler,
                401,
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                },
                WWW_Authenticate='Basic realm="Twilio API"',
            )
            return
        handler.send_response(307)
        handler.send_header("Location", f"{cdn.url}/twilio-cdn/ME{'2' * 32}?Expires=1&{SIGNATURE}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    stub.routes[media_path] = media
    cdn.routes[f"/twilio-cdn/ME{'2' * 32}"] = lambda h: _bytes(h, NOTE, "audio/ogg")
    yield from _serve(stub)


def _twilio_media(stub: _Stub) -> Media:
    path = next(iter(stub.routes))
    return Media(f"{stub.url}{path}", "audio/ogg")


@pytest.fixture
def graph(cdn: _Stub) -> Iterator[_Stub]:
    """Meta's Graph API media lookup; the lookaside URLs it returns need the Bearer token."""
    stub = _Stub()

    def bearer_only(route: Callable[[BaseHTTPRequestHandler], None]) -> Any:
        def guarded(handler: BaseHTTPRequestHandler) -> None:
            if handler.headers.get("Authorization") != f"Bearer {META_TOKEN}":
                _json(
                    handler,
                    401,
                    {
                        "error": {
                            "message": "Invalid OAuth access token.",
                            "type": "OAuthException",
                            "code": 190,
                        }
                    },
                )
            else:
                route(handler)

        return guarded

    def lookup(media_id: str, size: int | str, body: bytes, **cdn_kw: Any) -> None:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            _json(
                handler,
                200,
                {
                    "messaging_product": "whatsapp",
                    "url": f"{cdn.url}/whatsapp_business/attachments/?mid={media_id}&{SIGNATURE}",
                    "mime_type": "audio/ogg; codecs=opus",
                    "sha256": "0" * 64,
                    "file_size": size,
                    "id": media_id,
                },
            )

        stub.routes[f"/v21.0/{media_id}"] = bearer_only(answer)
        cdn.routes["/whatsapp_business/attachments/"] = bearer_only(
            lambda h: _bytes(h, body, "application/octet-stream", **cdn_kw)
        )

    lookup("1001", str(len(NOTE)), NOTE)
    stub.routes["/v21.0/1002"] = bearer_only(
        lambda h: _json(
            h, 200, {"url": f"{cdn.url}/big", "mime_type": "audio/ogg", "file_size": 99_999_999}
        )
    )
    stub.routes["/v21.0/1404"] = bearer_only(
        lambda h: _json(h, 404, {"error": {"message": "Unsupported get request.", "code": 100}})
    )
    stub.routes["/v21.0/1500"] = bearer_only(
        lambda h: _json(h, 500, {"error": {"message": "An unknown error occurred", "code": 1}})
    )
    stub.routes["/v21.0/1429"] = bearer_only(
        lambda h: _json(h, 429, {"error": {"code": 4}}, Retry_After="7")
    )
    stub.routes["/v21.0/1900"] = bearer_only(lambda h: _json(h, 200, {"error": "no url here"}))

    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        _json(handler, 200, {})

    stub.routes["/v21.0/1999"] = slow
    yield from _serve(stub)


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


def _no_secrets(error: MediaError) -> None:
    text = str(error)
    for secret in (AUTH_TOKEN, META_TOKEN, "SECRETSIGNATURE", "http://", "127.0.0.1"):
        assert secret not in text, text


# --------------------------------------------------------------------------- Twilio download


async def test_twilio_media_is_fetched_with_basic_auth_and_the_redirect_followed(
    http: httpx.AsyncClient, twilio: _Stub, cdn: _Stub
) -> None:
    data, content_type = await fetch_media(
        http,
        "twilio",
        _twilio_media(twilio),
        twilio_auth=(ACCOUNT_SID, AUTH_TOKEN),
        meta_token=None,
        graph_base_url="",
    )

    assert data == NOTE and content_type == "audio/ogg"
    assert twilio.seen[0].headers["authorization"].startswith("Basic ")
    [at_cdn] = cdn.seen
    assert "authorization" not in at_cdn.headers  # credentials stay with Twilio's origin


async def test_twilio_media_without_the_right_credentials_is_refused(
    http: httpx.AsyncClient, twilio: _Stub, cdn: _Stub
) -> None:
    with pytest.raises(MediaError) as caught:
        await fetch_media(
            http,
            "twilio",
            _twilio_media(twilio),
            twilio_auth=(ACCOUNT_SID, "wrong-token"),
            meta_token=None,
            graph_base_url="",
        )
    assert caught.value.status == 401 and not caught.value.retryable
    assert caught.value.code == "download" and not cdn.seen
    _no_secrets(caught.value)

    with pytest.raises(MediaError) as caught:  # none configured: not even asked
        await fetch_media(
            http,
            "twilio",
            _twilio_media(twilio),
            twilio_auth=None,
            meta_token=None,
            graph_base_url="",
        )
    assert caught.value.code == "config" and len(twilio.seen) == 1


async def test_twilio_media_over_the_size_bound_is_refused(
    http: httpx.AsyncClient, twilio: _Stub
) -> None:
    with pytest.raises(MediaError) as caught:
        await fetch_media(
            http,
            "twilio",
            _twilio_media(twilio),
            twilio_auth=(ACCOUNT_SID, AUTH_TOKEN),
            meta_token=None,
            graph_base_url="",
            max_bytes=len(NOTE) - 1,
        )
    assert caught.value.code == "too_large" and not caught.value.retryable


# --------------------------------------------------------------------------- Meta download


async def test_meta_media_is_looked_up_then_downloaded_with_the_bearer_token(
    http: httpx.AsyncClient, graph: _Stub, cdn: _Stub
) -> None:
    data, content_type = await fetch_media(
        http,
        "meta",
        Media("1001", "audio/ogg; codecs=opus"),
        twilio_auth=None,
        meta_token=META_TOKEN,
        graph_base_url=graph.url + "/",
    )

    assert data == NOTE
    assert content_type == "audio/ogg; codecs=opus"  # the lookup's, not a generic header
    assert [s.path.split("?")[0] for s in graph.seen] == ["/v21.0/1001"]
    [download] = cdn.seen
    assert download.path.startswith("/whatsapp_business/attachments/?mid=1001")
    assert download.headers["authorization"] == f"Bearer {META_TOKEN}"


async def test_meta_rejects_a_wrong_token(http: httpx.AsyncClient, graph: _Stub) -> None:
    with pytest.raises(MediaError) as caught:
        await fetch_media(
            http,
            "meta",
            Media("1001"),
            twilio_auth=None,
            meta_token="expired",
            graph_base_url=graph.url,
        )
    assert caught.value.status == 401 and not caught.value.retryable


@pytest.mark.parametrize(
    ("media_id", "code", "status", "retryable"),
    [
        ("1404", "download", 404, False),
        ("1500", "download", 500, True),
        ("1429", "download", 429, True),
        ("1900", "download", None, False),  # a 200 without a url
        ("1002", "too_large", None, False),  # refused on the declared file_size
        ("../v21.0/1001", "config", None, False),  # not a media id
    ],
)
async def test_meta_failures_map_to_media_errors(
    http: httpx.AsyncClient,
    graph: _Stub,
    cdn: _Stub,
    media_id: str,
    code: str,
    status: int | None,
    retryable: bool,
) -> None:
    with pytest.raises(MediaError) as caught:
        await fetch_media(
            http,
            "meta",
            Media(media_id),
            twilio_auth=None,
            meta_token=META_TOKEN,
            graph_base_url=graph.url,
        )
    error = caught.value
    assert (error.code, error.status, error.retryable) == (code, status, retryable)
    assert not cdn.seen  # nothing downloaded
    _no_secrets(error)
    if media_id == "1429":
        assert error.retry_after_s == 7


async def test_a_body_larger_than_declared_is_cut_off_while_streaming(
    http: httpx.AsyncClient, graph: _Stub, cdn: _Stub
) -> None:
    big = bytes(64 * 1024)
    cdn.routes["/whatsapp_business/attachments/"] = lambda h: _bytes(
        h, big, "audio/ogg", length=False
    )  # no Content-Length, the lookup said len(NOTE): only streaming can notice
    with pytest.raises(MediaError) as caught:
        await fetch_media(
            http,
            "meta",
            Media("1001"),
            twilio_auth=None,
            meta_token=META_TOKEN,
            graph_base_url=graph.url,
            max_bytes=len(NOTE),
        )
    assert caught.value.code == "too_large"
    _no_secrets(caught.value)


async def test_timeouts_and_unreachable_servers_are_retryable(
    http: httpx.AsyncClient, graph: _Stub
) -> None:
    with pytest.raises(MediaError) as caught:
        await fetch_media(
            http,
            "meta",
            Media("1999"),
            twilio_auth=None,
            meta_token=META_TOKEN,
            graph_base_url=graph.url,
            timeout_s=0.3,
        )
    assert caught.value.code == "download" and caught.value.retryable

    closed = _unused_port()
    with pytest.raises(MediaError) as caught:
        await fetch_media(
            http,
            "meta",
            Media("1001"),
            twilio_auth=None,
            meta_token=META_TOKEN,
            graph_base_url=f"http://127.0.0.1:{closed}",
        )
    assert caught.value.code == "download" and caught.value.retryable
    _no_secrets(caught.value)


def _unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_downloaded_voice_note_is_transcribed(
    http: httpx.AsyncClient,
    graph: _Stub,
    cdn: _Stub,
    spoken: tuple[np.ndarray, int],
    pocketsphinx: SpeechToText,
) -> None:
    note = _voice_note(*spoken)
    cdn.routes["/whatsapp_business/attachments/"] = lambda h: _bytes(h, note, "audio/ogg")

    data, content_type = await fetch_media(
        http,
        "meta",
        Media("1001"),
        twilio_auth=None,
        meta_token=META_TOKEN,
        graph_base_url=graph.url,
    )
    text = await transcribe_voice_note(pocketsphinx, data, content_type)

    assert "massage" in text.split(), text


# --------------------------------------------------------------------------- the shared vendor stubs


async def test_voice_notes_from_the_shared_vendor_stubs_are_fetched_and_transcribed(
    http: httpx.AsyncClient, spoken: tuple[np.ndarray, int], pocketsphinx: SpeechToText
) -> None:
    """The same wire format as the inbox's tests use (``vendor_stubs.py``)."""
    vendor_stubs = pytest.importorskip("vendor_stubs")
    note = _voice_note(*spoken)
    with (
        vendor_stubs.TwilioMessagingStub({ACCOUNT_SID: AUTH_TOKEN}) as twilio_stub,
        vendor_stubs.MetaGraphStub({META_TOKEN}) as graph_stub,
    ):
        twilio_url = twilio_stub.add_media(
            note, "audio/ogg", account_sid=ACCOUNT_SID, redirect=True
        )
        meta_id = graph_stub.add_media(note, "audio/ogg; codecs=opus")
        fetched = [
            await fetch_media(
                http,
                "twilio",
                Media(twilio_url, "audio/ogg"),
                twilio_auth=(ACCOUNT_SID, AUTH_TOKEN),
                meta_token=None,
                graph_base_url="",
            ),
            await fetch_media(
                http,
                "meta",
                Media(meta_id, "audio/ogg"),
                twilio_auth=None,
                meta_token=META_TOKEN,
                graph_base_url=graph_stub.url,
            ),
        ]
    for data, content_type in fetched:
        assert data == note and content_type.startswith("audio/ogg")
        text = await transcribe_voice_note(pocketsphinx, data, content_type)
        assert "massage" in text.split(), text

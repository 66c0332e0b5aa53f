"""Media of WhatsApp messages: download an attachment, decode a voice note, transcribe it.

Three steps, each usable alone::

    data, content_type = await fetch_media(http, "meta", media, ...)   # bytes + MIME type
    pcm, rate_hz = decode_audio(data, content_type)                    # int16 mono, Hz
    text = await transcribe_voice_note(stt, data, content_type)        # decode + STT

Downloading (the :class:`httpx.AsyncClient` is the lifespan's; never opened or
closed here):

* **Twilio** gives a media URL in the webhook (``MediaUrl0``). Twilio enforces
  HTTP basic authentication (account SID or API key, auth token or secret) on
  every media URL and answers with a redirect to a short-lived URL on its CDN
  (Twilio Messaging "Media resource" docs; support article "Protect Media
  Access with HTTP Basic Authentication"). httpx follows it and drops the
  ``Authorization`` header when the redirect leaves the origin, so the
  credentials never reach the CDN.
* **Meta** (WhatsApp Cloud API, "Media" reference) gives a media id
  (``audio.id``). ``GET {graph}/v21.0/{media_id}`` with ``Authorization: Bearer
  {token}`` answers ``{"messaging_product": "whatsapp", "url": ..., "mime_type":
  ..., "sha256": ..., "file_size": ..., "id": ...}``; the ``url`` is valid for
  about five minutes and is fetched with the same Bearer header.

Both are bounded: ``max_bytes`` (the declared size is checked before the body
is read, the body while it streams) and ``timeout_s`` (each network step, and
the whole download). WhatsApp voice notes are Ogg/Opus (``audio/ogg;
codecs=opus``); Twilio also relays AMR, AAC, MP3 and MP4 audio.

Decoding uses PyAV (FFmpeg's libraries, bundled in the ``av`` wheel: no
subprocess, no system FFmpeg). Only an allow-list of demuxers is used, chosen
from the data's signature rather than FFmpeg's own probing, because probing
also accepts playlist formats (HLS, concat) that open further URLs or local
files named inside the data.

Errors: every failure is a :class:`MediaError` (an
:class:`~engine.errors.GatewayError`) with a :data:`MediaErrorCode` saying
what went wrong, so the caller can pick a polite reply; ``retryable`` is true
for timeouts, transport errors, ``429`` and ``5xx``. Messages name the
provider, the step and the HTTP status, never a URL (Meta's carry signed
query strings), a token or what the customer said.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import av
import httpx
import numpy as np
import numpy.typing as npt
import soxr

from channels.whatsapp.models import Media, Provider
from engine.errors import GatewayError
from providers.http import retry_after_s
from providers.speech.errors import SpeechError, SpeechUnavailableError
from providers.speech.stt import STT_SAMPLE_RATE_HZ, SpeechToText

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DURATION_S",
    "GRAPH_API_VERSION",
    "MediaError",
    "MediaErrorCode",
    "SttSource",
    "decode_audio",
    "fetch_media",
    "transcribe_voice_note",
]

GRAPH_API_VERSION = "v21.0"
"""The Graph API version of the media lookup (``{graph_base_url}/v21.0/{media_id}``)."""

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Largest attachment downloaded, in bytes (WhatsApp's limit for audio is 16 MB)."""

DEFAULT_MAX_DURATION_S = 300.0
"""Longest voice note decoded, in seconds; longer ones are refused (``too_long``)."""

MediaErrorCode = Literal[
    "config",
    "download",
    "too_large",
    "undecodable",
    "too_long",
    "no_recogniser",
    "stt_failed",
]
"""What failed: ``config`` (credentials or a reference missing or malformed),
``download`` (the provider refused or failed), ``too_large`` (over
``max_bytes``), ``undecodable`` (not audio the decoder can read, or silent),
``too_long`` (over ``max_duration_s``), ``no_recogniser`` (no speech
recogniser can be loaded here), ``stt_failed`` (the recogniser failed)."""


class MediaError(GatewayError):
    """Fetching, decoding or transcribing an attachment failed.

    Attributes:
        code: what failed (:data:`MediaErrorCode`).
        reason: the message, without URLs, tokens or transcripts.
        retryable: True when the same call may succeed later (timeouts,
            transport errors, ``429``, ``5xx``, a recogniser that timed out).
        status: the HTTP status that caused it, if any.
        retry_after_s: the server's ``Retry-After``, in seconds, if it sent one.
    """

    def __init__(
        self,
        code: MediaErrorCode,
        reason: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code: MediaErrorCode = code
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


# --------------------------------------------------------------------------- download

_META_MEDIA_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")


async def fetch_media(
    http: httpx.AsyncClient,
    provider: Provider,
    media: Media,
    *,
    twilio_auth: tuple[str, str] | None,
    meta_token: str | None,
    graph_base_url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = 30.0,
) -> tuple[bytes, str]:
    """Download one attachment of an inbound message.

    Args:
        http: the shared client (not closed here).
        provider: who sent the webhook: ``"twilio"`` (``media.ref`` is the
            ``MediaUrl{N}``) or ``"meta"`` (``media.ref`` is the media id).
        media: the attachment, as the codec read it.
        twilio_auth: (account SID or API key SID, auth token or key secret);
            required for Twilio. Only ever sent to ``media.ref``, which must
            come from a webhook whose signature was checked.
        meta_token: the Cloud API access token; required for Meta.
        graph_base_url: ``https://graph.facebook.com`` (a local stub in tests).
        max_bytes: largest body accepted, in bytes.
        timeout_s: bound on each network step and on the whole download, in seconds.

    Returns:
        The body and its MIME type: the response's ``Content-Type`` unless it
        is missing or generic, else the type the provider declared
        (``media.content_type``, Meta's ``mime_type``); parameters kept
        (``audio/ogg; codecs=opus``).

    Raises:
        MediaError: ``config``, ``download``, ``too_large``; ``retryable`` for
            timeouts, transport errors, ``429`` and ``5xx``.
    """
    if max_bytes <= 0 or timeout_s <= 0:
        raise ValueError(f"max_bytes and timeout_s must be positive, got {max_bytes}, {timeout_s}")
    timeout = httpx.Timeout(timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            if provider == "twilio":
                return await _fetch_twilio(http, media, twilio_auth, max_bytes, timeout)
            if provider == "meta":
                return await _fetch_meta(
                    http, media, meta_token, graph_base_url, max_bytes, timeout
                )
    except TimeoutError:
        raise MediaError(
            "download",
            f"{provider} media download took longer than {timeout_s:g} s",
            retryable=True,
        ) from None
    raise ValueError(f"unknown provider {provider!r}; expected 'twilio' or 'meta'")


async def _fetch_twilio(
    http: httpx.AsyncClient,
    media: Media,
    auth: tuple[str, str] | None,
    max_bytes: int,
    http_timeout: httpx.Timeout,
) -> tuple[bytes, str]:
    if auth is None or not all(auth):
        raise MediaError("config", "twilio media needs the account SID and auth token")
    _check_http_url(media.ref, "twilio media URL")
    request = http.build_request("GET", media.ref, timeout=http_timeout)
    body, header_type = await _download(
        http, request, httpx.BasicAuth(*auth), "twilio media download", max_bytes
    )
    return body, _content_type(header_type, media.content_type)


async def _fetch_meta(
    http: httpx.AsyncClient,
    media: Media,
    token: str | None,
    graph_base_url: str,
    max_bytes: int,
    http_timeout: httpx.Timeout,
) -> tuple[bytes, str]:
    if not token:
        raise MediaError("config", "meta media needs the Cloud API access token")
    if not _META_MEDIA_ID.match(media.ref):
        raise MediaError("config", "meta media id is empty or malformed")
    headers = {"Authorization": f"Bearer {token}"}
    lookup = http.build_request(
        "GET",
        f"{graph_base_url.rstrip('/')}/{GRAPH_API_VERSION}/{media.ref}",
        headers=headers,
        timeout=http_timeout,
    )
    raw, _ = await _download(http, lookup, None, "meta media lookup", 64 * 1024)
    url, mime_type, declared_size = _read_meta_lookup(raw)
    if declared_size is not None and declared_size > max_bytes:
        raise MediaError(
            "too_large", f"meta media is {declared_size} bytes; at most {max_bytes} are accepted"
        )
    _check_http_url(url, "meta media url")
    request = http.build_request("GET", url, headers=headers, timeout=http_timeout)
    body, header_type = await _download(http, request, None, "meta media download", max_bytes)
    return body, _content_type(header_type, mime_type or media.content_type)


def _read_meta_lookup(raw: bytes) -> tuple[str, str, int | None]:
    """``url``, ``mime_type`` and ``file_size`` (a number or a numeric string) of a lookup."""
    try:
        payload: Any = json.loads(raw)
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("url"), str):
        raise MediaError("download", "meta media lookup answered without a media url")
    mime_type = payload.get("mime_type")
    size: Any = payload.get("file_size")
    declared: int | None = None
    if isinstance(size, int) and not isinstance(size, bool):
        declared = size
    elif isinstance(size, str) and size.strip().isdigit():
        declared = int(size)
    return payload["url"], mime_type if isinstance(mime_type, str) else "", declared


def _check_http_url(url: str, what: str) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise MediaError("config", f"{what} is not a valid URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise MediaError("config", f"{what} is not an http(s) URL")


async def _download(
    http: httpx.AsyncClient,
    request: httpx.Request,
    auth: httpx.Auth | None,
    step: str,
    max_bytes: int,
) -> tuple[bytes, str]:
    """The body (at most ``max_bytes``) and ``Content-Type`` of ``request``, redirects followed."""
    try:
        response = await http.send(request, auth=auth, follow_redirects=True, stream=True)
    except httpx.TimeoutException as exc:
        raise MediaError("download", f"{step} timed out", retryable=True) from exc
    except httpx.TooManyRedirects as exc:
        raise MediaError("download", f"{step}: too many redirects") from exc
    except httpx.TransportError as exc:
        raise MediaError(
            "download", f"{step} failed: {type(exc).__name__}", retryable=True
        ) from exc
    try:
        _raise_for_status(response, step)
        declared = response.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > max_bytes:
            raise MediaError(
                "too_large", f"{step}: body is {declared} bytes; at most {max_bytes} are accepted"
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise MediaError("too_large", f"{step}: body is over {max_bytes} bytes; refused")
        return bytes(body), response.headers.get("Content-Type", "")
    except httpx.TimeoutException as exc:
        raise MediaError("download", f"{step} timed out", retryable=True) from exc
    except httpx.TransportError as exc:
        raise MediaError(
            "download", f"{step} failed: {type(exc).__name__}", retryable=True
        ) from exc
    finally:
        await response.aclose()


def _raise_for_status(response: httpx.Response, step: str) -> None:
    status = response.status_code
    if status < 300:
        return
    if status in (401, 403):
        reason = f"{step}: credentials refused (HTTP {status}); check the account's settings"
    elif status == 404:
        reason = f"{step}: media not found (HTTP 404); it may have expired or been deleted"
    else:
        reason = f"{step}: HTTP {status}"
    raise MediaError(
        "download",
        reason,
        retryable=status == 429 or status >= 500,
        status=status,
        retry_after_s=retry_after_s(response),
    )


def _content_type(header: str, declared: str) -> str:
    bare = header.split(";", 1)[0].strip().lower()
    if bare and bare not in ("application/octet-stream", "binary/octet-stream"):
        return header.strip()
    return declared.strip() or header.strip()


# --------------------------------------------------------------------------- decoding

# (signature test, FFmpeg demuxer name): see the module docstring for why not probe.
_DEMUXERS: tuple[tuple[Callable[[bytes], bool], str], ...] = (
    (lambda b: b.startswith(b"OggS"), "ogg"),
    (lambda b: b.startswith(b"RIFF") and b[8:12] == b"WAVE", "wav"),
    (lambda b: b.startswith(b"#!AMR"), "amr"),
    (lambda b: b[4:8] == b"ftyp", "mp4"),
    (lambda b: b.startswith(b"\x1a\x45\xdf\xa3"), "matroska"),  # WebM too
    (lambda b: b.startswith(b"fLaC"), "flac"),
    (lambda b: b.startswith(b"ID3"), "mp3"),
    # MPEG audio sync word: 11 set bits; layer bits 00 is ADTS AAC, else MP3.
    (lambda b: len(b) > 1 and b[0] == 0xFF and b[1] & 0xF6 == 0xF0, "aac"),
    (lambda b: len(b) > 1 and b[0] == 0xFF and b[1] & 0xE0 == 0xE0, "mp3"),
)


def _demuxer_for(data: bytes) -> str | None:
    for matches, name in _DEMUXERS:
        if matches(data[:16]):
            return name
    return None


def decode_audio(
    data: bytes, content_type: str, *, max_duration_s: float | None = DEFAULT_MAX_DURATION_S
) -> tuple[npt.NDArray[np.int16], int]:
    """Decode an audio file to mono PCM.

    Reads Ogg (Opus, Vorbis), WAV, AMR (NB/WB), MP4/M4A (AAC), WebM, FLAC,
    MP3 and ADTS AAC; the container is recognised from the data's signature
    (``content_type`` only names it in errors). Several channels are mixed
    down to one. Blocking (CPU-bound): call it off the event loop.

    Args:
        data: the file's bytes.
        content_type: its MIME type as downloaded (``audio/ogg; codecs=opus``).
        max_duration_s: refuse audio longer than this, in seconds (decoding
            stops there); None for no bound.

    Returns:
        ``(samples, sample_rate_hz)``: a 1-D ``int16`` array and the audio's
        own rate in Hz (48000 for Opus, 8000 for AMR-NB...).

    Raises:
        MediaError: ``undecodable`` (unknown format, corrupt, no audio stream,
            no samples) or ``too_long``.
    """
    kind = content_type.split(";", 1)[0].strip() or "unknown type"
    demuxer = _demuxer_for(data)
    if demuxer is None:
        raise MediaError("undecodable", f"{kind} ({len(data)} bytes) is not a known audio format")
    try:
        return _decode(data, demuxer, kind, max_duration_s)
    except av.error.FFmpegError as exc:
        raise MediaError(
            "undecodable", f"{kind} could not be decoded as {demuxer}: {type(exc).__name__}"
        ) from exc


def _decode(
    data: bytes, demuxer: str, kind: str, max_duration_s: float | None
) -> tuple[npt.NDArray[np.int16], int]:
    with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
        if not container.streams.audio:
            raise MediaError("undecodable", f"{kind} holds no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono")  # keeps the input rate
        pieces: list[npt.NDArray[np.int16]] = []
        rate = 0
        samples = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                rate = out.sample_rate
                pieces.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
                samples += out.samples
            if max_duration_s is not None and rate and samples > max_duration_s * rate:
                raise MediaError(
                    "too_long",
                    f"{kind} is longer than {max_duration_s:g} s; at most that is transcribed",
                )
        for out in resampler.resample(None):
            rate = out.sample_rate
            pieces.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
    pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    if pcm.size == 0 or rate <= 0:
        raise MediaError("undecodable", f"{kind} decoded to no audio")
    return pcm, rate


# --------------------------------------------------------------------------- transcription

SttSource = SpeechToText | Callable[[], Awaitable[SpeechToText]]
"""A recogniser, or an async function loading one (e.g. from the app's
:class:`~providers.speech.providers.SpeechHub`), called once per voice note."""

SEGMENT_S = 20.0
"""Longest piece of a voice note given to the recogniser as one utterance, in seconds.

A recogniser bounds each utterance's decoding (``options.timeout_s``, 30 s):
PocketSphinx decodes at 0.2-0.45x real time on two cores, so a long voice
note is cut into pieces, each at its quietest 20 ms frame within the last
:data:`_CUT_SEARCH_S` seconds before the limit (a pause between words)."""

_CUT_SEARCH_S = 5.0


async def transcribe_voice_note(
    stt: SttSource,
    data: bytes,
    content_type: str,
    *,
    session_id: str | None = None,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> str:
    """What a voice note says, recognised by the shared speech-to-text layer.

    Decodes ``data`` (:func:`decode_audio`), resamples it to the recogniser's
    rate (:data:`~providers.speech.stt.STT_SAMPLE_RATE_HZ`, soxr) in a worker
    thread, then recognises it in pieces of at most :data:`SEGMENT_S` seconds
    (see there) with :meth:`SpeechToText.transcribe`, whose decoding runs off
    the event loop too. A client's recogniser, biased to its services, comes
    from the app's speech hub, shared with its calls (``speech_specs`` is
    :func:`channels.phone.media.speech_specs`)::

        async def recogniser() -> SpeechToText:
            return (await hub.get(*speech_specs(client))).stt

        text = await transcribe_voice_note(recogniser, data, content_type)

    Args:
        stt: the recogniser, or an async function returning it (see :data:`SttSource`).
        data, content_type: the downloaded file (:func:`fetch_media`).
        session_id: the conversation's key, letting the recogniser adapt to
            one customer across notes (never logged).
        max_duration_s: refuse longer voice notes, in seconds.

    Returns:
        The words heard, space-separated (lowercase with PocketSphinx); ``""``
        when nothing was recognised.

    Raises:
        MediaError: ``undecodable``, ``too_long``; ``no_recogniser`` when no
            recogniser can be loaded here (reason says why and what to install);
            ``stt_failed`` when recognition failed (``retryable`` when it timed out).
    """
    pcm = await asyncio.to_thread(_decode_for_stt, data, content_type, max_duration_s)
    recogniser = await _load_recogniser(stt)
    texts: list[str] = []
    for piece in _segments(pcm, STT_SAMPLE_RATE_HZ):
        try:
            transcript = await recogniser.transcribe(
                piece.astype("<i2").tobytes(), STT_SAMPLE_RATE_HZ, session_id=session_id
            )
        except SpeechError as exc:
            raise MediaError(
                "stt_failed",
                f"{recogniser.name} failed on a {piece.size / STT_SAMPLE_RATE_HZ:.1f} s piece "
                f"of a voice note: {type(exc).__name__}",
                retryable=exc.retryable,
            ) from exc
        if transcript.text.strip():
            texts.append(transcript.text.strip())
    return " ".join(" ".join(texts).split())


async def _load_recogniser(stt: SttSource) -> SpeechToText:
    if isinstance(stt, SpeechToText):
        return stt
    try:
        return await stt()
    except SpeechUnavailableError as exc:
        raise MediaError(
            "no_recogniser", f"no speech recogniser can be loaded here: {exc.reason}"
        ) from exc
    except (SpeechError, ValueError) as exc:
        # SpeechError: a provider failed to build; ValueError: a provider name make_stt rejects
        raise MediaError(
            "no_recogniser",
            f"no speech recogniser can be loaded here: {type(exc).__name__}: {exc}",
            retryable=isinstance(exc, SpeechError) and exc.retryable,
        ) from exc


def _decode_for_stt(data: bytes, content_type: str, max_duration_s: float) -> npt.NDArray[np.int16]:
    pcm, rate = decode_audio(data, content_type, max_duration_s=max_duration_s)
    if rate == STT_SAMPLE_RATE_HZ:
        return pcm
    resampled: npt.NDArray[np.int16] = soxr.resample(pcm, rate, STT_SAMPLE_RATE_HZ)
    return resampled


def _segments(
    pcm: npt.NDArray[np.int16], rate_hz: int, max_s: float = SEGMENT_S
) -> list[npt.NDArray[np.int16]]:
    """``pcm`` cut into pieces of at most ``max_s`` seconds, at quiet frames."""
    limit = int(max_s * rate_hz)
    frame = rate_hz // 50  # 20 ms
    search = int(min(_CUT_SEARCH_S, max_s / 2) * rate_hz) // frame * frame
    pieces: list[npt.NDArray[np.int16]] = []
    start = 0
    while pcm.size - start > limit:
        window = pcm[start + limit - search : start + limit].astype(np.float64)
        energy = (window.reshape(-1, frame) ** 2).mean(axis=1)
        cut = start + limit - search + int(np.argmin(energy)) * frame + frame // 2
        pieces.append(pcm[start:cut])
        start = cut
    pieces.append(pcm[start:])
    return pieces

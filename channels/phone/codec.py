"""Twilio Media Streams wire codec: websocket JSON text frames <-> typed events.

This module is the only place that reads or writes Twilio's ``"event"`` JSON.
Shapes follow Twilio's "Media Streams - WebSocket Messages" documentation
(https://www.twilio.com/docs/voice/media-streams/websocket-messages).

From Twilio (``decode_inbound``)::

    {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    {"event": "start", "sequenceNumber": "1", "streamSid": "MZ...",
     "start": {"accountSid": "AC...", "streamSid": "MZ...", "callSid": "CA...",
               "tracks": ["inbound"], "customParameters": {"k": "v"},
               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                               "channels": 1}}}
    {"event": "media", "sequenceNumber": "3", "streamSid": "MZ...",
     "media": {"track": "inbound", "chunk": "1", "timestamp": "5",
               "payload": "<base64 mu-law>"}}
    {"event": "mark", "sequenceNumber": "4", "streamSid": "MZ...", "mark": {"name": "..."}}
    {"event": "dtmf", "sequenceNumber": "5", "streamSid": "MZ...",
     "dtmf": {"track": "inbound_track", "digit": "1"}}
    {"event": "stop", "sequenceNumber": "6", "streamSid": "MZ...",
     "stop": {"accountSid": "AC...", "callSid": "CA..."}}

To Twilio (bidirectional streams, ``<Connect><Stream>``): ``encode_media``,
``encode_mark``, ``encode_clear``. Twilio plays ``media`` payloads (8 kHz
mu-law, base64) in order, echoes a ``mark`` back once the audio sent before it
has played, and on ``clear`` drops its buffered audio and echoes the pending
marks at once.

Twilio sends numbers such as ``sequenceNumber``, ``chunk`` and ``timestamp``
as strings; both strings and integers are accepted. Anything malformed raises
:class:`CodecError`; the caller decides to log it and carry on.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.speech.audio import TWILIO_FRAME_BYTES

__all__ = [
    "MAX_FRAME_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_MEDIA_PAYLOAD_BYTES",
    "CodecError",
    "Connected",
    "Dtmf",
    "InboundEvent",
    "Mark",
    "Media",
    "MediaFormat",
    "Start",
    "Stop",
    "decode_inbound",
    "encode_clear",
    "encode_mark",
    "encode_media",
]

MAX_MEDIA_PAYLOAD_BYTES = 8000
"""Largest decoded media payload accepted: 1 s of 8 kHz mu-law."""
MAX_FRAME_CHARS = 16 * 1024
"""Largest websocket frame parsed, in characters: a media message of
:data:`MAX_MEDIA_PAYLOAD_BYTES` is ~11 KB of JSON; Twilio's 20 ms ones ~300 B."""
MAX_JSON_DEPTH = 8
"""Deepest nesting of objects/arrays parsed (Twilio's messages nest 3 deep)."""
_MAX_PAYLOAD_CHARS = 4 * -(-MAX_MEDIA_PAYLOAD_BYTES // 3)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
MAX_MARK_NAME_CHARS = 256
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class CodecError(ValueError):
    """A websocket frame that is not a valid Media Streams message.

    Attributes:
        reason: what is wrong, e.g. ``"media.payload is not valid base64"``.
        event: the message's ``event`` value when it could be read, else None.
    """

    def __init__(self, reason: str, event: str | None = None) -> None:
        super().__init__(f"{event} message: {reason}" if event else reason)
        self.reason, self.event = reason, event


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """The stream's audio format; Twilio sends ``audio/x-mulaw``, 8000 Hz, 1 channel."""

    encoding: str
    sample_rate_hz: int
    channels: int

    @property
    def is_mulaw_8k_mono(self) -> bool:
        return (
            self.encoding == "audio/x-mulaw" and self.sample_rate_hz == 8000 and self.channels == 1
        )


@dataclass(frozen=True, slots=True)
class Connected:
    """First message on the socket: the protocol (``"Call"``) and its version."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    """Stream metadata, sent once after ``connected``.

    ``custom_parameters`` are the ``<Parameter>`` values of the TwiML
    ``<Stream>``; ``tracks`` lists ``"inbound"`` and/or ``"outbound"``.
    """

    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    custom_parameters: Mapping[str, str] = field(default_factory=dict, hash=False)
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """One chunk of call audio.

    ``payload`` is raw 8 kHz mu-law (already base64-decoded), normally 160
    bytes = 20 ms. ``chunk`` counts chunks from 1; ``timestamp_ms`` is the
    chunk's offset from the start of the stream, in ms.
    """

    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """Twilio played all audio sent before the mark called ``name`` (or it was cleared)."""

    stream_sid: str
    name: str
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller pressed a key: ``digit`` is one of ``0-9 * #`` (or ``A-D``)."""

    stream_sid: str
    digit: str
    track: str = "inbound_track"
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """The stream ended (hang-up, or the stream was stopped)."""

    stream_sid: str
    account_sid: str | None = None
    call_sid: str | None = None
    sequence_number: int | None = None


InboundEvent = Connected | Start | Media | Mark | Dtmf | Stop
"""Everything :func:`decode_inbound` returns."""


def decode_inbound(
    raw: str | bytes, *, frame_bytes: int | None = TWILIO_FRAME_BYTES
) -> InboundEvent:
    """Parse one websocket text frame from Twilio.

    Args:
        raw: the frame's text (bytes are decoded as UTF-8).
        frame_bytes: media payloads must be a whole number of frames of this
            many bytes (default 160 = 20 ms of 8 kHz mu-law, what Twilio
            sends); None accepts any non-empty size.

    Frames longer than :data:`MAX_FRAME_CHARS` or nested deeper than
    :data:`MAX_JSON_DEPTH` are refused before ``json.loads`` sees them (a
    deeply nested frame would otherwise raise ``RecursionError``).

    Raises:
        CodecError: an oversized or too deeply nested frame, malformed JSON,
            unknown ``event``, a missing or mistyped field, invalid base64, or
            a payload of the wrong size.
    """
    if len(raw) > MAX_FRAME_CHARS:
        raise CodecError(f"frame of {len(raw)} characters; at most {MAX_FRAME_CHARS} accepted")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        _check_depth(text)
        message = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not valid JSON ({exc.__class__.__name__}: {exc})") from exc
    except RecursionError as exc:  # _check_depth should have caught it; never crash a call
        raise CodecError("JSON nested too deeply") from exc
    if not isinstance(message, dict):
        raise CodecError(f"expected a JSON object, got {type(message).__name__}")
    event = message.get("event")
    if not isinstance(event, str):
        raise CodecError('missing "event" field' if event is None else '"event" is not a string')
    parser = _PARSERS.get(event)
    if parser is None:
        raise CodecError(f"unknown event {event[:40]!r}", event=None)
    try:
        return parser(message, frame_bytes)
    except CodecError as exc:
        raise CodecError(exc.reason, event=event) from None


def encode_media(stream_sid: str, ulaw: bytes) -> str:
    """A ``media`` message playing ``ulaw`` (8 kHz mu-law; the player sends 160-byte frames).

    Raises:
        ValueError: empty stream sid or empty audio.
    """
    _require_sid(stream_sid)
    if not ulaw:
        raise ValueError("media payload must not be empty")
    payload = base64.b64encode(ulaw).decode("ascii")
    return _dump({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def encode_mark(stream_sid: str, name: str) -> str:
    """A ``mark`` message; Twilio echoes it when the audio sent before it has played.

    Raises:
        ValueError: empty stream sid, or a name that is empty or too long.
    """
    _require_sid(stream_sid)
    if not name or len(name) > MAX_MARK_NAME_CHARS:
        raise ValueError(f"mark name must be 1-{MAX_MARK_NAME_CHARS} characters")
    return _dump({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str) -> str:
    """A ``clear`` message: Twilio drops the audio it has buffered (barge-in).

    Raises:
        ValueError: empty stream sid.
    """
    _require_sid(stream_sid)
    return _dump({"event": "clear", "streamSid": stream_sid})


# --------------------------------------------------------------------------- internals


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH` (strings skipped), in C-speed
    passes: a frame with few brackets (every real one) costs two ``str.count`` calls."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise CodecError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _require_sid(stream_sid: str) -> None:
    if not stream_sid:
        raise ValueError("stream_sid must not be empty")


def _object(message: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = message.get(key)
    if value is None:
        raise CodecError(f'missing "{key}" object')
    if not isinstance(value, dict):
        raise CodecError(f'"{key}" is not an object')
    return value


def _string(obj: Mapping[str, Any], key: str, where: str = "", *, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    if value is None:
        raise CodecError(f'missing "{where}{key}"')
    if not isinstance(value, str):
        raise CodecError(f'"{where}{key}" is not a string')
    return value


def _integer(obj: Mapping[str, Any], key: str, where: str = "") -> int:
    value = _optional_integer(obj, key, where)
    if value is None:
        raise CodecError(f'missing "{where}{key}"')
    return value


def _optional_integer(obj: Mapping[str, Any], key: str, where: str = "") -> int | None:
    """A non-negative integer sent as a JSON number or a decimal string, or None if absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise CodecError(f'"{where}{key}" is not a non-negative integer')


def _sequence(message: Mapping[str, Any]) -> int | None:
    return _optional_integer(message, "sequenceNumber")


def _stream_sid(message: Mapping[str, Any]) -> str:
    sid = _string(message, "streamSid")
    if not sid:
        raise CodecError('"streamSid" is empty')
    return sid


def _parse_connected(message: Mapping[str, Any], _frame: int | None) -> Connected:
    return Connected(protocol=_string(message, "protocol"), version=_string(message, "version"))


def _parse_start(message: Mapping[str, Any], _frame: int | None) -> Start:
    start = _object(message, "start")
    stream_sid = _string(start, "streamSid", "start.", optional=True) or _stream_sid(message)
    tracks = start.get("tracks", [])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise CodecError('"start.tracks" is not a list of strings')
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise CodecError('"start.customParameters" is not an object')
    fmt = start.get("mediaFormat")
    if not isinstance(fmt, dict):
        raise CodecError(
            'missing "start.mediaFormat"' if fmt is None else '"start.mediaFormat" is not an object'
        )
    media_format = MediaFormat(
        encoding=_string(fmt, "encoding", "start.mediaFormat."),
        sample_rate_hz=_integer(fmt, "sampleRate", "start.mediaFormat."),
        channels=_integer(fmt, "channels", "start.mediaFormat."),
    )
    return Start(
        stream_sid=stream_sid,
        account_sid=_string(start, "accountSid", "start."),
        call_sid=_string(start, "callSid", "start."),
        tracks=tuple(tracks),
        media_format=media_format,
        custom_parameters={str(k): str(v) for k, v in params.items()},
        sequence_number=_sequence(message),
    )


def _parse_media(message: Mapping[str, Any], frame_bytes: int | None) -> Media:
    media = _object(message, "media")
    encoded = _string(media, "payload", "media.")
    if len(encoded) > _MAX_PAYLOAD_CHARS:  # refused before any decoding work
        raise CodecError(
            f'"media.payload" is {len(encoded)} base64 characters; at most '
            f"{MAX_MEDIA_PAYLOAD_BYTES} bytes accepted"
        )
    try:
        payload = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecError('"media.payload" is not valid base64') from exc
    if not payload:
        raise CodecError('"media.payload" is empty')
    if len(payload) > MAX_MEDIA_PAYLOAD_BYTES:
        raise CodecError(
            f'"media.payload" is {len(payload)} bytes; at most {MAX_MEDIA_PAYLOAD_BYTES} accepted'
        )
    if frame_bytes and len(payload) % frame_bytes:
        raise CodecError(
            f'"media.payload" is {len(payload)} bytes, not a whole number of '
            f"{frame_bytes}-byte frames"
        )
    return Media(
        stream_sid=_stream_sid(message),
        track=_string(media, "track", "media."),
        chunk=_integer(media, "chunk", "media."),
        timestamp_ms=_integer(media, "timestamp", "media."),
        payload=payload,
        sequence_number=_sequence(message),
    )


def _parse_mark(message: Mapping[str, Any], _frame: int | None) -> Mark:
    mark = _object(message, "mark")
    return Mark(
        stream_sid=_stream_sid(message),
        name=_string(mark, "name", "mark."),
        sequence_number=_sequence(message),
    )


def _parse_dtmf(message: Mapping[str, Any], _frame: int | None) -> Dtmf:
    dtmf = _object(message, "dtmf")
    digit = _string(dtmf, "digit", "dtmf.")
    if digit not in DTMF_DIGITS:
        raise CodecError('"dtmf.digit" is not one DTMF key (0-9, *, #, A-D)')
    return Dtmf(
        stream_sid=_stream_sid(message),
        digit=digit,
        track=_string(dtmf, "track", "dtmf.", optional=True) or "inbound_track",
        sequence_number=_sequence(message),
    )


def _parse_stop(message: Mapping[str, Any], _frame: int | None) -> Stop:
    stop = message.get("stop")
    if stop is not None and not isinstance(stop, dict):
        raise CodecError('"stop" is not an object')
    stop = stop or {}
    return Stop(
        stream_sid=_stream_sid(message),
        account_sid=_string(stop, "accountSid", "stop.", optional=True) or None,
        call_sid=_string(stop, "callSid", "stop.", optional=True) or None,
        sequence_number=_sequence(message),
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any], int | None], InboundEvent]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
    "stop": _parse_stop,
}

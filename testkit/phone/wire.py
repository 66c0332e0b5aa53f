"""Twilio's side of the Media Streams wire format, for fake Twilios in tests and tools.

The production codec (:mod:`channels.phone.codec`) reads what Twilio sends and
writes what the gateway sends. This module is its mirror image, the only
place a *fake* Twilio writes or reads the ``"event"`` JSON: :class:`TwilioStream`
builds the messages Twilio sends on a ``<Connect><Stream>`` call, and
:func:`parse_outbound` reads the ones a bot sends back. Shapes per Twilio's
"Media Streams - WebSocket Messages" documentation
(https://www.twilio.com/docs/voice/media-streams/websocket-messages)::

    Twilio -> bot (TwilioStream)
    {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    {"event": "start", "sequenceNumber": "1", "streamSid": "MZ...",
     "start": {"accountSid": "AC...", "streamSid": "MZ...", "callSid": "CA...",
               "tracks": ["inbound"], "customParameters": {...},
               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                               "channels": 1}}}
    {"event": "media", "sequenceNumber": "2", "streamSid": "MZ...",
     "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "<base64>"}}
    {"event": "mark", "sequenceNumber": "9", "streamSid": "MZ...", "mark": {"name": "..."}}
    {"event": "dtmf", "sequenceNumber": "7", "streamSid": "MZ...",
     "dtmf": {"track": "inbound_track", "digit": "1"}}
    {"event": "stop", "sequenceNumber": "12", "streamSid": "MZ...",
     "stop": {"accountSid": "AC...", "callSid": "CA..."}}

    bot -> Twilio (parse_outbound)
    {"event": "media", "streamSid": "MZ...", "media": {"payload": "<base64 8 kHz mu-law>"}}
    {"event": "mark", "streamSid": "MZ...", "mark": {"name": "..."}}
    {"event": "clear", "streamSid": "MZ..."}

Like Twilio, numbers go out as strings. ``sequenceNumber`` counts every
message after ``connected`` from 1; ``chunk`` counts media messages from 1;
``timestamp`` is the chunk's offset from the start of the stream in ms (the
audio sent before it, at 8 bytes per ms).

Test-only: production code never imports :mod:`testkit.phone`.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.speech.audio import TWILIO_SAMPLE_RATE_HZ

__all__ = [
    "DTMF_KEYS",
    "Outbound",
    "OutboundClear",
    "OutboundMark",
    "OutboundMedia",
    "TwilioStream",
    "WireError",
    "parse_outbound",
]

DTMF_KEYS = frozenset("0123456789*#")
"""The keys a caller can press on a phone keypad."""
_BYTES_PER_MS = TWILIO_SAMPLE_RATE_HZ // 1000  # mu-law: one byte per sample


class WireError(ValueError):
    """A message from the bot that is not a valid Media Streams message.

    Attributes:
        reason: what is wrong, e.g. ``'"media.payload" is not valid base64'``.
        event: the message's ``event`` when it could be read, else None.
    """

    def __init__(self, reason: str, event: str | None = None) -> None:
        super().__init__(f"{event}: {reason}" if event else reason)
        self.reason, self.event = reason, event


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    """Audio to play: ``ulaw`` is 8 kHz mu-law (a paced sender sends 160 bytes = 20 ms)."""

    stream_sid: str
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark:
    """A mark to echo back once the audio sent before it has played."""

    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    """Drop the buffered audio and echo every pending mark at once."""

    stream_sid: str


Outbound = OutboundMedia | OutboundMark | OutboundClear
"""Everything :func:`parse_outbound` returns."""


class TwilioStream:
    """The ids and counters of one media stream, and the messages Twilio sends on it.

    Each method returns one websocket text frame (JSON) and advances the
    ``sequenceNumber`` (and, for media, ``chunk`` and ``timestamp``) as
    Twilio does. Not thread-safe: one sender per stream.

    Args:
        caller: the caller's number (E.164), sent as ``customParameters.caller``.
        stream_sid, call_sid, account_sid: the ids; random ``MZ…``/``CA…``/``AC…``
            (32 hex digits) by default.
    """

    def __init__(
        self,
        *,
        caller: str = "+14155550123",
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
    ) -> None:
        self.caller = caller
        self.stream_sid = stream_sid or "MZ" + uuid.uuid4().hex
        self.call_sid = call_sid or "CA" + uuid.uuid4().hex
        self.account_sid = account_sid or "AC" + uuid.uuid4().hex
        self.sequence = 0
        """``sequenceNumber`` of the last message built (0: none after ``connected``)."""
        self.chunks = 0
        """Media messages built so far."""
        self.sent_ms = 0
        """Audio in the media messages built so far, in ms."""

    def connected(self) -> str:
        """The first message on the socket (it has no ``sequenceNumber``)."""
        return _dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: Mapping[str, str] | None = None) -> str:
        """The stream's metadata. ``custom_parameters`` are the TwiML ``<Parameter>``
        values; by default the gateway's own (``caller`` and ``call_sid``)."""
        params = (
            {"caller": self.caller, "call_sid": self.call_sid}
            if custom_parameters is None
            else dict(custom_parameters)
        )
        return self._event(
            "start",
            start={
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {
                    "encoding": "audio/x-mulaw",
                    "sampleRate": TWILIO_SAMPLE_RATE_HZ,
                    "channels": 1,
                },
            },
        )

    def media(self, ulaw: bytes) -> str:
        """One chunk of the caller's line: 8 kHz mu-law (Twilio sends 160 bytes = 20 ms).

        Raises:
            ValueError: empty audio.
        """
        if not ulaw:
            raise ValueError("a media chunk needs audio")
        return self.media_payload(base64.b64encode(ulaw).decode("ascii"), len(ulaw))

    def media_payload(self, payload: str, audio_bytes: int = 0) -> str:
        """A media message whose ``payload`` is sent exactly as given (base64 or not:
        tests of malformed input); ``audio_bytes`` advances the timestamp."""
        self.sequence += 1
        self.chunks += 1
        timestamp = self.sent_ms
        self.sent_ms += audio_bytes // _BYTES_PER_MS
        # Built by hand: a fake Twilio streams 50 of these per second per call
        # (the phone bench runs dozens of calls), and every field is ours or base64.
        return (
            f'{{"event":"media","sequenceNumber":"{self.sequence}",'
            f'"streamSid":{json.dumps(self.stream_sid)},"media":{{"track":"inbound",'
            f'"chunk":"{self.chunks}","timestamp":"{timestamp}",'
            f'"payload":{json.dumps(payload)}}}}}'
        )

    def mark(self, name: str) -> str:
        """The echo of the bot's mark ``name``: the audio sent before it has played."""
        return self._event("mark", mark={"name": name})

    def dtmf(self, digit: str) -> str:
        """The caller pressed a key (one of ``0-9 * #``).

        Raises:
            ValueError: not one keypad key.
        """
        if digit not in DTMF_KEYS or len(digit) != 1:
            raise ValueError(f"not a DTMF key: {digit!r}")
        return self._event("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def stop(self) -> str:
        """The call ended (the caller hung up)."""
        return self._event("stop", stop={"accountSid": self.account_sid, "callSid": self.call_sid})

    def _event(self, event: str, **body: Any) -> str:
        self.sequence += 1
        return _dump(
            {
                "event": event,
                "sequenceNumber": str(self.sequence),
                "streamSid": self.stream_sid,
                **body,
            }
        )


def parse_outbound(raw: str | bytes, *, strict: bool = False) -> Outbound:
    """Read one websocket text frame a bot sent to Twilio.

    Twilio ignores fields it does not know; with ``strict`` a message with
    fields other than the documented ones is refused too, so a test of our
    own gateway catches it drifting from the documented shapes.

    Raises:
        WireError: not JSON, not an object, an unknown ``event``, a missing or
            mistyped field (or, when ``strict``, an unexpected one), an empty
            ``streamSid``, or a media payload that is not non-empty base64.
    """
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"not JSON: {str(raw)[:80]!r}") from exc
    if not isinstance(message, dict):
        raise WireError(f"not a JSON object: {str(raw)[:80]!r}")
    event = message.get("event")
    if not isinstance(event, str):
        raise WireError('no "event" string')
    sid = message.get("streamSid")
    if not isinstance(sid, str) or not sid:
        raise WireError('"streamSid" is missing or empty', event)
    if event == "clear":
        _only(strict, message, {"event", "streamSid"}, event)
        return OutboundClear(sid)
    if event not in ("media", "mark"):
        raise WireError(f"unknown event {event[:40]!r}")
    _only(strict, message, {"event", "streamSid", event}, event)
    body = message.get(event)
    if not isinstance(body, dict):
        raise WireError(f'"{event}" is not an object', event)
    if event == "mark":
        _only(strict, body, {"name"}, event, "mark.")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise WireError('"mark.name" is missing or empty', event)
        return OutboundMark(sid, name)
    _only(strict, body, {"payload"}, event, "media.")
    payload = body.get("payload")
    if not isinstance(payload, str):
        raise WireError('"media.payload" is not a string', event)
    try:
        ulaw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError('"media.payload" is not valid base64', event) from exc
    if not ulaw:
        raise WireError('"media.payload" is empty', event)
    return OutboundMedia(sid, ulaw)


def _only(
    strict: bool, obj: Mapping[str, Any], allowed: set[str], event: str, where: str = ""
) -> None:
    extra = sorted(set(obj) - allowed) if strict else []
    if extra:
        raise WireError(f"unexpected field(s) {', '.join(where + k for k in extra)}", event)


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))

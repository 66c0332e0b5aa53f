"""Twilio Media Streams codec: each documented message, and each kind of bad input."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from channels.phone.codec import (
    CodecError,
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    decode_inbound,
    encode_clear,
    encode_mark,
    encode_media,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
FRAME = bytes(range(160))
PAYLOAD = base64.b64encode(FRAME).decode()

# The examples from Twilio's "Media Streams - WebSocket Messages" page.
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC123",
        "streamSid": SID,
        "callSid": "CA123",
        "tracks": ["inbound", "outbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"FirstName": "Jane", "RemoteParty": "Bob"},
    },
    "streamSid": SID,
}
MEDIA = {
    "event": "media",
    "sequenceNumber": "3",
    "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD},
    "streamSid": SID,
}
MARK = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}}
DTMF = {
    "event": "dtmf",
    "streamSid": SID,
    "sequenceNumber": "5",
    "dtmf": {"track": "inbound_track", "digit": "1"},
}
STOP = {
    "event": "stop",
    "sequenceNumber": "5",
    "stop": {"accountSid": "AC123", "callSid": "CA123"},
    "streamSid": SID,
}


def wire(message: dict[str, Any]) -> str:
    return json.dumps(message)


def with_changes(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``message`` with ``path`` ("a.b") set to ``value`` (``...`` deletes)."""
    copy: dict[str, Any] = json.loads(json.dumps(message))
    *parents, leaf = path.split(".")
    target = copy
    for key in parents:
        target = target[key]
    if value is ...:
        del target[leaf]
    else:
        target[leaf] = value
    return copy


def test_connected() -> None:
    assert decode_inbound(wire(CONNECTED)) == Connected(protocol="Call", version="1.0.0")


def test_start() -> None:
    event = decode_inbound(wire(START))
    assert isinstance(event, Start)
    assert event.stream_sid == SID
    assert (event.account_sid, event.call_sid) == ("AC123", "CA123")
    assert event.tracks == ("inbound", "outbound")
    assert event.media_format == MediaFormat("audio/x-mulaw", 8000, 1)
    assert event.media_format.is_mulaw_8k_mono
    assert dict(event.custom_parameters) == {"FirstName": "Jane", "RemoteParty": "Bob"}
    assert event.sequence_number == 1


def test_media() -> None:
    event = decode_inbound(wire(MEDIA))
    assert event == Media(
        stream_sid=SID, track="inbound", chunk=1, timestamp_ms=5, payload=FRAME, sequence_number=3
    )


def test_media_accepts_numbers_as_json_integers_and_bytes_input() -> None:
    message = with_changes(MEDIA, "media.chunk", 7)
    message = with_changes(message, "media.timestamp", 140)
    event = decode_inbound(wire(message).encode())
    assert isinstance(event, Media) and (event.chunk, event.timestamp_ms) == (7, 140)


def test_mark_dtmf_stop() -> None:
    assert decode_inbound(wire(MARK)) == Mark(stream_sid=SID, name="my label", sequence_number=4)
    assert decode_inbound(wire(DTMF)) == Dtmf(
        stream_sid=SID, digit="1", track="inbound_track", sequence_number=5
    )
    assert decode_inbound(wire(STOP)) == Stop(
        stream_sid=SID, account_sid="AC123", call_sid="CA123", sequence_number=5
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"protocol": "Call"}', 'missing "event"'),
        ('{"event": 5}', '"event" is not a string'),
        ('{"event": "hello"}', "unknown event 'hello'"),
        (wire(with_changes(MEDIA, "media.payload", "***")), "not valid base64"),
        (wire(with_changes(MEDIA, "media.payload", "")), "empty"),
        (
            wire(with_changes(MEDIA, "media.payload", base64.b64encode(b"x" * 100).decode())),
            "100 bytes",
        ),
        (
            wire(with_changes(MEDIA, "media.payload", base64.b64encode(b"x" * 16000).decode())),
            "at most",
        ),
        (wire(with_changes(MEDIA, "media.payload", ...)), 'missing "media.payload"'),
        (wire(with_changes(MEDIA, "media.payload", 12)), '"media.payload" is not a string'),
        (wire(with_changes(MEDIA, "media.track", ...)), 'missing "media.track"'),
        (wire(with_changes(MEDIA, "media.chunk", "one")), '"media.chunk" is not a non-negative'),
        (
            wire(with_changes(MEDIA, "media.timestamp", -20)),
            '"media.timestamp" is not a non-negative',
        ),
        (wire(with_changes(MEDIA, "media", ...)), 'missing "media" object'),
        (wire(with_changes(MEDIA, "media", "abc")), '"media" is not an object'),
        (wire(with_changes(MEDIA, "streamSid", ...)), 'missing "streamSid"'),
        (wire(with_changes(MEDIA, "sequenceNumber", "3a")), '"sequenceNumber"'),
        (wire(with_changes(START, "start.callSid", ...)), 'missing "start.callSid"'),
        (wire(with_changes(START, "start.mediaFormat", ...)), 'missing "start.mediaFormat"'),
        (wire(with_changes(START, "start.mediaFormat.sampleRate", "fast")), "sampleRate"),
        (wire(with_changes(START, "start.tracks", "inbound")), '"start.tracks"'),
        (wire(with_changes(START, "start.customParameters", [1])), "customParameters"),
        (wire(with_changes(MARK, "mark.name", ...)), 'missing "mark.name"'),
        (wire(with_changes(DTMF, "dtmf.digit", "12")), "not one DTMF key"),
        (wire(with_changes(STOP, "stop", "x")), '"stop" is not an object'),
        (wire(with_changes(CONNECTED, "version", ...)), 'missing "version"'),
    ],
)
def test_bad_input_raises_codec_error_with_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_inbound(raw)
    assert reason in str(caught.value)


def test_codec_error_names_the_event() -> None:
    with pytest.raises(CodecError) as caught:
        decode_inbound(wire(with_changes(MEDIA, "media.payload", "***")))
    assert caught.value.event == "media"
    assert caught.value.reason == '"media.payload" is not valid base64'


def test_frame_size_check_can_be_relaxed() -> None:
    odd = with_changes(MEDIA, "media.payload", base64.b64encode(b"x" * 100).decode())
    event = decode_inbound(wire(odd), frame_bytes=None)
    assert isinstance(event, Media) and len(event.payload) == 100


def test_outbound_messages() -> None:
    media = json.loads(encode_media(SID, FRAME))
    assert media == {"event": "media", "streamSid": SID, "media": {"payload": PAYLOAD}}
    assert json.loads(encode_mark(SID, "1:5")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "1:5"},
    }
    assert json.loads(encode_clear(SID)) == {"event": "clear", "streamSid": SID}


def test_outbound_validation() -> None:
    with pytest.raises(ValueError):
        encode_media("", FRAME)
    with pytest.raises(ValueError):
        encode_media(SID, b"")
    with pytest.raises(ValueError):
        encode_mark(SID, "")
    with pytest.raises(ValueError):
        encode_clear("")

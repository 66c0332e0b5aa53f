"""The fake Twilio's wire format (:mod:`testkit.phone.wire`) against the gateway's codec.

What the fake sends must decode, field for field, as the gateway decodes
Twilio's messages; what the gateway sends must parse. And the test audio a
scripted call speaks must count as speech on the gateway's side.
"""

from __future__ import annotations

import base64
import itertools
import json

import pytest

from channels.phone.codec import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    decode_inbound,
    encode_clear,
    encode_mark,
    encode_media,
)
from providers.speech.audio import TWILIO_FRAME_BYTES, ulaw_to_pcm16
from providers.speech.vad import VOICED_PERIODICITY, WebRtcVad, periodicity
from testkit.phone.audio import SILENT_FRAME, ulaw_frames, voiced_buzz
from testkit.phone.wire import (
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    TwilioStream,
    WireError,
    parse_outbound,
)

SID = "MZ" + "a" * 32


def test_every_message_the_fake_sends_decodes_as_twilios() -> None:
    wire = TwilioStream(caller="+14155550100", stream_sid=SID)
    frame = bytes(range(160))

    assert decode_inbound(wire.connected()) == Connected(protocol="Call", version="1.0.0")
    start = decode_inbound(wire.start())
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.account_sid) == (
        SID,
        wire.call_sid,
        wire.account_sid,
    )
    assert start.custom_parameters == {"caller": "+14155550100", "call_sid": wire.call_sid}
    assert start.tracks == ("inbound",) and start.media_format.is_mulaw_8k_mono
    assert start.sequence_number == 1

    first, second = decode_inbound(wire.media(frame)), decode_inbound(wire.media(frame * 2))
    assert first == Media(SID, "inbound", 1, 0, frame, 2)
    assert second == Media(SID, "inbound", 2, 20, frame * 2, 3)  # 20 ms after the first
    assert decode_inbound(wire.media(frame)) == Media(SID, "inbound", 3, 60, frame, 4)
    assert decode_inbound(wire.mark("1:5")) == Mark(SID, "1:5", 5)
    assert decode_inbound(wire.dtmf("#")) == Dtmf(SID, "#", "inbound_track", 6)
    assert decode_inbound(wire.stop()) == Stop(SID, wire.account_sid, wire.call_sid, 7)


def test_the_fakes_messages_carry_twilios_field_names() -> None:
    wire = TwilioStream(stream_sid=SID)
    wire.start()
    media = json.loads(wire.media(b"\xff" * 160))
    payload = base64.b64encode(b"\xff" * 160).decode()
    assert media == {
        "event": "media",
        "sequenceNumber": "2",
        "streamSid": SID,
        "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
    }
    assert json.loads(wire.dtmf("5")) == {
        "event": "dtmf",
        "sequenceNumber": "3",
        "streamSid": SID,
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }


def test_custom_parameters_and_bad_input() -> None:
    wire = TwilioStream()
    start = decode_inbound(wire.start({"to": "+14155550199"}))
    assert isinstance(start, Start) and start.custom_parameters == {"to": "+14155550199"}
    with pytest.raises(ValueError, match="DTMF"):
        wire.dtmf("12")
    with pytest.raises(ValueError, match="DTMF"):
        wire.dtmf("x")
    with pytest.raises(ValueError, match="audio"):
        wire.media(b"")
    assert '"payload":"%%% not base64 %%%"' in wire.media_payload("%%% not base64 %%%")


def test_what_the_gateway_sends_parses() -> None:
    frame = bytes(range(160))
    for strict in (False, True):
        assert parse_outbound(encode_media(SID, frame), strict=strict) == OutboundMedia(SID, frame)
        assert parse_outbound(encode_mark(SID, "2:10@1"), strict=strict) == OutboundMark(
            SID, "2:10@1"
        )
        assert parse_outbound(encode_clear(SID), strict=strict) == OutboundClear(SID)


def test_undocumented_fields_are_refused_only_when_strict() -> None:
    clear = json.dumps({"event": "clear", "streamSid": SID, "extra": 1})
    media = json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "/w==", "x": 1}})
    assert parse_outbound(clear) == OutboundClear(SID)
    assert parse_outbound(media) == OutboundMedia(SID, b"\xff")
    with pytest.raises(WireError, match="extra"):
        parse_outbound(clear, strict=True)
    with pytest.raises(WireError, match=r"media\.x"):
        parse_outbound(media, strict=True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"streamSid": "MZ1"}', '"event"'),
        ('{"event": "clear"}', "streamSid"),
        ('{"event": "clear", "streamSid": ""}', "streamSid"),
        ('{"event": "start", "streamSid": "MZ1"}', "unknown event"),
        ('{"event": "mark", "streamSid": "MZ1", "mark": {}}', "mark.name"),
        ('{"event": "mark", "streamSid": "MZ1", "mark": "a"}', "not an object"),
        ('{"event": "media", "streamSid": "MZ1", "media": {"payload": "%%"}}', "base64"),
        ('{"event": "media", "streamSid": "MZ1", "media": {"payload": ""}}', "empty"),
        ('{"event": "media", "streamSid": "MZ1", "media": {"payload": 3}}', "not a string"),
    ],
)
def test_malformed_messages_say_what_is_wrong(raw: str, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        parse_outbound(raw)


def test_the_voiced_buzz_is_speech_to_the_gateway() -> None:
    frames = [ulaw_to_pcm16(f) for f in ulaw_frames(voiced_buzz(1000), 8000)]
    assert len(frames) == 50
    for aggressiveness in range(4):
        vad = WebRtcVad(aggressiveness)
        assert all(vad.is_speech(frame, 8000) for frame in frames)
    windows = [a + b for a, b in itertools.pairwise(frames)]
    assert min(periodicity(w, 8000) for w in windows) >= VOICED_PERIODICITY
    assert voiced_buzz(200) == voiced_buzz(200)  # deterministic


def test_ulaw_frames_are_whole_frames_padded_with_silence() -> None:
    frames = ulaw_frames(b"\x00\x10" * 200, 8000)  # 25 ms
    assert [len(f) for f in frames] == [TWILIO_FRAME_BYTES, TWILIO_FRAME_BYTES]
    assert frames[1].endswith(SILENT_FRAME[:120])
    assert len(ulaw_frames(b"\x00\x10" * 441, 44100)) == 1  # resampled to 8 kHz
    with pytest.raises(ValueError):
        ulaw_frames(b"\x00", 8000)

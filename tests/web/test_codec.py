"""The web chat wire codec: client frames in, server events out."""

from __future__ import annotations

import json

import pytest

from channels.web.codec import (
    MAX_DEPTH,
    CompleteEvent,
    MessageFrame,
    ProtocolError,
    ResumeFrame,
    complete_event,
    error_event,
    load_event,
    parse_frame,
    session_event,
    token_event,
)
from channels.web.limits import TokenBucket, WebLimits
from engine.messages import Action, ConversationResponse, QuickReply, ResponseMetadata

LIMITS = {"max_frame_bytes": 200, "max_text_chars": 20}


def parse(data: str | bytes) -> MessageFrame | ResumeFrame:
    return parse_frame(data, **LIMITS)


def test_message_frame_is_parsed_and_stripped() -> None:
    frame = parse('{"type": "message", "text": "  hello there \\n", "id": "c-1"}')
    assert frame == MessageFrame(text="hello there", id="c-1")


def test_message_id_is_optional_and_numbers_become_strings() -> None:
    assert parse('{"type": "message", "text": "hi"}') == MessageFrame(text="hi", id=None)
    assert parse('{"type": "message", "text": "hi", "id": 7}') == MessageFrame(text="hi", id="7")


def test_unknown_fields_are_ignored() -> None:
    frame = parse('{"type": "message", "text": "hi", "lang": "en"}')
    assert frame == MessageFrame(text="hi")


def test_resume_frame() -> None:
    frame = parse('{"type": "resume", "session_id": "abc123", "last_event_id": 12}')
    assert frame == ResumeFrame(session_id="abc123", last_event_id=12)


def test_text_at_the_limit_is_accepted() -> None:
    assert parse(json.dumps({"type": "message", "text": "é" * 20})).text == "é" * 20


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("hello", "bad_json"),
        ('{"type": "message", "text": "hi"', "bad_json"),
        ("", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('"message"', "bad_frame"),
        ("null", "bad_frame"),
        ('{"text": "hi"}', "bad_frame"),
        ('{"type": 3, "text": "hi"}', "bad_frame"),
        ('{"type": "typing"}', "unknown_type"),
        ('{"type": "message"}', "bad_message"),
        ('{"type": "message", "text": ""}', "bad_message"),
        ('{"type": "message", "text": " \\n\\t "}', "bad_message"),
        ('{"type": "message", "text": 42}', "bad_message"),
        ('{"type": "message", "text": null}', "bad_message"),
        ('{"type": "message", "text": ["hi"]}', "bad_message"),
        ('{"type": "message", "text": "hi", "id": ""}', "bad_message"),
        ('{"type": "message", "text": "hi", "id": {"a": 1}}', "bad_message"),
        ('{"type": "message", "text": "hi", "id": true}', "bad_message"),
        ('{"type": "message", "text": "' + "x" * 21 + '"}', "too_large"),
        ('{"type": "message", "text": "hi", "pad": "' + "x" * 200 + '"}', "too_large"),
        ('{"type": "message", "text": "' + "é" * 19 + '", "pad": "' + "é" * 80 + '"}', "too_large"),
        (b'{"type": "message", "text": "hi"}', "bad_frame"),
        (b"\x00\x01", "bad_frame"),
        ('{"type": "resume"}', "bad_frame"),
        ('{"type": "resume", "session_id": "", "last_event_id": 0}', "bad_frame"),
        ('{"type": "resume", "session_id": "a b", "last_event_id": 0}', "bad_frame"),
        ('{"type": "resume", "session_id": "abc", "last_event_id": -1}', "bad_frame"),
        ('{"type": "resume", "session_id": "abc", "last_event_id": "3"}', "bad_frame"),
        ('{"type": "resume", "session_id": "abc", "last_event_id": 1.5}', "bad_frame"),
        ('{"type": "resume", "session_id": 5, "last_event_id": 0}', "bad_frame"),
    ],
)
def test_bad_frames_raise_protocol_errors(data: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(data)
    assert caught.value.code == code
    assert caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        '{"a":' * 1300 + "1" + "}" * 1300,  # json.loads alone raises RecursionError
        "[" * 4000 + "]" * 4000,
        '{"type": "message", "text": "hi", "x": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}",
        "[" * 5000,  # unbalanced: refused before the parser sees it
    ],
)
def test_deep_nesting_is_refused_before_parsing(data: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(data, max_frame_bytes=10_000, max_text_chars=20)
    assert caught.value.code == "bad_frame"
    assert "nested too deeply" in caught.value.message


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine() -> None:
    inner = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    frame = '{"type": "message", "text": "hi", "x": ' + inner + "}"
    assert parse_frame(frame, max_frame_bytes=1000, max_text_chars=20) == MessageFrame(text="hi")
    text = '[{\\"' * 40 + "\\"  # brackets, escaped quotes and backslashes inside the text
    frame = json.dumps({"type": "message", "text": text})
    assert parse_frame(frame, max_frame_bytes=1000, max_text_chars=1000) == MessageFrame(text=text)


def test_lone_surrogates_become_replacement_characters() -> None:
    frame = parse('{"type": "message", "text": "hi \\ud800 there\\udfff", "id": "c-\\udc00"}')
    assert frame == MessageFrame(text="hi \ufffd there\ufffd", id="c-\ufffd")
    # an escaped pair is one character, not two replacements
    assert parse('{"type": "message", "text": "\\ud83d\\ude00"}') == MessageFrame(text="\U0001f600")
    # in-process callers may pass a str holding a lone surrogate itself
    assert parse('{"type": "message", "text": "a\ud800"}') == MessageFrame(text="a\ufffd")


def test_error_messages_never_quote_the_users_text() -> None:
    secret = "maria@example.com"
    for frame in (
        {"type": "message", "text": [secret]},
        {"type": "resume", "session_id": secret, "last_event_id": 0},
        {"type": "message", "text": secret, "id": {"x": secret}},
    ):
        with pytest.raises(ProtocolError) as caught:
            parse(json.dumps(frame))
        assert secret not in caught.value.message
        assert secret not in str(caught.value)


def test_server_events_have_type_and_event_id() -> None:
    session = json.loads(session_event(0, "s1", resumed=False, greeting="Hi!", client_name="Spa"))
    assert session == {
        "type": "session",
        "event_id": 0,
        "session_id": "s1",
        "resumed": False,
        "greeting": "Hi!",
        "client_name": "Spa",
    }
    assert json.loads(token_event(3, "Hel", "c-1")) == {
        "type": "token",
        "event_id": 3,
        "content": "Hel",
        "reply_to": "c-1",
    }
    assert json.loads(error_event(9, "bad_json", "frame is not valid JSON")) == {
        "type": "error",
        "event_id": 9,
        "code": "bad_json",
        "message": "frame is not valid JSON",
        "reply_to": None,
    }


def test_complete_event_carries_the_whole_response() -> None:
    response = ConversationResponse(
        text="Which time suits you?",
        quick_replies=(QuickReply(title="Tue 10:00", value="2030-01-01T10:00"),),
        actions=(Action(type="booked", target="b-1"),),
        metadata=ResponseMetadata(
            purpose="lead_capture",
            expecting="time",
            slots={"name": "Maria"},
            state="collecting",
            purpose_data={"booking_id": "b-1", "lead_id": "l-1"},
        ),
    )
    data = json.loads(complete_event(4, response, "c-2"))
    assert data["type"] == "complete"
    assert data["event_id"] == 4
    assert data["text"] == "Which time suits you?"
    assert data["quick_replies"] == [{"title": "Tue 10:00", "value": "2030-01-01T10:00"}]
    assert data["actions"] == [{"type": "booked", "target": "b-1"}]
    assert data["metadata"]["expecting"] == "time"
    assert data["metadata"]["slots"] == {"name": "Maria"}
    assert "confidence" in data["metadata"]
    assert data["reply_to"] == "c-2"
    event = load_event(complete_event(4, response, "c-2"))
    assert isinstance(event, CompleteEvent)
    meta = response.metadata
    assert (event.metadata.purpose, event.metadata.expecting, event.metadata.state) == (
        meta.purpose,
        meta.expecting,
        meta.state,
    )
    # the purpose's own facts sit beside the generic fields on the wire
    assert data["metadata"]["booking_id"] == "b-1" and data["metadata"]["lead_id"] == "l-1"
    assert "purpose_data" not in data["metadata"]
    assert event.metadata.model_extra == {"booking_id": "b-1", "lead_id": "l-1"}


def test_expecting_null_stays_in_the_metadata() -> None:
    data = json.loads(complete_event(1, ConversationResponse(text="Hi")))
    assert "expecting" in data["metadata"]
    assert data["metadata"]["expecting"] is None


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after_s() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take()
    assert not bucket.take()
    now[0] += 60
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_web_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        WebLimits(rate_per_s=0)
    with pytest.raises(ValueError):
        WebLimits(max_frame_bytes=0)

"""Meta Cloud API codec: the webhook shapes of Meta's "messages webhook reference"
pages, malformed payloads, and the Graph /messages bodies."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from channels.whatsapp.choices import choice_for, reply_id
from channels.whatsapp.meta_codec import (
    BODY_LIMIT,
    TEXT_LIMIT,
    CodecError,
    meta_read_payload,
    meta_send_payloads,
    meta_template_payload,
    parse_meta,
)
from channels.whatsapp.models import InboundMessage, Media, OutboundMessage, StatusUpdate
from channels.whatsapp.twilio_codec import text_units
from engine.messages import QuickReply

WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
CONTEXT_ID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
PHONE_NUMBER_ID = "106540352242922"


def webhook(*messages: Any, statuses: list[Any] | None = None) -> dict[str, Any]:
    """A webhook as in Meta's reference, carrying ``messages`` (and ``statuses``)."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
    }
    if messages:
        value["contacts"] = [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}]
        value["messages"] = list(messages)
    if statuses is not None:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def message(type_: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "from": "16505551234",
        "id": WAMID,
        "timestamp": "1749416383",
        "type": type_,
        type_: content,
        **extra,
    }


def one(payload: dict[str, Any]) -> InboundMessage:
    messages, statuses = parse_meta(payload, "bright-smile")
    assert len(messages) == 1 and statuses == []
    return messages[0]


# --- messages ------------------------------------------------------------------------


def test_text_message() -> None:
    msg = one(webhook(message("text", {"body": "Does it come in another color?"})))
    assert msg == InboundMessage(
        provider="meta",
        channel="whatsapp",
        client_id="bright-smile",
        message_id=WAMID,
        sender="+16505551234",
        kind="text",
        text="Does it come in another color?",
        wa_id="16505551234",
        profile_name="Sheena Nelson",
        business=PHONE_NUMBER_ID,
        timestamp=1749416383.0,
    )


def test_reply_context() -> None:
    ctx = {"from": "15550783881", "id": CONTEXT_ID}
    assert one(webhook(message("text", {"body": "that one"}, context=ctx))).reply_to == CONTEXT_ID


def test_button_reply() -> None:
    rid = reply_id(2, "change")
    interactive = {"type": "button_reply", "button_reply": {"id": rid, "title": "Change something"}}
    msg = one(webhook(message("interactive", interactive)))
    assert (msg.kind, msg.text, msg.choice_id) == ("button", "Change something", rid)


def test_list_reply() -> None:
    interactive = {
        "type": "list_reply",
        "list_reply": {"id": "qr:3", "title": "Thursday 9:00", "description": "Dr. Ruiz"},
    }
    msg = one(webhook(message("interactive", interactive)))
    assert (msg.kind, msg.text, msg.choice_id) == ("list", "Thursday 9:00", "qr:3")


def test_unknown_interactive_reply_is_unsupported() -> None:
    interactive = {"type": "nfm_reply", "nfm_reply": {"response_json": "{}", "name": "flow"}}
    assert one(webhook(message("interactive", interactive))).kind == "unsupported"


def test_template_quick_reply_button() -> None:
    msg = one(
        webhook(
            message(
                "button",
                {"payload": "confirm-visit", "text": "Confirm"},
                context={"from": "15550783881", "id": CONTEXT_ID},
            )
        )
    )
    assert (msg.kind, msg.text, msg.choice_id, msg.reply_to) == (
        "button",
        "Confirm",
        "confirm-visit",
        CONTEXT_ID,
    )


def test_voice_note() -> None:
    audio = {
        "mime_type": "audio/ogg; codecs=opus",
        "sha256": "abc=",
        "id": "1003383421387256",
        "voice": True,
    }
    msg = one(webhook(message("audio", audio)))
    assert (msg.kind, msg.text) == ("audio", "")
    assert msg.media == (Media(ref="1003383421387256", content_type="audio/ogg; codecs=opus"),)


@pytest.mark.parametrize("kind", ["image", "video", "document", "sticker"])
def test_media_with_caption(kind: str) -> None:
    content = {"caption": "my x-ray", "mime_type": "image/jpeg", "sha256": "x", "id": "42"}
    if kind == "document":
        content["filename"] = "xray.pdf"
    msg = one(webhook(message(kind, content)))
    assert (msg.kind, msg.text, msg.media[0].ref) == (kind, "my x-ray", "42")


def test_media_without_id_is_skipped() -> None:
    messages, _ = parse_meta(webhook(message("image", {"mime_type": "image/jpeg"})), "c")
    assert messages == []


def test_location() -> None:
    location = {
        "address": "1 Hacker Way, Menlo Park, CA 94025",
        "latitude": 37.483307,
        "longitude": -122.148981,
        "name": "Meta Headquarters",
        "url": "https://meta.com",
    }
    msg = one(webhook(message("location", location)))
    assert msg.kind == "location"
    assert msg.text == "Location: Meta Headquarters, 1 Hacker Way, Menlo Park, CA 94025"


def test_location_coordinates_only() -> None:
    msg = one(webhook(message("location", {"latitude": 37.4833, "longitude": -122.149})))
    assert msg.text == "Location: 37.4833,-122.149"


def test_reaction() -> None:
    msg = one(webhook(message("reaction", {"message_id": CONTEXT_ID, "emoji": "👍"})))
    assert (msg.kind, msg.text, msg.reply_to) == ("reaction", "👍", CONTEXT_ID)


def test_contacts() -> None:
    cards = [
        {
            "name": {"formatted_name": "Barbara Johnson", "first_name": "Barbara"},
            "phones": [{"phone": "+1 (940) 555-1234", "wa_id": "19405551234", "type": "HOME"}],
        }
    ]
    msg = one(webhook(message("contacts", cards)))
    assert (msg.kind, msg.text) == ("contacts", "Contact: Barbara Johnson +1 (940) 555-1234")


@pytest.mark.parametrize("type_", ["unsupported", "order", "system", "request_welcome", "poll"])
def test_other_types_are_unsupported(type_: str) -> None:
    extra = {"errors": [{"code": 131051, "title": "Message type unknown"}]}
    msg = one(webhook(message(type_, {"whatever": 1}, **extra)))
    assert (msg.kind, msg.text) == ("unsupported", "")


def test_text_in_any_script_and_lone_surrogates() -> None:
    msg = one(webhook(message("text", {"body": "Привет 👋 \ud83d مرحبا"})))
    assert msg.text == "Привет 👋 \ufffd مرحبا"
    msg.text.encode("utf-8")


def test_names_in_any_script_and_contacts_matched_by_wa_id() -> None:
    payload = webhook(message("text", {"body": "hi"}))
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"] = [
        {"profile": {"name": "Someone Else"}, "wa_id": "4915112345678"},
        {"profile": {"name": "陳大文"}, "wa_id": "16505551234"},
    ]
    assert one(payload).profile_name == "陳大文"


def test_no_contacts() -> None:
    payload = webhook(message("text", {"body": "hi"}))
    del payload["entry"][0]["changes"][0]["value"]["contacts"]
    assert one(payload).profile_name is None


def test_several_entries_and_messages_in_order() -> None:
    first = message("text", {"body": "one"})
    second = {**message("text", {"body": "two"}), "id": "wamid.2", "timestamp": "1749416390"}
    payload = webhook(first, second)
    payload["entry"].append(copy.deepcopy(payload["entry"][0]))
    messages, _ = parse_meta(payload, "c")
    assert [m.text for m in messages] == ["one", "two", "one", "two"]


def test_malformed_messages_are_skipped_and_the_rest_kept(caplog: pytest.LogCaptureFixture) -> None:
    good = message("text", {"body": "secret diagnosis"})
    bad = [
        "not an object",
        {**message("text", {"body": "secret a"}), "id": ""},
        {**message("text", {"body": "secret b"}), "from": "+1 650 555"},
        {**message("text", {"body": "secret c"}), "timestamp": "yesterday"},
        {**message("text", {"body": "secret d"}), "timestamp": None},
        {k: v for k, v in message("text", {"body": "secret e"}).items() if k != "from"},
    ]
    with caplog.at_level(logging.WARNING, logger="channels.whatsapp.meta_codec"):
        messages, _ = parse_meta(webhook(*bad, good), "c")
    assert [m.text for m in messages] == ["secret diagnosis"]
    assert "skipped 6" in caplog.text
    assert "secret" not in caplog.text and "16505551234" not in caplog.text


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"object": "page", "entry": []},
        {"object": "whatsapp_business_account"},
        {"object": "whatsapp_business_account", "entry": {}},
        {"object": "whatsapp_business_account", "entry": ["x"]},
        {"object": "whatsapp_business_account", "entry": [{"changes": "x"}]},
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages"}]}]},
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"value": {"messages": {}}}]}],
        },
    ],
)
def test_broken_structure_is_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        parse_meta(payload, "c")


def test_other_fields_are_ignored() -> None:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {"event": "APPROVED", "message_template_name": "reminder"},
                    }
                ],
            }
        ],
    }
    assert parse_meta(payload, "c") == ([], [])


def test_empty_entry() -> None:
    assert parse_meta({"object": "whatsapp_business_account", "entry": []}, "c") == ([], [])


# --- statuses ------------------------------------------------------------------------


def status(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": WAMID,
        "status": state,
        "timestamp": "1750263773",
        "recipient_id": "16505551234",
        "pricing": {"billable": True, "pricing_model": "PMP", "category": "service"},
        **extra,
    }


@pytest.mark.parametrize(
    ("state", "mapped"),
    [("sent", "sent"), ("delivered", "delivered"), ("read", "read"), ("played", "read")],
)
def test_statuses(state: str, mapped: str) -> None:
    messages, statuses = parse_meta(webhook(statuses=[status(state)]), "c")
    assert messages == []
    assert statuses == [
        StatusUpdate(
            provider="meta",
            client_id="c",
            message_id=WAMID,
            status=mapped,  # type: ignore[arg-type]
            recipient="+16505551234",
            timestamp=1750263773.0,
        )
    ]


def test_failed_status_with_error() -> None:
    errors = [
        {
            "code": 131047,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {
                "details": "Message failed to send because more than 24 hours have passed"
            },
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }
    ]
    _, (update,) = parse_meta(webhook(statuses=[status("failed", errors=errors)]), "c")
    assert (update.status, update.error_code, update.error_title) == (
        "failed",
        "131047",
        "Re-engagement message",
    )


def test_unknown_and_malformed_statuses_are_skipped() -> None:
    statuses = [
        status("deleted"),
        {"status": "sent"},
        status("sent", timestamp="x"),
        status("read"),
    ]
    _, updates = parse_meta(webhook(statuses=statuses), "c")
    assert [u.status for u in updates] == ["read"]


def test_messages_and_statuses_together() -> None:
    messages, statuses = parse_meta(
        webhook(message("text", {"body": "hi"}), statuses=[status("delivered")]), "c"
    )
    assert len(messages) == 1 and len(statuses) == 1


# --- sending -------------------------------------------------------------------------

TWO = (
    QuickReply(title="Yes, book it", value="yes"),
    QuickReply(title="Change something", value="change"),
)
TO = "+16505551234"
ENVELOPE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551234"}


def test_plain_text() -> None:
    assert meta_send_payloads(OutboundMessage("See you Tuesday!"), to=TO) == [
        {**ENVELOPE, "type": "text", "text": {"preview_url": False, "body": "See you Tuesday!"}}
    ]


def test_long_text_is_split_under_4096() -> None:
    text = "Bring your insurance card and a list of medicines. " * 200
    parts = meta_send_payloads(OutboundMessage(text), to=TO)
    bodies = [p["text"]["body"] for p in parts]
    assert len(bodies) == 3 and all(text_units(b) <= TEXT_LIMIT for b in bodies)
    assert all(b.endswith("medicines.") for b in bodies)


def test_reply_buttons() -> None:
    (payload,) = meta_send_payloads(OutboundMessage("Shall I book it?", TWO), to=TO)
    assert payload == {
        **ENVELOPE,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Shall I book it?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": reply_id(1, "yes"), "title": "Yes, book it"}},
                    {
                        "type": "reply",
                        "reply": {"id": reply_id(2, "change"), "title": "Change something"},
                    },
                ]
            },
        },
    }


def test_button_ids_map_back_to_the_values() -> None:
    (payload,) = meta_send_payloads(OutboundMessage("Shall I book it?", TWO), to=TO)
    for button, choice in zip(payload["interactive"]["action"]["buttons"], TWO, strict=True):
        assert choice_for(button["reply"]["title"], TWO, button["reply"]["id"]) == choice.value
        assert len(button["reply"]["id"]) <= 256


def test_long_body_sends_the_leading_text_first() -> None:
    text = "Here is what the visit involves. " * 60 + "Shall I book it?"
    parts = meta_send_payloads(OutboundMessage(text, TWO), to=TO)
    assert [p["type"] for p in parts] == ["text", "interactive"]
    body = parts[-1]["interactive"]["body"]["text"]
    assert text_units(body) <= BODY_LIMIT and body.endswith("Shall I book it?")
    assert parts[0]["text"]["body"] + " " + body == text


def test_empty_text_uses_the_label_as_body() -> None:
    (payload,) = meta_send_payloads(OutboundMessage("", TWO), to=TO, button_label="Elige")
    assert payload["interactive"]["body"]["text"] == "Elige"


def test_long_titles_make_a_list_with_descriptions() -> None:
    choices = (
        QuickReply(title="Tuesday 10:00 with Dr. Smith at the main clinic", value="tue-10"),
        QuickReply(title="Wednesday 16:30", value="wed-1630"),
    )
    (payload,) = meta_send_payloads(OutboundMessage("Which time suits you?", choices), to=TO)
    interactive = payload["interactive"]
    assert interactive["type"] == "list"
    assert interactive["action"]["button"] == "Choose"
    rows = interactive["action"]["sections"][0]["rows"]
    assert rows[0] == {
        "id": reply_id(1, "tue-10"),
        "title": "Tuesday 10:00 with Dr.…",
        "description": "Smith at the main clinic",
    }
    assert rows[1] == {"id": reply_id(2, "wed-1630"), "title": "Wednesday 16:30"}


def test_list_limits() -> None:
    choices = tuple(
        QuickReply(title=f"Option {i} " + "très longue description " * 8, value=f"v{i}")
        for i in range(1, 11)
    )
    (payload,) = meta_send_payloads(
        OutboundMessage("Pick one", choices), to=TO, button_label="Choose a time for your visit"
    )
    action = payload["interactive"]["action"]
    assert text_units(action["button"]) <= 20
    rows = action["sections"][0]["rows"]
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10
    assert all(text_units(r["title"]) <= 24 for r in rows)
    assert all(text_units(r["description"]) <= 72 for r in rows)
    assert rows[0]["description"].endswith("…")


def test_four_choices_make_a_list() -> None:
    choices = tuple(QuickReply(title=d, value=d.lower()) for d in ("Mon", "Tue", "Wed", "Thu"))
    (payload,) = meta_send_payloads(OutboundMessage("Which day?", choices), to=TO)
    assert payload["interactive"]["type"] == "list"


def test_duplicate_titles_make_a_list() -> None:
    choices = (QuickReply(title="10:00", value="a"), QuickReply(title="10:00", value="b"))
    (payload,) = meta_send_payloads(OutboundMessage("Which?", choices), to=TO)
    assert payload["interactive"]["type"] == "list"


def test_more_than_ten_choices_are_numbered_text() -> None:
    choices = tuple(QuickReply(title=f"{h}:00", value=f"{h}") for h in range(8, 20))
    (payload,) = meta_send_payloads(OutboundMessage("Which hour?", choices), to=TO)
    body = payload["text"]["body"]
    assert body.startswith("Which hour?\n\n1. 8:00\n2. 9:00")
    assert body.endswith("12. 19:00\n\nReply with a number.")


def test_emoji_titles_count_utf16_units() -> None:
    choices = (QuickReply(title="👍" * 10 + "x", value="a"), QuickReply(title="No", value="b"))
    (payload,) = meta_send_payloads(OutboundMessage("OK?", choices), to=TO)
    assert payload["interactive"]["type"] == "list"  # 21 units: too long for a button


def test_nothing_to_send() -> None:
    assert meta_send_payloads(OutboundMessage(""), to=TO) == []


@pytest.mark.parametrize("to", ["", "abc", "+0123", "+1 650 555 1234"])
def test_bad_recipient(to: str) -> None:
    with pytest.raises(CodecError):
        meta_send_payloads(OutboundMessage("hi"), to=to)


def test_read_payload() -> None:
    assert meta_read_payload(WAMID) == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": WAMID,
        "typing_indicator": {"type": "text"},
    }
    assert "typing_indicator" not in meta_read_payload(WAMID, typing=False)


def test_template_payload() -> None:
    payload = meta_template_payload(TO, "appointment_reminder", "es_ES", "Tu cita:\nmartes  10:00")
    assert payload == {
        **ENVELOPE,
        "type": "template",
        "template": {
            "name": "appointment_reminder",
            "language": {"code": "es_ES"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Tu cita: martes 10:00"}]}
            ],
        },
    }


def test_template_variable_is_cut() -> None:
    payload = meta_template_payload(TO, "note", "en", "word " * 1000)
    text = payload["template"]["components"][0]["parameters"][0]["text"]
    assert text_units(text) <= 1024 and text.endswith("…")


@pytest.mark.parametrize(("name", "language"), [("Reminder", "en"), ("reminder", "english")])
def test_template_arguments_are_checked(name: str, language: str) -> None:
    with pytest.raises(CodecError):
        meta_template_payload(TO, name, language, "x")

"""Twilio messaging codec: each documented webhook shape, each kind of bad input,
and the send parameters (numbered choices, splitting at 1,600 characters)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from channels.whatsapp.choices import reply_id
from channels.whatsapp.models import InboundMessage, OutboundMessage, StatusUpdate
from channels.whatsapp.twilio_codec import (
    TWILIO_BODY_LIMIT,
    CodecError,
    account_sid,
    clean_text,
    parse_twilio,
    shorten,
    split_text,
    text_units,
    twilio_send_params,
    twilio_template_params,
)
from engine.messages import QuickReply

NOW = 1_764_400_000.5
SID = "SM1f0e8ae6ade43cb3c0ce4525424e404f"
CUSTOMER = "+14155550123"
BUSINESS = "+14155238886"

# The parameters of Twilio's "Twilio's request to your incoming message Webhook
# URL" page, for a WhatsApp message.
WHATSAPP_TEXT = {
    "SmsMessageSid": SID,
    "NumMedia": "0",
    "ProfileName": "Ana María",
    "MessageType": "text",
    "SmsSid": SID,
    "WaId": "14155550123",
    "SmsStatus": "received",
    "Body": "Hola, ¿tenéis cita el martes?",
    "To": f"whatsapp:{BUSINESS}",
    "MessagingServiceSid": "MG9752274e9e519418a7406176694466fa",
    "NumSegments": "1",
    "ReferralNumMedia": "0",
    "MessageSid": SID,
    "AccountSid": "ACae9aa5bde1e2a2a1f8ad2bd85b5e9a4f",
    "From": f"whatsapp:{CUSTOMER}",
    "ApiVersion": "2010-04-01",
}
SMS_TEXT = {
    "ToCountry": "US",
    "ToState": "CA",
    "SmsMessageSid": SID,
    "NumMedia": "0",
    "ToCity": "SAN FRANCISCO",
    "FromZip": "94105",
    "SmsSid": SID,
    "FromState": "CA",
    "SmsStatus": "received",
    "FromCity": "SAN FRANCISCO",
    "Body": "Can I book a cleaning?",
    "FromCountry": "US",
    "To": BUSINESS,
    "ToZip": "94105",
    "NumSegments": "1",
    "MessageSid": SID,
    "AccountSid": "ACae9aa5bde1e2a2a1f8ad2bd85b5e9a4f",
    "From": CUSTOMER,
    "ApiVersion": "2010-04-01",
}


def wa(**changes: str) -> dict[str, str]:
    return {**WHATSAPP_TEXT, **changes}


def inbound(form: dict[str, str], channel: Any = "whatsapp") -> InboundMessage:
    result = parse_twilio(form, "bright-smile", channel, now=NOW)
    assert isinstance(result, InboundMessage)
    return result


# --- inbound -------------------------------------------------------------------------


def test_whatsapp_text() -> None:
    msg = inbound(WHATSAPP_TEXT)
    assert msg == InboundMessage(
        provider="twilio",
        channel="whatsapp",
        client_id="bright-smile",
        message_id=SID,
        sender=CUSTOMER,
        kind="text",
        text="Hola, ¿tenéis cita el martes?",
        wa_id="14155550123",
        profile_name="Ana María",
        business=BUSINESS,
        timestamp=NOW,
    )


def test_sms_text_has_no_whatsapp_fields() -> None:
    msg = inbound({**SMS_TEXT, "ProfileName": "x", "WaId": "1"}, "sms")
    assert (msg.channel, msg.sender, msg.business, msg.kind) == ("sms", CUSTOMER, BUSINESS, "text")
    assert msg.text == "Can I book a cleaning?"
    assert msg.wa_id is None and msg.profile_name is None


def test_sms_message_sid_alone_is_enough() -> None:
    form = {k: v for k, v in SMS_TEXT.items() if k != "MessageSid"}
    assert inbound(form, "sms").message_id == SID


def test_unknown_fields_are_ignored() -> None:
    assert inbound(wa(SomethingNew="1", ChannelMetadata='{"x": 1}')).text.startswith("Hola")


def test_quick_reply_button() -> None:
    payload = reply_id(1, "yes")
    msg = inbound(wa(Body="Yes, book it", ButtonText="Yes, book it", ButtonPayload=payload))
    assert (msg.kind, msg.text, msg.choice_id) == ("button", "Yes, book it", payload)


def test_button_text_without_payload() -> None:
    msg = inbound(wa(Body="Yes", ButtonText="Yes"))
    assert (msg.kind, msg.text, msg.choice_id) == ("button", "Yes", None)


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("audio/ogg", "audio"),
        ("audio/ogg; codecs=opus", "audio"),
        ("image/jpeg", "image"),
        ("image/webp", "image"),
        ("video/mp4", "video"),
        ("application/pdf", "document"),
        ("text/vcard", "contacts"),
        ("", "document"),
    ],
)
def test_media_kind_from_content_type(content_type: str, kind: str) -> None:
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
    msg = inbound(
        wa(Body="", NumMedia="1", MediaUrl0=url, MediaContentType0=content_type, MessageType="x")
    )
    assert msg.kind == kind
    assert msg.media[0].ref == url and msg.media[0].content_type == content_type


def test_several_attachments_keep_order_and_caption() -> None:
    msg = inbound(
        wa(
            Body="my x-rays",
            NumMedia="2",
            MediaUrl0="https://m/0",
            MediaContentType0="image/png",
            MediaUrl1="https://m/1",
            MediaContentType1="application/pdf",
        )
    )
    assert msg.kind == "image" and msg.text == "my x-rays"
    assert [m.ref for m in msg.media] == ["https://m/0", "https://m/1"]


def test_num_media_is_capped_and_missing_urls_skipped() -> None:
    form = wa(Body="", NumMedia="50", MediaUrl1="https://m/1", MediaUrl12="https://m/12")
    assert [m.ref for m in inbound(form).media] == ["https://m/1"]


def test_location_with_label_and_address() -> None:
    msg = inbound(
        wa(
            Body="",
            Latitude="40.4168",
            Longitude="-3.7038",
            Label="Clínica Sol",
            Address="Calle Mayor 1, Madrid",
        )
    )
    assert (msg.kind, msg.text) == ("location", "Location: Clínica Sol, Calle Mayor 1, Madrid")


def test_location_coordinates_only() -> None:
    msg = inbound(wa(Body="", Latitude="37.7749", Longitude="-122.4194"))
    assert msg.text == "Location: 37.7749,-122.419"


@pytest.mark.parametrize(("lat", "lng"), [("north", "1"), ("91", "0"), ("0", "181")])
def test_bad_coordinates(lat: str, lng: str) -> None:
    with pytest.raises(CodecError) as err:
        inbound(wa(Latitude=lat, Longitude=lng))
    assert "north" not in str(err.value)


def test_reply_context() -> None:
    msg = inbound(wa(OriginalRepliedMessageSid="SM00000000000000000000000000000001"))
    assert msg.reply_to == "SM00000000000000000000000000000001"


def test_nothing_at_all_is_unsupported() -> None:
    msg = inbound(wa(Body="", MessageType="unsupported"))
    assert (msg.kind, msg.text) == ("unsupported", "")


def test_names_and_text_in_any_script_survive() -> None:
    msg = inbound(wa(ProfileName="李小龍 🐉", Body="مرحبا، أريد موعدًا  \n"))
    assert msg.profile_name == "李小龍 🐉"
    assert msg.text == "مرحبا، أريد موعدًا"


def test_lone_surrogates_and_controls_are_cleaned() -> None:
    msg = inbound(wa(Body="hi \ud800 there\x00\x07", ProfileName="Ann\udfff"))
    assert msg.text == "hi \ufffd there"
    assert msg.profile_name == "Ann\ufffd"
    msg.text.encode("utf-8")  # storable


def test_very_long_text_is_kept_whole() -> None:
    body = "é" * 50_000
    assert inbound(wa(Body=body)).text == body


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"MessageSid": "", "SmsMessageSid": ""}, "missing MessageSid"),
        ({"MessageSid": "SM 1", "SmsMessageSid": ""}, "MessageSid is malformed"),
        ({"From": ""}, "missing From"),
        ({"From": CUSTOMER}, "From is not a whatsapp: address"),
        ({"From": "whatsapp:14155550123"}, "From is not an E.164 number"),
        ({"From": "whatsapp:+0123456789"}, "From is not an E.164 number"),
        ({"From": "whatsapp:+1415555012345678"}, "From is not an E.164 number"),
        ({"From": "whatsapp:+١٤١٥٥٥٥٠١٢٣"}, "From is not an E.164 number"),
        ({"To": "whatsapp:nope"}, "To is not an E.164 number"),
        ({"NumMedia": "two"}, "NumMedia is not a number"),
        ({"NumMedia": "-1"}, "NumMedia is negative"),
    ],
)
def test_malformed_forms(changes: dict[str, str], reason: str) -> None:
    with pytest.raises(CodecError) as err:
        inbound(wa(**changes))
    assert err.value.reason == reason
    assert "14155550123" not in str(err.value)


def test_whatsapp_address_on_the_sms_webhook_is_refused() -> None:
    with pytest.raises(CodecError, match="SMS channel"):
        inbound(WHATSAPP_TEXT, "sms")


def test_account_sid() -> None:
    assert account_sid(WHATSAPP_TEXT) == "ACae9aa5bde1e2a2a1f8ad2bd85b5e9a4f"
    assert account_sid({}) is None


# --- status callbacks ----------------------------------------------------------------

STATUS = {
    "AccountSid": "ACae9aa5bde1e2a2a1f8ad2bd85b5e9a4f",
    "From": f"whatsapp:{BUSINESS}",
    "MessageSid": SID,
    "MessageStatus": "delivered",
    "SmsSid": SID,
    "SmsStatus": "delivered",
    "To": f"whatsapp:{CUSTOMER}",
    "ApiVersion": "2010-04-01",
    "ChannelPrefix": "whatsapp",
}


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("queued", "queued"),
        ("sending", "queued"),
        ("accepted", "queued"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("undelivered", "failed"),
        ("failed", "failed"),
    ],
)
def test_status_callbacks(raw: str, status: str) -> None:
    update = parse_twilio({**STATUS, "MessageStatus": raw}, "c", "whatsapp", now=NOW)
    assert isinstance(update, StatusUpdate)
    assert (update.provider, update.message_id, update.status) == ("twilio", SID, status)
    assert update.recipient == CUSTOMER and update.timestamp == NOW


def test_failed_status_carries_the_error() -> None:
    form = {**STATUS, "MessageStatus": "undelivered", "ErrorCode": "63016"}
    form["ErrorMessage"] = "Failed to send freeform message outside the window"
    update = parse_twilio(form, "c", "whatsapp", now=NOW)
    assert isinstance(update, StatusUpdate)
    assert (update.status, update.error_code) == ("failed", "63016")
    assert update.error_title == "Failed to send freeform message outside the window"


def test_sms_status_only_legacy_field() -> None:
    form = {"MessageSid": SID, "SmsStatus": "sent", "To": CUSTOMER, "From": BUSINESS}
    update = parse_twilio(form, "c", "sms", now=NOW)
    assert isinstance(update, StatusUpdate) and update.status == "sent"


def test_unknown_status_is_an_error() -> None:
    with pytest.raises(CodecError, match="unknown MessageStatus"):
        parse_twilio({**STATUS, "MessageStatus": "teleported"}, "c", "whatsapp", now=NOW)


def test_incoming_message_with_sms_status_received_is_a_message() -> None:
    assert isinstance(parse_twilio(WHATSAPP_TEXT, "c", "whatsapp", now=NOW), InboundMessage)


# --- sending -------------------------------------------------------------------------

CHOICES = (
    QuickReply(title="Yes, book it", value="yes"),
    QuickReply(title="Change something", value="change"),
)


def test_plain_whatsapp_text() -> None:
    params = twilio_send_params(
        OutboundMessage("See you Tuesday!"), channel="whatsapp", to=CUSTOMER, from_=BUSINESS
    )
    assert params == [
        {"To": f"whatsapp:{CUSTOMER}", "From": f"whatsapp:{BUSINESS}", "Body": "See you Tuesday!"}
    ]


def test_sms_has_no_prefix_and_accepts_prefixed_input() -> None:
    params = twilio_send_params(
        OutboundMessage("Hi"), channel="sms", to=f"whatsapp:{CUSTOMER}", from_=BUSINESS
    )
    assert params == [{"To": CUSTOMER, "From": BUSINESS, "Body": "Hi"}]


def test_messaging_service_sender() -> None:
    mg = "MG9752274e9e519418a7406176694466fa"
    (params,) = twilio_send_params(OutboundMessage("Hi"), channel="sms", to=CUSTOMER, from_=mg)
    assert params["MessagingServiceSid"] == mg and "From" not in params


def test_quick_replies_as_numbered_list() -> None:
    (params,) = twilio_send_params(
        OutboundMessage("Shall I book Tuesday 10:00?", CHOICES),
        channel="whatsapp",
        to=CUSTOMER,
        from_=BUSINESS,
    )
    assert params["Body"] == (
        "Shall I book Tuesday 10:00?\n\n1. Yes, book it\n2. Change something\n\n"
        "Reply with a number."
    )


def test_hint_in_the_clients_language() -> None:
    (params,) = twilio_send_params(
        OutboundMessage("¿Reservo?", CHOICES),
        channel="sms",
        to=CUSTOMER,
        from_=BUSINESS,
        hint="Responde con un número.",
    )
    assert params["Body"].endswith("2. Change something\n\nResponde con un número.")


def test_nothing_to_send() -> None:
    assert (
        twilio_send_params(OutboundMessage("  "), channel="sms", to=CUSTOMER, from_=BUSINESS) == []
    )


def test_long_text_splits_at_sentences_under_the_limit() -> None:
    sentence = "Our clinic opens at nine and closes at six on weekdays. "
    text = sentence * 70  # ~3,900 characters
    parts = twilio_send_params(OutboundMessage(text), channel="sms", to=CUSTOMER, from_=BUSINESS)
    bodies = [p["Body"] for p in parts]
    assert len(bodies) == 3
    assert all(text_units(b) <= TWILIO_BODY_LIMIT for b in bodies)
    assert all(b.endswith("weekdays.") for b in bodies)
    assert " ".join(bodies) == text.strip()


def test_long_text_with_choices_keeps_the_list_together() -> None:
    text = "Here is everything you need to know about the visit. " * 40
    parts = twilio_send_params(
        OutboundMessage(text, CHOICES), channel="whatsapp", to=CUSTOMER, from_=BUSINESS
    )
    assert len(parts) == 2
    assert parts[-1]["Body"].endswith(
        "1. Yes, book it\n2. Change something\n\nReply with a number."
    )
    assert "1. Yes, book it" not in parts[0]["Body"]


@pytest.mark.parametrize(("to", "from_"), [("14155550123", BUSINESS), (CUSTOMER, "Clinic")])
def test_bad_send_numbers(to: str, from_: str) -> None:
    with pytest.raises(CodecError):
        twilio_send_params(OutboundMessage("Hi"), channel="whatsapp", to=to, from_=from_)


def test_template_params() -> None:
    sid = "HXb5b62575e6e4ff6129ad7c8efe1f983e"
    params = twilio_template_params(CUSTOMER, BUSINESS, sid, "Your visit:\n\tTuesday  10:00")
    assert params["To"] == f"whatsapp:{CUSTOMER}" and params["From"] == f"whatsapp:{BUSINESS}"
    assert params["ContentSid"] == sid
    assert json.loads(params["ContentVariables"]) == {"1": "Your visit: Tuesday 10:00"}


def test_template_needs_a_content_sid() -> None:
    with pytest.raises(CodecError, match="content_sid"):
        twilio_template_params(CUSTOMER, BUSINESS, "welcome", "hi")


# --- text helpers --------------------------------------------------------------------


def test_split_prefers_paragraphs_then_lines() -> None:
    text = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 30
    assert split_text(text, 80) == ["a" * 60, "b" * 30 + "\n" + "c" * 30]


def test_split_at_words_when_no_sentence_ends() -> None:
    text = " ".join(["palabra"] * 100)
    parts = split_text(text, 50)
    assert all(len(p) <= 50 and not p.startswith(" ") for p in parts)
    assert " ".join(parts) == text


def test_split_does_not_cut_after_a_list_number() -> None:
    text = "x" * 30 + " 1. Yes please do it"
    assert split_text(text, 40) == ["x" * 30 + " 1. Yes", "please do it"]


def test_split_cjk_sentences() -> None:
    text = "予約は火曜日です。" * 10
    parts = split_text(text, 40)
    assert all(p.endswith("。") for p in parts) and "".join(parts) == text


def test_split_a_word_longer_than_the_limit() -> None:
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_split_counts_emoji_as_two_and_keeps_them_whole() -> None:
    text = "👍" * 10  # 20 UTF-16 units
    parts = split_text(text, 5)
    assert parts == ["👍👍", "👍👍", "👍👍", "👍👍", "👍👍"]


def test_split_keeps_combining_marks_and_zwj_sequences() -> None:
    family = "👩\u200d👩\u200d👧"
    parts = split_text(family * 3, 9)
    assert "".join(parts) == family * 3
    assert all(not p.startswith("\u200d") for p in parts)
    accents = "e\u0301" * 10
    assert all(not p.startswith("\u0301") for p in split_text(accents, 5))


def test_split_empty() -> None:
    assert split_text("   \n ", 10) == []


def test_shorten() -> None:
    assert shorten("Short", 20) == ("Short", "")
    assert shorten("Tuesday 10:00 with Dr. Smith", 24) == ("Tuesday 10:00 with Dr.…", "Smith")
    head, rest = shorten("Supercalifragilisticexpialidocious", 10)
    assert head == "Supercali…" and rest == "fragilisticexpialidocious"


def test_clean_text() -> None:
    assert clean_text("a\r\nb\rc\x00\ud83d") == "a\nb\nc\ufffd"

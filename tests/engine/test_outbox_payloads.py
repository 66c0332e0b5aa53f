"""Outbox payloads (``engine.payloads``): rows written before the typed payloads
still parse, and what a row stores keeps its keys and meaning."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.payloads import (
    CalendarPush,
    CallAction,
    EscalationNotice,
    LeadPush,
    MetaMessage,
    PayloadError,
    ReadReceipt,
    TwilioMessage,
    UnreadablePayload,
    parse_payload,
    payload_kinds,
    read_payload,
    stored_payload,
)
from engine.tools.crm import Lead, new_record
from engine.tools.notify import Escalation

CUSTOMER = "+14155550134"
ESCALATION = Escalation(
    client_id="spa-del-sol",
    client_name="Spa del Sol",
    channel="whatsapp",
    session_id="s-1",
    reason="asked for a person",
    who="Иван Петров",
    contact=CUSTOMER,
    email=None,
    fields={"service": "Manicure"},
    transcript=(("user", "Can I talk to someone?"),),
    created_at=datetime(2026, 11, 23, 10, 30, tzinfo=UTC),
    escalation_id="esc-1",
)
RECORD = new_record(
    Lead(
        "spa-del-sol",
        "web",
        "s-1",
        {"name": "Maria Lopez", "phone": CUSTOMER, "email": "maria@example.com"},
        booking_id="b-1",
        service="Manicure",
        start="2026-11-23T10:30:00-08:00",
        end="2026-11-23T11:00:00-08:00",
    ),
    "lead-1",
    {"name": "full_name"},
    False,
)
START = datetime(2026, 11, 23, 10, 30, tzinfo=timezone(timedelta(hours=-8)))

# Each kind's payload exactly as the code before the typed payloads wrote it.
WRITTEN_BEFORE: dict[str, dict[str, object]] = {
    "notify.slack": {"escalation": ESCALATION.to_json()},
    "notify.email": {"escalation": ESCALATION.to_json()},
    "twilio.call": {
        "call_sid": "CA1",
        "action": "transfer",
        "target": "+14155550100",
        "expires_ts": 1_800_000_000.5,
    },
    **{f"crm.{vendor}": RECORD.as_json() for vendor in ("hubspot", "pipedrive", "airtable")},
    "crm.webhook": RECORD.as_json(),
    "message.twilio": {
        "channel": "whatsapp",
        "to": CUSTOMER,
        "from": "whatsapp:+14155550199",
        "parts": [{"Body": "See you Monday"}],
        "text": "See you Monday",
    },
    "message.meta": {
        "to": CUSTOMER,
        "phone_number_id": "1098",
        "parts": [{"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text"}],
        "text": "See you Monday",
    },
    "read.meta": {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.IN1",
        "typing_indicator": {"type": "text"},
        "phone_number_id": "1098",
    },
    "calendar.google": {
        "booking_id": "b-1",
        "start": START.isoformat(),
        "end": (START + timedelta(minutes=30)).isoformat(),
        "service": "Manicure",
        "name": "Maria Lopez",
    },
}
WRITTEN_BEFORE["calendar.calendly"] = WRITTEN_BEFORE["calendar.google"]


def test_every_kind_has_a_row_written_before() -> None:
    assert sorted(WRITTEN_BEFORE) == list(payload_kinds())


@pytest.mark.parametrize("kind", sorted(WRITTEN_BEFORE))
def test_a_row_written_before_parses_and_is_stored_with_the_same_meaning(kind: str) -> None:
    before = WRITTEN_BEFORE[kind]
    payload = read_payload(kind, json.dumps(before, ensure_ascii=False))
    assert not isinstance(payload, UnreadablePayload), payload
    assert payload.kind == kind
    stored = stored_payload(payload)
    if kind == "read.meta":  # Meta's request body is rebuilt when sending
        assert stored == {"message_id": "wamid.IN1", "phone_number_id": "1098"}
    elif kind == "message.meta":  # the channel, implicit before, is written out
        assert stored == {**before, "channel": "whatsapp"}
    else:
        assert stored == before
    assert read_payload(kind, json.dumps(stored)) == payload  # and back


def test_the_payloads_are_typed() -> None:
    notice = parse_payload("notify.email", WRITTEN_BEFORE["notify.email"])
    assert isinstance(notice, EscalationNotice) and notice.escalation == ESCALATION
    call = parse_payload("twilio.call", WRITTEN_BEFORE["twilio.call"])
    assert isinstance(call, CallAction) and call.action == "transfer"
    lead = parse_payload("crm.hubspot", WRITTEN_BEFORE["crm.hubspot"])
    assert isinstance(lead, LeadPush)
    assert lead.pushed_properties() == {
        "full_name": "Maria Lopez",
        "phone": CUSTOMER,
        "email": "maria@example.com",
    }
    sms = parse_payload("message.twilio", {**WRITTEN_BEFORE["message.twilio"], "to": "whatsapp:+1"})
    assert isinstance(sms, TwilioMessage) and sms.to == "+1"  # the channel prefix dropped
    assert sms.from_ == "whatsapp:+14155550199"
    assert isinstance(parse_payload("message.meta", WRITTEN_BEFORE["message.meta"]), MetaMessage)
    assert isinstance(parse_payload("read.meta", WRITTEN_BEFORE["read.meta"]), ReadReceipt)
    push = parse_payload("calendar.calendly", WRITTEN_BEFORE["calendar.calendly"])
    assert isinstance(push, CalendarPush) and push.start == START
    with pytest.raises(ValueError, match="frozen"):
        push.booking_id = "b-2"  # type: ignore[misc]


def test_a_lead_push_stores_the_lead_record_as_the_ledger_has_it() -> None:
    push = LeadPush.model_validate({**RECORD.as_json(), "kind": "crm.webhook"})
    assert json.dumps(stored_payload(push)) == json.dumps(RECORD.as_json())  # same key order


@pytest.mark.parametrize(
    ("kind", "data", "problem"),
    [
        ("twilio.call", {"call_sid": "CA1", "action": "forward"}, "action: Input should be"),
        ("twilio.call", {"call_sid": "CA1", "action": "transfer"}, "needs a target number"),
        ("notify.slack", {"escalation": "{}"}, "escalation: escalation JSON: unsupported"),
        ("message.twilio", {"to": "4155550134", "parts": [{}]}, "to: must be a number in E.164"),
        ("message.meta", {**WRITTEN_BEFORE["message.twilio"], "channel": "sms"}, "channel"),
        ("crm.airtable", {"lead_id": "x"}, "properties: Field required"),
        ("calendar.google", {"booking_id": "b", "start": "10:30", "end": "x"}, "start:"),
        ("notify.pager", {}, "no payload type has this kind"),
    ],
)
def test_a_payload_that_does_not_parse_names_the_kind_and_the_problem(
    kind: str, data: dict[str, object], problem: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_payload(kind, data)
    assert str(caught.value).startswith(f"payload of kind {kind!r} does not parse: ")
    assert problem in caught.value.problem
    assert "4155550134" not in str(caught.value)  # never the values


def test_a_stored_payload_that_is_not_an_object_is_unreadable_not_an_error() -> None:
    for raw in ("[1, 2]", "null", "{", ""):
        payload = read_payload("twilio.call", raw)
        assert isinstance(payload, UnreadablePayload) and payload.raw == raw
        assert payload.error.startswith("payload of kind 'twilio.call' does not parse: ")

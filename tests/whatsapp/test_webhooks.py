"""The messaging webhooks end to end: the gateway under uvicorn, real-format
Twilio and Meta webhooks with correct and forged signatures, and local stubs
of Twilio's Messages API and Meta's Graph API counting what the gateway
sends — every message answered exactly once, forged requests refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from twilio.request_validator import RequestValidator
from whatsapp.vendor_stubs import MetaGraphStub, TwilioMessagingStub

CLIENT = "spa-del-sol"
PUBLIC = "https://gw.example.test"
SID, TOKEN = "AC" + "1" * 32, "twilio-auth-token"
APP_SECRET, VERIFY, ACCESS = "meta-app-secret", "meta-verify-token", "meta-access-token"
BUSINESS = "+14155550123"
ANA = "+14155550142"
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))


@pytest.fixture
def stubs() -> Iterator[tuple[TwilioMessagingStub, MetaGraphStub]]:
    twilio = TwilioMessagingStub({SID: TOKEN}).start()
    meta = MetaGraphStub({ACCESS}).start()
    try:
        yield twilio, meta
    finally:
        twilio.stop()
        meta.stop()


@pytest.fixture
def gateway(
    running_gateway: Any,
    clients_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    stubs: tuple[TwilioMessagingStub, MetaGraphStub],
) -> Iterator[str]:
    for name, value in {
        "SPA_TWILIO_ACCOUNT_SID": SID,
        "SPA_TWILIO_AUTH_TOKEN": TOKEN,
        "SPA_META_APP_SECRET": APP_SECRET,
        "SPA_META_VERIFY_TOKEN": VERIFY,
        "SPA_META_ACCESS_TOKEN": ACCESS,
    }.items():
        monkeypatch.setenv(name, value)
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    anchor = "  whatsapp:\n    purpose: auto\n"
    assert anchor in text
    config.write_text(text.replace(anchor, anchor + "    burst_window_ms: 300\n"), encoding="utf-8")
    twilio, meta = stubs
    with running_gateway(
        GATEWAY_PUBLIC_URL=PUBLIC,
        TWILIO_BASE_URL=twilio.url,
        META_GRAPH_BASE_URL=meta.url,
        GATEWAY_MESSAGING_POLL_S=0.1,
        GATEWAY_OUTBOX_POLL_S=0.1,
        clock=lambda: NOW,
    ) as gw:
        yield gw.url


_sids = iter(range(10**6))


def sid() -> str:
    return f"SM{next(_sids):032x}"


def twilio_form(
    body: str, message_sid: str, *, channel: str = "whatsapp", **extra: str
) -> dict[str, str]:
    prefix = "whatsapp:" if channel == "whatsapp" else ""
    form = {
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "AccountSid": SID,
        "From": f"{prefix}{ANA}",
        "To": f"{prefix}{BUSINESS}",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }
    if channel == "whatsapp":
        form.update(ProfileName="Ana", WaId=ANA.lstrip("+"))
    form.update(extra)
    return form


async def post_twilio(
    http: httpx.AsyncClient,
    form: dict[str, str],
    *,
    channel: str = "whatsapp",
    sign: str | None = None,
) -> httpx.Response:
    path = f"/twilio/{channel}/{CLIENT}"
    signature = sign or RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    return await http.post(path, data=form, headers={"X-Twilio-Signature": signature})


def meta_body(*messages: dict[str, Any], statuses: list[dict[str, Any]] | None = None) -> bytes:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": BUSINESS.lstrip("+"),
            "phone_number_id": "109876543210",
        },
    }
    if messages:
        value["contacts"] = [{"profile": {"name": "Ana"}, "wa_id": ANA.lstrip("+")}]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = statuses
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload).encode()


def meta_text(wamid: str, text: str) -> dict[str, Any]:
    return {
        "from": ANA.lstrip("+"),
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }


async def post_meta(
    http: httpx.AsyncClient, body: bytes, *, secret: str = APP_SECRET
) -> httpx.Response:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return await http.post(
        f"/meta/whatsapp/{CLIENT}",
        content=body,
        headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
    )


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def settle() -> None:
    """Long enough for a duplicate reply to show up if there were one."""
    await asyncio.sleep(1.5)


async def test_a_twilio_whatsapp_booking_answers_each_message_once_through_a_retry_storm(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    twilio, _meta = stubs
    script = [
        "I'd like to book a deep tissue massage",
        "Maria Lopez",
        "415 555 0134",
        "maria@example.com",
        "Friday at 2pm",
        "yes",
    ]
    async with httpx.AsyncClient(base_url=gateway) as http:
        for n, text in enumerate(script, start=1):
            form = twilio_form(text, sid())
            first = await post_twilio(http, form)
            assert first.status_code == 200 and "<Response" in first.text
            # Twilio retries: 4 more deliveries of the same message, at once and spaced
            retries = await asyncio.gather(*(post_twilio(http, form) for _ in range(2)))
            assert all(r.status_code == 200 for r in retries)
            await until(lambda n=n: len(twilio.messages) >= n)
            for _ in range(2):
                assert (await post_twilio(http, form)).status_code == 200
        await settle()
        leads = (
            await http.get(
                "/admin/api/leads",
                params={"client_id": CLIENT},
                headers={"Authorization": "Bearer test-admin-token"},
            )
        ).json()
    assert len(twilio.messages) == len(script)  # one reply per message, none twice
    assert all(m.form["To"] == f"whatsapp:{ANA}" for m in twilio.messages)
    assert all(m.form["From"] == f"whatsapp:{BUSINESS}" for m in twilio.messages)
    assert "booked" in twilio.messages[-1].form["Body"]
    (lead,) = leads
    assert lead["fields"]["phone"] == "+14155550134" and lead["fields"]["name"] == "Maria Lopez"


async def test_forged_or_unsigned_webhooks_are_refused_and_nothing_is_sent(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    twilio, meta = stubs
    async with httpx.AsyncClient(base_url=gateway) as http:
        form = twilio_form("hello", sid())
        assert (await post_twilio(http, form, sign="bm90IGEgc2lnbmF0dXJl")).status_code == 403
        assert (await http.post(f"/twilio/whatsapp/{CLIENT}", data=form)).status_code == 403
        body = meta_body(meta_text("wamid.FORGED", "hello"))
        assert (await post_meta(http, body, secret="wrong")).status_code == 403
        assert (await http.post(f"/meta/whatsapp/{CLIENT}", content=body)).status_code == 403
        # the genuine message still goes through
        assert (await post_twilio(http, twilio_form("hello", sid()))).status_code == 200
        await until(lambda: len(twilio.messages) == 1)
        await settle()
    assert len(twilio.messages) == 1 and meta.messages == []


async def test_a_burst_is_answered_as_one_turn(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    twilio, _meta = stubs
    async with httpx.AsyncClient(base_url=gateway) as http:
        for text in ("Hi, I'm Maria Lopez", "I'd like a deep tissue massage", "Friday at 2pm"):
            assert (await post_twilio(http, twilio_form(text, sid()))).status_code == 200
        await until(lambda: len(twilio.messages) >= 1)
        await settle()
    (reply,) = twilio.messages
    body = reply.form["Body"]
    assert "Maria" in body or "phone" in body.lower()  # all three were read in one turn


async def test_meta_verification_messages_buttons_read_receipts_and_statuses(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    _twilio, meta = stubs
    async with httpx.AsyncClient(base_url=gateway) as http:
        ok = await http.get(
            f"/meta/whatsapp/{CLIENT}",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY,
                "hub.challenge": "1158201444",
            },
        )
        assert ok.status_code == 200 and ok.text == "1158201444"
        bad = await http.get(
            f"/meta/whatsapp/{CLIENT}",
            params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        )
        assert bad.status_code == 403
        body = meta_body(
            meta_text(
                "wamid.A1",
                "I'm Ana Ruiz, a swedish massage Friday at 11am, ana@example.com, 415 555 0142",
            )
        )
        assert (await post_meta(http, body)).status_code == 200
        assert (await post_meta(http, body)).status_code == 200  # Meta's retry
        await until(lambda: len(meta.messages) >= 1)
        first = meta.messages[0].body
        # the summary asks to confirm: its choices are interactive buttons
        assert first["type"] == "interactive" and first["interactive"]["type"] == "button"
        buttons = first["interactive"]["action"]["buttons"]
        yes = next(b for b in buttons if "yes" in b["reply"]["title"].lower())
        tap = {
            "from": ANA.lstrip("+"),
            "id": "wamid.A2",
            "timestamp": str(int(time.time())),
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": yes["reply"]},
        }
        assert (await post_meta(http, meta_body(tap))).status_code == 200
        await until(lambda: len(meta.messages) >= 2)
        wamid = next(iter(meta.messages)).wamid
        status = {
            "id": wamid,
            "status": "delivered",
            "timestamp": str(int(time.time())),
            "recipient_id": ANA.lstrip("+"),
        }
        assert (await post_meta(http, meta_body(statuses=[status]))).status_code == 200
        await settle()
        failed = (
            await http.get(
                "/admin/api/messages",
                params={"client_id": CLIENT},
                headers={"Authorization": "Bearer test-admin-token"},
            )
        ).json()
    assert len(meta.messages) == 2
    text = json.dumps(meta.messages[1].body)
    assert "booked" in text.lower()
    assert meta.reads and meta.reads[0]["message_id"] in ("wamid.A1", "wamid.A2")
    assert any(m.get("status") == "delivered" for m in failed)


async def test_sms_numbered_choices_map_back(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    twilio, _meta = stubs
    async with httpx.AsyncClient(base_url=gateway) as http:
        first = twilio_form(
            "I'm Ana Ruiz, a swedish massage Friday at 11am, ana@example.com, 415 555 0142",
            sid(),
            channel="sms",
        )
        assert (await post_twilio(http, first, channel="sms")).status_code == 200
        await until(lambda: len(twilio.messages) >= 1)
        summary = twilio.messages[0].form["Body"]
        assert "1." in summary and "2." in summary  # the choices as a numbered list
        assert twilio.messages[0].form["To"] == ANA  # plain SMS: no whatsapp: prefix
        assert (
            await post_twilio(http, twilio_form("one", sid(), channel="sms"), channel="sms")
        ).status_code == 200
        await until(lambda: len(twilio.messages) >= 2)
    assert "booked" in twilio.messages[1].form["Body"]


async def test_bad_input_gets_a_4xx_or_a_polite_reply_never_a_500(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    twilio, meta = stubs
    async with httpx.AsyncClient(base_url=gateway) as http:
        no_sid = twilio_form("hi", "")
        no_sid.pop("MessageSid")
        no_sid.pop("SmsMessageSid")
        assert (await post_twilio(http, no_sid)).status_code == 400
        not_json = b"{not json"
        assert (await post_meta(http, not_json)).status_code == 400
        deep = b"[" * 100_000 + b"]" * 100_000
        assert (await post_meta(http, deep)).status_code == 400
        odd = {
            "from": ANA.lstrip("+"),
            "id": "wamid.ODD",
            "timestamp": str(int(time.time())),
            "type": "image",
            "image": {"id": "1234567890", "mime_type": "image/jpeg"},
        }
        assert (await post_meta(http, meta_body(odd))).status_code == 200
        await until(lambda: len(meta.messages) >= 1)
        unknown = await http.post("/twilio/whatsapp/no-such-client", data=twilio_form("hi", sid()))
        assert unknown.status_code == 404
        # other conversations carry on
        assert (await post_twilio(http, twilio_form("hello", sid()))).status_code == 200
        await until(lambda: len(twilio.messages) >= 1)
    assert "text and voice" in json.dumps(meta.messages[0].body)


async def test_a_staff_reply_reaches_the_customer_s_whatsapp_once(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    twilio, _meta = stubs
    admin = {"Authorization": "Bearer test-admin-token"}
    async with httpx.AsyncClient(base_url=gateway) as http:
        assert (
            await post_twilio(http, twilio_form("can I talk to a person?", sid()))
        ).status_code == 200
        await until(lambda: len(twilio.messages) >= 1)
        path = f"/admin/api/conversations/{CLIENT}:whatsapp:{ANA}/reply"
        body = {"text": "Hi Ana, this is Sofia from the front desk.", "id": "r-1"}
        first = await http.post(path, json=body, headers=admin)
        again = await http.post(path, json=body, headers=admin)  # a retried POST
        assert first.status_code == 200 and first.json()["delivery"] == "whatsapp"
        assert again.json()["duplicate"] is True
        await until(lambda: len(twilio.messages) >= 2)
        await settle()
    assert [m.form["Body"] for m in twilio.messages[1:]] == [body["text"]]


async def test_a_voice_note_is_transcribed_and_answered(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub], tmp_path: Path
) -> None:
    from whatsapp.test_media import _espeak_wav, _voice_note

    _twilio, meta = stubs
    pcm, rate = _espeak_wav("I would like to book a massage", tmp_path)
    media_id = meta.add_media(_voice_note(pcm, rate), "audio/ogg; codecs=opus")
    note = {
        "from": ANA.lstrip("+"),
        "id": "wamid.VOICE1",
        "timestamp": str(int(time.time())),
        "type": "audio",
        "audio": {"id": media_id, "mime_type": "audio/ogg; codecs=opus", "voice": True},
    }
    admin = {"Authorization": "Bearer test-admin-token"}
    async with httpx.AsyncClient(base_url=gateway) as http:
        assert (await post_meta(http, meta_body(note))).status_code == 200
        await until(lambda: len(meta.messages) >= 1, timeout_s=60)
        record = (
            await http.get(f"/admin/api/conversations/{CLIENT}:whatsapp:{ANA}", headers=admin)
        ).json()
    heard = record["transcript"][0]["text"].lower()
    assert "book" in heard and "massage" in heard  # the transcript is what the engine read
    reply = json.dumps(meta.messages[0].body).lower()
    assert "name" in reply or "massage" in reply


async def test_an_approval_decision_reaches_the_customer_on_whatsapp(
    running_gateway: Any,
    clients_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    stubs: tuple[TwilioMessagingStub, MetaGraphStub],
) -> None:
    twilio, meta = stubs
    monkeypatch.setenv("SPA_TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("SPA_TWILIO_AUTH_TOKEN", TOKEN)
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    anchor = "    min_notice_hours: 2\n"
    assert anchor in text
    text = text.replace(
        anchor, anchor + "  approval:\n    services: [Deep Tissue Massage]\n    fallback: decline\n"
    )
    config.write_text(
        text.replace(
            "  whatsapp:\n    purpose: auto\n",
            "  whatsapp:\n    purpose: auto\n    burst_window_ms: 0\n",
        ),
        encoding="utf-8",
    )
    admin = {"Authorization": "Bearer test-admin-token"}
    with running_gateway(
        GATEWAY_PUBLIC_URL=PUBLIC,
        TWILIO_BASE_URL=twilio.url,
        META_GRAPH_BASE_URL=meta.url,
        GATEWAY_MESSAGING_POLL_S=0.1,
        GATEWAY_OUTBOX_POLL_S=0.1,
        clock=lambda: NOW,
    ) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            for n, said in enumerate(
                (
                    "I'm Maria Lopez, can I book a deep tissue massage Monday at 2pm? "
                    "maria@example.com, 415 555 0134",
                    "yes",
                ),
                start=1,
            ):
                assert (await post_twilio(http, twilio_form(said, sid()))).status_code == 200
                await until(lambda n=n: len(twilio.messages) >= n)
            assert "confirm" in twilio.messages[-1].form["Body"].lower()
            (pending,) = (
                await http.get(
                    "/admin/api/approvals",
                    params={"client_id": CLIENT, "state": "pending"},
                    headers=admin,
                )
            ).json()
            decided = await http.post(
                f"/admin/api/approvals/{pending['id']}", json={"decision": "approve"}, headers=admin
            )
            assert decided.status_code == 200 and decided.json()["delivery"] == "whatsapp"
            await until(lambda: len(twilio.messages) >= 3)
            await settle()
    assert len(twilio.messages) == 3
    assert "booked" in twilio.messages[-1].form["Body"].lower()


async def test_twilio_status_callbacks_move_the_sent_message_forward(
    gateway: str, stubs: tuple[TwilioMessagingStub, MetaGraphStub]
) -> None:
    twilio, _meta = stubs
    admin = {"Authorization": "Bearer test-admin-token"}
    async with httpx.AsyncClient(base_url=gateway) as http:
        assert (await post_twilio(http, twilio_form("hello", sid()))).status_code == 200
        await until(lambda: len(twilio.messages) >= 1)
        sent = twilio.messages[0]
        assert sent.form.get("StatusCallback") == f"{PUBLIC}/twilio/status/{CLIENT}"
        path = f"/twilio/status/{CLIENT}"
        form = {
            "MessageSid": sent.sid,
            "MessageStatus": "delivered",
            "AccountSid": SID,
            "From": f"whatsapp:{BUSINESS}",
            "To": f"whatsapp:{ANA}",
        }
        forged = await http.post(path, data=form, headers={"X-Twilio-Signature": "x"})
        assert forged.status_code == 403
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
        ok = await http.post(path, data=form, headers={"X-Twilio-Signature": signature})
        assert ok.status_code == 200
        listed = (
            await http.get("/admin/api/messages", params={"client_id": CLIENT}, headers=admin)
        ).json()
    (message,) = [m for m in listed if m["message_id"] == sent.sid]
    assert message["status"] == "delivered"

"""Escalation notices (engine.tools.notify) against real local servers.

Slack: a stub incoming-webhook server (``http.server`` on 127.0.0.1 in a
thread) speaking Slack's wire format: ``200 ok`` for its one webhook path,
``404 no_service`` for any other, and scripted failures (``503``, ``429`` with
``Retry-After``) answered first. Email: an ``aiosmtpd`` SMTP server on
127.0.0.1. Nothing reaches the internet.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from prometheus_client import REGISTRY
from stub_server import StubServer

from engine.errors import ToolError
from engine.tools.notify import DeliveryError, Escalation
from providers.notify.email import EmailNotifier, parse_smtp_url, render_email
from providers.notify.slack import SlackNotifier, render_slack

SECRET_PATH = "/services/T0ABCDEF/B0GHIJKL/s3cr3tW3bh00kT0k3n"


def make_escalation(**overrides: Any) -> Escalation:
    base = Escalation(
        client_id="spa-del-sol",
        client_name="Spa del Sol",
        channel="web",
        session_id="web:7f3a",
        reason="asked for a person",
        who="Иван Петров",
        contact="+14155550123",
        email="ivan@example.com",
        fields={"name": "Иван Петров", "service": "hot stone massage", "time": "Friday 3pm"},
        transcript=(
            ("user", "I want a massage on Friday"),
            ("assistant", "Sure, what time works?"),
            ("user", "3pm, and my friend 王伟 is coming too"),
            ("assistant", "Can I have your phone number?"),
            ("user", "can I just talk to a real person please"),
        ),
        created_at=datetime(2026, 11, 29, 10, 15, tzinfo=timezone(timedelta(hours=1))),
        escalation_id="esc-01HX5Z",
    )
    return replace(base, **overrides)


def slack_payload(esc: Escalation) -> dict[str, Any]:
    payload: dict[str, Any] = render_slack(esc)
    return payload


# --------------------------------------------------------------------------- model


def test_json_round_trip_keeps_every_field() -> None:
    esc = make_escalation()
    text = esc.to_json()
    assert "Иван Петров" in text  # stored readable, not \u-escaped
    again = Escalation.from_json(text)
    assert again == esc
    assert again.created_at.utcoffset() == timedelta(hours=1)
    assert Escalation.from_json(text.encode()) == esc


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected an object"),
        ('{"v": 2}', "unsupported version"),
        ('{"v": 1}', "missing key"),
    ],
)
def test_from_json_rejects_bad_rows(data: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Escalation.from_json(data)


def test_from_json_rejects_a_bad_transcript_without_echoing_it() -> None:
    row = json.loads(make_escalation().to_json())
    row["transcript"] = [["user"]]
    with pytest.raises(ValueError, match=r"\[role, text\] pair") as info:
        Escalation.from_json(json.dumps(row))
    assert "Иван" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"channel": "fax"}, "channel"),
        ({"created_at": datetime(2026, 11, 29, 10, 15)}, "timezone-aware"),
        ({"contact": "415-555-0123"}, "E.164"),
        ({"escalation_id": "has space"}, "escalation_id"),
        ({"escalation_id": ""}, "escalation_id"),
        ({"reason": "  "}, "reason"),
        ({"transcript": (("bot", "hi"),)}, "role"),
    ],
)
def test_escalation_checks_its_fields(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        make_escalation(**overrides)


def test_escalation_copies_the_callers_fields() -> None:
    captured = {"name": "Ann"}
    esc = make_escalation(fields=captured)
    captured["name"] = "changed"
    assert esc.fields == {"name": "Ann"}


# --------------------------------------------------------------------------- Slack rendering


def _block_texts(payload: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [f["text"] for f in block.get("fields", [])]
        texts += [e["text"] for e in block.get("elements", [])]
    return texts


def test_slack_payload_has_header_fields_captured_and_quoted_transcript() -> None:
    payload = slack_payload(make_escalation())
    json.dumps(payload)  # serialisable as is
    blocks = payload["blocks"]
    assert isinstance(blocks, list)
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "context"]
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": "Spa del Sol: customer asked for a person",
        "emoji": True,
    }
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == [
        "*Who*\nИван Петров",
        "*Contact*\n+14155550123\nivan@example.com",
        "*Channel*\nweb chat",
        "*Reason*\nasked for a person",
    ]
    assert "• *service*: hot stone massage" in blocks[2]["text"]["text"]
    transcript = blocks[3]["text"]["text"].split("\n")
    assert transcript[0] == "*Last 5 lines*"
    assert transcript[1] == ">*Customer:* I want a massage on Friday"
    assert transcript[3] == ">*Customer:* 3pm, and my friend 王伟 is coming too"
    assert all(line.startswith(">") for line in transcript[1:])
    assert "esc-01HX5Z" in blocks[4]["elements"][0]["text"]
    assert payload["text"] == "Spa del Sol: customer asked for a person (web chat) - Иван Петров"


def test_slack_escapes_control_characters_in_user_text() -> None:
    esc = make_escalation(
        who="Tom <!channel> & Jerry",
        fields={"note": "<https://evil.example|click me>"},
        transcript=(("user", "hey <@U123> & <!here>\nsecond line"),),
    )
    texts = _block_texts(slack_payload(esc))
    joined = "\n".join(texts)
    assert "*Who*\nTom &lt;!channel&gt; &amp; Jerry" in texts
    assert "&lt;https://evil.example|click me&gt;" in joined
    assert ">*Customer:* hey &lt;@U123&gt; &amp; &lt;!here&gt; second line" in joined
    # no raw control characters left in user-derived text (only the entities)
    assert "<" not in joined and ">*Customer" in joined


def test_slack_clips_to_block_kit_limits_and_keeps_newest_lines() -> None:
    esc = make_escalation(
        client_name="Spa " * 60,
        who="&" * 3000,
        fields={f"field{i}": "&" * 700 for i in range(20)},
        transcript=tuple(("user", f"line {i} " + "&" * 600) for i in range(30)),
    )
    payload = slack_payload(esc)
    blocks = payload["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert all(len(f["text"]) <= 2000 for f in blocks[1]["fields"])
    assert len(blocks[2]["text"]["text"]) <= 3000
    transcript = blocks[3]["text"]["text"]
    assert len(transcript) <= 3000
    assert "(earlier lines left out)" in transcript
    assert "line 29 " in transcript and "line 0 " not in transcript
    # clipping never leaves half an entity behind
    for text in [*_block_texts(payload), str(payload["text"])]:
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text[-40:]


def test_slack_clipping_never_cuts_an_entity_in_half() -> None:
    # Shift the cut point through every offset of a 5-character "&amp;".
    for pad in range(5):
        esc = make_escalation(client_name="Spa" + "x" * pad, who="y" * pad + "&" * 499)
        payload = slack_payload(esc)
        who_field = payload["blocks"][1]["fields"][0]["text"]
        for text in (str(payload["text"]), who_field):
            assert text.endswith("…")
            assert not re.search(r"&(?!amp;|lt;|gt;)", text), (pad, text[-12:])


# --------------------------------------------------------------------------- Slack stub


@dataclass
class SlackStub(StubServer):
    """A Slack incoming webhook on 127.0.0.1: ``POST {SECRET_PATH}`` answers ``200 ok``."""

    methods = ("POST",)

    posted: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    _failures: deque[tuple[int, str, str | None]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return self.url

    @property
    def webhook_url(self) -> str:
        return self.base + SECRET_PATH

    def fail_next(
        self, status: int, body: str, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        with self._lock:
            self._failures.extend([(status, body, retry_after)] * times)

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        with self._lock:
            self.requests += 1
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            status, body, retry_after = failure
            _answer(handler, status, body, retry_after)
        elif handler.path != SECRET_PATH:
            _answer(handler, 404, "no_service")
        elif handler.headers.get("Content-Type") != "application/json":
            _answer(handler, 400, "invalid_payload")
        else:
            payload = json.loads(raw)
            if not isinstance(payload.get("text"), str) or not isinstance(
                payload.get("blocks"), list
            ):
                _answer(handler, 400, "invalid_payload")
                return
            with self._lock:
                self.posted.append(payload)
            _answer(handler, 200, "ok")


def _answer(
    handler: BaseHTTPRequestHandler, status: int, body: str, retry_after: str | None = None
) -> None:
    data = body.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(data)))
    if retry_after is not None:
        handler.send_header("Retry-After", retry_after)
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture
def slack_stub(serve_stub: Any) -> SlackStub:
    return serve_stub(SlackStub())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_slack_503s_are_retryable_then_the_notice_is_posted(slack_stub: SlackStub) -> None:
    slack_stub.fail_next(503, "service unavailable", times=2)
    esc = make_escalation()

    def calls(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "gateway_provider_calls_total",
            {"kind": "notifier", "provider": "slack", "outcome": outcome},
        )
        return value or 0.0

    before = calls("ok"), calls("error")
    async with httpx.AsyncClient() as http:
        notifier = SlackNotifier(http, timeout_s=5)
        for _ in range(2):
            with pytest.raises(DeliveryError) as info:
                await notifier.send(slack_stub.webhook_url, esc)
            err = info.value
            assert isinstance(err, ToolError)
            assert err.tool == "slack" and err.retryable and err.status == 503
            assert err.retry_after_s is None
            assert "s3cr3t" not in str(err) and SECRET_PATH not in str(err)
        await notifier.send(slack_stub.webhook_url, esc)

    assert slack_stub.requests == 3  # one attempt per send: retrying is the outbox's job
    # the provider base measured each call
    assert (calls("ok") - before[0], calls("error") - before[1]) == (1, 2)
    [payload] = slack_stub.posted
    texts = "\n".join(_block_texts(payload))
    assert "Иван Петров" in texts
    assert ">*Customer:* can I just talk to a real person please" in texts
    assert payload["blocks"][0]["type"] == "header"


async def test_slack_429_carries_retry_after(slack_stub: SlackStub) -> None:
    slack_stub.fail_next(429, "rate_limited", retry_after="2")
    async with httpx.AsyncClient() as http:
        notifier = SlackNotifier(http)
        with pytest.raises(DeliveryError) as info:
            await notifier.send(slack_stub.webhook_url, make_escalation())
        assert info.value.retryable
        assert info.value.retry_after_s == 2.0
        assert info.value.status == 429
        await notifier.send(slack_stub.webhook_url, make_escalation())
    assert len(slack_stub.posted) == 1


async def test_slack_404_no_service_is_permanent_and_hides_the_secret(
    slack_stub: SlackStub,
) -> None:
    revoked = slack_stub.base + "/services/T0ABCDEF/B0GHIJKL/r3v0k3dS3cr3t"
    async with httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as info:
            await SlackNotifier(http).send(revoked, make_escalation())
    err = info.value
    assert not err.retryable and err.retry_after_s is None and err.status == 404
    assert "404" in err.reason and "no_service" in err.reason
    assert "r3v0k3d" not in str(err) and "/services/" not in str(err)


async def test_slack_403_invalid_token_is_permanent(slack_stub: SlackStub) -> None:
    slack_stub.fail_next(403, "invalid_token")
    async with httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as info:
            await SlackNotifier(http).send(slack_stub.webhook_url, make_escalation())
    assert not info.value.retryable
    assert "403" in info.value.reason and "invalid_token" in info.value.reason


async def test_slack_connection_refused_is_retryable() -> None:
    url = f"http://127.0.0.1:{_free_port()}{SECRET_PATH}"
    async with httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as info:
            await SlackNotifier(http).send(url, make_escalation())
    assert info.value.retryable and info.value.status is None
    assert "s3cr3t" not in str(info.value)


async def test_slack_silent_server_times_out_as_retryable() -> None:
    # Accepts connections (kernel backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}{SECRET_PATH}"
        async with httpx.AsyncClient() as http:
            with pytest.raises(DeliveryError) as info:
                await SlackNotifier(http, timeout_s=0.2).send(url, make_escalation())
    assert info.value.retryable
    assert "no answer within 0.2 s" in info.value.reason


@pytest.mark.parametrize("url", ["", "   ", "hooks.slack.com/services/x", "ftp://host/x"])
async def test_slack_without_a_usable_webhook_is_permanent(url: str) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as info:
            await SlackNotifier(http).send(url, make_escalation())
    assert not info.value.retryable
    assert "to_slack_webhook" in info.value.reason


# --------------------------------------------------------------------------- email rendering


def test_email_subject_headers_and_unicode_body() -> None:
    msg = render_email(make_escalation(), "frontdesk@spadelsol.example", "gateway@mail.example")
    assert msg["Subject"] == "[Spa del Sol] Customer asked for a person (web)"
    assert msg["To"] == "frontdesk@spadelsol.example"
    assert msg["From"].addresses[0].addr_spec == "gateway@mail.example"
    assert msg["Message-ID"] == "<escalation.esc-01HX5Z@mail.example>"
    assert msg["X-Gateway-Escalation-Id"] == "esc-01HX5Z"
    assert msg["Auto-Submitted"] == "auto-generated"

    # through bytes and back, as a mail server would see it
    parsed = message_from_bytes(msg.as_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_content()
    assert "Who:      Иван Петров" in body
    assert "  service: hot stone massage" in body
    assert "  Customer: 3pm, and my friend 王伟 is coming too" in body
    assert "Phone:    +14155550123" in body


def test_email_message_id_is_stable_per_escalation() -> None:
    a = render_email(make_escalation(), "a@x.example", "g@mail.example")
    b = render_email(
        make_escalation(reason="stuck on phone number"), "b@x.example", "g@mail.example"
    )
    c = render_email(make_escalation(escalation_id="esc-2"), "a@x.example", "g@mail.example")
    assert a["Message-ID"] == b["Message-ID"] != c["Message-ID"]
    odd = render_email(make_escalation(escalation_id="a/b@c"), "a@x.example", "g@mail.example")
    assert odd["Message-ID"].startswith("<escalation.") and "/" not in odd["Message-ID"]
    assert odd["X-Gateway-Escalation-Id"] == "a/b@c"


def test_email_header_injection_is_flattened() -> None:
    esc = make_escalation(reason="asked\r\nBcc: victim@example.com", client_name="王伟 Spa")
    msg = render_email(esc, "frontdesk@spadelsol.example", "g@mail.example")
    assert msg["Subject"] == "[王伟 Spa] Customer asked Bcc: victim@example.com (web)"
    assert msg["Bcc"] is None
    parsed = message_from_bytes(msg.as_bytes(), policy=default_policy)
    assert parsed["Subject"] == msg["Subject"]


def test_email_rejects_a_bad_recipient() -> None:
    with pytest.raises(ValueError, match="not an email address"):
        render_email(make_escalation(), "not an address", "g@mail.example")


# --------------------------------------------------------------------------- SMTP server


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


@dataclass
class SmtpHandler:
    received: list[Received] = field(default_factory=list)
    rcpt_reply: str | None = None  # e.g. "550 5.1.1 no such user"

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        assert envelope.mail_from is not None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), message, envelope.content)
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, SmtpHandler]]:
    handler = SmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller, handler
    controller.stop()


async def test_email_is_delivered_with_subject_recipient_fields_and_message_id(
    smtp_server: tuple[Controller, SmtpHandler],
) -> None:
    controller, handler = smtp_server
    notifier = EmailNotifier(f"smtp://127.0.0.1:{controller.port}", "gateway@spadelsol.example")
    await notifier.send("frontdesk@spadelsol.example", make_escalation())

    [got] = handler.received
    assert got.mail_from == "gateway@spadelsol.example"
    assert got.rcpt_tos == ["frontdesk@spadelsol.example"]
    msg = got.message
    assert msg["Subject"] == "[Spa del Sol] Customer asked for a person (web)"
    assert msg["To"] == "frontdesk@spadelsol.example"
    assert msg["Message-ID"] == "<escalation.esc-01HX5Z@spadelsol.example>"
    assert msg["X-Gateway-Escalation-Id"] == "esc-01HX5Z"
    body = msg.get_content()
    assert "Who:      Иван Петров" in body
    assert "  name: Иван Петров" in body
    assert "  time: Friday 3pm" in body
    assert "王伟" in body


async def test_email_unicode_survives_a_server_without_smtputf8() -> None:
    handler = SmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=False)
    controller.start()
    try:
        notifier = EmailNotifier(f"smtp://127.0.0.1:{controller.port}")
        await notifier.send(
            "frontdesk@spadelsol.example", make_escalation(client_name="Салон 王伟")
        )
    finally:
        controller.stop()
    [got] = handler.received
    got.raw.decode("ascii")  # 7-bit clean on the wire: RFC 2047 headers, quoted-printable body
    assert "Иван Петров" in got.message.get_content()
    assert got.message["Subject"] == "[Салон 王伟] Customer asked for a person (web)"
    # default From: gateway@<SMTP host>, an address literal for an IP
    assert got.mail_from == "gateway@[127.0.0.1]"
    assert got.message["Message-ID"] == "<escalation.esc-01HX5Z@[127.0.0.1]>"


async def test_email_login_uses_percent_decoded_credentials() -> None:
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        seen.append((data.login, data.password))
        ok = data.login == b"front desk@spa" and data.password == b"p@ss:w/rd"
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    handler = SmtpHandler()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=authenticator,
        auth_require_tls=False,  # loopback test server without a certificate
    )
    controller.start()
    try:
        url = f"smtp://front%20desk%40spa:p%40ss%3Aw%2Frd@127.0.0.1:{controller.port}"
        await EmailNotifier(url).send("frontdesk@spadelsol.example", make_escalation())
        wrong = f"smtp://front%20desk%40spa:nope@127.0.0.1:{controller.port}"
        with pytest.raises(DeliveryError) as info:
            await EmailNotifier(wrong).send("frontdesk@spadelsol.example", make_escalation())
    finally:
        controller.stop()
    assert seen[0] == (b"front desk@spa", b"p@ss:w/rd")
    assert len(handler.received) == 1
    err = info.value
    assert not err.retryable and err.status == 535
    assert "nope" not in str(err) and "***" in str(err)


@pytest.mark.parametrize(
    ("reply", "retryable", "status"),
    [("550 5.1.1 No such user here", False, 550), ("450 4.2.1 Mailbox busy", True, 450)],
)
async def test_email_reply_classes_decide_retry(
    smtp_server: tuple[Controller, SmtpHandler], reply: str, retryable: bool, status: int
) -> None:
    controller, handler = smtp_server
    handler.rcpt_reply = reply
    notifier = EmailNotifier(f"smtp://127.0.0.1:{controller.port}")
    with pytest.raises(DeliveryError) as info:
        await notifier.send("nobody@spadelsol.example", make_escalation())
    err = info.value
    assert err.tool == "email" and err.retryable is retryable and err.status == status
    assert reply.split(" ", 1)[1] in err.reason
    assert handler.received == []


async def test_email_unreachable_server_is_retryable() -> None:
    notifier = EmailNotifier(f"smtp://127.0.0.1:{_free_port()}", timeout_s=2)
    with pytest.raises(DeliveryError) as info:
        await notifier.send("frontdesk@spadelsol.example", make_escalation())
    assert info.value.tool == "email" and info.value.retryable and info.value.status is None


async def test_email_bad_recipient_is_permanent() -> None:
    notifier = EmailNotifier(f"smtp://127.0.0.1:{_free_port()}")
    with pytest.raises(DeliveryError) as info:
        await notifier.send("not an address", make_escalation())
    assert not info.value.retryable


# --------------------------------------------------------------------------- SMTP URL


def test_parse_submission_url_with_credentials_requires_starttls() -> None:
    s = parse_smtp_url("smtp://user:pass@mail.example.com:587")
    assert (s.host, s.port, s.username, s.password) == ("mail.example.com", 587, "user", "pass")
    assert s.start_tls is True and s.use_tls is False
    assert s.redacted_url == "smtp://user:***@mail.example.com:587"
    assert "pass" not in repr(s)


def test_parse_implicit_tls_url() -> None:
    s = parse_smtp_url("smtps://user:pass@mail.example.com:465")
    assert s.use_tls is True and s.start_tls is False and s.port == 465
    assert parse_smtp_url("smtps://u:p@mail.example.com").port == 465


def test_parse_plain_relay_without_auth() -> None:
    s = parse_smtp_url("smtp://relay.internal:25")
    assert (s.host, s.port, s.username, s.password) == ("relay.internal", 25, None, None)
    assert s.start_tls is None  # STARTTLS only when the server offers it
    assert parse_smtp_url("smtp://relay.internal").port == 25


def test_parse_decodes_user_and_password() -> None:
    s = parse_smtp_url("SMTP://apikey%40acct:p%40ss%2Fw%3Ard@smtp.example.com:2525")
    assert s.username == "apikey@acct" and s.password == "p@ss/w:rd"
    # a password over a network on a port that need not be 587 still needs TLS
    assert s.start_tls is True
    assert parse_smtp_url("smtp://u:p@127.0.0.1:2525").start_tls is None
    assert parse_smtp_url("smtp://u:p@[::1]:2525").host == "::1"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://user:hunter2@mail.example.com", "scheme must be smtp or smtps"),
        ("smtp://user:hunter2@:587", "no host"),
        ("smtp://user:hunter2@mail.example.com:abc", "port"),
        ("smtp://user:hunter2@mail.example.com:70000", "port"),
        ("smtp://user:hunter2@mail.example.com:0", "port 0"),
        ("smtp://user@mail.example.com:587", "both a user and a password"),
        ("smtp://:hunter2@mail.example.com:587", "both a user and a password"),
        ("smtp://user:hunter2@mail.example.com:587/x?y=1", "path, query"),
        ("mail.example.com:587", "scheme"),
    ],
)
def test_parse_rejects_malformed_urls_without_showing_the_password(url: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        parse_smtp_url(url)
    message = str(info.value)
    assert "hunter2" not in message
    assert "smtp://[user:password@]host[:port]" in message


def test_email_notifier_rejects_a_bad_url_at_construction() -> None:
    with pytest.raises(ValueError, match="scheme"):
        EmailNotifier("smtp.example.com:587")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("0", 0.0),
        ("-3", None),
        ("soon", None),
        ("Sun, 29 Nov 2026 10:00:30 GMT", 30.0),  # an HTTP date, 30 s after "now"
        ("Sun, 29 Nov 2026 09:00:00 GMT", 0.0),  # already past
    ],
)
def test_retry_after_reads_both_rfc_9110_forms(header: str, expected: float | None) -> None:
    from datetime import datetime

    from providers.http import retry_after_s

    response = httpx.Response(429, headers={"Retry-After": header})
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert retry_after_s(response, now) == expected
    assert retry_after_s(httpx.Response(503), now) is None

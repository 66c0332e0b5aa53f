"""A transfer the engine asks for on a call reaches Twilio's REST API through the outbox.

The reply plays first ("Let me connect you..."); then the phone adapter queues a
``twilio.call`` row (durable, keyed by call and turn) and the gateway's outbox
worker updates the live call with ``<Dial>`` TwiML on a local Twilio stub that
speaks the REST API's wire format — failing once with a 500 first, as Twilio
sometimes does, so the delivery is retried, not lost and not doubled.

What the caller says is not under test here: the calls use the fake speech
providers (``fake_speech``), a scripted recogniser hearing a wordless voiced
buzz as the scripted words, and a tone for the bot's voice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from phone.fake_twilio import FakeTwilio, answer, buzz, is_end_mark
from phone.twilio_stub import TwilioStub

from engine.messages import Action, ConversationResponse, NormalizedMessage, TextDelta, TurnEvent
from gateway.app import create_app
from gateway.settings import Settings
from testkit.speech import FakeSpeech

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
ACCOUNT, TOKEN = "AC" + "1" * 32, "secret-token"
TRANSFER_TO = "+14155550100"  # the client's escalation.phone_transfer_number

pytestmark = pytest.mark.usefixtures("deadline")


@pytest.fixture
def twilio() -> Iterator[TwilioStub]:
    with TwilioStub(accounts={ACCOUNT: TOKEN}) as stub:
        yield stub


@pytest.fixture
def client(
    tmp_path: Path, twilio: TwilioStub, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("SPA_TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("SPA_TWILIO_AUTH_TOKEN", TOKEN)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        GATEWAY_CLIENTS_DIR=REPO / "clients",
        GATEWAY_DATA_DIR=tmp_path,
        TWILIO_BASE_URL=twilio.url,
        GATEWAY_OUTBOX_BASE_BACKOFF_S=0.05,
        GATEWAY_ADMIN_TOKEN="test-admin-token",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_transfer_is_delivered_to_twilio_after_the_reply_played(
    client: TestClient,
    twilio: TwilioStub,
    monkeypatch: pytest.MonkeyPatch,
    fake_speech: FakeSpeech,
) -> None:
    engine = client.app.state.gateway.engine  # type: ignore[attr-defined]

    async def transfer_turn(*_: Any, **__: Any) -> AsyncIterator[TurnEvent]:
        text = "Let me connect you with someone from the team now."
        yield TextDelta(text)
        yield ConversationResponse(
            text=text,
            actions=(Action(type="escalated"), Action(type="transfer", target=TRANSFER_TO)),
        )

    monkeypatch.setattr(engine, "stream_turn", transfer_turn)
    call_sid = "CA" + "7" * 32
    twilio.add_call(call_sid, ACCOUNT)
    twilio.fail_next(500)
    fake_speech.stt.queue("I want to talk to a person")
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        caller = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid, auth_token=TOKEN))
        caller.connect()
        caller.start()
        caller.read_until(is_end_mark)  # the greeting
        caller.media(buzz())
        caller.read_until(is_end_mark)  # the transfer line, played to the end
        assert fake_speech.tts.spoken[-1] == "Let me connect you with someone from the team now."
        deadline = time.monotonic() + 30
        while len([r for r in twilio.requests if r.field("Twiml")]) < 2:
            assert time.monotonic() < deadline, "the transfer never reached Twilio"
            time.sleep(0.05)
    # The scripted 500, then the retry that succeeded; nothing after it.
    time.sleep(0.5)
    updates = [r for r in twilio.requests if r.path.endswith(f"/Calls/{call_sid}.json")]
    assert len(updates) == 2
    assert all(f"<Dial>{TRANSFER_TO}</Dial>" in (r.field("Twiml") or "") for r in updates)
    assert updates[-1].auth == (ACCOUNT, TOKEN)


def test_a_caller_asking_for_a_person_is_transferred_without_being_asked_for_a_number(
    client: TestClient,
    twilio: TwilioStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fake_speech: FakeSpeech,
) -> None:
    """Regression: the phone adapter set ``caller``, the flow read ``caller_number``,
    so a caller who asked for a person was asked for their number instead of
    being transferred. The context is typed now (``ChannelContext``)."""
    engine = client.app.state.gateway.engine  # type: ignore[attr-defined]
    real = engine.stream_turn
    seen: list[Any] = []
    given: list[str] = []

    def recorded(message: NormalizedMessage, *args: Any) -> AsyncIterator[TurnEvent]:
        given.append(message.text)
        seen.append(message.context)
        return real(message, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(engine, "stream_turn", recorded)
    call_sid = "CA" + "8" * 32
    twilio.add_call(call_sid, ACCOUNT)
    caplog.set_level(logging.DEBUG)
    fake_speech.stt.queue("can I talk to somebody please")
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        caller = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid, auth_token=TOKEN))
        caller.connect()
        caller.start()  # customParameters: caller +14155550123
        caller.read_until(is_end_mark)  # the greeting
        caller.media(buzz())
        caller.read_until(is_end_mark)  # "Let me connect you..."
        deadline = time.monotonic() + 30
        while not [r for r in twilio.requests if r.field("Twiml")]:
            assert time.monotonic() < deadline, "the transfer never reached Twilio"
            time.sleep(0.05)
    # What the caller said and their number stay out of the logs (personal data).
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("channels", "providers", "engine"))
    ]
    assert any("heard" in line for line in ours), ours
    assert not [line for line in ours if "+14155550123" in line or "somebody" in line]
    assert not [line for line in ours if "talk to" in line]
    assert given == ["can I talk to somebody please"]  # what was heard reached the engine
    assert seen and seen[0].caller_number == "+14155550123"
    assert seen[0].call_sid == call_sid
    [update] = [r for r in twilio.requests if r.field("Twiml")]
    assert f"<Dial>{TRANSFER_TO}</Dial>" in (update.field("Twiml") or "")
    leads = client.get(
        "/admin/api/leads",
        params={"client_id": CLIENT},
        headers={"Authorization": "Bearer test-admin-token"},
    )
    assert leads.status_code == 200
    assert [(lead["status"], lead["phone"]) for lead in leads.json()] == [
        ("callback_requested", "+14155550123")
    ]

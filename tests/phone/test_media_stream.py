"""End-to-end tests of ``WS /twilio/media/{client_id}`` with the real engine.

The test plays Twilio (:mod:`phone.fake_twilio`): it sends ``connected``/``start``/
``media`` frames, echoes the ``mark`` messages the gateway sends (as Twilio
does once the audio before them has played) and reads the gateway's paced
``media`` frames. Barge-in runs on espeak-ng speech with the real STT and
TTS; the DTMF test uses the fake speech providers (``fake_speech``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from phone.fake_twilio import (
    STREAM_SID,
    FakeTwilio,
    answer,
    is_clear,
    is_end_mark,
    is_mark,
    is_media,
    media_payloads,
    utterance,
)
from starlette.websockets import WebSocketDisconnect

from gateway.app import create_app
from gateway.settings import Settings
from providers.speech.audio import TWILIO_FRAME_BYTES
from testkit.phone.wire import OutboundClear
from testkit.speech import FakeSpeech

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"

pytestmark = pytest.mark.usefixtures("deadline")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("data")
    settings = Settings(GATEWAY_CLIENTS_DIR=REPO / "clients", GATEWAY_DATA_DIR=data)
    app: FastAPI = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


@needs_espeak
def test_greeting_reply_and_barge_in(client: TestClient) -> None:
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, parameters=answer(client))
        twilio.connect()
        ws.send_text("this is {not json")  # malformed frames are logged and skipped
        twilio.start()

        greeting = twilio.read_until(is_end_mark)
        frames = media_payloads(greeting)
        assert len(frames) > 50  # over a second of speech
        assert all(len(f) == TWILIO_FRAME_BYTES for f in frames)
        assert any(is_mark(m) for m in greeting[:-1])

        twilio.media_payload("%%% not base64 %%%")  # logged and skipped too
        twilio.media(utterance("I would like to book a massage"))
        first = twilio.read_until(is_media)
        assert media_payloads(first)

        # The caller talks over the reply: the gateway tells Twilio to drop its audio.
        twilio.media(utterance("wait, actually I have a question about prices"))
        interrupted = twilio.read_until(is_clear)
        assert interrupted[-1] == OutboundClear(STREAM_SID)  # and no other field (strict)

        twilio.stop()
        with pytest.raises(WebSocketDisconnect):  # the server ends the socket after stop
            while True:
                ws.receive_text()


def test_dtmf_digit_is_answered(client: TestClient, fake_speech: FakeSpeech) -> None:
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, parameters=answer(client))
        twilio.connect()
        twilio.start()
        twilio.read_until(is_end_mark)
        twilio.dtmf("1")
        reply = twilio.read_until(is_end_mark)
        assert media_payloads(reply)
    assert len(fake_speech.tts.spoken) >= 2  # the greeting, then the answer to the key
    assert fake_speech.stt.recognised == []  # a key press is not speech


def test_unknown_client_is_closed_with_4404(client: TestClient) -> None:
    with (
        client.websocket_connect("/twilio/media/no-such-client") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 4404

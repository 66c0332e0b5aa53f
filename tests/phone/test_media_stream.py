"""End-to-end tests of ``WS /twilio/media/{client_id}`` with the real engine, STT and TTS.

The test plays Twilio: it sends ``connected``/``start``/``media`` frames made
from espeak-ng speech, echoes the ``mark`` messages the gateway sends (as
Twilio does once the audio before them has played) and reads the gateway's
paced ``media`` frames.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from phone.fake_twilio import (
    CALL_SID,
    STREAM_SID,
    FakeTwilio,
    is_end_mark,
    media_payloads,
    utterance,
)
from starlette.websockets import WebSocketDisconnect

from adapters.speech.audio import TWILIO_FRAME_BYTES
from gateway.app import create_app
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng"),
    pytest.mark.usefixtures("deadline"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("data")
    settings = Settings(GATEWAY_CLIENTS_DIR=REPO / "clients", GATEWAY_DATA_DIR=data)
    app: FastAPI = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


def test_greeting_reply_and_barge_in(client: TestClient) -> None:
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws)
        twilio.connect()
        ws.send_text("this is {not json")  # malformed frames are logged and skipped
        twilio.start()

        greeting = twilio.read_until(is_end_mark)
        frames = media_payloads(greeting)
        assert len(frames) > 50  # over a second of speech
        assert all(len(f) == TWILIO_FRAME_BYTES for f in frames)
        assert any(m["event"] == "mark" for m in greeting[:-1])

        twilio.send("media", media={"track": "inbound", "chunk": "1", "timestamp": "0",
                                    "payload": "%%% not base64 %%%"})  # fmt: skip
        twilio.media(utterance("I would like to book a massage"))
        first = twilio.read_until(lambda m: m["event"] == "media")
        assert media_payloads(first)

        # The caller talks over the reply: the gateway tells Twilio to drop its audio.
        twilio.media(utterance("wait, actually I have a question about prices"))
        interrupted = twilio.read_until(lambda m: m["event"] == "clear")
        assert interrupted[-1] == {"event": "clear", "streamSid": STREAM_SID}

        twilio.send("stop", stop={"accountSid": "AC" + "2" * 32, "callSid": CALL_SID})
        with pytest.raises(WebSocketDisconnect):  # the server ends the socket after stop
            while True:
                ws.receive_text()


def test_dtmf_digit_is_answered(client: TestClient) -> None:
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws)
        twilio.connect()
        twilio.start()
        twilio.read_until(is_end_mark)
        twilio.send("dtmf", dtmf={"track": "inbound_track", "digit": "1"})
        reply = twilio.read_until(is_end_mark)
        assert media_payloads(reply)


def test_unknown_client_is_closed_with_4404(client: TestClient) -> None:
    with (
        client.websocket_connect("/twilio/media/no-such-client") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 4404

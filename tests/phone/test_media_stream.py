"""End-to-end tests of ``WS /twilio/media/{client_id}`` with the real engine, STT and TTS.

The test plays Twilio: it sends ``connected``/``start``/``media`` frames made
from espeak-ng speech, echoes the ``mark`` messages the gateway sends (as
Twilio does once the audio before them has played) and reads the gateway's
paced ``media`` frames.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import signal
import subprocess
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from adapters.phone.media import media_router
from adapters.speech.audio import TWILIO_FRAME_BYTES, pcm16_to_ulaw, resample
from gateway.app import create_app
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
STREAM_SID = "MZ" + "0" * 32
CALL_SID = "CA" + "1" * 32

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail (instead of hanging) if a websocket read never returns."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("test took too long")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("data")
    settings = Settings(GATEWAY_CLIENTS_DIR=REPO / "clients", GATEWAY_DATA_DIR=data)
    app: FastAPI = create_app(settings)
    app.include_router(media_router())
    with TestClient(app) as test_client:
        yield test_client


def utterance(text: str) -> list[bytes]:
    """``text`` spoken by espeak-ng as 20 ms mu-law frames, then 1 s of silence."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        pcm = reader.readframes(reader.getnframes())
        rate = reader.getframerate()
    ulaw = pcm16_to_ulaw(resample(pcm, rate, 8000))
    ulaw += b"\xff" * (-len(ulaw) % TWILIO_FRAME_BYTES)
    frames = [ulaw[i : i + TWILIO_FRAME_BYTES] for i in range(0, len(ulaw), TWILIO_FRAME_BYTES)]
    return frames + [b"\xff" * TWILIO_FRAME_BYTES] * 50


class FakeTwilio:
    """Drives one media stream the way Twilio does."""

    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws
        self.chunk = 0
        self.seq = 0

    def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        self.ws.send_text(
            json.dumps(
                {"event": event, "sequenceNumber": str(self.seq), "streamSid": STREAM_SID, **body}
            )
        )

    def connect(self) -> None:
        self.ws.send_text(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )

    def start(self) -> None:
        self.send(
            "start",
            start={
                "accountSid": "AC" + "2" * 32,
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "tracks": ["inbound"],
                "customParameters": {"caller": "+14155550123", "call_sid": CALL_SID},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )

    def media(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.chunk += 1
            self.send(
                "media",
                media={
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(self.chunk * 20),
                    "payload": base64.b64encode(frame).decode(),
                },
            )

    def read_until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Messages from the gateway up to and including the first ``done`` one; marks echoed."""
        seen: list[dict[str, Any]] = []
        while True:
            message = json.loads(self.ws.receive_text())
            seen.append(message)
            assert message["streamSid"] == STREAM_SID
            if message["event"] == "mark":
                self.send("mark", mark={"name": message["mark"]["name"]})
            if done(message):
                return seen


def is_end_mark(message: dict[str, Any]) -> bool:
    return message["event"] == "mark" and str(message["mark"]["name"]).endswith(":end")


def media_payloads(messages: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(m["media"]["payload"]) for m in messages if m["event"] == "media"]


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

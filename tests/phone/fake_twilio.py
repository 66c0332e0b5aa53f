"""A fake Twilio for driving ``WS /twilio/media/{client_id}`` through Starlette's TestClient.

It sends ``connected``/``start``/``media`` frames made from espeak-ng speech,
echoes the ``mark`` messages the gateway sends (as Twilio does once the audio
before them has played) and reads the gateway's paced ``media`` frames.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import wave
from collections.abc import Callable
from typing import Any

from starlette.testclient import WebSocketTestSession

from adapters.speech.audio import TWILIO_FRAME_BYTES, pcm16_to_ulaw, resample

STREAM_SID = "MZ" + "0" * 32
CALL_SID = "CA" + "1" * 32
SILENT_FRAME = b"\xff" * TWILIO_FRAME_BYTES


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

    def __init__(self, ws: WebSocketTestSession, call_sid: str = CALL_SID) -> None:
        self.ws = ws
        self.call_sid = call_sid
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
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"caller": "+14155550123", "call_sid": self.call_sid},
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

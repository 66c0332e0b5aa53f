"""Call behaviour over ``WS /twilio/media/{client_id}``: backchannels, cut replies in the
history, reprompts and goodbye, the filler line, DTMF entry, reframing odd payloads and
the per-call trace, with the real engine, STT and TTS."""

from __future__ import annotations

import base64
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from phone.fake_twilio import (
    SILENT_FRAME,
    FakeTwilio,
    is_end_mark,
    media_payloads,
    utterance,
)
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from adapters.phone.trace import CallTrace, CallTraces
from adapters.speech.audio import pcm16_to_ulaw, ulaw_to_pcm16
from engine import Engine
from engine.messages import TurnEvent
from engine.session import SessionKey
from gateway.app import create_app
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
TOKEN = "test-admin-token"

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng"),
    pytest.mark.usefixtures("deadline"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    clients = tmp_path_factory.mktemp("clients")
    shutil.copytree(REPO / "clients" / CLIENT, clients / CLIENT)
    config_path = clients / CLIENT / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    phone = config["channels"]["phone"]
    phone.update(
        greeting="Thanks for calling Spa del Sol.",
        max_reprompts=1,
        filler_after_ms=300,
        filler=["One moment."],
    )
    phone["turn_taking"] = {"silence_timeout_s": 1.0}
    config_path.write_text(yaml.safe_dump(config))
    settings = Settings(
        _env_file=None,
        GATEWAY_CLIENTS_DIR=clients,
        GATEWAY_DATA_DIR=tmp_path_factory.mktemp("data"),
        GATEWAY_ADMIN_TOKEN=TOKEN,
    )
    app: FastAPI = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


_calls = iter(range(10**6))


def new_call_sid() -> str:
    return f"CA{next(_calls):032d}"


def trace_of(client: TestClient, call_sid: str) -> CallTrace:
    traces: CallTraces = client.app.state.call_traces  # type: ignore[attr-defined]
    trace = traces.get(call_sid)
    assert trace is not None
    return trace


def transcript(client: TestClient, call_sid: str) -> list[dict[str, Any]]:
    store = client.app.state.store  # type: ignore[attr-defined]
    assert client.portal is not None
    loaded = client.portal.call(store.load, SessionKey(CLIENT, "phone", call_sid))
    assert loaded is not None
    return [turn.model_dump() for turn in loaded.session.transcript]


class SilencePump:
    """Sends a silent inbound frame every 20 ms from a thread, as Twilio streams the line."""

    def __init__(self, twilio: FakeTwilio) -> None:
        self.twilio = twilio
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.twilio.media([SILENT_FRAME])
            except Exception:  # the socket closed under us: the test reads why
                return
            time.sleep(0.02)

    def __enter__(self) -> SilencePump:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


def started_call(ws: WebSocketTestSession, call_sid: str) -> FakeTwilio:
    twilio = FakeTwilio(ws, call_sid)
    twilio.connect()
    twilio.start()
    return twilio


def test_a_backchannel_pauses_the_greeting_which_then_resumes(client: TestClient) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        twilio.read_until(lambda m: m["event"] == "media")  # the greeting is playing
        twilio.media(utterance("okay"))
        rest = twilio.read_until(is_end_mark)
        events = [m["event"] for m in rest]
        assert "clear" in events  # paused at once...
        after_clear = rest[events.index("clear") :]
        assert media_payloads(after_clear)  # ...then the greeting carried on
        assert "@" in rest[-1]["mark"]["name"]  # its end mark counts the pause
    trace = trace_of(client, call_sid)
    assert [t.kind for t in trace.turns] == ["greeting"]  # nothing was answered
    assert [b.outcome for b in trace.barge_ins] == ["resumed"]
    assert trace.turns[0].interrupted is False


def test_an_interrupted_reply_is_kept_in_history_as_heard(client: TestClient) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        twilio.read_until(is_end_mark)
        twilio.media(utterance("I would like to book a massage"))
        twilio.read_until(lambda m: m["event"] == "media")
        for _ in range(8):  # let some of the reply play (marks are echoed as read)
            twilio.read_until(lambda m: m["event"] == "mark")
        twilio.media(utterance("wait, actually I have a question about the prices please"))
        twilio.read_until(lambda m: m["event"] == "clear")
        twilio.read_until(is_end_mark)  # the answer to the interruption
    trace = trace_of(client, call_sid)
    cut = [t for t in trace.turns if t.kind == "speech" and t.interrupted]
    assert cut, trace.as_json()
    first = cut[0]
    assert first.heard_text and len(first.heard_text) < len(first.reply_text)
    assert first.reply_text.startswith(first.heard_text.split()[0])
    assert trace.barge_ins[0].outcome == "interrupted"
    assert trace.barge_ins[0].reaction_ms is not None
    history = transcript(client, call_sid)
    heard = [t for t in history if t["role"] == "assistant" and t["cut"]]
    assert heard and heard[0]["text"] == first.heard_text


def test_silence_gets_a_reprompt_then_goodbye_and_the_call_ends(client: TestClient) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        with SilencePump(twilio), pytest.raises(WebSocketDisconnect):
            while True:  # greeting, reprompt, goodbye; then the gateway closes the stream
                twilio.read_until(is_end_mark)
    kinds = [t.kind for t in trace_of(client, call_sid).turns]
    assert kinds == ["greeting", "reprompt", "goodbye"]


def test_a_slow_engine_gets_a_filler_line_first(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    real = engine.stream_turn

    async def slow_stream_turn(*args: Any, **kwargs: Any) -> AsyncIterator[TurnEvent]:
        import asyncio

        await asyncio.sleep(1.0)
        async for event in real(*args, **kwargs):
            yield event

    monkeypatch.setattr(engine, "stream_turn", slow_stream_turn)
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        twilio.read_until(is_end_mark)
        twilio.media(utterance("I would like to book a massage"))
        twilio.read_until(is_end_mark)
    answered = trace_of(client, call_sid).turns[1]
    assert answered.kind == "speech" and answered.filler
    assert answered.first_media is not None and answered.first_text is not None
    assert answered.first_media < answered.first_text  # the filler played before the reply


def test_dtmf_keys_are_one_entry(client: TestClient) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        twilio.read_until(lambda m: m["event"] == "media")
        for digit in "4155550123#":
            twilio.send("dtmf", dtmf={"track": "inbound_track", "digit": digit})
        twilio.read_until(is_end_mark)
    users = [t["text"] for t in transcript(client, call_sid) if t["role"] == "user"]
    assert users == ["4155550123"]
    trace = trace_of(client, call_sid)
    assert trace.turns[0].interrupted  # the first key stopped the greeting
    assert [t.kind for t in trace.turns] == ["greeting", "dtmf"]


def test_payloads_that_are_not_whole_frames_are_reframed(client: TestClient) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        twilio.read_until(is_end_mark)
        audio = b"".join(utterance("I would like to book a massage"))
        twilio.media([audio[i : i + 250] for i in range(0, len(audio), 250)])
        reply = twilio.read_until(is_end_mark)
        assert media_payloads(reply)
    users = [t["text"] for t in transcript(client, call_sid) if t["role"] == "user"]
    assert len(users) == 1 and "massage" in users[0]


def test_the_call_trace_is_served_to_the_admin(client: TestClient) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        twilio.read_until(is_end_mark)
        twilio.media(utterance("I would like to book a massage"))
        twilio.read_until(is_end_mark)
    denied = client.get(f"/admin/api/calls/{call_sid}")
    assert denied.status_code == 401
    response = client.get(
        f"/admin/api/calls/{call_sid}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200
    body: Mapping[str, Any] = response.json()
    assert body["call_sid"] == call_sid
    turn = body["turns"][1]
    # The trace shows exactly what the engine was given (whatever the offline
    # recogniser made of the audio on a loaded machine: not what is under test).
    heard = [t["text"] for t in transcript(client, call_sid) if t["role"] == "user"]
    assert turn["kind"] == "speech" and turn["user_text"] and [turn["user_text"]] == heard
    stages = turn["stages_ms"]
    assert set(stages) == {
        "endpointing",
        "stt_final",
        "engine_first_text",
        "tts_first_audio",
        "first_media",
        "first_mark_ack",
    }
    assert all(value is not None and value >= 0 for value in stages.values())
    assert turn["end_of_speech_to_first_media_ms"] > 0
    missing = client.get("/admin/api/calls/CAnope", headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 404
    metrics = client.get("/metrics").text
    assert 'gateway_phone_stage_seconds_count{stage="stt_final"}' in metrics


def attenuated(ulaw: bytes, db: float) -> bytes:
    samples = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    return pcm16_to_ulaw((samples * 10 ** (-db / 20)).astype("<i2").tobytes())


def pink_noise_frames(seconds: float, dbfs: float, seed: int = 7) -> list[bytes]:
    n = int(8000 * seconds)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    noise *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(noise**2))
    ulaw = pcm16_to_ulaw(noise.astype("<i2").tobytes())
    return [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]


@pytest.mark.parametrize("echo_db", [0.0, 10.0])
def test_the_bots_own_echo_does_not_interrupt_it(client: TestClient, echo_db: float) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)
        twilio.media([SILENT_FRAME] * 3)
        echoed = 0

        def echo(message: dict[str, Any]) -> bool:
            nonlocal echoed
            if message["event"] == "media":  # the line carries our voice straight back
                payload = base64.b64decode(message["media"]["payload"])
                twilio.media([attenuated(payload, echo_db)])
                echoed += 1
            return is_end_mark(message)

        greeting = twilio.read_until(echo)
    assert echoed > 50
    assert "clear" not in [m["event"] for m in greeting]
    assert trace_of(client, call_sid).barge_ins == []


def test_line_noise_does_not_interrupt_the_bot(client: TestClient) -> None:
    call_sid = new_call_sid()
    noise = iter(pink_noise_frames(10.0, -30.0))
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(ws, call_sid)

        def hiss(message: dict[str, Any]) -> bool:
            if message["event"] == "media":  # a noisy line, one frame per frame played
                twilio.media([next(noise)])
            return is_end_mark(message)

        greeting = twilio.read_until(hiss)
    assert "clear" not in [m["event"] for m in greeting]
    trace = trace_of(client, call_sid)
    assert trace.barge_ins == [] and [t.kind for t in trace.turns] == ["greeting"]

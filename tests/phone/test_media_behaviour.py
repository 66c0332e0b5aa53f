"""Call behaviour over ``WS /twilio/media/{client_id}``: backchannels, cut replies in the
history, reprompts and goodbye, the filler line, DTMF entry, reframing odd payloads and
the per-call trace, with the real engine.

Speech is under test in the backchannel, echo and line-noise tests: they run
espeak-ng speech through the real STT and TTS. The others are about what the
call does with what was said (or pressed, or not said), so they use the fake
providers (``fake_speech``): a scripted recogniser, hearing what the test
says it hears from a wordless voiced buzz, and a tone for the bot's voice.
"""

from __future__ import annotations

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
    answer,
    buzz,
    is_clear,
    is_end_mark,
    is_mark,
    is_media,
    media_payloads,
    utterance,
)
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from channels.phone.trace import CallTrace, CallTraces
from engine import Engine
from engine.messages import TurnEvent
from engine.session import SessionKey
from gateway.app import create_app
from gateway.settings import Settings
from providers.speech.audio import pcm16_to_ulaw, ulaw_to_pcm16
from testkit.phone.wire import Outbound, OutboundMark, OutboundMedia
from testkit.speech import FakeSpeech

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
TOKEN = "test-admin-token"

pytestmark = pytest.mark.usefixtures("deadline")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


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
    traces: CallTraces = client.app.state.phone.call_traces  # type: ignore[attr-defined]
    trace = traces.get(call_sid)
    assert trace is not None
    return trace


def transcript(client: TestClient, call_sid: str) -> list[dict[str, Any]]:
    store = client.app.state.gateway.store  # type: ignore[attr-defined]
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


def started_call(client: TestClient, ws: WebSocketTestSession, call_sid: str) -> FakeTwilio:
    twilio = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid))
    twilio.connect()
    twilio.start()
    return twilio


@needs_espeak
def test_a_backchannel_pauses_the_greeting_which_then_resumes(client: TestClient) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        twilio.read_until(is_media)  # the greeting is playing
        twilio.media(utterance("okay"))
        rest = twilio.read_until(is_end_mark)
        cleared = [i for i, m in enumerate(rest) if is_clear(m)]
        assert cleared  # paused at once...
        assert media_payloads(rest[cleared[0] :])  # ...then the greeting carried on
        end = rest[-1]
        assert isinstance(end, OutboundMark) and "@" in end.name  # its end mark counts the pause
    trace = trace_of(client, call_sid)
    assert [t.kind for t in trace.turns] == ["greeting"]  # nothing was answered
    assert [b.outcome for b in trace.barge_ins] == ["resumed"]
    assert trace.turns[0].interrupted is False


def test_an_interrupted_reply_is_kept_in_history_as_heard(
    client: TestClient, fake_speech: FakeSpeech
) -> None:
    fake_speech.stt.queue(
        "I would like to book a massage", "wait, actually I have a question about the prices please"
    )
    # The reply (about 90 characters) must still be playing after 8 marks (800 ms):
    # at 30 ms a character it lasts about 2.7 s, as long as real speech would.
    fake_speech.tts.ms_per_char = 30
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        twilio.read_until(is_end_mark)
        twilio.media(buzz())
        twilio.read_until(is_media)
        for _ in range(8):  # let some of the reply play (marks are echoed as read)
            twilio.read_until(is_mark)
        twilio.media(buzz())  # the caller talks over it
        twilio.read_until(is_clear)
        twilio.read_until(is_end_mark)  # the answer to the interruption
    assert fake_speech.stt.pending == ()
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


def test_silence_gets_a_reprompt_then_goodbye_and_the_call_ends(
    client: TestClient, fake_speech: FakeSpeech
) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        with SilencePump(twilio), pytest.raises(WebSocketDisconnect):
            while True:  # greeting, reprompt, goodbye; then the gateway closes the stream
                twilio.read_until(is_end_mark)
    trace = trace_of(client, call_sid)
    assert [t.kind for t in trace.turns] == ["greeting", "reprompt", "goodbye"]
    # each line spoken in full, sentence by sentence, and nothing else
    assert " ".join(fake_speech.tts.spoken) == " ".join(t.reply_text for t in trace.turns)
    assert fake_speech.stt.opened == 0  # the line was silent throughout


def test_a_slow_engine_gets_a_filler_line_first(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, fake_speech: FakeSpeech
) -> None:
    engine: Engine = client.app.state.gateway.engine  # type: ignore[attr-defined]
    real = engine.stream_turn

    async def slow_stream_turn(*args: Any, **kwargs: Any) -> AsyncIterator[TurnEvent]:
        import asyncio

        await asyncio.sleep(1.0)
        async for event in real(*args, **kwargs):
            yield event

    monkeypatch.setattr(engine, "stream_turn", slow_stream_turn)
    fake_speech.stt.queue("I would like to book a massage")
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        twilio.read_until(is_end_mark)
        twilio.media(buzz())
        twilio.read_until(is_end_mark)
    answered = trace_of(client, call_sid).turns[1]
    assert answered.kind == "speech" and answered.filler
    assert fake_speech.tts.spoken[1] == "One moment."  # right after the greeting
    assert answered.first_media is not None and answered.first_text is not None
    assert answered.first_media < answered.first_text  # the filler played before the reply


def test_dtmf_keys_are_one_entry(client: TestClient, fake_speech: FakeSpeech) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        twilio.read_until(is_media)
        twilio.dtmf("4155550123#")
        twilio.read_until(is_end_mark)
    users = [t["text"] for t in transcript(client, call_sid) if t["role"] == "user"]
    assert users == ["4155550123"]
    trace = trace_of(client, call_sid)
    assert trace.turns[0].interrupted  # the first key stopped the greeting
    assert [t.kind for t in trace.turns] == ["greeting", "dtmf"]


def test_payloads_that_are_not_whole_frames_are_reframed(
    client: TestClient, fake_speech: FakeSpeech
) -> None:
    fake_speech.stt.queue("I would like to book a massage")
    call_sid = new_call_sid()
    speech = buzz()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        twilio.read_until(is_end_mark)
        audio = b"".join(speech)
        twilio.media([audio[i : i + 250] for i in range(0, len(audio), 250)])
        reply = twilio.read_until(is_end_mark)
        assert media_payloads(reply)
    users = [t["text"] for t in transcript(client, call_sid) if t["role"] == "user"]
    assert users == ["I would like to book a massage"]  # one turn
    # The recogniser got the caller's audio intact: every byte, in order, once.
    [heard] = fake_speech.stt.recognised
    spoken = ulaw_to_pcm16(b"".join(f for f in speech if f != SILENT_FRAME))
    assert heard.pcm.count(spoken) == 1


def test_the_call_trace_is_served_to_the_admin(client: TestClient, fake_speech: FakeSpeech) -> None:
    fake_speech.stt.queue("I would like to book a massage")
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        twilio.read_until(is_end_mark)
        twilio.media(buzz())
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
    # The trace shows exactly what the recogniser heard and the engine was given.
    heard = [t["text"] for t in transcript(client, call_sid) if t["role"] == "user"]
    assert turn["kind"] == "speech" and [turn["user_text"]] == heard
    assert heard == ["I would like to book a massage"]
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


@needs_espeak
@pytest.mark.parametrize("echo_db", [0.0, 10.0])
def test_the_bots_own_echo_does_not_interrupt_it(client: TestClient, echo_db: float) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)
        twilio.media([SILENT_FRAME] * 3)
        echoed = 0

        def echo(message: Outbound) -> bool:
            nonlocal echoed
            if isinstance(message, OutboundMedia):  # the line carries our voice straight back
                twilio.media([attenuated(message.ulaw, echo_db)])
                echoed += 1
            return is_end_mark(message)

        greeting = twilio.read_until(echo)
    assert echoed > 50
    assert not any(is_clear(m) for m in greeting)
    assert trace_of(client, call_sid).barge_ins == []


@needs_espeak
def test_line_noise_does_not_interrupt_the_bot(client: TestClient) -> None:
    call_sid = new_call_sid()
    noise = iter(pink_noise_frames(10.0, -30.0))
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = started_call(client, ws, call_sid)

        def hiss(message: Outbound) -> bool:
            if is_media(message):  # a noisy line, one frame per frame played
                twilio.media([next(noise)])
            return is_end_mark(message)

        greeting = twilio.read_until(hiss)
    assert not any(is_clear(m) for m in greeting)
    trace = trace_of(client, call_sid)
    assert trace.barge_ins == [] and [t.kind for t in trace.turns] == ["greeting"]

"""A media stream nobody can hijack or flood.

Only a stream the signed voice webhook created drives a call (its one-time
token, bound to the client and the CallSid); a CallSid with a live stream gets
no second one; inbound audio beyond real time (plus a burst, 1 s here) is dropped
before any per-frame work; oversized and deeply nested frames are skipped.
The stream tests play Twilio with :mod:`phone.fake_twilio`, starting each call
at the voice webhook as Twilio does.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from phone.fake_twilio import AUTH_TOKEN, FakeTwilio, answer, is_end_mark, media_payloads
from prometheus_client import REGISTRY
from starlette.websockets import WebSocketDisconnect

from channels.phone.admission import (
    LocalStreamGate,
    RedisStreamGate,
    StreamRefused,
    mint_stream_token,
    verify_stream_token,
)
from channels.phone.budget import AudioBudget
from channels.phone.codec import CodecError, Dtmf, decode_inbound
from channels.phone.trace import CallTraces
from engine.messages import NormalizedMessage, TurnEvent
from gateway.app import create_app
from gateway.settings import Settings
from testkit.speech import FakeSpeech

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
POLICY_VIOLATION = 1008

pytestmark = pytest.mark.usefixtures("deadline")

_calls = iter(range(10**6))


def new_call_sid() -> str:
    return f"CA5ec{next(_calls):029d}"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,
        GATEWAY_CLIENTS_DIR=REPO / "clients",
        GATEWAY_DATA_DIR=tmp_path_factory.mktemp("data"),
        GATEWAY_PHONE_AUDIO_BURST_S=1.0,  # a tight burst (default 10 s; the phone tests' 600 s)
    )
    app: FastAPI = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def engine_turns(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The session ids of the turns the engine ran during the test."""
    engine = client.app.state.gateway.engine  # type: ignore[attr-defined]
    real = engine.stream_turn
    seen: list[str] = []

    def counting(message: NormalizedMessage, *args: Any) -> AsyncIterator[TurnEvent]:
        seen.append(message.session_id)
        result: AsyncIterator[TurnEvent] = real(message, *args)
        return result

    monkeypatch.setattr(engine, "stream_turn", counting)
    return seen


def traces(client: TestClient) -> CallTraces:
    return client.app.state.phone.call_traces  # type: ignore[attr-defined,no-any-return]


def closed_with(twilio: FakeTwilio) -> int:
    """Read until the gateway closes the socket; its close code."""
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            twilio.ws.receive_text()
    return closed.value.code


def refused(client: TestClient, call_sid: str, parameters: dict[str, str] | None) -> int:
    """Open a stream for ``call_sid`` with these ``start`` parameters and press a key
    (which an admitted call answers); the close code."""
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, call_sid, parameters=parameters)
        twilio.connect()
        twilio.start()
        twilio.dtmf("1")
        return closed_with(twilio)


def dropped_audio_s() -> float:
    value = REGISTRY.get_sample_value(
        "gateway_phone_dropped_audio_seconds_total", {"client_id": CLIENT}
    )
    return value or 0.0


# --------------------------------------------------------------------------- the token


def test_the_twiml_carries_a_token_bound_to_the_call(client: TestClient) -> None:
    call_sid = new_call_sid()
    parameters = answer(client, call_sid)

    token = parameters["token"]
    assert verify_stream_token(token, AUTH_TOKEN, CLIENT, call_sid, now_s=time.time())
    for other_client, other_call in (("bright-smile-dental", call_sid), (CLIENT, new_call_sid())):
        with pytest.raises(StreamRefused) as refusal:
            verify_stream_token(token, AUTH_TOKEN, other_client, other_call, now_s=time.time())
        assert refusal.value.reason == "forged"
    with pytest.raises(StreamRefused) as refusal:
        verify_stream_token(token, "another-auth-token", CLIENT, call_sid, now_s=time.time())
    assert refusal.value.reason == "forged"
    with pytest.raises(StreamRefused) as refusal:
        verify_stream_token(token, AUTH_TOKEN, CLIENT, call_sid, now_s=time.time() + 61)
    assert refusal.value.reason == "expired"


def _forged(call_sid: str, parameters: dict[str, str]) -> dict[str, str]:
    expiry, mac = parameters["token"].split(".")[1:]
    return {**parameters, "token": f"v1.{int(expiry) + 3600}.{mac}"}  # a longer life


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "forged_expiry", "other_key", "expired", "other_call", "other_client"],
)
def test_a_stream_without_a_valid_token_is_refused_before_any_turn(
    client: TestClient, fake_speech: FakeSpeech, engine_turns: list[str], case: str
) -> None:
    call_sid = new_call_sid()
    now = time.time()
    legit = answer(client, call_sid)
    parameters: dict[str, str] = {
        "missing": {k: v for k, v in legit.items() if k != "token"},
        "garbage": {**legit, "token": "v1." + "9" * 400},
        "forged_expiry": _forged(call_sid, legit),
        "other_key": {**legit, "token": mint_stream_token("guess", CLIENT, call_sid, now_s=now)},
        "expired": {
            **legit,
            "token": mint_stream_token(AUTH_TOKEN, CLIENT, call_sid, now_s=now - 120),
        },
        "other_call": answer(client, new_call_sid()),
        "other_client": {
            **legit,
            "token": mint_stream_token(AUTH_TOKEN, "bright-smile-dental", call_sid, now_s=now),
        },
    }[case]

    assert refused(client, call_sid, parameters) == POLICY_VIOLATION
    assert engine_turns == []
    assert traces(client).get(call_sid) is None  # no call was wired at all
    assert fake_speech.tts.spoken == []  # not even the greeting


def test_a_token_works_once(
    client: TestClient, fake_speech: FakeSpeech, engine_turns: list[str]
) -> None:
    call_sid = new_call_sid()
    parameters = answer(client, call_sid)
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, call_sid, parameters=parameters)
        twilio.connect()
        twilio.start()
        assert media_payloads(twilio.read_until(is_end_mark))  # the greeting
        twilio.stop()
        closed_with(twilio)
    spoken = len(fake_speech.tts.spoken)

    assert refused(client, call_sid, parameters) == POLICY_VIOLATION  # replayed
    assert len(fake_speech.tts.spoken) == spoken
    assert engine_turns == []


def test_a_second_stream_for_a_live_call_is_refused_and_the_call_carries_on(
    client: TestClient, fake_speech: FakeSpeech, engine_turns: list[str]
) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        victim = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid))
        victim.connect()
        victim.start()
        victim.read_until(is_end_mark)

        # Even a token the webhook minted for this CallSid (a re-sent webhook) opens
        # no second stream while the first lives; a forged one fails before that.
        assert refused(client, call_sid, answer(client, call_sid)) == POLICY_VIOLATION
        assert refused(client, call_sid, None) == POLICY_VIOLATION
        assert engine_turns == []

        victim.dtmf("1")
        reply = victim.read_until(is_end_mark)
        assert media_payloads(reply)
        victim.stop()
    assert engine_turns == [call_sid]


# --------------------------------------------------------------------------- floods


def test_a_flood_is_dropped_beyond_real_time_and_other_calls_still_get_replies(
    client: TestClient, fake_speech: FakeSpeech
) -> None:
    """Three sockets push 8000-byte payloads (1 s of audio each) at ~500 a second for
    1.5 s (the paced sending only bounds the test's memory); a fourth call still gets
    its reply, and nearly all the flood is counted as dropped."""
    before = dropped_audio_s()
    honest_sid = new_call_sid()
    flood_sids = [new_call_sid() for _ in range(3)]
    blob = b"\x55" * 8000
    sent = [0, 0, 0]
    stop = threading.Event()

    def flood(twilio: FakeTwilio, index: int) -> None:
        while not stop.is_set():
            try:
                twilio.media([blob])
            except Exception:  # the socket closed under us
                return
            sent[index] += 1
            time.sleep(0.002)

    with (
        client.websocket_connect(f"/twilio/media/{CLIENT}") as ws,
        client.websocket_connect(f"/twilio/media/{CLIENT}") as f1,
        client.websocket_connect(f"/twilio/media/{CLIENT}") as f2,
        client.websocket_connect(f"/twilio/media/{CLIENT}") as f3,
    ):
        honest = FakeTwilio(ws, honest_sid, parameters=answer(client, honest_sid))
        honest.connect()
        honest.start()
        honest.read_until(is_end_mark)
        floods = []
        for sid, socket in zip(flood_sids, (f1, f2, f3), strict=True):
            flooder = FakeTwilio(socket, sid, parameters=answer(client, sid))
            flooder.connect()
            flooder.start()
            floods.append(flooder)
        threads = [
            threading.Thread(target=flood, args=(f, i), daemon=True) for i, f in enumerate(floods)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(0.5)

        asked = time.monotonic()
        honest.dtmf("1")
        reply = honest.read_until(is_end_mark)
        waited = time.monotonic() - asked
        time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for flooder in floods:
            flooder.stop()
        honest.stop()
        for flooder in (honest, *floods):
            closed_with(flooder)  # every message the flood queued was read by now
        elapsed = time.monotonic() - started

    assert media_payloads(reply)
    assert waited < 20, f"the reply took {waited:.1f} s under the flood"
    sent_s = float(sum(sent))  # 1 s of audio per payload
    admitted_at_most = 3 * (1.0 + elapsed + 2.0)  # the burst, real time, slack
    assert sent_s > admitted_at_most, sent  # the flood really outran real time
    assert dropped_audio_s() - before >= sent_s - admitted_at_most


def test_oversized_and_deeply_nested_frames_are_skipped_and_the_call_goes_on(
    client: TestClient, fake_speech: FakeSpeech, engine_turns: list[str]
) -> None:
    call_sid = new_call_sid()
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid))
        twilio.connect()
        twilio.start()
        twilio.read_until(is_end_mark)
        ws.send_text("[" * 5000 + "]" * 5000)  # used to raise RecursionError and hang up
        ws.send_text('{"event":"media","media":' + "{" * 3000 + "}" * 3000 + "}")
        ws.send_text('{"event":"dtmf","pad":"' + "x" * 100_000 + '"}')  # oversized
        twilio.media_payload(base64.b64encode(b"\xff" * 9000).decode())  # > 8 KB of audio
        twilio.dtmf("1")
        reply = twilio.read_until(is_end_mark)
        assert media_payloads(reply)
        twilio.stop()
    assert engine_turns == [call_sid]


# --------------------------------------------------------------------------- the parts


def test_the_codec_refuses_deep_and_oversized_frames_cheaply() -> None:
    with pytest.raises(CodecError, match="nested deeper"):
        decode_inbound("[" * 5000 + "]" * 5000)
    with pytest.raises(CodecError, match="characters"):
        decode_inbound("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CodecError, match="base64 characters"):
        payload = "A" * 12_000
        decode_inbound(
            '{"event":"media","streamSid":"MZ1","media":{"track":"inbound","chunk":"1",'
            f'"timestamp":"0","payload":"{payload}"}}}}',
            frame_bytes=None,
        )
    # Brackets inside strings are not nesting.
    frame = '{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"1","track":"' + "[" * 50 + '"}}'
    assert decode_inbound(frame) == Dtmf("MZ1", "1", "[" * 50)


def test_the_audio_budget_is_real_time_plus_a_burst() -> None:
    budget = AudioBudget(started_at=0.0, burst_s=1.0)
    # 1 s of 20 ms frames at once: the burst takes them; the next one is dropped.
    assert all(budget.admit(160, 0.0) for _ in range(50))
    assert not budget.admit(160, 0.0)
    # Then real time: half a second later, half a second of frames passes.
    assert all(budget.admit(160, 0.5) for _ in range(25))
    assert not budget.admit(160, 0.5)
    # Idle time refills the burst, and no more.
    assert budget.admit(8000, 10.0)
    assert not budget.admit(8000, 10.0)
    assert budget.dropped_payloads == 3
    assert budget.dropped_s == pytest.approx(0.02 + 0.02 + 1.0)
    with pytest.raises(ValueError):
        AudioBudget(started_at=0.0, burst_s=0)


async def test_local_gate_spends_once_and_holds_one_live_stream() -> None:
    gate = LocalStreamGate()
    now = time.time()
    token = verify_stream_token(
        mint_stream_token(AUTH_TOKEN, CLIENT, "CA1", now_s=now),
        AUTH_TOKEN,
        CLIENT,
        "CA1",
        now_s=now,
    )
    assert await gate.spend(token, now)
    assert not await gate.spend(token, now)
    async with gate.live("CA1"):
        with pytest.raises(StreamRefused):
            async with gate.live("CA1"):
                pass
    async with gate.live("CA1"):  # released when the call ended
        pass


async def test_replicas_sharing_redis_share_spent_tokens_and_live_calls(redis_url: str) -> None:
    one, two = RedisStreamGate(redis_url, live_ttl_s=0.6), RedisStreamGate(redis_url)
    try:
        now = time.time()
        raw = mint_stream_token(AUTH_TOKEN, CLIENT, "CA2", now_s=now)
        token = verify_stream_token(raw, AUTH_TOKEN, CLIENT, "CA2", now_s=now)
        assert await one.spend(token, now)
        assert not await two.spend(token, now)  # spent on the other replica

        async with one.live("CA2"):
            await asyncio.sleep(1.0)  # past the lease: it was renewed
            with pytest.raises(StreamRefused) as refusal:
                async with two.live("CA2"):
                    pass
            assert refusal.value.reason == "live"
        async with two.live("CA2"):  # the first replica let go when its call ended
            pass
    finally:
        await one.close()
        await two.close()


def test_a_socket_that_chatters_before_start_is_closed(
    client: TestClient, engine_turns: list[str]
) -> None:
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, new_call_sid())
        twilio.connect()
        twilio.media([b"\xff" * 160] * 40)  # Twilio sends nothing but connected before start
        assert closed_with(twilio) == POLICY_VIOLATION
    assert engine_turns == []

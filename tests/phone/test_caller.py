"""The simulated Twilio caller (:mod:`testkit.phone`) and ``gateway call``.

Two servers: a tiny fake bot speaking Media Streams through the production
codec (to pin down the caller's Twilio behaviour exactly: marks echoed after
playout, ``clear`` drops audio and echoes pending marks, line echo; and that
every message the caller sends decodes), and the real gateway under uvicorn
(``running_gateway``), driven the way Twilio would.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from phone.fake_twilio import AUTH_TOKEN
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection, serve

from channels.phone.codec import (
    Connected,
    Mark,
    Media,
    Start,
    Stop,
    decode_inbound,
    encode_clear,
    encode_mark,
    encode_media,
)
from gateway.cli import app
from providers.speech.audio import TWILIO_FRAME_BYTES, ULAW_SILENCE, pcm16_to_ulaw
from providers.speech.factory import make_stt
from testkit.phone import TwilioCaller, parse_call_report, synthesize

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
GREETING = "Thanks for calling Spa del Sol! How can I help you today?"
SILENCE = bytes([ULAW_SILENCE]) * TWILIO_FRAME_BYTES

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def tone(frames: int, freq_hz: float = 440.0, amplitude: int = 12000) -> bytes:
    """A sine as 8 kHz mu-law, ``frames`` x 20 ms."""
    t = np.arange(frames * TWILIO_FRAME_BYTES) / 8000
    pcm = (amplitude * np.sin(2 * math.pi * freq_hz * t)).astype("<i2").tobytes()
    return pcm16_to_ulaw(pcm)


# --------------------------------------------------------------------------- a fake bot


class FakeBot:
    """Plays 0.2 s of tone, mark "a", 0.8 s of tone, mark "b"; clears after "a" comes back.

    Speaks through the gateway's own codec, so every message the caller sends
    must decode as the gateway would decode Twilio's.
    """

    def __init__(self) -> None:
        self.start: Start | None = None
        self.inbound: list[Media] = []
        self.inbound_while_playing: list[bytes] = []
        self.echoed: list[str] = []
        self.events: list[str] = []
        self.done = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        assert isinstance(decode_inbound(await ws.recv()), Connected)
        start = decode_inbound(await ws.recv())
        assert isinstance(start, Start)
        self.start = start
        sid = start.stream_sid

        audio = tone(50)
        for i in range(10):
            await ws.send(encode_media(sid, audio[i * 160 : (i + 1) * 160]))
        await ws.send(encode_mark(sid, "a"))
        for i in range(10, 50):
            await ws.send(encode_media(sid, audio[i * 160 : (i + 1) * 160]))
        await ws.send(encode_mark(sid, "b"))
        cleared = False
        async for raw in ws:
            message = decode_inbound(raw)
            self.events.append(type(message).__name__)
            assert getattr(message, "stream_sid", sid) == sid
            if isinstance(message, Media):
                self.inbound.append(message)
                if not cleared:
                    self.inbound_while_playing.append(message.payload)
            elif isinstance(message, Mark):
                self.echoed.append(message.name)
                if message.name == "a":
                    await asyncio.sleep(0.1)
                    await ws.send(encode_clear(sid))
                    cleared = True
            elif isinstance(message, Stop):
                break
        self.done.set()


@asynccontextmanager
async def fake_bot_server(bot: FakeBot) -> AsyncIterator[str]:
    async with serve(bot.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/twilio/media/x"


@pytest.mark.parametrize("echo_db", [None, 6.0])
async def test_caller_plays_echoes_marks_and_obeys_clear(echo_db: float | None) -> None:
    bot = FakeBot()
    async with asyncio.timeout(30), fake_bot_server(bot) as url:
        async with TwilioCaller(url, caller="+14155550100", echo_db=echo_db) as call:
            reply = await call.wait_for_reply(timeout_s=10)
            said = await call.say(b"\x00\x10" * 4000, 8000)  # 0.5 s of a DC offset
            await call.listen(0.1)
        await asyncio.wait_for(bot.done.wait(), 5)

    start = bot.start
    assert start is not None
    assert start.call_sid == call.call_sid and call.call_sid.startswith("CA")
    assert start.stream_sid == call.stream_sid and call.stream_sid.startswith("MZ")
    assert start.account_sid == call.account_sid and call.account_sid.startswith("AC")
    assert start.tracks == ("inbound",) and start.sequence_number == 1
    assert start.custom_parameters == {"caller": "+14155550100", "call_sid": call.call_sid}
    assert start.media_format.is_mulaw_8k_mono
    assert all(len(m.payload) == TWILIO_FRAME_BYTES for m in bot.inbound)
    # Twilio's counters: chunks from 1, timestamps 20 ms apart, one sequence for all events
    assert [m.chunk for m in bot.inbound] == list(range(1, len(bot.inbound) + 1))
    assert [m.timestamp_ms for m in bot.inbound] == [20 * i for i in range(len(bot.inbound))]
    assert all(m.track == "inbound" for m in bot.inbound)
    sequence = [m.sequence_number for m in bot.inbound]
    assert sequence == sorted(sequence) and sequence[0] == 2  # 1 was start
    assert bot.events[-1] == "Stop"

    # "a" was echoed after its audio played, "b" at once because of the clear.
    assert bot.echoed == ["a", "b"]
    marks = {m.name: m for m in call.marks}
    assert not marks["a"].cleared and marks["b"].cleared
    assert reply.cleared and reply.cleared_at == call.clears[0]
    assert reply.frames == 50 and reply.payload_sizes == {TWILIO_FRAME_BYTES}
    assert 0 < len(reply.played_ulaw) < reply.received_bytes  # the clear cut the tone short
    assert said.frames == 25

    talking = [m.payload for m in bot.inbound if m.payload != SILENCE]
    if echo_db is None:
        assert len(talking) == said.frames  # the line is silent except for the speech
    else:
        assert len([p for p in bot.inbound_while_playing if p != SILENCE]) > 5  # the tone's echo


async def test_caller_reports_a_closed_stream() -> None:
    async def refuse(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(4404)

    async with asyncio.timeout(20), serve(refuse, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with TwilioCaller(f"ws://127.0.0.1:{port}/x") as call:
            with pytest.raises(ConnectionError) as ended:
                await call.wait_for_reply(timeout_s=10)
    assert call.closed and call.close_code == 4404
    assert "4404" in str(ended.value)


def test_call_report_parsing_tolerates_missing_stages() -> None:
    report = parse_call_report(
        {
            "call_sid": "CA1",
            "client_id": CLIENT,
            "turns": [
                {"index": 0, "kind": "greeting", "reply_text": "Hi", "stages_ms": None},
                {
                    "index": 1,
                    "kind": "speech",
                    "user_text": "hello",
                    "stages_ms": {"endpointing": 500, "stt_final": None},
                    "end_of_speech_to_first_media_ms": 540.5,
                },
            ],
            "barge_ins": [{"reaction_ms": None, "outcome": "resumed"}],
        }
    )
    assert [t.kind for t in report.turns] == ["greeting", "speech"]
    assert report.turns[1].stages_ms == {"endpointing": 500.0}
    assert report.turns[1].end_of_speech_to_first_media_ms == 540.5
    assert report.turns[0].stages_ms == {}
    assert report.barge_ins[0].outcome == "resumed" and report.barge_ins[0].reaction_ms is None


# --------------------------------------------------------------------------- the real gateway


@needs_espeak
async def test_call_against_the_gateway(running_gateway: Any) -> None:
    client_phrases = ["Spa del Sol", "Swedish Massage", "massage", "Manicure", "facial"]
    listener = await asyncio.to_thread(make_stt, "pocketsphinx", None, client_phrases)
    pcm, rate = synthesize("I'd like to book a massage")
    with running_gateway() as gw:
        async with (
            asyncio.timeout(120),
            TwilioCaller(
                f"{gw.url}/twilio/voice/{CLIENT}", auth_token=AUTH_TOKEN, strict=True
            ) as call,
        ):
            greeting = await call.wait_for_reply(timeout_s=30)
            said = await call.say(pcm, rate)
            reply = await call.wait_for_reply(timeout_s=30, after=said.ended_at)

    assert greeting.payload_sizes == {TWILIO_FRAME_BYTES}  # paced 20 ms frames
    assert greeting.played_ms > 1000 and not greeting.cleared
    assert reply.frames > 0 and reply.first_frame_at > said.ended_at
    assert call.marks and all(m.echoed_at is not None for m in call.marks)
    assert not call.protocol_errors
    # PocketSphinx hears espeak through mu-law roughly; some greeting word comes through.
    heard = (await listener.transcribe(greeting.pcm16, 8000)).text.split()
    expected = {w.strip("!?.,").lower() for w in GREETING.split()}
    assert expected & set(heard), heard


@needs_espeak
def test_gateway_call_command_prints_the_turn(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "call",
            CLIENT,
            "--say",
            "hello",
            "--clients-dir",
            str(REPO / "clients"),
            "--timeout",
            "30",
        ],
        env={"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_ADMIN_TOKEN": None},
    )
    assert result.exit_code == 0, result.output
    assert "── greeting" in result.output
    assert "── turn 1" in result.output
    assert "hello" in result.output
    latency = [
        line for line in result.output.splitlines() if "end of speech -> first bot audio" in line
    ]
    assert latency and " ms" in latency[0], result.output

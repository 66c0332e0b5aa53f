"""The engine withdraws what it streamed (``Discard``): the phone stops speaking it.

The engine is the app's real one with ``stream_turn`` (and ``note_heard``)
replaced by a script: deltas, a ``Discard``, other deltas and the final reply,
with tool calls and a handoff (internal events the phone never speaks) in
between. Speech is faked (``fake_speech``: a scripted recogniser, a tone
synthesiser at 10 ms per character), so the timing does not depend on the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from phone.fake_twilio import (
    FakeTwilio,
    answer,
    buzz,
    is_clear,
    is_end_mark,
    is_mark,
    is_media,
    media_payloads,
)
from starlette.websockets import WebSocketDisconnect

from channels.phone.answer import WITHDRAW, Answer
from channels.phone.trace import CallTraces, TurnTrace
from engine.contract import TurnOptions
from engine.messages import (
    ChannelContext,
    ConversationResponse,
    Discard,
    Handoff,
    NormalizedMessage,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEvent,
)
from gateway.app import create_app
from gateway.settings import Settings
from testkit.phone.wire import Outbound
from testkit.speech import FakeSpeech

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"

WITHDRAWN = (
    "Our first opening is Tuesday at ten with Maria. "
    "Maria will meet you at the front desk of the downtown spa."
)
KEPT = (
    "Sorry, that slot has just been taken by someone else. "
    "The next free time is Wednesday at eleven in the morning, for sixty minutes, "
    "in the garden room, and it comes with a free herbal tea before your session. "
    "Shall I book it for you?"
)
ANSWER = "Of course, take your time."

pytestmark = pytest.mark.usefixtures("deadline")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,
        GATEWAY_CLIENTS_DIR=REPO / "clients",
        GATEWAY_DATA_DIR=tmp_path_factory.mktemp("data"),
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class ScriptedEngine:
    """Stands in for ``Engine.stream_turn``/``note_heard``: the first turn streams
    :data:`WITHDRAWN`, waits ``discard_after_s`` (its audio goes out meanwhile),
    discards it and streams :data:`KEPT`; later turns answer :data:`ANSWER`."""

    def __init__(self, discard_after_s: float) -> None:
        self.discard_after_s = discard_after_s
        self.turns: list[str] = []
        self.heard: list[dict[str, str]] = []

    async def stream_turn(self, message: NormalizedMessage, *_: Any) -> AsyncIterator[TurnEvent]:
        self.turns.append(message.text)
        if len(self.turns) > 1:
            yield TextDelta(ANSWER)
            yield ConversationResponse(text=ANSWER)
            return
        first, second = WITHDRAWN.split(". ", 1)
        yield TextDelta(first + ". ")
        yield ToolCall(call_id="c1", name="calendar.find_slots", arguments={"day": "tuesday"})
        yield TextDelta(second[:20])
        await asyncio.sleep(self.discard_after_s)
        yield TextDelta(second[20:])
        yield Discard(reason="conflict")
        yield Handoff(source="support", target="lead_capture")
        for piece in KEPT.split(", "):
            yield TextDelta(piece + (", " if piece != KEPT.split(", ")[-1] else ""))
        yield ToolResult(call_id="c1", name="calendar.find_slots", result={"taken": True})
        yield ConversationResponse(text=KEPT)

    async def note_heard(
        self, client_id: str, channel: str, session_id: str, *, spoken: str, heard: str
    ) -> bool:
        self.heard.append({"session_id": session_id, "spoken": spoken, "heard": heard})
        return True


@pytest.fixture
def engine(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> ScriptedEngine:
    scripted = ScriptedEngine(discard_after_s=0.6)
    real = client.app.state.gateway.engine  # type: ignore[attr-defined]
    monkeypatch.setattr(real, "stream_turn", scripted.stream_turn)
    monkeypatch.setattr(real, "note_heard", scripted.note_heard)
    return scripted


def clear_or_end_mark(message: Outbound) -> bool:
    return bool(is_clear(message) or is_end_mark(message))


def speech_turn(client: TestClient, call_sid: str) -> TurnTrace:
    traces: CallTraces = client.app.state.phone.call_traces  # type: ignore[attr-defined]
    trace = traces.get(call_sid)
    assert trace is not None
    [turn, *_] = [t for t in trace.turns if t.kind == "speech"]
    return turn


def ended(twilio: FakeTwilio) -> None:
    """Read until the gateway closes the socket after ``stop``: by then the call's final
    trace is saved (it is also saved after each reply, so an earlier copy may be there)."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            twilio.ws.receive_text()


def saved_trace(client: TestClient, call_sid: str) -> str:
    """The call trace as saved to the database, as JSON text."""
    traces: CallTraces = client.app.state.phone.call_traces  # type: ignore[attr-defined]
    assert traces.store is not None and client.portal is not None
    deadline = time.monotonic() + 10
    while (saved := client.portal.call(traces.store.get, call_sid)) is None:
        assert time.monotonic() < deadline, "the call trace was never saved"
        time.sleep(0.05)
    return json.dumps(saved)


def test_a_discarded_reply_is_cleared_and_the_replacement_plays(
    client: TestClient,
    fake_speech: FakeSpeech,
    engine: ScriptedEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    call_sid = "CA" + "d" * 32
    fake_speech.stt.queue("When is the next massage?")
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid))
        twilio.connect()
        twilio.start()
        twilio.read_until(is_end_mark)  # the greeting
        twilio.media(buzz())
        withdrawn = twilio.read_until(clear_or_end_mark)
        assert is_clear(withdrawn[-1]), "the withdrawn text was not cleared"
        replacement = twilio.read_until(is_end_mark)
        twilio.stop()
        ended(twilio)
    assert media_payloads(withdrawn), "no audio of the withdrawn text went out before the clear"
    assert media_payloads(replacement)
    assert not [m for m in replacement if is_clear(m)]
    assert engine.turns == ["When is the next massage?"]

    # Spoken: the withdrawn text's first sentence (before the Discard), then the replacement.
    spoken = fake_speech.tts.spoken
    kept = [s for s in spoken if s in KEPT]
    assert "Our first opening is Tuesday at ten with Maria." in spoken
    assert spoken.index(kept[0]) > spoken.index("Our first opening is Tuesday at ten with Maria.")
    assert " ".join(kept) == KEPT
    assert not [s for s in spoken if "front desk" in s]  # queued after the Discard: dropped

    turn = speech_turn(client, call_sid)
    assert turn.reply_text == KEPT
    assert turn.heard_text == KEPT  # played to the end
    assert turn.interrupted is False
    assert engine.heard == []  # nothing was cut: the history keeps the reply as it is
    for record in (json.dumps(turn.as_json()), saved_trace(client, call_sid)):
        assert "Tuesday" not in record and "Maria" not in record
        assert "Wednesday at eleven" in record
    # Neither what the caller said nor what the bot said reaches a log line.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("channels.phone")]
    assert any("withdrew" in line for line in ours), ours
    assert not [line for line in ours if "massage" in line or "Maria" in line]
    assert not [line for line in ours if "Wednesday" in line]


def test_what_the_caller_heard_names_only_the_replacement(
    client: TestClient, fake_speech: FakeSpeech, engine: ScriptedEngine
) -> None:
    call_sid = "CA" + "e" * 32
    fake_speech.stt.queue("When is the next massage?", "Hang on a second")
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid))
        twilio.connect()
        twilio.start()
        twilio.read_until(is_end_mark)  # the greeting
        twilio.media(buzz())
        withdrawn = twilio.read_until(clear_or_end_mark)
        assert is_clear(withdrawn[-1]), "the withdrawn text was not cleared"
        twilio.read_until(is_media)  # the replacement is playing
        for _ in range(6):  # some of it is heard (marks are echoed as read)
            twilio.read_until(is_mark)
        twilio.media(buzz())  # the caller talks over it
        twilio.read_until(is_clear)
        twilio.read_until(is_end_mark)  # the answer to the interruption
        twilio.stop()
        ended(twilio)
    assert engine.turns == ["When is the next massage?", "Hang on a second"]
    deadline = time.monotonic() + 10
    while not engine.heard:
        assert time.monotonic() < deadline, "note_heard was never called"
        time.sleep(0.05)
    [heard] = engine.heard
    assert heard["session_id"] == call_sid
    assert heard["spoken"] == KEPT
    assert heard["heard"] and KEPT.startswith(heard["heard"].rstrip(",."))
    assert "Tuesday" not in heard["heard"] and "Maria" not in heard["heard"]
    turn = speech_turn(client, call_sid)
    assert turn.interrupted and turn.heard_text == heard["heard"]
    assert turn.reply_text == KEPT
    assert "Maria" not in saved_trace(client, call_sid)


class ListEngine:
    """Streams the given events, whatever the turn; records nothing."""

    def __init__(self, *events: TurnEvent) -> None:
        self.events = events

    async def stream_turn(
        self, message: NormalizedMessage, options: TurnOptions | None = None
    ) -> AsyncGenerator[TurnEvent, None]:
        for event in self.events:
            yield event

    async def note_heard(
        self, client_id: str, channel: str, session_id: str, *, spoken: str, heard: str
    ) -> bool:
        return True


async def test_an_answer_withdraws_what_it_streamed_before_a_discard() -> None:
    engine = ListEngine(
        TextDelta("One. Two"),
        Discard(),
        TextDelta("Three. Fo"),
        ToolCall(call_id="c", name="crm.lookup"),
        TextDelta("ur."),
        ConversationResponse(text="Three. Four."),
    )
    answer = Answer(engine, CLIENT, "CA1", "hi", ChannelContext())
    await answer.task
    assert answer.withdrawn.is_set()  # until the reader takes the marker
    items = [item async for item in answer.sentences()]
    assert items == [WITHDRAW, "Three.", "Four."]  # "One." was never taken: dropped
    assert not answer.withdrawn.is_set()
    assert answer.response == ConversationResponse(text="Three. Four.")


async def test_after_a_discard_with_nothing_streamed_the_final_text_is_spoken() -> None:
    engine = ListEngine(
        TextDelta("Booked for Tuesday."),
        Discard(reason="failed"),
        ConversationResponse(text="Sorry, something went wrong. Please try again."),
    )
    answer = Answer(engine, CLIENT, "CA2", "hi", ChannelContext())
    await answer.task
    items = [item async for item in answer.sentences()]
    assert items == [WITHDRAW, "Sorry, something went wrong.", "Please try again."]

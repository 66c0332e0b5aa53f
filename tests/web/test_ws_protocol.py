"""DESIGN.md's web chat protocol, spoken to the real gateway under uvicorn.

The gateway runs the real app (``create_app``) in a background thread; these
tests talk to it with the ``websockets`` client library like any outside client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.agents import Agent, AgentReply, TurnContext
from engine.config import ClientConfig
from engine.errors import StoreError
from engine.messages import AgentEvent, TextDelta

from .chat_client import TIMEOUT_S, Event, ids, open_chat, reply_text

ADMIN = {"Authorization": "Bearer test-admin-token"}
BOOK = "I'd like to book a massage"


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Run a test with in-process locks and with Redis locks (a test database of its own)."""
    if request.param == "embedded":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_url")}


@pytest.fixture
def gateway(running_gateway: Any, web_clients_dir: Path) -> Iterator[Any]:
    with running_gateway() as gw:
        yield gw


def chat_url(gw: Any, client_id: str = "spa-del-sol") -> str:
    return f"{gw.ws_url}/web/chat/{client_id}"


async def conversation(gw: Any, session_id: str, *, missing_ok: bool = False) -> Any:
    async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http:
        resp = await http.get("/admin/api/conversations", params={"client_id": "spa-del-sol"})
    resp.raise_for_status()
    records = [c for c in resp.json() if c["session_id"] == session_id]
    if missing_ok and not records:
        return None
    [record] = records
    return dict(record)


def assert_increasing(events: list[Event]) -> None:
    numbers = ids(events)
    assert numbers == sorted(set(numbers)), numbers


# -- connecting -----------------------------------------------------------------------------


async def test_session_then_streamed_tokens_then_complete(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        session = await chat.session()
        assert re.fullmatch(r"[0-9a-f]{32}", session["session_id"])
        assert session["resumed"] is False
        assert session["greeting"]

        events = await chat.ask(BOOK, "c-1")
        tokens, complete = events[:-1], events[-1]
        assert tokens, "the reply should stream at least one token"
        assert all(t["type"] == "token" and t["reply_to"] == "c-1" for t in tokens)
        assert complete["type"] == "complete"
        assert complete["reply_to"] == "c-1"
        assert reply_text(events) == complete["text"]
        assert isinstance(complete["quick_replies"], list)
        assert isinstance(complete["actions"], list)
        meta = complete["metadata"]
        assert "expecting" in meta
        assert meta["purpose"] == "lead_capture"
        assert meta["expecting"] is not None
        assert_increasing(chat.seen)
        assert chat.seen[0] is session

        second = await chat.ask("My name is Maria Lopez", "c-2")
        assert second[-1]["metadata"]["slots"].get("name")
        assert_increasing(chat.seen)


async def test_messages_sent_back_to_back_are_answered_in_order(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        await chat.session()
        for n, text in enumerate(["hello", BOOK, "Maria Lopez"]):
            await chat.message(text, f"c-{n}")
        replies = [await chat.reply() for _ in range(3)]
        assert [r[-1]["reply_to"] for r in replies] == ["c-0", "c-1", "c-2"]
        assert_increasing(chat.seen)


async def test_message_without_id_is_answered(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        await chat.session()
        events = await chat.ask("hello")
        assert events[-1]["type"] == "complete"
        assert events[-1]["reply_to"] is None


async def test_unknown_client_is_closed_with_4404(gateway: Any) -> None:
    async with open_chat(chat_url(gateway, "no-such-spa")) as chat:
        code, reason = await chat.close_code()
    assert code == 4404
    assert "no-such-spa" in reason


async def test_disabled_web_channel_is_closed_with_4403(gateway: Any) -> None:
    async with open_chat(chat_url(gateway, "closed-shop")) as chat:
        code, reason = await chat.close_code()
    assert code == 4403
    assert "closed-shop" in reason


async def test_origin_not_in_allowed_origins_is_closed_with_4403(gateway: Any) -> None:
    async with open_chat(chat_url(gateway), origin="https://evil.example") as chat:
        code, _ = await chat.close_code()
    assert code == 4403


@pytest.mark.parametrize(
    ("client_id", "origin"),
    [
        ("spa-del-sol", "https://spadelsol.example"),
        ("spa-del-sol", "http://localhost:8080"),
        ("spa-del-sol", None),  # not a browser: no Origin header, allowed
        ("open-shop", "https://anywhere.example"),  # allowed_origins: ["*"]
    ],
)
async def test_allowed_origins(gateway: Any, client_id: str, origin: str | None) -> None:
    async with open_chat(chat_url(gateway, client_id), origin=origin) as chat:
        await chat.session()
        events = await chat.ask("hello")
        assert events[-1]["type"] == "complete"


async def test_active_connections_gauge_counts_open_sockets(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        await chat.session()
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            text = (await http.get("/metrics")).text
    match = re.search(r'^gateway_active_connections\{channel="web"\} (\S+)$', text, re.M)
    assert match, "gauge missing from /metrics"
    assert float(match.group(1)) >= 1


async def test_widget_js_is_served_as_javascript(gateway: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        resp = await http.get("/widget.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/javascript")
    assert "max-age" in resp.headers["cache-control"]
    assert "attachShadow" in resp.text


# -- bad input ------------------------------------------------------------------------------

BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("this is not json", "bad_json"),
    ("[1, 2, 3]", "bad_frame"),
    ('{"text": "no type"}', "bad_frame"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "message"}', "bad_message"),
    ('{"type": "message", "text": ""}', "bad_message"),
    ('{"type": "message", "text": 42}', "bad_message"),
    (json.dumps({"type": "message", "text": "x" * 2001}), "too_large"),
    (json.dumps({"type": "message", "text": "hi", "pad": "x" * 9000}), "too_large"),
    (b"\x00binary\xff", "bad_frame"),
    ('{"type": "resume", "session_id": "abc", "last_event_id": 0}', "bad_frame"),  # not first
]


async def test_each_bad_frame_gets_an_error_and_the_conversation_continues(
    gateway: Any,
) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        session = await chat.session()
        first = await chat.ask(BOOK, "c-1")
        assert first[-1]["metadata"]["expecting"] == "name"
        for frame, code in BAD_FRAMES:
            await chat.send(frame)
            error = await chat.recv()
            assert error["type"] == "error", (frame, error)
            assert error["code"] == code, (frame, error)
            assert error["message"]
        after = await chat.ask("Maria Lopez", "c-2")
        assert after[-1]["metadata"]["slots"]["name"] == "Maria Lopez"
        assert after[-1]["metadata"]["expecting"] != "name"
        assert_increasing(chat.seen)

    record = await conversation(gateway, session["session_id"])
    assert record["turn_count"] == 2


async def test_hostile_frames_are_answered_and_the_socket_goes_on(gateway: Any) -> None:
    deep = '{"a":' * 1300 + "1" + "}" * 1300  # 7.6 KB; json.loads alone hits RecursionError
    async with open_chat(chat_url(gateway)) as chat:
        await chat.session()
        await chat.ask(BOOK, "c-1")
        await chat.send(deep)
        error = await chat.recv()
        assert error["type"] == "error" and error["code"] == "bad_frame", error
        assert "nested too deeply" in error["message"]
        # A lone surrogate (valid JSON, not encodable as UTF-8) becomes U+FFFD.
        await chat.send('{"type": "message", "text": "hello \\ud800", "id": "c-\\udfff"}')
        answered = await chat.reply()
        assert answered[-1]["reply_to"] == "c-\ufffd"
        after = await chat.ask("Maria Lopez", "c-3")
        assert after[-1]["metadata"]["slots"]["name"] == "Maria Lopez"
        assert_increasing(chat.seen)


async def test_rate_limit_refuses_messages_and_keeps_the_socket(running_gateway: Any) -> None:
    with running_gateway(GATEWAY_WEB_RATE_BURST=2, GATEWAY_WEB_RATE_PER_S=0.001) as gw:
        async with open_chat(chat_url(gw)) as chat:
            session = await chat.session()
            for n in range(3):
                await chat.message(BOOK if n == 0 else "hello", f"c-{n}")
            first, second = await chat.reply(), await chat.reply()
            limited = await chat.recv()
            assert [first[-1]["reply_to"], second[-1]["reply_to"]] == ["c-0", "c-1"]
            assert limited["type"] == "error"
            assert limited["code"] == "rate_limited"
            assert limited["reply_to"] == "c-2"
            await chat.send("not json")  # the socket still answers
            assert (await chat.recv())["code"] == "bad_json"
            last_id = chat.seen[-1]["event_id"]

        # A refused message was not marked as processed: it may be sent again.
        async with open_chat(chat_url(gw)) as chat:
            await chat.resume(session["session_id"], last_id)
            again = await chat.ask("hello", "c-2")
            assert again[-1]["reply_to"] == "c-2"


# -- exactly once, resume -------------------------------------------------------------------


async def test_duplicate_message_id_is_not_run_twice(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        session = await chat.session()
        await chat.ask(BOOK, "c-1")
        await chat.message(BOOK, "c-1")  # a retry of the same message
        after = await chat.ask("Maria Lopez", "c-2")
        assert {e["reply_to"] for e in after} == {"c-2"}
        cursor = chat.seen[-1]["event_id"]

    async with open_chat(chat_url(gateway)) as chat:  # a retry after reconnecting
        await chat.resume(session["session_id"], cursor)
        await chat.message("Maria Lopez", "c-2")
        last = await chat.ask("(415) 555-0134", "c-3")
        assert {e["reply_to"] for e in last} == {"c-3"}

    record = await conversation(gateway, session["session_id"])
    said = [t["text"] for t in record["transcript"] if t["role"] == "user"]
    assert said == [BOOK, "Maria Lopez", "(415) 555-0134"]
    assert record["turn_count"] == 3


async def test_resume_replays_exactly_the_missed_events(
    running_gateway: Any, store_settings: dict[str, Any]
) -> None:
    with running_gateway(**store_settings) as gw:
        async with open_chat(chat_url(gw)) as one:
            session = await one.session()
            sid = session["session_id"]
            await one.ask(BOOK, "c-1")
            await one.send("oops")  # an error event: connection-scoped, never replayed
            assert (await one.recv())["type"] == "error"
            await one.message("Maria Lopez", "c-2")
            cut = await one.recv()  # drop the socket after the first event of this reply
            assert cut["type"] in ("token", "complete")
        seen_before = one.seen

        async with open_chat(chat_url(gw)) as two:
            resumed = await two.resume(sid, cut["event_id"])
            assert resumed["session_id"] == sid
            assert resumed["resumed"] is True
            assert resumed["event_id"] == cut["event_id"]
            replayed = [] if cut["type"] == "complete" else await two.reply()
            # The conversation goes on in the same session, ids still increasing.
            more = await two.ask("(415) 555-0134", "c-3")
            assert more[-1]["metadata"]["slots"].get("phone") == "+14155550134"
            assert_increasing(two.seen)
            assert more[0]["event_id"] > cut["event_id"]

        # Nothing lost, nothing twice: what the first socket saw plus the replay
        # is the whole event log, which a resume from 0 returns.
        async with open_chat(chat_url(gw)) as three:
            await three.resume(sid, 0)
            full = [await three.recv() for _ in range(len(seen_before) - 2 + len(replayed))]
            full += await three.reply()
        logged = [e for e in seen_before + replayed + more if e["type"] in ("token", "complete")]
        assert full == logged
        assert not [e for e in full if e["type"] in ("error", "session")]
        if cut["type"] == "token":
            assert cut["content"] + reply_text(replayed) == replayed[-1]["text"]


class GatedAgent(Agent):
    """Wraps the real lead-capture agent; after its first text piece it waits for
    ``gate`` (a threading.Event the test sets), so a turn stays in flight."""

    purpose = "lead_capture"

    def __init__(self, inner: Agent, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate

    def intent(self, text: str, client: ClientConfig) -> float:
        return self.inner.intent(text, client)

    async def handle(self, ctx: TurnContext) -> AgentReply:
        return await self.inner.handle(ctx)

    async def stream(self, ctx: TurnContext) -> AsyncIterator[AgentEvent | AgentReply]:
        waited = False
        async for piece in self.inner.stream(ctx):
            yield piece
            if not waited and isinstance(piece, TextDelta):
                waited = True
                assert await asyncio.to_thread(self.gate.wait, TIMEOUT_S), "gate never opened"


class LockSpy:
    """Wraps the gateway's locks' ``lock`` (the engine's turns and the web
    channel's resumes share them): records ``session:`` lock requests."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.requests: list[str] = []
        self.second_request = threading.Event()

    def lock(self, name: str, timeout_s: float = 10.0) -> Any:
        if name.startswith("session:"):
            self.requests.append(name)
            if len(self.requests) >= 2:
                self.second_request.set()
        return self._lock(name, timeout_s)


@contextmanager
def gated_turns(gw: Any) -> Iterator[tuple[threading.Event, LockSpy]]:
    engine = gw.app.state.gateway.engine
    locks = gw.app.state.gateway.locks
    assert engine.locks is locks
    gate = threading.Event()
    spy = LockSpy(locks.lock)
    original_agents = engine.replace_agents([GatedAgent(engine.agents["lead_capture"], gate)])
    locks.lock = spy.lock
    try:
        yield gate, spy
    finally:
        gate.set()
        engine.replace_agents(original_agents)
        del locks.lock


async def test_resume_racing_an_in_flight_turn_gets_all_of_it_once(
    running_gateway: Any, store_settings: dict[str, Any]
) -> None:
    with running_gateway(**store_settings) as gw, gated_turns(gw) as (gate, spy):
        async with open_chat(chat_url(gw)) as one:
            sid = (await one.session())["session_id"]
            await one.message(BOOK, "c-1")
            assert await asyncio.to_thread(
                lambda: bool(spy.requests) or spy.second_request.wait(0.05) or bool(spy.requests)
            )
        # The socket is gone; the turn is still running on the server, held at the gate.

        async with open_chat(chat_url(gw)) as two:
            await two.send({"type": "resume", "session_id": sid, "last_event_id": 0})
            # Let the turn finish only once the resume is waiting for the session.
            assert await asyncio.to_thread(spy.second_request.wait, TIMEOUT_S)
            assert spy.requests == [spy.requests[0]] * 2
            gate.set()
            resumed = await two.session()
            assert resumed["resumed"] is True
            rest = await two.reply()

        assert ids(rest) == list(range(1, 1 + len(rest)))
        assert {e["reply_to"] for e in rest} == {"c-1"}
        assert reply_text(rest) == rest[-1]["text"]
        assert rest[-1]["metadata"]["expecting"] == "name"

        record = await conversation(gw, sid)
        assert record["turn_count"] == 1  # the dropped socket did not cancel the turn


async def test_resume_of_an_unknown_session_starts_a_new_one(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        await chat.send({"type": "resume", "session_id": uuid.uuid4().hex, "last_event_id": 7})
        session = await chat.session()
        assert session["resumed"] is False
        error = await chat.recv()
        assert error["code"] == "unknown_session"
        events = await chat.ask(BOOK, "c-1")
        assert events[-1]["metadata"]["expecting"] == "name"
        assert_increasing(chat.seen)


async def test_a_session_of_another_client_cannot_be_resumed(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        sid = (await chat.session())["session_id"]
        await chat.ask(BOOK, "c-1")
    async with open_chat(chat_url(gateway, "open-shop")) as chat:
        await chat.send({"type": "resume", "session_id": sid, "last_event_id": 0})
        session = await chat.session()
        assert session["session_id"] != sid
        assert (await chat.recv())["code"] == "unknown_session"


async def test_late_resume_still_moves_the_connection_to_the_session(gateway: Any) -> None:
    async with open_chat(chat_url(gateway)) as chat:
        sid = (await chat.session())["session_id"]
        events = await chat.ask(BOOK, "c-1")

    async with open_chat(chat_url(gateway)) as chat:
        fresh = await chat.session()  # announced because no resume came in time
        assert fresh["session_id"] != sid
        resumed = await chat.resume(sid, 0)
        assert resumed["session_id"] == sid
        assert resumed["resumed"] is True
        replay = await chat.reply()
        assert replay == events
        more = await chat.ask("Maria Lopez", "c-2")
        assert more[-1]["metadata"]["slots"]["service"]  # the old conversation's slot is kept


async def test_logs_carry_no_message_text(
    running_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "maria.private@example.com"
    with running_gateway(GATEWAY_LOG_LEVEL="DEBUG") as gw, caplog.at_level(logging.DEBUG):
        async with open_chat(chat_url(gw)) as chat:
            sid = (await chat.session())["session_id"]
            await chat.ask(f"{BOOK}, my email is {secret}", "c-1")
            await chat.send(json.dumps({"type": "message", "text": [secret]}))
            await chat.recv()
            await chat.send(json.dumps({"type": "dance", "text": secret}))
            await chat.recv()
    web_records = [r for r in caplog.records if r.name.startswith(("channels.web", "uvicorn"))]
    assert web_records, "expected the web adapter to log connections"
    assert not [r for r in web_records if secret in r.getMessage()]
    # The session id is a bearer secret for resume: logs carry a prefix only.
    assert not [r for r in web_records if sid in r.getMessage()]


class FailingCommit:
    """Wraps the engine's committer: the first ``fail`` commits raise StoreError,
    like a database that hiccups while the turn is being written."""

    def __init__(self, committer: Any, fail: int = 1) -> None:
        self._committer = committer
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._committer, name)

    async def commit(self, client: Any, turn: Any) -> int:
        if self.fail > 0:
            self.fail -= 1
            raise StoreError("database write failed (test)")
        result: int = await self._committer.commit(client, turn)
        return result


async def test_a_failed_commit_is_an_error_and_the_same_message_is_answered_once_on_retry(
    running_gateway: Any,
) -> None:
    """Regression: the message id used to be marked processed before the turn
    committed, so the widget's retry after ``unavailable`` was dropped silently."""
    with running_gateway() as gw:
        engine = gw.app.state.gateway.engine
        engine.committer = FailingCommit(engine.committer)
        async with open_chat(chat_url(gw)) as chat:
            sid = (await chat.session())["session_id"]
            await chat.message(BOOK, "c-1")
            error = await chat.recv()
            assert error["type"] == "error"
            assert error["code"] == "unavailable"
            assert error["reply_to"] == "c-1"
            # Nothing of the failed turn was kept: no events, no transcript.
            assert (await conversation(gw, sid, missing_ok=True)) is None
            events = await chat.ask(BOOK, "c-1")  # the widget's retry, same id
            assert events[-1]["reply_to"] == "c-1"
            assert events[-1]["metadata"]["expecting"] == "name"
            assert [e for e in events if e["type"] == "token"], "the reply streams tokens"
            events = await chat.ask("hello", "c-2")
            assert events[-1]["reply_to"] == "c-2"
            assert_increasing(chat.seen)
        record = await conversation(gw, sid)
        assert [t["role"] for t in record["transcript"]] == ["user", "assistant"] * 2

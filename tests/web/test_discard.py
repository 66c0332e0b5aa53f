"""The ``discard`` event: a live agent's streamed tokens are withdrawn when its
turn fails or its commit conflicts, over the real websocket; the replay after
a reconnect shows the same sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.agents import Agent, AgentReply, TurnContext
from engine.config import ClientConfig
from engine.errors import CommitConflict
from engine.messages import AgentEvent, TextDelta

from .chat_client import ids, open_chat, reply_text


class LiveAgent(Agent):
    """Streams like an LLM: tokens as they are generated, then fails or answers."""

    purpose = "live"
    streams_live = True

    def __init__(self, fail_first: bool) -> None:
        self.fail_first = fail_first
        self.runs = 0

    def intent(self, text: str, client: ClientConfig) -> float:
        return 1.0

    async def handle(self, ctx: TurnContext) -> AgentReply:  # pragma: no cover - stream() is used
        raise NotImplementedError

    async def stream(self, ctx: TurnContext) -> AsyncIterator[AgentEvent | AgentReply]:
        self.runs += 1
        yield TextDelta("Your booking is ")
        yield TextDelta("confirmed")
        if self.fail_first and self.runs == 1:
            raise RuntimeError("the model stream broke")
        yield TextDelta(" for 2 PM.")
        yield AgentReply(text="Your booking is confirmed for 2 PM.")


@pytest.fixture
def gateway(running_gateway: Any, web_clients_dir: Path) -> Iterator[Any]:
    with running_gateway() as gw:
        yield gw


def install(gw: Any, agent: Agent) -> None:
    gw.app.state.gateway.engine.replace_agents([agent])


async def test_a_failed_live_turn_discards_its_tokens_and_sends_the_fallback(gateway: Any) -> None:
    install(gateway, LiveAgent(fail_first=True))
    async with open_chat(f"{gateway.ws_url}/web/chat/spa-del-sol") as chat:
        session = await chat.session()
        events = await chat.ask("book me at 2", "m1")
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["token", "token", "discard"]
    assert events[2]["reason"] == "failed" and events[2]["reply_to"] == "m1"
    complete = events[-1]
    assert "went wrong" in complete["text"] and "confirmed" not in complete["text"]
    assert reply_text(events) == complete["text"]
    assert ids(events) == sorted(ids(events)) and len(set(ids(events))) == len(events)
    # a reconnect replays exactly what was sent, discard included
    async with open_chat(f"{gateway.ws_url}/web/chat/spa-del-sol") as chat:
        await chat.resume(session["session_id"], 0)
        replayed = [await chat.recv() for _ in events]
    assert replayed == events


async def test_a_conflicting_commit_discards_the_tokens_and_streams_the_rerun(
    gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(gateway, LiveAgent(fail_first=False))
    committer = gateway.app.state.gateway.engine.committer
    real = committer.commit
    calls = 0

    async def conflict_once(client: Any, turn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise CommitConflict(str(turn.session.key))
        await real(client, turn)

    monkeypatch.setattr(committer, "commit", conflict_once)
    async with open_chat(f"{gateway.ws_url}/web/chat/spa-del-sol") as chat:
        await chat.session()
        events = await chat.ask("book me at 2", "m1")
    kinds = [e["type"] for e in events]
    assert kinds == ["token", "token", "token", "discard", "token", "token", "token", "complete"]
    assert events[3]["reason"] == "conflict"
    assert reply_text(events) == events[-1]["text"] == "Your booking is confirmed for 2 PM."

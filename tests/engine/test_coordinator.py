"""The coordinator with scripted agents: handoff, delegation with a structured
handback, suspend/resume, the hop limit, live streaming with a discard, and
typed history items — through the real engine and its store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from engine.agents import (
    Agent,
    AgentReply,
    Handback,
    HandbackStatus,
    HandoffRequest,
    TurnContext,
)
from engine.config import ClientConfig
from engine.messages import (
    AgentEvent,
    Channel,
    ConversationResponse,
    Discard,
    Handoff,
    NormalizedMessage,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEvent,
)
from engine.session import HandoffItem, SessionKey, ToolCallItem, ToolResultItem, Turn
from gateway.app import Gateway

CLIENT = "spa-del-sol"
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))


class Scripted(Agent):
    """An agent whose behaviour per message is a function in the test."""

    def __init__(self, name: str, claims: str = "", **behaviour: object) -> None:
        self.name = name
        self.claims = claims
        self.behaviour = behaviour
        self.seen: list[str] = []

    @property  # type: ignore[override]
    def purpose(self) -> str:  # type: ignore[override]
        return self.name

    def intent(self, text: str, client: ClientConfig) -> float:
        return 0.9 if self.claims and self.claims in text else 0.0

    async def handle(self, ctx: TurnContext) -> AgentReply:
        self.seen.append(ctx.text)
        rule = self.behaviour.get("handle")
        assert callable(rule)
        reply = rule(ctx)
        if hasattr(reply, "__await__"):
            reply = await reply
        assert isinstance(reply, AgentReply)
        return reply

    async def resume(self, ctx: TurnContext, summary: str) -> AgentReply | None:
        rule = self.behaviour.get("resume")
        return rule(ctx, summary) if callable(rule) else None  # type: ignore[no-any-return]


@pytest.fixture
def gw_options() -> dict[str, object]:
    """``gw`` (tests/conftest.py) at :data:`NOW`."""
    return {"clock": lambda: NOW}


def install(gw: Gateway, *agents: Agent) -> None:
    gw.engine.replace_agents(agents)


async def turn(gw: Gateway, text: str, session: str = "s1") -> list[TurnEvent]:
    return [e async for e in gw.engine.stream_turn(_message(session, text))]


def final(events: list[TurnEvent]) -> ConversationResponse:
    last = events[-1]
    assert isinstance(last, ConversationResponse)
    return last


async def history(gw: Gateway, session: str = "s1") -> list[object]:
    loaded = await gw.store.load(SessionKey(CLIENT, "web", session))
    assert loaded is not None
    return list(loaded.session.transcript)


async def test_handoff_moves_control_and_the_target_answers_the_same_message(gw: Gateway) -> None:
    billing = Scripted("billing", handle=lambda ctx: AgentReply(text=f"Billing here: {ctx.text}"))
    triage = Scripted(
        "triage",
        claims="invoice",
        handle=lambda ctx: AgentReply(
            text="", handoff=HandoffRequest("billing", reason="billing topic")
        ),
    )
    install(gw, triage, billing)
    r = final(await turn(gw, "my invoice is wrong"))
    assert r.text == "Billing here: my invoice is wrong"
    assert r.metadata.purpose == "billing"
    assert billing.seen == ["my invoice is wrong"]
    items = await history(gw)
    assert any(
        isinstance(i, HandoffItem) and (i.source, i.target) == ("triage", "billing") for i in items
    )
    # billing kept the conversation (no handback): the next message goes straight to it
    r = final(await turn(gw, "still wrong"))
    assert r.metadata.purpose == "billing" and triage.seen == ["my invoice is wrong"]


async def test_delegation_returns_a_structured_handback_and_control_stays(gw: Gateway) -> None:
    faq = Scripted(
        "faq",
        handle=lambda ctx: AgentReply(
            text="Parking is free behind the building.",
            handback=Handback(HandbackStatus.COMPLETED, summary="parking"),
        ),
    )
    seen: list[Handback] = []

    async def concierge(ctx: TurnContext) -> AgentReply:
        result = await ctx.delegate("faq", "parking?", reason="a fact")
        seen.append(result)
        missing = await ctx.delegate("nobody", "x")
        seen.append(missing)
        return AgentReply(text=f"{result.text} Anything else?")

    install(gw, Scripted("concierge", claims="parking", handle=concierge), faq)
    r = final(await turn(gw, "is there parking"))
    assert r.text == "Parking is free behind the building. Anything else?"
    assert r.metadata.purpose == "concierge"
    assert seen[0].status is HandbackStatus.COMPLETED and seen[0].summary == "parking"
    assert seen[1].status is HandbackStatus.FAILED
    assert any(isinstance(i, HandoffItem) and i.mode == "delegate" for i in await history(gw))


async def test_an_interrupted_journey_is_suspended_and_resumed(gw: Gateway) -> None:
    def booking(ctx: TurnContext) -> AgentReply:
        if "parking" in ctx.text:
            return AgentReply(
                text="", handoff=HandoffRequest(None, reason="question", suspend=True)
            )
        return AgentReply(text="Which day?", expecting="day")

    def resume(ctx: TurnContext, summary: str) -> AgentReply:
        return AgentReply(text="Back to your booking: which day?", expecting="day")

    faq = Scripted(
        "faq",
        claims="parking",
        handle=lambda ctx: AgentReply(
            text="Yes, free parking.", handback=Handback(HandbackStatus.COMPLETED)
        ),
    )
    install(gw, Scripted("booking", claims="book", handle=booking, resume=resume), faq)
    assert final(await turn(gw, "book me in")).metadata.purpose == "booking"
    events = await turn(gw, "do you have parking")
    r = final(events)
    assert r.text == "Yes, free parking. Back to your booking: which day?"
    assert r.metadata.purpose == "booking" and r.metadata.expecting == "day"
    # the streamed deltas add up to the final text
    assert "".join(e.content for e in events if isinstance(e, TextDelta)) == r.text
    modes = [(i.target, i.mode, i.reason) for i in await history(gw) if isinstance(i, HandoffItem)]
    assert ("booking", "handoff", "resume") in modes
    assert final(await turn(gw, "Friday")).metadata.purpose == "booking"


async def test_handoff_loops_hit_the_hop_limit_and_get_the_fallback(gw: Gateway) -> None:
    ping = Scripted(
        "ping", claims="go", handle=lambda ctx: AgentReply("", handoff=HandoffRequest("pong"))
    )
    pong = Scripted("pong", handle=lambda ctx: AgentReply("", handoff=HandoffRequest("ping")))
    install(gw, ping, pong)
    r = final(await turn(gw, "go"))
    assert r.metadata.state == "fallback"
    assert any(q.title == "Talk to a person" for q in r.quick_replies)


class LiveAgent(Agent):
    """A scripted stand-in for an LLM: streams events as it 'generates'."""

    purpose = "live"
    streams_live = True

    def __init__(self, script: list[AgentEvent | AgentReply | Exception]) -> None:
        self.script = script

    def intent(self, text: str, client: ClientConfig) -> float:
        return 1.0 if "live" in text else 0.0

    async def handle(self, ctx: TurnContext) -> AgentReply:  # pragma: no cover - stream() is used
        raise NotImplementedError

    async def stream(self, ctx: TurnContext) -> AsyncIterator[AgentEvent | AgentReply]:
        for item in self.script:
            if isinstance(item, Exception):
                raise item
            yield item


async def test_a_live_agent_streams_tools_and_its_text_is_discarded_when_it_fails(
    gw: Gateway,
) -> None:
    install(
        gw,
        LiveAgent(
            [
                ToolCall("c1", "availability", {"day": "2026-11-27"}),
                ToolResult("c1", "availability", ["14:00", "15:00"]),
                TextDelta("Your booking is "),
                TextDelta("confirmed and "),
                RuntimeError("the model stream broke"),
            ]
        ),
    )
    events = await turn(gw, "live please")
    kinds = [type(e).__name__ for e in events]
    assert kinds[:4] == ["ToolCall", "ToolResult", "TextDelta", "TextDelta"]
    assert isinstance(events[4], Discard) and events[4].reason == "failed"
    r = final(events)
    assert r.metadata.state == "fallback"
    after = "".join(e.content for e in events[5:] if isinstance(e, TextDelta))
    assert after == r.text and "confirmed" not in r.text
    # the failed turn's changes were dropped: only the fallback exchange is stored
    lines = [i for i in await history(gw) if isinstance(i, Turn)]
    assert [t.role for t in lines] == ["user", "assistant"]


async def test_a_live_agent_keeps_tool_calls_in_the_typed_history(gw: Gateway) -> None:
    install(
        gw,
        LiveAgent(
            [
                ToolCall("c1", "availability", {"day": "2026-11-27"}),
                ToolResult("c1", "availability", ["14:00"]),
                Handoff("live", "live", reason="noop"),
                TextDelta("2 PM is free."),
                AgentReply(text="2 PM is free."),
            ]
        ),
    )
    r = final(await turn(gw, "live: anything friday?"))
    assert r.text == "2 PM is free." and r.metadata.purpose == "live"
    items = await history(gw)
    call = next(i for i in items if isinstance(i, ToolCallItem))
    result = next(i for i in items if isinstance(i, ToolResultItem))
    assert call.arguments == {"day": "2026-11-27"} and result.result == ["14:00"]
    assert isinstance(items[0], Turn)


async def test_a_failing_agent_logs_its_stack_but_never_the_users_words(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(ctx: TurnContext) -> AgentReply:
        raise ValueError(f"could not parse {ctx.text!r}")

    install(gw, Scripted("fragile", claims="my", handle=explode))
    secret = "my card is 4111 1111 1111 1111"
    with caplog.at_level("DEBUG"):
        r = final(await turn(gw, secret))
    assert r.metadata.state == "fallback"
    logged = "\n".join(
        rec.getMessage() + (str(rec.exc_info) if rec.exc_info else "") for rec in caplog.records
    )
    assert "ValueError" in logged and "explode" in logged  # type and where
    assert "4111" not in logged


def _message(session: str, text: str) -> NormalizedMessage:
    return NormalizedMessage(client_id=CLIENT, channel=Channel.WEB, session_id=session, text=text)

"""The coordinator: runs one turn across the agents that hold a conversation.

Given a :class:`~engine.agents.TurnContext` it decides who answers, moves
control between agents and keeps interrupted journeys:

1. **stuck check** first (:mod:`engine.stuck`): a loop or repeated
   frustration hands the conversation to the ``human`` agent; a first
   frustrated message gets an apology and the offer of a person;
2. **target**: the ``purpose`` the channel asked for, else the journey that
   holds the conversation (``session.purpose``), else the channel's
   configured purpose, else the router;
3. **hops**: the agent answers, or hands off (:class:`~engine.agents.HandoffRequest`)
   to a named agent or back to the router, which then answers the same
   message; ``suspend`` keeps the handing journey on ``session.suspended``.
   At most ``max_hops`` agents run per turn (a handoff loop fails the turn,
   which the engine answers with its fallback);
4. **resume**: when the turn ends with no journey holding the conversation
   and one is suspended, it is resumed (:meth:`~engine.agents.Agent.resume`)
   and its re-prompt joins the reply — "…and now, back to your booking";
   an escalation drops suspended journeys (a person takes over);
5. **delegation**: ``ctx.delegate(name, text)`` runs an agent as a tool and
   returns its structured :class:`~engine.agents.Handback`.

Agents come from a registry (:class:`Agents`), never from names in code: the
engine only knows the built-in ``human`` agent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from engine.agents import (
    HUMAN,
    Agent,
    AgentReply,
    Handback,
    HandbackStatus,
    HandoffRequest,
    TurnContext,
    chunk_text,
)
from engine.escalation import HumanAgent
from engine.llm.prompt import conversation
from engine.messages import (
    AgentEvent,
    Handoff,
    TextDelta,
    ToolCall,
    ToolResult,
)
from engine.router import HUMAN_CHOICE, RouteDecision, Router, model_route
from engine.session import HandoffItem, SuspendedJourney, ToolCallItem, ToolResultItem
from engine.stuck import StuckDetector

__all__ = ["Agents", "Coordinator", "GoLive", "HopLimitError", "Settled"]

MAX_HOPS = 4
ROUTER = "router"


class HopLimitError(RuntimeError):
    """Agents handed the message to each other more than ``max_hops`` times."""


class Agents:
    """The registry of agents, by name (``purpose``).

    The built-in ``human`` agent is always there; ``names`` lists the others
    (the purposes a client config may name, besides ``auto``).
    """

    def __init__(self, agents: Iterable[Agent]) -> None:
        by_name: dict[str, Agent] = {HUMAN: HumanAgent()}
        for agent in agents:
            if agent.purpose in by_name and agent.purpose != HUMAN:
                raise ValueError(f"two agents named {agent.purpose!r}")
            by_name[agent.purpose] = agent
        self._by_name: Mapping[str, Agent] = by_name

    def get(self, name: str) -> Agent | None:
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> Agent:
        return self._by_name[name]

    def __iter__(self) -> Iterator[Agent]:
        """Every agent, the built-in ``human`` one included."""
        return iter(self._by_name.values())

    @property
    def names(self) -> tuple[str, ...]:
        """The purposes served here, without the built-in ``human``."""
        return tuple(n for n in self._by_name if n != HUMAN)

    def routable(self, exclude: Iterable[str] = ()) -> list[Agent]:
        skip = {HUMAN, *exclude}
        return [a for n, a in self._by_name.items() if n not in skip]


@dataclass(frozen=True, slots=True)
class GoLive:
    """From here on the turn's events may go out before the commit (a live
    agent is about to stream); see :meth:`engine.core.Engine.stream_turn`."""


@dataclass(frozen=True, slots=True)
class Settled:
    """The turn's final reply and who answered it (the last agent, or ``router``)."""

    reply: AgentReply
    served_by: str


class Coordinator:
    """Runs turns over an :class:`Agents` registry (see the module docstring)."""

    def __init__(
        self,
        agents: Agents,
        router: Router | None = None,
        detector: StuckDetector | None = None,
        max_hops: int = MAX_HOPS,
    ) -> None:
        self.agents = agents
        self.router = router or Router()
        self.detector = detector or StuckDetector()
        self.max_hops = max_hops

    async def run(
        self, ctx: TurnContext, purpose: str | None
    ) -> AsyncIterator[AgentEvent | GoLive | Settled]:
        """Yield the turn's events, then one :class:`Settled`. Raises what an
        agent raises, and HopLimitError."""
        session, client = ctx.session, ctx.client
        hops = _Hops(self.max_hops)
        ctx.delegate_fn = lambda target, text, reason: self._delegate(
            ctx, hops, target, text, reason
        )
        ctx.available_purposes = self.agents.names
        explicit = purpose if purpose not in (None, "auto") else None
        configured = client.purpose_for(session.channel)
        target: str | None = (
            explicit or session.purpose or (configured if configured != "auto" else None)
        )
        handoff: HandoffRequest | None = None
        apology = False
        verdict = self.detector.analyze(session.lines())
        if session.purpose != HUMAN and verdict.condition is not None:
            if verdict.stuck:
                fields = self._fields_of(ctx)
                handoff = HandoffRequest(HUMAN, reason=verdict.reason, fields=fields)
                target = HUMAN
                session.purpose = None  # the stuck journey ends: a person takes over
            else:
                apology = True
        replies: list[AgentReply] = []
        if apology:
            replies.append(AgentReply(text="Sorry about that.", quick_replies=(HUMAN_CHOICE,)))
            yield TextDelta("Sorry about that.")
        served_by = ROUTER
        excluded: set[str] = set()
        status: HandbackStatus | None = None
        while True:
            if target is None:
                candidates = self.agents.routable(excluded)
                decision = await self._model_route(ctx, candidates) or self.router.route(
                    ctx.text, client, candidates
                )
                if decision.wants_human:
                    target = HUMAN
                    handoff = HandoffRequest(HUMAN, reason="asked for a person")
                elif decision.purpose is None:
                    reply = AgentReply(
                        text=decision.text,
                        quick_replies=decision.quick_replies,
                        state=decision.state,
                    )
                    async for event in self._say(reply, bool(replies)):
                        yield event
                    replies.append(reply)
                    served_by = ROUTER
                    break
                else:
                    target = decision.purpose
            agent = self.agents.get(target)
            if agent is None:
                # A purpose the client config names that this gateway cannot serve.
                decision = self.router.cannot_answer(
                    client, self.agents.routable(), state="unavailable"
                )
                reply = AgentReply(
                    text=decision.text, quick_replies=decision.quick_replies, state="unavailable"
                )
                async for event in self._say(reply, bool(replies)):
                    yield event
                replies.append(reply)
                served_by = ROUTER
                break
            hops.take(target)
            if handoff is not None or (served_by != ROUTER and target != served_by):
                yield self._note(
                    ctx,
                    Handoff(
                        source=served_by,
                        target=target,
                        reason=handoff.reason if handoff else "",
                    ),
                )
            ctx.handoff = handoff
            got: AgentReply | None = None
            lead = bool(replies)
            if agent.live(ctx):
                yield GoLive()
            async for part in agent.stream(ctx):
                if isinstance(part, AgentReply):
                    got = part
                    continue
                if isinstance(part, TextDelta) and lead:
                    yield TextDelta(" ")
                    lead = False
                yield self._note(ctx, part, target)
            if got is None:
                raise RuntimeError(f"agent {target} ended without a reply")
            reply = got
            served_by = target
            if reply.handoff is not None:
                handoff = reply.handoff
                if handoff.suspend and session.purpose == target:
                    session.suspended.append(
                        SuspendedJourney(purpose=target, reason=handoff.reason)
                    )
                if session.purpose == target:
                    session.purpose = None
                if reply.text:
                    replies.append(reply)
                excluded.add(target)
                target = handoff.target
                continue
            replies.append(reply)
            if reply.handback is None:
                session.purpose = target
            else:
                status = reply.handback.status
                if session.purpose == target:
                    session.purpose = None
            break
        if status == HandbackStatus.ESCALATE:
            session.suspended.clear()
        elif session.purpose is None and session.suspended:
            async for item in self._resume(ctx, hops, replies, status):
                if isinstance(item, str):
                    served_by = item
                else:
                    yield item
        final = _combine(replies)
        if apology and HUMAN_CHOICE not in final.quick_replies:
            final = replace(final, quick_replies=(*final.quick_replies, HUMAN_CHOICE))
        yield Settled(final, served_by)

    @staticmethod
    async def _model_route(ctx: TurnContext, candidates: list[Agent]) -> RouteDecision | None:
        """The model's routing when the client has a usable model, else None."""
        llm = ctx.llm
        if llm is None or not llm.available:
            return None
        return await model_route(
            llm,
            ctx.text,
            ctx.client,
            candidates,
            history=conversation(ctx.session.lines()),
            now=ctx.now,
            channel=ctx.session.channel,
        )

    async def _resume(
        self,
        ctx: TurnContext,
        hops: _Hops,
        replies: list[AgentReply],
        status: HandbackStatus | None,
    ) -> AsyncIterator[AgentEvent | str]:
        """Resume the most recent suspended journey that still has something to do."""
        session = ctx.session
        summary = status.value if status else "answered"
        while session.suspended:
            suspended = session.suspended.pop()
            agent = self.agents.get(suspended.purpose)
            if agent is None:
                continue
            hops.take(suspended.purpose)
            ctx.handoff = None
            reply = await agent.resume(ctx, summary)
            if reply is None:
                continue
            yield self._note(
                ctx, Handoff(source=ROUTER, target=suspended.purpose, reason="resume"), None
            )
            async for event in self._say(reply, bool(replies)):
                yield event
            replies.append(reply)
            if reply.handback is None:
                session.purpose = suspended.purpose
            yield suspended.purpose
            return

    async def _delegate(
        self, ctx: TurnContext, hops: _Hops, target: str, text: str, reason: str
    ) -> Handback:
        agent = self.agents.get(target)
        if agent is None:
            return Handback(HandbackStatus.FAILED, summary=f"no agent {target!r}")
        hops.take(target)
        source = ctx.session.purpose or ROUTER
        self._note(ctx, Handoff(source=source, target=target, mode="delegate", reason=reason))
        sub = replace(
            ctx,
            message=replace(ctx.message, text=text),
            handoff=HandoffRequest(target, reason=reason),
        )
        reply = await agent.handle(sub)
        status = reply.handback.status if reply.handback else HandbackStatus.COMPLETED
        summary = reply.handback.summary if reply.handback else ""
        return Handback(status, summary=summary, text=reply.text, data=dict(reply.metadata))

    def _fields_of(self, ctx: TurnContext) -> dict[str, str]:
        owner = ctx.session.purpose
        agent = self.agents.get(owner) if owner else None
        return dict(agent.handoff_fields(ctx)) if agent is not None else {}

    @staticmethod
    async def _say(reply: AgentReply, lead: bool) -> AsyncIterator[TextDelta]:
        pieces = chunk_text(reply.text)
        if pieces and lead:
            yield TextDelta(" ")
        for piece in pieces:
            yield TextDelta(piece)

    @staticmethod
    def _note(ctx: TurnContext, event: AgentEvent, purpose: str | None = None) -> AgentEvent:
        """Keep tool calls, results and handoffs in the typed history."""
        history = ctx.session.transcript
        if isinstance(event, ToolCall):
            history.append(
                ToolCallItem(
                    call_id=event.call_id,
                    name=event.name,
                    arguments=dict(event.arguments),
                    purpose=purpose,
                )
            )
        elif isinstance(event, ToolResult):
            history.append(
                ToolResultItem(
                    call_id=event.call_id,
                    name=event.name,
                    result=_jsonable(event.result),
                    error=event.error,
                    purpose=purpose,
                )
            )
        elif isinstance(event, Handoff):
            history.append(
                HandoffItem(
                    source=event.source, target=event.target, mode=event.mode, reason=event.reason
                )
            )
        return event


class _Hops:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken: list[str] = []

    def take(self, name: str) -> None:
        self.taken.append(name)
        if len(self.taken) > self.limit:
            raise HopLimitError(f"more than {self.limit} agent hops: {' -> '.join(self.taken)}")


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def _combine(replies: Sequence[AgentReply]) -> AgentReply:
    """One reply from the replies of this turn's agents: texts joined in order;
    choices, expectations and slots from the last; every action kept."""
    if len(replies) == 1:
        return replies[0]
    last = replies[-1]
    actions = tuple(a for r in replies for a in r.actions)
    outcome = next((r.outcome for r in reversed(replies) if r.outcome), None)
    metadata = {k: v for r in replies for k, v in r.metadata.items()}
    return replace(
        last,
        text=" ".join(r.text for r in replies if r.text),
        actions=actions,
        outcome=outcome,
        metadata=metadata,
    )

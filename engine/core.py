"""The engine: ``handle_turn`` and its streaming variant ``stream_turn``.

One turn, per DESIGN.md's engine contract:

1. find the client (``UnknownClientError`` if it is not loaded),
2. take the session lock (one writer per session; ``SessionBusyError``),
3. pick the agent: an explicit ``purpose`` argument, else the agent already
   holding the conversation (journey), else the channel's configured purpose,
   else the router,
4. run the agent, streaming its text; if it raises, answer with the fallback
   reply and keep the session as it was before the turn (the user's message is
   still recorded, nothing is lost),
5. save the session, log the conversation, count metrics.

The engine never imports an adapter or a purpose by name: agents are passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime

from engine.agents import Agent, AgentReply, Handback, TurnContext, chunk_text
from engine.config import ClientRegistry
from engine.errors import GatewayError, SessionBusyError, StoreError, UnknownClientError
from engine.messages import (
    CHANNELS,
    ConversationResponse,
    NormalizedMessage,
    QuickReply,
    ResponseMetadata,
    TextDelta,
    TurnEvent,
)
from engine.metrics import OUTCOMES, TURN_ERRORS, TURN_SECONDS, TURNS
from engine.router import Router
from engine.session import ConversationSession, SessionKey, SessionStore, Turn
from engine.tools import ConversationLog, Tools

__all__ = ["Engine"]

log = logging.getLogger("engine")

FALLBACK_TEXT = (
    "Sorry, something went wrong on my side and I couldn't process that. "
    "Could you say it again? If you prefer, I can have someone from the team get back to you."
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Runs turns for every loaded client.

    ``agents``: one per purpose. ``clock`` returns the current aware datetime
    (tests pin it). ``lock_timeout_s``: how long a turn waits for the session
    lock before ``SessionBusyError``.
    """

    default_clock = staticmethod(_utcnow)

    def __init__(
        self,
        clients: ClientRegistry,
        store: SessionStore,
        agents: Sequence[Agent],
        tools: Tools,
        *,
        conversation_log: ConversationLog | None = None,
        router: Router | None = None,
        clock: Callable[[], datetime] = _utcnow,
        lock_timeout_s: float = 10.0,
    ) -> None:
        self.clients = clients
        self.store = store
        self.agents: Mapping[str, Agent] = {a.purpose: a for a in agents}
        self.tools = tools
        self.conversation_log = conversation_log
        self.router = router or Router()
        self.clock = clock
        self.lock_timeout_s = lock_timeout_s

    @property
    def purposes(self) -> tuple[str, ...]:
        return tuple(self.agents)

    async def handle_turn(
        self,
        client_id: str,
        channel: str,
        purpose: str | None,
        session_id: str,
        message: str,
        context: Mapping[str, object] | None = None,
    ) -> ConversationResponse:
        """Process one user message and return the reply.

        ``channel``: ``phone`` | ``whatsapp`` | ``web``. ``purpose``:
        ``lead_capture`` | ``support`` | ``None`` (router decides per the
        client's channel config). Raises UnknownClientError, ValueError for an
        unknown channel, SessionBusyError, StoreError.
        """
        final: ConversationResponse | None = None
        async for event in self.stream_turn(
            client_id, channel, purpose, session_id, message, context
        ):
            if isinstance(event, ConversationResponse):
                final = event
        assert final is not None  # stream_turn always ends with a response
        return final

    async def stream_turn(
        self,
        client_id: str,
        channel: str,
        purpose: str | None,
        session_id: str,
        message: str,
        context: Mapping[str, object] | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Like :meth:`handle_turn`, but yields :class:`TextDelta` pieces of the
        reply as they are produced, then the final :class:`ConversationResponse`."""
        client = self.clients.get(client_id)
        if client is None:
            raise UnknownClientError(client_id)
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
        key = SessionKey(client_id, channel, session_id)
        started = time.perf_counter()
        async with self.store.lock(f"session:{key}", self.lock_timeout_s):
            session = await self.store.load(key) or ConversationSession.new(key)
            if context:
                session.context.update({k: str(v) for k, v in context.items() if v is not None})
            msg = NormalizedMessage(
                client_id=client_id,
                channel=channel,
                session_id=session_id,
                text=message,
                purpose=purpose,
                context=dict(session.context),
            )
            ctx = TurnContext(
                client=client,
                session=session,
                message=msg,
                tools=self.tools,
                now=self.clock(),
                available_purposes=self.purposes,
            )
            session.transcript.append(Turn(role="user", text=message, purpose=session.purpose))
            reply: AgentReply | None = None
            served_by: str | None = None
            try:
                async for piece in self._run(ctx, purpose):
                    if isinstance(piece, str):
                        yield TextDelta(piece)
                    elif isinstance(piece, AgentReply):
                        reply = piece
                    else:
                        served_by = piece[0]
                if reply is None:
                    raise RuntimeError("agent ended without a reply")
            except (SessionBusyError, StoreError):
                raise
            except Exception as exc:
                # Nothing was saved yet: the store still holds the pre-turn state.
                before = await self.store.load(key) or ConversationSession.new(key)
                if context:
                    before.context.update({k: str(v) for k, v in context.items() if v is not None})
                reply, session = self._fallback(before, message, exc, client_id, channel)
                yield TextDelta(reply.text)
            session.transcript.append(Turn(role="assistant", text=reply.text, purpose=served_by))
            session.turn_count += 1
            session.updated_at = _utcnow()
            if reply.outcome:
                session.outcome = reply.outcome
                OUTCOMES.labels(client_id, channel, reply.outcome).inc()
            await self.store.save(session)
            if self.conversation_log is not None:
                await self.conversation_log.upsert(session, served_by or session.purpose)
        label = served_by or "router"
        TURNS.labels(client_id, channel, label).inc()
        TURN_SECONDS.labels(client_id, channel, label).observe(time.perf_counter() - started)
        yield ConversationResponse(
            text=reply.text,
            quick_replies=reply.quick_replies,
            actions=reply.actions,
            metadata=ResponseMetadata(
                purpose=served_by,
                expecting=reply.expecting,
                slots=dict(reply.slots),
                confidence=reply.confidence,
                state=reply.state,
                lead_id=reply.lead_id,
                booking_id=reply.booking_id,
            ),
        )

    async def note_heard(
        self, client_id: str, channel: str, session_id: str, *, spoken: str, heard: str
    ) -> bool:
        """Record that the caller heard only ``heard`` of the bot's last reply ``spoken``.

        Voice channels call this after a barge-in: the latest recent assistant
        turn whose text equals ``spoken`` becomes ``heard`` and is marked
        ``cut``, so history holds what the caller actually
        heard. Returns False (changing nothing) when the session or a
        matching turn is not there. Raises SessionBusyError, StoreError.
        """
        key = SessionKey(client_id, channel, session_id)
        async with self.store.lock(f"session:{key}", self.lock_timeout_s):
            session = await self.store.load(key)
            if session is None:
                return False
            recent = [t for t in session.transcript[-8:] if t.role == "assistant"]
            last = next((t for t in reversed(recent) if t.text == spoken and not t.cut), None)
            if last is None:
                return False
            last.text = heard
            last.cut = True
            session.updated_at = _utcnow()
            await self.store.save(session)
            if self.conversation_log is not None:
                await self.conversation_log.upsert(session, last.purpose or session.purpose)
        return True

    def _fallback(
        self,
        before: ConversationSession,
        message: str,
        exc: BaseException,
        client_id: str,
        channel: str,
    ) -> tuple[AgentReply, ConversationSession]:
        # The type name only: exception text may quote the user's message.
        log.error(
            "turn failed, answering with fallback: client=%s channel=%s error=%s",
            client_id,
            channel,
            type(exc).__name__,
            exc_info=exc if not isinstance(exc, GatewayError) else None,
        )
        TURN_ERRORS.labels(client_id, channel, type(exc).__name__).inc()
        session = before
        session.transcript.append(Turn(role="user", text=message, purpose=before.purpose))
        reply = AgentReply(
            text=FALLBACK_TEXT,
            quick_replies=(
                QuickReply(title="Talk to a person", value="I'd like to talk to a person"),
            ),
            state="fallback",
        )
        return reply, session

    async def _run(
        self, ctx: TurnContext, purpose: str | None
    ) -> AsyncIterator[str | AgentReply | tuple[str]]:
        """Pick the agent and stream it. Yields deltas, ``(purpose,)`` naming who
        served the turn, and the final AgentReply."""
        session, client = ctx.session, ctx.client
        explicit = purpose if purpose not in (None, "auto") else None
        configured = client.purpose_for(session.channel)
        target = explicit or session.purpose or (configured if configured != "auto" else None)
        if session.purpose is None and explicit is None and configured == "auto":
            target = None
        tried: set[str] = set()
        for _hop in range(2):
            if target is None:
                available = tuple(p for p in self.purposes if p not in tried)
                decision = self.router.route(ctx.message.text, client, available)
                if decision.wants_human and "lead_capture" in available:
                    target = "lead_capture"
                elif decision.purpose is None:
                    yield ("router",)
                    for piece in chunk_text(decision.text):
                        yield piece
                    yield AgentReply(
                        text=decision.text, quick_replies=decision.quick_replies, state="routing"
                    )
                    return
                else:
                    target = decision.purpose
            agent = self.agents.get(target)
            if agent is None:
                # A purpose the client asked for that this gateway cannot serve yet.
                decision = self.router.route("?", client, tuple(self.purposes))
                yield ("router",)
                for piece in chunk_text(decision.text):
                    yield piece
                yield AgentReply(
                    text=decision.text, quick_replies=decision.quick_replies, state="unavailable"
                )
                return
            yield (target,)
            reply: AgentReply | None = None
            async for part in agent.stream(ctx):
                if isinstance(part, AgentReply):
                    reply = part
                else:
                    yield part
            if reply is None:
                raise RuntimeError(f"agent {target} ended without a reply")
            handback: Handback | None = reply.handback
            if handback is None:
                session.purpose = target
                yield reply
                return
            session.purpose = None
            if handback.reason == "out_of_scope" and not reply.text:
                tried.add(target)
                target = None
                continue
            yield reply
            return
        raise RuntimeError("routing did not settle")

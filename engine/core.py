"""The engine: ``handle_turn`` and its streaming variant ``stream_turn``.

One turn, per DESIGN.md's engine contract:

1. find the client (``UnknownClientError`` if it is not loaded),
2. take the session lock (one writer per session; ``SessionBusyError``),
3. refuse a message id a committed turn already consumed
   (``DuplicateMessageError``),
4. load the session (with its version) and pick the agent: an explicit
   ``purpose`` argument, else the agent already holding the conversation
   (journey), else the channel's configured purpose, else the router,
5. run the agent. It *requests* effects (``ctx.effects``: book, record a
   lead, escalate, deliver) instead of performing them. If it raises, the
   turn answers with the fallback reply from the session as it was, with no
   effects,
6. **commit** the session, the processed mark, the replay events, the
   conversation log lines and every requested effect in one transaction
   (:mod:`engine.commit`). A booking that lost its slot meanwhile, or a
   session another writer changed, rolls the commit back and the turn runs
   again on fresh state (up to ``MAX_ATTEMPTS`` times),
7. only then stream the reply: text the customer sees always describes what
   was committed.

The engine never imports an adapter or a purpose by name: agents are passed in.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from engine.agents import Agent, AgentReply, Handback, TurnContext, chunk_text
from engine.commit import Committer, TurnCommit
from engine.config import ClientConfig, ClientRegistry
from engine.effects import Effects
from engine.errors import (
    CommitConflict,
    DuplicateMessageError,
    GatewayError,
    SessionBusyError,
    SlotTakenError,
    StoreError,
    UnknownClientError,
    UnknownSessionError,
)
from engine.locks import Locks
from engine.messages import (
    CHANNELS,
    ChannelContext,
    ConversationResponse,
    NormalizedMessage,
    QuickReply,
    ResponseMetadata,
    TextDelta,
    TurnEvent,
)
from engine.metrics import OUTCOMES, TURN_ERRORS, TURN_SECONDS, TURNS
from engine.router import Router
from engine.session import ConversationSession, LoadedSession, SessionKey, SessionStore, Turn
from engine.tools import ToolRegistry
from engine.tools.conversations import ConversationLog

__all__ = ["Engine", "Replay", "clean_text"]

log = logging.getLogger("engine")

FALLBACK_TEXT = (
    "Sorry, something went wrong on my side and I couldn't process that. "
    "Could you say it again? If you prefer, I can have someone from the team get back to you."
)
MAX_ATTEMPTS = 3
"""Runs of one turn when its commit conflicts (slot taken, session changed)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 store accepts) replaced by U+FFFD;
    valid surrogate pairs become the character they encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@dataclass(slots=True)
class Replay:
    """A channel's replay log for one turn (the web chat's event log).

    ``encode(event_id, event)`` renders a turn event as the channel's JSON;
    ``after`` is the highest id the connection already used. The engine numbers
    the turn's events after ``max(after, last committed id)``, commits them with
    the turn and leaves them in ``committed`` (``(event_id, json_text)``).
    """

    encode: Callable[[int, TurnEvent], str]
    after: int = 0
    committed: list[tuple[int, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Outcome:
    reply: AgentReply
    served_by: str | None
    session: ConversationSession
    loaded: LoadedSession | None
    """What ``session`` was loaded as (its version is what the commit checks)."""
    deltas: list[str]
    effects: Effects


class Engine:
    """Runs turns for every loaded client.

    ``agents``: one per purpose. ``store``: sessions in the database;
    ``locks``: one writer per session; ``committer``: the atomic turn commit.
    ``clock`` returns the current aware datetime (tests pin it).
    ``lock_timeout_s``: how long a turn waits for the session lock before
    ``SessionBusyError``.
    """

    default_clock = staticmethod(_utcnow)

    def __init__(
        self,
        clients: ClientRegistry,
        store: SessionStore,
        locks: Locks,
        committer: Committer,
        agents: Sequence[Agent],
        tools: ToolRegistry,
        *,
        conversation_log: ConversationLog | None = None,
        router: Router | None = None,
        clock: Callable[[], datetime] = _utcnow,
        lock_timeout_s: float = 10.0,
    ) -> None:
        self.clients = clients
        self.store = store
        self.locks = locks
        self.committer = committer
        self.agents: Mapping[str, Agent] = {a.purpose: a for a in agents}
        self.tools = tools
        self.conversation_log = conversation_log or committer.conversations
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
        context: ChannelContext | None = None,
        *,
        message_id: str | None = None,
        test: bool = False,
    ) -> ConversationResponse:
        """Process one user message and return the reply.

        ``channel``: ``phone`` | ``whatsapp`` | ``web``. ``purpose``:
        ``lead_capture`` | ``support`` | ``None`` (router decides per the
        client's channel config). ``message_id``: the channel's id of the
        inbound message; a committed turn consumes it exactly once.
        ``test``: a test conversation (kept out of the leads list).
        Raises UnknownClientError, ValueError for an unknown channel,
        SessionBusyError, DuplicateMessageError, CommitConflict, StoreError —
        after any of which nothing of the turn was written.
        """
        final: ConversationResponse | None = None
        async for event in self.stream_turn(
            client_id,
            channel,
            purpose,
            session_id,
            message,
            context,
            message_id=message_id,
            test=test,
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
        context: ChannelContext | None = None,
        *,
        message_id: str | None = None,
        replay: Replay | None = None,
        expect_session: bool = False,
        test: bool = False,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Like :meth:`handle_turn`, but yields :class:`TextDelta` pieces of the
        reply, then the final :class:`ConversationResponse` — after the commit.

        ``replay``: the channel's event log to commit with the turn.
        ``expect_session``: the caller holds a conversation it believes exists;
        if the store no longer has it, raise UnknownSessionError instead of
        silently starting over.
        """
        client = self.clients.get(client_id)
        if client is None:
            raise UnknownClientError(client_id)
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
        message = clean_text(message)
        key = SessionKey(client_id, channel, session_id)
        started = time.perf_counter()
        turn_id = (
            hashlib.sha256(f"{key}\x00{message_id}".encode()).hexdigest()[:24]
            if message_id is not None
            else uuid.uuid4().hex[:24]
        )
        async with self.locks.lock(f"session:{key}", self.lock_timeout_s):
            if message_id is not None and self.store.recently_processed(key, message_id):
                raise DuplicateMessageError(str(key), message_id)
            try:
                commit, outcome, response = await self._turn(
                    client,
                    key,
                    purpose,
                    message,
                    context,
                    turn_id,
                    message_id,
                    replay,
                    test,
                    expect_session,
                )
            except BaseException:
                self.store.forget(key)  # the cached session may hold this turn's changes
                raise
        if replay is not None:
            replay.committed = list(commit.events)
        reply = outcome.reply
        if reply.outcome:
            OUTCOMES.labels(client_id, channel, reply.outcome).inc()
        label = outcome.served_by or "router"
        TURNS.labels(client_id, channel, label).inc()
        TURN_SECONDS.labels(client_id, channel, label).observe(time.perf_counter() - started)
        for piece in outcome.deltas:
            yield TextDelta(piece)
        yield response

    async def _turn(
        self,
        client: ClientConfig,
        key: SessionKey,
        purpose: str | None,
        message: str,
        context: ChannelContext | None,
        turn_id: str,
        message_id: str | None,
        replay: Replay | None,
        test: bool,
        expect_session: bool,
    ) -> tuple[TurnCommit, _Outcome, ConversationResponse]:
        """Run and commit the turn, again on fresh state after a conflict."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            loaded = await self.store.load(key)
            if loaded is None and expect_session:
                raise UnknownSessionError(str(key))
            outcome = await self._attempt(
                client, key, loaded, purpose, message, context, turn_id, test
            )
            response = self._response(outcome)
            commit = self._prepare(outcome, turn_id, message_id, response, replay)
            try:
                await self.committer.commit(client, commit)
            except (CommitConflict, SlotTakenError) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info(
                    "turn commit conflicted (%s); running it again: client=%s attempt=%d",
                    type(exc).__name__,
                    key.client_id,
                    attempt,
                )
                continue
            return commit, outcome, response
        raise AssertionError("unreachable")

    async def _attempt(
        self,
        client: ClientConfig,
        key: SessionKey,
        loaded: LoadedSession | None,
        purpose: str | None,
        message: str,
        context: ChannelContext | None,
        turn_id: str,
        test: bool,
    ) -> _Outcome:
        """Run the agent on ``loaded`` (or a new session); never raises for an agent's
        failure (the fallback reply answers it)."""
        session = loaded.session if loaded else self._new_session(key, test)
        session.context = session.context.merged(context)
        effects = Effects(turn_id, key, test=session.test)
        msg = NormalizedMessage(
            client_id=key.client_id,
            channel=key.channel,  # type: ignore[arg-type]
            session_id=key.session_id,
            text=message,
            purpose=purpose,
            context=session.context,
        )
        ctx = TurnContext(
            client=client,
            session=session,
            message=msg,
            tools=self.tools.for_client(client),
            now=self.clock(),
            available_purposes=self.purposes,
            effects=effects,
        )
        session.transcript.append(Turn(role="user", text=message, purpose=session.purpose))
        deltas: list[str] = []
        reply: AgentReply | None = None
        served_by: str | None = None
        try:
            async for piece in self._run(ctx, purpose):
                if isinstance(piece, str):
                    deltas.append(piece)
                elif isinstance(piece, AgentReply):
                    reply = piece
                else:
                    served_by = piece[0]
            if reply is None:
                raise RuntimeError("agent ended without a reply")
        except (SessionBusyError, StoreError):
            raise
        except Exception as exc:
            return await self._fallback(key, loaded, message, exc, context, turn_id, test)
        session.transcript.append(Turn(role="assistant", text=reply.text, purpose=served_by))
        session.turn_count += 1
        session.updated_at = _utcnow()
        if reply.outcome:
            session.outcome = reply.outcome
        return _Outcome(reply, served_by, session, loaded, deltas, effects)

    @staticmethod
    def _new_session(key: SessionKey, test: bool) -> ConversationSession:
        session = ConversationSession.new(key)
        session.test = test
        return session

    async def _fallback(
        self,
        key: SessionKey,
        loaded: LoadedSession | None,
        message: str,
        exc: BaseException,
        context: ChannelContext | None,
        turn_id: str,
        test: bool,
    ) -> _Outcome:
        # The type name only: exception text may quote the user's message.
        log.error(
            "turn failed, answering with fallback: client=%s channel=%s error=%s",
            key.client_id,
            key.channel,
            type(exc).__name__,
            exc_info=exc if not isinstance(exc, GatewayError) else None,
        )
        TURN_ERRORS.labels(key.client_id, key.channel, type(exc).__name__).inc()
        # The agent may have changed the session: start again from what is stored.
        self.store.forget(key)
        fresh = await self.store.load(key)
        session = fresh.session if fresh else self._new_session(key, test)
        session.context = session.context.merged(context)
        session.transcript.append(Turn(role="user", text=message, purpose=session.purpose))
        reply = AgentReply(
            text=FALLBACK_TEXT,
            quick_replies=(
                QuickReply(title="Talk to a person", value="I'd like to talk to a person"),
            ),
            state="fallback",
        )
        session.transcript.append(Turn(role="assistant", text=reply.text))
        session.turn_count += 1
        session.updated_at = _utcnow()
        effects = Effects(turn_id, key, test=session.test)
        return _Outcome(reply, None, session, fresh, list(chunk_text(reply.text)), effects)

    @staticmethod
    def _response(outcome: _Outcome) -> ConversationResponse:
        reply = outcome.reply
        return ConversationResponse(
            text=reply.text,
            quick_replies=reply.quick_replies,
            actions=reply.actions,
            metadata=ResponseMetadata(
                purpose=outcome.served_by,
                expecting=reply.expecting,
                slots=dict(reply.slots),
                confidence=reply.confidence,
                state=reply.state,
                lead_id=reply.lead_id,
                booking_id=reply.booking_id,
            ),
        )

    @staticmethod
    def _prepare(
        outcome: _Outcome,
        turn_id: str,
        message_id: str | None,
        response: ConversationResponse,
        replay: Replay | None,
    ) -> TurnCommit:
        session, loaded = outcome.session, outcome.loaded
        # Name the lines this turn added to the transcript for the durable log.
        lines = [t for t in session.transcript if t.line_id is None]
        for n, line in enumerate(lines):
            line.line_id = f"{turn_id}.{n}"
        last_event_id = loaded.last_event_id if loaded else 0
        events: list[tuple[int, str]] = []
        if replay is not None:
            next_id = max(last_event_id, replay.after) + 1
            turn_events: list[TurnEvent] = [TextDelta(d) for d in outcome.deltas if d]
            turn_events.append(response)
            for event in turn_events:
                events.append((next_id, replay.encode(next_id, event)))
                next_id += 1
            last_event_id = next_id - 1
        return TurnCommit(
            session=session,
            version=loaded.version if loaded else None,
            turn_id=turn_id,
            message_id=message_id,
            effects=outcome.effects,
            lines=lines,
            purpose=outcome.served_by or session.purpose,
            events=events,
            last_event_id=last_event_id,
        )

    async def note_heard(
        self, client_id: str, channel: str, session_id: str, *, spoken: str, heard: str
    ) -> bool:
        """Record that the caller heard only ``heard`` of the bot's last reply ``spoken``.

        Voice channels call this after a barge-in: the latest recent assistant
        turn whose text equals ``spoken`` becomes ``heard`` and is marked
        ``cut`` (in the session and the conversation log), so history holds
        what the caller actually heard. Returns False (changing nothing) when
        the session or a matching turn is not there. Raises SessionBusyError,
        StoreError.
        """
        key = SessionKey(client_id, channel, session_id)
        async with self.locks.lock(f"session:{key}", self.lock_timeout_s):
            loaded = await self.store.load(key)
            if loaded is None:
                return False
            session = loaded.session
            recent = [t for t in session.transcript[-8:] if t.role == "assistant"]
            last = next((t for t in reversed(recent) if t.text == spoken and not t.cut), None)
            if last is None:
                return False
            last.text = heard
            last.cut = True
            session.updated_at = _utcnow()
            await self.committer.commit_heard(
                session, loaded.version, loaded.last_event_id, last.line_id, heard
            )
        return True

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

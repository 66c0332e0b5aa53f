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
   again on fresh state (:mod:`engine.writes`, the retry loop every writer
   shares),
7. only then stream the reply: text the customer sees always describes what
   was committed.

The engine never imports a channel, a provider or a purpose: agents and tools
are passed in (the import contracts in ``pyproject.toml`` hold it). Staff
replies and releases are :mod:`engine.staff`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.agents import HUMAN, Agent, AgentReply, TurnContext, chunk_text
from engine.commit import CommitHook, Committer, TurnCommit
from engine.config import ClientConfig, ClientRegistry
from engine.contract import Replay, TurnOptions
from engine.coordinator import Agents, Coordinator, GoLive, Settled
from engine.effects import Effects
from engine.errors import (
    DuplicateMessageError,
    GatewayError,
    SessionBusyError,
    StoreError,
    UnknownClientError,
    UnknownSessionError,
)
from engine.llm import LatencyBudget, Prices, TurnModel
from engine.locks import Locks
from engine.logs import describe
from engine.messages import (
    Channel,
    ChannelContext,
    ConversationResponse,
    Discard,
    NormalizedMessage,
    ResponseMetadata,
    TextDelta,
    TurnEvent,
)
from engine.metrics import OUTCOMES, TURN_ERRORS, TURN_SECONDS, TURNS
from engine.router import HUMAN_CHOICE, Router
from engine.session import ConversationSession, LoadedSession, SessionKey, SessionStore, Turn
from engine.takeover import HELD, transition
from engine.tools import ToolRegistry, Tools
from engine.tools.conversations import ConversationLog
from engine.writes import SessionWrites

__all__ = ["Engine", "clean_text"]

log = logging.getLogger("engine")

_NO_OPTIONS = TurnOptions()

FALLBACK_TEXT = (
    "Sorry, something went wrong on my side and I couldn't process that. "
    "Could you say it again? If you prefer, I can have someone from the team get back to you."
)


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
class _Outcome:
    reply: AgentReply
    served_by: str | None
    session: ConversationSession
    loaded: LoadedSession | None
    """What ``session`` was loaded as (its version is what the commit checks)."""
    events: list[TurnEvent]
    """The turn's events not yet emitted (all of them unless the turn went live)."""
    effects: Effects


@dataclass(slots=True)
class _TurnRun:
    """One turn's inputs, fixed across its attempts."""

    client: ClientConfig
    key: SessionKey
    purpose: str | None
    message: str
    context: ChannelContext | None
    turn_id: str
    message_id: str | None
    replay: Replay | None
    test: bool
    interrupt: asyncio.Event | None = None
    on_commit: CommitHook | None = None
    committed_upto: int = 0
    """Replay log entries emitted before this attempt's post-commit events."""

    def emit(self, loaded: LoadedSession | None, event: TurnEvent) -> TurnEvent:
        """Log a live event in the replay (numbered now) and pass it on."""
        if self.replay is not None:
            self.replay.add(loaded.last_event_id if loaded else 0, event)
        return event


@dataclass(frozen=True, slots=True)
class _Done:
    outcome: _Outcome


class Engine:
    """Runs turns for every loaded client.

    ``agents``: one per purpose (the registry adds the built-in ``human``
    agent); ``tools``: each client's tools. ``store``: sessions in the database;
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
        self.agents = Agents(agents)
        self.coordinator = Coordinator(self.agents, router)
        self.tools = tools
        self.conversation_log = conversation_log or committer.conversations
        self.clock = clock
        self.lock_timeout_s = lock_timeout_s

    @property
    def writes(self) -> SessionWrites:
        """The session locks and commit retries every writer of a conversation
        shares (:mod:`engine.writes`)."""
        return SessionWrites(self.locks, self.store, self.lock_timeout_s)

    def replace_agents(self, agents: Iterable[Agent]) -> Agents:
        """Serve with these agents from the next turn on (tests and tools swap
        in scripted agents); returns the registry that was in use."""
        previous = self.agents
        self.agents = Agents(agents)
        self.coordinator.agents = self.agents
        return previous

    @property
    def purposes(self) -> tuple[str, ...]:
        """The purposes this engine serves (a client config may name these or ``auto``)."""
        return self.agents.names

    async def handle_turn(
        self,
        client_id: str,
        channel: Channel | str,
        purpose: str | None,
        session_id: str,
        message: str,
        context: ChannelContext | None = None,
        *,
        message_id: str | None = None,
        test: bool = False,
    ) -> ConversationResponse:
        """Process one user message and return the final reply: a convenience for
        the CLI and tests over :meth:`stream_turn` (the channels call that).

        ``channel``: ``phone`` | ``whatsapp`` | ``web`` | ``sms`` (ValueError for
        any other). The rest as in :class:`~engine.messages.NormalizedMessage`
        and :class:`~engine.contract.TurnOptions`; raises what
        :meth:`stream_turn` raises.
        """
        inbound = NormalizedMessage(
            client_id=client_id,
            channel=Channel.parse(channel),
            session_id=session_id,
            text=message,
            message_id=message_id,
            context=context or ChannelContext(),
        )
        final: ConversationResponse | None = None
        async for event in self.stream_turn(inbound, TurnOptions(purpose=purpose, test=test)):
            if isinstance(event, ConversationResponse):
                final = event
        assert final is not None  # stream_turn always ends with a response
        return final

    async def stream_turn(
        self, message: NormalizedMessage, options: TurnOptions = _NO_OPTIONS
    ) -> AsyncGenerator[TurnEvent, None]:
        """Run and commit one turn (:class:`~engine.contract.TurnEngine`), yielding
        its events (:data:`TurnEvent`) and last the final
        :class:`ConversationResponse`.

        Rule agents' replies are streamed after the commit, so their text
        always describes what was committed. A live agent's (an LLM's) events
        go out as they are generated, before the commit; if the turn then
        fails or its commit conflicts, a :class:`Discard` withdraws them and
        the events of the answer that did commit follow. ``options``: see
        :class:`~engine.contract.TurnOptions`. A committed turn consumes
        ``message.message_id`` exactly once. Raises UnknownClientError,
        SessionBusyError, DuplicateMessageError, UnknownSessionError,
        CommitConflict, StoreError — after any of which nothing of the turn was
        written.
        """
        client_id, channel = message.client_id, message.channel
        client = self.clients.get(client_id)
        if client is None:
            raise UnknownClientError(client_id)
        text = clean_text(message.text)
        message_id = message.message_id
        key = SessionKey(client_id, channel.value, message.session_id)
        started = time.perf_counter()
        turn_id = (
            hashlib.sha256(f"{key}\x00{message_id}".encode()).hexdigest()[:24]
            if message_id is not None
            else uuid.uuid4().hex[:24]
        )
        turn = _TurnRun(
            client,
            key,
            options.purpose,
            text,
            message.context,
            turn_id,
            message_id,
            options.replay,
            options.test,
            options.interrupt,
            options.on_commit,
        )
        done: _Done | None = None
        async with self.writes.locked(key):
            if message_id is not None and self.store.recently_processed(key, message_id):
                raise DuplicateMessageError(str(key), message_id)
            try:
                async for item in self._turn(turn, options.expect_session):
                    if isinstance(item, _Done):
                        done = item
                    else:
                        yield item  # a live agent's events, before the commit
            except BaseException:
                self.store.forget(key)  # the cached session may hold this turn's changes
                raise
        assert done is not None
        outcome = done.outcome
        reply = outcome.reply
        if reply.outcome:
            OUTCOMES.labels(client_id, channel, reply.outcome).inc()
        label = outcome.served_by or "router"
        TURNS.labels(client_id, channel, label).inc()
        TURN_SECONDS.labels(client_id, channel, label).observe(time.perf_counter() - started)
        for event in outcome.events:
            yield event

    async def _turn(
        self, turn: _TurnRun, expect_session: bool
    ) -> AsyncGenerator[TurnEvent | _Done, None]:
        """Run and commit the turn, again on fresh state after a conflict.

        Yields the events of a turn that went live as they happen (with a
        :class:`Discard` when streamed text is withdrawn), then one ``_Done``.
        """
        streamed = False

        def trim_replay() -> None:  # the conflicted attempt's post-commit events
            if turn.replay is not None:
                del turn.replay.log[turn.committed_upto :]

        for attempt in self.writes.attempts(turn.key, on_retry=trim_replay):
            with attempt:
                loaded = await self.store.load(turn.key)
                if loaded is None and expect_session:
                    raise UnknownSessionError(str(turn.key))
                if streamed:
                    yield turn.emit(loaded, Discard("conflict"))
                base = loaded.last_event_id if loaded else 0
                outcome: _Outcome | None = None
                async for item in self._attempt(turn, loaded):
                    if isinstance(item, _Outcome):
                        outcome = item
                    else:
                        streamed = True
                        yield turn.emit(loaded, item)
                assert outcome is not None
                response = self._response(outcome)
                outcome.events.append(response)
                commit = self._prepare(outcome, turn, base)
                commit.hook, commit.response = turn.on_commit, response
                await self.committer.commit(turn.client, commit)
                yield _Done(outcome)
                return

    async def _attempt(
        self, turn: _TurnRun, loaded: LoadedSession | None
    ) -> AsyncIterator[TurnEvent | _Outcome]:
        """Run the agents on ``loaded`` (or a new session); never raises for an
        agent's failure (the fallback reply answers it). Yields the events of
        a live agent as they come, then the ``_Outcome`` (whose ``events`` are
        the ones still to emit)."""
        key = turn.key
        session = loaded.session if loaded else self._new_session(key, turn.test)
        session.context = session.context.merged(turn.context)
        tools = self.tools.for_client(turn.client)
        effects = Effects(turn.turn_id, key, test=session.test, notifiers=tools.notifiers)
        session.takeover = transition(session.takeover, "customer_message")
        if session.takeover in HELD and key.channel != "phone":
            # A person holds the conversation: record and notify, no bot reply.
            yield self._held(turn, session, loaded, effects)
            return
        msg = NormalizedMessage(
            client_id=key.client_id,
            channel=Channel(key.channel),
            session_id=key.session_id,
            text=turn.message,
            purpose=turn.purpose,
            context=session.context,
        )
        ctx = TurnContext(
            client=turn.client,
            session=session,
            message=msg,
            tools=tools,
            now=self.clock(),
            effects=effects,
            llm=_turn_model(turn.client, key.channel, tools, turn.interrupt),
            contact=await self.committer.contacts.recognise(turn.client, session),
        )
        session.transcript.append(Turn(role="user", text=turn.message, purpose=session.purpose))
        buffered: list[TurnEvent] = []
        live = False
        settled: Settled | None = None
        try:
            async for item in self.coordinator.run(ctx, turn.purpose):
                if isinstance(item, Settled):
                    settled = item
                elif isinstance(item, GoLive):
                    live = True
                    for event in buffered:
                        yield event
                    buffered.clear()
                elif live:
                    yield item
                else:
                    buffered.append(item)
            if settled is None:
                raise RuntimeError("the coordinator ended without a reply")
        except (SessionBusyError, StoreError):
            raise
        except Exception as exc:
            if live:
                yield Discard("failed")
            yield await self._fallback(turn, exc)
            return
        reply = settled.reply
        if ctx.llm is not None and ctx.llm.calls:
            session.llm_usage = session.llm_usage.plus(
                ctx.llm.usage, ctx.llm.cost_usd, ctx.llm.calls
            )
        session.transcript.append(
            Turn(role="assistant", text=reply.text, purpose=settled.served_by)
        )
        session.turn_count += 1
        session.updated_at = _utcnow()
        if reply.outcome:
            session.outcome = reply.outcome
        yield _Outcome(reply, settled.served_by, session, loaded, buffered, effects)

    @staticmethod
    def _held(
        turn: _TurnRun,
        session: ConversationSession,
        loaded: LoadedSession | None,
        effects: Effects,
    ) -> _Outcome:
        """The turn while a person holds the conversation (``pending_human`` or
        ``human``): the message is recorded, staff get one notice for it (the
        escalation notifiers, through the outbox), and the reply is empty —
        no text, ``state`` = the handoff state (``metadata.handoff`` too)."""
        session.transcript.append(Turn(role="user", text=turn.message, purpose=HUMAN))
        effects.escalate(
            "wrote while waiting for a person",
            contact=session.context.caller_number,
        )
        session.turn_count += 1
        session.updated_at = _utcnow()
        reply = AgentReply(text="", state=session.takeover, metadata={"handoff": session.takeover})
        return _Outcome(reply, HUMAN, session, loaded, [], effects)

    @staticmethod
    def _new_session(key: SessionKey, test: bool) -> ConversationSession:
        session = ConversationSession.new(key)
        session.test = test
        return session

    async def _fallback(self, turn: _TurnRun, exc: BaseException) -> _Outcome:
        key = turn.key
        # Type and stack only: exception text may quote the user's message.
        log.error(
            "turn failed, answering with fallback: client=%s channel=%s error=%s",
            key.client_id,
            key.channel,
            type(exc).__name__ if isinstance(exc, GatewayError) else describe(exc),
        )
        TURN_ERRORS.labels(key.client_id, key.channel, type(exc).__name__).inc()
        # The agents may have changed the session: start again from what is stored.
        self.store.forget(key)
        fresh = await self.store.load(key)
        session = fresh.session if fresh else self._new_session(key, turn.test)
        session.context = session.context.merged(turn.context)
        session.transcript.append(Turn(role="user", text=turn.message, purpose=session.purpose))
        reply = AgentReply(
            text=FALLBACK_TEXT,
            quick_replies=(HUMAN_CHOICE,),
            state="fallback",
        )
        session.transcript.append(Turn(role="assistant", text=reply.text))
        session.turn_count += 1
        session.updated_at = _utcnow()
        effects = Effects(turn.turn_id, key, test=session.test)
        events: list[TurnEvent] = [TextDelta(piece) for piece in chunk_text(reply.text)]
        return _Outcome(reply, None, session, fresh, events, effects)

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
                sources=reply.sources,
                purpose_data=dict(reply.metadata),
            ),
        )

    @staticmethod
    def _prepare(outcome: _Outcome, turn: _TurnRun, base: int) -> TurnCommit:
        session, loaded = outcome.session, outcome.loaded
        # Name the lines this turn added to the transcript for the durable log.
        lines = [t for t in session.transcript if isinstance(t, Turn) and t.line_id is None]
        for n, line in enumerate(lines):
            line.line_id = f"{turn.turn_id}.{n}"
        last_event_id = loaded.last_event_id if loaded else 0
        events: list[tuple[int, str]] = []
        replay = turn.replay
        if replay is not None:
            turn.committed_upto = len(replay.log)
            for event in outcome.events:
                replay.add(base, event)
            events = list(replay.log)
            last_event_id = max(last_event_id, replay.last_id)
        return TurnCommit(
            session=session,
            version=loaded.version if loaded else None,
            turn_id=turn.turn_id,
            message_id=turn.message_id,
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
        async with self.writes.locked(key):
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


def _turn_model(
    client: ClientConfig, channel: str, tools: Tools, interrupt: asyncio.Event | None
) -> TurnModel | None:
    """The client's model for one turn under its channel's budget, or None (offline)."""
    if tools.llm is None:
        return None
    cfg = client.llm
    prices = cfg.prices
    return TurnModel(
        tools.llm,
        client_id=client.client_id,
        channel=channel,
        budget=LatencyBudget(cfg.first_token_for(channel), cfg.total_s),
        prices=Prices(prices.input_per_million, prices.output_per_million) if prices else None,
        interrupt=interrupt,
    )

"""Deciding approval requests: staff's approve/decline, the timeout fallback.

A decision is a turn without a customer message, run the way a staff reply
is (:meth:`engine.staff.Staff.reply`, through :mod:`engine.writes`): under the
conversation's session lock, the flow that asked (an :class:`ApprovalHandler`, found by the
request's ``purpose``) turns the decision into effects — the booking and the
lead on approval, a declined or callback lead otherwise — and a message to
the customer; one commit writes them with the request's settlement
(conditional on it still being pending), the transcript line and, on the web,
a ``complete`` replay event with ``metadata.from = "approval"``. The caller
then signals the open widget (:class:`~engine.bus.ConversationBus`).

Exactly once: the settlement's ``WHERE state = 'pending'`` and the processed
mark ``approval:<id>`` make a second decision — a retried POST, the sweeper
on another replica — roll back whole and report the first one
(``duplicate=True``). Ids derive from the request id and the decision, so a
process killed mid-way and asked again writes the same booking once.

Channels: web gets the message pushed (or replayed on resume); phone and
WhatsApp get it recorded in the conversation only (an outbound SMS/WhatsApp
message is a later step): the staff notice tells staff to call a phone
customer.

:class:`ApprovalSweeper` applies the timeout: every ``interval_s`` it settles
each pending request past its deadline with ``expire`` (the flow applies the
client's ``booking.approval.fallback``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from engine.agents import AgentReply, TurnContext
from engine.approvals import Approval, ApprovalSettled, ApprovalStore, Decision
from engine.commit import CommitHook, TurnCommit
from engine.config import ClientConfig
from engine.effects import Effects
from engine.errors import (
    CommitConflict,
    DuplicateMessageError,
    GatewayError,
    SessionBusyError,
    UnknownClientError,
)
from engine.logs import describe
from engine.messages import Channel, ConversationResponse, NormalizedMessage, ResponseMetadata
from engine.session import ConversationSession, SessionKey, Turn

if TYPE_CHECKING:
    from engine.contract import Replay
    from engine.core import Engine

__all__ = [
    "ApprovalHandler",
    "ApprovalSweeper",
    "DecisionRefused",
    "DecisionResult",
    "Decisions",
    "UnknownApprovalError",
]

log = logging.getLogger("engine.decisions")


class UnknownApprovalError(GatewayError):
    """No approval request with that id."""

    def __init__(self, approval_id: str) -> None:
        super().__init__(f"no approval request {approval_id!r}")
        self.approval_id = approval_id


class DecisionRefused(GatewayError):
    """The decision cannot be taken (``expire`` before the deadline, a purpose
    that does not handle approvals)."""


@runtime_checkable
class ApprovalHandler(Protocol):
    """An agent that asks for approvals implements this.

    ``decide`` turns ``decision`` on ``approval`` into effects on
    ``ctx.effects`` — it must settle the request
    (:meth:`~engine.effects.Effects.settle_approval`) — and returns the
    message for the customer (its ``expecting`` set when the flow waits for
    an answer: the conversation's journey then returns to it). ``note``:
    staff's words for the customer, if any. ``ctx.message.text`` is empty.
    """

    async def decide(
        self, ctx: TurnContext, approval: Approval, decision: Decision, note: str | None
    ) -> AgentReply: ...


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """What :meth:`Decisions.decide` found or did: the request as stored
    after, whether it was settled already (nothing written by this call), and
    the web replay event id of the customer's message (None elsewhere)."""

    approval: Approval
    duplicate: bool
    event_id: int | None = None

    @property
    def key(self) -> SessionKey:
        a = self.approval
        return SessionKey(a.client_id, a.channel, a.session_id)


class Decisions:
    """Applies decisions to approval requests (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        approvals: ApprovalStore,
        *,
        hook_for: Callable[[ClientConfig, SessionKey, str], CommitHook | None] | None = None,
    ) -> None:
        self.engine = engine
        self.approvals = approvals
        self.hook_for = hook_for
        """The channel's writes with a decision's message (``client``, the
        conversation, an idempotency key): a WhatsApp/SMS send; None: recorded."""

    async def decide(
        self,
        approval_id: str,
        decision: Decision,
        *,
        note: str | None = None,
        replay: Replay | None = None,
    ) -> DecisionResult:
        """Settle ``approval_id`` by ``decision`` (once; see the module docstring).

        Raises UnknownApprovalError, UnknownClientError, DecisionRefused,
        SessionBusyError, StoreError, CommitConflict (after retries).
        """
        engine = self.engine
        approval = await self._get(approval_id)
        if not approval.pending:
            return DecisionResult(approval, duplicate=True)
        client = engine.clients.get(approval.client_id)
        if client is None:
            raise UnknownClientError(approval.client_id)
        agent = engine.agents.get(approval.purpose)
        if not isinstance(agent, ApprovalHandler):
            raise DecisionRefused(f"purpose {approval.purpose!r} does not take approval decisions")
        if decision == "expire" and engine.clock().timestamp() < approval.deadline_ts:
            raise DecisionRefused(f"approval {approval_id} has not reached its deadline")
        key = SessionKey(approval.client_id, approval.channel, approval.session_id)
        turn_id = hashlib.sha256(f"approval\x00{approval_id}\x00{decision}".encode()).hexdigest()
        writes = engine.writes

        async with writes.locked(key):
            for attempt in writes.attempts(
                key, on_retry=replay.reset if replay is not None else None
            ):
                with attempt:
                    current = await self._get(approval_id)
                    if not current.pending:
                        return DecisionResult(current, duplicate=True)
                    try:
                        event_id = await self._commit(
                            agent, current, decision, note, key, turn_id[:24], replay
                        )
                    except (ApprovalSettled, DuplicateMessageError):
                        # Someone decided first: the store's copy may hold this
                        # attempt's changes; the approval row says what happened.
                        engine.store.forget(key)
                        settled = await self._get(approval_id)
                        if not settled.pending:
                            return DecisionResult(settled, duplicate=True)
                        raise CommitConflict(str(key)) from None
                    return DecisionResult(await self._get(approval_id), False, event_id)
        raise AssertionError("unreachable")

    async def _get(self, approval_id: str) -> Approval:
        approval = await self.approvals.get(approval_id)
        if approval is None:
            raise UnknownApprovalError(approval_id)
        return approval

    async def _commit(
        self,
        agent: ApprovalHandler,
        approval: Approval,
        decision: Decision,
        note: str | None,
        key: SessionKey,
        turn_id: str,
        replay: Replay | None,
    ) -> int | None:
        engine = self.engine
        client = engine.clients.get(key.client_id)
        assert client is not None
        loaded = await engine.store.load(key)
        if loaded is not None:
            session = loaded.session
        else:  # the conversation expired: the decision still counts, in a fresh one
            session = ConversationSession.new(key)
            session.test = approval.test
        tools = engine.tools.for_client(client)
        effects = Effects(turn_id, key, test=approval.test, notifiers=tools.notifiers)
        message = NormalizedMessage(
            client_id=key.client_id,
            channel=Channel(key.channel),
            session_id=key.session_id,
            text="",
            purpose=approval.purpose,
            context=session.context,
        )
        now = engine.clock()
        ctx = TurnContext(client, session, message, tools, now, effects)
        reply = await agent.decide(ctx, approval, decision, note)
        if not any(s.approval_id == approval.approval_id for s in effects.settlements):
            raise RuntimeError(f"{approval.purpose}: decide() did not settle the approval")
        if reply.expecting is not None and reply.handback is None:
            session.purpose = approval.purpose  # the flow waits for the customer's answer
        elif session.purpose == approval.purpose and reply.handback is not None:
            session.purpose = None
        lines: list[Turn] = []
        if reply.text:
            line = Turn(role="assistant", text=reply.text, purpose=approval.purpose)
            line.line_id = f"{turn_id}.0"
            session.transcript.append(line)
            lines.append(line)
        if reply.outcome:
            session.outcome = reply.outcome
        session.updated_at = now
        state = effects.settlements[-1].state
        response = ConversationResponse(
            text=reply.text,
            quick_replies=reply.quick_replies,
            actions=reply.actions,
            metadata=ResponseMetadata(
                purpose=approval.purpose,
                expecting=reply.expecting,
                slots=dict(reply.slots),
                state=reply.state,
                purpose_data={
                    **reply.metadata,
                    "from": "approval",
                    "approval_id": approval.approval_id,
                    "approval": state,
                },
            ),
        )
        last_event_id = loaded.last_event_id if loaded else 0
        events: list[tuple[int, str]] = []
        if replay is not None:
            replay.add(last_event_id, response)
            events = list(replay.log)
            last_event_id = max(last_event_id, replay.last_id)
        commit = TurnCommit(
            session=session,
            version=loaded.version if loaded else None,
            turn_id=turn_id,
            message_id=f"approval:{approval.approval_id}",
            effects=effects,
            lines=lines,
            purpose=session.purpose or approval.purpose,
            events=events,
            last_event_id=last_event_id,
        )
        if self.hook_for is not None and reply.text:
            commit.hook = self.hook_for(client, key, f"approval:{approval.approval_id}")
            commit.response = response
        await engine.committer.commit(client, commit)
        return replay.last_id if replay is not None and replay.log else None

    async def expire_due(
        self, replay_for: Callable[[SessionKey], Replay | None] = lambda _key: None
    ) -> list[DecisionResult]:
        """Apply the fallback to every pending request past its deadline; returns
        what this call settled (a busy conversation waits for the next sweep)."""
        settled: list[DecisionResult] = []
        for approval in await self.approvals.due():
            key = SessionKey(approval.client_id, approval.channel, approval.session_id)
            try:
                result = await self.decide(approval.approval_id, "expire", replay=replay_for(key))
            except SessionBusyError:
                continue
            except GatewayError as exc:
                log.warning("approvals: expiring %s failed: %s", approval.approval_id, exc)
                continue
            if not result.duplicate:
                settled.append(result)
        return settled


class ApprovalSweeper:
    """Expires overdue approval requests every ``interval_s`` seconds, on each
    replica (the conditional settlement makes that safe). ``on_settled`` is
    awaited for each request it settled (the gateway signals the widget)."""

    def __init__(
        self,
        decisions: Decisions,
        *,
        interval_s: float = 30.0,
        replay_for: Callable[[SessionKey], Replay | None] = lambda _key: None,
        on_settled: Callable[[DecisionResult], Awaitable[None]] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("ApprovalSweeper.interval_s must be > 0")
        self.decisions = decisions
        self.interval_s = interval_s
        self.replay_for = replay_for
        self.on_settled = on_settled
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="approval-sweeper")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run_once(self) -> list[DecisionResult]:
        settled = await self.decisions.expire_due(self.replay_for)
        for result in settled:
            if self.on_settled is not None:
                await self.on_settled(result)
        return settled

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # a database hiccup: try again next round
                log.error("approvals: sweep failed: %s", describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

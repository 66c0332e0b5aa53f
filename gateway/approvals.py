"""Approval decisions wired to the channels: the web replay for a decision's
message, the signal to the open widget, and the timeout sweeper.

The engine applies a decision (:mod:`engine.decisions`); here the gateway
gives it the web channel's event log (so the message is committed as a
``complete`` event) and, once committed, signals the conversation's open
socket on any replica (:class:`~engine.bus.ConversationBus`). Used by
``POST /admin/api/approvals/{id}`` and by the sweeper the lifespan runs.
"""

from __future__ import annotations

from channels.web.codec import complete_event
from engine.approvals import Decision
from engine.bus import ConversationBus
from engine.contract import Replay
from engine.decisions import ApprovalSweeper, DecisionResult, Decisions
from engine.messages import ConversationResponse, TurnEvent
from engine.session import SessionKey

__all__ = ["SWEEP_INTERVAL_S", "decide", "replay_for", "sweeper"]

SWEEP_INTERVAL_S = 30.0
"""How often each replica looks for approval requests past their deadline."""


def _web_encode(event_id: int, event: TurnEvent) -> str | None:
    if isinstance(event, ConversationResponse):
        return complete_event(event_id, event)
    return None


def replay_for(bus: ConversationBus, key: SessionKey) -> Replay | None:
    """The web channel's event log for ``key`` (None elsewhere: recorded only),
    numbered after what an open socket already sent (``bus.cursor_hint``)."""
    if key.channel != "web":
        return None
    return Replay(_web_encode, after=bus.cursor_hint(str(key)))


async def decide(
    decisions: Decisions,
    bus: ConversationBus,
    approval_id: str,
    decision: Decision,
    note: str | None = None,
) -> DecisionResult:
    """Apply ``decision`` and, when it wrote something, signal the widget."""
    approval = await decisions.approvals.get(approval_id)
    key = (
        SessionKey(approval.client_id, approval.channel, approval.session_id)
        if approval is not None
        else None
    )
    replay = replay_for(bus, key) if key is not None else None
    result = await decisions.decide(approval_id, decision, note=note, replay=replay)
    if not result.duplicate:
        await bus.publish(str(result.key))
    return result


def sweeper(
    decisions: Decisions, bus: ConversationBus, interval_s: float = SWEEP_INTERVAL_S
) -> ApprovalSweeper:
    """The timeout sweeper for this replica (the lifespan starts and stops it)."""

    async def signal(result: DecisionResult) -> None:
        await bus.publish(str(result.key))

    return ApprovalSweeper(
        decisions,
        interval_s=interval_s,
        replay_for=lambda key: replay_for(bus, key),
        on_settled=signal,
    )

"""Approval requests: an action a person at the business must confirm first.

A purpose flow asks for one as an effect of a turn
(:meth:`engine.effects.Effects.request_approval`; lead capture does for a
booking outside the usual rules, ``booking.approval`` in the client config).
The request row is written in the turn's atomic commit, together with the
slot's hold and the staff notice in the outbox; a decision settles it in
another commit (:mod:`engine.decisions`), exactly once.

States (``approvals.state``)::

    stateDiagram-v2
        [*] --> pending: request_approval (turn commit)
        pending --> approved: POST /admin/api/approvals/{id} approve
        pending --> declined: POST /admin/api/approvals/{id} decline
        pending --> expired: no decision by deadline_ts (sweeper; fallback applied)
        pending --> withdrawn: the customer called it off

Every settlement is a conditional update (``WHERE state = 'pending'``)
inside the commit that also writes its effects (the booking, the lead, the
customer's message): whoever settles first wins, the others roll back whole
(:class:`ApprovalSettled`). Two replicas, a sweeper racing a staff click, a
retried POST: one outcome, one booking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import sqlalchemy as sa

from engine.db.database import Database
from engine.db.fast import Tx
from engine.db.schema import APPROVALS
from engine.errors import CommitConflict, GatewayError

__all__ = [
    "Approval",
    "ApprovalSettled",
    "ApprovalState",
    "ApprovalStore",
    "Decision",
    "Fallback",
    "NewApproval",
    "Settlement",
    "settlement_for",
    "state_after",
]

ApprovalState = Literal["pending", "approved", "declined", "expired", "withdrawn"]
Decision = Literal["approve", "decline", "expire", "withdraw"]
"""``approve``/``decline``: staff (admin API); ``expire``: the deadline passed
(sweeper); ``withdraw``: the customer called it off in the conversation."""
Fallback = Literal["decline", "take_message"]
DecidedBy = Literal["staff", "timeout", "customer"]

STATES: tuple[ApprovalState, ...] = get_args(ApprovalState)
DECISIONS: tuple[Decision, ...] = get_args(Decision)
_AFTER: dict[Decision, tuple[ApprovalState, DecidedBy]] = {
    "approve": ("approved", "staff"),
    "decline": ("declined", "staff"),
    "expire": ("expired", "timeout"),
    "withdraw": ("withdrawn", "customer"),
}


def state_after(decision: Decision) -> ApprovalState:
    """The state ``decision`` settles a pending request in."""
    return _AFTER[decision][0]


class ApprovalSettled(CommitConflict):
    """The approval was no longer pending when the commit tried to settle it
    (someone else decided first); the whole commit rolled back."""

    def __init__(self, approval_id: str) -> None:
        GatewayError.__init__(
            self, f"approval {approval_id} was settled by someone else; nothing was written"
        )
        self.key = self.approval_id = approval_id


@dataclass(frozen=True, slots=True)
class NewApproval:
    """A request a turn asks for (written by its commit or not at all).

    ``summary``: one line for staff ("Deep Tissue Massage on Friday, November
    27 at 10:30 AM for Maria Lopez"); ``details``: what the flow needs to act
    on the decision (slots, start/end...), strings only; ``reason``: why it
    needs approval ("less than 24 hours away"); ``hold_id``: the booking
    holding the slot meanwhile (None: nothing held; the slot is checked
    again on approval). ``deadline_ts``: epoch seconds after which
    ``fallback`` applies.
    """

    approval_id: str
    client_id: str
    channel: str
    session_id: str
    purpose: str
    summary: str
    reason: str
    details: dict[str, str]
    hold_id: str | None
    fallback: Fallback
    created_ts: float
    deadline_ts: float
    turn_id: str
    test: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a decision settled a request: the state, who decided (``staff``,
    ``timeout``, ``customer``), the staff note, the flow's outcome (``booked``,
    ``slot_taken``, ``declined``, ``callback``, ``withdrawn``), what it made
    (``booking_id``, ``lead_id``, the customer's message...) and whether the
    request's slot hold becomes the booking (``confirm_hold``; otherwise the
    hold is released). The hold's id is read from the request row itself."""

    approval_id: str
    state: ApprovalState
    decided_by: str
    outcome: str
    decided_ts: float
    note: str | None = None
    result: Mapping[str, str | None] = field(default_factory=dict)
    confirm_hold: bool = False


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval request as stored (epoch seconds in ``*_ts``)."""

    approval_id: str
    client_id: str
    channel: str
    session_id: str
    purpose: str
    state: ApprovalState
    summary: str
    details: dict[str, str]
    hold_id: str | None
    fallback: Fallback
    created_ts: float
    deadline_ts: float
    turn_id: str
    decided_ts: float | None = None
    decided_by: str | None = None
    note: str | None = None
    outcome: str | None = None
    result: dict[str, str | None] = field(default_factory=dict)
    test: bool = False

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def as_json(self) -> dict[str, object]:
        """The admin API's shape (``GET /admin/api/approvals``)."""
        return {
            "id": self.approval_id,
            "client_id": self.client_id,
            "conversation": f"{self.client_id}:{self.channel}:{self.session_id}",
            "channel": self.channel,
            "purpose": self.purpose,
            "state": self.state,
            "summary": self.summary,
            "reason": self.details.get("reason"),
            "details": self.details,
            "hold_id": self.hold_id,
            "fallback": self.fallback,
            "created_ts": self.created_ts,
            "deadline_ts": self.deadline_ts,
            "decided_ts": self.decided_ts,
            "decided_by": self.decided_by,
            "note": self.note,
            "outcome": self.outcome,
            "result": self.result,
            "test": self.test,
        }


def _approval(m: sa.RowMapping) -> Approval:
    return Approval(
        approval_id=str(m["approval_id"]),
        client_id=str(m["client_id"]),
        channel=str(m["channel"]),
        session_id=str(m["session_id"]),
        purpose=str(m["purpose"]),
        state=m["state"],
        summary=str(m["summary"]),
        details=json.loads(str(m["details"])),
        hold_id=m["hold_id"],
        fallback=m["fallback"],
        created_ts=float(m["created_ts"]),
        deadline_ts=float(m["deadline_ts"]),
        turn_id=str(m["turn_id"]),
        decided_ts=None if m["decided_ts"] is None else float(m["decided_ts"]),
        decided_by=m["decided_by"],
        note=m["note"],
        outcome=m["outcome"],
        result=json.loads(str(m["result"])) if m["result"] else {},
        test=bool(m["test"]),
    )


class ApprovalStore:
    """The ``approvals`` table. Writes happen inside a turn's commit
    (:meth:`create_in`, :meth:`settle_in`); reads for the admin API and the
    sweeper. ``clock``: epoch seconds (tests move it)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    @staticmethod
    async def create_in(tx: Tx, request: NewApproval) -> None:
        """Insert ``request`` as ``pending``; a retried turn's same id is a no-op."""
        details = {**request.details, "reason": request.reason}
        await tx.execute(
            "INSERT INTO approvals (approval_id, client_id, channel, session_id, purpose, state,"
            " summary, details, hold_id, fallback, created_ts, deadline_ts, turn_id, test)"
            " VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13)"
            " ON CONFLICT (approval_id) DO NOTHING",
            request.approval_id,
            request.client_id,
            request.channel,
            request.session_id,
            request.purpose,
            request.summary,
            json.dumps(details, ensure_ascii=False),
            request.hold_id,
            request.fallback,
            request.created_ts,
            request.deadline_ts,
            request.turn_id,
            request.test,
        )

    @staticmethod
    async def settle_in(tx: Tx, settlement: Settlement) -> str | None:
        """Settle a pending request in the caller's transaction; returns its
        hold's booking id (None: nothing held). Raises :class:`ApprovalSettled`
        (the caller rolls back) when it is not pending."""
        row = await tx.fetchone(
            "UPDATE approvals SET state = $2, decided_ts = $3, decided_by = $4, note = $5,"
            " outcome = $6, result = $7 WHERE approval_id = $1 AND state = 'pending'"
            " RETURNING approval_id, hold_id",
            settlement.approval_id,
            settlement.state,
            settlement.decided_ts,
            settlement.decided_by,
            settlement.note,
            settlement.outcome,
            json.dumps(dict(settlement.result), ensure_ascii=False),
        )
        if row is None:
            raise ApprovalSettled(settlement.approval_id)
        return None if row[1] is None else str(row[1])

    async def get(self, approval_id: str) -> Approval | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(APPROVALS).where(APPROVALS.c.approval_id == approval_id)
                )
            ).first()
        return None if row is None else _approval(row._mapping)

    async def due(self, limit: int = 50) -> list[Approval]:
        """Pending requests whose deadline has passed, oldest deadline first."""
        query = (
            sa.select(APPROVALS)
            .where(APPROVALS.c.state == "pending")
            .where(APPROVALS.c.deadline_ts <= self.clock())
            .order_by(APPROVALS.c.deadline_ts)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [_approval(r._mapping) for r in await conn.execute(query)]

    async def list(
        self,
        *,
        client_id: str | None = None,
        state: ApprovalState | None = None,
        limit: int = 200,
    ) -> list[Approval]:
        """Newest first."""
        query = sa.select(APPROVALS).order_by(APPROVALS.c.created_ts.desc()).limit(limit)
        if client_id:
            query = query.where(APPROVALS.c.client_id == client_id)
        if state:
            query = query.where(APPROVALS.c.state == state)
        async with self.db.read() as conn:
            return [_approval(r._mapping) for r in await conn.execute(query)]


def settlement_for(
    decision: Decision,
    approval: Approval,
    *,
    outcome: str,
    now_ts: float,
    note: str | None = None,
    result: Mapping[str, str | None] | None = None,
    confirm_hold: bool = False,
) -> Settlement:
    """The :class:`Settlement` of ``approval`` by ``decision``."""
    state, by = _AFTER[decision]
    return Settlement(
        approval.approval_id,
        state,
        by,
        outcome,
        now_ts,
        note,
        dict(result or {}),
        confirm_hold and state == "approved",
    )

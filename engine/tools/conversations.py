"""Conversation log: every conversation's transcript, purpose and outcome, for the admin API.

Sessions expire and keep only their last lines; the log keeps each
conversation whole. It is **append-only**: a turn's commit appends its lines
(``conversation_messages``, in commit order) and updates the
conversation's summary row; nothing is ever replaced, so a session that
restarts under the same id (its state expired or was lost) continues the same
transcript instead of overwriting it. The only edit is a voice channel's
"heard only this much" (:meth:`ConversationLog.mark_cut_in`).

Each conversation's summary also carries its **takeover** state (stored and
served as ``handoff``) (``bot``,
``pending_human``, ``human``, ``resolved``; :mod:`engine.takeover`), updated by
every commit, and each line whether a person at the business wrote it
(``staff``). A conversation's id in the admin API is
``client_id:channel:session_id`` (:func:`conversation_id`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import time

import sqlalchemy as sa

from engine.db.database import Database
from engine.db.fast import Tx
from engine.db.schema import CONVERSATION_MESSAGES, CONVERSATIONS
from engine.session import ConversationSession, SessionKey, Turn

__all__ = ["ConversationLog", "ConversationRecord", "conversation_id", "parse_conversation_id"]


def conversation_id(key: SessionKey) -> str:
    """The admin API's id of a conversation: ``client_id:channel:session_id``."""
    return str(key)


def parse_conversation_id(value: str) -> SessionKey | None:
    """The key a :func:`conversation_id` names, or None when malformed (client ids
    and channels hold no ``:``; the session id is everything after the second)."""
    client_id, sep1, rest = value.partition(":")
    channel, sep2, session_id = rest.partition(":")
    if not (sep1 and sep2 and client_id and channel and session_id):
        return None
    return SessionKey(client_id, channel, session_id)


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    client_id: str
    channel: str
    session_id: str
    purpose: str | None
    outcome: str | None
    turn_count: int
    transcript: list[dict[str, object]]
    created_at: str
    updated_at: str
    test: bool = False
    takeover: str = "bot"
    """Who answers (:mod:`engine.takeover`); ``handoff`` in the JSON and the column."""
    llm_usage: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        """``id`` (``client_id:channel:session_id``, the path parameter of
        ``/admin/api/conversations/{id}``), the key fields, ``handoff``, the
        transcript: lines ``{role, text, at, purpose, cut, staff}``, and
        ``llm_usage``: ``{input_tokens, output_tokens, calls, cost_usd}`` (the
        model's use by this conversation; zeros offline)."""
        return {
            "id": conversation_id(SessionKey(self.client_id, self.channel, self.session_id)),
            "client_id": self.client_id,
            "channel": self.channel,
            "session_id": self.session_id,
            "purpose": self.purpose,
            "outcome": self.outcome,
            "turn_count": self.turn_count,
            "transcript": self.transcript,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "test": self.test,
            "handoff": self.takeover,
            "llm_usage": self.llm_usage
            or {"input_tokens": 0, "output_tokens": 0, "calls": 0, "cost_usd": 0.0},
        }


class ConversationLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append_in(
        self,
        tx: Tx,
        session: ConversationSession,
        lines: Sequence[Turn],
        purpose: str | None,
        *,
        new: bool = False,
    ) -> None:
        """Append ``lines`` (their ``line_id`` set) and update the summary row, in the
        caller's transaction. ``new``: the session is new (its summary row may be too)."""
        key = session.key
        ident = (key.client_id, key.channel, key.session_id)
        if lines:
            await tx.executemany(
                "INSERT INTO conversation_messages (client_id, channel, session_id, line_id,"
                " role, text, purpose, cut, at_iso, staff)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                [
                    (
                        *ident,
                        line.line_id,
                        line.role,
                        line.text,
                        line.purpose,
                        line.cut,
                        line.at.isoformat(),
                        line.staff,
                    )
                    for line in lines
                ],
            )
        turns = 1 if lines else 0
        spent = session.llm_usage
        usage = (spent.input_tokens, spent.output_tokens, spent.calls, spent.cost_usd)
        updated_iso, updated_ts = session.updated_at.isoformat(), time()
        if not new:
            changed = await tx.execute(
                "UPDATE conversations SET purpose = COALESCE($4, purpose),"
                " outcome = COALESCE($5, outcome), turn_count = turn_count + $6,"
                " message_count = message_count + $7, updated_iso = $8, updated_ts = $9,"
                " handoff = $10, llm_input_tokens = $11, llm_output_tokens = $12,"
                " llm_calls = $13, llm_cost_usd = $14"
                " WHERE client_id = $1 AND channel = $2 AND session_id = $3",
                *ident,
                purpose,
                session.outcome,
                turns,
                len(lines),
                updated_iso,
                updated_ts,
                session.takeover,
                *usage,
            )
            if changed:
                return
        # A new conversation, or one whose session was lost: its log goes on.
        await tx.execute(
            "INSERT INTO conversations (client_id, channel, session_id, purpose, outcome,"
            " turn_count, message_count, test, created_iso, updated_iso, updated_ts, handoff,"
            " llm_input_tokens, llm_output_tokens, llm_calls, llm_cost_usd)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            " ON CONFLICT (client_id, channel, session_id) DO UPDATE SET"
            " purpose = COALESCE(excluded.purpose, conversations.purpose),"
            " outcome = COALESCE(excluded.outcome, conversations.outcome),"
            " turn_count = conversations.turn_count + excluded.turn_count,"
            " message_count = conversations.message_count + excluded.message_count,"
            " updated_iso = excluded.updated_iso, updated_ts = excluded.updated_ts,"
            " handoff = excluded.handoff, llm_input_tokens = excluded.llm_input_tokens,"
            " llm_output_tokens = excluded.llm_output_tokens, llm_calls = excluded.llm_calls,"
            " llm_cost_usd = excluded.llm_cost_usd",
            *ident,
            purpose,
            session.outcome,
            turns,
            len(lines),
            session.test,
            session.created_at.isoformat(),
            updated_iso,
            updated_ts,
            session.takeover,
            *usage,
        )

    async def mark_cut_in(self, tx: Tx, key: SessionKey, line_id: str, heard: str) -> None:
        """The caller heard only ``heard`` of line ``line_id`` (a barge-in)."""
        await tx.execute(
            "UPDATE conversation_messages SET text = $5, cut = $6"
            " WHERE client_id = $1 AND channel = $2 AND session_id = $3 AND line_id = $4",
            key.client_id,
            key.channel,
            key.session_id,
            line_id,
            heard,
            True,
        )

    async def get(self, key: SessionKey) -> ConversationRecord | None:
        """One conversation with its whole transcript, or None."""
        found = await self.list(key.client_id, 1, channel=key.channel, session_id=key.session_id)
        return found[0] if found else None

    async def list(
        self,
        client_id: str,
        limit: int = 200,
        *,
        include_test: bool = True,
        channel: str | None = None,
        session_id: str | None = None,
    ) -> list[ConversationRecord]:
        """The ``limit`` most recently active conversations of a client, each with
        its whole transcript (``channel`` and ``session_id`` narrow it to one)."""

        async def run() -> list[ConversationRecord]:
            query = sa.select(CONVERSATIONS).where(CONVERSATIONS.c.client_id == client_id)
            if channel is not None:
                query = query.where(CONVERSATIONS.c.channel == channel)
            if session_id is not None:
                query = query.where(CONVERSATIONS.c.session_id == session_id)
            if not include_test:
                query = query.where(CONVERSATIONS.c.test == sa.false())
            async with self.db.read() as conn:
                heads = list(
                    await conn.execute(
                        query.order_by(CONVERSATIONS.c.updated_ts.desc()).limit(limit)
                    )
                )
                lines: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
                if heads:
                    ids = [h.session_id for h in heads]
                    rows = await conn.execute(
                        sa.select(CONVERSATION_MESSAGES)
                        .where(CONVERSATION_MESSAGES.c.client_id == client_id)
                        .where(CONVERSATION_MESSAGES.c.session_id.in_(ids))
                        .order_by(CONVERSATION_MESSAGES.c.id)
                    )
                    for r in rows:
                        lines[(r.channel, r.session_id)].append(
                            {
                                "role": r.role,
                                "text": r.text,
                                "at": r.at_iso,
                                "purpose": r.purpose,
                                "cut": bool(r.cut),
                                "staff": bool(r.staff),
                            }
                        )
            return [
                ConversationRecord(
                    client_id=h.client_id,
                    channel=h.channel,
                    session_id=h.session_id,
                    purpose=h.purpose,
                    outcome=h.outcome,
                    turn_count=h.turn_count,
                    transcript=lines.get((h.channel, h.session_id), []),
                    created_at=h.created_iso,
                    updated_at=h.updated_iso,
                    test=bool(h.test),
                    takeover=h.handoff,
                    llm_usage={
                        "input_tokens": h.llm_input_tokens,
                        "output_tokens": h.llm_output_tokens,
                        "calls": h.llm_calls,
                        "cost_usd": h.llm_cost_usd,
                    },
                )
                for h in heads
            ]

        return await self.db.retry_once("conversations read", run)

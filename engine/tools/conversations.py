"""Conversation log: every conversation's transcript, purpose and outcome, for the admin API.

Sessions expire and keep only their last lines; the log keeps each
conversation whole. It is **append-only**: a turn's commit appends its lines
(``conversation_messages``, numbered per conversation) and updates the
conversation's summary row; nothing is ever replaced, so a session that
restarts under the same id (its state expired or was lost) continues the same
transcript instead of overwriting it. The only edit is a voice channel's
"heard only this much" (:meth:`ConversationLog.mark_cut_in`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from time import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.db.database import Database
from engine.db.schema import CONVERSATION_MESSAGES, CONVERSATIONS
from engine.session import ConversationSession, SessionKey, Turn

__all__ = ["ConversationLog", "ConversationRecord"]


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

    def as_json(self) -> dict[str, object]:
        return {
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
        }


def _where(table: sa.Table, key: SessionKey) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.client_id == key.client_id,
        table.c.channel == key.channel,
        table.c.session_id == key.session_id,
    )


class ConversationLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append_in(
        self,
        conn: AsyncConnection,
        session: ConversationSession,
        lines: Sequence[Turn],
        purpose: str | None,
    ) -> None:
        """Append ``lines`` (their ``seq`` set) and update the summary row, in the
        caller's transaction."""
        key = session.key
        if lines:
            await conn.execute(
                CONVERSATION_MESSAGES.insert(),
                [
                    {
                        "client_id": key.client_id,
                        "channel": key.channel,
                        "session_id": key.session_id,
                        "seq": line.seq,
                        "role": line.role,
                        "text": line.text,
                        "purpose": line.purpose,
                        "cut": line.cut,
                        "at_iso": line.at.isoformat(),
                    }
                    for line in lines
                ],
            )
        summary = {
            "purpose": purpose,
            "outcome": session.outcome,
            "turn_count": session.turn_count,
            "message_count": session.logged_messages,
            "test": session.test,
            "updated_iso": session.updated_at.isoformat(),
            "updated_ts": time(),
        }
        result = await conn.execute(
            CONVERSATIONS.update()
            .where(_where(CONVERSATIONS, key))
            .values(
                {
                    **summary,
                    "purpose": sa.func.coalesce(purpose, CONVERSATIONS.c.purpose),
                    "outcome": sa.func.coalesce(session.outcome, CONVERSATIONS.c.outcome),
                    "turn_count": CONVERSATIONS.c.turn_count + (1 if lines else 0),
                    "message_count": sa.func.max(
                        CONVERSATIONS.c.message_count, session.logged_messages
                    )
                    if self.db.is_sqlite
                    else sa.func.greatest(CONVERSATIONS.c.message_count, session.logged_messages),
                }
            )
        )
        if result.rowcount == 0:
            await conn.execute(
                CONVERSATIONS.insert().values(
                    client_id=key.client_id,
                    channel=key.channel,
                    session_id=key.session_id,
                    created_iso=session.created_at.isoformat(),
                    **{**summary, "turn_count": 1 if lines else 0},
                )
            )

    async def mark_cut_in(
        self, conn: AsyncConnection, key: SessionKey, seq: int, heard: str
    ) -> None:
        """The caller heard only ``heard`` of line ``seq`` (a barge-in)."""
        await conn.execute(
            CONVERSATION_MESSAGES.update()
            .where(_where(CONVERSATION_MESSAGES, key))
            .where(CONVERSATION_MESSAGES.c.seq == seq)
            .values(text=heard, cut=True)
        )

    async def next_seq(self, key: SessionKey) -> int:
        """The next line number of a conversation (0 for a new one)."""
        async with self.db.read() as conn:
            value = (
                await conn.execute(
                    sa.select(sa.func.max(CONVERSATION_MESSAGES.c.seq)).where(
                        _where(CONVERSATION_MESSAGES, key)
                    )
                )
            ).scalar_one_or_none()
        return 0 if value is None else int(value) + 1

    async def list(
        self, client_id: str, limit: int = 200, *, include_test: bool = True
    ) -> list[ConversationRecord]:
        """The ``limit`` most recently active conversations of a client, each with
        its whole transcript."""

        async def run() -> list[ConversationRecord]:
            query = sa.select(CONVERSATIONS).where(CONVERSATIONS.c.client_id == client_id)
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
                        .order_by(CONVERSATION_MESSAGES.c.seq)
                    )
                    for r in rows:
                        lines[(r.channel, r.session_id)].append(
                            {
                                "role": r.role,
                                "text": r.text,
                                "at": r.at_iso,
                                "purpose": r.purpose,
                                "cut": bool(r.cut),
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
                )
                for h in heads
            ]

        return await self.db.retry_once("conversations read", run)

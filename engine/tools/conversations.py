"""Conversation log: transcripts with purpose and outcome, for the admin API.

Sessions expire from the session store; the log keeps each conversation (in
SQLite, ``data/conversations.sqlite``) so an agency can review it later. It is
written after every turn (an upsert keyed by client, channel and session).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from engine.session import ConversationSession
from engine.tools._sqlite import SqliteFile

__all__ = ["ConversationLog", "ConversationRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
  client_id TEXT NOT NULL,
  channel TEXT NOT NULL,
  session_id TEXT NOT NULL,
  purpose TEXT,
  outcome TEXT,
  turn_count INTEGER NOT NULL,
  transcript TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (client_id, channel, session_id)
);
"""


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
        }


class ConversationLog:
    def __init__(self, path: Path) -> None:
        self._db = SqliteFile(path, _SCHEMA)

    async def upsert(self, session: ConversationSession, purpose: str | None) -> None:
        transcript = json.dumps([t.model_dump(mode="json") for t in session.transcript])
        row = (
            session.client_id,
            session.channel,
            session.session_id,
            purpose,
            session.outcome,
            session.turn_count,
            transcript,
            session.created_at.isoformat(),
            session.updated_at.isoformat(),
        )

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (client_id, channel, session_id) DO UPDATE SET"
                " purpose = COALESCE(excluded.purpose, conversations.purpose),"
                " outcome = COALESCE(excluded.outcome, conversations.outcome),"
                " turn_count = excluded.turn_count, transcript = excluded.transcript,"
                " updated_at = excluded.updated_at",
                row,
            )

        await self._db.run(write)

    async def list(self, client_id: str, limit: int = 200) -> list[ConversationRecord]:
        def query(conn: sqlite3.Connection) -> list[ConversationRecord]:
            rows = conn.execute(
                "SELECT client_id, channel, session_id, purpose, outcome, turn_count, transcript,"
                " created_at, updated_at FROM conversations WHERE client_id = ?"
                " ORDER BY updated_at DESC LIMIT ?",
                (client_id, limit),
            ).fetchall()
            return [
                ConversationRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
                for r in rows
            ]

        return await self._db.run(query)

    def close(self) -> None:
        self._db.close()

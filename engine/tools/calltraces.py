"""Phone call traces in the gateway's database, so every replica can show any call.

A trace is the JSON of :meth:`channels.phone.trace.CallTrace.as_json`
(per-turn latency stages, barge-ins); the phone adapter saves it after each
reply and when the call ends, off the reply's path.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from engine.db.database import Database
from engine.db.schema import CALL_TRACES

__all__ = ["CallTraceStore"]


class CallTraceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, call_sid: str, client_id: str, trace: dict[str, object]) -> None:
        """Insert or replace the trace of ``call_sid``. Raises StoreError."""
        data = json.dumps(trace, ensure_ascii=False)
        now = time.time()
        async with self.db.write() as conn:
            result = await conn.execute(
                CALL_TRACES.update()
                .where(CALL_TRACES.c.call_sid == call_sid)
                .values(data=data, updated_ts=now)
            )
            if not result.rowcount:
                await conn.execute(
                    CALL_TRACES.insert().values(
                        call_sid=call_sid, client_id=client_id, data=data, updated_ts=now
                    )
                )

    async def get(self, call_sid: str) -> dict[str, object] | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(CALL_TRACES.c.data).where(CALL_TRACES.c.call_sid == call_sid)
                )
            ).first()
        if row is None:
            return None
        value: dict[str, object] = json.loads(row.data)
        return value

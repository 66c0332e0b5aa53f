"""The gateway's periodic housekeeping: what expires goes, what matters stays."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from engine.outbox import OutboxItem
from engine.payloads import CallAction
from gateway.app import DELIVERED_KEEP_S, Gateway, _housekeeping


@pytest.fixture
def gw_options(database_url: str) -> dict[str, object]:
    """``gw`` (tests/conftest.py) on ``database_url``."""
    return {"database_url": database_url}


async def test_old_delivered_rows_go_and_pending_or_dead_rows_stay(gw: Gateway) -> None:
    items = [
        OutboxItem("spa-del-sol", f"k-{n}", CallAction(call_sid=f"CA{n}", action="hangup"))
        for n in range(4)
    ]
    await gw.outbox.enqueue(items)
    claimed = {r.key: r for r in await gw.outbox.claim("w", 10, 60)}
    await gw.outbox.settle(claimed["k-0"].id, "w", "delivered")  # old, delivered: goes
    await gw.outbox.settle(claimed["k-1"].id, "w", "delivered")  # recent, delivered: stays
    await gw.outbox.settle(claimed["k-2"].id, "w", "dead", error="gave up")  # dead: stays
    await gw.outbox.settle(claimed["k-3"].id, "w", "pending")  # pending: stays
    long_ago = time.time() - DELIVERED_KEEP_S - 60
    async with gw.db.write() as conn:
        await conn.execute(
            sa.text("UPDATE outbox SET updated_ts = :t WHERE idempotency_key IN ('k-0', 'k-2')"),
            {"t": long_ago},
        )
    await _housekeeping(gw)
    left = {r.key: r.state for r in await gw.outbox.list()}
    assert left == {"k-1": "delivered", "k-2": "dead", "k-3": "pending"}

"""Two gateway replicas (two processes) on one PostgreSQL and one Redis.

Regression: each replica had its own SQLite calendar, so two customers on two
replicas both got Tuesday 3 pm. Now the calendar is one table in the shared
database and a booking is written under the client's calendar row lock inside
the turn's commit: whatever replicas the customers use, one slot is booked once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from web.chat_client import open_chat

from .procs import GatewayProcess

CLIENT = "spa-del-sol"
NOW = "2026-12-07T17:00:00+00:00"  # Monday 09:00 in Los Angeles
SLOT = "Manicure on December 15 at 2:30 pm"
CUSTOMERS = 8

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def postgres_url(migrated_postgres_url: str) -> str:
    """The replicas' shared database, already at the schema's head (tests/conftest.py)."""
    return migrated_postgres_url


@pytest.fixture
def replicas(
    tmp_path: Path, clients_dir: Path, redis_url: str, postgres_url: str
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    env = {
        "GATEWAY_CLIENTS_DIR": str(clients_dir),
        "GATEWAY_DATA_DIR": str(tmp_path / "unused-data"),
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "GATEWAY_TEST_NOW": NOW,
        "GATEWAY_WEB_NEW_SESSIONS_PER_MIN": "600",
    }
    one = GatewayProcess(env, tmp_path / "replica-1.log", wait=False)
    try:
        two = GatewayProcess(env, tmp_path / "replica-2.log", wait=False)
        try:
            one.wait_ready()
            two.wait_ready()
            yield one, two
        finally:
            two.stop()
    finally:
        one.stop()


async def _customer(gw: GatewayProcess, n: int) -> dict[str, object]:
    async with open_chat(f"{gw.ws_url}/web/chat/{CLIENT}") as chat:
        await chat.session()
        confirm = await chat.ask(
            f"I'd like to book a {SLOT}. I'm Customer {chr(65 + n)}ouza, "
            f"415 555 01{10 + n}, c{n}@example.com",
            "m-1",
        )
        if confirm[-1]["metadata"]["expecting"] != "confirmation":
            return dict(confirm[-1])  # someone else booked it first: told at once
        done = await chat.ask("yes", "m-2")
        return dict(done[-1])


async def test_customers_on_two_replicas_racing_for_one_slot_get_it_once(
    replicas: tuple[GatewayProcess, GatewayProcess], postgres_url: str
) -> None:
    results = await asyncio.gather(*(_customer(replicas[n % 2], n) for n in range(CUSTOMERS)))
    booked = [r for r in results if r["metadata"]["state"] == "booked"]  # type: ignore[index]
    assert len(booked) == 1, [r["text"] for r in results]
    for other in results:
        if other is booked[0]:
            continue
        assert other["metadata"]["state"] == "collecting", other["text"]  # type: ignore[index]
        assert other["metadata"]["expecting"] == "time"  # type: ignore[index]
        assert "booked" in str(other["text"])  # told the slot went, offered others
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch("SELECT booking_id FROM bookings WHERE client_id = $1", CLIENT)
        leads = await conn.fetch("SELECT booking_id FROM leads WHERE client_id = $1", CLIENT)
    finally:
        await conn.close()
    booking_id = booked[0]["metadata"]["booking_id"]  # type: ignore[index]
    assert [r["booking_id"] for r in rows] == [booking_id]
    assert [r["booking_id"] for r in leads] == [booking_id]


async def test_a_chat_started_on_one_replica_resumes_and_finishes_on_the_other(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    one, two = replicas
    async with open_chat(f"{one.ws_url}/web/chat/{CLIENT}") as chat:
        sid = (await chat.session())["session_id"]
        first = await chat.ask("I'd like to book a Manicure", "m-1")
        name = await chat.ask("Ana Souza", "m-2")
        assert name[-1]["metadata"]["slots"]["name"] == "Ana Souza"
    async with open_chat(f"{two.ws_url}/web/chat/{CLIENT}") as chat:
        resumed = await chat.resume(sid, first[-1]["event_id"])
        assert resumed["resumed"] is True
        replayed = await chat.reply()
        assert replayed == name  # exactly the events missed, byte for byte
        reply = await chat.ask("415 555 0199", "m-3")
        slots = reply[-1]["metadata"]["slots"]
        assert (slots["name"], slots["phone"]) == ("Ana Souza", "+14155550199")
    records = await asyncio.to_thread(one.admin, "conversations", client_id=CLIENT)
    [record] = [r for r in records if r["session_id"] == sid]
    assert [t["role"] for t in record["transcript"]] == ["user", "assistant"] * 3

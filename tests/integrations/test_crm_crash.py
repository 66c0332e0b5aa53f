"""No lead lost, none duplicated, when the gateway dies while CRM deliveries are
pending: HubSpot is down (503) while customers book, the gateway is SIGKILLed and
restarted, more customers book, HubSpot throttles (429 with ``Retry-After``)
and recovers: every lead reaches it once, with the mapped properties and the
bearer token. And a gateway killed right after HubSpot accepted a lead (before
the row was marked delivered) redelivers it onto the same contact."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from durability.procs import GatewayProcess
from web.chat_client import open_chat

from .crm_stubs import Fault, HubspotStub

CLIENT = "spa-del-sol"
NOW = "2026-12-07T17:00:00+00:00"  # Monday 09:00 in Los Angeles
TOKEN = "pat-na1-crash-test-token"
CUSTOMERS = [
    ("Maria Lopez", "415 555 0134", "maria@example.com", "2:30 pm"),
    ("Ana Ruiz", "415 555 0135", "ana@example.com", "3:30 pm"),
    ("John Smith", "415 555 0136", "john@example.com", "4:30 pm"),
]


@pytest.fixture
def hubspot(clients_dir: Path) -> Iterator[HubspotStub]:
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "crm:\n  provider: local                  # local | hubspot | pipedrive | airtable | webhook\n"
    assert old in text
    config.write_text(
        text.replace(old, f"crm:\n  provider: hubspot\n  hubspot:\n    access_token: {TOKEN}\n"),
        encoding="utf-8",
    )
    with HubspotStub(TOKEN) as stub:
        yield stub


@pytest.fixture
def env(clients_dir: Path, data_dir: Path, hubspot: HubspotStub) -> dict[str, str]:
    return {
        "GATEWAY_CLIENTS_DIR": str(clients_dir),
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_TEST_NOW": NOW,
        "GATEWAY_LOG_LEVEL": "INFO",
        "HUBSPOT_BASE_URL": hubspot.url,
        "GATEWAY_OUTBOX_BASE_BACKOFF_S": "0.05",
        "GATEWAY_OUTBOX_MAX_BACKOFF_S": "0.3",
        "GATEWAY_OUTBOX_POLL_S": "0.05",
        "GATEWAY_OUTBOX_CLAIM_S": "2",
    }


async def book(gw: GatewayProcess, customer: tuple[str, str, str, str]) -> None:
    name, phone, email, at = customer
    async with open_chat(f"{gw.ws_url}/web/chat/{CLIENT}") as chat:
        await chat.session()
        confirm = await chat.ask(
            f"I'd like to book a Manicure on December 15 at {at}. I'm {name}, {phone}, {email}"
        )
        assert confirm[-1]["metadata"]["expecting"] == "confirmation", confirm[-1]["text"]
        done = await chat.ask("yes")
        assert done[-1]["metadata"]["state"] == "booked", done[-1]["text"]


def states(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "gateway.sqlite") as db:
        rows = db.execute("SELECT state FROM outbox WHERE kind = 'crm.hubspot'").fetchall()
    return sorted(r[0] for r in rows)


async def until(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


async def test_killed_while_hubspot_is_down_every_lead_arrives_once(
    env: dict[str, str], tmp_path: Path, data_dir: Path, hubspot: HubspotStub
) -> None:
    hubspot.down = True
    first = GatewayProcess(env, tmp_path / "gw1.log")
    try:
        for customer in CUSTOMERS[:2]:
            await book(first, customer)
        await until(lambda: len(hubspot.requests) >= 4)  # retrying against a 503
        first.proc.kill()  # SIGKILL: no drain, rows left claimed or pending
        assert first.wait_killed() == -9
    finally:
        first.stop()
    assert hubspot.contacts == {}

    second = GatewayProcess(env, tmp_path / "gw2.log")
    try:
        await book(second, CUSTOMERS[2])
        await asyncio.sleep(0.5)
        hubspot.faults = [Fault(429, retry_after="1")]
        hubspot.down = False
        await until(lambda: states(data_dir) == ["delivered"] * 3)
        await asyncio.sleep(1.0)  # nothing more arrives
        leads = await asyncio.to_thread(second.admin, "leads", client_id=CLIENT)
    finally:
        second.stop()
    emails = sorted(c[2] for c in CUSTOMERS)
    assert sorted(hubspot.accepted) == emails  # each accepted exactly once
    assert sorted(c["properties"]["email"] for c in hubspot.contacts.values()) == emails
    assert {c["properties"]["full_name"] for c in hubspot.contacts.values()} == {
        c[0] for c in CUSTOMERS
    }
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hubspot.requests)
    assert len(leads) == 3


async def test_killed_after_hubspot_accepted_the_redelivery_lands_on_the_same_contact(
    env: dict[str, str], tmp_path: Path, data_dir: Path, hubspot: HubspotStub
) -> None:
    crashing = GatewayProcess(
        {**env, "GATEWAY_TEST_CRASH_AT": "after_delivery"}, tmp_path / "1.log"
    )
    try:
        await book(crashing, CUSTOMERS[0])
        assert crashing.wait_killed() == -9
    finally:
        crashing.stop()
    assert hubspot.accepted == ["maria@example.com"] and states(data_dir) == ["delivering"]
    gw = GatewayProcess(env, tmp_path / "2.log")
    try:
        await until(lambda: states(data_dir) == ["delivered"])
    finally:
        gw.stop()
    assert hubspot.accepted == ["maria@example.com"] * 2  # at-least-once at the wire...
    assert len(hubspot.contacts) == 1  # ...exactly one contact, by HubSpot's upsert

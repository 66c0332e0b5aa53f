"""Leads reach the client's vendor CRM exactly once, through the outbox: the real
gateway (``running_gateway``), a booking on web chat, and local stubs speaking
HubSpot's, Pipedrive's, Airtable's and a Standard Webhooks receiver's wire
formats, with faults injected (503 for a while, 429 with ``Retry-After``, 401).
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from standardwebhooks import Webhook
from web.chat_client import open_chat

from .crm_stubs import AirtableStub, Fault, HubspotStub, PipedriveStub, WebhookStub

CLIENT = "spa-del-sol"
ADMIN = {"Authorization": "Bearer test-admin-token"}
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DIALOGUE = [
    "I'd like to book a deep tissue massage",
    "Maria Lopez",
    "415 555 0134",
    "maria@example.com",
    "Friday at 2pm",
    "yes",
]
FAST = {
    "GATEWAY_OUTBOX_BASE_BACKOFF_S": "0.05",
    "GATEWAY_OUTBOX_MAX_BACKOFF_S": "0.2",
    "GATEWAY_OUTBOX_POLL_S": "0.05",
}
MAPPED = {
    "full_name": "Maria Lopez",
    "phone": "+14155550134",
    "email": "maria@example.com",
    "service_interest": "Deep Tissue Massage",
}


def set_crm(clients_dir: Path, block: str) -> None:
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "crm:\n  provider: local                  # local | hubspot | pipedrive | airtable | webhook\n"
    assert old in text
    config.write_text(text.replace(old, "crm:\n" + block), encoding="utf-8")


async def book(url: str, dialogue: list[str] = DIALOGUE) -> None:
    async with open_chat(f"{url}/web/chat/{CLIENT}") as chat:
        await chat.session()
        for text in dialogue:
            events = await chat.ask(text)
            assert events[-1]["type"] == "complete"
        assert "book" in events[-1]["text"].lower()


async def until(cond: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def outbox(data_dir: Path, kind: str) -> list[tuple[str, str, int, str | None]]:
    with sqlite3.connect(data_dir / "gateway.sqlite") as db:
        return db.execute(
            "SELECT idempotency_key, state, attempts, last_error FROM outbox WHERE kind = ?",
            (kind,),
        ).fetchall()


async def leads(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, headers=ADMIN) as http:
        response = await http.get("/admin/api/leads", params={"client_id": CLIENT})
        return list(response.json())


# -- HubSpot ----------------------------------------------------------------------


@pytest.fixture
def hubspot(clients_dir: Path) -> Iterator[HubspotStub]:
    set_crm(clients_dir, f"  provider: hubspot\n  hubspot:\n    access_token: {TOKEN}\n")
    with HubspotStub(TOKEN) as stub:
        yield stub


async def test_a_booking_lead_reaches_hubspot_once_with_the_token_and_mapped_properties(
    running_gateway: Any, hubspot: HubspotStub, data_dir: Path
) -> None:
    with running_gateway(HUBSPOT_BASE_URL=hubspot.url, clock=lambda: NOW, **FAST) as gw:
        await book(gw.ws_url)
        await until(lambda: bool(hubspot.contacts))
        await asyncio.sleep(0.5)  # nothing else arrives
        (lead,) = await leads(gw.url)
    (upsert,) = hubspot.seen("POST", "/crm/v3/objects/contacts/batch/upsert")
    assert upsert.headers["authorization"] == f"Bearer {TOKEN}"
    (item,) = upsert.body["inputs"]
    assert item["idProperty"] == "email" and item["id"] == "maria@example.com"
    assert item["properties"] | MAPPED == item["properties"]  # every mapped property, as mapped
    (contact,) = hubspot.contacts.values()
    assert contact["properties"]["full_name"] == "Maria Lopez"
    assert outbox(data_dir, "crm.hubspot") == [(f"crm:{lead['lead_id']}", "delivered", 1, None)]


async def test_hubspot_down_then_back_and_throttling_still_deliver_once(
    running_gateway: Any, hubspot: HubspotStub, data_dir: Path
) -> None:
    hubspot.down = True
    with running_gateway(HUBSPOT_BASE_URL=hubspot.url, clock=lambda: NOW, **FAST) as gw:
        await book(gw.ws_url)
        await until(lambda: len(hubspot.requests) >= 3)  # retried while down
        assert not hubspot.contacts
        hubspot.faults = [Fault(429, retry_after="1")]
        hubspot.down = False
        await until(lambda: bool(hubspot.contacts))
        await asyncio.sleep(0.5)
    upserts = hubspot.seen("POST", "/crm/v3/objects/contacts/batch/upsert")
    assert len(hubspot.contacts) == 1
    # The 429's Retry-After (1 s) was waited before the next attempt.
    gaps = [b.at - a.at for a, b in itertools.pairwise(upserts)]
    assert max(gaps) >= 0.9, gaps
    ((_key, state, attempts, _err),) = outbox(data_dir, "crm.hubspot")
    assert state == "delivered" and attempts >= 4


async def test_a_refused_hubspot_token_is_dead_at_once_naming_the_key(
    running_gateway: Any, hubspot: HubspotStub, data_dir: Path
) -> None:
    hubspot.token = "another-token"  # the configured one is refused (401)
    with running_gateway(HUBSPOT_BASE_URL=hubspot.url, clock=lambda: NOW, **FAST) as gw:
        await book(gw.ws_url)
        await until(lambda: [r[1] for r in outbox(data_dir, "crm.hubspot")] == ["dead"])
        assert len(await leads(gw.url)) == 1  # the ledger keeps it
    ((_key, _state, attempts, error),) = outbox(data_dir, "crm.hubspot")
    assert attempts == 1 and len(hubspot.requests) == 1
    assert error is not None and "401" in error and "crm.hubspot.access_token" in error
    assert CLIENT in error and "config.yaml" in error


# -- Webhook ----------------------------------------------------------------------


async def test_the_webhook_is_signed_per_standard_webhooks_with_one_id_across_retries(
    running_gateway: Any, clients_dir: Path, data_dir: Path
) -> None:
    with WebhookStub() as receiver:
        set_crm(
            clients_dir,
            f"  provider: webhook\n  webhook:\n    url: {receiver.url}/hooks/leads\n"
            f"    secret: {SECRET}\n",
        )
        receiver.faults = [Fault(503), Fault(500)]
        with running_gateway(clock=lambda: NOW, **FAST) as gw:
            await book(gw.ws_url)
            await until(lambda: len(receiver.requests) >= 3)
            await asyncio.sleep(0.5)
            (lead,) = await leads(gw.url)
    posts = receiver.seen("POST", "/hooks/leads")
    assert len(posts) == 3
    assert {p.headers["webhook-id"] for p in posts} == {f"lead_{lead['lead_id']}"}
    for post in posts:
        payload = Webhook(SECRET).verify(post.raw, post.headers)
        assert payload["type"] == "lead.created"
        assert payload["data"]["lead_id"] == lead["lead_id"]
        assert payload["data"]["properties"]["full_name"] == "Maria Lopez"
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 43).verify(posts[0].raw, posts[0].headers)
    assert [r[1] for r in outbox(data_dir, "crm.webhook")] == ["delivered"]


# -- Pipedrive --------------------------------------------------------------------


async def test_pipedrive_gets_one_person_and_one_lead_even_when_redelivered(
    running_gateway: Any, clients_dir: Path, data_dir: Path
) -> None:
    with PipedriveStub("pd-token-123") as stub:
        set_crm(clients_dir, "  provider: pipedrive\n  pipedrive:\n    api_token: pd-token-123\n")
        with running_gateway(PIPEDRIVE_BASE_URL=f"{stub.url}/v1", clock=lambda: NOW, **FAST) as gw:
            # The lead is created, but the answer is lost (a 502 from a proxy): the
            # redelivery finds the person by email and the lead by its id.
            original = stub.answer

            def lose_first_lead_answer(request: Any) -> Any:
                answer = original(request)
                if (
                    request.path == "/v1/leads"
                    and request.method == "POST"
                    and len(stub.leads) == 1
                ):
                    stub.answer = original  # type: ignore[method-assign]
                    answer.status = 502
                return answer

            stub.answer = lose_first_lead_answer  # type: ignore[method-assign]
            await book(gw.ws_url)
            await until(lambda: [r[1] for r in outbox(data_dir, "crm.pipedrive")] == ["delivered"])
            (lead,) = await leads(gw.url)
    assert len(stub.persons) == 1 and len(stub.leads) == 1
    (person,) = stub.persons.values()
    assert person["email"][0]["value"] == "maria@example.com"
    assert person["phone"][0]["value"] == "+14155550134"
    assert f"[{lead['lead_id']}]" in stub.leads[0]["title"]
    assert all(r.query["api_token"] == "pd-token-123" for r in stub.requests)
    assert len(stub.seen("GET", "/v1/persons/search")) == 2


# -- Airtable ---------------------------------------------------------------------


async def test_airtable_upserts_on_the_email_field_once_across_a_retry(
    running_gateway: Any, clients_dir: Path, data_dir: Path
) -> None:
    fields = ["full_name", "phone", "email", "service_interest", "time"]
    with AirtableStub("patAAA.bbb", "appXYZ123", "Leads", fields) as stub:
        set_crm(
            clients_dir,
            "  provider: airtable\n  airtable:\n    token: patAAA.bbb\n"
            "    base_id: appXYZ123\n    table: Leads\n",
        )
        stub.faults = [Fault(429, retry_after="0.3")]
        original = stub.answer

        def lose_first_answer(request: Any) -> Any:
            answer = original(request)
            stub.answer = original  # type: ignore[method-assign]
            answer.status = 503  # written, but the answer is lost
            return answer

        stub.answer = lose_first_answer  # type: ignore[method-assign]
        with running_gateway(AIRTABLE_BASE_URL=stub.url, clock=lambda: NOW, **FAST) as gw:
            await book(gw.ws_url)
            await until(lambda: [r[1] for r in outbox(data_dir, "crm.airtable")] == ["delivered"])
    patches = stub.seen("PATCH", "/v0/appXYZ123/Leads")
    assert len(patches) == 3
    assert all(p.headers["authorization"] == "Bearer patAAA.bbb" for p in patches)
    assert patches[-1].body["performUpsert"] == {"fieldsToMergeOn": ["email"]}
    (record,) = stub.records
    assert record["fields"]["full_name"] == "Maria Lopez"


# -- CSV export -------------------------------------------------------------------


async def test_leads_csv_exports_the_ledger(running_gateway: Any) -> None:
    with running_gateway(clock=lambda: NOW) as gw:
        await book(gw.ws_url)
        async with httpx.AsyncClient(base_url=gw.url) as http:
            denied = await http.get("/admin/api/leads.csv", params={"client_id": CLIENT})
            response = await http.get(
                "/admin/api/leads.csv", params={"client_id": CLIENT}, headers=ADMIN
            )
            unknown = await http.get(
                "/admin/api/leads.csv", params={"client_id": "nobody"}, headers=ADMIN
            )
    assert denied.status_code == 401 and unknown.status_code == 404
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(response.text)))
    assert row["name"] == "Maria Lopez" and row["phone"] == "+14155550134"
    assert row["email"] == "maria@example.com" and row["status"] == "booked"
    assert row["start"] == "2026-11-27T14:00:00-08:00"
    assert list(row)[:3] == ["lead_id", "created_at", "client_id"]

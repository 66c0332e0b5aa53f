"""The CRM providers without a gateway: config validation, error mapping at the
vendor boundary (httpx MockTransport), the Standard Webhooks signature against
the spec's example, HubSpot's phone-only path, the integration checks, CSV."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import ClientConfig, ClientRegistry, load_client
from engine.outbox import OutboxRow
from engine.payloads import parse_payload
from engine.tools import embedded_tools
from gateway.integrations import CHECKS
from gateway.routes import leads_csv_text
from gateway.settings import Settings
from providers.crm.airtable import check_airtable
from providers.crm.http import CrmError
from providers.crm.hubspot import HubspotDeliverer, check_hubspot
from providers.crm.pipedrive import check_pipedrive
from providers.crm.webhook import signed_request

from .crm_stubs import AirtableStub, HubspotStub, PipedriveStub

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def client_with(tmp_path: Path, crm_block: str) -> tuple[ClientConfig | None, list[Any]]:
    folder = tmp_path / "spa-del-sol"
    shutil.copytree(CLIENTS / "spa-del-sol", folder)
    config = folder / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "crm:\n  provider: local                  # local | hubspot | pipedrive | airtable | webhook\n"
    config.write_text(text.replace(old, "crm:\n" + crm_block), encoding="utf-8")
    return load_client(folder)


@pytest.mark.parametrize(
    ("block", "key", "words"),
    [
        ("  provider: hubspot\n", "crm.hubspot", "access_token"),
        ("  provider: hubspot\n  hubspot: {}\n", "crm.hubspot.access_token", "required"),
        ("  provider: pipedrive\n", "crm.pipedrive", "api_token"),
        (
            "  provider: airtable\n  airtable: {token: t, table: Leads}\n",
            "crm.airtable.base_id",
            "required",
        ),
        (
            "  provider: webhook\n  webhook: {url: 'https://x.test/h'}\n",
            "crm.webhook.secret",
            "required",
        ),
        (
            "  provider: webhook\n  webhook: {url: 'https://x.test/h', secret: abc}\n",
            "crm.webhook.secret",
            "whsec_",
        ),
    ],
)
def test_the_chosen_vendor_block_is_required_and_named(
    tmp_path: Path, block: str, key: str, words: str
) -> None:
    config, problems = client_with(tmp_path, block)
    assert config is None
    errors = [p for p in problems if p.severity == "error"]
    assert [p.key for p in errors] == [key], errors
    assert words in errors[0].reason and errors[0].file.endswith("spa-del-sol/config.yaml")


@pytest.mark.parametrize("provider", ["hubspot", "pipedrive", "airtable", "webhook"])
def test_every_vendor_crm_is_a_registered_provider_with_a_check(
    tmp_path: Path, provider: str
) -> None:
    blocks = {
        "hubspot": "  hubspot: {access_token: tok}\n",
        "pipedrive": "  pipedrive: {api_token: tok}\n",
        "airtable": "  airtable: {token: tok, base_id: appABC123, table: Leads}\n",
        "webhook": f"  webhook: {{url: 'https://x.test/h', secret: {SPEC_SECRET}}}\n",
    }
    config, problems = client_with(tmp_path, f"  provider: {provider}\n" + blocks[provider])
    assert config is not None, problems
    assert embedded_tools().problems(config) == []
    import gateway.deliveries  # noqa: F401  (registers the checks)

    assert ("crm", provider) in CHECKS


def test_the_signature_matches_the_standard_webhooks_example() -> None:
    """The spec's test vector, by the documented algorithm, and our headers verify."""
    key = base64.b64decode(SPEC_SECRET.removeprefix("whsec_"))
    to_sign = b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}'
    expected = base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    assert expected == "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    when = datetime.fromtimestamp(1614265330, UTC)
    body, headers = signed_request(SPEC_SECRET, "abc123", {"lead_id": "abc123"}, now=when)
    assert headers["webhook-id"] == "lead_abc123" and headers["webhook-timestamp"] == "1614265330"
    mine = hmac.new(key, b"lead_abc123.1614265330." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mine).decode()
    assert json.loads(body)["data"] == {"lead_id": "abc123"}


def _row(payload: dict[str, Any]) -> OutboxRow:
    lead = parse_payload("crm.hubspot", payload)
    return OutboxRow(
        1, "crm:x", "spa-del-sol", "crm.hubspot", lead, "delivering", 1, 0, None, 0, 0, None
    )


LEAD = {
    "lead_id": "abc123",
    "email": "maria@example.com",
    "phone": "+14155550134",
    "name": "Maria Lopez",
    "properties": {
        "full_name": "Maria Lopez",
        "phone": "+14155550134",
        "email": "maria@example.com",
    },
}


async def _deliver_with(tmp_path: Path, answer: Any, payload: dict[str, Any] = LEAD) -> None:
    config, _ = client_with(tmp_path, "  provider: hubspot\n  hubspot: {access_token: tok}\n")
    assert config is not None
    registry = ClientRegistry({config.client_id: config})
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        await HubspotDeliverer(registry, http, "https://hub.test").deliver(_row(payload))


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after", "text"),
    [
        (401, {}, False, None, "crm.hubspot.access_token"),
        (403, {}, False, None, "crm.hubspot.access_token"),
        (429, {"Retry-After": "7"}, True, 7.0, "429"),
        (503, {}, True, None, "503"),
        (400, {}, False, None, "Property values were not valid"),
        (422, {}, False, None, "Property values were not valid"),
    ],
)
async def test_vendor_errors_are_mapped_at_the_boundary(
    tmp_path: Path,
    status: int,
    headers: dict[str, str],
    retryable: bool,
    retry_after: float | None,
    text: str,
) -> None:
    def answer(_request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "message": "Property values were not valid", "category": "X"}
        return httpx.Response(status, json=body, headers=headers)

    with pytest.raises(CrmError) as caught:
        await _deliver_with(tmp_path, answer)
    assert caught.value.retryable is retryable and caught.value.retry_after_s == retry_after
    assert text in str(caught.value)


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused")])
async def test_timeouts_and_connection_errors_are_retryable(tmp_path: Path, exc: Exception) -> None:
    def answer(_request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(CrmError) as caught:
        await _deliver_with(tmp_path, answer)
    assert caught.value.retryable is True


async def test_a_phone_only_lead_is_searched_then_created_once_in_hubspot(tmp_path: Path) -> None:
    config, _ = client_with(tmp_path, "  provider: hubspot\n  hubspot: {access_token: tok}\n")
    assert config is not None
    registry = ClientRegistry({config.client_id: config})
    payload = {
        **LEAD,
        "email": None,
        "phone": "+14155550135",
        "properties": {"full_name": "Ana", "phone": "+14155550135"},
    }
    with HubspotStub("tok") as stub:
        async with httpx.AsyncClient() as http:
            deliverer = HubspotDeliverer(registry, http, stub.url)
            await deliverer.deliver(_row(payload))
            await deliverer.deliver(_row(payload))  # a redelivery
    assert len(stub.contacts) == 1
    assert len(stub.seen("POST", "/crm/v3/objects/contacts")) == 1
    assert len(stub.seen("PATCH", "/crm/v3/objects/contacts/1001")) == 1


async def test_checks_read_without_writing_and_report_problems(tmp_path: Path) -> None:
    hub, _ = client_with(tmp_path / "a", "  provider: hubspot\n  hubspot: {access_token: tok}\n")
    pd, _ = client_with(tmp_path / "b", "  provider: pipedrive\n  pipedrive: {api_token: tok}\n")
    at, _ = client_with(
        tmp_path / "c",
        "  provider: airtable\n  airtable: {token: tok, base_id: appABC123, table: Leads}\n",
    )
    assert hub and pd and at
    with (
        HubspotStub("other") as hs,
        PipedriveStub("tok") as ps,
        AirtableStub("tok", "appABC123", "Leads", ["full_name", "phone", "email"]) as ats,
    ):
        settings = Settings(
            _env_file=None,
            HUBSPOT_BASE_URL=hs.url,
            PIPEDRIVE_BASE_URL=f"{ps.url}/v1",
            AIRTABLE_BASE_URL=ats.url,
        )
        async with httpx.AsyncClient() as http:
            (hub_problem,) = await check_hubspot(hub, http, settings)
            assert await check_pipedrive(pd, http, settings) == []
            (at_problem,) = await check_airtable(at, http, settings)
    assert "401" in hub_problem and "crm.hubspot.access_token" in hub_problem
    assert "service_interest" in at_problem and "crm.map" in at_problem
    assert all(r.method == "GET" for s in (hs, ps, ats) for r in s.requests)
    assert not hs.contacts and not ps.persons and not ats.records


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised() -> None:
    text = leads_csv_text(
        [{"lead_id": "x", "name": "=HYPERLINK(1)", "phone": "+14155550134", "fields": {"a": "b"}}]
    )
    header, row = text.splitlines()
    assert header.startswith("lead_id,created_at,client_id")
    assert "'=HYPERLINK(1)" in row and ",+14155550134," in row and '"{""a"": ""b""}"' in row


async def test_without_batch_upsert_hubspot_gets_create_then_update_by_email(
    tmp_path: Path,
) -> None:
    config, _ = client_with(tmp_path, "  provider: hubspot\n  hubspot: {access_token: tok}\n")
    assert config is not None
    registry = ClientRegistry({config.client_id: config})
    with HubspotStub("tok", batch_upsert=False) as stub:
        async with httpx.AsyncClient() as http:
            deliverer = HubspotDeliverer(registry, http, stub.url)
            await deliverer.deliver(_row(LEAD))
            await deliverer.deliver(_row(LEAD))  # a redelivery after a lost answer
    (contact,) = stub.contacts.values()
    assert contact["properties"]["email"] == "maria@example.com"
    assert contact["properties"]["full_name"] == "Maria Lopez"
    assert len(stub.seen("POST", "/crm/v3/objects/contacts")) == 2  # the second got 409
    (update,) = stub.seen("PATCH", "/crm/v3/objects/contacts/1001")  # the id the 409 named
    assert update.headers["authorization"] == "Bearer tok"


async def test_a_conflict_without_the_contact_id_updates_by_email(tmp_path: Path) -> None:
    config, _ = client_with(tmp_path, "  provider: hubspot\n  hubspot: {access_token: tok}\n")
    assert config is not None
    registry = ClientRegistry({config.client_id: config})
    with HubspotStub("tok", batch_upsert=False) as stub:
        stub.conflict_names_id = False
        async with httpx.AsyncClient() as http:
            deliverer = HubspotDeliverer(registry, http, stub.url)
            await deliverer.deliver(_row(LEAD))
            await deliverer.deliver(_row(LEAD))
    assert len(stub.contacts) == 1
    (update,) = stub.seen("PATCH", "/crm/v3/objects/contacts/maria@example.com")
    assert update.query == {"idProperty": "email"}

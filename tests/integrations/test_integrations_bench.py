"""``bench.integrations`` at a tiny size: every lead reaches the HubSpot stub
exactly once, through a real gateway and through an outage then a rate limit.
Behaviour only; no timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import integrations as bench
from bench._hubspot_stub import HubspotStub


async def test_leads_pile_up_during_an_outage_and_drain_once_each(tmp_path: Path) -> None:
    result = await bench.run_drain(
        "sqlite", f"sqlite:///{tmp_path / 'drain.sqlite'}", 20, outage_s=1.0, limit_per_s=10
    )
    assert result.ok, result
    assert result.received == 20 and result.lost == 0 and result.duplicates == 0
    assert result.delivered_rows == 20 and result.dead_rows == 0
    assert result.status_503 >= 1  # the worker tried while HubSpot was down


async def test_a_tight_rate_limit_is_answered_429_and_still_delivers_once(tmp_path: Path) -> None:
    result = await bench.run_drain(
        "sqlite", f"sqlite:///{tmp_path / 'drain.sqlite'}", 12, outage_s=0.2, limit_per_s=3
    )
    assert result.ok, result
    assert result.status_429 >= 1  # the deliverer's 9/s is above the stub's 3/s
    assert result.received == 12 and result.duplicates == 0


async def test_web_chat_bookings_reach_hubspot_once_with_token_and_properties(
    tmp_path: Path,
) -> None:
    result = await bench.run_latency(2, tmp_path)
    assert result.ok, result
    assert result.booked == 2 and result.contacts == 2 and result.leads_in_outbox == 2


@pytest.mark.parametrize(("down", "status"), [(True, 503), (False, 401)])
def test_the_stub_speaks_hubspot_errors(down: bool, status: int) -> None:
    import httpx

    with HubspotStub(bench.TOKEN) as stub:
        stub.down = down
        response = httpx.post(
            f"{stub.url}/crm/v3/objects/contacts/batch/upsert",
            json={"inputs": [{"idProperty": "email", "id": "a@example.com", "properties": {}}]},
            headers={"Authorization": "Bearer wrong"},
        )
    assert response.status_code == status
    assert response.json()["status"] == "error" and not stub.accepted

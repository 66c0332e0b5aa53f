"""An engine on the repo's spa-del-sol client with a pinned clock: Saturday
2026-11-21 11:00 in Los Angeles (open 10-17 Saturdays, closed Sundays)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.app import Gateway, open_gateway
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=TZ)


async def knowledge_ready(gateway: Gateway, timeout_s: float = 60.0) -> None:
    """Wait until every client's knowledge (ingested in the background at
    start-up) is searchable, so support answers instead of "not ready yet"."""
    deadline = time.monotonic() + timeout_s
    for client in gateway.registry.clients.values():
        view = gateway.engine.tools.for_client(client).knowledge
        while view is not None and view.status() != "ready":
            assert time.monotonic() < deadline, f"{client.client_id}: knowledge not ready"
            await asyncio.sleep(0.02)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(GATEWAY_CLIENTS_DIR=REPO / "clients", GATEWAY_DATA_DIR=tmp_path)  # type: ignore[call-arg]
    async with open_gateway(settings, clock=lambda: NOW) as gateway:
        await knowledge_ready(gateway)
        yield gateway


@pytest.fixture
async def service_first_gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    """Like ``gw``, but spa-del-sol asks for the service and phone before the
    name, so a name can arrive while the flow is asking for something else."""
    clients = tmp_path / "clients"
    shutil.copytree(REPO / "clients", clients)
    config = clients / "spa-del-sol" / "config.yaml"
    text = config.read_text(encoding="utf-8")
    order = "lead_fields: [name, phone, email, service, time]"
    assert order in text
    config.write_text(
        text.replace(order, "lead_fields: [service, phone, name, email, time]"), encoding="utf-8"
    )
    settings = Settings(GATEWAY_CLIENTS_DIR=clients, GATEWAY_DATA_DIR=tmp_path / "data")
    async with open_gateway(settings, clock=lambda: NOW) as gateway:
        yield gateway

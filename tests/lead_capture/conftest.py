"""An engine on the repo's spa-del-sol client with a pinned clock: Saturday
2026-11-21 11:00 in Los Angeles (open 10-17 Saturdays, closed Sundays)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.app import Gateway

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=TZ)


@pytest.fixture
def gw_options() -> dict[str, object]:
    """``gw`` (tests/conftest.py) at :data:`NOW`, once every client's knowledge is
    searchable, so support answers instead of "not ready yet"."""
    return {"clock": lambda: NOW, "knowledge_ready": True}


@pytest.fixture
async def service_first_gw(tmp_path: Path, open_gw: Any) -> AsyncIterator[Gateway]:
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
    async with open_gw(clients_dir=clients, data_dir=tmp_path / "data", clock=lambda: NOW) as gw:
        yield gw

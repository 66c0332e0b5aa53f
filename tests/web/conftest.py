"""Web channel fixtures. The gateway itself comes from ``tests/conftest.py``
(``running_gateway``: the real app under uvicorn in a background thread)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def web_clients_dir(clients_dir: Path) -> Path:
    """``clients_dir`` plus two small clients: ``open-shop`` (web chat from any
    origin) and ``closed-shop`` (web chat disabled)."""
    for name, web in (
        ("open-shop", 'allowed_origins: ["*"]'),
        ("closed-shop", "enabled: false"),
    ):
        folder = clients_dir / name
        folder.mkdir()
        (folder / "knowledge").mkdir()
        (folder / "config.yaml").write_text(
            f"name: {name.replace('-', ' ').title()}\n"
            "timezone: America/New_York\n"
            "services:\n  - name: Haircut\n    duration_minutes: 30\n"
            f"channels:\n  web:\n    {web}\n",
            encoding="utf-8",
        )
    return clients_dir

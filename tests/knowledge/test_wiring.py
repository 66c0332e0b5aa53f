"""The knowledge index wired into the gateway: ``Tools.knowledge`` per client,
background ingestion at start-up (never blocking it), and
``gateway clients ingest`` (progress, report, incremental, the local-mode lock)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.app import open_gateway
from gateway.cli import app
from gateway.settings import Settings
from providers.knowledge import KnowledgeIndex
from tests.knowledge.conftest import CLIENTS


def _clients(tmp_path: Path) -> Path:
    target = tmp_path / "clients"
    for name in ("spa-del-sol", "bright-smile-dental"):
        shutil.copytree(CLIENTS / name, target / name)
    return target


async def test_gateway_ingests_in_background_and_tools_search(tmp_path: Path) -> None:
    clients = _clients(tmp_path)
    shutil.rmtree(clients / "spa-del-sol" / "knowledge")  # a client without knowledge
    settings = Settings(  # type: ignore[call-arg]
        GATEWAY_CLIENTS_DIR=clients, GATEWAY_DATA_DIR=tmp_path / "data", GATEWAY_EMBEDDER="none"
    )
    async with open_gateway(settings) as gw:
        assert gw.knowledge is not None
        dental = gw.registry.get("bright-smile-dental")
        spa = gw.registry.get("spa-del-sol")
        assert dental is not None and spa is not None
        assert gw.engine.tools.for_client(spa).knowledge is None
        view = gw.engine.tools.for_client(dental).knowledge
        assert view is not None
        deadline = time.monotonic() + 60
        while view.status() != "ready":
            assert view.status() in ("building", "missing"), view.status()
            assert time.monotonic() < deadline, "background ingest did not finish"
            await asyncio.sleep(0.05)
        hits = await view.search("do you take MetLife?", k=3)
        assert hits[0].file == "insurance-and-payment.html"
    # closed: the local folder is free again
    KnowledgeIndex.open(data_dir=tmp_path / "data").close()


async def test_gateway_serves_when_the_index_is_held_elsewhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clients = _clients(tmp_path)
    settings = Settings(  # type: ignore[call-arg]
        GATEWAY_CLIENTS_DIR=clients, GATEWAY_DATA_DIR=tmp_path / "data", GATEWAY_EMBEDDER="none"
    )
    holder = KnowledgeIndex.open(data_dir=tmp_path / "data")
    try:
        async with open_gateway(settings) as gw:
            assert gw.knowledge is None
            dental = gw.registry.get("bright-smile-dental")
            assert dental is not None
            assert gw.engine.tools.for_client(dental).knowledge is None
        assert any("in use by another process" in r.getMessage() for r in caplog.records)
    finally:
        holder.close()


def test_cli_ingest_reports_and_is_incremental(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = _clients(tmp_path)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GATEWAY_EMBEDDER", "none")
    runner = CliRunner()
    first = runner.invoke(app, ["clients", "ingest", "--clients-dir", str(clients)])
    assert first.exit_code == 0, first.output
    assert "bright-smile-dental: 3 added, 0 changed, 0 unchanged, 0 removed" in first.output
    assert "spa-del-sol: 1 added" in first.output

    (clients / "bright-smile-dental" / "knowledge" / "faq.md").unlink()
    again = runner.invoke(
        app, ["clients", "ingest", "bright-smile-dental", "--clients-dir", str(clients)]
    )
    assert again.exit_code == 0, again.output
    assert "0 added, 0 changed, 2 unchanged, 1 removed" in again.output
    assert "spa-del-sol" not in again.output

    unknown = runner.invoke(app, ["clients", "ingest", "nobody", "--clients-dir", str(clients)])
    assert unknown.exit_code == 2

    holder = KnowledgeIndex.open(data_dir=tmp_path / "data")
    try:
        locked = runner.invoke(app, ["clients", "ingest", "--clients-dir", str(clients)])
    finally:
        holder.close()
    assert locked.exit_code == 1
    assert "in use by another process" in locked.output

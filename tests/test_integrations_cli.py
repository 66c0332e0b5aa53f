"""``gateway integrations check [CLIENT_ID]``: per client and provider, ``ok`` or
each problem its registered check found; ``local`` providers have nothing to
check; exit 1 on any problem, 2 for an unknown client. The vendor checks are
stood in for by checks this test registers for made-up provider names."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import gateway.integrations as integrations
from engine.config import ClientConfig
from gateway.cli import app
from gateway.settings import Settings
from providers.urls import VendorUrls

SPA = "spa-del-sol"
DENTAL = "bright-smile-dental"


def _use(clients_dir: Path, client: str, block: str, provider: str) -> None:
    config = clients_dir / client / "config.yaml"
    text = config.read_text()
    anchor = f"{block}:\n  provider: local"
    assert anchor in text, anchor
    config.write_text(text.replace(anchor, f"{block}:\n  provider: {provider}", 1))


def _check(clients_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["integrations", "check", *args, "--clients-dir", str(clients_dir)]
    )
    return result.exit_code, result.output


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, object, object]]:
    """Register checks for made-up providers; record what each was called with."""
    calls: list[tuple[str, str, object, object]] = []

    def fake(name: str, problems: list[str]) -> integrations.Check:
        async def check(
            client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls
        ) -> list[str]:
            calls.append((name, client.client_id, http, urls))
            return list(problems)

        return check

    async def broken(client: ClientConfig, http: httpx.AsyncClient, urls: VendorUrls) -> list[str]:
        raise RuntimeError("the stub exploded")

    checks = dict(integrations.CHECKS)
    checks[("crm", "fakecrm")] = fake("fakecrm", [])
    checks[("crm", "badcrm")] = fake(
        "badcrm",
        [
            "BadCRM answered 401: the token is invalid (crm.badcrm.token)",
            "BadCRM has no field 'full_name' (crm.map.name)",
        ],
    )
    checks[("calendar", "fakecal")] = fake("fakecal", [])
    checks[("calendar", "brokencal")] = broken
    monkeypatch.setattr(integrations, "CHECKS", checks)
    return calls


def test_local_providers_have_nothing_to_check(clients_dir: Path) -> None:
    code, output = _check(clients_dir)
    assert code == 0, output
    for client in (SPA, DENTAL):
        assert client in output
    assert output.count("crm: local (nothing to check)") == 2
    assert output.count("calendar: local (nothing to check)") == 2


def test_working_providers_print_ok_and_get_an_http_client_and_the_vendor_urls(
    clients_dir: Path, seen: list[tuple[str, str, object, object]]
) -> None:
    _use(clients_dir, SPA, "crm", "fakecrm")
    _use(clients_dir, SPA, "booking", "fakecal")
    code, output = _check(clients_dir, SPA)
    assert code == 0, output
    assert "crm fakecrm: ok" in output and "calendar fakecal: ok" in output
    assert DENTAL not in output  # only the client asked for
    assert sorted((name, client) for name, client, _, _ in seen) == [
        ("fakecal", SPA),
        ("fakecrm", SPA),
    ]
    for _, _, http, urls in seen:
        assert isinstance(http, httpx.AsyncClient)
        assert isinstance(urls, VendorUrls)
        assert urls.hubspot_base_url == Settings().hubspot_base_url


def test_every_problem_is_printed_and_the_exit_code_is_1(
    clients_dir: Path, seen: list[tuple[str, str, object, object]]
) -> None:
    _use(clients_dir, SPA, "crm", "badcrm")
    _use(clients_dir, SPA, "booking", "brokencal")
    _use(clients_dir, DENTAL, "crm", "fakecrm")
    code, output = _check(clients_dir)
    assert code == 1, output
    assert "BadCRM answered 401: the token is invalid (crm.badcrm.token)" in output
    assert "BadCRM has no field 'full_name' (crm.map.name)" in output
    assert "the check failed: RuntimeError: the stub exploded" in output
    # the other client is still checked, and its working provider says so
    dental = output[output.index(DENTAL) :]
    assert "crm fakecrm: ok" in dental and "calendar: local (nothing to check)" in dental


def test_a_provider_with_no_registered_check_is_a_problem(clients_dir: Path) -> None:
    _use(clients_dir, DENTAL, "crm", "nosuchcrm")
    code, output = _check(clients_dir, DENTAL)
    assert code == 1, output
    assert "no check is registered for crm 'nosuchcrm'" in output


def test_an_unknown_client_is_bad_usage(clients_dir: Path) -> None:
    code, output = _check(clients_dir, "nobody")
    assert code == 2
    assert "unknown client 'nobody'" in output

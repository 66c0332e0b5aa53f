"""``gateway clients validate``: exit codes and messages naming file, key, reason;
``gateway chat``: a test conversation."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from engine import Engine
from gateway.cli import app

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "clients" / "spa-del-sol"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPA_SLACK_WEBHOOK_URL", "SPA_TWILIO_AUTH_TOKEN", "SPA_META_APP_SECRET"):
        monkeypatch.delenv(name, raising=False)


def _client(root: Path, client_id: str, old: str = "", new: str = "") -> Path:
    folder = root / client_id
    shutil.copytree(EXAMPLE, folder)
    config = folder / "config.yaml"
    text = config.read_text(encoding="utf-8").replace(
        "client_id: spa-del-sol", f"client_id: {client_id}", 1
    )
    if old:
        assert old in text
        text = text.replace(old, new, 1)
    config.write_text(text, encoding="utf-8")
    return folder


def test_validate_repository_clients_ok(runner: CliRunner) -> None:
    result = runner.invoke(app, ["clients", "validate", str(REPO / "clients")])
    assert result.exit_code == 0, result.output
    assert "ok: spa-del-sol" in result.output
    assert "error:" not in result.output


def test_validate_good_folder_with_unset_secret_warns_but_passes(
    runner: CliRunner, tmp_path: Path
) -> None:
    _client(tmp_path, "spa-del-sol")
    result = runner.invoke(app, ["clients", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ok: spa-del-sol" in result.output
    warning = [line for line in result.output.splitlines() if "SPA_SLACK_WEBHOOK_URL" in line]
    assert warning, result.output
    assert warning[0].startswith("warning: ")
    assert "config.yaml" in warning[0]
    assert "escalation.to_slack_webhook" in warning[0]


@pytest.mark.parametrize(
    ("client_id", "old", "new", "key", "reason"),
    [
        (
            "wrong-type",
            "duration_minutes: 60",
            'duration_minutes: "abc"',
            "services[0].duration_minutes",
            "integer",
        ),
        (
            "bad-tz",
            "timezone: America/Los_Angeles",
            "timezone: Nowhere/Atlantis",
            "timezone",
            "Nowhere/Atlantis",
        ),
        (
            "bad-lead",
            "lead_fields: [name, phone, email, service, time]",
            "lead_fields: [name, favourite_colour]",
            "booking.rules.lead_fields",
            "favourite_colour",
        ),
    ],
)
def test_validate_broken_folder_fails_naming_file_key_reason(
    runner: CliRunner, tmp_path: Path, client_id: str, old: str, new: str, key: str, reason: str
) -> None:
    _client(tmp_path, "good-one")
    _client(tmp_path, client_id, old, new)
    result = runner.invoke(app, ["clients", "validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) >= 1, result.output
    line = next((e for e in errors if key in e), None)
    assert line is not None, result.output
    assert f"{client_id}/config.yaml" in line
    assert reason.lower() in line.lower()
    # The good folder is still reported as loading.
    assert "ok: good-one" in result.output
    assert f"ok: {client_id}" not in result.output


def _set_all_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``${SPA_...}`` of the reference config set: no unset-secret warnings."""
    text = (EXAMPLE / "config.yaml").read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{(SPA_[A-Z_]+)\}", text))
    assert names
    for name in names:
        monkeypatch.setenv(name, "test-secret")


def test_validate_unknown_key_warns_and_passes_but_strict_fails(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_all_secrets(monkeypatch)
    _client(tmp_path, "clean")
    result = runner.invoke(app, ["clients", "validate", "--strict", str(tmp_path)])
    assert result.exit_code == 0, result.output  # no warning at all: strict passes
    assert "warning:" not in result.output

    _client(tmp_path, "typo", "  slot_minutes: 30", "  slot_minute: 30")
    expected = (
        f"warning: {tmp_path / 'typo' / 'config.yaml'}: booking.slot_minute: "
        "unknown key; did you mean 'slot_minutes'?"
    )
    result = runner.invoke(app, ["clients", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert expected in result.output.splitlines()
    assert "ok: typo" in result.output

    result = runner.invoke(app, ["clients", "validate", "--strict", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert expected in result.output.splitlines()  # same report; only the exit code differs
    assert "error:" not in result.output


def test_validate_strict_counts_unset_secret_as_failure(runner: CliRunner, tmp_path: Path) -> None:
    _client(tmp_path, "spa-del-sol")
    assert runner.invoke(app, ["clients", "validate", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["clients", "validate", "--strict", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "SPA_SLACK_WEBHOOK_URL" in result.output


def test_validate_missing_timezone_fails_naming_file_and_key(
    runner: CliRunner, tmp_path: Path
) -> None:
    _client(tmp_path, "good-one")
    _client(tmp_path, "no-tz", "timezone: America/Los_Angeles\n", "")
    result = runner.invoke(app, ["clients", "validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    expected = (
        f"error: {tmp_path / 'no-tz' / 'config.yaml'}: timezone: "
        "required: an IANA name such as Europe/Madrid"
    )
    assert expected in result.output.splitlines()
    assert "ok: good-one" in result.output
    assert "ok: no-tz" not in result.output


def test_validate_bad_yaml_and_missing_config(runner: CliRunner, tmp_path: Path) -> None:
    _client(tmp_path, "good-one")
    bad = tmp_path / "bad-yaml"
    bad.mkdir()
    (bad / "config.yaml").write_text("name: [oops\n", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["clients", "validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    out = result.output
    assert any("bad-yaml/config.yaml" in ln and "YAML" in ln for ln in out.splitlines()), out
    assert any("empty/config.yaml" in ln and "missing" in ln for ln in out.splitlines()), out
    assert "ok: good-one" in out


def test_validate_empty_or_missing_dir_fails(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["clients", "validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    result = runner.invoke(app, ["clients", "validate", str(tmp_path / "absent")])
    assert result.exit_code == 1, result.output
    assert "not found" in result.output


def test_help_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "chat", "clients", "db", "outbox"):
        assert command in result.output


# Monday 2026-12-07, 09:00 in Los Angeles (the client's timezone): the engine's
# "now" for the chat, so the requested slot is always bookable.
CHAT_NOW = datetime(2026, 12, 7, 17, 0, tzinfo=UTC)
CHAT_LINES = [
    "Hi, I'd like to book an appointment",
    "Maria Lopez",
    "415 555 0134",
    "maria@example.com",
    "Manicure",
    "December 15 at 2:30 pm",
    "yes",
]


def test_chat_is_a_test_conversation_kept_out_of_the_leads_list(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    clients_dir: Path,
    data_dir: Path,
    running_gateway: Any,
) -> None:
    monkeypatch.setattr(Engine, "default_clock", staticmethod(lambda: CHAT_NOW))
    result = runner.invoke(
        app,
        ["chat", "spa-del-sol", "--clients-dir", str(clients_dir)],
        input="".join(f"{line}\n" for line in CHAT_LINES),
        env={"GATEWAY_DATA_DIR": str(data_dir), "DATABASE_URL": None, "REDIS_URL": None},
    )
    assert result.exit_code == 0, result.output
    assert "state=booked" not in result.output  # metadata shows purpose and expecting only
    assert result.output.count("you> ") == len(CHAT_LINES) + 1  # then end of input
    assert "(purpose=lead_capture expecting=None)" in result.output.splitlines()[-2]

    # The same database, served: the booking's lead is there, marked test, and
    # listed only when test conversations are asked for.
    with running_gateway() as gw:
        headers = {"Authorization": "Bearer test-admin-token"}
        url = f"{gw.url}/admin/api/leads"
        default = httpx.get(url, params={"client_id": "spa-del-sol"}, headers=headers)
        with_test = httpx.get(
            url, params={"client_id": "spa-del-sol", "include_test": "true"}, headers=headers
        )
    assert default.status_code == 200, default.text
    assert default.json() == []
    assert with_test.status_code == 200, with_test.text
    (lead,) = with_test.json()
    assert lead["test"] is True
    assert lead["status"] == "booked"
    assert lead["booking_id"]
    assert lead["session_id"].startswith("cli-")
    assert lead["start"].startswith("2026-12-15T14:30")
    assert (lead["name"], lead["phone"], lead["email"]) == (
        "Maria Lopez",
        "+14155550134",
        "maria@example.com",
    )


def test_validate_names_a_provider_nobody_serves(runner: CliRunner, tmp_path: Path) -> None:
    _client(tmp_path, "good-one")
    _client(tmp_path, "hub", "provider: local", "provider: hubspott")
    result = runner.invoke(app, ["clients", "validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    line = next(x for x in result.output.splitlines() if "hubspott" in x)
    assert str(tmp_path / "hub" / "config.yaml") in line
    assert (
        "provider 'hubspott' is not registered; known providers: calendly, google_calendar, local"
        in line
    )
    assert "ok: good-one" in result.output and "ok: hub" not in result.output

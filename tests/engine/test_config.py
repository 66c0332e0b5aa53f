"""Client config folders (DESIGN.md "Client config folder"): the reference
example loads, ``${ENV}`` secrets expand (or switch a feature off), and every
broken folder is reported with file, key and reason and skipped while the
good ones load; unknown keys are warnings with a did-you-mean suggestion."""

from __future__ import annotations

import re
import shutil
from datetime import time
from pathlib import Path

import pytest

from engine.config import ClientConfig, ConfigProblem, load_client, load_clients

REPO = Path(__file__).resolve().parents[2]
_SPEC_EXAMPLE = REPO.parent / "shared" / "spec" / "example-client"
# The spec's reference folder sits beside the repository (../shared); the
# repository's clients/spa-del-sol is a copy of it, used when ../shared is absent.
EXAMPLE = _SPEC_EXAMPLE if _SPEC_EXAMPLE.is_dir() else REPO / "clients" / "spa-del-sol"

SECRET_VARS = (
    "SPA_TWILIO_ACCOUNT_SID",
    "SPA_TWILIO_AUTH_TOKEN",
    "SPA_META_APP_SECRET",
    "SPA_META_VERIFY_TOKEN",
    "SPA_META_ACCESS_TOKEN",
    "SPA_SLACK_WEBHOOK_URL",
)


@pytest.fixture(autouse=True)
def _no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRET_VARS:
        monkeypatch.delenv(name, raising=False)


def _copy_example(root: Path, client_id: str) -> Path:
    """A copy of the reference folder as ``root/client_id`` (client_id rewritten)."""
    folder = root / client_id
    shutil.copytree(EXAMPLE, folder)
    config = folder / "config.yaml"
    text = re.sub(
        r"^client_id: .*$",
        f"client_id: {client_id}",
        config.read_text(encoding="utf-8"),
        count=1,
        flags=re.M,
    )
    config.write_text(text, encoding="utf-8")
    return folder


def _edit(folder: Path, old: str, new: str) -> None:
    config = folder / "config.yaml"
    text = config.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in the reference config; update this test"
    config.write_text(text.replace(old, new, 1), encoding="utf-8")


def _errors(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return [p for p in problems if p.severity == "error"]


# --- the reference example ------------------------------------------------------------


def test_reference_example_loads_as_it_stands(tmp_path: Path) -> None:
    folder = tmp_path / "spa-del-sol"
    shutil.copytree(EXAMPLE, folder)
    config, problems = load_client(folder)
    assert _errors(problems) == []
    assert isinstance(config, ClientConfig)
    assert config.client_id == "spa-del-sol"
    assert config.name == "Spa del Sol"
    assert config.timezone == "America/Los_Angeles"
    assert config.business_hours["mon"] is not None
    assert config.business_hours["mon"].open == time(9, 0)
    assert config.business_hours["mon"].close == time(19, 0)
    assert config.business_hours["sun"] is None
    assert [s.name for s in config.services][:2] == ["Swedish Massage", "Deep Tissue Massage"]
    assert config.services[0].duration_minutes == 60
    assert "massage" in config.services[0].aliases
    assert config.booking.provider == "local"
    assert config.booking.rules.lead_fields == ("name", "phone", "email", "service", "time")
    assert config.crm.provider == "local"
    assert config.crm.map["name"] == "full_name"
    assert config.escalation.to_email == "frontdesk@spadelsol.example"
    assert config.channels.phone.purpose == "lead_capture"


def test_reference_example_has_no_problems_with_its_secrets_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SECRET_VARS:
        monkeypatch.setenv(name, f"test-{name.lower()}")
    folder = tmp_path / "spa-del-sol"
    shutil.copytree(EXAMPLE, folder)
    config, problems = load_client(folder)
    assert config is not None
    assert problems == []  # no unknown key, no unset secret, knowledge folder present


def test_repository_client_matches_reference_schema() -> None:
    registry = load_clients(REPO / "clients")
    assert registry.errors == []
    assert "spa-del-sol" in registry.clients


def test_config_is_frozen(tmp_path: Path) -> None:
    config, _ = load_client(_copy_example(tmp_path, "spa-del-sol"))
    assert config is not None
    with pytest.raises((TypeError, ValueError)):
        config.name = "changed"  # type: ignore[misc]


# --- ${ENV} secrets -----------------------------------------------------------------------


def test_env_reference_expanded_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPA_SLACK_WEBHOOK_URL", "https://hooks.slack.test/T000/B000/XXX")
    monkeypatch.setenv("SPA_TWILIO_AUTH_TOKEN", "tok-123")
    config, problems = load_client(_copy_example(tmp_path, "spa-del-sol"))
    assert config is not None
    assert config.escalation.to_slack_webhook == "https://hooks.slack.test/T000/B000/XXX"
    assert config.channels.phone.twilio.auth_token == "tok-123"
    assert config.channels.whatsapp.twilio is not None
    assert config.channels.whatsapp.twilio.auth_token == "tok-123"
    warned = {p.key for p in problems if p.severity == "warning"}
    assert "escalation.to_slack_webhook" not in warned
    assert "channels.phone.twilio.auth_token" not in warned


def test_env_reference_inside_a_longer_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy_example(tmp_path, "spa-del-sol")
    _edit(
        folder, "to_email: frontdesk@spadelsol.example", "to_email: ${DESK_USER}@spadelsol.example"
    )
    monkeypatch.setenv("DESK_USER", "desk")
    config, _ = load_client(folder)
    assert config is not None
    assert config.escalation.to_email == "desk@spadelsol.example"


def test_unset_env_reference_warns_and_client_still_loads(tmp_path: Path) -> None:
    config, problems = load_client(_copy_example(tmp_path, "spa-del-sol"))
    assert config is not None
    assert config.escalation.to_slack_webhook is None
    assert config.channels.phone.twilio.auth_token is None
    assert _errors(problems) == []
    slack = [p for p in problems if p.key == "escalation.to_slack_webhook"]
    assert len(slack) == 1
    assert slack[0].severity == "warning"
    assert slack[0].file.endswith("config.yaml")
    assert "SPA_SLACK_WEBHOOK_URL" in slack[0].reason


# --- broken folders: reported with file, key, reason; the others still load -------------

BROKEN = {
    # name: (edit (old, new) or None, expected key, a word the reason must contain)
    "bad-yaml": (None, "", "yaml"),
    "wrong-type": (
        ("duration_minutes: 60", 'duration_minutes: "abc"'),
        "services[0].duration_minutes",
        "integer",
    ),
    "bad-timezone": (
        ("timezone: America/Los_Angeles", "timezone: Mars/Olympus_Mons"),
        "timezone",
        "Mars/Olympus_Mons",
    ),
    "bad-hours": (
        ('mon: ["09:00", "19:00"]', 'mon: ["19:00", "09:00"]'),
        "business_hours",
        "closing time",
    ),
    "bad-hours-format": (
        ('tue: ["09:00", "19:00"]', 'tue: ["nine", "seven"]'),
        "business_hours",
        "HH:MM",
    ),
    "missing-timezone": (
        ("timezone: America/Los_Angeles\n", ""),
        "timezone",
        "required",
    ),
    "unknown-lead-field": (
        ("lead_fields: [name, phone, email, service, time]", "lead_fields: [name, shoe_size]"),
        "booking.rules.lead_fields",
        "shoe_size",
    ),
    "id-mismatch": (None, "client_id", "folder"),
    "no-config": (None, "", "missing config.yaml"),
}


def _make_broken(root: Path, name: str) -> Path:
    folder = _copy_example(root, name)
    edit = BROKEN[name][0]
    if edit is not None:
        _edit(folder, *edit)
    elif name == "bad-yaml":
        (folder / "config.yaml").write_text(
            "client_id: bad-yaml\nname: [unclosed\nservices: {\n", encoding="utf-8"
        )
    elif name == "id-mismatch":
        _edit(folder, "client_id: id-mismatch", "client_id: someone-else")
    elif name == "no-config":
        (folder / "config.yaml").unlink()
    return folder


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_folder_reported_and_skipped(tmp_path: Path, name: str) -> None:
    _copy_example(tmp_path, "good-client")
    _make_broken(tmp_path, name)
    _, key, word = BROKEN[name]

    registry = load_clients(tmp_path)

    assert sorted(registry.clients) == ["good-client"]
    errors = registry.errors
    assert errors, f"{name}: no error reported"
    assert all(Path(p.file).parent.name == name for p in errors), errors
    assert all(Path(p.file).name == "config.yaml" for p in errors), errors
    # A key may be reported more precisely than expected (``business_hours.open``).
    matching = [p for p in errors if p.key == key or p.key.startswith(f"{key}.")]
    assert matching, [p.key for p in errors]
    assert any(word.lower() in p.reason.lower() for p in matching), [p.reason for p in matching]
    # The rendered line names file, key and reason together.
    line = str(matching[0])
    assert line.startswith("error: ")
    assert f"{name}/config.yaml" in line
    assert key in line
    assert matching[0].reason in line


def test_all_broken_folders_at_once_leave_the_good_one(tmp_path: Path) -> None:
    _copy_example(tmp_path, "good-client")
    for name in BROKEN:
        _make_broken(tmp_path, name)
    registry = load_clients(tmp_path)
    assert sorted(registry.clients) == ["good-client"]
    assert {Path(p.file).parent.name for p in registry.errors} == set(BROKEN)


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    folder = _make_broken(tmp_path, "bad-yaml")
    config, problems = load_client(folder)
    assert config is None
    assert len(problems) == 1
    assert re.search(r"line \d+", problems[0].reason), problems[0].reason


def test_missing_clients_dir_is_reported(tmp_path: Path) -> None:
    registry = load_clients(tmp_path / "nope")
    assert registry.clients == {}
    assert registry.errors and "not found" in registry.errors[0].reason


def test_missing_timezone_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    folder = _copy_example(tmp_path, "no-tz")
    _edit(folder, "timezone: America/Los_Angeles\n", "")
    config, problems = load_client(folder)
    assert config is None  # no silent UTC
    (error,) = _errors(problems)
    assert error.file == str(folder / "config.yaml")
    assert error.key == "timezone"
    assert error.reason == "required: an IANA name such as Europe/Madrid"
    assert str(error) == (
        f"error: {folder / 'config.yaml'}: timezone: required: an IANA name such as Europe/Madrid"
    )


def test_misspelt_timezone_key_explains_the_missing_timezone(tmp_path: Path) -> None:
    folder = _copy_example(tmp_path, "typo-tz")
    _edit(folder, "timezone: America/Los_Angeles", "timezon: America/Los_Angeles")
    config, problems = load_client(folder)
    assert config is None
    assert [(p.key, p.severity) for p in problems if p.key.startswith("timezon")] == [
        ("timezon", "warning"),
        ("timezone", "error"),
    ]
    typo = next(p for p in problems if p.key == "timezon")
    assert typo.reason == "unknown key; did you mean 'timezone'?"


# --- unknown keys: warnings with a suggestion; the client still serves -----------------


def _unknown(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return [p for p in problems if p.reason.startswith("unknown key")]


def test_unknown_nested_key_warns_with_suggestion_and_client_loads(tmp_path: Path) -> None:
    folder = _copy_example(tmp_path, "typo")
    _edit(folder, "  slot_minutes: 30", "  slot_minute: 15")
    config, problems = load_client(folder)
    assert config is not None  # a warning does not take the client down
    assert config.booking.slot_minutes == 30  # the misspelt key is ignored: default applies
    assert _errors(problems) == []
    (warning,) = _unknown(problems)
    assert warning.severity == "warning"
    assert warning.file == str(folder / "config.yaml")
    assert warning.key == "booking.slot_minute"
    assert str(warning) == (
        f"warning: {folder / 'config.yaml'}: booking.slot_minute: "
        "unknown key; did you mean 'slot_minutes'?"
    )
    assert "typo" in load_clients(tmp_path).clients


@pytest.mark.parametrize(
    ("old", "new", "key", "suggestion"),
    [
        ("locale: en-US", "locale: en-US\nlocal: en-US", "local", "'locale'"),
        (
            "    duration_minutes: 90",
            "    duration_minute: 90",
            "services[1].duration_minute",
            "'duration_minutes'",
        ),
        (
            '      from: "whatsapp:',
            '      frm: "whatsapp:',
            "channels.whatsapp.twilio.frm",
            "'from'",
        ),
        (
            "    purpose: lead_capture          # lead_capture | support | auto\n",
            "    purpose: lead_capture\n    turn_taking: {endpoint_silence: 700}\n",
            "channels.phone.turn_taking.endpoint_silence",
            "'endpoint_silence_ms'",
        ),
        ("  provider: offline", "  provider: offline\n  temperature: 0.2", "llm.temperature", None),
    ],
)
def test_unknown_keys_at_every_level_are_named_by_dotted_path(
    tmp_path: Path, old: str, new: str, key: str, suggestion: str | None
) -> None:
    folder = _copy_example(tmp_path, "typo")
    _edit(folder, old, new)
    config, problems = load_client(folder)
    assert config is not None
    (warning,) = _unknown(problems)
    assert warning.key == key
    if suggestion is None:  # nothing close: the keys that would be understood
        assert warning.reason == (
            "unknown key; expected one of: provider, model, first_token_s, total_s, prices,"
            " tone, instructions"
        )
    else:
        assert warning.reason == f"unknown key; did you mean {suggestion}?"


def test_free_form_mapping_keys_are_not_flagged(tmp_path: Path) -> None:
    folder = _copy_example(tmp_path, "custom-crm")
    _edit(
        folder, "    service: service_interest", "    service: service_interest\n    notez: x_notes"
    )
    config, problems = load_client(folder)
    assert config is not None
    assert config.crm.map["notez"] == "x_notes"
    assert _unknown(problems) == []


def test_phone_call_settings_load_and_bad_ones_name_their_key(tmp_path: Path) -> None:
    folder = _copy_example(tmp_path, "tuned")
    _edit(
        folder,
        "    purpose: lead_capture          # lead_capture | support | auto\n",
        "    purpose: lead_capture\n"
        "    max_reprompts: 1\n"
        "    filler: ['Just a second.']\n"
        "    turn_taking: {endpoint_silence_ms: 700, backchannels: [aha, okay]}\n",
    )
    config, problems = load_client(folder)
    assert config is not None and not _errors(problems)
    phone = config.channels.phone
    assert phone.max_reprompts == 1 and phone.filler == ("Just a second.",)
    assert phone.turn_taking.endpoint_silence_ms == 700
    assert phone.turn_taking.backchannels == ("aha", "okay")
    assert phone.turn_taking.barge_in_onset_ms == 60  # defaults fill the rest

    broken = _copy_example(tmp_path, "broken")
    _edit(
        broken,
        "    purpose: lead_capture          # lead_capture | support | auto\n",
        "    purpose: lead_capture\n    turn_taking: {vad_aggressiveness: 5}\n",
    )
    config, problems = load_client(broken)
    assert config is None
    (error,) = _errors(problems)
    assert error.key == "channels.phone.turn_taking.vad_aggressiveness"

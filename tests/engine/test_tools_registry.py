"""Each client's tools (``engine.tools.ToolRegistry``): providers by name, built
once per client config, and a client naming a provider nobody registered is a
config error that takes only that client out."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.config import ClientConfig, ClientRegistry, load_client, load_clients
from engine.errors import ConfigError, UnknownClientError
from engine.tools import (
    EMAIL,
    SLACK,
    Booking,
    Calendar,
    Crm,
    LeadRecord,
    NotifierRoute,
    ToolRegistry,
)
from gateway.app import open_gateway
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SPA = REPO / "clients" / "spa-del-sol"


class FakeCalendar(Calendar):
    """A calendar with fixed bookings, one instance per client it was built for."""

    name = "fake"

    def __init__(self, client: ClientConfig) -> None:
        self.client_id = client.client_id
        self.bookings: list[Booking] = []

    async def _busy_impl(self, client_id: str, start: datetime, end: datetime) -> list[Booking]:
        return [b for b in self.bookings if b.start < end and b.end > start]


class FakeCrm(Crm):
    name = "fake"

    async def _list_leads_impl(self, client_id: str, *, include_test: bool) -> list[LeadRecord]:
        return []


def client(
    client_id: str, *, calendar: str = "local", crm: str = "local", **escalation: str
) -> ClientConfig:
    return ClientConfig.model_validate(
        {
            "client_id": client_id,
            "name": client_id.title(),
            "timezone": "Europe/Madrid",
            "booking": {"provider": calendar},
            "crm": {"provider": crm},
            "escalation": escalation,
            "folder": Path("clients") / client_id,
        }
    )


class Counting:
    """A provider factory that counts what it built."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def calendar(self, config: ClientConfig) -> Calendar:
        self.built.append(config.client_id)
        return FakeCalendar(config)


@pytest.fixture
def shared() -> tuple[FakeCalendar, FakeCrm]:
    base = client("shared")
    return FakeCalendar(base), FakeCrm()


@pytest.fixture
def registry(shared: tuple[FakeCalendar, FakeCrm]) -> tuple[ToolRegistry, Counting]:
    local_calendar, local_crm = shared
    counting = Counting()
    tools = ToolRegistry()
    tools.register_calendar("local", lambda _c: local_calendar)
    tools.register_calendar("fake", counting.calendar)
    tools.register_crm("local", lambda _c: local_crm)
    tools.register_notifier(SLACK)
    tools.register_notifier(EMAIL)
    return tools, counting


def test_clients_naming_different_providers_get_different_tools(
    registry: tuple[ToolRegistry, Counting], shared: tuple[FakeCalendar, FakeCrm]
) -> None:
    tools, _ = registry
    local = tools.for_client(client("spa"))
    faked = tools.for_client(client("clinic", calendar="fake"))
    other = tools.for_client(client("salon", calendar="fake"))

    assert local.calendar is shared[0]
    assert isinstance(faked.calendar, FakeCalendar) and faked.calendar is not shared[0]
    assert faked.calendar.client_id == "clinic"
    assert other.calendar is not faked.calendar  # the factory builds one per client
    assert local.crm is faked.crm is shared[1]  # both name crm.provider: local


async def test_a_registered_calendar_answers_through_the_provider_base(
    registry: tuple[ToolRegistry, Counting],
) -> None:
    tools, _ = registry
    calendar = tools.for_client(client("clinic", calendar="fake")).calendar
    assert isinstance(calendar, FakeCalendar)
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    booked = Booking("b-1", "clinic", start, start.replace(hour=11), "Checkup")
    calendar.bookings.append(booked)
    assert await calendar.busy("clinic", start, start.replace(hour=12)) == [booked]
    assert await calendar.busy("clinic", start.replace(hour=11), start.replace(hour=12)) == []


def test_a_clients_tools_are_built_once_and_rebuilt_when_its_config_is_replaced(
    registry: tuple[ToolRegistry, Counting],
) -> None:
    tools, counting = registry
    config = client("clinic", calendar="fake")
    first = tools.for_client(config)
    assert tools.for_client(config) is first
    assert counting.built == ["clinic"]

    reloaded = config.model_copy(update={"name": "Clinic (renamed)"})
    second = tools.for_client(reloaded)
    assert second is not first and second.calendar is not first.calendar
    assert counting.built == ["clinic", "clinic"]
    assert tools.for_client(reloaded) is second


def test_an_unknown_provider_is_a_config_error_naming_file_key_and_known_providers(
    registry: tuple[ToolRegistry, Counting],
) -> None:
    tools, _ = registry
    config = client("clinic", calendar="exchange_calendar")
    with pytest.raises(ConfigError) as caught:
        tools.for_client(config)
    error = caught.value
    assert error.file == str(Path("clients") / "clinic" / "config.yaml")
    assert error.key == "booking.provider"
    assert error.reason == (
        "calendar provider 'exchange_calendar' is not registered; known providers: fake, local"
    )
    assert str(error).startswith(f"{error.file}: booking.provider: ")

    both = tools.problems(client("clinic", calendar="exchange_calendar", crm="zoho"))
    assert [(p.key, p.severity) for p in both] == [
        ("booking.provider", "error"),
        ("crm.provider", "error"),
    ]
    assert both[1].reason == "CRM provider 'zoho' is not registered; known providers: local"
    assert tools.problems(client("clinic", calendar="fake")) == []


def test_notifiers_follow_the_escalation_block(registry: tuple[ToolRegistry, Counting]) -> None:
    tools, _ = registry
    everything = tools.for_client(
        client(
            "spa",
            to_slack_webhook="https://hooks.slack.com/services/T/B/x",
            to_email="desk@spa.example",
            phone_transfer_number="+14155550100",
        )
    )
    assert [r.name for r in everything.notifiers] == ["slack", "email"]
    assert [r.outbox_kind for r in everything.notifiers] == ["notify.slack", "notify.email"]
    assert everything.transfer_number == "+14155550100" and everything.can_escalate

    email_only = tools.for_client(client("clinic", to_email="desk@clinic.example"))
    assert email_only.notifiers == (EMAIL,) and email_only.transfer_number is None

    nobody = tools.for_client(client("salon"))
    assert nobody.notifiers == () and not nobody.can_escalate


def test_registration_refuses_taken_and_malformed_names(
    registry: tuple[ToolRegistry, Counting],
) -> None:
    tools, counting = registry
    with pytest.raises(ValueError, match="already registered"):
        tools.register_calendar("fake", counting.calendar)
    with pytest.raises(ValueError, match="already registered"):
        tools.register_notifier(SLACK)
    with pytest.raises(ValueError, match="provider name 'Google Calendar'"):
        tools.register_calendar("Google Calendar", counting.calendar)
    with pytest.raises(ValueError, match="escalation has no key 'to_pager'"):
        NotifierRoute("pager", "to_pager", "notify.pager")
    assert tools.calendars == ("fake", "local") and tools.crms == ("local",)


def test_check_clients_takes_out_only_the_clients_with_unknown_providers(
    registry: tuple[ToolRegistry, Counting],
) -> None:
    tools, _ = registry
    loaded = ClientRegistry(
        clients={
            "spa": client("spa"),
            "clinic": client("clinic", crm="salesforce"),
            "salon": client("salon", calendar="fake"),
        }
    )
    problems = tools.check_clients(loaded)
    assert [(p.file, p.key) for p in problems] == [
        (str(Path("clients") / "clinic" / "config.yaml"), "crm.provider")
    ]
    assert sorted(loaded.clients) == ["salon", "spa"]
    assert loaded.errors == problems


def test_the_config_accepts_any_well_formed_provider_name_and_reports_a_malformed_one(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "spa-del-sol"
    shutil.copytree(SPA, folder)
    config_file = folder / "config.yaml"
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(
        text.replace("provider: local                  # local | google", "provider: Outlook  #"),
        encoding="utf-8",
    )
    config, problems = load_client(folder)
    assert config is not None and config.booking.provider == "outlook", problems

    config_file.write_text(
        text.replace("provider: local                  # local | google", 'provider: "my cal" #'),
        encoding="utf-8",
    )
    config, problems = load_client(folder)
    assert config is None
    assert [(p.key, p.reason) for p in problems if p.severity == "error"] == [
        ("booking.provider", "expected a provider name such as 'local', got 'my cal'")
    ]


async def test_the_gateway_skips_a_client_with_an_unknown_provider_and_serves_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clients = tmp_path / "clients"
    shutil.copytree(SPA, clients / "spa-del-sol")
    shutil.copytree(SPA, clients / "other-spa")
    other = clients / "other-spa" / "config.yaml"
    text = other.read_text(encoding="utf-8")
    assert "provider: local                  # local | hubspot" in text
    other.write_text(
        text.replace("client_id: spa-del-sol", "client_id: other-spa").replace(
            "provider: local                  # local | hubspot", "provider: salesforce  #"
        ),
        encoding="utf-8",
    )
    assert sorted(load_clients(clients).clients) == ["other-spa", "spa-del-sol"]

    settings = Settings(GATEWAY_CLIENTS_DIR=clients, GATEWAY_DATA_DIR=tmp_path / "data")
    with caplog.at_level(logging.ERROR, logger="gateway"):
        async with open_gateway(settings) as gw:
            assert sorted(gw.registry.clients) == ["spa-del-sol"]
            [problem] = gw.registry.errors
            assert (problem.file, problem.key) == (str(other), "crm.provider")
            reply = await gw.engine.handle_turn("spa-del-sol", "web", None, "s-1", "hello")
            assert reply.text
            with pytest.raises(UnknownClientError):
                await gw.engine.handle_turn("other-spa", "web", None, "s-1", "hello")
    [line] = [r.getMessage() for r in caplog.records if "is not registered" in r.getMessage()]
    assert line == (
        f"client config: error: {other}: crm.provider: CRM provider 'salesforce' is not "
        "registered; known providers: airtable, hubspot, local, pipedrive, webhook; "
        "that client is skipped"
    )

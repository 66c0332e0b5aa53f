"""Capacity and admission: a replica takes at most GATEWAY_PHONE_MAX_CALLS calls at once.

Two lines here. The voice webhook reserves a line, the media stream holds it
while the call lives; a third caller hears the busy line (or is transferred),
a call that ends frees its line, a reservation whose stream never came lapses,
and /readyz and /metrics report the headroom.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from phone.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, answer, is_end_mark
from prometheus_client import REGISTRY
from starlette.websockets import WebSocketDisconnect

from channels.phone.capacity import CallCapacity
from engine.config import EscalationConfig
from gateway.app import create_app
from gateway.settings import Settings
from testkit.phone.voice import voice_request
from testkit.speech import FakeSpeech

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
PATH = f"/twilio/voice/{CLIENT}"
TRANSFER_TO = "+14155550100"  # spa-del-sol's escalation.phone_transfer_number

# alone: the tests read the process-wide phone gauges and counters, which other
# tests' gateways in the same worker process move too.
pytestmark = [pytest.mark.usefixtures("deadline"), pytest.mark.alone]

_calls = iter(range(10**6))


def new_call_sid() -> str:
    return f"CA0ca{next(_calls):029d}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,
        GATEWAY_CLIENTS_DIR=REPO / "clients",
        GATEWAY_DATA_DIR=tmp_path / "data",
        GATEWAY_PHONE_MAX_CALLS=2,
    )
    app: FastAPI = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def lines(client: TestClient) -> CallCapacity:
    capacity = client.app.state.phone.streams.lines  # type: ignore[attr-defined]
    assert isinstance(capacity, CallCapacity)
    return capacity


@pytest.fixture
def clock(lines: CallCapacity) -> Clock:
    fake = Clock()
    lines.clock = fake
    return fake


@pytest.fixture
def no_transfer(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = client.app.state.gateway.registry  # type: ignore[attr-defined]
    spa = registry.clients[CLIENT]
    monkeypatch.setitem(
        registry.clients, CLIENT, spa.model_copy(update={"escalation": EscalationConfig()})
    )


def call(client: TestClient, call_sid: str, auth_token: str = AUTH_TOKEN) -> ET.Element:
    """Twilio's signed voice request for ``call_sid``; the TwiML answer's root."""
    url = str(client.base_url).rstrip("/") + PATH
    form, headers = voice_request(
        url,
        auth_token,
        call_sid=call_sid,
        account_sid=ACCOUNT_SID,
        caller="+14155550123",
        to="+14155550199",
    )
    response = client.post(PATH, data=form, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return ET.fromstring(response.text)


def verbs(root: ET.Element) -> list[tuple[str, str]]:
    return [(verb.tag, (verb.text or "").strip()) for verb in root]


def is_connect(root: ET.Element) -> bool:
    return root.find("./Connect/Stream") is not None


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def readyz(client: TestClient, query: str = "") -> tuple[int, dict[str, object]]:
    response = client.get("/readyz" + query)
    return response.status_code, response.json()["phone"]


def wait_until(done: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --------------------------------------------------------------------------- busy


@pytest.mark.usefixtures("no_transfer", "clock")
def test_beyond_two_calls_the_caller_hears_the_busy_line_and_is_hung_up(
    client: TestClient,
) -> None:
    refused = sample("gateway_phone_calls_refused_total", {"reason": "busy"})
    busy = sample("gateway_phone_webhooks_total", {"outcome": "busy"})

    assert is_connect(call(client, new_call_sid()))
    assert is_connect(call(client, new_call_sid()))
    third = call(client, new_call_sid())

    assert verbs(third) == [
        (
            "Say",
            "Thanks for calling Spa del Sol. All our lines are busy right now; "
            "please call again in a few minutes.",
        ),
        ("Hangup", ""),
    ]
    assert sample("gateway_phone_calls_refused_total", {"reason": "busy"}) == refused + 1
    assert sample("gateway_phone_webhooks_total", {"outcome": "busy"}) == busy + 1


@pytest.mark.usefixtures("clock")
def test_with_a_transfer_number_the_busy_caller_is_transferred(client: TestClient) -> None:
    call(client, new_call_sid())
    call(client, new_call_sid())
    third = call(client, new_call_sid())

    assert verbs(third) == [
        ("Say", "All our lines are busy; let me transfer you."),
        ("Dial", TRANSFER_TO),
    ]


@pytest.mark.usefixtures("clock")
def test_a_forged_webhook_is_refused_even_when_lines_are_full(client: TestClient) -> None:
    call(client, new_call_sid())
    call(client, new_call_sid())
    url = str(client.base_url).rstrip("/") + PATH
    form, headers = voice_request(
        url,
        "not-the-token",
        call_sid=new_call_sid(),
        account_sid=ACCOUNT_SID,
        caller="+14155550123",
        to="+14155550199",
    )

    assert client.post(PATH, data=form, headers=headers).status_code == 403


@pytest.mark.usefixtures("clock")
def test_a_resent_webhook_keeps_its_line(client: TestClient, lines: CallCapacity) -> None:
    first, second = new_call_sid(), new_call_sid()
    call(client, first)
    call(client, second)

    assert is_connect(call(client, first))  # Twilio retried: same call, same line
    assert lines.snapshot().live_calls == 2


# --------------------------------------------------------------------------- lines free up


@pytest.mark.usefixtures("clock")
def test_a_call_that_ends_frees_its_line(
    client: TestClient, lines: CallCapacity, fake_speech: FakeSpeech
) -> None:
    live = sample("gateway_phone_calls_live")
    first, second = new_call_sid(), new_call_sid()
    parameters = answer(client, first)
    call(client, second)
    assert sample("gateway_phone_calls_live") == live + 2

    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, first, parameters=parameters)
        twilio.connect()
        twilio.start()
        twilio.read_until(is_end_mark)  # the greeting: the call is live
        # Its reservation became its line: still two lines, no third.
        assert (lines.snapshot().streaming, lines.snapshot().reserved) == (1, 1)
        assert not is_connect(call(client, new_call_sid()))
        twilio.stop()
        with pytest.raises(WebSocketDisconnect):
            while True:
                ws.receive_text()

    wait_until(lambda: lines.snapshot().streaming == 0)
    assert sample("gateway_phone_calls_live") == live + 1
    assert is_connect(call(client, new_call_sid()))


def test_a_reservation_whose_stream_never_came_lapses(client: TestClient, clock: Clock) -> None:
    call(client, new_call_sid())
    call(client, new_call_sid())
    clock.now += 29
    assert not is_connect(call(client, new_call_sid()))

    clock.now += 2  # 31 s after the webhooks: their streams never started
    assert is_connect(call(client, new_call_sid()))


def test_a_refused_stream_gives_its_line_back(
    client: TestClient, lines: CallCapacity, clock: Clock, fake_speech: FakeSpeech
) -> None:
    call_sid = new_call_sid()
    parameters = answer(client, call_sid)
    assert lines.snapshot().reserved == 1

    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, call_sid, parameters={**parameters, "token": "v1.1.forged"})
        twilio.connect()
        twilio.start()
        with pytest.raises(WebSocketDisconnect):
            while True:
                ws.receive_text()

    wait_until(lambda: lines.snapshot().reserved == 0)


# --------------------------------------------------------------------------- readyz, metrics


@pytest.mark.usefixtures("clock")
def test_readyz_reports_the_headroom_and_stays_ready_when_full(client: TestClient) -> None:
    assert readyz(client) == (
        200,
        {
            "live_calls": 0,
            "streaming": 0,
            "reserved": 0,
            "max_calls": 2,
            "headroom": 2,
            "full": False,
        },
    )
    call(client, new_call_sid())
    status, phone = readyz(client)
    assert (status, phone["live_calls"], phone["headroom"]) == (200, 1, 1)
    assert readyz(client, "?channel=phone")[0] == 200

    call(client, new_call_sid())
    status, phone = readyz(client)
    assert (status, phone["headroom"], phone["full"]) == (200, 0, True)
    # A health check for the voice webhook alone sends new calls elsewhere.
    assert readyz(client, "?channel=phone")[0] == 503


@pytest.mark.usefixtures("clock")
def test_metrics_report_capacity_and_live_calls(client: TestClient) -> None:
    live = sample("gateway_phone_calls_live")
    assert sample("gateway_phone_calls_capacity") == 2

    call(client, new_call_sid())
    text = client.get("/metrics").text
    assert "gateway_phone_calls_capacity 2.0" in text
    assert sample("gateway_phone_calls_live") == live + 1


# --------------------------------------------------------------------------- the counter


async def test_unlimited_lines_never_refuse() -> None:
    lines = CallCapacity(0)
    assert all(lines.admit(f"CA{i}") for i in range(100))
    assert lines.snapshot().as_json()["headroom"] is None
    assert sample("gateway_phone_calls_capacity") == float("inf")
    async with lines.line("CA0"):
        assert (lines.snapshot().streaming, lines.snapshot().reserved) == (1, 99)


async def test_a_stream_without_a_reservation_still_gets_its_line() -> None:
    lines = CallCapacity(1)
    assert lines.admit("CA1")
    async with lines.line("CA2"):  # its webhook reached another replica
        assert lines.snapshot().live_calls == 2  # over capacity: only new calls are refused
        assert lines.snapshot().headroom == 0
        assert not lines.admit("CA3")


def test_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_PHONE_MAX_CALLS", raising=False)
    assert Settings(_env_file=None).phone_max_calls == 16
    assert Settings(_env_file=None, GATEWAY_PHONE_MAX_CALLS=0).phone_max_calls == 0
    with pytest.raises(ValueError):
        Settings(_env_file=None, GATEWAY_PHONE_MAX_CALLS=-1)

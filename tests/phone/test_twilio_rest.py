"""channels.phone.rest against a local stub speaking Twilio's REST wire format."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

# tests/ is on sys.path (its conftest.py sits outside any package), so this import
# works whether or not tests/phone/ is a package.
from phone.twilio_stub import TwilioStub

from channels.phone.rest import DEFAULT_API_BASE_URL, CallState, TwilioCallError, TwilioCalls
from channels.phone.webhook import PhoneSettings
from engine.config import load_clients
from engine.errors import ToolError

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
ACCOUNT = "AC" + "a1" * 16
TOKEN = "rest-test-token"
CALL = "CA" + "0f" * 16


@pytest.fixture
def stub() -> Iterator[TwilioStub]:
    with TwilioStub({ACCOUNT: TOKEN}) as server:
        server.add_call(CALL, ACCOUNT)
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def calls(http: httpx.AsyncClient, stub: TwilioStub, token: str = TOKEN) -> TwilioCalls:
    return TwilioCalls(http, ACCOUNT, token, base_url=stub.url, backoff_s=0.01)


async def test_transfer_sends_dial_twiml_with_basic_auth(
    stub: TwilioStub, http: httpx.AsyncClient
) -> None:
    state = await calls(http, stub).transfer(CALL, "+14155550100")

    assert state == CallState(sid=CALL, status="in-progress")
    [request] = stub.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert request.auth == (ACCOUNT, TOKEN)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert set(request.form) == {"Twiml"}
    twiml = request.field("Twiml")
    assert twiml == "<Response><Dial>+14155550100</Dial></Response>"
    root = ET.fromstring(twiml)
    assert [(el.tag, el.text) for el in root] == [("Dial", "+14155550100")]


async def test_hangup_sends_status_completed(stub: TwilioStub, http: httpx.AsyncClient) -> None:
    state = await calls(http, stub).hangup(CALL)

    assert state.status == "completed"
    assert stub.call_status(CALL) == "completed"
    [request] = stub.requests
    assert request.form == {"Status": ["completed"]}
    assert request.auth == (ACCOUNT, TOKEN)


async def test_a_500_is_retried_and_then_succeeds(
    stub: TwilioStub, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    stub.fail_next(500)

    state = await calls(http, stub).transfer(CALL, "+14155550100")

    assert state.status == "in-progress"
    assert len(stub.requests) == 2
    assert stub.requests[0].form == stub.requests[1].form
    assert "retrying" in caplog.text
    assert "+14155550100" not in caplog.text


async def test_a_429_honours_retry_after(stub: TwilioStub, http: httpx.AsyncClient) -> None:
    stub.fail_next(429, code=20429, message="Too Many Requests", retry_after="0")

    await calls(http, stub).hangup(CALL)

    assert len(stub.requests) == 2


async def test_unknown_call_is_a_non_retryable_tool_error_with_twilios_message(
    stub: TwilioStub, http: httpx.AsyncClient
) -> None:
    gone = "CA" + "ee" * 16

    with pytest.raises(ToolError) as info:
        await calls(http, stub).transfer(gone, "+14155550100")

    err = info.value
    assert isinstance(err, TwilioCallError)
    assert err.tool == "twilio"
    assert err.retryable is False
    assert (err.http_status, err.code) == (404, 20404)
    assert err.more_info == "https://www.twilio.com/docs/errors/20404"
    assert f"The requested resource /2010-04-01/Accounts/{ACCOUNT}/Calls/{gone}.json" in (
        err.reason
    )
    assert "20404" in err.reason
    assert isinstance(err.__cause__, httpx.HTTPStatusError)
    assert len(stub.requests) == 1, "a 404 is not retried"


async def test_persistent_5xx_gives_up_after_the_bounded_attempts(
    stub: TwilioStub, http: httpx.AsyncClient
) -> None:
    stub.fail_next(503, times=5, code=20500, message="Service Unavailable")

    with pytest.raises(TwilioCallError) as info:
        await calls(http, stub).hangup(CALL)

    assert info.value.retryable is True
    assert info.value.http_status == 503
    assert "Service Unavailable" in info.value.reason
    assert len(stub.requests) == 3


async def test_a_non_json_error_body_is_reported(stub: TwilioStub, http: httpx.AsyncClient) -> None:
    stub.fail_next(502, times=3, raw_body=b"<html>Bad Gateway</html>")

    with pytest.raises(TwilioCallError) as info:
        await calls(http, stub).hangup(CALL)

    assert info.value.http_status == 502
    assert "Bad Gateway" in info.value.reason
    assert info.value.code is None


async def test_wrong_auth_token_is_not_retried(stub: TwilioStub, http: httpx.AsyncClient) -> None:
    with pytest.raises(TwilioCallError) as info:
        await calls(http, stub, token="wrong").hangup(CALL)

    assert info.value.retryable is False
    assert (info.value.http_status, info.value.code) == (401, 20003)
    assert "auth_token" in info.value.reason
    assert "wrong" not in info.value.reason
    assert len(stub.requests) == 1
    assert stub.call_status(CALL) == "in-progress"


async def test_connection_refused_is_retried_then_retryable(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        client = TwilioCalls(
            http, ACCOUNT, TOKEN, base_url=f"http://127.0.0.1:{port}", backoff_s=0.01
        )

        with pytest.raises(TwilioCallError) as info:
            await client.hangup(CALL)

    assert info.value.retryable is True
    assert info.value.http_status is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("number", ["4155550100", "+0123", "+1 415 555 0100", ""])
async def test_transfer_refuses_a_number_that_is_not_e164(
    stub: TwilioStub, http: httpx.AsyncClient, number: str
) -> None:
    with pytest.raises(TwilioCallError) as info:
        await calls(http, stub).transfer(CALL, number)

    assert info.value.retryable is False
    assert stub.requests == []


@pytest.mark.parametrize("sid", ["", "CA123", "../../Accounts", "CA" + "0f" * 16 + "/x"])
async def test_a_malformed_call_sid_never_reaches_twilio(
    stub: TwilioStub, http: httpx.AsyncClient, sid: str
) -> None:
    with pytest.raises(TwilioCallError, match="Call SID"):
        await calls(http, stub).hangup(sid)

    assert stub.requests == []


async def test_for_client_uses_the_clients_twilio_account(
    stub: TwilioStub, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPA_TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("SPA_TWILIO_AUTH_TOKEN", TOKEN)
    client = load_clients(CLIENTS).get("spa-del-sol")
    assert client is not None and client.escalation.phone_transfer_number
    settings = PhoneSettings(public_url=None, twilio_base_url=stub.url + "/")

    twilio = TwilioCalls.for_client(http, client, base_url=settings.api_base_url)
    await twilio.transfer(CALL, client.escalation.phone_transfer_number)

    assert stub.requests[0].auth == (ACCOUNT, TOKEN)
    assert stub.requests[0].field("Twiml") == (
        f"<Response><Dial>{client.escalation.phone_transfer_number}</Dial></Response>"
    )


async def test_for_client_without_credentials_is_a_clear_tool_error(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPA_TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.delenv("SPA_TWILIO_AUTH_TOKEN", raising=False)
    client = load_clients(CLIENTS).get("spa-del-sol")
    assert client is not None

    with pytest.raises(TwilioCallError, match=r"channels\.phone\.twilio\.auth_token") as info:
        TwilioCalls.for_client(http, client)
    assert info.value.retryable is False


def test_default_base_url_is_twilios() -> None:
    assert PhoneSettings(public_url=None, twilio_base_url=None).api_base_url == (
        DEFAULT_API_BASE_URL
    )
    assert DEFAULT_API_BASE_URL == "https://api.twilio.com"

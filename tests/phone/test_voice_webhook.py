"""POST /twilio/voice/{client_id}: signature checks, refusals, and the TwiML answer."""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from channels.phone.admission import TOKEN_TTL_S, verify_stream_token
from channels.phone.deps import VoiceDeps
from channels.phone.webhook import (
    MAX_BODY_BYTES,
    IncomingCall,
    PhoneSettings,
    WebhookFormatError,
    parse_incoming_call,
    voice_router,
)
from engine.config import ClientRegistry, load_clients

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
CLIENT = "spa-del-sol"
ACCOUNT = "AC" + "5a" * 16
TOKEN = "spa-test-auth-token"
PUBLIC = "https://gw.example.com"
PATH = f"/twilio/voice/{CLIENT}"
CALLER = "+14155550123"
BUSINESS = "+14155550199"

# What Twilio POSTs when a call comes in (Twilio Voice, "TwiML voice request" parameters).
PARAMS = {
    "AccountSid": ACCOUNT,
    "ApiVersion": "2010-04-01",
    "CallSid": "CA" + "7c" * 16,
    "CallStatus": "ringing",
    "Called": BUSINESS,
    "Caller": CALLER,
    "Direction": "inbound",
    "From": CALLER,
    "FromCountry": "US",
    "To": BUSINESS,
    "ToCountry": "US",
}


def sign(url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def make_app(registry: ClientRegistry, settings: PhoneSettings) -> FastAPI:
    app = FastAPI()
    app.include_router(voice_router(lambda: VoiceDeps(registry, settings)))
    return app


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> ClientRegistry:
    monkeypatch.setenv("SPA_TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("SPA_TWILIO_AUTH_TOKEN", TOKEN)
    loaded = load_clients(CLIENTS)
    assert loaded.get(CLIENT) is not None, loaded.problems
    return loaded


@pytest.fixture
def client(registry: ClientRegistry) -> Iterator[TestClient]:
    """Requests reach the app on an internal host, as behind a TLS-terminating proxy."""
    app = make_app(registry, PhoneSettings(public_url=PUBLIC, twilio_base_url=None))
    with TestClient(app, base_url="http://10.0.0.5:8080") as test_client:
        yield test_client


def stream_of(response_text: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(response_text)
    assert root.tag == "Response"
    [connect] = list(root)
    assert connect.tag == "Connect"
    [stream] = list(connect)
    assert stream.tag == "Stream"
    params = {p.attrib["name"]: p.attrib["value"] for p in stream if p.tag == "Parameter"}
    return stream.attrib["url"], params


def test_signed_call_gets_connect_stream_twiml(client: TestClient) -> None:
    response = client.post(PATH, data=PARAMS, headers=sign(PUBLIC + PATH, PARAMS))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert f'<Connect><Stream url="wss://gw.example.com/twilio/media/{CLIENT}">' in response.text
    url, params = stream_of(response.text)
    assert url == f"wss://gw.example.com/twilio/media/{CLIENT}"
    token = params.pop("token")
    assert params == {"caller": CALLER, "call_sid": PARAMS["CallSid"], "to": BUSINESS}
    # The one-time stream token is bound to this client and call, signed with a key
    # derived from the client's auth token.
    verified = verify_stream_token(token, TOKEN, CLIENT, PARAMS["CallSid"], now_s=time.time())
    assert verified.expiry_s <= time.time() + TOKEN_TTL_S + 1


def test_signature_for_the_public_url_validates_on_an_internal_host(
    client: TestClient,
) -> None:
    # The proxy rewrote https://gw.example.com -> http://10.0.0.5:8080; Twilio signed the former.
    internal = "http://10.0.0.5:8080" + PATH
    assert client.post(PATH, data=PARAMS, headers=sign(PUBLIC + PATH, PARAMS)).status_code == 200
    assert client.post(PATH, data=PARAMS, headers=sign(internal, PARAMS)).status_code == 403


def test_the_query_string_is_part_of_the_signed_url(client: TestClient) -> None:
    url = PATH + "?source=main-line"

    assert client.post(url, data=PARAMS, headers=sign(PUBLIC + url, PARAMS)).status_code == 200
    assert client.post(url, data=PARAMS, headers=sign(PUBLIC + PATH, PARAMS)).status_code == 403


def test_without_public_url_the_requests_own_url_is_signed(registry: ClientRegistry) -> None:
    app = make_app(registry, PhoneSettings(public_url=None, twilio_base_url=None))
    with TestClient(app, base_url="http://127.0.0.1:8080") as local:
        response = local.post(
            PATH, data=PARAMS, headers=sign("http://127.0.0.1:8080" + PATH, PARAMS)
        )

    assert response.status_code == 200, response.text
    url, _ = stream_of(response.text)
    assert url == f"ws://127.0.0.1:8080/twilio/media/{CLIENT}"


def test_a_public_url_with_a_path_prefix(registry: ClientRegistry) -> None:
    public = "https://agency.example/receptionist/"
    app = make_app(registry, PhoneSettings(public_url=public, twilio_base_url=None))
    with TestClient(app) as proxied:
        signed = sign("https://agency.example/receptionist" + PATH, PARAMS)
        response = proxied.post(PATH, data=PARAMS, headers=signed)

    assert response.status_code == 200, response.text
    url, _ = stream_of(response.text)
    assert url == f"wss://agency.example/receptionist/twilio/media/{CLIENT}"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Twilio-Signature": ""},
        {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="},
        sign(PUBLIC + PATH, PARAMS, token="another-accounts-token"),
        sign(PUBLIC + "/twilio/voice/other-client", PARAMS),
    ],
    ids=["missing", "empty", "forged", "other-token", "other-url"],
)
def test_missing_or_forged_signature_is_403(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(PATH, data=PARAMS, headers=headers)

    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.json()["detail"]


def test_a_tampered_parameter_breaks_the_signature(client: TestClient) -> None:
    headers = sign(PUBLIC + PATH, PARAMS)

    response = client.post(PATH, data={**PARAMS, "From": "+19005550000"}, headers=headers)

    assert response.status_code == 403


def test_refusals_are_logged_with_client_and_reason_but_no_numbers(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="channels.phone.webhook"):
        client.post(PATH, data=PARAMS, headers={"X-Twilio-Signature": "forged"})
        client.post(PATH, data=PARAMS, headers=sign(PUBLIC + PATH, PARAMS))

    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert CLIENT in refused[0].getMessage()
    assert "X-Twilio-Signature" in refused[0].getMessage()
    assert CALLER not in caplog.text
    assert BUSINESS not in caplog.text


def test_unknown_client_is_404(client: TestClient) -> None:
    path = "/twilio/voice/no-such-client"

    response = client.post(path, data=PARAMS, headers=sign(PUBLIC + path, PARAMS))

    assert response.status_code == 404
    assert "unknown client 'no-such-client'" in response.json()["detail"]


def test_client_without_auth_token_has_the_phone_channel_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPA_TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.delenv("SPA_TWILIO_AUTH_TOKEN", raising=False)
    registry = load_clients(CLIENTS)
    app = make_app(registry, PhoneSettings(public_url=PUBLIC, twilio_base_url=None))

    with TestClient(app) as unsigned:
        for headers in ({}, sign(PUBLIC + PATH, PARAMS), sign(PUBLIC + PATH, PARAMS, token="")):
            response = unsigned.post(PATH, data=PARAMS, headers=headers)
            assert response.status_code == 503
            assert "auth_token is unset" in response.json()["detail"]


def test_disabled_phone_channel_is_503(registry: ClientRegistry) -> None:
    spa = registry.clients[CLIENT]
    phone = spa.channels.phone.model_copy(update={"enabled": False})
    off = spa.model_copy(update={"channels": spa.channels.model_copy(update={"phone": phone})})
    app = make_app(
        ClientRegistry(clients={CLIENT: off}),
        PhoneSettings(public_url=PUBLIC, twilio_base_url=None),
    )

    with TestClient(app) as test_client:
        response = test_client.post(PATH, data=PARAMS, headers=sign(PUBLIC + PATH, PARAMS))

    assert response.status_code == 503
    assert "channels.phone.enabled" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (b'{"CallSid": "CA1"}', "application/json"),
        (b"CallSid", "application/x-www-form-urlencoded"),
    ],
    ids=["not-utf8", "json", "field-without-equals"],
)
def test_a_malformed_body_is_400_and_the_next_call_still_works(
    client: TestClient, body: bytes, content_type: str
) -> None:
    response = client.post(
        PATH,
        content=body,
        headers={"Content-Type": content_type, **sign(PUBLIC + PATH, {})},
    )

    assert response.status_code == 400
    assert "x-www-form-urlencoded" in response.json()["detail"]
    ok = client.post(PATH, data=PARAMS, headers=sign(PUBLIC + PATH, PARAMS))
    assert ok.status_code == 200


def test_a_signed_request_without_call_fields_is_400(client: TestClient) -> None:
    params = {k: v for k, v in PARAMS.items() if k != "CallSid"}

    response = client.post(PATH, data=params, headers=sign(PUBLIC + PATH, params))

    assert response.status_code == 400
    assert "CallSid" in response.json()["detail"]


def test_an_empty_signed_body_is_400(client: TestClient) -> None:
    response = client.post(PATH, headers=sign(PUBLIC + PATH, {}))

    assert response.status_code == 400


def test_an_oversized_body_is_413(client: TestClient) -> None:
    params = {**PARAMS, "Padding": "x" * (MAX_BODY_BYTES + 1)}

    response = client.post(PATH, data=params, headers=sign(PUBLIC + PATH, params))

    assert response.status_code == 413
    assert client.post(PATH, data=PARAMS, headers=sign(PUBLIC + PATH, PARAMS)).status_code == 200


def test_withheld_caller_id_leaves_out_the_caller_parameter(client: TestClient) -> None:
    params = {**PARAMS, "From": "anonymous", "Caller": "anonymous"}

    response = client.post(PATH, data=params, headers=sign(PUBLIC + PATH, params))

    assert response.status_code == 200
    _, stream_params = stream_of(response.text)
    assert set(stream_params) == {"call_sid", "to", "token"}


def test_parse_incoming_call_reads_twilios_fields() -> None:
    assert parse_incoming_call(PARAMS) == IncomingCall(
        call_sid=PARAMS["CallSid"], from_number=CALLER, to_number=BUSINESS, account_sid=ACCOUNT
    )
    with pytest.raises(WebhookFormatError, match="AccountSid"):
        parse_incoming_call({"CallSid": "CA1", "To": BUSINESS})


@pytest.mark.parametrize(
    "value",
    ["ftp://gw.example.com", "gw.example.com", "https://", "https://gw.example.com/?x=1"],
)
def test_phone_settings_refuse_a_bad_public_url(value: str) -> None:
    with pytest.raises(ValueError, match="public_url"):
        PhoneSettings(public_url=value, twilio_base_url=None)


@pytest.mark.parametrize(
    ("caller", "signature"),
    [
        # Twilio's "Webhooks security" guide.
        ("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        # The helper libraries' RequestValidator tests.
        ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ],
)
def test_twilios_documented_signature_vectors_validate(caller: str, signature: str) -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": caller,
        "Digits": "1234",
        "From": caller,
        "To": "+18005551212",
    }
    validator = RequestValidator("12345")

    assert validator.validate(url, params, signature)
    assert not validator.validate(url, {**params, "Digits": "9999"}, signature)

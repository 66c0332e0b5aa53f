"""Webhook signature checks: Twilio's documented vectors, Meta's HMAC-SHA256, and
every way a header can be missing or malformed (never an exception)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from twilio.request_validator import RequestValidator

from channels.whatsapp.signatures import valid_meta, valid_twilio

# The worked example of Twilio's "Webhooks security" page (auth token 12345).
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}
DOC_SIGNATURE = "GvWf1cFY/Q7PnoempGyD5oXAezc="
# The same page's later revision, with other numbers.
DOC_PARAMS_2 = {**DOC_PARAMS, "Caller": "+12349013030", "From": "+12349013030"}
DOC_SIGNATURE_2 = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

TOKEN = "f" * 32
HOOK = "https://gw.example.com/twilio/whatsapp/bright-smile"
FORM = {
    "MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "From": "whatsapp:+14155550123",
    "To": "whatsapp:+14155238886",
    "Body": "¿Hay cita el martes? 🦷",
    "ProfileName": "Zoë 李",
    "NumMedia": "0",
}


def sign(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def test_twilio_documented_vectors() -> None:
    assert sign(DOC_URL, DOC_PARAMS, "12345") == DOC_SIGNATURE
    assert valid_twilio("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert valid_twilio("12345", DOC_URL, DOC_PARAMS_2, DOC_SIGNATURE_2)


@pytest.mark.parametrize(
    ("token", "url", "params"),
    [
        ("12346", DOC_URL, DOC_PARAMS),
        ("12345", DOC_URL.replace("foo=1", "foo=2"), DOC_PARAMS),
        ("12345", "https://mycompany.com/myapp.php", DOC_PARAMS),
        ("12345", DOC_URL.replace("https", "http"), DOC_PARAMS),
        ("12345", DOC_URL, {**DOC_PARAMS, "Digits": "9999"}),
        ("12345", DOC_URL, {**DOC_PARAMS, "Extra": ""}),
    ],
)
def test_twilio_tampering_is_caught(token: str, url: str, params: dict[str, str]) -> None:
    assert not valid_twilio(token, url, params, DOC_SIGNATURE)


def test_twilio_real_form_in_any_script() -> None:
    assert valid_twilio(TOKEN, HOOK, FORM, sign(HOOK, FORM))


def test_twilio_with_and_without_the_default_port() -> None:
    with_port = "https://gw.example.com:443/twilio/whatsapp/bright-smile"
    assert valid_twilio(TOKEN, HOOK, FORM, sign(with_port, FORM))
    assert valid_twilio(TOKEN, with_port, FORM, sign(HOOK, FORM))


def test_twilio_with_and_without_a_trailing_slash() -> None:
    assert valid_twilio(TOKEN, HOOK, FORM, sign(HOOK + "/", FORM))
    assert valid_twilio(TOKEN, HOOK + "/", FORM, sign(HOOK, FORM))
    query = HOOK + "?x=1"
    assert valid_twilio(TOKEN, query, FORM, sign(HOOK + "/?x=1", FORM))


def test_twilio_query_string_is_signed() -> None:
    assert not valid_twilio(TOKEN, HOOK + "?x=1", FORM, sign(HOOK, FORM))


@pytest.mark.parametrize("signature", [None, "", "   ", "not base64 !!", DOC_SIGNATURE[:-1], "é"])
def test_twilio_missing_or_malformed_header(signature: str | None) -> None:
    assert not valid_twilio("12345", DOC_URL, DOC_PARAMS, signature)


def test_twilio_empty_token_or_broken_input_is_false() -> None:
    assert not valid_twilio("", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not valid_twilio(TOKEN, "https://gw.example.com:99999/x", FORM, "abc=")
    assert not valid_twilio(TOKEN, HOOK, {"Body": "\ud800"}, "abc=")
    assert not valid_twilio(TOKEN, "not a url", {}, "abc=")


# --- Meta ----------------------------------------------------------------------------

SECRET = "0123456789abcdef0123456789abcdef"
BODY = json.dumps(
    {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"messages": []}}]}],
    },
    ensure_ascii=False,
).encode()


def meta_header(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_meta_valid() -> None:
    assert valid_meta(SECRET, BODY, meta_header(BODY))
    assert valid_meta(SECRET, BODY, meta_header(BODY).upper().replace("SHA256=", "sha256="))
    assert valid_meta(SECRET, BODY, f"  {meta_header(BODY)} ")


def test_meta_raw_bytes_in_any_script() -> None:
    body = '{"text": "Привет 👋 مرحبا"}'.encode()
    assert valid_meta(SECRET, body, meta_header(body))
    # The same JSON re-serialised (escaped) is a different body.
    reencoded = json.dumps(json.loads(body)).encode()
    assert not valid_meta(SECRET, reencoded, meta_header(body))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        meta_header(BODY)[len("sha256=") :],
        meta_header(BODY)[:-1],
        meta_header(BODY) + "00",
        "sha256=" + "g" * 64,
        "sha256=" + "é" * 64,
        meta_header(BODY, "another secret"),
        meta_header(BODY + b" "),
    ],
)
def test_meta_missing_malformed_or_wrong(header: str | None) -> None:
    assert not valid_meta(SECRET, BODY, header)


def test_meta_empty_secret_is_never_valid() -> None:
    assert not valid_meta("", BODY, meta_header(BODY, ""))


def test_meta_empty_body() -> None:
    assert valid_meta(SECRET, b"", meta_header(b""))

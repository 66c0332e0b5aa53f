"""Twilio's side of the voice webhook: the signed request that starts a call, and the
``<Connect><Stream>`` TwiML it gets back.

When a call reaches a number, Twilio POSTs its voice request parameters
(``application/x-www-form-urlencoded``: ``CallSid``, ``AccountSid``, ``From``,
``To``...), signed with the account's auth token in ``X-Twilio-Signature``
(Twilio, "Webhooks security"), then opens the ``<Stream url>`` of the answer
and sends its ``<Parameter>``s in the ``start`` message. A fake Twilio does the
same, so the gateway's one-time stream token reaches the stream the way it
does in production (:mod:`channels.phone.admission`).

Test-only: production code never imports :mod:`testkit.phone`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import httpx
from twilio.request_validator import RequestValidator

__all__ = [
    "SIGNATURE_HEADER",
    "ConnectStream",
    "answer_call",
    "parse_connect_twiml",
    "voice_request",
]

SIGNATURE_HEADER = "X-Twilio-Signature"


@dataclass(frozen=True, slots=True)
class ConnectStream:
    """What a ``<Connect><Stream>`` answer tells Twilio: the websocket ``url`` and the
    ``parameters`` to send in ``start.customParameters``."""

    url: str
    parameters: dict[str, str]


def voice_request(
    url: str, auth_token: str, *, call_sid: str, account_sid: str, caller: str, to: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields of Twilio's voice request to ``url`` and its headers (signature)."""
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": caller,
        "To": to,
    }
    signature = RequestValidator(auth_token).compute_signature(url, form)
    return form, {SIGNATURE_HEADER: signature}


def parse_connect_twiml(text: str) -> ConnectStream:
    """Read ``<Response><Connect><Stream url=...><Parameter .../>...``.

    Raises:
        ValueError: not XML, or no ``<Connect><Stream url>`` in it.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"the voice webhook did not answer with TwiML: {exc}") from exc
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ValueError("the voice webhook's TwiML has no <Connect><Stream url=...>")
    params = {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}
    return ConnectStream(stream.get("url", ""), params)


async def answer_call(
    voice_url: str,
    auth_token: str,
    *,
    call_sid: str,
    account_sid: str,
    caller: str,
    to: str,
    timeout_s: float = 10.0,
) -> ConnectStream:
    """POST a signed voice request to ``voice_url`` and read the stream it connects to.

    Raises:
        ValueError: the webhook refused the call (status and its ``detail``), or
            did not answer with ``<Connect><Stream>``.
        httpx.HTTPError: the webhook could not be reached.
    """
    form, headers = voice_request(
        voice_url, auth_token, call_sid=call_sid, account_sid=account_sid, caller=caller, to=to
    )
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        response = await http.post(voice_url, data=form, headers=headers)
    if response.status_code != 200:
        raise ValueError(
            f"the voice webhook refused the call ({response.status_code}): {response.text[:200]}"
        )
    return parse_connect_twiml(response.text)

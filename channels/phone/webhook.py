"""Twilio voice webhook: ``POST /twilio/voice/{client_id}`` answers an incoming call
with TwiML that connects it to the gateway's Media Streams websocket.

Contract: DESIGN.md, "Public interface". Twilio POSTs its voice request
parameters (``application/x-www-form-urlencoded``: ``CallSid``, ``AccountSid``,
``From``, ``To``...) when a call reaches the client's number; the answer is::

    <?xml version="1.0" encoding="UTF-8"?>
    <Response><Connect><Stream url="wss://gw.example.com/twilio/media/spa-del-sol">
      <Parameter name="caller" value="+14155550123"/>
      <Parameter name="call_sid" value="CA..."/>
      <Parameter name="to" value="+14155550199"/>
      <Parameter name="token" value="v1.1764430000.Xq3..."/>
    </Stream></Connect></Response>

Twilio hands the ``<Parameter>`` values to the websocket in the Media Streams
``start`` message (``start.customParameters``); their names are
:data:`STREAM_PARAMETERS`. ``caller`` is left out when the caller ID is withheld
(``From`` is not an E.164 number). ``token`` is a one-time stream token bound to
the client and the CallSid, good for :data:`~channels.phone.admission.TOKEN_TTL_S`
seconds: the media stream drives a call only with it
(:mod:`channels.phone.admission`).

Checks, in order, and what each refusal answers (JSON ``{"detail": reason}``;
every refusal is logged with the client id and the reason, never a phone number):

=====  ==================================================================
404    no client ``client_id`` is loaded
503    the phone channel is off for the client: ``channels.phone.enabled``
       is false, or ``channels.phone.twilio.auth_token`` is unset (its
       ``${ENV_VAR}`` was not set). Without the token no signature can be
       checked, and the gateway never accepts an unsigned call; 503 (not
       403) because nothing is wrong with the request: the gateway is not
       set up to take it. Twilio then tries the number's fallback URL, if
       the agency configured one.
413    the body is larger than :data:`MAX_BODY_BYTES`
400    the body is not ``application/x-www-form-urlencoded`` UTF-8
403    ``X-Twilio-Signature`` is missing or does not match
400    a correctly signed request lacks ``CallSid``, ``AccountSid`` or ``To``
=====  ==================================================================

Capacity (:mod:`channels.phone.capacity`): a signed call is admitted only while
this replica has a free line (``GATEWAY_PHONE_MAX_CALLS``); the webhook
reserves it until the media stream starts. Beyond that the answer is still 200
TwiML, so the caller hears why (:func:`busy_twiml`)::

    <Response><Say>Thanks for calling Spa del Sol. All our lines are busy right now;
      please call again in a few minutes.</Say><Hangup/></Response>

or, when the client has ``escalation.phone_transfer_number``::

    <Response><Say>All our lines are busy; let me transfer you.</Say>
      <Dial>+14155550100</Dial></Response>

counted in ``gateway_phone_calls_refused_total{reason="busy"}`` and as the
webhook outcome ``busy``. The signature is checked first: a forged request
gets its 403 whether or not there is a free line.

Signature (Twilio, "Webhooks security"): HMAC-SHA1 keyed with the account's
auth token over the full URL Twilio requested followed by the sorted POST
parameters, checked with the SDK's :class:`~twilio.request_validator.RequestValidator`.
The URL must be the one *Twilio* used. Behind a reverse proxy or tunnel that
terminates TLS or rewrites the host, the request reaches the gateway as, say,
``http://10.0.0.5:8080/twilio/voice/x`` while Twilio signed
``https://gw.example.com/twilio/voice/x``; so when ``GATEWAY_PUBLIC_URL`` is set
the URL is ``public_url + request path (+ "?" + query)``, and otherwise the
request's own URL. ``X-Forwarded-*`` headers are not trusted for this: anyone
can send them. The same public URL gives the stream URL: ``wss://`` for an
``https`` public URL, ``ws://`` for ``http`` (local tests only: Twilio connects
to ``wss://`` streams only).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from channels.phone.admission import TOKEN_PARAMETER, mint_stream_token, unix_now
from channels.phone.deps import PhoneSettings, VoiceDeps
from engine.config import ClientConfig

__all__ = [
    "MAX_BODY_BYTES",
    "STREAM_PARAMETERS",
    "IncomingCall",
    "PhoneSettings",
    "WebhookFormatError",
    "busy_twiml",
    "connect_twiml",
    "media_stream_url",
    "parse_form",
    "parse_incoming_call",
    "signed_url",
    "voice_router",
]

log = logging.getLogger("channels.phone.webhook")

MAX_BODY_BYTES = 64 * 1024
"""Largest accepted webhook body, in bytes (Twilio's voice requests are ~1 KiB)."""

STREAM_PARAMETERS = ("caller", "call_sid", "to", TOKEN_PARAMETER)
"""Names of the ``<Parameter>`` elements sent to the media stream's ``start`` message."""

SIGNATURE_HEADER = "X-Twilio-Signature"

PHONE_WEBHOOKS = Counter(
    "gateway_phone_webhooks_total",
    "Twilio voice webhooks by outcome (accepted, busy, unknown_client, channel_off, "
    "bad_request, bad_signature, too_large)",
    ["outcome"],
)

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


# --- codec: the only place that knows Twilio's voice-request field names -------------


class WebhookFormatError(ValueError):
    """The webhook body is not a Twilio voice request; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IncomingCall:
    """A call reaching a client's number, from Twilio's voice request.

    ``from_number`` is the caller's E.164 number, or None when the caller ID is
    withheld (Twilio then sends a placeholder such as ``anonymous``).
    ``to_number`` is the client's Twilio number that was called.
    """

    call_sid: str
    from_number: str | None
    to_number: str
    account_sid: str


def parse_form(body: bytes) -> ImmutableMultiDict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` UTF-8 body, keeping repeated keys.

    Raises :class:`WebhookFormatError` for bytes that are not UTF-8 or fields
    without ``=``.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookFormatError(
            "body is not application/x-www-form-urlencoded UTF-8 "
            f"({type(exc).__name__}); Twilio voice webhooks send form fields"
        ) from exc
    return ImmutableMultiDict(pairs)


def parse_incoming_call(form: Mapping[str, str]) -> IncomingCall:
    """Read Twilio's voice request fields (``CallSid``, ``AccountSid``, ``From``, ``To``).

    Raises :class:`WebhookFormatError` naming the first missing field.
    """
    for name in ("CallSid", "AccountSid", "To"):
        if not form.get(name):
            raise WebhookFormatError(f"missing field {name!r}: not a Twilio voice request")
    caller = form.get("From", "")
    return IncomingCall(
        call_sid=form["CallSid"],
        from_number=caller if _E164.match(caller) else None,
        to_number=form["To"],
        account_sid=form["AccountSid"],
    )


def media_stream_url(public_base: str, client_id: str) -> str:
    """``wss://host[/prefix]/twilio/media/{client_id}`` (``ws://`` for an http base)."""
    parts = urlsplit(public_base)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    path = f"{parts.path.rstrip('/')}/twilio/media/{client_id}"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def connect_twiml(call: IncomingCall, stream_url: str, stream_token: str) -> str:
    """TwiML ``<Connect><Stream>`` (bidirectional) carrying the call's :data:`STREAM_PARAMETERS`
    (``stream_token`` from :func:`~channels.phone.admission.mint_stream_token`)."""
    response = VoiceResponse()
    stream = response.connect().stream(url=stream_url)
    if call.from_number is not None:
        stream.parameter(name="caller", value=call.from_number)
    stream.parameter(name="call_sid", value=call.call_sid)
    stream.parameter(name="to", value=call.to_number)
    stream.parameter(name=TOKEN_PARAMETER, value=stream_token)
    return str(response.to_xml())


BUSY_LINE = (
    "Thanks for calling {business}. All our lines are busy right now; "
    "please call again in a few minutes."
)
BUSY_TRANSFER_LINE = "All our lines are busy; let me transfer you."


def busy_twiml(business_name: str, transfer_to: str | None) -> str:
    """TwiML for a call this replica has no line for: a transfer to ``transfer_to``
    (E.164) when given, else a polite line and a hang-up."""
    response = VoiceResponse()
    if transfer_to:
        response.say(BUSY_TRANSFER_LINE)
        response.dial(transfer_to)
    else:
        response.say(BUSY_LINE.format(business=business_name))
        response.hangup()
    return str(response.to_xml())


# --- transport ---------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.outcome, self.reason = status, outcome, reason


def voice_router(deps: Callable[[], VoiceDeps]) -> APIRouter:
    """``POST /twilio/voice/{client_id}``; ``deps`` returns the loaded clients and
    the phone settings once the gateway is serving."""
    router = APIRouter()

    @router.post("/twilio/voice/{client_id}", response_class=Response)
    async def twilio_voice(client_id: str, request: Request) -> Response:
        try:
            twiml, outcome = await _answer(client_id, request, deps())
        except _Refused as refused:
            PHONE_WEBHOOKS.labels(refused.outcome).inc()
            log.warning(
                "twilio voice webhook refused (%d): client=%s reason=%s",
                refused.status,
                client_id[:64],
                refused.reason,
            )
            return JSONResponse({"detail": refused.reason}, status_code=refused.status)
        PHONE_WEBHOOKS.labels(outcome).inc()
        return Response(twiml, media_type="application/xml")

    return router


async def _answer(client_id: str, request: Request, deps: VoiceDeps) -> tuple[str, str]:
    """The TwiML for a signed call and the outcome (``accepted`` or ``busy``)."""
    settings = deps.settings
    client = deps.registry.get(client_id)
    if client is None:
        raise _Refused(404, "unknown_client", f"unknown client {client_id[:64]!r}")
    token = _auth_token(client)
    body = await _read_body(request)
    try:
        form = parse_form(body)
    except WebhookFormatError as exc:
        raise _Refused(400, "bad_request", exc.reason) from exc
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature:
        raise _Refused(403, "bad_signature", f"missing {SIGNATURE_HEADER} header")
    url = signed_url(request, settings.public_url)
    if not RequestValidator(token).validate(url, form, signature):
        hint = "" if settings.public_url else "; behind a proxy, set GATEWAY_PUBLIC_URL"
        raise _Refused(
            403,
            "bad_signature",
            f"{SIGNATURE_HEADER} does not match this client's auth token for {url}{hint}",
        )
    try:
        call = parse_incoming_call(form)
    except WebhookFormatError as exc:
        raise _Refused(400, "bad_request", exc.reason) from exc
    configured = client.channels.phone.twilio.account_sid
    if configured and configured != call.account_sid:
        log.warning(
            "twilio voice webhook: client=%s call=%s comes from another Twilio account than "
            "channels.phone.twilio.account_sid; transfers and hang-ups will fail",
            client_id,
            call.call_sid,
        )
    if deps.lines is not None and not deps.lines.admit(call.call_sid):
        return _busy(client, call), "busy"
    log.info("incoming call: client=%s call=%s", client_id, call.call_sid)
    base = settings.public_url or str(request.base_url)
    stream_token = mint_stream_token(token, client_id, call.call_sid, now_s=unix_now())
    return connect_twiml(call, media_stream_url(base, client_id), stream_token), "accepted"


def _busy(client: ClientConfig, call: IncomingCall) -> str:
    transfer_to = client.escalation.phone_transfer_number
    if transfer_to and not _E164.match(transfer_to):
        log.warning(
            "client=%s: escalation.phone_transfer_number is not E.164; a busy call hangs up",
            client.client_id,
        )
        transfer_to = None
    log.warning(
        "all phone lines busy: client=%s call=%s refused (%s)",
        client.client_id,
        call.call_sid,
        "transferred" if transfer_to else "hung up",
    )
    return busy_twiml(client.name, transfer_to)


def _auth_token(client: ClientConfig) -> str:
    phone = client.channels.phone
    if not phone.enabled:
        raise _Refused(
            503, "channel_off", "the phone channel is off for this client (channels.phone.enabled)"
        )
    token = phone.twilio.auth_token
    if not token:
        raise _Refused(
            503,
            "channel_off",
            "the phone channel is off for this client: channels.phone.twilio.auth_token is "
            "unset (its environment variable is not set), so Twilio signatures cannot be checked",
        )
    return token


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _Refused(413, "too_large", f"body is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def signed_url(request: Request, public_url: str | None) -> str:
    """The URL Twilio signed: ``public_url`` + path (+ query), or the request's own URL."""
    if public_url is None:
        return str(request.url)
    url = public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url

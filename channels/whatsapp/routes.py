"""The messaging webhooks: WhatsApp through Twilio or Meta, SMS through Twilio.

::

    POST /twilio/whatsapp/{client_id}   Twilio incoming WhatsApp message (form)
    POST /twilio/sms/{client_id}        Twilio incoming SMS (form)
    POST /twilio/status/{client_id}     Twilio status callback of a message we sent
    GET  /meta/whatsapp/{client_id}     Meta webhook verification (hub.*)
    POST /meta/whatsapp/{client_id}     Meta Cloud API webhook (JSON)

Each POST, in order: the client must exist (404) and have the channel's
secret (503 and one log line naming the key: nothing can be checked); the
signature must hold (``X-Twilio-Signature`` over ``GATEWAY_PUBLIC_URL`` + the
path and query; ``X-Hub-Signature-256`` over the raw body) or it is 403 and
nothing is processed; the body must parse (400 where the sender is at fault:
a form without ``MessageSid``, JSON that is not JSON; 413 over
:data:`MAX_BODY_BYTES`). Then every message is recorded in the inbox
(durable, deduplicated) and the webhook answers at once — empty TwiML for
Twilio, ``200`` for Meta — well inside Twilio's 15 s and before Meta retries.
The turn runs in the background (:mod:`channels.whatsapp.worker`).
Statuses update the sent message's record. Unknown message types are
recorded and answered politely; never a 500 that makes the provider retry
forever (a store outage is the one 503: retrying then is right).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Query, Request, Response

from channels.whatsapp.inbox import Inbox
from channels.whatsapp.meta_codec import parse_meta
from channels.whatsapp.models import InboundMessage, StatusUpdate
from channels.whatsapp.signatures import valid_meta, valid_twilio
from channels.whatsapp.statuses import record_status
from channels.whatsapp.twilio_codec import CodecError, parse_twilio
from engine.config import ClientConfig, ClientRegistry
from engine.db.database import Database
from engine.errors import StoreError

__all__ = ["MAX_BODY_BYTES", "MessagingDeps", "messaging_router"]

log = logging.getLogger("channels.whatsapp.routes")

MAX_BODY_BYTES = 1 << 20
"""Webhook bodies above this are refused (413): no real message is this big."""

_TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _twiml() -> Response:
    return Response(_TWIML_EMPTY, media_type="text/xml")


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, "body too large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, "body too large")
    return body


@dataclass(frozen=True, slots=True)
class MessagingDeps:
    """What the WhatsApp/SMS webhooks need, built by the gateway when it serves."""

    registry: ClientRegistry
    db: Database
    """Where status callbacks are recorded (:func:`channels.whatsapp.statuses.record_status`)."""
    inbox: Inbox
    """Where inbound messages are recorded, durable and deduplicated."""
    public_url: str | None
    """``GATEWAY_PUBLIC_URL``: the base of the URL Twilio signs."""


def _public_url(gw: MessagingDeps, request: Request) -> str:
    """The URL Twilio signed: ``GATEWAY_PUBLIC_URL`` + path (+ query), else the
    URL as this server saw it (behind no proxy)."""
    base = gw.public_url
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if base:
        return base.rstrip("/") + path
    return str(request.url)


def messaging_router(gateway: Callable[[], MessagingDeps]) -> APIRouter:
    """The Twilio (WhatsApp, SMS, status) and Meta (WhatsApp) webhooks; ``gateway``
    gives the deps while serving."""
    router = APIRouter()

    def client_of(gw: MessagingDeps, client_id: str) -> ClientConfig:
        client = gw.registry.get(client_id)
        if client is None:
            raise HTTPException(404, f"unknown client {client_id!r}")
        return client

    async def record(gw: MessagingDeps, message: InboundMessage | StatusUpdate) -> None:
        try:
            if isinstance(message, StatusUpdate):
                await record_status(gw.db, message)
            else:
                await gw.inbox.record(message)
        except StoreError as exc:
            # Not durable: the provider must retry, so this is the one 5xx.
            log.error("messaging: could not record a webhook: %s", type(exc).__name__)
            raise HTTPException(503, "try again") from None

    async def twilio_webhook(
        request: Request, client_id: str, channel: Literal["whatsapp", "sms"] | None
    ) -> Response:
        """``channel`` None: a status callback, for either channel (told by the
        ``whatsapp:`` prefix of its numbers)."""
        gw = gateway()
        client = client_of(gw, client_id)
        body = await _body(request)
        try:
            form: Mapping[str, str] = dict(
                parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            )
        except UnicodeDecodeError:
            raise HTTPException(400, "the form is not UTF-8") from None
        status = channel is None
        if channel is None:
            numbers = form.get("From", "") + form.get("To", "")
            channel = "whatsapp" if "whatsapp:" in numbers else "sms"
        creds, key = client.channels.twilio_for(channel)
        if creds is None or not creds.auth_token:
            log.error(
                "messaging: %s has no %s.auth_token: Twilio webhooks cannot be checked",
                client_id,
                key,
            )
            raise HTTPException(503, "this client's Twilio credentials are not configured")
        signature = request.headers.get("x-twilio-signature")
        if not valid_twilio(creds.auth_token, _public_url(gw, request), form, signature):
            log.warning("messaging: %s: a Twilio webhook with a bad signature", client_id)
            raise HTTPException(403, "invalid signature")
        now = gw.inbox.clock()
        try:
            message = parse_twilio(form, client_id, channel, now=now)
        except CodecError as exc:
            raise HTTPException(400, f"malformed webhook: {exc.reason}") from None
        if status and not isinstance(message, StatusUpdate):
            raise HTTPException(400, "not a status callback")
        await record(gw, message)
        return _twiml()

    @router.post("/twilio/whatsapp/{client_id}")
    async def twilio_whatsapp(request: Request, client_id: str) -> Response:
        return await twilio_webhook(request, client_id, "whatsapp")

    @router.post("/twilio/sms/{client_id}")
    async def twilio_sms(request: Request, client_id: str) -> Response:
        return await twilio_webhook(request, client_id, "sms")

    @router.post("/twilio/status/{client_id}")
    async def twilio_status(request: Request, client_id: str) -> Response:
        return await twilio_webhook(request, client_id, None)

    @router.get("/meta/whatsapp/{client_id}")
    async def meta_verify(
        client_id: str,
        mode: str | None = Query(None, alias="hub.mode"),
        token: str | None = Query(None, alias="hub.verify_token"),
        challenge: str | None = Query(None, alias="hub.challenge"),
    ) -> Response:
        gw = gateway()
        meta = client_of(gw, client_id).channels.whatsapp.meta
        if meta is None or not meta.verify_token:
            log.error("messaging: %s has no channels.whatsapp.meta.verify_token", client_id)
            raise HTTPException(503, "this client's Meta verify token is not configured")
        if mode != "subscribe" or token is None or not _same(token, meta.verify_token):
            raise HTTPException(403, "verification failed")
        return Response(challenge or "", media_type="text/plain")

    @router.post("/meta/whatsapp/{client_id}")
    async def meta_webhook(request: Request, client_id: str) -> Response:
        gw = gateway()
        meta = client_of(gw, client_id).channels.whatsapp.meta
        if meta is None or not meta.app_secret:
            log.error("messaging: %s has no channels.whatsapp.meta.app_secret", client_id)
            raise HTTPException(503, "this client's Meta app secret is not configured")
        body = await _body(request)
        if not valid_meta(meta.app_secret, body, request.headers.get("x-hub-signature-256")):
            log.warning("messaging: %s: a Meta webhook with a bad signature", client_id)
            raise HTTPException(403, "invalid signature")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(payload, dict):
            raise HTTPException(400, "the body is not a JSON object")
        try:
            messages, statuses = parse_meta(payload, client_id)
        except CodecError as exc:
            raise HTTPException(400, f"malformed webhook: {exc.reason}") from None
        for message in messages:
            await record(gw, message)
        for update in statuses:
            await record(gw, update)
        return Response("ok", media_type="text/plain")

    return router


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

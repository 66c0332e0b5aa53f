"""Local stand-ins for Twilio's Messages API and Meta's Graph (WhatsApp Cloud) API,
speaking their documented wire formats, each on ``127.0.0.1`` and a free port in
a background thread (test-only).

:class:`TwilioMessagingStub` (``accounts``: Account SID -> auth token)::

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json     basic auth, form
        201 the Message resource: {"sid": "SM<32 hex>", "status": "queued", "to",
            "from", "body", "account_sid", "uri", ...}
        400 Twilio error 21604 (no To), 21603 (no From/MessagingServiceSid),
            21602 (no Body/ContentSid/MediaUrl)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{MM}/Media/{ME}   basic auth
        200 the bytes (:meth:`TwilioMessagingStub.add_media`; with
            ``redirect=True`` a 307 to an unauthenticated CDN path first, as
            Twilio does)
    401 Twilio error 20003 for missing/wrong credentials; 404 error 20404.

:class:`MetaGraphStub` (``tokens``: the access tokens it accepts)::

    POST /v{N}/{phone_number_id}/messages    Authorization: Bearer, JSON
        200 {"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}],
            "messages": [{"id": "wamid.<...>"}]}; a read receipt
            ({"status": "read", "message_id"}) gets {"success": true}
        400 error 131047 ("Re-engagement message") for a non-template message to
            a number in :attr:`MetaGraphStub.closed_windows`; 100 for a body
            without ``messaging_product: whatsapp``
    GET  /v{N}/{media_id}                    Bearer
        200 {"messaging_product", "url", "mime_type", "sha256", "file_size", "id"}
    GET  /media-download/{media_id}          Bearer (the same token)
        200 the bytes
    401 error 190 for a missing or unknown token.

Error bodies have each vendor's shape (Twilio ``{"code", "message",
"more_info", "status"}``; Meta ``{"error": {"message", "type", "code",
"error_subcode", "fbtrace_id"}}``). Both stubs record every request
(:attr:`requests`, failed ones too) and answer a script first:
``pass_next(n)`` lets ``n`` requests through, ``fail_next(status, code=...,
retry_after=...)`` fails the next ones, in the order scripted, whatever their path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stub_server import StubServer

__all__ = ["MetaGraphStub", "RecordedRequest", "ScriptedFailure", "TwilioMessagingStub"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as a stub received it. ``form`` keeps repeated keys; ``json``
    is the parsed JSON body (None otherwise); ``auth`` the basic-auth pair and
    ``bearer`` the bearer token, when sent."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    json: Any
    auth: tuple[str, str] | None
    bearer: str | None

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class ScriptedFailure:
    status: int
    code: int | None = None
    message: str = "Internal Server Error"
    retry_after: str | None = None
    raw_body: bytes | None = None


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, json.dumps(body).encode(), headers=headers or {})


class _Stub(StubServer):
    """A threaded HTTP server that records requests and answers a script first."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RecordedRequest] = []
        self._script: deque[ScriptedFailure | None] = deque()
        self._lock = threading.Lock()

    def pass_next(self, times: int = 1) -> None:
        """Let the next ``times`` requests through (before the failures scripted after)."""
        with self._lock:
            self._script.extend([None] * times)

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        code: int | None = None,
        message: str = "Internal Server Error",
        retry_after: str | None = None,
        raw_body: bytes | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and the vendor's error
        body carrying ``code`` (default: the status), or ``raw_body`` as text/html."""
        with self._lock:
            for _ in range(times):
                self._script.append(ScriptedFailure(status, code, message, retry_after, raw_body))

    # -- server thread ---------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type", "")
        form: dict[str, list[str]] = {}
        body: Any = None
        if raw and "json" in content_type:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        elif raw:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        header = handler.headers.get("Authorization") or ""
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        request = RecordedRequest(
            method, handler.path, dict(handler.headers.items()), form, body, _basic(header), bearer
        )
        with self._lock:
            self.requests.append(request)
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
            if scripted.raw_body is not None:
                answer = _Answer(scripted.status, scripted.raw_body, "text/html", headers)
            else:
                answer = self._error(scripted, headers)
        else:
            answer = self._answer(request)
        handler.send_response(answer.status)
        handler.send_header("Content-Type", answer.content_type)
        handler.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(answer.body)

    def _error(self, failure: ScriptedFailure, headers: dict[str, str]) -> _Answer:
        raise NotImplementedError

    def _answer(self, request: RecordedRequest) -> _Answer:
        raise NotImplementedError


def _basic(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except ValueError:
        return None
    return user, password


# -- Twilio --------------------------------------------------------------------------------

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_MEDIA = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)/Media/([^/]+)$")
_CDN = re.compile(r"^/twilio-cdn/([^/]+)$")


@dataclass(frozen=True)
class TwilioMessage:
    """A message the stub accepted: its ``sid`` and the form it was created with."""

    sid: str
    account_sid: str
    form: dict[str, str]


class TwilioMessagingStub(_Stub):
    """Twilio's Messages API; ``accounts`` maps Account SID -> auth token."""

    def __init__(self, accounts: dict[str, str]) -> None:
        super().__init__()
        self.accounts = accounts
        self.messages: list[TwilioMessage] = []
        self._media: dict[str, tuple[bytes, str, bool]] = {}

    def add_media(
        self,
        data: bytes,
        content_type: str,
        *,
        account_sid: str,
        message_sid: str | None = None,
        redirect: bool = False,
    ) -> str:
        """Serve ``data`` at a Twilio media URL (basic auth of ``account_sid``),
        the ``MediaUrl0`` of an inbound message; returns that URL. ``redirect``:
        answer 307 to an unauthenticated CDN path, as Twilio does."""
        media_sid = "ME" + secrets.token_hex(16)
        message_sid = message_sid or "MM" + secrets.token_hex(16)
        with self._lock:
            self._media[media_sid] = (data, content_type, redirect)
        return (
            f"{self.url}/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}/Media/{media_sid}"
        )

    def _error(self, failure: ScriptedFailure, headers: dict[str, str]) -> _Answer:
        return _twilio_error(
            failure.status, failure.code or failure.status, failure.message, headers
        )

    def _answer(self, request: RecordedRequest) -> _Answer:
        path = urlsplit(request.path).path
        cdn = _CDN.match(path)
        if cdn is not None and request.method == "GET":
            with self._lock:
                found = self._media.get(cdn.group(1))
            if found is None:
                return _twilio_error(404, 20404, f"The requested resource {path} was not found")
            return _Answer(200, found[0], found[1])
        auth = request.auth
        if auth is None or self.accounts.get(auth[0]) != auth[1]:
            return _twilio_error(
                401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        messages, media = _MESSAGES.match(path), _MEDIA.match(path)
        matched = messages or media
        account = matched.group(1) if matched is not None else None
        if account is not None and account != auth[0]:
            return _twilio_error(401, 20003, "Authenticate")
        if media is not None and request.method == "GET":
            return self._media_answer(media.group(3), path)
        if messages is None or request.method != "POST":
            return _twilio_error(404, 20404, f"The requested resource {path} was not found")
        form = {k: v[0] for k, v in request.form.items() if v}
        if not form.get("To"):
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _twilio_error(400, 21603, "A 'From' phone number is required.")
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return _twilio_error(400, 21602, "Message body is required.")
        sid = "SM" + secrets.token_hex(16)
        with self._lock:
            self.messages.append(TwilioMessage(sid, auth[0], form))
        return _json(
            201,
            {
                "sid": sid,
                "account_sid": auth[0],
                "api_version": "2010-04-01",
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form.get("Body", ""),
                "status": "queued",
                "direction": "outbound-api",
                "num_segments": "1",
                "num_media": "0",
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{auth[0]}/Messages/{sid}.json",
            },
        )

    def _media_answer(self, media_sid: str, path: str) -> _Answer:
        with self._lock:
            found = self._media.get(media_sid)
        if found is None:
            return _twilio_error(404, 20404, f"The requested resource {path} was not found")
        data, content_type, redirect = found
        if redirect:
            return _Answer(
                307, b"", "text/plain", {"Location": f"{self.url}/twilio-cdn/{media_sid}"}
            )
        return _Answer(200, data, content_type)


def _twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> _Answer:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return _json(status, body, headers)


# -- Meta ----------------------------------------------------------------------------------

_META_MESSAGES = re.compile(r"^/(v\d+\.\d+)/([^/]+)/messages$")
_META_MEDIA = re.compile(r"^/(v\d+\.\d+)/([^/]+)$")
_META_DOWNLOAD = re.compile(r"^/media-download/([^/]+)$")


@dataclass(frozen=True)
class MetaMessage:
    """A message the stub accepted: its ``wamid``, the phone-number id it was
    sent from and the JSON body."""

    wamid: str
    phone_number_id: str
    body: dict[str, Any]


class MetaGraphStub(_Stub):
    """Meta's Graph API for WhatsApp; ``tokens``: the access tokens it accepts."""

    def __init__(self, tokens: set[str] | frozenset[str]) -> None:
        super().__init__()
        self.tokens = set(tokens)
        self.messages: list[MetaMessage] = []
        self.reads: list[dict[str, Any]] = []
        self.closed_windows: set[str] = set()
        """Recipients (as sent in ``to``, with or without '+') outside the 24-hour
        window: free-form messages to them get error 131047."""
        self._media: dict[str, tuple[bytes, str]] = {}

    def add_media(self, data: bytes, mime_type: str) -> str:
        """Store ``data``; returns its media id (an inbound ``audio.id``)."""
        media_id = str(10**15 + secrets.randbelow(10**15))
        with self._lock:
            self._media[media_id] = (data, mime_type)
        return media_id

    def _error(self, failure: ScriptedFailure, headers: dict[str, str]) -> _Answer:
        return _meta_error(failure.status, failure.code or failure.status, failure.message, headers)

    def _answer(self, request: RecordedRequest) -> _Answer:
        if request.bearer is None or request.bearer not in self.tokens:
            return _meta_error(
                401, 190, "Error validating access token: the session is invalid.", {}
            )
        path = urlsplit(request.path).path
        send, media, download = (
            _META_MESSAGES.match(path),
            _META_MEDIA.match(path),
            _META_DOWNLOAD.match(path),
        )
        if send is not None and request.method == "POST":
            return self._send(send.group(2), request.json)
        if media is not None and request.method == "GET":
            with self._lock:
                found = self._media.get(media.group(2))
            if found is None:
                return _meta_error(400, 100, "Unsupported get request.", {})
            data, mime = found
            return _json(
                200,
                {
                    "messaging_product": "whatsapp",
                    "url": f"{self.url}/media-download/{media.group(2)}",
                    "mime_type": mime,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "file_size": len(data),
                    "id": media.group(2),
                },
            )
        if download is not None and request.method == "GET":
            with self._lock:
                found = self._media.get(download.group(1))
            if found is None:
                return _Answer(404, b"not found", "text/plain")
            return _Answer(200, found[0], found[1])
        return _meta_error(400, 100, f"Unknown path components: {path}", {})

    def _send(self, phone_number_id: str, body: Any) -> _Answer:
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return _meta_error(400, 100, "(#100) The parameter messaging_product is required.", {})
        if body.get("status") == "read":
            with self._lock:
                self.reads.append(body)
            return _json(200, {"success": True})
        to = str(body.get("to") or "")
        if not to:
            return _meta_error(400, 100, "(#100) The parameter to is required.", {})
        closed = {n.lstrip("+") for n in self.closed_windows}
        if to.lstrip("+") in closed and body.get("type") != "template":
            return _meta_error(400, 131047, "Re-engagement message", {})
        wamid = "wamid." + base64.b64encode(secrets.token_bytes(24)).decode()
        with self._lock:
            self.messages.append(MetaMessage(wamid, phone_number_id, body))
        return _json(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [{"id": wamid}],
            },
        )


def _meta_error(status: int, code: int, message: str, headers: dict[str, str]) -> _Answer:
    body = {
        "error": {
            "message": message if message.startswith("(#") else f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message},
            "error_subcode": 2494010,
            "fbtrace_id": "A" + secrets.token_hex(10),
        }
    }
    return _json(status, body, headers)

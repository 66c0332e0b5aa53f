"""A local stand-in for Twilio's REST API, speaking its wire format for call updates.

Serves, on ``127.0.0.1`` and a free port, in a background thread::

    POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json
    Authorization: Basic base64(AccountSid:AuthToken)
    Content-Type: application/x-www-form-urlencoded   (Twiml=..., Status=completed, Url=...)

- ``200`` with the Call resource as JSON (``sid``, ``account_sid``, ``status``,
  ``to``, ``from``, ``uri``...); ``Status=completed`` or ``canceled`` sets the
  status, a new ``Twiml``/``Url`` leaves the call ``in-progress``;
- ``401`` with Twilio's error body (code 20003) for missing or wrong credentials,
  or credentials of another account than the one in the path;
- ``404`` with Twilio's error body (code 20404) for an unknown call or path.

Error bodies have Twilio's shape: ``{"code", "message", "more_info", "status"}``.
:meth:`TwilioStub.fail_next` scripts failures (a ``500`` once, a ``429`` with
``Retry-After``...) answered before anything else. Every request is recorded in
:attr:`TwilioStub.requests`, failed ones too.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from stub_server import StubServer

__all__ = ["RecordedRequest", "ScriptedFailure", "TwilioStub"]

_CALL_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Calls/([^/]+)\.json$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stub received it. ``form`` keeps repeated keys."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    auth: tuple[str, str] | None

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


@dataclass
class ScriptedFailure:
    status: int
    code: int | None = None
    message: str = "Internal Server Error"
    retry_after: str | None = None
    raw_body: bytes | None = None


@dataclass
class _Call:
    sid: str
    account_sid: str
    status: str = "in-progress"
    to: str = "+14155550199"
    from_: str = "+14155550123"


@dataclass
class TwilioStub(StubServer):
    """``accounts`` maps Account SID -> auth token; :meth:`add_call` registers live calls."""

    accounts: dict[str, str]
    requests: list[RecordedRequest] = field(default_factory=list)
    _calls: dict[str, _Call] = field(default_factory=dict)
    _failures: deque[ScriptedFailure] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def add_call(self, call_sid: str, account_sid: str, status: str = "in-progress") -> None:
        with self._lock:
            self._calls[call_sid] = _Call(call_sid, account_sid, status)

    def call_status(self, call_sid: str) -> str:
        with self._lock:
            return self._calls[call_sid].status

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
        """Answer the next ``times`` requests with ``status`` (a Twilio error body,
        or ``raw_body`` as ``text/html`` when given)."""
        with self._lock:
            for _ in range(times):
                self._failures.append(ScriptedFailure(status, code, message, retry_after, raw_body))

    # --- request handling (server thread) -------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True) if raw else {}
        auth = _basic_auth(handler.headers.get("Authorization"))
        path = handler.path
        with self._lock:
            self.requests.append(
                RecordedRequest(method, path, dict(handler.headers.items()), form, auth)
            )
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            if failure.raw_body is not None:
                _send(handler, failure.status, failure.raw_body, "text/html", headers)
            else:
                _send_error(
                    handler,
                    failure.status,
                    failure.code or failure.status,
                    failure.message,
                    headers,
                )
            return

        match = _CALL_PATH.match(path.split("?", 1)[0])
        if auth is None or self.accounts.get(auth[0]) != auth[1]:
            _send_unauthenticated(handler)
            return
        if match is None or method != "POST":
            _send_not_found(handler, path)
            return
        account_sid = match.group(1)
        if auth[0] != account_sid:
            _send_unauthenticated(handler)
            return
        call_sid = match.group(2)
        with self._lock:
            call = self._calls.get(call_sid)
            if call is None or call.account_sid != account_sid:
                call = None
            else:
                status = next(iter(form.get("Status", [])), None)
                if status in ("completed", "canceled"):
                    call.status = status
                body = _call_json(call)
        if call is None:
            _send_not_found(handler, path)
            return
        _send(handler, 200, json.dumps(body).encode(), "application/json; charset=utf-8")


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except ValueError:
        return None
    return user, password


def _call_json(call: _Call) -> dict[str, Any]:
    return {
        "sid": call.sid,
        "account_sid": call.account_sid,
        "api_version": "2010-04-01",
        "direction": "inbound",
        "from": call.from_,
        "to": call.to,
        "status": call.status,
        "uri": f"/2010-04-01/Accounts/{call.account_sid}/Calls/{call.sid}.json",
    }


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _send_error(
    handler: BaseHTTPRequestHandler,
    status: int,
    code: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    _send(handler, status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)


def _send_unauthenticated(handler: BaseHTTPRequestHandler) -> None:
    _send_error(
        handler, 401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
    )


def _send_not_found(handler: BaseHTTPRequestHandler, path: str) -> None:
    _send_error(handler, 404, 20404, f"The requested resource {path} was not found")

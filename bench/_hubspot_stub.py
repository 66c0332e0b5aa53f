"""A HubSpot CRM v3 stand-in for ``bench.integrations``: a threaded ``http.server``
on a free loopback port, in the bench's own process.

Speaks what ``providers/crm/hubspot.py`` sends for a lead with an email:
``POST /crm/v3/objects/contacts/batch/upsert`` (``idProperty: email``) with
``Authorization: Bearer <token>``, answering ``200`` ``{"status": "COMPLETE",
"results": [...]}`` and keeping one contact per email; ``GET
/crm/v3/objects/contacts`` answers the gateway's integration check. Errors
are HubSpot's shape (``{"status": "error", "message", "correlationId",
"category"}``).

Modes: ``down = True`` answers ``503`` to everything; ``limit`` (requests,
window in s), e.g. ``(10, 1.0)``, answers ``429`` (category ``RATE_LIMITS``,
``Retry-After``) to a request when ``limit[0]`` requests already arrived in the
last ``limit[1]`` seconds (a sliding window; HubSpot's documented burst limit
for Free/Starter private apps is 100 per 10 s, its old "secondly" limit 10/s).

Every accepted upsert input is recorded with the epoch time it arrived
(``accepted``), and every answer's status is counted (``statuses``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["Accepted", "HubspotStub"]

UPSERT = "/crm/v3/objects/contacts/batch/upsert"
CONTACTS = "/crm/v3/objects/contacts"


@dataclass(frozen=True, slots=True)
class Accepted:
    """One upsert input the stub accepted: the contact's email, its properties,
    the bearer token it came with and when it arrived (epoch seconds)."""

    email: str
    properties: dict[str, str]
    authorization: str
    at: float


class HubspotStub:
    def __init__(self, token: str, *, limit: tuple[int, float] | None = None) -> None:
        self.token = token
        self.limit = limit
        self.down = False
        self.lock = threading.Lock()
        self.accepted: list[Accepted] = []
        self.statuses: Counter[int] = Counter()
        self.contacts: dict[str, dict[str, Any]] = {}  # email -> {"id", "properties"}
        self._arrivals: deque[float] = deque()  # monotonic times, for the limit
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stub first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reset_counts(self) -> None:
        with self.lock:
            self.statuses.clear()

    # -- serving ------------------------------------------------------------------------
    def start(self) -> Self:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as HubSpot's HTTPS endpoint
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        arrived = time.time()
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0]
        auth = handler.headers.get("Authorization") or ""
        with self.lock:
            status, body, headers = self._answer(method, path, auth, raw, arrived)
            self.statuses[status] += 1
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json;charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    # -- answers (under the lock) ---------------------------------------------------------
    def _answer(
        self, method: str, path: str, auth: str, raw: bytes, arrived: float
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.down:
            return _error(503, "INTERNAL_ERROR", "Service Unavailable")
        if self.limit is not None:
            count, window = self.limit
            now = time.monotonic()
            while self._arrivals and self._arrivals[0] <= now - window:
                self._arrivals.popleft()
            if len(self._arrivals) >= count:
                retry = max(1, int(self._arrivals[0] + window - now + 0.999))
                return _error(
                    429,
                    "RATE_LIMITS",
                    "You have reached your secondly limit.",
                    {"Retry-After": str(retry)},
                )
            self._arrivals.append(now)
        if auth != f"Bearer {self.token}":
            return _error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
        if method == "GET" and path == CONTACTS:
            return 200, {"results": list(self.contacts.values())[:1]}, {}
        if method != "POST" or path != UPSERT:
            return _error(404, "OBJECT_NOT_FOUND", "resource not found")
        try:
            inputs = json.loads(raw)["inputs"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "VALIDATION_ERROR", "Invalid input JSON")
        results = []
        for item in inputs:
            if item.get("idProperty") != "email" or not item.get("id"):
                return _error(400, "VALIDATION_ERROR", "idProperty must be email")
            email = str(item["id"])
            props = {str(k): str(v) for k, v in (item.get("properties") or {}).items()}
            contact = self.contacts.get(email)
            new = contact is None
            if contact is None:
                contact = {"id": str(1000 + len(self.contacts)), "properties": {}}
                self.contacts[email] = contact
            contact["properties"].update({**props, "email": email})
            self.accepted.append(Accepted(email, props, auth, arrived))
            results.append({**contact, "new": new})
        return 200, {"status": "COMPLETE", "results": results}, {}


def _error(
    status: int, category: str, message: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {
        "status": "error",
        "message": message,
        "correlationId": "00000000-bench-stub",
        "category": category,
    }
    return status, body, headers or {}

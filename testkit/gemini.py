"""A local stand-in for the Gemini REST API (test and benchmark use only).

:class:`GeminiStub` serves, on ``127.0.0.1`` and a free port, in a background
thread, the two ``generateContent`` endpoints of the Gemini API (wire format per
https://ai.google.dev/api/generate-content)::

    POST /v1beta/models/{model}:generateContent              -> one JSON GenerateContentResponse
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse -> text/event-stream,
         one ``data: {GenerateContentResponse}\\r\\n\\r\\n`` event per chunk (chunked encoding)

The API key is read from the ``x-goog-api-key`` header or the ``key`` query
parameter and checked as Google does: none -> ``403 PERMISSION_DENIED``; a wrong
one -> ``400 INVALID_ARGUMENT`` with an ``ErrorInfo`` detail of reason
``API_KEY_INVALID``. Error bodies have Google's shape
``{"error": {"code", "message", "status", "details"?}}``.

What each call answers is a *behaviour*: the next one queued with
:meth:`GeminiStub.enqueue`, else what ``responder(request_json)`` returns (a
dialogue script; None passes), else ``default``:

- :class:`Reply` — text streamed in ``chunks`` pieces (``first_delay_s`` before the
  first, ``delay_s`` between them: a fixed time to first token for benchmarks),
  function calls (``functionCall`` parts, on the last chunk), an optional
  ``thought`` part, any ``finish_reason`` (``SAFETY``...), and ``cut_after``: close
  the connection after that many chunks, without ending the body;
- :class:`HttpError` — a status (``429`` with ``Retry-After`` and/or a ``RetryInfo``
  ``retryDelay``, ``500``, ``503``...) with Google's error body;
- :class:`Hang` — say nothing for ``seconds`` (after the response headers on the
  streaming endpoint), then close the connection;
- :class:`Malformed` — a ``200`` whose body (or SSE event) is not valid JSON;
- :class:`Blocked` — ``promptFeedback.blockReason`` and no candidates.

Every answer carries ``usageMetadata`` (``promptTokenCount``,
``candidatesTokenCount``, ``totalTokenCount``; ``thoughtsTokenCount`` when set),
cumulative over a stream's chunks: counts are words of the request's and the
answer's text unless a :class:`Reply` sets them.

Every request is recorded (:attr:`GeminiStub.requests`): path, model, headers,
API key, parsed body, and how its answer ended — ``cut_by_client`` is True when
the client closed the connection before a streamed answer was complete (a
barge-in). The stub notices a client that went away while it waits, so a test of
that needs ``delay_s`` between chunks (or a :class:`Hang`).

Use ``with GeminiStub() as stub:`` from sync code or ``async with`` from asyncio
code; :attr:`GeminiStub.base_url` is what ``GEMINI_BASE_URL`` should be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from engine.llm.types import FunctionCall

__all__ = [
    "Behaviour",
    "Blocked",
    "GeminiStub",
    "Hang",
    "HttpError",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "json_reply",
]

_PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""HTTP status -> google.rpc.Code name (https://ai.google.dev/gemini-api/docs/troubleshooting)."""


# -- behaviours ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer.

    ``text`` is streamed in about ``chunks`` pieces (split between words; one
    chunk for the non-streaming endpoint); ``calls`` go in ``functionCall`` parts
    of the last chunk; ``thought`` (when set) is a ``thought: true`` part of the
    first chunk. ``first_delay_s``: seconds before the first chunk (time to first
    token); ``delay_s``: seconds between chunks. ``finish_reason``: the last
    chunk's ``finishReason`` (``STOP``, ``SAFETY``, ``MAX_TOKENS``...).
    ``prompt_tokens`` / ``output_tokens`` / ``thoughts_tokens``: usage to report
    (default: words of the request's text / of the answer; no thoughts).
    ``cut_after``: close the connection after this many chunks without ending
    the body (a connection lost mid-answer).
    """

    text: str = ""
    calls: tuple[FunctionCall, ...] = ()
    chunks: int = 3
    first_delay_s: float = 0.0
    delay_s: float = 0.0
    finish_reason: str = "STOP"
    thought: str = ""
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    thoughts_tokens: int | None = None
    cut_after: int | None = None

    def __post_init__(self) -> None:
        if self.chunks < 1:
            raise ValueError(f"chunks must be at least 1, got {self.chunks}")
        if self.first_delay_s < 0 or self.delay_s < 0:
            raise ValueError("first_delay_s and delay_s must be >= 0")


def json_reply(value: Mapping[str, Any], **options: Any) -> Reply:
    """A structured-output answer: ``value`` as JSON text (one chunk unless
    ``chunks`` says otherwise); ``options`` as for :class:`Reply`."""
    options.setdefault("chunks", 1)
    return Reply(text=json.dumps(value), **options)


@dataclass(frozen=True, slots=True)
class HttpError:
    """An error status with Google's error body.

    ``status``: the HTTP status; ``message`` and ``rpc_status`` (default: the
    google.rpc name of ``status``) go in the body. ``retry_after``: a
    ``Retry-After`` header value (seconds as text, or an HTTP date);
    ``retry_delay``: a ``google.rpc.RetryInfo`` detail's ``retryDelay``
    (``"3s"``), as Gemini sends with 429. ``first_delay_s``: seconds before
    answering."""

    status: int = 500
    message: str = "An internal error has occurred."
    rpc_status: str | None = None
    retry_after: str | None = None
    retry_delay: str | None = None
    first_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Hang:
    """Say nothing for ``seconds`` (the streaming endpoint sends its ``200``
    headers first, as Gemini does before the first token), then close the
    connection without an answer."""

    seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Malformed:
    """A ``200`` that is not a GenerateContentResponse: ``raw`` as the body, or
    as the data of one SSE event on the streaming endpoint. The default is
    truncated JSON."""

    raw: str = '{"candidates": [{"content": '


@dataclass(frozen=True, slots=True)
class Blocked:
    """The prompt was blocked: ``promptFeedback.blockReason`` = ``reason``
    (``SAFETY``, ``PROHIBITED_CONTENT``, ``BLOCKLIST``, ``OTHER``), no candidates."""

    reason: str = "SAFETY"


Behaviour = Reply | HttpError | Hang | Malformed | Blocked
Responder = Callable[[dict[str, Any]], Behaviour | None]


# -- records ------------------------------------------------------------------------------


@dataclass(eq=False)
class RecordedRequest:
    """One request as the stub received it (failed ones too).

    ``method``: ``generateContent`` or ``streamGenerateContent``; ``headers``:
    lower-cased names; ``body``: the parsed JSON (None when it was not JSON);
    ``api_key``: from ``x-goog-api-key`` or ``?key=``. ``completed``: the whole
    answer was sent; ``cut_by_client``: the client closed the connection first.
    Both are final once :meth:`wait` returns True.
    """

    method: str
    model: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any] | None
    api_key: str | None
    completed: bool = False
    cut_by_client: bool = False
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Block until the stub finished answering (seconds); False on timeout."""
        return self._done.wait(timeout_s)

    async def wait_async(self, timeout_s: float = 5.0) -> bool:
        """:meth:`wait` without blocking the event loop."""
        return await asyncio.to_thread(self._done.wait, timeout_s)


# -- the server ---------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], stub: GeminiStub) -> None:
        self.stub = stub
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client dropped a kept-alive connection: normal, not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as Google serves
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.stub._opened(self.connection)

    def finish(self) -> None:
        self.server.stub._closed(self.connection)
        with contextlib.suppress(OSError):  # the client is gone: nothing left to flush
            super().finish()

    def do_POST(self) -> None:
        self.server.stub._handle(self)

    def do_GET(self) -> None:
        _send_json(self, 404, _error_body(404, f"GET {self.path} is not served by the stub"))

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded; stderr stays quiet in tests


class _ClientGone(Exception):
    """The client closed the connection (or the stub is stopping)."""


class GeminiStub:
    """A Gemini REST server for tests and benchmarks (see the module docstring).

    ``api_key``: the key clients must send. ``default``: the behaviour when
    nothing is queued and ``responder`` passes (default: a short text reply).
    ``responder``: ``(request_json) -> Behaviour | None``, for scripted dialogues.
    """

    def __init__(
        self,
        api_key: str = "stub-key",
        *,
        default: Behaviour | None = None,
        responder: Responder | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        self.default: Behaviour = default or Reply("Hello from the Gemini stub.")
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no version: clients add ``/v1beta``)."""
        if self._server is None:
            raise RuntimeError("GeminiStub is not started: use start() or a with block")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> GeminiStub:
        """Bind a free port (no race: the OS picks it) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self._host, 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gemini-stub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: hanging answers end, open connections are closed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GeminiStub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> GeminiStub:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- scripting ------------------------------------------------------------------------

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Answer the next calls with ``behaviours``, one each, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Queued behaviours not used yet."""
        with self._lock:
            return len(self._queue)

    def _next(self, body: dict[str, Any]) -> Behaviour:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            chosen = self.responder(body)
            if chosen is not None:
                return chosen
        return self.default

    # -- connections ----------------------------------------------------------------------

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _pause(self, handler: BaseHTTPRequestHandler, seconds: float) -> None:
        """Wait ``seconds``; raise _ClientGone as soon as the client closes the
        connection or the stub stops."""
        end = time.monotonic() + seconds
        sock = handler.connection
        while True:
            if self._stopping.is_set():
                raise _ClientGone
            left = end - time.monotonic()
            readable, _, _ = select.select([sock], [], [], max(0.0, min(left, 0.05)))
            if readable:
                try:
                    peeked = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise _ClientGone from None
                if not peeked:
                    raise _ClientGone
                time.sleep(max(0.0, min(left, 0.05)))  # unexpected bytes: do not spin
            if left <= 0:
                return

    # -- requests -------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        length = int(headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else {}
            body: dict[str, Any] | None = parsed if isinstance(parsed, dict) else None
        except ValueError:
            body = None
        match = _PATH.match(url.path)
        record = RecordedRequest(
            method=match.group(2) if match else "",
            model=match.group(1) if match else "",
            path=url.path,
            query=query,
            headers=headers,
            body=body,
            api_key=headers.get("x-goog-api-key") or query.get("key"),
        )
        with self._lock:
            self.requests.append(record)
        try:
            if match is None:
                _send_json(handler, 404, _error_body(404, f"{url.path} is not found"))
            elif record.api_key is None:
                message = "Method doesn't allow unregistered callers. Please use API Key."
                _send_json(handler, 403, _error_body(403, message))
            elif record.api_key != self.api_key:
                _send_json(handler, 400, _invalid_key_body())
            elif body is None:
                message = "Invalid JSON payload received."
                _send_json(handler, 400, _error_body(400, message))
            else:
                behaviour = self._next(body)
                answer = self._stream if record.method == "streamGenerateContent" else self._unary
                if not answer(handler, record, body, behaviour):
                    handler.close_connection = True  # a truncated answer: drop the connection
                    return
            record.completed = True
        except (_ClientGone, ConnectionError):
            record.cut_by_client = not self._stopping.is_set()
            handler.close_connection = True
        except OSError:
            record.cut_by_client = True
            handler.close_connection = True
        finally:
            record._done.set()

    def _unary(
        self, handler: _Handler, record: RecordedRequest, body: dict[str, Any], b: Behaviour
    ) -> bool:
        """Answer a ``generateContent`` call; False when the answer was left unfinished."""
        if isinstance(b, HttpError):
            self._pause(handler, b.first_delay_s)
            _send_error(handler, b)
        elif isinstance(b, Hang):
            self._pause(handler, b.seconds)
            return False
        elif isinstance(b, Malformed):
            _send_raw(handler, 200, b.raw.encode(), "application/json; charset=UTF-8")
        elif isinstance(b, Blocked):
            _send_json(handler, 200, _blocked(record.model, body, b))
        else:
            self._pause(handler, b.first_delay_s)
            whole = Reply(
                text=b.text,
                calls=b.calls,
                chunks=1,
                finish_reason=b.finish_reason,
                thought=b.thought,
                prompt_tokens=b.prompt_tokens,
                output_tokens=b.output_tokens,
                thoughts_tokens=b.thoughts_tokens,
            )
            payload = json.dumps(_reply_chunks(record.model, body, whole)[0]).encode()
            if b.cut_after is not None:
                _send_head(handler, 200, "application/json; charset=UTF-8", len(payload))
                handler.wfile.write(payload[: len(payload) // 2])
                return False
            _send_raw(handler, 200, payload, "application/json; charset=UTF-8")
        return True

    def _stream(
        self, handler: _Handler, record: RecordedRequest, body: dict[str, Any], b: Behaviour
    ) -> bool:
        """Answer a ``streamGenerateContent`` call as SSE events in HTTP chunks;
        False when the body was left unfinished."""
        if isinstance(b, HttpError):
            self._pause(handler, b.first_delay_s)
            _send_error(handler, b)
            return True
        _send_head(handler, 200, "text/event-stream", None)
        if isinstance(b, Hang):
            self._pause(handler, b.seconds)
            return False
        if isinstance(b, Malformed):
            events = [b.raw]
        elif isinstance(b, Blocked):
            events = [json.dumps(_blocked(record.model, body, b))]
        else:
            events = [json.dumps(chunk) for chunk in _reply_chunks(record.model, body, b)]
            self._pause(handler, b.first_delay_s)
        for i, event in enumerate(events):
            if isinstance(b, Reply):
                if b.cut_after is not None and i >= b.cut_after:
                    return False
                if i:
                    self._pause(handler, b.delay_s)
            self._pause(handler, 0)  # a client that left already: do not write into the void
            _write_chunk(handler, f"data: {event}\r\n\r\n".encode())
        _write_chunk(handler, b"")
        return True


# -- wire format --------------------------------------------------------------------------


def _words(value: Any) -> int:
    """Rough token count: words in every string of ``value`` (a JSON value)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, Mapping):
        return sum(_words(v) for v in value.values())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    return 0


def _said(value: Any) -> int:
    """Words of what a request's Contents say: ``text`` parts, function call
    names and args, function responses (not roles or field names)."""
    if isinstance(value, list):
        return sum(_said(v) for v in value)
    if not isinstance(value, Mapping):
        return 0
    count = 0
    for key, item in value.items():
        if key in (
            "text",
            "functionCall",
            "function_call",
            "functionResponse",
            "function_response",
        ):
            count += _words(item)
        elif key in ("parts", "contents", "systemInstruction", "system_instruction"):
            count += _said(item)
    return count


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, _said(body.get("contents")) + _said(body.get("systemInstruction")))


def _usage(prompt: int, output: int, thoughts: int | None) -> dict[str, int]:
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output + (thoughts or 0),
    }
    if thoughts is not None:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _pieces(text: str, count: int) -> list[str]:
    """``text`` in at most ``count`` pieces, split before words; joined, the original."""
    words = re.split(r"(?<=\s)(?=\S)", text)
    step = -(-len(words) // count)
    return ["".join(words[i : i + step]) for i in range(0, len(words), step)]


def _reply_chunks(model: str, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
    """The GenerateContentResponse chunks of ``reply``: usage cumulative, the
    calls and ``finishReason`` on the last."""
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else _prompt_tokens(body)
    texts = _pieces(reply.text, reply.chunks) if reply.text else [""]
    call_parts = [
        {"functionCall": {"name": c.name, "args": dict(c.args), **({"id": c.id} if c.id else {})}}
        for c in reply.calls
    ]
    total_out = (
        reply.output_tokens
        if reply.output_tokens is not None
        else _words(reply.text) + _words([p["functionCall"] for p in call_parts])
    )
    chunks: list[dict[str, Any]] = []
    said = ""
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        said += text
        parts: list[dict[str, Any]] = []
        if i == 0 and reply.thought:
            parts.append({"text": reply.thought, "thought": True})
        if text:
            parts.append({"text": text})
        if last:
            parts.extend(call_parts)
        out = total_out if last else min(total_out, _words(said))
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = reply.finish_reason
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": _usage(prompt, out, reply.thoughts_tokens),
                "modelVersion": model,
                "responseId": f"stub-{i}",
            }
        )
    return chunks


def _blocked(model: str, body: dict[str, Any], blocked: Blocked) -> dict[str, Any]:
    prompt = _prompt_tokens(body)
    return {
        "promptFeedback": {
            "blockReason": blocked.reason,
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}
            ],
        },
        "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
        "modelVersion": model,
    }


def _error_body(
    status: int, message: str, rpc_status: str | None = None, details: list[Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": rpc_status or _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _invalid_key_body() -> dict[str, Any]:
    return _error_body(
        400,
        "API key not valid. Please pass a valid API key.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


def _send_error(handler: _Handler, error: HttpError) -> None:
    details = None
    if error.retry_delay is not None:
        details = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": error.retry_delay}
        ]
    body = _error_body(error.status, error.message, error.rpc_status, details)
    extra = {"Retry-After": error.retry_after} if error.retry_after is not None else {}
    _send_json(handler, error.status, body, extra)


def _send_head(
    handler: _Handler,
    status: int,
    content_type: str,
    length: int | None,
    extra: Mapping[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    if length is None:
        handler.send_header("Transfer-Encoding", "chunked")
    else:
        handler.send_header("Content-Length", str(length))
    for name, value in (extra or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.flush()


def _send_raw(
    handler: _Handler,
    status: int,
    payload: bytes,
    content_type: str,
    extra: Mapping[str, str] | None = None,
) -> None:
    _send_head(handler, status, content_type, len(payload), extra)
    handler.wfile.write(payload)
    handler.wfile.flush()


def _send_json(
    handler: _Handler, status: int, body: Any, extra: Mapping[str, str] | None = None
) -> None:
    _send_raw(handler, status, json.dumps(body).encode(), "application/json; charset=UTF-8", extra)


def _write_chunk(handler: _Handler, data: bytes) -> None:
    """One HTTP/1.1 chunk (an empty one ends the body)."""
    handler.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()

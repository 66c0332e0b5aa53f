"""The HTTP server under the vendor stubs of the tests (Twilio, Meta, Slack,
HubSpot, Google, Calendly...): a threaded ``http.server`` on a free loopback
port, started and stopped by the test (``with Stub() as stub:``, or the
``serve_stub`` fixture of ``tests/conftest.py``, which stops it after the test).
A subclass answers in :meth:`_handle`; :attr:`methods` names the HTTP methods
it serves (GET and POST unless the subclass says otherwise) and
:attr:`protocol_version` the HTTP version it speaks (HTTP/1.1, keep-alive,
unless the subclass says otherwise)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = ["StubServer"]

POLL_S = 0.05
"""How often ``serve_forever`` looks for a shutdown request: stopping a stub
takes at most this long (``http.server``'s default, 0.5 s, adds up over a suite)."""


class StubServer:
    """Serves :meth:`_handle` for :attr:`methods` in a daemon thread."""

    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")
    protocol_version: ClassVar[str] = "HTTP/1.1"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None, "start the stub first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        assert self._server is not None, "start the stub first"
        return int(self._server.server_address[1])

    def start(self) -> Self:
        stub = self

        def serve(method: str) -> Any:
            def do(handler: BaseHTTPRequestHandler) -> None:
                stub._handle(handler, method)

            return do

        class Handler(BaseHTTPRequestHandler):
            protocol_version = stub.protocol_version

            def log_message(self, format: str, *args: Any) -> None:
                pass

        for method in self.methods:
            setattr(Handler, f"do_{method}", serve(method))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_S}, daemon=True
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
        raise NotImplementedError

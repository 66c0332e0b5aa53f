"""Gateways in child processes (real uvicorn), to kill and restart, and stubs they talk to."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from stub_server import StubServer

SCRIPT = Path(__file__).with_name("gateway_proc.py")
REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayProcess:
    """``gateway_proc.py`` in a child process; its output goes to ``log``. Ready
    (``/readyz`` answers 200) once built, unless ``wait=False``: then call
    :meth:`wait_ready` (to start several at once)."""

    def __init__(self, env: dict[str, str], log: Path, *, wait: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = log.open("ab")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_TEST_")}
        full_env = {**inherited, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, **env}
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", str(self.port)],
            cwd=log.parent,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready within {timeout_s} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_killed(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to die at its crash point; its exit status."""
        code = self.proc.wait(timeout_s)
        self._log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()

    def admin(self, path: str, **params: str) -> Any:
        resp = httpx.get(
            f"{self.url}/admin/api/{path}",
            params=params,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json()


class SlackStub(StubServer):
    """A Slack incoming-webhook stand-in on 127.0.0.1: records every POSTed JSON
    body; the first ``fail_first`` requests are answered 503 (Slack having a bad
    minute). ``url`` is the webhook URL to configure. Serving once built."""

    methods = ("POST",)
    protocol_version = "HTTP/1.0"  # its answers end with the connection

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []
        self.failed = 0
        self.lock = threading.Lock()
        self.start()

    @property
    def url(self) -> str:
        return super().url + "/services/T000/B000/secret"

    def close(self) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        with self.lock:
            if self.failed < self.fail_first:
                self.failed += 1
                handler.send_response(503)
                handler.end_headers()
                handler.wfile.write(b"service_unavailable")
                return
            self.received.append(json.loads(body))
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.end_headers()
        handler.wfile.write(b"ok")

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"Slack stub got {len(self.received)} message(s), wanted {count}")


@contextmanager
def slack_stub(fail_first: int = 0) -> Iterator[SlackStub]:
    stub = SlackStub(fail_first)
    try:
        yield stub
    finally:
        stub.close()


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_inbox() -> Iterator[tuple[str, Inbox]]:
    """A local SMTP server (aiosmtpd): its ``smtp://`` URL and its :class:`Inbox`."""
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", handler
    finally:
        controller.stop()


def wait_until(predicate: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not delivered in time"
        time.sleep(0.05)

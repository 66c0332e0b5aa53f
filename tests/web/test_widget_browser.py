"""The embeddable widget in a real browser (Debian chromium driven by Playwright).

A host page on its own localhost port embeds ``<script src=".../widget.js"
data-client="spa-del-sol">`` from the gateway (the real app under uvicorn).
The test books an appointment the way a visitor would, answering whatever
slot the flow says it expects (``metadata.expecting``, mirrored by the widget
on its host element) and clicking quick replies where offered; then reloads
the page and checks the conversation is still there, once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from stub_server import StubServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT = Path("/tmp/widget.png")
UI_TIMEOUT_MS = 20_000  # an upper bound on waits, not an expectation

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian chromium at {CHROMIUM}"),
]

# Hostile page styles: none of them may reach inside the widget.
HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Spa del Sol</title>
<style>
  * {{ font-family: "Courier New", serif !important; color: #ff0000 !important; }}
  body {{ margin: 0; padding: 40px; background: #fdf6e3; font-size: 22px; line-height: 3; }}
  button {{ background: yellow !important; border: 4px dashed purple !important; padding: 30px; }}
  input {{ font-size: 40px !important; border: 3px solid lime; }}
  div {{ margin: 12px; }}
</style></head>
<body>
  <h1>Spa del Sol</h1>
  <p>Relax. Restore. Renew. Book a massage, a facial or a manicure.</p>
  <button id="host-button">A host page button</button>
  <script src="{gateway}/widget.js" data-client="spa-del-sol"></script>
</body></html>
"""

ANSWERS = {
    "name": "Maria Lopez",
    "phone": "(415) 555-0134",
    "email": "maria.lopez@example.com",
    "service": "Swedish Massage",
    "time": "next Tuesday at 11am",
    "confirmation": "yes",
}


class HostPage(StubServer):
    """The web page that embeds the widget, on an origin of its own: every GET
    answers :attr:`body`."""

    methods = ("GET",)
    protocol_version = "HTTP/1.0"

    def __init__(self) -> None:
        super().__init__()
        self.body = b""

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(self.body)))
        handler.end_headers()
        handler.wfile.write(self.body)


@pytest.fixture
def host_server(serve_stub: Any) -> HostPage:
    return serve_stub(HostPage())


def allow_origin(clients_dir: Path, client_id: str, origin: str) -> None:
    path = clients_dir / client_id / "config.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    web = config.setdefault("channels", {}).setdefault("web", {})
    web["allowed_origins"] = [*web.get("allowed_origins", []), origin]
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def test_visitor_books_in_the_widget_and_the_conversation_survives_a_reload(
    running_gateway: Any, clients_dir: Path, host_server: HostPage
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    origin = host_server.url
    allow_origin(clients_dir, "spa-del-sol", origin)

    with running_gateway() as gw, sync_api.sync_playwright() as p:
        host_server.body = HOST_PAGE.format(gateway=gw.url).encode()
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            page.goto(origin)

            host = page.locator("cg-chat-widget")
            bubble = host.locator("button.bubble")
            bot_lines = host.locator(".msg.bot")
            lines = host.locator(".msg")
            field = host.get_by_role("textbox", name="Type your message")

            expect(bubble).to_have_attribute("aria-label", "Open chat")
            bubble.click()
            expect(host.get_by_role("dialog")).to_be_visible()
            expect(bubble).to_have_attribute("aria-expanded", "true")
            expect(bot_lines).to_have_count(1)  # the greeting
            expect(host).to_have_attribute("data-connection", "online")
            assert (
                page.evaluate(
                    "document.querySelector('cg-chat-widget').shadowRoot.activeElement?.tagName"
                )
                == "INPUT"
            ), "opening the chat should focus the message box"

            def say(text: str) -> None:
                field.fill(text)
                field.press("Enter")

            def wait_reply(bots_before: int) -> None:
                expect(bot_lines).to_have_count(bots_before + 1)
                expect(host).to_have_attribute("aria-busy", "false")

            bots = bot_lines.count()
            say("I'd like to book a massage")
            wait_reply(bots)
            for _ in range(20):
                if host.get_attribute("data-state") == "booked":
                    break
                expecting = host.get_attribute("data-expecting") or ""
                quick = host.locator(".quick button")
                bots = bot_lines.count()
                if (
                    expecting == "confirmation"
                    and quick.filter(has_text=re.compile("yes", re.I)).count()
                ):
                    quick.filter(has_text=re.compile("yes", re.I)).first.click()
                elif (
                    expecting == "service"
                    and quick.filter(has_text=re.compile("massage", re.I)).count()
                ):
                    quick.filter(has_text=re.compile("massage", re.I)).first.click()
                elif expecting == "time" and quick.count():
                    quick.first.click()
                elif expecting in ANSWERS:
                    say(ANSWERS[expecting])
                elif quick.count():
                    quick.first.click()
                else:
                    say("yes")
                wait_reply(bots)
            transcript = lines.all_inner_texts()
            assert host.get_attribute("data-state") == "booked", "\n".join(transcript)
            assert "Maria Lopez" in transcript
            assert "(415) 555-0134" in transcript

            styles = page.evaluate(
                """() => {
                  const root = document.querySelector('cg-chat-widget').shadowRoot;
                  const css = (sel) => getComputedStyle(root.querySelector(sel));
                  return {
                    input: css('input').fontSize,
                    bot: css('.msg.bot').color,
                    bubble: css('.bubble').backgroundColor,
                    font: css('.msg.bot').fontFamily,
                  };
                }"""
            )
            assert styles["input"] == "15px", styles
            assert styles["bot"] != "rgb(255, 0, 0)", styles
            assert styles["bubble"] == "rgb(15, 118, 110)", styles
            assert "Courier" not in styles["font"], styles
            page.screenshot(path=str(SCREENSHOT))

            page.reload()
            expect(host.get_by_role("dialog")).to_be_visible()  # it was open: it reopens
            expect(lines).to_have_count(len(transcript))
            assert lines.all_inner_texts() == transcript
            expect(host).to_have_attribute("data-connection", "online")
            # One more exchange: anything replayed twice would show up before its reply.
            bots = bot_lines.count()
            say("Thank you!")
            wait_reply(bots)
            after = lines.all_inner_texts()
            assert after[: len(transcript)] == transcript
            assert len(after) == len(transcript) + 2
            assert after[len(transcript)] == "Thank you!"
        finally:
            browser.close()

        resp = httpx.get(
            f"{gw.url}/admin/api/leads",
            params={"client_id": "spa-del-sol"},
            headers={"Authorization": "Bearer test-admin-token"},
        )
        resp.raise_for_status()
        leads = [lead for lead in resp.json() if lead["channel"] == "web"]
        assert len(leads) == 1, leads
        assert leads[0]["phone"] == "+14155550134"
        assert leads[0]["email"] == "maria.lopez@example.com"
        assert leads[0]["name"] == "Maria Lopez"
        assert leads[0]["status"] == "booked"


def test_widget_reconnects_and_resumes_after_the_socket_drops(
    running_gateway: Any, clients_dir: Path, host_server: HostPage
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    origin = host_server.url
    allow_origin(clients_dir, "spa-del-sol", origin)

    with running_gateway() as gw, sync_api.sync_playwright() as p:
        host_server.body = HOST_PAGE.format(gateway=gw.url).encode()
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            # Every chat socket goes through this proxy, which records the page's
            # frames and can drop the connection like a flaky network would.
            sockets: list[tuple[Any, list[dict[str, Any]]]] = []

            def proxy(ws: Any) -> None:
                server = ws.connect_to_server()
                sent: list[dict[str, Any]] = []

                def forward(message: str | bytes) -> None:
                    if isinstance(message, str):
                        sent.append(json.loads(message))
                    server.send(message)

                ws.on_message(forward)
                sockets.append((ws, sent))

            page.route_web_socket(re.compile(r"/web/chat/"), proxy)
            page.goto(origin)

            host = page.locator("cg-chat-widget")
            bot_lines = host.locator(".msg.bot")
            lines = host.locator(".msg")
            field = host.get_by_role("textbox", name="Type your message")
            host.locator("button.bubble").click()
            expect(host).to_have_attribute("data-connection", "online")
            field.fill("I'd like to book a massage")
            field.press("Enter")
            expect(bot_lines).to_have_count(2)
            expect(host).to_have_attribute("aria-busy", "false")
            before = lines.all_inner_texts()
            assert len(sockets) == 1
            first_socket, first_sent = sockets[0]
            assert first_sent[0]["type"] == "message"  # a new visitor: no resume

            first_socket.close(code=1001, reason="test drops the connection")
            # Typed while the socket is down: queued, then sent after the resume.
            field.fill("Maria Lopez")
            field.press("Enter")
            expect(bot_lines).to_have_count(3)
            expect(host).to_have_attribute("data-connection", "online")
            expect(host).to_have_attribute("aria-busy", "false")

            after = lines.all_inner_texts()
            assert after[: len(before)] == before
            assert after[len(before) :][0] == "Maria Lopez"
            assert len(after) == len(before) + 2
            assert len(sockets) == 2
            resume = sockets[1][1][0]
            assert resume["type"] == "resume"
            assert resume["last_event_id"] > 0
            assert [f["type"] for f in sockets[1][1][1:]] == ["message"]
        finally:
            browser.close()


class _FailOnce:
    """Wraps the engine's committer: the first commit fails (the database hiccups)."""

    def __init__(self, committer: Any) -> None:
        self._committer = committer
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._committer, name)

    async def commit(self, client: Any, turn: Any) -> int:
        if not self.failed:
            self.failed = True
            from engine.errors import StoreError

            raise StoreError("database write failed (test)")
        result: int = await self._committer.commit(client, turn)
        return result


def test_widget_resends_after_a_failed_turn_and_says_when_a_conversation_expired(
    running_gateway: Any, clients_dir: Path, data_dir: Path, host_server: HostPage
) -> None:
    """Regression: after an ``unavailable`` error the widget dropped the message
    (and a resend with its id used to be swallowed by the server); and a
    conversation that expired under the open widget restarted silently."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    origin = host_server.url
    allow_origin(clients_dir, "spa-del-sol", origin)

    with running_gateway() as gw, sync_api.sync_playwright() as p:
        engine = gw.app.state.gateway.engine
        engine.committer = _FailOnce(engine.committer)
        host_server.body = HOST_PAGE.format(gateway=gw.url).encode()
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            page.goto(origin)
            host = page.locator("cg-chat-widget")
            bot_lines = host.locator(".msg.bot")
            user_lines = host.locator(".msg.user")
            field = host.get_by_role("textbox", name="Type your message")
            notice = host.locator(".notice")
            host.locator("button.bubble").click()
            expect(host).to_have_attribute("data-connection", "online")

            field.fill("I'd like to book a massage")
            field.press("Enter")
            # The first try fails on the server; the widget sends it again, once.
            expect(bot_lines).to_have_count(2)
            expect(host).to_have_attribute("aria-busy", "false")
            expect(host).to_have_attribute("data-expecting", "name")
            assert engine.committer.failed
            assert user_lines.all_inner_texts() == ["I'd like to book a massage"]
            expect(notice).not_to_contain_text("could not be sent")

            # The conversation expires on the server while the widget is open.
            with sqlite3.connect(data_dir / "gateway.sqlite") as raw:
                raw.execute("UPDATE sessions SET expires_ts = 0")
            field.fill("Maria Lopez")
            field.press("Enter")
            expect(notice).to_contain_text("expired")
            # The old lines are gone; the unanswered message is kept and answered
            # in the new conversation.
            expect(bot_lines).to_have_count(1)
            expect(host).to_have_attribute("aria-busy", "false")
            assert user_lines.all_inner_texts() == ["Maria Lopez"]
            lines = host.locator(".msg").all_inner_texts()
            assert lines[0] == "Maria Lopez" and len(lines) == 2
        finally:
            browser.close()


def test_an_answer_shows_the_names_of_its_sources(
    running_gateway: Any, clients_dir: Path, host_server: HostPage
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    origin = host_server.url
    allow_origin(clients_dir, "spa-del-sol", origin)

    with running_gateway() as gw, sync_api.sync_playwright() as p:
        gateway = gw.app.state.gateway
        client = gateway.registry.get("spa-del-sol")
        knowledge = gateway.engine.tools.for_client(client).knowledge
        deadline = time.monotonic() + 60
        while knowledge.status() != "ready":  # ingested in the background at start-up
            assert time.monotonic() < deadline, "knowledge never became ready"
            time.sleep(0.05)
        host_server.body = HOST_PAGE.format(gateway=gw.url).encode()
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            page.goto(origin)
            host = page.locator("cg-chat-widget")
            host.locator("button.bubble").click()
            expect(host).to_have_attribute("data-connection", "online")
            field = host.get_by_role("textbox", name="Type your message")
            field.fill("Do you sell gift cards?")
            field.press("Enter")
            answer = host.locator(".msg.bot").filter(has_text=re.compile("gift card", re.I))
            expect(answer).to_have_count(1)
            expect(answer.locator(".sources")).to_have_text("Source: faq.md")
            page.reload()  # the sources stay with the answer in the saved transcript
            expect(host.locator(".msg.bot .sources")).to_have_text("Source: faq.md")
        finally:
            browser.close()

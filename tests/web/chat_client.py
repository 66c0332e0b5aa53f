"""A small web chat protocol client for tests, built on the ``websockets`` library.

Every wait has a generous upper bound (:data:`TIMEOUT_S`) so that a broken
server fails a test instead of hanging it; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

TIMEOUT_S = 20.0

Event = dict[str, Any]


class ChatClient:
    """One web chat websocket; :attr:`seen` keeps every event received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[Event] = []

    async def recv(self) -> Event:
        async with asyncio.timeout(TIMEOUT_S):
            raw = await self.ws.recv(decode=True)
        assert isinstance(raw, str)
        event = json.loads(raw)
        assert isinstance(event, dict), event
        assert isinstance(event.get("event_id"), int), event
        self.seen.append(event)
        return event

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def message(self, text: str, msg_id: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "message", "text": text}
        if msg_id is not None:
            frame["id"] = msg_id
        await self.send(frame)

    async def reply(self) -> list[Event]:
        """Events up to and including the next ``complete``; only tokens (and
        ``discard``s) before it."""
        events = [await self.recv()]
        while events[-1]["type"] != "complete":
            assert events[-1]["type"] in ("token", "discard"), events[-1]
            events.append(await self.recv())
        return events

    async def ask(self, text: str, msg_id: str | None = None) -> list[Event]:
        await self.message(text, msg_id)
        return await self.reply()

    async def session(self) -> Event:
        event = await self.recv()
        assert event["type"] == "session", event
        return event

    async def resume(self, session_id: str, last_event_id: int) -> Event:
        await self.send(
            {"type": "resume", "session_id": session_id, "last_event_id": last_event_id}
        )
        return await self.session()

    async def close_code(self) -> tuple[int, str]:
        """Wait for the server to close; the close code and reason."""
        async with asyncio.timeout(TIMEOUT_S):
            await self.ws.wait_closed()
        assert self.ws.close_code is not None
        return self.ws.close_code, self.ws.close_reason or ""


@asynccontextmanager
async def open_chat(url: str, origin: str | None = None) -> AsyncIterator[ChatClient]:
    """Connect to ``url``; ``origin`` sets the Origin header (none by default)."""
    async with connect(url, origin=origin, open_timeout=TIMEOUT_S, close_timeout=2) as ws:  # type: ignore[arg-type]
        yield ChatClient(ws)


def reply_text(events: list[Event]) -> str:
    """The reply text put together from ``token`` events (a ``discard`` drops
    the tokens before it)."""
    text = ""
    for event in events:
        if event["type"] == "token":
            text += event["content"]
        elif event["type"] == "discard":
            text = ""
    return text


def ids(events: list[Event]) -> list[int]:
    return [e["event_id"] for e in events]

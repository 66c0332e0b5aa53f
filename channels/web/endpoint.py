"""Web chat transport: ``WS /web/chat/{client_id}`` and ``GET /widget.js``.

Contract: DESIGN.md, "Web chat protocol". Wire shapes live in
:mod:`channels.web.codec`; this module moves frames and keeps the event log.
Dependencies are passed to :func:`web_router` as a :class:`WebDeps` provider
(the gateway builds them in its lifespan), never read from ``app.state``.

Connecting
    The upgrade is always accepted and then checked, so that a browser sees a
    close code (it cannot read the HTTP status of a refused upgrade):

    - unknown ``client_id``: close ``4404``, reason ``unknown client '<id>'``;
    - web chat disabled for the client: close ``4403``;
    - an ``Origin`` header not in the client's ``channels.web.allowed_origins``
      (an empty list or ``"*"`` allows any): close ``4403``. A request
      *without* ``Origin`` is a non-browser client (a server, a test tool) and
      is allowed: the check exists to stop other websites from embedding the
      chat in their visitors' browsers, and a non-browser client could send
      any ``Origin`` it likes anyway.

Session handshake
    Every connection gets one ``session`` event first. The server waits up to
    ``WebLimits.resume_wait_s`` for the client's first frame, then:

    - a ``resume`` naming a session the store knows: ``session`` with
      ``resumed: true`` and ``event_id`` = the client's ``last_event_id``,
      followed by every logged event with a larger id, oldest first. The
      replay takes the session's lock, so a turn still running for that
      session (say, on the socket that just dropped) commits all its events
      first: nothing is lost and nothing is sent twice;
    - a ``resume`` naming an unknown or expired session: ``session`` for a new
      session (``resumed: false``), then an ``unknown_session`` error; the
      client should drop what it kept of the old conversation;
    - anything else, or nothing in time: ``session`` for a new session
      (``uuid4().hex``, ``event_id`` 0); a first ``message`` is then run.

    A ``resume`` arriving late (after the new session was announced but before
    any message on this connection) still moves the connection to the resumed
    session with a second ``session`` event; the last one wins. After a
    message, ``resume`` is refused with ``bad_frame``.

Event ids
    Per session, increasing on every connection. ``token`` and ``complete``
    events are committed with the turn that produced them (one transaction
    with the session, the message id mark and the turn's effects) *before*
    they are sent, so a client never holds an id the log lacks, and a turn
    that failed leaves no events behind. ``session`` and ``error`` events
    are connection-scoped and never logged or replayed: a ``session`` event
    repeats the connection's starting id, an ``error`` takes the next id, which
    the log then skips (replays may show gaps exactly where errors were).

Turns
    Messages on a connection run one at a time, in order, through the
    engine's turn (which holds the session lock); if the socket dies mid-turn
    the turn still runs to the end and commits its events, for the client's
    ``resume``. A message ``id`` a committed turn already consumed (a retry
    after reconnecting) is not run again and gets no answer: its events are in
    the log for ``resume``. A message refused or failed (``rate_limited``,
    ``busy``, ``unavailable``) left nothing behind, so it can be sent again
    with the same id and is answered exactly once. Only ``message`` frames
    count against the per-connection token bucket (they are what costs engine
    time). A *new* session's first message also takes a token from its source
    address's bucket (``WebLimits.new_sessions_per_min``), so one source cannot
    fill the store with conversations. If the session a live connection holds
    disappears (expired), the connection gets ``unknown_session``, a new
    ``session`` event, and the message runs in the new session.

Staff replies (a person at the business, :mod:`engine.takeover`)
    ``POST /admin/api/conversations/{id}/reply`` commits a ``complete`` event
    with ``metadata.from = "staff"`` (``metadata.state`` and
    ``metadata.handoff`` = ``human``) to the session's log. The connection
    holding the session listens on the gateway's conversation bus (in-process,
    or Redis pub/sub with ``REDIS_URL`` so any replica's socket hears it):
    while idle it sends the log's new events at once; during a turn, the
    turn's first event that skips ids first sends the committed ones it
    skipped. A socket that missed the signal gets them on its next turn or
    ``resume``. ``POST .../release`` commits a ``complete`` with empty text
    and ``metadata.state`` = ``resolved``.

While a person holds the conversation
    (``pending_human``, ``human``) a message is recorded and notified to
    staff, not answered by the bot: its reply is a ``complete`` with empty
    ``text``, no ``token`` events, and ``metadata.state`` = ``metadata.handoff``
    = the takeover state (``purpose: "human"``). The widget shows "Waiting for
    a person…" instead of a bubble.

Logs carry client ids, session-id prefixes and error codes, never message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, WebSocket
from fastapi.responses import FileResponse
from prometheus_client import Counter
from starlette.websockets import WebSocketDisconnect

from channels.web.codec import (
    ErrorCode,
    MessageFrame,
    ProtocolError,
    ResumeFrame,
    complete_event,
    discard_event,
    error_event,
    parse_frame,
    session_event,
    token_event,
    visitor_id,
)
from channels.web.limits import SourceLimiter, TokenBucket, WebLimits
from engine.bus import ConversationBus
from engine.config import ClientConfig, ClientRegistry
from engine.contract import Replay, TurnEngine, TurnOptions
from engine.errors import (
    DuplicateMessageError,
    GatewayError,
    SessionBusyError,
    UnknownSessionError,
)
from engine.locks import Locks
from engine.logs import describe
from engine.messages import (
    Channel,
    ChannelContext,
    ConversationResponse,
    Discard,
    NormalizedMessage,
    TextDelta,
    TurnEvent,
)
from engine.metrics import ACTIVE_CONNECTIONS
from engine.session import SessionKey, SessionStore

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_UNKNOWN_CLIENT", "WebDeps", "WebLimits", "web_router"]

log = logging.getLogger("channels.web")

CLOSE_UNKNOWN_CLIENT = 4404
CLOSE_FORBIDDEN = 4403
STATIC_DIR = Path(__file__).with_name("static")
WIDGET_CACHE_CONTROL = "public, max-age=300"

WEB_ERRORS = Counter(
    "gateway_web_errors_total", "Error events sent on web chat connections", ["code"]
)


@dataclass(frozen=True, slots=True)
class WebDeps:
    """What the web channel runs on: the loaded clients, the engine, the
    session store, per-connection limits and the new-session limiter."""

    registry: ClientRegistry
    engine: TurnEngine
    store: SessionStore
    locks: Locks
    """The session locks the engine takes (a resume reads the log under one)."""
    limits: WebLimits
    sources: SourceLimiter | None = None
    bus: ConversationBus | None = None
    """Signals committed events written outside the socket's turns (staff replies)."""
    lock_timeout_s: float = 10.0
    """How long a resume waits for a session's lock (the engine's turn holds it)."""


def web_router(deps: Callable[[], WebDeps]) -> APIRouter:
    """Routes of the web channel: the chat websocket and the widget script.

    ``deps`` returns the channel's dependencies once the gateway is serving.
    """
    router = APIRouter()

    @router.websocket("/web/chat/{client_id}")
    async def web_chat(websocket: WebSocket, client_id: str) -> None:
        web = deps()
        client = web.registry.get(client_id)
        await websocket.accept()
        if client is None:
            await websocket.close(CLOSE_UNKNOWN_CLIENT, _reason(f"unknown client {client_id!r}"))
            return
        if not client.channels.web.enabled:
            await websocket.close(
                CLOSE_FORBIDDEN, _reason(f"web chat is disabled for client {client_id!r}")
            )
            return
        origin = websocket.headers.get("origin")
        if origin is not None and not origin_allowed(origin, client.channels.web.allowed_origins):
            log.info("web chat refused: origin not allowed for client=%s", client_id)
            await websocket.close(
                CLOSE_FORBIDDEN, _reason(f"origin not allowed for client {client_id!r}")
            )
            return
        connection = _Connection(websocket, client, web)
        gauge = ACTIVE_CONNECTIONS.labels(channel="web")
        gauge.inc()
        try:
            await connection.serve()
        finally:
            gauge.dec()
            log.info("web chat closed: client=%s session=%s", client_id, connection.session_tag)

    @router.api_route("/widget.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def widget_js() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "widget.js",
            media_type="application/javascript; charset=utf-8",
            headers={"Cache-Control": WIDGET_CACHE_CONTROL},
        )

    return router


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """True if a browser ``Origin`` may open the chat: ``allowed`` is empty,
    holds ``"*"``, or holds the origin (compared without case or trailing ``/``)."""
    if not allowed or "*" in allowed:
        return True
    wanted = origin.strip().rstrip("/").lower()
    return any(wanted == entry.strip().rstrip("/").lower() for entry in allowed)


def _reason(text: str) -> str:
    # A close reason may hold at most 123 bytes of UTF-8.
    return text.encode("utf-8")[:123].decode("utf-8", "ignore")


class _Connection:
    """One chat websocket: the session handshake, then frames in order."""

    def __init__(
        self,
        websocket: WebSocket,
        client: ClientConfig,
        web: WebDeps,
    ) -> None:
        engine, store, limits, sources, bus = (
            web.engine,
            web.store,
            web.limits,
            web.sources,
            web.bus,
        )
        self.locks, self.lock_timeout_s = web.locks, web.lock_timeout_s
        self.ws = websocket
        self.bus = bus
        self.poked = asyncio.Event()
        """Set by the bus: the session's log has events this socket has not sent."""
        self._unlisten: Callable[[], None] | None = None
        self.sources = sources
        peer = websocket.client
        self.source = peer.host if peer is not None else "unknown"
        self.started = False
        """True once this connection's session holds a conversation (resumed or run)."""
        self.client = client
        self.engine = engine
        self.store = store
        self.limits = limits
        self.bucket = TokenBucket(limits.rate_per_s, limits.rate_burst)
        self._key: SessionKey | None = None
        self.cursor = 0
        """Highest event id sent (or due) on this connection."""
        self.can_resume = True
        self.open = True
        origin = websocket.headers.get("origin")
        visitor = visitor_id(websocket.query_params.get("visitor_id"))
        self.context = (
            ChannelContext(web_origin=origin, visitor_id=visitor) if origin or visitor else None
        )

    @property
    def key(self) -> SessionKey | None:
        return self._key

    @key.setter
    def key(self, key: SessionKey | None) -> None:
        """Hold ``key``, listening on the bus for its staff replies."""
        if key == self._key:
            return
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self._key = key
        if key is not None and self.bus is not None:
            self._unlisten = self.bus.listen(str(key), self.poked.set, lambda: self.cursor)

    @property
    def session_tag(self) -> str:
        """A prefix of the session id, for logs (the whole id lets anyone resume)."""
        return self.key.session_id[:8] if self.key else "-"

    @property
    def greeting(self) -> str:
        return (
            self.client.channels.web.greeting
            or f"Hi! Welcome to {self.client.name}. How can I help you today?"
        )

    async def serve(self) -> None:
        receiving: asyncio.Future[str | bytes | None] | None = asyncio.ensure_future(
            self._receive()
        )
        assert receiving is not None
        try:
            done, _ = await asyncio.wait({receiving}, timeout=self.limits.resume_wait_s)
            if not done:
                await self._ensure_session()
            while self.open:
                if receiving is None:
                    receiving = asyncio.ensure_future(self._receive())
                if not receiving.done():
                    await self._wait_for(receiving)
                if self.poked.is_set():
                    self.poked.clear()
                    await self._flush()
                if receiving.done():
                    data = receiving.result()
                    receiving = None
                    if data is None:
                        break
                    await self._on_frame(data)
        finally:
            self.key = None  # stop listening
            if receiving is not None and not receiving.done():
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)

    async def _wait_for(self, receiving: asyncio.Future[str | bytes | None]) -> None:
        """Until the next frame arrives or the bus signals new committed events."""
        poke: asyncio.Future[object] = asyncio.ensure_future(self.poked.wait())
        waiting: set[asyncio.Future[object]] = {receiving, poke}  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not poke.done():
                poke.cancel()
                await asyncio.gather(poke, return_exceptions=True)

    async def _flush(self, before: int | None = None) -> None:
        """Send the session's committed events after the cursor (those below
        ``before`` only): staff replies committed outside this socket's turns."""
        key = self.key
        if key is None or not self.open:
            return
        try:
            events = await self.store.events_after(key, self.cursor)
        except Exception as exc:  # the next turn or resume sends them
            log.warning("web chat: could not read new events: error=%s", type(exc).__name__)
            return
        for event_id, text in events:
            if before is not None and event_id >= before:
                break
            await self._send(text)
            self.cursor = max(self.cursor, event_id)

    async def _receive(self) -> str | bytes | None:
        """The next frame (``str`` text, ``bytes`` binary), or None once the client left."""
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            self.open = False
            return None
        if message["type"] == "websocket.disconnect":
            self.open = False
            return None
        text = message.get("text")
        if isinstance(text, str):
            return text
        data = message.get("bytes")
        return data if isinstance(data, bytes) else b""

    async def _send(self, text: str) -> None:
        """Send one event; a dead socket is noted, never raised (turns run on)."""
        if not self.open:
            return
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.open = False

    async def _on_frame(self, data: str | bytes) -> None:
        try:
            frame = parse_frame(
                data,
                max_frame_bytes=self.limits.max_frame_bytes,
                max_text_chars=self.limits.max_text_chars,
            )
        except ProtocolError as exc:
            await self._ensure_session()
            await self._error(exc.code, exc.message)
            return
        if isinstance(frame, ResumeFrame):
            if self.can_resume:
                await self._resume(frame)
            else:
                await self._error(
                    "bad_frame", "resume is accepted only as the first frame of a connection"
                )
            return
        await self._ensure_session()
        self.can_resume = False
        if not self.bucket.take():
            wait_s = self.bucket.retry_after_s()
            await self._error(
                "rate_limited",
                f"too many messages; wait {wait_s:.1f} s and send it again",
                reply_to=frame.id,
            )
            return
        await self._turn(frame)

    async def _ensure_session(self) -> SessionKey:
        if self.key is None:
            self.key = SessionKey(self.client.client_id, "web", uuid.uuid4().hex)
            self.cursor = 0
            log.info("web chat session: client=%s new=%s", self.client.client_id, self.session_tag)
            await self._send(
                session_event(
                    0,
                    self.key.session_id,
                    resumed=False,
                    greeting=self.greeting,
                    client_name=self.client.name,
                )
            )
        return self.key

    async def _resume(self, frame: ResumeFrame) -> None:
        self.can_resume = False
        key = SessionKey(self.client.client_id, "web", frame.session_id)
        try:
            async with self.locks.lock(f"session:{key}", self.lock_timeout_s):
                known = await self.store.exists(key)
                if known:
                    await self._replay(key, frame.last_event_id)
        except SessionBusyError:
            await self._ensure_session()
            await self._error("busy", "the conversation is busy with another reply; reconnect")
            return
        except Exception as exc:  # StoreError, or a backend error the store let through
            log.error("web chat resume failed: error=%s", type(exc).__name__)
            await self._ensure_session()
            await self._error("unavailable", "the session store is unavailable; reconnect later")
            return
        if not known:
            await self._ensure_session()
            await self._error(
                "unknown_session",
                "that session is unknown or expired; this connection continues in a new session",
            )

    async def _replay(self, key: SessionKey, after_id: int) -> None:
        """Announce ``key`` and send its logged events after ``after_id`` (lock held)."""
        self.key = key
        self.cursor = after_id
        self.started = True
        events = await self.store.events_after(key, after_id)
        log.info(
            "web chat session: client=%s resumed=%s replay=%d",
            self.client.client_id,
            self.session_tag,
            len(events),
        )
        await self._send(
            session_event(
                after_id,
                key.session_id,
                resumed=True,
                greeting=self.greeting,
                client_name=self.client.name,
            )
        )
        for event_id, text in events:
            await self._send(text)
            self.cursor = max(self.cursor, event_id)

    async def _turn(self, frame: MessageFrame) -> None:
        key = await self._ensure_session()
        if not self.started and self.sources is not None and not self.sources.take(self.source):
            wait_s = self.sources.retry_after_s(self.source)
            await self._error(
                "rate_limited",
                f"too many new conversations from your address; wait {wait_s:.0f} s and send it again",
                frame.id,
            )
            return
        try:
            try:
                await self._stream(key, frame)
            except UnknownSessionError:
                log.info(
                    "web chat: session vanished under a live socket, session=%s", self.session_tag
                )
                await self._error(
                    "unknown_session",
                    "this conversation expired; it continues in a new session",
                )
                self.key, self.started = None, False
                await self._stream(await self._ensure_session(), frame)
        except DuplicateMessageError:
            log.info("web chat: duplicate message id ignored, session=%s", self.session_tag)
        except SessionBusyError:
            await self._error(
                "busy", "another reply is still running; send it again shortly", frame.id
            )
        except Exception as exc:  # keep the socket usable whatever failed underneath
            # Type and stack only: exception text may quote the user's message.
            log.error(
                "web chat turn failed: session=%s error=%s",
                self.session_tag,
                type(exc).__name__ if isinstance(exc, GatewayError) else describe(exc),
            )
            await self._error(
                "unavailable", "the message could not be processed; try again", frame.id
            )

    async def _stream(self, key: SessionKey, frame: MessageFrame) -> None:
        """Run the engine turn and send its events: a rule agent's after the
        commit, a live agent's as they come (then a ``discard`` withdraws
        tokens that did not make it into the committed reply)."""

        def encode(event_id: int, event: TurnEvent) -> str | None:
            if isinstance(event, TextDelta):
                return token_event(event_id, event.content, frame.id)
            if isinstance(event, Discard):
                return discard_event(event_id, event.reason, frame.id)
            if isinstance(event, ConversationResponse):
                return complete_event(event_id, event, frame.id)
            return None  # tool calls, results and handoffs stay inside the engine

        replay = Replay(encode, after=self.cursor)
        message = NormalizedMessage(
            client_id=key.client_id,
            channel=Channel.WEB,
            session_id=key.session_id,
            text=frame.text,
            message_id=frame.id,
            context=self.context or ChannelContext(),
            sender=self.context.visitor_id if self.context else None,
        )
        stream = self.engine.stream_turn(
            message, TurnOptions(replay=replay, expect_session=self.started)
        )
        async with contextlib.aclosing(stream) as events:
            async for _event in events:
                for event_id, text in replay.unsent():
                    if event_id > self.cursor + 1 and self.bus is not None:
                        # Ids were skipped: a staff reply committed before this
                        # turn (or an error event's id). Send what the log has.
                        await self._flush(before=event_id)
                    self.cursor = max(self.cursor, event_id)
                    await self._send(text)
        self.started = True

    async def _error(self, code: ErrorCode, message: str, reply_to: str | None = None) -> None:
        key = await self._ensure_session()
        try:
            last = await self.store.last_event_id(key)
        except Exception:  # an error event must go out even when the store is down
            last = 0
        self.cursor = max(last, self.cursor) + 1
        WEB_ERRORS.labels(code=code).inc()
        await self._send(error_event(self.cursor, code, message, reply_to))

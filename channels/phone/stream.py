"""The websocket of one Twilio Media Stream: typed events in, text frames out.

Frames are decoded by :mod:`channels.phone.codec` (the only place that reads
Twilio's JSON, with caps on a frame's size and nesting); a malformed frame is
counted (``bad_frame``), logged with the codec's reason (which never quotes
the payload; the first few of a call, then one line per
:data:`BAD_FRAME_LOG_EVERY`) and skipped. Gross abuse closes the socket with
1008: more than :data:`MAX_FRAMES_BEFORE_START` frames before ``start``
(Twilio sends one, ``connected``), or more than :data:`MAX_BAD_FRAMES` bad
frames in a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from channels.phone.codec import CodecError, InboundEvent, Start, Stop, decode_inbound
from channels.phone.trace import PHONE_EVENTS

__all__ = [
    "CLOSE_NO_START",
    "MAX_BAD_FRAMES",
    "MAX_FRAMES_BEFORE_START",
    "START_TIMEOUT_S",
    "MediaStream",
]

log = logging.getLogger("channels.phone.stream")

START_TIMEOUT_S = 10.0
"""A socket that sends no valid ``start`` this long after connecting is closed (4408)."""
CLOSE_NO_START = 4408
CLOSE_ABUSE = 1008
MAX_FRAMES_BEFORE_START = 16
"""Frames a socket may send before ``start``; Twilio sends just ``connected``."""
MAX_BAD_FRAMES = 1000
"""Malformed frames a call may send before its socket is closed (Twilio sends none)."""
BAD_FRAME_LOG_EVERY = 1000
_LOG_FIRST = 3


class MediaStream:
    """One accepted ``WS /twilio/media/{client_id}`` connection.

    Inbound frames are JSON text per Twilio's "Media Streams - WebSocket
    Messages" (``connected``, ``start``, ``media``, ``mark``, ``dtmf``,
    ``stop``); a media payload may be any length (the caller reframes it).
    Outbound frames are the codec's ``media``/``mark``/``clear`` JSON strings.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.bad_frames = 0
        """Malformed frames skipped so far."""

    async def wait_for_start(self, timeout_s: float = START_TIMEOUT_S) -> Start | None:
        """Twilio's ``start`` (frames before it are skipped); None if the peer went
        away or sent ``stop`` first, or after ``timeout_s`` seconds (the socket is
        then closed with 4408), or after :data:`MAX_FRAMES_BEFORE_START` other
        frames (closed with 1008)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for _ in range(MAX_FRAMES_BEFORE_START + 1):
            try:
                raw = await asyncio.wait_for(self._receive(), deadline - loop.time())
            except TimeoutError:
                log.warning("media stream: no start message in %.0f s; closing", timeout_s)
                await self.ws.close(CLOSE_NO_START)
                return None
            if raw is None:
                return None
            event = self._decode(raw)
            if isinstance(event, Start):
                return event
            if isinstance(event, Stop):
                return None
        log.warning(
            "media stream: %d frames and no start message; closing", MAX_FRAMES_BEFORE_START + 1
        )
        await self.ws.close(CLOSE_ABUSE)
        return None

    async def receive(self) -> InboundEvent | None:
        """The next valid event; None once the socket is closed. Bad frames are skipped
        (after :data:`MAX_BAD_FRAMES` of them the socket is closed with 1008)."""
        while (raw := await self._receive()) is not None:
            event = self._decode(raw)
            if event is not None:
                return event
            if self.bad_frames > MAX_BAD_FRAMES:
                log.warning("media stream: %d malformed frames; closing", self.bad_frames)
                await self.ws.close(CLOSE_ABUSE)
                break
        return None

    async def send(self, text: str) -> None:
        """Write one text frame (raises if the socket is closed)."""
        await self.ws.send_text(text)

    async def close(self) -> None:
        """Close the socket if it is still open (Twilio then ends ``<Connect>``)."""
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.close()

    async def _receive(self) -> str | bytes | None:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data: str | bytes | None = message.get("text") or message.get("bytes")
        return data or ""

    def _decode(self, raw: str | bytes) -> InboundEvent | None:
        try:
            return decode_inbound(raw, frame_bytes=None)
        except CodecError as exc:
            PHONE_EVENTS.labels("bad_frame").inc()
            self.bad_frames += 1
            count = self.bad_frames
            if count <= _LOG_FIRST or count % BAD_FRAME_LOG_EVERY == 0:
                log.warning("media stream: dropped a frame (%d so far): %s", count, exc)
            return None

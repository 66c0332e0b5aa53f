"""The websocket of one Twilio Media Stream: typed events in, text frames out.

Frames are decoded by :mod:`adapters.phone.codec` (the only place that reads
Twilio's JSON); a malformed frame is counted (``bad_frame``), logged with the
codec's reason (which never quotes the payload) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from adapters.phone.codec import CodecError, InboundEvent, Start, Stop, decode_inbound
from adapters.phone.trace import PHONE_EVENTS

__all__ = ["CLOSE_NO_START", "START_TIMEOUT_S", "MediaStream"]

log = logging.getLogger("adapters.phone.stream")

START_TIMEOUT_S = 10.0
"""A socket that sends no valid ``start`` this long after connecting is closed (4408)."""
CLOSE_NO_START = 4408


class MediaStream:
    """One accepted ``WS /twilio/media/{client_id}`` connection.

    Inbound frames are JSON text per Twilio's "Media Streams - WebSocket
    Messages" (``connected``, ``start``, ``media``, ``mark``, ``dtmf``,
    ``stop``); a media payload may be any length (the caller reframes it).
    Outbound frames are the codec's ``media``/``mark``/``clear`` JSON strings.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket

    async def wait_for_start(self, timeout_s: float = START_TIMEOUT_S) -> Start | None:
        """Twilio's ``start`` (frames before it are skipped); None if the peer went
        away or sent ``stop`` first, or after ``timeout_s`` seconds (the socket is
        then closed with 4408)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                raw = await asyncio.wait_for(self._receive(), deadline - loop.time())
            except TimeoutError:
                log.warning("media stream: no start message in %.0f s; closing", timeout_s)
                await self.ws.close(CLOSE_NO_START)
                return None
            if raw is None:
                return None
            event = _decode(raw)
            if isinstance(event, Start):
                return event
            if isinstance(event, Stop):
                return None

    async def receive(self) -> InboundEvent | None:
        """The next valid event; None once the socket is closed. Bad frames are skipped."""
        while (raw := await self._receive()) is not None:
            event = _decode(raw)
            if event is not None:
                return event
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


def _decode(raw: str | bytes) -> InboundEvent | None:
    try:
        return decode_inbound(raw, frame_bytes=None)
    except CodecError as exc:
        PHONE_EVENTS.labels("bad_frame").inc()
        log.warning("media stream: dropped a frame: %s", exc)
        return None

"""Who may open a media stream: one-time stream tokens and one live stream per call.

Anyone can open ``WS /twilio/media/{client_id}``; only a stream the voice
webhook created may drive a call. The webhook (whose request Twilio signed)
mints a token bound to the client and the CallSid and puts it in the TwiML as
``<Stream><Parameter name="token" .../>``; Twilio hands it back in the
``start`` message's ``customParameters`` (Twilio, "Media Streams - WebSocket
Messages", start message). At ``start`` the stream is admitted only when::

    token well formed, MAC valid     (not forged, not for another client or call)
    not expired                      (:data:`TOKEN_TTL_S` after the webhook)
    not spent before                 (single use)
    no live stream for the CallSid   (on this replica, or any replica sharing Redis)

Token: ``v1.<expiry unix s>.<base64url HMAC-SHA256>`` over
``"v1|client_id|call_sid|expiry"``. The key is derived from the client's
Twilio auth token (``HMAC-SHA256(auth_token, "gateway phone stream token v1")``):
the webhook already depends on that secret, every replica loads it from the
same client config, so tokens minted on one replica verify on another with
nothing more to configure, and the derived key never reveals the auth token.
Rotating the auth token voids tokens in flight (they live 60 s).

Spent tokens and live calls are kept in process (:class:`LocalStreamGate`) or,
with ``REDIS_URL``, in Redis as well (:class:`RedisStreamGate`): a spent mark
``<prefix>phone:spent:<mac>`` that outlives the token, and a live key
``<prefix>phone:live:<call_sid>`` with a :data:`LIVE_TTL_S` lease renewed while
the call lives (a replica that dies frees its calls within the lease). When
Redis fails, the process's own marks still apply and a warning is logged: the
MAC and the expiry still hold, only cross-replica reuse within 60 s is open.

A gate given this replica's :class:`~channels.phone.capacity.CallCapacity`
(``lines``) also holds the call's line while its stream lives: the line the
voice webhook reserved, released when the stream ends. Capacity stays per
process even when the live registry is shared.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from channels.phone.capacity import CallCapacity

__all__ = [
    "LIVE_TTL_S",
    "TOKEN_PARAMETER",
    "TOKEN_TTL_S",
    "LocalStreamGate",
    "RedisStreamGate",
    "StreamGate",
    "StreamRefused",
    "VerifiedToken",
    "mint_stream_token",
    "open_stream_gate",
    "unix_now",
    "verify_stream_token",
]

log = logging.getLogger("channels.phone.admission")

TOKEN_PARAMETER = "token"
"""Name of the ``<Parameter>`` (and ``customParameters`` key) carrying the token."""
TOKEN_TTL_S = 60
"""A token must reach ``start`` within this many seconds of the webhook."""
LIVE_TTL_S = 15.0
"""Lease of a live-call key in Redis, in seconds; renewed every third of it."""
MAX_TOKEN_CHARS = 128

_VERSION = "v1"
_KEY_LABEL = b"gateway phone stream token v1"

Refusal = Literal["missing", "malformed", "forged", "expired", "reused", "live"]


class StreamRefused(Exception):
    """A media stream that may not drive a call; ``reason`` says which check failed."""

    def __init__(self, reason: Refusal) -> None:
        what = "the call already has a live stream" if reason == "live" else f"{reason} token"
        super().__init__(f"media stream refused: {what}")
        self.reason: Refusal = reason


def _key(auth_token: str) -> bytes:
    return hmac.new(auth_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _mac(auth_token: str, client_id: str, call_sid: str, expiry: int) -> str:
    message = f"{_VERSION}|{client_id}|{call_sid}|{expiry}".encode()
    digest = hmac.new(_key(auth_token), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def mint_stream_token(
    auth_token: str, client_id: str, call_sid: str, *, now_s: float, ttl_s: int = TOKEN_TTL_S
) -> str:
    """A token for the stream of ``call_sid`` to client ``client_id``, valid ``ttl_s``
    seconds from ``now_s`` (unix seconds)."""
    expiry = int(now_s) + ttl_s
    return f"{_VERSION}.{expiry}.{_mac(auth_token, client_id, call_sid, expiry)}"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose MAC and expiry checked out; ``mac`` names it for the spent mark."""

    mac: str
    expiry_s: int


def verify_stream_token(
    token: str | None, auth_token: str, client_id: str, call_sid: str, *, now_s: float
) -> VerifiedToken:
    """Check ``token`` against the client, the CallSid of ``start`` and the time.

    Raises:
        StreamRefused: ``missing``, ``malformed``, ``forged`` (wrong MAC: not
            ours, or for another client or call) or ``expired``.
    """
    if not token:
        raise StreamRefused("missing")
    parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS else []
    if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isascii() or not parts[1].isdigit():
        raise StreamRefused("malformed")
    expiry = int(parts[1])
    if not hmac.compare_digest(parts[2], _mac(auth_token, client_id, call_sid, expiry)):
        raise StreamRefused("forged")
    if now_s > expiry:
        raise StreamRefused("expired")
    return VerifiedToken(parts[2], expiry)


class StreamGate(ABC):
    """Spent tokens and live calls: the stateful half of admission.

    ``lines``: this replica's phone capacity, or None to count nothing.
    """

    lines: CallCapacity | None = None

    @abstractmethod
    async def spend(self, token: VerifiedToken, now_s: float) -> bool:
        """Mark ``token`` used; False if it was used before."""

    @abstractmethod
    def live(self, call_sid: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while the call's stream lives (with the call's line, when the gate has
        :attr:`lines`).

        Raises:
            StreamRefused: ``live``, the call already has a live stream.
        """

    def stream_closed(self, call_sid: str | None) -> None:
        """A media stream for ``call_sid`` (None: it never sent ``start``) is over, live or
        refused: give back the line its webhook reserved, if it still holds one. A
        refused stream ends a genuine call (Twilio hangs up when ``<Connect>`` ends)."""
        if self.lines is not None:
            self.lines.drop(call_sid)

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LocalStreamGate(StreamGate):
    """This process's spent tokens (until they expire) and live calls."""

    def __init__(self, *, lines: CallCapacity | None = None) -> None:
        self._spent: dict[str, int] = {}
        self._live: set[str] = set()
        self.lines = lines

    async def spend(self, token: VerifiedToken, now_s: float) -> bool:
        return self._spend_local(token, now_s)

    def _spend_local(self, token: VerifiedToken, now_s: float) -> bool:
        if len(self._spent) > 1024:  # expired marks are dead weight: drop them now and then
            self._spent = {mac: exp for mac, exp in self._spent.items() if exp >= now_s}
        if token.mac in self._spent:
            return False
        self._spent[token.mac] = token.expiry_s
        return True

    @contextlib.asynccontextmanager
    async def _held(self, call_sid: str) -> AsyncIterator[None]:
        if call_sid in self._live:
            raise StreamRefused("live")
        self._live.add(call_sid)
        try:
            yield
        finally:
            self._live.discard(call_sid)

    def live(self, call_sid: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._live_call(call_sid)

    @contextlib.asynccontextmanager
    async def _live_call(self, call_sid: str) -> AsyncIterator[None]:
        async with self._held(call_sid):  # refused before the call takes a line
            if self.lines is None:
                yield
            else:
                async with self.lines.line(call_sid):
                    yield


# Renew / release a live key only while it still holds our owner id.
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class RedisStreamGate(LocalStreamGate):
    """:class:`LocalStreamGate` plus Redis marks shared by every replica.

    Keys: ``<prefix>phone:spent:<mac>`` (expires a minute after the token) and
    ``<prefix>phone:live:<call_sid>`` (a :data:`LIVE_TTL_S` lease renewed by a
    task that belongs to the call and ends with it).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gw:",
        live_ttl_s: float = LIVE_TTL_S,
        lines: CallCapacity | None = None,
    ) -> None:
        super().__init__(lines=lines)
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix
        self._live_ttl_ms = int(live_ttl_s * 1000)

    async def spend(self, token: VerifiedToken, now_s: float) -> bool:
        if not self._spend_local(token, now_s):
            return False
        ttl_s = max(1, token.expiry_s - int(now_s) + 60)
        key = f"{self._prefix}phone:spent:{token.mac}"
        try:
            return bool(await self._redis.set(key, "1", nx=True, ex=ttl_s))
        except Exception as exc:  # redis or OSError: fall back on this process's marks
            log.warning("stream admission: Redis unavailable (%s); local marks only", _name(exc))
            return True

    @contextlib.asynccontextmanager
    async def _held(self, call_sid: str) -> AsyncIterator[None]:
        async with super()._held(call_sid):
            key = f"{self._prefix}phone:live:{call_sid}"
            owner = uuid.uuid4().hex
            shared = True
            try:
                if not await self._redis.set(key, owner, nx=True, px=self._live_ttl_ms):
                    raise StreamRefused("live")
            except StreamRefused:
                raise
            except Exception as exc:
                log.warning(
                    "stream admission: Redis unavailable (%s); local marks only", _name(exc)
                )
                shared = False
            renew = asyncio.create_task(self._renew(key, owner)) if shared else None
            try:
                yield
            finally:
                if renew is not None:
                    renew.cancel()
                    await asyncio.gather(renew, return_exceptions=True)
                    with contextlib.suppress(Exception):
                        await self._redis.eval(_RELEASE, 1, key, owner)

    async def _renew(self, key: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self._live_ttl_ms / 3000)
            try:
                await self._redis.eval(_EXTEND, 1, key, owner, self._live_ttl_ms)
            except Exception as exc:
                log.warning("stream admission: could not renew a live call (%s)", _name(exc))

    async def close(self) -> None:
        await self._redis.aclose()


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def open_stream_gate(redis_url: str | None, *, lines: CallCapacity | None = None) -> StreamGate:
    """A :class:`RedisStreamGate` when ``redis_url`` is set, else a :class:`LocalStreamGate`;
    ``lines`` is this replica's phone capacity (None: calls are not counted)."""
    return RedisStreamGate(redis_url, lines=lines) if redis_url else LocalStreamGate(lines=lines)


def unix_now() -> float:
    """Wall-clock seconds (tokens carry a unix expiry so replicas agree on it)."""
    return time.time()

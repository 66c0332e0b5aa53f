"""The conversation bus over Redis pub/sub (``REDIS_URL``), so a staff reply
committed on one replica wakes the web socket held by another."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engine.bus import ConversationBus

__all__ = ["RedisConversationBus"]

log = logging.getLogger("providers.redis.bus")


class RedisConversationBus(ConversationBus):
    """:class:`ConversationBus` over Redis pub/sub (``REDIS_URL``): each replica
    subscribes to one channel, ``gateway:conversations``, whose messages are
    conversation keys; a publish reaches the listeners on every replica. A
    replica that misses a message (Redis restarted) still sends the events on
    the socket's next turn or resume: the signal is a shortcut, the log is the
    record."""

    CHANNEL = "gateway:conversations"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._redis: object | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url)
        self._redis = client
        pubsub = client.pubsub()

        async def run() -> None:
            try:
                while True:
                    try:
                        if not pubsub.subscribed:
                            await pubsub.subscribe(self.CHANNEL)
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                    except Exception as exc:  # Redis went away: try again shortly
                        log.warning("conversation bus: %s; retrying", type(exc).__name__)
                        await asyncio.sleep(1.0)
                        continue
                    if message is None:
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes):
                        self.notify_local(data.decode("utf-8", "replace"))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

        self._task = asyncio.create_task(run(), name="conversation-bus")

    async def publish(self, key: str) -> None:
        import redis.asyncio as aioredis

        client = self._redis
        if not isinstance(client, aioredis.Redis):
            self.notify_local(key)
            return
        try:
            await client.publish(self.CHANNEL, key)
        except Exception as exc:  # the signal is a shortcut: the log still has the events
            log.warning(
                "conversation bus: publish failed (%s); local sockets only", type(exc).__name__
            )
            self.notify_local(key)

    async def close(self) -> None:
        import redis.asyncio as aioredis

        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        client = self._redis
        self._redis = None
        if isinstance(client, aioredis.Redis):
            await client.aclose()

"""The conversation bus: tells open channel connections that a conversation has
new committed events (a staff reply). In-process here; over Redis pub/sub for
replicas: :class:`providers.redis.bus.RedisConversationBus`."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ConversationBus", "Listener"]

Listener = Callable[[], None]


class ConversationBus:
    """Tells open channel connections that a conversation has new committed
    events (a staff reply), so an idle web socket sends them at once.

    In-process: :meth:`publish` calls the listeners registered for the
    conversation key (``client_id:channel:session_id``) on this replica.
    :class:`providers.redis.bus.RedisConversationBus` also carries the signal to other replicas.
    The signal carries no data: a listener reads the committed events itself.
    ``cursor_hint`` is the highest event id a local connection has sent for a
    key (its connection-scoped ``error`` events take ids the log skips), so a
    staff reply numbers its event above it.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}
        self._cursors: dict[str, Callable[[], int]] = {}

    def listen(self, key: str, listener: Listener, cursor: Callable[[], int]) -> Callable[[], None]:
        """Call ``listener`` (on this event loop) on every publish for ``key``;
        returns the function that stops it."""
        self._listeners.setdefault(key, set()).add(listener)
        self._cursors[key] = cursor

        def stop() -> None:
            listeners = self._listeners.get(key)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    self._listeners.pop(key, None)
                    self._cursors.pop(key, None)

        return stop

    def cursor_hint(self, key: str) -> int:
        cursor = self._cursors.get(key)
        return cursor() if cursor is not None else 0

    def notify_local(self, key: str) -> None:
        for listener in list(self._listeners.get(key, ())):
            listener()

    async def publish(self, key: str) -> None:
        """Signal ``key``'s listeners (here; subclasses: everywhere)."""
        self.notify_local(key)

    async def start(self) -> None:
        """Open what the bus needs (nothing in-process)."""

    async def close(self) -> None:
        """Close what :meth:`start` opened."""

"""Who answers a conversation: the bot or a person. Named states, a transition
table, the "what happens next" wording and the signal that wakes a web socket.

States (``ConversationSession.handoff``, also on the conversation log row that
``GET /admin/api/conversations`` reads as ``handoff``)::

    bot            the agents answer (the default)
    pending_human  the human agent escalated; staff were notified, none replied yet
    human          staff replied through the admin API; they hold the conversation
    resolved       staff released it; the bot answers again from the next message

Diagram (mermaid)::

    stateDiagram-v2
        [*] --> bot
        bot --> pending_human: escalated (the human agent hands back "escalate")
        bot --> human: staff_reply
        pending_human --> human: staff_reply
        human --> human: staff_reply
        resolved --> human: staff_reply
        pending_human --> resolved: release
        human --> resolved: release
        resolved --> bot: customer_message (the bot answers it)
        pending_human --> pending_human: customer_message (recorded, notified, no reply)
        human --> human: customer_message (recorded, notified, no reply)

While ``pending_human`` or ``human`` the bot is silent on web and WhatsApp:
the customer's message is recorded (transcript and conversation log) and
notified to staff (one outbox notice per message, ``notify.slack`` /
``notify.email``: staff see each message as it comes, and an outage loses
none), and the turn's reply is empty. On the phone a person cannot type into a
live call (the call is transferred, or a person calls back), so phone turns
are always answered by the bot; the state is still recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal, get_args

from engine.config import DAYS, ClientConfig

__all__ = [
    "HELD",
    "ConversationBus",
    "HandoffEvent",
    "HandoffState",
    "InvalidHandoff",
    "RedisConversationBus",
    "is_open",
    "next_opening",
    "reply_here_text",
    "transition",
]

log = logging.getLogger("engine.handoff")

HandoffState = Literal["bot", "pending_human", "human", "resolved"]
HandoffEvent = Literal["escalated", "staff_reply", "release", "customer_message"]
STATES: tuple[HandoffState, ...] = get_args(HandoffState)
HELD: frozenset[str] = frozenset({"pending_human", "human"})
"""States in which the bot stays silent (web, WhatsApp)."""

_TRANSITIONS: dict[tuple[HandoffState, HandoffEvent], HandoffState] = {
    ("bot", "escalated"): "pending_human",
    ("resolved", "escalated"): "pending_human",
    ("pending_human", "escalated"): "pending_human",
    ("human", "escalated"): "human",
    ("bot", "staff_reply"): "human",
    ("pending_human", "staff_reply"): "human",
    ("human", "staff_reply"): "human",
    ("resolved", "staff_reply"): "human",
    ("pending_human", "release"): "resolved",
    ("human", "release"): "resolved",
    ("resolved", "release"): "resolved",
    ("bot", "release"): "bot",
    ("bot", "customer_message"): "bot",
    ("resolved", "customer_message"): "bot",
    ("pending_human", "customer_message"): "pending_human",
    ("human", "customer_message"): "human",
}


class InvalidHandoff(ValueError):
    """No transition from ``state`` on ``event`` (the table above has none)."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"no handoff transition from {state!r} on {event!r}")
        self.state, self.event = state, event


def transition(state: HandoffState, event: HandoffEvent) -> HandoffState:
    """The state after ``event`` in ``state``; raises :class:`InvalidHandoff`."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidHandoff(state, event) from None


# --------------------------------------------------------------------------- opening hours


def is_open(client: ClientConfig, now: datetime) -> bool:
    """True if ``now`` (aware) falls inside today's ``business_hours`` in the
    client's timezone. A client without any hours is taken as always open."""
    if not client.business_hours:
        return True
    local = now.astimezone(client.tz)
    hours = client.business_hours.get(DAYS[local.weekday()])
    return hours is not None and hours.open <= local.time() < hours.close


def next_opening(client: ClientConfig, now: datetime) -> datetime | None:
    """The next opening time after ``now`` (aware, client timezone) within a
    week; None when no day has hours."""
    local = now.astimezone(client.tz)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        hours = client.business_hours.get(DAYS[day.weekday()])
        if hours is None:
            continue
        start = datetime.combine(day, hours.open, tzinfo=client.tz)
        if start > local:
            return start
    return None


def _clock(at: datetime) -> str:
    hour = at.hour % 12 or 12
    minutes = f":{at.minute:02d}" if at.minute else ""
    return f"{hour}{minutes} {'AM' if at.hour < 12 else 'PM'}"


def _when(opening: datetime, now: datetime) -> str:
    """``today at 9 AM``, ``tomorrow at 9 AM``, ``on Monday at 9:30 AM``."""
    days = (opening.date() - now.astimezone(opening.tzinfo).date()).days
    day = "today" if days == 0 else "tomorrow" if days == 1 else f"on {opening:%A}"
    return f"{day} at {_clock(opening)}"


def reply_here_text(client: ClientConfig, now: datetime) -> str:
    """What the customer is told once a person was asked for (web, WhatsApp):
    during opening hours someone will reply here shortly; outside them, when."""
    if is_open(client, now):
        return f"Someone from {client.name} will reply here shortly."
    opening = next_opening(client, now)
    if opening is None:
        return f"Someone from {client.name} will reply here as soon as they can."
    return (
        f"We're closed right now; someone from {client.name} will reply here "
        f"when we open {_when(opening, now)}."
    )


def reopening_text(client: ClientConfig, now: datetime) -> str:
    """`` We open again tomorrow at 9 AM.`` outside opening hours, else empty."""
    if is_open(client, now):
        return ""
    opening = next_opening(client, now)
    return f" We open again {_when(opening, now)}." if opening else ""


# --------------------------------------------------------------------------- the signal


Listener = Callable[[], None]


class ConversationBus:
    """Tells open channel connections that a conversation has new committed
    events (a staff reply), so an idle web socket sends them at once.

    In-process: :meth:`publish` calls the listeners registered for the
    conversation key (``client_id:channel:session_id``) on this replica.
    :class:`RedisConversationBus` also carries the signal to other replicas.
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

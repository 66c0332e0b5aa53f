"""The engine contract: the one way a channel runs a turn.

A channel turns its wire format into a :class:`~engine.messages.NormalizedMessage`
(typed, frozen: client, channel, session, sender, text or speech transcript,
message id, :class:`~engine.messages.ChannelContext`) and calls
:meth:`TurnEngine.stream_turn` with :class:`TurnOptions`; it gets the typed
events of :data:`~engine.messages.TurnEvent` back, the last one always the
final :class:`~engine.messages.ConversationResponse`. :class:`engine.core.Engine`
implements it; channel tests may pass a fake.

::

    message = NormalizedMessage(
        client_id="spa-del-sol", channel=Channel.WEB, session_id="s1", text="hi"
    )
    async for event in engine.stream_turn(message, TurnOptions(replay=replay)):
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from engine.messages import NormalizedMessage, TurnEvent

if TYPE_CHECKING:
    from engine.commit import CommitHook

__all__ = ["Replay", "TurnEngine", "TurnOptions"]


@dataclass(slots=True)
class Replay:
    """A channel's replay log for one turn (the web chat's event log).

    ``encode(event_id, event)`` renders a turn event as the channel's JSON, or
    None for events the channel does not show (tool calls, handoffs);
    ``after`` is the highest id the connection already used. The engine numbers
    the turn's events after ``max(after, last committed id)`` in ``log`` as it
    emits them, and commits them with the turn: events streamed before the
    commit (a live agent's tokens, a ``discard``) and the rest. The channel
    sends what :meth:`unsent` returns after each event the turn yields.
    """

    encode: Callable[[int, TurnEvent], str | None]
    after: int = 0
    log: list[tuple[int, str]] = field(default_factory=list)
    sent: int = 0

    def add(self, base: int, event: TurnEvent) -> None:
        """Number ``event`` after ``base`` (the session's last committed id) and log it."""
        last = self.log[-1][0] if self.log else 0
        event_id = max(base, self.after, last) + 1
        text = self.encode(event_id, event)
        if text is not None:
            self.log.append((event_id, text))

    def unsent(self) -> list[tuple[int, str]]:
        """Logged events not yet handed to the channel (then marked handed)."""
        fresh = self.log[self.sent :]
        self.sent = len(self.log)
        return fresh

    def reset(self) -> None:
        """Forget every logged event (a conflicted attempt's): the next attempt
        numbers and logs its own."""
        self.log.clear()
        self.sent = 0

    @property
    def last_id(self) -> int:
        return self.log[-1][0] if self.log else 0


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """How a channel wants one turn run (all optional).

    ``purpose``: ``lead_capture`` | ``support`` | None (the router decides per
    the client's channel config). ``replay``: the channel's event log to commit
    with the turn (the web chat's). ``expect_session``: the caller holds a
    conversation it believes exists; if the store no longer has it, the turn
    raises UnknownSessionError instead of silently starting over. ``test``: a
    test conversation (kept out of the leads list). ``interrupt``: set by the
    channel when nobody listens to the reply any more (a barge-in on a call):
    every model stream of the turn is closed at once and the turn still
    commits. ``on_commit``: the channel's own writes, made in the turn's
    transaction with its final response (a messaging reply's outbox rows);
    raising from it rolls the turn back and is raised from the stream.
    """

    purpose: str | None = None
    replay: Replay | None = None
    expect_session: bool = False
    test: bool = False
    interrupt: asyncio.Event | None = None
    on_commit: CommitHook | None = None


class TurnEngine(Protocol):
    """What the channels call on the engine (:class:`engine.core.Engine`)."""

    def stream_turn(
        self, message: NormalizedMessage, options: TurnOptions = ...
    ) -> AsyncGenerator[TurnEvent, None]:
        """Run and commit one turn for ``message``, yielding its events; the last
        is the final :class:`~engine.messages.ConversationResponse`. Raises
        UnknownClientError, SessionBusyError, DuplicateMessageError (the message
        id was already consumed), CommitConflict, StoreError — after any of
        which nothing of the turn was written."""
        ...

    async def note_heard(
        self, client_id: str, channel: str, session_id: str, *, spoken: str, heard: str
    ) -> bool:
        """Record that a caller heard only ``heard`` of the last reply ``spoken``
        (after a barge-in); False when there is no such turn."""
        ...

"""The engine's answer to one caller turn, as sentences to speak.

:meth:`engine.Engine.stream_turn` yields typed events
(:data:`engine.messages.TurnEvent`): :class:`~engine.messages.TextDelta`
pieces of the reply, internal :class:`~engine.messages.ToolCall`,
:class:`~engine.messages.ToolResult` and :class:`~engine.messages.Handoff`
events (never spoken), :class:`~engine.messages.Discard` (the text streamed so
far is not the reply after all) and one final
:class:`~engine.messages.ConversationResponse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from channels.phone.failures import log_failure
from engine.contract import TurnEngine, TurnOptions
from engine.messages import (
    Channel,
    ChannelContext,
    ConversationResponse,
    Discard,
    NormalizedMessage,
    TextDelta,
)
from providers.speech.tts import SentenceSplitter, split_text

__all__ = ["PROBLEM_TEXT", "WITHDRAW", "Answer", "Withdraw"]

log = logging.getLogger("channels.phone.answer")

PROBLEM_TEXT = "Sorry, I'm having trouble on my side. Could you say that again?"
"""Said when the engine turn failed before any of its reply was streamed."""


class Withdraw:
    """Marker in :meth:`Answer.sentences`: stop speaking every sentence before it."""

    def __repr__(self) -> str:
        return "WITHDRAW"


WITHDRAW: Final = Withdraw()


FIRST_CLAUSE_CHARS = 12
"""A reply's long first sentence is spoken in two parts, cut after a clause of at
least this many characters: the caller hears the first words sooner."""


def _splitter() -> SentenceSplitter:
    return SentenceSplitter(first_clause_chars=FIRST_CLAUSE_CHARS)


class Answer:
    """One engine turn, run to completion in its own task (:attr:`task`), even when
    the caller interrupts its reply: a booking or a captured slot is never
    half-applied; only speaking stops.

    Deltas are split into sentences (:class:`providers.speech.tts.SentenceSplitter`)
    as they arrive. A ``Discard`` drops the sentences not yet taken and the
    unfinished one, puts :data:`WITHDRAW` in the stream and sets
    :attr:`withdrawn` (so speaking in progress can stop at once); what streams
    after it replaces the withdrawn text. The exception of a failed turn is
    logged by type name only.

    Args:
        engine: the engine (``app.state.engine``).
        client_id, call_sid: the session (``phone`` channel, keyed by Call SID).
        text: what the caller said (or the entry they keyed).
        context: the channel facts of the call.
    """

    def __init__(
        self,
        engine: TurnEngine,
        client_id: str,
        call_sid: str,
        text: str,
        context: ChannelContext,
    ) -> None:
        self.engine = engine
        self.client_id = client_id
        self.call_sid = call_sid
        self.text = text
        self.response: ConversationResponse | None = None
        """The final reply (None until the turn ends, or if it failed)."""
        self.failed = False
        self.withdrawn = asyncio.Event()
        """Set by each ``Discard``; the reader clears it when it takes the marker."""
        self.interrupt = asyncio.Event()
        """Set on a barge-in: the engine closes the turn's model streams at once
        (the offline engine finishes the turn, which still commits)."""
        self._queue: asyncio.Queue[str | Withdraw | None] = asyncio.Queue()
        self._splitter = _splitter()
        self._streamed = False  # a sentence was queued since the last Discard
        self.task = asyncio.create_task(self._run(context))

    async def _run(self, context: ChannelContext) -> None:
        try:
            message = NormalizedMessage(
                client_id=self.client_id,
                channel=Channel.PHONE,
                session_id=self.call_sid,
                text=self.text,
                context=context,
                sender=context.caller_number,
                modality="speech",
            )
            stream = self.engine.stream_turn(message, TurnOptions(interrupt=self.interrupt))
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        self._push(self._splitter.push(event.content))
                    elif isinstance(event, Discard):
                        self._discard()
                    elif isinstance(event, ConversationResponse):
                        self.response = event
                    # ToolCall, ToolResult, Handoff: internal, never spoken
        except Exception as exc:
            log_failure(log, logging.ERROR, exc, "call %s: engine turn failed", self.call_sid)
            self.failed = True
        finally:
            self._push([rest] if (rest := self._splitter.flush()) else [])
            if not self._streamed:  # nothing streamed: speak the final text
                if self.response is not None:
                    self._push(
                        split_text(self.response.text, first_clause_chars=FIRST_CLAUSE_CHARS)
                    )
                elif self.failed:
                    self._push([PROBLEM_TEXT])
            self._queue.put_nowait(None)

    def _push(self, sentences: list[str]) -> None:
        for sentence in sentences:
            self._streamed = True
            self._queue.put_nowait(sentence)

    def _discard(self) -> None:
        self._splitter = _splitter()
        self._streamed = False
        while not self._queue.empty():  # sentences not yet taken: never spoken
            self._queue.get_nowait()
        self._queue.put_nowait(WITHDRAW)
        self.withdrawn.set()

    async def sentences(self) -> AsyncIterator[str | Withdraw]:
        """The reply's sentences as they are produced, with :data:`WITHDRAW` where the
        engine discarded what came before (the final text if nothing streamed;
        :data:`PROBLEM_TEXT` if the turn failed before anything streamed)."""
        while (item := await self._queue.get()) is not None:
            if isinstance(item, Withdraw):
                self.withdrawn.clear()
            yield item

    async def note_heard(self, heard: str) -> None:
        """Tell the engine the caller heard only ``heard`` of this turn's final reply
        (after the turn has finished). Failures are logged by type name only."""
        await asyncio.gather(self.task, return_exceptions=True)
        if self.response is None:
            return
        try:
            await self.engine.note_heard(
                self.client_id, "phone", self.call_sid, spoken=self.response.text, heard=heard
            )
        except Exception as exc:
            log_failure(
                log,
                logging.ERROR,
                exc,
                "call %s: could not record what the caller heard",
                self.call_sid,
            )

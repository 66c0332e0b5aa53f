"""The bot's voice on a call: replies -> sentences -> TTS -> paced playback with marks.

One reply at a time is current (:attr:`Speaker.speaking`). A reply's
sentences are synthesised one by one into a :class:`~channels.phone.playback.Reply`
as they arrive, so the first sentence plays while the engine still writes the
rest. When the engine withdraws what it streamed (``Discard``), the reply's
audio is dropped (Twilio ``clear`` if some went out) and the text that follows
plays in a fresh reply; only that one counts for what the caller heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from channels.phone.answer import Answer, Withdraw
from channels.phone.playback import PacedPlayer, Reply
from channels.phone.state import CallEvent, CallStatus
from channels.phone.tasks import CallTasks
from channels.phone.trace import PHONE_EVENTS, CallTrace, CallTraces, TurnKind, TurnTrace
from channels.phone.turns import TurnTaker
from engine.config import ClientConfig
from engine.messages import Action, ConversationResponse
from providers.speech.tts import TextToSpeech, split_text

__all__ = ["MARK_GRACE_S", "Speaker", "Speaking"]

log = logging.getLogger("channels.phone.speaker")

MARK_GRACE_S = 1.5
"""How long after its audio has played (by the clock) a reply waits for its end mark."""


class Speaking:
    """One reply being prepared or played: its task, its current audio, its trace
    and, for an engine reply, the :class:`~channels.phone.answer.Answer`.

    Times are the loop's monotonic seconds. ``first_sent_at``/``first_ack_at``
    keep the first frame sent / mark echoed of a reply later withdrawn, so the
    trace's latency stages count the first audio the caller got.
    """

    def __init__(self, trace: TurnTrace, answer: Answer | None) -> None:
        self.trace = trace
        self.answer = answer
        self.task: asyncio.Task[None] | None = None
        self.reply: Reply | None = None
        self.first_sent_at: float | None = None
        self.first_ack_at: float | None = None

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    def withdrawn(self, reply: Reply) -> None:
        """``reply`` was dropped: keep only its timing."""
        if self.first_sent_at is None:
            self.first_sent_at = reply.first_sent_at
        if self.first_ack_at is None:
            self.first_ack_at = reply.first_ack_at

    def settle(self) -> None:
        """Fill the trace in from the playback report (the reply played or was cut)."""
        trace, reply = self.trace, self.reply
        if reply is not None:
            report = reply.report()
            trace.first_media = _first(self.first_sent_at, reply.first_sent_at)
            trace.first_mark_ack = _first(self.first_ack_at, reply.first_ack_at)
            trace.interrupted = not report.completed
            trace.heard_text = report.heard_text if report.completed else report.heard_words()
        trace.observe()


class Speaker:
    """Speaks one call's replies: fixed lines (greeting, reprompt, goodbye) and the
    engine's answers, through a :class:`~channels.phone.playback.PacedPlayer`
    (20 ms frames of 8 kHz mu-law, 160 bytes, a mark every 100 ms, per Twilio's
    "Media Streams - WebSocket Messages").

    If an answer's first sentence takes longer than ``filler_after_ms``, a
    filler line ("One moment.") plays first. Quick replies are offered as DTMF
    keys after the answer. A reply whose audio has played by the clock but
    whose end mark never came back counts as played after :data:`MARK_GRACE_S`.
    When a reply ends, the trace is filled in and saved; when an answer was
    cut, the engine is told what the caller heard. A reply's ``transfer`` or
    ``end_call`` is carried out once it has played.

    Args:
        player: the call's player (the call runs its pump).
        tts: the synthesiser.
        client: the client (``channels.phone.filler``, ``filler_after_ms``).
        trace, traces: the call's trace and where it is saved.
        tasks: the call's tasks.
        turns, status: told when the bot has finished speaking.
        offer_keys: the DTMF hint for a response ("" for none).
        apply: carries out a call action.
        clock: monotonic seconds.
        call_sid: for log lines.
    """

    def __init__(
        self,
        player: PacedPlayer,
        tts: TextToSpeech,
        client: ClientConfig,
        trace: CallTrace,
        traces: CallTraces,
        tasks: CallTasks,
        turns: TurnTaker,
        status: CallStatus,
        offer_keys: Callable[[ConversationResponse | None], str],
        apply: Callable[[Action], Awaitable[None]],
        clock: Callable[[], float],
        call_sid: str,
    ) -> None:
        phone = client.channels.phone
        self.player = player
        self.tts = tts
        self.filler_after_s = phone.filler_after_ms / 1000
        self.fillers = itertools.cycle(phone.filler) if phone.filler else None
        self.trace, self.traces, self.tasks = trace, traces, tasks
        self.turns, self.status = turns, status
        self.offer_keys, self.apply = offer_keys, apply
        self.clock, self.call_sid = clock, call_sid
        self.speaking: Speaking | None = None

    @property
    def active(self) -> bool:
        """A reply is being prepared or played."""
        return self.speaking is not None and self.speaking.active

    @property
    def held(self) -> bool:
        """A reply is under way but paused (the caller spoke)."""
        return self.active and self.player.paused

    def start(
        self,
        trace: TurnTrace,
        sentences: AsyncIterator[str | Withdraw],
        answer: Answer | None,
        *,
        hold: bool,
        filler: bool,
    ) -> Speaking:
        """Speak ``sentences`` as the new current reply; ``hold``: the caller is talking,
        so the player waits (paused) until :meth:`resume`."""
        speaking = self.speaking = Speaking(trace, answer)
        if hold:
            self.player.hold()  # never start talking over the caller
        speaking.task = self.tasks.spawn(self._speak(speaking, sentences, filler=filler))
        return speaking

    def say(self, kind: TurnKind, text: str, *, hold: bool, filler: bool = False) -> Speaking:
        """Speak a fixed line (greeting, reprompt, goodbye) as the new current reply."""
        trace = self.trace.new_turn(kind)
        trace.reply_text = text
        trace.transcript = self.clock()  # no caller speech: those stages stay null

        async def sentences() -> AsyncIterator[str | Withdraw]:
            for sentence in split_text(text):
                yield sentence

        return self.start(trace, sentences(), None, hold=hold, filler=filler)

    async def pause(self) -> None:
        """The caller started talking while a reply is under way: do not talk over them."""
        if self.active:
            await self.player.pause()

    def resume(self) -> None:
        self.player.resume()

    async def interrupt(self) -> None:
        """Stop the bot: cancel the current reply and clear Twilio's buffered audio."""
        speaking, self.speaking = self.speaking, None
        if speaking is not None and speaking.answer is not None:
            speaking.answer.interrupt.set()  # stop the model's stream; the turn still commits
        if speaking is not None and speaking.task is not None and not speaking.task.done():
            speaking.task.cancel()
            await asyncio.gather(speaking.task, return_exceptions=True)
        await self.player.clear()

    # -- one reply

    async def _speak(
        self, speaking: Speaking, sentences: AsyncIterator[str | Withdraw], *, filler: bool
    ) -> None:
        """Synthesize each sentence into the reply as it arrives; return once it has played."""
        reply = speaking.reply = self.player.start_reply()
        trace, answer = speaking.trace, speaking.answer
        first = asyncio.ensure_future(anext(sentences, None))
        try:
            if filler and self.fillers is not None:
                done, _ = await asyncio.wait({first}, timeout=self.filler_after_s)
                if not done:
                    PHONE_EVENTS.labels("filler").inc()
                    trace.filler = True
                    await self._say_into(reply, next(self.fillers))
            item = await first
            spoken: list[str] = []
            kept_ms = reply.queued_ms  # the filler, if any: not the engine's text
            while item is not None:
                if isinstance(item, Withdraw):
                    spoken = []
                    if reply.queued_ms > kept_ms:  # audio of the withdrawn text is in it
                        reply = await self._withdraw(speaking, reply)
                        kept_ms = 0
                else:
                    if trace.first_text is None:
                        trace.first_text = self.clock()
                    spoken.append(item)
                    withdrawn = answer.withdrawn if answer is not None else None
                    await _synthesize(self.tts, reply, item, trace, self.clock, withdrawn)
                item = await anext(sentences, None)
            if answer is not None:
                hint = self.offer_keys(answer.response)
                if hint:
                    await self._say_into(reply, hint)
                    spoken.append(hint)
                trace.reply_text = " ".join(spoken)
            reply.finish()
            await self._wait_played(reply)
        finally:
            first.cancel()
            reply.finish()
            with contextlib.suppress(Exception):
                await sentences.aclose()  # type: ignore[attr-defined]
            self._reply_over(speaking)
        if answer is not None and answer.response is not None:
            for action in answer.response.actions:
                await self.apply(action)

    async def _say_into(self, reply: Reply, text: str) -> None:
        """A line that is not the engine's text (a filler, the DTMF hint); untimed."""
        await _synthesize(self.tts, reply, text, None, self.clock)

    async def _withdraw(self, speaking: Speaking, reply: Reply) -> Reply:
        """Drop ``reply`` (the engine took its text back); return a fresh one."""
        PHONE_EVENTS.labels("withdrawn").inc()
        speaking.withdrawn(reply)
        cleared = await self.player.withdraw(reply)
        log.info("call %s: the engine withdrew its reply (cleared=%s)", self.call_sid, cleared)
        speaking.reply = self.player.start_reply()
        return speaking.reply

    async def _wait_played(self, reply: Reply) -> None:
        """Wait for the end mark; fall back on the clock if Twilio never echoes it."""
        overdue_since: float | None = None
        while not reply.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reply.wait_played(), 0.25)
                return
            waiting = reply.end_mark_sent and not self.player.paused and self.player.lead_ms == 0
            if not waiting:
                overdue_since = None
            elif overdue_since is None:
                overdue_since = self.clock()
            elif self.clock() - overdue_since >= MARK_GRACE_S:
                log.debug("call %s: end mark not echoed; counting the reply played", self.call_sid)
                self.player.complete_unacked(reply)

    def _reply_over(self, speaking: Speaking) -> None:
        """Bookkeeping when a reply finished playing or was cut."""
        speaking.settle()
        if self.speaking is speaking:
            self.speaking = None
            self.turns.bot_finished_speaking(self.clock())
            self.status.on(CallEvent.REPLY_OVER)
        trace = speaking.trace
        if speaking.answer is not None and trace.interrupted:
            self.tasks.spawn_engine(speaking.answer.note_heard(trace.heard_text))
        self.tasks.spawn_engine(self.traces.save(self.trace))


async def _synthesize(
    tts: TextToSpeech,
    reply: Reply,
    sentence: str,
    trace: TurnTrace | None,
    clock: Callable[[], float],
    withdrawn: asyncio.Event | None = None,
) -> None:
    """Add ``sentence``'s audio (PCM16 chunks at the synthesiser's rate) to ``reply``,
    as one text segment; note the first chunk's time in ``trace.first_audio``.

    Stops early once ``withdrawn`` is set (the engine took the text back: the
    reply is dropped anyway). A synthesis failure is raised, as without it.
    """
    if withdrawn is None:
        await _tts(tts, reply, sentence, trace, clock)
        return
    speaking = asyncio.ensure_future(_tts(tts, reply, sentence, trace, clock))
    stop = asyncio.ensure_future(withdrawn.wait())
    try:
        await asyncio.wait({speaking, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (speaking, stop):
            future.cancel()
        await asyncio.gather(speaking, stop, return_exceptions=True)
    if not speaking.cancelled():
        speaking.result()


async def _tts(
    tts: TextToSpeech,
    reply: Reply,
    sentence: str,
    trace: TurnTrace | None,
    clock: Callable[[], float],
) -> None:
    text: str | None = sentence
    async with contextlib.aclosing(tts.synthesize(sentence)) as chunks:
        async for chunk in chunks:
            if trace is not None and trace.first_audio is None:
                trace.first_audio = clock()
            reply.add_pcm(chunk.pcm, chunk.sample_rate_hz, text=text)
            text = None


def _first(withdrawn: float | None, kept: float | None) -> float | None:
    return withdrawn if withdrawn is not None else kept

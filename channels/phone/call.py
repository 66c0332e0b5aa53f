"""One phone call after Twilio's ``start``: the coordinator of its parts.

Per event::

    media          -> Inbound (VAD, echo, TurnTaker) -> turn events, below
    mark           -> PacedPlayer.on_mark
    dtmf           -> DtmfEntry (an entry is answered like speech)
    stop / closed  -> tasks cancelled; engine turns in flight finish (nothing is lost)

    SpeechStarted   -> hold a reply being prepared; open an STT stream
    BargeInStarted  -> pause the bot now (Twilio ``clear``), keep the rest of the reply
    BargeIn         -> the interruption is final: drop the reply
    BargeInEnded    -> a short interjection: a backchannel resumes the bot, words are a turn
    EndOfTurn       -> finalize -> Answer (Engine.stream_turn) -> Speaker
    SilenceTimeout  -> reprompt; after ``max_reprompts``, goodbye and hang up
    CallTimeLimit   -> goodbye and hang up

The call's own state (:class:`~channels.phone.state.CallStatus`) follows these.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from channels.phone.actions import CallActions
from channels.phone.answer import Answer
from channels.phone.bargein import BargeIns
from channels.phone.budget import AudioBudget
from channels.phone.codec import Dtmf, Mark, Media, Stop
from channels.phone.dtmf import DtmfEntry
from channels.phone.endpointing import complete_answer, stt_context
from channels.phone.inbound import Inbound, Speculation
from channels.phone.speaker import Speaker
from channels.phone.state import CallEvent, CallStatus
from channels.phone.stream import MediaStream
from channels.phone.tasks import CallTasks
from channels.phone.trace import PHONE_EVENTS, CallTrace, CallTraces, TurnTrace
from channels.phone.turns import (
    BargeIn,
    BargeInEnded,
    BargeInStarted,
    CallTimeLimit,
    EndOfTurn,
    Pause,
    SilenceTimeout,
    SpeechStarted,
    TurnEvent,
)
from engine.config import ClientConfig
from engine.contract import TurnEngine
from engine.messages import Action, ChannelContext
from providers.speech.audio import TWILIO_SAMPLE_RATE_HZ
from providers.speech.stt import SttStream

__all__ = ["Call"]

log = logging.getLogger("channels.phone.call")


def _words(text: str) -> str:
    """``text`` casefolded to its words, for matching backchannels ("Mm-hm." -> "mm hm")."""
    return " ".join(re.findall(r"[a-z0-9']+", text.casefold().replace("-", " ")))


class Call:
    """One connected Media Stream (one phone call), wired by :mod:`channels.phone.media`.

    Acts on the caller's turns: answers what they said (or keyed), resumes
    the bot after a backchannel, reprompts a silent caller and says goodbye.
    Everything it starts runs in ``tasks`` and is gone when :meth:`run`
    returns.

    Args:
        stream: the websocket.
        client: the client (``channels.phone``: greeting, reprompt, goodbye, backchannels).
        call_sid: Twilio's Call SID (the engine session id).
        context: the channel facts sent with each turn.
        engine: the engine (:class:`~engine.contract.TurnEngine`).
        clock: monotonic seconds (the event loop's ``time``).
        status, trace, traces, tasks: the call's state, trace (and where it is
            saved) and tasks.
        inbound, speaker, barge_ins, dtmf, actions: the parts.
        budget: admits inbound audio at real time plus a burst; the rest is dropped.
        on_dropped: called with the seconds of each dropped payload (a metric).
    """

    def __init__(
        self,
        *,
        stream: MediaStream,
        client: ClientConfig,
        call_sid: str,
        context: ChannelContext,
        engine: TurnEngine,
        clock: Callable[[], float],
        status: CallStatus,
        trace: CallTrace,
        traces: CallTraces,
        tasks: CallTasks,
        inbound: Inbound,
        speaker: Speaker,
        barge_ins: BargeIns,
        dtmf: DtmfEntry,
        actions: CallActions,
        budget: AudioBudget,
        on_dropped: Callable[[float], None] = lambda _s: None,
    ) -> None:
        self.stream, self.client, self.phone = stream, client, client.channels.phone
        self.call_sid, self.context, self.engine, self.clock = call_sid, context, engine, clock
        self.status, self.trace, self.traces, self.tasks = status, trace, traces, tasks
        self.inbound, self.speaker, self.barge_ins = inbound, speaker, barge_ins
        self.dtmf, self.actions = dtmf, actions
        self.budget, self._on_dropped = budget, on_dropped
        self.backchannels = frozenset(_words(b) for b in self.phone.turn_taking.backchannels)
        self.services = tuple(
            name for service in client.services for name in (service.name, *service.aliases)
        )
        self.expecting: str | None = None
        """What the flow's last reply asked for (``ResponseMetadata.expecting``)."""

    async def run(self) -> None:
        """Play the greeting, then handle Twilio's events until ``stop`` or hang-up."""
        try:
            self.tasks.spawn(self.speaker.player.run())
            if self.phone.greeting:
                self.speaker.say("greeting", self.phone.greeting, hold=self.inbound.caller_talking)
            while (event := await self.stream.receive()) is not None:
                match event:
                    case Media(payload=payload):
                        if self.budget.admit(len(payload), self.clock()):
                            await self.inbound.feed(payload, self._on_turn_event)
                        else:
                            self._dropped(len(payload))
                    case Mark(name=name):
                        self.speaker.player.on_mark(name)
                    case Dtmf(digit=digit):
                        await self._on_key(digit)
                    case Stop():
                        log.info("media stream stopped: call=%s", self.call_sid)
                        return
        finally:
            await self._shutdown()

    def _dropped(self, payload_bytes: int) -> None:
        self._on_dropped(payload_bytes / TWILIO_SAMPLE_RATE_HZ)
        if self.budget.dropped_payloads == 1:
            log.warning(
                "call %s: inbound audio arrives faster than real time; dropping the excess",
                self.call_sid,
            )

    async def _shutdown(self) -> None:
        if self.budget.dropped_payloads:
            log.warning(
                "call %s: dropped %.1f s of inbound audio (%d payloads) beyond real time",
                self.call_sid,
                self.budget.dropped_s,
                self.budget.dropped_payloads,
            )
        self.status.on(CallEvent.CLOSED)
        self.dtmf.close()
        self.speaker.player.close()
        await self.tasks.cancel()
        await self.inbound.close()
        await self.tasks.drain()
        await self.traces.save(self.trace)

    # -- the caller's turns

    async def _on_turn_event(self, event: TurnEvent) -> None:
        match event:
            case SpeechStarted(audio=audio):
                self.status.on(CallEvent.CALLER_STARTED)
                await self.speaker.pause()
                await self.inbound.open_stt(audio, stt_context(self.expecting))
            case BargeInStarted(audio=audio, onset_s=onset):
                self.status.on(CallEvent.CALLER_STARTED)
                await self.barge_ins.onset(onset)
                await self.inbound.open_stt(audio, stt_context(self.expecting))
            case BargeIn():
                log.info("call %s: barge-in", self.call_sid)
                self.barge_ins.settle("interrupted")
                await self.speaker.interrupt()
            case BargeInEnded():
                text = await self.inbound.finalize(self.inbound.take_stt())
                await self._caller_said(text, None)
            case Pause(pause=pause):
                speculation = self.inbound.speculate(pause)
                if speculation is not None and self.phone.turn_taking.early_end:
                    self.tasks.spawn(self._end_if_complete(speculation))
            case EndOfTurn(pause=pause) as end:
                stream = self.inbound.take_stt()
                speculation = self.inbound.take_speculation(pause)
                if stream is not None:
                    self.tasks.spawn(self._answer(stream, end, speculation))
            case SilenceTimeout(count=count):
                await self._on_silence(count)
            case CallTimeLimit(elapsed_s=elapsed):
                log.warning("call %s: time limit (%.0f s); ending", self.call_sid, elapsed)
                PHONE_EVENTS.labels("time_limit").inc()
                await self._goodbye()

    async def _end_if_complete(self, speculation: Speculation) -> None:
        """Semantic end-of-turn: end the caller's turn now, in the pause the
        speculation was taken in, if its transcript is a complete answer to what
        was asked (:func:`~channels.phone.endpointing.complete_answer`)."""
        transcript = await speculation.task
        if transcript is None or not complete_answer(
            transcript.text, self.expecting, self.services
        ):
            return
        for event in self.inbound.turns.end_turn_now(self.clock(), speculation.pause):
            PHONE_EVENTS.labels("early_end_of_turn").inc()
            await self._on_turn_event(event)

    async def _answer(
        self, stream: SttStream, end: EndOfTurn, speculation: Speculation | None
    ) -> None:
        trace = self.trace.new_turn("speech")
        trace.end_of_turn = end.at_s
        trace.speech_end = end.at_s - end.silence_ms / 1000
        text = await self.inbound.finalize(stream, speculation)
        trace.transcript = self.clock()
        trace.user_text = text
        if not text:
            self.trace.turns.remove(trace)
        await self._caller_said(text, trace)

    async def _caller_said(self, text: str, trace: TurnTrace | None) -> None:
        """Act on a finished caller utterance: resume a held reply, or answer it."""
        held = self.speaker.held
        if held and (not text or _words(text) in self.backchannels):
            self.barge_ins.settle("resumed")
            PHONE_EVENTS.labels("backchannel").inc()
            self.status.on(CallEvent.RESUMED)
            self.speaker.resume()
            log.info("call %s: a backchannel did not interrupt; resuming", self.call_sid)
            return
        if held:
            self.barge_ins.settle("answered")
            await self.speaker.interrupt()
        if not text:
            self.status.on(CallEvent.CALLER_DONE)
            self.speaker.resume()
            self.inbound.turns.bot_finished_speaking(self.clock())  # back to listening
            return
        self._converse(text, trace or self.trace.new_turn("speech"))

    async def _on_key(self, digit: str) -> None:
        if self.dtmf.idle and self.speaker.speaking is not None:
            self.barge_ins.settle("interrupted")
            await self.speaker.interrupt()  # a key press is a clear wish to interrupt
            self.status.on(CallEvent.REPLY_OVER)
        await self.dtmf.press(digit, self._on_entry)

    async def _on_entry(self, text: str, digits: str) -> None:
        trace = self.trace.new_turn("dtmf")
        trace.user_text = digits
        trace.speech_end = trace.end_of_turn = trace.transcript = self.clock()
        await self.speaker.interrupt()
        self._converse(text, trace)

    def _converse(self, text: str, trace: TurnTrace) -> None:
        """Send ``text`` to the engine and speak its answer as it streams."""
        if self.status.closing:
            return
        answer = Answer(self.engine, self.client.client_id, self.call_sid, text, self.context)
        self.tasks.adopt_engine(answer.task)
        answer.task.add_done_callback(lambda _task: self._asked(answer))
        self.status.on(CallEvent.ASKED)
        self.speaker.start(
            trace, answer.sentences(), answer, hold=self.inbound.caller_talking, filler=True
        )

    def _asked(self, answer: Answer) -> None:
        """Remember what the reply asked for, for semantic end-of-turn."""
        response = answer.response
        self.expecting = response.metadata.expecting if response is not None else None

    # -- silence and goodbye

    async def _on_silence(self, count: int) -> None:
        if self.status.closing or self.speaker.active:
            return
        if count > self.phone.max_reprompts:
            log.info("call %s: caller silent after %d reprompts; ending", self.call_sid, count - 1)
            await self._goodbye()
            return
        PHONE_EVENTS.labels("reprompt").inc()
        self.speaker.say("reprompt", self.phone.reprompt, hold=self.inbound.caller_talking)

    async def _goodbye(self) -> None:
        if self.status.closing:
            return
        self.status.on(CallEvent.GOODBYE)
        PHONE_EVENTS.labels("goodbye").inc()
        await self.speaker.interrupt()
        speaking = self.speaker.say("goodbye", self.phone.goodbye, hold=self.inbound.caller_talking)
        assert speaking.task is not None
        self.tasks.spawn(self._end_after(speaking.task))

    async def _end_after(self, task: asyncio.Task[None]) -> None:
        await asyncio.gather(task, return_exceptions=True)
        await self.actions.apply(Action(type="end_call"))

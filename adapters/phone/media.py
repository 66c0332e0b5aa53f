"""The Twilio Media Streams websocket: one live phone conversation per connection.

``WS /twilio/media/{client_id}`` is where the TwiML ``<Connect><Stream>`` of
:mod:`adapters.phone.webhook` points. Per call::

    inbound media -> mu-law -> PCM16 (20 ms frames) -> VAD, echo check, voicing -> TurnTaker
      SpeechStarted   -> open an STT stream (a reply being prepared is held)
      EndOfTurn       -> finalize -> Engine.stream_turn -> sentences -> TTS -> PacedPlayer
      BargeInStarted  -> pause the bot now (Twilio ``clear``), keep the rest of the reply
      BargeIn         -> the interruption is final: drop the reply
      BargeInEnded    -> a short interjection: a backchannel resumes the bot, words are a turn
      SilenceTimeout  -> reprompt; after ``max_reprompts``, goodbye and hang up
      CallTimeLimit   -> goodbye and hang up
    mark -> player.on_mark;  dtmf -> digits (a quick reply by number, or typed digits)
    stop / socket closed -> tasks cancelled; engine turns in flight finish (nothing is lost)

Choices worth knowing:

* The engine turn runs to completion in its own task even when the caller
  interrupts its reply, so a booking or a captured slot is never half-applied;
  only speaking stops. When a reply is cut, the transcript keeps only what the
  caller heard (by echoed marks), via :meth:`engine.core.Engine.note_heard`.
* If the engine's first sentence takes longer than ``filler_after_ms``, a
  short filler line ("One moment.") plays first, so the caller never hears
  dead air.
* Quick replies are offered as DTMF ("Or press 1 for ..., 2 for ...") when
  there are two to five; a single key within range answers with that choice.
  Several keys (ended by ``#`` or 1.5 s without a key) are sent as typed
  digits, e.g. a phone number.
* ``end_call`` uses Twilio's REST API when the client has credentials;
  otherwise the stream is closed, which ends ``<Connect>`` and, as the TwiML
  has nothing after it, the call. ``transfer`` needs credentials. Both are
  queued in the outbox (kind ``twilio.call``, an idempotency key per call and
  turn) once the reply has played, and delivered by the outbox worker.
* Marks that never come back (a peer that does not echo them) do not wedge the
  call: a reply whose audio has played by the clock, plus
  :data:`MARK_GRACE_S`, counts as played.

Reads ``app.state``: ``registry``, ``engine``, ``outbox``, ``http``, ``phone_settings``,
``speech_hub`` (:class:`~adapters.speech.providers.SpeechHub`) and
``call_traces`` (:class:`~adapters.phone.trace.CallTraces`); the last two are
created on first use if the app did not set them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from adapters.phone.codec import (
    CodecError,
    Connected,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    Start,
    Stop,
    decode_inbound,
)
from adapters.phone.playback import PacedPlayer, Reply
from adapters.phone.trace import (
    BARGE_IN_SECONDS,
    PHONE_EVENTS,
    BargeInTrace,
    CallTrace,
    CallTraces,
    TurnKind,
    TurnTrace,
)
from adapters.phone.turns import (
    BargeIn,
    BargeInEnded,
    BargeInStarted,
    CallTimeLimit,
    EndOfTurn,
    SilenceTimeout,
    SpeechStarted,
    TurnConfig,
    TurnEvent,
    TurnState,
    TurnTaker,
)
from adapters.speech.audio import (
    TWILIO_FRAME_BYTES,
    TWILIO_SAMPLE_RATE_HZ,
    FrameBuffer,
    ulaw_to_pcm16,
)
from adapters.speech.echo import EchoDetector
from adapters.speech.errors import SpeechError
from adapters.speech.providers import SpeechHub, SpeechProviders, SttSpec, TtsSpec
from adapters.speech.stt import SttStream
from adapters.speech.tts import split_sentences, split_text
from adapters.speech.vad import VOICED_PERIODICITY, WebRtcVad, frame_energy_dbfs, periodicity
from engine.config import ClientConfig
from engine.messages import Action, ChannelContext, ConversationResponse, QuickReply, TextDelta
from engine.outbox import Outbox, OutboxItem

__all__ = ["MARK_GRACE_S", "START_TIMEOUT_S", "media_router", "speech_specs"]

log = logging.getLogger("adapters.phone.media")

START_TIMEOUT_S = 10.0
"""A socket that sends no valid ``start`` this long after connecting is closed (4408)."""
MARK_GRACE_S = 1.5
"""How long after its audio has played (by the clock) a reply waits for its end mark."""
SHUTDOWN_GRACE_S = 10.0
CALL_ACTION_TTL_S = 120.0
"""A transfer or hang-up not delivered within this many seconds is dropped
(dead in the outbox): the call it was for is over by then."""
"""How long engine turns still running at hang-up get to finish and save."""
DTMF_INTER_DIGIT_S = 1.5
"""Silence between keys that ends a DTMF entry (``#`` ends it at once)."""
CLOSE_UNKNOWN_CLIENT = 4404
CLOSE_NO_START = 4408
CLOSE_NO_SPEECH = 1011
_ECHO_WINDOW_S = 1.0  # after the last frame sent, inbound audio may still hold its echo
_PROBLEM_TEXT = "Sorry, I'm having trouble on my side. Could you say that again?"


def media_router() -> APIRouter:
    """``WS /twilio/media/{client_id}``: the bidirectional Media Stream of a call."""
    router = APIRouter()

    @router.websocket("/twilio/media/{client_id}")
    async def media_stream(websocket: WebSocket, client_id: str) -> None:
        await websocket.accept()
        state = websocket.app.state
        client: ClientConfig | None = state.registry.get(client_id)
        if client is None or not client.channels.phone.enabled:
            log.warning("media stream for unknown or disabled client %r", client_id)
            await websocket.close(CLOSE_UNKNOWN_CLIENT)
            return
        hub: SpeechHub | None = getattr(state, "speech_hub", None)
        if hub is None:
            hub = state.speech_hub = SpeechHub()
        traces: CallTraces | None = getattr(state, "call_traces", None)
        if traces is None:
            traces = state.call_traces = CallTraces()
        try:
            speech = await hub.get(*speech_specs(client))
        except SpeechError as exc:
            log.error("media stream for %s: no speech providers (%s); closing", client_id, exc)
            await websocket.close(CLOSE_NO_SPEECH)
            return
        await _Call(websocket, client, speech, traces).run()

    return router


def speech_specs(client: ClientConfig) -> tuple[SttSpec, TtsSpec]:
    """The recogniser and synthesiser a client's calls use (from its ``voice`` config).

    The recogniser is biased to the client's business name, services and
    their aliases, ``voice.stt.phrases`` and the backchannel words.
    """
    stt, tts = client.voice.stt, client.voice.tts
    phrases = [client.name]
    for service in client.services:
        phrases.append(service.name)
        phrases.extend(service.aliases)
    phrases.extend(stt.phrases)
    phrases.extend(client.channels.phone.turn_taking.backchannels)
    return (
        SttSpec(stt.provider, stt.model, tuple(phrases)),
        TtsSpec(tts.provider, tts.voice or tts.model),
    )


def _turn_config(client: ClientConfig) -> TurnConfig:
    phone = client.channels.phone
    tt = phone.turn_taking
    return TurnConfig(
        min_speech_ms=tt.min_speech_ms,
        endpoint_silence_ms=tt.endpoint_silence_ms,
        barge_in_onset_ms=min(tt.barge_in_onset_ms, tt.barge_in_min_ms),
        barge_in_min_ms=tt.barge_in_min_ms,
        backchannel_silence_ms=tt.backchannel_silence_ms,
        silence_timeout_s=tt.silence_timeout_s,
        max_call_s=phone.max_call_minutes * 60,
    )


def _e164(value: str | None) -> str | None:
    return value if value and re.fullmatch(r"\+[1-9]\d{1,14}", value) else None


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.casefold().replace("-", " ")))


class _EngineTurn:
    """One engine turn, run to completion in its own task; deltas go through a queue."""

    def __init__(self, call: _Call, text: str) -> None:
        self.text = text
        self.response: ConversationResponse | None = None
        self.failed = False
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(call))

    async def _run(self, call: _Call) -> None:
        engine = call.ws.app.state.engine
        try:
            stream = engine.stream_turn(
                call.client.client_id, "phone", None, call.call_sid, self.text, call.context
            )
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        self._queue.put_nowait(event.content)
                    elif isinstance(event, ConversationResponse):
                        self.response = event
        except Exception:
            log.exception("call %s: engine turn failed", call.call_sid)
            self.failed = True
        finally:
            self._queue.put_nowait(None)

    async def sentences(self) -> AsyncIterator[str]:
        """The reply's sentences as they are produced (the final text if none streamed)."""

        async def deltas() -> AsyncIterator[str]:
            while (item := await self._queue.get()) is not None:
                yield item

        spoken = False
        async for sentence in split_sentences(deltas()):
            spoken = True
            yield sentence
        if spoken:
            return
        if self.response is not None:
            for sentence in split_text(self.response.text):
                yield sentence
        elif self.failed:
            yield _PROBLEM_TEXT


class _Speaking:
    """A reply being prepared or played: its task, audio and trace."""

    def __init__(self, trace: TurnTrace) -> None:
        self.trace = trace
        self.task: asyncio.Task[None] | None = None
        self.reply: Reply | None = None
        self.engine: _EngineTurn | None = None

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()


class _Call:
    """One connected Media Stream (one phone call)."""

    def __init__(
        self,
        websocket: WebSocket,
        client: ClientConfig,
        speech: SpeechProviders,
        traces: CallTraces,
    ) -> None:
        phone = client.channels.phone
        self.ws = websocket
        self.client = client
        self.phone = phone
        self.speech = speech
        self.traces = traces
        self.loop = asyncio.get_running_loop()
        self.turns = TurnTaker(_turn_config(client), started_at=self.loop.time())
        self.vad = WebRtcVad(phone.turn_taking.vad_aggressiveness)
        self.echo = EchoDetector(TWILIO_SAMPLE_RATE_HZ)
        self.backchannels = frozenset(_words(b) for b in phone.turn_taking.backchannels)
        self.fillers = itertools.cycle(phone.filler) if phone.filler else None
        self.call_sid = ""
        self.context = ChannelContext()
        self.trace = CallTrace("", client.client_id)
        self.player: PacedPlayer | None = None
        self.stt: SttStream | None = None
        self.speaking: _Speaking | None = None
        self.barge: BargeInTrace | None = None
        self.quick_replies: tuple[QuickReply, ...] = ()
        self.digits = ""
        self.digit_timer: asyncio.TimerHandle | None = None
        self.ending = False
        self.framer = FrameBuffer(TWILIO_FRAME_BYTES)
        self.odd_payloads = 0
        self.previous_frame = bytes(2 * TWILIO_FRAME_BYTES)
        self.last_sent_at = -1e9
        self.tasks: set[asyncio.Task[None]] = set()
        self.engine_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle

    async def run(self) -> None:
        try:
            start = await self._wait_for_start()
            if start is None:
                return
            self.call_sid = start.call_sid
            params = start.custom_parameters
            # Our own TwiML passes these (adapters.phone.webhook.STREAM_PARAMETERS);
            # the caller's number is left out when the caller ID is withheld.
            self.context = ChannelContext(
                caller_number=_e164(params.get("caller")),
                called_number=_e164(params.get("to")),
                call_sid=params.get("call_sid") or start.call_sid,
            )
            self.trace = self.traces.open(start.call_sid, self.client.client_id)
            log.info(
                "media stream started: client=%s call=%s", self.client.client_id, start.call_sid
            )
            self.player = PacedPlayer(
                self._send,
                start.stream_sid,
                clock=self.loop.time,
                on_frame_sent=self._on_frame_sent,
            )
            self._spawn(self.player.run())
            if self.phone.greeting:
                self._say("greeting", self.phone.greeting)
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            await self._shutdown()
            if self.ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await self.ws.close()

    async def _wait_for_start(self) -> Start | None:
        deadline = self.loop.time() + START_TIMEOUT_S
        while True:
            try:
                raw = await asyncio.wait_for(self._receive(), deadline - self.loop.time())
            except TimeoutError:
                log.warning("media stream: no start message in %.0f s; closing", START_TIMEOUT_S)
                await self.ws.close(CLOSE_NO_START)
                return None
            if raw is None:
                return None
            event = _decode(raw)
            if isinstance(event, Start):
                return event
            if isinstance(event, Stop):
                return None

    async def _receive_loop(self) -> None:
        while (raw := await self._receive()) is not None:
            event = _decode(raw)
            match event:
                case Media(payload=payload):
                    await self._on_media(payload)
                case Mark(name=name):
                    assert self.player is not None
                    self.player.on_mark(name)
                case Dtmf(digit=digit):
                    await self._on_digit(digit)
                case Stop():
                    log.info("media stream stopped: call=%s", self.call_sid)
                    return
                case Connected() | Start() | None:
                    pass

    async def _receive(self) -> str | bytes | None:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data: str | bytes | None = message.get("text") or message.get("bytes")
        return data or ""

    async def _shutdown(self) -> None:
        if self.digit_timer is not None:
            self.digit_timer.cancel()
        if self.player is not None:
            self.player.close()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drop_stt()
        if self.engine_tasks:  # the caller's last words are saved, not dropped
            await asyncio.wait(list(self.engine_tasks), timeout=SHUTDOWN_GRACE_S)
            for task in self.engine_tasks:
                task.cancel()
        await self._persist_trace()

    async def _persist_trace(self) -> None:
        try:
            await self.traces.persist(self.trace)
        except Exception as exc:  # a trace is diagnostics: never fail a call for it
            log.warning("call %s: trace not saved: %s", self.call_sid, type(exc).__name__)

    def _spawn(
        self, coro: Coroutine[Any, Any, None], *, engine: bool = False
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        group = self.engine_tasks if engine else self.tasks
        group.add(task)
        task.add_done_callback(group.discard)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("call %s: task failed", self.call_sid, exc_info=exc)

    async def _send(self, text: str) -> None:
        await self.ws.send_text(text)

    # -- caller audio

    async def _on_media(self, payload: bytes) -> None:
        if len(payload) % TWILIO_FRAME_BYTES:
            self.odd_payloads += 1
            if self.odd_payloads == 1:
                log.warning(
                    "call %s: media payload of %d bytes is not whole 20 ms frames; reframing",
                    self.call_sid,
                    len(payload),
                )
        for frame in self.framer.push(payload):
            await self._on_frame(ulaw_to_pcm16(frame))

    async def _on_frame(self, frame: bytes) -> None:
        now = self.loop.time()
        self.echo.note_inbound(frame)
        is_speech = self.vad.is_speech(frame, TWILIO_SAMPLE_RATE_HZ)
        if is_speech and now - self.last_sent_at < _ECHO_WINDOW_S and self.echo.is_echo():
            is_speech = False  # our own voice coming back
        voiced: bool | None = None
        if is_speech and self.turns.state is TurnState.BOT_SPEAKING:
            window = self.previous_frame[-len(frame) :] + frame
            voiced = periodicity(window, TWILIO_SAMPLE_RATE_HZ) >= VOICED_PERIODICITY
        self.previous_frame = frame
        for event in self.turns.feed(frame, is_speech, now, voiced):
            await self._on_turn_event(event)
        if self.turns.frame_in_turn and self.stt is not None:
            self.stt.feed(frame)

    async def _on_turn_event(self, event: TurnEvent) -> None:
        match event:
            case SpeechStarted(audio=audio):
                await self._hold()
                await self._open_stt(audio)
            case BargeInStarted(audio=audio, onset_s=onset):
                await self._on_barge_in_onset(onset)
                await self._open_stt(audio)
            case BargeIn():
                log.info("call %s: barge-in", self.call_sid)
                self._barge_outcome("interrupted")
                await self._interrupt()
            case BargeInEnded():
                stream, self.stt = self.stt, None
                text = await self._finalize(stream)
                await self._caller_said(text, None)
            case EndOfTurn(at_s=at):
                stream, self.stt = self.stt, None
                if stream is not None:
                    self._spawn(self._answer(stream, at))
            case SilenceTimeout(count=count):
                await self._on_silence(count)
            case CallTimeLimit(elapsed_s=elapsed):
                log.warning("call %s: time limit (%.0f s); ending", self.call_sid, elapsed)
                PHONE_EVENTS.labels("time_limit").inc()
                await self._goodbye()

    async def _open_stt(self, audio: bytes) -> None:
        await self._drop_stt()
        self.stt = self.speech.stt.start_stream(TWILIO_SAMPLE_RATE_HZ, session_id=self.call_sid)
        self.stt.feed(audio)

    async def _drop_stt(self) -> None:
        stream, self.stt = self.stt, None
        if stream is not None:
            await stream.aclose()

    async def _finalize(self, stream: SttStream | None) -> str:
        if stream is None:
            return ""
        try:
            transcript = await stream.finalize()
        except SpeechError as exc:
            log.warning("call %s: recognition failed: %s", self.call_sid, exc)
            return ""
        finally:
            await stream.aclose()
        # Words and confidence only: what a caller says is personal data and stays
        # in the transcript store (and the admin call trace), never in logs.
        log.info(
            "call %s: heard %d word(s) (confidence %.2f)",
            self.call_sid,
            len(transcript.text.split()),
            transcript.confidence,
        )
        return transcript.text.strip()

    # -- barge-in and holding

    async def _on_barge_in_onset(self, onset: float) -> None:
        assert self.player is not None
        had_audio_out = self.player.lead_ms > 0
        await self.player.pause()
        self.barge = BargeInTrace(onset=onset)
        self.trace.barge_ins.append(self.barge)
        if had_audio_out:
            self.barge.clear_sent = self.loop.time()
        log.info("call %s: caller spoke over the bot; paused", self.call_sid)

    def _barge_outcome(self, outcome: str) -> None:
        barge, self.barge = self.barge, None
        if barge is None:
            return
        barge.outcome = outcome  # type: ignore[assignment]
        if (reaction := barge.reaction_ms) is not None:
            BARGE_IN_SECONDS.labels(outcome).observe(reaction / 1000)

    async def _hold(self) -> None:
        """The caller started talking while a reply is being prepared: do not talk over them."""
        if self.speaking is not None and self.speaking.active and self.player is not None:
            await self.player.pause()

    async def _caller_said(self, text: str, trace: TurnTrace | None) -> None:
        """Act on a finished caller utterance: resume a held reply, or answer it."""
        assert self.player is not None
        held = self.speaking is not None and self.speaking.active and self.player.paused
        if held and (not text or _words(text) in self.backchannels):
            self._barge_outcome("resumed")
            PHONE_EVENTS.labels("backchannel").inc()
            self.player.resume()
            log.info("call %s: a backchannel did not interrupt; resuming", self.call_sid)
            return
        if held:
            self._barge_outcome("answered")
            await self._interrupt()
        if not text:
            self.player.resume()
            self.turns.bot_finished_speaking(self.loop.time())  # back to listening
            return
        self._converse(text, trace or self.trace.new_turn("speech"))

    async def _interrupt(self) -> None:
        """Stop the bot: cancel the reply being spoken and clear Twilio's buffered audio."""
        speaking, self.speaking = self.speaking, None
        if speaking is not None and speaking.task is not None and not speaking.task.done():
            speaking.task.cancel()
            await asyncio.gather(speaking.task, return_exceptions=True)
        if self.player is not None:
            await self.player.clear()

    # -- turns

    async def _answer(self, stream: SttStream, end_of_turn: float) -> None:
        trace = self.trace.new_turn("speech")
        trace.end_of_turn = end_of_turn
        trace.speech_end = end_of_turn - self.turns.config.endpoint_silence_ms / 1000
        text = await self._finalize(stream)
        trace.transcript = self.loop.time()
        trace.user_text = text
        if not text:
            self.trace.turns.remove(trace)
        await self._caller_said(text, trace)

    async def _on_digit(self, digit: str) -> None:
        if self.digit_timer is not None:
            self.digit_timer.cancel()
            self.digit_timer = None
        if not self.digits and self.speaking is not None:
            self._barge_outcome("interrupted")
            await self._interrupt()  # a key press is a clear wish to interrupt
        if digit == "#":
            await self._flush_digits()
            return
        self.digits += digit
        self.digit_timer = self.loop.call_later(
            DTMF_INTER_DIGIT_S, lambda: self._spawn(self._flush_digits())
        )

    async def _flush_digits(self) -> None:
        digits, self.digits = self.digits, ""
        if self.digit_timer is not None:
            self.digit_timer.cancel()
            self.digit_timer = None
        if not digits:
            return
        text = digits
        if len(digits) == 1 and digits.isdigit() and 1 <= int(digits) <= len(self.quick_replies):
            text = self.quick_replies[int(digits) - 1].value
        trace = self.trace.new_turn("dtmf")
        trace.user_text = digits
        trace.speech_end = trace.end_of_turn = trace.transcript = self.loop.time()
        await self._interrupt()
        self._converse(text, trace)

    async def _on_silence(self, count: int) -> None:
        if self.ending or (self.speaking is not None and self.speaking.active):
            return
        if count > self.phone.max_reprompts:
            log.info("call %s: caller silent after %d reprompts; ending", self.call_sid, count - 1)
            await self._goodbye()
            return
        PHONE_EVENTS.labels("reprompt").inc()
        self._say("reprompt", self.phone.reprompt)

    async def _goodbye(self) -> None:
        if self.ending:
            return
        self.ending = True
        PHONE_EVENTS.labels("goodbye").inc()
        await self._interrupt()
        speaking = self._say("goodbye", self.phone.goodbye, filler=False)
        assert speaking.task is not None
        self._spawn(self._end_after(speaking.task))

    async def _end_after(self, task: asyncio.Task[None]) -> None:
        await asyncio.gather(task, return_exceptions=True)
        await self._apply(Action(type="end_call"))

    # -- replies

    def _say(self, kind: TurnKind, text: str, *, filler: bool = False) -> _Speaking:
        """Speak a fixed line (greeting, reprompt, goodbye) as a reply."""
        trace = self.trace.new_turn(kind)
        trace.reply_text = text
        trace.transcript = self.loop.time()  # no caller speech: those stages stay null

        async def sentences() -> AsyncIterator[str]:
            for sentence in split_text(text):
                yield sentence

        return self._start_reply(trace, sentences(), None, filler=filler)

    def _converse(self, text: str, trace: TurnTrace) -> None:
        """Send ``text`` to the engine and speak its reply as it streams."""
        if self.ending:
            return
        turn = _EngineTurn(self, text)
        self.engine_tasks.add(turn.task)
        turn.task.add_done_callback(self.engine_tasks.discard)
        self._start_reply(trace, turn.sentences(), turn, filler=True)

    def _start_reply(
        self,
        trace: TurnTrace,
        sentences: AsyncIterator[str],
        turn: _EngineTurn | None,
        *,
        filler: bool,
    ) -> _Speaking:
        speaking = _Speaking(trace)
        speaking.engine = turn
        self.speaking = speaking
        caller_talking = (TurnState.USER_SPEAKING, TurnState.ENDPOINTING)
        if self.player is not None and self.turns.state in caller_talking:
            self.player.hold()  # never start talking over the caller
        speaking.task = self._spawn(self._speak(speaking, sentences, filler=filler))
        return speaking

    async def _speak(
        self, speaking: _Speaking, sentences: AsyncIterator[str], *, filler: bool
    ) -> None:
        """Synthesize each sentence into one reply as it arrives; return once it has played."""
        assert self.player is not None
        reply = speaking.reply = self.player.start_reply()
        trace = speaking.trace
        first: asyncio.Future[str | None] = asyncio.ensure_future(anext(sentences, None))
        try:
            if filler and self.fillers is not None:
                done, _ = await asyncio.wait({first}, timeout=self.phone.filler_after_ms / 1000)
                if not done:
                    PHONE_EVENTS.labels("filler").inc()
                    trace.filler = True
                    await self._synthesize(reply, next(self.fillers), None)
            sentence = await first
            spoken: list[str] = []
            while sentence is not None:
                if trace.first_text is None:
                    trace.first_text = self.loop.time()
                spoken.append(sentence)
                await self._synthesize(reply, sentence, trace)
                sentence = await anext(sentences, None)
            if speaking.engine is not None:
                hint = self._dtmf_hint(speaking.engine.response)
                if hint:
                    await self._synthesize(reply, hint, None)
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
        if speaking.engine is not None and speaking.engine.response is not None:
            for action in speaking.engine.response.actions:
                if action.type in ("transfer", "end_call"):
                    await self._apply(action)

    async def _synthesize(self, reply: Reply, sentence: str, trace: TurnTrace | None) -> None:
        text: str | None = sentence
        async with contextlib.aclosing(self.speech.tts.synthesize(sentence)) as chunks:
            async for chunk in chunks:
                if trace is not None and trace.first_audio is None:
                    trace.first_audio = self.loop.time()
                reply.add_pcm(chunk.pcm, chunk.sample_rate_hz, text=text)
                text = None

    def _dtmf_hint(self, response: ConversationResponse | None) -> str:
        """'Or press 1 for A, 2 for B.' for 2-5 quick replies (remembered for the keys)."""
        options = response.quick_replies if response is not None else ()
        self.quick_replies = tuple(options) if 2 <= len(options) <= 5 else ()
        if not self.quick_replies:
            return ""
        parts = [f"{i} for {qr.title}" for i, qr in enumerate(self.quick_replies, 1)]
        return "Or press " + ", ".join(parts) + "."

    async def _wait_played(self, reply: Reply) -> None:
        """Wait for the end mark; fall back on the clock if Twilio never echoes it."""
        assert self.player is not None
        overdue_since: float | None = None
        while not reply.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reply.wait_played(), 0.25)
                return
            waiting = reply.end_mark_sent and not self.player.paused and self.player.lead_ms == 0
            if not waiting:
                overdue_since = None
            elif overdue_since is None:
                overdue_since = self.loop.time()
            elif self.loop.time() - overdue_since >= MARK_GRACE_S:
                log.debug("call %s: end mark not echoed; counting the reply played", self.call_sid)
                self.player.complete_unacked(reply)

    def _reply_over(self, speaking: _Speaking) -> None:
        """Bookkeeping when a reply finished playing or was cut."""
        trace = speaking.trace
        reply = speaking.reply
        if reply is not None:
            trace.first_media = reply.first_sent_at
            trace.first_mark_ack = reply.first_ack_at
            report = reply.report()
            trace.interrupted = not report.completed
            trace.heard_text = report.heard_text if report.completed else report.heard_words()
        trace.observe()
        if self.speaking is speaking:
            self.speaking = None
            self.turns.bot_finished_speaking(self.loop.time())
        turn = speaking.engine
        if turn is not None and trace.interrupted:
            self._spawn(self._note_heard(turn, trace.heard_text), engine=True)
        self._spawn(self._persist_trace(), engine=True)

    async def _note_heard(self, turn: _EngineTurn, heard: str) -> None:
        await asyncio.gather(turn.task, return_exceptions=True)
        if turn.response is None:
            return
        engine = self.ws.app.state.engine
        try:
            await engine.note_heard(
                self.client.client_id,
                "phone",
                self.call_sid,
                spoken=turn.response.text,
                heard=heard,
            )
        except Exception:
            log.exception("call %s: could not record what the caller heard", self.call_sid)

    def _on_frame_sent(self, ulaw: bytes) -> None:
        now = self.loop.time()
        pcm = ulaw_to_pcm16(ulaw)
        self.last_sent_at = now
        self.echo.note_played(pcm, now)
        self.turns.note_playback(frame_energy_dbfs(pcm), now)
        if self.turns.state in (TurnState.LISTENING, TurnState.WAITING):
            self.turns.bot_started_speaking(now)

    # -- actions

    async def _apply(self, action: Action) -> None:
        creds = self.client.channels.phone.twilio
        if not creds.account_sid or not creds.auth_token:
            if action.type == "end_call":
                log.info("call %s: ending by closing the media stream", self.call_sid)
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await self.ws.close()
                return
            log.warning(
                "call %s: %s requested but client %r has no Twilio credentials",
                self.call_sid,
                action.type,
                self.client.client_id,
            )
            return
        if action.type == "transfer" and not action.target:
            log.warning("call %s: transfer without a number", self.call_sid)
            return
        # Durable first: the outbox delivers it exactly once, with retries, even
        # if this process dies right now (and drops it once the call is over).
        outbox: Outbox = self.ws.app.state.outbox
        kind = "transfer" if action.type == "transfer" else "hangup"
        item = OutboxItem(
            kind="twilio.call",
            client_id=self.client.client_id,
            key=f"twilio:{self.call_sid}:{kind}:{len(self.trace.turns)}",
            payload={
                "call_sid": self.call_sid,
                "action": kind,
                "target": action.target,
                "expires_ts": time.time() + CALL_ACTION_TTL_S,
            },
        )
        try:
            await outbox.enqueue([item])
        except Exception:
            log.exception("call %s: %s could not be queued", self.call_sid, action.type)
        else:
            log.info("call %s: %s queued", self.call_sid, action.type)


def _decode(raw: str | bytes) -> InboundEvent | None:
    try:
        return decode_inbound(raw, frame_bytes=None)
    except CodecError as exc:
        PHONE_EVENTS.labels("bad_frame").inc()
        log.warning("media stream: dropped a frame: %s", exc)
        return None

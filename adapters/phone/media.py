"""The Twilio Media Streams websocket: one live phone conversation per connection.

``WS /twilio/media/{client_id}`` is where the TwiML ``<Connect><Stream>`` of
:mod:`adapters.phone.webhook` points. Per call::

    inbound media -> mu-law -> PCM16 -> VAD -> TurnTaker
        SpeechStarted / BargeIn -> open an STT stream, feed the turn's frames
        EndOfTurn  -> finalize -> Engine.stream_turn -> sentences -> TTS -> PacedPlayer
        BargeIn    -> player.clear() (Twilio ``clear``) and cancel the reply in flight
    mark -> player.on_mark;  dtmf digit -> sent to the engine as the user's message
    stop / socket closed -> every task of the call is cancelled and awaited

After a reply has played, its ``transfer`` / ``end_call`` actions are applied
through Twilio's REST API (:class:`~adapters.phone.rest.TwilioCalls`) when the
client has Twilio credentials; otherwise they are only logged.

Reads ``app.state``: ``registry``, ``engine``, ``http``, ``phone_settings``
and ``speech`` (an object with ``.stt`` and ``.tts``; built lazily with the
default providers and cached there when the lifespan did not set it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

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
from adapters.phone.rest import TwilioCalls
from adapters.phone.turns import (
    BargeIn,
    CallTimeLimit,
    EndOfTurn,
    SilenceTimeout,
    SpeechStarted,
    TurnEvent,
    TurnTaker,
)
from adapters.speech.audio import TWILIO_SAMPLE_RATE_HZ, frame_bytes, ulaw_to_pcm16
from adapters.speech.stt import SpeechToText, SttStream, make_stt
from adapters.speech.tts import TextToSpeech, make_tts, split_sentences, split_text
from adapters.speech.vad import WebRtcVad, frame_energy_dbfs
from engine.config import ClientConfig
from engine.messages import Action, ConversationResponse, TextDelta

__all__ = ["START_TIMEOUT_S", "SpeechProviders", "media_router"]

log = logging.getLogger("adapters.phone.media")

START_TIMEOUT_S = 10.0
"""A socket that sends no valid ``start`` this long after connecting is closed."""
CLOSE_UNKNOWN_CLIENT = 4404
CLOSE_NO_START = 4408
_PCM_FRAME_BYTES = frame_bytes(TWILIO_SAMPLE_RATE_HZ)  # 320: 20 ms of 8 kHz PCM16


class Speech(Protocol):
    """What the call needs from ``app.state.speech``."""

    @property
    def stt(self) -> SpeechToText: ...

    @property
    def tts(self) -> TextToSpeech: ...


@dataclass(frozen=True, slots=True)
class SpeechProviders:
    """The process-wide recogniser and synthesiser (``app.state.speech``)."""

    stt: SpeechToText
    tts: TextToSpeech


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
        speech = await _speech(websocket)
        await _Call(websocket, client, speech).run()

    return router


async def _speech(websocket: WebSocket) -> Speech:
    """``app.state.speech``, built once with the default providers if absent."""
    state = websocket.app.state
    speech: Speech | None = getattr(state, "speech", None)
    if speech is not None:
        return speech
    lock: asyncio.Lock | None = getattr(state, "speech_lock", None)
    if lock is None:
        lock = state.speech_lock = asyncio.Lock()
    async with lock:
        speech = getattr(state, "speech", None)
        if speech is None:  # model loading blocks: keep it off the event loop
            stt, tts = await asyncio.gather(
                asyncio.to_thread(make_stt), asyncio.to_thread(make_tts)
            )
            speech = state.speech = SpeechProviders(stt, tts)
        return speech


class _Call:
    """One connected Media Stream (one phone call)."""

    def __init__(self, websocket: WebSocket, client: ClientConfig, speech: Speech) -> None:
        self.ws = websocket
        self.client = client
        self.speech = speech
        self.loop = asyncio.get_running_loop()
        self.turns = TurnTaker(started_at=self.loop.time())
        self.vad = WebRtcVad()
        self.call_sid = ""
        self.context: dict[str, str] = {}
        self.player: PacedPlayer | None = None
        self.stt: SttStream | None = None
        self.reply_task: asyncio.Task[None] | None = None
        self.carry = ""  # text of a turn whose reply was dropped because the caller went on
        self.pending_text = ""
        self.tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle

    async def run(self) -> None:
        try:
            start = await self._wait_for_start()
            if start is None:
                return
            self.call_sid = start.call_sid
            params = start.custom_parameters
            self.context = {k: params[k] for k in ("caller", "call_sid", "to") if params.get(k)}
            self.context.setdefault("call_sid", start.call_sid)
            log.info(
                "media stream started: client=%s call=%s", self.client.client_id, start.call_sid
            )
            self.player = PacedPlayer(
                self._send, start.stream_sid, on_frame_sent=self._on_frame_sent
            )
            self._spawn(self.player.run())
            greeting = self.client.channels.phone.greeting
            if greeting:
                self.reply_task = self._spawn(self._speak(_sentences(split_text(greeting))))
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
                    pcm = ulaw_to_pcm16(payload)
                    for i in range(0, len(pcm), _PCM_FRAME_BYTES):
                        await self._on_frame(pcm[i : i + _PCM_FRAME_BYTES])
                case Mark(name=name):
                    assert self.player is not None
                    self.player.on_mark(name)
                case Dtmf(digit=digit):
                    await self._interrupt()
                    self.reply_task = self._spawn(self._converse(digit))
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
        if self.player is not None:
            self.player.close()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drop_stt()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("call %s: task failed", self.call_sid, exc_info=exc)

    async def _send(self, text: str) -> None:
        await self.ws.send_text(text)

    # -- caller audio

    async def _on_frame(self, frame: bytes) -> None:
        is_speech = self.vad.is_speech(frame, TWILIO_SAMPLE_RATE_HZ)
        for event in self.turns.feed(frame, is_speech, self.loop.time()):
            await self._on_turn_event(event)
        if self.turns.frame_in_turn and self.stt is not None:
            self.stt.feed(frame)

    async def _on_turn_event(self, event: TurnEvent) -> None:
        match event:
            case SpeechStarted(audio=audio, resumed=resumed):
                if resumed and self.reply_task is not None and not self.reply_task.done():
                    self.carry = self.pending_text  # they went on talking: answer both parts
                    await self._interrupt()
                await self._open_stt(audio)
            case BargeIn(audio=audio):
                log.info("call %s: barge-in", self.call_sid)
                await self._interrupt()
                await self._open_stt(audio)
            case EndOfTurn():
                stream, self.stt = self.stt, None
                if stream is not None:
                    self.reply_task = self._spawn(self._answer(stream))
            case SilenceTimeout(count=count):
                log.debug("call %s: silence timeout #%d", self.call_sid, count)
            case CallTimeLimit(elapsed_s=elapsed):
                log.warning("call %s: time limit (%.0f s); hanging up", self.call_sid, elapsed)
                self._spawn(self._apply(Action(type="end_call")))

    async def _open_stt(self, audio: bytes) -> None:
        await self._drop_stt()
        self.stt = self.speech.stt.start_stream(TWILIO_SAMPLE_RATE_HZ, session_id=self.call_sid)
        self.stt.feed(audio)

    async def _drop_stt(self) -> None:
        stream, self.stt = self.stt, None
        if stream is not None:
            await stream.aclose()

    async def _interrupt(self) -> None:
        """Stop the bot: cancel the reply in flight and clear Twilio's buffered audio."""
        task, self.reply_task = self.reply_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.player is not None:
            await self.player.clear()

    # -- replies

    async def _answer(self, stream: SttStream) -> None:
        try:
            transcript = await stream.finalize()
        finally:
            await stream.aclose()
        text = " ".join(part for part in (self.carry, transcript.text.strip()) if part)
        self.carry = ""
        log.info("call %s: heard %r (confidence %.2f)", self.call_sid, text, transcript.confidence)
        if text:
            await self._converse(text)
        else:
            self.turns.bot_finished_speaking(self.loop.time())  # back to listening

    async def _converse(self, text: str) -> None:
        self.pending_text = text
        response: ConversationResponse | None = None
        spoken = False

        async def deltas() -> AsyncIterator[str]:
            nonlocal response, spoken
            stream = self.ws.app.state.engine.stream_turn(
                self.client.client_id, "phone", None, self.call_sid, text, self.context
            )
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        spoken = spoken or bool(event.content.strip())
                        yield event.content
                    elif isinstance(event, ConversationResponse):
                        response = event

        async def sentences() -> AsyncIterator[str]:
            async for sentence in split_sentences(deltas()):
                yield sentence
            if not spoken and response is not None:  # the agent did not stream its text
                for sentence in split_text(response.text):
                    yield sentence

        await self._speak(sentences())
        self.pending_text = ""
        if response is not None:
            for action in response.actions:
                if action.type in ("transfer", "end_call"):
                    await self._apply(action)

    async def _speak(self, sentences: AsyncIterator[str]) -> None:
        """Synthesize each sentence into one reply as it arrives; return once it has played."""
        assert self.player is not None
        reply = self.player.start_reply()
        started = False
        try:
            async for sentence in sentences:
                if not started:
                    self.turns.bot_started_speaking(self.loop.time())
                    started = True
                await self._synthesize(reply, sentence)
            reply.finish()
            await reply.wait_played()
        finally:
            reply.finish()
            self.turns.bot_finished_speaking(self.loop.time())

    async def _synthesize(self, reply: Reply, sentence: str) -> None:
        text: str | None = sentence
        async with contextlib.aclosing(self.speech.tts.synthesize(sentence)) as chunks:
            async for chunk in chunks:
                reply.add_pcm(chunk.pcm, chunk.sample_rate_hz, text=text)
                text = None

    def _on_frame_sent(self, ulaw: bytes) -> None:
        self.turns.note_playback(frame_energy_dbfs(ulaw_to_pcm16(ulaw)), self.loop.time())

    # -- actions

    async def _apply(self, action: Action) -> None:
        creds = self.client.channels.phone.twilio
        if not creds.account_sid or not creds.auth_token:
            log.warning(
                "call %s: %s requested but client %r has no Twilio credentials",
                self.call_sid,
                action.type,
                self.client.client_id,
            )
            return
        state = self.ws.app.state
        calls = TwilioCalls.for_client(
            state.http, self.client, base_url=state.phone_settings.api_base_url
        )
        try:
            if action.type == "transfer":
                if not action.target:
                    log.warning("call %s: transfer without a number", self.call_sid)
                    return
                await calls.transfer(self.call_sid, action.target)
            else:
                await calls.hangup(self.call_sid)
        except Exception:
            log.exception("call %s: %s failed", self.call_sid, action.type)
        else:
            log.info("call %s: %s done", self.call_sid, action.type)


def _decode(raw: str | bytes) -> InboundEvent | None:
    try:
        return decode_inbound(raw)
    except CodecError as exc:
        log.warning("media stream: dropped a frame: %s", exc)
        return None


async def _sentences(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item

"""The Twilio Media Streams websocket: one live phone conversation per connection.

``WS /twilio/media/{client_id}`` is where the TwiML ``<Connect><Stream>`` of
:mod:`channels.phone.webhook` points. Per call::

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

The parts, each in its own module, wired here per call::

    stream.MediaStream   the websocket: typed events in, text frames out
    call.Call            the coordinator: acts on the caller's turns
    state.CallStatus     the call's named states and transitions
    inbound.Inbound      caller audio -> VAD, echo, TurnTaker -> turn events; STT
    answer.Answer        one engine turn (typed events) -> sentences, withdrawals
    speaker.Speaker      replies -> TTS -> PacedPlayer, filler, heard/cut bookkeeping
    bargein.BargeIns     pause at barge-in onset, trace the outcome
    dtmf.DtmfEntry       keys -> one entry (a quick reply by number, or digits)
    actions.CallActions  transfer / end_call through the outbox
    tasks.CallTasks      every task of the call, gone when it ends

Choices worth knowing:

* The engine turn runs to completion in its own task even when the caller
  interrupts its reply, so a booking or a captured slot is never half-applied;
  only speaking stops. When a reply is cut, the transcript keeps only what the
  caller heard (by echoed marks), via :meth:`engine.core.Engine.note_heard`.
* When the engine withdraws the text it streamed (``Discard``), the phone stops
  speaking it (queued sentences and synthesis in progress dropped, Twilio
  ``clear`` if some of its audio went out) and speaks what follows instead;
  the withdrawn text never counts as heard.
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

Who may drive a call (:mod:`channels.phone.admission`): the ``start`` message
must carry the one-time token the voice webhook put in the TwiML, bound to the
client and the CallSid, unexpired and unused, and the CallSid must have no
live stream already; otherwise the socket is closed with 1008 (policy
violation) before anything reaches the engine. Inbound audio beyond real time
plus a 1 s burst is dropped (:mod:`channels.phone.budget`), counted in
``gateway_phone_dropped_audio_seconds_total``.

Dependencies come from the provider passed to :func:`media_router`
(:class:`~channels.phone.deps.PhoneDeps`), never from ``app.state``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from prometheus_client import Counter

from channels.phone.actions import CallActions
from channels.phone.admission import (
    TOKEN_PARAMETER,
    StreamRefused,
    unix_now,
    verify_stream_token,
)
from channels.phone.bargein import BargeIns
from channels.phone.budget import AudioBudget
from channels.phone.call import Call
from channels.phone.codec import Start
from channels.phone.deps import PhoneDeps
from channels.phone.dtmf import DtmfEntry
from channels.phone.inbound import Inbound, turn_config
from channels.phone.playback import PacedPlayer
from channels.phone.speaker import MARK_GRACE_S, Speaker
from channels.phone.state import CallEvent, CallStatus
from channels.phone.stream import START_TIMEOUT_S, MediaStream
from channels.phone.tasks import CallTasks
from engine.config import ClientConfig
from engine.messages import ChannelContext
from providers.speech.errors import SpeechError
from providers.speech.providers import SpeechHub, SpeechProviders, SttSpec, TtsSpec
from providers.speech.tts import split_text

__all__ = ["MARK_GRACE_S", "START_TIMEOUT_S", "media_router", "speech_specs", "warm_up_speech"]

log = logging.getLogger("channels.phone.media")

CLOSE_UNKNOWN_CLIENT = 4404
CLOSE_NO_SPEECH = 1011
CLOSE_POLICY_VIOLATION = 1008

STREAMS_REFUSED = Counter(
    "gateway_phone_streams_refused_total",
    "Media streams refused at start, by reason (missing, malformed, forged, expired, "
    "reused token; live: the call already has a stream)",
    ["reason"],
)
DROPPED_AUDIO = Counter(
    "gateway_phone_dropped_audio_seconds_total",
    "Inbound call audio dropped for arriving faster than real time, in seconds",
    ["client_id"],
)


def media_router(deps: Callable[[], PhoneDeps]) -> APIRouter:
    """``WS /twilio/media/{client_id}``: the bidirectional Media Stream of a call.

    ``deps`` returns the channel's dependencies once the gateway is serving.
    """
    router = APIRouter()

    @router.websocket("/twilio/media/{client_id}")
    async def media_stream(websocket: WebSocket, client_id: str) -> None:
        await websocket.accept()
        phone = deps()
        client: ClientConfig | None = phone.registry.get(client_id)
        auth_token = client.channels.phone.twilio.auth_token if client is not None else None
        if client is None or not client.channels.phone.enabled or not auth_token:
            # Without the auth token no webhook could have minted this stream's token.
            log.warning("media stream for unknown or disabled client %r", client_id[:64])
            await websocket.close(CLOSE_UNKNOWN_CLIENT)
            return
        try:
            speech = await phone.speech_hub.get(*speech_specs(client))
        except SpeechError as exc:
            log.error(
                "media stream for %s: no speech providers (%s); closing",
                client_id,
                type(exc).__name__,
            )
            await websocket.close(CLOSE_NO_SPEECH)
            return
        stream = MediaStream(websocket)
        status = CallStatus()
        start = None
        try:
            start = await stream.wait_for_start()
            if start is not None:
                token = start.custom_parameters.get(TOKEN_PARAMETER)
                now = unix_now()
                verified = verify_stream_token(
                    token, auth_token, client_id, start.call_sid, now_s=now
                )
                if not await phone.streams.spend(verified, now):
                    raise StreamRefused("reused")
                async with phone.streams.live(start.call_sid):
                    status.on(CallEvent.STARTED)
                    await _wire(stream, start, client, speech, phone, status).run()
        except StreamRefused as refused:
            STREAMS_REFUSED.labels(refused.reason).inc()
            log.warning(
                "media stream refused (%s): client=%s call=%s",
                refused,
                client_id,
                start.call_sid[:64] if start is not None else "-",
            )
            await websocket.close(CLOSE_POLICY_VIOLATION)
        except WebSocketDisconnect:
            pass
        finally:
            # A refused stream gives back the line its webhook reserved.
            phone.streams.stream_closed(start.call_sid if start is not None else None)
            status.on(CallEvent.CLOSED)
            await stream.close()

    return router


def speech_specs(client: ClientConfig) -> tuple[SttSpec, TtsSpec]:
    """The recogniser and synthesiser a client's calls use (from its ``voice`` config).

    The recogniser is biased to the client's business name, services and
    their aliases and ``voice.stt.phrases``; the backchannel words are added
    to PocketSphinx's vocabulary.
    """
    stt, tts = client.voice.stt, client.voice.tts
    phrases = [client.name]
    for service in client.services:
        phrases.append(service.name)
        phrases.extend(service.aliases)
    phrases.extend(stt.phrases)
    backchannels = client.channels.phone.turn_taking.backchannels
    return (
        SttSpec(stt.provider, stt.model, tuple(phrases), tuple(backchannels)),
        TtsSpec(tts.provider, tts.voice or tts.model),
    )


async def warm_up_speech(hub: SpeechHub, clients: Iterable[ClientConfig]) -> int:
    """Load the speech models of every client that takes calls, before the first call.

    Builds each client's recogniser and synthesiser through ``hub`` (off the
    event loop), runs the recogniser's warm-up, and synthesises the fixed
    lines (greeting, reprompt, fillers, goodbye) once so they sit in the
    synthesiser's cache: the first caller hears the greeting without waiting
    for a model to load. Returns how many clients were warmed; a client whose
    models fail is logged and skipped (its first call tries again).
    """
    warmed = 0
    for client in clients:
        phone = client.channels.phone
        if not phone.enabled:
            continue
        try:
            speech = await hub.get(*speech_specs(client))
            await speech.stt.warm_up()
            lines = [phone.greeting or "", phone.reprompt, *phone.filler, phone.goodbye]
            for line in lines:
                for sentence in split_text(line):
                    async for _chunk in speech.tts.synthesize(sentence):
                        pass
        except Exception as exc:  # start-up must go on; the call will report it
            log.warning(
                "speech warm-up for %s failed (%s); its first call loads the models",
                client.client_id,
                type(exc).__name__,
            )
            continue
        warmed += 1
    return warmed


def _wire(
    stream: MediaStream,
    start: Start,
    client: ClientConfig,
    speech: SpeechProviders,
    deps: PhoneDeps,
    status: CallStatus,
) -> Call:
    """Build one call's parts around Twilio's ``start`` message."""
    traces = deps.call_traces
    loop = asyncio.get_running_loop()
    clock = loop.time
    call_sid = status.call_sid = start.call_sid
    params = start.custom_parameters
    # Our own TwiML passes these (channels.phone.webhook.STREAM_PARAMETERS);
    # the caller's number is left out when the caller ID is withheld.
    context = ChannelContext(
        caller_number=_e164(params.get("caller")),
        called_number=_e164(params.get("to")),
        call_sid=params.get("call_sid") or call_sid,
    )
    trace = traces.open(call_sid, client.client_id)
    log.info("media stream started: client=%s call=%s", client.client_id, call_sid)
    phone = client.channels.phone
    tasks = CallTasks(call_sid)
    inbound = Inbound(
        turn_config(client), phone.turn_taking.vad_aggressiveness, speech.stt, clock, call_sid
    )

    def frame_sent(ulaw: bytes) -> None:
        inbound.note_played(ulaw)
        status.on(CallEvent.AUDIO_OUT)

    player = PacedPlayer(stream.send, start.stream_sid, clock=clock, on_frame_sent=frame_sent)
    dtmf = DtmfEntry(loop, tasks.spawn)
    actions = CallActions(client, call_sid, deps.outbox, stream.close, status, trace)
    speaker = Speaker(
        player,
        speech.tts,
        client,
        trace,
        traces,
        tasks,
        inbound.turns,
        status,
        dtmf.offer,
        actions.apply,
        clock,
        call_sid,
    )
    return Call(
        stream=stream,
        client=client,
        call_sid=call_sid,
        context=context,
        engine=deps.engine,
        clock=clock,
        status=status,
        trace=trace,
        traces=traces,
        tasks=tasks,
        inbound=inbound,
        speaker=speaker,
        barge_ins=BargeIns(player, trace, clock, call_sid),
        dtmf=dtmf,
        actions=actions,
        budget=AudioBudget(started_at=clock(), burst_s=deps.audio_burst_s),
        on_dropped=DROPPED_AUDIO.labels(client.client_id).inc,
    )


def _e164(value: str | None) -> str | None:
    return value if value and re.fullmatch(r"\+[1-9]\d{1,14}", value) else None

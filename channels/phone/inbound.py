"""The caller's side of a call: inbound audio -> turn-taking events, and recognition.

Per inbound frame::

    media payload (8 kHz mu-law) -> 20 ms frames -> PCM16 -> VAD -> echo check
      -> voicing (while the bot speaks) -> TurnTaker -> turn events
      -> frames of the caller's turn -> the open STT stream
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.phone.turns import TurnConfig, TurnEvent, TurnState, TurnTaker
from engine.config import ClientConfig
from providers.speech.audio import (
    TWILIO_FRAME_BYTES,
    TWILIO_SAMPLE_RATE_HZ,
    FrameBuffer,
    ulaw_to_pcm16,
)
from providers.speech.echo import EchoDetector
from providers.speech.errors import SpeechError
from providers.speech.stt import SpeechToText, SttStream, Transcript
from providers.speech.vad import VOICED_PERIODICITY, WebRtcVad, frame_energy_dbfs, periodicity

__all__ = ["ECHO_WINDOW_S", "Inbound", "Speculation", "turn_config"]

log = logging.getLogger("channels.phone.inbound")

ECHO_WINDOW_S = 1.0
"""After the last frame we sent, inbound audio may still hold its echo (seconds)."""

Clock = Callable[[], float]
OnTurnEvent = Callable[[TurnEvent], Awaitable[None]]


@dataclass(slots=True)
class Speculation:
    """A transcript decoded while the caller paused (``pause``, see
    :class:`~channels.phone.turns.Pause`); the turn's own if it ends in that pause."""

    pause: int
    task: asyncio.Task[Transcript | None]


def turn_config(client: ClientConfig) -> TurnConfig:
    """The turn-taking settings of a client's calls (``channels.phone.turn_taking``)."""
    phone = client.channels.phone
    tt = phone.turn_taking
    return TurnConfig(
        min_speech_ms=tt.min_speech_ms,
        endpoint_silence_ms=tt.endpoint_silence_ms,
        pause_silence_ms=tt.pause_silence_ms if tt.pause_silence_ms < tt.endpoint_silence_ms else 0,
        barge_in_onset_ms=min(tt.barge_in_onset_ms, tt.barge_in_min_ms),
        barge_in_min_ms=tt.barge_in_min_ms,
        backchannel_silence_ms=tt.backchannel_silence_ms,
        silence_timeout_s=tt.silence_timeout_s,
        max_call_s=phone.max_call_minutes * 60,
    )


class Inbound:
    """Turns one call's inbound audio into turn events and the caller's words.

    Input: Twilio ``media`` payloads, 8 kHz mu-law (normally 160 bytes = one
    20 ms frame; other sizes are reframed, warned about once). Each frame is
    decoded to PCM16 (320 bytes), checked by the WebRTC VAD, dropped as
    speech when it is our own voice echoed back (within :data:`ECHO_WINDOW_S`
    of our last frame), checked for voicing while the bot speaks, and fed to
    the :class:`~channels.phone.turns.TurnTaker`. The frames of the caller's
    turn go to the open STT stream (:meth:`open_stt`).

    Args:
        config: turn-taking settings (see :func:`turn_config`).
        vad_aggressiveness: WebRTC VAD mode, 0-3.
        stt: the recogniser (one stream per utterance).
        clock: monotonic seconds (the event loop's ``time``).
        call_sid: the session id for the recogniser, and for log lines.
    """

    def __init__(
        self,
        config: TurnConfig,
        vad_aggressiveness: int,
        stt: SpeechToText,
        clock: Clock,
        call_sid: str,
    ) -> None:
        self.clock = clock
        self.call_sid = call_sid
        self.turns = TurnTaker(config, started_at=clock())
        self._vad = WebRtcVad(vad_aggressiveness)
        self._echo = EchoDetector(TWILIO_SAMPLE_RATE_HZ)
        self._stt = stt
        self._stream: SttStream | None = None
        self._speculation: Speculation | None = None
        self._framer = FrameBuffer(TWILIO_FRAME_BYTES)
        self._odd_payloads = 0
        self._previous_frame = bytes(2 * TWILIO_FRAME_BYTES)
        self._last_sent_at = -1e9

    @property
    def caller_talking(self) -> bool:
        """The caller is in the middle of a turn (speaking or pausing within it)."""
        return self.turns.state in (TurnState.USER_SPEAKING, TurnState.ENDPOINTING)

    async def feed(self, payload: bytes, on_event: OnTurnEvent) -> None:
        """Process one ``media`` payload; ``on_event`` handles each turn event in order,
        before the frame that caused it goes to the STT stream."""
        if len(payload) % TWILIO_FRAME_BYTES:
            self._odd_payloads += 1
            if self._odd_payloads == 1:
                log.warning(
                    "call %s: media payload of %d bytes is not whole 20 ms frames; reframing",
                    self.call_sid,
                    len(payload),
                )
        for frame in self._framer.push(payload):
            await self._on_frame(ulaw_to_pcm16(frame), on_event)

    async def _on_frame(self, frame: bytes, on_event: OnTurnEvent) -> None:
        now = self.clock()
        self._echo.note_inbound(frame)
        is_speech = self._vad.is_speech(frame, TWILIO_SAMPLE_RATE_HZ)
        if is_speech and now - self._last_sent_at < ECHO_WINDOW_S and self._echo.is_echo():
            is_speech = False  # our own voice coming back
        voiced: bool | None = None
        if is_speech and self.turns.state is TurnState.BOT_SPEAKING:
            window = self._previous_frame[-len(frame) :] + frame
            voiced = periodicity(window, TWILIO_SAMPLE_RATE_HZ) >= VOICED_PERIODICITY
        self._previous_frame = frame
        for event in self.turns.feed(frame, is_speech, now, voiced):
            await on_event(event)
        if self.turns.frame_in_turn and self._stream is not None:
            self._stream.feed(frame)

    def note_played(self, ulaw: bytes) -> None:
        """A 20 ms frame of ours (160 bytes of mu-law) went out: remember it for the
        echo check and the barge-in threshold; the bot now speaks."""
        now = self.clock()
        pcm = ulaw_to_pcm16(ulaw)
        self._last_sent_at = now
        self._echo.note_played(pcm, now)
        self.turns.note_playback(frame_energy_dbfs(pcm), now)
        if self.turns.state in (TurnState.LISTENING, TurnState.WAITING):
            self.turns.bot_started_speaking(now)

    # -- recognition

    async def open_stt(self, audio: bytes, context: str | None = None) -> None:
        """Start recognising a new utterance with ``audio`` (PCM16, the pre-roll);
        ``context``: what the caller is likely to say (see ``SpeechToText.start_stream``)."""
        await self.close()
        self._stream = self._stt.start_stream(
            TWILIO_SAMPLE_RATE_HZ, session_id=self.call_sid, context=context
        )
        self._stream.feed(audio)

    def take_stt(self) -> SttStream | None:
        """The open STT stream, detached (the utterance ended); None if none is open."""
        stream, self._stream = self._stream, None
        return stream

    def speculate(self, pause: int) -> Speculation | None:
        """Decode the open utterance now, while the caller pauses (their ``pause``-th).

        None when no stream is open. The decode runs in the recogniser's
        threads; a later pause replaces it (the earlier result is dropped).
        """
        if self._stream is None:
            return None
        self._speculation = Speculation(pause, asyncio.create_task(self._peek(self._stream)))
        return self._speculation

    def take_speculation(self, pause: int) -> Speculation | None:
        """The speculation taken in ``pause`` (the pause the turn ended in), detached;
        None if there is none, or it is from an earlier pause (the caller went on)."""
        speculation, self._speculation = self._speculation, None
        return speculation if speculation is not None and speculation.pause == pause else None

    async def _peek(self, stream: SttStream) -> Transcript | None:
        try:
            return await stream.peek()
        except SpeechError as exc:
            log.warning(
                "call %s: speculative decode failed (%s)", self.call_sid, type(exc).__name__
            )
            return None

    async def close(self) -> None:
        """Abandon the open STT stream, if any."""
        stream, self._stream = self._stream, None
        self._speculation = None
        if stream is not None:
            await stream.aclose()

    async def finalize(
        self, stream: SttStream | None, speculation: Speculation | None = None
    ) -> str:
        """The transcript of ``stream`` ("" if none, or if recognition failed).

        With a ``speculation`` of the same utterance (taken in the pause the
        turn ended in: only silence came after it), its transcript is used and
        the stream is not decoded again.

        Only the word count and confidence are logged: what a caller says is
        personal data and stays in the transcript store (and the admin call
        trace), never in logs.
        """
        if stream is None:
            return ""
        transcript: Transcript | None = None
        try:
            if speculation is not None:
                transcript = await speculation.task
            speculated = transcript is not None
            if transcript is None:
                transcript = await stream.finalize()
        except SpeechError as exc:
            log.warning("call %s: recognition failed (%s)", self.call_sid, type(exc).__name__)
            return ""
        finally:
            await stream.aclose()
        log.info(
            "call %s: heard %d word(s) (confidence %.2f%s)",
            self.call_sid,
            len(transcript.text.split()),
            transcript.confidence,
            ", decoded in the pause" if speculated else "",
        )
        return transcript.text.strip()

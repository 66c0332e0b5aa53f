"""A simulated phone caller: Twilio's side of a bidirectional Media Stream.

:class:`TwilioCaller` connects to a Media Streams websocket (the gateway's
``WS /twilio/media/{client_id}``, or any server speaking the protocol) and
behaves like Twilio does on a ``<Connect><Stream>`` call, per Twilio's "Media
Streams - WebSocket Messages" documentation
(https://www.twilio.com/docs/voice/media-streams/websocket-messages):

* given the voice webhook's ``http(s)://`` URL and the client's auth token, it
  first POSTs a signed voice request, as Twilio does when a call comes in, and
  opens the ``<Stream>`` of the TwiML answer, sending its ``<Parameter>``s (the
  one-time stream token among them) in ``start``; given a ``ws(s)://`` URL it
  connects to it directly (a server that checks no token);
* it sends ``connected``, then ``start`` (``streamSid`` "MZ…", ``callSid``
  "CA…", ``accountSid`` "AC…", tracks ``["inbound"]``, customParameters
  ``{"caller": <E.164>, "call_sid": <callSid>}``, mediaFormat
  ``audio/x-mulaw`` 8000 Hz mono);
* then **continuous** inbound ``media`` every 20 ms on a real-time clock, for
  the whole call, as Twilio streams the caller's line: 160 bytes of 8 kHz
  mu-law (base64) with ``chunk`` (from 1), ``timestamp`` (ms since the stream
  started) and ``sequenceNumber``. The line carries digital silence (mu-law
  0xFF), optional white noise and line echo, and queued speech (:meth:`say`);
* it plays the server's outbound ``media`` in order, in real time (a
  playout buffer, 1 ms per 8 bytes); echoes each ``mark`` back when the audio
  sent before it has played; on ``clear`` drops the buffered audio and echoes
  every pending mark at once;
* ``stop`` when the call ends (leaving the ``async with`` block).

The messages themselves are built and read by :mod:`testkit.phone.wire`.

Everything is recorded with :func:`time.monotonic` timestamps: each outbound
frame's arrival and playout time, what the caller heard, each ``clear``, each
mark and its echo, and buffer underruns (the playout buffer ran dry and more
audio of the same reply arrived later: a gap the caller hears).

Usage (``synthesize`` is :func:`testkit.phone.audio.synthesize`)::

    voice = "http://127.0.0.1:8080/twilio/voice/spa-del-sol"
    async with TwilioCaller(voice, auth_token=token) as call:
        greeting = await call.wait_for_reply(timeout_s=30)
        pcm, rate = synthesize("I'd like to book a massage")
        said = await call.say(pcm, rate)
        reply = await call.wait_for_reply(timeout_s=30)
        print(reply.first_frame_at - said.ended_at)    # s, end of speech -> bot audio

Errors: :class:`CallEnded` when the server closed the socket while waiting;
``TimeoutError`` when a wait runs out; ``ValueError`` when the voice webhook
refuses the call; ``ConnectionError``/``OSError``, ``httpx`` or ``websockets``
exceptions when connecting fails.

Test-only: production code never imports :mod:`testkit.phone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from providers.speech.audio import (
    TWILIO_FRAME_BYTES,
    TWILIO_SAMPLE_RATE_HZ,
    pcm16_to_ulaw,
    resample,
    ulaw_to_pcm16,
)
from testkit.phone.audio import SILENT_FRAME
from testkit.phone.voice import answer_call
from testkit.phone.wire import (
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    TwilioStream,
    WireError,
    parse_outbound,
)

__all__ = [
    "FRAME_S",
    "BotReply",
    "CallEnded",
    "MarkEcho",
    "OutboundFrame",
    "TwilioCaller",
    "Underrun",
    "Utterance",
]

FRAME_S = 0.02
"""Inbound media period: one 20 ms frame (160 bytes of 8 kHz mu-law) every 20 ms."""
_BYTES_PER_S = TWILIO_SAMPLE_RATE_HZ  # mu-law: one byte per sample
_PCM_FRAME_BYTES = TWILIO_FRAME_BYTES * 2
_MAX_CATCH_UP_S = 1.0
"""A pacing loop this late (an overloaded client) resynchronises instead of bursting."""


class CallEnded(ConnectionError):
    """The server closed the media stream while the caller was waiting.

    Attributes:
        code: the websocket close code (e.g. 4404 unknown client), or None.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(
            f"the media stream was closed (code {code}{': ' + reason if reason else ''})"
        )
        self.code = code


@dataclass(frozen=True, slots=True)
class Utterance:
    """Speech the caller sent. Times are :func:`time.monotonic` seconds.

    Attributes:
        started_at: when its first 20 ms frame was sent (speech onset).
        ended_at: when its last frame was sent (end of speech).
        frames: how many 20 ms frames it took.
    """

    started_at: float
    ended_at: float
    frames: int

    @property
    def duration_ms(self) -> float:
        return self.frames * FRAME_S * 1000


@dataclass(slots=True)
class OutboundFrame:
    """One ``media`` message from the server, as the emulated Twilio played it.

    Attributes:
        arrived_at: monotonic s when it was received.
        play_at: monotonic s when playout starts it (after the audio before it).
        ulaw: the 8 kHz mu-law payload (normally 160 bytes = 20 ms).
        played_bytes: how much of it the caller heard: all of it, less when a
            ``clear`` cut it while playing, 0 when a ``clear`` dropped it.
    """

    arrived_at: float
    play_at: float
    ulaw: bytes
    played_bytes: int

    @property
    def play_end(self) -> float:
        return self.play_at + self.played_bytes / _BYTES_PER_S


@dataclass(slots=True)
class MarkEcho:
    """A ``mark`` from the server and its echo. Times in monotonic s.

    ``cleared`` is True when a ``clear`` made it echo early (Twilio echoes
    pending marks on ``clear``); ``echoed_at`` is None until it was echoed.
    """

    name: str
    received_at: float
    echoed_at: float | None = None
    cleared: bool = False


@dataclass(frozen=True, slots=True)
class Underrun:
    """The playout buffer ran dry mid-reply: the caller heard ``gap_ms`` of dead air at ``at``."""

    at: float
    gap_ms: float


@dataclass(frozen=True, slots=True)
class BotReply:
    """One stretch of bot audio: from its first frame until a pause or a ``clear``.

    Attributes:
        first_frame_at: monotonic s when its first ``media`` frame arrived.
        last_frame_at: monotonic s when its last frame arrived.
        frame_arrivals: arrival time of every frame, monotonic s.
        payload_sizes: the distinct payload sizes seen, in bytes (160 from a
            paced 20 ms sender).
        played_ulaw: what the caller heard, 8 kHz mu-law.
        received_bytes: mu-law bytes received (heard or not).
        cleared: a ``clear`` ended it.
        cleared_at: monotonic s of that ``clear``, else None.
        underruns: gaps inside it where the playout buffer ran dry.
    """

    first_frame_at: float
    last_frame_at: float
    frame_arrivals: tuple[float, ...]
    payload_sizes: frozenset[int]
    played_ulaw: bytes
    received_bytes: int
    cleared: bool
    cleared_at: float | None
    underruns: tuple[Underrun, ...] = ()

    @property
    def frames(self) -> int:
        return len(self.frame_arrivals)

    @property
    def played_ms(self) -> float:
        """Duration of the audio heard, in ms."""
        return len(self.played_ulaw) * 1000 / _BYTES_PER_S

    @property
    def pcm16(self) -> bytes:
        """What the caller heard as PCM16 at 8000 Hz (for STT)."""
        return ulaw_to_pcm16(self.played_ulaw)


@dataclass(slots=True)
class _Speech:
    frames: list[bytes]  # PCM16 at 8 kHz, 320 bytes each
    done: asyncio.Future[Utterance]
    next: int = 0
    started_at: float = 0.0


@dataclass(slots=True)
class _Segment:
    start: int  # index of the first frame in TwilioCaller.frames
    underruns: list[Underrun] = field(default_factory=list)
    cleared_at: float | None = None


class TwilioCaller:
    """Twilio's side of one bidirectional Media Stream (see the module docstring).

    Args:
        url: the voice webhook, e.g. ``http://host/twilio/voice/spa-del-sol`` (with
            ``auth_token``), or a media stream websocket, ``ws://host/twilio/media/x``.
        caller: the caller's number (E.164): the voice request's ``From``; sent
            as customParameters.caller when connecting to a websocket directly.
        auth_token: the client's Twilio auth token, to sign the voice request.
        to: the number called (the voice request's ``To``).
        echo_db: feed what is playing back into the inbound audio, attenuated by
            this many dB (line echo); None = no echo.
        echo_delay_ms: echo path delay, in ms.
        noise_dbfs: add white noise at this RMS level (dBFS) to every inbound
            frame; None = digital silence between words.
        reply_gap_ms: a pause in bot audio (nothing arriving, playout buffer
            empty) this long ends a :class:`BotReply`; shorter dry spells are
            underruns.
        underrun_tolerance_ms: dry spells up to this long are not counted as
            underruns (clock rounding).
        open_timeout_s: websocket connect timeout, in s.
        seed: seed of the noise generator.
        strict: also count fields the documentation does not list as protocol
            errors (Twilio ignores them); for tests of our own gateway.

    Attributes (read them any time; times are monotonic s):
        stream_sid, call_sid, account_sid: the ids sent in ``start``.
        frames: every outbound media frame, in arrival order.
        marks: every mark received, with its echo.
        clears: arrival time of every ``clear``.
        underruns: every underrun of the call.
        send_lateness_ms: worst lateness of the inbound pacing clock, in ms
            (large values mean this process, not the server, was overloaded).
        protocol_errors: messages from the server that are not valid Media
            Streams messages (unknown event, wrong streamSid, bad payload);
            they are otherwise ignored.
    """

    def __init__(
        self,
        url: str,
        *,
        caller: str = "+14155550123",
        auth_token: str | None = None,
        to: str = "+14155550199",
        echo_db: float | None = None,
        echo_delay_ms: float = 40.0,
        noise_dbfs: float | None = None,
        reply_gap_ms: float = 600.0,
        underrun_tolerance_ms: float = 1.0,
        open_timeout_s: float = 10.0,
        seed: int | None = None,
        strict: bool = False,
    ) -> None:
        if echo_db is not None and echo_db < 0:
            raise ValueError(f"echo_db is an attenuation in dB (>= 0), got {echo_db}")
        if noise_dbfs is not None and noise_dbfs > 0:
            raise ValueError(f"noise_dbfs must be <= 0 dBFS, got {noise_dbfs}")
        if url.startswith(("http://", "https://")) and not auth_token:
            raise ValueError("a voice webhook URL needs the auth_token to sign the request")
        self.url = url
        self.caller = caller
        self.to = to
        self._auth_token = auth_token
        self.wire = TwilioStream(caller=caller)
        self.stream_sid = self.wire.stream_sid
        self.call_sid = self.wire.call_sid
        self.account_sid = self.wire.account_sid
        self._strict = strict
        self._echo_gain = None if echo_db is None else 10 ** (-echo_db / 20)
        self._echo_delay_s = echo_delay_ms / 1000
        self._noise_rms = None if noise_dbfs is None else 32768 * 10 ** (noise_dbfs / 20)
        self._reply_gap_s = reply_gap_ms / 1000
        self._underrun_tolerance_s = underrun_tolerance_ms / 1000
        self._open_timeout_s = open_timeout_s
        self._rng = np.random.default_rng(seed)

        self.frames: list[OutboundFrame] = []
        self.marks: list[MarkEcho] = []
        self.clears: list[float] = []
        self.underruns: list[Underrun] = []
        self.protocol_errors: list[str] = []
        self.send_lateness_ms = 0.0
        self.connected_at = 0.0
        self.close_code: int | None = None

        self._ws: ClientConnection | None = None
        self._speech: deque[_Speech] = deque()
        self._play_end = 0.0  # monotonic s when everything received will have played
        self._pending: list[tuple[MarkEcho, asyncio.TimerHandle]] = []
        self._segments: list[_Segment] = []  # bot audio between pauses/clears
        self._reply_cursor = 0  # index in _segments of the next reply to return
        self._echo_index = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._pace_task: asyncio.Task[None] | None = None
        self._pulse = asyncio.Event()
        self._closed = False
        self._close_reason = ""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TwilioCaller:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.hang_up()

    async def open(self) -> None:
        """Connect (through the voice webhook, for an http(s) URL), send ``connected``
        and ``start``, and start streaming the line."""
        url, parameters = self.url, None
        if self._auth_token and url.startswith(("http://", "https://")):
            stream = await answer_call(
                url,
                self._auth_token,
                call_sid=self.call_sid,
                account_sid=self.account_sid,
                caller=self.caller,
                to=self.to,
                timeout_s=self._open_timeout_s,
            )
            url, parameters = stream.url, stream.parameters
        self._ws = await connect(
            url,
            open_timeout=self._open_timeout_s,
            close_timeout=2,
            compression=None,
            max_queue=None,
        )
        self.connected_at = time.monotonic()
        try:
            await self._ws.send(self.wire.connected())
            await self._ws.send(self.wire.start(parameters))
        except BaseException:
            await self._ws.close()
            raise
        self._spawn(self._receive_loop())
        self._pace_task = self._spawn(self._pace_loop())

    async def hang_up(self) -> None:
        """End the call as Twilio does: stop the line, send ``stop``, close the websocket."""
        ws = self._ws
        if ws is None:
            return
        if self._pace_task is not None:
            self._pace_task.cancel()
        if not self._closed:
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.send(self.wire.stop())
        with contextlib.suppress(ConnectionClosed, OSError):
            await ws.close()
        for _, handle in self._pending:
            handle.cancel()
        self._pending.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._closed = True
        self._wake()

    @property
    def reply_starts(self) -> list[float]:
        """Arrival time (monotonic s) of the first frame of every reply so far.

        A reply is bot audio after a pause of ``reply_gap_ms`` or after a
        ``clear`` (see :meth:`wait_for_reply`).
        """
        return [self.frames[segment.start].arrived_at for segment in self._segments]

    @property
    def closed(self) -> bool:
        """The media stream is closed (by either side)."""
        return self._closed

    # ------------------------------------------------------------------ the caller's side

    async def say(self, pcm16: bytes, sample_rate_hz: int) -> Utterance:
        """Speak: queue PCM16 mono audio on the line; return once its last frame was sent.

        The audio is resampled to 8 kHz and sent in 20 ms frames in real time,
        after any speech queued before it, mixed with the line's noise and echo.

        Raises:
            CallEnded: the stream closed before the speech was sent.
            ValueError: odd byte count or a non-positive rate.
        """
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
        if len(pcm16) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        if self._closed:
            raise CallEnded(self.close_code, self._close_reason)
        pcm = resample(pcm16, sample_rate_hz, TWILIO_SAMPLE_RATE_HZ)
        pcm += b"\x00" * (-len(pcm) % _PCM_FRAME_BYTES)
        frames = [pcm[i : i + _PCM_FRAME_BYTES] for i in range(0, len(pcm), _PCM_FRAME_BYTES)]
        done: asyncio.Future[Utterance] = asyncio.get_running_loop().create_future()
        if not frames:
            now = time.monotonic()
            return Utterance(now, now, 0)
        speech = _Speech(frames, done)
        self._speech.append(speech)
        closed = asyncio.create_task(self._wait_closed())
        try:
            waiters: set[asyncio.Future[Any]] = {done, closed}
            finished, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not done.done() and speech in self._speech:  # cancelled: stop talking
                self._speech.remove(speech)
        if done not in finished:
            raise CallEnded(self.close_code, self._close_reason)
        return done.result()

    async def send_dtmf(self, digit: str) -> None:
        """Send a ``dtmf`` message (one of ``0-9 * #``).

        Raises:
            ValueError: not one keypad key.
            CallEnded: the stream is closed.
        """
        message = self.wire.dtmf(digit)
        if self._closed or self._ws is None:
            raise CallEnded(self.close_code, self._close_reason)
        await self._ws.send(message)

    # ------------------------------------------------------------------ waiting for the bot

    async def wait_for_reply(
        self, timeout_s: float = 30.0, *, after: float | None = None
    ) -> BotReply:
        """Wait for the next reply: bot audio that starts, then stops.

        A reply is the audio from its first frame until either the playout
        buffer has been empty (everything played) for ``reply_gap_ms``, or a
        ``clear`` dropped it. Replies are returned in order, each once, even if
        they arrived before this call; so ``wait_for_reply`` right after
        connecting returns the greeting. With ``after`` (monotonic s), replies
        whose first frame arrived before it are skipped (e.g. pass the end of
        the caller's speech to get the answer to it, not a leftover).

        Raises:
            TimeoutError: no complete reply within ``timeout_s`` seconds.
            CallEnded: the stream closed first.
        """
        deadline = time.monotonic() + timeout_s
        index = self._reply_cursor

        def skip_older() -> None:
            nonlocal index
            if after is None:
                return
            while (
                index < len(self._segments)
                and self.frames[self._segments[index].start].arrived_at < after
            ):
                index += 1

        def complete() -> float | None:
            """0 when reply ``index`` is over, else seconds until it might be."""
            if index + 1 < len(self._segments):
                return 0.0
            if index >= len(self._segments):
                return None
            if self._segments[index].cleared_at is not None:
                return 0.0
            return max(0.0, self._play_end + self._reply_gap_s - time.monotonic())

        while True:
            skip_older()
            remaining = complete()
            if remaining == 0.0:
                break
            if self._closed:
                if index < len(self._segments):
                    break  # the server hung up after speaking: return what was heard
                raise CallEnded(self.close_code, self._close_reason)
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no complete bot reply within {timeout_s:g} s")
            wait = deadline - now if remaining is None else min(remaining, deadline - now)
            await self._sleep_or_pulse(wait)
        self._reply_cursor = index + 1
        return self._reply(index)

    async def wait_for_audio(self, timeout_s: float = 10.0, *, after: float | None = None) -> float:
        """Wait for a ``media`` frame received after monotonic time ``after`` (default: now).

        Returns the monotonic time it arrived.

        Raises:
            TimeoutError: none within ``timeout_s`` seconds.
            CallEnded: the stream closed first.
        """
        since = time.monotonic() if after is None else after
        deadline = time.monotonic() + timeout_s
        while True:
            if self.frames and self.frames[-1].arrived_at >= since:
                return next(f.arrived_at for f in self.frames if f.arrived_at >= since)
            if self._closed:
                raise CallEnded(self.close_code, self._close_reason)
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no bot audio within {timeout_s:g} s")
            await self._sleep_or_pulse(deadline - now)

    async def wait_for_clear(self, timeout_s: float = 10.0, *, after: float | None = None) -> float:
        """Wait for a ``clear`` received after monotonic time ``after`` (default: now).

        Returns the monotonic time the ``clear`` arrived.

        Raises:
            TimeoutError: none within ``timeout_s`` seconds.
            CallEnded: the stream closed first.
        """
        since = time.monotonic() if after is None else after
        deadline = time.monotonic() + timeout_s
        while True:
            for at in self.clears:
                if at >= since:
                    return at
            if self._closed:
                raise CallEnded(self.close_code, self._close_reason)
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no clear within {timeout_s:g} s")
            await self._sleep_or_pulse(deadline - now)

    async def listen(self, seconds: float) -> None:
        """Keep the line open (silence, noise and echo flow) for ``seconds``."""
        await asyncio.sleep(seconds)

    def heard_ulaw(self) -> bytes:
        """Everything the caller has heard so far, 8 kHz mu-law, without the pauses."""
        now = time.monotonic()
        return b"".join(f.ulaw[: f.played_bytes] for f in self.frames if f.play_at <= now)

    # ------------------------------------------------------------------ internals: sending

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pace_loop(self) -> None:
        """One inbound media frame every 20 ms, on the monotonic clock, all call long."""
        assert self._ws is not None
        ws = self._ws
        due = time.monotonic()
        try:
            while not self._closed:
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                    now = time.monotonic()
                late = now - due
                if late * 1000 > self.send_lateness_ms:
                    self.send_lateness_ms = late * 1000
                speech, ulaw = self._next_frame(due)
                await ws.send(self.wire.media(ulaw))
                if speech is not None:
                    self._speech_frame_sent(speech, time.monotonic())
                due += FRAME_S
                if now - due > _MAX_CATCH_UP_S:
                    due = now
        except ConnectionClosed:
            return

    def _next_frame(self, due: float) -> tuple[_Speech | None, bytes]:
        """The inbound frame captured in the 20 ms ending at ``due``: (speech, mu-law)."""
        speech = self._speech[0] if self._speech else None
        pcm = speech.frames[speech.next] if speech is not None else None
        if pcm is None and self._echo_gain is None and self._noise_rms is None:
            return None, SILENT_FRAME
        mix: npt.NDArray[np.float64] | None = None
        if pcm is not None:
            mix = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        if self._echo_gain is not None:
            echo = self._echo(due - FRAME_S - self._echo_delay_s, due - self._echo_delay_s)
            if echo is not None:
                echo *= self._echo_gain
                mix = echo if mix is None else mix + echo
        if self._noise_rms is not None:
            noise = self._rng.normal(0.0, self._noise_rms, TWILIO_FRAME_BYTES)
            mix = noise if mix is None else mix + noise
        if mix is None:
            return speech, SILENT_FRAME
        pcm_out = np.clip(np.rint(mix), -32768, 32767).astype("<i2").tobytes()
        return speech, pcm16_to_ulaw(pcm_out)

    def _speech_frame_sent(self, speech: _Speech, at: float) -> None:
        if speech.next == 0:
            speech.started_at = at
        speech.next += 1
        if speech.next == len(speech.frames):
            self._speech.popleft()
            if not speech.done.done():
                speech.done.set_result(Utterance(speech.started_at, at, len(speech.frames)))

    def _echo(self, start: float, end: float) -> npt.NDArray[np.float64] | None:
        """The audio played between monotonic ``start`` and ``end`` (160 samples), or None."""
        frames = self.frames
        i = self._echo_index
        while i < len(frames) and frames[i].play_end <= start:
            i += 1
        self._echo_index = i
        out: npt.NDArray[np.float64] | None = None
        while i < len(frames) and frames[i].play_at < end:
            frame = frames[i]
            i += 1
            s0, s1 = max(start, frame.play_at), min(end, frame.play_end)
            if s1 <= s0:
                continue
            a = round((s0 - frame.play_at) * _BYTES_PER_S)
            b = min(frame.played_bytes, round((s1 - frame.play_at) * _BYTES_PER_S))
            o = round((s0 - start) * _BYTES_PER_S)
            n = min(b - a, TWILIO_FRAME_BYTES - o)
            if n <= 0:
                continue
            if out is None:
                out = np.zeros(TWILIO_FRAME_BYTES, dtype=np.float64)
            piece = np.frombuffer(ulaw_to_pcm16(frame.ulaw[a : a + n]), dtype="<i2")
            out[o : o + n] += piece
        return out

    # ------------------------------------------------------------------ internals: receiving

    async def _receive_loop(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for raw in ws:
                self._on_message(raw, time.monotonic())
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            self.close_code = ws.close_code
            self._close_reason = ws.close_reason or ""
            self._wake()

    def _on_message(self, raw: str | bytes, now: float) -> None:
        try:
            message = parse_outbound(raw, strict=self._strict)
        except WireError as exc:
            self.protocol_errors.append(str(exc))
            return
        if message.stream_sid != self.stream_sid:
            self.protocol_errors.append(
                f"{type(message).__name__}: streamSid {message.stream_sid!r}"
            )
        match message:
            case OutboundMedia(ulaw=ulaw):
                self._on_media(ulaw, now)
            case OutboundMark(name=name):
                self._on_mark(name, now)
            case OutboundClear():
                self._on_clear(now)
        self._wake()

    def _on_media(self, ulaw: bytes, now: float) -> None:
        previous = self.frames[-1] if self.frames else None
        dry_since = self._play_end
        new_segment = (
            previous is None
            or (self.clears and self.clears[-1] >= previous.arrived_at)
            or now - dry_since >= self._reply_gap_s
        )
        if new_segment:
            self._segments.append(_Segment(start=len(self.frames)))
        elif now - dry_since > self._underrun_tolerance_s:
            underrun = Underrun(at=dry_since, gap_ms=(now - dry_since) * 1000)
            self.underruns.append(underrun)
            self._segments[-1].underruns.append(underrun)
        play_at = max(now, self._play_end)
        self._play_end = play_at + len(ulaw) / _BYTES_PER_S
        self.frames.append(OutboundFrame(now, play_at, ulaw, len(ulaw)))

    def _on_mark(self, name: str, now: float) -> None:
        mark = MarkEcho(name, now)
        self.marks.append(mark)
        delay = self._play_end - now
        if delay <= 0:
            self._echo_mark(mark)
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, self._echo_mark, mark)
        self._pending.append((mark, handle))

    def _echo_mark(self, mark: MarkEcho) -> None:
        self._pending = [(m, h) for m, h in self._pending if m is not mark]
        mark.echoed_at = time.monotonic()
        if not self._closed:
            self._spawn(self._send_mark(mark.name))
        self._wake()

    async def _send_mark(self, name: str) -> None:
        assert self._ws is not None
        with contextlib.suppress(ConnectionClosed, OSError):
            await self._ws.send(self.wire.mark(name))

    def _on_clear(self, now: float) -> None:
        """Drop unplayed audio (cut the frame playing now) and echo pending marks at once."""
        self.clears.append(now)
        live = self._segments and now < self._play_end + self._reply_gap_s
        if live and self._segments[-1].cleared_at is None:
            self._segments[-1].cleared_at = now
        for frame in reversed(self.frames):
            if frame.play_end <= now:
                break
            if frame.play_at >= now:
                frame.played_bytes = 0
                frame.play_at = now  # keeps frames ordered by playout time
            else:
                frame.played_bytes = min(
                    frame.played_bytes, round((now - frame.play_at) * _BYTES_PER_S)
                )
        self._play_end = min(self._play_end, now)
        pending, self._pending = self._pending, []
        for mark, handle in pending:
            handle.cancel()
            mark.cleared = True
            mark.echoed_at = now
        if pending and not self._closed:
            names = [mark.name for mark, _ in pending]
            self._spawn(self._send_marks(names))

    async def _send_marks(self, names: list[str]) -> None:
        for name in names:
            await self._send_mark(name)

    # ------------------------------------------------------------------ internals: waiting

    def _wake(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    async def _sleep_or_pulse(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pulse.wait(), max(0.0, seconds))

    async def _wait_closed(self) -> None:
        while not self._closed:
            await self._pulse.wait()

    def _reply(self, index: int) -> BotReply:
        segment = self._segments[index]
        end = (
            self._segments[index + 1].start if index + 1 < len(self._segments) else len(self.frames)
        )
        frames = self.frames[segment.start : end]
        first, last = frames[0], frames[-1]
        cleared_at = segment.cleared_at
        return BotReply(
            first_frame_at=first.arrived_at,
            last_frame_at=last.arrived_at,
            frame_arrivals=tuple(f.arrived_at for f in frames),
            payload_sizes=frozenset(len(f.ulaw) for f in frames),
            played_ulaw=b"".join(f.ulaw[: f.played_bytes] for f in frames),
            received_bytes=sum(len(f.ulaw) for f in frames),
            cleared=cleared_at is not None,
            cleared_at=cleared_at,
            underruns=tuple(segment.underruns),
        )

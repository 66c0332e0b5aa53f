"""Paced outbound audio for a Twilio bidirectional Media Stream, with marks.

Twilio plays whatever ``media`` it receives, in order, buffering without
limit. If a whole reply were sent at once, a barge-in could only be handled
by ``clear``, and we would not know how much the caller heard. So the player
keeps the reply locally and sends exact 20 ms frames (160 bytes of 8 kHz
mu-law) on a real-time clock, keeping only ``lead_ms`` of audio queued at
Twilio. Every ``mark_every_frames`` frames it sends a ``mark``; Twilio echoes
a mark when the audio before it has played, which tells us how far the
caller has heard. Shapes per Twilio's "Media Streams - WebSocket Messages".

Usage (one player per call; ``send`` writes one websocket text frame)::

    player = PacedPlayer(send, stream_sid)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(player.run())          # the pump; ends after close()
        reply = player.start_reply()
        reply.add_pcm(chunk.pcm, chunk.sample_rate_hz, text="Hello!")   # per sentence
        reply.finish()
        ... on each Twilio ``mark`` event: player.on_mark(event.name)
        ... on barge-in onset: await player.pause(); then player.resume() (it was
            a backchannel) or report = await player.clear() (a real interruption)
        report = await reply.wait_played()
        player.close()

``report.heard_ms`` counts only audio confirmed by echoed marks, so it lags
the truth by up to ``mark_every_frames`` frames plus the network delay;
``report.estimated_ms`` is the clock's estimate.

Pausing (barge-in onset) sends ``clear`` at once, so the caller stops hearing
the bot within a network round trip, but keeps the reply: the frames Twilio
had not yet played (by the clock) go back to the front of the local queue, so
:meth:`PacedPlayer.resume` continues where the caller stopped hearing. Mark
names carry the pause count (``"3:40@1"``) so marks Twilio echoes because of
the ``clear`` are told apart from marks of audio that really played.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.phone.codec import encode_clear, encode_mark, encode_media
from providers.speech.audio import (
    FRAME_MS,
    TWILIO_FRAME_BYTES,
    TWILIO_SAMPLE_RATE_HZ,
    ULAW_SILENCE,
    FrameBuffer,
    Resampler,
    pcm16_to_ulaw,
)

__all__ = [
    "PacedPlayer",
    "PlaybackConfig",
    "PlaybackReport",
    "Reply",
]

Send = Callable[[str], Awaitable[None]]
"""Writes one websocket text frame to Twilio."""
Clock = Callable[[], float]
"""Monotonic time in seconds."""
Sleep = Callable[[float], Awaitable[None]]
"""Sleeps for a number of seconds."""

_BYTES_PER_MS = TWILIO_SAMPLE_RATE_HZ // 1000  # mu-law: one byte per sample
_FRAME_S = FRAME_MS / 1000
_EPSILON_S = 1e-6


@dataclass(frozen=True, slots=True)
class PlaybackConfig:
    """Pacing settings.

    Attributes:
        lead_ms: most audio queued at Twilio ahead of what is playing, in ms
            (a multiple of 20; 100-200 absorbs network jitter without making
            barge-in sluggish).
        mark_every_frames: send a mark after this many 20 ms frames.
    """

    lead_ms: int = 200
    mark_every_frames: int = 5

    def __post_init__(self) -> None:
        if self.lead_ms < FRAME_MS or self.lead_ms % FRAME_MS:
            raise ValueError(
                f"lead_ms must be a positive multiple of {FRAME_MS}, got {self.lead_ms}"
            )
        if self.mark_every_frames < 1:
            raise ValueError(f"mark_every_frames must be >= 1, got {self.mark_every_frames}")


@dataclass(frozen=True, slots=True)
class PlaybackReport:
    """How much of one reply reached the caller.

    Attributes:
        reply_id: the reply this is about.
        heard_ms: audio confirmed played by echoed marks, in ms.
        estimated_ms: audio played by the clock's estimate, in ms (>= heard_ms).
        sent_ms: audio sent to Twilio, in ms.
        total_ms: audio of the reply queued so far, in ms.
        completed: the whole reply was played (its final mark came back).
        interrupted: the reply was cleared before it completed.
        heard_text: the text segments heard completely (by ``heard_ms``), joined.
        partial_text: the segment that was playing at ``heard_ms``, if any.
        partial_fraction: how much of ``partial_text``'s audio was heard, 0..1.
    """

    reply_id: int
    heard_ms: int
    estimated_ms: int
    sent_ms: int
    total_ms: int
    completed: bool
    interrupted: bool
    heard_text: str
    partial_text: str | None
    partial_fraction: float = 0.0

    def heard_words(self) -> str:
        """The text the caller heard: whole segments, then the words of the partial
        segment in proportion to its audio heard (an estimate at word level)."""
        words = self.heard_text.split()
        if self.partial_text:
            partial = self.partial_text.split()
            words += partial[: int(len(partial) * self.partial_fraction)]
        return " ".join(words)


class Reply:
    """One reply's audio, added piece by piece; get it from :meth:`PacedPlayer.start_reply`.

    Audio added after the reply was cleared is dropped silently, so a TTS
    stream still running at barge-in needs no special case.
    """

    def __init__(self, player: PacedPlayer, reply_id: int) -> None:
        self.reply_id = reply_id
        self._player = player
        self._framer = FrameBuffer(TWILIO_FRAME_BYTES)
        self._frames: deque[bytes] = deque()
        self._resampler: Resampler | None = None
        self._segments: list[tuple[str, int]] = []  # (text, start offset in bytes)
        self._queued_bytes = 0
        self._sent_frames = 0
        self._acked_frames = 0
        self._finished = False
        self._end_mark_sent = False
        self._completed = False
        self._cleared = False
        self._playout_end = 0.0  # clock time when this reply's sent audio will have played
        self._frozen_estimate_ms: int | None = None
        self._done = asyncio.Event()
        self._epoch = 0  # pauses so far; part of mark names
        self.first_sent_at: float | None = None
        """Clock time the reply's first frame was sent (None: not yet)."""
        self.first_ack_at: float | None = None
        """Clock time the reply's first mark came back (None: not yet)."""
        self._recent: deque[bytes] = deque(maxlen=player.config.lead_ms // FRAME_MS + 5)

    # -- adding audio

    def add_ulaw(self, ulaw: bytes, text: str | None = None) -> None:
        """Append 8 kHz mu-law audio; ``text`` (if given) starts a new text segment here.

        Raises:
            RuntimeError: the reply was already finished.
        """
        self._check_open()
        if self._cleared:
            return
        self._flush_resampler()
        self._append(ulaw, text)

    def add_pcm(self, pcm: bytes, sample_rate_hz: int, text: str | None = None) -> None:
        """Append PCM16 mono audio at ``sample_rate_hz`` (resampled to 8 kHz, mu-law encoded).

        Raises:
            RuntimeError: the reply was already finished.
            ValueError: odd byte count.
        """
        self._check_open()
        if self._cleared:
            return
        if self._resampler is not None and self._resampler.in_rate_hz != sample_rate_hz:
            self._flush_resampler()
        if self._resampler is None:
            self._resampler = Resampler(sample_rate_hz, TWILIO_SAMPLE_RATE_HZ)
        self._append(pcm16_to_ulaw(self._resampler.process(pcm)), text)

    def finish(self) -> None:
        """No more audio: pad the last frame with silence and let the end mark go out."""
        if self._finished:
            return
        if not self._cleared:
            self._flush_resampler()
            last = self._framer.drain(pad=ULAW_SILENCE)
            if last is not None:
                self._frames.append(last)
        self._finished = True
        self._player._wake.set()

    # -- progress

    async def wait_played(self) -> PlaybackReport:
        """Wait until the reply has fully played or was cleared; return its report."""
        await self._done.wait()
        return self.report()

    @property
    def done(self) -> bool:
        """Fully played (final mark echoed) or cleared."""
        return self._done.is_set()

    @property
    def end_mark_sent(self) -> bool:
        """All audio was sent and the final mark went out after it."""
        return self._end_mark_sent

    @property
    def queued_ms(self) -> int:
        """Audio added to this reply so far, in ms."""
        return self._queued_bytes // _BYTES_PER_MS

    @property
    def finished(self) -> bool:
        """:meth:`finish` was called: no more audio will be added."""
        return self._finished

    def report(self) -> PlaybackReport:
        """The reply's progress now."""
        if self._finished:  # the last frame was padded to a whole 20 ms
            total_ms = -(-self._queued_bytes // TWILIO_FRAME_BYTES) * FRAME_MS
        else:
            total_ms = self._queued_bytes // _BYTES_PER_MS
        heard_ms = self._acked_frames * FRAME_MS
        sent_ms = self._sent_frames * FRAME_MS
        if self._completed:
            estimated_ms = sent_ms
        elif self._frozen_estimate_ms is not None:
            estimated_ms = self._frozen_estimate_ms
        else:
            estimated_ms = self._estimate_played_ms()
        estimated_ms = max(heard_ms, min(sent_ms, estimated_ms))
        heard: list[str] = []
        partial: str | None = None
        fraction = 0.0
        for index, (text, start_byte) in enumerate(self._segments):
            start_ms = start_byte // _BYTES_PER_MS
            end_ms = (
                self._segments[index + 1][1] // _BYTES_PER_MS
                if index + 1 < len(self._segments)
                else total_ms
            )
            if end_ms <= heard_ms and (self._finished or index + 1 < len(self._segments)):
                heard.append(text)
            elif start_ms < heard_ms:
                partial = text
                fraction = min(1.0, (heard_ms - start_ms) / max(1, end_ms - start_ms))
        return PlaybackReport(
            reply_id=self.reply_id,
            heard_ms=heard_ms,
            estimated_ms=estimated_ms,
            sent_ms=sent_ms,
            total_ms=total_ms,
            completed=self._completed,
            interrupted=self._cleared and not self._completed,
            heard_text=" ".join(heard),
            partial_text=partial,
            partial_fraction=fraction,
        )

    # -- internals used by the player

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"reply {self.reply_id} is finished; start a new one")

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.flush()
            self._resampler = None
            if tail:
                self._append(pcm16_to_ulaw(tail), None)

    def _append(self, ulaw: bytes, text: str | None) -> None:
        if text and text.strip():
            self._segments.append((" ".join(text.split()), self._queued_bytes))
        self._queued_bytes += len(ulaw)
        self._frames.extend(self._framer.push(ulaw))
        if self._frames:
            self._player._wake.set()

    def _pop_frame(self) -> bytes | None:
        return self._frames.popleft() if self._frames else None

    def _has_frames(self) -> bool:
        return bool(self._frames)

    def _estimate_played_ms(self) -> int:
        unplayed_s = max(0.0, self._playout_end - self._player._clock())
        return max(0, self._sent_frames * FRAME_MS - round(unplayed_s * 1000))

    def _mark_name(self, end: bool = False) -> str:
        name = f"{self.reply_id}:{self._sent_frames}"
        if self._epoch:
            name += f"@{self._epoch}"
        return name + (":end" if end else "")

    def _rewind(self, frames: int) -> int:
        """Put back up to ``frames`` sent-but-unplayed frames at the queue's front."""
        count = min(frames, len(self._recent))
        for _ in range(count):
            self._frames.appendleft(self._recent.pop())
        self._sent_frames -= count
        self._acked_frames = min(self._acked_frames, self._sent_frames)
        self._end_mark_sent = False
        self._epoch += 1
        self._playout_end = self._player._clock()
        return count

    def _drop(self) -> None:
        self._frozen_estimate_ms = self._estimate_played_ms()
        self._cleared = True
        self._frames.clear()
        self._framer.clear()
        self._resampler = None
        self._done.set()

    def _complete(self) -> None:
        self._completed = True
        self._acked_frames = self._sent_frames
        self._done.set()


class PacedPlayer:
    """Sends replies to Twilio in real time, 20 ms per frame, with marks.

    Args:
        send: writes one websocket text frame (a JSON string) to Twilio.
        stream_sid: the Media Stream's ``streamSid``.
        config: pacing settings.
        clock: monotonic seconds (inject a fake one in tests).
        sleep: awaits a number of seconds (inject one that advances the fake clock).
        on_frame_sent: called with each 160-byte mu-law frame as it is sent
            (e.g. to feed the turn-taker the level of what we are playing).
    """

    def __init__(
        self,
        send: Send,
        stream_sid: str,
        *,
        config: PlaybackConfig | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_frame_sent: Callable[[bytes], None] | None = None,
    ) -> None:
        if not stream_sid:
            raise ValueError("stream_sid must not be empty")
        self._send = send
        self.stream_sid = stream_sid
        self.config = config or PlaybackConfig()
        self._clock = clock
        self._sleep = sleep
        self._on_frame_sent = on_frame_sent
        self._replies: deque[Reply] = deque()  # not yet completed or cleared, oldest first
        self._next_id = 1
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._paused = False
        self._playout_end = 0.0  # clock time when all audio sent so far will have played
        self.frames_sent = 0
        self.marks_sent = 0

    # -- replies

    def start_reply(self) -> Reply:
        """A new reply, queued after any reply still playing."""
        if self._closed:
            raise RuntimeError("the player is closed")
        reply = Reply(self, self._next_id)
        self._next_id += 1
        self._replies.append(reply)
        return reply

    @property
    def is_playing(self) -> bool:
        """True while some reply has audio queued here or not yet confirmed played."""
        return any(not r.done for r in self._replies)

    @property
    def lead_ms(self) -> float:
        """Audio sent but (by the clock) not yet played, in ms."""
        return max(0.0, self._playout_end - self._clock()) * 1000

    def current_reply(self) -> Reply | None:
        """The oldest reply not yet played or cleared."""
        for reply in self._replies:
            if not reply.done:
                return reply
        return None

    # -- input from Twilio

    def on_mark(self, name: str) -> None:
        """Handle a ``mark`` echoed by Twilio. Unknown or stale marks are ignored."""
        parts = name.split(":")
        if len(parts) not in (2, 3) or not parts[0].isdigit():
            return
        count, _, epoch = parts[1].partition("@")
        if not count.isdigit() or (epoch and not epoch.isdigit()):
            return
        reply_id, frames = int(parts[0]), int(count)
        for reply in self._replies:
            if reply.reply_id != reply_id:
                continue
            if reply._cleared or reply._completed or int(epoch or 0) != reply._epoch:
                return  # marks echoed because of a clear mean nothing was heard
            reply._acked_frames = max(reply._acked_frames, min(frames, reply._sent_frames))
            if reply.first_ack_at is None:
                reply.first_ack_at = self._clock()
            if len(parts) == 3 and parts[2] == "end":
                reply._complete()
            self._forget_done()
            return

    # -- barge-in

    @property
    def paused(self) -> bool:
        return self._paused

    async def pause(self) -> PlaybackReport | None:
        """Barge-in onset: silence the bot now but keep the rest of the reply.

        Sends ``clear`` if Twilio holds unplayed audio, puts the frames it had
        not played (by the clock) back in the local queue and holds the pump
        until :meth:`resume` or :meth:`clear`. Returns the report of the reply
        that was playing (None when idle).
        """
        async with self._send_lock:
            self._paused = True
            now = self._clock()
            unplayed = round(max(0.0, self._playout_end - now) / _FRAME_S)
            playing = self.current_reply()
            had_audio_out = unplayed > 0
            for reply in reversed(self._replies):
                if unplayed <= 0:
                    break
                if reply.done or not reply._sent_frames:
                    continue
                unplayed -= reply._rewind(unplayed)
            self._playout_end = now
            if had_audio_out:
                await self._send(encode_clear(self.stream_sid))
        return playing.report() if playing is not None else None

    def hold(self) -> None:
        """Hold the pump without sending ``clear`` (use when nothing is playing)."""
        self._paused = True

    def complete_unacked(self, reply: Reply) -> None:
        """Count ``reply`` as played though its end mark never came back (the peer
        does not echo marks); what was heard is then taken from the clock."""
        if not reply.done and reply._end_mark_sent:
            reply._complete()
            self._forget_done()

    def resume(self) -> None:
        """Continue after :meth:`pause` from where the caller stopped hearing."""
        self._paused = False
        self._wake.set()

    async def clear(self) -> PlaybackReport | None:
        """Stop playback now: drop local audio, tell Twilio to drop its buffer.

        Returns the report of the reply that was playing (None when idle).
        Every queued reply is cleared.
        """
        async with self._send_lock:
            playing = self.current_reply()
            # after pause() Twilio holds nothing of ours: no second clear
            had_audio_out = not self._paused and any(
                r._sent_frames and not r.done for r in self._replies
            )
            for reply in self._replies:
                if not reply.done:
                    reply._drop()
            self._replies.clear()
            self._paused = False
            self._playout_end = self._clock()
            if had_audio_out:
                await self._send(encode_clear(self.stream_sid))
        return playing.report() if playing is not None else None

    async def withdraw(self, reply: Reply) -> bool:
        """Drop ``reply`` alone: its text was taken back before it finished.

        Its audio queued here is dropped and, if some of it was sent (and no
        :meth:`pause` has already emptied Twilio's buffer), ``clear`` is sent
        so Twilio drops what it holds. Other replies and a pause stay as they
        are; the reply's marks echoed later are ignored. Returns whether
        ``clear`` was sent.
        """
        async with self._send_lock:
            if reply.done:
                return False
            had_audio_out = not self._paused and reply._sent_frames > 0
            reply._drop()
            if reply in self._replies:
                self._replies.remove(reply)
            if had_audio_out:
                self._playout_end = self._clock()
                await self._send(encode_clear(self.stream_sid))
        return had_audio_out

    # -- the pump

    def close(self) -> None:
        """Make :meth:`run` return (audio still queued is not sent)."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Send queued audio until :meth:`close`. Run it in the call's task group.

        Raises whatever ``send`` raises (e.g. the websocket closed).
        """
        lead_s = self.config.lead_ms / 1000
        while not self._closed:
            reply = self._sendable_reply()
            if reply is None:
                self._wake.clear()
                if self._sendable_reply() is None and not self._closed:
                    await self._wake.wait()
                continue
            if reply._has_frames():
                backlog = self._playout_end - self._clock()
                if backlog > lead_s - _FRAME_S + _EPSILON_S:
                    await self._sleep(backlog - (lead_s - _FRAME_S))
                    continue
                await self._send_frame(reply)
            else:  # finished and fully sent: the end mark tells us when it has played
                await self._send_end_mark(reply)

    def _sendable_reply(self) -> Reply | None:
        if self._paused:
            return None
        for reply in self._replies:
            if reply.done:
                continue
            if reply._has_frames() or (reply._finished and not reply._end_mark_sent):
                return reply
            if not reply._finished:
                return None  # later replies wait until this one is finished
        return None

    async def _send_frame(self, reply: Reply) -> None:
        async with self._send_lock:
            if reply._cleared or self._paused:
                return
            frame = reply._pop_frame()
            if frame is None:
                return
            await self._send(encode_media(self.stream_sid, frame))
            reply._recent.append(frame)
            now = self._clock()
            if reply.first_sent_at is None:
                reply.first_sent_at = now
            self._playout_end = max(self._playout_end, now) + _FRAME_S
            reply._sent_frames += 1
            self.frames_sent += 1
            reply._playout_end = self._playout_end
            if self._on_frame_sent is not None:
                self._on_frame_sent(frame)
            last = reply._finished and not reply._has_frames()
            if not last and reply._sent_frames % self.config.mark_every_frames == 0:
                await self._send(encode_mark(self.stream_sid, reply._mark_name()))
                self.marks_sent += 1
        if reply._finished and not reply._has_frames():
            await self._send_end_mark(reply)

    async def _send_end_mark(self, reply: Reply) -> None:
        async with self._send_lock:
            if reply._cleared or reply._end_mark_sent or self._paused:
                return
            reply._end_mark_sent = True
            if reply._sent_frames == 0:
                reply._complete()  # nothing to play
                self._forget_done()
                return
            await self._send(encode_mark(self.stream_sid, reply._mark_name(end=True)))
            self.marks_sent += 1

    def _forget_done(self) -> None:
        while self._replies and self._replies[0].done:
            self._replies.popleft()

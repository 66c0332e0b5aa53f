"""Paced playback with marks, on a virtual clock and a fake Twilio line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest

from channels.phone.playback import PacedPlayer, PlaybackConfig, Reply
from providers.speech.audio import ULAW_SILENCE
from testkit.phone.wire import OutboundClear, OutboundMark, OutboundMedia, parse_outbound

SID = "MZ0123"
EPS = 1e-6


class VirtualTime:
    """A clock that moves only when the test advances it; ``sleep`` waits on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.on_tick: list[Callable[[], None]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + max(0.0, seconds), future))
        await future

    async def settle(self) -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    async def advance(self, seconds: float, step: float = 0.005) -> None:
        end = self.now + seconds
        await self.settle()
        while self.now < end - EPS:
            self.now = min(end, self.now + step)
            for due, future in list(self._sleepers):
                if due <= self.now + EPS:
                    self._sleepers.remove((due, future))
                    if not future.done():
                        future.set_result(None)
            for tick in self.on_tick:
                tick()
            await self.settle()


@dataclass
class FakeTwilio:
    """Plays media in real time, echoes marks when the audio before them has played,
    and on ``clear`` empties its buffer and echoes pending marks at once (as Twilio does).
    Messages are read strictly by the fake-Twilio wire parser."""

    time: VirtualTime
    player: PacedPlayer | None = None
    media: list[tuple[float, bytes]] = field(default_factory=list)  # (send time, payload)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (send time, name)
    clears: list[float] = field(default_factory=list)
    play_end: float = 0.0
    max_lead_s: float = 0.0
    pending: list[tuple[float, str]] = field(default_factory=list)  # (due, name)

    async def send(self, text: str) -> None:
        message = parse_outbound(text, strict=True)
        now = self.time.now
        assert message.stream_sid == SID
        match message:
            case OutboundMedia(ulaw=payload):
                self.media.append((now, payload))
                self.play_end = max(self.play_end, now) + len(payload) / 8000
                self.max_lead_s = max(self.max_lead_s, self.play_end - now)
            case OutboundMark(name=name):
                self.marks.append((now, name))
                self.pending.append((max(self.play_end, now), name))
            case OutboundClear():
                self.clears.append(now)
                self.play_end = now
                echoed, self.pending = self.pending, []
                for _, name in echoed:
                    assert self.player is not None
                    self.player.on_mark(name)

    def tick(self) -> None:
        due = [p for p in self.pending if p[0] <= self.time.now + EPS]
        self.pending = [p for p in self.pending if p[0] > self.time.now + EPS]
        for _, name in due:
            assert self.player is not None
            self.player.on_mark(name)


@asynccontextmanager
async def line(
    config: PlaybackConfig | None = None,
    on_frame_sent: Callable[[bytes], None] | None = None,
) -> AsyncIterator[tuple[PacedPlayer, FakeTwilio, VirtualTime]]:
    time = VirtualTime()
    twilio = FakeTwilio(time)
    player = PacedPlayer(
        twilio.send,
        SID,
        config=config,
        clock=time.clock,
        sleep=time.sleep,
        on_frame_sent=on_frame_sent,
    )
    twilio.player = player
    time.on_tick.append(twilio.tick)
    async with asyncio.TaskGroup() as group:
        group.create_task(player.run())
        try:
            yield player, twilio, time
        finally:
            player.close()
            for _, future in time._sleepers:
                if not future.done():
                    future.set_result(None)


def tone_ulaw(ms: int, code: int = 0x20) -> bytes:
    return bytes([code]) * (8 * ms)


async def play_all(reply: Reply, time: VirtualTime, limit_s: float = 30.0) -> None:
    waited = 0.0
    while not reply.done and waited < limit_s:
        await time.advance(0.1)
        waited += 0.1
    assert reply.done


async def test_frames_are_exact_paced_and_marked() -> None:
    async with line(PlaybackConfig(lead_ms=200, mark_every_frames=5)) as (player, twilio, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(1000), text="One second of audio.")
        reply.finish()
        await play_all(reply, time)

    assert len(twilio.media) == 50
    assert all(len(payload) == 160 for _, payload in twilio.media)
    assert [name for _, name in twilio.marks] == [f"1:{n}" for n in range(5, 50, 5)] + ["1:50:end"]
    # never more than the lead queued at Twilio; the rest waited here
    assert twilio.max_lead_s <= 0.2 + EPS
    for index, (sent_at, _) in enumerate(twilio.media):
        assert (index + 1) * 0.02 - sent_at <= 0.2 + EPS
    assert twilio.media[-1][0] >= 0.75  # not sent in one burst
    report = reply.report()
    assert report.completed and not report.interrupted
    assert report.heard_ms == report.sent_ms == report.total_ms == 1000
    assert report.heard_text == "One second of audio."
    assert not player.is_playing


async def test_last_partial_frame_is_padded_with_silence() -> None:
    async with line() as (player, twilio, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(1010))
        reply.finish()
        await play_all(reply, time)
    assert len(twilio.media) == 51
    assert twilio.media[-1][1] == bytes([0x20]) * 80 + bytes([ULAW_SILENCE]) * 80


async def test_heard_ms_and_text_follow_acked_marks() -> None:
    async with line(PlaybackConfig(lead_ms=200, mark_every_frames=5)) as (player, _, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(500), text="First sentence.")
        reply.add_ulaw(tone_ulaw(500), text="Second sentence.")
        reply.finish()

        await time.advance(0.45)
        early = reply.report()
        assert early.heard_ms == 400  # marks after 100, 200, 300, 400 ms came back
        assert early.heard_text == "" and early.partial_text == "First sentence."
        assert early.heard_ms <= early.estimated_ms <= early.sent_ms

        await time.advance(0.2)
        later = reply.report()
        assert later.heard_ms == 600
        assert later.heard_text == "First sentence."
        assert later.partial_text == "Second sentence."
        await play_all(reply, time)
        assert reply.report().heard_text == "First sentence. Second sentence."


async def test_clear_drops_the_local_queue_and_reports_what_was_heard() -> None:
    async with line(PlaybackConfig(lead_ms=200, mark_every_frames=5)) as (player, twilio, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(1000), text="Our hours are nine to seven.")
        reply.add_ulaw(tone_ulaw(2000), text="We also offer facials.")
        reply.finish()
        await time.advance(1.23)

        report = await player.clear()
        assert report is not None and report.interrupted and not report.completed
        assert report.heard_ms == 1200
        assert report.heard_text == "Our hours are nine to seven."
        assert report.partial_text == "We also offer facials."
        assert report.sent_ms <= 1240 + 200  # only the lead was ahead of the caller
        assert report.total_ms == 3000
        assert len(twilio.clears) == 1

        sent_before = len(twilio.media)
        await time.advance(1.0)
        assert len(twilio.media) == sent_before  # nothing more after clear
        assert reply.done and not player.is_playing
        # marks echoed because of the clear did not count as heard
        assert reply.report().heard_ms == 1200
        # the next reply plays normally
        reply2 = player.start_reply()
        reply2.add_ulaw(tone_ulaw(100))
        reply2.finish()
        await play_all(reply2, time)
        assert reply2.report().completed


async def test_clear_when_idle_sends_nothing() -> None:
    async with line() as (player, twilio, _):
        assert await player.clear() is None
    assert twilio.clears == []


async def test_audio_added_after_clear_is_ignored() -> None:
    async with line() as (player, twilio, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(400))
        await time.advance(0.1)
        await player.clear()
        reply.add_ulaw(tone_ulaw(400))  # the TTS was still streaming
        reply.finish()
        sent = len(twilio.media)
        await time.advance(0.5)
        assert len(twilio.media) == sent


async def test_replies_play_in_order() -> None:
    async with line() as (player, twilio, time):
        first, second = player.start_reply(), player.start_reply()
        second.add_ulaw(tone_ulaw(200, code=0x30))
        second.finish()
        first.add_ulaw(tone_ulaw(200, code=0x20))
        first.finish()
        await play_all(second, time)
    codes = [payload[0] for _, payload in twilio.media]
    assert codes == [0x20] * 10 + [0x30] * 10
    assert first.report().completed and second.report().completed


async def test_slow_producer_keeps_frames_paced() -> None:
    async with line(PlaybackConfig(lead_ms=100)) as (player, twilio, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(300), text="Let me check.")
        await time.advance(1.0)  # the next sentence takes a while to synthesise
        reply.add_ulaw(tone_ulaw(300), text="Friday at ten works.")
        reply.finish()
        await play_all(reply, time)
    assert len(twilio.media) == 30
    assert twilio.max_lead_s <= 0.1 + EPS
    assert reply.report().heard_text == "Let me check. Friday at ten works."


async def test_pcm_is_resampled_and_each_frame_reported() -> None:
    seen: list[bytes] = []
    async with line(on_frame_sent=seen.append) as (player, twilio, time):
        reply = player.start_reply()
        t = np.arange(22050) / 22050
        pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()
        reply.add_pcm(pcm[: len(pcm) // 2], 22050, text="Hello.")
        reply.add_pcm(pcm[len(pcm) // 2 :], 22050)
        reply.finish()
        await play_all(reply, time)
    assert len(twilio.media) == 50  # one second at 8 kHz, 160 bytes per frame
    assert seen == [payload for _, payload in twilio.media]


async def test_empty_reply_completes_without_audio() -> None:
    async with line() as (player, twilio, time):
        reply = player.start_reply()
        reply.finish()
        await time.advance(0.05)
        assert reply.done and reply.report().completed
    assert twilio.media == [] and twilio.marks == []


async def test_foreign_and_malformed_marks_are_ignored() -> None:
    async with line() as (player, _, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(200))
        for name in ["greeting", "99:5", "1:x", "1:2:3:4", ""]:
            player.on_mark(name)
        assert reply.report().heard_ms == 0
        reply.finish()
        await play_all(reply, time)


def test_settings_and_misuse() -> None:
    with pytest.raises(ValueError):
        PlaybackConfig(lead_ms=30)
    with pytest.raises(ValueError):
        PlaybackConfig(mark_every_frames=0)

    async def send(_: str) -> None:
        return None

    with pytest.raises(ValueError):
        PacedPlayer(send, "")


async def test_adding_to_a_finished_reply_is_an_error() -> None:
    async def send(_: str) -> None:
        return None

    reply = PacedPlayer(send, SID).start_reply()
    reply.finish()
    with pytest.raises(RuntimeError, match="finished"):
        reply.add_ulaw(b"\x00" * 160)


def numbered_frames(count: int) -> bytes:
    """``count`` 20 ms frames, frame i filled with byte i (so the order can be checked)."""
    return b"".join(bytes([i]) * 160 for i in range(count))


async def test_pause_clears_twilio_and_resume_continues_where_the_caller_stopped_hearing() -> None:
    async with line(PlaybackConfig(lead_ms=200, mark_every_frames=5)) as (player, twilio, time):
        reply = player.start_reply()
        reply.add_ulaw(numbered_frames(100), text="Two seconds of numbered frames.")
        reply.finish()
        await time.advance(0.5)
        played_before = round(time.now / 0.02)  # Twilio has played this many frames
        sent_before = len(twilio.media)
        assert sent_before > played_before  # the lead is out at Twilio

        await player.pause()
        assert twilio.clears == [time.now]
        assert player.paused
        await time.advance(1.0)
        assert len(twilio.media) == sent_before  # nothing sent while paused
        assert not reply.done

        player.resume()
        await play_all(reply, time)
        resent = [payload[0] for _, payload in twilio.media[sent_before:]]
        # playback resumes at the first frame the caller had not heard
        assert resent[0] == played_before
        assert resent[-1] == 99
        report = reply.report()
        assert report.completed and report.heard_ms == 2000
        # marks echoed because of the clear carried the old pause count and were ignored
        assert any("@1" in name for _, name in twilio.marks)


async def test_clear_after_pause_drops_the_reply_and_sends_no_second_clear() -> None:
    async with line() as (player, twilio, time):
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(2000), text="Long reply.")
        reply.finish()
        await time.advance(0.6)
        await player.pause()
        report = await player.clear()
        assert len(twilio.clears) == 1
        assert report is not None and report.interrupted
        assert reply.done and not player.paused
        assert 400 <= report.heard_ms <= 600  # marks up to what had played


async def test_a_reply_whose_end_mark_never_comes_back_can_be_completed_by_the_clock() -> None:
    time = VirtualTime()
    sent: list[str] = []

    async def send(text: str) -> None:  # a peer that never echoes marks
        sent.append(text)

    player = PacedPlayer(send, SID, clock=time.clock, sleep=time.sleep)
    async with asyncio.TaskGroup() as group:
        group.create_task(player.run())
        reply = player.start_reply()
        reply.add_ulaw(tone_ulaw(200), text="Short.")
        reply.finish()
        await time.advance(0.5)
        assert reply.end_mark_sent and not reply.done
        player.complete_unacked(reply)
        assert reply.done and reply.report().completed
        player.close()


def test_heard_words_estimates_the_partial_sentence() -> None:
    from channels.phone.playback import PlaybackReport

    report = PlaybackReport(
        reply_id=1,
        heard_ms=1500,
        estimated_ms=1500,
        sent_ms=1700,
        total_ms=3000,
        completed=False,
        interrupted=True,
        heard_text="Sure.",
        partial_text="What name should I put the booking under?",
        partial_fraction=0.5,
    )
    assert report.heard_words() == "Sure. What name should I"  # 4 of its 8 words

"""Turn-taking state machine on scripted 20 ms frame timelines (virtual time)."""

from __future__ import annotations

import math
import shutil
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from channels.phone.turns import (
    BargeIn,
    BargeInEnded,
    BargeInStarted,
    CallTimeLimit,
    EndOfTurn,
    Pause,
    SilenceTimeout,
    SpeechStarted,
    TurnConfig,
    TurnEvent,
    TurnState,
    TurnTaker,
)
from providers.speech.audio import pcm16_to_ulaw, resample, ulaw_to_pcm16
from providers.speech.vad import WebRtcVad

FRAME_S = 0.02
SILENT = bytes(320)


def tone(dbfs: float) -> bytes:
    """A 20 ms 8 kHz frame of a 300 Hz tone at ``dbfs`` RMS."""
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    t = np.arange(160) / 8000
    return (np.sin(2 * np.pi * 300 * t) * amplitude).astype("<i2").tobytes()


LOUD = tone(-20)  # a caller speaking up
ECHO = tone(-42)  # our own voice leaking back, attenuated


@dataclass
class Call:
    """Drives a TurnTaker frame by frame; records (time, event) and forwarded frames.

    ``Pause`` events (a hint to decode speculatively) are kept apart in ``pauses``.
    """

    taker: TurnTaker = field(default_factory=TurnTaker)
    now: float = 0.0
    events: list[tuple[float, TurnEvent]] = field(default_factory=list)
    turn_frames: int = 0
    playing_dbfs: float | None = None
    pauses: list[Pause] = field(default_factory=list)

    def frames(self, ms: int, frame: bytes = SILENT, speech: bool = False) -> list[TurnEvent]:
        out: list[TurnEvent] = []
        for _ in range(ms // 20):
            if self.playing_dbfs is not None:
                self.taker.note_playback(self.playing_dbfs, self.now)
            events = self.taker.feed(frame, speech, self.now)
            self.pauses.extend(e for e in events if isinstance(e, Pause))
            events = [e for e in events if not isinstance(e, Pause)]
            if self.taker.frame_in_turn:
                self.turn_frames += 1
            out.extend(events)
            self.events.extend((self.now, e) for e in events)
            self.now += FRAME_S
        return out

    def speech(self, ms: int, frame: bytes = LOUD) -> list[TurnEvent]:
        return self.frames(ms, frame, speech=True)

    def silence(self, ms: int) -> list[TurnEvent]:
        return self.frames(ms, SILENT, speech=False)

    def bot_speaks(self, dbfs: float = -15.0) -> None:
        self.playing_dbfs = dbfs
        self.taker.bot_started_speaking(self.now)

    def bot_stops(self) -> None:
        self.playing_dbfs = None
        self.taker.bot_finished_speaking(self.now)

    def state(self) -> TurnState:
        return self.taker.state

    def kinds(self) -> list[str]:
        return [type(e).__name__ for _, e in self.events]


def test_endpointing_ends_the_turn_after_the_silence() -> None:
    call = Call(TurnTaker(TurnConfig(min_speech_ms=200, endpoint_silence_ms=500, preroll_ms=300)))
    call.silence(400)
    started = call.speech(1000)
    assert [type(e) for e in started] == [SpeechStarted]
    assert call.taker.state is TurnState.USER_SPEAKING
    assert call.silence(480) == []  # not yet: 480 < 500 ms
    assert call.state() is TurnState.ENDPOINTING
    ended = call.silence(100)
    assert [type(e) for e in ended] == [EndOfTurn]
    end = ended[0]
    assert isinstance(end, EndOfTurn) and end.reason == "silence"
    assert end.speech_ms == 1000
    # pre-roll (300) + speech (1000) + the endpoint silence (500)
    assert end.duration_ms == pytest.approx(1800, abs=20)
    assert call.state() is TurnState.WAITING
    start = started[0]
    assert isinstance(start, SpeechStarted) and not start.resumed
    # the start event carries pre-roll + the confirming 200 ms; frames after it were forwarded
    assert len(start.audio) // 320 == 15 + 10
    assert (len(start.audio) // 320) + call.turn_frames == len(end.audio) // 320 - 1


def test_a_short_pause_does_not_end_the_turn() -> None:
    call = Call()
    call.speech(600)
    call.silence(300)
    call.speech(600)
    call.silence(600)
    assert call.kinds() == ["SpeechStarted", "EndOfTurn"]
    end = call.events[-1][1]
    assert isinstance(end, EndOfTurn) and end.speech_ms == 1200


def test_isolated_blips_during_endpointing_do_not_reset_it() -> None:
    call = Call(TurnTaker(TurnConfig(endpoint_silence_ms=500, resume_speech_ms=60)))
    call.speech(600)
    for _ in range(5):
        call.silence(80)
        call.speech(20)  # a click the VAD called speech
    call.silence(100)
    assert call.kinds() == ["SpeechStarted", "EndOfTurn"]


def test_short_noises_are_ignored() -> None:
    call = Call(TurnTaker(TurnConfig(min_speech_ms=200, speech_gap_ms=100)))
    for _ in range(10):
        call.speech(100)  # a cough, a door, a click
        call.silence(400)
    assert call.events == []
    assert call.taker.state is TurnState.LISTENING


def test_a_short_interjection_pauses_the_bot_and_can_resume_it() -> None:
    call = Call()
    call.bot_speaks()
    call.silence(500)
    paused = call.speech(300)  # "mm-hmm"
    assert [type(e) for e in paused] == [BargeInStarted]  # after 60 ms: pause at once
    assert call.taker.state is TurnState.BARGE_IN_PENDING
    ended = call.silence(300)
    assert [type(e) for e in ended] == [BargeInEnded]  # 250 ms of silence: it was short
    short = ended[0]
    assert isinstance(short, BargeInEnded) and short.speech_ms == 300  # all of it, onset included
    assert call.taker.state is TurnState.WAITING
    call.taker.bot_started_speaking(call.now)  # a backchannel: the reply's audio resumes
    assert call.taker.state is TurnState.BOT_SPEAKING
    call.silence(400)
    call.speech(200)  # "yeah"
    call.silence(500)
    assert call.kinds() == ["BargeInStarted", "BargeInEnded"] * 2
    assert "BargeIn" not in call.kinds()  # never a final interruption


def test_unvoiced_noise_does_not_pause_the_bot() -> None:
    call = Call()
    call.bot_speaks()
    for _ in range(50):  # the VAD calls it speech, but nothing in it is voiced
        events = call.taker.feed(LOUD, True, call.now, voiced=False)
        assert events == []
        call.now += FRAME_S
    assert call.taker.state is TurnState.BOT_SPEAKING
    assert call.taker.feed(LOUD, True, call.now, voiced=True) == []  # one voiced frame: not yet
    call.now += FRAME_S
    started = call.taker.feed(LOUD, True, call.now, voiced=True)
    assert [type(e) for e in started] == [BargeInStarted]


def test_echo_of_our_own_audio_does_not_barge_in() -> None:
    call = Call()
    call.bot_speaks(dbfs=-15)
    call.speech(3000, frame=ECHO)  # the VAD hears speech, but it is our voice, 23 dB down
    assert call.events == []
    assert call.taker.barge_in_threshold_dbfs(call.now) == pytest.approx(-40)


def test_real_speech_during_playback_barges_in() -> None:
    call = Call(TurnTaker(TurnConfig(barge_in_min_ms=400, preroll_ms=300)))
    call.bot_speaks()
    call.silence(1000)
    barged = call.speech(600)
    assert [type(e) for e in barged] == [BargeInStarted, BargeIn]
    assert call.events[0][0] == pytest.approx(1.0 + 0.04)  # paused after 60 ms of speech
    assert call.events[1][0] == pytest.approx(1.0 + 0.38)  # final after 400 ms
    assert call.taker.state is TurnState.USER_SPEAKING
    started, final = barged
    assert isinstance(started, BargeInStarted) and len(started.audio) // 320 == 15 + 3
    assert started.onset_s == pytest.approx(1.0)
    assert isinstance(final, BargeIn) and final.onset_s == started.onset_s
    call.bot_stops()  # the gateway cleared playback
    assert call.taker.state is TurnState.USER_SPEAKING
    call.silence(600)
    assert call.kinds() == ["BargeInStarted", "BargeIn", "EndOfTurn"]
    end = call.events[-1][1]
    assert isinstance(end, EndOfTurn) and end.speech_ms == 600


def test_quiet_speech_needs_no_echo_margin_once_playback_has_stopped() -> None:
    call = Call()
    call.bot_speaks(dbfs=-15)
    call.speech(600, frame=tone(-43))  # too quiet to beat our echo threshold
    assert call.events == []
    call.bot_stops()
    call.silence(1000)  # the echo hold window passes
    call.speech(400, frame=tone(-43))
    assert call.kinds() == ["SpeechStarted"]


def test_silence_reprompt_and_reset() -> None:
    call = Call(TurnTaker(TurnConfig(silence_timeout_s=8.0)))
    call.bot_speaks()
    call.silence(2000)
    call.bot_stops()  # listening starts now, at t = 2 s
    call.silence(7900)
    assert call.events == []
    call.silence(200)
    assert call.kinds() == ["SilenceTimeout"]
    first = call.events[0][1]
    assert isinstance(first, SilenceTimeout) and first.count == 1
    assert first.silent_s == pytest.approx(8.0, abs=0.021)
    call.silence(8000)
    second = call.events[-1][1]
    assert isinstance(second, SilenceTimeout) and second.count == 2
    call.speech(400)
    call.silence(600)
    call.silence(9000)  # waiting for the bot: no reprompt while it prepares its reply
    assert call.kinds() == ["SilenceTimeout", "SilenceTimeout", "SpeechStarted", "EndOfTurn"]


def test_speaking_again_while_the_bot_prepares_is_a_resumed_turn() -> None:
    call = Call()
    call.speech(500)
    call.silence(600)
    assert call.state() is TurnState.WAITING
    call.speech(400)
    start = call.events[-1][1]
    assert isinstance(start, SpeechStarted) and start.resumed


def test_max_turn_length() -> None:
    call = Call(TurnTaker(TurnConfig(max_turn_ms=2000)))
    call.speech(5000)
    assert call.kinds()[:2] == ["SpeechStarted", "EndOfTurn"]
    end = call.events[1][1]
    assert isinstance(end, EndOfTurn) and end.reason == "max_length"


def test_max_call_length_ends_the_call() -> None:
    call = Call(TurnTaker(TurnConfig(max_call_s=5.0), started_at=0.0))
    call.speech(300)
    call.silence(6000)
    kinds = call.kinds()
    assert kinds[-1] == "CallTimeLimit" and kinds.count("CallTimeLimit") == 1
    limit = call.events[-1][1]
    assert isinstance(limit, CallTimeLimit) and limit.elapsed_s == pytest.approx(5.0, abs=0.021)
    assert call.taker.state is TurnState.ENDED
    assert call.speech(1000) == []


def test_settings_and_frame_size_are_validated() -> None:
    with pytest.raises(ValueError):
        TurnConfig(min_speech_ms=0)
    with pytest.raises(ValueError):
        TurnConfig(sample_rate_hz=44100)
    with pytest.raises(ValueError, match="320-byte"):
        TurnTaker().feed(b"\x00" * 100, False, 0.0)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_real_vad_on_synthetic_speech_gives_one_turn(tmp_path: Path) -> None:
    wav_path = tmp_path / "utterance.wav"
    text = "Hi, I would like to book a massage on Friday afternoon."
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav_path), text], check=True)
    with wave.open(str(wav_path)) as wav:
        pcm = resample(wav.readframes(wav.getnframes()), wav.getframerate(), 8000)
    pcm = ulaw_to_pcm16(pcm16_to_ulaw(pcm))  # as Twilio delivers it
    audio = bytes(8000) + pcm + bytes(16000)  # 0.5 s before, 1 s after
    vad, taker = WebRtcVad(2), TurnTaker()
    events: list[TurnEvent] = []
    for i in range(0, len(audio) - 319, 320):
        frame = audio[i : i + 320]
        events += taker.feed(frame, vad.is_speech(frame, 8000), i / 16000)
    events = [e for e in events if not isinstance(e, Pause)]  # hints, not turn boundaries
    assert [type(e) for e in events] == [SpeechStarted, EndOfTurn]
    end = events[1]
    assert isinstance(end, EndOfTurn)
    assert end.speech_ms >= 0.6 * len(pcm) / 16  # most of the utterance was speech
    assert end.duration_ms >= len(pcm) / 16  # the whole utterance is in the turn


# -- pauses: speculative decoding and semantic end-of-turn


def test_a_pause_inside_the_turn_is_announced_once_at_pause_silence_ms() -> None:
    call = Call()
    call.speech(600)
    assert call.silence(180) == [] and call.pauses == []
    call.silence(100)
    assert [(p.silence_ms, p.pause) for p in call.pauses] == [(200, 1)]
    ended = call.silence(300)
    assert [type(e) for e in ended] == [EndOfTurn]
    end = ended[0]
    assert isinstance(end, EndOfTurn)
    assert (end.reason, end.silence_ms, end.pause) == ("silence", 500, 1)
    assert len(call.pauses) == 1


def test_resuming_after_a_pause_starts_a_new_pause() -> None:
    call = Call()
    call.speech(600)
    call.silence(300)  # pause 1 announced
    call.speech(400)  # they go on
    call.silence(300)  # pause 2
    assert [p.pause for p in call.pauses] == [1, 2]
    # the first pause can no longer end the turn; the current one can
    assert call.taker.end_turn_now(call.now, 1) == []
    ended = call.taker.end_turn_now(call.now, 2)
    assert [type(e) for e in ended] == [EndOfTurn]
    end = ended[0]
    assert isinstance(end, EndOfTurn)
    assert (end.reason, end.silence_ms, end.pause) == ("complete", 300, 2)
    assert call.taker.state is TurnState.WAITING
    assert call.silence(600) == []  # the endpoint does not fire a second time


def test_end_turn_now_needs_the_caller_to_be_pausing() -> None:
    call = Call()
    call.speech(600)
    assert call.taker.end_turn_now(call.now, call.taker.pause) == []  # still speaking
    assert call.taker.state is TurnState.USER_SPEAKING


def test_pauses_can_be_switched_off() -> None:
    call = Call(taker=TurnTaker(TurnConfig(pause_silence_ms=0)))
    call.speech(600)
    call.silence(600)
    assert call.pauses == []

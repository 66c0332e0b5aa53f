"""Turn-taking on a phone call: who is speaking, when a turn ends, barge-in.

:class:`TurnTaker` is a pure state machine. Feed it every inbound 20 ms frame
with the VAD's decision and the current time; tell it when the bot starts and
stops speaking (and, optionally, how loud what it plays is). It returns typed
events; it never sleeps, reads a clock or does I/O, so tests script whole
calls as frame timelines.

```mermaid
stateDiagram-v2
    [*] --> listening
    listening --> user_speaking: speech >= min_speech_ms / SpeechStarted
    listening --> listening: silence >= silence_timeout_s / SilenceTimeout
    user_speaking --> endpointing: a non-speech frame
    endpointing --> user_speaking: speech >= resume_speech_ms
    endpointing --> endpointing: silence = pause_silence_ms / Pause (decode speculatively)
    endpointing --> waiting: silence >= endpoint_silence_ms / EndOfTurn
    endpointing --> waiting: end_turn_now() / EndOfTurn(complete)
    user_speaking --> waiting: turn >= max_turn_ms / EndOfTurn
    waiting --> user_speaking: speech >= min_speech_ms / SpeechStarted(resumed)
    listening --> bot_speaking: bot_started_speaking()
    waiting --> bot_speaking: bot_started_speaking()
    bot_speaking --> barge_in_pending: speech >= barge_in_onset_ms / BargeInStarted (pause)
    barge_in_pending --> user_speaking: speech >= barge_in_min_ms / BargeIn (final)
    barge_in_pending --> waiting: silence >= backchannel_silence_ms / BargeInEnded
    waiting --> bot_speaking: bot_started_speaking() (a backchannel: the reply resumes)
    bot_speaking --> listening: bot_finished_speaking()
    listening --> ended: call >= max_call_s / CallTimeLimit
```

(``ended`` is reachable from every state.)

Robustness:

* A user turn starts only after ``min_speech_ms`` of speech (gaps up to
  ``speech_gap_ms`` tolerated), so clicks and short noises are ignored; the
  ``preroll_ms`` before the speech is kept so the recogniser hears the onset.
* Line noise that fools the VAD (pink or brown hiss, a hum) is not voiced:
  ``feed`` takes an optional per-frame voicing decision (see
  :func:`providers.speech.vad.periodicity`), and pausing the bot needs
  ``barge_in_voiced_ms`` of voiced frames among the onset speech.
* While the bot speaks, the caller's line carries some echo of our own audio.
  The caller (``channels.phone.media``) drops frames an
  :class:`~providers.speech.echo.EchoDetector` recognises as echo before they
  get here; on top of that a frame counts towards barge-in only if it is
  louder than both ``barge_in_min_dbfs`` and the loudest audio we played in
  the last ``echo_hold_ms`` minus ``echo_loss_db``.
* Barge-in is two-stage, so it is both instant and correct:
  ``barge_in_onset_ms`` of such speech gives ``BargeInStarted``: pause the bot
  now (Twilio ``clear``), keeping the rest of the reply. If the speech goes on
  to ``barge_in_min_ms``, ``BargeIn`` makes the interruption final. If it stops
  earlier (``backchannel_silence_ms`` of silence), ``BargeInEnded`` carries the
  short interjection: the call transcribes it and either resumes the bot
  (a backchannel such as "mm-hm", a cough: the resumed audio calls
  :meth:`TurnTaker.bot_started_speaking` again) or answers it as a turn
  ("no", "stop").

Audio: PCM16 mono at ``sample_rate_hz``. Events carry the audio the
recogniser needs: ``SpeechStarted``/``BargeIn`` carry the pre-roll up to and
including the current frame; after that, :attr:`TurnTaker.frame_in_turn`
says whether the frame just fed belongs to the user's turn (forward it to the
STT stream); ``EndOfTurn`` carries the whole turn again for non-streaming use.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Literal

from providers.speech.audio import FRAME_MS, TWILIO_SAMPLE_RATE_HZ, frame_bytes
from providers.speech.vad import frame_energy_dbfs

__all__ = [
    "BargeIn",
    "BargeInEnded",
    "BargeInStarted",
    "CallTimeLimit",
    "EndOfTurn",
    "Pause",
    "SilenceTimeout",
    "SpeechStarted",
    "TurnConfig",
    "TurnEvent",
    "TurnState",
    "TurnTaker",
]


class TurnState(enum.Enum):
    LISTENING = "listening"
    """The bot is silent and waits for the caller."""
    USER_SPEAKING = "user_speaking"
    ENDPOINTING = "endpointing"
    """The caller paused; the turn ends if the pause lasts ``endpoint_silence_ms``."""
    WAITING = "waiting"
    """The caller's turn ended; the bot is preparing its reply."""
    BOT_SPEAKING = "bot_speaking"
    BARGE_IN_PENDING = "barge_in_pending"
    """The caller spoke over the bot, which is paused until we know whether it
    was an interruption or a backchannel."""
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """Turn-taking settings. Durations in ms unless the name says ``_s``; levels in dBFS.

    Raises:
        ValueError: a setting out of range (checked on construction).
    """

    sample_rate_hz: int = TWILIO_SAMPLE_RATE_HZ
    frame_ms: int = FRAME_MS
    min_speech_ms: int = 200
    """Speech needed before a user turn starts (when the bot is silent)."""
    speech_gap_ms: int = 100
    """Non-speech tolerated inside a run of speech that is still being confirmed."""
    preroll_ms: int = 300
    """Audio kept from before the speech run, so the recogniser hears the onset."""
    endpoint_silence_ms: int = 500
    """Silence after speech that ends the turn."""
    pause_silence_ms: int = 200
    """Silence after speech that gives ``Pause``: time to decode speculatively
    (0: never). Below ``endpoint_silence_ms`` to be of use."""
    resume_speech_ms: int = 60
    """Speech that cancels a pending endpoint (shorter blips do not)."""
    max_turn_ms: int = 30_000
    """A turn this long ends even without a pause."""
    barge_in_onset_ms: int = 60
    """Speech over the bot that pauses it at once (``BargeInStarted``)."""
    barge_in_min_ms: int = 700
    """Speech over the bot that makes the interruption final; longer than a backchannel."""
    backchannel_silence_ms: int = 250
    """Silence that ends a short interjection while the bot is paused (``BargeInEnded``)."""
    barge_in_min_dbfs: float = -45.0
    """Quietest inbound level that can count as barge-in speech."""
    barge_in_voiced_ms: int = 40
    """Voiced frames needed among the onset speech before the bot pauses."""
    echo_loss_db: float = 25.0
    """Assumed least attenuation of our own audio echoed back on the line."""
    echo_hold_ms: int = 600
    """How long a played level keeps raising the barge-in threshold (echo path delay)."""
    silence_timeout_s: float = 8.0
    """Silence while listening before a ``SilenceTimeout`` (reprompt)."""
    max_call_s: float = 1800.0
    """Call length at which ``CallTimeLimit`` ends the call."""

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if self.sample_rate_hz not in (8000, 16000):
            raise ValueError(f"sample_rate_hz must be 8000 or 16000, got {self.sample_rate_hz}")
        for name in (
            "min_speech_ms",
            "endpoint_silence_ms",
            "resume_speech_ms",
            "max_turn_ms",
            "barge_in_onset_ms",
            "barge_in_min_ms",
            "backchannel_silence_ms",
        ):
            if getattr(self, name) < self.frame_ms:
                raise ValueError(f"{name} must be at least one frame ({self.frame_ms} ms)")
        if self.barge_in_onset_ms > self.barge_in_min_ms:
            raise ValueError("barge_in_onset_ms must not exceed barge_in_min_ms")
        for name in (
            "speech_gap_ms",
            "preroll_ms",
            "echo_hold_ms",
            "echo_loss_db",
            "barge_in_voiced_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.silence_timeout_s <= 0 or self.max_call_s <= 0:
            raise ValueError("silence_timeout_s and max_call_s must be positive")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started a turn. ``audio``: PCM16 from the pre-roll to this frame.

    ``resumed`` is True when they spoke again while the bot was still
    preparing its reply to their previous turn.
    """

    at_s: float
    audio: bytes
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Pause:
    """The caller has been silent ``silence_ms`` inside their turn (``pause_silence_ms``).

    The turn may still go on. ``pause``: which pause of the turn this is; a
    speculative transcript taken now is the turn's if the turn ends in this
    same pause (:attr:`TurnTaker.pause`), i.e. the caller did not resume.
    """

    at_s: float
    silence_ms: int
    pause: int


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The caller's turn ended.

    Attributes:
        audio: the whole turn, PCM16 mono at ``sample_rate_hz``.
        speech_ms: how much of it was speech, in ms.
        reason: ``"silence"`` (endpoint), ``"max_length"``, or ``"complete"``
            (ended early by :meth:`TurnTaker.end_turn_now`: what was said is
            a complete answer).
        silence_ms: the silence at its end, in ms (when the caller stopped
            speaking: ``at_s - silence_ms / 1000``).
        pause: the pause it ended in (see :class:`Pause`).
    """

    at_s: float
    audio: bytes
    sample_rate_hz: int
    speech_ms: int
    reason: Literal["silence", "max_length", "complete"]
    silence_ms: int = 0
    pause: int = 0

    @property
    def duration_ms(self) -> float:
        return len(self.audio) / 2 * 1000 / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class BargeInStarted:
    """The caller started speaking over the bot: pause playback now.

    A (tentative) user turn is in progress. ``audio``: PCM16 from the pre-roll
    to this frame. ``onset_s``: when the first frame of the speech arrived.
    """

    at_s: float
    audio: bytes
    onset_s: float


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The interruption is final (the caller kept talking): drop the paused reply."""

    at_s: float
    onset_s: float


@dataclass(frozen=True, slots=True)
class BargeInEnded:
    """A short interjection over the bot ended; the bot is still paused.

    Transcribe it: a backchannel resumes the bot (its audio calls
    :meth:`TurnTaker.bot_started_speaking`), anything else is the caller's turn. ``audio``: the interjection, PCM16.
    """

    at_s: float
    audio: bytes
    speech_ms: int


@dataclass(frozen=True, slots=True)
class SilenceTimeout:
    """The caller said nothing for ``silent_s`` seconds; ``count`` timeouts in a row."""

    at_s: float
    silent_s: float
    count: int


@dataclass(frozen=True, slots=True)
class CallTimeLimit:
    """The call reached ``max_call_s``; it should be wrapped up and ended."""

    at_s: float
    elapsed_s: float


TurnEvent = (
    SpeechStarted
    | Pause
    | EndOfTurn
    | BargeInStarted
    | BargeIn
    | BargeInEnded
    | SilenceTimeout
    | CallTimeLimit
)


class _SpeechRun:
    """A run of qualifying frames being confirmed, with short gaps tolerated."""

    def __init__(self) -> None:
        self.start_index: int | None = None
        self.speech_ms = 0
        self.gap_ms = 0

    def update(self, qualifies: bool, index: int, frame_ms: int, max_gap_ms: int) -> int:
        """Account for one frame; return the confirmed speech in the run, in ms."""
        if qualifies:
            if self.start_index is None:
                self.start_index = index
            self.speech_ms += frame_ms
            self.gap_ms = 0
        elif self.start_index is not None:
            self.gap_ms += frame_ms
            if self.gap_ms > max_gap_ms:
                self.reset()
        return self.speech_ms

    def reset(self) -> None:
        self.start_index = None
        self.speech_ms = 0
        self.gap_ms = 0


class TurnTaker:
    """The turn-taking state machine for one call (see the module docstring).

    Args:
        config: settings.
        started_at: the call's start time in seconds (same clock as ``now``).
    """

    def __init__(self, config: TurnConfig | None = None, *, started_at: float = 0.0) -> None:
        self.config = config or TurnConfig()
        cfg = self.config
        self._frame_bytes = frame_bytes(cfg.sample_rate_hz, cfg.frame_ms)
        self._started_at = started_at
        self._state = TurnState.LISTENING
        self._index = 0  # frames fed so far
        history_ms = cfg.preroll_ms + max(cfg.min_speech_ms, cfg.barge_in_min_ms) * 2
        history_ms += cfg.speech_gap_ms + cfg.frame_ms
        self._history: deque[tuple[int, bytes]] = deque(maxlen=history_ms // cfg.frame_ms + 1)
        self._run = _SpeechRun()
        self._turn = bytearray()
        self._turn_speech_ms = 0
        self._turn_ms = 0
        self._silence_ms = 0
        self._resume_ms = 0
        self._pause = 0
        self._listen_since = started_at
        self._timeouts = 0
        self._playback: deque[tuple[float, float]] = deque()  # (time s, level dBFS)
        # voiced-and-qualifying flags of the last frames, for the barge-in onset
        self._voiced: deque[bool] = deque(
            maxlen=max(cfg.barge_in_onset_ms, cfg.barge_in_voiced_ms) // cfg.frame_ms
        )
        self._onset_s = 0.0
        self._index_times: deque[tuple[int, float]] = deque(maxlen=self._history.maxlen)
        self.frame_in_turn = False
        """True if the frame just fed belongs to the user's turn and no event carried it."""
        self.last_frame_dbfs = -100.0

    @property
    def state(self) -> TurnState:
        return self._state

    @property
    def pause(self) -> int:
        """The current pause of the caller's turn (grows each time they pause)."""
        return self._pause

    def end_turn_now(self, now: float, pause: int) -> list[TurnEvent]:
        """End the caller's turn before the endpoint silence, if they are still in pause ``pause``.

        For semantic end-of-turn: the caller paused, and what they said so far
        is a complete answer. Returns ``[EndOfTurn(reason="complete")]``, or
        ``[]`` when they resumed speaking meanwhile or the turn is over.
        """
        if self._state is not TurnState.ENDPOINTING or pause != self._pause:
            return []
        return [self._end_turn(now, "complete")]

    # -- bot side

    def bot_started_speaking(self, now: float) -> None:
        """The bot's audio starts playing. A user turn in progress is dropped."""
        if self._state is TurnState.ENDED:
            return
        self._state = TurnState.BOT_SPEAKING
        self._run.reset()
        self._voiced.clear()
        self._clear_turn()

    def bot_finished_speaking(self, now: float) -> None:
        """The bot's audio finished (or was cleared), or the reply being prepared
        was dropped; listening starts now. No effect while the caller is talking."""
        if self._state in (TurnState.BOT_SPEAKING, TurnState.WAITING):
            self._state = TurnState.LISTENING
            self._listen_since = now

    def note_playback(self, level_dbfs: float, now: float) -> None:
        """Record the level of audio we are playing (raises the barge-in threshold)."""
        self._playback.append((now, level_dbfs))
        self._expire_playback(now)

    def barge_in_threshold_dbfs(self, now: float) -> float:
        """The level an inbound speech frame needs to count towards barge-in now."""
        self._expire_playback(now)
        loudest = max((level for _, level in self._playback), default=None)
        floor = self.config.barge_in_min_dbfs
        return floor if loudest is None else max(floor, loudest - self.config.echo_loss_db)

    # -- caller side

    def feed(
        self, frame: bytes, is_speech: bool, now: float, voiced: bool | None = None
    ) -> list[TurnEvent]:
        """Process one inbound frame (PCM16, ``frame_ms`` long) and its VAD decision.

        ``voiced``: whether the frame is periodic like voiced speech (None: take
        ``is_speech``); used to tell a caller's barge-in from line noise.

        Raises:
            ValueError: the frame has the wrong size.
        """
        if len(frame) != self._frame_bytes:
            raise ValueError(
                f"expected {self._frame_bytes}-byte frames ({self.config.frame_ms} ms of "
                f"{self.config.sample_rate_hz} Hz PCM16), got {len(frame)}"
            )
        self.frame_in_turn = False
        if self._state is TurnState.ENDED:
            return []
        index = self._index
        self._index += 1
        self._history.append((index, frame))
        self._index_times.append((index, now))
        self.last_frame_dbfs = frame_energy_dbfs(frame)

        elapsed = now - self._started_at
        if elapsed >= self.config.max_call_s:
            self._state = TurnState.ENDED
            self._clear_turn()
            return [CallTimeLimit(at_s=now, elapsed_s=elapsed)]

        match self._state:
            case TurnState.LISTENING | TurnState.WAITING:
                return self._on_idle_frame(is_speech, index, now)
            case TurnState.BOT_SPEAKING:
                return self._on_bot_frame(
                    is_speech, is_speech if voiced is None else voiced, index, now
                )
            case TurnState.BARGE_IN_PENDING:
                return self._on_pending_frame(frame, is_speech, now)
            case TurnState.USER_SPEAKING | TurnState.ENDPOINTING:
                return self._on_turn_frame(frame, is_speech, now)
        return []

    # -- per-state handlers

    def _on_idle_frame(self, is_speech: bool, index: int, now: float) -> list[TurnEvent]:
        cfg = self.config
        speech_ms = self._run.update(is_speech, index, cfg.frame_ms, cfg.speech_gap_ms)
        if speech_ms >= cfg.min_speech_ms:
            resumed = self._state is TurnState.WAITING
            audio = self._start_turn()
            self._timeouts = 0
            return [SpeechStarted(at_s=now, audio=audio, resumed=resumed)]
        listening = self._state is TurnState.LISTENING and self._run.start_index is None
        if listening and now - self._listen_since >= cfg.silence_timeout_s:
            self._timeouts += 1
            silent_s = now - self._listen_since
            self._listen_since = now
            return [SilenceTimeout(at_s=now, silent_s=silent_s, count=self._timeouts)]
        return []

    def _on_bot_frame(
        self, is_speech: bool, voiced: bool, index: int, now: float
    ) -> list[TurnEvent]:
        cfg = self.config
        loud = self.last_frame_dbfs >= self.barge_in_threshold_dbfs(now)
        qualifies = is_speech and loud
        speech_ms = self._run.update(qualifies, index, cfg.frame_ms, cfg.speech_gap_ms)
        self._voiced.append(qualifies and voiced)
        voiced_ms = sum(self._voiced) * cfg.frame_ms
        if speech_ms >= cfg.barge_in_onset_ms and voiced_ms >= cfg.barge_in_voiced_ms:
            self._voiced.clear()
            self._onset_s = self._time_of(self._run.start_index, now)
            audio = self._start_turn()
            self._state = TurnState.BARGE_IN_PENDING
            self._timeouts = 0
            return [BargeInStarted(at_s=now, audio=audio, onset_s=self._onset_s)]
        return []

    def _on_pending_frame(self, frame: bytes, is_speech: bool, now: float) -> list[TurnEvent]:
        cfg = self.config
        self._turn += frame
        self._turn_ms += cfg.frame_ms
        self.frame_in_turn = True
        loud = self.last_frame_dbfs >= self.barge_in_threshold_dbfs(now)
        if is_speech and loud:
            self._turn_speech_ms += cfg.frame_ms
            self._silence_ms = 0
            if self._turn_speech_ms >= cfg.barge_in_min_ms:
                self._state = TurnState.USER_SPEAKING
                return [BargeIn(at_s=now, onset_s=self._onset_s)]
            return []
        self._silence_ms += cfg.frame_ms
        if self._silence_ms >= cfg.backchannel_silence_ms:
            event = BargeInEnded(at_s=now, audio=bytes(self._turn), speech_ms=self._turn_speech_ms)
            self._clear_turn()
            self._state = TurnState.WAITING
            self.frame_in_turn = False
            return [event]
        return []

    def _on_turn_frame(self, frame: bytes, is_speech: bool, now: float) -> list[TurnEvent]:
        cfg = self.config
        self._turn += frame
        self._turn_ms += cfg.frame_ms
        self.frame_in_turn = True
        if is_speech:
            self._turn_speech_ms += cfg.frame_ms
        events: list[TurnEvent] = []
        if self._state is TurnState.USER_SPEAKING:
            if not is_speech:
                self._state = TurnState.ENDPOINTING
                self._silence_ms = cfg.frame_ms
                self._resume_ms = 0
                self._pause += 1
        else:
            self._resume_ms = self._resume_ms + cfg.frame_ms if is_speech else 0
            if self._resume_ms >= cfg.resume_speech_ms:
                self._state = TurnState.USER_SPEAKING
                self._silence_ms = 0
            else:
                self._silence_ms += cfg.frame_ms
                if self._silence_ms >= cfg.endpoint_silence_ms:
                    return [self._end_turn(now, "silence")]
                if 0 <= self._silence_ms - cfg.pause_silence_ms < cfg.frame_ms:
                    events.append(Pause(at_s=now, silence_ms=self._silence_ms, pause=self._pause))
        if self._turn_ms >= cfg.max_turn_ms:
            return [self._end_turn(now, "max_length")]
        return events

    # -- helpers

    def _start_turn(self) -> bytes:
        """Enter USER_SPEAKING with the pre-roll and the confirmed run as the turn's audio."""
        cfg = self.config
        start = self._run.start_index if self._run.start_index is not None else self._index - 1
        first = start - cfg.preroll_ms // cfg.frame_ms
        frames = [f for i, f in self._history if i >= first]
        self._clear_turn()
        self._turn += b"".join(frames)
        self._turn_ms = len(frames) * cfg.frame_ms
        self._turn_speech_ms = self._run.speech_ms
        self._run.reset()
        self._state = TurnState.USER_SPEAKING
        return bytes(self._turn)

    def _end_turn(
        self, now: float, reason: Literal["silence", "max_length", "complete"]
    ) -> EndOfTurn:
        event = EndOfTurn(
            at_s=now,
            audio=bytes(self._turn),
            sample_rate_hz=self.config.sample_rate_hz,
            speech_ms=self._turn_speech_ms,
            reason=reason,
            silence_ms=self._silence_ms if self._state is TurnState.ENDPOINTING else 0,
            pause=self._pause,
        )
        self._clear_turn()
        self._state = TurnState.WAITING
        self.frame_in_turn = False
        return event

    def _clear_turn(self) -> None:
        self._turn = bytearray()
        self._turn_ms = 0
        self._turn_speech_ms = 0
        self._silence_ms = 0
        self._resume_ms = 0

    def _time_of(self, index: int | None, default: float) -> float:
        for i, at in self._index_times:
            if i == index:
                return at
        return default

    def _expire_playback(self, now: float) -> None:
        horizon = now - self.config.echo_hold_ms / 1000
        while self._playback and self._playback[0][0] < horizon:
            self._playback.popleft()

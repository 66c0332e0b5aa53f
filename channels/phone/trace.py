"""Per-turn latency traces of phone calls, and their Prometheus metrics.

Each reply the bot speaks gets a :class:`TurnTrace` with monotonic stage
timestamps (seconds, ``loop.time()``), from which the stage durations are
derived::

    speech_end --endpointing--> end_of_turn --stt_final--> transcript
      --engine_first_text--> first sentence ready --tts_first_audio--> first audio
      --first_media--> first frame sent --first_mark_ack--> first mark echoed

``speech_end`` is the end of the caller's last speech frame (the endpoint
silence started there). Each barge-in gets a :class:`BargeInTrace`: speech
onset -> Twilio ``clear`` sent (``reaction_ms``) and its outcome.

Durations are exported as ``gateway_phone_stage_seconds{stage=...}`` and
``gateway_phone_barge_in_seconds`` histograms (labels: stage and outcome
only, never personal data), and the last :data:`KEEP_CALLS` calls are kept in
memory for ``GET /admin/api/calls/{call_sid}`` and ``gateway call``, and saved
to the database after every reply so any replica can show any call.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Counter, Histogram

from engine.tools.calltraces import CallTraceStore

__all__ = [
    "BARGE_IN_SECONDS",
    "KEEP_CALLS",
    "STAGES",
    "STAGE_SECONDS",
    "BargeInTrace",
    "CallTrace",
    "CallTraces",
    "TurnTrace",
]

KEEP_CALLS = 500
"""Calls whose traces stay in memory (oldest dropped first)."""

STAGES = (
    "endpointing",
    "stt_final",
    "engine_first_text",
    "tts_first_audio",
    "first_media",
    "first_mark_ack",
)
"""Stage names, in order, as in ``stages_ms`` and the ``stage`` label."""

log = logging.getLogger("channels.phone.trace")

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5)

STAGE_SECONDS = Histogram(
    "gateway_phone_stage_seconds",
    "Phone turn latency by stage (endpointing wait, STT finalisation, engine time to "
    "first text, TTS time to first audio, first frame sent, first mark echoed), seconds",
    ["stage"],
    buckets=_BUCKETS,
)
REPLY_SECONDS = Histogram(
    "gateway_phone_reply_seconds",
    "End of caller speech -> first outbound media frame, seconds",
    buckets=_BUCKETS,
)
BARGE_IN_SECONDS = Histogram(
    "gateway_phone_barge_in_seconds",
    "Caller speech onset over the bot -> Twilio clear sent, seconds",
    ["outcome"],
    buckets=_BUCKETS,
)
PHONE_EVENTS = Counter(
    "gateway_phone_events_total",
    "Phone call events: reprompt, filler, goodbye, time_limit, bad_frame, backchannel, "
    "withdrawn (a reply's streamed text discarded by the engine)",
    ["event"],
)

TurnKind = Literal["greeting", "speech", "dtmf", "reprompt", "goodbye"]


@dataclass
class TurnTrace:
    """One bot reply and the caller turn it answers. Times: monotonic seconds."""

    index: int
    kind: TurnKind
    speech_end: float | None = None
    end_of_turn: float | None = None
    transcript: float | None = None
    first_text: float | None = None
    first_audio: float | None = None
    first_media: float | None = None
    first_mark_ack: float | None = None
    user_text: str = ""
    reply_text: str = ""
    heard_text: str = ""
    interrupted: bool = False
    filler: bool = False

    def stages_ms(self) -> dict[str, float | None]:
        """Each stage's duration in ms (None when a bound is missing)."""
        points = (
            self.speech_end,
            self.end_of_turn,
            self.transcript,
            self.first_text,
            self.first_audio,
            self.first_media,
            self.first_mark_ack,
        )
        out: dict[str, float | None] = {}
        for name, start, end in zip(STAGES, points, points[1:], strict=False):
            out[name] = None if start is None or end is None else round((end - start) * 1000, 1)
        return out

    @property
    def reply_ms(self) -> float | None:
        """End of caller speech -> first outbound media frame, in ms."""
        if self.speech_end is None or self.first_media is None:
            return None
        return round((self.first_media - self.speech_end) * 1000, 1)

    def observe(self) -> None:
        """Export the finished turn's stages to the Prometheus histograms."""
        for name, value in self.stages_ms().items():
            if value is not None:
                STAGE_SECONDS.labels(name).observe(value / 1000)
        if (reply := self.reply_ms) is not None:
            REPLY_SECONDS.observe(reply / 1000)

    def as_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "kind": self.kind,
            "user_text": self.user_text,
            "reply_text": self.reply_text,
            "heard_text": self.heard_text,
            "interrupted": self.interrupted,
            "filler": self.filler,
            "stages_ms": self.stages_ms(),
            "end_of_speech_to_first_media_ms": self.reply_ms,
        }


@dataclass
class BargeInTrace:
    """The caller spoke over the bot. ``outcome``: what it turned out to be."""

    onset: float
    clear_sent: float | None = None
    outcome: Literal["pending", "interrupted", "resumed", "answered"] = "pending"

    @property
    def reaction_ms(self) -> float | None:
        """Speech onset -> ``clear`` sent, in ms (None: nothing was playing at Twilio)."""
        if self.clear_sent is None:
            return None
        return round((self.clear_sent - self.onset) * 1000, 1)

    def as_json(self) -> dict[str, object]:
        return {"reaction_ms": self.reaction_ms, "outcome": self.outcome}


@dataclass
class CallTrace:
    """Every turn and barge-in of one call."""

    call_sid: str
    client_id: str
    turns: list[TurnTrace] = field(default_factory=list)
    barge_ins: list[BargeInTrace] = field(default_factory=list)

    def new_turn(self, kind: TurnKind) -> TurnTrace:
        turn = TurnTrace(index=len(self.turns), kind=kind)
        self.turns.append(turn)
        return turn

    def as_json(self) -> dict[str, object]:
        return {
            "call_sid": self.call_sid,
            "client_id": self.client_id,
            "turns": [t.as_json() for t in self.turns],
            "barge_ins": [b.as_json() for b in self.barge_ins],
        }


class CallTraces:
    """The traces of the last ``keep`` calls of this process, by call SID, and
    (with a ``store``) every call's trace in the database for any replica."""

    def __init__(self, store: CallTraceStore | None = None, keep: int = KEEP_CALLS) -> None:
        self.keep = keep
        self.store = store
        self._calls: OrderedDict[str, CallTrace] = OrderedDict()

    async def persist(self, trace: CallTrace) -> None:
        """Save ``trace`` to the database (no-op without a store). Raises StoreError."""
        if self.store is not None and trace.call_sid:
            await self.store.save(trace.call_sid, trace.client_id, trace.as_json())

    async def save(self, trace: CallTrace) -> None:
        """:meth:`persist`, logging a failure (its type name) instead of raising: a
        trace is diagnostics, never a reason to fail a call."""
        try:
            await self.persist(trace)
        except Exception as exc:
            log.warning("call %s: trace not saved: %s", trace.call_sid, type(exc).__name__)

    async def find(self, call_sid: str) -> dict[str, object] | None:
        """A call's trace JSON: this process's live copy, else the database's."""
        live = self._calls.get(call_sid)
        if live is not None:
            return live.as_json()
        return await self.store.get(call_sid) if self.store is not None else None

    def open(self, call_sid: str, client_id: str) -> CallTrace:
        trace = CallTrace(call_sid, client_id)
        self._calls[call_sid] = trace
        self._calls.move_to_end(call_sid)
        while len(self._calls) > self.keep:
            self._calls.popitem(last=False)
        return trace

    def get(self, call_sid: str) -> CallTrace | None:
        return self._calls.get(call_sid)

    def discard(self, call_sid: str) -> None:
        """Drop this process's copy of a call's trace (its person was forgotten)."""
        self._calls.pop(call_sid, None)

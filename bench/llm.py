"""LLM benchmark: what the gateway adds on top of Gemini, with Gemini as a local stub.

Runs the real gateway (``gateway serve``, one uvicorn worker) in a **separate
process** on loopback, on a temporary copy of ``clients/spa-del-sol`` switched
to ``llm: {provider: gemini}`` with budgets no call reaches (10 s to first
token, 30 s per turn), open around the clock with no notice needed and no
escalation. ``GEMINI_BASE_URL`` points at :class:`testkit.gemini.GeminiStub`,
which runs in a thread of this process and speaks Gemini's REST wire format.
Its responder is a model that understands the scripted dialogues perfectly:
the routing call answers ``lead_capture``; the understanding call answers
``update_booking`` with the message's values (on the phone: the values of the
slot the flow asked for, whatever the speech recogniser heard) or
``confirm_booking``; the phrasing call answers ``"Certainly. " + draft`` in 3
chunks. The stub notes when each call arrived and when its answer was fully
written, on :func:`time.monotonic` (the clients' clock too).

(1) Gateway overhead per turn. The stub waits 300 ms before its first chunk
    on every call, then streams the rest without delay.
    Web: ``--dialogues`` booking dialogues (5, after one warm-up; 7 turns each,
    the script of ``bench.web_chat``), one at a time, over the web chat
    websocket; per turn, message sent -> first ``token`` event received.
    Phone: ``--calls`` simulated Twilio calls (2;
    ``testkit.phone.TwilioCaller``, espeak-ng voice, the script of
    ``bench.phone_calls``, a new caller number each call), one at a time, the
    first ``--turns`` (3) lines each; per turn, end of the caller's speech ->
    first outbound ``media`` frame.
    From each turn the model's own time in that window is subtracted: the
    union of [call arrived at the stub, its answer written] over the calls
    the stub got in it (300 ms per call plus the measured streaming). What is
    left is the gateway's overhead: on the web, the engine, the model round
    trips through google-genai and the websocket; on the phone also the
    500 ms of endpointing silence, speech recognition and the synthesis of
    the first sentence (the gateway's own stage timings are printed beside).
    Printed: p50/p95/max, and model calls per turn.
(2) Throughput: ``--conversations`` (20) concurrent web conversations book
    again and again for ``--seconds`` (12), each finishing the dialogue it is
    in; here the stub answers at once (0 ms to first token), so this is the
    gateway's own ceiling with about two model calls per turn (understanding
    and phrasing; routing on the first turn). Compare ``bench.web_chat``, the
    offline engine. Printed: turns/s, p50/p99 turn latency (sent ->
    ``complete``), gateway CPU per turn.
(3) Model usage per booking: ``gateway_llm_tokens_total`` (input, output) and
    ``gateway_llm_cost_usd_total`` from the gateway's ``/metrics`` before and
    after all the web dialogues of (1) and (2), divided by their bookings
    (and the same for the phone when ``--turns 6`` makes the calls book).
    The stub counts words of the request's and the answer's text, not
    tokenizer tokens, so these are an order of magnitude, not a bill: Gemini
    counts more tokens than words, and also the function declarations.
(4) Checks: every web dialogue must end with ``state: booked`` and each turn
    must ask what the script expects next (else it is off-script), a booking
    phone call must leave a lead (``/admin/api/leads``), no phrasing may be
    withdrawn (``discard``), and ``gateway_llm_fallbacks_total`` must stay 0
    (a fallback means the offline engine did the model's work in that turn).
    The bench exits 1 when a check fails; timings are printed, never asserted.

A whole booking call (``--turns 6``) takes about 90 s: the time question
reads out four options and the summary is long, and the caller listens to
every reply to its end.

    .venv/bin/python -m bench.llm                 # ~2 min
    .venv/bin/python -m bench.llm --quick         # under 1 min: 3 dialogues, 1 call of 2 turns
    .venv/bin/python -m bench.llm --parts phone --calls 1 --turns 6   # a booking call (~1.7 min)
    .venv/bin/python -m bench.llm --parts web --json /tmp/llm.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from bench._server import (
    HOST,
    ServerProcess,
    cpu_seconds,
    free_port,
    gateway_bench_env,
    gateway_serve_cmd,
)
from bench._services import OffScript
from bench.phone_calls import SCRIPT as PHONE_SCRIPT
from bench.web_chat import booking_script, percentile
from engine.llm import FunctionCall
from testkit.gemini import Behaviour, GeminiStub, Reply
from testkit.phone import TwilioCaller, fetch_call_report, synthesize

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "clients" / "spa-del-sol"
CLIENT = "spa-del-sol"
API_KEY = "bench-gemini-key"
MODEL = "gemini-2.5-flash"
MODEL_TTFT_S = 0.3
"""The stub's time to first chunk in (1), seconds, on every call."""
TURN_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 40.0
"""A phone reply may be long: the time question reads out four options (~20 s of audio)."""
GREETING_TIMEOUT_S = 90.0

PHONE_SLOTS = {
    "service": "Swedish Massage",
    "name": "Maria Lopez",
    "phone": "415 555 0123",
    "email": "maria@example.com",
}
"""What the phone script says, as a model would read it (the recogniser may mishear)."""
PHONE_TIME = "15:00"
PHONE_FIRST_DAY = 400
"""Phone bookings start this many days ahead, one day per call: apart from the web's slots."""


# --- the model -------------------------------------------------------------------------------


@dataclass
class ModelCall:
    """One call the stub answered: ``kind`` (route, understand, phrase, other) and
    monotonic seconds when it arrived and when its answer was written."""

    kind: str
    arrived_at: float
    answered_at: float | None = None


def _system(body: dict[str, Any]) -> str:
    parts = body.get("systemInstruction", {}).get("parts", [])
    return "".join(str(p.get("text", "")) for p in parts)


def _user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents", [])):
        if content.get("role") == "user":
            for part in content.get("parts", []):
                if part.get("text"):
                    return str(part["text"])
    return ""


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_WHEN = re.compile(r"(\d{4}-\d{2}-\d{2}) at (\d{1,2}):(\d{2}) (am|pm)")
_ASKED = re.compile(r"The last question asked the customer for: (\w+)\.")


class ScriptedModel:
    """The stub's responder: a model that understands the bench's dialogues.

    ``first_delay_s`` is every answer's time to first chunk (seconds; change it
    between parts). :attr:`calls` lists every call in arrival order.
    """

    def __init__(self, first_delay_s: float) -> None:
        self.first_delay_s = first_delay_s
        self.calls: list[ModelCall] = []
        self._lock = threading.Lock()
        self._phone_days = itertools.count(PHONE_FIRST_DAY)
        self.current = threading.local()
        """The handler thread's call, for :class:`TimedStub` to stamp when answered."""

    def __call__(self, body: dict[str, Any]) -> Behaviour:
        arrived = time.monotonic()
        kind, reply = self._answer(body)
        call = ModelCall(kind, arrived)
        with self._lock:
            self.calls.append(call)
        self.current.call = call
        return dataclasses.replace(reply, first_delay_s=self.first_delay_s)

    def calls_between(self, start: float, end: float) -> list[ModelCall]:
        with self._lock:
            return [c for c in self.calls if start <= c.arrived_at < end]

    def _answer(self, body: dict[str, Any]) -> tuple[str, Reply]:
        system = _system(body)
        if body.get("tools"):
            return "understand", self._understand(system, _user_text(body))
        if body.get("generationConfig", {}).get("responseMimeType") == "application/json":
            if "decide who should handle" in system:
                routed = {"purpose": "lead_capture", "confidence": 0.9}
                return "route", Reply(text=json.dumps(routed), chunks=1)
            abstain = {"answer": "", "cited": [], "abstain": True}
            return "other", Reply(text=json.dumps(abstain), chunks=1)
        if "Draft reply: " in system:
            draft = json.loads(system.rsplit("Draft reply: ", 1)[1])
            return "phrase", Reply(text="Certainly. " + draft, chunks=3)
        return "other", Reply(text="Certainly.", chunks=1)

    def _understand(self, system: str, text: str) -> Reply:
        if "asked to confirm" in system:
            return Reply(calls=(FunctionCall("confirm_booking", {}),))
        asked = _ASKED.search(system)
        expecting = asked.group(1) if asked else None
        if "spoken on a phone call" in system:
            slots = self._phone_slots(expecting)
        else:
            slots = _web_slots(text, expecting)
        return Reply(calls=(FunctionCall("update_booking", slots),))

    def _phone_slots(self, expecting: str | None) -> dict[str, str]:
        if expecting is None:  # the call's first words: "I'd like to book a massage"
            return {"service": PHONE_SLOTS["service"]}
        if expecting in ("time", "date"):
            with self._lock:
                day = date.today() + timedelta(days=next(self._phone_days))
            return {"date": day.isoformat(), "time": PHONE_TIME}
        value = PHONE_SLOTS.get(expecting)
        return {expecting: value} if value else {}


def _web_slots(text: str, expecting: str | None) -> dict[str, str]:
    """The values in a message of :func:`bench.web_chat.booking_script`."""
    if email := _EMAIL.search(text):
        return {"email": email.group()}
    if when := _WHEN.search(text):
        day, hour, minute, half = when.groups()
        hour24 = int(hour) % 12 + (12 if half == "pm" else 0)
        return {"date": day, "time": f"{hour24:02d}:{minute}"}
    if sum(ch.isdigit() for ch in text) >= 10:
        return {"phone": text}
    if "book" in text.casefold():
        return {}  # "Hi, I'd like to book an appointment": nothing for a slot yet
    if expecting == "name":
        return {"name": text}
    return {"service": text}


class TimedStub(GeminiStub):
    """:class:`GeminiStub` that stamps when each answer was fully written.

    Hooks the stub's request handler (its only per-request seam; the answer
    is written in the same thread that asked the responder)."""

    def __init__(self, model: ScriptedModel) -> None:
        super().__init__(api_key=API_KEY, responder=model)
        self.model = model

    def _handle(self, handler: Any) -> None:
        self.model.current.call = None
        try:
            super()._handle(handler)
        finally:
            call: ModelCall | None = getattr(self.model.current, "call", None)
            if call is not None:
                call.answered_at = time.monotonic()


def model_time(calls: Sequence[ModelCall], start: float, end: float) -> float:
    """Seconds of [start, end] covered by the calls' [arrived, answered] windows."""
    windows = sorted(
        (max(c.arrived_at, start), min(end if c.answered_at is None else c.answered_at, end))
        for c in calls
        if c.arrived_at < end
    )
    covered, reach = 0.0, start
    for lo, hi in windows:
        lo = max(lo, reach)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return covered


# --- the gateway -----------------------------------------------------------------------------


def make_client(root: Path) -> None:
    """``root/spa-del-sol``: the reference client on Gemini, open around the clock."""
    folder = root / CLIENT
    shutil.copytree(TEMPLATE, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    config["business_hours"] = {
        d: ["00:00", "24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    }
    config["booking"]["rules"].update(min_notice_hours=0, max_days_ahead=3650)
    config["escalation"] = {}
    config["llm"] = {
        "provider": "gemini",
        "model": MODEL,
        "first_token_s": {"default": 10.0, "phone": 10.0},
        "total_s": 30.0,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


class Gateway(ServerProcess):
    """``gateway serve`` on the stub, with an admin token."""

    name = "gateway"
    poll_s = 0.1

    def __init__(self, workdir: Path, clients_dir: Path, stub_url: str) -> None:
        self.admin_token = secrets.token_urlsafe(16)
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        data = workdir / "data"
        data.mkdir()
        env = gateway_bench_env(data)
        env.update(
            GATEWAY_ADMIN_TOKEN=self.admin_token,
            GEMINI_API_KEY=API_KEY,
            GEMINI_BASE_URL=stub_url,
        )
        super().__init__(workdir, gateway_serve_cmd(port, clients_dir), env)

    def ready(self) -> bool:
        try:
            ready = httpx.get(f"{self.url}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return ready.status_code == 200 and CLIENT in ready.json()["clients"]

    @property
    def chat_url(self) -> str:
        return f"ws://{HOST}:{self.port}/web/chat/{CLIENT}"

    @property
    def media_url(self) -> str:
        return f"ws://{HOST}:{self.port}/twilio/media/{CLIENT}"

    def metrics(self) -> Metrics:
        return Metrics.parse(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def leads(self) -> int:
        response = httpx.get(
            f"{self.url}/admin/api/leads",
            params={"client_id": CLIENT},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )
        response.raise_for_status()
        return len(response.json())


@dataclass(frozen=True)
class Metrics:
    """The model counters of ``/metrics``, summed over their labels."""

    input_tokens: float = 0.0
    output_tokens: float = 0.0
    cost_usd: float = 0.0
    fallbacks: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        tokens = {"input": 0.0, "output": 0.0}
        cost = 0.0
        fallbacks: dict[str, float] = {}
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if not rest or line.startswith("#"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
            value = float(line.rsplit(" ", 1)[1])
            if name == "gateway_llm_tokens_total":
                tokens[labels.get("direction", "")] = tokens.get(labels["direction"], 0) + value
            elif name == "gateway_llm_cost_usd_total":
                cost += value
            elif name == "gateway_llm_fallbacks_total":
                key = f"{labels.get('channel')}/{labels.get('reason')}"
                fallbacks[key] = fallbacks.get(key, 0.0) + value
        return cls(tokens["input"], tokens["output"], cost, fallbacks)

    def __sub__(self, other: Metrics) -> Metrics:
        keys = set(self.fallbacks) | set(other.fallbacks)
        return Metrics(
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.cost_usd - other.cost_usd,
            {k: self.fallbacks.get(k, 0) - other.fallbacks.get(k, 0) for k in keys},
        )


# --- web -------------------------------------------------------------------------------------


@dataclass
class TurnTiming:
    """One turn of (1), seconds: to the user's first token (or audio), and the
    model's own time and calls in that window."""

    total_s: float
    model_s: float
    model_calls: int

    @property
    def overhead_s(self) -> float:
        return self.total_s - self.model_s


@dataclass
class WebStats:
    turns: list[TurnTiming] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    bookings: int = 0
    dialogues: int = 0
    failures: list[str] = field(default_factory=list)
    discards: int = 0


async def _turn(
    ws: ClientConnection, text: str, stats: WebStats
) -> tuple[float, float, dict[str, Any]]:
    """Send ``text``; (sent, first token received, the ``complete`` event), monotonic s."""
    sent = time.monotonic()
    await ws.send(json.dumps({"type": "message", "text": text, "id": uuid.uuid4().hex}))
    first: float | None = None
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TURN_TIMEOUT_S))
        kind = event.get("type")
        if kind == "token" and first is None:
            first = time.monotonic()
        elif kind == "discard":
            stats.discards += 1  # the phrasing was withdrawn: the draft went out instead
        elif kind == "complete":
            return sent, time.monotonic() if first is None else first, event
        elif kind == "error":
            raise OffScript(f"error event {event.get('code')}: {event.get('message')}")


async def web_dialogue(
    url: str, slot: int, first_day: date, stats: WebStats, model: ScriptedModel | None
) -> None:
    """One booking over a new websocket; with ``model``, each turn's timing goes to
    ``stats.turns`` (only meaningful with one dialogue at a time)."""
    stats.dialogues += 1
    try:
        async with connect(url, open_timeout=TURN_TIMEOUT_S, max_queue=None) as ws:
            complete: dict[str, Any] = {}
            for text, expecting in booking_script(slot, first_day):
                sent, first, complete = await _turn(ws, text, stats)
                stats.latencies_s.append(time.monotonic() - sent)
                if model is not None:
                    calls = model.calls_between(sent, first)
                    if any(c.answered_at is None for c in calls):
                        await asyncio.sleep(0.05)  # the stub is still stamping an answer
                    stats.turns.append(
                        TurnTiming(first - sent, model_time(calls, sent, first), len(calls))
                    )
                got = complete.get("metadata", {}).get("expecting")
                if got != expecting:
                    raise OffScript(
                        f"after {text!r} expected expecting={expecting!r}, got {got!r}: "
                        f"{complete.get('text', '')[:160]!r}"
                    )
            if complete.get("metadata", {}).get("state") != "booked":
                raise OffScript(f"not booked: {complete.get('metadata')}")
            stats.bookings += 1
    except (OffScript, TimeoutError, OSError, WebSocketException) as exc:
        stats.failures.append(f"{type(exc).__name__}: {exc}")


async def web_latency(
    gateway: Gateway, model: ScriptedModel, dialogues: int, slots: Iterator[int], first_day: date
) -> WebStats:
    stats = WebStats()
    for _ in range(dialogues):
        await web_dialogue(gateway.chat_url, next(slots), first_day, stats, model)
    return stats


async def web_load(
    gateway: Gateway, conversations: int, seconds: float, slots: Iterator[int], first_day: date
) -> WebStats:
    """``conversations`` concurrent bookers; each finishes the dialogue it is in at the deadline."""
    stats = WebStats()
    deadline = time.monotonic() + seconds

    async def booker() -> None:
        while time.monotonic() < deadline:
            await web_dialogue(gateway.chat_url, next(slots), first_day, stats, None)

    await asyncio.gather(*(booker() for _ in range(conversations)))
    return stats


# --- phone -----------------------------------------------------------------------------------


@dataclass
class PhoneStats:
    turns: list[TurnTiming] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    calls: int = 0
    missing_replies: int = 0
    leads: int = 0
    failures: list[str] = field(default_factory=list)


async def phone_calls(
    gateway: Gateway, model: ScriptedModel, calls: int, turns: int, voice: list[tuple[bytes, int]]
) -> PhoneStats:
    """``calls`` simulated calls, one at a time, each saying the first ``turns``
    lines of the phone script."""
    stats = PhoneStats()
    for i in range(calls):
        try:
            # A new number each call: a returning caller is recognised and asked less.
            async with TwilioCaller(gateway.media_url, caller=f"+1415555{2000 + i:04d}") as call:
                await call.wait_for_reply(GREETING_TIMEOUT_S)  # speech models load on the first
                for pcm, rate in voice[:turns]:
                    said = await call.say(pcm, rate)
                    try:
                        reply = await call.wait_for_reply(REPLY_TIMEOUT_S, after=said.ended_at)
                    except TimeoutError:
                        stats.missing_replies += 1
                        continue
                    start, first = said.ended_at, reply.first_frame_at
                    window = model.calls_between(start, first)
                    stats.turns.append(
                        TurnTiming(first - start, model_time(window, start, first), len(window))
                    )
                    await asyncio.sleep(0.3)  # the caller thinks
                report = await fetch_call_report(gateway.url, call.call_sid, gateway.admin_token)
                if report is not None:
                    for turn in report.turns_of_kind("speech"):
                        for stage, ms in turn.stages_ms.items():
                            stats.stages_ms.setdefault(stage, []).append(ms)
            stats.calls += 1
        except (TimeoutError, OSError, WebSocketException) as exc:
            stats.failures.append(f"{type(exc).__name__}: {exc}")
    return stats


# --- the runs ------------------------------------------------------------------------------


@dataclass
class WebResult:
    """(1), (2) and the web's share of (3): the dialogues' stats, the load's CPU
    (seconds) and the model counters' change over all web dialogues."""

    warm: WebStats
    latency: WebStats
    load: WebStats
    load_elapsed_s: float
    load_model_calls: int
    server_cpu_s: float
    client_cpu_s: float
    usage: Metrics
    model_calls: int


@dataclass
class PhoneResult:
    """(1) on the phone; the leads the calls left and the model counters' change."""

    stats: PhoneStats
    leads: int
    usage: Metrics
    model_calls: int


def measure_web(gateway: Gateway, model: ScriptedModel, args: argparse.Namespace) -> WebResult:
    first_day = date.today() + timedelta(days=2)
    slots = itertools.count()
    before, calls0 = gateway.metrics(), len(model.calls)
    print("  web: a warm-up dialogue", flush=True)
    warm = asyncio.run(web_latency(gateway, model, 1, slots, first_day))
    print(f"  web: (1) {args.dialogues} dialogues, one at a time", flush=True)
    latency = asyncio.run(web_latency(gateway, model, args.dialogues, slots, first_day))
    print(
        f"  web: (2) {args.conversations} concurrent conversations for {args.seconds:g} s, "
        "the stub answering at once",
        flush=True,
    )
    model.first_delay_s = 0.0
    load_calls0 = len(model.calls)
    cpu0, client0, started = cpu_seconds(gateway.proc.pid), time.process_time(), time.monotonic()
    try:
        load = asyncio.run(web_load(gateway, args.conversations, args.seconds, slots, first_day))
    finally:
        model.first_delay_s = MODEL_TTFT_S
    elapsed = time.monotonic() - started
    return WebResult(
        warm=warm,
        latency=latency,
        load=load,
        load_elapsed_s=elapsed,
        load_model_calls=len(model.calls) - load_calls0,
        server_cpu_s=cpu_seconds(gateway.proc.pid) - cpu0,
        client_cpu_s=time.process_time() - client0,
        usage=gateway.metrics() - before,
        model_calls=len(model.calls) - calls0,
    )


def measure_phone(gateway: Gateway, model: ScriptedModel, args: argparse.Namespace) -> PhoneResult:
    voice = [synthesize(text) for text in PHONE_SCRIPT[: args.turns]]
    before, leads0, calls0 = gateway.metrics(), gateway.leads(), len(model.calls)
    print(f"  phone: (1) {args.calls} call(s) of {args.turns} turns, one at a time", flush=True)
    stats = asyncio.run(phone_calls(gateway, model, args.calls, args.turns, voice))
    return PhoneResult(
        stats=stats,
        leads=gateway.leads() - leads0,
        usage=gateway.metrics() - before,
        model_calls=len(model.calls) - calls0,
    )


# --- report ----------------------------------------------------------------------------------


def _overhead(turns: list[TurnTiming]) -> dict[str, float]:
    """p50/p95/max of a channel's turns, in ms."""
    if not turns:
        return {"turns": 0}
    over = [t.overhead_s for t in turns]
    return {
        "turns": len(turns),
        "model_calls_per_turn": statistics.mean(t.model_calls for t in turns),
        "to_first_p50_ms": percentile([t.total_s for t in turns], 0.5) * 1000,
        "model_p50_ms": percentile([t.model_s for t in turns], 0.5) * 1000,
        "overhead_p50_ms": percentile(over, 0.5) * 1000,
        "overhead_p95_ms": percentile(over, 0.95) * 1000,
        "overhead_max_ms": max(over) * 1000,
    }


def _per_booking(usage: Metrics, bookings: int, calls: int) -> dict[str, float]:
    n = max(bookings, 1)
    return {
        "bookings": bookings,
        "model_calls": calls / n,
        "input_tokens": usage.input_tokens / n,
        "output_tokens": usage.output_tokens / n,
        "cost_usd": usage.cost_usd / n,
    }


def summarize(
    web: WebResult | None, phone: PhoneResult | None, fallbacks: dict[str, float], args: Any
) -> dict[str, Any]:
    """The figures (what ``--json`` writes) and ``failures``: what went off-script."""
    failures: list[str] = []
    out: dict[str, Any] = {"overhead": {}, "usage_per_booking": {}}
    if web is not None:
        runs = (web.warm, web.latency, web.load)
        out["overhead"]["web"] = _overhead(web.latency.turns)
        load, elapsed = web.load, web.load_elapsed_s
        out["throughput"] = {
            "conversations": args.conversations,
            "seconds": elapsed,
            "turns": len(load.latencies_s),
            "bookings": load.bookings,
            "turns_per_s": len(load.latencies_s) / elapsed,
            "p50_ms": percentile(load.latencies_s, 0.5) * 1000,
            "p99_ms": percentile(load.latencies_s, 0.99) * 1000,
            "server_cpu_pct": 100 * web.server_cpu_s / elapsed,
            "client_cpu_pct": 100 * web.client_cpu_s / elapsed,
            "server_cpu_ms_per_turn": 1000 * web.server_cpu_s / max(len(load.latencies_s), 1),
            "model_calls_per_turn": web.load_model_calls / max(len(load.latencies_s), 1),
        }
        bookings = sum(r.bookings for r in runs)
        out["usage_per_booking"]["web"] = _per_booking(web.usage, bookings, web.model_calls)
        out["web_dialogues"] = {"dialogues": sum(r.dialogues for r in runs), "booked": bookings}
        failures += [f for r in runs for f in r.failures]
        if discards := sum(r.discards for r in runs):
            failures.append(f"web: {discards} phrasing(s) withdrawn (discard events)")
    if phone is not None:
        stats = phone.stats
        out["overhead"]["phone"] = _overhead(stats.turns)
        out["phone_stages_median_ms"] = {
            k: statistics.median(v) for k, v in stats.stages_ms.items() if v
        }
        out["phone_calls"] = {"calls": stats.calls, "turns": args.turns, "leads": phone.leads}
        failures += stats.failures
        if stats.missing_replies:
            failures.append(f"phone: {stats.missing_replies} turn(s) without a reply")
        if args.turns == len(PHONE_SCRIPT):  # a whole booking call
            if phone.leads != stats.calls:
                failures.append(f"phone: {phone.leads} lead(s) from {stats.calls} call(s)")
            out["usage_per_booking"]["phone"] = _per_booking(
                phone.usage, phone.leads, phone.model_calls
            )
    fell_back = {k: v for k, v in fallbacks.items() if v}
    if fell_back:
        failures.append(f"model fallbacks (channel/reason): {fell_back}")
    out["fallbacks_total"] = sum(fallbacks.values())
    out["fallbacks"] = fell_back
    out["failures"] = failures
    return out


def _cell(row: dict[str, float], key: str, fmt: str = ".0f") -> str:
    return format(row[key], fmt) if key in row else "-"


def render(figures: dict[str, Any], args: Any) -> Iterator[str]:
    labels = {
        "web": "web: sent -> first token",
        "phone": "phone: end of speech -> 1st audio",
    }
    yield (
        "(1) gateway overhead per turn on top of the model (stub: "
        f"{MODEL_TTFT_S * 1000:.0f} ms to first chunk on every call), ms"
    )
    yield (
        f"  {'':<34} {'turns':>5} {'calls':>5} {'to 1st p50':>10} {'model p50':>9} "
        f"{'overhead p50':>12} {'p95':>5} {'max':>5}"
    )
    for channel, row in figures["overhead"].items():
        yield (
            f"  {labels[channel]:<34} {row['turns']:>5} {_cell(row, 'model_calls_per_turn', '.1f'):>5} "
            f"{_cell(row, 'to_first_p50_ms'):>10} {_cell(row, 'model_p50_ms'):>9} "
            f"{_cell(row, 'overhead_p50_ms'):>12} {_cell(row, 'overhead_p95_ms'):>5} "
            f"{_cell(row, 'overhead_max_ms'):>5}"
        )
    yield "  calls: model calls per turn before the first token/audio (routing, understanding, phrasing)"
    if stages := figures.get("phone_stages_median_ms"):
        yield "  phone: the overhead includes the endpointing silence, speech recognition and the"
        yield "  synthesis of the first sentence; the gateway's stages, median ms:"
        yield "  " + " · ".join(f"{k} {v:.0f}" for k, v in stages.items())
        phone = figures["overhead"].get("phone", {})
        if "endpointing" in stages and "overhead_p50_ms" in phone:
            yield (
                f"  phone overhead p50 without the endpointing silence: "
                f"{phone['overhead_p50_ms'] - stages['endpointing']:.0f} ms"
            )
    if t := figures.get("throughput"):
        yield ""
        yield (
            f"(2) throughput: {t['conversations']} concurrent web conversations booking for "
            f"{args.seconds:g} s (each finishes its dialogue: {t['seconds']:.1f} s); "
            "the stub answers at once (0 ms to first token)"
        )
        yield (
            f"  {t['turns']} turns, {t['bookings']} bookings, {t['turns_per_s']:.1f} turns/s; "
            f"turn (sent -> complete) p50 {t['p50_ms']:.0f} ms, p99 {t['p99_ms']:.0f} ms"
        )
        yield (
            f"  gateway CPU {t['server_cpu_pct']:.0f} % of a core, "
            f"{t['server_cpu_ms_per_turn']:.1f} ms per turn ({t['model_calls_per_turn']:.1f} "
            f"model calls); bench process {t['client_cpu_pct']:.0f} % (clients + stub)"
        )
    if usage := figures["usage_per_booking"]:
        yield ""
        yield "(3) model usage per booking, from /metrics (the stub counts WORDS, not tokenizer"
        yield "    tokens: an order of magnitude, not a bill)"
        yield (
            f"  {'':<6} {'bookings':>8} {'calls':>6} {'input tok':>10} {'output tok':>10} "
            f"{'USD/booking':>12} {'USD/1000 bookings':>18}"
        )
        for channel, u in usage.items():
            yield (
                f"  {channel:<6} {u['bookings']:>8} {u['model_calls']:>6.1f} "
                f"{u['input_tokens']:>10.0f} {u['output_tokens']:>10.0f} "
                f"{u['cost_usd']:>12.6f} {1000 * u['cost_usd']:>18.3f}"
            )
        yield f"  priced at {MODEL}'s list prices (engine/llm/usage.py)"
    yield ""
    yield "(4) checks"
    if d := figures.get("web_dialogues"):
        yield f"  web dialogues booked: {d['booked']}/{d['dialogues']}"
    if p := figures.get("phone_calls"):
        booking = p["turns"] == len(PHONE_SCRIPT)
        yield (
            f"  phone calls completed: {p['calls']}, leads left: {p['leads']}"
            + ("" if booking else f" (calls of {p['turns']} turns stop before booking)")
        )
    fell_back = figures["fallbacks"]
    yield f"  gateway_llm_fallbacks_total: {figures['fallbacks_total']:.0f}" + (
        f" {fell_back}" if fell_back else ""
    )
    yield f"  off-script or failed: {len(figures['failures'])}"
    for failure in figures["failures"][:8]:
        yield f"    {failure}"


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.llm", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--parts", default="web,phone", help="web and/or phone")
    parser.add_argument(
        "--dialogues", type=int, default=5, help="(1) web dialogues, one at a time (+1 warm-up)"
    )
    parser.add_argument("--calls", type=int, default=2, help="(1) phone calls, one at a time")
    parser.add_argument(
        "--turns",
        type=int,
        default=3,
        help=f"(1) turns per phone call; {len(PHONE_SCRIPT)} books (about 90 s per call)",
    )
    parser.add_argument("--conversations", type=int, default=20, help="(2) concurrent bookers")
    parser.add_argument("--seconds", type=float, default=12.0, help="(2) load duration, s")
    parser.add_argument("--quick", action="store_true", help="smaller run (under 1 min)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"web", "phone"}:
        parser.error("--parts takes web and/or phone")
    if args.quick:
        args.dialogues, args.seconds, args.calls, args.turns = 3, 4.0, 1, 2
    if not 1 <= args.turns <= len(PHONE_SCRIPT):
        parser.error(f"--turns must be 1..{len(PHONE_SCRIPT)}")
    if min(args.dialogues, args.calls, args.conversations) < 1 or args.seconds <= 0:
        parser.error("--dialogues, --calls, --conversations and --seconds must be positive")
    if "phone" in parts and shutil.which("espeak-ng") is None:
        parser.error("the phone part needs espeak-ng (apt-get install espeak-ng); or --parts web")

    model = ScriptedModel(MODEL_TTFT_S)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-llm-bench-"))
    started = time.monotonic()
    web = phone = None
    try:
        make_client(workdir / "clients")
        with TimedStub(model) as stub:
            gateway = Gateway(workdir, workdir / "clients", stub.base_url)
            try:
                gateway.wait_ready(60.0)
                print(
                    f"LLM bench: gateway in a separate process on {HOST} ({CLIENT} on Gemini), "
                    f"Gemini REST stub in this process; {os.cpu_count()} CPUs",
                    flush=True,
                )
                if "web" in parts:
                    web = measure_web(gateway, model, args)
                if "phone" in parts:
                    phone = measure_phone(gateway, model, args)
                fallbacks = gateway.metrics().fallbacks
            except Exception:
                print(f"gateway log tail:\n{gateway.tail()}", file=sys.stderr)
                raise
            finally:
                gateway.stop()
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    figures = summarize(web, phone, fallbacks, args)
    print(f"\n(ran {time.monotonic() - started:.0f} s)\n")
    print("\n".join(render(figures, args)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

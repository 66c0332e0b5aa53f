"""Phone benchmark: simulated Twilio callers against the gateway's Media Streams endpoint.

Runs the real gateway (``gateway serve``, one uvicorn worker) in a **separate
process** on loopback, and drives it from this process with
:class:`testkit.phone.TwilioCaller`s: each one is Twilio's side of a
bidirectional Media Stream, streaming the caller's line (20 ms frames of 8 kHz
mu-law, silence between words) all call long, playing the bot's audio in real
time, echoing marks and obeying ``clear``. Callers speak espeak-ng audio.

(a) Reply latency. ``--calls`` (10) concurrent calls each play a scripted
    booking ("I'd like to book a massage", "Maria Lopez", a phone number...,
    ``--turns`` of them). Per turn: end of the caller's speech (last speech
    frame sent) -> first outbound ``media`` frame received, p50/p95, and the
    median of each server stage from ``GET /admin/api/calls/{call_sid}``.
(b) Barge-in. During the greeting the caller starts talking; speech onset
    (first speech frame sent) -> ``clear`` received, p50/p95 over
    ``--barge-trials``. False barge-ins: callers that stay silent while their
    line carries echo of the bot (``--echo-db`` attenuations) or white noise
    (``--noise-dbfs`` levels); every ``clear`` they get is a false one, and
    bot audio starting again after 2 s of silence with no ``clear`` before it
    an unprompted reply.
(c) CPU and pacing. Gateway CPU seconds (``/proc/PID/stat``) per call-second
    with ``--idle-calls`` connected, silent calls and a silent bot; then a ramp
    (``--ramp`` 10,20,40,80 calls) where the bot speaks a ~10 s greeting to
    every call: outbound frame jitter against the paced schedule (p99 over
    all frames of all calls) and playout underruns. The largest N with p99
    jitter < 20 ms and no underruns is reported.
(d) ``--compare-pipecat``: (a) and (b) again against the Pipecat bot in
    ``bench/pipecat_twilio/server.py`` (its own venv ``.venv-pipecat``, made by
    ``bench/pipecat_twilio/setup.sh``), side by side. It runs with
    ``--pipecat-args`` (default: end of turn after 500 ms of silence, like the
    gateway). It answers every turn with one canned reply, sends 40 ms frames
    and no marks, and sends ``clear`` on every caller speech onset.

Jitter of outbound frame k of a reply (its lateness against the paced
schedule): ``(a_k - k * 20 ms) - min over the previous second (j = k-50 .. k)
of (a_j - j * 20 ms)``, with ``a_k`` its arrival time: how far it fell behind
the best pace the sender kept in the last second (a sender running ahead, as
the gateway does with its 200 ms lead, is never "late" for it). A sender that
keeps L ms queued ahead absorbs jitter up to L; beyond that the playout buffer
runs dry and the caller hears a gap: an underrun, counted separately.

The client's own pacing lateness and CPU are printed too: when the client
process is the bottleneck (CPU near 100 % of a core) the figures are the
client's, not the gateway's.

    .venv/bin/python -m bench.phone_calls                       # (a) (b) (c), ~3 min
    .venv/bin/python -m bench.phone_calls --parts a,b --compare-pipecat
    .venv/bin/python -m bench.phone_calls --quick               # smaller, ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from websockets.exceptions import WebSocketException

from bench._server import HOST, ServerProcess, free_port
from bench.web_chat import percentile
from providers.speech import models as speech_models
from testkit.phone import (
    STAGES,
    BotReply,
    TwilioCaller,
    fetch_call_report,
)
from testkit.phone.audio import speak

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "clients" / "spa-del-sol"
PIPECAT_PYTHON = REPO / ".venv-pipecat" / "bin" / "python"
PIPECAT_SERVER = REPO / "bench" / "pipecat_twilio" / "server.py"
PIPECAT_DEFAULT_ARGS = "--turn timeout --user-speech-timeout 0.3"
"""Silero VAD stop (0.2 s) + 0.3 s: the same 500 ms of silence as the gateway's endpointing.

Pipecat's own default (Smart Turn v3) answered no turn within 20 s at 10
concurrent calls on the 2-core development machine."""

SPA = "spa-del-sol"
IDLE = "bench-idle"  # no greeting: a connected call where nobody speaks
TALK = "bench-talk"  # a long greeting: the bot speaks to every call at once
LONG_GREETING = (
    "Thanks for calling Spa del Sol, your neighbourhood day spa. "
    "We offer massages, facials and manicures, and we are open six days a week. "
    "How can I help you today?"
)
SCRIPT = (
    "I'd like to book a massage",
    "Maria Lopez",
    "yes",  # the number it is calling from
    "m a r i a at example dot com",
    "Friday at three pm",
    "yes",
)
NAMES = (
    "Maria Lopez",
    "John Smith",
    "Priya Raman",
    "Tom Becker",
    "Ana Ruiz",
    "Wei Chen",
    "Sarah Miller",
    "Omar Haddad",
)
"""Callers give different names, so replies differ from call to call as in real life
(the synthesiser's cache would otherwise serve every call's replies after the first)."""
MODELS_DIR = REPO / "data" / "models"
"""Where ``gateway models install`` put the real models (``--speech real``)."""
BARGE_IN = "Wait, actually I have a question about your prices"
REPLY_TIMEOUT_S = 60.0  # a phone summary read back with its options runs ~25 s
JITTER_LIMIT_MS = 20.0
STEADY_AFTER_S = 3.0
FRAME_MS = 20.0

T = TypeVar("T")


# --- servers ---------------------------------------------------------------------------------


def make_clients(root: Path) -> list[str]:
    """The reference client plus two variants for (c): no greeting, and a ~10 s greeting."""
    base = yaml.safe_load((TEMPLATE / "config.yaml").read_text(encoding="utf-8"))
    ids = []
    for client_id, greeting in ((SPA, None), (IDLE, ""), (TALK, LONG_GREETING)):
        config = json.loads(json.dumps(base))  # a deep copy
        config["client_id"] = client_id
        if greeting is not None:
            config["channels"]["phone"]["greeting"] = greeting or None
        folder = root / client_id
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
        )
        if (TEMPLATE / "knowledge").is_dir():
            shutil.copytree(TEMPLATE / "knowledge", folder / "knowledge")
        ids.append(client_id)
    return ids


class BotProcess(ServerProcess):
    """A bot server that serves Twilio media streams."""

    def media_url(self, client_id: str) -> str:
        raise NotImplementedError

    def caller(self, client_id: str, **options: Any) -> TwilioCaller:
        """A simulated call to ``client_id`` (``options``: :class:`TwilioCaller`'s)."""
        return TwilioCaller(self.media_url(client_id), **options)


class GatewayProcess(BotProcess):
    """``python -m gateway.cli serve`` with an admin token, on the bench's client folders."""

    name = "gateway"

    def __init__(
        self,
        workdir: Path,
        clients_dir: Path,
        expected_clients: int,
        speech: str = "offline",
    ) -> None:
        self.admin_token = secrets.token_urlsafe(16)
        self.auth_token = secrets.token_urlsafe(16)
        self.expected_clients = expected_clients
        self.name = f"gateway-{speech}"
        data = workdir / f"data-{speech}"
        data.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(
            GATEWAY_DATA_DIR=str(data),
            # offline: no models folder, so `auto` picks PocketSphinx and espeak-ng;
            # real: the installed Whisper tiny.en and Piper voice.
            GATEWAY_MODELS_DIR=str(MODELS_DIR if speech == "real" else data / "no-models"),
            GATEWAY_PHONE_MAX_CALLS="0",  # the bench finds the limit itself
            GATEWAY_LOG_LEVEL="WARNING",
            GATEWAY_ADMIN_TOKEN=self.admin_token,
            # The bench's clients are copies of spa-del-sol: its auth token signs the voice
            # webhook, which mints each call's one-time stream token.
            SPA_TWILIO_AUTH_TOKEN=self.auth_token,
        )
        port = free_port()
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--host", HOST, "--port", str(port)]
        super().__init__(workdir, [*cmd, "--clients-dir", str(clients_dir)], env)
        self.url = f"http://{HOST}:{port}"

    def media_url(self, client_id: str) -> str:
        return f"ws://{HOST}:{self.port}/twilio/media/{client_id}"

    def caller(self, client_id: str, **options: Any) -> TwilioCaller:
        """A call placed as Twilio places it: through the signed voice webhook."""
        voice_url = f"{self.url}/twilio/voice/{client_id}"
        return TwilioCaller(voice_url, auth_token=self.auth_token, **options)

    def ready(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return (
            response.status_code == 200 and len(response.json()["clients"]) >= self.expected_clients
        )


class PipecatProcess(BotProcess):
    """``bench/pipecat_twilio/server.py`` in ``.venv-pipecat``; one bot for every call at ``/ws``."""

    name = "pipecat"

    def __init__(self, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        port = free_port()
        cmd = [str(PIPECAT_PYTHON), str(PIPECAT_SERVER), "--host", HOST, "--port", str(port)]
        super().__init__(workdir, [*cmd, *extra_args], dict(os.environ))

    def media_url(self, client_id: str) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((HOST, self.port)) == 0


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Voice:
    """The caller's lines, synthesized once up front (PCM16, rate in Hz)."""

    script: list[tuple[bytes, int]]
    barge_in: tuple[bytes, int]
    names: list[tuple[bytes, int]] = field(default_factory=list)

    def for_call(self, index: int) -> list[tuple[bytes, int]]:
        """The script of call ``index``: its own name in the second line."""
        if len(self.script) < 2 or not self.names:
            return self.script
        return [self.script[0], self.names[index % len(self.names)], *self.script[2:]]

    @classmethod
    def build(cls, turns: int, voice: str = "espeak") -> Voice:
        """The script spoken by ``voice`` (``espeak`` or an installed Piper voice)."""
        lines = [speak(text, voice, models_dir=MODELS_DIR) for text in SCRIPT[:turns]]
        names = [speak(name, voice, models_dir=MODELS_DIR) for name in NAMES]
        return cls(lines, speak(BARGE_IN, voice, models_dir=MODELS_DIR), names)


@dataclass
class LatencyResult:
    """(a): client-side latencies (ms) and the server's stages per turn."""

    calls: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    server_total_ms: list[float] = field(default_factory=list)
    missing_replies: int = 0
    talked_over: int = 0
    failures: list[str] = field(default_factory=list)
    reports: int = 0
    call_seconds: float = 0.0
    server_cpu_s: float = 0.0

    @property
    def cpu_ms_per_call_second(self) -> float:
        """Gateway CPU per second of conversation (both sides talking), in ms."""
        return 1000 * self.server_cpu_s / self.call_seconds if self.call_seconds else float("nan")


@dataclass
class BargeResult:
    """(b): reaction times (ms), missed barge-ins, and false clears per line condition."""

    reactions_ms: list[float] = field(default_factory=list)
    server_reactions_ms: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    missed: int = 0
    failures: list[str] = field(default_factory=list)
    false: dict[str, FalseResult] = field(default_factory=dict)


@dataclass
class FalseResult:
    calls: int = 0
    calls_with_clear: int = 0
    clears: int = 0
    unprompted_replies: int = 0


@dataclass
class RampStep:
    calls: int
    completed: int
    frames: int
    jitter_p50_ms: float
    jitter_p99_ms: float
    jitter_max_ms: float
    steady_jitter_p99_ms: float
    steady_underruns: int
    underruns: int
    underrun_ms: float
    first_audio_p50_ms: float
    server_cpu_pct: float
    client_cpu_pct: float
    client_lateness_max_ms: float
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.completed == self.calls
            and self.jitter_p99_ms < JITTER_LIMIT_MS
            and self.underruns == 0
        )

    @property
    def steady_ok(self) -> bool:
        return (
            self.completed == self.calls
            and self.steady_jitter_p99_ms < JITTER_LIMIT_MS
            and self.steady_underruns == 0
        )


@dataclass
class CpuResult:
    idle_calls: int = 0
    idle_seconds: float = 0.0
    baseline_cpu_s_per_s: float = 0.0
    idle_cpu_s_per_s: float = 0.0
    ramp: list[RampStep] = field(default_factory=list)

    @property
    def per_call_second_ms(self) -> float:
        """Gateway CPU per connected call-second, in ms, net of the idle process."""
        if not self.idle_calls:
            return float("nan")
        return 1000 * (self.idle_cpu_s_per_s - self.baseline_cpu_s_per_s) / self.idle_calls


async def _gather_limited(jobs: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def warm_up(server: BotProcess, client_id: str) -> None:
    """One call that waits for the greeting: speech models load on the first call."""
    async with asyncio.timeout(120), server.caller(client_id) as call:
        await call.wait_for_reply(90)


async def booking_call(
    server: BotProcess,
    voice: Voice,
    result: LatencyResult,
    admin_token: str | None,
    stagger_s: float,
    index: int = 0,
) -> None:
    await asyncio.sleep(stagger_s)
    started = time.monotonic()
    try:
        async with server.caller(SPA) as call:
            await call.wait_for_reply(REPLY_TIMEOUT_S)  # the greeting
            for pcm, rate in voice.for_call(index):
                said = await call.say(pcm, rate)
                try:
                    reply = await call.wait_for_reply(REPLY_TIMEOUT_S, after=said.ended_at)
                except TimeoutError:
                    result.missing_replies += 1
                    continue
                finally:
                    result.talked_over += sum(
                        said.started_at <= t < said.ended_at for t in call.reply_starts
                    )
                result.latencies_ms.append((reply.first_frame_at - said.ended_at) * 1000)
                await asyncio.sleep(random.uniform(0.2, 0.6))  # the caller thinks
            if isinstance(server, GatewayProcess):
                report = await fetch_call_report(server.url, call.call_sid, admin_token)
                if report is not None:
                    result.reports += 1
                    for turn in report.turns_of_kind("speech"):
                        for stage, ms in turn.stages_ms.items():
                            result.stages_ms.setdefault(stage, []).append(ms)
                        if turn.end_of_speech_to_first_media_ms is not None:
                            result.server_total_ms.append(turn.end_of_speech_to_first_media_ms)
        result.calls += 1
    except (TimeoutError, OSError, WebSocketException) as exc:
        result.failures.append(_error(exc))
    finally:
        result.call_seconds += time.monotonic() - started


async def measure_latency(
    server: BotProcess, voice: Voice, calls: int, admin_token: str | None
) -> LatencyResult:
    result = LatencyResult()
    cpu_before = server.cpu_seconds()
    await asyncio.gather(
        *(
            booking_call(server, voice, result, admin_token, random.uniform(0, 2.0), i)
            for i in range(calls)
        )
    )
    result.server_cpu_s = server.cpu_seconds() - cpu_before
    return result


async def barge_in_trial(
    server: BotProcess, voice: Voice, result: BargeResult, admin_token: str | None
) -> None:
    try:
        async with asyncio.timeout(60), server.caller(SPA) as call:
            await call.wait_for_audio(30)  # the greeting started
            await asyncio.sleep(random.uniform(0.4, 1.2))
            before = time.monotonic()
            speaking = asyncio.create_task(call.say(*voice.barge_in))
            try:
                cleared_at = await call.wait_for_clear(5.0, after=before)
            except TimeoutError:
                result.missed += 1
                speaking.cancel()
                return
            said = await speaking
            result.reactions_ms.append((cleared_at - said.started_at) * 1000)
            if isinstance(server, GatewayProcess):
                with_reply = asyncio.create_task(call.wait_for_reply(REPLY_TIMEOUT_S))
                await asyncio.wait({with_reply}, timeout=3.0)  # let the server note the outcome
                with_reply.cancel()
                report = await fetch_call_report(server.url, call.call_sid, admin_token)
                for barge in report.barge_ins if report else ():
                    if barge.reaction_ms is not None:
                        result.server_reactions_ms.append(barge.reaction_ms)
                    result.outcomes[barge.outcome] = result.outcomes.get(barge.outcome, 0) + 1
    except (TimeoutError, OSError, WebSocketException) as exc:
        result.failures.append(_error(exc))


@dataclass(frozen=True)
class Line:
    """A caller's line condition for the false barge-in test."""

    label: str
    echo_db: float | None = None
    noise_dbfs: float | None = None


async def silent_call(
    server: BotProcess, condition: FalseResult, window_s: float, line: Line
) -> None:
    """A caller who says nothing for ``window_s`` while the line carries echo or noise.

    Every ``clear`` is a false barge-in. A reply (bot audio after 2 s of
    silence) that starts without a ``clear`` before it (since the previous
    reply) answers something the caller never said: an unprompted reply.
    (Audio resuming after a clear is the bot carrying on, not a new reply.)
    """
    # A 2 s gap: a reply that arrives in pieces (an overloaded server) is still one reply.
    async with server.caller(
        SPA, echo_db=line.echo_db, noise_dbfs=line.noise_dbfs, reply_gap_ms=2000
    ) as call:
        await call.listen(window_s)
    starts = call.reply_starts
    unprompted = sum(
        1
        for previous, start in itertools.pairwise(starts)
        if not any(previous <= at <= start for at in call.clears)
    )
    condition.calls += 1
    condition.clears += len(call.clears)
    condition.calls_with_clear += bool(call.clears)
    condition.unprompted_replies += unprompted


async def measure_barge_in(
    server: BotProcess,
    voice: Voice,
    trials: int,
    concurrency: int,
    admin_token: str | None,
    conditions: list[Line],
    false_calls: int,
    window_s: float,
) -> BargeResult:
    result = BargeResult()
    await _gather_limited(
        [lambda: barge_in_trial(server, voice, result, admin_token) for _ in range(trials)],
        concurrency,
    )
    jobs = []
    for line in conditions:
        condition = result.false[line.label] = FalseResult()
        for _ in range(false_calls):
            jobs.append(silent_call(server, condition, window_s, line))
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    result.failures += [_error(o) for o in outcomes if isinstance(o, BaseException)]
    return result


def frame_jitter_ms(arrivals: Sequence[float], window: int = 50) -> list[float]:
    """Per frame of one reply: lateness against the best pace of the last ``window`` frames, ms.

    ``arrivals`` are the frames' arrival times in s, 20 ms frames in order
    (see the module docstring).
    """
    offsets = [arrived - k * FRAME_MS / 1000 for k, arrived in enumerate(arrivals)]
    best: deque[int] = deque()  # indexes of a rising run of offsets: best[0] is the window's min
    jitter = []
    for k, offset in enumerate(offsets):
        while best and offsets[best[-1]] >= offset:
            best.pop()
        best.append(k)
        if best[0] < k - window:
            best.popleft()
        jitter.append((offset - offsets[best[0]]) * 1000)
    return jitter


async def idle_cpu(server: BotProcess, calls: int, seconds: float) -> tuple[float, float]:
    """(gateway CPU s per s with no calls, with ``calls`` silent calls connected)."""
    before = server.cpu_seconds()
    await asyncio.sleep(seconds)
    baseline = (server.cpu_seconds() - before) / seconds
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(calls):
            await stack.enter_async_context(server.caller(IDLE))
        await asyncio.sleep(1.0)  # let start-up work settle
        before = server.cpu_seconds()
        await asyncio.sleep(seconds)
        loaded = (server.cpu_seconds() - before) / seconds
    return baseline, loaded


async def ramp_step(server: BotProcess, calls: int) -> RampStep:
    replies: list[BotReply | None] = [None] * calls
    first_audio_ms: list[float] = []
    client_lateness = [0.0]
    errors: list[str] = []

    async def one(i: int) -> None:
        await asyncio.sleep(i / calls)  # spread the call starts over 1 s
        try:
            async with server.caller(TALK) as call:
                reply = replies[i] = await call.wait_for_reply(60 + calls / 2)
                first_audio_ms.append((reply.first_frame_at - call.connected_at) * 1000)
                client_lateness[0] = max(client_lateness[0], call.send_lateness_ms)
        except (TimeoutError, OSError, WebSocketException) as exc:
            errors.append(_error(exc))

    cpu0, client0, t0 = server.cpu_seconds(), time.process_time(), time.monotonic()
    await asyncio.gather(*(one(i) for i in range(calls)))
    elapsed = time.monotonic() - t0
    server_cpu = (server.cpu_seconds() - cpu0) / elapsed * 100
    client_cpu = (time.process_time() - client0) / elapsed * 100
    done = [r for r in replies if r is not None]
    jitter = [ms for r in done for ms in frame_jitter_ms(r.frame_arrivals)]
    steady = [  # frames from STEADY_AFTER_S into each greeting: after the start-up TTS burst
        ms
        for r in done
        for at, ms in zip(r.frame_arrivals, frame_jitter_ms(r.frame_arrivals), strict=True)
        if at - r.first_frame_at >= STEADY_AFTER_S
    ]
    return RampStep(
        calls=calls,
        completed=len(done),
        frames=len(jitter),
        jitter_p50_ms=percentile(jitter, 0.50),
        jitter_p99_ms=percentile(jitter, 0.99),
        jitter_max_ms=max(jitter, default=float("nan")),
        steady_jitter_p99_ms=percentile(steady, 0.99),
        steady_underruns=sum(
            u.at - r.first_frame_at >= STEADY_AFTER_S for r in done for u in r.underruns
        ),
        underruns=sum(len(r.underruns) for r in done),
        underrun_ms=sum(u.gap_ms for r in done for u in r.underruns),
        first_audio_p50_ms=percentile(first_audio_ms, 0.50),
        server_cpu_pct=server_cpu,
        client_cpu_pct=client_cpu,
        client_lateness_max_ms=client_lateness[0],
        errors=errors,
    )


async def measure_cpu(
    server: BotProcess, idle_calls: int, idle_seconds: float, ramp: list[int]
) -> CpuResult:
    result = CpuResult(idle_calls=idle_calls, idle_seconds=idle_seconds)
    if idle_calls:
        result.baseline_cpu_s_per_s, result.idle_cpu_s_per_s = await idle_cpu(
            server, idle_calls, idle_seconds
        )
    for calls in ramp:
        step = await ramp_step(server, calls)
        result.ramp.append(step)
        print(
            f"    ramp {calls} calls: p99 jitter {step.jitter_p99_ms:.1f} ms, "
            f"{step.underruns} underruns, {step.completed}/{calls} complete",
            flush=True,
        )
        if step.completed < calls / 2:
            break  # collapsed: larger steps only take longer
        await asyncio.sleep(1.0)
    return result


# --- report ----------------------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(list(values), q):.0f}" if values else "-"


def latency_table(results: dict[str, LatencyResult]) -> Iterator[str]:
    names = list(results)
    yield "(a) end of caller speech -> first bot audio frame, ms (client clock)"
    yield f"  {'':<28}" + "".join(f"{n:>12}" for n in names)
    rows: list[tuple[str, Callable[[LatencyResult], str]]] = [
        ("calls completed", lambda r: f"{r.calls}"),
        ("turns measured", lambda r: f"{len(r.latencies_ms)}"),
        ("p50", lambda r: _ms(r.latencies_ms, 0.50)),
        ("p95", lambda r: _ms(r.latencies_ms, 0.95)),
        ("max", lambda r: f"{max(r.latencies_ms):.0f}" if r.latencies_ms else "-"),
        ("turns without a reply", lambda r: f"{r.missing_replies}"),
        ("bot talked over the caller", lambda r: f"{r.talked_over}"),
        ("CPU ms per call-second", lambda r: f"{r.cpu_ms_per_call_second:.0f}"),
    ]
    for label, cell in rows:
        yield f"  {label:<28}" + "".join(f"{cell(results[n]):>12}" for n in names)
    gateways = [n for n in names if n.startswith("gateway") and results[n].stages_ms]
    if gateways:
        yield ""
        yield "  gateway stages, median ms per turn (from /admin/api/calls, server clock)"
        yield f"  {'':<28}" + "".join(f"{n:>12}" for n in gateways)
        for stage in STAGES:
            cells = [_median(results[n].stages_ms.get(stage, [])) for n in gateways]
            yield f"    {stage:<26}" + "".join(f"{c:>12}" for c in cells)
        cells = [_median(results[n].server_total_ms) for n in gateways]
        yield f"    {'end of speech -> media':<26}" + "".join(f"{c:>12}" for c in cells)
        cells = [_ms(results[n].server_total_ms, 0.95) for n in gateways]
        yield f"    {'  (p95)':<26}" + "".join(f"{c:>12}" for c in cells)
    elif any(n.startswith("gateway") for n in names):
        yield "  (no server stage figures: /admin/api/calls did not answer)"


def _median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def barge_table(results: dict[str, BargeResult]) -> Iterator[str]:
    names = list(results)
    yield "(b) barge-in: caller speech onset -> clear received, ms"
    yield f"  {'':<28}" + "".join(f"{n:>12}" for n in names)
    rows: list[tuple[str, Callable[[BargeResult], str]]] = [
        ("trials with a clear", lambda r: f"{len(r.reactions_ms)}"),
        ("p50", lambda r: _ms(r.reactions_ms, 0.50)),
        ("p95", lambda r: _ms(r.reactions_ms, 0.95)),
        ("missed (no clear in 5 s)", lambda r: f"{r.missed}"),
        ("server reaction p50", lambda r: _ms(r.server_reactions_ms, 0.50)),
    ]
    for label, cell in rows:
        yield f"  {label:<28}" + "".join(f"{cell(results[n]):>12}" for n in names)
    for name in names:
        if results[name].outcomes:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(results[name].outcomes.items()))
            yield f"  {name} outcomes (server): {outcomes}"
    yield ""
    yield "  false barge-ins: silent callers, calls with a clear / calls (clears, unprompted replies)"
    conditions = list(next(iter(results.values())).false) if results else []
    for condition in conditions:
        cells = []
        for name in names:
            f = results[name].false.get(condition)
            cells.append(
                "-"
                if f is None
                else f"{f.calls_with_clear}/{f.calls} ({f.clears}, {f.unprompted_replies})"
            )
        yield f"  {condition:<28}" + "".join(f"{c:>16}" for c in cells)


def cpu_table(result: CpuResult) -> Iterator[str]:
    yield "(c) gateway CPU and outbound pacing"
    if result.idle_calls:
        yield (
            f"  {result.idle_calls} idle calls (line streaming silence, bot silent): "
            f"{result.idle_cpu_s_per_s * 100:.1f} % of a core, {result.baseline_cpu_s_per_s * 100:.1f} % "
            "with no calls"
        )
        yield (
            f"  = {result.per_call_second_ms:.2f} ms of gateway CPU per call-second "
            f"(~{1000 / result.per_call_second_ms:.0f} idle calls per core)"
            if result.per_call_second_ms > 0
            else "  (no measurable CPU per call)"
        )
    if result.ramp:
        yield ""
        yield "  ramp: the bot speaks a ~10 s greeting to N calls at once"
        yield (
            f"  {'':>10} {'------ whole greeting ------':^35} "
            f"{f'- after {STEADY_AFTER_S:g} s -':^18}"
        )
        yield (
            f"  {'N':>4} {'done':>5} {'jit p50':>8} {'jit p99':>8} {'jit max':>8} {'underruns':>9} "
            f"{'jit p99':>8} {'underruns':>9} {'1st audio':>9} {'gw CPU':>7} {'cli CPU':>7} "
            f"{'cli late':>8}"
        )
        for s in result.ramp:
            yield (
                f"  {s.calls:>4} {s.completed:>5} {s.jitter_p50_ms:>8.1f} {s.jitter_p99_ms:>8.1f} "
                f"{s.jitter_max_ms:>8.1f} {s.underruns:>9} {s.steady_jitter_p99_ms:>8.1f} "
                f"{s.steady_underruns:>9} {s.first_audio_p50_ms:>9.0f} {s.server_cpu_pct:>6.0f}% "
                f"{s.client_cpu_pct:>6.0f}% {s.client_lateness_max_ms:>8.0f}"
            )
        for s in result.ramp:
            for error in sorted(set(s.errors))[:3]:
                yield f"  N={s.calls}: {s.errors.count(error)} call(s) failed: {error}"
        for label, passing in (
            ("whole greeting", [s.calls for s in result.ramp if s.ok]),
            (f"after {STEADY_AFTER_S:g} s", [s.calls for s in result.ramp if s.steady_ok]),
        ):
            yield (
                f"  largest N with p99 jitter < {JITTER_LIMIT_MS:.0f} ms and no underruns "
                f"({label}): {max(passing) if passing else 'none'} ({os.cpu_count()} CPUs)"
            )


# --- main ------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # installed with uvicorn[standard]; the client then costs less CPU
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh event loop (uvloop when installed)."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(coro)


def bench_server(
    server: BotProcess, args: argparse.Namespace, voice: Voice, admin_token: str | None
) -> tuple[dict[int, LatencyResult], BargeResult | None, CpuResult | None]:
    parts = args.parts
    print(f"  {server.name}: warming up", flush=True)
    run(warm_up(server, SPA))
    latency: dict[int, LatencyResult] = {}
    barge = cpu = None
    for calls in args.calls if "a" in parts else []:
        print(f"  {server.name}: (a) {calls} concurrent booking calls", flush=True)
        latency[calls] = run(measure_latency(server, voice, calls, admin_token))
    if "b" in parts:
        print(f"  {server.name}: (b) {args.barge_trials} barge-ins, false barge-ins", flush=True)
        conditions = [Line("silent line")]
        conditions += [Line(f"echo {db:g} dB down", echo_db=db) for db in args.echo_db]
        conditions += [Line(f"noise {n:g} dBFS", noise_dbfs=n) for n in args.noise_dbfs]
        barge = run(
            measure_barge_in(
                server,
                voice,
                args.barge_trials,
                args.barge_concurrency,
                admin_token,
                conditions,
                args.false_calls,
                args.false_window,
            )
        )
    if "c" in parts and isinstance(server, GatewayProcess):
        print(f"  {server.name}: (c) CPU, idle and ramp", flush=True)
        cpu = run(measure_cpu(server, args.idle_calls, args.idle_seconds, args.ramp))
    return latency, barge, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.phone_calls", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--parts", default="a,b,c", help="which measurements: a, b, c")
    parser.add_argument(
        "--calls", type=_ints, default=[10], help="(a) concurrent booking calls, e.g. 1,10"
    )
    parser.add_argument(
        "--turns", type=int, default=6, help=f"(a) turns per call (max {len(SCRIPT)})"
    )
    parser.add_argument("--barge-trials", type=int, default=20, help="(b) barge-in trials")
    parser.add_argument("--barge-concurrency", type=int, default=5, help="(b) trials at once")
    parser.add_argument("--echo-db", type=_floats, default=[10.0, 20.0], help="(b) echo levels")
    parser.add_argument("--noise-dbfs", type=_floats, default=[-45.0, -35.0], help="(b) noise")
    parser.add_argument("--false-calls", type=int, default=4, help="(b) silent calls per condition")
    parser.add_argument(
        "--false-window", type=float, default=8.0, help="(b) s each silent call lasts"
    )
    parser.add_argument("--idle-calls", type=int, default=20, help="(c) idle connected calls")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="(c) CPU window, s")
    parser.add_argument("--ramp", type=_ints, default=[10, 20, 40, 80], help="(c) call counts")
    parser.add_argument("--compare-pipecat", action="store_true", help="(d) also bench Pipecat")
    parser.add_argument(
        "--servers", default="gateway", help="servers to bench: gateway and/or pipecat"
    )
    parser.add_argument(
        "--pipecat-args",
        default=PIPECAT_DEFAULT_ARGS,
        help=f"arguments for the Pipecat server (default {PIPECAT_DEFAULT_ARGS!r}; '' = its "
        "defaults, Smart Turn)",
    )
    parser.add_argument(
        "--speech",
        default=None,
        help="gateway speech stacks to bench: offline (PocketSphinx, espeak-ng) and/or real "
        "(Whisper tiny.en, Piper, from `gateway models install`); default: both when installed",
    )
    parser.add_argument(
        "--voice",
        default=None,
        help="the callers' voice: espeak, or a Piper voice (default: en_US-joe-medium when "
        "installed, else espeak)",
    )
    parser.add_argument("--quick", action="store_true", help="small run: 4 calls, 3 turns, ...")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.parts or args.parts - {"a", "b", "c"}:
        parser.error("--parts takes a, b and/or c")
    if args.quick:
        args.calls, args.turns, args.barge_trials, args.false_calls = [4], 3, 8, 2
        args.idle_calls, args.ramp = 10, [10, 40]
    args.servers = [x.strip() for x in args.servers.split(",") if x.strip()]
    if args.compare_pipecat and "pipecat" not in args.servers:
        args.servers.append("pipecat")
    if not args.servers or set(args.servers) - {"gateway", "pipecat"}:
        parser.error("--servers takes gateway and/or pipecat")
    if not 1 <= args.turns <= len(SCRIPT):
        parser.error(f"--turns must be 1..{len(SCRIPT)}")
    if shutil.which("espeak-ng") is None:
        parser.error("needs espeak-ng (apt-get install espeak-ng)")
    whisper = speech_models.resolve("whisper", "tiny.en", MODELS_DIR) is not None
    piper = speech_models.resolve("piper", "en_US-joe-medium", MODELS_DIR) is not None
    stacks = args.speech or ("offline,real" if whisper and piper else "offline")
    args.speech = [x.strip() for x in stacks.split(",") if x.strip()]
    if not args.speech or set(args.speech) - {"offline", "real"}:
        parser.error("--speech takes offline and/or real")
    if "real" in args.speech and not (whisper and piper):
        parser.error("--speech real needs `gateway models install tiny.en en_US-joe-medium`")
    args.voice = args.voice or ("en_US-joe-medium" if piper else "espeak")

    workdir = Path(tempfile.mkdtemp(prefix="gateway-phone-bench-"))
    latency: dict[str, LatencyResult] = {}
    barge: dict[str, BargeResult] = {}
    cpu: CpuResult | None = None
    started = time.monotonic()
    try:
        clients_dir = workdir / "clients"
        client_ids = make_clients(clients_dir)
        voice = Voice.build(args.turns, args.voice)
        print(
            f"phone bench: gateway in a separate process on {HOST}, speech "
            f"{' and '.join(args.speech)} (offline: PocketSphinx, espeak-ng; real: Whisper "
            f"tiny.en, Piper); simulated Twilio callers in this process speaking with "
            f"{args.voice}; {os.cpu_count()} CPUs",
            flush=True,
        )
        servers: list[Callable[[], BotProcess]] = []
        if "gateway" in args.servers:
            for stack in args.speech:
                servers.append(
                    functools.partial(GatewayProcess, workdir, clients_dir, len(client_ids), stack)
                )
        if "pipecat" in args.servers and PIPECAT_PYTHON.exists() and PIPECAT_SERVER.exists():
            servers.append(lambda: PipecatProcess(workdir, args.pipecat_args.split()))
        for make in servers:
            server = make()
            try:
                server.wait_ready()
                token = server.admin_token if isinstance(server, GatewayProcess) else None
                a, b, c = bench_server(server, args, voice, token)
            except Exception:
                print(f"{server.name} log tail:\n{server.tail()}", file=sys.stderr)
                raise
            finally:
                server.stop()
            for calls, result in a.items():
                latency[f"{server.name}@{calls}" if len(a) > 1 else server.name] = result
            if b is not None:
                barge[server.name] = b
            cpu = cpu or c
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n(ran {time.monotonic() - started:.0f} s)\n")
    if latency:
        print("\n".join(latency_table(latency)), end="\n\n")
    if barge:
        print("\n".join(barge_table(barge)), end="\n\n")
    if cpu is not None:
        print("\n".join(cpu_table(cpu)), end="\n\n")
    if "pipecat" in args.servers and "pipecat" not in latency and "pipecat" not in barge:
        print(
            "(d) Pipecat comparison skipped: no .venv-pipecat. Set it up with\n"
            "    bash bench/pipecat_twilio/setup.sh\n"
            "then run again with --compare-pipecat."
        )
    failures = [f for r in latency.values() for f in r.failures]
    failures += [f for r in barge.values() for f in r.failures]
    for failure in failures[:5]:
        print(f"  failure: {failure}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "latency": {k: asdict(v) for k, v in latency.items()},
            "barge_in": {k: asdict(v) for k, v in barge.items()},
            "cpu": asdict(cpu) if cpu else None,
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

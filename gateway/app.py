"""The FastAPI app factory and its one lifespan.

``create_app(settings)`` mounts every route; the lifespan loads the client
folders, opens the session store (memory or Redis), the local SQLite tools and
the engine, and closes them all on shutdown. Adapters reach what they need via
``app.state`` (``engine``, ``store``, ``registry`` and their own limits), set
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from fastapi import FastAPI

from engine import (
    ClientRegistry,
    Engine,
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    load_clients,
)
from engine.tools import ConversationLog, LocalCalendar, LocalCrm, Tools
from gateway.settings import Settings
from purposes.lead_capture import LeadCaptureAgent

__all__ = ["Gateway", "create_app", "open_gateway"]

log = logging.getLogger("gateway")


@dataclass
class Gateway:
    """Everything the lifespan opened, for routes, the CLI and tests."""

    settings: Settings
    registry: ClientRegistry
    store: SessionStore
    engine: Engine
    crm: LocalCrm
    calendar: LocalCalendar
    conversations: ConversationLog


@asynccontextmanager
async def open_gateway(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[Gateway]:
    """Open every shared resource, yield the wired :class:`Gateway`, close them all."""
    from purposes.lead_capture.validators import warm_up

    await asyncio.to_thread(warm_up)
    registry = load_clients(settings.clients_dir)
    for problem in registry.problems:
        (log.error if problem.severity == "error" else log.warning)("client config: %s", problem)
    log.info("loaded %d client(s): %s", len(registry.clients), ", ".join(sorted(registry.clients)))
    store: SessionStore
    if settings.redis_url:
        store = RedisSessionStore(settings.redis_url, ttl_s=settings.session_ttl_s)
        if not await store.ping():
            log.error("REDIS_URL is set but Redis does not answer; /readyz will report it")
    else:
        store = MemorySessionStore(ttl_s=settings.session_ttl_s)
    data = settings.data_dir
    calendar = LocalCalendar(data / "calendar.sqlite")
    crm = LocalCrm(data / "crm.sqlite")
    conversations = ConversationLog(data / "conversations.sqlite")
    engine = Engine(
        registry,
        store,
        [LeadCaptureAgent()],
        Tools(calendar=calendar, crm=crm),
        conversation_log=conversations,
        lock_timeout_s=settings.lock_timeout_s,
        clock=clock or Engine.default_clock,
    )
    try:
        yield Gateway(settings, registry, store, engine, crm, calendar, conversations)
    finally:
        await store.close()
        calendar.close()
        crm.close()
        conversations.close()


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """Build the ASGI app. ``clock`` pins the engine's notion of now (tests)."""
    import httpx

    from adapters.phone.media import media_router
    from adapters.phone.trace import CallTraces
    from adapters.phone.webhook import PhoneSettings, voice_router
    from adapters.speech.providers import SpeechHub
    from adapters.web import WebLimits, web_router
    from gateway.logging import configure_logging
    from gateway.routes import admin_router, ops_router

    settings = settings or Settings()
    configure_logging(settings.log_level)
    # Built before serving so a malformed GATEWAY_PUBLIC_URL fails at start-up.
    phone_settings = PhoneSettings(
        public_url=settings.public_url, twilio_base_url=settings.twilio_base_url
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_gateway(settings, clock) as gw, httpx.AsyncClient() as http:
            app.state.http = http
            app.state.phone_settings = phone_settings
            app.state.gateway = gw
            app.state.engine = gw.engine
            app.state.store = gw.store
            app.state.registry = gw.registry
            # Speech models load on a client's first call (off the event loop), once.
            app.state.speech_hub = SpeechHub()
            app.state.call_traces = CallTraces()
            app.state.web_limits = WebLimits(
                max_frame_bytes=settings.web_max_frame_bytes,
                max_text_chars=settings.web_max_text_chars,
                rate_per_s=settings.web_rate_per_s,
                rate_burst=settings.web_rate_burst,
            )
            yield

    app = FastAPI(title="channel gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(ops_router())
    app.include_router(admin_router())
    app.include_router(web_router())
    app.include_router(voice_router())
    app.include_router(media_router())
    return app

"""Operational and admin routes: ``/healthz``, ``/readyz``, ``/metrics``, ``/admin/api/*``.

Each factory takes a provider of the running :class:`~gateway.app.Gateway`
(built in the app's lifespan), never reading ``app.state``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.phone.trace import CallTraces

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["admin_router", "ops_router"]


def ops_router(gateway: Callable[[], Gateway]) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        gw = gateway()
        store_ok = await gw.store.ping()
        locks_ok = await gw.locks.ping()
        ready = store_ok and locks_ok and bool(gw.registry.clients)
        body = {
            "status": "ready" if ready else "not ready",
            "clients": sorted(gw.registry.clients),
            "client_errors": [str(p) for p in gw.registry.errors],
            "store": {"backend": gw.store.backend, "ok": store_ok},
            "locks": {"backend": gw.locks.backend, "ok": locks_ok},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _admin_guard(gateway: Callable[[], Gateway]) -> Callable[..., None]:
    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        _check_token(gateway().settings.admin_token, authorization)

    return require_admin


def _check_token(token: str | None, authorization: str | None) -> None:
    if not token:
        raise HTTPException(404, "admin API is off: set GATEWAY_ADMIN_TOKEN to enable it")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def admin_router(
    gateway: Callable[[], Gateway], call_traces: Callable[[], CallTraces]
) -> APIRouter:
    """``/admin/api/*``; ``call_traces``: the phone channel's traces (live calls
    of this replica, and every replica's finished calls)."""
    router = APIRouter(prefix="/admin/api", dependencies=[Depends(_admin_guard(gateway))])

    def _client(client_id: str) -> Gateway:
        gw = gateway()
        if gw.registry.get(client_id) is None:
            raise HTTPException(404, f"unknown client {client_id!r}")
        return gw

    @router.get("/leads")
    async def leads(
        client_id: Annotated[str, Query()],
        include_test: Annotated[bool, Query()] = False,
    ) -> list[dict[str, object]]:
        """Leads, oldest first; leads of test conversations (``gateway chat``) only
        with ``include_test=true``."""
        gw = _client(client_id)
        records = await gw.leads.list_leads(client_id, include_test=include_test)
        return [r.as_json() for r in records]

    @router.get("/conversations")
    async def conversations(
        client_id: Annotated[str, Query()],
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, object]]:
        records = await _client(client_id).conversations.list(client_id, limit)
        return [r.as_json() for r in records]

    @router.get("/calls/{call_sid}")
    async def call_trace(call_sid: str) -> dict[str, object]:
        """Per-turn latency stages and barge-ins of a call, from any replica
        (shape: :meth:`adapters.phone.trace.CallTrace.as_json`)."""
        trace = await call_traces().find(call_sid)
        if trace is None:
            raise HTTPException(404, f"no trace of call {call_sid!r}")
        return trace

    return router

"""Operational and admin routes: ``/healthz``, ``/readyz``, ``/metrics``, ``/admin/api/*``.

Each factory takes a provider of its narrow dependencies (:class:`OpsDeps`,
:class:`AdminDeps`, built once in the app's lifespan), never reading ``app.state``.

Staff answer a handed-off conversation (:mod:`engine.takeover`) here. A
conversation's ``{id}`` is ``client_id:channel:session_id`` (the ``id`` of
each item of ``GET /admin/api/conversations``; the link in Slack and email
notices)::

    GET  /admin/api/conversations/{id}          one conversation (as in the list)
    POST /admin/api/conversations/{id}/reply    {"text": "...", "id": "<optional reply id>"}
        200 {"id", "handoff": "human", "event_id", "duplicate", "delivery"}
            the reply joins the transcript (``staff: true``); web: a ``complete``
            event with ``metadata.from = "staff"`` is committed, pushed to an
            open widget (any replica) or replayed on its next resume
            (``delivery: "web"``); WhatsApp / SMS: sent to the customer's thread
            through the outbox, committed with it (``delivery: "whatsapp"`` /
            ``"sms"``). A retried POST with the
            same ``id`` posts nothing twice (``duplicate: true``).
        404 unknown client, malformed id, or no such (or an expired) session
        409 a phone conversation (a live call is transferred, not written into)
        422 empty text; 503 the conversation is busy (retry)
    POST /admin/api/conversations/{id}/release
        200 {"id", "handoff"}: ``resolved`` (the bot answers the next message)

Staff decide bookings that need approval (``booking.approval``;
:mod:`engine.decisions`)::

    GET  /admin/api/approvals?client_id=ID[&state=pending]   newest first
    GET  /admin/api/approvals/{id}
    POST /admin/api/approvals/{id}    {"decision": "approve"|"decline", "note": "..."}
        200 the request as stored (``state``, ``outcome``: booked | slot_taken |
            declined..., ``result``: booking_id, lead_id) + ``duplicate`` and
            ``delivery`` (web: pushed to the widget; phone/WhatsApp: recorded).
            ``note`` is passed on to the customer. Repeating the same decision
            changes nothing (``duplicate: true``).
        404 unknown id; 409 already settled otherwise (another decision, the
        timeout, the customer withdrew): the body's ``approval`` says how;
        503 the conversation is busy (retry)

What became of WhatsApp/SMS replies (:mod:`channels.whatsapp.statuses`)::

    GET /admin/api/calendar/conflicts?client_id=ID   bookings a vendor calendar refused
    GET /admin/api/messages?client_id=ID[&status=failed][&limit=200]
        200 [{"provider", "message_id", "channel", "recipient", "outbox_key",
            "status", "error_code", "error_title", "created_ts", "updated_ts"}]
            most recently updated first; 404 unknown client

Forgetting one person (:meth:`engine.contacts.ContactStore.forget`)::

    DELETE /admin/api/contacts?client_id=ID&phone=%2B14155550134[&email=...]
        200 {"client_id", "deleted": {"contacts", "sessions", "conversations",
            "messages", "leads", "bookings", "call_traces", "outbox"}}: row
            counts (bookings stay, name cleared); a second call deletes nothing
        404 unknown client; 422 neither phone nor email, or a malformed one
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from channels.phone.capacity import CallCapacity
from channels.phone.trace import CallTraces
from channels.whatsapp.statuses import MessageStatus, list_messages
from channels.whatsapp.worker import thread_send_hook
from engine.approvals import ApprovalState, state_after
from engine.bus import ConversationBus
from engine.config import ClientRegistry
from engine.contacts import ContactStore
from engine.db.database import Database
from engine.decisions import Decisions, UnknownApprovalError
from engine.errors import SessionBusyError, UnknownSessionError
from engine.locks import Locks
from engine.messages import CHANNELS
from engine.session import SessionKey, SessionStore
from engine.staff import Staff, TakeoverRefused
from engine.tools import LeadLedger
from engine.tools.conversations import ConversationLog, conversation_id, parse_conversation_id
from gateway.approvals import decide, replay_for

__all__ = ["AdminDeps", "OpsDeps", "admin_router", "ops_router"]


@dataclass(frozen=True, slots=True)
class OpsDeps:
    """What ``/readyz`` checks: the clients, the session store and the locks, and
    this replica's phone lines (their headroom is reported; None: no phone)."""

    registry: ClientRegistry
    store: SessionStore
    locks: Locks
    phone_lines: CallCapacity | None = None


@dataclass(frozen=True, slots=True)
class AdminDeps:
    """What the admin API reads and writes (built by the gateway when it serves)."""

    admin_token: str | None
    """``GATEWAY_ADMIN_TOKEN``; None or empty: the admin API answers 404."""
    registry: ClientRegistry
    db: Database
    """Where the sent messages and the calendar conflicts are read."""
    store: SessionStore
    leads: LeadLedger
    conversations: ConversationLog
    contacts: ContactStore
    staff: Staff
    decisions: Decisions
    bus: ConversationBus
    """Wakes the conversation's open socket after a staff reply or a decision."""
    call_traces: CallTraces
    """The phone channel's traces (live calls here, every replica's finished calls)."""


LEAD_CSV_COLUMNS = (
    "lead_id",
    "created_at",
    "client_id",
    "channel",
    "session_id",
    "status",
    "name",
    "phone",
    "email",
    "service",
    "start",
    "end",
    "booking_id",
    "test",
    "fields",
    "properties",
)
_NUMBERISH = re.compile(r"^[+-]?[\d\s().-]+$")


def _csv_cell(value: object) -> str:
    """A cell's text; a value a spreadsheet would run as a formula gets a leading
    ``'`` (CSV injection), phone numbers (``+1 617...``) excepted."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if text[:1] in ("=", "@", "\t", "\r") or (text[:1] in "+-" and not _NUMBERISH.match(text)):
        return "'" + text
    return text


def leads_csv_text(leads: list[dict[str, object]]) -> str:
    """Lead records (:meth:`LeadRecord.as_json`) as CSV with a header row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LEAD_CSV_COLUMNS)
    for lead in leads:
        writer.writerow([_csv_cell(lead.get(col)) for col in LEAD_CSV_COLUMNS])
    return out.getvalue()


def ops_router(deps: Callable[[], OpsDeps]) -> APIRouter:
    """``/healthz``, ``/readyz``, ``/metrics``."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(channel: Literal["phone"] | None = None) -> JSONResponse:
        """200 when the store and the locks answer and a client is loaded, else 503.

        The body also reports this replica's phone lines: ``"phone": {"live_calls",
        "streaming", "reserved", "max_calls", "headroom", "full"}`` (``max_calls``
        and ``headroom`` null when unlimited).

        A replica whose phone lines are full stays ready (200): readiness gates
        all of its traffic, and a full replica still serves web chat, WhatsApp,
        the admin API and the media streams of the calls it admitted, and still
        answers the voice webhook with the busy line (or the transfer) instead
        of leaving callers to a load balancer error when every replica is full.
        A health check that routes only the voice webhook can ask
        ``/readyz?channel=phone``: 503 also when no line is free, so new calls
        go to replicas with headroom.
        """
        gw = deps()
        phone_lines = gw.phone_lines
        store_ok = await gw.store.ping()
        locks_ok = await gw.locks.ping()
        ready = store_ok and locks_ok and bool(gw.registry.clients)
        body: dict[str, object] = {
            "status": "ready" if ready else "not ready",
            "clients": sorted(gw.registry.clients),
            "client_errors": [str(p) for p in gw.registry.errors],
            "store": {"backend": gw.store.backend, "ok": store_ok},
            "locks": {"backend": gw.locks.backend, "ok": locks_ok},
        }
        if phone_lines is not None:
            lines = phone_lines.snapshot()
            body["phone"] = lines.as_json()
            if channel == "phone" and lines.full:
                ready = False
                body["status"] = "phone lines full"
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _admin_guard(deps: Callable[[], AdminDeps]) -> Callable[..., None]:
    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        _check_token(deps().admin_token, authorization)

    return require_admin


def _check_token(token: str | None, authorization: str | None) -> None:
    if not token:
        raise HTTPException(404, "admin API is off: set GATEWAY_ADMIN_TOKEN to enable it")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


class DecisionBody(BaseModel):
    """``POST /admin/api/approvals/{id}``: the decision, and an optional note
    passed on to the customer ("we have a therapist free at 4 instead")."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "decline"]
    note: str | None = Field(default=None, max_length=500)


class StaffReplyBody(BaseModel):
    """``POST /admin/api/conversations/{id}/reply``: the text, and an optional
    id of the caller's choosing that makes a retried POST harmless."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000)
    id: str | None = Field(default=None, min_length=1, max_length=128)


def admin_router(deps: Callable[[], AdminDeps]) -> APIRouter:
    """``/admin/api/*`` (``deps`` gives the dependencies while serving)."""
    router = APIRouter(prefix="/admin/api", dependencies=[Depends(_admin_guard(deps))])

    def _client(client_id: str) -> AdminDeps:
        gw = deps()
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

    @router.get("/leads.csv")
    async def leads_csv(
        client_id: Annotated[str, Query()],
        include_test: Annotated[bool, Query()] = False,
    ) -> Response:
        """The lead ledger as CSV (one row per lead, oldest first; columns
        :data:`LEAD_CSV_COLUMNS`, ``fields``/``properties`` as JSON)."""
        gw = _client(client_id)
        records = await gw.leads.list_leads(client_id, include_test=include_test)
        return Response(
            leads_csv_text([r.as_json() for r in records]),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{client_id}-leads.csv"'},
        )

    @router.get("/conversations")
    async def conversations(
        client_id: Annotated[str, Query()],
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, object]]:
        records = await _client(client_id).conversations.list(client_id, limit)
        return [r.as_json() for r in records]

    def _conversation(value: str) -> tuple[AdminDeps, SessionKey]:
        key = parse_conversation_id(value)
        if key is None or key.channel not in CHANNELS:
            raise HTTPException(
                404, "conversation ids look like client_id:channel:session_id (see the list)"
            )
        return _client(key.client_id), key

    @router.get("/conversations/{conversation}")
    async def one_conversation(conversation: str) -> dict[str, object]:
        gw, key = _conversation(conversation)
        record = await gw.conversations.get(key)
        if record is None:
            raise HTTPException(404, f"no conversation {conversation!r}")
        return record.as_json()

    @router.post("/conversations/{conversation}/reply")
    async def staff_reply(conversation: str, body: StaffReplyBody) -> dict[str, object]:
        """A staff reply into the conversation (see the module docstring)."""
        gw, key = _conversation(conversation)
        if not body.text.strip():
            raise HTTPException(422, "text must not be blank")
        client = gw.registry.get(key.client_id)
        hook = (
            thread_send_hook(client, key, f"staff:{body.id or uuid.uuid4().hex}")
            if client is not None
            else None
        )
        try:
            result = await gw.staff.reply(
                key.client_id,
                key.channel,
                key.session_id,
                body.text,
                reply_id=body.id,
                replay=replay_for(gw.bus, key),
                on_commit=hook,
            )
        except TakeoverRefused as exc:
            raise HTTPException(409, str(exc)) from exc
        except UnknownSessionError as exc:
            raise HTTPException(
                404, f"no open session for {conversation!r} (unknown or expired)"
            ) from exc
        except SessionBusyError as exc:
            raise HTTPException(
                503, "the conversation is busy; retry", headers={"Retry-After": "1"}
            ) from exc
        if not result.duplicate:
            await gw.bus.publish(str(key))
        return {
            "id": conversation_id(key),
            "handoff": result.state,
            "event_id": result.event_id,
            "duplicate": result.duplicate,
            "delivery": key.channel if key.channel in ("web", "whatsapp", "sms") else "recorded",
        }

    @router.post("/conversations/{conversation}/release")
    async def release(conversation: str) -> dict[str, object]:
        """Hand the conversation back to the bot (``resolved``)."""
        gw, key = _conversation(conversation)
        try:
            state = await gw.staff.release(
                key.client_id, key.channel, key.session_id, replay=replay_for(gw.bus, key)
            )
        except UnknownSessionError as exc:
            raise HTTPException(
                404, f"no open session for {conversation!r} (unknown or expired)"
            ) from exc
        except SessionBusyError as exc:
            raise HTTPException(
                503, "the conversation is busy; retry", headers={"Retry-After": "1"}
            ) from exc
        await gw.bus.publish(str(key))
        return {"id": conversation_id(key), "handoff": state}

    @router.delete("/contacts")
    async def forget_contact(
        client_id: Annotated[str, Query()],
        phone: Annotated[str | None, Query(max_length=40)] = None,
        email: Annotated[str | None, Query(max_length=320)] = None,
    ) -> dict[str, object]:
        """Delete one person's data (see the module docstring)."""
        gw = _client(client_id)
        if phone is None and email is None:
            raise HTTPException(422, "name the person: phone=+E164 and/or email=...")
        if phone is not None and phone.startswith(" "):
            phone = "+" + phone[1:]  # an unencoded "+" arrives as a space
        try:
            report = await gw.contacts.forget(client_id, phone=phone, email=email)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        traces = gw.call_traces
        for key in report.keys:
            gw.store.forget(key)  # this replica's cached copy
            if key.channel == "phone":
                traces.discard(key.session_id)
        return {"client_id": client_id, "deleted": report.counts()}

    @router.get("/approvals")
    async def approvals(
        client_id: Annotated[str, Query()],
        state: Annotated[ApprovalState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, object]]:
        decisions = _client(client_id).decisions
        found = await decisions.approvals.list(client_id=client_id, state=state, limit=limit)
        return [a.as_json() for a in found]

    @router.get("/approvals/{approval_id}")
    async def one_approval(approval_id: str) -> dict[str, object]:
        found = await deps().decisions.approvals.get(approval_id)
        if found is None:
            raise HTTPException(404, f"no approval request {approval_id!r}")
        return found.as_json()

    @router.post("/approvals/{approval_id}")
    async def decide_approval(approval_id: str, body: DecisionBody) -> JSONResponse:
        """Approve or decline a request (see the module docstring)."""
        gw = deps()
        try:
            result = await decide(gw.decisions, gw.bus, approval_id, body.decision, body.note)
        except UnknownApprovalError as exc:
            raise HTTPException(404, str(exc)) from exc
        except SessionBusyError as exc:
            raise HTTPException(
                503, "the conversation is busy; retry", headers={"Retry-After": "1"}
            ) from exc
        found = result.approval
        if found.state != state_after(body.decision):
            detail = f"approval {approval_id} is already {found.state}"
            return JSONResponse({"detail": detail, "approval": found.as_json()}, status_code=409)
        delivery = found.channel if found.channel in ("web", "whatsapp", "sms") else "recorded"
        return JSONResponse(
            {**found.as_json(), "duplicate": result.duplicate, "delivery": delivery}
        )

    @router.get("/calls/{call_sid}")
    async def call_trace(call_sid: str) -> dict[str, object]:
        """Per-turn latency stages and barge-ins of a call, from any replica
        (shape: :meth:`channels.phone.trace.CallTrace.as_json`)."""
        trace = await deps().call_traces.find(call_sid)
        if trace is None:
            raise HTTPException(404, f"no trace of call {call_sid!r}")
        return trace

    @router.get("/messages")
    async def messages(
        client_id: Annotated[str, Query()],
        status: Annotated[MessageStatus | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, object]]:
        """WhatsApp/SMS messages sent, most recently updated first; ``status=failed``
        lists the failed sends (shape: :func:`channels.whatsapp.statuses.list_messages`)."""
        return await list_messages(_client(client_id).db, client_id, status, limit)

    @router.get("/calendar/conflicts")
    async def calendar_conflicts(client_id: Annotated[str, Query()]) -> list[dict[str, object]]:
        """Bookings a vendor calendar refused after the customer was told (status
        ``conflict``, :mod:`providers.calendars`), by start: ``booking_id``,
        ``start``, ``end``, ``service``, ``name``, ``channel``, ``session_id``,
        and the push's outbox ``state`` / ``reason`` (its last error)."""
        from providers.calendars.common import list_conflicts

        return await list_conflicts(_client(client_id).db, client_id)

    return router

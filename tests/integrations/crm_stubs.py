"""Local stubs of the CRM vendors, speaking their documented wire formats, with
fault injection: HubSpot CRM v3, Pipedrive v1, Airtable Web API, and a Standard
Webhooks receiver. Each records every request (method, path, query, headers,
JSON body) and keeps the records a real vendor would (contacts by email, ...).

Faults (``stub.faults``) are consumed one per request before the normal
answer: ``Fault(503)``, ``Fault(429, retry_after="2")``, ``Fault(401)``,
``Fault(hang_s=3)`` (a timeout). ``stub.down = True`` answers 503 to every
request until set back.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from stub_server import StubServer

__all__ = ["AirtableStub", "Fault", "HubspotStub", "PipedriveStub", "Request", "WebhookStub"]


@dataclass(frozen=True, slots=True)
class Fault:
    status: int = 503
    retry_after: str | None = None
    hang_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class CrmStub(StubServer):
    """GET/POST/PATCH/HEAD/OPTIONS through :meth:`answer`, faults first."""

    methods = ("GET", "POST", "PATCH", "HEAD", "OPTIONS")

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.down = False

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = urlsplit(handler.path)
        request = Request(
            method,
            parts.path,
            {k: v[0] for k, v in parse_qs(parts.query).items()},
            {k.lower(): v for k, v in handler.headers.items()},
            body,
            raw,
            time.time(),
        )
        with self.lock:
            self.requests.append(request)
            fault = self.faults.pop(0) if self.faults else None
            down = self.down
        if fault is None and down:
            fault = Fault(503)
        if fault is not None:
            if fault.hang_s:
                time.sleep(fault.hang_s)
            answer = self.error(fault.status)
            if fault.retry_after is not None:
                answer.headers["Retry-After"] = fault.retry_after
        else:
            with self.lock:
                answer = self.answer(request)
        data = b"" if answer.body is None else json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(0 if method == "HEAD" else len(data)))
        for k, v in answer.headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(data)

    def answer(self, request: Request) -> Answer:
        raise NotImplementedError

    def error(self, status: int) -> Answer:
        return Answer(status, {"message": f"stub error {status}"})

    def seen(self, method: str, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]


class HubspotStub(CrmStub):
    """CRM v3 contacts: batch upsert by email, create, search, patch, list.
    Auth ``Authorization: Bearer <token>``; errors ``{"status": "error",
    "message", "correlationId", "category"}``."""

    def __init__(self, token: str, *, batch_upsert: bool = True) -> None:
        super().__init__()
        self.token = token
        self.batch_upsert = batch_upsert
        self.conflict_names_id = True
        """False: a 409 does not say which contact exists (update by email then)."""
        """False: no batch upsert endpoint (404); create answers 409 for a known
        email and PATCH accepts ``{email}?idProperty=email``."""
        self.contacts: dict[str, dict[str, Any]] = {}  # id -> {"properties": ...}
        self.accepted: list[str] = []  # the email of every upsert input it accepted
        self._next = 1001

    def error(self, status: int) -> Answer:
        category = {
            401: "INVALID_AUTHENTICATION",
            429: "RATE_LIMITS",
            400: "VALIDATION_ERROR",
        }.get(status, "INTERNAL_ERROR")
        message = {
            401: "Authentication credentials not found.",
            429: "You have reached your secondly limit.",
        }.get(status, "internal error")
        return Answer(
            status,
            {
                "status": "error",
                "message": message,
                "correlationId": "c0ffee",
                "category": category,
            },
        )

    def by_email(self, email: str) -> dict[str, Any] | None:
        for contact in self.contacts.values():
            if contact["properties"].get("email") == email:
                return contact
        return None

    def answer(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self.error(401)
        body = request.body or {}
        upsert = "/crm/v3/objects/contacts/batch/upsert"
        if request.method == "POST" and request.path == upsert and self.batch_upsert:
            results = []
            for item in body.get("inputs", []):
                if item.get("idProperty") != "email":
                    return Answer(400, {"status": "error", "message": "idProperty must be email"})
                existing = self.by_email(item["id"])
                props = {**item.get("properties", {}), "email": item["id"]}
                if existing is None:
                    existing = {"id": str(self._next), "properties": {}}
                    self._next += 1
                    self.contacts[existing["id"]] = existing
                    new = True
                else:
                    new = False
                existing["properties"].update(props)
                self.accepted.append(item["id"])
                results.append({**existing, "new": new})
            return Answer(200, {"status": "COMPLETE", "results": results})
        if request.method == "POST" and request.path == "/crm/v3/objects/contacts":
            email = body.get("properties", {}).get("email")
            known = self.by_email(email) if email else None
            if known is not None:
                message = "Contact already exists." + (
                    f" Existing ID: {known['id']}" if self.conflict_names_id else ""
                )
                return Answer(409, {"status": "error", "message": message, "category": "CONFLICT"})
            new_id = str(self._next)
            self._next += 1
            contact: dict[str, Any] | None = {
                "id": new_id,
                "properties": dict(body.get("properties", {})),
            }
            self.contacts[new_id] = contact or {}
            return Answer(201, contact)
        if request.method == "POST" and request.path == "/crm/v3/objects/contacts/search":
            (flt,) = body["filterGroups"][0]["filters"]
            hits = [
                c
                for c in self.contacts.values()
                if c["properties"].get(flt["propertyName"]) == flt["value"]
            ]
            return Answer(200, {"total": len(hits), "results": hits[:1]})
        if request.method == "PATCH" and request.path.startswith("/crm/v3/objects/contacts/"):
            ident = unquote(request.path.rsplit("/", 1)[1])
            contact = (
                self.by_email(ident)
                if request.query.get("idProperty") == "email"
                else self.contacts.get(ident)
            )
            if contact is None:
                return Answer(404, {"status": "error", "message": "resource not found"})
            contact["properties"].update(body.get("properties", {}))
            return Answer(200, contact)
        if request.method == "GET" and request.path == "/crm/v3/objects/contacts":
            return Answer(200, {"results": list(self.contacts.values())[:1]})
        return Answer(404, {"status": "error", "message": "not found"})


class PipedriveStub(CrmStub):
    """v1 persons (search, create), leads (list by person, create), users/me.
    Auth ``?api_token=``; errors ``{"success": false, "error", "errorCode"}``."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.persons: dict[int, dict[str, Any]] = {}
        self.leads: list[dict[str, Any]] = []

    def error(self, status: int) -> Answer:
        text = {401: "unauthorized access"}.get(status, f"error {status}")
        return Answer(status, {"success": False, "error": text, "errorCode": status})

    def answer(self, request: Request) -> Answer:
        if request.query.get("api_token") != self.token:
            return self.error(401)
        body = request.body or {}
        if request.method == "GET" and request.path == "/v1/users/me":
            return Answer(200, {"success": True, "data": {"id": 1, "name": "Owner"}})
        if request.method == "GET" and request.path == "/v1/persons/search":
            field_name, term = request.query.get("fields"), request.query.get("term")
            items = [
                {"result_score": 1.0, "item": {"id": pid, "name": p["name"]}}
                for pid, p in self.persons.items()
                if any(e["value"] == term for e in p.get(field_name or "", []))
            ]
            return Answer(200, {"success": True, "data": {"items": items[:1]}})
        if request.method == "POST" and request.path == "/v1/persons":
            pid = len(self.persons) + 1
            self.persons[pid] = {**body, "id": pid}
            return Answer(201, {"success": True, "data": {"id": pid, "name": body.get("name")}})
        if request.method == "GET" and request.path == "/v1/leads":
            pid = int(request.query.get("person_id", "0"))
            mine = [lead for lead in self.leads if lead["person_id"] == pid]
            return Answer(200, {"success": True, "data": mine})
        if request.method == "POST" and request.path == "/v1/leads":
            if "title" not in body or "person_id" not in body:
                return Answer(400, {"success": False, "error": "title is required"})
            lead = {**body, "id": f"lead-{len(self.leads) + 1}"}
            self.leads.append(lead)
            return Answer(201, {"success": True, "data": lead})
        return Answer(404, {"success": False, "error": "not found"})


class AirtableStub(CrmStub):
    """Web API records upsert (``PATCH /v0/{base}/{table}`` with ``performUpsert``)
    and the metadata API's table list. Auth ``Authorization: Bearer``; errors
    ``{"error": {"type", "message"}}``."""

    def __init__(self, token: str, base_id: str, table: str, fields: list[str]) -> None:
        super().__init__()
        self.token, self.base_id, self.table, self.fields = token, base_id, table, fields
        self.records: list[dict[str, Any]] = []

    def error(self, status: int) -> Answer:
        kind = {401: "AUTHENTICATION_REQUIRED", 429: "RATE_LIMIT_REACHED"}.get(
            status, "SERVER_ERROR"
        )
        return Answer(status, {"error": {"type": kind, "message": f"stub {status}"}})

    def answer(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self.error(401)
        if request.method == "GET" and request.path == f"/v0/meta/bases/{self.base_id}/tables":
            fields = [
                {"id": f"fld{i}", "name": n, "type": "singleLineText"}
                for i, n in enumerate(self.fields)
            ]
            return Answer(200, {"tables": [{"id": "tbl1", "name": self.table, "fields": fields}]})
        if request.method == "PATCH" and request.path == f"/v0/{self.base_id}/{self.table}":
            body = request.body or {}
            merge = body.get("performUpsert", {}).get("fieldsToMergeOn", [])
            if not merge or len(body.get("records", [])) > 10:
                return Answer(
                    422, {"error": {"type": "INVALID_REQUEST_UNKNOWN", "message": "bad upsert"}}
                )
            created, updated = [], []
            for rec in body["records"]:
                values = rec["fields"]
                unknown = [k for k in values if k not in self.fields]
                if unknown:
                    return Answer(
                        422,
                        {
                            "error": {
                                "type": "UNKNOWN_FIELD_NAME",
                                "message": f"Unknown field name: {unknown[0]!r}",
                            }
                        },
                    )
                hit = next(
                    (
                        r
                        for r in self.records
                        if all(r["fields"].get(m) == values.get(m) for m in merge)
                    ),
                    None,
                )
                if hit is None:
                    hit = {"id": f"rec{len(self.records) + 1}", "fields": {}}
                    self.records.append(hit)
                    created.append(hit["id"])
                else:
                    updated.append(hit["id"])
                hit["fields"].update(values)
            return Answer(
                200, {"records": self.records, "createdRecords": created, "updatedRecords": updated}
            )
        return Answer(404, {"error": "NOT_FOUND"})


class WebhookStub(CrmStub):
    """A receiver: 204 to every POST (after the faults); HEAD answers 405."""

    def answer(self, request: Request) -> Answer:
        if request.method == "POST":
            return Answer(204)
        return Answer(405)

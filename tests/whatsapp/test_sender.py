"""Sending WhatsApp and SMS replies (``channels.whatsapp.sender``) and tracking
what became of them (``channels.whatsapp.statuses``).

Rows go through the real :class:`~engine.outbox.OutboxWorker` (``run_once``, a
fake clock shared by the outbox and the deliverers) to local stubs of Twilio's
Messages API and Meta's Graph API (``vendor_stubs``), over real HTTP. Every
test runs on SQLite and on PostgreSQL (the ``db`` fixture).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fakes import FakeClock
from fastapi import FastAPI
from whatsapp.vendor_stubs import MetaGraphStub, TwilioMessagingStub

from channels.whatsapp.models import StatusUpdate
from channels.whatsapp.sender import (
    MetaMessageDeliverer,
    MetaReadDeliverer,
    TwilioMessageDeliverer,
)
from channels.whatsapp.statuses import list_messages, record_sent, record_status
from engine.config import ClientConfig, ClientRegistry
from engine.db.database import Database
from engine.db.fast import Tx
from engine.outbox import Deliverer, Outbox, OutboxItem, OutboxRow, OutboxWorker, WorkerOptions
from engine.payloads import parse_payload

T0 = 1_800_000_000.0
CLIENT = "spa-del-sol"
CUSTOMER = "+14155550134"
ACCOUNT, TOKEN = "AC" + "1" * 32, "twilio-token"
WA_FROM = "whatsapp:+14155550100"
SMS_FROM = "+14155550111"
META_TOKEN, NUMBER_ID = "EAAG-meta-token", "106540352242922"
CONTENT_SID = "HX" + "a" * 32
PUBLIC = "https://gw.example.com"
SECRET_TEXT = "Your massage is booked for Tuesday at 4 pm, Ana"


def client_config(*, template: bool = True, twilio_token: str = TOKEN) -> ClientConfig:
    whatsapp: dict[str, Any] = {
        "twilio": {"account_sid": ACCOUNT, "auth_token": twilio_token, "from": WA_FROM},
        "meta": {"access_token": META_TOKEN, "phone_number_id": NUMBER_ID},
    }
    if template:
        whatsapp["template"] = {"content_sid": CONTENT_SID, "name": "reply_later", "language": "es"}
    return ClientConfig.model_validate(
        {
            "client_id": CLIENT,
            "name": "Spa del Sol",
            "timezone": "Europe/Madrid",
            "channels": {
                "whatsapp": whatsapp,
                "phone": {
                    "twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN, "from": SMS_FROM}
                },
            },
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def outbox(db: Database, clock: FakeClock) -> Outbox:
    return Outbox(db, clock=clock)


@pytest.fixture
def twilio() -> Iterator[TwilioMessagingStub]:
    with TwilioMessagingStub({ACCOUNT: TOKEN}) as stub:
        yield stub


@pytest.fixture
def meta() -> Iterator[MetaGraphStub]:
    with MetaGraphStub({META_TOKEN}) as stub:
        yield stub


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def registry() -> ClientRegistry:
    return ClientRegistry(clients={CLIENT: client_config()})


@pytest.fixture
def deliverers(
    registry: ClientRegistry,
    http: httpx.AsyncClient,
    db: Database,
    clock: FakeClock,
    twilio: TwilioMessagingStub,
    meta: MetaGraphStub,
) -> list[Deliverer]:
    return [
        TwilioMessageDeliverer(
            registry, http, db, base_url=twilio.url, public_url=PUBLIC + "/", clock=clock
        ),
        MetaMessageDeliverer(registry, http, db, base_url=meta.url, clock=clock),
        MetaReadDeliverer(registry, http, base_url=meta.url, clock=clock),
    ]


@pytest.fixture
def worker(outbox: Outbox, deliverers: list[Deliverer]) -> OutboxWorker:
    options = WorkerOptions(base_backoff_s=2.0, max_backoff_s=60.0, max_attempts=5)
    return OutboxWorker(outbox, deliverers, options, rng=random.Random(0))


async def enqueue(outbox: Outbox, kind: str, key: str, **payload: object) -> OutboxRow:
    async def body(tx: Tx) -> int:
        return await outbox.enqueue_in(tx, [OutboxItem(CLIENT, key, parse_payload(kind, payload))])

    assert await outbox.db.fast.transaction(body) == 1
    (row,) = [r for r in await outbox.list() if r.key == key]
    return row


async def inbound(db: Database, at: float, sender: str = CUSTOMER) -> None:
    """The customer's last WhatsApp message arrived at ``at`` (epoch seconds)."""

    async def body(tx: Tx) -> int:
        return await tx.execute(
            "INSERT INTO messaging_threads (client_id, channel, sender, provider,"
            " last_inbound_ts, updated_ts) VALUES ($1, 'whatsapp', $2, 'twilio', $3, $3)",
            CLIENT,
            sender,
            at,
        )

    await db.fast.transaction(body)


async def settle(worker: OutboxWorker, row: OutboxRow) -> OutboxRow:
    """One worker pass; the row as it settled."""
    assert await worker.run_once() == 1
    found = await worker.outbox.get(row.id)
    assert found is not None
    return found


async def sent(db: Database) -> dict[str, dict[str, object]]:
    """Recorded outbound messages by ``outbox_key``."""
    return {str(m["outbox_key"]): m for m in await list_messages(db, CLIENT)}


def twilio_parts(*bodies: str) -> list[dict[str, str]]:
    return [{"To": f"whatsapp:{CUSTOMER}", "From": WA_FROM, "Body": b} for b in bodies]


def meta_parts(*bodies: str) -> list[dict[str, object]]:
    return [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": CUSTOMER.lstrip("+"),
            "type": "text",
            "text": {"body": b},
        }
        for b in bodies
    ]


# -- Twilio --------------------------------------------------------------------------------


async def test_twilio_whatsapp_parts_are_sent_in_order_and_recorded(
    db: Database, outbox: Outbox, worker: OutboxWorker, twilio: TwilioMessagingStub
) -> None:
    await inbound(db, T0 - 3600)
    parts = [{"Body": "Part one"}, {"Body": "Part two"}]  # no To/From: filled in
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-1:reply",
        channel="whatsapp",
        to=CUSTOMER,
        parts=parts,
        text="Part one Part two",
    )

    assert (await settle(worker, row)).state == "delivered"

    assert [m.form["Body"] for m in twilio.messages] == ["Part one", "Part two"]
    for request in twilio.requests:
        assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        assert request.auth == (ACCOUNT, TOKEN)
        assert request.field("To") == f"whatsapp:{CUSTOMER}"
        assert request.field("From") == WA_FROM
        assert request.field("StatusCallback") == f"{PUBLIC}/twilio/status/{CLIENT}"
    recorded = await sent(db)
    assert set(recorded) == {"turn-1:reply#0", "turn-1:reply#1"}
    for index, message in enumerate(twilio.messages):
        got = recorded[f"turn-1:reply#{index}"]
        assert (got["provider"], got["message_id"], got["status"]) == (
            "twilio",
            message.sid,
            "queued",
        )
        assert (got["channel"], got["recipient"]) == ("whatsapp", CUSTOMER)


async def test_sms_uses_the_phone_account_and_has_no_window(
    db: Database, outbox: Outbox, worker: OutboxWorker, twilio: TwilioMessagingStub
) -> None:
    # No messaging thread at all: WhatsApp would need the template, SMS does not.
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-2:reply",
        channel="sms",
        to=CUSTOMER,
        parts=[{"Body": "See you soon"}],
        text="See you soon",
    )

    assert (await settle(worker, row)).state == "delivered"

    (request,) = twilio.requests
    assert (request.field("To"), request.field("From")) == (CUSTOMER, SMS_FROM)
    assert request.field("ContentSid") is None
    assert (await sent(db))["turn-2:reply#0"]["channel"] == "sms"


async def test_a_partial_send_resumes_without_resending_what_went(
    db: Database,
    outbox: Outbox,
    worker: OutboxWorker,
    twilio: TwilioMessagingStub,
    clock: FakeClock,
) -> None:
    await inbound(db, T0 - 60)
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-3:reply",
        channel="whatsapp",
        to=CUSTOMER,
        parts=twilio_parts("one", "two", "three"),
        text="…",
    )
    twilio.pass_next(1)
    twilio.fail_next(500, code=20500)

    failed = await settle(worker, row)
    assert failed.state == "pending"
    assert failed.last_error is not None and "HTTP 500" in failed.last_error
    assert set(await sent(db)) == {"turn-3:reply#0"}

    clock.now = failed.next_attempt_ts
    assert (await settle(worker, row)).state == "delivered"

    assert [m.form["Body"] for m in twilio.messages] == ["one", "two", "three"]
    assert [r.field("Body") for r in twilio.requests] == ["one", "two", "two", "three"]
    assert set(await sent(db)) == {f"turn-3:reply#{i}" for i in range(3)}

    # Delivered again later (the delivered mark was lost), the window closed meanwhile:
    # nothing is sent, not even the template.
    clock.advance(2 * 24 * 3600)
    await worker.deliverers["message.twilio"].deliver(failed)
    assert len(twilio.requests) == 4


async def test_429_is_retried_after_retry_after(
    db: Database,
    outbox: Outbox,
    worker: OutboxWorker,
    twilio: TwilioMessagingStub,
    clock: FakeClock,
) -> None:
    await inbound(db, T0 - 60)
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-4:reply",
        channel="whatsapp",
        to=CUSTOMER,
        parts=twilio_parts("hi"),
        text="hi",
    )
    twilio.fail_next(429, code=20429, message="Too Many Requests", retry_after="30")

    waiting = await settle(worker, row)
    assert waiting.state == "pending"
    assert waiting.next_attempt_ts >= T0 + 30
    assert waiting.last_error is not None and "20429" in waiting.last_error

    clock.now = T0 + 29
    assert await worker.run_once() == 0
    clock.now = waiting.next_attempt_ts
    assert (await settle(worker, row)).state == "delivered"
    assert len(twilio.messages) == 1


async def test_bad_credentials_dead_letter_with_the_reason(
    db: Database,
    outbox: Outbox,
    registry: ClientRegistry,
    worker: OutboxWorker,
    twilio: TwilioMessagingStub,
) -> None:
    registry.clients[CLIENT] = client_config(twilio_token="wrong")
    await inbound(db, T0 - 60)
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-5:reply",
        channel="whatsapp",
        to=CUSTOMER,
        parts=twilio_parts(SECRET_TEXT),
        text=SECRET_TEXT,
    )

    dead = await settle(worker, row)

    assert dead.state == "dead" and dead.attempts == 1
    assert dead.last_error is not None
    assert "HTTP 401" in dead.last_error and "20003" in dead.last_error
    assert "channels.whatsapp.twilio.account_sid / auth_token" in dead.last_error
    assert SECRET_TEXT not in dead.last_error and CUSTOMER not in dead.last_error
    assert await sent(db) == {}


async def test_vendor_messages_quoting_numbers_are_masked(
    db: Database, outbox: Outbox, worker: OutboxWorker, twilio: TwilioMessagingStub
) -> None:
    await inbound(db, T0 - 60)
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-6:reply",
        channel="whatsapp",
        to=CUSTOMER,
        parts=twilio_parts("hi"),
        text="hi",
    )
    twilio.fail_next(400, code=21211, message=f"The 'To' number {CUSTOMER} is not valid.")

    dead = await settle(worker, row)

    assert dead.state == "dead"
    assert dead.last_error is not None and "21211" in dead.last_error
    assert CUSTOMER not in dead.last_error and "<number>" in dead.last_error


async def test_outside_the_window_twilio_sends_the_template(
    db: Database, outbox: Outbox, worker: OutboxWorker, twilio: TwilioMessagingStub
) -> None:
    await inbound(db, T0 - 25 * 3600)
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-7:reply",
        channel="whatsapp",
        to=CUSTOMER,
        parts=twilio_parts("one", "two"),
        text=SECRET_TEXT,
    )

    assert (await settle(worker, row)).state == "delivered"

    (request,) = twilio.requests
    assert request.field("ContentSid") == CONTENT_SID
    assert json.loads(request.field("ContentVariables") or "{}") == {"1": SECRET_TEXT}
    assert (request.field("To"), request.field("From")) == (f"whatsapp:{CUSTOMER}", WA_FROM)
    assert request.field("Body") is None
    assert set(await sent(db)) == {"turn-7:reply#template"}

    # Delivered again (the delivered mark was lost): the template is not sent twice.
    await worker.deliverers["message.twilio"].deliver(row)
    assert len(twilio.requests) == 1


async def test_outside_the_window_without_a_template_is_dead_not_dropped(
    db: Database,
    outbox: Outbox,
    registry: ClientRegistry,
    worker: OutboxWorker,
    twilio: TwilioMessagingStub,
) -> None:
    registry.clients[CLIENT] = client_config(template=False)
    # No thread row: the customer never wrote (or too long ago).
    row = await enqueue(
        outbox,
        "message.twilio",
        "turn-8:reply",
        channel="whatsapp",
        to=CUSTOMER,
        parts=twilio_parts(SECRET_TEXT),
        text=SECRET_TEXT,
    )

    dead = await settle(worker, row)

    assert dead.state == "dead"
    assert dead.last_error is not None
    assert "outside the 24-hour window and no template configured" in dead.last_error
    assert SECRET_TEXT not in dead.last_error
    assert twilio.requests == []


# -- Meta ----------------------------------------------------------------------------------


async def test_meta_parts_are_sent_with_the_bearer_token_and_recorded(
    db: Database, outbox: Outbox, worker: OutboxWorker, meta: MetaGraphStub
) -> None:
    await inbound(db, T0 - 60)
    row = await enqueue(
        outbox,
        "message.meta",
        "turn-9:reply",
        to=CUSTOMER,
        parts=meta_parts("one", "two"),
        text="one two",
    )

    assert (await settle(worker, row)).state == "delivered"

    assert [r.path for r in meta.requests] == [f"/v21.0/{NUMBER_ID}/messages"] * 2
    assert {r.bearer for r in meta.requests} == {META_TOKEN}
    assert [m.body["text"]["body"] for m in meta.messages] == ["one", "two"]
    recorded = await sent(db)
    assert [recorded[f"turn-9:reply#{i}"]["message_id"] for i in range(2)] == [
        m.wamid for m in meta.messages
    ]
    assert {m["provider"] for m in recorded.values()} == {"meta"}


async def test_meta_131047_falls_back_to_the_template(
    db: Database, outbox: Outbox, worker: OutboxWorker, meta: MetaGraphStub
) -> None:
    # Our thread says the window is open, Meta knows better (clock skew, a lost webhook).
    await inbound(db, T0 - 60)
    meta.closed_windows.add(CUSTOMER)
    row = await enqueue(
        outbox,
        "message.meta",
        "turn-10:reply",
        to=CUSTOMER,
        parts=meta_parts("one"),
        text=SECRET_TEXT,
    )

    assert (await settle(worker, row)).state == "delivered"

    (template,) = meta.messages
    assert template.body["type"] == "template"
    assert template.body["template"]["name"] == "reply_later"
    assert SECRET_TEXT in json.dumps(template.body)
    assert set(await sent(db)) == {"turn-10:reply#template"}


async def test_meta_131047_without_a_template_is_dead(
    db: Database,
    outbox: Outbox,
    registry: ClientRegistry,
    worker: OutboxWorker,
    meta: MetaGraphStub,
) -> None:
    registry.clients[CLIENT] = client_config(template=False)
    await inbound(db, T0 - 60)
    meta.closed_windows.add(CUSTOMER)
    row = await enqueue(
        outbox, "message.meta", "turn-11:reply", to=CUSTOMER, parts=meta_parts("one"), text="one"
    )

    dead = await settle(worker, row)

    assert dead.state == "dead"
    assert dead.last_error is not None
    assert "outside the 24-hour window and no template configured" in dead.last_error


@pytest.mark.parametrize(
    ("status", "code", "retry_after_s"),
    [(400, 131056, 6.0), (400, 130429, None), (429, 80007, None), (503, 2, None)],
)
async def test_meta_throttling_and_outages_are_retried(
    db: Database,
    outbox: Outbox,
    worker: OutboxWorker,
    meta: MetaGraphStub,
    clock: FakeClock,
    status: int,
    code: int,
    retry_after_s: float | None,
) -> None:
    await inbound(db, T0 - 60)
    row = await enqueue(
        outbox, "message.meta", "turn-12:reply", to=CUSTOMER, parts=meta_parts("one"), text="one"
    )
    meta.fail_next(status, code=code, message="Rate limit hit")

    waiting = await settle(worker, row)

    assert waiting.state == "pending"
    assert waiting.last_error is not None and f"Meta error {code}" in waiting.last_error
    if retry_after_s is not None:
        assert waiting.next_attempt_ts >= T0 + retry_after_s
    clock.now = waiting.next_attempt_ts
    assert (await settle(worker, row)).state == "delivered"


async def test_meta_expired_token_is_dead(
    db: Database, outbox: Outbox, worker: OutboxWorker, meta: MetaGraphStub
) -> None:
    meta.tokens.clear()
    await inbound(db, T0 - 60)
    row = await enqueue(
        outbox, "message.meta", "turn-13:reply", to=CUSTOMER, parts=meta_parts("one"), text="one"
    )

    dead = await settle(worker, row)

    assert dead.state == "dead"
    assert dead.last_error is not None and "Meta error 190" in dead.last_error
    assert "channels.whatsapp.meta.access_token" in dead.last_error


async def test_read_receipts_are_best_effort(
    outbox: Outbox, worker: OutboxWorker, meta: MetaGraphStub, clock: FakeClock
) -> None:
    row = await enqueue(outbox, "read.meta", "in-1:read", message_id="wamid.IN1")
    assert (await settle(worker, row)).state == "delivered"
    (read,) = meta.reads
    assert (read["status"], read["message_id"]) == ("read", "wamid.IN1")
    assert read.get("typing_indicator") == {"type": "text"}

    meta.fail_next(500)
    failing = await enqueue(outbox, "read.meta", "in-2:read", message_id="wamid.IN2")
    dropped = await settle(worker, failing)
    assert dropped.state == "delivered"  # logged and dropped: one attempt, no dead letter
    assert dropped.attempts == 1 and len(meta.requests) == 2

    clock.advance(120)  # the indicator would be stale: mark read only
    late = await enqueue(outbox, "read.meta", "in-3:read", message_id="wamid.IN3")
    clock.advance(60)
    assert (await settle(worker, late)).state == "delivered"
    assert "typing_indicator" not in meta.reads[-1]


# -- statuses ------------------------------------------------------------------------------


def update(status: str, **fields: Any) -> StatusUpdate:
    return StatusUpdate("twilio", CLIENT, "SM1", status, **fields)  # type: ignore[arg-type]


async def test_statuses_never_go_backwards_and_failed_wins(db: Database) -> None:
    await record_sent(
        db,
        provider="twilio",
        message_id="SM1",
        client_id=CLIENT,
        channel="whatsapp",
        recipient=CUSTOMER,
        outbox_key="k#0",
        ts=T0,
    )

    async def status() -> dict[str, object]:
        (found,) = await list_messages(db, CLIENT)
        return found

    assert await record_status(db, update("delivered"), now=T0 + 2)
    assert not await record_status(db, update("sent"), now=T0 + 3)  # late and out of order
    assert (await status())["status"] == "delivered"
    assert await record_status(db, update("read"), now=T0 + 4)
    assert not await record_status(db, update("delivered"), now=T0 + 5)
    assert await record_status(
        db, update("failed", error_code="63016", error_title="Outside window"), now=T0 + 6
    )
    assert not await record_status(db, update("read"), now=T0 + 7)
    assert not await record_status(db, update("failed", error_code="30008"), now=T0 + 8)
    found = await status()
    assert (found["status"], found["error_code"], found["error_title"]) == (
        "failed",
        "63016",
        "Outside window",
    )
    assert found["updated_ts"] == T0 + 6


async def test_a_status_before_the_send_is_recorded_is_kept(db: Database) -> None:
    assert await record_status(db, update("delivered", recipient=CUSTOMER), now=T0 + 1)
    await record_sent(
        db,
        provider="twilio",
        message_id="SM1",
        client_id=CLIENT,
        channel="sms",
        recipient=CUSTOMER,
        outbox_key="k#0",
        ts=T0,
    )

    (found,) = await list_messages(db, CLIENT)
    assert (found["status"], found["outbox_key"], found["channel"]) == ("delivered", "k#0", "sms")


async def test_the_admin_api_lists_failed_sends(db: Database) -> None:
    from gateway.routes import admin_router

    for sid, status in (("SM1", "failed"), ("SM2", "delivered"), ("SM3", "failed")):
        await record_sent(
            db,
            provider="twilio",
            message_id=sid,
            client_id=CLIENT,
            channel="whatsapp",
            recipient=CUSTOMER,
            outbox_key=f"{sid}#0",
            ts=T0,
        )
        await record_status(
            db,
            StatusUpdate("twilio", CLIENT, sid, status, error_code="63016"),  # type: ignore[arg-type]
            now=T0 + int(sid[2:]),
        )
    # Only what GET /admin/api/messages reads (AdminDeps' other fields are unused here).
    deps = SimpleNamespace(
        admin_token="admin-token",
        registry=ClientRegistry(clients={CLIENT: client_config()}),
        db=db,
    )
    app = FastAPI()
    app.include_router(admin_router(lambda: deps))  # type: ignore[arg-type,return-value]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
        headers = {"Authorization": "Bearer admin-token"}
        listed = await api.get(
            "/admin/api/messages", params={"client_id": CLIENT, "status": "failed"}, headers=headers
        )
        assert listed.status_code == 200, listed.text
        assert [(m["message_id"], m["error_code"]) for m in listed.json()] == [
            ("SM3", "63016"),
            ("SM1", "63016"),
        ]
        assert (
            await api.get("/admin/api/messages", params={"client_id": CLIENT})
        ).status_code == 401
        unknown = await api.get(
            "/admin/api/messages", params={"client_id": "nope"}, headers=headers
        )
        assert unknown.status_code == 404
        bad = await api.get(
            "/admin/api/messages", params={"client_id": CLIENT, "status": "lost"}, headers=headers
        )
        assert bad.status_code == 422


# -- the stubs' media endpoints (voice notes are downloaded from them) ----------------------


def test_the_stubs_serve_media_as_the_vendors_do(
    twilio: TwilioMessagingStub, meta: MetaGraphStub
) -> None:
    note = b"OggS\x00fake-voice-note"
    with httpx.Client() as http:
        url = twilio.add_media(note, "audio/ogg", account_sid=ACCOUNT)
        assert http.get(url).status_code == 401
        got = http.get(url, auth=(ACCOUNT, TOKEN))
        assert (got.content, got.headers["content-type"]) == (note, "audio/ogg")
        moved = twilio.add_media(note, "audio/ogg", account_sid=ACCOUNT, redirect=True)
        followed = http.get(moved, auth=(ACCOUNT, TOKEN), follow_redirects=True)
        assert followed.content == note and followed.history[0].status_code == 307

        media_id = meta.add_media(note, "audio/ogg; codecs=opus")
        bearer = {"Authorization": f"Bearer {META_TOKEN}"}
        info = http.get(f"{meta.url}/v21.0/{media_id}", headers=bearer).json()
        assert (info["id"], info["mime_type"], info["file_size"]) == (
            media_id,
            "audio/ogg; codecs=opus",
            len(note),
        )
        assert http.get(info["url"]).status_code == 401
        assert http.get(info["url"], headers=bearer).content == note

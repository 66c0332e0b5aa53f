"""Web chat conversations are durable and bounded (regressions found by trying it).

- After Redis lost its data (or restarted), a conversation restarted silently:
  sessions now live in the database; Redis only holds locks.
- The first message after a quick Redis restart failed: a stale pooled
  connection is retried once.
- A session that expired under a live socket was continued as if nothing
  happened: the socket is told ``unknown_session`` and moves to a new session.
- One source could open unlimited new sessions: new conversations per source
  address are rate limited.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import sqlalchemy as sa

from .chat_client import open_chat

BOOK = "I'd like to book a massage"
CLIENT = "spa-del-sol"


def chat_url(gw: Any) -> str:
    return f"{gw.ws_url}/web/chat/{CLIENT}"


@pytest.mark.redis
async def test_a_conversation_survives_redis_losing_its_data_and_restarting(
    running_gateway: Any, redis_url: str
) -> None:
    with running_gateway(REDIS_URL=redis_url) as gw:
        async with open_chat(chat_url(gw)) as chat:
            await chat.session()
            await chat.ask(BOOK, "m-1")
            await chat.ask("Maria Lopez", "m-2")
            admin = redis.Redis.from_url(redis_url)
            try:
                admin.flushdb()  # Redis lost everything...
                for client in admin.client_list():  # ...and dropped every connection
                    if client.get("name") != "admin" and int(client["id"]) != admin.client_id():
                        admin.client_kill_filter(_id=client["id"])
            finally:
                admin.close()
            reply = await chat.ask("415 555 0134", "m-3")
    slots = reply[-1]["metadata"]["slots"]
    assert (slots["name"], slots["phone"]) == ("Maria Lopez", "+14155550134")


async def test_a_session_that_expired_under_a_live_socket_is_announced(
    running_gateway: Any,
) -> None:
    with running_gateway() as gw:
        db = gw.app.state.gateway.db
        async with open_chat(chat_url(gw)) as chat:
            old = (await chat.session())["session_id"]
            await chat.ask(BOOK, "m-1")
            async with db.write() as conn:  # its TTL ran out
                await conn.execute(sa.text("UPDATE sessions SET expires_ts = 0"))
            await chat.message("Maria Lopez", "m-2")
            error = await chat.recv()
            assert error["type"] == "error" and error["code"] == "unknown_session"
            new = await chat.session()
            assert new["session_id"] != old and new["resumed"] is False
            reply = await chat.reply()  # the message runs in the new session
            assert reply[-1]["reply_to"] == "m-2"


async def test_new_sessions_from_one_source_are_rate_limited(running_gateway: Any) -> None:
    with running_gateway(GATEWAY_WEB_NEW_SESSIONS_PER_MIN=2) as gw:  # burst 4
        answered = refused = 0
        for n in range(6):
            async with open_chat(chat_url(gw)) as chat:
                await chat.session()
                await chat.message("hello", f"m-{n}")
                event = await chat.recv()
                if event["type"] == "error":
                    assert event["code"] == "rate_limited", event
                    assert event["reply_to"] == f"m-{n}"
                    refused += 1
                else:
                    answered += 1
        # An existing conversation is never refused by this limit.
        async with open_chat(chat_url(gw)) as chat:
            await chat.session()
            sessions = gw.app.state.gateway.conversations
            known = (await sessions.list(CLIENT))[0].session_id
        async with open_chat(chat_url(gw)) as chat:
            await chat.resume(known, 0)
            await chat.reply()
            assert (await chat.ask("Maria Lopez", "m-x"))[-1]["reply_to"] == "m-x"
    assert (answered, refused) == (4, 2)

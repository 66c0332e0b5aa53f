"""Two gateway processes on one PostgreSQL and one Redis, answering WhatsApp:
the one that takes a message is killed with SIGKILL inside the turn's commit;
the survivor picks the message up once its lease runs out and answers it —
once. Then a retry storm of that message on both replicas sends nothing more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator
from whatsapp.vendor_stubs import TwilioMessagingStub

from .procs import GatewayProcess

CLIENT = "spa-del-sol"
NOW = "2026-12-07T17:00:00+00:00"
PUBLIC = "https://gw.example.test"
SID, TOKEN = "AC" + "2" * 32, "twilio-auth-token"
ANA, BUSINESS = "+14155550142", "+14155550123"

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def twilio() -> Iterator[TwilioMessagingStub]:
    stub = TwilioMessagingStub({SID: TOKEN}).start()
    try:
        yield stub
    finally:
        stub.stop()


def _form(body: str, message_sid: str) -> dict[str, str]:
    return {
        "MessageSid": message_sid,
        "AccountSid": SID,
        "From": f"whatsapp:{ANA}",
        "To": f"whatsapp:{BUSINESS}",
        "Body": body,
        "NumMedia": "0",
        "ProfileName": "Ana",
        "WaId": ANA.lstrip("+"),
    }


async def _post(url: str, form: dict[str, str]) -> int:
    path = f"/twilio/whatsapp/{CLIENT}"
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    async with httpx.AsyncClient(base_url=url) as http:
        resp = await http.post(path, data=form, headers={"X-Twilio-Signature": signature})
    return resp.status_code


async def test_a_replica_killed_mid_turn_leaves_the_message_to_the_other_answered_once(
    tmp_path: Path,
    clients_dir: Path,
    redis_url: str,
    postgres_url: str,
    twilio: TwilioMessagingStub,
) -> None:
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    anchor = "  whatsapp:\n    purpose: auto\n"
    config.write_text(text.replace(anchor, anchor + "    burst_window_ms: 0\n"), encoding="utf-8")
    env = {
        "GATEWAY_CLIENTS_DIR": str(clients_dir),
        "GATEWAY_DATA_DIR": str(tmp_path / "unused"),
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "GATEWAY_TEST_NOW": NOW,
        "GATEWAY_PUBLIC_URL": PUBLIC,
        "TWILIO_BASE_URL": twilio.url,
        "SPA_TWILIO_ACCOUNT_SID": SID,
        "SPA_TWILIO_AUTH_TOKEN": TOKEN,
        "GATEWAY_MESSAGING_LEASE_S": "3",
        "GATEWAY_MESSAGING_POLL_S": "0.2",
        "GATEWAY_OUTBOX_POLL_S": "0.2",
    }
    doomed = GatewayProcess(
        {**env, "GATEWAY_TEST_CRASH_AT": "messaging_turn"}, tmp_path / "doomed.log"
    )
    form = _form("I'd like to book a massage", "SM" + "a" * 32)
    try:
        assert await _post(doomed.url, form) == 200  # durable before the answer
        assert doomed.wait_killed() != 0  # killed inside the turn's commit
    finally:
        doomed.stop()
    assert twilio.messages == []  # nothing was sent by the dead replica
    survivor = GatewayProcess(env, tmp_path / "survivor.log")
    other = GatewayProcess(env, tmp_path / "other.log")
    try:
        deadline = time.monotonic() + 30
        while not twilio.messages:
            assert time.monotonic() < deadline, survivor.tail()
            await asyncio.sleep(0.1)
        # Twilio retries the same message on both replicas, at once and later
        codes = await asyncio.gather(
            *(_post(gw.url, form) for gw in (survivor, other, survivor, other))
        )
        assert codes == [200, 200, 200, 200]
        await asyncio.sleep(2.0)
        assert await _post(other.url, form) == 200
        await asyncio.sleep(1.5)
    finally:
        other.stop()
        survivor.stop()
    (reply,) = twilio.messages  # answered exactly once
    assert reply.form["To"] == f"whatsapp:{ANA}"
    assert "book" in reply.form["Body"].lower() or "name" in reply.form["Body"].lower()

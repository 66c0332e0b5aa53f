"""The gateway under uvicorn, its web chat, and Gemini as a local stub speaking
the REST wire format (``testkit.gemini``): a healthy model gets the messages
with the API key and its usage shows in ``/metrics`` and the admin API; a model
failing in every way (500, 429, 503, a hang, malformed bodies, blocked
prompts) still leaves a booking that completes with the right fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from engine.llm import FunctionCall
from testkit.gemini import Behaviour, Blocked, GeminiStub, Hang, HttpError, Malformed, Reply

from .chat_client import open_chat, reply_text

CLIENT = "spa-del-sol"
KEY = "test-gemini-key"
ADMIN = {"Authorization": "Bearer test-admin-token"}
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))

DIALOGUE = [
    "I'd like to book a deep tissue massage",
    "Maria Lopez",
    "415 555 0134",
    "maria@example.com",
    "Friday at 2pm",
    "yes",
]
"""A booking the offline flow understands as typed (what a model failure falls back to)."""


@pytest.fixture
def gemini_clients(clients_dir: Path) -> Path:
    """spa-del-sol on Gemini, with a 0.5 s first-token budget (a hang falls back fast)."""
    config = clients_dir / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "llm:\n  provider: offline                # offline | gemini\n"
    assert old in text
    config.write_text(
        text.replace(
            old, "llm:\n  provider: gemini\n  first_token_s: {default: 0.5, phone: 0.5}\n"
        ),
        encoding="utf-8",
    )
    return clients_dir


def _user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents", [])):
        if content.get("role") == "user":
            for part in content.get("parts", []):
                if part.get("text"):
                    return str(part["text"])
    return ""


def healthy(body: dict[str, Any]) -> Behaviour:
    """A model that understands the dialogue's messages and phrases politely."""
    system = json.dumps(body.get("systemInstruction", {}))
    if body.get("tools"):
        text = _user_text(body)
        slots: dict[str, str] = {}
        if "deep tissue" in text:
            slots["service"] = "Deep Tissue Massage"
        elif "Maria" in text:
            slots["name"] = "Maria Lopez"
        elif "555" in text:
            slots["phone"] = text
        elif "@" in text:
            slots["email"] = text
        elif "Friday" in text:
            slots.update(date="2026-11-27", time="14:00")
        if text == "yes":
            return Reply(calls=(FunctionCall("confirm_booking", {}),))
        return Reply(calls=(FunctionCall("update_booking", slots),))
    gen = body.get("generationConfig", {})
    if gen.get("responseMimeType") == "application/json":
        if "decide who should handle" in system:
            return Reply(text=json.dumps({"purpose": "lead_capture", "confidence": 0.95}), chunks=1)
        return Reply(text=json.dumps({"answer": "", "cited": [], "abstain": True}), chunks=1)
    draft = json.loads(system)["parts"][0]["text"].rsplit("Draft reply: ", 1)[1]
    return Reply(text="Certainly. " + json.loads(draft), chunks=3)


@pytest.fixture
def stub() -> Iterator[GeminiStub]:
    with GeminiStub(api_key=KEY, responder=healthy) as server:
        yield server


async def _book(url: str) -> list[str]:
    replies = []
    async with open_chat(f"{url}/web/chat/{CLIENT}") as chat:
        await chat.session()
        for text in DIALOGUE:
            events = await chat.ask(text)
            assert events[-1]["type"] == "complete"
            replies.append(events[-1]["text"])
            assert reply_text(events) == events[-1]["text"]  # what streamed is what was sent
    return replies


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_healthy_model_gets_every_message_with_the_key_and_its_cost_is_counted(
    running_gateway: Any, gemini_clients: Path, stub: GeminiStub
) -> None:
    with running_gateway(
        GEMINI_API_KEY=KEY, GEMINI_BASE_URL=stub.base_url, clock=lambda: NOW
    ) as gw:
        replies = await _book(gw.ws_url)
        assert all(r.startswith("Certainly.") for r in replies)
        assert "booked" in replies[-1]
        async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http:
            (lead,) = (await http.get("/admin/api/leads", params={"client_id": CLIENT})).json()
            metrics = (await http.get("/metrics")).text
            (conversation,) = (
                await http.get("/admin/api/conversations", params={"client_id": CLIENT})
            ).json()
    assert lead["fields"]["name"] == "Maria Lopez" and lead["fields"]["phone"] == "+14155550134"
    assert lead["start"] == "2026-11-27T14:00:00-08:00"
    assert stub.requests and all(r.api_key == KEY for r in stub.requests)
    assert any(r.method == "streamGenerateContent" for r in stub.requests)
    labels = {"client_id": CLIENT, "model": "gemini-2.5-flash"}
    assert _metric(metrics, "gateway_llm_tokens_total", direction="input", **labels) > 0
    assert _metric(metrics, "gateway_llm_tokens_total", direction="output", **labels) > 0
    assert _metric(metrics, "gateway_llm_cost_usd_total", **labels) > 0
    assert _metric(metrics, "gateway_llm_first_token_seconds_count", client_id=CLIENT) > 0
    usage = conversation["llm_usage"]
    assert usage["input_tokens"] > 0 and usage["calls"] >= len(DIALOGUE)


@pytest.mark.parametrize(
    "failure",
    [
        HttpError(500),
        HttpError(429, message="Resource exhausted", retry_after="1"),
        HttpError(503, message="The model is overloaded."),
        Hang(25.0),
        Malformed(),
        Blocked("SAFETY"),
        Reply(text="Sure, happy to help!", chunks=2),  # prose where a function call was asked
    ],
    ids=["500", "429", "503", "hang", "malformed", "blocked", "prose"],
)
async def test_a_failing_model_still_books_with_the_right_fields(
    running_gateway: Any, gemini_clients: Path, failure: Behaviour
) -> None:
    with (
        GeminiStub(api_key=KEY, default=failure) as stub,
        running_gateway(GEMINI_API_KEY=KEY, GEMINI_BASE_URL=stub.base_url, clock=lambda: NOW) as gw,
    ):
        replies = await _book(gw.ws_url)
        async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as http:
            (lead,) = (await http.get("/admin/api/leads", params={"client_id": CLIENT})).json()
            metrics = (await http.get("/metrics")).text
    assert "booked" in replies[-1]
    assert lead["fields"] == {
        "name": "Maria Lopez",
        "phone": "+14155550134",
        "email": "maria@example.com",
        "service": "Deep Tissue Massage",
        "time": "2026-11-27T14:00:00-08:00",
    }
    assert stub.requests  # the model was tried every turn...
    assert _metric(metrics, "gateway_llm_fallbacks_total", client_id=CLIENT) >= len(DIALOGUE)

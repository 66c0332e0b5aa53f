"""Fixtures for the language-model tests: a Gemini REST stub on a free loopback
port (``testkit.gemini``), a :class:`GeminiModel` pointed at it, and helpers
that build requests and collect streamed answers under loop-time deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from engine.llm.model import LanguageModel
from engine.llm.types import LlmChunk, LlmMessage, LlmRequest
from providers.llm.gemini import GeminiModel
from testkit.gemini import GeminiStub

API_KEY = "test-key-123"


@pytest.fixture
def stub() -> Iterator[GeminiStub]:
    with GeminiStub(API_KEY) as server:
        yield server


@pytest.fixture
async def gemini(stub: GeminiStub) -> AsyncIterator[GeminiModel]:
    model = GeminiModel(API_KEY, "gemini-2.5-flash", base_url=stub.base_url)
    yield model
    await model.aclose()


def ask(text: str = "Can I book a haircut on Monday?", **fields: object) -> LlmRequest:
    """A one-message request; ``fields`` as for LlmRequest."""
    fields.setdefault("system", "You are the receptionist of a hair salon.")
    return LlmRequest(messages=(LlmMessage("user", text),), **fields)  # type: ignore[arg-type]


async def collect(
    model: LanguageModel, request: LlmRequest, *, first_s: float = 3.0, total_s: float = 10.0
) -> list[LlmChunk]:
    """Every chunk of ``model``'s answer, first within ``first_s`` and all within
    ``total_s`` seconds."""
    now = asyncio.get_running_loop().time()
    return [
        chunk
        async for chunk in model.stream(
            request, first_token_by=now + first_s, finish_by=now + total_s
        )
    ]

"""A scripted in-process model for unit tests (not used in production).

:class:`ScriptedModel` answers each call with the next script entry, and
records every request it got. An entry is a reply function
``(request) -> Scripted`` or a :class:`Scripted` value. Wire-level tests use
the Gemini REST stub (``testkit.gemini``) instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.llm.model import LanguageModel
from engine.llm.types import FunctionCall, LlmChunk, LlmError, LlmReason, LlmRequest, Usage

__all__ = ["Scripted", "ScriptedModel", "call", "json_reply", "text_reply"]


@dataclass(frozen=True, slots=True)
class Scripted:
    """One scripted answer: ``chunks`` streamed ``delay_s`` apart after
    ``first_delay_s``; or ``error`` raised after ``first_delay_s``."""

    chunks: tuple[LlmChunk, ...] = ()
    error: LlmError | None = None
    first_delay_s: float = 0.0
    delay_s: float = 0.0


def text_reply(text: str, *, pieces: int = 3, usage: Usage | None = None) -> Scripted:
    """``text`` in about ``pieces`` chunks, usage (default 100 in, 20 out) on the last."""
    step = max(1, len(text) // pieces)
    parts = [text[i : i + step] for i in range(0, len(text), step)] or [""]
    chunks = [LlmChunk(text=p) for p in parts]
    chunks[-1] = LlmChunk(text=parts[-1], usage=usage or Usage(100, 20), finish="STOP")
    return Scripted(tuple(chunks))


def json_reply(value: Mapping[str, Any], *, usage: Usage | None = None) -> Scripted:
    """A structured-output answer: ``value`` as JSON text."""
    return text_reply(json.dumps(value), pieces=1, usage=usage)


def call(name: str, usage: Usage | None = None, **args: Any) -> Scripted:
    """A function-call answer."""
    chunk = LlmChunk(
        calls=(FunctionCall(name, args),), usage=usage or Usage(100, 10), finish="STOP"
    )
    return Scripted((chunk,))


Reply = Scripted | Callable[[LlmRequest], Scripted]


@dataclass
class ScriptedModel(LanguageModel):
    """A model that answers from ``script`` (then ``default``, else an error)."""

    script: list[Reply] = field(default_factory=list)
    default: Reply | None = None
    requests: list[LlmRequest] = field(default_factory=list)
    name: str = "scripted"
    model: str = "gemini-2.5-flash"

    def __hash__(self) -> int:
        return id(self)

    async def _stream_impl(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        self.requests.append(request)
        entry = self.script.pop(0) if self.script else self.default
        if entry is None:
            raise LlmError(self.name, LlmReason.SERVER, "script exhausted", status=500)
        scripted = entry(request) if callable(entry) else entry
        if scripted.first_delay_s:
            await asyncio.sleep(scripted.first_delay_s)
        if scripted.error is not None:
            raise scripted.error
        for i, chunk in enumerate(scripted.chunks):
            if i and scripted.delay_s:
                await asyncio.sleep(scripted.delay_s)
            yield chunk

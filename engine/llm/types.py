"""The language model's vocabulary, vendor-neutral: requests, streamed chunks,
function calls, token usage and the error family.

Agents build an :class:`LlmRequest` and read :class:`LlmChunk` objects; only
a provider module (``providers.llm.gemini``) knows a vendor's field names.
Function declarations' ``parameters`` are JSON Schema objects in the OpenAPI
subset Gemini accepts (``type``, ``properties``, ``required``, ``enum``,
``items``, ``description``, ``nullable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from engine.errors import GatewayError

__all__ = [
    "FunctionCall",
    "FunctionDecl",
    "FunctionResponse",
    "LlmChunk",
    "LlmError",
    "LlmMessage",
    "LlmReason",
    "LlmRequest",
    "Usage",
]

JsonObject = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FunctionDecl:
    """A function the model may call: ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: JsonObject = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The model asks to run ``name`` with ``args`` (not validated yet: the
    caller validates them exactly like typed input). ``id``: the vendor's
    call id when it sends one, echoed in the response."""

    name: str
    args: JsonObject = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class FunctionResponse:
    """What running a :class:`FunctionCall` gave, sent back to the model."""

    name: str
    response: JsonObject
    id: str | None = None


@dataclass(frozen=True, slots=True)
class LlmMessage:
    """One entry of the conversation sent to the model.

    ``role``: ``user`` (the customer, or function responses) or ``model``
    (the assistant's earlier text or function calls)."""

    role: Literal["user", "model"]
    text: str = ""
    calls: tuple[FunctionCall, ...] = ()
    responses: tuple[FunctionResponse, ...] = ()


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """One model call.

    ``system``: the instructions (business facts, rules, tone, the flow's
    state). ``tools``: functions the model may call; ``tool_mode``: ``auto``
    (text or calls), ``any`` (must call one), ``none``. ``response_schema``:
    a JSON Schema the reply must follow (structured output, JSON text).
    ``purpose``: which agent asks (a metrics label, never personal data).
    """

    system: str
    messages: tuple[LlmMessage, ...]
    tools: tuple[FunctionDecl, ...] = ()
    tool_mode: Literal["auto", "any", "none"] = "auto"
    response_schema: JsonObject | None = None
    temperature: float = 0.2
    max_output_tokens: int = 400
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call consumed (per the vendor's usage report)."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True, slots=True)
class LlmChunk:
    """One piece of a streamed answer: text, function calls, and/or the
    usage so far (Gemini reports it cumulatively, the last chunk has the
    total). ``finish``: the vendor's finish reason on the last chunk."""

    text: str = ""
    calls: tuple[FunctionCall, ...] = ()
    usage: Usage | None = None
    finish: str | None = None


class LlmReason(StrEnum):
    """Why a model call gave nothing usable."""

    TIMEOUT = "timeout"
    """No first token within the turn's budget, or not finished in time."""
    RATE_LIMITED = "rate_limited"
    """429 (``retry_after_s`` from ``Retry-After`` when sent)."""
    SERVER = "server"
    """5xx."""
    NETWORK = "network"
    """Connection refused, reset, or cut mid-stream."""
    BLOCKED = "blocked"
    """The prompt or the answer was blocked (``promptFeedback.blockReason``,
    a ``SAFETY`` finish)."""
    MALFORMED = "malformed"
    """The body, or the structured output, was not what was asked for."""
    AUTH = "auth"
    """401/403: a wrong or missing API key."""
    BAD_REQUEST = "bad_request"
    """Any other 4xx."""
    SKIPPED = "skipped"
    """Not tried: the model already failed earlier in this turn."""
    INTERRUPTED = "interrupted"
    """The channel stopped the turn's model work (a barge-in on a call)."""


_RETRYABLE = frozenset({LlmReason.RATE_LIMITED, LlmReason.SERVER, LlmReason.NETWORK})


class LlmError(GatewayError):
    """A model call failed; the offline engine answers the turn instead.

    ``reason``: an :class:`LlmReason`; ``status``: the HTTP status when there
    was one; ``retry_after_s``: the server's ``Retry-After``, in seconds.
    The message names the provider, the reason and the status, never the
    prompt (it holds what customers said)."""

    def __init__(
        self,
        provider: str,
        reason: LlmReason,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        text = f"{provider}: {reason.value}"
        if status is not None:
            text += f" (HTTP {status})"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.provider, self.reason, self.status = provider, reason, status
        self.retry_after_s = retry_after_s
        self.retryable = reason in _RETRYABLE

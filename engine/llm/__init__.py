"""The language model behind the agents: offline (none) or a provider.

``types``: requests, chunks, function calls, usage, errors (vendor-neutral).
``model``: the provider base with its deadlines, and the per-turn handle
(``TurnContext.llm``). ``usage``: metrics and prices. The Gemini provider is
:mod:`providers.llm.gemini`; its wire stub and an in-process scripted model
are test helpers (:mod:`testkit.gemini`, :mod:`testkit.llm`).
"""

from engine.llm.model import (
    DEFAULT_BUDGETS,
    LanguageModel,
    LatencyBudget,
    LlmResult,
    TurnModel,
    budget_for,
)
from engine.llm.types import (
    FunctionCall,
    FunctionDecl,
    FunctionResponse,
    LlmChunk,
    LlmError,
    LlmMessage,
    LlmReason,
    LlmRequest,
    Usage,
)
from engine.llm.usage import Prices, cost_usd, prices_for

__all__ = [
    "DEFAULT_BUDGETS",
    "FunctionCall",
    "FunctionDecl",
    "FunctionResponse",
    "LanguageModel",
    "LatencyBudget",
    "LlmChunk",
    "LlmError",
    "LlmMessage",
    "LlmReason",
    "LlmRequest",
    "LlmResult",
    "Prices",
    "TurnModel",
    "Usage",
    "budget_for",
    "cost_usd",
    "prices_for",
]

"""Token and latency accounting for model calls (``GET /metrics``).

Cost is estimated from prices per million tokens: a client's
``llm.prices`` when set, else :data:`DEFAULT_PRICES` for the model (list
prices in USD, standard tier, prompts under 200k tokens; an unknown model is
priced as ``gemini-2.5-flash``). Labels carry client id, channel and model
only — never personal data.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from engine.llm.types import Usage

__all__ = [
    "DEFAULT_PRICES",
    "LLM_COST",
    "LLM_FALLBACKS",
    "LLM_FIRST_TOKEN_SECONDS",
    "LLM_SECONDS",
    "LLM_TOKENS",
    "Prices",
    "cost_usd",
    "prices_for",
]


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens, in and out."""

    input_per_million: float
    output_per_million: float


DEFAULT_PRICES: dict[str, Prices] = {
    "gemini-2.5-flash": Prices(0.30, 2.50),
    "gemini-2.5-flash-lite": Prices(0.10, 0.40),
    "gemini-2.5-pro": Prices(1.25, 10.00),
    "gemini-2.0-flash": Prices(0.10, 0.40),
    "gemini-2.0-flash-lite": Prices(0.075, 0.30),
}


def prices_for(model: str, override: Prices | None = None) -> Prices:
    """The prices for ``model``: ``override`` (a client's config), else the
    default for the model or its longest known prefix, else gemini-2.5-flash."""
    if override is not None:
        return override
    for name in sorted(DEFAULT_PRICES, key=len, reverse=True):
        if model.startswith(name):
            return DEFAULT_PRICES[name]
    return DEFAULT_PRICES["gemini-2.5-flash"]


def cost_usd(usage: Usage, prices: Prices) -> float:
    """Estimated cost of ``usage`` in USD."""
    return (
        usage.input_tokens * prices.input_per_million
        + usage.output_tokens * prices.output_per_million
    ) / 1_000_000


LLM_TOKENS = Counter(
    "gateway_llm_tokens_total",
    "Model tokens by client, model and direction (input, output), per the vendor's usage report",
    ["client_id", "model", "direction"],
)
LLM_COST = Counter(
    "gateway_llm_cost_usd_total",
    "Estimated model cost in USD by client and model (prices per million tokens from config)",
    ["client_id", "model"],
)
LLM_FIRST_TOKEN_SECONDS = Histogram(
    "gateway_llm_first_token_seconds",
    "Model call start -> first streamed chunk, in seconds",
    ["client_id", "channel", "model"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
)
LLM_SECONDS = Histogram(
    "gateway_llm_seconds",
    "Model call start -> last chunk, in seconds",
    ["client_id", "channel", "model"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 15),
)
LLM_FALLBACKS = Counter(
    "gateway_llm_fallbacks_total",
    "Model calls whose work the offline engine did instead, by reason (timeout, server...)",
    ["client_id", "channel", "reason"],
)

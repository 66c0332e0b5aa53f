"""TurnModel (engine.llm.model) with the in-process ScriptedModel: accounting,
metrics, the per-turn budget, retries, and "one failure ends the model's part of
the turn"."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from engine.llm.model import LanguageModel, LatencyBudget, TurnModel
from engine.llm.types import LlmChunk, LlmError, LlmReason, LlmRequest, Usage
from engine.llm.usage import Prices
from testkit.llm import Scripted, ScriptedModel, call, text_reply

from .conftest import ask


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def client_id() -> str:
    """A client id of its own, so counters start from zero in every test."""
    return f"llm-test-{uuid.uuid4().hex[:8]}"


def error(
    reason: LlmReason, *, status: int | None = None, retry_after_s: float | None = None
) -> Scripted:
    return Scripted(error=LlmError("scripted", reason, status=status, retry_after_s=retry_after_s))


async def test_tokens_and_cost_metrics_increase() -> None:
    cid = client_id()
    model = ScriptedModel([text_reply("Sure, Monday works.", usage=Usage(1000, 200))])
    turn = TurnModel(model, client_id=cid, channel="web")

    result = await turn.generate(ask())

    assert result.text == "Sure, Monday works."
    labels = {"client_id": cid, "model": "gemini-2.5-flash"}
    assert metric("gateway_llm_tokens_total", direction="input", **labels) == 1000
    assert metric("gateway_llm_tokens_total", direction="output", **labels) == 200
    expected = (1000 * 0.30 + 200 * 2.50) / 1_000_000  # gemini-2.5-flash list prices
    assert metric("gateway_llm_cost_usd_total", **labels) == pytest.approx(expected)
    assert turn.cost_usd == pytest.approx(expected)
    first = metric(
        "gateway_llm_first_token_seconds_count",
        client_id=cid,
        channel="web",
        model="gemini-2.5-flash",
    )
    assert first == 1


async def test_usage_and_cost_accumulate_over_the_turn() -> None:
    model = ScriptedModel(
        [call("free_slots", usage=Usage(100, 10), day="monday"), text_reply("At ten?")]
    )
    turn = TurnModel(model, client_id=client_id(), channel="web", prices=Prices(1.0, 2.0))

    first = await turn.generate(ask())
    second = await turn.generate(ask())

    assert first.calls[0].name == "free_slots" and dict(first.calls[0].args) == {"day": "monday"}
    assert second.text == "At ten?"
    assert turn.calls == 2
    assert turn.usage == Usage(100 + 100, 10 + 20)  # text_reply's default usage is 100/20
    assert turn.cost_usd == pytest.approx((200 * 1.0 + 30 * 2.0) / 1_000_000)


async def test_a_failure_makes_later_calls_of_the_turn_skip() -> None:
    cid = client_id()
    model = ScriptedModel([error(LlmReason.AUTH, status=401), text_reply("never asked")])
    turn = TurnModel(model, client_id=cid, channel="phone")

    with pytest.raises(LlmError) as first:
        await turn.generate(ask())
    with pytest.raises(LlmError) as later:
        await turn.generate(ask())

    assert first.value.reason is LlmReason.AUTH
    assert later.value.reason is LlmReason.SKIPPED
    assert len(model.requests) == 1  # the model was not asked again
    assert turn.failure is first.value
    assert not turn.available
    assert metric("gateway_llm_fallbacks_total", client_id=cid, channel="phone", reason="auth") == 1


async def test_the_next_turn_tries_the_model_again() -> None:
    model = ScriptedModel([error(LlmReason.AUTH), text_reply("Back again")])
    failed = TurnModel(model, client_id=client_id(), channel="web")
    with pytest.raises(LlmError):
        await failed.generate(ask())

    fresh = TurnModel(model, client_id=failed.client_id, channel="web")

    assert (await fresh.generate(ask())).text == "Back again"


async def test_fail_records_unusable_output() -> None:
    turn = TurnModel(ScriptedModel(default=text_reply("ok")), client_id=client_id(), channel="web")

    raised = turn.fail(LlmReason.MALFORMED, "reply failed its schema")

    assert raised.reason is LlmReason.MALFORMED
    with pytest.raises(LlmError) as later:
        await turn.generate(ask())
    assert later.value.reason is LlmReason.SKIPPED


async def test_retryable_error_is_retried_within_the_budget() -> None:
    before = metric("gateway_provider_retries_total", kind="llm", provider="scripted")
    model = ScriptedModel(
        [error(LlmReason.RATE_LIMITED, status=429, retry_after_s=0.01), text_reply("Hello")]
    )
    turn = TurnModel(model, client_id=client_id(), channel="web")

    result = await turn.generate(ask())

    assert result.text == "Hello"
    assert len(model.requests) == 2
    assert metric("gateway_provider_retries_total", kind="llm", provider="scripted") == before + 1


async def test_retry_that_does_not_fit_the_first_token_budget_is_not_made() -> None:
    model = ScriptedModel(
        [error(LlmReason.RATE_LIMITED, status=429, retry_after_s=30.0), text_reply("late")]
    )
    turn = TurnModel(model, client_id=client_id(), channel="phone")

    with pytest.raises(LlmError) as caught:
        await turn.generate(ask())

    assert caught.value.reason is LlmReason.RATE_LIMITED
    assert len(model.requests) == 1


async def test_no_first_token_in_time_is_a_timeout() -> None:
    model = ScriptedModel([Scripted(chunks=(LlmChunk("late"),), first_delay_s=30.0)])
    turn = TurnModel(
        model,
        client_id=client_id(),
        channel="phone",
        budget=LatencyBudget(first_token_s=0.2, total_s=5.0),
    )

    with pytest.raises(LlmError) as caught:
        await turn.generate(ask())

    assert caught.value.reason is LlmReason.TIMEOUT
    assert turn.failure is caught.value


async def test_an_answer_past_the_turn_budget_is_a_timeout() -> None:
    slow = Scripted(chunks=(LlmChunk("Sure, "), LlmChunk("Monday.")), delay_s=30.0)
    turn = TurnModel(
        ScriptedModel([slow]),
        client_id=client_id(),
        channel="web",
        budget=LatencyBudget(first_token_s=1.0, total_s=0.3),
    )

    said: list[str] = []
    with pytest.raises(LlmError) as caught:
        async for chunk in turn.stream(ask()):
            said.append(chunk.text)

    assert said == ["Sure, "]
    assert caught.value.reason is LlmReason.TIMEOUT


async def test_usage_is_counted_when_the_consumer_stops_early() -> None:
    model = ScriptedModel([Scripted(chunks=(LlmChunk("a", usage=Usage(50, 1)), LlmChunk("b")))])
    turn = TurnModel(model, client_id=client_id(), channel="web")

    stream = turn.stream(ask())
    await anext(stream)
    await stream.aclose()

    assert turn.usage == Usage(50, 1)
    assert turn.failure is None


class _Tracked(LanguageModel):
    """A model that notes when its stream was closed."""

    name = "tracked"
    model = "gemini-2.5-flash"

    def __init__(self) -> None:
        self.closed = False

    async def _stream_impl(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        try:
            for word in ("one ", "two ", "three"):
                yield LlmChunk(word)
                await asyncio.sleep(0.01)
        finally:
            self.closed = True


async def test_stopping_early_closes_the_provider_stream_at_once() -> None:
    model = _Tracked()
    turn = TurnModel(model, client_id=client_id(), channel="phone")

    stream = turn.stream(ask())
    await anext(stream)
    await stream.aclose()  # a barge-in

    assert model.closed  # now, not when the generator is garbage-collected

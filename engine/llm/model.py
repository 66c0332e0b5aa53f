"""The language-model provider interface and the per-turn budget.

:class:`LanguageModel` is a :class:`~engine.providers.Provider` (``kind``
``llm``): its public :meth:`LanguageModel.stream` runs a provider's
``_stream_impl`` under two deadlines (event-loop times, seconds) —

- **first chunk** by ``first_token_by``: until then a retryable failure
  (429, 5xx, a cut connection) is tried again when the wait (the server's
  ``Retry-After``, else a short backoff) still fits; after it, no retry
  (part of the answer may already be with the customer);
- **last chunk** by ``finish_by``, and no more than ``stall_s`` between two
  chunks (a stream that stops mid-answer is a timeout, not a wait until
  ``finish_by``).

Running out raises :class:`~engine.llm.types.LlmError` (``timeout``); the
stream of the attempt is closed at once, so a vendor stops generating (and
billing). A consumer that stops early (a barge-in cancels the turn) closes
it the same way.

:class:`TurnModel` is what an agent holds for one turn (``ctx.llm``): the
client's model under the channel's :class:`LatencyBudget`, with token and
latency accounting. One failure ends the model's part of the turn: later
calls in the same turn raise ``skipped`` at once, so the offline engine
answers within the budget; the next turn tries the model again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

from engine.llm.types import FunctionCall, LlmChunk, LlmError, LlmReason, LlmRequest, Usage
from engine.llm.usage import (
    LLM_COST,
    LLM_FALLBACKS,
    LLM_FIRST_TOKEN_SECONDS,
    LLM_SECONDS,
    LLM_TOKENS,
    Prices,
    cost_usd,
    prices_for,
)
from engine.providers import PROVIDER_RETRIES, CallOptions, Provider

__all__ = [
    "DEFAULT_BUDGETS",
    "LanguageModel",
    "LatencyBudget",
    "LlmResult",
    "TurnModel",
    "budget_for",
]

log = logging.getLogger("engine.llm")


@dataclass(frozen=True, slots=True)
class LatencyBudget:
    """Per-turn model budget, seconds: ``first_token_s`` from each call's start to
    its first chunk; ``total_s`` from the turn's start to the model's last chunk."""

    first_token_s: float
    total_s: float


DEFAULT_BUDGETS: dict[str, LatencyBudget] = {
    "phone": LatencyBudget(first_token_s=1.5, total_s=10.0),
    "default": LatencyBudget(first_token_s=3.0, total_s=10.0),
}
"""First token within 1.5 s on the phone, 3 s elsewhere; 10 s in all."""


def budget_for(channel: str) -> LatencyBudget:
    return DEFAULT_BUDGETS.get(channel, DEFAULT_BUDGETS["default"])


@dataclass(frozen=True, slots=True)
class LlmResult:
    """A whole (collected) answer: its text, function calls and usage."""

    text: str
    calls: tuple[FunctionCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish: str | None = None


class LanguageModel(Provider):
    """A chat model with streaming, function calling and structured output.

    Subclasses set ``name`` (``gemini``), ``model`` (``gemini-2.5-flash``) and
    implement :meth:`_stream_impl`, raising :class:`LlmError` for every
    vendor failure (never the vendor's exception types)."""

    kind: ClassVar[str] = "llm"
    model: str = "model"
    options: CallOptions = CallOptions(timeout_s=10.0, max_attempts=2, backoff_s=0.2)

    @abstractmethod
    def _stream_impl(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        """The vendor's streamed answer to ``request``, chunk by chunk."""

    async def stream(
        self,
        request: LlmRequest,
        *,
        first_token_by: float,
        finish_by: float,
        stall_s: float | None = None,
    ) -> AsyncIterator[LlmChunk]:
        """Stream the answer to ``request`` under the two deadlines (loop times).

        Raises LlmError (``timeout`` when a deadline passes; the vendor's
        failure otherwise, after retries that fit before ``first_token_by``)."""
        loop = asyncio.get_running_loop()
        with self._measure() as call:
            attempt = 0
            while True:
                attempt += 1
                chunks = self._stream_impl(request)
                try:
                    first = await _before(chunks, first_token_by, loop, self.name, "first token")
                except LlmError as exc:
                    await _close(chunks)
                    call.timed_out = exc.reason == LlmReason.TIMEOUT
                    wait = exc.retry_after_s if exc.retry_after_s is not None else 0.2 * attempt
                    fits = loop.time() + wait < first_token_by - 0.2
                    if exc.retryable and attempt < self.options.max_attempts and fits:
                        PROVIDER_RETRIES.labels(self.kind, self.name).inc()
                        log.warning(
                            "llm %s: attempt %d failed (%s); retrying in %.2f s",
                            self.name,
                            attempt,
                            exc.reason.value,
                            wait,
                        )
                        await asyncio.sleep(wait)
                        continue
                    raise
                except BaseException:
                    await _close(chunks)
                    raise
                break
            try:
                yield first
                while True:
                    try:
                        by = finish_by if stall_s is None else min(finish_by, loop.time() + stall_s)
                        chunk = await _before(chunks, by, loop, self.name, "answer")
                    except StopAsyncIteration:
                        return
                    except LlmError as exc:
                        call.timed_out = exc.reason == LlmReason.TIMEOUT
                        raise
                    yield chunk
            finally:
                await _close(chunks)


async def _before(
    chunks: AsyncIterator[LlmChunk],
    deadline: float,
    loop: asyncio.AbstractEventLoop,
    provider: str,
    what: str,
) -> LlmChunk:
    """The next chunk, or LlmError(timeout) when ``deadline`` passes first;
    StopAsyncIteration at the end (LlmError(malformed) when there was no chunk
    at all is the caller's to decide: here the first call raises it)."""
    left = deadline - loop.time()
    if left <= 0:
        raise LlmError(provider, LlmReason.TIMEOUT, f"no {what} in time")
    try:
        async with asyncio.timeout(left):
            return await anext(chunks)
    except TimeoutError:
        raise LlmError(provider, LlmReason.TIMEOUT, f"no {what} within the budget") from None
    except StopAsyncIteration:
        if what == "first token":
            raise LlmError(provider, LlmReason.MALFORMED, "empty answer") from None
        raise


async def _close(chunks: AsyncIterator[LlmChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a failed stream must not mask its error
            log.debug("llm stream close failed", exc_info=True)


async def _until(
    chunks: AsyncIterator[LlmChunk], interrupt: asyncio.Event | None, provider: str
) -> AsyncIterator[LlmChunk]:
    """``chunks`` until ``interrupt`` is set; then LlmError(``interrupted``)
    (the caller closes ``chunks``, which closes the vendor's stream)."""
    if interrupt is None:
        async for chunk in chunks:
            yield chunk
        return
    stop = asyncio.ensure_future(interrupt.wait())
    try:
        while True:
            if interrupt.is_set():
                raise LlmError(provider, LlmReason.INTERRUPTED, "the channel interrupted the turn")
            step = asyncio.ensure_future(anext(chunks))
            done, _ = await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                raise LlmError(provider, LlmReason.INTERRUPTED, "the channel interrupted the turn")
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        stop.cancel()


class TurnModel:
    """The client's model for one turn (``TurnContext.llm``).

    ``client_id`` and ``channel`` label the metrics; ``budget`` bounds the
    turn; ``prices`` estimate cost. ``usage`` and ``cost_usd`` add up the
    turn's calls (the engine stores them on the conversation). ``failure``:
    the error that ended the model's part of this turn, if any.
    """

    def __init__(
        self,
        model: LanguageModel,
        *,
        client_id: str,
        channel: str,
        budget: LatencyBudget | None = None,
        prices: Prices | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> None:
        self.model = model
        self.interrupt = interrupt
        self.client_id, self.channel = client_id, channel
        self.budget = budget or budget_for(channel)
        self.prices = prices_for(model.model, prices)
        self.started = asyncio.get_running_loop().time()
        self.deadline = self.started + self.budget.total_s
        self.usage = Usage()
        self.cost_usd = 0.0
        self.calls = 0
        self.failure: LlmError | None = None

    @property
    def available(self) -> bool:
        """False once a call failed this turn, the budget is spent, or the
        channel interrupted the turn (nobody listens to the reply)."""
        if self.interrupt is not None and self.interrupt.is_set():
            return False
        return self.failure is None and asyncio.get_running_loop().time() < self.deadline

    def fail(self, reason: LlmReason, detail: str = "") -> LlmError:
        """Record that the model's output was unusable (``malformed`` structured
        output, a reply that failed its checks) and return the error to raise."""
        error = LlmError(self.model.name, reason, detail)
        self._failed(error)
        return error

    def _failed(self, error: LlmError) -> None:
        if self.failure is None:
            self.failure = error
            LLM_FALLBACKS.labels(self.client_id, self.channel, error.reason.value).inc()
            log.warning(
                "llm %s for %s/%s: %s; the offline engine answers",
                self.model.name,
                self.client_id,
                self.channel,
                error,
            )

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        """Stream one call within the turn's budget. Raises LlmError (``skipped``
        when an earlier call of this turn failed)."""
        if self.failure is not None:
            raise LlmError(self.model.name, LlmReason.SKIPPED, "the model failed earlier this turn")
        loop = asyncio.get_running_loop()
        start = loop.time()
        first_by = min(start + self.budget.first_token_s, self.deadline)
        labels = (self.client_id, self.channel, self.model.model)
        usage: Usage | None = None
        first = True
        self.calls += 1
        wall = time.perf_counter()
        chunks = self.model.stream(
            request,
            first_token_by=first_by,
            finish_by=self.deadline,
            stall_s=self.budget.first_token_s,
        )
        try:
            async for chunk in _until(chunks, self.interrupt, self.model.name):
                if first:
                    first = False
                    LLM_FIRST_TOKEN_SECONDS.labels(*labels).observe(time.perf_counter() - wall)
                if chunk.usage is not None:
                    usage = chunk.usage
                yield chunk
        except LlmError as exc:
            self._failed(exc)
            raise
        finally:
            # A consumer that stops early (a barge-in) must close the vendor's
            # stream now, not when the generator is garbage-collected.
            await _close(chunks)
            LLM_SECONDS.labels(*labels).observe(time.perf_counter() - wall)
            if usage is not None:
                self._account(usage)

    def _account(self, usage: Usage) -> None:
        self.usage = self.usage + usage
        cost = cost_usd(usage, self.prices)
        self.cost_usd += cost
        model = self.model.model
        LLM_TOKENS.labels(self.client_id, model, "input").inc(usage.input_tokens)
        LLM_TOKENS.labels(self.client_id, model, "output").inc(usage.output_tokens)
        LLM_COST.labels(self.client_id, model).inc(cost)

    async def generate(self, request: LlmRequest) -> LlmResult:
        """The whole answer to ``request`` (text joined, calls in order)."""
        text: list[str] = []
        calls: list[FunctionCall] = []
        usage = Usage()
        finish: str | None = None
        async for chunk in self.stream(request):
            text.append(chunk.text)
            calls.extend(chunk.calls)
            usage = chunk.usage or usage
            finish = chunk.finish or finish
        return LlmResult("".join(text), tuple(calls), usage, finish)

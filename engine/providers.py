"""The base of every provider the gateway calls out to: calendar, CRM, notifiers,
STT, TTS, the embedder and the language model.

The pattern is livekit-agents' provider base classes: an interface's public method
(:meth:`Calendar.busy <engine.tools.calendar.Calendar.busy>`,
:meth:`Crm.list_leads <engine.tools.crm.Crm.list_leads>`,
:meth:`SttStream.finalize <providers.speech.stt.SttStream.finalize>`,
:meth:`TextToSpeech.synthesize <providers.speech.tts.TextToSpeech.synthesize>`) is
written once, in the interface, and runs a private ``_..._impl`` that each
concrete provider implements through :meth:`Provider._call`, which owns:

- **a timeout per attempt** (:attr:`CallOptions.timeout_s`, seconds). Running
  out raises the provider family's own error (:meth:`Provider._timeout_error`:
  a retryable :class:`~engine.errors.ToolError` unless the family says
  otherwise);
- **retries** (tenacity) of errors whose ``retryable`` is true, at most
  :attr:`CallOptions.max_attempts` attempts in all, with exponential backoff and
  jitter. An error's ``retry_after_s`` (a server's ``Retry-After``) is waited
  out; one longer than :attr:`CallOptions.max_backoff_s` is not retried here
  but raised, for a caller that can wait (the outbox);
- **metrics**: ``gateway_provider_calls_total`` and ``gateway_provider_seconds``
  (whole call, retries included) by ``kind``, ``provider`` and ``outcome``
  (``ok``, ``error``, ``timeout``, ``cancelled``); and
  ``gateway_provider_retries_total`` by ``kind`` and ``provider``;
- **logs**: one warning per retry naming the provider, the operation and the
  error's type, never its message (vendors quote what they were sent).

A subclass sets :attr:`Provider.kind` (the interface: ``calendar``, ``crm``,
``stt``, ``tts``), :attr:`Provider.name` (the implementation: ``local``,
``pocketsphinx``) and, when its calls need other bounds than the interface's,
:attr:`Provider.options`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

from prometheus_client import Counter, Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from engine.errors import GatewayError, ToolError

__all__ = [
    "PROVIDER_CALLS",
    "PROVIDER_RETRIES",
    "PROVIDER_SECONDS",
    "CallOptions",
    "Outcome",
    "Provider",
]

log = logging.getLogger("engine.providers")

T = TypeVar("T")

Outcome = Literal["ok", "error", "timeout", "cancelled"]

PROVIDER_CALLS = Counter(
    "gateway_provider_calls_total",
    "Provider calls (retries included in one call) by outcome: ok, error, timeout, cancelled",
    ["kind", "provider", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "gateway_provider_seconds",
    "Time per provider call, retries and backoff included, in seconds",
    ["kind", "provider", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_RETRIES = Counter(
    "gateway_provider_retries_total",
    "Provider call attempts that failed with a retryable error and were tried again",
    ["kind", "provider"],
)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one provider call is bounded.

    ``timeout_s``: time allowed for one attempt, in seconds. ``max_attempts``:
    attempts in all (1 = never retry). ``backoff_s``: the wait before the first
    retry, in seconds, doubling for each further one, plus up to ``backoff_s``
    of random jitter, and never more than ``max_backoff_s``.

    Raises ValueError naming the field that is out of range.
    """

    timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {self.backoff_s}")
        if self.max_backoff_s < self.backoff_s:
            raise ValueError(
                f"max_backoff_s ({self.max_backoff_s}) must be >= backoff_s ({self.backoff_s})"
            )


class _Call:
    """One call's bookkeeping: whether its last attempt ran out of time."""

    __slots__ = ("timed_out",)

    def __init__(self) -> None:
        self.timed_out = False


def _retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


def _retry_after_s(exc: BaseException | None) -> float | None:
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, int | float) and value >= 0 else None


class _AsksTooLong(stop_base):
    """Stop when the server asks to wait longer than this call may (its
    ``retry_after_s`` above ``max_backoff_s``): a caller that can wait retries."""

    def __init__(self, max_backoff_s: float) -> None:
        self.max_backoff_s = max_backoff_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        later = _retry_after_s(outcome.exception() if outcome else None)
        return later is not None and later > self.max_backoff_s


class Provider(ABC):  # noqa: B024 - the interfaces below it declare the abstract _impls
    """Something the gateway calls out to, by interface (``kind``) and implementation (``name``)."""

    kind: ClassVar[str] = "provider"
    """The interface: ``calendar``, ``crm``, ``stt``, ``tts``... (a metrics label)."""
    name: str = "provider"
    """The implementation: ``local``, ``pocketsphinx``... (a metrics label; the
    name a client config uses where the interface is chosen per client)."""
    options: CallOptions = CallOptions()
    """Bounds of each call; a subclass or an instance may set its own."""

    async def _call(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        *,
        options: CallOptions | None = None,
    ) -> T:
        """Run ``fn`` (a fresh awaitable per attempt) with this provider's timeout,
        retries and metrics. ``operation`` names it in logs and errors (``busy``).

        Raises what the last attempt raised, or :meth:`_timeout_error` when it ran
        out of time; ``asyncio.CancelledError`` passes through untouched.
        """
        opts = options or self.options
        with self._measure() as call:
            return await self._attempts(operation, fn, opts, call)

    def _timeout_error(self, operation: str, timeout_s: float) -> GatewayError:
        """The error for an attempt that ran out of time (retryable). Families
        outside the tool tree (speech) override it."""
        return ToolError(
            self.kind,
            f"{self.name} {operation}: no answer within {timeout_s:g} s",
            retryable=True,
        )

    # -- the machinery --------------------------------------------------------------

    @contextmanager
    def _measure(self) -> Iterator[_Call]:
        """Time the block and count it by outcome (for calls that stream, such as TTS)."""
        call = _Call()
        started = time.perf_counter()
        outcome: Outcome = "error"
        try:
            yield call
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = "timeout" if call.timed_out else "error"
            raise
        finally:
            labels = (self.kind, self.name, outcome)
            PROVIDER_CALLS.labels(*labels).inc()
            PROVIDER_SECONDS.labels(*labels).observe(time.perf_counter() - started)

    async def _attempts(
        self, operation: str, fn: Callable[[], Awaitable[T]], opts: CallOptions, call: _Call
    ) -> T:
        """Attempts of ``fn`` under ``opts`` (no metrics: the caller measures)."""
        backoff = wait_exponential_jitter(
            initial=opts.backoff_s, max=opts.max_backoff_s, jitter=opts.backoff_s
        )

        def wait(state: RetryCallState) -> float:
            waited = backoff(state)
            later = _retry_after_s(state.outcome.exception() if state.outcome else None)
            return waited if later is None else max(waited, later)

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            PROVIDER_RETRIES.labels(self.kind, self.name).inc()
            log.warning(
                "%s %s: %s failed (%s); attempt %d of %d in %.2f s",
                self.kind,
                self.name,
                operation,
                type(error).__name__,
                state.attempt_number + 1,
                opts.max_attempts,
                state.next_action.sleep if state.next_action else 0.0,
            )

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(opts.max_attempts), _AsksTooLong(opts.max_backoff_s)),
            wait=wait,
            retry=retry_if_exception(_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await self._attempt(operation, fn, opts.timeout_s, call)
        return result

    async def _attempt(
        self, operation: str, fn: Callable[[], Awaitable[T]], timeout_s: float, call: _Call
    ) -> T:
        call.timed_out = False
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                return await fn()
        except TimeoutError:
            if not deadline.expired():
                raise  # the provider's own TimeoutError, not our deadline
            call.timed_out = True
            raise self._timeout_error(operation, timeout_s) from None

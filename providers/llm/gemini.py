"""Gemini behind the agents, through the ``google-genai`` SDK (Gemini Developer API).

:class:`GeminiModel` streams ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``
(https://ai.google.dev/api/generate-content). The only place Gemini's shapes are
read or written: :class:`~engine.llm.types.LlmRequest` becomes ``contents`` (roles
``user``/``model``; ``text``, ``functionCall``, ``functionResponse`` parts) and a
``GenerateContentConfig`` (``systemInstruction``, ``temperature``,
``maxOutputTokens``, ``tools[].functionDeclarations[].parametersJsonSchema``,
``toolConfig.functionCallingConfig.mode`` ``AUTO``/``ANY``/``NONE``,
``responseMimeType: application/json`` + ``responseJsonSchema``, and
``thinkingConfig.thinkingBudget: 0`` on ``gemini-2.5-flash*``, where phone turns
cannot wait for thoughts); each streamed ``GenerateContentResponse`` becomes an
:class:`~engine.llm.types.LlmChunk` (``thought`` parts skipped; usage from
``usageMetadata``: in = ``promptTokenCount``, out = ``candidatesTokenCount`` +
``thoughtsTokenCount``).

The SDK's own retries, automatic function calling and automatic stream
continuation are off: :class:`~engine.llm.model.LanguageModel` owns retries and
deadlines, the agents run functions. Failures become
:class:`~engine.llm.types.LlmError`, never SDK exceptions::

    HTTP 429                          -> rate_limited (retry_after_s: the Retry-After
                                         header, else RetryInfo.retryDelay in the body)
    HTTP 5xx                          -> server
    HTTP 401, 403, 400 API_KEY_INVALID -> auth
    other 4xx                         -> bad_request (also a request the SDK refuses)
    connect/read failure, a cut stream -> network
    not a GenerateContentResponse     -> malformed (also finishReason MALFORMED_FUNCTION_CALL)
    promptFeedback.blockReason,       -> blocked
    finishReason SAFETY, PROHIBITED_CONTENT, BLOCKLIST, SPII, RECITATION

Messages name the status and Google's ``status`` code, never the prompt or
Google's free-text message (it may quote what it was sent).

Closing the stream (a barge-in cancels the turn, a deadline passes) closes the
HTTP response at once, so Gemini stops generating and billing.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from engine.llm.model import LanguageModel
from engine.llm.types import (
    FunctionCall,
    LlmChunk,
    LlmError,
    LlmMessage,
    LlmReason,
    LlmRequest,
    Usage,
)

if TYPE_CHECKING:
    from engine.config import ClientConfig

__all__ = ["GeminiModel", "GeminiModels", "gemini_models"]

log = logging.getLogger("engine.llm")

T = TypeVar("T")

_MODES = {
    "auto": types.FunctionCallingConfigMode.AUTO,
    "any": types.FunctionCallingConfigMode.ANY,
    "none": types.FunctionCallingConfigMode.NONE,
}
_BLOCKED_FINISH = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"})
"""Finish reasons that mean the answer was withheld (``Candidate.FinishReason``)."""
_NO_THINKING = ("gemini-2.5-flash",)
"""Model prefixes whose thinking is switched off (``thinkingBudget: 0``); 2.5 Pro cannot."""

_OPENED: contextvars.ContextVar[list[httpx.Response] | None] = contextvars.ContextVar(
    "gemini_opened", default=None
)
"""The HTTP responses the current call opened (filled by an httpx response hook),
so closing a stream closes its connection at once rather than when the SDK's
inner generators are garbage-collected."""


class GeminiModel(LanguageModel):
    """Gemini ``model`` with ``api_key``; ``base_url`` points it elsewhere (a
    :class:`~testkit.gemini.GeminiStub`, a proxy) with the ``v1beta`` API.

    One instance serves many calls at once; its connection pool belongs to the
    event loop that uses it (a new loop gets a new pool). :meth:`aclose` closes it.
    """

    name = "gemini"

    def __init__(
        self, api_key: str, model: str = "gemini-2.5-flash", *, base_url: str | None = None
    ) -> None:
        if not api_key:
            raise ValueError("GeminiModel needs an API key (GEMINI_API_KEY)")
        self.model = model
        self._api_key = api_key
        self._base_url = base_url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: genai.Client | None = None
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"GeminiModel(model={self.model!r}, base_url={self._base_url!r})"

    # -- clients --------------------------------------------------------------------------

    def _sdk(self) -> genai.Client:
        """The SDK client of the running loop (httpx pools cannot cross loops)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.options.timeout_s),
                event_hooks={"response": [_remember]},
            )
            self._client = genai.Client(
                vertexai=False,  # the Gemini Developer API, whatever GOOGLE_GENAI_USE_VERTEXAI says
                api_key=self._api_key,
                http_options=types.HttpOptions(
                    base_url=self._base_url,
                    # The SDK's default is v1, which lacks JSON-schema output and tools.
                    api_version="v1beta",
                    # Milliseconds. Also sent as X-Server-Timeout.
                    timeout=int(self.options.timeout_s * 1000),
                    # One attempt: the base class retries within the turn's budget.
                    retry_options=types.HttpRetryOptions(attempts=1),
                    # Our own httpx client: no aiohttp (whose failed connects the
                    # SDK retries after sleeping 1-10 s), and the response hook.
                    httpx_async_client=self._http,
                ),
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool (call in the lifespan that made the model)."""
        http, client, loop = self._http, self._client, self._loop
        self._http = self._client = self._loop = None
        if client is not None:
            client.close()  # the SDK's own (unused) sync pool
        if http is not None and loop is asyncio.get_running_loop():
            await http.aclose()

    # -- one call -------------------------------------------------------------------------

    async def _stream_impl(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        """Gemini's streamed answer to ``request``. Raises LlmError (see the module)."""
        opened: list[httpx.Response] = []
        stream: AsyncIterator[types.GenerateContentResponse] | None = None
        try:
            token = _OPENED.set(opened)
            try:
                stream = await self._guard(self._open(request), opened)
                # The request goes out on the first step: inside the hook's context.
                response = await self._step(stream, opened)
            finally:
                _OPENED.reset(token)
            held: Usage | None = None
            while response is not None:
                chunk = _chunk(response)
                usage = chunk.usage or held
                if chunk.text or chunk.calls or chunk.finish:
                    held = None
                    yield LlmChunk(chunk.text, chunk.calls, usage, chunk.finish)
                else:
                    held = usage  # thoughts or usage alone: not a first token yet
                response = await self._step(stream, opened)
            if held is not None:
                yield LlmChunk(usage=held)
        finally:
            await _release(stream, opened)

    async def _open(self, request: LlmRequest) -> AsyncIterator[types.GenerateContentResponse]:
        return await self._sdk().aio.models.generate_content_stream(
            model=self.model, contents=_contents(request.messages), config=self._config(request)
        )

    async def _step(
        self, stream: AsyncIterator[types.GenerateContentResponse], opened: list[httpx.Response]
    ) -> types.GenerateContentResponse | None:
        """The next streamed response, None at the end."""
        try:
            return await self._guard(anext(stream), opened)
        except StopAsyncIteration:
            return None

    async def _guard(self, step: Awaitable[T], opened: list[httpx.Response]) -> T:
        """``await step`` with SDK and httpx failures mapped to LlmError
        (StopAsyncIteration passes). ``opened``: the call's responses so far, to
        tell a request the SDK refused from an answer it could not read."""
        try:
            return await step
        except (StopAsyncIteration, LlmError):
            raise
        except genai_errors.APIError as exc:
            raise _api_error(exc) from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise LlmError(self.name, LlmReason.NETWORK, type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise LlmError(self.name, LlmReason.TIMEOUT, type(exc).__name__) from exc
        except (httpx.TransportError, httpx.StreamError, OSError) as exc:
            raise LlmError(self.name, LlmReason.NETWORK, type(exc).__name__) from exc
        except (genai_errors.UnknownApiResponseError, pydantic.ValidationError) as exc:
            raise LlmError(self.name, LlmReason.MALFORMED, "the body is not a response") from exc
        except ValueError as exc:
            if opened:
                raise LlmError(self.name, LlmReason.MALFORMED, type(exc).__name__) from exc
            raise LlmError(self.name, LlmReason.BAD_REQUEST, "the SDK refused the request") from exc
        except Exception as exc:  # no SDK exception may reach a flow
            raise LlmError(self.name, LlmReason.MALFORMED, type(exc).__name__) from exc

    def _config(self, request: LlmRequest) -> types.GenerateContentConfig:
        config = types.GenerateContentConfig(
            system_instruction=request.system or None,
            temperature=request.temperature,
            max_output_tokens=request.max_output_tokens,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            # Resuming a cut stream would replay a turn the customer may have left.
            automatic_continuation=False,
        )
        if request.tools:
            config.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=tool.name,
                            description=tool.description,
                            parameters_json_schema=_json_schema(tool.parameters),
                        )
                        for tool in request.tools
                    ]
                )
            ]
            config.tool_config = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=_MODES[request.tool_mode])
            )
        if request.response_schema is not None:
            config.response_mime_type = "application/json"
            config.response_json_schema = _json_schema(request.response_schema)
        if self.model.startswith(_NO_THINKING):
            config.thinking_config = types.ThinkingConfig(thinking_budget=0)
        return config


# -- request ------------------------------------------------------------------------------


def _contents(messages: Iterable[LlmMessage]) -> list[types.Content]:
    """``contents``: one Content per message, empty messages left out."""
    contents = []
    for message in messages:
        parts = [types.Part(text=message.text)] if message.text else []
        parts += [
            types.Part(
                function_call=types.FunctionCall(name=call.name, args=dict(call.args), id=call.id)
            )
            for call in message.calls
        ]
        parts += [
            types.Part(
                function_response=types.FunctionResponse(
                    name=resp.name, response=dict(resp.response), id=resp.id
                )
            )
            for resp in message.responses
        ]
        if parts:
            contents.append(types.Content(role=message.role, parts=parts))
    return contents


def _json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` (OpenAPI subset, see engine.llm.types) as JSON Schema:
    ``nullable: true`` becomes a ``"null"`` member of ``type``."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "nullable":
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {
                name: _json_schema(sub) if isinstance(sub, Mapping) else sub
                for name, sub in value.items()
            }
        elif key == "items" and isinstance(value, Mapping):
            out[key] = _json_schema(value)
        else:
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# -- response -----------------------------------------------------------------------------


def _chunk(response: types.GenerateContentResponse) -> LlmChunk:
    """One streamed GenerateContentResponse as a chunk. Raises LlmError
    (``blocked``, ``malformed``)."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = _enum(feedback.block_reason)
        raise LlmError(GeminiModel.name, LlmReason.BLOCKED, f"prompt blocked ({reason})")
    texts: list[str] = []
    calls: list[FunctionCall] = []
    finish: str | None = None
    if response.candidates:
        candidate = response.candidates[0]
        if candidate.finish_reason is not None:
            finish = _enum(candidate.finish_reason)
        if finish in _BLOCKED_FINISH:
            raise LlmError(GeminiModel.name, LlmReason.BLOCKED, f"answer withheld ({finish})")
        if finish == "MALFORMED_FUNCTION_CALL":
            raise LlmError(GeminiModel.name, LlmReason.MALFORMED, "malformed function call")
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        for part in parts:
            if part.thought:
                continue
            if part.text:
                texts.append(part.text)
            if part.function_call is not None:
                call = part.function_call
                if not call.name:
                    raise LlmError(
                        GeminiModel.name, LlmReason.MALFORMED, "function call without a name"
                    )
                calls.append(FunctionCall(call.name, dict(call.args or {}), call.id))
    return LlmChunk("".join(texts), tuple(calls), _usage(response), finish)


def _usage(response: types.GenerateContentResponse) -> Usage | None:
    meta = response.usage_metadata
    if meta is None:
        return None
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return Usage(meta.prompt_token_count or 0, output)


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value))


# -- errors -------------------------------------------------------------------------------


def _api_error(exc: genai_errors.APIError) -> LlmError:
    """An HTTP error status (or an ``{"error": ...}`` event mid-stream) as LlmError."""
    status = exc.code if isinstance(exc.code, int) else None
    detail = exc.status if isinstance(exc.status, str) else ""
    body = exc.details if isinstance(exc.details, Mapping) else {}
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, Mapping) else None
    infos = [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []
    if status == 429:
        retry = _retry_after(getattr(exc.response, "headers", None), infos)
        return LlmError(
            GeminiModel.name, LlmReason.RATE_LIMITED, detail, status=status, retry_after_s=retry
        )
    if status is not None and 500 <= status < 600:
        retry = _retry_after(getattr(exc.response, "headers", None), [])
        return LlmError(
            GeminiModel.name, LlmReason.SERVER, detail, status=status, retry_after_s=retry
        )
    if status in (401, 403) or any(i.get("reason") == "API_KEY_INVALID" for i in infos):
        return LlmError(GeminiModel.name, LlmReason.AUTH, detail, status=status)
    if status is not None and 400 <= status < 500:
        return LlmError(GeminiModel.name, LlmReason.BAD_REQUEST, detail, status=status)
    return LlmError(GeminiModel.name, LlmReason.MALFORMED, "unexpected status", status=status)


def _retry_after(headers: Any, infos: list[Mapping[str, Any]]) -> float | None:
    """Seconds to wait: the ``Retry-After`` header (seconds or an HTTP date,
    RFC 9110 §10.2.3), else a ``google.rpc.RetryInfo`` ``retryDelay`` (``"3s"``,
    a protobuf Duration in JSON)."""
    value = None
    if headers is not None:
        for name, text in headers.items():
            if str(name).lower() == "retry-after":
                value = str(text).strip()
                break
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    for info in infos:
        if str(info.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(info.get("retryDelay", ""))
            try:
                return max(0.0, float(delay.removesuffix("s")))
            except ValueError:
                continue
    return None


# -- closing ------------------------------------------------------------------------------


async def _remember(response: httpx.Response) -> None:
    """httpx response hook: note the response for the call that opened it."""
    opened = _OPENED.get()
    if opened is not None:
        opened.append(response)


async def _release(
    stream: AsyncIterator[types.GenerateContentResponse] | None, opened: list[httpx.Response]
) -> None:
    """Close the call's HTTP responses (the connection drops mid-body, so Gemini
    stops), then the SDK's generator."""
    for response in opened:
        try:
            await response.aclose()
        except Exception:  # closing must not mask the call's outcome
            log.debug("gemini: closing a response failed", exc_info=True)
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("gemini: closing the SDK stream failed", exc_info=True)


# -- per client ---------------------------------------------------------------------------


class GeminiModels:
    """The model factory of :func:`gemini_models`: ``models(client)`` is the
    client's :class:`GeminiModel` (one per model name, shared by the clients
    that use it), or None (offline). :meth:`aclose` closes them all."""

    def __init__(self, api_key: str | None, base_url: str | None = None) -> None:
        self._api_key = api_key or None
        self._base_url = base_url or None
        self._models: dict[str, GeminiModel] = {}
        self._warned: set[str] = set()

    def __call__(self, client: ClientConfig) -> LanguageModel | None:
        if client.llm.provider != "gemini":
            return None
        if self._api_key is None:
            if client.client_id not in self._warned:
                self._warned.add(client.client_id)
                log.warning(
                    "client %s: llm.provider gemini but GEMINI_API_KEY is unset; "
                    "the offline engine answers",
                    client.client_id,
                )
            return None
        name = client.llm.model
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = GeminiModel(self._api_key, name, base_url=self._base_url)
        return model

    async def aclose(self) -> None:
        models, self._models = list(self._models.values()), {}
        for model in models:
            await model.aclose()


def gemini_models(api_key: str | None, base_url: str | None = None) -> GeminiModels:
    """A ``(ClientConfig) -> LanguageModel | None`` factory (``Tools.llm``):
    Gemini for clients with ``llm.provider: gemini`` when ``api_key``
    (``GEMINI_API_KEY``) is set, ``base_url`` (``GEMINI_BASE_URL``) overriding
    Google's; None otherwise, with one warning per client asking for Gemini
    without a key."""
    return GeminiModels(api_key, base_url)

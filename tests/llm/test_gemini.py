"""GeminiModel through the real google-genai client against the local Gemini REST
stub: request shape, streamed chunks and usage, and every failure mapped to
LlmError (with the base class's retries and deadlines)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from engine.config import ClientConfig
from engine.llm.model import TurnModel
from engine.llm.types import (
    FunctionCall,
    FunctionDecl,
    FunctionResponse,
    LlmError,
    LlmMessage,
    LlmReason,
    LlmRequest,
    Usage,
)
from providers.llm.gemini import GeminiModel, gemini_models
from testkit.gemini import Blocked, GeminiStub, Hang, HttpError, Malformed, Reply, json_reply

from .conftest import API_KEY, ask, collect


def field(obj: dict[str, Any], camel: str) -> Any:
    """``obj[camel]``, or its snake_case spelling: google-genai sends nested
    fields (``parameters_json_schema``, ``thinking_budget``) in proto field
    names, which the API accepts like lowerCamelCase (proto3 JSON)."""
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj[snake]


# -- answers ------------------------------------------------------------------------------


async def test_streams_text_in_chunks_with_cumulative_usage(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    text = "Sure, Monday at ten works. Shall I book it for you?"
    stub.enqueue(
        Reply(
            text,
            chunks=3,
            thought="The customer wants Monday.",
            prompt_tokens=40,
            output_tokens=12,
            thoughts_tokens=5,
        )
    )

    chunks = await collect(gemini, ask())

    assert len(chunks) == 3
    assert "".join(c.text for c in chunks) == text  # the thought part is not said
    assert chunks[-1].finish == "STOP"
    assert chunks[-1].usage == Usage(input_tokens=40, output_tokens=12 + 5)
    assert all(c.usage is not None and c.usage.input_tokens == 40 for c in chunks)


async def test_usage_counts_default_to_the_stub_word_counts(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    stub.enqueue(Reply("one two three four", chunks=2))

    chunks = await collect(gemini, ask("five six", system="seven"))

    assert chunks[-1].usage == Usage(input_tokens=3, output_tokens=4)


async def test_function_calls_are_parsed(stub: GeminiStub, gemini: GeminiModel) -> None:
    book = FunctionCall("book", {"service": "haircut", "day": "monday", "people": 2}, id="c-1")
    stub.enqueue(Reply(calls=(book, FunctionCall("transfer"))))

    chunks = await collect(gemini, ask(tools=(FunctionDecl("book", "Book a slot"),)))

    calls = [call for chunk in chunks for call in chunk.calls]
    assert calls == [book, FunctionCall("transfer", {})]
    assert "".join(c.text for c in chunks) == ""


async def test_structured_output_is_json_text(stub: GeminiStub, gemini: GeminiModel) -> None:
    stub.enqueue(json_reply({"intent": "book", "day": None}))

    chunks = await collect(gemini, ask(response_schema={"type": "object"}))

    assert "".join(c.text for c in chunks) == '{"intent": "book", "day": null}'


# -- the request on the wire --------------------------------------------------------------


def _conversation() -> LlmRequest:
    return LlmRequest(
        system="You are the receptionist of a hair salon.",
        messages=(
            LlmMessage("user", "Is Monday free?"),
            LlmMessage("model", calls=(FunctionCall("free_slots", {"day": "monday"}),)),
            LlmMessage("user", responses=(FunctionResponse("free_slots", {"slots": ["10:00"]}),)),
        ),
        tools=(
            FunctionDecl(
                "free_slots",
                "Free slots on a day",
                {
                    "type": "object",
                    "properties": {
                        "day": {"type": "string", "description": "weekday"},
                        "service": {"type": "string", "nullable": True},
                    },
                    "required": ["day"],
                },
            ),
        ),
        tool_mode="any",
        response_schema={
            "type": "object",
            "properties": {
                "reply": {"type": "string"},
                "time": {"type": "string", "nullable": True},
            },
        },
        temperature=0.4,
        max_output_tokens=120,
    )


async def test_request_body_has_gemini_shape(stub: GeminiStub, gemini: GeminiModel) -> None:
    await collect(gemini, _conversation())

    (sent,) = stub.requests
    assert sent.method == "streamGenerateContent" and sent.query.get("alt") == "sse"
    assert sent.model == "gemini-2.5-flash"
    assert sent.headers["x-goog-api-key"] == API_KEY
    body = sent.body
    assert body is not None
    assert field(body, "systemInstruction")["parts"] == [
        {"text": "You are the receptionist of a hair salon."}
    ]
    user, model, response = body["contents"]
    assert user == {"role": "user", "parts": [{"text": "Is Monday free?"}]}
    assert model["role"] == "model"
    assert field(model["parts"][0], "functionCall") == {
        "name": "free_slots",
        "args": {"day": "monday"},
    }
    assert response["role"] == "user"
    assert field(response["parts"][0], "functionResponse") == {
        "name": "free_slots",
        "response": {"slots": ["10:00"]},
    }

    (declaration,) = field(body["tools"][0], "functionDeclarations")
    assert declaration["name"] == "free_slots"
    assert declaration["description"] == "Free slots on a day"
    schema = field(declaration, "parametersJsonSchema")
    assert schema["required"] == ["day"]
    assert schema["properties"]["service"] == {
        "type": ["string", "null"]
    }  # nullable, in JSON Schema
    assert field(field(body, "toolConfig"), "functionCallingConfig") == {"mode": "ANY"}

    generation = field(body, "generationConfig")
    assert generation["temperature"] == 0.4
    assert field(generation, "maxOutputTokens") == 120
    assert field(generation, "responseMimeType") == "application/json"
    output_schema = field(generation, "responseJsonSchema")
    assert output_schema["properties"]["time"] == {"type": ["string", "null"]}
    assert field(field(generation, "thinkingConfig"), "thinkingBudget") == 0


@pytest.mark.parametrize(
    ("model", "thinks"),
    [("gemini-2.5-flash", False), ("gemini-2.5-flash-lite", False), ("gemini-2.5-pro", True)],
)
async def test_thinking_is_off_on_flash_only(stub: GeminiStub, model: str, thinks: bool) -> None:
    gemini = GeminiModel(API_KEY, model, base_url=stub.base_url)
    try:
        await collect(gemini, ask())
    finally:
        await gemini.aclose()

    (sent,) = stub.requests
    assert sent.model == model
    assert sent.body is not None
    generation = field(sent.body, "generationConfig")
    assert ("thinkingConfig" in generation or "thinking_config" in generation) is not thinks


async def test_plain_request_sends_no_tools_or_schema(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    await collect(gemini, ask(tool_mode="none"))

    body = stub.requests[0].body
    assert body is not None
    assert "tools" not in body and "toolConfig" not in body
    generation = field(body, "generationConfig")
    assert "responseMimeType" not in generation and "response_mime_type" not in generation


# -- failures -----------------------------------------------------------------------------


async def test_rate_limit_with_retry_after_is_retried(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    stub.enqueue(HttpError(429, "Quota exceeded", retry_after="0.05"), Reply("Hello again"))

    chunks = await collect(gemini, ask())

    assert "".join(c.text for c in chunks) == "Hello again"
    assert len(stub.requests) == 2


async def test_rate_limit_retry_delay_comes_from_the_body(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    # RetryInfo asks for 3 s, more than the first-token budget: raised, not retried.
    stub.enqueue(HttpError(429, "Quota exceeded", retry_delay="3s"), Reply("never"))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask(), first_s=1.0)

    assert caught.value.reason is LlmReason.RATE_LIMITED
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 3.0
    assert caught.value.retryable
    assert len(stub.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_twice_raise_server(
    stub: GeminiStub, gemini: GeminiModel, status: int
) -> None:
    stub.enqueue(HttpError(status), HttpError(status), Reply("too late"))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask())

    assert caught.value.reason is LlmReason.SERVER
    assert caught.value.status == status
    assert len(stub.requests) == 2  # LanguageModel.options.max_attempts; the SDK's retries are off


async def test_unavailable_once_then_answer(stub: GeminiStub, gemini: GeminiModel) -> None:
    stub.enqueue(HttpError(503, "The model is overloaded."), Reply("Back"))

    chunks = await collect(gemini, ask())

    assert "".join(c.text for c in chunks) == "Back"


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_are_not_retried(
    stub: GeminiStub, gemini: GeminiModel, status: int
) -> None:
    stub.enqueue(HttpError(status, "Request had invalid authentication credentials."))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask())

    assert caught.value.reason is LlmReason.AUTH
    assert caught.value.status == status
    assert not caught.value.retryable
    assert len(stub.requests) == 1


async def test_wrong_api_key_is_auth(stub: GeminiStub) -> None:
    # Google answers 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID.
    gemini = GeminiModel("not-the-key", base_url=stub.base_url)
    try:
        with pytest.raises(LlmError) as caught:
            await collect(gemini, ask())
    finally:
        await gemini.aclose()

    assert caught.value.reason is LlmReason.AUTH
    assert caught.value.status == 400
    assert stub.requests[0].api_key == "not-the-key"


async def test_other_client_errors_are_bad_request(stub: GeminiStub, gemini: GeminiModel) -> None:
    stub.enqueue(HttpError(400, "Invalid JSON payload received."))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask())

    assert caught.value.reason is LlmReason.BAD_REQUEST
    assert "INVALID_ARGUMENT" in str(caught.value)
    assert "Invalid JSON payload" not in str(caught.value)  # Google's text is not echoed


async def test_error_messages_never_hold_the_prompt(stub: GeminiStub, gemini: GeminiModel) -> None:
    secret = "my number is 555-0199"
    stub.enqueue(HttpError(400, f"Bad value in {secret}"))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask(secret))

    assert "555-0199" not in str(caught.value)


async def test_hang_times_out_at_the_first_token_and_drops_the_stream(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    stub.enqueue(Hang(30))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask(), first_s=0.5)

    assert caught.value.reason is LlmReason.TIMEOUT
    (sent,) = stub.requests
    assert await sent.wait_async()
    assert sent.cut_by_client and not sent.completed


@pytest.mark.parametrize(
    "raw",
    ['{"candidates": [{"content": ', "<html>Bad Gateway</html>", '{"candidates": "none"}'],
    ids=["truncated-json", "not-json", "wrong-shape"],
)
async def test_malformed_body_is_malformed(stub: GeminiStub, gemini: GeminiModel, raw: str) -> None:
    stub.enqueue(Malformed(raw))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask())

    assert caught.value.reason is LlmReason.MALFORMED
    assert len(stub.requests) == 1


async def test_empty_answer_is_malformed(stub: GeminiStub, gemini: GeminiModel) -> None:
    stub.enqueue(Malformed("{}"))

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask())

    assert caught.value.reason is LlmReason.MALFORMED


@pytest.mark.parametrize(
    "behaviour",
    [
        Blocked("SAFETY"),
        Blocked("PROHIBITED_CONTENT"),
        Reply("I cannot", finish_reason="SAFETY"),
        Reply("", finish_reason="RECITATION"),
    ],
    ids=["prompt-safety", "prompt-prohibited", "finish-safety", "finish-recitation"],
)
async def test_blocked_prompt_or_answer_is_blocked(
    stub: GeminiStub, gemini: GeminiModel, behaviour: Blocked | Reply
) -> None:
    stub.enqueue(behaviour)

    with pytest.raises(LlmError) as caught:
        await collect(gemini, ask())

    assert caught.value.reason is LlmReason.BLOCKED
    assert not caught.value.retryable


async def test_connection_cut_mid_stream_is_network(stub: GeminiStub, gemini: GeminiModel) -> None:
    stub.enqueue(Reply("one two three four five six", chunks=3, cut_after=1), Reply("again"))

    received: list[str] = []
    with pytest.raises(LlmError) as caught:
        async for chunk in gemini.stream(ask(), first_token_by=_in(3.0), finish_by=_in(10.0)):
            received.append(chunk.text)

    assert caught.value.reason is LlmReason.NETWORK
    assert received == ["one two "]  # not retried once part of the answer is out
    assert len(stub.requests) == 1


async def test_refused_connection_is_network() -> None:
    with GeminiStub(API_KEY) as gone:
        url = gone.base_url
    gemini = GeminiModel(API_KEY, base_url=url)
    try:
        with pytest.raises(LlmError) as caught:
            await collect(gemini, ask(), first_s=2.0)
    finally:
        await gemini.aclose()

    assert caught.value.reason is LlmReason.NETWORK


# -- closing ------------------------------------------------------------------------------


async def test_closing_the_stream_mid_answer_cuts_the_http_stream(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    stub.enqueue(Reply(" ".join(f"word{i}" for i in range(20)), chunks=10, delay_s=0.2))

    stream = gemini.stream(ask(), first_token_by=_in(3.0), finish_by=_in(10.0))
    first = await anext(stream)
    await stream.aclose()  # a barge-in

    assert first.text.startswith("word0")
    (sent,) = stub.requests
    assert await sent.wait_async()
    assert sent.cut_by_client and not sent.completed


async def test_barge_in_through_the_turn_model_cuts_the_http_stream(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    stub.enqueue(Reply(" ".join(f"word{i}" for i in range(20)), chunks=10, delay_s=0.2))
    turn = TurnModel(gemini, client_id="llm-test-barge-in", channel="phone")

    speaking = asyncio.Event()

    async def speak() -> None:
        async for _ in turn.stream(ask()):
            speaking.set()
            await asyncio.sleep(10)  # the caller talks over the first sentence

    task = asyncio.create_task(speak())
    await asyncio.wait_for(speaking.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (sent,) = stub.requests
    assert await sent.wait_async()
    assert sent.cut_by_client
    assert turn.failure is None  # a barge-in is not a model failure


async def test_completed_stream_is_not_recorded_as_cut(
    stub: GeminiStub, gemini: GeminiModel
) -> None:
    stub.enqueue(Reply("All done here", chunks=2, delay_s=0.05))

    await collect(gemini, ask())

    (sent,) = stub.requests
    assert await sent.wait_async()
    assert sent.completed and not sent.cut_by_client


# -- per client ---------------------------------------------------------------------------


def _client(client_id: str, provider: str, model: str = "gemini-2.5-flash") -> ClientConfig:
    return ClientConfig.model_validate(
        {
            "client_id": client_id,
            "name": client_id.title(),
            "timezone": "Europe/Madrid",
            "llm": {"provider": provider, "model": model},
        }
    )


def test_factory_gives_gemini_clients_a_cached_model() -> None:
    models = gemini_models("a-key", "http://127.0.0.1:9")

    salon = models(_client("salon", "gemini", "gemini-2.5-pro"))
    assert isinstance(salon, GeminiModel)
    assert salon.model == "gemini-2.5-pro"
    assert models(_client("salon", "gemini", "gemini-2.5-pro")) is salon
    assert models(_client("dentist", "offline")) is None


def test_factory_without_a_key_warns_once_per_client(caplog: pytest.LogCaptureFixture) -> None:
    models = gemini_models(None, None)

    with caplog.at_level(logging.WARNING, logger="engine.llm"):
        assert models(_client("salon", "gemini")) is None
        assert models(_client("salon", "gemini")) is None
        assert models(_client("dentist", "gemini")) is None
        assert models(_client("garage", "offline")) is None

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    unset = "llm.provider gemini but GEMINI_API_KEY is unset; the offline engine answers"
    assert warnings == [f"client salon: {unset}", f"client dentist: {unset}"]


def _in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds

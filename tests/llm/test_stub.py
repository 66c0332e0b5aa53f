"""The Gemini REST stub itself, over plain HTTP: the endpoints and error bodies
other tests and the benchmarks rely on."""

from __future__ import annotations

import json
from typing import Any

import httpx

from engine.llm.types import FunctionCall
from testkit.gemini import GeminiStub, HttpError, Reply

from .conftest import API_KEY

BODY = {"contents": [{"role": "user", "parts": [{"text": "Is Monday free?"}]}]}


def _post(stub: GeminiStub, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{stub.base_url}{path}", json=BODY, timeout=5.0, **kwargs)


def test_generate_content_answers_one_json_response(stub: GeminiStub) -> None:
    stub.enqueue(Reply("Yes, at ten.", calls=(FunctionCall("book", {"day": "monday"}),)))

    answer = _post(stub, "/v1beta/models/gemini-2.5-flash:generateContent", params={"key": API_KEY})

    assert answer.status_code == 200
    (candidate,) = answer.json()["candidates"]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["parts"] == [
        {"text": "Yes, at ten."},
        {"functionCall": {"name": "book", "args": {"day": "monday"}}},
    ]
    usage = answer.json()["usageMetadata"]
    assert usage["promptTokenCount"] == 3
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert stub.requests[0].api_key == API_KEY and stub.requests[0].body == BODY


def test_stream_is_server_sent_events(stub: GeminiStub) -> None:
    stub.enqueue(Reply("one two three four", chunks=2))

    answer = _post(
        stub,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        params={"alt": "sse"},
        headers={"x-goog-api-key": API_KEY},
    )

    assert answer.headers["content-type"] == "text/event-stream"
    events = [json.loads(line[len("data: ") :]) for line in answer.text.split("\r\n\r\n") if line]
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in events] == [
        "one two ",
        "three four",
    ]
    assert [e["usageMetadata"]["candidatesTokenCount"] for e in events] == [2, 4]


def test_missing_key_is_permission_denied(stub: GeminiStub) -> None:
    answer = _post(stub, "/v1beta/models/gemini-2.5-flash:generateContent")

    assert answer.status_code == 403
    assert answer.json()["error"]["status"] == "PERMISSION_DENIED"


def test_unknown_path_is_not_found(stub: GeminiStub) -> None:
    answer = _post(stub, "/v1/models/gemini-2.5-flash:embedContent", params={"key": API_KEY})

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == 404


def test_queue_then_responder_then_default() -> None:
    def responder(body: dict[str, Any]) -> Reply | None:
        said = body["contents"][-1]["parts"][0]["text"]
        return Reply("Monday it is.") if "Monday" in said else None

    with GeminiStub(API_KEY, default=Reply("Default."), responder=responder) as stub:
        stub.enqueue(HttpError(429, retry_after="1"))
        path = "/v1beta/models/m:generateContent"
        limited = _post(stub, path, params={"key": API_KEY})
        scripted = _post(stub, path, params={"key": API_KEY})
        other = httpx.post(
            f"{stub.base_url}{path}",
            params={"key": API_KEY},
            json={"contents": [{"parts": [{"text": "Tuesday?"}]}]},
        )

    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert scripted.json()["candidates"][0]["content"]["parts"][0]["text"] == "Monday it is."
    assert other.json()["candidates"][0]["content"]["parts"][0]["text"] == "Default."

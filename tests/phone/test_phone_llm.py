"""A call on Gemini (the local REST stub): the model's wording is spoken
sentence by sentence as it streams, and a barge-in closes the model's stream
at once (nothing more generated, nothing more billed) while the turn still
commits what the caller said."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from phone.fake_twilio import FakeTwilio, answer, buzz, is_clear, is_end_mark, is_mark, is_media
from prometheus_client import REGISTRY

from engine.llm import FunctionCall
from engine.session import SessionKey
from gateway.app import create_app
from gateway.settings import Settings
from testkit.gemini import Behaviour, GeminiStub, Reply
from testkit.speech import FakeSpeech

REPO = Path(__file__).resolve().parents[2]
CLIENT = "spa-del-sol"
KEY = "phone-test-key"

pytestmark = pytest.mark.usefixtures("deadline")

SPOKEN = (
    "Lovely choice. The Swedish Massage is 60 min and $95, and it is our most "
    "popular treatment. May I have your name, please?"
)


def responder(body: dict[str, Any]) -> Behaviour:
    if body.get("tools"):
        return Reply(calls=(FunctionCall("update_booking", {"service": "Swedish Massage"}),))
    if body.get("generationConfig", {}).get("responseMimeType") == "application/json":
        return Reply(text=json.dumps({"purpose": "lead_capture", "confidence": 0.9}), chunks=1)
    # the wording: slow, so the caller can talk over it mid-stream
    return Reply(text=SPOKEN, chunks=8, delay_s=0.4)


@pytest.fixture(scope="module")
def stub() -> Iterator[GeminiStub]:
    with GeminiStub(api_key=KEY, responder=responder) as server:
        yield server


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, stub: GeminiStub) -> Iterator[TestClient]:
    clients = tmp_path_factory.mktemp("clients")
    shutil.copytree(REPO / "clients" / CLIENT, clients / CLIENT)
    path = clients / CLIENT / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["channels"]["phone"].update(greeting="Thanks for calling Spa del Sol.")
    config["llm"] = {"provider": "gemini", "first_token_s": {"phone": 1.5}}
    path.write_text(yaml.safe_dump(config))
    settings = Settings(
        _env_file=None,
        GATEWAY_CLIENTS_DIR=clients,
        GATEWAY_DATA_DIR=tmp_path_factory.mktemp("data"),
        GEMINI_API_KEY=KEY,
        GEMINI_BASE_URL=stub.base_url,
    )
    app: FastAPI = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


def test_a_barge_in_closes_the_model_stream_and_the_turn_still_commits(
    client: TestClient, fake_speech: FakeSpeech, stub: GeminiStub
) -> None:
    fake_speech.stt.queue("I would like to book a massage", "sorry, go on")
    fake_speech.tts.ms_per_char = 30
    call_sid = "CA" + "7" * 32
    with client.websocket_connect(f"/twilio/media/{CLIENT}") as ws:
        twilio = FakeTwilio(ws, call_sid, parameters=answer(client, call_sid))
        twilio.connect()
        twilio.start()
        twilio.read_until(is_end_mark)  # the greeting
        twilio.media(buzz())
        twilio.read_until(is_media)  # the first sentence plays while the model still streams
        twilio.read_until(is_mark)
        twilio.media(buzz())  # the caller talks over it
        twilio.read_until(is_clear)
        twilio.read_until(is_end_mark)
    wording = [r for r in stub.requests if r.body and not r.body.get("tools")]
    wording = [r for r in wording if "Draft reply" in json.dumps(r.body)]
    deadline = time.monotonic() + 10
    while not wording[0].cut_by_client and time.monotonic() < deadline:
        time.sleep(0.05)  # the stub notices the closed connection at its next write
    assert wording[0].cut_by_client and not wording[0].completed
    interrupted = REGISTRY.get_sample_value(
        "gateway_llm_fallbacks_total",
        {"client_id": CLIENT, "channel": "phone", "reason": "interrupted"},
    )
    assert interrupted == 1  # closed by the barge-in, not by a failed check
    store = client.app.state.gateway.store  # type: ignore[attr-defined]
    assert client.portal is not None
    loaded = client.portal.call(store.load, SessionKey(CLIENT, "phone", call_sid))
    assert loaded is not None
    state = loaded.session.purpose_state["lead_capture"]
    assert state["slots"] == {"service": "Swedish Massage"}  # the interrupted turn committed

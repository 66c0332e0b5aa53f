"""Lead capture with a language model (an in-process scripted model; the wire
format is tested against the Gemini stub in tests/llm): the model's function
calls drive the flow, its values are validated like typed input, its
phrasing keeps the flow's facts, and any failure leaves the turn to the
offline flow with nothing lost."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY

from engine import ConversationResponse
from engine.llm import FunctionCall, LlmChunk, LlmError, LlmReason, LlmRequest, Usage
from engine.messages import Channel, Discard, NormalizedMessage, TextDelta
from engine.session import SessionKey, ToolCallItem, ToolResultItem
from gateway.app import Gateway
from testkit.llm import Scripted, ScriptedModel, json_reply, text_reply

CLIENT = "spa-del-sol"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))


@pytest.fixture
def gw_options(tmp_path: Path) -> dict[str, object]:
    """``gw`` (tests/conftest.py): spa-del-sol with ``llm.provider: gemini`` and a
    short first-token budget (0.5 s), so a hanging model falls back quickly."""
    clients = tmp_path / "clients"
    shutil.copytree(REPO / "clients", clients)
    config = clients / CLIENT / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "llm:\n  provider: offline                # offline | gemini\n"
    assert old in text
    config.write_text(
        text.replace(
            old,
            "llm:\n  provider: gemini\n  first_token_s: {default: 0.5, phone: 0.5}\n  total_s: 4\n",
        ),
        encoding="utf-8",
    )
    return {"clients_dir": clients, "data_dir": tmp_path / "data", "clock": lambda: NOW}


def use(gw: Gateway, model: ScriptedModel) -> ScriptedModel:
    gw.engine.tools.set_models(lambda client: model)
    return model


def _last_user_text(request: LlmRequest) -> str:
    return next(m.text for m in reversed(request.messages) if m.role == "user" and m.text)


def _calls(*calls: FunctionCall) -> Scripted:
    return Scripted((LlmChunk(calls=calls, usage=Usage(120, 15), finish="STOP"),))


def _f(function: str, **args: Any) -> FunctionCall:
    return FunctionCall(function, args)


Understand = Callable[[str, LlmRequest], Scripted]


def dialogue(understand: Understand, phrasing: Callable[[str], str] | None = None) -> ScriptedModel:
    """A model that reads each message with ``understand`` (user text ->
    function calls) and phrases drafts with ``phrasing`` (draft -> text; by
    default "Lovely! " + the draft)."""

    def reply(request: LlmRequest) -> Scripted:
        if request.tools:
            return understand(_last_user_text(request), request)
        if request.purpose == "router":
            text = _last_user_text(request)
            purpose = "support" if "parking" in text else "lead_capture"
            return json_reply({"purpose": purpose, "confidence": 0.9})
        if request.response_schema is not None:  # support's grounded answer: not scripted here
            return Scripted(error=LlmError("scripted", LlmReason.SERVER, status=503))
        draft = json.loads(request.system.rsplit("Draft reply: ", 1)[1])
        return text_reply((phrasing or (lambda d: "Lovely! " + d))(draft))

    return ScriptedModel(default=reply)


async def say(
    gw: Gateway, text: str, session: str = "s1", channel: str = "web"
) -> ConversationResponse:
    return await gw.engine.handle_turn(CLIENT, channel, None, session, text)


async def events(gw: Gateway, text: str, session: str = "s1") -> list[object]:
    return [e async for e in gw.engine.stream_turn(_message(session, text))]


BOOKING = {
    "I'd like the deep tissue one on Friday at 2pm": _calls(
        _f("update_booking", service="Deep Tissue Massage", date="2026-11-27", time="14:00")
    ),
    "I'm Maria Lopez, 415 555 0134, maria@example.com": _calls(
        _f("update_booking", name="Maria Lopez", phone="415 555 0134", email="maria@example.com")
    ),
    "my wife Ana will come, not me": _calls(_f("update_booking", name="Ana Lopez")),
    "sounds right": _calls(_f("confirm_booking")),
}


def scripted(table: dict[str, Scripted]) -> Understand:
    def understand(text: str, request: LlmRequest) -> Scripted:
        return table[text]

    return understand


async def test_a_booking_through_function_calls_with_a_correction_only_the_model_understood(
    gw: Gateway,
) -> None:
    model = use(gw, dialogue(scripted(BOOKING)))
    r = await say(gw, "I'd like the deep tissue one on Friday at 2pm")
    assert r.metadata.slots == {
        "service": "Deep Tissue Massage",
        "time": "2026-11-27T14:00:00-08:00",
    }
    assert r.text.startswith("Lovely! ") and r.metadata.expecting == "name"
    r = await say(gw, "I'm Maria Lopez, 415 555 0134, maria@example.com")
    assert r.metadata.expecting == "confirmation" and "Maria Lopez" in r.text
    r = await say(gw, "my wife Ana will come, not me")
    assert r.metadata.slots["name"] == "Ana Lopez" and r.metadata.expecting == "confirmation"
    r = await say(gw, "sounds right")  # no yes-word the rules know
    assert r.metadata.state == "booked"
    (lead,) = await gw.leads.list_leads(CLIENT)
    assert lead.lead.fields["name"] == "Ana Lopez"
    assert lead.lead.fields["phone"] == "+14155550134"
    assert lead.lead.start == "2026-11-27T14:00:00-08:00"
    understanding = [q for q in model.requests if q.tools]
    assert len(understanding) == 4
    assert (
        "Spa del Sol" in understanding[0].system
        and "Deep Tissue Massage: 90 min, $140" in understanding[0].system
    )
    loaded = await gw.store.load(SessionKey(CLIENT, "web", "s1"))
    assert loaded is not None
    usage = loaded.session.llm_usage
    assert usage.calls == 9 and usage.input_tokens > 0  # 1 routing, 4 readings, 4 phrasings
    assert usage.input_tokens > 0 and usage.cost_usd > 0
    tokens = REGISTRY.get_sample_value(
        "gateway_llm_tokens_total",
        {"client_id": CLIENT, "model": "gemini-2.5-flash", "direction": "input"},
    )
    assert tokens is not None and tokens >= usage.input_tokens


async def test_the_earliest_on_saturday_goes_through_the_availability_tool(gw: Gateway) -> None:
    def understand(text: str, request: LlmRequest) -> Scripted:
        last = request.messages[-1]
        if last.responses:  # the tool's answer came back: take its first free time
            free = last.responses[0].response["free_times"]
            return _calls(
                _f("update_booking", service="Swedish Massage", date="2026-11-28", time=free[0])
            )
        return _calls(_f("check_availability", date="2026-11-28", service="Swedish Massage"))

    model = use(gw, dialogue(understand))
    r = await say(gw, "what's the earliest you have on a Saturday for a swedish massage?")
    assert r.metadata.slots["time"] == "2026-11-28T10:00:00-08:00"  # opens at 10 on Saturdays
    assert r.metadata.slots["service"] == "Swedish Massage"
    assert len([q for q in model.requests if q.tools]) == 2
    loaded = await gw.store.load(SessionKey(CLIENT, "web", "s1"))
    assert loaded is not None
    calls = [i for i in loaded.session.transcript if isinstance(i, ToolCallItem)]
    results = [i for i in loaded.session.transcript if isinstance(i, ToolResultItem)]
    assert [c.name for c in calls] == ["check_availability"]
    assert isinstance(results[0].result, dict) and results[0].result["free_times"][0] == "10:00"


async def test_values_that_fail_validation_are_not_written(gw: Gateway) -> None:
    use(
        gw,
        dialogue(
            scripted(
                {
                    "book me a massage": _calls(_f("update_booking", service="Swedish Massage")),
                    "Maria, 12, maria-at-nowhere": _calls(
                        _f(
                            "update_booking",
                            name="Maria Lopez",
                            phone="12",
                            email="maria-at-nowhere",
                        )
                    ),
                    "a hot stone thing on the 45th": _calls(
                        _f("update_booking", service="Hot Stone Therapy", date="2026-11-45")
                    ),
                }
            )
        ),
    )
    await say(gw, "book me a massage")
    r = await say(gw, "Maria, 12, maria-at-nowhere")
    assert r.metadata.slots == {"service": "Swedish Massage", "name": "Maria Lopez"}
    assert r.metadata.expecting in ("phone", "email")
    r = await say(gw, "a hot stone thing on the 45th")
    assert r.metadata.slots["service"] == "Swedish Massage"  # not replaced by an unknown one
    assert "time" not in r.metadata.slots


@pytest.mark.parametrize(
    "failure",
    [
        Scripted(error=LlmError("scripted", LlmReason.SERVER, status=500)),
        Scripted(error=LlmError("scripted", LlmReason.RATE_LIMITED, status=429, retry_after_s=30)),
        Scripted(error=LlmError("scripted", LlmReason.BLOCKED)),
        Scripted((LlmChunk(text="Sure! I can help with that."),)),  # prose, not a call
        Scripted((LlmChunk(calls=(FunctionCall("delete_everything", {}),)),)),
        Scripted(first_delay_s=30.0),  # a hang: past the 0.5 s first-token budget
    ],
    ids=["500", "429", "blocked", "prose", "unknown-function", "hang"],
)
async def test_a_failing_model_leaves_the_turn_to_the_offline_flow_and_loses_nothing(
    gw: Gateway, failure: Scripted
) -> None:
    healthy = scripted(BOOKING)
    failing = {"Maria Lopez"}

    def understand(text: str, request: LlmRequest) -> Scripted:
        return failure if text in failing else healthy(text, request)

    model = use(gw, dialogue(understand))
    await say(gw, "I'd like the deep tissue one on Friday at 2pm")
    before = len(model.requests)
    r = await say(gw, "Maria Lopez")  # the rules read it
    assert len(model.requests) > before  # the model was asked (and retried when it may)
    assert r.text.startswith("Thanks, Maria.")
    assert (
        r.metadata.slots["name"] == "Maria Lopez"
        and r.metadata.slots["service"] == "Deep Tissue Massage"
    )
    r = await say(gw, "I'm Maria Lopez, 415 555 0134, maria@example.com")  # the model again
    assert r.text.startswith("Lovely! ") and r.metadata.expecting == "confirmation"
    r = await say(gw, "sounds right")
    assert r.metadata.state == "booked"
    assert len(await gw.leads.list_leads(CLIENT)) == 1


async def test_a_phrasing_that_invents_a_fact_is_withdrawn_and_the_draft_is_sent(
    gw: Gateway,
) -> None:
    use(
        gw,
        dialogue(
            scripted(BOOKING),
            phrasing=lambda draft: "Great choice. It's only $99 today! May I have your name?",
        ),
    )
    got = await events(gw, "I'd like the deep tissue one on Friday at 2pm")
    final = got[-1]
    assert isinstance(final, ConversationResponse)
    assert "$99" not in final.text and "$140" in final.text  # the flow's own draft
    deltas = [e.content for e in got if isinstance(e, TextDelta)]
    cut = next(i for i, e in enumerate(got) if isinstance(e, Discard))
    shown_after = "".join(e.content for e in got[cut:] if isinstance(e, TextDelta))
    assert shown_after == final.text
    assert "Great choice." in "".join(deltas)  # it streamed, then was withdrawn


async def test_a_phrasing_that_drops_a_fact_is_withdrawn(gw: Gateway) -> None:
    use(gw, dialogue(scripted(BOOKING), phrasing=lambda draft: "Got it. What's your name?"))
    r = await say(gw, "I'd like the deep tissue one on Friday at 2pm")
    assert "$140" in r.text and "90 min" in r.text


async def test_a_phrasing_that_asks_something_else_is_withdrawn(gw: Gateway) -> None:
    use(gw, dialogue(scripted(BOOKING)))
    await say(gw, "I'd like the deep tissue one on Friday at 2pm")
    use(gw, dialogue(scripted(BOOKING), phrasing=lambda draft: "Anything else I can do for you?"))
    r = await say(gw, "I'm Maria Lopez, 415 555 0134, maria@example.com")
    assert r.text.endswith("Shall I book it?")  # the flow's own question, not the model's


async def test_a_question_mid_booking_goes_to_support_and_the_booking_resumes(gw: Gateway) -> None:
    table = dict(BOOKING)
    table["do you have parking?"] = _calls(_f("other_topic"))
    use(gw, dialogue(scripted(table)))
    await say(gw, "I'd like the deep tissue one on Friday at 2pm")
    r = await say(gw, "do you have parking?")
    answer, _, rest = r.text.partition("Now, back to your booking: ")
    assert answer.strip() and "name" in rest
    assert r.metadata.expecting == "name"


async def test_two_bookings_and_leaving_through_function_calls(gw: Gateway) -> None:
    table = dict(BOOKING)
    table["and a manicure for me too please"] = _calls(_f("update_booking", also_book=["Manicure"]))
    table["Saturday 11am"] = _calls(_f("update_booking", date="2026-11-28", time="11:00"))
    use(gw, dialogue(scripted(table)))
    await say(gw, "I'd like the deep tissue one on Friday at 2pm")
    await say(gw, "I'm Maria Lopez, 415 555 0134, maria@example.com")
    r = await say(gw, "and a manicure for me too please")
    assert "Manicure" in r.text and r.metadata.expecting == "confirmation"
    r = await say(gw, "sounds right")
    assert r.metadata.slots["service"] == "Manicure" and r.metadata.expecting == "time"
    r = await say(gw, "Saturday 11am")
    assert r.metadata.expecting == "confirmation"
    r = await say(gw, "sounds right")
    assert r.metadata.state == "booked"
    leads = await gw.leads.list_leads(CLIENT)
    assert sorted(lead.lead.service or "" for lead in leads) == ["Deep Tissue Massage", "Manicure"]


async def test_cancel_and_asking_for_a_person_are_the_flow_s_own_exits(gw: Gateway) -> None:
    table = dict(BOOKING)
    table["forget it"] = _calls(_f("cancel_booking"))
    table["can I speak with someone real"] = _calls(_f("ask_for_person"))
    use(gw, dialogue(scripted(table)))
    await say(gw, "I'd like the deep tissue one on Friday at 2pm", session="a")
    r = await say(gw, "forget it", session="a")
    assert "stopped the booking" in r.text
    await say(gw, "I'd like the deep tissue one on Friday at 2pm", session="b")
    r = await say(gw, "can I speak with someone real", session="b")
    assert r.metadata.purpose == "human"


async def test_a_wording_that_stalls_mid_stream_is_withdrawn_and_the_turn_ends(
    gw: Gateway,
) -> None:
    healthy = dialogue(scripted(BOOKING))

    def reply(request: LlmRequest) -> Scripted:
        if request.tools or request.response_schema is not None:
            assert callable(healthy.default)
            return healthy.default(request)
        first = LlmChunk(text="Lovely choice. ")
        return Scripted((first, LlmChunk(text="Never sent.")), delay_s=60.0)

    use(gw, ScriptedModel(default=reply))
    got = await events(gw, "I'd like the deep tissue one on Friday at 2pm")
    final = got[-1]
    assert isinstance(final, ConversationResponse)
    assert any(isinstance(e, Discard) for e in got)  # "Lovely choice." was withdrawn
    assert "$140" in final.text and final.metadata.expecting == "name"


async def test_a_conversation_stuck_with_the_model_on_goes_to_a_person(gw: Gateway) -> None:
    """The model reads nothing useful three times: the same question comes
    back each time, and stuck detection hands the next message to a person."""
    table = dict(BOOKING)
    table["hmm"] = _calls(_f("update_booking"))
    use(gw, dialogue(scripted(table)))
    await say(gw, "I'd like the deep tissue one on Friday at 2pm")
    replies = [await say(gw, "hmm") for _ in range(4)]
    assert len({r.text for r in replies[:3]}) == 1  # the same question three times...
    assert replies[-1].metadata.purpose == "human"  # ...then a person takes over
    loaded = await gw.store.load(SessionKey(CLIENT, "web", "s1"))
    assert loaded is not None and loaded.session.purpose == "human"
    assert loaded.session.purpose_state["lead_capture"]["slots"]["service"] == "Deep Tissue Massage"


def _message(session: str, text: str) -> NormalizedMessage:
    return NormalizedMessage(client_id=CLIENT, channel=Channel.WEB, session_id=session, text=text)

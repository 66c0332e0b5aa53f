"""Support answers from a language model, checked before they are sent.

The support agent runs on the shipped clients' real knowledge (sparse index,
built at start-up) with a :class:`ScriptedModel` behind ``ctx.llm``: a
grounded answer that passes its checks is sent with its sources; one that
cites an unknown passage, invents a number or a name, or says "No" where the
passage says yes is replaced by the offline (extractive) answer, and ends the
model's part of the turn. The check rules themselves are pinned on
hand-made passages at the end."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY

from engine.agents import AgentReply, TurnContext
from engine.config import ClientConfig, load_client
from engine.effects import Effects
from engine.knowledge.types import Passage
from engine.llm import LlmError, LlmMessage, LlmReason, LlmRequest, TurnModel
from engine.messages import NormalizedMessage
from engine.session import ConversationSession, SessionKey, Turn
from gateway.app import Gateway
from purposes.support.agent import SupportAgent
from purposes.support.answer import AnswerRequest
from purposes.support.grounded import FACTS_ID, generate_answer
from testkit.llm import Scripted, ScriptedModel, json_reply, text_reply

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 21, 11, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # a Saturday
SPA, DENTAL = "spa-del-sol", "bright-smile-dental"

Reply = Scripted | Callable[[LlmRequest], Scripted]


@pytest.fixture
def gw_options() -> dict[str, object]:
    """``gw`` (tests/conftest.py) at :data:`NOW`, sparse retrieval, once every
    client's knowledge is searchable."""
    return {"clock": lambda: NOW, "GATEWAY_EMBEDDER": "none", "knowledge_ready": True}


@dataclass
class Run:
    reply: AgentReply
    llm: TurnModel | None
    model: ScriptedModel | None


async def turn(
    gw: Gateway,
    client_id: str,
    text: str,
    script: Sequence[Reply] | None,
    *,
    channel: str = "web",
    session: ConversationSession | None = None,
) -> Run:
    """One support turn; ``script`` None: offline (``ctx.llm`` is None)."""
    client = gw.registry.get(client_id)
    assert client is not None
    tools = gw.engine.tools.for_client(client)
    key = SessionKey(client_id, channel, "s1")
    model = ScriptedModel(script=list(script)) if script is not None else None
    llm = TurnModel(model, client_id=client_id, channel=channel) if model else None
    ctx = TurnContext(
        client=client,
        session=session or ConversationSession.new(key),
        message=NormalizedMessage(
            client_id=client_id,
            channel=channel,  # type: ignore[arg-type]
            session_id="s1",
            text=text,
        ),
        tools=tools,
        now=NOW,
        effects=Effects("t1", key, notifiers=tools.notifiers),
        llm=llm,
    )
    return Run(await SupportAgent().handle(ctx), llm, model)


_PASSAGE = re.compile(r"^\[(P\d+)\][^\n]*\n(.*?)(?=^\[P\d+\]|^The conversation|\Z)", re.M | re.S)


def label_of(request: LlmRequest, phrase: str) -> str:
    """The label the prompt gave the passage that contains ``phrase``."""
    for m in _PASSAGE.finditer(request.system):
        if phrase in m.group(2):
            return m.group(1)
    raise AssertionError(f"no passage with {phrase!r} in the prompt")


def answer(text: str, *from_: str, facts: bool = False) -> Callable[[LlmRequest], Scripted]:
    """The model answers ``text`` citing the passages holding the phrases ``from_``."""

    def reply(request: LlmRequest) -> Scripted:
        cited = [label_of(request, p) for p in from_] + ([FACTS_ID] if facts else [])
        return json_reply({"answer": text, "cited": cited, "abstain": False})

    return reply


def checks(client_id: str, outcome: str) -> float:
    labels = {"client_id": client_id, "outcome": outcome}
    return REGISTRY.get_sample_value("gateway_llm_answer_checks_total", labels) or 0.0


async def test_a_grounded_answer_is_sent_with_its_sources(gw: Gateway) -> None:
    before = checks(SPA, "passed")
    run = await turn(
        gw,
        SPA,
        "is there parking?",
        [answer("Yes, there is free parking behind the building.", "Free parking")],
    )
    r = run.reply
    assert r.state == "answered"
    assert r.text == "Yes, there is free parking behind the building. (from faq.md)"
    [source] = r.sources
    assert source.file == "faq.md" and source.section.endswith("Where are you located?")
    assert r.confidence is not None and 0.5 <= r.confidence <= 1.0
    assert checks(SPA, "passed") == before + 1
    assert run.llm is not None and run.llm.failure is None

    assert run.model is not None
    [request] = run.model.requests
    assert "Spa del Sol" in request.system
    assert "answer only from the passages and facts below" in request.system.lower()
    assert "Free parking is available behind the building." in request.system
    assert request.messages == (LlmMessage(role="user", text="is there parking?"),)
    assert request.temperature <= 0.2 and request.response_schema is not None
    cited = request.response_schema["properties"]["cited"]["items"]
    assert label_of(request, "Free parking") in cited["enum"]


async def test_a_follow_up_shows_the_model_the_conversation_so_far(gw: Gateway) -> None:
    session = ConversationSession.new(SessionKey(SPA, "web", "s1"))
    session.transcript += [
        Turn(role="user", text="do you sell gift cards?"),
        Turn(role="assistant", text="Yes. Gift cards are available at the front desk."),
        Turn(role="user", text="how long are they valid?"),  # this turn's message
    ]
    reply = answer("They are valid for two years.", "valid for two years")
    run = await turn(gw, SPA, "how long are they valid?", [reply], session=session)
    assert run.reply.text == "They are valid for two years. (from faq.md)"
    assert run.model is not None
    system = run.model.requests[0].system
    assert "Customer: do you sell gift cards?" in system
    assert "Assistant: Yes. Gift cards are available at the front desk." in system
    assert "Customer: how long are they valid?" not in system


@pytest.mark.parametrize(
    ("client_id", "question", "reply", "outcome", "why"),
    [
        pytest.param(
            SPA,
            "is there parking?",
            json_reply(
                {
                    "answer": "Yes, free parking behind the building.",
                    "cited": ["P9"],
                    "abstain": False,
                }
            ),
            "bad_citation",
            "unknown",
            id="unknown-passage",
        ),
        pytest.param(
            SPA,
            "is there parking?",
            json_reply(
                {"answer": "Yes, free parking behind the building.", "cited": [], "abstain": False}
            ),
            "bad_citation",
            "unknown",
            id="nothing-cited",
        ),
        pytest.param(
            DENTAL,
            "do you offer sedation for nervous patients?",
            answer("Yes, laughing gas is $35 per visit.", "nitrous oxide"),
            "unsupported_fact",
            "a number",
            id="invented-price",
        ),
        pytest.param(
            SPA,
            "how long are gift cards valid?",
            answer("Gift cards are valid for three years.", "valid for two years"),
            "unsupported_fact",
            "a number",
            id="invented-duration",
        ),
        pytest.param(
            DENTAL,
            "what should I do in a dental emergency?",
            answer("Call us on (512) 555-0199 as early as you can.", "emergency slots"),
            "unsupported_fact",
            "a number",
            id="invented-phone",
        ),
        pytest.param(
            SPA,
            "where are you located?",
            answer("We are at 1200 Ocean Avenue in Santa Barbara.", "1200 Ocean Avenue"),
            "unsupported_fact",
            "a name",
            id="invented-name",
        ),
        pytest.param(
            SPA,
            "is the spa wheelchair accessible?",
            answer("No, the spa is not wheelchair accessible.", "wheelchair accessible"),
            "unsupported_fact",
            "a yes/no",
            id="no-where-the-passage-says-yes",
        ),
        pytest.param(
            DENTAL,
            "do you take x-rays at every visit?",
            answer("Yes, we take X-rays at every visit.", "bitewing X-rays"),
            "unsupported_fact",
            "a yes/no",
            id="yes-where-the-passage-says-no",
        ),
        pytest.param(
            SPA,
            "is there parking?",
            text_reply("Yes! Free parking is behind the building."),
            "malformed",
            "not JSON",
            id="not-json",
        ),
        pytest.param(
            SPA,
            "is there parking?",
            json_reply({"answer": "Yes, free parking.", "cited": "P1", "abstain": "no"}),
            "malformed",
            "not JSON",
            id="wrong-shape",
        ),
    ],
)
async def test_a_reply_that_fails_its_checks_is_replaced_by_the_extractive_answer(
    gw: Gateway, client_id: str, question: str, reply: Reply, outcome: str, why: str
) -> None:
    offline = (await turn(gw, client_id, question, None)).reply
    assert offline.state == "answered"
    before = checks(client_id, outcome)

    run = await turn(gw, client_id, question, [reply])
    assert run.reply.text == offline.text
    assert run.reply.sources == offline.sources
    assert run.reply.confidence == offline.confidence
    assert checks(client_id, outcome) == before + 1
    # the rest of the turn is offline: a later model call is not even tried
    assert run.llm is not None and run.llm.failure is not None
    assert run.llm.failure.reason == LlmReason.MALFORMED and not run.llm.available
    assert why in str(run.llm.failure)
    with pytest.raises(LlmError) as skipped:
        await run.llm.generate(LlmRequest(system="", messages=()))
    assert skipped.value.reason == LlmReason.SKIPPED
    assert run.model is not None and len(run.model.requests) == 1


async def test_a_failed_model_call_gives_the_extractive_answer(gw: Gateway) -> None:
    offline = (await turn(gw, SPA, "is there parking?", None)).reply
    before = {o: checks(SPA, o) for o in ("passed", "malformed", "abstained")}
    error = LlmError("scripted", LlmReason.SERVER, "unavailable", status=503)
    run = await turn(gw, SPA, "is there parking?", [Scripted(error=error), Scripted(error=error)])
    assert run.reply.text == offline.text and run.reply.sources == offline.sources
    assert run.llm is not None and run.llm.failure is not None
    assert run.llm.failure.reason == LlmReason.SERVER
    assert {o: checks(SPA, o) for o in before} == before


async def test_the_models_abstention_takes_the_miss_path(gw: Gateway) -> None:
    before = checks(SPA, "abstained")
    abstain = json_reply({"answer": "", "cited": [], "abstain": True})
    session = ConversationSession.new(SessionKey(SPA, "web", "s1"))
    # the extractive composer would answer this one; the model's abstention stands
    run = await turn(gw, SPA, "is there parking?", [abstain], session=session)
    r = run.reply
    assert r.state == "unsure" and r.sources == ()
    assert any(q.title == "Talk to a person" for q in r.quick_replies)
    assert checks(SPA, "abstained") == before + 1
    assert run.llm is not None and run.llm.failure is None
    # a second question in a row the model cannot answer brings in a person
    run = await turn(gw, SPA, "can I bring my own towels?", [abstain], session=session)
    assert run.model is not None and len(run.model.requests) == 1
    assert run.reply.handoff is not None and run.reply.handoff.target == "human"


async def test_on_the_phone_the_answer_is_short_and_speakable(gw: Gateway) -> None:
    said = (
        "Yes, gift cards are available at the **front desk** from $25. "
        "They are valid for two years. You can also buy them on our website."
    )
    run = await turn(
        gw, SPA, "do you sell gift cards?", [answer(said, "Gift cards are")], channel="phone"
    )
    r = run.reply
    assert r.state == "answered"
    assert r.text == (
        "Yes, gift cards are available at the front desk from 25 dollars. "
        "They are valid for two years."
    )
    assert [s.file for s in r.sources] == ["faq.md"]
    assert run.model is not None
    assert "spoken on a phone call" in run.model.requests[0].system


async def test_a_config_fact_is_cited_as_facts(gw: Gateway) -> None:
    run = await turn(
        gw,
        SPA,
        "how much is a facial?",
        [answer("The Signature Facial is $85 and takes 50 minutes.", facts=True)],
    )
    r = run.reply
    assert r.text == "The Signature Facial is $85 and takes 50 minutes."
    assert [(s.file, s.section) for s in r.sources] == [("config", "config: services")]
    assert run.model is not None and "[facts]" in run.model.requests[0].system

    offline = (await turn(gw, SPA, "how much is a facial?", None)).reply
    run = await turn(
        gw,
        SPA,
        "how much is a facial?",
        [answer("The Signature Facial is $80.", facts=True)],
    )
    assert run.reply.text == offline.text and "$85" in offline.text


async def test_without_anything_to_answer_from_the_model_is_not_asked(gw: Gateway) -> None:
    client = gw.registry.get(SPA)
    assert client is not None
    model = ScriptedModel()
    llm = TurnModel(model, client_id=SPA, channel="web")
    assert await generate_answer(llm, AnswerRequest("is there parking?"), client) is None
    assert model.requests == [] and llm.failure is None


# --- the check rules, on hand-made passages --------------------------------------------


@pytest.fixture(scope="module")
def spa() -> ClientConfig:
    config, problems = load_client(REPO / "clients" / SPA)
    assert config is not None, problems
    return config


POLICY = Passage(
    id="policy",
    file="policies.md",
    section="Policies > Cancellations",
    page=None,
    text=(
        "Appointments can be moved free of charge up to 24 hours before the start. "
        "Later cancellations are charged 50% of the service price. "
        "Call us on (415) 555-0100 to cancel.\n\n"
        "The front desk opens at 9:00 and Maria Lopez manages bookings."
    ),
    score=0.5,
)
PETS = Passage(
    id="pets",
    file="faq.md",
    section="FAQ > Can I bring my dog?",
    page=None,
    text="No. Pets are not allowed in the spa, except assistance dogs.",
    score=0.4,
)


@pytest.mark.parametrize(
    ("said", "passes"),
    [
        ("You can move it for free up to 24 hours before.", True),
        ("You can move it for free up to 1 day before.", True),
        ("You can move it for free up to 48 hours before.", False),
        ("Later cancellations cost 50 percent of the price.", True),
        ("Later cancellations cost $50.", False),
        ("Call 415-555-0100 to cancel.", True),
        ("Call (415) 555-0101 to cancel.", False),
        ("The front desk opens at 9am.", True),
        ("The front desk opens at 10am.", False),
        ("Ask Maria Lopez at the front desk.", True),
        ("Ask Maria Garcia at the front desk.", False),
        ("See https://spa.example/policy for details.", False),
        ("Yes, you can move it free of charge up to 24 hours before.", True),
    ],
)
async def test_numbers_names_and_links_must_come_from_the_cited_passage(
    spa: ClientConfig, said: str, passes: bool
) -> None:
    model = ScriptedModel(script=[json_reply({"answer": said, "cited": ["P1"], "abstain": False})])
    llm = TurnModel(model, client_id=SPA, channel="web")
    request = AnswerRequest("can I move my appointment?", passages=[POLICY, PETS])
    got = await generate_answer(llm, request, spa)
    assert (got is not None) is passes
    if got is not None:
        assert got.cited == ("policy",) and got.text.endswith("(from policies.md)")


@pytest.mark.parametrize(
    ("said", "passes"),
    [
        ("No, pets are not allowed, except assistance dogs.", True),
        ("Unfortunately pets are not allowed.", True),
        ("Yes, you can bring your dog.", False),
        ("Of course, dogs are welcome.", False),
        ("Only assistance dogs are allowed.", True),
    ],
)
async def test_a_yes_or_no_must_agree_with_the_cited_passage(
    spa: ClientConfig, said: str, passes: bool
) -> None:
    model = ScriptedModel(
        script=[json_reply({"answer": said, "cited": ["pets"], "abstain": False})]
    )
    llm = TurnModel(model, client_id=SPA, channel="web")
    request = AnswerRequest("can I bring my dog?", passages=[POLICY, PETS])
    got = await generate_answer(llm, request, spa)
    assert (got is not None) is passes
    assert (llm.failure is None) is passes

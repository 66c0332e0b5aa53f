"""Support: short answers drawn only from the client's config and knowledge, or an
honest "I don't know" with the offer of a person.

One question per turn (see ``FLOW.md`` beside this file):

1. a request for a person -> the engine's escalation tool (the ``human`` agent);
2. config facts first (``facts.py``: hours in the client's timezone, services,
   durations, prices in its currency) — never from retrieval;
3. else the client's knowledge (``ctx.tools.knowledge``: hybrid retrieval over
   its own folder, no other client's) and the extractive composer
   (``answer.py``), which abstains below ``support.min_confidence``. With a
   language model (``ctx.llm``) the model answers from the same passages and
   fact first, and its answer goes out only when it passes its checks
   (``grounded.py``);
4. an answer carries ``sources`` (file, section, page, score) and
   ``confidence``; on the phone it is one or two short sentences;
5. an abstention says so and offers a person; a second question in a row the
   knowledge cannot answer hands the conversation to a person.

Each answer hands back (``completed``, or ``uncertain`` for an abstention), so
a booking suspended for the question resumes in the same reply and the next
question is routed afresh. Until a client's index is ready, support says so
instead of guessing.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel

from engine.agents import Agent, AgentReply, Handback, HandbackStatus, TurnContext
from engine.config import ClientConfig
from engine.messages import QuickReply, Source
from engine.router import HUMAN_CHOICE, is_question, wants_human
from engine.session import Turn
from purposes.support.answer import Answer, AnswerRequest, compose
from purposes.support.facts import answer_fact
from purposes.support.grounded import FACTS_ID, generate_answer

if TYPE_CHECKING:
    from engine.knowledge.types import Passage

__all__ = ["SupportAgent"]

MAX_MISSES = 2
"""Questions in a row the knowledge cannot answer before a person is brought in."""
TOP_K = 5

_TOPICS = re.compile(
    r"\b(hours?|open|close[sd]?|opening|closing|price|prices|cost|costs|how much|how long|"
    r"parking|park|address|located|location|directions|insurance|insured|pay|payment|"
    r"card|cards|cash|refund|cancel|cancellation|policy|policies|gift|accessible|wheelchair|"
    r"kids?|children|age|covid|mask|bring|wear|arrive|wifi)\b",
    re.IGNORECASE,
)
_ASKING = re.compile(r"^\s*(i have a question|i'?ve got a question|question)\W*$", re.IGNORECASE)


class SupportState(BaseModel):
    """Kept in ``session.purpose_state["support"]``."""

    misses: int = 0
    """Questions in a row answered with "I don't know"."""


class SupportAgent(Agent):
    """The support purpose. Stateless apart from the session."""

    purpose = "support"
    menu = QuickReply(title="Ask a question", value="I have a question")
    offer = "answer your questions"

    def intent(self, text: str, client: ClientConfig) -> float:
        """0.6 for a question or a support topic (below a booking's 0.9)."""
        if _ASKING.match(text) or is_question(text) or _TOPICS.search(text):
            return 0.6
        return 0.0

    async def handle(self, ctx: TurnContext) -> AgentReply:
        raw = ctx.session.purpose_state.get(self.purpose)
        state = SupportState.model_validate(raw) if raw else SupportState()
        try:
            return await self._answer(ctx, state)
        finally:
            ctx.session.purpose_state[self.purpose] = state.model_dump(mode="json")

    async def _answer(self, ctx: TurnContext, state: SupportState) -> AgentReply:
        text, client = ctx.text.strip(), ctx.client
        if wants_human(text):
            return ctx.escalate("asked for a person")
        if _ASKING.match(text):
            return AgentReply(
                text=f"Sure — what would you like to know about {client.name}?",
                expecting="question",
                state="listening",
            )
        voice = ctx.session.channel == "phone"
        fact = answer_fact(text, client, ctx.now.astimezone(client.tz))
        passages: list[Passage] = []
        knowledge = ctx.tools.knowledge
        not_ready = False
        if fact is None and knowledge is not None:
            if knowledge.status() == "ready":
                passages = await knowledge.search(text, k=TOP_K)
            else:
                not_ready = True
        request = AnswerRequest(question=text, passages=passages, fact=fact, voice=voice)
        answer: Answer | None = None
        if ctx.llm is not None and ctx.llm.available:
            answer = await generate_answer(ctx.llm, request, client, _history(ctx))
        if answer is None:
            answer = await compose(
                request,
                client.support.min_confidence,
                # sentences and headings weighed by meaning too (None when sparse-only)
                similarity=knowledge.similarity if passages and knowledge is not None else None,
            )
        if not answer.abstained:
            state.misses = 0
            return AgentReply(
                text=answer.text,
                confidence=answer.confidence,
                state="answered",
                sources=_sources(answer, passages, fact_source=fact.source if fact else None),
                handback=Handback(HandbackStatus.COMPLETED, summary="answered a question"),
            )
        if not_ready:
            return AgentReply(
                text=(
                    f"I can't look that up yet — {client.name}'s information is still being "
                    "loaded. I can pass your question on to the team, or you can ask me again "
                    "in a few minutes."
                ),
                quick_replies=(HUMAN_CHOICE,),
                confidence=0.0,
                state="not_ready",
                handback=Handback(HandbackStatus.UNCERTAIN, summary="knowledge not ready"),
            )
        state.misses += 1
        if state.misses >= MAX_MISSES:
            state.misses = 0
            return ctx.escalate("two questions the business's information did not cover")
        return AgentReply(
            text=(
                "I'm not sure about that, and I'd rather not guess. "
                f"Would you like me to pass your question on to someone at {client.name}?"
            ),
            quick_replies=(HUMAN_CHOICE,),
            confidence=answer.confidence,
            state="unsure",
            handback=Handback(HandbackStatus.UNCERTAIN, summary="not covered by the knowledge"),
        )


def _history(ctx: TurnContext) -> list[Turn]:
    """The conversation before this message (the engine has already added it)."""
    said = [t for t in ctx.session.transcript if isinstance(t, Turn)]
    if said and said[-1].role == "user" and said[-1].text == ctx.text:
        said.pop()
    return said


def _sources(
    answer: Answer, passages: list[Passage], *, fact_source: str | None
) -> tuple[Source, ...]:
    if fact_source is not None and not answer.cited:
        return (Source(file="config", section=fact_source, score=1.0),)
    config = (
        (Source(file="config", section=fact_source, score=1.0),)
        if fact_source is not None and FACTS_ID in answer.cited
        else ()
    )
    by_id = {p.id: p for p in passages}
    cited = [by_id[i] for i in answer.cited if i in by_id]
    return config + tuple(
        Source(file=p.file, section=p.section, page=p.page, score=round(p.score, 4)) for p in cited
    )

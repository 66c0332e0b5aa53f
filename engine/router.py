"""The router: picks the agent for a message no journey holds.

With a model (``ctx.llm``), :func:`model_route` asks it first (structured
output: purpose + confidence) and these rules decide when it is unsure or
fails.

Offline rules (no LLM), driven by the agents themselves: each registered
agent scores the message (:meth:`engine.agents.Agent.intent`, in [0, 1]) and
the best score of at least :data:`MIN_INTENT` wins. Around that the router
answers what belongs to no agent: thanks, small talk ("how are you?", "are
you a bot?") with a short polite line, a request for a person (the
built-in ``human`` agent), a question no agent claims (said plainly, with
what it *can* do instead, rather than pretending), and an unclear first
message (a short menu of the agents' :attr:`~engine.agents.Agent.menu`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from engine.config import ClientConfig
from engine.llm.prompt import business_brief
from engine.llm.types import LlmError, LlmMessage, LlmReason, LlmRequest
from engine.messages import QuickReply

if TYPE_CHECKING:
    from engine.agents import Agent
    from engine.llm.model import TurnModel

__all__ = ["MIN_INTENT", "RouteDecision", "Router", "is_cancel", "model_route", "wants_human"]

MIN_INTENT = 0.5
"""Lowest intent score that routes a message to an agent."""

_QUESTION = re.compile(
    r"(\?|^\s*(where|what|when|how|why|who|which|is|are|do|does|can|could)\b"
    r"|\b(policy|parking|located|location|address|price|prices|cost|gift card|accessible|refund|cancel)\b)",
    re.IGNORECASE,
)
_THANKS = re.compile(
    r"^\s*(thanks|thank you|thx|ty|cheers|great|perfect|awesome|bye|goodbye|see you|that's all|ok|okay)\b",
    re.IGNORECASE,
)
_HUMAN = re.compile(
    r"\b(human|real person|a person|someone|somebody|an agent|the staff|manager|receptionist|"
    r"representative|operator|call me back|callback|call back)\b",
    re.IGNORECASE,
)
_CANCEL = re.compile(
    r"^\s*(cancel( that| it| this)?|never ?mind|forget (it|about it)|stop|quit|i changed my mind|"
    r"not interested|no thanks,? (i'?m|that'?s) (good|fine|ok)|leave it)\b",
    re.IGNORECASE,
)
HUMAN_CHOICE = QuickReply(title="Talk to a person", value="I'd like to talk to a person")
_SMALL_TALK: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^\s*(how are you|how'?s it going|how are things|how do you do)\b", re.I),
        "I'm doing well, thank you for asking!",
    ),
    (
        re.compile(
            r"^\s*(are you (a )?(bot|robot|real|human|an? ai|a person)|who are you|what are you)\b",
            re.I,
        ),
        "I'm the virtual assistant for {name}; a person from the team can take over any time.",
    ),
)


def wants_human(text: str) -> bool:
    """True when the user asks for a person (shared by the router and the flows)."""
    return _HUMAN.search(text) is not None


def is_cancel(text: str) -> bool:
    """True when the message calls off what is going on ("never mind", "cancel that")."""
    return _CANCEL.match(text) is not None


def is_question(text: str) -> bool:
    return _QUESTION.search(text) is not None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """``purpose`` to hand the message to, or ``None`` with the router's own reply."""

    purpose: str | None
    text: str = ""
    quick_replies: tuple[QuickReply, ...] = ()
    wants_human: bool = False
    state: str = "routing"


class Router:
    def route(self, text: str, client: ClientConfig, agents: Sequence[Agent]) -> RouteDecision:
        """Decide for ``text`` among ``agents`` (the ones that may take it now)."""
        scored = sorted(
            ((agent.intent(text, client), agent.purpose) for agent in agents),
            reverse=True,
        )
        best_score, best = scored[0] if scored else (0.0, "")
        question = is_question(text)
        if _THANKS.match(text) and best_score < MIN_INTENT and not question:
            return RouteDecision(
                None,
                text="You're welcome! Is there anything else I can help you with?",
                quick_replies=self.menu(agents, human=False),
            )
        if wants_human(text) and best_score < 0.9:
            return RouteDecision(None, wants_human=True)
        for pattern, reply in _SMALL_TALK:
            if pattern.match(text) and best_score < MIN_INTENT + 0.2:
                return RouteDecision(
                    None,
                    text=f"{reply.format(name=client.name)} How can I help you today?",
                    quick_replies=self.menu(agents, human=False),
                    state="small_talk",
                )
        if best_score >= MIN_INTENT:
            return RouteDecision(best)
        if question:
            return self.cannot_answer(client, agents)
        services = ", ".join(s.name for s in client.services[:4])
        offer = f" We offer {services}." if services else ""
        return RouteDecision(
            None,
            text=f"Hi! This is {client.name}.{offer} How can I help you today?",
            quick_replies=self.menu(agents, human=False),
        )

    def cannot_answer(
        self, client: ClientConfig, agents: Sequence[Agent], *, state: str = "routing"
    ) -> RouteDecision:
        """The honest reply to a question no agent here can answer."""
        offers = [a.offer for a in agents if a.offer]
        can = (
            f"I can {', '.join(offers)}, or pass your question on to the team."
            if offers
            else "I can pass your question on to the team."
        )
        return RouteDecision(
            None,
            text=f"I'm not able to answer questions about {client.name} in this chat yet. {can}",
            quick_replies=self.menu(agents, human=True),
            state=state,
        )

    @staticmethod
    def menu(agents: Sequence[Agent], *, human: bool) -> tuple[QuickReply, ...]:
        items = [a.menu for a in agents if a.menu is not None]
        if human or len(items) < 2:
            items.append(HUMAN_CHOICE)
        return tuple(items)


_ROUTE_SCHEMA_CONFIDENCE = {"type": "number", "description": "0 to 1"}


async def model_route(
    llm: TurnModel,
    text: str,
    client: ClientConfig,
    agents: Sequence[Agent],
    *,
    history: tuple[LlmMessage, ...],
    now: datetime,
    channel: str,
) -> RouteDecision | None:
    """Route with the model (structured output: ``purpose`` + ``confidence``).

    Returns the decision when the model names one of ``agents`` (or a person)
    with confidence at least :data:`MIN_INTENT`; None when it is unsure, says
    ``none`` (greetings, small talk: the offline router answers those) or
    fails — then the offline :meth:`Router.route` decides. Malformed output
    ends the model's part of the turn (``llm.fail``)."""
    names = [a.purpose for a in agents]
    if not names:
        return None
    listing = "\n".join(f"- {a.purpose}: {a.offer or a.purpose}" for a in agents)
    system = (
        business_brief(client, now, channel)
        + "\n\nYour job now: decide who should handle the customer's latest message.\n"
        f"{listing}\n- human: the customer asks for a person\n"
        "- none: a greeting, small talk, or too unclear to tell\n"
        "Give the purpose and your confidence from 0 to 1."
    )
    schema = {
        "type": "object",
        "properties": {
            "purpose": {"type": "string", "enum": [*names, "human", "none"]},
            "confidence": _ROUTE_SCHEMA_CONFIDENCE,
        },
        "required": ["purpose", "confidence"],
    }
    try:
        result = await llm.generate(
            LlmRequest(
                system=system,
                messages=history or (LlmMessage("user", text),),
                response_schema=schema,
                temperature=0.0,
                max_output_tokens=60,
                purpose="router",
            )
        )
    except LlmError:
        return None
    try:
        value = json.loads(result.text)
        purpose = str(value["purpose"])
        confidence = float(value["confidence"])
    except (ValueError, KeyError, TypeError):
        llm.fail(LlmReason.MALFORMED, "routing: not the JSON asked for")
        return None
    if confidence < MIN_INTENT:
        return None
    if purpose == "human":
        return RouteDecision(None, wants_human=True)
    return RouteDecision(purpose) if purpose in names else None

"""Lead capture: an explicit state machine that fills slots, confirms, books and records.

Stages (``state.py``; the diagram and the transition table are in
``FLOW.md`` beside this file, the transitions themselves in
``transitions.py``):

- ``collecting``: asks for ``booking.rules.lead_fields`` in order, but takes
  whatever the user volunteers in any message (several slots at once, any
  order) and accepts corrections at any time ("actually my email is …").
- ``confirming``: one summary; *yes* books, *no* asks what to change, a
  message with new values applies them and confirms again.
- ``booked``: the booking and the lead are requested as effects, which the
  engine commits atomically with the turn; a service asked for on the way
  ("can I also book a manicure?") is booked next, with the same contact.
- ``closed``: the user called it off, or a person took over.

A request for a person is the engine's escalation tool (the ``human`` agent
takes the message, with the slots collected so far). A question the flow
cannot use ("do you have parking?") suspends the booking: the router (or a
support agent) answers, and the booking resumes where it was.

Each reply is one message: what was understood, what was wrong (and what to
send instead) or the next question. After three failures on one slot the flow
offers a person.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from rapidfuzz import fuzz

from engine.agents import Agent, AgentReply, TurnContext
from engine.approvals import Approval, Decision
from engine.config import ClientConfig
from engine.llm import LlmError
from engine.messages import AgentEvent, QuickReply
from engine.router import is_question
from purposes.lead_capture import approval
from purposes.lead_capture.llm import Understanding, phrase, understand
from purposes.lead_capture.state import LeadState, Stage
from purposes.lead_capture.transitions import TRANSITIONS, Step, resume_prompt

__all__ = ["LeadCaptureAgent"]


def _names_service(text: str, client: ClientConfig) -> bool:
    low = text.lower()
    return any(
        len(name) >= 4 and fuzz.partial_ratio(name.lower(), low) >= 90
        for svc in client.services
        for name in (svc.name, *svc.aliases)
    )


_BOOKING_VERB = re.compile(
    r"\b(book|booking|schedule|reserve|reservation|sign me up|come in|availability|openings?"
    r"|free (slots?|times?)|(times?|slots?) (are )?(available|free|open)"
    r"|(make|set up|get|need|want) an? (appointment|appt))\b",
    re.IGNORECASE,
)
_WANTS = re.compile(
    r"\b(i'?d like|i would like|i want|i need|(can|could|may) (i|we) (get|have|do|come|book))\b",
    re.IGNORECASE,
)
# "Can I just turn up without booking?", "do you take walk-ins?": asks how to come
# without an appointment, which support answers, not a request to book one.
_NO_BOOKING = re.compile(
    r"\b(without (an? )?(booking|appointment|appt|reservation)|walk[- ]?ins?|walking in"
    r"|(turn|show|rock) up|drop[- ]?ins?|dropping in|(no|don'?t need an?) (booking|appointment))\b",
    re.IGNORECASE,
)
_BOOKING_INTENT = re.compile(
    r"\b(book|booking|appointment|appt|schedule|reserve|reservation|slot|availability|available"
    r"|come in|sign me up|make an? (?:appointment|booking))\b",
    re.IGNORECASE,
)


class LeadCaptureAgent(Agent):
    """The lead-capture purpose. Stateless: all state lives in the session."""

    purpose = "lead_capture"
    menu = QuickReply(title="Book an appointment", value="I'd like to book an appointment")
    offer = "book an appointment for you"

    def intent(self, text: str, client: ClientConfig) -> float:
        """0.9 for a booking request (booking words, or a service named in a
        statement or an "I'd like / can I get" request); 0.4 for a question
        about a service or an appointment that asks for information ("how much
        is a facial?", "how long is the first appointment?"), which support
        (0.6) answers, and for a question about coming without one ("can I just turn
        up without booking?", "do you take walk-ins?"); else 0."""
        if _NO_BOOKING.search(text) and is_question(text):
            return 0.4
        booking = bool(_BOOKING_VERB.search(text)) or bool(_WANTS.search(text))
        mentions = bool(_BOOKING_INTENT.search(text)) or _names_service(text, client)
        if booking:
            return 0.9
        if not mentions:
            return 0.0
        return 0.4 if is_question(text) else 0.9

    def _load(self, ctx: TurnContext) -> LeadState:
        raw = ctx.session.purpose_state.get(self.purpose)
        return LeadState.model_validate(raw) if raw else LeadState()

    def _save(self, ctx: TurnContext, state: LeadState) -> None:
        ctx.session.purpose_state[self.purpose] = state.model_dump(mode="json")

    def live(self, ctx: TurnContext) -> bool:
        """Streams before the commit when a model phrases the replies."""
        return ctx.llm is not None

    async def handle(self, ctx: TurnContext) -> AgentReply:
        return await self._run(ctx, self._load(ctx), None)

    async def stream(self, ctx: TurnContext) -> AsyncIterator[AgentEvent | AgentReply]:
        """Offline: :meth:`handle`, streamed after it. With a model (``ctx.llm``):
        the model's understanding drives the transitions, then the reply is
        phrased by the model as it streams (``llm.py``); any model failure
        leaves that part to the offline flow."""
        if ctx.llm is None:
            async for part in super().stream(ctx):
                yield part
            return
        state = self._load(ctx)
        understood: Understanding | None = None
        if ctx.llm.available and state.stage not in (Stage.HANDOFF,):
            try:
                async for item in understand(ctx, state):
                    if isinstance(item, Understanding):
                        understood = item
                    else:
                        yield item
            except LlmError:
                understood = None  # the rules read this message
        reply = await self._run(ctx, state, understood)
        async for said in phrase(ctx, reply):
            if isinstance(said, str):
                reply = replace(reply, text=said)
            else:
                yield said
        yield reply

    async def _run(
        self, ctx: TurnContext, state: LeadState, understood: Understanding | None
    ) -> AgentReply:
        step = Step.start(ctx, state, understood)
        for transition in TRANSITIONS:
            if step.st.stage not in transition.stages or not await transition.guard(step):
                continue
            reply = await transition.action(step)
            if reply is not None:
                self._save(ctx, step.st)
                return reply
        raise AssertionError("no lead-capture transition matched")  # `collect` always does

    async def resume(self, ctx: TurnContext, summary: str) -> AgentReply | None:
        state = self._load(ctx)
        reply = await resume_prompt(ctx, state)
        self._save(ctx, state)
        return reply

    async def decide(
        self, ctx: TurnContext, request: Approval, decision: Decision, note: str | None
    ) -> AgentReply:
        """A person's decision on a booking this flow asked them to approve
        (:class:`engine.decisions.ApprovalHandler`; see ``approval.py``)."""
        reply, state = await approval.decide(ctx, self._load(ctx), request, decision, note)
        self._save(ctx, state)
        return reply

    def handoff_fields(self, ctx: TurnContext) -> Mapping[str, str]:
        return dict(self._load(ctx).slots)

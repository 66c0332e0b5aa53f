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
from collections.abc import Mapping

from rapidfuzz import fuzz

from engine.agents import Agent, AgentReply, TurnContext
from engine.config import ClientConfig
from engine.messages import QuickReply
from purposes.lead_capture.state import LeadState
from purposes.lead_capture.transitions import TRANSITIONS, Step, resume_prompt

__all__ = ["LeadCaptureAgent"]

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
        """0.9 for booking words or a service's name (typos allowed), else 0."""
        if _BOOKING_INTENT.search(text):
            return 0.9
        low = text.lower()
        for svc in client.services:
            for name in (svc.name, *svc.aliases):
                if len(name) >= 4 and fuzz.partial_ratio(name.lower(), low) >= 90:
                    return 0.9
        return 0.0

    def _load(self, ctx: TurnContext) -> LeadState:
        raw = ctx.session.purpose_state.get(self.purpose)
        return LeadState.model_validate(raw) if raw else LeadState()

    def _save(self, ctx: TurnContext, state: LeadState) -> None:
        ctx.session.purpose_state[self.purpose] = state.model_dump(mode="json")

    async def handle(self, ctx: TurnContext) -> AgentReply:
        step = Step.start(ctx, self._load(ctx))
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

    def handoff_fields(self, ctx: TurnContext) -> Mapping[str, str]:
        return dict(self._load(ctx).slots)

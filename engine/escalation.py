"""Escalation to a person: the engine's built-in ``human`` agent.

Any agent escalates with :meth:`engine.agents.TurnContext.escalate` (a
handoff to this agent); the router sends "can I talk to someone?" here, and
the coordinator does when a conversation is stuck. In one or two turns it:

1. takes the callback number from the handoff's fields, the message, or the
   channel (a caller's number on the phone, the sender on WhatsApp) — asking
   for it once when none is known; in a web chat the number is optional (an
   answer without one escalates: staff reply in the chat);
2. requests a ``callback_requested`` lead and an escalation (Slack / email
   per the client's ``escalation`` config, through the outbox) as effects of
   the turn;
3. on a call with ``escalation.phone_transfer_number``, transfers the caller
   (``transfer`` action) after saying so; elsewhere tells the customer what
   happens next: with a number, who will call back; without, that someone
   will reply here — shortly during opening hours, else when the business
   opens (:func:`engine.takeover.reply_here_text`);
4. moves the conversation to ``pending_human`` (:mod:`engine.takeover`): the
   bot stays silent on web and WhatsApp until staff release it.

It hands back with status ``escalate``: suspended journeys are dropped, a
person takes it from here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from engine.agents import HUMAN, Agent, AgentReply, Handback, HandbackStatus, TurnContext
from engine.messages import Action
from engine.phones import display_phone, find_phone
from engine.router import is_cancel
from engine.takeover import reopening_text, reply_here_text, transition
from engine.tools import Lead

__all__ = ["HumanAgent"]


class _HumanState(BaseModel):
    reason: str = "asked for a person"
    fields: dict[str, str] = Field(default_factory=dict)
    asked: bool = False


class HumanAgent(Agent):
    """The ``human`` agent (see the module docstring)."""

    purpose = HUMAN

    async def handle(self, ctx: TurnContext) -> AgentReply:
        raw = ctx.session.purpose_state.get(self.purpose)
        state = _HumanState.model_validate(raw) if raw and not ctx.handoff else _HumanState()
        if ctx.handoff is not None:
            state.reason = ctx.handoff.reason or state.reason
            state.fields = {k: v for k, v in ctx.handoff.fields.items() if v}
        if state.asked and ctx.handoff is None and is_cancel(ctx.text):
            ctx.session.purpose_state.pop(self.purpose, None)
            return AgentReply(
                text="No problem — I won't pass it on. Is there anything else I can help with?",
                state="closed",
                handback=Handback(HandbackStatus.FAILED, summary="callback called off"),
            )
        phone, err, _rest = find_phone(ctx.text, ctx.client.region, expecting=state.asked)
        if phone:
            state.fields["phone"] = phone
        callback = state.fields.get("phone") or ctx.session.context.caller_number
        # In a chat staff can answer where the customer is: a number is optional.
        optional = ctx.session.channel != "phone"
        if not callback and not (optional and state.asked and err is None):
            first = not state.asked
            state.asked = True
            ctx.session.purpose_state[self.purpose] = state.model_dump(mode="json")
            if not first and err is not None:
                text = err.message
            elif optional:
                text = (
                    "Of course — I'll ask someone from the team to get back to you. "
                    "What's the best phone number to reach you? "
                    "(Or just say 'here' and they'll reply in this chat.)"
                )
            else:
                text = (
                    "Of course — I'll ask someone from the team to call you back. "
                    "What's the best phone number to reach you?"
                )
            return AgentReply(
                text=text,
                expecting="phone",
                slots=dict(state.fields),
                state="handoff",
            )
        if callback:
            state.fields.setdefault("phone", callback)
        ctx.session.purpose_state.pop(self.purpose, None)
        return self._escalate(ctx, state, callback)

    @staticmethod
    def _escalate(ctx: TurnContext, state: _HumanState, callback: str | None) -> AgentReply:
        client, session, effects = ctx.client, ctx.session, ctx.effects
        lead = Lead(
            client_id=client.client_id,
            channel=session.channel,
            session_id=session.session_id,
            fields=dict(state.fields),
            status="callback_requested",
            service=state.fields.get("service"),
        )
        lead_id = effects.record_lead(lead, dict(client.crm.map))
        effects.escalate(
            state.reason,
            who=state.fields.get("name"),
            contact=callback,
            email=state.fields.get("email"),
            fields=dict(state.fields),
        )
        actions: tuple[Action, ...] = (Action(type="escalated"),)
        transfer_to = client.escalation.phone_transfer_number
        if session.channel == "phone" and transfer_to:
            actions += (Action(type="transfer", target=transfer_to),)
            text = "Let me connect you with someone from the team now."
        elif callback:
            text = (
                f"Done — someone from {client.name} will call you back at "
                f"{display_phone(callback)} as soon as they can." + reopening_text(client, ctx.now)
            )
        else:
            text = "Done — I've passed this on. " + reply_here_text(client, ctx.now)
        session.takeover = transition(session.takeover, "escalated")
        return AgentReply(
            text=text,
            actions=actions,
            slots=dict(state.fields),
            state="closed",  # the conversation is the team's now; the action says so
            outcome="escalated",
            handback=Handback(HandbackStatus.ESCALATE, summary=state.reason),
            metadata={"lead_id": lead_id, "handoff": session.takeover},
        )

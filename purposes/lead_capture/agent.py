"""PLACEHOLDER, being replaced by the real flow."""

from __future__ import annotations

from engine.agents import Agent, AgentReply, TurnContext


class LeadCaptureAgent(Agent):
    purpose = "lead_capture"

    async def handle(self, ctx: TurnContext) -> AgentReply:
        return AgentReply(text="Placeholder lead capture: what's your name?", expecting="name")

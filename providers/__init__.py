"""Vendor implementations of the engine's ports: the language model (Gemini), the
knowledge index (Qdrant, embedders, document parsers), notifications (Slack,
email), locks and the conversation bus (Redis), CRMs, calendars and speech.

Imports: :mod:`engine` only. The gateway (composition root) picks and builds them.
"""

"""Support: grounded answers from each client's config and knowledge, with
sources, honest abstention and a takeover by a person."""

from purposes.support.agent import SupportAgent

__all__ = ["SupportAgent"]

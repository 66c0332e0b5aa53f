"""Text helpers shared by the notifiers: one-line and clipped text, the labels of
channels and roles, and the one-line summary of an escalation."""

from __future__ import annotations

import re

from engine.tools.notify import Escalation

__all__ = [
    "CHANNEL_LABELS",
    "LINE_MAX",
    "MSGID_LEFT",
    "ROLE_LABELS",
    "SUBJECT_MAX",
    "clip",
    "clip_mrkdwn",
    "mrkdwn",
    "one_line",
    "summary",
]

CHANNEL_LABELS: dict[str, str] = {"phone": "phone call", "whatsapp": "WhatsApp", "web": "web chat"}
ROLE_LABELS: dict[str, str] = {"user": "Customer", "assistant": "Receptionist", "system": "System"}
# What may stand as the left part of a Message-ID as is (a plain dot-atom).
MSGID_LEFT = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")
LINE_MAX = 500  # one transcript line or captured value, in characters
SUBJECT_MAX = 200


def one_line(text: str) -> str:
    """Collapse every run of whitespace (newlines too) into one space."""
    return " ".join(text.split())


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis if cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def mrkdwn(text: str) -> str:
    """Escape Slack's control characters (``&``, ``<``, ``>``) in user text.

    Slack, "Formatting text for app surfaces", *Escaping text*: these three
    are replaced by HTML entities; nothing else needs escaping. This also keeps
    a customer from writing ``<!channel>`` or a link into the notice.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip_mrkdwn(text: str, limit: int) -> str:
    """Like :func:`clip` for escaped text: never cut an ``&amp;`` in half."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    cut = re.sub(r"&[a-z]*$", "", cut)
    return cut.rstrip() + "…"


def summary(esc: Escalation) -> str:
    who = esc.who or "name not given"
    return (
        f"{esc.client_name}: customer {one_line(esc.reason)} "
        f"({CHANNEL_LABELS[esc.channel]}) - {one_line(who)}"
    )

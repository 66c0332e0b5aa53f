"""Stuck and loop detection over a conversation's history.

Looks at the user and assistant lines (:class:`engine.session.Turn`) and names
what went wrong, so the coordinator can try a different approach or bring in
a person:

- ``repeated_question``: the bot said the same thing ``repeats`` times in a
  row (after whitespace/case/punctuation folding; a reply that only adds a
  sentence at the end counts as the same) — the user is not getting past a
  question;
- ``cycle``: the bot's last four replies alternate between two texts
  (A-B-A-B) — a loop between two states;
- ``frustration``: the user's message reads as frustrated ("you're not
  listening", "this is useless", "I already told you", all-caps shouting).
  One frustrated message earns an apology and the offer of a person; a second
  one within the last ``frustration_window`` user lines is ``stuck``.

Offline and rule-based: an LLM classifier can replace :meth:`analyze` later
with the same result type.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engine.session import Turn

__all__ = ["StuckDetector", "StuckResult"]

Condition = Literal["repeated_question", "cycle", "frustration"]

_FRUSTRATED = re.compile(
    r"\b(not listening|(this|that|you) (is|are) (useless|ridiculous|stupid|annoying|pointless|"
    r"terrible|not helping|not working)|already (told|said|gave) (you|that|it)|i just (told|said)|"
    r"how many times|are you (even )?(a bot|a robot|real|listening)|you don'?t understand|"
    r"doesn'?t understand|waste of (my )?time|fed up|so frustrating|frustrated|for god'?s sake|"
    r"forget it,? (this|you)|ugh+|argh+)\b",
    re.IGNORECASE,
)
_FOLD = re.compile(r"[^\w]+")


def _fold(text: str) -> str:
    return _FOLD.sub(" ", text.casefold()).strip()


def _same(a: str, b: str) -> bool:
    """The same bot message, possibly with a sentence added at the end."""
    short, long = sorted((a, b), key=len)
    return short == long or (len(short) >= 20 and long.startswith(short))


def is_frustrated(text: str) -> bool:
    """True when ``text`` reads as a frustrated user (phrases, or shouting:
    a message of 3+ words in capitals)."""
    if _FRUSTRATED.search(text):
        return True
    letters = [c for c in text if c.isalpha()]
    words = text.split()
    return len(words) >= 3 and len(letters) >= 8 and all(c.isupper() for c in letters)


@dataclass(frozen=True, slots=True)
class StuckResult:
    """``stuck``: bring in a person; ``condition``: what was seen (also set
    when not yet stuck, e.g. a first frustrated message); ``reason``: one
    line for the business's notification, with no user text."""

    stuck: bool
    condition: Condition | None = None
    reason: str = ""


class StuckDetector:
    """Rule-based stuck/loop detector (see the module docstring)."""

    def __init__(self, repeats: int = 3, frustration_window: int = 4) -> None:
        self.repeats = repeats
        self.frustration_window = frustration_window

    def analyze(self, lines: Sequence[Turn]) -> StuckResult:
        """Judge the conversation whose last line is the user's new message."""
        bot = [_fold(t.text) for t in lines if t.role == "assistant" and t.text]
        users = [t.text for t in lines if t.role == "user"]
        recent = bot[-self.repeats :]
        if len(recent) == self.repeats and all(_same(recent[0], r) for r in recent[1:]):
            return StuckResult(True, "repeated_question", "the assistant kept asking the same")
        last4 = bot[-4:]
        if len(last4) == 4 and last4[0] == last4[2] != last4[1] == last4[3]:
            return StuckResult(True, "cycle", "the conversation went in circles")
        if users and is_frustrated(users[-1]):
            earlier = users[-self.frustration_window : -1]
            if any(is_frustrated(u) for u in earlier):
                return StuckResult(True, "frustration", "the customer is frustrated")
            return StuckResult(False, "frustration", "the customer sounds frustrated")
        return StuckResult(False)

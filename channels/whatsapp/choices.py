"""Choices offered as text and read back: the numbered list of the text channels,
the reply ids of Meta's buttons and list rows, and :func:`choice_for`, which
maps a customer's answer onto the :class:`~engine.messages.QuickReply` it picks.

Reply ids look like ``qr:2:1f3a9c0b``: the 1-based position and the first 8 hex
digits of the SHA-256 of the choice's value. The position keeps them short
(Meta allows 256 characters for a button id, 200 for a list row); the hash
makes a tap on an *older* message's button map to the choice it named, or to
nothing, instead of to whatever sits at that position now.

Answers understood, in this order (the first that matches wins):

1. a reply id (``qr:2:…``, or ``qr:2``), or a ``choice_id`` equal to a value or title;
2. the title or value itself, ignoring case, spacing, punctuation and emoji;
3. a position: ``2``, ``2.``, ``#2``, ``option 2``, ``2nd``, ``two``,
   ``second``, ``the second one``, ``last`` (English and Spanish words);
4. a title or value within a :func:`rapidfuzz.fuzz.ratio` of 90 (typos), when
   exactly one choice is that close.

Titles come before positions so that choices titled ``"2"``, ``"3"``, ``"4"``
(party sizes) mean themselves. Anything else is not a choice: ``None``, and the
text goes to the engine as typed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from typing import Final

from rapidfuzz import fuzz

from engine.messages import QuickReply

__all__ = [
    "DEFAULT_HINT",
    "FUZZY_MIN_SCORE",
    "choice_for",
    "choice_title",
    "numbered_text",
    "reply_id",
]

DEFAULT_HINT: Final = "Reply with a number."
"""What follows a numbered list of choices; callers pass the client's language."""
FUZZY_MIN_SCORE: Final = 90.0
"""Least :func:`rapidfuzz.fuzz.ratio` (0-100) for a typed title to count as a choice."""
_FUZZY_MIN_CHARS: Final = 4

_REPLY_ID = re.compile(r"qr:([0-9]{1,3})(?::([0-9a-f]{8}))?")
_ORDINAL_SUFFIX = re.compile(r"([0-9]{1,3})(?:st|nd|rd|th|º|ª|o|a)?")

_POSITION_WORDS: Final[dict[str, int]] = {
    # English
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
    "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
    # Spanish
    "uno": 1, "una": 1, "un": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5,
    "seis": 6, "siete": 7, "ocho": 8, "nueve": 9, "diez": 10,
    "primero": 1, "primera": 1, "primer": 1, "segundo": 2, "segunda": 2,
    "tercero": 3, "tercera": 3, "tercer": 3, "cuarto": 4, "cuarta": 4,
    "quinto": 5, "quinta": 5, "sexto": 6, "sexta": 6, "septimo": 7, "septima": 7,
    "octavo": 8, "octava": 8, "noveno": 9, "novena": 9, "decimo": 10, "decima": 10,
}  # fmt: skip
_LAST_WORDS: Final = frozenset({"last", "ultimo", "ultima"})
_LEADING_FILLER: Final = frozenset(
    {"the", "no", "number", "option", "choice", "el", "la", "lo", "opcion", "numero"}
)
_TRAILING_FILLER: Final = frozenset({"one", "option", "choice", "please", "pls", "opcion"})


def reply_id(index: int, value: str) -> str:
    """The id of the ``index``-th (1-based) choice's button or list row: ``qr:<index>:<hash8>``."""
    return f"qr:{index}:{_digest(value)}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def choice_title(choice: QuickReply) -> str:
    """What a choice shows: its title, or its value when the title is blank."""
    return " ".join((choice.title.strip() or choice.value).split())


def numbered_text(text: str, choices: Sequence[QuickReply], hint: str = DEFAULT_HINT) -> str:
    """``text`` with the choices as a numbered list under it, then ``hint``::

    Shall I book it?

    1. Yes, book it
    2. Change something

    Reply with a number.
    """
    lines = "\n".join(f"{i}. {choice_title(q)}" for i, q in enumerate(choices, 1))
    block = f"{lines}\n\n{hint.strip()}" if hint.strip() else lines
    return f"{text.strip()}\n\n{block}" if text.strip() else block


def _fold(text: str) -> str:
    """Case- and width-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _bare(text: str) -> str:
    """Letters and digits only (accents dropped), words separated by one space."""
    decomposed = unicodedata.normalize("NFKD", _fold(text))
    kept = "".join(
        ch if unicodedata.category(ch)[0] in "LN" else " "
        for ch in decomposed
        if not unicodedata.combining(ch)
    )
    return " ".join(kept.split())


def _position(text: str, count: int) -> int | None:
    """The 1-based position ``text`` names, if it names one within ``count``."""
    words = _bare(text).split()
    while len(words) > 1 and words[0] in _LEADING_FILLER:
        words.pop(0)
    while len(words) > 1 and words[-1] in _TRAILING_FILLER:
        words.pop()
    if len(words) != 1:
        return None
    word = words[0]
    number = _ORDINAL_SUFFIX.fullmatch(word)
    if number:
        position: int | None = int(number.group(1))
    elif word in _LAST_WORDS:
        position = count
    else:
        position = _POSITION_WORDS.get(word)
    return position if position is not None and 1 <= position <= count else None


def _by_id(choice_id: str, choices: Sequence[QuickReply]) -> str | None:
    parsed = _REPLY_ID.fullmatch(choice_id)
    if parsed:
        index, digest = int(parsed.group(1)), parsed.group(2)
        if digest is None:
            return choices[index - 1].value if 1 <= index <= len(choices) else None
        if 1 <= index <= len(choices) and _digest(choices[index - 1].value) == digest:
            return choices[index - 1].value
        # A button of an older message: the choice it named, wherever it is now.
        return next((q.value for q in choices if _digest(q.value) == digest), None)
    for q in choices:
        if choice_id in (q.value, q.title):
            return q.value
    return None


def _fuzzy(text: str, choices: Sequence[QuickReply]) -> str | None:
    if len(text) < _FUZZY_MIN_CHARS:
        return None
    scores = [
        max(fuzz.ratio(text, _bare(choice_title(q))), fuzz.ratio(text, _bare(q.value)))
        for q in choices
    ]
    best = max(scores)
    if best < FUZZY_MIN_SCORE or scores.count(best) > 1:
        return None
    runner_up = max((s for s in scores if s != best), default=0.0)
    # Two choices both within reach (titles differing by a letter): not a choice.
    if runner_up >= FUZZY_MIN_SCORE:
        return None
    return choices[scores.index(best)].value


def choice_for(
    text: str, choices: Sequence[QuickReply], choice_id: str | None = None
) -> str | None:
    """The value of the choice the customer's answer picks, or ``None``.

    Args:
        text: what the customer sent (for a button or list reply, its title).
        choices: the choices the last reply offered, in the order shown.
        choice_id: a button or list reply's id or payload, when there is one.
    """
    if not choices:
        return None
    if choice_id:
        picked = _by_id(choice_id.strip(), choices)
        if picked is not None:
            return picked
    folded = _fold(text)
    if not folded:
        return None
    for q in choices:
        if folded in (_fold(choice_title(q)), _fold(q.value)):
            return q.value
    bare = _bare(text)
    if bare:
        for q in choices:
            if bare in (_bare(choice_title(q)), _bare(q.value)):
                return q.value
    stripped = text.strip()
    if stripped.endswith("…") and len(stripped) > 1:
        # A title shortened for a list row, echoed back.
        stem = _fold(stripped[:-1])
        starting = [q for q in choices if _fold(choice_title(q)).startswith(stem)]
        if len(starting) == 1:
            return starting[0].value
    position = _position(text, len(choices))
    if position is not None:
        return choices[position - 1].value
    return _fuzzy(bare, choices) if bare else None

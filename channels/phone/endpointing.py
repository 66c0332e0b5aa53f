"""Semantic end-of-turn: is what the caller said so far a complete answer?

The turn-taker ends a caller's turn after ``endpoint_silence_ms`` of silence
(500 ms by default). Most of that wait is lost time when the words are plainly
a whole answer to what the bot just asked: "yes" to "shall I book it?", ten
digits to "what's the best number?", an address ending in ``.com`` to "what's
your email?". The call decodes speculatively at the first ``pause_silence_ms``
of silence (200 ms); when :func:`complete_answer` says the transcript is
complete for the slot the flow expects, the turn ends there.

The rules are deliberately conservative: an answer that could go on ("my name
is Maria...", "Tuesday and..."), a name (callers often add the spelling after a
breath), or anything ending on a connective waits for the full endpoint. A
wrong early end costs little anyway: the caller's next words start a new turn,
and the flows take corrections ("no, it's ...").

Input: Whisper's cased, punctuated text (``"617-555-0147."``, ``"Yes."``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["complete_answer", "stt_context"]

_WORDS = re.compile(r"[a-z0-9']+")
_YES_NO = frozenset(
    {
        "yes", "yeah", "yep", "yup", "no", "nope", "nah", "sure", "correct", "right",
        "ok", "okay", "perfect", "great", "fine", "absolutely", "definitely", "please",
        "that's", "thats", "it", "is", "sounds", "good", "thank", "thanks", "you", "go",
        "ahead", "book", "that", "all", "not", "really", "wrong", "exactly", "of", "course",
    }
)  # fmt: skip
_OPEN_ENDINGS = frozenset(
    {
        "and", "or", "but", "so", "because", "um", "uh", "er", "erm", "hmm", "the", "a",
        "an", "my", "is", "at", "to", "on", "for", "with", "it's", "its", "like", "then",
        "dot", "underscore", "dash", "in", "of", "as", "and,", "also",
    }
)  # fmt: skip
_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_EMAIL = re.compile(
    r"[\w.+-]+(@|\s+at\s+)[\w-]+((\.|\s+dot\s+)[\w-]+)*(\.|\s+dot\s+)"
    r"(com|org|net|edu|gov|io|co|uk|us|ca|au|de|fr|es|info|biz|me)\b",
    re.IGNORECASE,
)
_CLOCK = re.compile(
    r"\b(\d{1,2}(:\d{2})?\s*(a\.?m\.?|p\.?m\.?)|\d{1,2}:\d{2}|noon|midday|"
    r"(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\d{1,2})\s+o'?clock)",
    re.IGNORECASE,
)
_DAY = re.compile(
    r"\b(today|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"mon|tue|tues|wed|thu|thurs|fri|sat|sun|"
    r"jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sep(tember)?|"
    r"oct(ober)?|nov(ember)?|dec(ember)?)\b",
    re.IGNORECASE,
)


_CONTEXTS = {
    "phone": "My number is 617-555-0123.",
    "email": "My email is jane.doe@example.com.",
    "name": "My name is Jane Doe.",
    "time": "Friday at 3:30 p.m.",
}


def stt_context(expecting: str | None) -> str | None:
    """An example answer to what the flow asked, for the recogniser's prompt.

    Whisper continues its prompt's style: after "My number is 617-555-0123."
    it writes a spoken number as grouped digits, after an example email it
    writes ``@`` and dots (``bench/speech_accuracy.py`` measures the effect).
    None: no particular slot asked.
    """
    return _CONTEXTS.get(expecting or "")


def _digits(text: str) -> str:
    """The digits in ``text``, spoken ("six one seven", "oh") or written."""
    out: list[str] = []
    for token in re.findall(r"\d+|[a-z]+", text.casefold()):
        if token.isdigit():
            out.append(token)
        elif token in _DIGIT_WORDS:
            out.append(_DIGIT_WORDS[token])
    return "".join(out)


def complete_answer(text: str, expecting: str | None, services: Iterable[str] = ()) -> bool:
    """True when ``text`` is plainly a whole answer to a question about ``expecting``.

    Args:
        text: the speculative transcript (cased, punctuated).
        expecting: the slot the flow waits for (``ResponseMetadata.expecting``:
            ``"confirmation"``, ``"phone"``, ``"email"``, ``"time"``,
            ``"service"``, ``"name"``...), or None.
        services: the client's service names and aliases (for ``"service"``).

    Complete: a short yes/no (any question may be a yes/no one, e.g. the
    caller-ID offer); ``phone``: ten or more digits; ``email``: an address
    ending in a common top-level domain; ``time``: a day and a clock time;
    ``service``: a service named; any question of three or more words ending
    in "?". Never complete: empty text, or text ending on a connective or
    filler ("and", "um", "at").
    """
    said = text.strip()
    words = _WORDS.findall(said.casefold())
    if not words or words[-1] in _OPEN_ENDINGS or said.endswith((",", "-", "...")):
        return False
    if len(words) <= 4 and all(w in _YES_NO for w in words):
        return True
    if said.endswith("?") and len(words) >= 3:
        return True
    if expecting == "phone":
        return len(_digits(said)) >= 10
    if expecting == "email":
        found = _EMAIL.search(said)
        return found is not None and not said[found.end() :].strip(" .!")
    if expecting == "time":
        return _CLOCK.search(said) is not None and _DAY.search(said) is not None
    if expecting == "service":
        lowered = " ".join(words)
        return any(
            " ".join(_WORDS.findall(name.casefold())) in lowered for name in services if name
        )
    return False

"""Slot extraction and validation for lead capture, using well-kept libraries.

- phone: ``phonenumbers`` (E.164; region from the client's locale),
- email: ``email-validator`` (syntax only, no DNS),
- service: ``rapidfuzz`` over service names and aliases,
- time: our own time-of-day grammar (``3pm``, ``10:30``, ``at 2``, ``noon``,
  ``morning``...) plus ``dateparser`` for the day (``tomorrow``, ``next
  Tuesday``, ``Nov 27``), relative to now in the client's timezone.

Every parser returns either a canonical value or a :class:`SlotError` whose
``message`` says what was wrong and what to send instead.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

from email_validator import EmailNotValidError, validate_email
from rapidfuzz import fuzz

from engine.config import Service
from engine.phones import SlotError, find_phone

__all__ = [
    "SlotError",
    "When",
    "find_email",
    "find_name",
    "find_phone",
    "find_service",
    "find_when",
    "is_no",
    "is_yes",
]


# --- yes / no ---------------------------------------------------------------

_YES = re.compile(
    r"^\s*(yes|yeah|yep|yup|ya|yes please|sure|correct|right|ok|okay|k|confirm(ed)?|sounds good|"
    r"looks good|perfect|great|good|book it|please do|do it|go ahead|that'?s right|that'?s correct|"
    r"absolutely|definitely|of course|y|si|affirmative|all good|fine)\b",
    re.IGNORECASE,
)
_NO = re.compile(
    r"^\s*(no|nope|nah|not quite|not really|wrong|incorrect|n|negative|wait)\b", re.IGNORECASE
)


def is_yes(text: str) -> bool:
    return bool(_YES.match(text)) and not _NO.match(text)


def is_no(text: str) -> bool:
    return bool(_NO.match(text))


# --- email ------------------------------------------------------------------

# Local part: RFC 5322 atext and dots, any letter or digit (RFC 6531), and the
# typographic apostrophe phones type for ' (o’brien@...). Domain: up to a space,
# separator or quote, so a malformed one is shown back whole in the error.
_EMAIL_CANDIDATE = re.compile(
    r"[\w.!#$%&'’*+/=?^`{|}~-]+@[^\s,;:<>()\[\]\"'‘’“”«»`]*",
)
_EMAIL_OPENERS = "'‘’`*."  # quotes or markdown before an address; an address never starts so
_EMAIL_CLOSERS = ".!?*"  # sentence end or markdown after an address
_EMAIL_SPOKEN = re.compile(r"\s+(?:at)\s+(?=[\w-]+\s+(?:dot)\s+)", re.IGNORECASE)


def find_email(text: str, expecting: bool) -> tuple[str | None, SlotError | None, str]:
    """Find an email in ``text``. Returns (normalized email, error, text without it).

    Spoken forms ("maria at example dot com") are accepted when the flow is
    expecting an email. The local part may hold any RFC 5322 character
    (``o'brien+spa@example.com``); quotes around the address are not part of it.
    """
    candidate_text = text
    if expecting and "@" not in text:
        spoken = _EMAIL_SPOKEN.sub("@", text)
        spoken = re.sub(r"\s+dot\s+", ".", spoken, flags=re.IGNORECASE)
        if "@" in spoken:
            candidate_text = spoken
    match = _EMAIL_CANDIDATE.search(candidate_text)
    if match is None:
        return None, None, text
    raw = match.group(0).lstrip(_EMAIL_OPENERS).rstrip(_EMAIL_CLOSERS)
    rest = candidate_text[: match.start()] + " " + candidate_text[match.end() :]
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        reason = str(exc).split(".")[0].lower()
        return (
            None,
            SlotError(
                "email",
                f"“{raw}” doesn't look like a valid email address ({reason}). "
                "Please send it like name@example.com.",
            ),
            rest,
        )
    return result.normalized, None, rest


# --- phone ------------------------------------------------------------------

# --- service ----------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9']+")


def _ngrams(words: list[str], n: int) -> list[str]:
    return [" ".join(words[i : i + n]) for i in range(max(0, len(words) - n + 1))]


def find_service(
    text: str, services: tuple[Service, ...]
) -> tuple[Service | None, float, Service | None]:
    """Match ``text`` to a service by name or alias, tolerating typos.

    Compares each name/alias with same-length word windows of the text
    (``rapidfuzz.fuzz.ratio``). Returns (match, score 0-100, near miss):
    ``match`` when the score is >= 85 (>= 95 for short names), else ``near
    miss`` is the best candidate scoring >= 70, for a "did you mean" reply.
    Longer names win ties, so "deep tissue massage" beats the alias "massage".
    """
    words = _WORD.findall(text.lower())
    best: tuple[float, int, Service] | None = None
    for svc in services:
        for name in (svc.name, *svc.aliases):
            name_words = _WORD.findall(name.lower())
            if not name_words:
                continue
            for gram in _ngrams(words, len(name_words)):
                score = fuzz.ratio(" ".join(name_words), gram)
                key = (score, len(name), svc)
                if best is None or (score, len(name)) > (best[0], best[1]):
                    best = key
    if best is None:
        return None, 0.0, None
    score, length, svc = best
    threshold = 95 if length <= 5 else 85
    if score >= threshold:
        return svc, score, None
    return None, score, svc if score >= 70 else None


# --- name -------------------------------------------------------------------

# Names are checked with unicodedata, not character ranges: a name may be in
# any script (Łukasz, Иван, 王伟, محمد, राहुल) and typed decomposed (NFD), so
# a name word is a letter followed by letters, combining marks or joiners.
_NAME_INTRO = re.compile(
    r"\b(?:my name is|my name's|name is|name's|i am|i'm|im|this is|it's|it is|call me)\s+",
    re.IGNORECASE,
)
_NAME_JOINERS = frozenset("'’.-‐")  # O'Brien, Anne-Marie, J.R.
# What may directly follow a name: sentence punctuation in Latin, CJK and Arabic
# text, closing brackets and quotes. Anything else (a digit, "@", "_") means the
# word was not a name ("ann@x.com", "R2D2").
_NAME_ENDERS = frozenset(',;:!?…)]}"”»，。！？；：、،؛؟')
_SENTENCE_END = re.compile(r"[,;:!?…，。！？；：、،؛؟]|\.(?:\s|$)(?![A-Z]\.)")
_NOT_NAME_WORDS = {
    "a",
    "an",
    "the",
    "looking",
    "interested",
    "wondering",
    "trying",
    "calling",
    "here",
    "hoping",
    "not",
    "just",
    "available",
    "free",
    "good",
    "fine",
    "great",
    "ok",
    "okay",
    "sorry",
    "back",
    "thinking",
    "after",
    "going",
    "planning",
    "wanting",
    "and",
    "so",
    "also",
    "still",
    "ready",
    "booking",
    "book",
    "new",
    "on",
    "at",
    "in",
    "for",
    "from",
    "with",
    "hi",
    "hello",
    "hey",
    "yes",
    "no",
    "yeah",
    "sure",
    "thanks",
    "thank",
    "please",
    "want",
    "would",
    "like",
    "need",
    "can",
    "could",
    "i",
    "i'd",
    "my",
    "me",
    "is",
    "it",
    "to",
    "of",
    "phone",
    "number",
    "email",
    "mail",
    "appointment",
    "massage",
    "facial",
    "tomorrow",
    "today",
    "actually",
    "correct",
    "wrong",
    "instead",
    "um",
    "uh",
    "well",
    "oh",
    "name",
    "time",
    "service",
    "cancel",
    "change",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "morning",
    "afternoon",
    "evening",
    "next",
    "this",
    "that",
    "what",
    "when",
    "where",
    "how",
    "who",
    "why",
    "do",
    "does",
    "you",
    "your",
    "we",
    "us",
    "our",
    "they",
    "am",
    "pm",
    "are",
    "was",
    "be",
}
_NAME_STOP = re.compile(
    r"\b(and|but|my|phone|number|email|mail|i'd|i'm|i want|i would|i need|looking|calling|"
    r"from|for|at|on|tomorrow|today|please|here)\b.*$",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"^\s*(?:(?:hi|hello|hey|sure|yes|yeah|ok|okay|of course|certainly|well|so|um|uh|oh)\b[\s,!.-]*)+",
    re.IGNORECASE,
)


def _is_name_char(ch: str) -> bool:
    return ch.isalpha() or ch in _NAME_JOINERS or unicodedata.category(ch).startswith("M")


def _is_name_word(word: str) -> bool:
    """A letter of any script, then letters, combining marks or joiners."""
    return word[:1].isalpha() and all(_is_name_char(ch) for ch in word)


def _leading_name_words(text: str, most: int = 4) -> str:
    """Up to ``most`` name words opening ``text``, stopping at the first other character."""
    words: list[str] = []
    for match in re.finditer(r"\S+", text):
        token = match.group()
        end = 0
        while end < len(token) and _is_name_char(token[end]):
            end += 1
        if not token[:1].isalpha() or (end < len(token) and token[end] not in _NAME_ENDERS):
            break
        words.append(token[:end])
        if end < len(token) or len(words) == most:
            break
    return " ".join(words)


def _clean_name(raw: str) -> str | None:
    raw = unicodedata.normalize("NFC", raw)
    raw = _SENTENCE_END.split(raw)[0]  # a sentence ends the name
    raw = _NAME_STOP.sub("", raw).strip(" ,.;:!?-")
    words = [w for w in raw.split() if w]
    if not words or len(words) > 5:
        return None
    if not all(_is_name_word(w) for w in words):
        return None
    if words[0].lower() in _NOT_NAME_WORDS or all(w.lower() in _NOT_NAME_WORDS for w in words):
        return None
    if sum(len(w) for w in words) < 2:
        return None
    if raw.islower() or raw.isupper():
        return " ".join(w[:1].upper() + w[1:].lower() for w in words)
    return " ".join(words)


def find_name(text: str, expecting: bool) -> str | None:
    """A person's name: from "my name is…/I'm…/this is…" anywhere, or, when the
    flow is asking for the name, from a short answer made only of name words.

    Names in any script are accepted and returned in NFC; all-lower or all-upper
    input is title-cased (scripts without case are returned as typed).
    """
    for match in _NAME_INTRO.finditer(text):
        name = _clean_name(_leading_name_words(text[match.end() :]))
        if name:
            return name
    if expecting:
        bare = _FILLER.sub("", text)
        bare = re.sub(r"^\s*(?:name\s*[:=-]|it'?s|i am|i'm)\s*", "", bare, flags=re.IGNORECASE)
        return _clean_name(bare)
    return None


# --- time -------------------------------------------------------------------

PartOfDay = Literal["morning", "afternoon", "evening"]
_PART_WINDOWS: dict[str, tuple[time, time]] = {
    "morning": (time(0, 0), time(12, 0)),
    "afternoon": (time(12, 0), time(17, 0)),
    "evening": (time(17, 0), time(23, 59)),
}

_AMPM = r"(?P<ampm>a\.?\s?m\.?|p\.?\s?m\.?)"
_TIME_PATTERNS = [
    re.compile(rf"\b(?P<h>\d{{1,2}})(?:[:.](?P<m>[0-5]\d))?\s*{_AMPM}(?![a-z])", re.IGNORECASE),
    re.compile(r"\b(?P<h>[01]?\d|2[0-3])[:h](?P<m>[0-5]\d)\b", re.IGNORECASE),
    re.compile(r"\b(?P<h>\d{1,2})\s*o'?\s?clock\b", re.IGNORECASE),
    re.compile(
        r"\b(?:at|@|around|by|for)\s+(?P<h>\d{1,2})(?:[.:](?P<m>[0-5]\d))?\b(?!\s*(?:/|st|nd|rd|th|-))",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:half past|half-past)\s+(?P<h>\d{1,2})\b(?P<half>)", re.IGNORECASE),
]
_NOON = re.compile(r"\b(noon|midday|lunch ?time|12 noon)\b", re.IGNORECASE)
_PART = re.compile(
    r"\b(?P<part>morning|afternoon|evening|tonight|after work|this am|this pm)\b", re.IGNORECASE
)
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_WEEKDAYS = r"(?:mon|tue|tues|wed|weds|thu|thur|thurs|fri|sat|sun)(?:day|nesday|sday|urday)?"
_DAY = re.compile(
    rf"\b(?:the\s+)?(?:day after tomorrow|today|tonight|tomorrow|tmrw|tmr"
    rf"|(?:(?:next|this|coming)\s+)?{_WEEKDAYS}(?:\s+next week)?"
    rf"|in\s+(?:\d+|a|one|two|three|four|five|six|seven)\s+days?"
    rf"|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}(?:\s+\d{{4}})?"
    rf"|\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?"
    rf"|(?:the\s+)\d{{1,2}}(?:st|nd|rd|th))\b",
    re.IGNORECASE,
)
_WORD_NUM = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}


@dataclass(frozen=True, slots=True)
class When:
    """What a message says about the appointment time, all in client local time.

    ``day`` and/or a clock time (``hour``/``minute``, possibly ``ambiguous``
    between am and pm) or a part of the day (``morning``...).
    """

    day: date | None = None
    hour: int | None = None
    minute: int = 0
    ambiguous: bool = False
    part: str | None = None

    @property
    def has_clock(self) -> bool:
        return self.hour is not None

    def window(self) -> tuple[time, time] | None:
        return _PART_WINDOWS.get(self.part) if self.part else None


_WEEKDAY_INDEX = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def _resolve_day(phrase: str, now_local: datetime) -> date | None:
    """The date a day phrase names, on or after today (client local time).

    Relative words and weekdays are plain date arithmetic; explicit dates
    ("Nov 27", "27th of November", "11/27") go to dateparser, memoised per
    (phrase, today) because dateparser rebuilds its parsers for each new
    relative base (~15 ms a call).
    """
    low = " ".join(phrase.lower().split())
    today = now_local.date()
    if low.startswith("the "):
        low = low[4:]
    if low in {"today", "tonight"}:
        return today
    if low in {"tomorrow", "tmrw", "tmr"}:
        return today + timedelta(days=1)
    if low == "day after tomorrow":
        return today + timedelta(days=2)
    m = re.match(r"in\s+(\w+)\s+days?", low)
    if m:
        n = _WORD_NUM.get(m.group(1)) or (int(m.group(1)) if m.group(1).isdigit() else None)
        return today + timedelta(days=n) if n is not None else None
    m = re.fullmatch(rf"(?:(next|this|coming)\s+)?({_WEEKDAYS})(\s+next week)?", low)
    if m:
        target = _WEEKDAY_INDEX[m.group(2)[:3]]
        day = today + timedelta(days=(target - today.weekday()) % 7)
        if m.group(3) and (day - today).days < 7:
            day += timedelta(days=7)
        return day
    return _parse_date(low, today)


@functools.lru_cache(maxsize=4096)
def _parse_date(low: str, today: date) -> date | None:
    import dateparser

    settings = {
        # An explicit date ("Nov 21") means this year's unless that has passed.
        "PREFER_DATES_FROM": "current_period",
        "RELATIVE_BASE": datetime.combine(today, time(12, 0)),
        "RETURN_AS_TIMEZONE_AWARE": False,
        "PREFER_DAY_OF_MONTH": "first",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = dateparser.parse(low, languages=["en"], settings=settings)
    if parsed is None:
        return None
    day: date = parsed.date()
    if day < today and re.search(rf"{_MONTHS}|/", low) and not re.search(r"\d{4}", low):
        day = day.replace(year=day.year + 1)
    return day


def warm_up() -> None:
    """Load dateparser's language data now rather than on a caller's first date."""
    _parse_date("nov 27", date(2026, 1, 1))


def find_when(text: str, now_local: datetime) -> tuple[When | None, str]:
    """Parse a day and/or time of day from ``text``. Returns (When or None, rest)."""
    rest = text
    hour: int | None = None
    minute = 0
    ambiguous = False
    part: str | None = None
    for pattern in _TIME_PATTERNS:
        m = pattern.search(rest)
        if not m:
            continue
        h = int(m.group("h"))
        mins = int(m.groupdict().get("m") or 0)
        if "half" in m.groupdict():
            mins = 30
        ampm = (m.groupdict().get("ampm") or "").lower().replace(".", "").replace(" ", "")
        if h > 23 or (ampm and not 1 <= h <= 12):
            continue
        if ampm == "pm" and h < 12:
            h += 12
        elif ampm == "am" and h == 12:
            h = 0
        hour, minute = h, mins
        ambiguous = not ampm and 1 <= h <= 12
        rest = rest[: m.start()] + " " + rest[m.end() :]
        break
    if hour is None:
        m = _NOON.search(rest)
        if m:
            hour, minute = 12, 0
            rest = rest[: m.start()] + " " + rest[m.end() :]
    pm = _PART.search(rest)
    if pm:
        word = pm.group("part").lower()
        part = {
            "tonight": "evening",
            "after work": "evening",
            "this am": "morning",
            "this pm": "afternoon",
        }.get(word, word)
        if hour is not None and ambiguous:
            if part in ("afternoon", "evening") and hour < 12:
                hour += 12
            ambiguous = False
        rest = rest[: pm.start()] + " " + rest[pm.end() :]
        if word == "tonight":
            rest += " today"
    day: date | None = None
    dm = _DAY.search(rest)
    if dm:
        day = _resolve_day(dm.group(0), now_local)
        if day is not None:
            rest = rest[: dm.start()] + " " + rest[dm.end() :]
    if day is None and hour is None and part is None:
        return None, text
    return When(
        day=day, hour=hour, minute=minute, ambiguous=ambiguous, part=part if hour is None else None
    ), rest

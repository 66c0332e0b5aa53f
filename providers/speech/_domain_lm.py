"""A small domain language model for offline recognition, built from phrases.

PocketSphinx's general US-English trigram model recognises synthetic and
telephone speech poorly. A receptionist call, though, is mostly predictable:
services, yes/no, digits, weekdays and times, in a handful of carrier
sentences. This module writes a trigram model (ARPA text format) from those
sentences plus the client's own phrases, and a pronunciation dictionary
restricted to its vocabulary, which also makes the decoder load in ~20 ms
instead of ~0.5 s.

Smoothing is interpolated absolute discounting (Ney, Essen & Kneser 1994),
with every vocabulary word given a small floor count at the unigram level so
that words outside the carrier sentences stay reachable. Back-off weights are
computed exactly, so each conditional distribution sums to one.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["BUILTIN_PHRASES", "build_arpa", "domain_sentences", "normalize_words"]

_DIGITS = ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_HOURS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
_MINUTES = ["", "o'clock", "fifteen", "thirty", "forty five", "oh five", "forty", "twenty"]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_RELATIVE_DAYS = ["today", "tomorrow", "the day after tomorrow", "this weekend", "next week"]
_PARTS_OF_DAY = ["morning", "afternoon", "evening", "night", "noon", "midday", "lunchtime"]
_YES = [
    "yes",
    "yeah",
    "yep",
    "yes please",
    "sure",
    "okay",
    "ok",
    "that's right",
    "correct",
    "that's correct",
    "sounds good",
    "perfect",
    "great",
    "absolutely",
    "of course",
]
_NO = [
    "no",
    "nope",
    "no thanks",
    "no thank you",
    "not really",
    "that's wrong",
    "that's not right",
    "no that's it",
    "nothing else",
]

BUILTIN_PHRASES: tuple[str, ...] = tuple(
    _YES
    + _NO
    + _DIGITS
    + _HOURS
    + _DAYS
    + _RELATIVE_DAYS
    + _PARTS_OF_DAY
    + ["a m", "p m", "am", "pm", "half past", "quarter past", "quarter to"]
)
"""Phrases every receptionist call needs: yes/no, digits, weekdays, times."""

_TEMPLATES = (
    "i would like a {item}",
    "i would like to book a {item}",
    "i'd like a {item}",
    "i'd like to book a {item}",
    "i want a {item}",
    "i want to book a {item} on {day}",
    "can i book a {item}",
    "can i book a {item} on {day}",
    "can i get a {item} {day} at {time}",
    "could i book a {item} for {day}",
    "i would like a {item} on {day}",
    "i'd like a {item} on {day} at {time}",
    "a {item} please",
    "{item} please",
    "{item}",
    "how much is a {item}",
    "how long is the {item}",
    "do you do {item}",
    "do you have anything on {day}",
    "do you have anything {day} {part}",
    "are you open on {day}",
    "what time are you open on {day}",
    "what are your opening hours",
    "on {day}",
    "{day}",
    "{day} at {time}",
    "{day} {part}",
    "{day} {part} at {time}",
    "at {time}",
    "{time}",
    "around {time}",
    "in the {part}",
    "{day} in the {part}",
    "my number is {number}",
    "my phone number is {number}",
    "it's {number}",
    "{number}",
    "my name is {name}",
    "this is {name}",
    "my email is {name} at gmail dot com",
    "{yes}",
    "{no}",
    "{yes} {day} works",
    "{no} {day} doesn't work",
    "{yes} please book it",
    "{no} i need a different time",
    "i need to cancel my appointment",
    "i need to reschedule my appointment",
    "can i change my booking",
    "can i speak to someone",
    "can i talk to a person",
    "i have a question",
    "where are you located",
    "do you have parking",
    "how much does it cost",
    "what's the price",
    "thank you",
    "thanks",
    "that's all",
    "goodbye",
    "bye",
    "hello",
    "hi",
    "sorry",
    "what",
    "can you repeat that",
)

_NAMES = ["john", "mary", "smith", "maria", "james", "garcia", "david", "sarah", "lee", "anna"]

_COMMON_WORDS = [
    "a",
    "about",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "anything",
    "are",
    "around",
    "as",
    "ask",
    "at",
    "available",
    "back",
    "be",
    "because",
    "been",
    "before",
    "being",
    "best",
    "book",
    "booked",
    "booking",
    "but",
    "by",
    "call",
    "called",
    "calling",
    "can",
    "can't",
    "cancel",
    "card",
    "change",
    "check",
    "come",
    "could",
    "cost",
    "day",
    "did",
    "do",
    "does",
    "doesn't",
    "don't",
    "done",
    "earlier",
    "early",
    "else",
    "email",
    "evening",
    "every",
    "first",
    "for",
    "free",
    "friend",
    "from",
    "get",
    "give",
    "go",
    "going",
    "good",
    "got",
    "had",
    "has",
    "have",
    "help",
    "her",
    "here",
    "him",
    "his",
    "hold",
    "how",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "if",
    "in",
    "is",
    "it",
    "it's",
    "its",
    "just",
    "know",
    "last",
    "later",
    "let",
    "like",
    "little",
    "long",
    "look",
    "looking",
    "made",
    "make",
    "maybe",
    "me",
    "might",
    "minute",
    "minutes",
    "more",
    "morning",
    "much",
    "my",
    "need",
    "new",
    "next",
    "nice",
    "no",
    "not",
    "nothing",
    "now",
    "number",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "open",
    "or",
    "other",
    "our",
    "out",
    "over",
    "please",
    "price",
    "question",
    "really",
    "reschedule",
    "right",
    "same",
    "say",
    "see",
    "should",
    "so",
    "some",
    "someone",
    "something",
    "soon",
    "sorry",
    "still",
    "sure",
    "take",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "that's",
    "the",
    "their",
    "them",
    "then",
    "there",
    "they",
    "thing",
    "think",
    "this",
    "time",
    "times",
    "to",
    "today",
    "too",
    "two",
    "up",
    "us",
    "use",
    "very",
    "wait",
    "want",
    "was",
    "we",
    "week",
    "well",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "why",
    "will",
    "with",
    "work",
    "works",
    "would",
    "yeah",
    "yes",
    "you",
    "your",
]


def normalize_words(text: str) -> list[str]:
    """Lowercase words of ``text`` as the dictionary spells them (letters and apostrophes)."""
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())


def domain_sentences(phrases: Sequence[str], *, per_template: int = 24, seed: int = 0) -> list[str]:
    """Carrier sentences filled with ``phrases`` and the built-in vocabulary.

    Deterministic for given arguments. Each phrase also appears on its own.
    """
    rng = random.Random(seed)
    items = [" ".join(normalize_words(p)) for p in phrases]
    items = [p for p in items if p] or ["appointment"]
    times = [f"{h} {m}".strip() for h in _HOURS for m in _MINUTES]
    times += [f"{h} {ampm}" for h in _HOURS for ampm in ("am", "pm", "a m", "p m")]
    times += ["noon", "midday", "half past two", "quarter past three", "quarter to four"]
    days = _DAYS + _RELATIVE_DAYS + [f"next {d}" for d in _DAYS] + [f"this {d}" for d in _DAYS]
    fillers: Mapping[str, Sequence[str]] = {
        "item": items,
        "day": days,
        "time": times,
        "part": _PARTS_OF_DAY,
        "name": _NAMES,
        "yes": _YES,
        "no": _NO,
    }
    sentences: list[str] = []
    for template in _TEMPLATES:
        slots = re.findall(r"{(\w+)}", template)
        repeats = per_template if slots else 1
        for _ in range(repeats):
            values = {slot: rng.choice(fillers[slot]) for slot in slots if slot != "number"}
            if "number" in slots:
                length = rng.choice((3, 4, 7, 10))
                values["number"] = " ".join(rng.choice(_DIGITS[1:]) for _ in range(length))
            sentences.append(" ".join(template.format(**values).split()))
    sentences.extend(items)
    sentences.extend(" ".join(normalize_words(p)) for p in BUILTIN_PHRASES)
    return sentences


def build_arpa(
    sentences: Iterable[str],
    *,
    extra_vocabulary: Iterable[str] = (),
    order: int = 3,
    discount: float = 0.5,
    floor_count: float = 0.1,
) -> str:
    """An ARPA-format n-gram model of the (already normalised) ``sentences``.

    Args:
        sentences: space-separated words, one sentence each.
        extra_vocabulary: words reachable only through the unigram floor.
        order: n-gram order (2 or 3 is plenty here).
        discount: absolute discount subtracted from each seen n-gram count.
        floor_count: pseudo-count added to every vocabulary word's unigram.

    Returns:
        The model as ARPA text (``\\data\\`` ... ``\\end\\``).
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    vocabulary: set[str] = {w for w in extra_vocabulary if w}
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        vocabulary.update(words)
        tokens = ["<s>", *words, "</s>"]
        for n in range(1, order + 1):
            for i in range(len(tokens) - n + 1):
                gram = tuple(tokens[i : i + n])
                if gram != ("<s>",):
                    counts[n][gram] += 1
    vocabulary.add("</s>")

    total = sum(counts[1].values())
    probs: dict[int, dict[tuple[str, ...], float]] = {
        1: {
            (w,): (counts[1][(w,)] + floor_count) / (total + floor_count * len(vocabulary))
            for w in sorted(vocabulary)
        }
    }
    backoffs: dict[tuple[str, ...], float] = {}

    def lower_order(gram: tuple[str, ...]) -> float:
        table = probs[len(gram)]
        if gram in table:
            return table[gram]
        return backoffs.get(gram[:-1], 1.0) * lower_order(gram[1:])

    for n in range(2, order + 1):
        context_total: Counter[tuple[str, ...]] = Counter()
        context_types: Counter[tuple[str, ...]] = Counter()
        for gram, count in counts[n].items():
            context_total[gram[:-1]] += count
            context_types[gram[:-1]] += 1
        table: dict[tuple[str, ...], float] = {}
        for gram, count in sorted(counts[n].items()):
            context = gram[:-1]
            kept_mass = discount * context_types[context] / context_total[context]
            table[gram] = (count - discount) / context_total[context] + kept_mass * lower_order(
                gram[1:]
            )
        sums: defaultdict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for gram, p in table.items():
            sums[gram[:-1]][0] += p
            sums[gram[:-1]][1] += lower_order(gram[1:])
        for context, (seen, seen_lower) in sums.items():
            backoffs[context] = max(1e-12, 1.0 - seen) / max(1e-12, 1.0 - seen_lower)
        probs[n] = table

    lines = ["\\data\\"]
    lines.append(f"ngram 1={len(probs[1]) + 1}")
    lines.extend(f"ngram {n}={len(probs[n])}" for n in range(2, order + 1))
    for n in range(1, order + 1):
        lines.append("")
        lines.append(f"\\{n}-grams:")
        entries = list(probs[n].items())
        if n == 1:
            lines.append(_arpa_line(-99.0, ("<s>",), backoffs.get(("<s>",)), order > 1))
        for gram, p in entries:
            lines.append(_arpa_line(math.log10(p), gram, backoffs.get(gram), n < order))
    lines.extend(["", "\\end\\", ""])
    return "\n".join(lines)


def _arpa_line(log_prob: float, gram: tuple[str, ...], backoff: float | None, has_bo: bool) -> str:
    line = f"{log_prob:.5f}\t{' '.join(gram)}"
    if has_bo:
        line += f"\t{math.log10(backoff) if backoff else 0.0:.5f}"
    return line


def domain_vocabulary() -> list[str]:
    """Common conversational words kept reachable beyond the carrier sentences."""
    return list(_COMMON_WORDS)

"""Support answers from the language model, drawn only from the retrieved
passages and the config fact, and checked before they are sent.

:func:`generate_answer` makes one structured-output call (JSON
``{answer, cited, abstain}``, :data:`RESPONSE_SCHEMA`) and checks the reply;
it returns an :class:`~purposes.support.answer.Answer` like the extractive
composer (:func:`purposes.support.answer.compose`), or None when the
extractive composer must answer instead.

The prompt
    The business's name and tone; the rule "answer only from the passages
    and facts below; if they do not answer, abstain"; the passages labelled
    ``P1``..``Pn`` in retrieval order (short labels: a model copies them more
    reliably than chunk UUIDs; a passage's own id is accepted too), and the
    config fact, when one applies (at or above ``support.min_confidence``),
    labelled :data:`FACTS_ID`; the phone's
    shape (one or two short sentences, speakable, no markdown or URLs); the
    last :data:`HISTORY_TURNS` lines of the conversation, for follow-ups only.
    Temperature :data:`TEMPERATURE`; ``cited`` is an enum of the labels.

The checks, in order (the first that fails decides the outcome)
    1. ``malformed``: the text is one JSON object with ``answer`` (a string,
       not empty unless abstaining), ``cited`` (strings) and ``abstain`` (a
       boolean); no function calls.
    2. ``abstained``: the model says the sources do not answer: the
       abstention is returned (the agent's miss and escalation path).
    3. ``bad_citation``: nothing cited, or an id that is neither a label, a
       given passage's id nor :data:`FACTS_ID` with a fact given.
    4. ``unsupported_fact``: a key fact of the answer is not in what it
       cites (passage text and heading path, the fact's text and spoken
       form): every number — prices (``$85``, ``85 dollars``), percentages,
       durations (``60 minutes`` = ``1 hour``, ``24 hours`` = ``1 day``), clock times (``9am`` =
       ``9 AM`` = ``9:00``), phone numbers (digits compared), other numbers
       (``two`` = ``2``); every proper name (a capitalised word not starting
       a sentence, not in the question or the business's name; day names
       compared as ``mon``..``sun``); every URL and e-mail address; and the
       polarity of an answer that starts "Yes"/"No" (or "Of course",
       "Unfortunately"...): the cited sentence that shares the most terms
       with the question and answer must not say the opposite (a bare
       "Yes."/"No." before it, or its own leading one, decides; else a
       negation means no, a condition ("only", "unless", "up to"...) leaves
       it open, and a plain statement means yes).
    5. ``passed``: the answer is sent: Markdown removed, then for chat the
       cited files named ("(from faq.md)"), as the extractive answer does; for
       voice :func:`~purposes.support.text.speakable` and at most two
       sentences.

Every outcome is counted in :data:`ANSWER_CHECKS`; a ``malformed``,
``bad_citation`` or ``unsupported_fact`` reply also calls
``llm.fail(LlmReason.MALFORMED, ...)``, so the rest of the turn runs offline.
A failed call (:class:`~engine.llm.types.LlmError`: timeout, 5xx, skipped...)
returns None; :class:`~engine.llm.model.TurnModel` has already recorded it.

Confidence of a passed answer, in [0, 1]: ``0.5 + 0.5 * coverage``, where
``coverage`` is the share of the answer's content terms found in what it
cites (times the fact's own confidence when it cites the fact).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from prometheus_client import Counter

from engine.config import ClientConfig
from engine.knowledge.types import Passage
from engine.llm.model import TurnModel
from engine.llm.types import LlmError, LlmMessage, LlmReason, LlmRequest
from engine.session import Turn
from purposes.support.answer import Answer, AnswerRequest
from purposes.support.text import clean_markdown, sentences, speakable, terms

__all__ = [
    "ANSWER_CHECKS",
    "FACTS_ID",
    "HISTORY_TURNS",
    "RESPONSE_SCHEMA",
    "TEMPERATURE",
    "CheckOutcome",
    "generate_answer",
]

CheckOutcome = Literal["passed", "bad_citation", "unsupported_fact", "malformed", "abstained"]

ANSWER_CHECKS = Counter(
    "gateway_llm_answer_checks_total",
    "Model support answers by check outcome (passed, bad_citation, unsupported_fact, "
    "malformed, abstained)",
    ["client_id", "outcome"],
)

FACTS_ID = "facts"
"""The citation id of the client's config fact (hours, services, prices)."""
HISTORY_TURNS = 4
"""Recent conversation lines shown to the model, to resolve follow-up questions."""
HISTORY_CHARS = 300
"""Each history line is cut to this many characters."""
TEMPERATURE = 0.1
MAX_OUTPUT_TOKENS = 512
VOICE_MAX_WORDS = 40
TONE = "warm, concise and professional"

RESPONSE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {
            "type": "string",
            "description": "The reply to the customer; empty when abstaining.",
        },
        "cited": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Ids of the passages (and 'facts') the answer is drawn from.",
        },
        "abstain": {
            "type": "boolean",
            "description": "True when the passages and facts do not answer the question.",
        },
    },
    "required": ["answer", "cited", "abstain"],
}
"""The reply's shape; each request narrows ``cited`` to an enum of its labels."""


@dataclass(frozen=True, slots=True)
class _Source:
    """One thing the model may cite: a passage (``passage`` set) or the fact."""

    label: str
    text: str
    """What the answer's facts are checked against."""
    passage: Passage | None = None
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class _Reply:
    answer: str
    cited: tuple[str, ...]
    abstain: bool


async def generate_answer(
    llm: TurnModel,
    request: AnswerRequest,
    client: ClientConfig,
    history: Sequence[Turn] = (),
) -> Answer | None:
    """Answer ``request`` with the model, checked; None: use the extractive composer.

    ``history``: the conversation before this question, oldest first (the
    last :data:`HISTORY_TURNS` user/assistant lines are shown). Returns an
    abstention when the model abstains. Never raises for the model's failures
    (an :class:`~engine.llm.types.LlmError` gives None); a reply that fails its
    checks gives None and ends the model's part of the turn (``llm.fail``).
    No call is made (None) when there is nothing to answer from or the model
    is not available.
    """
    sources = _sources(request, client.support.min_confidence)
    if not sources or not llm.available:
        return None
    try:
        result = await llm.generate(_llm_request(request, client, sources, history))
    except LlmError:
        return None

    def rejected(outcome: CheckOutcome, detail: str) -> None:
        ANSWER_CHECKS.labels(client.client_id, outcome).inc()
        llm.fail(LlmReason.MALFORMED, f"support answer {detail}")

    reply = None if result.calls else _parse(result.text)
    if reply is None:
        rejected("malformed", "was not JSON of the asked shape")
        return None
    if reply.abstain:
        ANSWER_CHECKS.labels(client.client_id, "abstained").inc()
        return Answer.abstain(0.0)
    cited = _resolve(reply.cited, sources)
    if cited is None:
        rejected("bad_citation", "cited no source or an unknown one")
        return None
    problem = _unsupported(reply.answer, request.question, cited, client)
    if problem is not None:
        rejected("unsupported_fact", f"has {problem} its sources do not")
        return None
    ANSWER_CHECKS.labels(client.client_id, "passed").inc()
    return Answer(
        text=_render(reply.answer, cited, voice=request.voice),
        cited=tuple(
            dict.fromkeys(s.passage.id if s.passage is not None else FACTS_ID for s in cited)
        ),
        confidence=_confidence(reply.answer, cited),
        abstained=False,
    )


# --- the request -------------------------------------------------------------------


def _sources(request: AnswerRequest, min_confidence: float) -> dict[str, _Source]:
    """What the model may cite, by label: the fact (when sure enough to be an
    answer, as for the extractive composer), then the passages."""
    out: dict[str, _Source] = {}
    fact = request.fact
    if fact is not None and fact.confidence >= min_confidence:
        text = fact.text if fact.spoken is None else f"{fact.text}\n{fact.spoken}"
        out[FACTS_ID] = _Source(FACTS_ID, text, confidence=fact.confidence)
    for n, passage in enumerate(request.passages, start=1):
        label = f"P{n}"
        out[label] = _Source(label, f"{passage.section}\n{passage.text}", passage)
    return out


def _llm_request(
    request: AnswerRequest,
    client: ClientConfig,
    sources: Mapping[str, _Source],
    history: Sequence[Turn],
) -> LlmRequest:
    shape = (
        "Your answer is spoken on a phone call: one or two short sentences, at most "
        f"{VOICE_MAX_WORDS} words, plain words, no lists, no markdown, no URLs, no file "
        "names; say prices as '95 dollars'."
        if request.voice
        else "Your answer is a chat message: at most three short sentences, plain text, "
        "no markdown."
    )
    lines = [
        f"You answer customers' questions for {client.name}. Tone: {client.llm.tone or TONE}.",
        "Rules:",
        "- Answer only from the passages and facts below; if they do not answer the "
        'question, abstain (abstain: true, answer: "").',
        "- Never add a price, time, duration, number, name, link or promise that is not "
        "written below. Do not guess.",
        "- Start with Yes or No only when the passages say so.",
        '- List in "cited" the ids of the passages (and "facts") your answer is drawn from.',
        f"- {shape}",
    ]
    if client.llm.instructions:
        lines.append(f"- The business's own instructions: {client.llm.instructions}")
    fact = request.fact
    if FACTS_ID in sources and fact is not None:
        said = fact.for_voice() if request.voice else fact.text
        lines += ["", f"Facts from {client.name}'s settings [{FACTS_ID}]:", said]
    passages = [s for s in sources.values() if s.passage is not None]
    if passages:
        lines += ["", "Passages:"]
        for source in passages:
            assert source.passage is not None
            p = source.passage
            where = f"{p.file} > {p.section}" if p.section else p.file
            lines += [f"[{source.label}] ({where})", source.passage.text.strip(), ""]
    recent = _recent(history)
    if recent:
        lines += [
            "",
            "The conversation so far (only to understand the question; not a source):",
            *recent,
        ]
    schema = dict(RESPONSE_SCHEMA)
    properties = dict(schema["properties"])
    properties["cited"] = {
        **properties["cited"],
        "items": {"type": "string", "enum": list(sources)},
    }
    schema["properties"] = properties
    return LlmRequest(
        system="\n".join(lines).strip(),
        messages=(LlmMessage(role="user", text=request.question),),
        response_schema=schema,
        temperature=TEMPERATURE,
        max_output_tokens=MAX_OUTPUT_TOKENS,
        purpose="support",
    )


def _recent(history: Sequence[Turn]) -> list[str]:
    said = [t for t in history if t.role in ("user", "assistant") and t.text.strip()]
    out: list[str] = []
    for turn in said[-HISTORY_TURNS:]:
        who = "Customer" if turn.role == "user" else "Assistant"
        text = " ".join(turn.text.split())
        out.append(f"{who}: {text[:HISTORY_CHARS]}")
    return out


# --- the reply ---------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _parse(text: str) -> _Reply | None:
    """The reply, or None when it is not one JSON object of :data:`RESPONSE_SCHEMA`."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    answer, cited, abstain = value.get("answer"), value.get("cited"), value.get("abstain")
    if not isinstance(answer, str) or not isinstance(abstain, bool):
        return None
    if not isinstance(cited, list) or not all(isinstance(c, str) for c in cited):
        return None
    if not abstain and not answer.strip():
        return None
    return _Reply(answer.strip(), tuple(cited), abstain)


def _resolve(cited: Sequence[str], sources: Mapping[str, _Source]) -> list[_Source] | None:
    """The cited sources, or None when nothing is cited or an id is unknown."""
    by_id = {s.passage.id: s for s in sources.values() if s.passage is not None}
    by_label = {label.lower(): s for label, s in sources.items()}
    out: list[_Source] = []
    for raw in cited:
        key = raw.strip().strip("[]").strip()
        source = by_label.get(key.lower()) or by_id.get(key)
        if source is None:
            return None
        if source not in out:
            out.append(source)
    return out or None


# --- the checks --------------------------------------------------------------------


def _unsupported(
    answer: str, question: str, cited: Sequence[_Source], client: ClientConfig
) -> str | None:
    """What kind of fact of ``answer`` the cited sources lack ("a number"), or None."""
    material = "\n".join(s.text for s in cited)
    if not _numbers_supported(answer, material):
        return "a number"
    if not _names_supported(answer, f"{material}\n{question}\n{client.name}"):
        return "a name"
    low = material.lower()
    if any(link.lower().rstrip(".,") not in low for link in _LINK.findall(answer)):
        return "a link or address"
    if not _polarity_agrees(answer, question, cited):
        return "a yes/no"
    return None


# numbers ------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty-five": 45,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "ninety": 90,
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_ONE = re.compile(r"\bone\b", re.IGNORECASE)
_PHRASES = (
    (re.compile(r"\b(?:an|one) hour and a half\b|\bone and a half hours\b", re.I), "90 minutes"),
    (re.compile(r"\bhalf an hour\b", re.I), "30 minutes"),
    (re.compile(r"\b(?:an|one) hour\b", re.I), "1 hour"),
)
_HOURS_MINUTES = re.compile(
    r"\b(\d+)\s*(?:hours?|hrs?)\s*(?:and\s*)?(\d+)\s*(?:minutes?|mins?)\b", re.IGNORECASE
)
_PHONE = re.compile(r"(?<![\w.,])\+?\(?\d[\d\s().-]{5,}\d(?![\w%])")
_NUMBER = re.compile(
    r"(?<![\w.,:])(?P<cur>[$€£])?\s?"
    r"(?P<num>\d{1,2}:\d{2}|\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
    r"(?:\s?-?\s?(?P<unit>%|percent\b|per cent\b|[ap]\.?m\b\.?|dollars?\b|euros?\b|"
    r"pounds?\b|€|£|minutes?\b|mins?\b|hours?\b|hrs?\b|days?\b|weeks?\b|months?\b|years?\b))?",
    re.IGNORECASE,
)
_TYPED = frozenset({"money", "percent", "clock", "phone"})


@dataclass(frozen=True, slots=True)
class _Number:
    """A number as said: ``kind`` (money, percent, clock, phone, plain, or
    ``duration:min``/``:day``/``:week``/``:month``/``:year``), ``value``
    normalised (minutes for durations up to weeks, digits for phones), ``raw`` as written,
    ``clock``: the minutes of the day it may mean (``9:00`` is 9 AM or 9 PM)."""

    kind: str
    value: str
    raw: str
    clock: frozenset[int] = frozenset()


def _fmt(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:.2f}".rstrip("0")


def _numbers(text: str, *, source: bool) -> list[_Number]:
    """The numbers of ``text`` (a source also reads "one" as 1)."""
    for pattern, said in _PHRASES:
        text = pattern.sub(said, text)
    text = _NUMBER_WORD.sub(lambda m: str(_NUMBER_WORDS[m.group(1).lower()]), text)
    if source:
        text = _ONE.sub("1", text)
    text = _HOURS_MINUTES.sub(lambda m: f"{int(m[1]) * 60 + int(m[2])} minutes", text)
    out: list[_Number] = []

    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        if len(digits) < 7:
            return match.group()
        out.append(_Number("phone", digits, digits))
        return " "

    text = _PHONE.sub(phone, text)
    for m in _NUMBER.finditer(text):
        num, unit = m["num"], (m["unit"] or "").lower().replace(".", "").replace(" ", "")
        if ":" in num:
            hour, minute = (int(p) for p in num.split(":"))
        elif re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", num):
            hour, minute = -1, 0
            num = num.replace(",", "")
        else:
            hour, minute = -1, 0
            num = num.replace(",", ".")
        if hour >= 0 or unit in ("am", "pm"):
            h = hour if hour >= 0 else int(float(num))
            if unit == "am":
                times = {(h % 12) * 60 + minute}
            elif unit == "pm":
                times = {(h % 12 + 12) * 60 + minute}
            elif h > 12:
                times = {h * 60 + minute}
            else:
                times = {(h % 12) * 60 + minute, (h % 12 + 12) * 60 + minute}
            out.append(_Number("clock", str(sorted(times)), str(h % 12), frozenset(times)))
            continue
        value = float(num)
        raw = _fmt(value)
        if m["cur"] or unit in ("dollar", "dollars", "euro", "euros", "pound", "pounds", "€", "£"):
            out.append(_Number("money", raw, raw))
        elif unit in ("%", "percent"):
            out.append(_Number("percent", raw, raw))
        elif unit.startswith(("minute", "min")):
            out.append(_Number("duration:min", raw, raw))
        elif unit.startswith(("hour", "hr")):
            out.append(_Number("duration:min", _fmt(value * 60), raw))
        elif unit.startswith("day"):
            out.append(_Number("duration:min", _fmt(value * 1440), raw))
        elif unit.startswith("week"):
            out.append(_Number("duration:min", _fmt(value * 10080), raw))
        elif unit:
            out.append(_Number(f"duration:{unit.rstrip('s')}", raw, raw))
        else:
            out.append(_Number("plain", raw, raw))
    return out


def _number_supported(n: _Number, known: Sequence[_Number]) -> bool:
    if n.kind == "phone":
        return any(
            k.kind == "phone" and (k.value.endswith(n.value) or n.value.endswith(k.value))
            for k in known
        )
    if n.kind == "clock":
        return any(k.kind == "clock" and n.clock & k.clock for k in known) or any(
            k.kind == "plain" and k.raw == n.raw for k in known
        )
    if n.kind in _TYPED:
        return any(k.kind == n.kind and k.value == n.value for k in known)
    if n.kind.startswith("duration:") and any(
        k.kind == n.kind and k.value == n.value for k in known
    ):
        return True
    # a plain number, or a duration whose number the source says in other words
    # ("within 5 days" ~ "within 5 business days"; "16-year-olds" ~ "aged 16")
    return any(k.raw == n.raw and (n.kind == "plain" or k.kind not in _TYPED) for k in known)


def _numbers_supported(answer: str, material: str) -> bool:
    known = _numbers(material, source=True)
    return all(_number_supported(n, known) for n in _numbers(answer, source=False))


# names ---------------------------------------------------------------------------------

_NAME = re.compile(r"(?<![\w'’&-])[A-Z][\w'’&-]*")
_WORDS = re.compile(r"[\w'’&-]+")
_SENTENCE_START = re.compile(r"(?:^|[.!?][\"'”’)\]]*\s+|\n\s*|[-*•]\s+)$")
_NOT_NAMES = frozenset({"i", "i'm", "i'd", "i'll", "i've", "ok", "okay"})
_DAYS = {
    "monday": "mon",
    "tuesday": "tue",
    "tues": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "thurs": "thu",
    "thur": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}


def _word_key(word: str) -> str:
    w = word.lower().replace("’", "'").strip("'-&")
    if w.endswith("'s"):
        w = w[:-2]
    if w.rstrip("s") in _DAYS or w.rstrip("s") in _DAYS.values():
        w = w.rstrip("s")
    return _DAYS.get(w, w)


def _names_supported(answer: str, material: str) -> bool:
    known = {_word_key(w) for w in _WORDS.findall(material)}
    for m in _NAME.finditer(answer):
        if _SENTENCE_START.search(answer[: m.start()]):
            continue
        key = _word_key(m.group())
        if not key or key in _NOT_NAMES or any(c.isdigit() for c in key):
            continue
        if key not in known and key.rstrip("s") not in known:
            return False
    return True


_LINK = re.compile(
    r"\b(?:https?://|www\.)[^\s<>()\"']+[^\s<>()\"'.,;:!?]|[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    re.IGNORECASE,
)


# polarity ------------------------------------------------------------------------------

_ANSWER_YES = re.compile(r"^\W*(?:yes|yeah|yep|absolutely|certainly|of course)\b", re.I)
_ANSWER_NO = re.compile(r"^\W*(?:no|nope|unfortunately)\b(?!-|\s+(?:problem|worries))", re.I)
_BARE = re.compile(r"^(yes|no)\W*$", re.IGNORECASE)
_LEADING = re.compile(r"^(yes|no)\s*[,.!;:–—-](?!\w)", re.IGNORECASE)
_CONDITION = re.compile(
    r"\b(?:only|except|unless|at least|minimum|maximum|up to|no more than|over|under|aged|"
    r"older|younger|if|but|however|depend\w*)\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:not|never|no(?!-)|none|nobody|nothing|cannot|neither|nor|unfortunately)\b|n['’]t\b",
    re.IGNORECASE,
)


def _polarity(text: str, before: str | None) -> bool | None:
    """True (yes), False (no) or None (open) for a source sentence and the
    sentence before it in its paragraph."""
    said = (_BARE.match(before) if before is not None else None) or _LEADING.match(text)
    if said:
        return said.group(1).lower() == "yes"
    if _CONDITION.search(text):
        return None
    return not _NEGATION.search(text)


def _source_sentences(cited: Iterable[_Source]) -> list[tuple[str, str | None]]:
    """(sentence, the sentence before it in its paragraph) of every cited source."""
    out: list[tuple[str, str | None]] = []
    for source in cited:
        body = source.passage.text if source.passage is not None else source.text
        for kind, line in clean_markdown(body):
            if kind != "text":
                continue
            before: str | None = None
            for sentence in sentences(line):
                out.append((sentence, before))
                before = sentence
    return out


def _polarity_agrees(answer: str, question: str, cited: Sequence[_Source]) -> bool:
    if _ANSWER_YES.match(answer):
        says = True
    elif _ANSWER_NO.match(answer):
        says = False
    else:
        return True
    asked = set(terms(question)) | set(terms(answer))
    best: tuple[int, str, str | None] | None = None
    for sentence, before in _source_sentences(cited):
        if _BARE.match(sentence):
            continue
        overlap = len(asked & set(terms(sentence)))
        if overlap and (best is None or overlap > best[0]):
            best = (overlap, sentence, before)
    if best is None:
        return True
    source = _polarity(best[1], best[2])
    return source is None or source == says


# --- the answer as sent ------------------------------------------------------------------


def _render(text: str, cited: Sequence[_Source], *, voice: bool) -> str:
    plain = " ".join(line for _, line in clean_markdown(text)).strip() or text.strip()
    if voice:
        spoken = speakable(plain)
        parts = sentences(spoken)[:2]
        if len(parts) > 1 and len(" ".join(parts).split()) > VOICE_MAX_WORDS:
            parts = parts[:1]
        return " ".join(parts) or spoken
    files: list[str] = []
    for source in cited:
        p = source.passage
        if p is None:
            continue
        name = PurePosixPath(p.file).name or p.file
        named = f"{name}, p. {p.page}" if p.page is not None else name
        if named not in files:
            files.append(named)
    if not files:
        return plain
    listed = files[0] if len(files) == 1 else ", ".join(files[:-1]) + " and " + files[-1]
    return f"{plain} (from {listed})"


def _confidence(answer: str, cited: Sequence[_Source]) -> float:
    said = {t for t in terms(answer) if not t.isdigit()} - {"yes", "no"}
    material: set[str] = set()
    for source in cited:
        material |= set(terms(source.text))
        if source.passage is not None:
            material |= set(terms(source.passage.file))
    coverage = len(said & material) / len(said) if said else 1.0
    fact = min((s.confidence for s in cited if s.passage is None), default=1.0)
    return round(min(max((0.5 + 0.5 * coverage) * fact, 0.0), 1.0), 3)

"""Offline extractive answering: retrieved passages and a config fact in, a short
grounded reply with the ids of the passages it quotes out.

The step is one coroutine, :func:`compose`, over :class:`AnswerRequest` ->
:class:`Answer`, so an LLM composer can take its place later with the same
inputs and outputs (it would fill ``text``/``cited``/``confidence`` the same way
and keep the abstention rule). Its only side input is an optional
:data:`Similarity` (the index's embedder, ``ClientKnowledge.similarity``);
without one (a sparse-only index) the composer is purely lexical.

How an answer is made
    1. A :class:`~purposes.support.facts.Fact` (hours, prices... from the
       config) at or above ``min_confidence`` is the answer; nothing is cited.
    2. Otherwise every sentence of the top :data:`TOP_PASSAGES` passages
       (markdown stripped, bullets or short item lines after a ``…:`` line
       folded into it) is scored twice:

       * lexical support: the share of the question's terms (those of its
         asking clause: "before I give you my name: is there parking?" asks
         "is there parking?"; stop words
         removed, light stemming, a few synonyms; see
         :mod:`purposes.support.text`) found in the sentence or its heading,
         where "generic" terms (take, offer, have, spa, mom...) weigh
         :data:`GENERIC_WEIGHT`. "Where" asks for a location: it adds the term
         ``locat``, which a street address or a "Where…?" heading carries;
       * semantic support (with a similarity): the cosine ``c`` of the
         question with the sentence and ``h`` with its heading or FAQ question,
         ``(c + max(c, h)) / 2``, mapped linearly from :data:`SEMANTIC_FLOOR`
         (-> 0) to :data:`SEMANTIC_FULL` (-> 1), calibrated for
         all-MiniLM-L6-v2 (a question and the sentence that answers it score
         0.3-0.7; unrelated text about the same business 0.0-0.3).

       ``support`` is the better of the two (capped at 1); sentences are ranked by
       ``0.6 * max + 0.4 * min`` of them (uncapped), then by the raw cosine, the words in
       the sentence itself, the better-ranked passage (``passages`` are best
       first) and the earlier sentence. Headings and sentences ending in ``?``
       (FAQ questions) are never quoted, only matched.
    3. A following sentence is added when it continues the first (it starts
       with "They", "Later"..., or the first ends in ``:``), or supports the
       question on its own; a bare "Yes."/"No." before the chosen sentence is
       kept in front of it. Voice: at most two sentences and about 40 words.
    4. Key-term guard: every proper noun of the question ("Cigna") must occur
       in the passages. With a similarity, every *key* term (not generic, not
       a number) must be supported by the chosen answer: found in its
       sentence, heading or FAQ block, or close in meaning — its word is
       within :data:`SYNONYM_SUPPORT` of a word or word pair of the answer
       ("notice" ~ "24 hours"), or dropping it from the question lowers the
       question's cosine with the answer by :data:`TERM_SUPPORT` and the word
       is within :data:`WORD_SUPPORT` of the answer ("voucher" ~ "gift";
       "sauna", "wifi", "veterans", "dog": no). When the answer is a list of
       short items, only a near-synonym (:data:`LIST_WORD_SUPPORT`) counts:
       "showers" is no "towels" — except for the kind the items are examples
       of ("contactless payments, including Apple Pay": "phone" ~
       "contactless" counts at :data:`WORD_SUPPORT`). Question terms (generic
       ones too: "clients" ~ "customers") the answer supports in meaning then
       count as found for its support. Day and month names are not proper
       nouns. Without a similarity, yes/no
       questions must be *decided* by the quoted sentence: it (with its
       heading) holds the key term, or at least half of several. An
       unsupported term is not a yes: the reply says a name is not on the
       list only when a retrieved sentence is plainly an exhaustive list of
       names ("we accept only …: A, B and C", no "including"/"such as")
       sharing a term with the question, and the question's only missing
       term(s) are that name; otherwise it abstains.

Confidence, in [0, 1]
    With a similarity: ``0.70 * support + 0.15 * retrieval + 0.15 * margin``;
    lexical only: ``0.55 * support + 0.35 * retrieval + 0.10 * margin``.
    ``retrieval`` maps the quoted passage's dense cosine linearly from 0.2
    (-> 0) to 0.65 (-> 1), its sparse score ``s`` to ``s / (s + 2)`` (both
    present: 0.7/0.3 mix; neither: 0.5), and ``margin`` is its lead over the
    next passage (dense: /0.1, else relative sparse or fused score; 1.0 when
    alone). No support at all caps confidence at 0.3. Below
    ``min_confidence`` the answer abstains: ``text`` is empty and nothing is
    cited (the caller offers a person).

Sources
    Chat text ends with the quoted file, "(from faq.md)" or "(from
    menu.pdf, p. 3)", so the reply names its source even where the widget's
    source list is not shown (WhatsApp). Voice never reads file names, URLs or
    markdown; the ids in ``cited`` carry the sources either way.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from engine.knowledge.types import Passage
from purposes.support.facts import Fact
from purposes.support.text import (
    STOP_WORDS,
    clean_markdown,
    sentences,
    speakable,
    stem,
    strip_urls,
    terms,
    word_set,
)

__all__ = [
    "GENERIC_WEIGHT",
    "LIST_WORD_SUPPORT",
    "SEMANTIC_FLOOR",
    "SEMANTIC_FULL",
    "SYNONYM_SUPPORT",
    "TERM_SUPPORT",
    "TOP_PASSAGES",
    "WORD_SUPPORT",
    "Answer",
    "AnswerRequest",
    "Similarity",
    "compose",
]

Similarity = Callable[[str, Sequence[str]], Awaitable[Sequence[float] | None]]
"""``similarity(query, texts)``: the cosine of ``query`` with each of ``texts``
(in [-1, 1], in order), or None when there is no embedder
(``ClientKnowledge.similarity``)."""

TOP_PASSAGES = 3
"""Passages (best first) whose sentences may be quoted."""
GENERIC_WEIGHT = 0.4
"""Weight of a generic question term against 1.0 for a key term."""
SEMANTIC_FLOOR = 0.15
"""Question-sentence cosine (all-MiniLM-L6-v2) that counts as no semantic support."""
SEMANTIC_FULL = 0.45
"""Question-sentence cosine that counts as full semantic support."""
TERM_SUPPORT = 0.06
"""Drop in the question's cosine with the answer, when a key term's word is left
out of the question, above which the answer supports that term by meaning."""
WORD_SUPPORT = 0.40
"""Cosine of a key term's word with the closest word or word pair of the answer
above which the answer may support the term by meaning ("voucher" ~ "gift")."""
SYNONYM_SUPPORT = 0.55
"""Cosine of a key term's word with a word or word pair of the answer that
supports the term on its own ("notice" ~ "24 hours before")."""
LIST_WORD_SUPPORT = 0.60
""":data:`WORD_SUPPORT` when the answer is a list of short items."""
VOICE_MAX_WORDS = 40

_GENERIC = frozenset(
    stem(w)
    for w in word_set(
        """
    take accept offer have get do make provide allow need want use come go bring available
    possible spa salon clinic place business service services appointment appointments book
    booking there way option options like would thing someone anyone person people guy guys
    also still ever able okay fine good right sure late early long soon far often happen mean
    work kind sort type run running turn pop
    nearby near nearest around local locally
    tool tools equipment instrument instruments stuff item items
    office practice studio shop store center centre building
    buy purchase order leave put keep find give send try see
    exactly actually currently usually normally typically generally ahead here somewhere
    anywhere something anything else maybe perhaps possibly before
    customer client patient guest visitor me mom mum mother dad father parent parents husband
    wife partner son daughter friend family boyfriend girlfriend grandmother grandfather
    """
    )
)
_YES_NO = re.compile(
    r"^\s*(?:(?:so|and|hi|hey|hello|also|quick question)[,!.]?\s+)*"
    r"(?:do|does|did|is|are|was|were|can|could|will|would|may|might|should|shall|have|has|am)\b",
    re.IGNORECASE,
)
_CONTINUES = re.compile(
    r"^(?:They|It|Its|This|These|That|Those|Later|Otherwise|However|But|Also|Then|After|Before|"
    r"If|Each|Both|Either|Neither|No-shows?|In that case)\b"
)
_PRONOUN = re.compile(r"^(?:They|It|Its|This|These|That|Those|He|She)\b")
_BARE_YES_NO = re.compile(
    r"^(?:yes|no|yep|nope|absolutely|of course|sure)\b[^.!?]{0,20}[.!]$", re.I
)
_EXHAUSTIVE = re.compile(
    r"\b(?:only|exclusively|the following|these|those listed|as follows)\b|:", re.I
)
_HEDGED = re.compile(
    r"\b(?:including|include|includes|such as|for example|e\.g|among others|etc|and more|many|"
    r"most|other|others|various|like|some)\b",
    re.I,
)
_WORD_ORIG = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’&-]*")
_WHERE = re.compile(r"\bwhere\b", re.I)
_ADDRESS = re.compile(
    r"\b\d{1,5}\s+(?:[A-Z][\w'’-]*\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|"
    r"Ln|Drive|Dr|Way|Place|Pl|Square|Plaza|Court|Ct|Highway|Hwy|Parkway|Pkwy)\b"
)
# The term a location question ("where…?", "address") and an answer that gives one
# (a street address, a "Where…?" heading) share.
_LOCATION = stem("location")


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """What the composer answers from.

    ``passages``: retrieved for ``question``, best first (their order is the
    retrieval rank). ``fact``: the config's answer, if any. ``voice``: the
    reply will be spoken (phone): short, no URLs, no markdown, no file names.
    """

    question: str
    passages: Sequence[Passage] = ()
    fact: Fact | None = None
    voice: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply, or an abstention (``abstained``: ``text`` is "" and nothing is cited).

    ``cited``: ids of the passages the text quotes. ``confidence`` in [0, 1].
    """

    text: str
    cited: tuple[str, ...]
    confidence: float
    abstained: bool

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    @classmethod
    def abstain(cls, confidence: float) -> Answer:
        return cls(
            text="", cited=(), confidence=round(min(max(confidence, 0.0), 1.0), 3), abstained=True
        )


@dataclass(frozen=True, slots=True)
class _Sentence:
    text: str
    terms: frozenset[str]
    heading: frozenset[str]  # terms of the heading or FAQ question above it
    heading_text: str
    group: int  # sentences under one heading share a group
    index: int

    @property
    def context(self) -> str:
        """The sentence under its heading, as a reader sees it."""
        return f"{self.heading_text.rstrip('.')}. {self.text}" if self.heading_text else self.text


@dataclass(frozen=True, slots=True)
class _Scored:
    support: float  # the better of lexical (with the heading) and semantic
    rank_score: float  # 0.6 * max + 0.4 * min of lexical and (uncapped) semantic support
    cosine: float  # the raw semantic score (0.0 without a similarity)
    own: float  # lexical support of the sentence alone
    rank: int
    sentence: _Sentence


def _heading_terms(text: str) -> frozenset[str]:
    found = set(terms(text))
    if _WHERE.search(text):
        found.add(_LOCATION)
    return frozenset(found)


def _sentence_terms(text: str) -> frozenset[str]:
    found = set(terms(text))
    if _ADDRESS.search(text):
        found.add(_LOCATION)
    return frozenset(found)


def _question_terms(question: str) -> list[str]:
    found = terms(question)
    if _WHERE.search(question):
        found.insert(0, _LOCATION)
    return list(dict.fromkeys(found))


_CLAUSE_END = re.compile(r"(?<=[.!?:;])\s+|\s[—–]\s")


def _asked(question: str) -> str:
    """The part of ``question`` that asks: its last clause ending in ``?``
    ("before I give you my name: is there parking?" -> "is there parking?"),
    else all of it. Its terms are what an answer must support; the rest is
    context (retrieval and the sentences' meaning still see all of it)."""
    parts = [p.strip() for p in _CLAUSE_END.split(question) if p.strip()]
    asking = [p for p in parts if p.endswith("?") and terms(p)]
    return asking[-1] if asking else question


def _split(passage: Passage) -> list[_Sentence]:
    heading_text = passage.section.rpartition(" > ")[2].strip()
    heading = _heading_terms(passage.section)
    group = 0
    out: list[_Sentence] = []
    for kind, line in clean_markdown(passage.text):
        if kind == "heading":
            heading, heading_text, group = _heading_terms(line), line, group + 1
            continue
        for text in sentences(line):
            if text.endswith("?"):  # an FAQ question: the heading of what follows
                heading, heading_text, group = _heading_terms(text), text, group + 1
                continue
            out.append(
                _Sentence(text, _sentence_terms(text), heading, heading_text, group, len(out))
            )
    return out


def _weight(term: str) -> float:
    return GENERIC_WEIGHT if term in _GENERIC else 1.0


def _support(question: list[str], found: frozenset[str]) -> float:
    total = sum(_weight(t) for t in question)
    return sum(_weight(t) for t in question if t in found) / total if total else 0.0


# capitalised but common words: a day or month is no name a passage must repeat
# ("on a Tuesday?" against "walk-ins on Fridays and Saturdays only")
_CALENDAR = re.compile(
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)days?|january|february|march|april|june|july"
    r"|august|september|october|november|december",
    re.I,
)


def _proper_nouns(question: str) -> dict[str, str]:
    """Stemmed term -> the words as typed, for capitalised words not opening the
    question and acronyms ("Cigna", "Blue Cross", "PPO")."""
    words = list(_WORD_ORIG.finditer(question))
    out: dict[str, str] = {}
    run: list[str] = []
    for i, match in enumerate(words):
        word = match.group().strip("'’-")
        capital = word[:1].isupper() and (i > 0 or (word.isupper() and len(word) > 1))
        capital = capital and not _CALENDAR.fullmatch(word)
        if capital and word.lower() != "i":
            run.append(word)
            continue
        for w in run:
            for t in terms(w):
                out[t] = " ".join(run)
        run = []
    for w in run:
        for t in terms(w):
            out[t] = " ".join(run)
    return out


def _retrieval(p: Passage) -> float:
    dense = None if p.dense is None else min(max((p.dense - 0.2) / 0.45, 0.0), 1.0)
    sparse = None if p.sparse is None else max(p.sparse, 0.0) / (max(p.sparse, 0.0) + 2.0)
    if dense is not None and sparse is not None:
        return 0.7 * dense + 0.3 * sparse
    if dense is not None:
        return dense
    return sparse if sparse is not None else 0.5


def _margin(chosen: Passage, passages: Sequence[Passage]) -> float:
    others = [p for p in passages if p.id != chosen.id]
    if not others:
        return 1.0
    if chosen.dense is not None and all(p.dense is not None for p in others):
        best = max(p.dense for p in others if p.dense is not None)
        return min(max((chosen.dense - best) / 0.1, 0.0), 1.0)
    if chosen.sparse is not None and chosen.sparse > 0:
        best = max((p.sparse or 0.0) for p in others)
        return min(max((chosen.sparse - best) / chosen.sparse, 0.0), 1.0)
    best = max(p.score for p in others)
    return min(max((chosen.score - best) / chosen.score, 0.0), 1.0) if chosen.score > 0 else 0.0


def _cite(p: Passage) -> str:
    name = PurePosixPath(p.file).name or p.file
    return f"(from {name}, p. {p.page})" if p.page is not None else f"(from {name})"


def _merge_yes(prefix: str, text: str) -> str:
    first, _, rest = text.partition(" ")
    if first[1:].islower() or (len(first) == 1 and first != "I"):
        first = first.lower()
    return f"{prefix.rstrip('.!')}, {first} {rest}".strip()


def _words(text: str) -> int:
    return len(text.split())


def _shorten(text: str, limit: int) -> str:
    """Cut a long spoken sentence at the last clause boundary before ``limit`` words."""
    if _words(text) <= limit:
        return text
    cut = " ".join(text.split()[:limit])
    boundary = max(cut.rfind(", "), cut.rfind("; "), cut.rfind(" – "))
    head = cut[:boundary] if boundary > len(cut) // 2 else cut
    return head.rstrip(" ,;:") + "."


def _render(parts: list[str], passage: Passage, voice: bool) -> str:
    if voice:
        spoken = [speakable(p) for p in parts]
        if len(spoken) > 1 and _words(" ".join(spoken)) > VOICE_MAX_WORDS:
            spoken = spoken[:1]
        return " ".join(_shorten(s, VOICE_MAX_WORDS) for s in spoken[:2])
    return f"{' '.join(parts)} {_cite(passage)}"


_CAPITAL = re.compile(r"(?<=[\s,(:])[A-Z][\w&'’-]*")
_SEPARATOR = re.compile(r",\s|\s(?:and|or)\s")


def _exhaustive_names(text: str) -> bool:
    """A sentence that says it lists all of them, then lists at least three names
    ("…only the following plans: Delta Dental, MetLife and Aetna PPO")."""
    marker = _EXHAUSTIVE.search(text)
    if marker is None or _HEDGED.search(text):
        return False
    listed = text[marker.end() :]
    return len(_CAPITAL.findall(listed)) >= 3 and len(_SEPARATOR.findall(listed)) >= 2


def _not_listed(
    request: AnswerRequest, missing: list[str], shown: dict[str, str], question: list[str]
) -> tuple[str, Passage] | None:
    """ "X is not on our list" from an exhaustive list of names sharing a term with
    the question, or None.

    Only a name can be off a list of names: every missing term must belong to
    the one name asked about ("Cigna", "Blue Cross"), or be the only missing
    term; "dog" against "whitening is available only to patients aged 16" is
    no list of the same kind and abstains.
    """
    names = {shown[t] for t in missing if t in shown}
    if len(missing) > 1 and (len(names) != 1 or any(t not in shown for t in missing)):
        return None
    asked = set(question) - set(missing)
    for passage in request.passages[:2]:
        for s in _split(passage):
            if not _exhaustive_names(s.text) or not asked & (s.terms | s.heading):
                continue
            name = shown.get(missing[0], missing[0])
            return f"{name} is not on our list: {s.text}", passage
    return None


def _words_for(question: str, term: str) -> list[str]:
    """The words of ``question`` that make ``term``."""
    return [
        m.group()
        for m in _WORD_ORIG.finditer(question)
        if term in terms(m.group())
        or (term == _LOCATION and _WHERE.fullmatch(m.group().strip("'’-")))
    ]


def _without(question: str, term: str) -> str:
    """``question`` with the words that make ``term`` left out."""
    drop = set(_words_for(question, term))
    return " ".join(m.group() for m in _WORD_ORIG.finditer(question) if m.group() not in drop)


def _phrases(text: str) -> list[str]:
    """Content words of ``text`` and the pairs of neighbouring ones ("gift cards")."""
    words = [
        m.group().strip("'’-")
        for m in _WORD_ORIG.finditer(text)
        if m.group().lower() not in STOP_WORDS
    ]
    return list(dict.fromkeys(words + [f"{a} {b}" for a, b in itertools.pairwise(words)]))


async def _unsupported(
    question: str, key: list[str], best: _Sentence, block: frozenset[str], similarity: Similarity
) -> list[str]:
    """Key terms the chosen answer supports neither in words (its sentence,
    heading or FAQ block) nor in meaning: a term is close in meaning when
    leaving its word out lowers the question's cosine with the answer by
    :data:`TERM_SUPPORT` or more *and* the word itself is within
    :data:`WORD_SUPPORT` of a word or word pair of the answer ("voucher" ~
    "gift"). The first alone is weak for one-term questions ("sauna?"), the
    second alone for related things ("dog" ~ "tooth")."""
    absent = [t for t in key if t not in block]
    if not absent:
        return []
    variants = [_without(question, t) for t in absent]
    cosines = await similarity(best.context, [question, *variants])
    if cosines is None or len(cosines) != len(variants) + 1:
        return absent
    whole = cosines[0]
    out: list[str] = []
    phrases = _phrases(best.context)
    # a list names what it holds: its other items are siblings, not synonyms
    # ("showers" ~ "robes, slippers and towels"), so only a near-synonym counts
    listing = _enumerates(best.text)
    # "contactless payments, including Apple Pay and Google Pay": the words before
    # "including" name the kind the items are examples of, and a question's word
    # may be one of that kind ("phone" ~ "contactless")
    category = _EXAMPLES.split(best.text, maxsplit=1)
    kind = _phrases(f"{best.heading_text} {category[0]}") if listing and len(category) > 1 else []
    for term, without in zip(absent, cosines[1:], strict=True):
        word = " ".join(_words_for(question, term)) or term
        close = await similarity(word, phrases + kind) if phrases else None
        nearest = max(close[: len(phrases)]) if close else -1.0
        of_kind = max(close[len(phrases) :], default=-1.0) if close else -1.0
        if nearest >= max(SYNONYM_SUPPORT, LIST_WORD_SUPPORT if listing else 0.0):
            continue  # a near-synonym, even where the rest of the question says it too
        bar = LIST_WORD_SUPPORT if listing else WORD_SUPPORT
        if whole - without < TERM_SUPPORT or max(nearest - bar, of_kind - WORD_SUPPORT) < 0:
            out.append(term)
    return out


_EXAMPLES = re.compile(r",?\s+(?:including|such as|for example|e\.g\.?|like)\s+", re.I)


def _enumerates(text: str) -> bool:
    """A sentence that is a list of short items ("We provide robes, slippers and towels.")."""
    parts = [p for p in _SEPARATOR.split(text.rstrip(".!;")) if p.strip()]
    return len(parts) >= 3 and all(len(p.split()) <= 3 for p in parts[1:])


async def _meaning(
    question: str, split: Sequence[_Sentence], similarity: Similarity | None
) -> dict[str, float] | None:
    """Cosine of the question with each sentence and heading, or None."""
    if similarity is None:
        return None
    texts = list(dict.fromkeys([s.text for s in split] + [s.heading_text for s in split]))
    texts = [t for t in texts if t]
    cosines = await similarity(question, texts)
    if cosines is None or len(cosines) != len(texts):
        return None
    return {t: float(c) for t, c in zip(texts, cosines, strict=True)}


def _semantic(sentence: _Sentence, meaning: dict[str, float]) -> float:
    own = meaning.get(sentence.text, 0.0)
    heading = meaning.get(sentence.heading_text, own)
    return (own + max(own, heading)) / 2


def _clamp(x: float) -> float:
    return min(max(x, 0.0), 1.0)


async def compose(
    request: AnswerRequest, min_confidence: float, *, similarity: Similarity | None = None
) -> Answer:
    """Answer ``request`` from its fact or passages, or abstain below ``min_confidence``.

    ``min_confidence`` is the client's ``support.min_confidence`` in [0, 1].
    ``similarity``: the index's embedder as ``similarity(query, texts)`` (see
    :data:`Similarity`); None, or a None result, keeps the lexical path.
    Returns an :class:`Answer`; never raises on empty or odd input (it
    abstains). Errors of ``similarity`` (the embedder) propagate.
    """
    fact = request.fact
    if fact is not None and fact.confidence >= min_confidence:
        text = fact.for_voice() if request.voice else fact.text
        return Answer(text=text, cited=(), confidence=fact.confidence, abstained=False)
    asked = _asked(request.question)
    question = _question_terms(asked)
    passages = list(request.passages[:TOP_PASSAGES])
    if not question or not passages:
        return Answer.abstain(0.0)

    by_rank = {rank: _split(passage) for rank, passage in enumerate(passages)}
    every = [s for split in by_rank.values() for s in split]
    if not every:
        return Answer.abstain(0.0)
    meaning = await _meaning(request.question, every, similarity)
    scored: list[_Scored] = []
    for rank, split in by_rank.items():
        for s in split:
            lexical = _support(question, s.terms | s.heading)
            cosine = _semantic(s, meaning) if meaning is not None else 0.0
            # not capped at 1 for ranking: of two sentences past "full", the closer one wins
            semantic = (
                max((cosine - SEMANTIC_FLOOR) / (SEMANTIC_FULL - SEMANTIC_FLOOR), 0.0)
                if meaning is not None
                else 0.0
            )
            high, low = max(lexical, semantic), min(lexical, semantic)
            scored.append(
                _Scored(
                    min(high, 1.0),
                    0.6 * high + 0.4 * low,
                    cosine,
                    _support(question, s.terms),
                    rank,
                    s,
                )
            )
    best = max(
        scored,
        key=lambda c: (
            round(c.rank_score, 6),
            round(c.cosine, 6),
            round(c.own, 6),
            -c.rank,
            -c.sentence.index,
        ),
    )
    chosen = passages[best.rank]

    everywhere: set[str] = set()
    for p, split in zip(passages, by_rank.values(), strict=True):
        everywhere |= set(terms(p.text)) | set(terms(p.section)) | set(terms(p.file))
        for s in split:
            everywhere |= s.terms | s.heading
    proper = _proper_nouns(asked)
    key = [t for t in question if t not in _GENERIC and not t.isdigit()]
    missing = [t for t in key if t not in everywhere]
    found = best.sentence.terms | best.sentence.heading
    decided = not any(t in missing for t in proper)
    if decided and meaning is not None and similarity is not None:
        block = found.union(
            *(s.terms for s in by_rank[best.rank] if s.group == best.sentence.group)
        )
        # generic terms too: one the answer says in other words ("clients" ~
        # "customers") is support, though only key terms must be supported
        checked = [t for t in question if not t.isdigit()]
        unsupported = await _unsupported(asked, checked, best.sentence, block, similarity)
        meant = frozenset(t for t in checked if t not in block and t not in unsupported)
        unsupported = [t for t in unsupported if t in key]
        decided = not unsupported
        missing = missing or unsupported
        if decided and meant:
            # terms the answer supports in other words count as found
            support = min(max(best.support, _support(question, found | meant)), 1.0)
            best = dataclasses.replace(best, support=support)
    elif decided and _YES_NO.match(asked) and key:
        covered = sum(t in found for t in key) / len(key)
        decided = covered >= 0.5 if len(key) > 1 else covered == 1.0

    retrieval = _retrieval(chosen)
    margin = _margin(chosen, passages)
    weights = (0.70, 0.15, 0.15) if meaning is not None else (0.55, 0.35, 0.10)
    if not decided:
        listed = _not_listed(request, missing, proper, question) if missing else None
        if listed is None:
            return Answer.abstain(min(0.3, weights[0] * best.support + weights[1] * retrieval))
        text, passage = listed
        confidence = (
            weights[0] * 0.75
            + weights[1] * _retrieval(passage)
            + weights[2] * _margin(passage, passages)
        )
        if confidence < min_confidence:
            return Answer.abstain(confidence)
        return Answer(
            text=_render([strip_urls(text)], passage, request.voice),
            cited=(passage.id,),
            confidence=round(_clamp(confidence), 3),
            abstained=False,
        )

    confidence = weights[0] * best.support + weights[1] * retrieval + weights[2] * margin
    if best.support == 0.0:
        confidence = min(confidence, 0.3)
    if math.isnan(confidence):
        return Answer.abstain(0.0)
    confidence = round(_clamp(confidence), 3)
    if confidence < min_confidence:
        return Answer.abstain(confidence)

    group = [s for s in by_rank[best.rank] if s.group == best.sentence.group]
    at = group.index(best.sentence)
    parts = [best.sentence.text]
    if at > 0 and _BARE_YES_NO.match(group[at - 1].text):
        parts = [_merge_yes(group[at - 1].text, parts[0])]
    elif at > 0 and _PRONOUN.match(parts[0]):
        # "They are valid for two years." needs the sentence that says what "they" are
        before = group[at - 1].text
        if _BARE_YES_NO.match(before) is None:
            return Answer(
                text=_render([before, parts[0]], chosen, request.voice),
                cited=(chosen.id,),
                confidence=confidence,
                abstained=False,
            )
    if at + 1 < len(group):
        after = group[at + 1]
        own_key = any(t in after.terms for t in key)
        if (
            parts[0].endswith(":")
            or _words(parts[0]) < 5
            or _CONTINUES.match(after.text)
            or (own_key and _support(question, after.terms) > 0)
        ):
            parts.append(after.text)
    return Answer(
        text=_render(parts, chosen, request.voice),
        cited=(chosen.id,),
        confidence=confidence,
        abstained=False,
    )

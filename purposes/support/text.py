"""Small English text helpers shared by :mod:`purposes.support.facts` and
:mod:`purposes.support.answer`: terms for lexical overlap, markdown clean-up,
sentence splitting and voice-friendly rewriting.

Terms are lower-cased words with stop words removed and a light suffix
stemmer applied (``cancelled``/``cancellation`` -> ``cancel``, ``prices`` ->
``price``), then folded through a small synonym table (``cost``/``fee`` ->
``price``, ``14-year-old``/``older``/``kids`` -> ``age``). It is deliberately
crude: it only has to decide which sentence of a handful of retrieved
passages best supports a question, not to rank a corpus.
"""

from __future__ import annotations

import re

__all__ = [
    "STOP_WORDS",
    "clean_markdown",
    "sentences",
    "speakable",
    "stem",
    "strip_urls",
    "terms",
    "word_set",
]


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``, for word lists kept readable."""
    return frozenset(text.split())


STOP_WORDS = word_set("""
    a an the and or but if then than so of to in on at by for from with without about into onto
    over under up down out off as is are was were be been being am do does did doing done have has
    had having i me my mine myself we us our ours you your yours u ur he she it its they them their
    this that these those there here what which who whom whose when where why how whether
    can could would should will shall may might must let lets just also too very really please
    any some all each every no not nor only own same such more most much many few
    hi hello hey thanks thank ok okay yes yeah tell know wonder wondering question ask
    her hers him his
    'm 're 's 'll 've 'd im ive id youre dont doesnt isnt arent cant wont
    """)
"""Function words and chat filler. "not"/"no" are here: negation is kept by
quoting the passage's own sentence, never by matching it."""

# Folded after stemming, so both sides of a comparison meet on one term.
_SYNONYMS = {
    "cost": "price",
    "fee": "price",
    "charg": "price",
    "rate": "price",
    "pric": "price",
    "expensiv": "price",
    "cheap": "price",
    "pay": "price",
    "payment": "price",
    "cancell": "cancel",
    "cancelation": "cancel",
    "reschedul": "cancel",
    "accept": "take",
    "tak": "take",
    "kid": "age",
    "child": "age",
    "children": "age",
    "minor": "age",
    "teen": "age",
    "teenag": "age",
    "teenager": "age",
    "old": "age",
    "older": "age",
    "younger": "age",
    "young": "age",
    "ag": "age",
    "accessibl": "access",
    "accessibility": "access",
    "address": "locat",
    "location": "locat",
    "loc": "locat",
    "parking": "park",
    "clos": "close",
    "show": "arriv",  # "show up", "no-shows"
    "wheelchair": "wheelchair",
}
_AGE = re.compile(r"\b\d{1,2}\s*-?\s*(?:years?|yrs?|y/?o)(?:\s*-?\s*old)?\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CONTRACTION = re.compile(r"(?:'s|'re|'ll|'ve|'d|'m|n't)$")
_DOUBLE = re.compile(r"([b-df-hj-np-tv-z])\1$")


def stem(word: str) -> str:
    """A light English suffix stripper (a few Porter step-1 rules), then synonyms.

    ``cancelled``/``cancelling``/``cancellation`` -> ``cancel``; ``prices`` ->
    ``price``; ``whitening`` -> ``whiten``; ``located``/``location``/``address``
    -> ``locat``. Short words are left alone.
    """
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith("sses"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ation", "ing", "ed"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if _DOUBLE.search(w) and not w.endswith(("ll", "ss")):
                w = w[:-1]
            break
    if len(w) > 4 and w.endswith("e") and not w.endswith("ee"):
        w = w[:-1]
    return _SYNONYMS.get(w, w)


def terms(text: str) -> list[str]:
    """Content terms of ``text`` in order (stemmed, stop words removed).

    An age ("14-year-old", "16 yrs") becomes the single term ``age``.
    """
    text = _AGE.sub(" age ", text.lower().replace("’", "'"))
    out: list[str] = []
    for word in _WORD.findall(text):
        word = _CONTRACTION.sub("", word)
        if word in STOP_WORDS or (len(word) < 2 and not word.isdigit()):
            continue
        out.append(stem(word))
    return out


# --- markdown and sentences --------------------------------------------------

_MD_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MD_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_MD_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_MD_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\"']+[^\s<>()\"'.,;:!?]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9$€£])")
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|approx|Mr|Mrs|Ms|Dr|St|Ave|No|vs|p)\.$", re.IGNORECASE)


def _inline(text: str) -> str:
    text = _MD_LINK.sub(lambda m: m.group(1) or m.group(2), text)
    text = _MD_AUTOLINK.sub(r"\1", text)
    for _ in range(2):  # nested emphasis: **_word_**
        text = _MD_EMPHASIS.sub(r"\2", text)
    return text


def _join_list(intro: str, items: list[str]) -> str:
    items = [i.rstrip(" .;,") for i in items if i.strip(" .;,")]
    if not items:
        return intro
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"{intro} {listed}." if intro else f"{listed}."


def clean_markdown(text: str) -> list[tuple[str, str]]:
    """Markdown (or plain text) -> ``[(kind, line)]`` with kind ``heading`` or ``text``.

    Headings lose their ``#``; links keep their text; emphasis and code marks
    go; a bulleted list after a line ending in ``:`` is folded into that line
    ("We accept: A, B and C."); other bullets become lines of their own;
    table rows become "cell, cell" lines. Blank lines end a paragraph.
    """
    out: list[tuple[str, str]] = []
    paragraph: list[str] = []
    intro: str | None = None
    items: list[str] = []

    def flush_list() -> None:
        nonlocal intro, items
        if intro is not None:
            out.append(("text", _join_list(intro, items)))
        intro, items = None, []

    def flush_paragraph() -> None:
        if paragraph:
            out.append(("text", " ".join(paragraph)))
            paragraph.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line or _MD_RULE.match(line) or _TABLE_SEP.match(line):
            flush_paragraph()
            if not line and intro is not None and items:
                flush_list()
            continue
        if _MD_HEADING.match(line):
            flush_paragraph()
            flush_list()
            out.append(("heading", _inline(_MD_HEADING.sub("", line).rstrip("# ").strip())))
            continue
        if line.startswith("|"):
            flush_paragraph()
            flush_list()
            cells = [_inline(c.strip()) for c in line.strip("|").split("|") if c.strip()]
            if cells:
                out.append(("text", ", ".join(cells) + "."))
            continue
        line = _inline(line.lstrip("> ").strip())
        bullet = _MD_BULLET.match(line)
        if bullet:
            item = line[bullet.end() :]
            if intro is None and paragraph and paragraph[-1].endswith(":"):
                intro = paragraph.pop()
                flush_paragraph()
            if intro is not None:
                items.append(item)
            else:
                flush_paragraph()
                out.append(("text", item if item.endswith((".", "!", "?")) else item + "."))
            continue
        flush_list()
        paragraph.append(line)
    flush_paragraph()
    flush_list()
    return _fold_item_lines(out)


_ITEM_WORDS = 8


def _fold_item_lines(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Fold short unpunctuated lines after a line ending in ``:`` into it, as
    bullets are: an HTML list or a PDF column often comes out as one item per
    paragraph ("We accept these plans:" / "Cigna Dental PPO" / "MetLife PDP")."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        kind, line = lines[i]
        i += 1
        if kind != "text" or not line.endswith(":"):
            out.append((kind, line))
            continue
        items: list[str] = []
        while i < len(lines):
            item_kind, item = lines[i]
            if item_kind != "text" or item.endswith((".", "!", "?", ":", ";")):
                break
            if len(item.split()) > _ITEM_WORDS:
                break
            items.append(item)
            i += 1
        out.append((kind, _join_list(line, items) if items else line))
    return out


def sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences (after ``.!?`` and a capital or digit),
    not after common abbreviations ("e.g.", "Ave.")."""
    parts: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        head = paragraph[start : match.start()].strip()
        if _ABBREV.search(head):
            continue
        parts.append(head)
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        parts.append(tail)
    return [p for p in parts if p]


# --- voice -------------------------------------------------------------------

_CURRENCY_WORDS = {"$": "dollars", "€": "euros", "£": "pounds"}
_MONEY_BEFORE = re.compile(r"([$€£])\s?(\d+(?:[.,]\d{1,2})?)")
_MONEY_AFTER = re.compile(r"(\d+(?:[.,]\d{1,2})?)\s?([€£])")


def strip_urls(text: str) -> str:
    """Remove URLs: "our website (https://x.example)" -> "our website"; a bare
    URL becomes "our website"."""

    def repl(match: re.Match[str]) -> str:
        before = text[: match.start()].lower()
        if re.search(r"\b(?:website|site|page|online)\W*(?:\(|:|at)?\s*$", before):
            return ""
        return " our website"

    text = re.sub(
        r"\s*(?:\(|:)?\s*" + _URL.pattern + r"\)?", repl, text, flags=re.IGNORECASE
    ).strip()
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return re.sub(r"\s{2,}", " ", text)


def speakable(text: str) -> str:
    """Text a speech synthesiser reads well: no URLs, no markdown leftovers,
    money and percentages in words ("$25" -> "25 dollars", "50%" -> "50 percent").
    """
    text = strip_urls(text)
    text = re.sub(r"[*_`#|>]+", "", text)
    text = _MONEY_BEFORE.sub(lambda m: f"{m.group(2)} {_CURRENCY_WORDS[m.group(1)]}", text)
    text = _MONEY_AFTER.sub(lambda m: f"{m.group(1)} {_CURRENCY_WORDS[m.group(2)]}", text)
    text = re.sub(r"(\d)\s?%", r"\1 percent", text)
    text = text.replace("&", " and ").replace("–", " to ").replace(" / ", " or ")
    text = re.sub(r"\(\s*\)", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()

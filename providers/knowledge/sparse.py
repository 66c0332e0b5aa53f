"""BM25-style sparse vectors for Qdrant (the sparse half of hybrid retrieval).

A document's vector holds, for each distinct term, the BM25 term-frequency
part ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))`` (Robertson &
Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond", 2009);
the IDF part is Qdrant's: the collection's sparse vector is configured with
``modifier=IDF``, so Qdrant weighs each query term by its inverse document
frequency in that collection at query time. A query's vector holds weight 1
per distinct term. Their dot product is then BM25.

``avgdl`` is a constant (:data:`AVG_DOC_WORDS`) rather than the collection's
mean, so that an incremental ingest never has to rewrite unchanged chunks;
chunks are sized to about that length (:mod:`providers.knowledge.chunking`).

Terms: lowercase words and numbers, English stop words dropped (negations
kept), a light suffix stemmer (plurals, ``-ing``, ``-ed``), hashed to 31-bit
indices (blake2b), so no vocabulary has to be stored or shared.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

__all__ = ["AVG_DOC_WORDS", "SparseVec", "encode_document", "encode_query", "terms"]

AVG_DOC_WORDS = 100.0
"""The ``avgdl`` of BM25, in terms."""
K1 = 1.2
B = 0.75

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "let",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "get",
        "got",
        "also",
        "s",
        "t",
        "d",
        "ll",
        "m",
        "re",
        "ve",
        "y",
        "hi",
        "hello",
        "please",
        "thanks",
        "thank",
    ]
)


@dataclass(frozen=True, slots=True)
class SparseVec:
    """Parallel ``indices`` (31-bit term hashes, ascending) and ``values`` (weights)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


def _stem(word: str) -> str:
    if word.isdigit() or len(word) <= 3:
        return word
    for suffix, repl in (
        ("ations", ""),
        ("ation", ""),
        ("ies", "y"),
        ("sses", "ss"),
        ("ing", ""),
        ("ed", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + repl
            break
    else:
        if word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiousz":
        word = word[:-1]  # "cancelled"/"cancellation"/"canceled" -> "cancel"
    return word


def terms(text: str) -> list[str]:
    """The text's index terms, in order (repeats kept)."""
    out = []
    for token in _TOKEN.findall(text.lower()):
        token = token.split("'")[0]  # possessives and contractions: "patient's" -> "patient"
        if token and token not in _STOP:
            out.append(_stem(token))
    return out


def _index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big") & (
        0x7FFFFFFF
    )


def _vector(weights: dict[int, float]) -> SparseVec:
    ordered = sorted(weights.items())
    return SparseVec(tuple(i for i, _ in ordered), tuple(w for _, w in ordered))


def encode_document(text: str) -> SparseVec:
    """BM25 term-frequency weights of a chunk's terms (see the module docstring)."""
    found = terms(text)
    length = len(found)
    norm = K1 * (1 - B + B * length / AVG_DOC_WORDS)
    weights: dict[int, float] = {}
    for term, tf in Counter(found).items():
        index = _index(term)
        weights[index] = weights.get(index, 0.0) + tf * (K1 + 1) / (tf + norm)
    return _vector(weights)


def encode_query(text: str) -> SparseVec:
    """Weight 1 for each distinct term of the query (empty when it has none)."""
    return _vector({_index(term): 1.0 for term in set(terms(text))})

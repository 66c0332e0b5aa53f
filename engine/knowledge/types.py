"""The knowledge tool's vocabulary: what retrieval returns and what the index says of itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Chunk", "IndexStatus", "IngestReport", "Passage", "Section"]

IndexStatus = Literal["ready", "building", "missing", "failed"]
"""``ready``: searchable and up to date with the folder at the last ingest;
``building``: an ingest is running (search may be stale or empty);
``missing``: never ingested; ``failed``: the last ingest failed (see logs)."""


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk of a client's knowledge, with what a citation needs.

    ``id``: stable chunk id (the same text in the same place keeps its id).
    ``file``: path relative to the client's knowledge folder (``faq.md``).
    ``section``: heading path, outermost first, joined with `` > ``
    (``Spa del Sol FAQ > Where are you located?``), or "".
    ``page``: 1-based PDF page, else None.
    ``score``: the fused (reciprocal rank fusion) score, higher is better.
    ``dense``: cosine similarity of query and chunk embeddings in [-1, 1], or
    None without an embedder. ``sparse``: the BM25-style sparse score (>= 0),
    or None when the chunk came from the dense side only.
    """

    id: str
    file: str
    section: str
    page: int | None
    text: str
    score: float
    dense: float | None = None
    sparse: float | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path, on one page, as a parser found it.

    ``path``: heading path, outermost first (empty before the first heading).
    ``page``: 1-based PDF page, else None. ``paragraphs``: the section's
    paragraphs in order, whitespace-normalised, never empty strings.
    """

    path: tuple[str, ...]
    page: int | None
    paragraphs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One indexable piece of a file: never spans two sections or two pages.

    ``id``: stable id (a UUID string derived from a SHA-256 of client, file,
    section, page and text: the same text in the same place keeps its id).
    ``file``, ``section``, ``page``, ``text``: as in :class:`Passage`.
    ``words``: whitespace-separated words in ``text``.
    """

    id: str
    file: str
    section: str
    page: int | None
    text: str
    words: int

    @property
    def indexed_text(self) -> str:
        """What the embedder and the sparse encoder see: the heading path, then the
        text (a FAQ's question is its heading, and carries most of the words a
        customer asks with)."""
        return f"{self.section}\n{self.text}" if self.section else self.text


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one ingest of a client's knowledge folder did.

    File lists hold paths relative to the folder; ``failed``: files that could
    not be parsed (their previous chunks, if any, are kept). ``chunks``: chunks written
    (embedded and upserted) by this ingest; ``chunks_total``: chunks in the
    collection afterwards. ``seconds``: wall time of the whole ingest.
    ``embedder``: the embedder's name, or ``none`` (sparse only).
    """

    client_id: str
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    chunks: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    embedder: str = "none"

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for logs and the CLI (file names are the business's, not customers')."""
        return (
            f"{self.client_id}: {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed"
            f"{f', {len(self.failed)} failed' if self.failed else ''}; "
            f"{self.chunks} chunk(s) written, {self.chunks_total} in the index, "
            f"{self.seconds:.2f} s (embedder: {self.embedder})"
        )

"""Heading-aware chunking: :class:`Section` runs -> :class:`Chunk` s for the index.

A chunk never spans two sections (nor two PDF pages: a page is part of a
section's identity here). A section of at most ``max_words`` words is one
chunk; a longer one is packed paragraph by paragraph to about
``target_words``, a paragraph longer than ``max_words`` is split between
sentences, and each chunk after the first repeats the previous chunk's last
sentence (at most ``overlap_words`` words) so a fact on a boundary keeps its
context. Ids are stable: a SHA-256 of client, file, section, page and text,
shaped as a UUID (what Qdrant accepts as a point id).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from engine.knowledge.types import Chunk, Section

__all__ = ["ChunkOptions", "chunk_id", "chunk_sections"]

SECTION_JOIN = " > "
"""How a heading path is joined into :attr:`Chunk.section` (outermost first)."""

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True, slots=True)
class ChunkOptions:
    """Chunk sizes, in words. Raises ValueError when they are not ordered
    ``0 <= overlap_words < target_words <= max_words``."""

    target_words: int = 140
    max_words: int = 200
    overlap_words: int = 30

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_words < self.target_words <= self.max_words:
            raise ValueError(
                "chunk sizes must satisfy 0 <= overlap_words < target_words <= max_words, "
                f"got {self.overlap_words}, {self.target_words}, {self.max_words}"
            )


def chunk_id(client_id: str, file: str, section: str, page: int | None, text: str) -> str:
    """The stable id of a chunk: the same text in the same place keeps it."""
    key = "\x1f".join((client_id, file, section, "" if page is None else str(page), text))
    return str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16]))


def _words(text: str) -> int:
    return len(text.split())


def _sentences(paragraph: str, max_words: int) -> list[str]:
    """A paragraph's sentences; a sentence longer than ``max_words`` is cut in word runs."""
    out: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        words = sentence.split()
        for i in range(0, len(words), max_words):
            out.append(" ".join(words[i : i + max_words]))
    return [s for s in out if s]


def _pack(paragraphs: Iterable[str], options: ChunkOptions) -> list[str]:
    """Pack one section's paragraphs into chunk texts."""
    units: list[tuple[str, bool]] = []  # (text, starts a paragraph)
    for paragraph in paragraphs:
        if _words(paragraph) <= options.max_words:
            units.append((paragraph, True))
        else:
            units += [(s, i == 0) for i, s in enumerate(_sentences(paragraph, options.max_words))]
    if sum(_words(text) for text, _ in units) <= options.max_words:
        return [_join(units)] if units else []

    chunks: list[str] = []
    current: list[tuple[str, bool]] = []
    size = 0
    for unit in units:
        n = _words(unit[0])
        if current and (size + n > options.max_words or size >= options.target_words):
            chunks.append(_join(current))
            tail = _sentences(current[-1][0], options.max_words)[-1]
            current = [(tail, False)] if _words(tail) <= options.overlap_words else []
            size = sum(_words(t) for t, _ in current)
        current.append(unit)
        size += n
    if current:
        chunks.append(_join(current))
    return chunks


def _join(units: list[tuple[str, bool]]) -> str:
    text = ""
    for piece, starts in units:
        text += ("\n\n" if starts else " ") + piece if text else piece
    return text


def chunk_sections(
    client_id: str, file: str, sections: Iterable[Section], options: ChunkOptions | None = None
) -> list[Chunk]:
    """The chunks of one file's sections, in document order, ids unique (a chunk
    repeating an earlier one word for word in the same place is dropped)."""
    opts = options or ChunkOptions()
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for section in sections:
        path = SECTION_JOIN.join(section.path)
        for text in _pack(section.paragraphs, opts):
            cid = chunk_id(client_id, file, path, section.page, text)
            if cid in seen:
                continue
            seen.add(cid)
            chunks.append(Chunk(cid, file, path, section.page, text, _words(text)))
    return chunks

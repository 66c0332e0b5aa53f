"""Knowledge, as the engine and the purposes see it: the vocabulary of retrieval
(:mod:`engine.knowledge.types`) and the port one client's knowledge offers its
agents (:class:`Knowledge`). The index itself (Qdrant, embedders, parsers) is a
provider: :mod:`providers.knowledge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.knowledge.types import Chunk, IndexStatus, IngestReport, Passage, Section

__all__ = ["Chunk", "IndexStatus", "IngestReport", "Knowledge", "Passage", "Section"]


class Knowledge(Protocol):
    """One client's knowledge, as its agents see it (``Tools.knowledge``)."""

    async def search(self, query: str, k: int = 5) -> list[Passage]:
        """Up to ``k`` passages of this client's documents for ``query``, best first."""
        ...

    def status(self) -> IndexStatus:
        """Whether the client's index is ready, building, missing or failed."""
        ...

    async def similarity(self, query: str, texts: Sequence[str]) -> list[float] | None:
        """Cosine similarity of ``query`` with each of ``texts`` (in [-1, 1], in
        order); None without an embedder (sparse-only search)."""
        ...

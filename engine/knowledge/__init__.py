"""Each client's knowledge: files -> chunks -> a Qdrant index, hybrid search over it.

::

    index = KnowledgeIndex.open(data_dir=Path("data"), embedder=make_embedder("auto"))
    report = await index.ingest("spa-del-sol", Path("clients/spa-del-sol/knowledge"))
    passages = await index.search("spa-del-sol", "is there parking?", k=5)

Modules: :mod:`~engine.knowledge.parsers` (md/txt/html/pdf -> sections),
:mod:`~engine.knowledge.chunking` (sections -> chunks with stable ids),
:mod:`~engine.knowledge.sparse` (BM25 sparse vectors),
:mod:`~engine.knowledge.embedders` (dense vectors, provider interface),
:mod:`~engine.knowledge.index` (Qdrant: collections, ingest, search).
"""

from engine.knowledge.chunking import ChunkOptions, chunk_sections
from engine.knowledge.embedders import Embedder, SentenceTransformerEmbedder, make_embedder
from engine.knowledge.index import (
    ClientKnowledge,
    IndexLockedError,
    KnowledgeIndex,
    Progress,
    collection_name,
)
from engine.knowledge.parsers import SUFFIXES, KnowledgeFileError, parse_file
from engine.knowledge.types import Chunk, IndexStatus, IngestReport, Passage, Section

__all__ = [
    "SUFFIXES",
    "Chunk",
    "ChunkOptions",
    "ClientKnowledge",
    "Embedder",
    "IndexLockedError",
    "IndexStatus",
    "IngestReport",
    "KnowledgeFileError",
    "KnowledgeIndex",
    "Passage",
    "Progress",
    "Section",
    "SentenceTransformerEmbedder",
    "chunk_sections",
    "collection_name",
    "make_embedder",
    "parse_file",
]

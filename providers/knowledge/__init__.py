"""The knowledge provider: files -> chunks -> a Qdrant index, hybrid search over it.

::

    index = KnowledgeIndex.open(data_dir=Path("data"), embedder=make_embedder("auto"))
    report = await index.ingest("spa-del-sol", Path("clients/spa-del-sol/knowledge"))
    passages = await index.search("spa-del-sol", "is there parking?", k=5)

Modules: :mod:`~providers.knowledge.parsers` (md/txt/html/pdf -> sections),
:mod:`~providers.knowledge.chunking` (sections -> chunks with stable ids),
:mod:`~providers.knowledge.sparse` (BM25 sparse vectors),
:mod:`~providers.knowledge.embedders` (dense vectors, provider interface),
:mod:`~providers.knowledge.index` (Qdrant: collections, ingest, search).
The vocabulary (:class:`~engine.knowledge.Passage`...) and the port the agents
see (:class:`~engine.knowledge.Knowledge`) live in :mod:`engine.knowledge`.
"""

from engine.knowledge import Chunk, IndexStatus, IngestReport, Passage, Section
from providers.knowledge.chunking import ChunkOptions, chunk_sections
from providers.knowledge.embedders import Embedder, SentenceTransformerEmbedder, make_embedder
from providers.knowledge.index import (
    ClientKnowledge,
    IndexLockedError,
    KnowledgeIndex,
    Progress,
    collection_name,
)
from providers.knowledge.parsers import SUFFIXES, KnowledgeFileError, parse_file

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

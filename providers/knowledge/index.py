"""The knowledge index: each client's knowledge folder in Qdrant, hybrid search over it.

Where it lives
    Qdrant local mode (``qdrant-client``, a folder: ``<GATEWAY_DATA_DIR>/qdrant``)
    by default; a Qdrant server when ``QDRANT_URL`` is set. Both go through the
    same :class:`qdrant_client.QdrantClient` calls: only :meth:`KnowledgeIndex.open`
    differs. Local mode keeps the folder under a file lock, so **one process at
    a time** may open it: the gateway holds it while it serves (and ingests stale
    folders itself, in the background, at start-up); ``gateway clients ingest``
    opens it per run and refuses with :class:`IndexLockedError` while a gateway
    holds it. Several replicas (or ``--workers`` > 1) need ``QDRANT_URL``.

Tenant isolation
    One collection per client and embedder: ``kb.<client_id>.<signature>``
    (``kb.spa-del-sol.minilm384``, or ``...sparse`` without an embedder). A
    search names its client, and only that client's collection is read.
    Switching embedders builds a fresh collection and drops the old one at the
    next ingest.

Vectors
    ``dense``: the embedder's unit vectors, cosine distance (absent without an
    embedder). ``bm25``: sparse BM25 term-frequency weights
    (:mod:`providers.knowledge.sparse`) with ``modifier=IDF`` (Qdrant applies IDF
    at query time). Both index :attr:`Chunk.indexed_text` (heading path + text).

Search (Qdrant Query API)
    Two prefetches (dense and sparse, ``4 * k`` each) fused with
    ``FusionQuery(fusion=Fusion.RRF)``; then one batched look-up restricted to
    the fused ids gives each passage's own cosine (``dense``) and BM25
    (``sparse``) scores. With one side only (no embedder, or a query with no
    index terms) ``score`` is the same reciprocal-rank formula over that one
    list, ``1 / (rank + 2)`` with rank from 0 (Qdrant's RRF constant), so
    scores are comparable between modes.

Incremental ingest
    Each point carries its file's SHA-256 (``file_hash``). An ingest hashes the
    folder's files and compares them with the hashes in the collection:
    unchanged files are skipped; a changed file's new chunks are written (chunks
    whose id — hence text and place — did not change are kept, not re-embedded)
    and its old ones deleted; a deleted file's chunks are removed. A file that
    cannot be parsed is reported in :attr:`IngestReport.failed`, its old chunks
    kept.

Errors: :class:`~engine.errors.ToolError` (``tool="knowledge"``), raised
``from`` the Qdrant client's exception; :class:`IndexLockedError` when local mode's
folder is held by another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import ToolError
from engine.knowledge.types import Chunk, IndexStatus, IngestReport, Passage
from providers.knowledge.chunking import ChunkOptions, chunk_sections
from providers.knowledge.embedders import Embedder
from providers.knowledge.parsers import KnowledgeFileError, iter_files, parse_file
from providers.knowledge.sparse import SparseVec, encode_document, encode_query

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = [
    "ClientKnowledge",
    "IndexLockedError",
    "KnowledgeIndex",
    "Progress",
    "collection_name",
]

log = logging.getLogger("engine.knowledge")

T = TypeVar("T")

DENSE = "dense"
SPARSE = "bm25"
RRF_K = 2
"""Qdrant's reciprocal rank fusion constant: a rank-``r`` (0-based) hit adds ``1 / (r + RRF_K)``."""
_BATCH = 64
"""Chunks embedded and upserted per step (a search can run between two steps)."""

Progress = Callable[[str, int, int], None]
"""``progress(file, done, total)``: chunks of ``file`` written so far, out of ``total``
(called after each batch, and once with ``done == total`` per file, 0 for a skipped one)."""


class IndexLockedError(ToolError):
    """Qdrant local mode's folder is held by another process (``path``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            "knowledge",
            f"the index folder {path} is in use by another process (a running gateway?). "
            "Qdrant local mode allows one process at a time: a running gateway ingests "
            "stale knowledge folders itself at start-up (restart it to pick up changes), "
            "or stop it and run this again, or set QDRANT_URL to share a Qdrant server",
        )
        self.path = path


def collection_name(client_id: str, signature: str | None) -> str:
    """The collection of one client's knowledge under one embedder (None: sparse only).
    Client ids have no ``.``, so no client's prefix is another's."""
    return f"kb.{client_id}.{signature or 'sparse'}"


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Plan:
    hashes: dict[str, str]
    paths: dict[str, Path]
    indexed: dict[str, dict[str, str]]  # file -> {point id: file_hash}
    exists: bool

    @property
    def added(self) -> list[str]:
        return [f for f in self.hashes if f not in self.indexed]

    @property
    def changed(self) -> list[str]:
        return [
            f
            for f, h in self.hashes.items()
            if f in self.indexed and set(self.indexed[f].values()) != {h}
        ]

    @property
    def unchanged(self) -> list[str]:
        return [
            f
            for f, h in self.hashes.items()
            if f in self.indexed and set(self.indexed[f].values()) == {h}
        ]

    @property
    def removed(self) -> list[str]:
        return [f for f in self.indexed if f not in self.hashes]

    @property
    def stale(self) -> bool:
        return not self.exists or bool(self.added or self.changed or self.removed)


class KnowledgeIndex:
    """Every client's knowledge in one Qdrant (local folder or server).

    Build with :meth:`open`; close with :meth:`close`. Blocking Qdrant and
    parsing work runs in threads (``asyncio.to_thread``), one Qdrant call at a
    time (local mode is not thread-safe; a server is fast enough that searches
    queue behind at most one ingest batch).

    ``embedder``: the dense side, or None for sparse-only retrieval. It may be
    given later with :meth:`use_embedder` (the gateway loads the model in the
    background); until then :meth:`status` says ``building`` and searches
    return nothing.
    """

    def __init__(
        self,
        client: QdrantClient,
        *,
        location: str,
        local: bool,
        embedder: Embedder | None = None,
        embedder_ready: bool = True,
        chunking: ChunkOptions | None = None,
    ) -> None:
        self._client = client
        self.location = location
        """The local folder, or the server URL (for messages)."""
        self.local = local
        self.embedder = embedder
        self.chunking = chunking or ChunkOptions()
        self._embedder_ready = embedder_ready
        self._io = threading.RLock()
        self._states: dict[str, IndexStatus] = {}
        self._ingesting: dict[str, asyncio.Lock] = {}
        self._closed = False

    @classmethod
    def open(
        cls,
        *,
        data_dir: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        embedder: Embedder | None = None,
        embedder_ready: bool = True,
        chunking: ChunkOptions | None = None,
    ) -> KnowledgeIndex:
        """A server at ``url`` (``QDRANT_URL``), else local mode in
        ``<data_dir>/qdrant``. Blocking (local mode loads its collections).

        Raises IndexLockedError when another process holds the local folder,
        ToolError when the client cannot be set up.
        """
        from qdrant_client import QdrantClient

        if url:
            try:
                client = QdrantClient(url=url, api_key=api_key)
            except Exception as exc:
                raise ToolError("knowledge", f"cannot use QDRANT_URL ({exc})") from exc
            return cls(
                client,
                location=url,
                local=False,
                embedder=embedder,
                embedder_ready=embedder_ready,
                chunking=chunking,
            )
        if data_dir is None:
            raise ValueError("KnowledgeIndex.open needs data_dir or url")
        path = data_dir / "qdrant"
        path.mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise IndexLockedError(path) from exc
            raise ToolError("knowledge", f"cannot open the index at {path} ({exc})") from exc
        return cls(
            client,
            location=str(path),
            local=True,
            embedder=embedder,
            embedder_ready=embedder_ready,
            chunking=chunking,
        )

    def use_embedder(self, embedder: Embedder | None) -> None:
        """Set the dense side once it is known (None: sparse only)."""
        self.embedder = embedder
        self._embedder_ready = True
        self._states.clear()  # collection names depend on the embedder

    @property
    def embedder_name(self) -> str:
        return self.embedder.name if self.embedder is not None else "none"

    def close(self) -> None:
        """Close the Qdrant client (releases local mode's folder). Blocking: waits
        for a Qdrant call in flight. Idempotent."""
        with self._io:
            if not self._closed:
                self._closed = True
                self._client.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- plumbing ------------------------------------------------------------------------

    def collection(self, client_id: str) -> str:
        """The collection searched for ``client_id`` with the current embedder."""
        return collection_name(client_id, self.embedder.signature if self.embedder else None)

    @contextmanager
    def _qdrant(self, what: str) -> Iterator[QdrantClient]:
        with self._io:
            if self._closed:
                raise ToolError("knowledge", f"{what}: the index is closed")
            try:
                yield self._client
            except ToolError:
                raise
            except Exception as exc:  # qdrant-client's, httpx's, grpc's: mapped here
                raise ToolError(
                    "knowledge", f"{what} failed ({type(exc).__name__})", retryable=not self.local
                ) from exc

    async def _thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    def _exists(self, name: str) -> bool:
        with self._qdrant(f"checking {name}") as q:
            return bool(q.collection_exists(name))

    def _create(self, name: str) -> None:
        from qdrant_client import models

        with self._qdrant(f"creating {name}") as q:
            if q.collection_exists(name):
                return
            dense = (
                {
                    DENSE: models.VectorParams(
                        size=self.embedder.dimension, distance=models.Distance.COSINE
                    )
                }
                if self.embedder is not None
                else {}
            )
            q.create_collection(
                name,
                vectors_config=dense,
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
            if not self.local:  # local mode has no payload indexes (and warns)
                q.create_payload_index(name, "file", models.PayloadSchemaType.KEYWORD)

    def _indexed(self, name: str) -> dict[str, dict[str, str]]:
        """file -> {point id: file_hash} of every point in the collection."""
        out: dict[str, dict[str, str]] = {}
        offset: Any = None
        with self._qdrant(f"reading {name}") as q:
            while True:
                points, offset = q.scroll(
                    name,
                    limit=1024,
                    offset=offset,
                    with_payload=["file", "file_hash"],
                    with_vectors=False,
                )
                for point in points:
                    payload = point.payload or {}
                    out.setdefault(str(payload.get("file", "")), {})[str(point.id)] = str(
                        payload.get("file_hash", "")
                    )
                if offset is None:
                    return out

    def _plan(self, client_id: str, folder: Path) -> _Plan:
        paths = dict(iter_files(folder))
        hashes = {name: _file_hash(path) for name, path in paths.items()}
        name = self.collection(client_id)
        exists = self._exists(name)
        return _Plan(hashes, paths, self._indexed(name) if exists else {}, exists)

    # -- status ----------------------------------------------------------------------------

    def status(self, client_id: str) -> IndexStatus:
        """``building`` while an ingest runs (or the embedder is still loading),
        ``failed`` after a failed ingest, ``ready`` once the client's collection
        exists, else ``missing``. Cheap enough for every turn (memory, or one
        existence check the first time)."""
        if not self._embedder_ready:
            return "building"
        state = self._states.get(client_id)
        if state is not None:
            return state
        try:
            exists = self._exists(self.collection(client_id))
        except ToolError:
            return "failed"
        if exists:
            self._states[client_id] = "ready"
        return "ready" if exists else "missing"

    async def stale(self, client_id: str, folder: Path) -> bool:
        """True when ``folder`` differs from what the index holds for the client
        (files added, changed or deleted since the last ingest, or never ingested)."""
        plan = await self._thread(lambda: self._plan(client_id, folder))
        return plan.stale

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(
        self, client_id: str, folder: Path, *, progress: Progress | None = None
    ) -> IngestReport:
        """Bring the client's collection in line with ``folder`` (see the module
        docstring). One ingest per client at a time (a second waits).

        Raises ToolError (Qdrant or the embedder failed; :meth:`status` then says
        ``failed``).
        """
        lock = self._ingesting.setdefault(client_id, asyncio.Lock())
        async with lock:
            previous = self._states.get(client_id)
            self._states[client_id] = "building"
            try:
                report = await self._ingest(client_id, folder, progress)
            except asyncio.CancelledError:
                if previous is None:
                    self._states.pop(client_id, None)
                else:
                    self._states[client_id] = previous
                raise
            except Exception:
                self._states[client_id] = "failed"
                raise
            self._states[client_id] = "ready"
            return report

    async def _ingest(
        self, client_id: str, folder: Path, progress: Progress | None
    ) -> IngestReport:
        started = time.perf_counter()
        name = self.collection(client_id)
        await self._thread(lambda: self._create(name))
        await self._thread(lambda: self._drop_others(client_id, keep=name))
        plan = await self._thread(lambda: self._plan(client_id, folder))
        written = 0
        failed: list[str] = []
        for file in sorted(plan.added + plan.changed):
            try:
                chunks = await self._thread(
                    lambda file=file: chunk_sections(  # type: ignore[misc]
                        client_id, file, parse_file(plan.paths[file], file), self.chunking
                    )
                )
            except KnowledgeFileError as exc:
                log.warning("knowledge: %s: skipped %s", client_id, exc)
                failed.append(file)
                continue
            written += await self._write_file(
                client_id,
                name,
                file,
                plan.hashes[file],
                chunks,
                plan.indexed.get(file, {}),
                progress,
            )
        for file in plan.removed:
            await self._thread(lambda file=file: self._delete_file(name, file, keep=()))  # type: ignore[misc]
            if progress:
                progress(file, 0, 0)
        for file in plan.unchanged:
            if progress:
                progress(file, 0, 0)
        total = await self._thread(lambda: self._count(name))
        report = IngestReport(
            client_id=client_id,
            added=tuple(f for f in plan.added if f not in failed),
            changed=tuple(f for f in plan.changed if f not in failed),
            unchanged=tuple(plan.unchanged),
            removed=tuple(plan.removed),
            failed=tuple(failed),
            chunks=written,
            chunks_total=total,
            seconds=time.perf_counter() - started,
            embedder=self.embedder_name,
        )
        log.info("knowledge: ingested %s", report.summary())
        return report

    async def _write_file(
        self,
        client_id: str,
        name: str,
        file: str,
        file_hash: str,
        chunks: list[Chunk],
        indexed: dict[str, str],
        progress: Progress | None,
    ) -> int:
        fresh = [c for c in chunks if c.id not in indexed]
        kept = [c.id for c in chunks if c.id in indexed]
        for start in range(0, len(fresh), _BATCH):
            batch = fresh[start : start + _BATCH]
            texts = [c.indexed_text for c in batch]
            dense = await self.embedder.embed(texts) if self.embedder is not None else None
            sparse = [encode_document(t) for t in texts]
            await self._thread(
                lambda batch=batch, dense=dense, sparse=sparse: self._upsert(  # type: ignore[misc]
                    client_id, name, file_hash, batch, dense, sparse
                )
            )
            if progress:
                progress(file, start + len(batch), len(fresh))
        if not fresh and progress:
            progress(file, 0, 0)
        if kept:
            await self._thread(lambda: self._retag(name, kept, file_hash))
        await self._thread(lambda: self._delete_file(name, file, keep=[c.id for c in chunks]))
        return len(fresh)

    def _upsert(
        self,
        client_id: str,
        name: str,
        file_hash: str,
        chunks: Sequence[Chunk],
        dense: list[list[float]] | None,
        sparse: list[SparseVec],
    ) -> None:
        from qdrant_client import models

        points = []
        for i, chunk in enumerate(chunks):
            vector: dict[str, Any] = {
                SPARSE: models.SparseVector(
                    indices=list(sparse[i].indices), values=list(sparse[i].values)
                )
            }
            if dense is not None:
                vector[DENSE] = dense[i]
            points.append(
                models.PointStruct(
                    id=chunk.id,
                    vector=vector,
                    payload={
                        "client_id": client_id,
                        "file": chunk.file,
                        "file_hash": file_hash,
                        "section": chunk.section,
                        "page": chunk.page,
                        "text": chunk.text,
                    },
                )
            )
        with self._qdrant(f"writing to {name}") as q:
            q.upsert(name, points=points, wait=True)

    def _retag(self, name: str, ids: list[str], file_hash: str) -> None:
        from qdrant_client import models

        with self._qdrant(f"updating {name}") as q:
            q.set_payload(
                name,
                payload={"file_hash": file_hash},
                points=models.PointIdsList(points=list(ids)),
                wait=True,
            )

    def _delete_file(self, name: str, file: str, keep: Sequence[str]) -> None:
        """Delete the file's points except ``keep``."""
        from qdrant_client import models

        selector = models.Filter(
            must=[models.FieldCondition(key="file", match=models.MatchValue(value=file))],
            must_not=[models.HasIdCondition(has_id=list(keep))] if keep else None,
        )
        with self._qdrant(f"deleting from {name}") as q:
            q.delete(name, points_selector=models.FilterSelector(filter=selector), wait=True)

    def _count(self, name: str) -> int:
        with self._qdrant(f"counting {name}") as q:
            return int(q.count(name, exact=True).count)

    def _drop_others(self, client_id: str, keep: str) -> None:
        """Drop the client's collections built with another embedder."""
        prefix = f"kb.{client_id}."
        with self._qdrant("listing collections") as q:
            for described in q.get_collections().collections:
                if described.name.startswith(prefix) and described.name != keep:
                    log.info(
                        "knowledge: %s: dropping %s (another embedder)", client_id, described.name
                    )
                    q.delete_collection(described.name)

    async def drop(self, client_id: str) -> None:
        """Delete every collection of the client (all embedders)."""

        def run() -> None:
            self._drop_others(client_id, keep="")

        await self._thread(run)
        self._states.pop(client_id, None)

    # -- search ----------------------------------------------------------------------------

    async def similarity(self, query: str, texts: Sequence[str]) -> list[float] | None:
        """Cosine similarity of ``query`` with each text; None without an embedder."""
        embedder = self.embedder if self._embedder_ready else None
        if embedder is None or not texts:
            return None if embedder is None else []
        vectors = await embedder.embed([query, *texts])
        head, rest = vectors[0], vectors[1:]
        return [float(sum(a * b for a, b in zip(head, v, strict=True))) for v in rest]

    async def search(self, client_id: str, query: str, k: int = 5) -> list[Passage]:
        """The ``k`` passages of the client's knowledge that best answer ``query``,
        best first (see the module docstring for the scores). Empty when the
        client has no collection yet, or the query has nothing to search with.

        Raises ToolError when Qdrant or the embedder fails.
        """
        if k <= 0 or not query.strip() or not self._embedder_ready:
            return []
        sparse = encode_query(query)
        dense = (await self.embedder.embed([query]))[0] if self.embedder is not None else None
        name = self.collection(client_id)
        return await self._thread(lambda: self._search(name, sparse, dense, k))

    def _search(
        self, name: str, sparse: SparseVec, dense: list[float] | None, k: int
    ) -> list[Passage]:
        from qdrant_client import models

        sparse_query = (
            models.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
            if sparse.indices
            else None
        )
        with self._qdrant(f"searching {name}") as q:
            if not q.collection_exists(name):
                return []
            if dense is not None and sparse_query is not None:
                fused = q.query_points(
                    name,
                    prefetch=[
                        models.Prefetch(query=dense, using=DENSE, limit=4 * k),
                        models.Prefetch(query=sparse_query, using=SPARSE, limit=4 * k),
                    ],
                    query=models.FusionQuery(fusion=models.Fusion.RRF),
                    limit=k,
                    with_payload=True,
                ).points
                ids: list[models.ExtendedPointId] = [p.id for p in fused]
                only = models.Filter(must=[models.HasIdCondition(has_id=ids)])
                by_dense, by_sparse = (
                    {str(p.id): float(p.score) for p in response.points}
                    for response in q.query_batch_points(
                        name,
                        requests=[
                            models.QueryRequest(query=dense, using=DENSE, filter=only, limit=k),
                            models.QueryRequest(
                                query=sparse_query, using=SPARSE, filter=only, limit=k
                            ),
                        ],
                    )
                )
                return [
                    _passage(p, float(p.score), by_dense.get(str(p.id)), by_sparse.get(str(p.id)))
                    for p in fused
                ]
            if dense is None and sparse_query is None:
                return []
            hits = q.query_points(
                name,
                query=dense if dense is not None else sparse_query,
                using=DENSE if dense is not None else SPARSE,
                limit=k,
                with_payload=True,
            ).points
            return [
                _passage(
                    p,
                    1.0 / (rank + RRF_K),
                    float(p.score) if dense is not None else None,
                    float(p.score) if dense is None else None,
                )
                for rank, p in enumerate(hits)
            ]

    # -- per client ----------------------------------------------------------------------

    def for_client(self, client_id: str, folder: Path | None) -> ClientKnowledge | None:
        """The client's view, or None when it has no knowledge folder."""
        if folder is None or not folder.is_dir():
            return None
        return ClientKnowledge(self, client_id, folder)


def _passage(point: Any, score: float, dense: float | None, sparse: float | None) -> Passage:
    payload = point.payload or {}
    page = payload.get("page")
    return Passage(
        id=str(point.id),
        file=str(payload.get("file", "")),
        section=str(payload.get("section", "")),
        page=int(page) if isinstance(page, int) else None,
        text=str(payload.get("text", "")),
        score=score,
        dense=dense,
        sparse=sparse,
    )


@dataclass(frozen=True, slots=True)
class ClientKnowledge:
    """One client's knowledge, as its agents see it (``Tools.knowledge``)."""

    index: KnowledgeIndex
    client_id: str
    folder: Path
    """The client's knowledge folder (``clients/<id>/<support.knowledge_dir>``)."""

    async def search(self, query: str, k: int = 5) -> list[Passage]:
        """See :meth:`KnowledgeIndex.search`; only this client's passages."""
        return await self.index.search(self.client_id, query, k)

    def status(self) -> IndexStatus:
        """See :meth:`KnowledgeIndex.status`."""
        return self.index.status(self.client_id)

    async def similarity(self, query: str, texts: Sequence[str]) -> list[float] | None:
        """Cosine similarity of ``query`` with each of ``texts`` (in [-1, 1], in
        order), from the index's embedder; None when there is none (sparse-only).
        For answer composers that weigh sentences by meaning, not only words."""
        return await self.index.similarity(query, texts)

    async def ingest(self, progress: Progress | None = None) -> IngestReport:
        """Ingest this client's folder (see :meth:`KnowledgeIndex.ingest`)."""
        return await self.index.ingest(self.client_id, self.folder, progress=progress)

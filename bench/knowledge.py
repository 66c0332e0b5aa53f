"""Knowledge index benchmark: ingestion throughput and search latency.

For each embedder (``--embedders minilm,none``: the bundled all-MiniLM-L6-v2
on CPU, and sparse BM25 only), in Qdrant local mode under a temporary folder:

- **ingest**: the shipped example clients' knowledge folders, then a generated
  200-page PDF (``--pages``): chunks, seconds and chunks/s, the PDF's parse
  time on its own, and a re-ingest of the unchanged folder (the incremental
  skip);
- **search**: ``--queries`` searches (the labelled paraphrases of
  ``tests/knowledge/questions.py``, cycled) with ``k=5`` over the shipped
  clients: p50/p95 latency in ms (query embedding included).

    .venv/bin/python -m bench.knowledge
    .venv/bin/python -m bench.knowledge --embedders none --pages 50 --queries 100

For a retrieval-accuracy bench: :func:`shipped_index` opens an index with the
shipped clients ingested (the labelled set is
``tests.knowledge.questions.QUESTIONS``: client, question, file, section).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from providers.knowledge import KnowledgeIndex, make_embedder, parse_file
from providers.knowledge.chunking import chunk_sections

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("spa-del-sol", "bright-smile-dental")


async def shipped_index(data_dir: Path, embedder: str = "auto") -> KnowledgeIndex:
    """An index in local mode under ``data_dir`` holding the shipped example
    clients' knowledge (``GATEWAY_EMBEDDER``-style ``embedder`` name). Close it."""
    index = await asyncio.to_thread(
        KnowledgeIndex.open, data_dir=data_dir, embedder=make_embedder(embedder)
    )
    for client_id in SHIPPED:
        await index.ingest(client_id, REPO / "clients" / client_id / "knowledge")
    return index


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(embedder_name: str, pages: int, queries: int, work: Path) -> None:
    from tests.knowledge.make_dental_pdf import long_pages, write_pdf
    from tests.knowledge.questions import QUESTIONS

    data = work / f"data-{embedder_name}"
    started = time.perf_counter()
    index = await shipped_index(data, embedder_name)
    shipped_s = time.perf_counter() - started
    try:
        shipped_chunks = sum(index._count(index.collection(c)) for c in SHIPPED)
        print(
            f"[{embedder_name}] shipped clients: {shipped_chunks} chunks in {shipped_s:.2f} s "
            f"(model load included)"
        )

        folder = work / f"big-{embedder_name}"
        folder.mkdir()
        pdf = folder / "handbook.pdf"
        write_pdf(pdf, long_pages(pages))
        t = time.perf_counter()
        chunks = chunk_sections("bench", pdf.name, parse_file(pdf))
        parse_s = time.perf_counter() - t
        report = await index.ingest("bench-big", folder)
        print(
            f"[{embedder_name}] {pages}-page PDF ({pdf.stat().st_size // 1024} KiB): "
            f"{report.chunks} chunks, ingest {report.seconds:.2f} s "
            f"({report.chunks_per_s:.0f} chunks/s; parse+chunk alone {parse_s:.2f} s, "
            f"{len(chunks)} chunks)"
        )
        again = await index.ingest("bench-big", folder)
        print(f"[{embedder_name}] re-ingest unchanged: {again.seconds * 1000:.1f} ms")

        latencies: list[float] = []
        for i in range(queries):
            client_id, question, _, _ = QUESTIONS[i % len(QUESTIONS)]
            t = time.perf_counter()
            await index.search(client_id, question, k=5)
            latencies.append((time.perf_counter() - t) * 1000)
        print(
            f"[{embedder_name}] search k=5 over {queries} queries: "
            f"p50 {statistics.median(latencies):.1f} ms, p95 {_pct(latencies, 0.95):.1f} ms, "
            f"max {max(latencies):.1f} ms"
        )
        t = time.perf_counter()
        big: list[float] = []
        for i in range(min(queries, 100)):
            t = time.perf_counter()
            await index.search("bench-big", QUESTIONS[i % len(QUESTIONS)][1], k=5)
            big.append((time.perf_counter() - t) * 1000)
        print(
            f"[{embedder_name}] search k=5 in the {report.chunks_total}-chunk collection: "
            f"p50 {statistics.median(big):.1f} ms, p95 {_pct(big, 0.95):.1f} ms"
        )
    finally:
        index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedders", default="minilm,none", help="comma-separated")
    parser.add_argument("--pages", type=int, default=200, help="pages of the generated PDF")
    parser.add_argument("--queries", type=int, default=200, help="searches per embedder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as tmp:
        for name in args.embedders.split(","):
            asyncio.run(run(name.strip(), args.pages, args.queries, Path(tmp)))


if __name__ == "__main__":
    main()

"""The knowledge index in Qdrant local mode: incremental ingest, tenant
isolation, hybrid retrieval on the shipped clients, sparse-only fallback,
status, and the local-mode lock."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from engine.errors import ToolError
from providers.knowledge import (
    IndexLockedError,
    KnowledgeIndex,
    collection_name,
    make_embedder,
)
from tests.knowledge.conftest import CLIENTS
from tests.knowledge.questions import QUESTIONS

SPA = CLIENTS / "spa-del-sol" / "knowledge"
DENTAL = CLIENTS / "bright-smile-dental" / "knowledge"


def _folder(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    return folder


async def test_incremental_ingest_skips_replaces_and_removes(
    tmp_path: Path, sparse_index: KnowledgeIndex
) -> None:
    folder = _folder(
        tmp_path,
        "kb",
        {
            "faq.md": "# FAQ\n\n## Parking\nFree parking behind the building.\n\n"
            "## Pets\nDogs are welcome in the lobby.\n",
            "hours.txt": "We open at nine on weekdays.\n",
        },
    )
    assert sparse_index.status("c1") == "missing"
    first = await sparse_index.ingest("c1", folder)
    assert sorted(first.added) == ["faq.md", "hours.txt"]
    assert first.chunks == first.chunks_total == 3
    assert sparse_index.status("c1") == "ready"
    assert not await sparse_index.stale("c1", folder)

    again = await sparse_index.ingest("c1", folder)
    assert sorted(again.unchanged) == ["faq.md", "hours.txt"]
    assert (again.added, again.changed, again.removed, again.chunks) == ((), (), (), 0)

    # edit one section of faq.md, delete hours.txt, add a PDF-less new file
    (folder / "faq.md").write_text(
        "# FAQ\n\n## Parking\nParking is now in the garage on Elm Street.\n\n"
        "## Pets\nDogs are welcome in the lobby.\n",
        encoding="utf-8",
    )
    (folder / "hours.txt").unlink()
    (folder / "new.md").write_text("# Wifi\nThe guest wifi password is on the desk.\n")
    assert await sparse_index.stale("c1", folder)
    third = await sparse_index.ingest("c1", folder)
    assert third.changed == ("faq.md",)
    assert third.removed == ("hours.txt",)
    assert third.added == ("new.md",)
    assert third.chunks == 2  # the edited section and the new file; "Pets" kept as it was
    assert third.chunks_total == 3

    parking = await sparse_index.search("c1", "where is parking", k=3)
    assert parking[0].section == "FAQ > Parking"
    assert "Elm Street" in parking[0].text
    assert all("behind the building" not in p.text for p in parking)
    assert all(p.file != "hours.txt" for p in await sparse_index.search("c1", "open nine", k=5))
    # the kept chunk now carries the new file hash: nothing is stale
    assert not await sparse_index.stale("c1", folder)


async def test_unreadable_file_is_reported_and_others_ingest(
    tmp_path: Path, sparse_index: KnowledgeIndex
) -> None:
    folder = _folder(tmp_path, "kb", {"ok.md": "# A\nParking is free.\n"})
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 nothing here")
    report = await sparse_index.ingest("c1", folder)
    assert report.failed == ("broken.pdf",)
    assert report.added == ("ok.md",)
    assert "1 failed" in report.summary()


async def test_tenant_isolation(tmp_path: Path, hybrid_index: KnowledgeIndex) -> None:
    a = _folder(
        tmp_path, "a", {"faq.md": "# A\n## Parking\nClient A has a secret rooftop garage.\n"}
    )
    b = _folder(tmp_path, "b", {"faq.md": "# B\n## Parking\nClient B offers valet parking only.\n"})
    await hybrid_index.ingest("client-a", a)
    await hybrid_index.ingest("client-b", b)
    for query in ("is there parking?", "valet parking", "Client B valet"):
        hits = await hybrid_index.search("client-a", query, k=10)
        assert hits, query
        assert all("Client B" not in p.text for p in hits)
    hits_b = await hybrid_index.search("client-b", "rooftop garage secret", k=10)
    assert all("Client A" not in p.text for p in hits_b)
    assert collection_name("client-a", "minilm384") != collection_name("client-b", "minilm384")
    assert await hybrid_index.search("nobody", "parking", k=3) == []


async def test_hybrid_retrieval_on_shipped_clients(hybrid_index: KnowledgeIndex) -> None:
    await hybrid_index.ingest("spa-del-sol", SPA)
    report = await hybrid_index.ingest("bright-smile-dental", DENTAL)
    assert sorted(report.added) == ["faq.md", "insurance-and-payment.html", "patient-policies.pdf"]
    top1 = top3 = 0
    misses = []
    for client_id, question, file, section in QUESTIONS:
        hits = await hybrid_index.search(client_id, question, k=3)
        right = [p.file == file and section.lower() in p.section.lower() for p in hits]
        top1 += bool(right and right[0])
        top3 += any(right)
        if not any(right):
            misses.append(question)
        for p in hits:
            assert p.dense is not None and -1.0 <= p.dense <= 1.0
            assert p.sparse is None or p.sparse >= 0
            assert p.score > 0
        assert [p.score for p in hits] == sorted((p.score for p in hits), reverse=True)
    assert top3 == len(QUESTIONS), misses
    assert top1 >= 0.8 * len(QUESTIONS), f"top-1 {top1}/{len(QUESTIONS)}"

    whitening = await hybrid_index.search(
        "bright-smile-dental", "can my 14-year-old get whitening?", k=1
    )
    assert whitening[0].file == "patient-policies.pdf"
    assert whitening[0].page == 2
    assert "16 and over" in whitening[0].text


async def test_sparse_only_fallback(sparse_index: KnowledgeIndex) -> None:
    report = await sparse_index.ingest("bright-smile-dental", DENTAL)
    assert report.embedder == "none"
    assert sparse_index.collection("bright-smile-dental").endswith(".sparse")
    for question, file, section in (
        ("do you accept MetLife insurance", "insurance-and-payment.html", "Insurance we accept"),
        ("teeth whitening age", "patient-policies.pdf", "whitening"),
        ("is there parking at the garage", "faq.md", "park"),
        ("late cancellation fee", "patient-policies.pdf", "Cancellation"),
    ):
        hits = await sparse_index.search("bright-smile-dental", question, k=3)
        assert hits[0].file == file and section.lower() in hits[0].section.lower(), question
        assert hits[0].dense is None
        assert hits[0].sparse is not None and hits[0].sparse > 0
        assert hits[0].score == pytest.approx(0.5)  # 1 / (0 + 2): RRF over one list


def test_make_embedder_never_crashes_and_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="engine.knowledge"):
        assert make_embedder(str(tmp_path / "no-model-here")) is None
    lines = [r for r in caplog.records if r.name == "engine.knowledge"]
    assert len(lines) == 1
    assert "sparse (BM25) only" in lines[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="engine.knowledge"):
        assert make_embedder("none") is None
    assert len([r for r in caplog.records if r.name == "engine.knowledge"]) == 1


async def test_switching_embedder_builds_a_fresh_collection(tmp_path: Path, minilm: object) -> None:
    from providers.knowledge import Embedder

    assert isinstance(minilm, Embedder)
    index = KnowledgeIndex.open(data_dir=tmp_path)
    try:
        await index.ingest("spa-del-sol", SPA)
        index.use_embedder(minilm)
        assert index.status("spa-del-sol") == "missing"
        assert await index.stale("spa-del-sol", SPA)
        report = await index.ingest("spa-del-sol", SPA)
        assert report.added == ("faq.md",)
        names = {c.name for c in index._client.get_collections().collections}
        assert names == {"kb.spa-del-sol.minilm384"}  # the sparse-only one was dropped
    finally:
        index.close()


def test_local_mode_is_one_process_at_a_time(tmp_path: Path) -> None:
    import subprocess
    import sys

    index = KnowledgeIndex.open(data_dir=tmp_path)
    try:
        probe = (
            "import sys; from pathlib import Path\n"
            "from providers.knowledge import KnowledgeIndex, IndexLockedError\n"
            "try:\n    KnowledgeIndex.open(data_dir=Path(sys.argv[1]))\n"
            "except IndexLockedError as e:\n    print('locked:', e); sys.exit(3)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert done.returncode == 3, done.stderr
        assert "in use by another process" in done.stdout
        assert "QDRANT_URL" in done.stdout
    finally:
        index.close()
    KnowledgeIndex.open(data_dir=tmp_path).close()  # free again once closed
    assert issubclass(IndexLockedError, ToolError)


async def test_status_building_until_embedder_known(tmp_path: Path) -> None:
    index = KnowledgeIndex.open(data_dir=tmp_path, embedder_ready=False)
    try:
        assert index.status("spa-del-sol") == "building"
        assert await index.search("spa-del-sol", "parking") == []
        index.use_embedder(None)
        assert index.status("spa-del-sol") == "missing"
        await index.ingest("spa-del-sol", SPA)
        assert index.status("spa-del-sol") == "ready"
    finally:
        index.close()
    # a reopened index knows what it holds
    reopened = KnowledgeIndex.open(data_dir=tmp_path)
    try:
        assert reopened.status("spa-del-sol") == "ready"
        assert not await reopened.stale("spa-del-sol", SPA)
    finally:
        reopened.close()


async def test_copied_folder_is_stale_after_edit(
    tmp_path: Path, sparse_index: KnowledgeIndex
) -> None:
    folder = tmp_path / "kb"
    shutil.copytree(DENTAL, folder)
    await sparse_index.ingest("d", folder)
    (folder / "faq.md").unlink()
    report = await sparse_index.ingest("d", folder)
    assert report.removed == ("faq.md",)
    hits = await sparse_index.search("d", "parking garage validate ticket", k=5)
    assert all(p.file != "faq.md" for p in hits)

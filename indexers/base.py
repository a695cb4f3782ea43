"""The one interface every vector index implements, and the allow-filter helpers.

An index maps int64 ids to unit-length float32 vectors and answers top-k
inner-product (cosine) queries, optionally restricted by an *allow* filter: a
set or array of ids, or a vectorised predicate ``ids -> bool mask``. The
implementations (``exact``, ``faiss_index``) are tested against each other by
one shared suite; the exact one is the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]
# ids -> boolean mask of the same length
AllowPredicate = Callable[[Ids], npt.NDArray[np.bool_]]
Allow = Collection[int] | npt.NDArray[np.int64] | AllowPredicate


@runtime_checkable
class VectorIndex(Protocol):
    """A top-k inner-product index over int64 ids. Adding an existing id replaces it."""

    @property
    def dimension(self) -> int: ...

    @property
    def size(self) -> int:
        """Live (searchable) vectors."""
        ...

    def add(self, ids: npt.ArrayLike, vectors: Matrix) -> None: ...

    def remove(self, ids: npt.ArrayLike) -> None: ...

    def search(
        self, query: npt.NDArray[np.float32], k: int, allow: Allow | None = None
    ) -> tuple[Ids, Scores]:
        """Up to ``k`` (id, score) pairs by descending score, only among allowed ids."""
        ...

    def save(self, path: Path) -> None: ...


def as_ids(ids: npt.ArrayLike) -> Ids:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def as_matrix(vectors: npt.ArrayLike, dimension: int) -> Matrix:
    matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dimension:
        raise ValueError(f"vectors must have shape (n, {dimension}), not {matrix.shape}")
    return matrix


def allow_mask(allow: Allow | None, ids: Ids) -> npt.NDArray[np.bool_]:
    """Which of ``ids`` the filter allows (all of them when there is no filter)."""
    if allow is None:
        return np.ones(len(ids), dtype=bool)
    if callable(allow):
        mask = np.asarray(allow(ids), dtype=bool)
        if mask.shape != ids.shape:
            raise ValueError("an allow predicate must return one bool per id")
        return mask
    return np.isin(ids, allowed_ids(allow))


def allowed_ids(allow: Collection[int] | npt.NDArray[np.int64]) -> Ids:
    if isinstance(allow, np.ndarray):
        return as_ids(allow)
    return np.fromiter((int(i) for i in allow), dtype=np.int64, count=len(allow))


def top_k(ids: Ids, scores: Scores, k: int) -> tuple[Ids, Scores]:
    """The ``k`` best by descending score, ties broken by id for determinism."""
    if len(ids) == 0 or k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    if len(ids) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order].astype(np.float32)

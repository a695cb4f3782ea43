"""The brute-force reference index: every query scores every vector with numpy.

It is exact by construction, so the shared index tests and the benchmarks
measure every other index's recall against it. Storage is one growable float32
matrix; removal swaps the last row into the hole, so the matrix stays dense.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from indexers.base import Allow, Ids, Matrix, Scores, allow_mask, as_ids, as_matrix, top_k


class ExactIndex:
    kind = "exact"

    def __init__(self, dimension: int) -> None:
        self._dimension = dimension
        self._vectors = np.zeros((0, dimension), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._count = 0
        self._where: dict[int, int] = {}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def size(self) -> int:
        return self._count

    def _grow(self, needed: int) -> None:
        if needed <= len(self._ids):
            return
        capacity = max(needed, 2 * len(self._ids), 1024)
        vectors = np.zeros((capacity, self._dimension), dtype=np.float32)
        vectors[: self._count] = self._vectors[: self._count]
        ids = np.zeros(capacity, dtype=np.int64)
        ids[: self._count] = self._ids[: self._count]
        self._vectors, self._ids = vectors, ids

    def add(self, ids: npt.ArrayLike, vectors: Matrix) -> None:
        id_array, matrix = as_ids(ids), as_matrix(vectors, self._dimension)
        if len(id_array) != len(matrix):
            raise ValueError("ids and vectors differ in length")
        self._grow(self._count + len(id_array))
        for label, vector in zip(id_array.tolist(), matrix, strict=True):
            at = self._where.get(label)
            if at is None:
                at = self._count
                self._count += 1
                self._where[label] = at
                self._ids[at] = label
            self._vectors[at] = vector

    def remove(self, ids: npt.ArrayLike) -> None:
        for label in as_ids(ids).tolist():
            at = self._where.pop(label, None)
            if at is None:
                continue
            last = self._count - 1
            if at != last:
                moved = int(self._ids[last])
                self._ids[at] = moved
                self._vectors[at] = self._vectors[last]
                self._where[moved] = at
            self._count = last

    def vectors(self, ids: npt.ArrayLike) -> Matrix:
        """The stored vectors of ``ids`` (KeyError for an unknown id)."""
        positions = [self._where[i] for i in as_ids(ids).tolist()]
        return self._vectors[positions].copy()

    def all_ids(self) -> Ids:
        return self._ids[: self._count].copy()

    def search(
        self, query: npt.NDArray[np.float32], k: int, allow: Allow | None = None
    ) -> tuple[Ids, Scores]:
        ids = self._ids[: self._count]
        vectors = self._vectors[: self._count]
        if allow is not None:
            mask = allow_mask(allow, ids)
            ids, vectors = ids[mask], vectors[mask]
        scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        return top_k(ids, scores, k)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "ids.npy", self._ids[: self._count])
        np.save(path / "vectors.npy", self._vectors[: self._count])
        (path / "meta.json").write_text(json.dumps({"kind": self.kind, "dim": self._dimension}))

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        meta = json.loads((path / "meta.json").read_text())
        index = cls(int(meta["dim"]))
        index.add(np.load(path / "ids.npy"), np.load(path / "vectors.npy"))
        return index

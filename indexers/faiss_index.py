"""The in-process FAISS index: flat (exact) for small sets, HNSW for large ones.

FAISS HNSW cannot remove vectors, so this wrapper never asks it to: each vector lives
at a *position*; removing or replacing an id marks its old position dead in a bitmap
(a tombstone) that every search passes as an ``IDSelectorBitmap``. ``needs_rebuild``
says when the dead share (or a flat index outgrowing ``flat_max``) makes a rebuild
worthwhile; ``rebuilt()`` makes the compacted copy. Allow-filters with few ids are
scored exactly; larger ones go through HNSW with the bitmap and a raised efSearch. A
readers-writer lock lets searches run in parallel (FAISS releases the GIL) but never
with a mutation.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Container, Iterable, Set
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from indexers.base import Allow, Ids, Matrix, Scores, as_ids, as_matrix, top_k
from indexers.locks import ReadWriteLock
from indexers.omp import omp_threads as _omp_threads

_faiss: Any = faiss  # the SWIG module is only partly typed
LABEL_ENTRY_BYTES = 100  # a live label's entry in the label -> position dict


@dataclass(frozen=True, slots=True)
class FaissParams:
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    flat_max: int = 20_000  # up to this many vectors a flat index answers exactly
    exact_max: int = 20_000  # allow-filters up to this size are scored exactly
    rebuild_dead_ratio: float = 0.2

    def vector_bytes(self, dimension: int, *, hnsw: bool) -> int:
        """One position: the vector, its label and, in HNSW, its graph links."""
        return 4 * dimension + 8 + (8 * self.hnsw_m + 16 if hnsw else 0)


class FaissIndex:
    kind = "faiss"

    def __init__(
        self, dimension: int, params: FaissParams | None = None, *, hnsw: bool = False
    ) -> None:
        self._dimension = dimension
        self.params = params or FaissParams()
        self.is_hnsw = hnsw
        self._index = self._new_index()
        self._labels = np.zeros(0, dtype=np.int64)  # position -> id
        self._alive = np.zeros(0, dtype=np.uint8)  # bitmap over positions, little bit order
        self._where: dict[int, int] = {}  # live id -> position
        self._lock = ReadWriteLock()

    def _new_index(self) -> Any:
        if self.is_hnsw:
            index = faiss.IndexHNSWFlat(
                self._dimension, self.params.hnsw_m, faiss.METRIC_INNER_PRODUCT
            )
            index.hnsw.efConstruction = self.params.ef_construction
            index.hnsw.efSearch = self.params.ef_search
            return index
        return faiss.IndexFlatIP(self._dimension)

    @classmethod
    def build(
        cls,
        dimension: int,
        ids: npt.ArrayLike,
        vectors: Matrix,
        params: FaissParams | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        chunk: int = 20_000,
    ) -> FaissIndex:
        """A fresh index of the right kind for this many vectors."""
        params = params or FaissParams()
        id_array = as_ids(ids)
        index = cls(dimension, params, hnsw=len(id_array) > params.flat_max)
        for start in range(0, len(id_array), chunk):
            index.add(id_array[start : start + chunk], vectors[start : start + chunk])
            if progress is not None:
                progress(min(chunk, len(id_array) - start))
        return index

    # -- properties ------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def size(self) -> int:
        return len(self._where)

    @property
    def positions(self) -> int:
        return int(self._index.ntotal)

    @property
    def dead(self) -> int:
        return self.positions - self.size

    @property
    def needs_rebuild(self) -> bool:
        grown = not self.is_hnsw and self.size > self.params.flat_max
        return grown or self.dead > max(1000, self.params.rebuild_dead_ratio * self.positions)

    def memory_bytes(self) -> int:
        per_vector = self.params.vector_bytes(self._dimension, hnsw=self.is_hnsw)
        return self.positions * per_vector + len(self._where) * LABEL_ENTRY_BYTES

    def set_ef_search(self, ef_search: int) -> None:
        self.params = replace(self.params, ef_search=ef_search)
        if self.is_hnsw:
            self._index.hnsw.efSearch = ef_search

    def contains(self, label: int) -> bool:
        return label in self._where

    def absent(self, labels: Iterable[int]) -> set[int]:
        """The labels not in the index (lookups in C; ``- keys()`` would walk every key)."""
        return set(itertools.filterfalse(self._where.__contains__, labels))

    # -- mutation ----------------------------------------------------------------------
    def _stored(self) -> Matrix:
        """A view of the stored vectors by position (valid until the next add)."""
        n = self.positions
        flat: Any = faiss.downcast_index(self._index.storage) if self.is_hnsw else self._index
        if n == 0:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self._dimension).reshape(n, self._dimension)

    def add(
        self, ids: npt.ArrayLike, vectors: Matrix, *, skip: Container[int] | None = None
    ) -> None:
        """Add or replace; a replaced id whose vector is unchanged costs nothing. Ids in
        ``skip`` (consulted under the write lock) are left out."""
        id_array, matrix = as_ids(ids), as_matrix(vectors, self._dimension)
        if len(id_array) != len(matrix):
            raise ValueError("ids and vectors differ in length")
        # the last occurrence of a repeated id wins
        _, last = np.unique(id_array[::-1], return_index=True)
        keep = np.sort(len(id_array) - 1 - last)
        id_array, matrix = id_array[keep], matrix[keep]
        _omp_threads(os.cpu_count() or 1)  # graph inserts do use the team
        with self._lock.write():
            stored = self._stored()
            fresh: list[int] = []
            for i, label in enumerate(id_array.tolist()):
                if skip is not None and label in skip:
                    continue
                at = self._where.get(label)
                if at is not None:
                    if np.array_equal(stored[at], matrix[i]):
                        continue
                    self._kill(at)
                fresh.append(i)
            if not fresh:
                return
            start = self.positions
            todo = matrix[fresh] if len(fresh) != len(matrix) else matrix
            self._index.add(np.ascontiguousarray(todo))
            end = start + len(fresh)
            self._ensure_capacity(end)
            self._labels[start:end] = id_array[fresh]
            for offset, label in enumerate(id_array[fresh].tolist()):
                self._where[label] = start + offset
            self._set_alive(np.arange(start, end))

    def remove(self, ids: npt.ArrayLike) -> None:
        with self._lock.write():
            for label in as_ids(ids).tolist():
                at = self._where.pop(label, None)
                if at is not None:
                    self._kill(at, forget=False)

    def erase(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids`` and overwrite every vector they have here with zeros: the live
        one and any an update or delete left at a dead position, so neither this
        process nor a later ``save`` holds them. Returns how many positions it wiped.
        A wiped position stays in the graph as a node no search is drawn to."""
        wanted = as_ids(ids)
        with self._lock.write():
            n = self.positions
            positions = np.flatnonzero(np.isin(self._labels[:n], wanted))
            for at in positions.tolist():
                self._kill(at)
            if len(positions):
                self._stored()[positions] = 0.0
                self._labels[positions] = -1  # found again by no later erase
            return len(positions)

    def _kill(self, at: int, *, forget: bool = True) -> None:
        self._alive[at >> 3] &= np.uint8(~(1 << (at & 7)) & 0xFF)
        if forget:
            self._where.pop(int(self._labels[at]), None)

    def _set_alive(self, positions: npt.NDArray[np.int64]) -> None:
        np.bitwise_or.at(self._alive, positions >> 3, (1 << (positions & 7)).astype(np.uint8))

    def _ensure_capacity(self, n: int) -> None:
        if n <= len(self._labels):
            return
        capacity = max(n, 2 * len(self._labels), 1024)
        labels = np.zeros(capacity, dtype=np.int64)
        labels[: len(self._labels)] = self._labels
        alive = np.zeros((capacity + 7) // 8, dtype=np.uint8)
        alive[: len(self._alive)] = self._alive
        self._labels, self._alive = labels, alive

    # -- search ------------------------------------------------------------------------
    def search_unless_busy(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        allow: Allow | None = None,
        *,
        ef_search: int | None = None,
    ) -> tuple[Ids, Scores] | None:
        """``search``, or None at once when a mutation holds or waits for the index: a
        caller on an event loop must never wait for one."""
        if not self._lock.try_read():
            return None
        try:
            return self._search(query, k, allow, ef_search)
        finally:
            self._lock.release_read()

    def search(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        allow: Allow | None = None,
        *,
        ef_search: int | None = None,
    ) -> tuple[Ids, Scores]:
        with self._lock.read():
            return self._search(query, k, allow, ef_search)

    def search_many(
        self, queries: Matrix, k: int, *, ef_search: int | None = None
    ) -> list[tuple[Ids, Scores]]:
        """Unfiltered searches of several queries at once: one pass of a flat index over
        its vectors (a matrix product) instead of one pass each; one call into a graph."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(len(queries), -1))
        with self._lock.read():
            _omp_threads(1)
            n = self.positions
            if self.is_hnsw or len(q) == 1 or n <= k:
                bitmap = self._alive if self.dead else None
                return self._graph_search_many(q, k, bitmap, ef_search or self.params.ef_search)
            scores = q @ self._stored().T  # (queries, positions)
            if self.dead:
                alive = np.unpackbits(self._alive, bitorder="little")[:n].astype(bool)
                scores[:, ~alive] = -np.inf
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            results = []
            for row, cols in zip(scores, part, strict=True):
                best = row[cols]
                keep = best > -np.inf
                cols, best = cols[keep], best[keep]
                order = np.lexsort((cols, -best))
                results.append((self._labels[cols[order]], best[order].astype(np.float32)))
            return results

    def _search(
        self, query: npt.NDArray[np.float32], k: int, allow: Allow | None, ef_search: int | None
    ) -> tuple[Ids, Scores]:
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        # one query gains nothing from an OpenMP team, whose spinning threads only steal
        # the cores that other requests and PostgreSQL need; the setting is per thread
        _omp_threads(1)
        if allow is None:
            bitmap = self._alive if self.dead else None
            return self._graph_search_many(q, k, bitmap, ef_search or self.params.ef_search)[0]
        positions = self._allowed_positions(allow)
        if len(positions) <= self.params.exact_max or not self.is_hnsw:
            scores = self._stored()[positions] @ q[0]
            found, best = top_k(positions, scores, k)
            return self._labels[found], best
        bitmap = np.zeros_like(self._alive)
        np.bitwise_or.at(bitmap, positions >> 3, (1 << (positions & 7)).astype(np.uint8))
        share = len(positions) / max(1, self.size)
        ef = int(max(ef_search or self.params.ef_search, k) * min(8.0, 1.0 / share))
        ids, scores = self._graph_search_many(q, k, bitmap, ef)[0]
        if len(ids) < min(k, len(positions)):  # the graph walk ran dry: score them all
            found, best = top_k(positions, self._stored()[positions] @ q[0], k)
            return self._labels[found], best
        return ids, scores

    def _allowed_positions(self, allow: Allow) -> npt.NDArray[np.int64]:
        if callable(allow):
            live = np.fromiter(self._where.values(), dtype=np.int64, count=len(self._where))
            return live[np.asarray(allow(self._labels[live]), dtype=bool)]
        where = self._where
        labels = allow.tolist() if isinstance(allow, np.ndarray) else allow
        # map() keeps the lookups in C: a generator costs twice as much per label
        positions = np.fromiter(
            map(where.get, labels, itertools.repeat(-1)), dtype=np.int64, count=len(labels)
        )
        positions = positions[positions >= 0]
        # a set's labels are distinct, and so are their positions; a list may repeat one
        return positions if isinstance(allow, Set) else np.unique(positions)

    def _graph_search_many(
        self, q: Matrix, k: int, bitmap: npt.NDArray[np.uint8] | None, ef: int
    ) -> list[tuple[Ids, Scores]]:
        k = min(k, max(1, self.positions))
        if self.positions == 0:
            return [(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))] * len(q)
        params: Any
        if self.is_hnsw:
            params = _faiss.SearchParametersHNSW()
            params.efSearch = max(ef, k)
        else:
            params = faiss.SearchParameters()
        selector = None
        if bitmap is not None:
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            params.sel = selector
        scores, positions = self._index.search(q, k, params=params)
        del selector
        found = []
        for row_scores, row in zip(scores, positions, strict=True):
            hit = row >= 0
            found.append((self._labels[row[hit]], row_scores[hit].astype(np.float32)))
        return found

    # -- lifecycle ---------------------------------------------------------------------
    def vectors_of(self, labels: Iterable[int]) -> tuple[Ids, Matrix]:
        """Copies of the stored vectors of those labels the index holds, with their labels."""
        with self._lock.read():
            return self._vectors_of(labels)

    def vectors_unless_busy(self, labels: Iterable[int]) -> tuple[Ids, Matrix] | None:
        """``vectors_of``, or None at once when a mutation holds or waits for the index."""
        if not self._lock.try_read():
            return None
        try:
            return self._vectors_of(labels)
        finally:
            self._lock.release_read()

    def _vectors_of(self, labels: Iterable[int]) -> tuple[Ids, Matrix]:
        held = np.asarray([x for x in labels if x in self._where], dtype=np.int64)
        positions = np.asarray([self._where[x] for x in held.tolist()], dtype=np.int64)
        return held, self._stored()[positions]  # fancy indexing copies

    def live_items(self) -> tuple[Ids, Matrix]:
        """Copies of the live ids and vectors, by position order."""
        with self._lock.read():
            positions = np.fromiter(self._where.values(), dtype=np.int64, count=len(self._where))
            positions.sort()
            return self._labels[positions].copy(), self._stored()[positions].copy()

    def rebuilt(self, progress: Callable[[int], None] | None = None) -> FaissIndex:
        """A compacted copy without tombstones, of the kind its size calls for."""
        ids, vectors = self.live_items()
        return FaissIndex.build(self._dimension, ids, vectors, self.params, progress=progress)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            faiss.write_index(self._index, str(path / "index.faiss"))
            n = self.positions
            np.save(path / "labels.npy", self._labels[:n])
            np.save(path / "alive.npy", self._alive[: (n + 7) // 8])
            meta = {"kind": self.kind, "dim": self._dimension, "hnsw": self.is_hnsw}
            meta["params"] = asdict(self.params)
        (path / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path, params: FaissParams | None = None) -> FaissIndex:
        meta = json.loads((path / "meta.json").read_text())
        index = cls(int(meta["dim"]), params or FaissParams(**meta["params"]), hnsw=meta["hnsw"])
        index._index = faiss.read_index(str(path / "index.faiss"))
        if index.is_hnsw:
            index._index.hnsw.efSearch = index.params.ef_search
        labels = np.load(path / "labels.npy")
        alive = np.load(path / "alive.npy")
        n = int(index._index.ntotal)
        if len(labels) != n or len(alive) != (n + 7) // 8:
            raise ValueError(f"snapshot in {path} is inconsistent")
        index._ensure_capacity(n)
        index._labels[:n] = labels
        index._alive[: len(alive)] = alive
        live = np.flatnonzero(np.unpackbits(alive, bitorder="little")[:n])
        index._where = dict(zip(labels[live].tolist(), live.tolist(), strict=True))
        return index

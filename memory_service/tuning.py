"""FAISS tuning: pick the smallest efSearch that reaches a target recall.

``memory-service tune`` loads one tenant's vectors (the largest unless
``--tenant`` names one); ``tune`` builds an HNSW index with the configured M
and efConstruction, samples stored vectors as queries, and measures recall@k against exact search for a ladder
of efSearch values. A query's own row is left out of both answers, so the
measurement is about neighbours rather than finding itself. The answer is
printed as the setting to use (``MEMORY_FAISS_EF_SEARCH``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from indexers.exact import ExactIndex
from indexers.faiss_index import FaissIndex, FaissParams

EF_LADDER = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True, slots=True)
class EfMeasurement:
    ef_search: int
    recall: float
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True)
class TuneResult:
    chosen_ef_search: int | None
    target_recall: float
    k: int
    queries: int
    vectors: int
    measurements: list[EfMeasurement]


def exact_neighbours(
    ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray
) -> list[set[int]]:
    """True top-k ids per query, leaving out ``exclude[i]`` (the query's own row)."""
    reference = ExactIndex(vectors.shape[1])
    reference.add(ids, vectors)
    truth = []
    for query, own in zip(queries, exclude.tolist(), strict=True):
        found, _ = reference.search(query, k + 1)
        truth.append(set(found[found != own][:k].tolist()))
    return truth


def measure(
    index: FaissIndex,
    queries: np.ndarray,
    truth: Sequence[set[int]],
    exclude: np.ndarray,
    k: int,
    ef_values: Sequence[int],
) -> list[EfMeasurement]:
    out: list[EfMeasurement] = []
    for ef in tqdm(ef_values, desc="efSearch ladder", unit="ef"):
        hits = total = 0
        times = []
        for query, want, own in zip(queries, truth, exclude.tolist(), strict=True):
            started = time.perf_counter()
            found, _ = index.search(query, k + 1, ef_search=ef)
            times.append(time.perf_counter() - started)
            got = [i for i in found.tolist() if i != own][:k]
            hits += len(want & set(got))
            total += len(want)
        out.append(
            EfMeasurement(
                ef,
                hits / max(1, total),
                float(np.percentile(times, 50) * 1000),
                float(np.percentile(times, 95) * 1000),
            )
        )
    return out


def tune(
    ids: np.ndarray,
    vectors: np.ndarray,
    params: FaissParams,
    *,
    target: float = 0.95,
    k: int = 10,
    queries: int = 200,
    seed: int = 0,
    index: FaissIndex | None = None,
    ef_values: Sequence[int] = EF_LADDER,
) -> TuneResult:
    """Measure the ladder on ``index`` (built here as HNSW when not given)."""
    if index is None:
        index = FaissIndex(vectors.shape[1], params, hnsw=True)
        with tqdm(total=len(ids), desc="building HNSW", unit="vec") as bar:
            for start in range(0, len(ids), 20_000):
                index.add(ids[start : start + 20_000], vectors[start : start + 20_000])
                bar.update(min(20_000, len(ids) - start))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    sample, own = vectors[picked], ids[picked]
    truth = exact_neighbours(ids, vectors, sample, k, own)
    results = measure(index, sample, truth, own, k, ef_values)
    chosen = next((m.ef_search for m in results if m.recall >= target), None)
    return TuneResult(chosen, target, k, len(sample), len(ids), results)


CROSSOVER_SIZES = (1000, 2000, 3000, 4000, 5000, 7500, 10_000, 20_000, 50_000)


@dataclass(frozen=True, slots=True)
class SizePoint:
    vectors: int
    flat_p50_ms: float  # one query, exact scan
    graph_p50_ms: float  # one query, HNSW with the configured efSearch
    graph_recall: float  # recall@k of the graph against the scan


def crossover(
    vectors: np.ndarray,
    params: FaissParams,
    *,
    sizes: Sequence[int] = CROSSOVER_SIZES,
    target: float = 0.99,
    speedup: float = 2.0,
    k: int = 10,
    queries: int = 100,
    seed: int = 0,
) -> tuple[int, list[SizePoint]]:
    """Measure one query's cost on a flat index and on a graph of the first n vectors,
    for each size n, and the graph's recall; the answer (``MEMORY_FAISS_FLAT_MAX``) is
    the largest measured size before the graph is ``speedup`` times faster than the scan
    with recall ``target``. Below it a flat index answers exactly, takes writes at no
    cost and holds no links, for a query time that hardly differs; above it the graph's
    approximation buys a query time the scan cannot reach."""
    rng = np.random.default_rng(seed)
    points: list[SizePoint] = []
    for n in tqdm([s for s in sizes if s <= len(vectors)], desc="flat vs graph", unit="size"):
        ids = np.arange(n, dtype=np.int64)
        flat = FaissIndex(vectors.shape[1], params)
        flat.add(ids, vectors[:n])
        graph = FaissIndex(vectors.shape[1], params, hnsw=True)
        graph.add(ids, vectors[:n])
        picked = rng.choice(n, size=min(queries, n), replace=False)
        flat_times, graph_times, hits = [], [], 0
        for q in vectors[picked]:
            started = time.perf_counter()
            want, _ = flat.search(q, k)
            flat_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            got, _ = graph.search(q, k)
            graph_times.append(time.perf_counter() - started)
            hits += len(set(want.tolist()) & set(got.tolist()))
        points.append(
            SizePoint(
                n,
                float(np.percentile(flat_times, 50) * 1000),
                float(np.percentile(graph_times, 50) * 1000),
                hits / (len(picked) * min(k, n)),
            )
        )
    flat_max = 0
    for p in points:
        if p.flat_p50_ms < speedup * p.graph_p50_ms or p.graph_recall < target:
            flat_max = p.vectors
        else:
            break
    return flat_max, points

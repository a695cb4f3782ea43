"""The FAISS-only part of the search benchmark, sized for a million vectors.

At 1M a pgvector HNSW build does not fit a shared 2-core box, so this measures
the FAISS index in-process: build time, recall and latency over an efSearch
sweep against exact search, snapshot write and load, and resident memory (the
index alone, measured after the vectors are dropped and the snapshot reloaded).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import common
from indexers.faiss_index import FaissIndex, FaissParams


def faiss_in_process(
    vectors: np.ndarray,
    queries: np.ndarray,
    params: FaissParams,
    work: Path,
    k: int,
    ef_values: Sequence[int],
) -> dict[str, Any]:
    n = len(vectors)
    truth = exact_top_k(vectors, queries, k)
    rss_before = common.rss_mb()
    started = time.perf_counter()
    index = FaissIndex(vectors.shape[1], params, hnsw=True)
    ids = np.arange(n, dtype=np.int64)
    with tqdm(total=n, desc="FAISS HNSW build", unit="vec") as bar:
        for s in range(0, n, 20_000):
            index.add(ids[s : s + 20_000], vectors[s : s + 20_000])
            bar.update(min(20_000, n - s))
    out: dict[str, Any] = {"vectors": n, "faiss_build_s": round(time.perf_counter() - started, 1)}
    out["faiss"] = []
    for ef in ef_values:
        found, times = [], []
        for q in queries:
            t0 = time.perf_counter()
            found.append(index.search(q, k, ef_search=ef)[0].tolist())
            times.append(time.perf_counter() - t0)
        out["faiss"].append(
            {
                "ef_search": ef,
                "recall": common.recall_at_k(found, truth),
                **common.percentiles(times),
            }
        )
    path = work / "snapshot"
    started = time.perf_counter()
    index.save(path)
    out["snapshot_write_s"] = round(time.perf_counter() - started, 1)
    out["rss_mb_with_index"] = common.rss_mb()
    out["rss_mb_before_index"] = rss_before
    del index  # the RSS delta around the reload below is the index alone
    gc.collect()
    rss_empty = common.rss_mb()
    started = time.perf_counter()
    loaded = FaissIndex.load(path)
    out["snapshot_load_s"] = round(time.perf_counter() - started, 1)
    out["index_rss_mb_after_load"] = round(common.rss_mb() - rss_empty, 1)
    out["index_estimated_mb"] = round(loaded.memory_bytes() / 2**20, 1)
    return out


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    """Exact top-k by blocks, without copying the vectors (they may be gigabytes)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start in tqdm(range(0, len(vectors), 100_000), desc="exact truth"):
        block = queries @ vectors[start : start + 100_000].T
        scores = np.concatenate([best_scores, block], axis=1)
        ids = np.concatenate(
            [best_ids, np.broadcast_to(np.arange(start, start + block.shape[1]), block.shape)],
            axis=1,
        )
        top = np.argsort(-scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, top, axis=1)
        best_ids = np.take_along_axis(ids, top, axis=1)
    return best_ids.tolist()

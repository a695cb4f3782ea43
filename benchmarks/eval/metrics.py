"""Ranking metrics: nDCG@k and recall@k over document ids."""

from __future__ import annotations

import math
from collections.abc import Sequence


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    dcg = sum(
        (2 ** relevant.get(doc, 0) - 1) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k])
    )
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**grade - 1) / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """The share of relevant documents found in the top ``k``."""
    if not relevant:
        return 0.0
    top = set(ranked[:k])
    return sum(1 for doc in relevant if doc in top) / len(relevant)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 5000, seed: int = 0
) -> tuple[float, float]:
    """Mean of ``a - b`` over paired queries, and its two-sided bootstrap p-value.

    The queries are resampled with replacement; the p-value is twice the share of
    resampled mean differences on the far side of zero (at least ``1 / resamples``).
    """
    import numpy as np

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size == 0:
        return 0.0, 1.0
    if not diff.any():
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 500):
        idx = rng.integers(0, diff.size, size=(min(500, resamples - start), diff.size))
        means[start : start + len(idx)] = diff[idx].mean(axis=1)
    tail = min(float((means <= 0).mean()), float((means >= 0).mean()))
    return float(diff.mean()), max(min(1.0, 2.0 * tail), 1.0 / resamples)

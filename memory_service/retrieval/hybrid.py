"""Hybrid search: vector and keyword rankings fused into one.

Two fusions, both over the same candidates (each side ranks ``max(3k,
hybrid_candidates)`` memories, so hybrid returns exactly ``k`` results whenever
``k`` memories match scope and filter: the vector side alone supplies that many):

- ``scores`` (the default): each side's scores are scaled to [0, 1] over its
  candidates and combined as ``(w_v * vector + w_k * keyword) / (w_v + w_k)``, a
  memory a side did not rank counting 0 there. BM25 is divided by the best BM25
  (0 already means no shared word); cosine similarity is min-max normalised (the
  best candidate 1, the weakest 0), since unrelated texts still score well above 0.
  It keeps how far apart the candidates are, which ranks alone lose: a memory that
  one side finds far better than the rest keeps that lead.
- ``rrf`` (reciprocal rank fusion, chosen by ``fusion`` or by giving ``rrf_k``):
  ``rrf(d) = w_v / (c + rank_v(d)) + w_k / (c + rank_k(d))`` with ranks from 1 and
  a missing rank contributing 0, scaled by ``(w_v + w_k) / (c + 1)``.

Either way a memory ranked first by both sides scores 1, and a hit's components
(its ``vector`` and ``keyword`` shares) add up to its score.
"""

from __future__ import annotations

from typing import Any

from memory_service.memories.models import SearchHit
from memory_service.retrieval.options import RetrievalOptions


def fuse(
    vector_hits: list[SearchHit],
    keyword_hits: list[SearchHit],
    options: RetrievalOptions,
    limit: int | None = None,
) -> list[SearchHit]:
    """The fused ranking, best first (ties by seq); only its first ``limit`` when given:
    the shares are summed for every candidate, hits are made for those returned."""
    total = options.vector_weight + options.keyword_weight
    sides = (
        (1, options.vector_weight / total, vector_hits),
        (2, options.keyword_weight / total, keyword_hits),
    )
    shares: dict[str, list[Any]] = {}  # id -> [memory, vector share, keyword share]
    for side, weight, hits in sides:
        if options.fusion == "rrf":
            parts = _rrf(hits, options.rrf_k)
        else:
            parts = _min_max(hits) if side == 1 else _by_best(hits)
        for hit, part in zip(hits, parts, strict=True):
            entry = shares.get(hit.memory.id)
            if entry is None:
                entry = shares[hit.memory.id] = [hit.memory, 0.0, 0.0]
            entry[side] += weight * part
    ranked = sorted(shares.values(), key=lambda e: (-(e[1] + e[2]), e[0].seq))
    return [
        SearchHit(memory, v + k, {"vector": v, "keyword": k})
        for memory, v, k in (ranked if limit is None else ranked[:limit])
    ]


def _rrf(hits: list[SearchHit], c: int) -> list[float]:
    return [(c + 1.0) / (c + rank) for rank in range(1, len(hits) + 1)]


def _min_max(hits: list[SearchHit]) -> list[float]:
    if not hits:
        return []
    scores = [h.score for h in hits]
    low, high = min(scores), max(scores)
    if high - low <= 1e-12:
        return [1.0] * len(hits)
    return [(s - low) / (high - low) for s in scores]


def _by_best(hits: list[SearchHit]) -> list[float]:
    best = max((h.score for h in hits), default=0.0)
    return [h.score / best if best > 0.0 else 0.0 for h in hits]

"""Hybrid search: vector and keyword rankings fused by reciprocal rank fusion.

    rrf(d) = w_v / (c + rank_v(d)) + w_k / (c + rank_k(d))

with ranks starting at 1 and a missing rank contributing 0. The score is
``rrf(d) / ((w_v + w_k) / (c + 1))``: 1 for a memory ranked first by both sides.
Each side ranks ``hybrid_candidates`` memories (at least the requested pool), so
hybrid returns exactly ``k`` results whenever ``k`` memories match scope and
filter: the vector side alone supplies that many.
"""

from __future__ import annotations

from memory_service.memories.models import SearchHit
from memory_service.retrieval.options import RetrievalOptions


def fuse(
    vector_hits: list[SearchHit], keyword_hits: list[SearchHit], options: RetrievalOptions
) -> list[SearchHit]:
    c = float(options.rrf_k)
    norm = (options.vector_weight + options.keyword_weight) / (c + 1.0)
    fused: dict[str, SearchHit] = {}
    for name, weight, hits in (
        ("vector", options.vector_weight, vector_hits),
        ("keyword", options.keyword_weight, keyword_hits),
    ):
        for rank, hit in enumerate(hits, start=1):
            part = weight / (c + rank) / norm
            entry = fused.get(hit.memory.id)
            if entry is None:
                entry = fused[hit.memory.id] = SearchHit(
                    hit.memory, 0.0, {"vector": 0.0, "keyword": 0.0}
                )
            assert entry.components is not None
            entry.components[name] += part
            entry.score += part
    return sorted(fused.values(), key=lambda h: (-h.score, h.memory.seq))

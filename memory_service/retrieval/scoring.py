"""Recency and importance scoring: how a relevance score becomes the final score.

    final = (1 - w_r - w_i) * relevance + w_r * recency + w_i * importance
    recency = 0.5 ** (age_hours / half_life_hours)

``relevance`` is what the mode ranks by (cosine similarity, normalised BM25 or
normalised RRF; the learned ranker's probability after it), ``importance`` the memory's own value in [0, 1], and the age
counts from the later of ``created_at`` and the last time semantic dedupe folded
a re-added copy into the memory (its last sighting). With both weights 0 the
score is the relevance unchanged. Every hit's ``components`` add up to its score.
"""

from __future__ import annotations

from datetime import datetime

from memory_service.memories.models import SearchHit
from memory_service.retrieval.options import RetrievalOptions


def recency(reference: datetime, now: datetime, half_life_hours: float) -> float:
    age_hours = max(0.0, (now - reference).total_seconds() / 3600.0)
    return float(0.5 ** (age_hours / half_life_hours))


def rescore(
    hits: list[SearchHit],
    options: RetrievalOptions,
    now: datetime,
    last_seen: dict[str, datetime],
) -> None:
    """Replace each hit's score by the weighted sum above, in place, with components."""
    w_r, w_i = options.recency_weight, options.importance_weight
    w_rel = 1.0 - w_r - w_i
    # the learned ranker's score is one probability, whatever its explained parts
    modelled = options.rerank == "learned"
    for hit in hits:
        parts = {"relevance": hit.score} if modelled else hit.components or {"relevance": hit.score}
        combined = {name: w_rel * value for name, value in parts.items()}
        if w_r > 0.0:
            seen = last_seen.get(hit.memory.id)
            reference = max(hit.memory.created_at, seen) if seen else hit.memory.created_at
            combined["recency"] = w_r * recency(reference, now, options.half_life_hours)
        if w_i > 0.0:
            combined["importance"] = w_i * hit.memory.importance
        hit.components = combined
        hit.score = sum(combined.values())

"""Maximal marginal relevance: pick k results that are relevant and not alike.

Greedy MMR over a candidate pool: each step takes the candidate maximising
``(1 - diversity) * score - diversity * max cosine to the ones already taken``.
``diversity`` 0 is plain ranking; 1 looks only at novelty after the first pick.
The chosen set is returned ordered by its original score, so results stay
ordered by descending score as the API promises.
"""

from __future__ import annotations

import numpy as np

from memory_service.memories.models import SearchHit


def select_diverse(
    hits: list[SearchHit], embeddings: np.ndarray, k: int, diversity: float
) -> list[SearchHit]:
    """``embeddings[i]`` is the unit vector of ``hits[i]``; blocking numpy, call off-loop."""
    if len(hits) <= k or diversity <= 0.0:
        return sorted(hits, key=lambda h: h.score, reverse=True)[:k]
    scores = np.array([h.score for h in hits], dtype=np.float64)
    similarity = embeddings @ embeddings.T
    chosen: list[int] = []
    closest = np.full(len(hits), -np.inf)
    available = np.ones(len(hits), dtype=bool)
    for _ in range(k):
        novelty = np.where(np.isfinite(closest), closest, 0.0)
        value = (1.0 - diversity) * scores - diversity * novelty
        value[~available] = -np.inf
        pick = int(np.argmax(value))
        chosen.append(pick)
        available[pick] = False
        closest = np.maximum(closest, similarity[pick])
    return sorted((hits[i] for i in chosen), key=lambda h: h.score, reverse=True)

"""Maximal marginal relevance: pick k results that are relevant and not alike.

Greedy MMR over a candidate pool: each step takes the candidate maximising
``(1 - diversity) * score - diversity * max cosine to the ones already taken``
(the first index among equal values). ``diversity`` 0 is plain ranking; 1 looks
only at novelty after the first pick. The chosen set is returned ordered by its
original score, so results stay ordered by descending score as the API promises.

One similarity matrix over the pool (one BLAS call) and a running vector of each
candidate's highest similarity to the chosen ones make a step a few vector
operations: a pool of 150 costs well under a millisecond for k = 50, so a pool up
to ``INLINE_POOL_MAX`` is picked on the event loop (see ``runs_inline``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from memory_service.memories.models import SearchHit

# the matrix grows as the pool squared: past this many candidates it is worth a thread
INLINE_POOL_MAX = 300


def runs_inline(pool: int) -> bool:
    """Whether a pool this large is picked faster here than after a hop to a thread."""
    return pool <= INLINE_POOL_MAX


def similarity(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Cosine similarity of every pair of unit rows; row ``j`` is candidate j's."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return (v @ v.T).astype(np.float64)


def mmr_order(
    scores: npt.NDArray[np.float64], sim: npt.NDArray[np.float64], k: int, diversity: float
) -> list[int]:
    """The indexes MMR takes, in the order it takes them (``0 < diversity``, ``k <= n``)."""
    relevance = (1.0 - diversity) * scores
    value = relevance.copy()  # no novelty penalty before the first pick
    closest = np.full(len(scores), -np.inf)
    taken: list[int] = []
    for _ in range(k):
        pick = int(np.argmax(value))
        taken.append(pick)
        np.maximum(closest, sim[pick], out=closest)
        closest[pick] = np.inf  # taken: valued -inf from now on (diversity > 0)
        value = relevance - diversity * closest
    return taken


def select_diverse(
    hits: list[SearchHit], embeddings: npt.NDArray[np.float32], k: int, diversity: float
) -> list[SearchHit]:
    """``embeddings[i]`` is the unit vector of ``hits[i]``."""
    if len(hits) <= k or diversity <= 0.0:
        return sorted(hits, key=lambda h: h.score, reverse=True)[:k]
    scores = np.fromiter((h.score for h in hits), dtype=np.float64, count=len(hits))
    chosen = mmr_order(scores, similarity(embeddings), k, diversity)
    return sorted((hits[i] for i in chosen), key=lambda h: h.score, reverse=True)

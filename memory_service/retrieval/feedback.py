"""Pseudo-relevance feedback: the first ranking's best memories sharpen a second search.

``"feedback"`` (hybrid only) runs hybrid twice. After the first fusion its best
``FEEDBACK_DOCS`` memories are taken as relevant:

- ``rm3`` (keyword side): the query text gains the ``EXPANSION_TERMS`` words that
  weigh most in those memories, a word's weight being its share of each memory's
  words times the memory's fused score, summed (relevance model 1, without RM3's
  interpolated term weights, which BM25 over PostgreSQL full-text search has no
  place for); words of the query and stop words do not count;
- ``rocchio`` (vector side): the query vector moves towards the memories' mean,
  ``q' = q + ROCCHIO_BETA * mean(d)``, normalised;
- ``both``: the two together.

The second search replaces the first; its components read as hybrid's own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from memory_service.memories.models import SearchHit
from memory_service.retrieval.features import STOP_WORDS, stem, terms

FEEDBACKS = ("rm3", "rocchio", "both", "none")
FEEDBACK_DOCS = 5
EXPANSION_TERMS = 8
ROCCHIO_BETA = 0.5


def expansion_terms(
    query: str, hits: Sequence[SearchHit], count: int = EXPANSION_TERMS
) -> list[str]:
    """The words that weigh most in the best hits and are not the query's, best first."""
    asked = set(terms(query))
    weights: defaultdict[str, float] = defaultdict(float)
    for hit in hits[:FEEDBACK_DOCS]:
        words = [
            w
            for w in (t.strip("'") for t in hit.memory.content.lower().split())
            if w.isalpha() and len(w) > 2 and w not in STOP_WORDS
        ]
        if not words:
            continue
        share = max(hit.score, 0.0) / len(words)
        for word in words:
            if stem(word) not in asked:
                weights[word] += share
    return [w for w, _ in sorted(weights.items(), key=lambda t: (-t[1], t[0]))[:count]]


def expand_query(query: str, hits: Sequence[SearchHit]) -> str:
    extra = expansion_terms(query, hits)
    return f"{query} {' '.join(extra)}" if extra else query


def rocchio(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``query`` moved towards the mean of ``vectors`` (rows), unit length."""
    if len(vectors) == 0:
        return query
    moved = query.astype(np.float32) + ROCCHIO_BETA * vectors.mean(axis=0).astype(np.float32)
    norm = float(np.linalg.norm(moved))
    return moved / norm if norm > 0.0 else query

"""What the learned ranker sees of each candidate: signals the search already computed.

``candidate_features(query, hits)`` turns a ranked candidate pool (fused, time- and
context-weighted, with each hit's ``components``) into one row of numbers per hit,
in ``FEATURES`` order. Every feature is relative to the pool (the best candidate's
value is 1), so the same model serves a pool of any size and any score scale:

- ``fused``, ``fused_rank``: the score the pool was ranked by, over the best one, and
  ``1 / (1 + rank)``;
- ``vector``, ``vector_rank``, ``keyword``, ``keyword_rank``: each side's share of the
  fused score over the pool's best share, and the reciprocal rank by that share
  (0 where the side did not rank the memory); ``keyword_missing`` is 1 when the
  keyword side found no shared word;
- ``coverage``: the share of the query's words (lower-cased, stop words dropped,
  crude suffixes cut) that the memory's content and context hold; ``coverage_idf``
  the same with each word weighted by how rare it is in the pool;
- ``time``, ``context``: the time fit and the group share, over the pool's best (0
  without a time expression or ``context_by``);
- ``neighbour``: the best fused score, over the pool's best, of a candidate in the
  same scope written just before or after the memory (two writes either side): a
  conversation turn whose neighbours match is itself more likely to matter;
- ``newness``: the memory's time between the pool's oldest (0) and newest (1);
- ``length``: ``log(1 + words) / 5``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from memory_service.memories.models import SearchHit
from memory_service.retrieval.temporal import memory_time

FEATURES = (
    "fused",
    "fused_rank",
    "vector",
    "vector_rank",
    "keyword",
    "keyword_rank",
    "keyword_missing",
    "coverage",
    "coverage_idf",
    "time",
    "context",
    "neighbour",
    "newness",
    "length",
)
NEIGHBOUR_SPAN = 2  # writes either side that count as neighbours
_WORD = re.compile(r"[a-z0-9]+")
_WORD_TAIL = re.compile(r"[a-z0-9]*")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_SUFFIXES = ("ing", "ed", "es", "s", "ly")
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "about",
        "after",
        "before",
        "did",
        "does",
        "any",
        "some",
    ]
)


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    """The words of ``text`` that carry meaning: lower-cased, stop words out, stemmed."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


class QueryTerms:
    """Which of a query's terms a text holds: ``terms & set(terms(text))``, found without
    stemming every word of every candidate. Every word that stems to a term starts with
    it, so each term is looked for as a substring, and at each place it starts a word
    the word is read and checked against the term's forms (the words that stem to it).
    No expression is compiled per query (compiling cost more than the scan). A
    candidate's words are read once per search and not kept (what a memory says must
    not outlive its erasure in this process's memory)."""

    def __init__(self, terms: set[str]) -> None:
        self.terms = frozenset(terms)
        self._forms = [
            (term, forms)
            for term in sorted(terms)
            if (forms := frozenset(term + e for e in ("", *_SUFFIXES) if _stems_to(term + e, term)))
        ]

    def found_in(self, text: str) -> frozenset[str]:
        low = text.lower()
        found = set()
        for term, forms in self._forms:
            start = low.find(term)
            while start >= 0:
                # a word is a run of [a-z0-9] in the lower-cased text, as ``_WORD`` reads it
                if start == 0 or low[start - 1] not in _WORD_CHARS:
                    end = _WORD_TAIL.match(low, start + len(term))
                    if end is not None and low[start : end.end()] in forms:
                        found.add(term)
                        break
                start = low.find(term, start + 1)
        return frozenset(found)


def _stems_to(word: str, term: str) -> bool:
    return word not in STOP_WORDS and stem(word) == term


def _relative(values: Sequence[float]) -> list[float]:
    best = max(values, default=0.0)
    return [v / best if best > 0.0 else 0.0 for v in values]


def _reciprocal_ranks(values: Sequence[float]) -> list[float]:
    """``1 / (1 + rank)`` by value, best first; 0 for a value of 0 (not ranked)."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0.0] * len(values)
    for rank, i in enumerate(order):
        if values[i] > 0.0:
            out[i] = 1.0 / (1.0 + rank)
    return out


def candidate_features(query: str, hits: Sequence[SearchHit]) -> np.ndarray:
    """One row per hit, in ``FEATURES`` order (see the module docstring)."""
    n = len(hits)
    out = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    parts = [h.components or {"relevance": h.score} for h in hits]
    scores = [h.score for h in hits]
    vector = [p.get("vector", p.get("relevance", 0.0)) for p in parts]
    keyword = [p.get("keyword", 0.0) for p in parts]
    query_terms = set(terms(query))
    holds = QueryTerms(query_terms)
    memory_terms = [
        holds.found_in(h.memory.content + (" " + h.memory.context if h.memory.context else ""))
        for h in hits
    ]
    weight = {t: math.log(1.0 + n / (1.0 + sum(t in m for m in memory_terms))) for t in query_terms}
    total_weight = sum(weight.values())
    fused_rel = _relative(scores)
    low = min(scores)
    if low < 0.0:  # scores below 0 (a learned score): shift so the weakest is 0
        fused_rel = _relative([s - low for s in scores])
    columns: dict[str, list[float]] = {
        "fused": fused_rel,
        "fused_rank": [1.0 / (1.0 + r) for r in range(n)],
        "vector": _relative(vector),
        "vector_rank": _reciprocal_ranks(vector),
        "keyword": _relative(keyword),
        "keyword_rank": _reciprocal_ranks(keyword),
        "keyword_missing": [1.0 if k <= 0.0 else 0.0 for k in keyword],
        "coverage": [
            len(query_terms & m) / len(query_terms) if query_terms else 0.0 for m in memory_terms
        ],
        "coverage_idf": [
            sum(weight[t] for t in query_terms & m) / total_weight if total_weight else 0.0
            for m in memory_terms
        ],
        "time": _relative([p.get("time", 0.0) for p in parts]),
        "context": _relative([p.get("context", 0.0) for p in parts]),
        "neighbour": _neighbours(hits, fused_rel),
        "newness": _newness(hits),
        "length": [math.log1p(len(h.memory.content.split())) / 5.0 for h in hits],
    }
    for j, name in enumerate(FEATURES):
        out[:, j] = columns[name]
    return out


def _neighbours(hits: Sequence[SearchHit], fused: list[float]) -> list[float]:
    by_place = {
        (h.memory.user_id, h.memory.agent_id, h.memory.run_id, h.memory.seq): fused[i]
        for i, h in enumerate(hits)
    }
    out = []
    for h in hits:
        m = h.memory
        near = [
            by_place.get((m.user_id, m.agent_id, m.run_id, m.seq + d), 0.0)
            for d in range(-NEIGHBOUR_SPAN, NEIGHBOUR_SPAN + 1)
            if d != 0
        ]
        out.append(max(near))
    return out


def _newness(hits: Sequence[SearchHit]) -> list[float]:
    times = [memory_time(h.memory).timestamp() for h in hits]
    low, high = min(times), max(times)
    spread = high - low
    return [(t - low) / spread if spread > 0.0 else 0.0 for t in times]

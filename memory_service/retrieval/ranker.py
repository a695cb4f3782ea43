"""The learned re-ranker: gradient-boosted trees over the candidate features, in numpy.

It re-orders the first ``WINDOW`` candidates of a search (after fusion, the time
preference and ``context_by``; more when the search asks for more) by the model's
log-odds that the memory is relevant, over the features of ``retrieval.features``:

    logit = bias + rate * sum over trees of (leaf value - root value)
    score = 1 / (1 + exp(-logit))

so a score is the model's estimate of the probability that the memory is relevant,
in (0, 1) like every other ranking's score, and 0.5 is "as likely as not". It is
the default ranking of a search that names no mode (``"rerank": "none"`` turns it
off); ``"rerank": "learned"`` asks for it in any mode.

Trees are trained outside the service (``make train-ranker``:
``benchmarks/train_ranker.py``, scikit-learn's gradient boosting on BEIR SciFact's
train queries and LoCoMo conversations 0-4, each question's top 100 candidates
of hybrid) and shipped as ``ranker.json`` beside this module: per node its feature, threshold, children and value. Serving imports
nothing but numpy and walks every tree at once, one level per step. With
``explain`` a hit's components say what each feature contributed to the logit:
along each tree's path, the change of the node value at a split goes to the
split's feature (so the components and ``bias`` add up to the logit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memory_service.memories.models import SearchHit
from memory_service.retrieval.features import FEATURES, candidate_features

SHIPPED = Path(__file__).with_name("ranker.json")
LEAF = -1
# candidates re-ordered: one ranked below them by the first stage rarely belongs in
# the top 10 (LoCoMo recall@10 0.759 with 50, 0.760 with 100, 0.761 with 200), and the
# features cost about 6 us a candidate of dialogue
WINDOW = 50
# the smallest pool it re-orders: its features are relative to the pool, it learned
# from pools of 100, and on a handful of candidates they say little (two memories,
# "what is my job?": the nurse, first by both sides, fell behind the favourite colour
# because no turn around her matched); 30 is the smallest measured to gain (LoCoMo
# recall@10 0.755 re-ordering 30, 0.728 not re-ordering)
MIN_POOL = 30


@dataclass(frozen=True, slots=True)
class LearnedRanker:
    """All trees' nodes in flat arrays; ``roots`` indexes each tree's first node."""

    features: tuple[str, ...]
    feature: np.ndarray  # int64 per node: column in ``features``; LEAF at a leaf
    threshold: np.ndarray  # float64: go left when the value <= threshold
    left: np.ndarray  # int64 global node index; LEAF at a leaf
    right: np.ndarray
    value: np.ndarray  # float64: the tree's output at that node
    roots: np.ndarray  # int64 per tree
    rate: float  # learning rate: each tree's output is scaled by it
    bias: float  # the prior log-odds plus every tree's root value, scaled
    depth: int  # the deepest path
    about: dict[str, Any]  # how it was trained
    # the node arrays with every leaf its own child (feature 0, threshold +inf), for
    # ``scores``: a walk needs no test for leaves
    walk: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LearnedRanker:
        names = tuple(str(n) for n in raw["features"])
        unknown = sorted(set(names) - set(FEATURES))
        if unknown:
            raise ValueError(f"ranker model names unknown features: {', '.join(unknown)}")
        columns: dict[str, list[Any]] = {k: [] for k in ("feature", "threshold", "left", "right")}
        values: list[float] = []
        roots: list[int] = []
        depth = 0
        for tree in raw["trees"]:
            offset = len(values)
            roots.append(offset)
            nodes = len(tree["value"])
            for key in ("left", "right"):
                columns[key] += [c + offset if c >= 0 else LEAF for c in tree[key]]
            columns["feature"] += [int(f) if f >= 0 else LEAF for f in tree["feature"]]
            columns["threshold"] += [float(t) for t in tree["threshold"]]
            values += [float(v) for v in tree["value"]]
            depth = max(depth, int(tree["depth"]))
            if any(len(tree[k]) != nodes for k in ("left", "right", "feature", "threshold")):
                raise ValueError("ranker model: a tree's node arrays differ in length")
        feature = np.asarray(columns["feature"], dtype=np.int64)
        if feature.size and (feature.max() >= len(names)):
            raise ValueError("ranker model: a split names a feature it does not list")
        rate, bias = float(raw["rate"]), float(raw["bias"])
        value = np.asarray(values, dtype=np.float64)
        threshold = np.asarray(columns["threshold"], dtype=np.float64)
        left = np.asarray(columns["left"], dtype=np.int64)
        right = np.asarray(columns["right"], dtype=np.int64)
        leaf = feature == LEAF
        own = np.arange(len(feature), dtype=np.int64)
        walk = (
            np.where(leaf, 0, feature),
            np.where(leaf, np.inf, threshold),
            np.where(leaf, own, left),
            np.where(leaf, own, right),
        )
        if not (np.isfinite(value).all() and math.isfinite(rate) and math.isfinite(bias)):
            raise ValueError("ranker model: values, rate and bias must be finite")
        return cls(
            names,
            feature,
            threshold,
            left,
            right,
            value,
            np.asarray(roots, dtype=np.int64),
            rate,
            bias,
            depth,
            dict(raw.get("about", {})),
            walk,
        )

    @classmethod
    def load(cls, path: Path = SHIPPED) -> LearnedRanker:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def matrix(self, query: str, hits: list[SearchHit]) -> np.ndarray:
        """The model's features of ``hits``, in the model's own feature order."""
        full = candidate_features(query, hits)
        return full[:, [FEATURES.index(n) for n in self.features]]

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per row, each feature's share of the score (the score is their sum + bias).

        Values are compared as float32, as the trees were fitted on float32 values."""
        rows, width = x.shape[0], len(self.features)
        x32 = x.astype(np.float32).astype(np.float64)
        out = np.zeros(rows * width, dtype=np.float64)
        nodes = np.broadcast_to(self.roots, (rows, len(self.roots))).copy()
        at = np.arange(rows)[:, None]
        for _ in range(self.depth):
            feature = self.feature[nodes]
            inner = feature != LEAF
            if not inner.any():
                break
            safe = np.where(inner, feature, 0)
            go_left = x32[at, safe] <= self.threshold[nodes]
            child = np.where(inner, np.where(go_left, self.left[nodes], self.right[nodes]), nodes)
            delta = np.where(inner, self.value[child] - self.value[nodes], 0.0) * self.rate
            cell = (at * width + safe).ravel()
            out += np.bincount(cell, weights=delta.ravel(), minlength=rows * width)
            nodes = child
        return out.reshape(rows, width)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Per row, the score alone: each tree walked to its leaf (a leaf's children are
        itself), without the per-feature shares; several times faster than summing
        ``contributions``, with the same result."""
        rows = x.shape[0]
        x32 = x.astype(np.float32).astype(np.float64)
        feature, threshold, left, right = self.walk
        nodes = np.broadcast_to(self.roots, (rows, len(self.roots))).copy()
        at = np.arange(rows)[:, None]
        for _ in range(self.depth):
            nodes = np.where(x32[at, feature[nodes]] <= threshold[nodes], left[nodes], right[nodes])
        root_sum = float(self.value[self.roots].sum())
        out: np.ndarray = (self.value[nodes].sum(axis=1) - root_sum) * self.rate + self.bias
        return out

    def rerank(self, query: str, hits: list[SearchHit], *, explain: bool = True) -> list[SearchHit]:
        """``hits`` scored by the model (the probability of relevance), best first; ties
        keep the earlier order. With ``explain``, each hit's components are the
        features' shares of the logit and ``bias``."""
        if not hits:
            return hits
        x = self.matrix(query, hits)
        if explain:
            shares = self.contributions(x)
            logits = shares.sum(axis=1) + self.bias
            for hit, row in zip(hits, shares.tolist(), strict=True):
                hit.components = {**dict(zip(self.features, row, strict=True)), "bias": self.bias}
        else:
            logits = self.scores(x)
        for hit, p in zip(hits, probability(logits).tolist(), strict=True):
            hit.score = p
        order = sorted(range(len(hits)), key=lambda i: (-hits[i].score, i))
        return [hits[i] for i in order]


def probability(logits: np.ndarray) -> np.ndarray:
    """The logistic of each logit, without overflow for large negative ones."""
    out: np.ndarray = np.exp(-np.logaddexp(0.0, -logits))
    return out

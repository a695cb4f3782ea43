"""The learned re-ranker: gradient-boosted trees over the candidate features, in numpy.

``"rerank": "learned"`` re-orders the candidate pool of a search (after fusion, the
time preference and ``context_by``) by the model's score over the features of
``retrieval.features``:

    score = bias + rate * sum over trees of (leaf value - root value)

Trees are trained outside the service (``make train-ranker``:
``benchmarks/train_ranker.py``, scikit-learn's gradient boosting on BEIR SciFact's
train queries and LoCoMo conversations 0-4) and shipped as ``ranker.json`` beside
this module: per node its feature, threshold, children and value. Serving imports
nothing but numpy and walks every tree at once, one level per step. The score is
the model's log-odds that the memory is relevant (any real number, not a share in
[0, 1]). With ``explain`` a hit's components say what each feature contributed:
along each tree's path, the change of the node value at a split goes to the split's
feature (so the components and ``bias`` add up to the score).
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
        if not (np.isfinite(value).all() and math.isfinite(rate) and math.isfinite(bias)):
            raise ValueError("ranker model: values, rate and bias must be finite")
        return cls(
            names,
            feature,
            np.asarray(columns["threshold"], dtype=np.float64),
            np.asarray(columns["left"], dtype=np.int64),
            np.asarray(columns["right"], dtype=np.int64),
            value,
            np.asarray(roots, dtype=np.int64),
            rate,
            bias,
            depth,
            dict(raw.get("about", {})),
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
        return self.contributions(x).sum(axis=1) + self.bias

    def rerank(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        """``hits`` rescored by the model, best first (ties keep the earlier order)."""
        if not hits:
            return hits
        shares = self.contributions(self.matrix(query, hits))
        for i, hit in enumerate(hits):
            parts = {n: float(c) for n, c in zip(self.features, shares[i], strict=True)}
            parts["bias"] = self.bias
            hit.components = parts
            hit.score = float(sum(parts.values()))
        order = sorted(range(len(hits)), key=lambda i: (-hits[i].score, i))
        return [hits[i] for i in order]

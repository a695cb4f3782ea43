"""Fit the learned re-ranker (``memory_service/retrieval/ranker.json``): ``make train-ranker``.

Only training data is looked at: BEIR SciFact's *train* queries (its test queries
are ``make eval``'s) and LoCoMo conversations 0-4 (``make eval``'s dev half; 5-9
are its test half), the turns loaded once per context variant as in ``make eval``.
The real service (``benchmarks.eval.service``) answers each question in hybrid mode
with ``explain`` and without re-ranking; each answer's top ``--pool`` candidates
become rows of ``retrieval.features`` (the very function the service re-ranks
with, fed the components the service reported), labelled 1 when the candidate is
relevant. A logistic regression (scikit-learn, a training-time dependency only)
is fitted with each question weighing the same, its positives and its negatives
half each, and its coefficients written as JSON for the service's numpy scorer.

Before the final fit, the questions are split in two by a hash of their text: a
model fitted on one half re-ranks the other's pools, and the script prints nDCG@10
and recall@10 of the fused order and of the re-ranked one on the held-out half,
per data set, for each regularisation strength in ``--c``; the best (by the mean
of the two data sets' recall@10 gain) is fitted on everything.

The questions and the service's answers come from ``ranker_data.py``; this script
turns them into feature rows, compares the configurations and fits the model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.eval.datasets import Document, Question
from benchmarks.eval.metrics import ndcg_at, recall_at
from benchmarks.eval.runs import LOCOMO_CONTEXTS
from benchmarks.ranker_data import (
    TrainingSet,
    add_source_arguments,
    sets_and_answers,
    unique_documents,
)
from memory_service.memories.models import Memory, SearchHit
from memory_service.retrieval.features import FEATURES, candidate_features
from memory_service.retrieval.ranker import SHIPPED, LearnedRanker

ROOT = Path(__file__).resolve().parent.parent


@dataclass(slots=True)
class Pool:
    """One question's candidates: features, relevance labels, document ids in fused order."""

    dataset: str
    question: Question
    x: np.ndarray
    y: np.ndarray
    ids: list[str]


def hit_from_record(rec: dict[str, Any], doc: Document, seq: int) -> SearchHit:
    """A hit as the service held it before re-ranking: content, metadata and context
    (never shown over HTTP) from the document, the write order from the load order."""
    created = datetime.fromisoformat(rec["created_at"].replace("Z", "+00:00"))
    memory = Memory(
        id=rec["id"],
        content=doc.content,
        user_id=rec["user_id"],
        agent_id=None,
        run_id=None,
        namespace=None,
        metadata={**doc.metadata, "doc_id": doc.doc_id},
        importance=0.5,
        created_at=created,
        updated_at=created,
        expires_at=None,
        version=1,
        seq=seq,
        context=doc.context,
    )
    return SearchHit(memory, rec["score"], dict(rec["components"]))


def make_pool(
    dataset: str,
    question: Question,
    records: Sequence[dict[str, Any]],
    docs: dict[str, Document],
    seqs: dict[str, int],
) -> Pool:
    ids = [r["doc_id"] for r in records]
    hits = [hit_from_record(r, docs[r["doc_id"]], seqs[r["doc_id"]]) for r in records]
    x = candidate_features(question.text, hits)
    y = np.asarray([1.0 if question.relevant.get(i, 0) > 0 else 0.0 for i in ids])
    return Pool(dataset, question, x, y, ids)


Config = tuple[int, int, float]  # trees, depth, learning rate


def fit(
    pools: Sequence[Pool], config: Config, about: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Gradient-boosted trees over every pool's rows, each question weighing the same,
    as the JSON the service loads (checked against scikit-learn's own scores)."""
    from sklearn.ensemble import GradientBoostingClassifier

    xs, ys, ws = [], [], []
    for pool in pools:
        positives = float(pool.y.sum())
        negatives = float(len(pool.y) - positives)
        if positives == 0 or negatives == 0:
            continue  # nothing to learn from a pool without both kinds
        xs.append(pool.x)
        ys.append(pool.y)
        ws.append(np.where(pool.y > 0, 0.5 / positives, 0.5 / negatives))
    if not xs:
        raise ValueError("no question has both a relevant and an irrelevant candidate")
    x, y, w = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
    trees, depth, rate = config
    model = GradientBoostingClassifier(
        n_estimators=trees, max_depth=depth, learning_rate=rate, subsample=0.8, random_state=0
    )
    model.fit(x, y, sample_weight=w * len(w) / w.sum())
    estimators = [e[0] for e in model.estimators_]
    probe = x[:1]
    init = float(model.decision_function(probe)[0]) - rate * sum(
        float(e.predict(probe)[0]) for e in estimators
    )
    exported = []
    for e in estimators:
        t = e.tree_
        exported.append(
            {
                "feature": [int(f) for f in t.feature],
                "threshold": [float(v) for v in t.threshold],
                "left": [int(c) for c in t.children_left],
                "right": [int(c) for c in t.children_right],
                "value": [float(v) for v in t.value[:, 0, 0]],
                "depth": int(t.max_depth),
            }
        )
    raw = {
        "features": list(FEATURES),
        "rate": rate,
        "bias": init + rate * sum(t["value"][0] for t in exported),
        "trees": exported,
        "about": {
            "trees": trees,
            "depth": depth,
            "questions": len(xs),
            "rows": len(y),
            **(about or {}),
        },
    }
    ranker = LearnedRanker.from_dict(raw)
    check = x[:500]
    if not np.allclose(ranker.scores(check), model.decision_function(check), atol=1e-6):
        raise AssertionError("the numpy scorer disagrees with scikit-learn")
    return raw


def measure(pools: Sequence[Pool], ranker: LearnedRanker | None) -> dict[str, float]:
    """nDCG@10 and recall@10 of each pool's order: fused (no ranker) or re-ranked."""
    ndcg, recall = [], []
    for pool in pools:
        ids = pool.ids
        if ranker is not None:
            scores = ranker.scores(pool.x[:, [FEATURES.index(n) for n in ranker.features]])
            order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
            ids = [ids[i] for i in order]
        ndcg.append(ndcg_at(ids, pool.question.relevant, 10))
        recall.append(recall_at(ids, pool.question.relevant, 10))
    return {"ndcg@10": statistics.fmean(ndcg), "recall@10": statistics.fmean(recall)}


def half(question: Question) -> int:
    return hashlib.sha256(question.text.encode()).digest()[0] % 2


def choose(pools: list[Pool], configs: Sequence[Config]) -> Config:
    """The configuration whose model, fitted on one half, gains most on the other."""
    datasets = sorted({p.dataset for p in pools})
    held = {
        (name, h): [p for p in pools if p.dataset == name and half(p.question) == h]
        for name in datasets
        for h in (0, 1)
    }
    if not all(held.values()):
        print("too few questions to compare configurations on held-out halves")
        return configs[0]
    best, best_gain = configs[0], -1e9
    for c in configs:
        models = {
            h: LearnedRanker.from_dict(fit([p for p in pools if half(p.question) != h], c))
            for h in (0, 1)
        }
        gains = []
        for name in datasets:
            fused = [measure(held[name, h], None) for h in (0, 1)]
            model = [measure(held[name, h], models[h]) for h in (0, 1)]
            row = {
                key: (
                    statistics.fmean(f[key] for f in fused),
                    statistics.fmean(m[key] for m in model),
                )
                for key in ("ndcg@10", "recall@10")
            }
            print(
                f"{c[0]} trees, depth {c[1]}, rate {c[2]:g}: {name}: "
                + ", ".join(f"{k} fused {a:.3f} -> learned {b:.3f}" for k, (a, b) in row.items())
            )
            gains.append(row["recall@10"][1] - row["recall@10"][0])
        if statistics.fmean(gains) > best_gain:
            best, best_gain = c, statistics.fmean(gains)
    return best


def pools_from(sets: list[TrainingSet], answers: list[list[list[dict[str, Any]]]]) -> list[Pool]:
    pools = []
    for (name, docs, questions, _), per_question in zip(sets, answers, strict=True):
        by_scope: dict[str, dict[str, Document]] = {}
        seqs: dict[str, dict[str, int]] = {}
        for i, d in enumerate(unique_documents(docs)):
            by_scope.setdefault(d.scope, {})[d.doc_id] = d
            seqs.setdefault(d.scope, {})[d.doc_id] = i
        for q, records in zip(questions, per_question, strict=True):
            pools.append(make_pool(name, q, records, by_scope[q.scope], seqs[q.scope]))
    return pools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--pool", type=int, default=100, help="candidates per question")
    parser.add_argument(
        "--configs",
        default="100:3:0.1,200:4:0.05",
        help="trees:depth:learning-rate, comma-separated: the ones to compare on held-out halves",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    sets, answers = sets_and_answers(args, args.pool)
    pools = pools_from(sets, answers)
    configs = [_config(c) for c in args.configs.split(",") if c.strip()]
    config = choose(pools, configs) if len(configs) > 1 else configs[0]
    about = {
        "trained_on": "BEIR SciFact train queries; LoCoMo conversations 0-4, contexts "
        + " and ".join(LOCOMO_CONTEXTS),
        "pool": args.pool,
        "per_dataset": {n: sum(p.dataset == n for p in pools) for n in ("scifact", "locomo")},
    }
    raw = fit(pools, config, about)
    args.out.write_text(json.dumps(raw, separators=(",", ":")) + "\n", encoding="utf-8")
    ranker = LearnedRanker.from_dict(raw)
    importance = np.abs(np.vstack([ranker.contributions(p.x) for p in pools])).mean(axis=0)
    for name, share in sorted(zip(ranker.features, importance, strict=True), key=lambda t: -t[1]):
        print(f"  {name:>16} mean |contribution| {share:.3f}")
    print(f"{config}: wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


def _config(text: str) -> Config:
    trees, depth, rate = text.split(":")
    return int(trees), int(depth), float(rate)


if __name__ == "__main__":
    raise SystemExit(main())

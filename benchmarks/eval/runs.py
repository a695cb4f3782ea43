"""What ``make eval`` asks: the named runs (search body fields), where each applies, the baselines.

Every row of the retrieval tables is one of ``RUNS``; ``ONLY`` keeps a run to
the one data set where it means something; every run is compared, query by
query, with the ``BASELINES``. LoCoMo conversations below ``LOCOMO_DEV`` are
the dev half (settings were chosen on them), the rest the test half.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# name -> search body fields; every row of the tables is one of these. "default" sends
# no mode and no option: what a client gets that asks for nothing (hybrid, each memory
# lent weight by its run's other matches, the learned ranker over the first 50);
# "default rerank=none" is the same without the ranker (the previous default); a run
# naming its mode gets neither context nor a re-ranker unless it names them
RUNS: dict[str, dict[str, Any]] = {
    "default": {},
    "default rerank=none": {"rerank": "none"},
    "vector": {"mode": "vector"},
    "keyword": {"mode": "keyword"},
    "hybrid": {"mode": "hybrid"},
    "hybrid time_weight=0": {"mode": "hybrid", "time_weight": 0.0},
    "hybrid fusion=rrf": {"mode": "hybrid", "fusion": "rrf"},
    "hybrid rrf_k=10 keyword_weight=2": {"mode": "hybrid", "rrf_k": 10, "keyword_weight": 2.0},
    "hybrid + diversity 0.2": {"mode": "hybrid", "diversity": 0.2},
    "hybrid + recency 0.1": {"mode": "hybrid", "recency_weight": 0.1},
    "hybrid + importance 0.1": {"mode": "hybrid", "importance_weight": 0.1},
    "hybrid group_by=session": {"mode": "hybrid", "group_by": "metadata.session"},
    "hybrid context_by=session": {"mode": "hybrid", "context_by": "metadata.session"},
    "hybrid + rm3": {"mode": "hybrid", "feedback": "rm3"},
    "hybrid + rocchio": {"mode": "hybrid", "feedback": "rocchio"},
    "hybrid + rm3 + rocchio": {"mode": "hybrid", "feedback": "both"},
    "hybrid + learned": {"mode": "hybrid", "rerank": "learned"},
    # a row only when a cross-encoder is built (make train-cross-encoder): eval_retrieval
    # drops it otherwise, as the service answers 422
    "hybrid + cross": {"mode": "hybrid", "rerank": "cross"},
    "hybrid context_by=session + learned": {
        "mode": "hybrid",
        "context_by": "metadata.session",
        "rerank": "learned",
    },
}

# runs that mean something on one data set only (SciFact abstracts have no session)
ONLY: dict[str, str] = {
    "hybrid group_by=session": "locomo",
    "hybrid context_by=session": "locomo",
    "hybrid context_by=session + learned": "locomo",
}
# every run is compared, query by query, with these (vector and hybrid, the defaults
# before the context step, and the previous default)
BASELINES = ("vector", "hybrid", "default rerank=none")
# LoCoMo conversations 0-4 were used to choose settings; 5-9 were not
LOCOMO_DEV = 5
LOCOMO_CONTEXTS = ("none", "date+previous")

# where `make train-cross-encoder` writes its model and `make eval` looks for it
CROSS_ENCODER_DIR = Path(__file__).resolve().parent.parent / ".cache" / "cross-encoder"

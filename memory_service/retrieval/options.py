"""Search options beyond the contract's fields, read from ``SearchRequest.options``.

One place validates every option against its range and its mode, so a bad value
is a 422 naming the field whether the call came over HTTP or from Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from memory_service.config import Settings
from memory_service.errors import FieldError, InvalidInput
from memory_service.retrieval.feedback import FEEDBACKS
from memory_service.retrieval.grouping import (
    DEFAULT_CONTEXT_WEIGHT,
    DEFAULT_GROUP_SIZE,
    MAX_GROUP_SIZE,
    GroupBy,
    parse_group_by,
)

DEFAULT_TIME_WEIGHT = 0.2  # chosen on LoCoMo conversations 0-4
HYBRID_ONLY = ("fusion", "rrf_k", "vector_weight", "keyword_weight", "feedback")
FUSIONS = ("scores", "rrf")
KNOWN = (
    "explain",
    "recency_weight",
    "importance_weight",
    "half_life_hours",
    "diversity",
    "group_by",
    "group_size",
    "time_weight",
    "context_by",
    "context_weight",
    "rerank",
    *HYBRID_ONLY,
)
# learned: retrieval.ranker; cross: retrieval.cross_encoder; "none": the first stage's order
RERANKERS = ("learned", "cross", "none")
# a re-ranker whose score is a logit (any real number), not a share of [0, 1]; the
# learned ranker's is a probability, so it combines with every other option
LOGIT_RERANKERS = ("cross",)
# options that weigh scores as shares in [0, 1]: not with a logit
SCORE_SCALED = ("group_by", "diversity", "recency_weight", "importance_weight")
# what a search that names no mode gets on top of the default mode's ranking (None: the
# first stage's order), chosen by ``make eval`` across SciFact and LoCoMo together
DEFAULT_RERANK: str | None = "learned"
# and the group whose other matches lend each memory weight (``context_by``): a run is
# a conversation or an agent's run; a memory without one gets nothing from it
DEFAULT_CONTEXT_BY: str | None = "run_id"


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    explain: bool = False
    recency_weight: float = 0.0
    importance_weight: float = 0.0
    half_life_hours: float = 720.0
    diversity: float = 0.0
    fusion: str = "scores"
    rrf_k: int = 60
    vector_weight: float = 1.0
    keyword_weight: float = 1.0
    group_by: GroupBy | None = None
    # weight of a time expression in the query (retrieval.temporal); 0: ignore it
    time_weight: float = DEFAULT_TIME_WEIGHT
    context_by: tuple[str, ...] | None = None  # a group lends its members' scores
    context_weight: float = DEFAULT_CONTEXT_WEIGHT
    rerank: str | None = None  # "learned" or "cross": a model re-orders the pool
    feedback: str | None = None  # rm3, rocchio or both: retrieval.feedback

    @property
    def rescores(self) -> bool:
        return self.recency_weight > 0.0 or self.importance_weight > 0.0

    @property
    def reranks(self) -> bool:
        grouped = self.group_by is not None or self.context_by is not None
        return self.rescores or self.diversity > 0.0 or grouped or self.rerank is not None


def _number(raw: dict[str, Any], name: str, low: float, high: float | None) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a number", errors=[FieldError(name, "number")])
    if value < low or (high is not None and value > high):
        span = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise InvalidInput(f"{name} must be {span}", errors=[FieldError(name, span)])
    return float(value)


def parse_options(mode: str, raw: dict[str, Any], settings: Settings) -> RetrievalOptions:
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise InvalidInput(
            f"unknown search option {unknown[0]!r}",
            errors=[FieldError(name, "unknown option") for name in unknown],
        )
    if mode != "hybrid":
        for name in HYBRID_ONLY:
            if raw.get(name) is not None:
                raise InvalidInput(
                    f"{name} applies only to mode 'hybrid', not {mode!r}",
                    errors=[FieldError(name, "only for mode hybrid")],
                )
    explain = raw.get("explain")
    if explain is not None and not isinstance(explain, bool):
        raise InvalidInput("explain must be true or false", errors=[FieldError("explain", "bool")])
    recency = _number(raw, "recency_weight", 0.0, 1.0) or 0.0
    importance = _number(raw, "importance_weight", 0.0, 1.0) or 0.0
    if recency + importance > 1.0 + 1e-9:
        raise InvalidInput(
            "recency_weight + importance_weight must not exceed 1",
            errors=[FieldError("recency_weight", "sum with importance_weight <= 1")],
        )
    half_life = _number(raw, "half_life_hours", 1e-6, None)
    rrf_k = _number(raw, "rrf_k", 1.0, 10_000.0)
    if rrf_k is not None and rrf_k != int(rrf_k):
        raise InvalidInput("rrf_k must be an integer", errors=[FieldError("rrf_k", "integer")])
    fusion = raw.get("fusion")
    if fusion is not None and fusion not in FUSIONS:
        raise InvalidInput(
            f"fusion must be one of {', '.join(FUSIONS)}",
            errors=[FieldError("fusion", " or ".join(FUSIONS))],
        )
    if fusion == "scores" and rrf_k is not None:
        raise InvalidInput(
            "rrf_k applies only to fusion 'rrf'", errors=[FieldError("rrf_k", "only for rrf")]
        )
    vector_weight = _number(raw, "vector_weight", 0.0, 100.0)
    keyword_weight = _number(raw, "keyword_weight", 0.0, 100.0)
    vw = settings.hybrid_vector_weight if vector_weight is None else vector_weight
    kw = settings.hybrid_keyword_weight if keyword_weight is None else keyword_weight
    if vw + kw <= 0.0:
        raise InvalidInput(
            "vector_weight and keyword_weight must not both be 0",
            errors=[FieldError("vector_weight", "one weight must be positive")],
        )
    return RetrievalOptions(
        explain=bool(explain),
        rerank=_rerank(raw),
        feedback=_feedback(raw),
        group_by=_group_by(raw),
        time_weight=_time_weight(raw),
        **_context(raw),
        recency_weight=recency,
        importance_weight=importance,
        half_life_hours=settings.recency_half_life_hours if half_life is None else half_life,
        diversity=_number(raw, "diversity", 0.0, 1.0) or 0.0,
        fusion=fusion or ("rrf" if rrf_k is not None else "scores"),
        rrf_k=settings.hybrid_rrf_k if rrf_k is None else int(rrf_k),
        vector_weight=vw,
        keyword_weight=kw,
    )


def _group_by(raw: dict[str, Any]) -> GroupBy | None:
    size = raw.get("group_size")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_GROUP_SIZE
    ):
        raise InvalidInput(
            f"group_size must be an integer between 1 and {MAX_GROUP_SIZE}",
            errors=[FieldError("group_size", f"integer in [1, {MAX_GROUP_SIZE}]")],
        )
    if raw.get("group_by") is None:
        if size is not None:
            raise InvalidInput(
                "group_size needs group_by", errors=[FieldError("group_size", "needs group_by")]
            )
        return None
    if raw.get("diversity"):
        raise InvalidInput(
            "diversity and group_by do not combine: a group is already one result",
            errors=[FieldError("diversity", "not with group_by")],
        )
    return GroupBy(parse_group_by(raw["group_by"]), DEFAULT_GROUP_SIZE if size is None else size)


def _time_weight(raw: dict[str, Any]) -> float:
    weight = _number(raw, "time_weight", 0.0, 1.0)
    return DEFAULT_TIME_WEIGHT if weight is None else weight


def _context(raw: dict[str, Any]) -> dict[str, Any]:
    weight = _number(raw, "context_weight", 0.0, 1.0)
    if raw.get("context_by") is None:
        if weight is not None:
            raise InvalidInput(
                "context_weight needs context_by",
                errors=[FieldError("context_weight", "needs context_by")],
            )
        return {}
    return {
        "context_by": parse_group_by(raw["context_by"], "context_by"),
        "context_weight": DEFAULT_CONTEXT_WEIGHT if weight is None else weight,
    }


def default_options(raw: dict[str, Any], hybrid: bool) -> dict[str, Any]:
    """The options of a search that names no mode, when its default mode is hybrid: its
    own, plus ``context_by: DEFAULT_CONTEXT_BY`` unless it names context or groups, plus
    ``DEFAULT_RERANK`` unless it names a re-ranker (``"rerank": "none"`` keeps the
    first stage's order)."""
    if not hybrid:
        return raw
    named = ("context_by", "context_weight", "group_by", "group_size")
    if DEFAULT_CONTEXT_BY is not None and not any(name in raw for name in named):
        raw = {**raw, "context_by": DEFAULT_CONTEXT_BY}
    if DEFAULT_RERANK is None or "rerank" in raw:
        return raw
    return {**raw, "rerank": DEFAULT_RERANK}


def _rerank(raw: dict[str, Any]) -> str | None:
    rerank = raw.get("rerank")
    if rerank is not None and rerank not in RERANKERS:
        raise InvalidInput(
            f"rerank must be one of {', '.join(RERANKERS)}",
            errors=[FieldError("rerank", " or ".join(RERANKERS))],
        )
    clash = [name for name in SCORE_SCALED if raw.get(name)]
    if rerank in LOGIT_RERANKERS and clash:
        raise InvalidInput(
            f"rerank {rerank!r} and {clash[0]} do not combine: {clash[0]} weighs scores in "
            "[0, 1], the cross-encoder's score is a logit",
            errors=[FieldError("rerank", f"not with {clash[0]}")],
        )
    return None if rerank == "none" else rerank


def _feedback(raw: dict[str, Any]) -> str | None:
    feedback = raw.get("feedback")
    if feedback is not None and feedback not in FEEDBACKS:
        raise InvalidInput(
            f"feedback must be one of {', '.join(FEEDBACKS)}",
            errors=[FieldError("feedback", " or ".join(FEEDBACKS))],
        )
    return None if feedback in (None, "none") else feedback

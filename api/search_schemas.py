"""Request and response bodies of search (msgspec structs).

``SearchBody`` is the body of ``POST /v1/memories/search``: the query or
embedding, the scope, the filter, the mode and every retrieval option, checked
for type and range while decoding; ``SearchOut`` is the ranked answer, with
per-hit score components and groups when asked for. The memory bodies it nests
come from ``api.schemas``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from api.schemas import MemoryOut, ScopeValue, Strict
from memory_service.memories.models import Scope, SearchRequest, SearchResult


class SearchBody(Strict):
    query: str | None = None
    embedding: list[float] | None = None
    k: Annotated[int, Meta(ge=1, le=1000)] = 10
    user_id: ScopeValue | None = None
    agent_id: ScopeValue | None = None
    run_id: ScopeValue | None = None
    namespace: ScopeValue | None = None
    filter: dict[str, Any] | None = None
    mode: Annotated[
        Literal["vector", "keyword", "hybrid"],
        Meta(
            description="vector: cosine similarity of the embeddings; keyword: BM25 over the "
            "words; hybrid: both, fused. Unset: the service's best ranking by `make eval` "
            "(MEMORY_SEARCH_DEFAULT_MODE, hybrid, with context_by run_id unless the search "
            "names a context or group option, and rerank learned unless it names a "
            "reranker), or vector for an embedding without a query."
        ),
    ] | None = None
    min_score: float | None = None
    consistency: Annotated[
        Literal["eventual", "strong"],
        Meta(
            description="eventual (default): this process's own writes at once, other "
            "processes' within about a second; strong: every committed write, at the cost "
            "of one more database round trip."
        ),
    ] = "eventual"
    explain: Annotated[
        bool,
        Meta(
            description="Return each result's score components; they add up to its score "
            "(after the learned ranker: to its log-odds, whose logistic is the score)."
        ),
    ] = False
    recency_weight: Annotated[
        float,
        Meta(
            ge=0.0,
            le=1.0,
            description="w_r in score = (1 - w_r - w_i) * relevance + w_r * recency + "
            "w_i * importance, where recency = 0.5 ** (age_hours / half_life_hours) and age "
            "counts from creation or the last dedupe sighting. w_r + w_i <= 1.",
        ),
    ] | None = None
    importance_weight: Annotated[
        float,
        Meta(ge=0.0, le=1.0, description="w_i in the score formula of recency_weight."),
    ] | None = None
    half_life_hours: Annotated[
        float,
        Meta(gt=0.0, description="Half-life of the recency decay (default: service setting)."),
    ] | None = None
    diversity: Annotated[
        float,
        Meta(
            ge=0.0,
            le=1.0,
            description="Maximal marginal relevance: 0 ranks by score only; higher values "
            "drop near-duplicates from the top k. Results stay ordered by score. Not with "
            "group_by (a group is already one result): 422.",
        ),
    ] | None = None
    rrf_k: Annotated[
        int,
        Meta(
            ge=1,
            le=10000,
            description="Hybrid only: the k constant of reciprocal rank fusion; with it, fusion "
            "defaults to rrf, and fusion scores is a 422.",
        ),
    ] | None = None
    vector_weight: Annotated[
        float,
        Meta(ge=0.0, le=100.0, description="Hybrid only: weight of the vector ranking."),
    ] | None = None
    keyword_weight: Annotated[
        float,
        Meta(ge=0.0, le=100.0, description="Hybrid only: weight of the keyword ranking."),
    ] | None = None
    fusion: Annotated[
        Literal["scores", "rrf"],
        Meta(
            description="Hybrid only: scores (default) combines each side's min-max "
            "normalised scores by the weights; rrf fuses ranks (implied by rrf_k)."
        ),
    ] | None = None
    time_weight: Annotated[
        float,
        Meta(
            ge=0.0,
            le=1.0,
            description="Weight of a time expression in the query (\"in May 2023\", "
            "\"last week\", \"most recent\"): score = (1 - w) * relevance + w * fit, fit 1 "
            "when the memory's time (metadata event_time/date, else created_at) is in the "
            "window. Default 0.2; 0 ignores time expressions.",
        ),
    ] | None = None
    # grouped search (memory_service/retrieval/grouping.py)
    group_by: Annotated[
        str,
        Meta(
            max_length=1024,
            description="Rank groups of memories rather than single ones: run_id, user_id, "
            "agent_id, namespace or metadata.<key>. The response's groups are the top k, "
            "each scored s_1 + 0.5 * (s_2 + ... + s_m) over its best group_size members; "
            "results lists those members in group order. A memory without the value is a "
            "group of its own (key null).",
        ),
    ] | None = None
    group_size: Annotated[
        int,
        Meta(ge=1, le=100, description="With group_by: memories kept per group (default 3)."),
    ] | None = None
    context_by: Annotated[
        str,
        Meta(
            max_length=1024,
            description="Like group_by, but results stay single memories: each gains "
            "context_weight times the scores of the best 3 other members of its group in "
            "the candidate pool, and again of the best member written within 2 writes of "
            "it, so a memory whose conversation holds other matches (around it the more) "
            "rises. A search without a mode gets run_id.",
        ),
    ] | None = None
    context_weight: Annotated[
        float, Meta(ge=0.0, le=1.0, description="With context_by (without it: 422): the share (default 0.2).")
    ] | None = None
    feedback: Annotated[
        Literal["rm3", "rocchio", "both", "none"],
        Meta(
            description="Hybrid only: pseudo-relevance feedback, a second search shaped by "
            "the first one's best 5 memories: rm3 adds their 8 weightiest words to the "
            "keyword query, rocchio moves the query vector towards their mean, both does "
            "both; none (default) searches once.",
        ),
    ] | None = None
    rerank: Annotated[
        Literal["learned", "cross", "none"],
        Meta(
            description="learned: re-order the first 50 candidates (more when k is larger) by "
            "the shipped learned ranker (gradient-boosted trees over the fused, vector and "
            "keyword scores, their ranks, query-word coverage, time fit and neighbouring "
            "writes; see docs/search.md); the score is then the model's probability that "
            "the memory is relevant, with explain each feature's share of its log-odds. It "
            "is the default of a search that names no mode. cross: re-score the first 20 "
            "hits by a cross-encoder reading the query and each memory together (a model "
            "built by make train-cross-encoder, configured with MEMORY_CROSS_ENCODER_PATH; "
            "422 when none is); its score is the model's logit, with explain 'cross' and "
            "'first_stage', and it does not combine with group_by, diversity, recency_weight "
            "or importance_weight, which weigh scores as shares in [0, 1]. none: the first "
            "stage's order (the default when a mode is named).",
        ),
    ] | None = None
    as_of: Annotated[
        datetime,
        Meta(
            description="RFC 3339: search the memories as they stood then (exact vector "
            "ranking; mode vector without re-ranking options)."
        ),
    ] | None = None

    def to_domain(self) -> SearchRequest:
        return SearchRequest(
            query=self.query,
            embedding=self.embedding,
            k=self.k,
            scope=Scope(self.user_id, self.agent_id, self.run_id, self.namespace),
            filter=self.filter,
            mode=self.mode,
            min_score=self.min_score,
            options=self.options(),
            consistency=self.consistency,
        )

    def options(self) -> dict[str, Any]:
        """Mode-specific extras; subclasses of the contract add fields here."""
        extras: dict[str, Any] = {}
        if self.explain:
            extras["explain"] = True
        for name in RETRIEVAL_OPTIONS:
            value = getattr(self, name)
            if value is not None:
                extras[name] = value
        return extras


RETRIEVAL_OPTIONS = (
    "recency_weight",
    "importance_weight",
    "half_life_hours",
    "diversity",
    "rrf_k",
    "vector_weight",
    "keyword_weight",
    "group_by",
    "group_size",
    "fusion",
    "time_weight",
    "context_by",
    "context_weight",
    "rerank",
    "feedback",
)


class SearchHitOut(Struct):
    memory: MemoryOut
    score: float
    components: dict[str, float] | UnsetType = UNSET


class SearchGroupOut(Struct):
    key: Any
    score: float
    memories: list[SearchHitOut]


class SearchOut(Struct):
    results: list[SearchHitOut]
    took_ms: float
    strategy: str
    groups: list[SearchGroupOut] | UnsetType = UNSET  # only with group_by

    @classmethod
    def of(cls, r: SearchResult) -> SearchOut:
        hits = [
            SearchHitOut(
                MemoryOut.of(h.memory),
                round(float(h.score), 6),
                UNSET if h.components is None else h.components,
            )
            for h in r.results
        ]
        return cls(
            results=hits,
            took_ms=round(r.took_ms, 3),
            strategy=r.strategy,
            groups=UNSET if r.groups is None else _groups(r, hits),
        )


def _groups(r: SearchResult, hits: list[SearchHitOut]) -> list[SearchGroupOut]:
    """The groups of a grouped search; ``r.results`` are their members, in group order."""
    members = iter(hits)
    return [
        SearchGroupOut(g.key, round(float(g.score), 6), [next(members) for _ in g.hits])
        for g in r.groups or ()
    ]

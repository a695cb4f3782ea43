"""Request and response bodies of the HTTP API (msgspec structs).

Types and ranges are checked here while decoding; rules that need settings or
the database (dimension, size limits, duplicates) are checked by the services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from memory_service.memories.models import (
    HistoryEntry,
    Memory,
    MemoryPatch,
    NewMemory,
    Scope,
    SearchRequest,
    SearchResult,
)

ScopeValue = Annotated[str, Meta(min_length=1, max_length=256)]


class Strict(Struct, forbid_unknown_fields=True):
    """Unknown fields are an error: a typo must not be silently ignored."""


# -- tenants ---------------------------------------------------------------------------
class TenantCreate(Strict):
    name: Annotated[str, Meta(min_length=1, max_length=200)]


class TenantCreated(Struct):
    id: str
    name: str
    api_key: str


class KeyCreated(Struct):
    api_key: str


# -- memories --------------------------------------------------------------------------
class MemoryCreate(Strict):
    content: str
    user_id: ScopeValue | None = None
    agent_id: ScopeValue | None = None
    run_id: ScopeValue | None = None
    namespace: ScopeValue | None = None
    metadata: dict[str, Any] = {}
    importance: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    expires_at: datetime | None = None
    embedding: list[float] | None = None
    context: Annotated[
        str | None,
        Meta(
            description="Text that situates the memory (a date, the surrounding conversation). "
            "It is indexed for keyword search and embedded after the content, but is not "
            "part of the content."
        ),
    ] = None
    dedupe: Annotated[
        bool | None,
        Meta(
            description="Semantic dedupe: when a live memory of exactly this scope has cosine "
            "similarity >= dedupe_threshold, merge into it (metadata merged, last-seen time, "
            "a history entry) instead of inserting. Unset: the tenant's default "
            "(PUT /v1/settings)."
        ),
    ] = None
    dedupe_threshold: Annotated[
        float,
        Meta(gt=0.0, le=1.0, description="Cosine similarity for dedupe; unset: tenant default"),
    ] | None = None

    def to_domain(self) -> NewMemory:
        return NewMemory(
            content=self.content,
            scope=Scope(self.user_id, self.agent_id, self.run_id, self.namespace),
            metadata=self.metadata,
            importance=self.importance,
            expires_at=self.expires_at,
            embedding=self.embedding,
            context=self.context,
            dedupe=self.dedupe,
            dedupe_threshold=self.dedupe_threshold,
        )


class MemoryBatchCreate(Strict):
    items: list[MemoryCreate]


class MemoryUpdate(Strict):
    content: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    importance: Annotated[float, Meta(ge=0.0, le=1.0)] | UnsetType = UNSET
    expires_at: datetime | UnsetType | None = UNSET

    def to_domain(self) -> MemoryPatch:
        return MemoryPatch(
            content=None if self.content is UNSET else self.content,
            metadata=None if self.metadata is UNSET else self.metadata,
            importance=None if self.importance is UNSET else self.importance,
            expires_at=None if isinstance(self.expires_at, UnsetType) else self.expires_at,
            clear_expiry=self.expires_at is None,
        )


class MemoryOut(Struct):
    id: str
    content: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    namespace: str | None
    metadata: dict[str, Any]
    importance: float
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    version: int
    # only on memories named by a key (PUT /v1/memories/by-key/{namespace}/{key})
    key: str | UnsetType = UNSET
    embedding: list[float] | UnsetType = UNSET

    @classmethod
    def of(cls, m: Memory, *, with_embedding: bool = False) -> MemoryOut:
        return cls(
            id=m.id,
            content=m.content,
            user_id=m.user_id,
            agent_id=m.agent_id,
            run_id=m.run_id,
            namespace=m.namespace,
            metadata=m.metadata,
            importance=round(m.importance, 6),
            created_at=m.created_at,
            updated_at=m.updated_at,
            expires_at=m.expires_at,
            version=m.version,
            key=UNSET if m.key is None else m.key,
            embedding=(
                [float(x) for x in m.embedding]
                if with_embedding and m.embedding is not None
                else UNSET
            ),
        )


class MemoryBatchOut(Struct):
    items: list[MemoryOut]


class MemoryPage(Struct):
    items: list[MemoryOut]
    next_cursor: str | None


class Deleted(Struct):
    deleted: int


class HistoryOut(Struct):
    event: Literal["ADD", "UPDATE", "DELETE"]
    old_content: str | None
    new_content: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    at: datetime
    version: int

    @classmethod
    def of(cls, h: HistoryEntry) -> HistoryOut:
        return cls(
            event=h.event,  # type: ignore[arg-type]
            old_content=h.old_content,
            new_content=h.new_content,
            old_metadata=h.old_metadata,
            new_metadata=h.new_metadata,
            at=h.at,
            version=h.version,
        )


class HistoryPage(Struct):
    items: list[HistoryOut]


# -- search ----------------------------------------------------------------------------
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
            "(MEMORY_SEARCH_DEFAULT_MODE, hybrid), or vector for an embedding without a query."
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
        Meta(description="Return each result's score components; they add up to its score."),
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
            "drop near-duplicates from the top k. Results stay ordered by score.",
        ),
    ] | None = None
    rrf_k: Annotated[
        int,
        Meta(ge=1, le=10000, description="Hybrid only: the k constant of reciprocal rank fusion."),
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
            "the candidate pool, so a memory whose conversation holds other matches rises.",
        ),
    ] | None = None
    context_weight: Annotated[
        float, Meta(ge=0.0, le=1.0, description="With context_by: the share (default 0.2).")
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
        Literal["learned", "none"],
        Meta(
            description="learned: re-order the candidate pool by the shipped learned ranker "
            "(gradient-boosted trees over the fused, vector and keyword scores, their ranks, "
            "query-word coverage, time fit and neighbouring writes; see docs/search.md); the "
            "score is then the model's log-odds, with explain each feature's share. none: "
            "the first stage's order (the default). Not with group_by, diversity, "
            "recency_weight or importance_weight, which weigh scores as shares in [0, 1].",
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


class Health(Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)

"""The search service: one ``search()`` for every mode, read top to bottom.

A search (1) validates the request and compiles its filter, (2) ranks a
candidate pool by its mode: vector through ``VectorSearch`` (the planner picks
FAISS, an exact pass or pgvector), keyword through BM25 (``KeywordRanking``: the
held tenant's keyword index, else PostgreSQL), hybrid by fusing both,
(3) prefers memories whose time fits a time expression in the query
(``retrieval.temporal``), lets a memory's group lend it weight with ``context_by``,
re-orders the pool's first 50 by the learned ranker (``retrieval.ranker``; the
time preference then counts again on its probability) or its first hits by the
cross-encoder (``retrieval.cross_encoder``) with ``rerank``, and
rescores the pool by recency and importance when asked, (4) picks k by
maximal marginal relevance when ``diversity`` > 0, or the top k groups with
``group_by`` (``retrieval.grouping``), (5) cuts to k and ``min_score``, and (6)
tells its listeners (the event log). The pool is ``k``
unless a later step re-ranks, then ``max(3k, rerank_candidates)`` capped at 1,000
(``3k * group_size`` in place of ``3k`` with ``group_by``); with ``context_by``,
hybrid's pool is every candidate either side found, so that each conversation
lends what both sides saw of it.
Hybrid ranks ``max(3k, hybrid_candidates)`` on each side whatever the options.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import anyio
import anyio.to_thread
import numpy as np
from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.embedding.embeddings import CachedEmbedder
from memory_service.errors import FieldError, InvalidInput
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.replicas import primary_reads
from memory_service.infra.search_gate import TenantGate
from memory_service.memories import repository as repo
from memory_service.memories.filters import CompiledFilter, compile_filter
from memory_service.memories.models import SearchHit, SearchRequest, SearchResult
from memory_service.memories.validation import MemoryValidator
from memory_service.retrieval.cross_encoder import CrossEncoderRanker, unavailable_reason
from memory_service.retrieval.feedback import FEEDBACK_DOCS, expand_query, rocchio
from memory_service.retrieval.grouping import add_context, group_hits
from memory_service.retrieval.hybrid import fuse
from memory_service.retrieval.keyword import require_query_text
from memory_service.retrieval.mmr import runs_inline, select_diverse
from memory_service.retrieval.options import RetrievalOptions, default_options, parse_options
from memory_service.retrieval.ranker import MIN_POOL as LEARNED_MIN_POOL
from memory_service.retrieval.ranker import WINDOW as LEARNED_WINDOW
from memory_service.retrieval.ranker import LearnedRanker
from memory_service.retrieval.scoring import rescore
from memory_service.retrieval.temporal import parse_time_intent, prefer_time
from memory_service.search.keyword import KeywordRanking
from memory_service.search.vector import VectorSearch

MAX_POOL = 1000
# the learned ranker's features read its candidates' text at about 20 ns a character:
# up to this many (under a millisecond) on the event loop, longer texts in a thread
LEARNED_INLINE_CHARS = 40_000
MODES = ("vector", "keyword", "hybrid")
# (tenant_id, request, result) after a search answered
SearchListener = Callable[[uuid.UUID, SearchRequest, SearchResult], Awaitable[None]]
Ranked = tuple[list[SearchHit], str]


def hybrid_depth(k: int, candidates: int) -> int:
    """How many memories each side of hybrid ranks before fusion.

    Only ``k`` and the configured count decide it: re-ranking options take their pool
    from the fused list, so an option that changes no score (a weight of 0, equal
    importances) never changes which memories the fusion saw, nor the ranking.
    """
    return min(MAX_POOL, max(3 * k, candidates))


class SearchService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: Settings,
        embedder: CachedEmbedder,
        validator: MemoryValidator,
        vectors: VectorSearch,
        keyword: KeywordRanking,
        *,
        listeners: Sequence[SearchListener] = (),
        ranker: LearnedRanker | None = None,
        cross: CrossEncoderRanker | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.embedder = embedder
        self.validate = validator
        self.vectors = vectors
        self.keyword = keyword
        self.listeners = tuple(listeners)
        self.ranker = ranker if ranker is not None else LearnedRanker.load()
        self.cross = cross  # None unless MEMORY_CROSS_ENCODER_PATH names a readable model
        self.gate = TenantGate(settings.tenant_max_searches, settings.tenant_search_burst)

    def mode_for(self, request: SearchRequest) -> str:
        """The mode a request gets: its own, else the service's default ranking (hybrid
        unless configured otherwise), which needs query text; an embedding alone ranks
        by vector."""
        if request.mode:
            return request.mode
        if request.query is None or not request.query.strip():
            return "vector"
        return self.settings.search_default_mode

    @property
    def default_mode(self) -> str:
        return self.settings.search_default_mode

    async def search(self, tenant_id: uuid.UUID, request: SearchRequest) -> SearchResult:
        if not request.mode:
            mode = self.mode_for(request)
            options = default_options(request.options, mode == "hybrid")
            request = replace(request, mode=mode, options=options)
        async with self.gate.turn(tenant_id):  # a tenant's searches share the cores fairly
            if request.consistency == "strong":  # never a standby, whatever the caller allowed
                with primary_reads():
                    return await self._search(tenant_id, request)
            return await self._search(tenant_id, request)

    async def _search(self, tenant_id: uuid.UUID, request: SearchRequest) -> SearchResult:
        started = time.perf_counter()
        self.validate.check_search(request)
        flt = compile_filter(request.filter) if request.filter else None
        options = self._options(request)
        if options.rerank == "cross":
            self._check_cross(request)
        intent = None
        if request.query is not None and options.time_weight > 0.0:
            intent = parse_time_intent(request.query, datetime.now(UTC))
        pool_k = request.k
        if options.reranks or intent is not None:
            wanted = 3 * request.k * (options.group_by.size if options.group_by else 1)
            pool_k = min(MAX_POOL, max(wanted, self.settings.rerank_candidates))
        if request.mode == "hybrid" and options.context_by is not None:
            # the members ranked past rerank_candidates still count for their group
            depth = hybrid_depth(request.k, self.settings.hybrid_candidates)
            pool_k = min(MAX_POOL, max(pool_k, 2 * depth))
        if request.mode == "keyword":
            hits, strategy = await self._keyword(tenant_id, request, flt, pool_k)
        elif request.mode == "hybrid":
            hits, strategy = await self._hybrid(tenant_id, request, flt, options, pool_k)
        else:
            hits, strategy = await self._vector(tenant_id, request, flt, options, pool_k)
        if intent is not None:
            hits = prefer_time(hits, intent, options.time_weight)
            strategy += f"+time({intent.describe()})"
        if options.context_by is not None and options.context_weight > 0.0:
            hits = add_context(hits, options.context_by, options.context_weight)
            strategy += f"+context({'.'.join(options.context_by)})"
        if options.rerank == "learned" and len(hits) < LEARNED_MIN_POOL:
            options = replace(options, rerank=None)  # too few to weigh: the order stands
        if options.rerank == "learned" and request.query is not None:
            hits = await self._learned(request.query, hits, request.k, options)
            if intent is not None:
                # the model weighs a time fit lightly (few training questions name a
                # time): the query's time counts again, on its probability
                hits = prefer_time(hits, intent, options.time_weight, as_one=True)
            strategy += "+learned"
        if options.rerank == "cross" and self.cross is not None and request.query is not None:
            hits = await anyio.to_thread.run_sync(self.cross.rerank, request.query, hits)
            strategy += "+cross"
        if options.rescores:
            hits = await self._rescore(tenant_id, hits, options)
        if options.diversity > 0.0 and len(hits) > request.k:
            hits = await self._diversify(tenant_id, hits, request.k, options.diversity)
            strategy += "+mmr"
        groups = None
        if options.group_by is not None:
            if request.min_score is not None:
                hits = [h for h in hits if h.score >= request.min_score]
            groups = group_hits(hits, options.group_by, request.k)
            hits = [hit for group in groups for hit in group.hits]
            strategy += f"+group({options.group_by.name})"
        hits = hits[: request.k] if groups is None else hits
        if not options.explain:
            for hit in hits:
                hit.components = None
        if request.min_score is not None:
            hits = [h for h in hits if h.score >= request.min_score]
        took_ms = (time.perf_counter() - started) * 1000.0
        result = SearchResult(hits, took_ms, strategy, groups)
        for listener in self.listeners:
            await listener(tenant_id, request, result)
        return result

    def _options(self, request: SearchRequest) -> RetrievalOptions:
        if request.mode not in MODES:
            raise InvalidInput(
                f"search mode {request.mode!r} is not available",
                errors=[FieldError("mode", "unsupported mode")],
            )
        assert request.mode is not None  # set by search() first
        return parse_options(request.mode, request.options, self.settings)

    def _check_cross(self, request: SearchRequest) -> None:
        if self.cross is None:
            raise InvalidInput(
                unavailable_reason(self.settings),
                errors=[FieldError("rerank", "no cross-encoder model configured")],
            )
        if request.query is None or not request.query.strip():
            raise InvalidInput(
                "rerank 'cross' reads the query text: send a query",
                errors=[FieldError("query", "needed by rerank 'cross'")],
            )

    async def query_vector(self, tid: uuid.UUID, request: SearchRequest) -> np.ndarray:
        if request.embedding is not None:
            return self.validate.check_embedding(request.embedding)
        assert request.query is not None
        return await self.embedder.embed_query_async(request.query, owner=tid)

    # -- first stage: one per mode ---------------------------------------------------------
    async def _vector(
        self,
        tid: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        options: RetrievalOptions,
        pool_k: int,
    ) -> Ranked:
        query = await self.query_vector(tid, request)
        deep = replace(request, k=pool_k)
        with_vectors = options.diversity > 0.0  # MMR compares the candidates' embeddings
        result = await self.vectors.search(tid, deep, flt, query, with_vectors=with_vectors)
        for hit in result.results:
            hit.components = {"vector": hit.score}
        return result.results, result.strategy

    async def _keyword(
        self, tid: uuid.UUID, request: SearchRequest, flt: CompiledFilter | None, pool_k: int
    ) -> Ranked:
        return await self.keyword.search(tid, request, flt, pool_k)

    async def _hybrid(
        self,
        tid: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        options: RetrievalOptions,
        pool_k: int,
    ) -> Ranked:
        """Both sides, then the fusion; with ``feedback``, a second round shaped by the
        first one's best (``retrieval.feedback``)."""
        require_query_text(request)  # before embedding: the keyword side needs the text
        known = self.embedder.cached(request.query) if request.query is not None else None
        depth = hybrid_depth(request.k, self.settings.hybrid_candidates)
        deep = replace(request, k=depth)
        if options.feedback is None:
            fused, strategy, _ = await self._fuse_sides(tid, deep, flt, options, known, pool_k)
            return fused, strategy
        fused, strategy, query = await self._fuse_sides(tid, deep, flt, options, known, None)
        if fused:
            deep, query = await self._feedback(tid, deep, fused, options.feedback, query)
            fused, strategy, _ = await self._fuse_sides(tid, deep, flt, options, query, pool_k)
            strategy += f"+feedback({options.feedback})"
        return fused[:pool_k], strategy

    async def _fuse_sides(
        self,
        tid: uuid.UUID,
        deep: SearchRequest,
        flt: CompiledFilter | None,
        options: RetrievalOptions,
        known: np.ndarray | None,
        limit: int | None,
    ) -> tuple[list[SearchHit], str, np.ndarray]:
        """One round of both sides and the fusion (its first ``limit``), and the query
        vector it used. When that vector is at hand (cached) and the tenant is held, each
        side is a few hundred microseconds in this process and they run one after the
        other: two tasks and their hand-offs cost more than they overlap (measured on two
        cores). Otherwise they run side by side, the keyword side beside the model's
        embedding of the query and beside the database's answers."""
        with_vectors = options.diversity > 0.0
        vector: SearchResult | None = None
        keyword: list[SearchHit] = []
        keyword_strategy = ""
        query = known

        async def vector_side() -> None:
            nonlocal vector, query
            if query is None:
                query = await self.query_vector(tid, deep)
            vector = await self.vectors.search(tid, deep, flt, query, with_vectors=with_vectors)

        async def keyword_side() -> None:
            nonlocal keyword, keyword_strategy
            keyword, keyword_strategy = await self.keyword.search(tid, deep, flt, deep.k)

        if known is not None and self.vectors.holds(tid):
            await vector_side()
            await keyword_side()
        else:
            async with anyio.create_task_group() as group:
                group.start_soon(vector_side)
                group.start_soon(keyword_side)
        assert vector is not None and query is not None
        fused = fuse(vector.results, keyword, options, limit=limit)
        return fused, f"hybrid({vector.strategy}+{keyword_strategy})", query

    async def _feedback(
        self,
        tid: uuid.UUID,
        deep: SearchRequest,
        fused: list[SearchHit],
        kind: str,
        query: np.ndarray,
    ) -> tuple[SearchRequest, np.ndarray]:
        """The request and query vector of the second round (``retrieval.feedback``)."""
        best = fused[:FEEDBACK_DOCS]
        if kind in ("rm3", "both"):
            assert deep.query is not None
            deep = replace(deep, query=expand_query(deep.query, best))
        if kind in ("rocchio", "both"):
            async with wrap_db_errors(), self.pool.connection() as conn:
                rows = await repo.get_many(
                    conn, tid, [h.memory.id for h in best], with_embedding=True
                )
            found = [
                np.asarray(r.embedding, dtype=np.float32)
                for r in rows.values()
                if r.embedding is not None
            ]
            vectors = (
                np.stack([v / (float(np.linalg.norm(v)) or 1.0) for v in found])
                if found
                else np.zeros((0, len(query)), dtype=np.float32)
            )
            query = rocchio(query, vectors)
        return deep, query

    # -- re-ranking ------------------------------------------------------------------------
    async def _learned(
        self, query: str, hits: list[SearchHit], k: int, options: RetrievalOptions
    ) -> list[SearchHit]:
        """The first ``max(k, WINDOW)`` candidates re-ordered by the learned ranker (the
        whole pool when a later step re-weighs or picks from it); the rest are dropped.
        Its features read each candidate's text: on the event loop unless that is long."""
        later = options.rescores or options.diversity > 0.0 or options.group_by is not None
        head = hits if later else hits[: max(k, LEARNED_WINDOW)]
        text = sum(len(h.memory.content) + len(h.memory.context or "") for h in head)
        if text <= LEARNED_INLINE_CHARS:
            return self.ranker.rerank(query, head, explain=options.explain)
        ranked: list[SearchHit] = await anyio.to_thread.run_sync(
            partial(self.ranker.rerank, query, head, explain=options.explain)
        )
        return ranked

    async def _rescore(
        self, tid: uuid.UUID, hits: list[SearchHit], options: RetrievalOptions
    ) -> list[SearchHit]:
        seen: dict[str, datetime] = {}
        if options.recency_weight > 0.0 and hits:
            async with wrap_db_errors(), self.pool.connection() as conn:
                seen = await repo.last_seen(conn, tid, [h.memory.id for h in hits])
        rescore(hits, options, datetime.now(UTC), seen)
        return sorted(hits, key=lambda h: (-h.score, h.memory.seq))

    async def _diversify(
        self, tid: uuid.UUID, hits: list[SearchHit], k: int, diversity: float
    ) -> list[SearchHit]:
        vectors = await self.vectors.embeddings(tid, hits, self.embedder.dimension)
        if runs_inline(len(hits)):
            return select_diverse(hits, vectors, k, diversity)
        selected: list[SearchHit] = await anyio.to_thread.run_sync(
            select_diverse, hits, vectors, k, diversity
        )
        return selected

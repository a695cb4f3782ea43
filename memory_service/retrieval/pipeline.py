"""The search pipeline of every mode: first-stage ranking, rescoring, diversity, cut.

A search runs in up to four steps. (1) The mode ranks a candidate pool: vector
mode through ``MemoryService.vector_search`` (whatever index answers it), keyword
mode through BM25, hybrid mode by fusing both. The pool is ``k`` unless a later
step re-ranks, then ``max(3k, rerank_candidates)`` capped at 1,000. (2) Recency
and importance rescore the pool (``scoring``). (3) ``diversity`` > 0 picks k by
maximal marginal relevance (``mmr``). (4) The top k are returned, with their
score components when ``explain`` is set. ``install`` registers the modes.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import numpy as np

from memory_service.db import wrap_db_errors
from memory_service.memories import repository as repo
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import SearchHit, SearchRequest, SearchResult
from memory_service.memories.service import MemoryService, SearchBackend
from memory_service.retrieval import storage
from memory_service.retrieval.dedupe import SemanticDedupe
from memory_service.retrieval.hybrid import fuse
from memory_service.retrieval.keyword import KeywordSearch, require_query_text
from memory_service.retrieval.mmr import select_diverse
from memory_service.retrieval.options import RetrievalOptions, parse_options
from memory_service.retrieval.scoring import rescore
from memory_service.retrieval.settings import RetrievalSettingsService

if TYPE_CHECKING:
    from memory_service.runtime import Runtime

MAX_POOL = 1000
MODES = ("vector", "keyword", "hybrid")


class RetrievalPipeline:
    def __init__(self, memories: MemoryService) -> None:
        self.memories = memories
        self.settings = memories.settings
        self.keyword = KeywordSearch(memories.pool, memories.settings)

    def backend(self, mode: str) -> SearchBackend:
        async def run(
            tid: uuid.UUID, request: SearchRequest, flt: CompiledFilter | None
        ) -> SearchResult:
            return await self.search(mode, tid, request, flt)

        return run

    async def search(
        self, mode: str, tid: uuid.UUID, request: SearchRequest, flt: CompiledFilter | None
    ) -> SearchResult:
        options = parse_options(mode, request.options, self.settings)
        pool_k = request.k
        if options.reranks:
            pool_k = min(MAX_POOL, max(3 * request.k, self.settings.rerank_candidates))
        hits, strategy = await self._rank(mode, tid, request, flt, options, pool_k)
        if options.rescores:
            seen: dict[str, datetime] = {}
            if options.recency_weight > 0.0 and hits:
                async with wrap_db_errors(), self.memories.pool.connection() as conn:
                    seen = await storage.last_seen(conn, tid, [h.memory.id for h in hits])
            rescore(hits, options, datetime.now(UTC), seen)
            hits.sort(key=lambda h: (-h.score, h.memory.seq))
        if options.diversity > 0.0 and len(hits) > request.k:
            vectors = await self._embeddings(tid, hits)
            hits = await anyio.to_thread.run_sync(
                select_diverse, hits, vectors, request.k, options.diversity
            )
            strategy += "+mmr"
        hits = hits[: request.k]
        if not options.explain:
            for hit in hits:
                hit.components = None
        return SearchResult(hits, 0.0, strategy)

    async def _rank(
        self,
        mode: str,
        tid: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        options: RetrievalOptions,
        pool_k: int,
    ) -> tuple[list[SearchHit], str]:
        if mode == "keyword":
            return await self.keyword.search(tid, request, flt, pool_k), "keyword-bm25"
        if mode == "hybrid":
            require_query_text(request)  # before embedding: the keyword side needs the text
        query = await self.memories.query_vector(request)
        if mode == "vector":
            result = await self.memories.vector_search(tid, replace(request, k=pool_k), flt, query)
            for hit in result.results:
                hit.components = {"vector": hit.score}
            return result.results, result.strategy
        depth = min(MAX_POOL, max(pool_k, self.settings.hybrid_candidates))
        deep = replace(request, k=depth)
        outcome: dict[str, object] = {}

        async def vector_side() -> None:
            outcome["vector"] = await self.memories.vector_search(tid, deep, flt, query)

        async def keyword_side() -> None:
            outcome["keyword"] = await self.keyword.search(tid, deep, flt, depth)

        async with anyio.create_task_group() as group:
            group.start_soon(vector_side)
            group.start_soon(keyword_side)
        vector = outcome["vector"]
        keyword = outcome["keyword"]
        assert isinstance(vector, SearchResult) and isinstance(keyword, list)
        fused = fuse(vector.results, keyword, options)
        return fused[:pool_k], f"hybrid({vector.strategy}+keyword-bm25)"

    async def _embeddings(self, tid: uuid.UUID, hits: list[SearchHit]) -> np.ndarray:
        async with wrap_db_errors(), self.memories.pool.connection() as conn:
            rows = await repo.get_many(conn, tid, [h.memory.id for h in hits], with_embedding=True)
        dim = self.memories.dimension
        out = np.zeros((len(hits), dim), dtype=np.float32)
        for i, hit in enumerate(hits):
            row = rows.get(hit.memory.id)
            if row is not None and row.embedding is not None:
                vector = np.asarray(row.embedding, dtype=np.float32)
                out[i] = vector / (float(np.linalg.norm(vector)) or 1.0)
        return out


async def install(runtime: Runtime) -> None:
    """Register the search modes, semantic dedupe and the tenant settings service."""
    pipeline = RetrievalPipeline(runtime.memories)
    await pipeline.keyword.check_config()
    for mode in MODES:
        runtime.memories.search_backends[mode] = pipeline.backend(mode)
    dedupe = SemanticDedupe(runtime.settings)
    runtime.memories.semantic_dedupe = dedupe
    runtime.extras["retrieval"] = pipeline
    runtime.extras["retrieval_settings"] = RetrievalSettingsService(runtime.pool, runtime.settings)

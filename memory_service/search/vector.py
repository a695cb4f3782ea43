"""Vector search with exactly k results: the in-process FAISS path, else pgvector.

``VectorSearch.search`` first asks the hot path (``HotSearch``, when this
process holds the tenant's FAISS index and the planner finds a cheap exact-k
plan). Otherwise PostgreSQL answers: when few rows match the scope and filter,
an exact scan is both cheaper and exact; else the HNSW index answers, and a
short answer (pgvector filters after the index scan) falls back to the exact
scan. The SQL lives in ``memories.repository``.
"""

from __future__ import annotations

import uuid

import numpy as np
from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.infra.db import wrap_db_errors
from memory_service.memories import repository as repo
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import SearchHit, SearchRequest, SearchResult
from memory_service.search.accelerator import HotSearch


class VectorSearch:
    def __init__(
        self, pool: AsyncConnectionPool, settings: Settings, hot: HotSearch | None
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.hot = hot

    async def search(
        self,
        tid: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        query: np.ndarray,
    ) -> SearchResult:
        if self.hot is not None:
            answered = await self.hot.search(tid, request, flt, query)
            if answered is not None:
                return answered
        return await self.in_database(tid, request, flt, query)

    async def in_database(
        self,
        tid: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        query: np.ndarray,
    ) -> SearchResult:
        threshold = self.settings.exact_search_threshold
        scope, k = request.scope, request.k
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            matching = await repo.count_matching(conn, tid, scope, flt, cap=threshold + 1)
            exact = matching <= threshold
            ef = self.settings.pgvector_ef_search
            rows = await repo.vector_search(
                conn, tid, scope, flt, query, k, exact=exact, ef_search=ef
            )
            strategy = "exact" if exact else "pgvector"
            if not exact and len(rows) < k:
                rows = await repo.vector_search(
                    conn, tid, scope, flt, query, k, exact=True, ef_search=0
                )
                strategy = "pgvector+exact"
        return SearchResult([SearchHit(memory, score) for memory, score in rows], 0.0, strategy)

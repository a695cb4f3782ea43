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

    def holds(self, tid: uuid.UUID) -> bool:
        """Whether this process holds the tenant's index, loaded (its searches stay here)."""
        return self.hot is not None and self.hot.holds(tid)

    async def search(
        self,
        tid: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        query: np.ndarray,
        *,
        with_vectors: bool = False,
    ) -> SearchResult:
        """``with_vectors``: PostgreSQL's hits carry their embeddings (the hot path's are
        in its index already; see ``embeddings``)."""
        if self.hot is not None:
            answered = await self.hot.search(tid, request, flt, query)
            if answered is not None:
                return answered
        return await self.in_database(tid, request, flt, query, with_vectors=with_vectors)

    async def in_database(
        self,
        tid: uuid.UUID,
        request: SearchRequest,
        flt: CompiledFilter | None,
        query: np.ndarray,
        *,
        with_vectors: bool = False,
    ) -> SearchResult:
        threshold = self.settings.exact_search_threshold
        scope, k = request.scope, request.k
        async with wrap_db_errors(), self.pool.connection() as conn, conn.transaction():
            matching = await repo.count_matching(conn, tid, scope, flt, cap=threshold + 1)
            exact = matching <= threshold
            ef = self.settings.pgvector_ef_search
            rows = await repo.vector_search(
                conn, tid, scope, flt, query, k, exact=exact, ef_search=ef,
                with_embedding=with_vectors,
            )  # fmt: skip
            strategy = "exact" if exact else "pgvector"
            if not exact and len(rows) < k:
                rows = await repo.vector_search(
                    conn, tid, scope, flt, query, k, exact=True, ef_search=0,
                    with_embedding=with_vectors,
                )  # fmt: skip
                strategy = "pgvector+exact"
        return SearchResult([SearchHit(memory, score) for memory, score in rows], 0.0, strategy)

    async def embeddings(
        self, tid: uuid.UUID, hits: list[SearchHit], dimension: int
    ) -> np.ndarray:
        """Unit vectors of ``hits``, row i of hit i, taken where they already are: on the
        hit (PostgreSQL returned it with the row), in the held tenant's FAISS index, and
        only for the rest (a hit of another path, a row another process wrote a moment
        ago) from the database, in one statement. A row gone since has zeros."""
        vectors = np.zeros((len(hits), dimension), dtype=np.float32)
        missing: dict[int, int] = {}  # seq -> row of ``vectors``
        for i, hit in enumerate(hits):
            if hit.memory.embedding is not None:
                vectors[i] = hit.memory.embedding
            else:
                missing[hit.memory.seq] = i
        if missing and self.hot is not None:
            found = await self.hot.vectors_of(tid, list(missing))
            if found is not None:
                for seq, vector in zip(found[0].tolist(), found[1], strict=True):
                    vectors[missing.pop(seq)] = vector
        if missing:
            async with wrap_db_errors(), self.pool.connection() as conn:
                stored = await repo.embeddings_by_seq(conn, tid, list(missing))
            for seq, vector in stored.items():
                vectors[missing[seq]] = vector
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0.0, norms, 1.0)

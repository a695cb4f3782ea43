"""Keyword search: BM25 over PostgreSQL full-text search, in two fields.

The query is split into lexemes twice, by the configured text-search
configuration (default 'english': stemmed, stop words dropped) and by 'simple'
(lower-cased words in any language). A memory matches when it holds any of
them; it is ranked by BM25 summed over both fields, the 'simple' field weighted
by ``keyword_simple_weight``. The score is BM25 divided by the best BM25 of the
query, so the top match scores 1. Keyword mode returns exactly ``k`` results
when at least ``k`` memories match the scope, the filter and the query text;
memories sharing no word with the query are never returned.
"""

from __future__ import annotations

import uuid

from psycopg_pool import AsyncConnectionPool

from memory_service.config import Settings
from memory_service.errors import FieldError, InvalidInput
from memory_service.infra.db import wrap_db_errors
from memory_service.memories import repository as repo
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import SearchHit, SearchRequest
from memory_service.memories.rows import Bm25Params
from memory_service.retrieval import storage


def require_query_text(request: SearchRequest) -> str:
    if request.query is None:
        raise InvalidInput(
            f"mode {request.mode!r} needs the query text, not only an embedding",
            errors=[FieldError("query", f"required for mode {request.mode}")],
        )
    return request.query


class KeywordSearch:
    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.pool = pool
        self.config = settings.keyword_text_search_config
        self.params = Bm25Params(
            k1=settings.bm25_k1,
            b=settings.bm25_b,
            simple_weight=settings.keyword_simple_weight,
            stats_cap=settings.keyword_stats_rows,
        )

    async def check_config(self) -> None:
        """Fail at start-up, not per request, when the configuration does not exist."""
        async with wrap_db_errors(), self.pool.connection() as conn:
            if not await storage.check_text_search_config(conn, self.config):
                raise RuntimeError(
                    f"MEMORY_KEYWORD_TEXT_SEARCH_CONFIG: PostgreSQL has no text-search "
                    f"configuration {self.config!r}"
                )

    async def search(
        self, tid: uuid.UUID, request: SearchRequest, flt: CompiledFilter | None, k: int
    ) -> list[SearchHit]:
        query = require_query_text(request)
        async with wrap_db_errors(), self.pool.connection() as conn:
            lexemes = await storage.query_lexemes(conn, self.config, query)
            rows = await repo.keyword_search(
                conn, tid, request.scope, flt, self.config, lexemes, k, self.params
            )
        if not rows:
            return []
        best = rows[0][1] or 1.0
        return [
            SearchHit(memory, score / best, {"keyword": score / best}) for memory, score in rows
        ]

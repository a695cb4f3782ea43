"""Memories as they stood at a past moment, read from ``memory_versions``.

A trigger on ``memories`` (migration 0006) keeps every version of every memory
with its scope, metadata, importance, expiry and embedding, valid from the
transaction that wrote it until the one that replaced or deleted it. This
module owns that table's SQL and answers three reads ``as_of`` a moment: one
memory, a listing, and a vector search. A memory deleted later is still found,
one created later is absent, an updated one has its old content and embedding,
and one that had expired by then is absent; one that was purged is absent from
every moment (``erase_versions``). The search ranks every version
that matched at that moment exactly (no index is kept for the past), so it
returns exactly k results whenever k matched; its strategy is ``"as_of-exact"``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from memory_service.embedding.embeddings import CachedEmbedder
from memory_service.errors import FieldError, InvalidInput, NotFound
from memory_service.infra.db import wrap_db_errors
from memory_service.infra.pagination import CursorCodec, Page
from memory_service.memories.filters import CompiledFilter, compile_filter
from memory_service.memories.models import (
    Memory,
    Scope,
    SearchHit,
    SearchRequest,
    SearchResult,
)
from memory_service.memories.repository import Conn, row_to_memory
from memory_service.memories.repository.base import scope_clause
from memory_service.memories.validation import MemoryValidator
from memory_service.records.tenants import parse_uuid

MAX_LIST_LIMIT = 1000
COLUMNS = sql.SQL(
    "v.memory_seq AS seq, v.memory_id AS id, v.content, v.user_id, v.agent_id, v.run_id, "
    "v.namespace, v.metadata, v.importance, v.created_at, v.updated_at, v.expires_at, "
    "v.version, v.embedding"
)
# one version per memory: the newest that was valid at the moment (two writers racing
# on one memory can leave overlapping intervals; the later version wins)
AS_OF = sql.SQL(
    "SELECT DISTINCT ON (v.memory_id) {cols} FROM memory_versions v "
    "WHERE v.tenant_id = %s AND v.valid_from <= %s AND (v.valid_to IS NULL OR v.valid_to > %s) "
    "AND (v.expires_at IS NULL OR v.expires_at > %s) AND {scope} AND {filter} "
    "ORDER BY v.memory_id, v.version DESC"
)


def check_as_of(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput(
            "as_of needs a time zone (RFC 3339)", errors=[FieldError("as_of", "RFC 3339 with zone")]
        )
    return value


class MemoriesAsOf:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        embedder: CachedEmbedder,
        validate: MemoryValidator,
        cursors: CursorCodec,
    ) -> None:
        self.pool = pool
        self.embedder = embedder
        self.validate = validate
        self.cursors = cursors

    async def get(
        self, tenant_id: uuid.UUID, memory_id: str, as_of: datetime, *, with_embedding: bool = False
    ) -> Memory:
        mid = parse_uuid(memory_id, "id")
        params: list[Any] = []
        query = _as_of_query(tenant_id, check_as_of(as_of), Scope(), None, params)
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows = await _fetch(
                conn, sql.SQL("SELECT * FROM ({}) AS a WHERE a.id = %s").format(query), [*params, mid]
            )
        if not rows:
            raise NotFound(f"memory {memory_id} not found as of {as_of.isoformat()}")
        return row_to_memory(rows[0], with_embedding=with_embedding)

    async def list_memories(
        self,
        tenant_id: uuid.UUID,
        scope: Scope,
        as_of: datetime,
        *,
        limit: int = 50,
        cursor: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> Page[Memory]:
        """Oldest first, like the live listing."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(
                f"limit must be between 1 and {MAX_LIST_LIMIT}", errors=[FieldError("limit", "range")]
            )
        self.validate.check_scope(scope)
        flt = compile_filter(filter, table_alias="v") if filter else None
        after = 0
        if cursor:
            position = self.cursors.decode(cursor, "memories-as-of", tenant_id)
            if not isinstance(position, int):
                raise InvalidInput("cursor is not valid for this listing", errors=[FieldError("cursor", "malformed")])
            after = position
        params: list[Any] = []
        query = _as_of_query(tenant_id, check_as_of(as_of), scope, flt, params)
        statement = sql.SQL("SELECT * FROM ({}) AS a WHERE a.seq > %s ORDER BY a.seq LIMIT %s")
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows = await _fetch(conn, statement.format(query), [*params, after, limit + 1])
        items = [row_to_memory(r) for r in rows[:limit]]
        more = len(rows) > limit
        token = self.cursors.encode("memories-as-of", tenant_id, items[-1].seq) if more else None
        return Page(items, token)

    async def search(self, tenant_id: uuid.UUID, request: SearchRequest, as_of: datetime) -> SearchResult:
        """Exact cosine ranking over the versions that were live at ``as_of``."""
        started = time.perf_counter()
        self.validate.check_search(request)
        by_vector = request.mode in (None, "vector")  # a search naming no mode ranks so too
        if not by_vector or request.options:
            raise InvalidInput(
                "a search with as_of ranks by vector similarity only (mode vector, no "
                "re-ranking options)",
                errors=[FieldError("as_of" if by_vector else "mode", "vector only")],
            )
        flt = compile_filter(request.filter, table_alias="v") if request.filter else None
        if request.embedding is not None:
            vector = self.validate.check_embedding(request.embedding)
        else:
            assert request.query is not None
            vector = await self.embedder.embed_query_async(request.query, owner=tenant_id)
        params: list[Any] = []
        query = _as_of_query(tenant_id, check_as_of(as_of), request.scope, flt, params)
        statement = sql.SQL(
            "SELECT a.*, a.embedding <=> %s AS distance FROM ({}) AS a "
            "ORDER BY distance, a.seq LIMIT %s"
        ).format(query)
        async with wrap_db_errors(), self.pool.connection() as conn:
            rows = await _fetch(conn, statement, [vector, *params, request.k])
        hits = [SearchHit(row_to_memory(r), 1.0 - float(r["distance"])) for r in rows]
        if request.min_score is not None:
            hits = [h for h in hits if h.score >= request.min_score]
        return SearchResult(hits, (time.perf_counter() - started) * 1000.0, "as_of-exact")


def _as_of_query(
    tid: uuid.UUID, moment: datetime, scope: Scope, flt: CompiledFilter | None, params: list[Any]
) -> sql.Composed:
    params += [tid, moment, moment, moment]
    scope_sql = scope_clause(scope, params, alias="v")
    if flt is not None:
        params += flt.params
    return AS_OF.format(
        cols=COLUMNS, scope=scope_sql, filter=flt.clause if flt is not None else sql.SQL("TRUE")
    )


async def _fetch(conn: Conn, statement: sql.Composed, params: list[Any]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(statement, params)
    return await cur.fetchall()


async def erase_versions(
    conn: Conn, tenant_id: uuid.UUID, memory_ids: Sequence[str]
) -> tuple[dict[str, int], set[str]]:
    """Purge: drop every version of ``memory_ids`` (content and embedding), so no read of
    the past finds them. Returns memory id -> seq (its FAISS and keyword id) of those
    that had versions, and every content they ever had (what caches must forget)."""
    cur = await conn.execute(
        "DELETE FROM memory_versions WHERE tenant_id = %s AND memory_id = ANY(%s::uuid[]) "
        "RETURNING memory_id::text, memory_seq, content",
        (tenant_id, list(memory_ids)),
    )
    rows = await cur.fetchall()
    return {r[0]: int(r[1]) for r in rows}, {r[2] for r in rows}

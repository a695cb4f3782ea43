"""SQL of the ``memories`` table: the only package that has it.

Every function takes an open async connection (the caller owns the transaction)
and a tenant id, and confines each statement to that tenant. Rows that have
expired are invisible to every read. CRUD, listing, the pgvector and BM25
searches, the dedupe look-ups and the rows named by key live in this module; the
columns and the clause every read shares live in ``base.py``, and what the
in-process indexes load and re-check in ``held.py``; both are re-exported here, so
callers see one repository. The longer statements sit by name in
``memories/queries.sql``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.memories import staging
from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import Memory, Scope
from memory_service.memories.repository.base import (
    COLUMNS,
    COPY_COLUMNS,
    TABLE,
    VISIBLE,
    Conn,
    fetch_rows,
    query,
    scope_clause,
    where_clause,
)
from memory_service.memories.repository.held import (
    changed_rows,
    current_rows,
    current_versions,
    get_many_by_seq,
    matching_seqs,
    stream_tenant_rows,
    tenant_size,
    tenant_sizes,
)
from memory_service.memories.rows import Bm25Params, any_of, row_to_memory, to_numpy

# the text-search configuration whose tsvector is stored; any other one is computed per row
STORED_CONFIG = "english"
_DOCUMENT_TEXT = sql.SQL("m.content || ' ' || coalesce(m.context, '')")


def _insert_params(tenant_id: uuid.UUID, item: dict[str, Any]) -> tuple[Any, ...]:
    s: Scope = item["scope"]
    head = (tenant_id, item["content"], item["content_hash"])
    scope = (s.user_id, s.agent_id, s.run_id, s.namespace)
    tail = (Jsonb(item["metadata"]), item["importance"], item["embedding"], item["expires_at"])
    return (*head, *scope, *tail, item.get("context"), item.get("key"))


async def purge_expired_duplicates(conn: Conn, tenant_id: uuid.UUID, hashes: list[bytes]) -> None:
    """Expired rows are invisible; remove the ones that would block a re-add."""
    await conn.execute(query("purge_expired_duplicates"), (tenant_id, hashes))


async def insert_many(
    conn: Conn, tenant_id: uuid.UUID, items: Sequence[dict[str, Any]], *, indexed: bool = True
) -> list[Memory | None]:
    """Insert rows in one pipelined round; ``None`` where a live duplicate exists. Rows
    not ``indexed`` wait for the index worker to put them into pgvector's HNSW graph."""
    async with conn.cursor(row_factory=dict_row) as cur:
        params = [(*_insert_params(tenant_id, item), indexed) for item in items]
        await cur.executemany(query("insert").format(cols=COLUMNS), params, returning=True)
        out: list[Memory | None] = []
        while True:
            row = await cur.fetchone()
            out.append(row_to_memory(row) if row else None)
            if not cur.nextset():
                break
    return out


async def insert_staged(
    conn: Conn, tenant_id: uuid.UUID, items: Sequence[dict[str, Any]], *, indexed: bool = True
) -> list[Memory | None]:
    """``insert_many`` for a batch: the rows travel by ``COPY`` through the staging table."""
    ids = await staging.stage(conn, items)
    rows = await fetch_rows(conn, query("insert_staged").format(cols=COLUMNS), (tenant_id, indexed))
    inserted = {r["id"]: row_to_memory(r) for r in rows}
    return [inserted.get(memory_id) for memory_id in ids]


async def find_duplicate(
    conn: Conn, tenant_id: uuid.UUID, content_hash: bytes, scope: Scope, metadata: dict[str, Any]
) -> Memory | None:
    """The live memory with this content, scope and metadata (the dedupe index's key)."""
    scoped = (scope.user_id, scope.agent_id, scope.run_id, scope.namespace)
    statement = query("find_duplicate").format(cols=COLUMNS)
    rows = await fetch_rows(conn, statement, (tenant_id, content_hash, *scoped, Jsonb(metadata)))
    return row_to_memory(rows[0]) if rows else None


async def get(
    conn: Conn, tenant_id: uuid.UUID, memory_id: uuid.UUID, *,
    with_embedding: bool = False, for_update: bool = False,
) -> Memory | None:
    cols = COLUMNS + sql.SQL(", m.embedding") if with_embedding else COLUMNS
    lock = sql.SQL(" FOR UPDATE") if for_update else sql.SQL("")
    statement = sql.SQL("SELECT {} FROM memories m WHERE m.tenant_id = %s AND m.id = %s AND {}{}")
    rows = await fetch_rows(conn, statement.format(cols, VISIBLE, lock), (tenant_id, memory_id))
    return row_to_memory(rows[0], with_embedding=with_embedding) if rows else None


async def get_many(
    conn: Conn, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID | str], *,
    scope: Scope | None = None, flt: CompiledFilter | None = None, with_embedding: bool = False,
) -> dict[str, Memory]:
    """Visible rows among ``ids`` that also match scope and filter (re-check after an index)."""
    params: list[Any] = []
    where = where_clause(tenant_id, scope or Scope(), flt, params)
    params.append([str(i) for i in ids])
    cols = COLUMNS + sql.SQL(", m.embedding") if with_embedding else COLUMNS
    statement = sql.SQL("SELECT {} FROM memories m WHERE {} AND m.id = ANY(%s::uuid[])")
    rows = await fetch_rows(conn, statement.format(cols, where), params)
    return {str(r["id"]): row_to_memory(r, with_embedding=with_embedding) for r in rows}


async def update(
    conn: Conn, tenant_id: uuid.UUID, memory_id: uuid.UUID, changes: dict[str, Any]
) -> Memory:
    sets = [sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changes]
    params = [Jsonb(v) if name == "metadata" else v for name, v in changes.items()]
    statement = query("update").format(sets=sql.SQL(", ").join(sets), cols=COLUMNS)
    rows = await fetch_rows(conn, statement, [*params, tenant_id, memory_id])
    assert rows, "caller holds the row lock"
    return row_to_memory(rows[0])


async def delete(
    conn: Conn, tenant_id: uuid.UUID, memory_id: uuid.UUID, *, expired_too: bool = False
) -> bool:
    """Delete a live memory, or with ``expired_too`` also one whose expiry has passed."""
    visible = sql.SQL("TRUE") if expired_too else VISIBLE
    cur = await conn.execute(query("delete").format(visible=visible), (tenant_id, memory_id))
    return await cur.fetchone() is not None


async def delete_scope(conn: Conn, tenant_id: uuid.UUID, scope: Scope) -> list[str]:
    params: list[Any] = [tenant_id]
    clause = scope_clause(scope, params)
    statement = sql.SQL("DELETE FROM memories m WHERE m.tenant_id = %s AND {} RETURNING m.id")
    cur = await conn.execute(statement.format(clause), params)
    return [str(r[0]) for r in await cur.fetchall()]


async def list_page(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None,
    after_seq: int, limit: int,
) -> list[Memory]:
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    params += [after_seq, limit]
    statement = sql.SQL("SELECT {} FROM memories m WHERE {} AND m.seq > %s ORDER BY m.seq LIMIT %s")
    return [row_to_memory(r) for r in await fetch_rows(conn, statement.format(COLUMNS, where), params)]


async def count_matching(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None, cap: int
) -> int:
    """How many visible rows match, counting no further than ``cap``."""
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    params.append(cap)
    statement = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM memories m WHERE {} LIMIT %s) AS c")
    cur = await conn.execute(statement.format(where), params)
    return int((await cur.fetchone() or (0,))[0])


async def vector_search(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None,
    query_vector: np.ndarray, k: int, *, exact: bool, ef_search: int,
    with_embedding: bool = False,
) -> list[tuple[Memory, float]]:
    """Nearest visible rows by cosine distance: ``exact`` ranks every matching row, else
    the HNSW index answers (filtered after its scan, so it may return fewer than ``k``)
    beside an exact ranking of the matching rows not yet in the index. With
    ``with_embedding`` each memory carries its embedding, from the same statement."""
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    cols = COLUMNS + sql.SQL(", m.embedding") if with_embedding else COLUMNS
    if not exact:
        # SET does not take bind parameters; ef_search is an int we clamp ourselves
        ef = max(1, min(1000, int(max(ef_search, k))))
        await conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef)))
        statement = query("vector_hnsw").format(cols=cols, where=where)
        graph = [query_vector, *params, query_vector, k]
        all_params = [*graph, query_vector, *params, k, k]
    else:
        statement = query("vector_exact").format(cols=cols, where=where)
        all_params = [query_vector, *params, k]
    rows = await fetch_rows(conn, statement, all_params, binary=with_embedding)
    return [
        (row_to_memory(r, with_embedding=with_embedding), 1.0 - float(r["distance"])) for r in rows
    ]


async def embeddings_by_seq(
    conn: Conn, tenant_id: uuid.UUID, memory_seqs: Sequence[int]
) -> dict[int, np.ndarray]:
    """seq -> embedding of the rows among ``memory_seqs`` that still exist."""
    statement = sql.SQL(
        "SELECT m.seq, m.embedding FROM memories m WHERE m.tenant_id = %s AND m.seq = ANY(%s)"
    )
    rows = await fetch_rows(conn, statement, (tenant_id, list(memory_seqs)), binary=True)
    return {int(r["seq"]): to_numpy(r["embedding"]) for r in rows}


async def index_backlog(conn: Conn, limit: int, skip: Sequence[uuid.UUID] = ()) -> int:
    """Put up to ``limit`` rows waiting for pgvector's HNSW graph into it, none of the
    tenants in ``skip``; how many."""
    cur = await conn.execute(query("index_backlog"), (list(skip), limit))
    return cur.rowcount


async def backlog_span(conn: Conn, skip: Sequence[uuid.UUID] = ()) -> tuple[int, int] | None:
    """(oldest, newest) seq of the rows waiting for pgvector's HNSW graph, outside the
    tenants in ``skip``; None: none."""
    cur = await conn.execute(
        "SELECT min(seq), max(seq) FROM memories WHERE NOT indexed AND tenant_id <> ALL(%s::uuid[])",
        (list(skip),),
    )
    row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row and row[0] is not None else None


# -- keyword ranking (BM25 over the full-text columns of migration 0004) ------------------
def _language_field(config: str) -> sql.Composable:
    if config == STORED_CONFIG:
        return sql.SQL("m.fts_english")
    return sql.SQL("to_tsvector({}::regconfig, {})").format(sql.Literal(config), _DOCUMENT_TEXT)


async def keyword_search(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None, config: str,
    lexemes: tuple[list[str], list[str]], k: int, params: Bm25Params,
) -> list[tuple[Memory, float]]:
    """Rows matching any query lexeme, ranked by BM25 summed over both fields: document
    frequencies from the candidates, corpus size and mean length from up to ``stats_cap``
    visible rows of the scope and filter, lengths in distinct lexemes (as tsvector keeps)."""
    language, plain = lexemes
    if not language and not plain:
        return []
    field = _language_field(config)
    cand_params: list[Any] = []
    cand_where = where_clause(tenant_id, scope, flt, cand_params)
    stats_params: list[Any] = []
    stats_where = where_clause(tenant_id, scope, flt, stats_params)
    statement = query("keyword_bm25").format(
        field=field, cand_where=cand_where, stats_where=stats_where, cols=COLUMNS
    )
    matches = [any_of(language) or "''", any_of(plain) or "''"]
    weights = [params.simple_weight, params.k1, params.k1, params.b, params.b]
    all_params = [*cand_params, *matches, *stats_params, params.stats_cap, language, plain]
    all_params += [*weights, k]
    rows = await fetch_rows(conn, statement, all_params)
    return [(row_to_memory(r), float(r["score"])) for r in rows]


async def last_seen(conn: Conn, tenant_id: uuid.UUID, ids: Sequence[str]) -> dict[str, datetime]:
    """``last_seen_at`` of the rows among ``ids`` that have one."""
    cur = await conn.execute(query("last_seen"), (tenant_id, list(ids)))
    return {str(r[0]): r[1] for r in await cur.fetchall()}


# -- semantic dedupe ------------------------------------------------------------------------
async def nearest_in_scope(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, vector: np.ndarray
) -> tuple[str, float] | None:
    """The live memory of exactly this scope closest to ``vector`` (exact scan)."""
    cur = await conn.execute(
        query("nearest_in_scope").format(visible=VISIBLE),
        (tenant_id, scope.user_id, scope.agent_id, scope.run_id, scope.namespace, vector, vector),
    )
    row = await cur.fetchone()
    return (str(row[0]), float(row[1])) if row else None


async def merge_into(
    conn: Conn, tenant_id: uuid.UUID, memory_id: str, metadata: dict[str, Any],
    importance: float, expires_at: datetime | None,
) -> Memory:
    """Fold a re-added memory into ``memory_id`` (version + 1; the history trigger records it)."""
    params = (Jsonb(metadata), importance, expires_at, expires_at, tenant_id, memory_id)
    rows = await fetch_rows(conn, query("merge_into").format(cols=COLUMNS), params)
    assert rows, "the row was found in this transaction"
    return row_to_memory(rows[0], with_embedding=True)


# -- memories named by (namespace, key) -------------------------------------------------
async def upsert_by_key(
    conn: Conn, tenant_id: uuid.UUID, item: dict[str, Any]
) -> tuple[Memory, bool]:
    """Insert or replace the memory named by ``item``'s namespace and key (an expired
    one is replaced as if absent); returns it and whether it was created."""
    named = (tenant_id, item["scope"].namespace, item["key"])
    await conn.execute(query("purge_expired_key"), named)
    statement = query("upsert_by_key").format(cols=COLUMNS)
    rows = await fetch_rows(conn, statement, _insert_params(tenant_id, item))
    return row_to_memory(rows[0]), bool(rows[0]["created"])


async def get_by_key(
    conn: Conn, tenant_id: uuid.UUID, namespace: str, key: str, *,
    with_embedding: bool = False, for_update: bool = False,
) -> Memory | None:
    cols = COLUMNS + sql.SQL(", m.embedding") if with_embedding else COLUMNS
    lock = sql.SQL(" FOR UPDATE") if for_update else sql.SQL("")
    statement = query("get_by_key").format(cols=cols, visible=VISIBLE, lock=lock)
    rows = await fetch_rows(conn, statement, (tenant_id, namespace, key))
    return row_to_memory(rows[0], with_embedding=with_embedding) if rows else None


async def delete_by_key(conn: Conn, tenant_id: uuid.UUID, namespace: str, key: str) -> str | None:
    statement = query("delete_by_key").format(visible=VISIBLE)
    cur = await conn.execute(statement, (tenant_id, namespace, key))
    row = await cur.fetchone()
    return str(row[0]) if row else None


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_namespaces(
    conn: Conn, tenant_id: uuid.UUID, *, prefix: str | None, suffix: str | None,
    max_depth: int | None, after: str | None, limit: int, separator: str = ".",
) -> list[tuple[str, int]]:
    """Distinct namespaces (cut to ``max_depth`` labels) with their live memory counts,
    in order, after ``after``. A prefix or suffix matches whole labels."""
    below = None if prefix is None else _like_literal(prefix + separator) + "%"
    above = None if suffix is None else "%" + _like_literal(separator + suffix)
    params = [separator, max_depth or 1_000_000, separator, tenant_id]
    params += [prefix, prefix, below, suffix, suffix, above, after or "", limit]
    cur = await conn.execute(query("list_namespaces").format(visible=VISIBLE), params)
    return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]

# one repository to callers: the shared ground of ``base`` and what the in-process
# indexes load and re-check (``held``) are re-exported with this module's own functions
__all__ = [
    "COLUMNS",
    "COPY_COLUMNS",
    "STORED_CONFIG",
    "TABLE",
    "VISIBLE",
    "Conn",
    "backlog_span",
    "changed_rows",
    "count_matching",
    "current_rows",
    "current_versions",
    "delete",
    "delete_by_key",
    "delete_scope",
    "embeddings_by_seq",
    "fetch_rows",
    "find_duplicate",
    "get",
    "get_by_key",
    "get_many",
    "get_many_by_seq",
    "index_backlog",
    "insert_many",
    "insert_staged",
    "keyword_search",
    "last_seen",
    "list_namespaces",
    "list_page",
    "matching_seqs",
    "merge_into",
    "nearest_in_scope",
    "purge_expired_duplicates",
    "query",
    "scope_clause",
    "stream_tenant_rows",
    "tenant_size",
    "tenant_sizes",
    "update",
    "upsert_by_key",
    "vector_search",
    "where_clause",
]

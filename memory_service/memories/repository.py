"""SQL for memories: the only module that knows the ``memories`` tables.

Every function takes an open async connection (the caller owns the transaction)
and a tenant id, and confines each statement to that tenant. Rows that have
expired are invisible to every read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from memory_service.memories.filters import CompiledFilter
from memory_service.memories.models import SCOPE_FIELDS, HistoryEntry, Memory, Scope

Conn = AsyncConnection[Any]

# the columns an export carries and an import or a migration writes as given
TABLE = "memories"
COPY_COLUMNS = (
    "id", "content", "content_hash", "user_id", "agent_id", "run_id", "namespace", "metadata",
    "importance", "embedding", "context", "created_at", "updated_at", "expires_at", "version",
)
COLUMNS = sql.SQL(
    "m.seq, m.id, m.content, m.user_id, m.agent_id, m.run_id, m.namespace, m.metadata, "
    "m.importance, m.created_at, m.updated_at, m.expires_at, m.version, m.key"
)
VISIBLE = sql.SQL("(m.expires_at IS NULL OR m.expires_at > now())")


def to_numpy(value: Any) -> np.ndarray:
    """A float32 array from whatever the pgvector loader returned (``Vector`` or array)."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def row_to_memory(row: dict[str, Any], *, with_embedding: bool = False) -> Memory:
    embedding = row.get("embedding") if with_embedding else None
    if embedding is not None:
        embedding = to_numpy(embedding)
    return Memory(
        id=str(row["id"]),
        content=row["content"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        run_id=row["run_id"],
        namespace=row["namespace"],
        metadata=row["metadata"],
        importance=float(row["importance"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        version=row["version"],
        embedding=embedding,
        seq=row["seq"],
        key=row.get("key"),
    )


def scope_clause(scope: Scope, params: list[Any]) -> sql.Composable:
    parts: list[sql.Composable] = []
    for name in SCOPE_FIELDS:
        value = getattr(scope, name)
        if value is not None:
            parts.append(sql.SQL("{} = %s").format(sql.Identifier("m", name)))
            params.append(value)
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")


def where_clause(
    tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None, params: list[Any]
) -> sql.Composable:
    """``tenant AND scope AND visible AND filter``; appends to ``params`` in order."""
    params.append(tenant_id)
    parts: list[sql.Composable] = [
        sql.SQL("m.tenant_id = %s"),
        scope_clause(scope, params),
        VISIBLE,
    ]
    if flt is not None:
        parts.append(flt.clause)
        params.extend(flt.params)
    return sql.SQL(" AND ").join(parts)


_INSERT = sql.SQL(
    "INSERT INTO memories AS m (tenant_id, content, content_hash, user_id, agent_id, run_id, "
    "namespace, metadata, importance, embedding, expires_at, context, key) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (tenant_id, content_hash, user_id, agent_id, run_id, namespace, key, "
    "md5(metadata::text)) DO NOTHING "
    "RETURNING {}"
).format(COLUMNS)


def _insert_params(tenant_id: uuid.UUID, item: dict[str, Any]) -> tuple[Any, ...]:
    scope: Scope = item["scope"]
    return (
        tenant_id,
        item["content"],
        item["content_hash"],
        scope.user_id,
        scope.agent_id,
        scope.run_id,
        scope.namespace,
        Jsonb(item["metadata"]),
        item["importance"],
        item["embedding"],
        item["expires_at"],
        item.get("context"),
        item.get("key"),
    )


async def purge_expired_duplicates(conn: Conn, tenant_id: uuid.UUID, hashes: list[bytes]) -> None:
    """Expired rows are invisible; remove the ones that would block a re-add."""
    await conn.execute(
        "DELETE FROM memories WHERE tenant_id = %s AND content_hash = ANY(%s) "
        "AND expires_at IS NOT NULL AND expires_at <= now()",
        (tenant_id, hashes),
    )


async def insert_many(
    conn: Conn, tenant_id: uuid.UUID, items: Sequence[dict[str, Any]]
) -> list[Memory | None]:
    """Insert rows in one pipelined round; ``None`` where a live duplicate exists."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.executemany(
            _INSERT, [_insert_params(tenant_id, item) for item in items], returning=True
        )
        out: list[Memory | None] = []
        while True:
            row = await cur.fetchone()
            out.append(row_to_memory(row) if row else None)
            if not cur.nextset():
                break
    return out


async def find_duplicate(
    conn: Conn,
    tenant_id: uuid.UUID,
    content_hash: bytes,
    scope: Scope,
    metadata: dict[str, Any],
) -> Memory | None:
    """The live memory with this content, scope and metadata (the dedupe index's key)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM memories m WHERE m.tenant_id = %s AND m.content_hash = %s "
            "AND m.user_id IS NOT DISTINCT FROM %s AND m.agent_id IS NOT DISTINCT FROM %s "
            "AND m.run_id IS NOT DISTINCT FROM %s AND m.namespace IS NOT DISTINCT FROM %s "
            "AND m.key IS NULL AND md5(m.metadata::text) = md5(%s::jsonb::text)"
        ).format(COLUMNS),
        (
            tenant_id,
            content_hash,
            scope.user_id,
            scope.agent_id,
            scope.run_id,
            scope.namespace,
            Jsonb(metadata),
        ),
    )
    row = await cur.fetchone()
    return row_to_memory(row) if row else None


async def get(
    conn: Conn,
    tenant_id: uuid.UUID,
    memory_id: uuid.UUID,
    *,
    with_embedding: bool = False,
    for_update: bool = False,
) -> Memory | None:
    cols = COLUMNS + sql.SQL(", m.embedding") if with_embedding else COLUMNS
    lock = sql.SQL(" FOR UPDATE") if for_update else sql.SQL("")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {} FROM memories m WHERE m.tenant_id = %s AND m.id = %s AND {}{}").format(
            cols, VISIBLE, lock
        ),
        (tenant_id, memory_id),
    )
    row = await cur.fetchone()
    return row_to_memory(row, with_embedding=with_embedding) if row else None


async def get_many(
    conn: Conn,
    tenant_id: uuid.UUID,
    ids: Sequence[uuid.UUID | str],
    *,
    scope: Scope | None = None,
    flt: CompiledFilter | None = None,
    with_embedding: bool = False,
) -> dict[str, Memory]:
    """Visible rows among ``ids`` that also match scope and filter (re-check after an index)."""
    params: list[Any] = []
    where = where_clause(tenant_id, scope or Scope(), flt, params)
    params.append([str(i) for i in ids])
    cols = COLUMNS + sql.SQL(", m.embedding") if with_embedding else COLUMNS
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {} FROM memories m WHERE {} AND m.id = ANY(%s::uuid[])").format(
            cols, where
        ),
        params,
    )
    rows = await cur.fetchall()
    return {str(r["id"]): row_to_memory(r, with_embedding=with_embedding) for r in rows}


async def update(
    conn: Conn, tenant_id: uuid.UUID, memory_id: uuid.UUID, changes: dict[str, Any]
) -> Memory:
    sets = [sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changes]
    params = [Jsonb(v) if name == "metadata" else v for name, v in changes.items()]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "UPDATE memories AS m SET {}, version = m.version + 1, updated_at = now() "
            "WHERE m.tenant_id = %s AND m.id = %s RETURNING {}"
        ).format(sql.SQL(", ").join(sets), COLUMNS),
        [*params, tenant_id, memory_id],
    )
    row = await cur.fetchone()
    assert row is not None, "caller holds the row lock"
    return row_to_memory(row)


async def delete(conn: Conn, tenant_id: uuid.UUID, memory_id: uuid.UUID) -> bool:
    cur = await conn.execute(
        sql.SQL(
            "DELETE FROM memories m WHERE m.tenant_id = %s AND m.id = %s AND {} RETURNING m.id"
        ).format(VISIBLE),
        (tenant_id, memory_id),
    )
    return await cur.fetchone() is not None


async def delete_scope(conn: Conn, tenant_id: uuid.UUID, scope: Scope) -> list[str]:
    params: list[Any] = [tenant_id]
    clause = scope_clause(scope, params)
    cur = await conn.execute(
        sql.SQL("DELETE FROM memories m WHERE m.tenant_id = %s AND {} RETURNING m.id").format(
            clause
        ),
        params,
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def erase_history(
    conn: Conn, tenant_id: uuid.UUID, memory_ids: Sequence[str], kind: str
) -> None:
    """Purge: drop the history rows of deleted memories; keep only that it happened."""
    await conn.execute(
        "DELETE FROM memory_history WHERE tenant_id = %s AND memory_id = ANY(%s::uuid[])",
        (tenant_id, list(memory_ids)),
    )
    await conn.execute(
        "INSERT INTO erasure_audit (tenant_id, kind, memories) VALUES (%s, %s, %s)",
        (tenant_id, kind, len(memory_ids)),
    )


async def list_page(
    conn: Conn,
    tenant_id: uuid.UUID,
    scope: Scope,
    flt: CompiledFilter | None,
    after_seq: int,
    limit: int,
) -> list[Memory]:
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    params += [after_seq, limit]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT {} FROM memories m WHERE {} AND m.seq > %s ORDER BY m.seq LIMIT %s").format(
            COLUMNS, where
        ),
        params,
    )
    return [row_to_memory(r) for r in await cur.fetchall()]


async def replace_history(
    conn: Conn, tenant_id: uuid.UUID, memory_id: str, entries: Sequence[HistoryEntry]
) -> None:
    """Replace a memory's history with ``entries`` (an import carries it verbatim)."""
    await conn.execute(
        "DELETE FROM memory_history WHERE tenant_id = %s AND memory_id = %s",
        (tenant_id, memory_id),
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO memory_history (tenant_id, memory_id, event, old_content, new_content, "
            "old_metadata, new_metadata, at, version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (tenant_id, memory_id, e.event, e.old_content, e.new_content,
                 None if e.old_metadata is None else Jsonb(e.old_metadata),
                 None if e.new_metadata is None else Jsonb(e.new_metadata), e.at, e.version)
                for e in entries
            ],
        )


async def histories(
    conn: Conn, tenant_id: uuid.UUID, memory_ids: Sequence[str]
) -> dict[str, list[HistoryEntry]]:
    """The history of each of ``memory_ids``, oldest first (an export's optional part)."""
    cur = await conn.execute(
        "SELECT memory_id::text, event, old_content, new_content, old_metadata, new_metadata, "
        "at, version FROM memory_history WHERE tenant_id = %s AND memory_id = ANY(%s::uuid[]) "
        "ORDER BY id",
        (tenant_id, list(memory_ids)),
    )
    out: dict[str, list[HistoryEntry]] = {}
    for row in await cur.fetchall():
        out.setdefault(row[0], []).append(HistoryEntry(*row[1:]))
    return out


async def history(conn: Conn, tenant_id: uuid.UUID, memory_id: uuid.UUID) -> list[HistoryEntry]:
    cur = await conn.execute(
        "SELECT event, old_content, new_content, old_metadata, new_metadata, at, version "
        "FROM memory_history WHERE tenant_id = %s AND memory_id = %s ORDER BY id",
        (tenant_id, memory_id),
    )
    return [HistoryEntry(*row) for row in await cur.fetchall()]


async def count_matching(
    conn: Conn, tenant_id: uuid.UUID, scope: Scope, flt: CompiledFilter | None, cap: int
) -> int:
    """How many visible rows match, counting no further than ``cap``."""
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    params.append(cap)
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM (SELECT 1 FROM memories m WHERE {} LIMIT %s) AS c").format(
            where
        ),
        params,
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def vector_search(
    conn: Conn,
    tenant_id: uuid.UUID,
    scope: Scope,
    flt: CompiledFilter | None,
    query: np.ndarray,
    k: int,
    *,
    exact: bool,
    ef_search: int,
) -> list[tuple[Memory, float]]:
    """Nearest visible rows by cosine distance.

    ``exact`` ranks every matching row (a materialised CTE keeps the planner off
    the HNSW index); otherwise the HNSW index answers, which pgvector filters
    after the scan, so it may return fewer than ``k`` rows.
    """
    params: list[Any] = []
    where = where_clause(tenant_id, scope, flt, params)
    if not exact:
        # SET does not take bind parameters; ef_search is an int we clamp ourselves
        ef = max(1, min(1000, int(max(ef_search, k))))
        await conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef)))
        query_sql = sql.SQL(
            "SELECT {cols}, m.embedding <=> %s AS distance FROM memories m WHERE {where} "
            "ORDER BY m.embedding <=> %s LIMIT %s"
        ).format(cols=COLUMNS, where=where)
        all_params = [query, *params, query, k]
    else:
        query_sql = sql.SQL(
            "WITH c AS MATERIALIZED (SELECT {cols}, m.embedding FROM memories m WHERE {where}) "
            "SELECT c.*, c.embedding <=> %s AS distance FROM c ORDER BY distance LIMIT %s"
        ).format(cols=COLUMNS, where=where)
        all_params = [*params, query, k]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query_sql, all_params)
    rows = await cur.fetchall()
    return [(row_to_memory(r), 1.0 - float(r["distance"])) for r in rows]


# -- memories named by (namespace, key) ------------------------------------------------
_UPSERT_BY_KEY = sql.SQL(
    "INSERT INTO memories AS m (tenant_id, content, content_hash, user_id, agent_id, run_id, "
    "namespace, metadata, importance, embedding, expires_at, context, key) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (tenant_id, namespace, key) WHERE key IS NOT NULL DO UPDATE SET "
    "content = EXCLUDED.content, content_hash = EXCLUDED.content_hash, "
    "user_id = EXCLUDED.user_id, agent_id = EXCLUDED.agent_id, run_id = EXCLUDED.run_id, "
    "metadata = EXCLUDED.metadata, importance = EXCLUDED.importance, "
    "embedding = EXCLUDED.embedding, expires_at = EXCLUDED.expires_at, "
    "context = EXCLUDED.context, version = m.version + 1, updated_at = now() "
    "RETURNING {}, (xmax = 0) AS created"
).format(COLUMNS)


async def upsert_by_key(
    conn: Conn, tenant_id: uuid.UUID, item: dict[str, Any]
) -> tuple[Memory, bool]:
    """Insert or replace the memory named by ``item``'s namespace and key (an expired
    one is replaced as if absent); returns it and whether it was created."""
    scope: Scope = item["scope"]
    await conn.execute(
        "DELETE FROM memories WHERE tenant_id = %s AND namespace = %s AND key = %s "
        "AND expires_at IS NOT NULL AND expires_at <= now()",
        (tenant_id, scope.namespace, item["key"]),
    )
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_UPSERT_BY_KEY, _insert_params(tenant_id, item))
    row = await cur.fetchone()
    assert row is not None, "an upsert returns its row"
    return row_to_memory(row), bool(row["created"])


async def get_by_key(
    conn: Conn,
    tenant_id: uuid.UUID,
    namespace: str,
    key: str,
    *,
    with_embedding: bool = False,
    for_update: bool = False,
) -> Memory | None:
    cols = COLUMNS + sql.SQL(", m.embedding") if with_embedding else COLUMNS
    lock = sql.SQL(" FOR UPDATE") if for_update else sql.SQL("")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL(
            "SELECT {} FROM memories m WHERE m.tenant_id = %s AND m.namespace = %s "
            "AND m.key = %s AND {}{}"
        ).format(cols, VISIBLE, lock),
        (tenant_id, namespace, key),
    )
    row = await cur.fetchone()
    return row_to_memory(row, with_embedding=with_embedding) if row else None


async def delete_by_key(conn: Conn, tenant_id: uuid.UUID, namespace: str, key: str) -> str | None:
    cur = await conn.execute(
        sql.SQL(
            "DELETE FROM memories m WHERE m.tenant_id = %s AND m.namespace = %s AND m.key = %s "
            "AND {} RETURNING m.id"
        ).format(VISIBLE),
        (tenant_id, namespace, key),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_namespaces(
    conn: Conn,
    tenant_id: uuid.UUID,
    *,
    prefix: str | None,
    suffix: str | None,
    max_depth: int | None,
    after: str | None,
    limit: int,
    separator: str = ".",
) -> list[tuple[str, int]]:
    """Distinct namespaces (cut to ``max_depth`` labels) with their live memory counts,
    in order, after ``after``. A prefix or suffix matches whole labels."""
    where: list[sql.Composable] = [
        sql.SQL("m.tenant_id = %s AND m.namespace IS NOT NULL"),
        VISIBLE,
    ]
    params: list[Any] = [separator, max_depth or 1_000_000, separator, tenant_id]
    if prefix is not None:
        where.append(sql.SQL("(m.namespace = %s OR m.namespace LIKE %s)"))
        params += [prefix, _like_literal(prefix + separator) + "%"]
    if suffix is not None:
        where.append(sql.SQL("(m.namespace = %s OR m.namespace LIKE %s)"))
        params += [suffix, "%" + _like_literal(separator + suffix)]
    params += [after or "", limit]
    cur = await conn.execute(
        sql.SQL(
            "SELECT ns, count(*) FROM (SELECT array_to_string("
            "(string_to_array(m.namespace, %s))[1:%s], %s) AS ns FROM memories m WHERE {}) AS n "
            "WHERE ns COLLATE \"C\" > %s GROUP BY ns ORDER BY ns COLLATE \"C\" LIMIT %s"
        ).format(sql.SQL(" AND ").join(where)),
        params,
    )
    return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]
